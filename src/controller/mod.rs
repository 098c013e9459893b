//! The control loop: one pass = read desired state, observe actual state,
//! plan, act, report. Passes run on an interval with jitter, and on demand.
//!
//! # Guarantees
//! - A pass needs no memory of earlier passes: restarted anywhere, the next
//!   pass converges (the backoff of failing targets is the only state kept,
//!   and losing it only means an earlier retry).
//! - A pass is bounded by `loop.pass_timeout`, counted from its start: when
//!   it runs out, no new action starts (not even one already waiting for a
//!   slot), the pass ends once the actions in flight finish, and
//!   the report names each action left for the next pass (test
//!   `no_termination_starts_after_the_pass_timeout`).
//! - Once cancelled (SIGINT/SIGTERM), the loop starts no new pass and no new
//!   action; the actions in flight finish.
//! - A forced pass never leaves its step to another run. An action whose
//!   target another run held waits for that run; then the pass reads the
//!   state of that action's group again and acts on what is left (the
//!   other run may have kept the worktree at risk: exactly what force is
//!   for), up to [`FORCED_RETAKES`] times within `loop.pass_timeout`. A
//!   target still held after that is named in the report's `busy` and its
//!   errors: "busy, retry", never a quiet skip (tests
//!   `a_forced_request_waits_for_the_run_holding_its_worktree_then_archives_it`,
//!   `a_forced_request_held_past_the_pass_timeout_answers_409_busy`).

pub mod queue;
pub mod repeats;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio_util::sync::CancellationToken;

use crate::act::executor::{left_to_concurrent_run, Deadline};
use crate::act::{ActionResult, Executor, RunOptions};
use crate::config::Config;
use crate::model::Scope;
use crate::model::{OpencodeView, Tied};
use crate::observe;
use crate::observe::processes::{self, LabelNames};
use crate::plan::{self, Plan, Policy};
use crate::report::{ObservedCounts, PassReport, StateUnreadable};
use crate::root::WorktreeRoot;
use crate::store::{Interest, Store};

/// How many times a forced pass reads the state again after another run
/// held one of its targets; each time it waited for that run to finish.
pub const FORCED_RETAKES: usize = 3;

/// How many more rounds a pass gives to what a stopped agent forked while
/// it was being stopped (a fork loop through its grace).
pub const FORK_SWEEPS: usize = 3;

/// How long a sweep waits for the lineage to apply what the kernel has
/// queued.
const SWEEP_CATCH_UP: Duration = Duration::from_millis(500);

pub use crate::report::Trigger;

/// Plan only, or plan and act.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Write nothing: not the database, not the disk, not the audit table.
    DryRun,
    Act(RunOptions),
}

impl Mode {
    /// Acting, with or without force; the rest of the options are the
    /// pass's and the executor's to set.
    pub fn act(force: bool) -> Mode {
        Mode::Act(RunOptions {
            force,
            ..Default::default()
        })
    }
}

/// The controller of one host.
pub struct Controller {
    config: Config,
    store: Store,
    root: WorktreeRoot,
    executor: Arc<Executor>,
    policy: Policy,
    /// Lists the opencode server's sessions; it backs off as a whole while
    /// the server fails.
    opencode: observe::opencode::SessionLister,
    /// The fork lineage (`processes.lineage`), or why it could not start.
    lineage: LineageState,
}

/// The fork lineage as this controller runs it.
enum LineageState {
    Off,
    Running(observe::lineage::Lineage),
    /// The connector could not be opened; `required` (`true`, not `auto`)
    /// makes that an error of every pass.
    Unavailable {
        why: String,
        required: bool,
    },
}

/// What a pass noticed besides its plan: errors (exit 1) and warnings.
#[derive(Clone, Debug, Default)]
pub struct Notes {
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
}

impl Controller {
    pub fn new(config: Config, store: Store, root: WorktreeRoot) -> Controller {
        let executor = Arc::new(Executor::new(store.clone(), root.clone(), &config));
        let policy = Policy {
            worktree_orphan_min_age: config.worktrees.orphan_min_age,
            process_orphan_min_age: config.processes.orphan_min_age,
            opencode_orphan_min_age: config.opencode.orphan_min_age,
            instance: config.processes.instance().map(str::to_owned),
            max_removals: config.worktrees.max_removals_per_pass,
            stale_entry_grace: config.worktrees.stale_entry_grace,
            max_terminations: config.processes.max_terminations_per_pass,
        };
        let lineage = start_lineage(&config);
        Controller {
            config,
            store,
            root,
            executor,
            policy,
            opencode: Default::default(),
            lineage,
        }
    }

    pub fn executor(&self) -> &Arc<Executor> {
        &self.executor
    }

    /// The configuration it was made with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The database it reads the desired state from and records in.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The worktree root it watches.
    pub fn root(&self) -> &WorktreeRoot {
        &self.root
    }

    /// Reads both states and plans. With `record`, it writes what the pass
    /// saw that later passes judge by: when admin entries were first seen
    /// missing ([`Controller::record_missing`]) and what the root is
    /// ([`Controller::check_root`]); without, it writes nothing.
    pub async fn plan(
        &self,
        scope: &Scope,
        record: bool,
        notes: &mut Notes,
    ) -> Result<(Plan, ObservedCounts), crate::store::StoreError> {
        let mut interest = Interest::default();
        match scope {
            Scope::Host => {}
            Scope::Chat(id) => {
                interest.chats = BTreeSet::from([id.clone()]);
            }
            Scope::Session(id) => {
                interest.sessions = BTreeSet::from([id.clone()]);
            }
        }
        let observed_at = std::time::Instant::now();
        let labels = LabelNames::from(&self.config.processes);
        // The opencode server is asked while the host is observed.
        let (host, listing) = tokio::join!(
            self.observe_host(interest, labels),
            self.opencode
                .list(self.executor.opencode.as_ref(), &self.root)
        );
        let opencode_notes = Notes {
            errors: listing.error.into_iter().collect(),
            warnings: listing.warning.into_iter().collect(),
        };
        let opencode = listing.view;
        let HostView {
            scan,
            tied,
            cgroups,
            desired,
            recorded_pids,
            mut observed,
            errors,
        } = host?;
        notes.errors.extend(errors);
        // One bad row is an error of the pass, never the end of it.
        notes.errors.extend(
            desired
                .unreadable
                .iter()
                .map(|u| format!("database {}: {u}", self.store.url())),
        );
        if observed.root_held.is_none() {
            if let Some(why) = self.check_root(&observed, record).await {
                tracing::warn!(root = %self.root.path().display(), "{why}");
                notes.errors.push(why.clone());
                observed.root_held = Some(why);
            }
        }
        // Only a full view of the admin entries may forget a record of one
        // that went missing: a partial one would restart its grace.
        let complete = observed.errors.is_empty() && observed.root_held.is_none();
        notes.errors.append(&mut observed.errors);
        self.record_missing(&mut observed.stale_admin_entries, complete, record, notes)
            .await;
        notes.errors.extend(opencode_notes.errors);
        notes.warnings.extend(opencode_notes.warnings);
        let counts = ObservedCounts {
            opencode_sessions: match &opencode {
                OpencodeView::Listed { sessions } => sessions.len(),
                _ => 0,
            },
            processes: scan.processes.len(),
            unreadable_processes: scan.skipped,
            unreadable_by_uid: scan.unreadable_by_uid.clone(),
            worktree_rows: desired.worktrees.len(),
            agent_rows: desired.agent_sessions.len(),
            root_entries: observed.dirs.len(),
            root_held: observed.root_held.clone(),
            lineage: self.lineage_view(),
            stale_admin_entries: observed.stale_admin_entries.len(),
            trash: {
                let reclaimer = std::sync::Arc::clone(self.executor.reclaimer());
                tokio::task::spawn_blocking(move || reclaimer.status())
                    .await
                    .unwrap_or_default()
            },
        };
        // An entry the reclaimer cannot delete is an error of every pass
        // until it is gone: never left silently.
        for e in &counts.trash.errors {
            notes.errors.push(format!(
                "trash entry {} cannot be reclaimed ({} failure(s), next attempt in {}s): {}",
                e.path.display(),
                e.failures,
                e.next_attempt_in_s,
                e.error
            ));
        }
        let actual = crate::model::ActualState {
            dirs: observed.dirs,
            stale_admin_entries: observed.stale_admin_entries,
            moved_admin_entries: observed.moved_admin_entries,
            row_paths: observed.row_paths.into_iter().collect(),
            row_targets: observed.row_targets.into_iter().collect(),
            root_held: observed.root_held,
            processes: scan.processes,
            cgroups,
            tied,
            recorded_pids,
            opencode,
        };
        let plan = plan::plan(&desired, &actual, &self.policy, SystemTime::now(), scope);
        let mut plan = crate::switches::Switches::from(&self.config).apply(plan);
        plan.observed_at = Some(observed_at);
        Ok((plan, counts))
    }

    /// Whether the root is what its record says ([`crate::root_record`]):
    /// why not, or `None` (recording what the pass saw when it differs
    /// from the record). A root whose mount or record cannot be read is
    /// not judged on a guess: it holds.
    async fn check_root(
        &self,
        observed: &observe::worktrees::RootView,
        record: bool,
    ) -> Option<String> {
        let host = &self.config.host.id;
        let mount = match crate::mounts::mount_of(self.root.path()) {
            Ok(m) => m.identity(),
            Err(e) => {
                return Some(format!(
                    "the worktree root's mount cannot be read ({e}); nothing under it is judged, \
                     marked removed or pruned"
                ))
            }
        };
        // A worktree this controller retired itself (its removal cut short
        // before the row was marked) is in the trash, not gone from the
        // root: its row does not count.
        let retired: std::collections::HashSet<std::ffi::OsString> =
            std::fs::read_dir(crate::act::trash::trash_path(&self.root))
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|e| crate::act::trash::parse_entry(&e.file_name()).map(|(id, _)| id))
                .collect();
        let seen = crate::root_record::RootSeen {
            path: self.root.path().display().to_string(),
            mount,
            entries: observed.dirs.len(),
            rows: observed
                .row_paths
                .iter()
                .filter(|(_, c)| match c {
                    crate::model::PathCheck::Inside { path, .. } => {
                        path.file_name().is_none_or(|n| !retired.contains(n))
                    }
                    _ => false,
                })
                .count(),
        };
        let recorded = match self.store.root_record(host).await {
            Ok(r) => r,
            Err(e) => {
                return Some(format!(
                    "the worktree root's record cannot be read ({e}); nothing under it is \
                     judged, marked removed or pruned"
                ))
            }
        };
        match crate::root_record::judge(recorded.as_ref(), &seen) {
            crate::root_record::Verdict::Hold(why) => Some(why),
            crate::root_record::Verdict::Record(r) => {
                if record && recorded.as_ref() != Some(&r) {
                    let now = SystemTime::now()
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs() as i64);
                    if let Err(e) = self.store.record_root(host, &r, now).await {
                        tracing::warn!("recording the worktree root: {e}");
                    }
                }
                None
            }
        }
    }

    /// Records the root as it is now (`accept-root`): what was recorded
    /// before, and what is now.
    pub async fn accept_root(
        &self,
    ) -> anyhow::Result<(
        Option<crate::root_record::RootRecord>,
        crate::root_record::RootRecord,
    )> {
        let host = &self.config.host.id;
        let rows = self.store.host_rows(host).await?;
        let root = self.root.clone();
        let seen = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            let entries = std::fs::read_dir(root.path())?
                .flatten()
                .filter(|e| e.file_name() != crate::root::TRASH_DIR)
                .count();
            let rows = rows
                .worktrees
                .iter()
                .filter(|r| matches!(root.check(&r.path), crate::model::PathCheck::Inside { .. }))
                .count();
            Ok(crate::root_record::RootSeen {
                path: root.path().display().to_string(),
                mount: crate::mounts::mount_of(root.path())?.identity(),
                entries,
                rows,
            })
        })
        .await??;
        let before = self.store.root_record(host).await?;
        let now = seen.record();
        let secs = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        self.store.record_root(host, &now, secs).await?;
        tracing::warn!(root = %now.path, mount = %now.mount, "the worktree root is recorded as it is now");
        Ok((before, now))
    }

    /// Fills in when each stale admin entry was first seen missing, from
    /// the database (recording this pass's first sightings). Written even
    /// by a pass that acts on nothing: it is what the pass saw. When the
    /// database cannot say, the entries stay unknown and wait.
    async fn record_missing(
        &self,
        entries: &mut [crate::model::StaleAdminEntry],
        complete: bool,
        record: bool,
        notes: &mut Notes,
    ) {
        let keys: Vec<(String, String)> = entries
            .iter()
            .map(|e| (e.repo_path.display().to_string(), e.name.clone()))
            .collect();
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        match self
            .store
            .missing_since(&self.config.host.id, &keys, now, complete, record)
            .await
        {
            Ok(since) => {
                for (e, s) in entries.iter_mut().zip(since) {
                    e.missing_since =
                        s.map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s.max(0) as u64));
                }
            }
            Err(e) => notes.errors.push(format!(
                "recording when admin entries went missing (they wait until it can be): {e}"
            )),
        }
    }

    /// The processes, the database and the worktrees, overlapped where one
    /// does not need another: the scan runs beside the reading of the
    /// host's rows; the worktrees are observed beside the liveness queries
    /// (which need the chats the scan found).
    async fn observe_host(
        &self,
        mut interest: Interest,
        labels: LabelNames,
    ) -> Result<HostView, crate::store::StoreError> {
        let scan_task = {
            let labels = labels.clone();
            tokio::task::spawn_blocking(move || processes::scan(&labels))
        };
        let cgroups_task = {
            let setting = self.config.processes.cgroup_parent.clone();
            let instance = labels.instance.clone();
            tokio::task::spawn_blocking(move || observe_cgroups(&setting, instance.as_deref()))
        };
        let rows = self.store.host_rows(&self.config.host.id).await?;
        let observe_task = {
            let root = self.root.clone();
            let (rows, repos) = (rows.worktrees.clone(), rows.repositories.clone());
            tokio::task::spawn_blocking(move || observe::worktrees::observe(&root, &rows, &repos))
        };
        let mut errors = Vec::new();
        let scan = scan_task.await.unwrap_or_else(|e| {
            errors.push(format!("scanning processes failed: {e}"));
            Default::default()
        });
        // The labels name chats whose liveness the desired state must
        // include.
        interest
            .chats
            .extend(scan.processes.iter().map(|p| p.chat_id.clone()));
        let tied = self.tied(&scan, &mut errors);
        let (cgroups, cgroup_error) = cgroups_task.await.unwrap_or_else(|e| {
            (
                Vec::new(),
                Some(format!("observing agent cgroups failed: {e}")),
            )
        });
        errors.extend(cgroup_error);
        interest
            .chats
            .extend(tied.iter().map(|t| t.chat_id.clone()));
        interest.chats.extend(
            cgroups
                .iter()
                .filter_map(|c| c.record.as_ref().ok().map(|r| r.chat.clone())),
        );
        let desired = self.store.liveness(rows, &interest).await?;
        let recorded_pids = recorded_pids(&scan, &desired, labels).await;
        let observed = observe_task
            .await
            .unwrap_or_else(|e| observe::worktrees::RootView {
                errors: vec![format!("observing worktrees failed: {e}")],
                ..Default::default()
            });
        Ok(HostView {
            scan,
            tied,
            cgroups,
            desired,
            recorded_pids,
            observed,
            errors,
        })
    }

    /// Whether the fork lineage runs, for the report.
    fn lineage_view(&self) -> crate::report::LineageView {
        use crate::report::{LineageRun, LineageView};
        match &self.lineage {
            LineageState::Off => LineageView::default(),
            LineageState::Running(l) => LineageView {
                state: LineageRun::On,
                why: None,
                lost_events: l.lost(),
            },
            LineageState::Unavailable { why, .. } => LineageView {
                state: LineageRun::Unavailable,
                why: Some(why.clone()),
                lost_events: 0,
            },
        }
    }

    /// The processes tied to a chat by fork lineage that the scan did not
    /// see labelled; the scan's labelled processes seed the lineage. What
    /// the lineage lost, or why it is not running, is an error of the pass.
    fn tied(&self, scan: &processes::Scan, errors: &mut Vec<String>) -> Vec<Tied> {
        match &self.lineage {
            LineageState::Off => Vec::new(),
            LineageState::Unavailable { why, required } => {
                if *required {
                    errors.push(why.clone());
                }
                Vec::new()
            }
            LineageState::Running(lineage) => {
                lineage.seed(&scan.processes);
                let labelled = scan.processes.iter().map(|p| p.pid).collect();
                let (tied, note) = lineage.hidden(&labelled);
                errors.extend(note);
                tied
            }
        }
    }

    /// One pass over `scope`.
    pub async fn pass(
        &self,
        scope: Scope,
        mode: Mode,
        trigger: Trigger,
        cancel: &CancellationToken,
    ) -> PassReport {
        let started_at = SystemTime::now();
        let t0 = Instant::now();
        let deadline = Deadline {
            at: t0 + self.config.r#loop.pass_timeout,
            pass_timeout: self.config.r#loop.pass_timeout,
        };
        let mut notes = Notes::default();
        // Observe-only overrules every caller: nudges and `once` included.
        let mode = if self.config.r#loop.dry_run {
            Mode::DryRun
        } else {
            mode
        };
        let mut state_unreadable = None;
        let (plan, observed) = match self.plan(&scope, mode != Mode::DryRun, &mut notes).await {
            Ok(p) => p,
            Err(e) => {
                state_unreadable = Some(StateUnreadable::of(&e));
                notes.errors.push(e.to_string());
                (Plan::default(), ObservedCounts::default())
            }
        };
        let (planned, results) = match mode {
            Mode::DryRun => (plan.actions.clone(), Vec::new()),
            Mode::Act(mut opts) => {
                // A pass asked for by name looks at its kept worktrees
                // afresh; the interval's host pass may reuse their verdicts.
                opts.recheck_kept |= scope != Scope::Host;
                // Intents a crash left open are concluded before new ones.
                match self.executor.settle().await {
                    Ok(lines) => notes.warnings.extend(lines),
                    Err(e) => notes.errors.push(e),
                }
                let mut results = self.act(&plan, opts, cancel, deadline).await;
                if opts.force {
                    self.retake_forced(&scope, &mut results, opts, cancel, deadline, &mut notes)
                        .await;
                }
                self.sweep_forked(&scope, &mut results, opts, cancel, deadline, &mut notes)
                    .await;
                (Vec::new(), results)
            }
        };
        // What a forced pass could not take from another run is said, by
        // target: the caller answers "busy, retry", never a quiet skip.
        let forced = matches!(mode, Mode::Act(o) if o.force);
        let busy = results
            .iter()
            .filter(|r| forced && left_to_concurrent_run(r))
            .map(|r| r.target.to_string());
        for target in busy {
            notes.errors.push(format!(
                "busy, retry: the forced action on {target} did not happen: another run was \
                 acting on it until after this pass's time (loop.pass_timeout {}) or {} times in \
                 a row; nothing was done to it by this pass",
                humantime::format_duration(self.config.r#loop.pass_timeout),
                FORCED_RETAKES + 1,
            ));
        }
        // An action whose record is missing is an error of the pass.
        notes
            .errors
            .extend(results.iter().filter_map(|r| r.audit_error.clone()));
        let mut report = PassReport {
            trigger,
            scope,
            dry_run: mode == Mode::DryRun,
            force: matches!(mode, Mode::Act(o) if o.force),
            started_at,
            duration_ms: t0.elapsed().as_millis() as u64,
            observed,
            planned,
            results,
            pending: plan.pending,
            at_risk: Vec::new(),
            errors: notes.errors,
            warnings: notes.warnings,
            state_unreadable,
        };
        report.collect_at_risk();
        report
    }

    /// A forced pass whose actions another run held (they waited for it to
    /// finish): reads the state again and acts on what is left in those
    /// actions' groups, so that a worktree the other run kept is archived
    /// and removed by this one. What the other run did is not redone: the
    /// fresh plan no longer has it. Stops after [`FORCED_RETAKES`] reads,
    /// past the pass timeout, or once cancelled; what is then still held
    /// stays in `results` as left to another run.
    async fn retake_forced(
        &self,
        scope: &Scope,
        results: &mut Vec<ActionResult>,
        opts: RunOptions,
        cancel: &CancellationToken,
        deadline: Deadline,
        notes: &mut Notes,
    ) {
        for _ in 0..FORCED_RETAKES {
            let groups: BTreeSet<String> = results
                .iter()
                .filter(|r| left_to_concurrent_run(r))
                .map(|r| r.action.group())
                .collect();
            if groups.is_empty() || cancel.is_cancelled() || Instant::now() >= deadline.at {
                return;
            }
            let Some(plan) = self
                .plan_again(scope, "the forced actions another run held", notes)
                .await
            else {
                return;
            };
            let plan = Plan {
                actions: plan
                    .actions
                    .into_iter()
                    .filter(|a| groups.contains(&a.group()))
                    .collect(),
                ..plan
            };
            results.retain(|r| !left_to_concurrent_run(r));
            for r in self.act(&plan, opts, cancel, deadline).await {
                match results.iter_mut().find(|old| old.target == r.target) {
                    Some(old) => *old = r,
                    None => results.push(r),
                }
            }
        }
    }

    /// The state read and planned again within a pass, for `what`: the
    /// notes of that reading are added where they are new (the first
    /// reading's are already there); a reading that fails is an error of
    /// the pass, and `None`.
    async fn plan_again(&self, scope: &Scope, what: &str, notes: &mut Notes) -> Option<Plan> {
        let mut fresh = Notes::default();
        let plan = match self.plan(scope, true, &mut fresh).await {
            Ok((plan, _)) => plan,
            Err(e) => {
                notes
                    .errors
                    .push(format!("cannot read the state again for {what}: {e}"));
                return None;
            }
        };
        for e in fresh.errors {
            if !notes.errors.contains(&e) {
                notes.errors.push(e);
            }
        }
        for w in fresh.warnings {
            if !notes.warnings.contains(&w) {
                notes.warnings.push(w);
            }
        }
        Some(plan)
    }

    /// What the agents this pass stopped forked while they were being
    /// stopped — after the scan, so in no action of the plan: a fork loop
    /// through the grace, each child in a session of its own. The lineage
    /// ties those children to the chat; the state is read again and they
    /// are stopped under the same rules, up to [`FORK_SWEEPS`] more rounds
    /// within the pass's time. What the last reading would still stop is
    /// an error of the pass, named: never a pass that says done while they
    /// run.
    async fn sweep_forked(
        &self,
        scope: &Scope,
        results: &mut Vec<ActionResult>,
        opts: RunOptions,
        cancel: &CancellationToken,
        deadline: Deadline,
        notes: &mut Notes,
    ) {
        let LineageState::Running(lineage) = &self.lineage else {
            return;
        };
        let stopped: BTreeSet<String> = results
            .iter()
            .filter(|r| r.action.kind.waits_on_a_grace())
            .filter(|r| matches!(r.outcome.name(), "done" | "failed"))
            .filter_map(|r| r.action.owner.chat_id.clone())
            .collect();
        if stopped.is_empty() {
            return;
        }
        for round in 0..=FORK_SWEEPS {
            // What they forked before dying may still be on its way from
            // the kernel.
            let l = lineage.clone();
            let caught_up = tokio::task::spawn_blocking(move || l.caught_up(SWEEP_CATCH_UP))
                .await
                .unwrap_or(false);
            if !caught_up {
                tracing::warn!(
                    "the fork lineage is still applying events after {}: what a stopped agent \
                     forked last may be left to the next pass",
                    humantime::format_duration(SWEEP_CATCH_UP)
                );
            }
            let left: BTreeSet<(i32, u64)> = lineage
                .hidden(&Default::default())
                .0
                .into_iter()
                .filter(|t| stopped.contains(&t.chat_id))
                .map(|t| (t.pid, t.start_time))
                .collect();
            if left.is_empty() {
                return;
            }
            let Some(plan) = self
                .plan_again(scope, "what a stopped agent forked", notes)
                .await
            else {
                return;
            };
            let done: std::collections::HashSet<&plan::Target> =
                results.iter().map(|r| &r.target).collect();
            let actions: Vec<plan::Action> = plan
                .actions
                .into_iter()
                .filter(|a| match &a.kind {
                    plan::ActionKind::TerminateProcess { process } => {
                        left.contains(&(process.pid, process.start_time))
                            && !done.contains(&a.key())
                    }
                    _ => false,
                })
                .collect();
            if actions.is_empty() {
                return;
            }
            if round == FORK_SWEEPS || cancel.is_cancelled() || Instant::now() >= deadline.at {
                let named: Vec<String> = actions
                    .iter()
                    .map(|a| format!("{} ({})", a.key(), a.reason))
                    .collect();
                notes.errors.push(format!(
                    "{} process(es) forked by a stopped agent while it was being stopped are \
                     still there after {round} more round(s) within this pass; the next pass \
                     stops them: {}",
                    named.len(),
                    named.join("; ")
                ));
                return;
            }
            tracing::info!(
                round = round + 1,
                processes = actions.len(),
                "stopping what stopped agents forked while they were being stopped"
            );
            let plan = Plan {
                actions,
                ..Plan::default()
            };
            results.extend(self.act(&plan, opts, cancel, deadline).await);
        }
    }

    /// Executes a plan until the pass's deadline: from then on no action
    /// starts (those still waiting are deferred, left for the next pass)
    /// and the ones in flight are waited for.
    async fn act(
        &self,
        plan: &Plan,
        opts: RunOptions,
        cancel: &CancellationToken,
        deadline: Deadline,
    ) -> Vec<ActionResult> {
        let run = self
            .executor
            .execute_until(plan, opts, cancel, Some(deadline));
        tokio::pin!(run);
        tokio::select! {
            r = &mut run => r,
            _ = tokio::time::sleep_until(deadline.at.into()) => {
                tracing::warn!(timeout = %humantime::format_duration(deadline.pass_timeout),
                    "pass timed out: no new actions, waiting for those in flight");
                run.await
            }
        }
    }

    pub fn next_delay(&self) -> Duration {
        let l = &self.config.r#loop;
        let jitter_ms = l.jitter.as_millis() as u64;
        let extra = if jitter_ms == 0 {
            0
        } else {
            fastrand::u64(0..jitter_ms)
        };
        l.interval + Duration::from_millis(extra)
    }
}

/// Starts the fork lineage as `processes.lineage` asks. Where `auto`
/// cannot open the connector (a controller that is not root), why is
/// logged once here and shown with every pass; it is not an error.
fn start_lineage(config: &Config) -> LineageState {
    let required = match config.processes.lineage() {
        crate::config::Lineage::Off => return LineageState::Off,
        crate::config::Lineage::On => true,
        crate::config::Lineage::Auto => false,
    };
    match observe::lineage::Lineage::start(LabelNames::from(&config.processes)) {
        Ok(lineage) => {
            tracing::info!("fork lineage: following every fork and exec on the host");
            LineageState::Running(lineage)
        }
        Err(e) => {
            let why = format!(
                "processes.lineage: the process connector cannot be opened ({e}); it needs \
                 CAP_NET_ADMIN and AF_NETLINK: only labels are seen, and an agent not started \
                 through launch that clears its labels is not"
            );
            tracing::warn!("{why}");
            LineageState::Unavailable { why, required }
        }
    }
}

/// What one observation of the host found.
struct HostView {
    scan: processes::Scan,
    tied: Vec<Tied>,
    cgroups: Vec<crate::model::AgentCgroup>,
    desired: crate::model::DesiredState,
    recorded_pids: HashMap<i32, Option<crate::model::PidIdentity>>,
    observed: observe::worktrees::RootView,
    /// Observations that failed; the pass goes on without them.
    errors: Vec<String>,
}

/// The agent cgroups of this instance, and why some could not be seen:
/// an error of the pass (agents there are not seen), never taken for "no
/// agents".
fn observe_cgroups(
    setting: &str,
    instance: Option<&str>,
) -> (Vec<crate::model::AgentCgroup>, Option<String>) {
    let is_root = nix::unistd::geteuid().is_root();
    match crate::cgroup::Parent::resolve(setting, is_root) {
        Ok(crate::cgroup::Parent::At { path, .. }) => {
            let seen = observe::cgroups::observe(&path, instance);
            (seen.cgroups, seen.error)
        }
        Ok(_) => (Vec::new(), None),
        Err(e) => (Vec::new(), Some(e)),
    }
}

/// Who each pid recorded in an open agent row is now. A pid the scan just
/// read as a labelled agent needs no second read; only the others (gone,
/// reused, unlabelled) are looked up.
async fn recorded_pids(
    scan: &processes::Scan,
    desired: &crate::model::DesiredState,
    labels: LabelNames,
) -> HashMap<i32, Option<crate::model::PidIdentity>> {
    let scanned: HashMap<i32, crate::model::PidIdentity> = scan
        .processes
        .iter()
        .map(|p| {
            (
                p.pid,
                crate::model::PidIdentity {
                    start_time: p.start_time,
                    chat_label: Some(p.chat_id.clone()),
                    unlabelled: false,
                },
            )
        })
        .collect();
    let (known, unknown): (Vec<i32>, Vec<i32>) = desired
        .agent_sessions
        .iter()
        .filter_map(|r| r.pid)
        .partition(|pid| scanned.contains_key(pid));
    let mut out: HashMap<i32, Option<crate::model::PidIdentity>> = known
        .into_iter()
        .map(|pid| (pid, scanned.get(&pid).cloned()))
        .collect();
    if unknown.is_empty() {
        return out;
    }
    let looked_up = tokio::task::spawn_blocking(move || {
        unknown
            .into_iter()
            .map(|pid| {
                let id = processes::identity(pid, &labels)
                    .filter(|id| processes::is_alive_state(id.state))
                    .map(|id| crate::model::PidIdentity {
                        start_time: id.start_time,
                        chat_label: id.chat_label,
                        unlabelled: id.env_chat == processes::EnvChat::Absent,
                    });
                (pid, id)
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default();
    out.extend(looked_up);
    out
}

/// Logs a pass's summary line and its errors; an error the passes keep
/// meeting (a database outage) is logged once, then at most once a minute
/// with a count (see [`repeats`]).
pub fn log_summary(r: &PassReport, repeats: &mut repeats::Repeats) {
    let counts = r.results.iter().fold(
        std::collections::BTreeMap::<&str, usize>::new(),
        |mut m, x| {
            *m.entry(x.outcome.name()).or_default() += 1;
            m
        },
    );
    tracing::info!(
        trigger = %r.trigger,
        duration_ms = r.duration_ms,
        actions = r.results.len(),
        outcomes = ?counts,
        at_risk = r.at_risk.len(),
        pending = r.pending.len(),
        result = %r.result(),
        errors = r.error_count(),
        left_for_next_pass = r.left_for_next_pass().len(),
        unreadable_processes = r.observed.unreadable_processes,
        "pass finished"
    );
    let now = Instant::now();
    for e in &r.errors {
        if let Some(line) = repeats.note(e, now) {
            tracing::error!("{line}");
        }
    }
    repeats.keep_only(r.errors.iter().map(String::as_str));
}
