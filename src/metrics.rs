//! Prometheus metrics, named in the style of controller-runtime
//! (`*_reconcile_total`, `*_reconcile_time_seconds`, `*_workqueue_depth`).
//!
//! Every series exists from start-up with the value zero: each label value
//! the controller can produce is touched when the registry is built, so a
//! dashboard or an alert never sees a series appear out of nowhere.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::report::{PassReport, PassResult, Trigger};
/// Every action kind, as label values.
pub const ACTION_KINDS: &[&str] = &[
    "terminate_process",
    "stop_cgroup",
    "remove_cgroup",
    "close_agent_row",
    "delete_opencode_session",
    "remove_worktree",
    "mark_worktree_removed",
    "mark_worktree_active",
    "prune_admin_entry",
    "refuse_path",
];
/// Every outcome, as label values.
pub const OUTCOMES: &[&str] = &[
    "done",
    "kept_at_risk",
    "skipped",
    "deferred",
    "refused",
    "failed",
];
/// The HTTP routes that nudge, as label values.
pub const NUDGE_ROUTES: &[&str] = &["chat", "session", "host", "chat_close", "session_close"];

pub struct Metrics {
    registry: Registry,
    pub reconcile_total: IntCounterVec,
    pub reconcile_time: HistogramVec,
    pub reconcile_errors: IntCounterVec,
    pub actions_total: IntCounterVec,
    pub drift_items: IntGaugeVec,
    pub worktrees_at_risk: IntGauge,
    pub kept_bytes: IntGauge,
    pub root_free_bytes: IntGauge,
    pub root_size_bytes: IntGauge,
    pub root_held: IntGauge,
    pub workqueue_depth: IntGauge,
    pub nudges_total: IntCounterVec,
    pub leader: IntGauge,
    /// Retired worktrees waiting in the trash.
    pub trash_entries: IntGauge,
    /// Their estimated size: allocated blocks (`st_blocks * 512`) of every
    /// file below each entry, walked once per entry without following a
    /// symlink or leaving the file system.
    pub trash_bytes: IntGauge,
    pub trash_reclaim_time: Histogram,
    pub trash_reclaim_failures: IntCounter,
    /// Processes whose environment the last pass could not read: whether
    /// they are agents is unknown. No uid label, so that the series stay
    /// few whatever the host runs; the uids are in `/status`.
    pub processes_unreadable: IntGauge,
    /// Processes still there after a termination's kill, every pass.
    pub agent_survivors: IntCounter,
    /// How many users (real uids) those processes belong to.
    pub processes_unreadable_users: IntGauge,
    /// 1 while the fork lineage is followed, 0 when it is off or could
    /// not start.
    pub lineage_active: IntGauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new_custom(Some("boo_reconciler".into()), None)
            .expect("valid registry prefix");
        let reconcile_total = IntCounterVec::new(
            Opts::new("reconcile_total", "Passes by trigger and result."),
            &["trigger", "result"],
        )
        .expect("metric");
        let reconcile_time = HistogramVec::new(
            HistogramOpts::new("reconcile_time_seconds", "Duration of a pass, by trigger.")
                .buckets(vec![
                    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                    60.0, 120.0,
                ]),
            &["trigger"],
        )
        .expect("metric");
        let reconcile_errors = IntCounterVec::new(
            Opts::new(
                "reconcile_errors_total",
                "Errors of passes (state unreadable, actions failed or refused), by trigger.",
            ),
            &["trigger"],
        )
        .expect("metric");
        let actions_total = IntCounterVec::new(
            Opts::new("actions_total", "Actions carried out, by kind and outcome."),
            &["kind", "outcome"],
        )
        .expect("metric");
        let drift_items = IntGaugeVec::new(
            Opts::new(
                "drift_items",
                "Drift seen by the last host pass: planned actions by kind, and pending items.",
            ),
            &["kind"],
        )
        .expect("metric");
        let root_held = IntGauge::new(
            "root_held",
            "1 while the worktree root is not what was recorded (unmounted, another file system, \
             emptied): nothing under it is judged, marked removed or pruned.",
        )
        .expect("metric");
        let worktrees_at_risk = IntGauge::new(
            "worktrees_at_risk",
            "Worktrees kept at risk by the last host pass.",
        )
        .expect("metric");
        let kept_bytes = IntGauge::new(
            "kept_bytes",
            "What the worktrees kept at risk by the last host pass hold on disk (allocated \
             blocks), measured when each verdict was reached.",
        )
        .expect("metric");
        let root_free_bytes = IntGauge::new(
            "root_free_bytes",
            "Space an unprivileged user may still write on the file system of the worktree root.",
        )
        .expect("metric");
        let root_size_bytes = IntGauge::new(
            "root_size_bytes",
            "Size of the file system of the worktree root.",
        )
        .expect("metric");
        let workqueue_depth =
            IntGauge::new("workqueue_depth", "Keys waiting to be reconciled.").expect("metric");
        let nudges_total = IntCounterVec::new(
            Opts::new("nudges_total", "Nudges received over HTTP, by route."),
            &["route"],
        )
        .expect("metric");
        let leader = IntGauge::new(
            "leader",
            "1 while this instance holds the host's lock and acts; 0 on standby.",
        )
        .expect("metric");
        let trash_entries = IntGauge::new(
            "trash_entries",
            "Retired worktrees waiting in <root>/.boo-trash for the reclaimer.",
        )
        .expect("metric");
        let trash_bytes = IntGauge::new(
            "trash_bytes",
            "Estimated bytes in the trash: allocated blocks of every file, measured once per entry.",
        )
        .expect("metric");
        let trash_reclaim_time = Histogram::with_opts(
            HistogramOpts::new(
                "trash_reclaim_time_seconds",
                "Time to delete one trash entry.",
            )
            .buckets(vec![
                0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
            ]),
        )
        .expect("metric");
        let trash_reclaim_failures = IntCounter::new(
            "trash_reclaim_failures_total",
            "Attempts to delete a trash entry that failed (the entry backs off and is retried).",
        )
        .expect("metric");
        let agent_survivors = IntCounter::new(
            "agent_survivors_total",
            "Processes still there after a termination's SIGKILL or cgroup.kill (a process in \
             uninterruptible sleep, say): each pass's answer, the audit and /status name them; \
             retried next pass.",
        )
        .expect("metric");
        let processes_unreadable = IntGauge::new(
            "processes_unreadable",
            "Processes whose environment the last pass could not read (other users' processes \
             and setuid programs, for a controller that is not root): an agent among them is \
             invisible. Processes gone mid-scan are not counted.",
        )
        .expect("metric");
        let processes_unreadable_users = IntGauge::new(
            "processes_unreadable_users",
            "Users (real uids) the processes of processes_unreadable belong to; /status lists \
             them.",
        )
        .expect("metric");
        let lineage_active = IntGauge::new(
            "lineage_active",
            "1 while the fork lineage (processes.lineage) follows every fork and exec; 0 when it \
             is off or could not start (/status says why): agents not started through launch \
             are then seen by their labels alone.",
        )
        .expect("metric");
        for c in [
            Box::new(agent_survivors.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(lineage_active.clone()),
            Box::new(processes_unreadable.clone()),
            Box::new(processes_unreadable_users.clone()),
            Box::new(trash_entries.clone()),
            Box::new(trash_bytes.clone()),
            Box::new(trash_reclaim_time.clone()),
            Box::new(trash_reclaim_failures.clone()),
            Box::new(reconcile_total.clone()),
            Box::new(reconcile_time.clone()),
            Box::new(reconcile_errors.clone()),
            Box::new(actions_total.clone()),
            Box::new(drift_items.clone()),
            Box::new(worktrees_at_risk.clone()),
            Box::new(kept_bytes.clone()),
            Box::new(root_free_bytes.clone()),
            Box::new(root_size_bytes.clone()),
            Box::new(root_held.clone()),
            Box::new(workqueue_depth.clone()),
            Box::new(nudges_total.clone()),
            Box::new(leader.clone()),
        ] {
            registry.register(c).expect("unique metric");
        }
        for t in Trigger::ALL.map(Trigger::as_str) {
            for r in PassResult::ALL.map(PassResult::as_str) {
                reconcile_total.with_label_values(&[t, r]);
            }
            reconcile_time.with_label_values(&[t]);
            reconcile_errors.with_label_values(&[t]);
        }
        for k in ACTION_KINDS {
            for o in OUTCOMES {
                actions_total.with_label_values(&[k, o]);
            }
            drift_items.with_label_values(&[k]);
        }
        drift_items.with_label_values(&["pending"]);
        for r in NUDGE_ROUTES {
            nudges_total.with_label_values(&[r]);
        }
        Metrics {
            registry,
            reconcile_total,
            reconcile_time,
            reconcile_errors,
            actions_total,
            drift_items,
            worktrees_at_risk,
            kept_bytes,
            root_free_bytes,
            root_size_bytes,
            root_held,
            workqueue_depth,
            nudges_total,
            leader,
            trash_entries,
            trash_bytes,
            trash_reclaim_time,
            trash_reclaim_failures,
            agent_survivors,
            processes_unreadable,
            processes_unreadable_users,
            lineage_active,
        }
    }

    /// Counts a finished pass.
    pub fn observe_pass(&self, r: &PassReport) {
        let (trigger, result) = (r.trigger.as_str(), r.result());
        self.reconcile_total
            .with_label_values(&[trigger, result.as_str()])
            .inc();
        let secs = r.duration_ms as f64 / 1000.0;
        self.reconcile_time
            .with_label_values(&[trigger])
            .observe(secs);
        if result == PassResult::Error {
            self.reconcile_errors.with_label_values(&[trigger]).inc();
        }
        self.agent_survivors.inc_by(r.survivors().len() as u64);
        for a in &r.results {
            self.actions_total
                .with_label_values(&[a.action.name(), a.outcome.name()])
                .inc();
        }
        // Every pass scans the whole host, whatever its scope; a pass that
        // could not read its state scanned nothing.
        if r.state_unreadable.is_none() {
            self.processes_unreadable
                .set(r.observed.unreadable_processes as i64);
            self.processes_unreadable_users
                .set(r.observed.unreadable_by_uid.len() as i64);
            self.lineage_active.set(i64::from(
                r.observed.lineage.state == crate::report::LineageRun::On,
            ));
            if let Some(space) = r.observed.root_space {
                self.root_free_bytes.set(gauge(space.free_bytes));
                self.root_size_bytes.set(gauge(space.total_bytes));
            }
        }
        if r.scope == crate::model::Scope::Host {
            self.root_held
                .set(i64::from(r.observed.root_held.is_some()));
        }
        if r.scope == crate::model::Scope::Host && !r.dry_run {
            for k in ACTION_KINDS {
                let n = r.results.iter().filter(|a| a.action.name() == *k).count();
                self.drift_items.with_label_values(&[k]).set(n as i64);
            }
            self.drift_items
                .with_label_values(&["pending"])
                .set(r.pending.len() as i64);
            self.worktrees_at_risk.set(r.at_risk.len() as i64);
            let kept: u64 = r.at_risk.iter().filter_map(|k| k.bytes).sum();
            self.kept_bytes.set(gauge(kept));
        }
    }

    /// The Prometheus text exposition format (0.0.4).
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding cannot fail");
        String::from_utf8(buf).expect("text format is UTF-8")
    }
}

/// A byte count as a gauge's value, saturating rather than wrapping.
fn gauge(bytes: u64) -> i64 {
    i64::try_from(bytes).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_action_kind_is_a_label_value_in_the_planner_s_order() {
        let names = crate::plan::ActionName::ALL.map(|n| n.as_str());
        assert_eq!(ACTION_KINDS, names);
        for n in crate::plan::ActionName::ALL {
            assert_eq!(crate::plan::ActionName::parse(n.as_str()), Some(n));
        }
        assert_eq!(crate::plan::ActionName::parse("remove"), None);
    }

    #[test]
    fn every_series_exists_from_start_up() {
        let text = Metrics::new().render();
        for t in Trigger::ALL.map(Trigger::as_str) {
            for r in PassResult::ALL.map(PassResult::as_str) {
                let line =
                    format!("boo_reconciler_reconcile_total{{result=\"{r}\",trigger=\"{t}\"}} 0");
                assert!(text.contains(&line), "missing {line}");
            }
        }
        assert!(text.contains(
            "boo_reconciler_actions_total{kind=\"remove_worktree\",outcome=\"failed\"} 0"
        ));
        assert!(text.contains("boo_reconciler_workqueue_depth 0"));
        assert!(text.contains("boo_reconciler_nudges_total{route=\"chat\"} 0"));
        assert!(text.contains("# TYPE boo_reconciler_reconcile_time_seconds histogram"));
        assert!(text.contains("boo_reconciler_trash_entries 0"));
        assert!(text.contains("boo_reconciler_trash_bytes 0"));
        assert!(text.contains("boo_reconciler_trash_reclaim_failures_total 0"));
        assert!(text.contains("# TYPE boo_reconciler_trash_reclaim_time_seconds histogram"));
    }

    #[test]
    fn the_processes_a_pass_could_not_read_are_gauged_until_a_pass_reads_its_state() {
        let m = Metrics::new();
        let text = m.render();
        assert!(
            text.contains("boo_reconciler_processes_unreadable 0"),
            "{text}"
        );
        assert!(
            text.contains("boo_reconciler_processes_unreadable_users 0"),
            "{text}"
        );
        let mut r = PassReport {
            trigger: Trigger::Nudge,
            scope: crate::model::Scope::Chat("c1".into()),
            dry_run: false,
            force: false,
            started_at: std::time::UNIX_EPOCH,
            duration_ms: 1,
            observed: Default::default(),
            planned: Vec::new(),
            results: Vec::new(),
            pending: Vec::new(),
            at_risk: Vec::new(),
            errors: Vec::new(),
            warnings: Vec::new(),
            state_unreadable: None,
        };
        r.observed.unreadable_processes = 5;
        r.observed.unreadable_by_uid = [(0, 2), (1001, 3)].into_iter().collect();
        r.observed.lineage.state = crate::report::LineageRun::On;
        // Every pass scans the whole host, whatever its scope.
        m.observe_pass(&r);
        let text = m.render();
        assert!(text.contains("boo_reconciler_lineage_active 1"), "{text}");
        assert!(
            text.contains("boo_reconciler_processes_unreadable 5"),
            "{text}"
        );
        assert!(
            text.contains("boo_reconciler_processes_unreadable_users 2"),
            "{text}"
        );
        // A pass that could not read its state scanned nothing: the last
        // count stands.
        r.observed = Default::default();
        r.state_unreadable = Some(crate::report::StateUnreadable::DatabaseUnreachable);
        m.observe_pass(&r);
        assert!(m.render().contains("boo_reconciler_processes_unreadable 5"));
        assert!(m.render().contains("boo_reconciler_lineage_active 1"));
        r.state_unreadable = None;
        r.observed.lineage.state = crate::report::LineageRun::Unavailable;
        m.observe_pass(&r);
        assert!(m.render().contains("boo_reconciler_lineage_active 0"));
    }

    #[test]
    fn label_values_are_the_serialized_names() {
        assert_eq!(
            Trigger::ALL.map(Trigger::as_str),
            ["startup", "interval", "nudge", "notification", "command"]
        );
        assert_eq!(
            PassResult::ALL.map(PassResult::as_str),
            ["converged", "at_risk", "error"]
        );
        for t in Trigger::ALL {
            assert_eq!(serde_json::to_value(t).unwrap(), t.as_str());
        }
        for r in PassResult::ALL {
            assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
        }
    }
}
