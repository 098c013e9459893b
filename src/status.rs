//! What a running controller answers, for people: `boo-reconciler status`
//! renders its `/status` as tables, and `once` beside a daemon renders the
//! daemon's answer to its nudge.

use std::fmt::Write as _;

use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::Value;

use crate::http::answer::NudgeAnswer;
use crate::model::Scope;
use crate::report::{PassResult, Trigger};
use crate::service::{Role, Status};

/// `/status` as this command reads it: the service's own [`Status`], with
/// its pass reports and trash read as far as they are shown (their types
/// only serialize).
pub type StatusDoc = Status<PassSummary, TrashSummary>;

/// What the status shows of a pass report.
#[derive(Clone, Debug, Deserialize)]
pub struct PassSummary {
    pub started_at: String,
    pub trigger: Trigger,
    pub duration_ms: u64,
    pub dry_run: bool,
    /// Absent when empty.
    #[serde(default)]
    pub planned: Vec<IgnoredAny>,
    pub results: Vec<ResultSummary>,
    /// Absent from a controller of an earlier version.
    #[serde(default)]
    pub at_risk: Vec<KeptSummary>,
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
    #[serde(default)]
    pub observed: ObservedSummary,
}

impl PassSummary {
    /// The pass's errors as [`crate::report::PassReport::error_count`]
    /// counts them: its own, and every action and kept worktree that makes
    /// its result `error`.
    pub fn error_count(&self) -> usize {
        crate::report::count_errors(
            self.errors.len(),
            self.results.iter().map(|r| r.outcome.as_str()),
            self.at_risk
                .iter()
                .flat_map(|k| k.reasons.iter().map(|r| r.kind.as_str())),
        )
    }

    /// Its result, as [`crate::report::PassReport::result`] has it.
    pub fn result(&self) -> PassResult {
        PassResult::of(self.error_count(), self.at_risk.len())
    }
}

/// What the status shows of an action's result.
#[derive(Clone, Debug, Deserialize)]
pub struct ResultSummary {
    pub outcome: String,
    pub target: String,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub why: Option<String>,
}

/// What the status shows of what a pass observed.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ObservedSummary {
    #[serde(default)]
    pub unreadable_processes: usize,
    #[serde(default)]
    pub unreadable_by_uid: std::collections::BTreeMap<u32, usize>,
    #[serde(default)]
    pub lineage: crate::report::LineageView,
    /// Absent from a controller of an earlier version.
    #[serde(default)]
    pub root_space: Option<crate::report::RootSpace>,
}

/// What the status shows of the trash.
#[derive(Clone, Debug, Deserialize)]
pub struct TrashSummary {
    pub path: String,
    pub entries: usize,
    pub bytes: u64,
    #[serde(default)]
    pub oldest_retired_at: Option<String>,
    pub reclaiming: usize,
    #[serde(default)]
    pub errors: Vec<TrashErrorSummary>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct TrashErrorSummary {
    pub path: String,
    pub error: String,
    pub failures: u32,
    pub next_attempt_in_s: u64,
}

/// The settings that decide whether the controller acts; anything absent
/// counts as the default (acting).
#[derive(Default, Deserialize)]
#[serde(default)]
struct Acting {
    r#loop: Observing,
    processes: Switch,
    worktrees: Switch,
    opencode: Switch,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct Observing {
    dry_run: Option<bool>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct Switch {
    enabled: Option<bool>,
}

/// What the settings of `/status` let the controller do: observe only, or
/// act with each actuator that is on.
fn acting(config: &Value) -> String {
    let a = Acting::deserialize(config).unwrap_or_default();
    if a.r#loop.dry_run == Some(true) {
        return "no: observe only (loop.dry_run), every pass plans and reports".into();
    }
    let off: Vec<String> = [
        ("processes", &a.processes),
        ("worktrees", &a.worktrees),
        ("opencode", &a.opencode),
    ]
    .into_iter()
    .filter(|(_, s)| s.enabled == Some(false))
    .map(|(name, _)| format!("{name}.enabled"))
    .collect();
    if off.is_empty() {
        "yes".into()
    } else {
        format!("yes, but not on what {} = false holds back", off.join(", "))
    }
}

fn role_text(role: &Role) -> String {
    match role {
        Role::Standby { why } => format!("STANDBY: {why}"),
        Role::Unsure { why } => format!("UNSURE (not acting): {why}"),
        Role::Leader => "leader".into(),
    }
}

fn scope_text(scope: &Scope) -> String {
    match scope {
        Scope::Host => "host".into(),
        Scope::Chat(id) => format!("chat {id}"),
        Scope::Session(id) => format!("session {id}"),
    }
}

fn or_dash(s: Option<&str>) -> String {
    s.unwrap_or("-").to_string()
}

/// The status document as readable tables.
pub fn render(s: &StatusDoc) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "boo-reconciler {} on host {} — {} (up {}s, queue {})",
        s.version,
        s.host,
        role_text(&s.role),
        s.uptime_secs,
        s.queue_depth,
    );
    let _ = writeln!(out, "next pass: {}", or_dash(s.next_pass_at.as_deref()));
    let _ = writeln!(out, "acting: {}", acting(&s.config));
    trash(&mut out, &s.trash);
    if let Some(p) = &s.last_host_pass {
        last_host_pass(&mut out, p);
    }
    kept_cost(&mut out, s);
    table(
        &mut out,
        "WORKTREES AT RISK",
        &["TARGET", "SESSION", "BYTES", "REASONS"],
        s.at_risk.iter().map(|w| {
            let reasons: Vec<&str> = w.reasons.iter().map(|r| r.kind()).collect();
            vec![
                w.target.clone(),
                or_dash(w.session_id.as_deref()),
                w.bytes.map_or_else(|| "-".to_string(), |b| b.to_string()),
                reasons.join(", "),
            ]
        }),
    );
    table(
        &mut out,
        "PENDING DRIFT",
        &["TARGET", "KIND", "STATE", "REASON"],
        s.pending_drift.iter().map(|d| {
            vec![
                d.target.clone(),
                d.kind.clone(),
                d.state.clone(),
                d.reason.clone(),
            ]
        }),
    );
    table(
        &mut out,
        "BACKING OFF",
        &["TARGET", "FAILURES", "NEXT IN", "LAST ERROR"],
        s.backoff.iter().map(|b| {
            vec![
                b.target.clone(),
                b.failures.to_string(),
                format!("{}s", b.next_attempt_in_secs),
                b.last_error.clone(),
            ]
        }),
    );
    table(
        &mut out,
        "RECENT PASSES",
        &["STARTED", "TRIGGER", "SCOPE", "MS", "ACTIONS", "RESULT"],
        s.recent_passes.iter().map(|p| {
            vec![
                p.started_at.clone(),
                p.trigger.to_string(),
                scope_text(&p.scope),
                p.duration_ms.to_string(),
                p.actions.to_string(),
                p.result.to_string(),
            ]
        }),
    );
    out
}

fn trash(out: &mut String, t: &TrashSummary) {
    let _ = writeln!(
        out,
        "trash {}: {} entr(ies), about {} bytes, oldest retired {}, {} being reclaimed",
        t.path,
        t.entries,
        t.bytes,
        or_dash(t.oldest_retired_at.as_deref()),
        t.reclaiming,
    );
    for e in &t.errors {
        let _ = writeln!(
            out,
            "  error: {} cannot be reclaimed ({} failure(s), next attempt in {}s): {}",
            e.path, e.failures, e.next_attempt_in_s, e.error,
        );
    }
}

/// What the kept worktrees hold, and the space left where they are.
fn kept_cost(out: &mut String, s: &StatusDoc) {
    let bytes: u64 = s.at_risk.iter().filter_map(|k| k.bytes).sum();
    let space = s
        .last_host_pass
        .as_ref()
        .and_then(|p| p.observed.root_space)
        .map_or_else(
            || "-".to_string(),
            |r| format!("{} of {} bytes free", r.free_bytes, r.total_bytes),
        );
    let _ = writeln!(
        out,
        "kept at risk: {} worktree(s), {bytes} bytes on disk; worktree root's file system: {space}",
        s.at_risk.len(),
    );
}

fn last_host_pass(out: &mut String, p: &PassSummary) {
    let (count, what) = if p.dry_run {
        (p.planned.len(), "action(s) planned, none taken (dry run)")
    } else {
        (p.results.len(), "action(s)")
    };
    let _ = writeln!(
        out,
        "last host pass: {} ({}), {} ms, {count} {what}, result {}, {} error(s)",
        p.started_at,
        p.trigger,
        p.duration_ms,
        p.result(),
        p.error_count(),
    );
    for r in &p.results {
        if let Some(error) = &r.error {
            let _ = writeln!(out, "  failed: {}: {error}", r.target);
        } else if crate::report::ERROR_OUTCOMES.contains(&r.outcome.as_str()) {
            let why = r.why.as_deref().unwrap_or("");
            let _ = writeln!(out, "  {}: {}: {why}", r.outcome, r.target);
        }
    }
    for k in &p.at_risk {
        if k.reasons
            .iter()
            .any(|r| r.kind == crate::report::ERROR_AT_RISK)
        {
            let _ = writeln!(out, "  kept as an unsafe repository: {}", k.target);
        }
    }
    for e in &p.errors {
        let _ = writeln!(out, "  error: {e}");
    }
    let o = &p.observed;
    if let Some(why) = o.lineage.why.as_deref() {
        let _ = writeln!(out, "  fork lineage unavailable: {why}");
    }
    if o.unreadable_processes > 0 {
        let _ = writeln!(
            out,
            "  {} process(es) whose environment could not be read ({}): an agent among them is \
             invisible to this controller",
            o.unreadable_processes,
            crate::report::by_uid(&o.unreadable_by_uid),
        );
    }
    for w in &p.warnings {
        let _ = writeln!(out, "  warning: {w}");
    }
}

/// A nudge's answer as `once` shows it: the service's own [`NudgeAnswer`],
/// read as far as it is shown (what an action concerns, and what a pass
/// left pending, only serialize).
pub type AnswerSummary = NudgeAnswer<IgnoredAny, IgnoredAny, IgnoredAny, KeptSummary>;

/// What the answer shows of a worktree kept at risk.
#[derive(Clone, Debug, Deserialize)]
pub struct KeptSummary {
    pub target: String,
    pub reasons: Vec<ReasonSummary>,
}

/// What the answer shows of an at-risk reason: its kind.
#[derive(Clone, Debug, Deserialize)]
pub struct ReasonSummary {
    pub kind: String,
}

/// A nudge's answer as readable lines: one per action with its outcome.
/// An answer this version cannot read is shown as it came.
pub fn render_answer(base: &str, answer: &Value) -> String {
    match AnswerSummary::deserialize(answer) {
        Ok(a) => answer_lines(base, &a),
        Err(e) => format!(
            "the running controller at {base} answered in a form this version cannot read ({e}):\n{answer}\n"
        ),
    }
}

fn answer_lines(base: &str, answer: &AnswerSummary) -> String {
    let mut out = String::new();
    // The answer lists every error of the pass, its actions' included.
    let errors = answer.errors.len();
    let _ = writeln!(
        out,
        "reconciled by the running controller at {base} ({} {}) in {} ms: {}, {} action(s), \
         {errors} error(s)",
        answer.scope.as_str(),
        or_dash(answer.subject.id()),
        answer.duration_ms,
        answer.result,
        answer.actions.len(),
    );
    for a in &answer.actions {
        let _ = writeln!(
            out,
            "  {:<8} {} {} — {}{}",
            a.outcome,
            a.kind,
            a.target,
            a.reason,
            if a.message.is_empty() {
                String::new()
            } else {
                format!(" ({})", a.message)
            },
        );
    }
    for k in &answer.at_risk {
        let reasons: Vec<&str> = k.reasons.iter().map(|r| r.kind.as_str()).collect();
        let _ = writeln!(out, "  kept at risk: {} ({})", k.target, reasons.join(", "));
    }
    for e in &answer.errors {
        let _ = writeln!(out, "  error: {e}");
    }
    out
}

/// A titled table with aligned columns; "(none)" when empty.
fn table(out: &mut String, title: &str, head: &[&str], rows: impl Iterator<Item = Vec<String>>) {
    let rows: Vec<Vec<String>> = rows.collect();
    let _ = writeln!(out, "\n{title}");
    if rows.is_empty() {
        let _ = writeln!(out, "  (none)");
        return;
    }
    let mut widths: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let last = cells.len() - 1;
        let padded: Vec<String> = cells
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                if i == last {
                    c
                } else {
                    format!("{c:<w$}", w = widths[i])
                }
            })
            .collect();
        format!("  {}", padded.join("  "))
    };
    let _ = writeln!(
        out,
        "{}",
        line(head.iter().map(|h| h.to_string()).collect())
    );
    for r in rows {
        let _ = writeln!(out, "{}", line(r));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A complete status document: `part`'s keys over an idle leader's.
    /// A pass in `part` is likewise laid over an empty one.
    fn doc(part: Value) -> StatusDoc {
        let mut base = serde_json::json!({
            "version": "0.1.0", "host": "h1", "role": "leader",
            "started_at": "2026-11-24T05:00:00Z", "uptime_secs": 5, "config": {},
            "last_pass": null, "last_host_pass": null, "pending_drift": [], "at_risk": [],
            "backoff": [], "next_pass_at": null, "queue_depth": 0, "recent_passes": [],
            "trash": {"path": "/r/.boo-trash", "entries": 0, "bytes": 0, "reclaiming": 0}
        });
        for (k, v) in part.as_object().unwrap() {
            base[k] = v.clone();
        }
        if let Some(p) = part.get("last_host_pass") {
            let mut pass = serde_json::json!({"started_at": "t", "trigger": "interval",
                "duration_ms": 0, "dry_run": false, "results": [], "errors": [],
                "warnings": []});
            for (k, v) in p.as_object().unwrap() {
                pass[k] = v.clone();
            }
            base["last_host_pass"] = pass;
        }
        serde_json::from_value(base).unwrap()
    }

    #[test]
    fn the_status_the_service_serializes_reads_back() {
        let trash = crate::act::trash::reclaim::TrashStatus::default();
        let t: TrashSummary = serde_json::from_value(serde_json::to_value(&trash).unwrap())
            .expect("the trash reads back");
        assert_eq!((t.entries, t.reclaiming), (0, 0));
        let report = crate::report::PassReport {
            trigger: Trigger::Interval,
            scope: Scope::Host,
            dry_run: false,
            force: false,
            started_at: std::time::UNIX_EPOCH,
            duration_ms: 3,
            observed: Default::default(),
            planned: Vec::new(),
            results: Vec::new(),
            pending: Vec::new(),
            at_risk: Vec::new(),
            errors: vec!["e".into()],
            warnings: Vec::new(),
            state_unreadable: None,
        };
        let p: PassSummary = serde_json::from_value(serde_json::to_value(&report).unwrap())
            .expect("a pass report reads back");
        assert_eq!(p.started_at, "1970-01-01T00:00:00.000Z");
        assert_eq!(p.errors, ["e"]);
    }

    #[test]
    fn renders_every_section_with_aligned_rows() {
        let s = doc(serde_json::json!({
            "version": "0.1.0", "host": "h1", "role": "leader", "uptime_secs": 5,
            "queue_depth": 0, "next_pass_at": "2026-11-24T06:00:00Z",
            "last_host_pass": {"started_at": "t", "trigger": "interval", "duration_ms": 3,
                "results": [], "errors": ["opencode: answered 500"], "warnings": []},
            "at_risk": [{"target": "worktree:/r/w1", "worktree_id": "w1", "session_id": "s1",
                "reasons": [{"kind": "untracked", "count": 1, "paths": ["a"]},
                    {"kind": "locked", "reason": null}],
                "checked_at": "t", "verdict_reused": false, "bytes": 123456}],
            "pending_drift": [], "backoff": [],
            "recent_passes": [{"started_at": "t", "trigger": "nudge",
                "scope": {"scope": "chat", "id": "c1"}, "duration_ms": 4, "actions": 2,
                "result": "converged"}]
        }));
        let text = render(&s);
        assert!(text.contains("host h1 — leader"), "{text}");
        assert!(text.contains("error: opencode: answered 500"), "{text}");
        assert!(
            text.contains("worktree:/r/w1  s1       123456  untracked, locked"),
            "{text}"
        );
        assert!(
            text.contains(
                "kept at risk: 1 worktree(s), 123456 bytes on disk; worktree root's file system: -"
            ),
            "{text}"
        );
        assert!(text.contains("PENDING DRIFT\n  (none)"), "{text}");
        assert!(text.contains("chat c1"), "{text}");
    }

    #[test]
    fn observe_only_and_switched_off_actuators_are_shown() {
        let mut s = doc(serde_json::json!({
            "config": {"loop": {"dry_run": true}, "processes": {"enabled": true}},
            "last_host_pass": {"dry_run": true, "planned": [{}, {}], "results": [],
                "errors": [], "warnings": []}
        }));
        let text = render(&s);
        assert!(
            text.contains("acting: no: observe only (loop.dry_run)"),
            "{text}"
        );
        assert!(
            text.contains("2 action(s) planned, none taken (dry run)"),
            "{text}"
        );
        s.config = serde_json::json!({"loop": {"dry_run": false},
            "processes": {"enabled": false}, "worktrees": {"enabled": true},
            "opencode": {"enabled": false}});
        let text = render(&s);
        assert!(
            text.contains("acting: yes, but not on what processes.enabled, opencode.enabled = false holds back"),
            "{text}"
        );
    }

    #[test]
    fn the_trash_shows_what_waits_and_what_cannot_be_reclaimed() {
        let s = doc(serde_json::json!({
            "version": "0.1.0", "host": "h1", "role": "leader", "uptime_secs": 5,
            "queue_depth": 0, "next_pass_at": null,
            "trash": {"path": "/r/.boo-trash", "entries": 2, "bytes": 4096,
                "oldest_retired_at": "2026-11-24T06:00:00Z", "reclaiming": 1,
                "errors": [{"path": "/r/.boo-trash/w1.1", "error": "mount point inside",
                    "failures": 2, "next_attempt_in_s": 9}]},
            "at_risk": [], "pending_drift": [], "backoff": [], "recent_passes": []
        }));
        let text = render(&s);
        assert!(
            text.contains("trash /r/.boo-trash: 2 entr(ies), about 4096 bytes, oldest retired 2026-11-24T06:00:00Z, 1 being reclaimed"),
            "{text}"
        );
        assert!(
            text.contains("error: /r/.boo-trash/w1.1 cannot be reclaimed (2 failure(s), next attempt in 9s): mount point inside"),
            "{text}"
        );
    }

    /// A pass report with one action per outcome in `outcomes` (by
    /// name), `errors` errors of its own, and a worktree kept as an unsafe
    /// repository when `unsafe_repo`.
    fn report_with(
        outcomes: &[&str],
        errors: usize,
        unsafe_repo: bool,
    ) -> crate::report::PassReport {
        use crate::act::{ActionResult, Detail, Outcome};
        use crate::plan::{Action, ActionKind, Owner};
        let result = |i: usize, outcome: Outcome| {
            let action = Action {
                kind: ActionKind::CloseAgentRow {
                    row_id: format!("r{i}"),
                    backend: crate::model::Backend::Acp,
                    agent: "goose".into(),
                    why: "chat archived".into(),
                    recorded_process: None,
                },
                owner: Owner::default(),
                reason: "chat archived".into(),
            };
            ActionResult {
                target: action.key(),
                action,
                outcome,
                detail: Detail::None,
                duration_ms: 1,
                intent_id: None,
                audit_error: None,
            }
        };
        let mut results: Vec<ActionResult> = outcomes
            .iter()
            .enumerate()
            .map(|(i, o)| {
                let outcome = match *o {
                    "done" => Outcome::Done { note: "row closed".into() },
                    "skipped" => Outcome::Skipped { why: "live again".into() },
                    "deferred" => Outcome::Deferred { why: "not started: loop.pass_timeout (3s) ran out before it could start; left for the next pass".into() },
                    "refused" => Outcome::Refused { why: "outside the root".into() },
                    "failed" => Outcome::Failed { error: "database gone".into() },
                    "kept_at_risk" => Outcome::KeptAtRisk {
                        reasons: vec![crate::risk::AtRisk::Untracked { count: 1, paths: vec!["a".into()] }],
                        unchanged: false,
                    },
                    other => panic!("no outcome {other}"),
                };
                result(i, outcome)
            })
            .collect();
        if unsafe_repo {
            results.push(result(
                99,
                Outcome::KeptAtRisk {
                    reasons: vec![crate::risk::AtRisk::UnsafeRepository {
                        detail: "a link".into(),
                    }],
                    unchanged: false,
                },
            ));
        }
        let mut report = crate::report::PassReport {
            trigger: Trigger::Command,
            scope: Scope::Host,
            dry_run: false,
            force: false,
            started_at: std::time::UNIX_EPOCH,
            duration_ms: 3,
            observed: Default::default(),
            planned: Vec::new(),
            results,
            pending: Vec::new(),
            at_risk: Vec::new(),
            errors: (0..errors).map(|i| format!("pass error {i}")).collect(),
            warnings: Vec::new(),
            state_unreadable: None,
        };
        report.collect_at_risk();
        report
    }

    /// The report as `/status` carries it and `status` reads it back.
    fn summary_of(report: &crate::report::PassReport) -> PassSummary {
        serde_json::from_value(serde_json::to_value(report).unwrap()).expect("reads back")
    }

    #[test]
    fn every_summary_counts_the_errors_that_make_the_result_error() {
        let outcomes = [
            "done",
            "skipped",
            "deferred",
            "refused",
            "failed",
            "kept_at_risk",
        ];
        for first in outcomes {
            for second in outcomes {
                for errors in [0, 2] {
                    for unsafe_repo in [false, true] {
                        let r = report_with(&[first, second], errors, unsafe_repo);
                        let case =
                            format!("{first}, {second}, {errors} error(s), unsafe {unsafe_repo}");
                        let expected = errors
                            + [first, second]
                                .iter()
                                .filter(|o| ["failed", "refused", "deferred"].contains(o))
                                .count()
                            + usize::from(unsafe_repo);
                        assert_eq!(r.error_count(), expected, "{case}");
                        assert_eq!(
                            r.result() == PassResult::Error,
                            expected > 0,
                            "{case}: {:?}",
                            r.result()
                        );
                        let s = summary_of(&r);
                        assert_eq!(
                            (s.error_count(), s.result()),
                            (r.error_count(), r.result()),
                            "{case}: the status reads what the report says"
                        );
                        let line = format!("result: {}, {expected} error(s)", r.result());
                        assert!(r.render().contains(&line), "{case}: {}", r.render());
                        let answer = crate::http::answer::NudgeAnswer::of(
                            &r,
                            crate::http::answer::Subject::Host {},
                            Vec::new(),
                        );
                        assert_eq!(
                            answer.errors.len(),
                            expected,
                            "{case}: the answer lists every error: {:?}",
                            answer.errors
                        );
                        let shown =
                            render_answer("http://h", &serde_json::to_value(answer).unwrap());
                        assert!(
                            shown.contains(&format!(", {expected} error(s)")),
                            "{case}: {shown}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn a_pass_with_failed_and_deferred_actions_never_reads_0_errors() {
        let report = report_with(&["failed", "deferred", "done"], 0, false);
        assert!(report.errors.is_empty(), "no error of the pass itself");
        let mut s = doc(serde_json::json!({}));
        s.last_host_pass = Some(summary_of(&report));
        let text = render(&s);
        assert!(text.contains("result error, 2 error(s)"), "{text}");
        assert!(
            text.contains("failed: agent-row:r0: database gone"),
            "{text}"
        );
        assert!(
            text.contains("deferred: agent-row:r1: not started: loop.pass_timeout (3s)"),
            "{text}"
        );
        assert!(
            report.render().contains(
                "1 action(s) not started: loop.pass_timeout ran out; left for the next pass"
            ),
            "{}",
            report.render()
        );

        // The daemon's answer to `once`, as `once` prints it.
        let answer = crate::http::answer::NudgeAnswer::of(
            &report,
            crate::http::answer::Subject::Host {},
            Vec::new(),
        );
        let shown = render_answer(
            "http://127.0.0.1:7878",
            &serde_json::to_value(answer).unwrap(),
        );
        assert!(
            shown.contains(": error, 3 action(s), 2 error(s)"),
            "{shown}"
        );
    }

    #[test]
    fn what_the_scan_could_not_read_is_shown_with_its_users() {
        let mut report = report_with(&["done"], 0, false);
        report.observed.unreadable_processes = 4;
        report.observed.unreadable_by_uid = [(0, 1), (1001, 3)].into_iter().collect();
        let mut s = doc(serde_json::json!({}));
        s.last_host_pass = Some(summary_of(&report));
        let line = "4 process(es) whose environment could not be read (uid 0: 1, uid 1001: 3)";
        assert!(render(&s).contains(line), "{}", render(&s));
        assert!(
            report.render().contains(
                "4 process(es) whose environment could not be read (by uid: uid 0: 1, uid 1001: 3)"
            ),
            "{}",
            report.render()
        );
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["observed"]["unreadable_processes"], 4);
        assert_eq!(json["observed"]["unreadable_by_uid"]["1001"], 3);
    }

    #[test]
    fn an_answer_renders_each_action_and_what_was_kept() {
        let a = serde_json::json!({
            "scope": "chat", "chat_id": "c1", "duration_ms": 12, "result": "at_risk",
            "actions": [{"outcome": "done", "kind": "terminate_process",
                "target": "process:42", "reason": "chat archived", "message": ""}],
            "at_risk": [{"target": "worktree:/r/w", "reasons": [{"kind": "untracked"}]}],
            "errors": ["x"]
        });
        let s = render_answer("http://127.0.0.1:7878", &a);
        assert!(
            s.contains("(chat c1) in 12 ms: at_risk, 1 action(s)"),
            "{s}"
        );
        assert!(
            s.contains("done     terminate_process process:42 — chat archived\n"),
            "{s}"
        );
        assert!(s.contains("kept at risk: worktree:/r/w (untracked)"), "{s}");
        assert!(s.contains("error: x"), "{s}");
    }
}
