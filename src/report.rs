//! What a pass saw and did, for people (tables) and programs (JSON), and
//! the exit code it maps to.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::act::{ActionResult, Detail, Outcome};
use crate::config::PASS_TIMEOUT;
use crate::model::Scope;
use crate::plan::{Action, Pending};
use crate::risk::AtRisk;
use crate::store::StoreError;

/// Exit codes of `once` (and of `plan`, by what it would do).
pub mod exit {
    /// Converged: nothing left to do.
    pub const CONVERGED: u8 = 0;
    /// An error: an action failed or was refused, or the pass could not run.
    pub const ERROR: u8 = 1;
    /// Bad usage or configuration.
    pub const USAGE: u8 = 2;
    /// Converged except worktrees kept at risk.
    pub const AT_RISK: u8 = 3;
    /// A forced action did not happen: another run was acting on its
    /// target. Nothing was done to it; try again.
    pub const BUSY: u8 = 4;
}

/// Why a pass ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    Startup,
    Interval,
    Nudge,
    Notification,
    Command,
}

impl Trigger {
    /// Every trigger, in the order the metrics list them.
    pub const ALL: [Trigger; 5] = [
        Trigger::Startup,
        Trigger::Interval,
        Trigger::Nudge,
        Trigger::Notification,
        Trigger::Command,
    ];

    /// The label, as serialized.
    pub const fn as_str(self) -> &'static str {
        match self {
            Trigger::Startup => "startup",
            Trigger::Interval => "interval",
            Trigger::Nudge => "nudge",
            Trigger::Notification => "notification",
            Trigger::Command => "command",
        }
    }
}

impl std::fmt::Display for Trigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a pass ended: the word every answer, status line and metric label
/// uses, and the exit code `once` returns for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PassResult {
    Converged,
    AtRisk,
    Error,
}

impl PassResult {
    /// Every result, in the order the metrics list them.
    pub const ALL: [PassResult; 3] = [PassResult::Converged, PassResult::AtRisk, PassResult::Error];

    /// The label, as serialized.
    pub const fn as_str(self) -> &'static str {
        match self {
            PassResult::Converged => "converged",
            PassResult::AtRisk => "at_risk",
            PassResult::Error => "error",
        }
    }

    /// The result of a pass with `errors` errors (as [`count_errors`]
    /// counts them) and `at_risk` worktrees kept at risk.
    pub const fn of(errors: usize, at_risk: usize) -> PassResult {
        if errors > 0 {
            PassResult::Error
        } else if at_risk > 0 {
            PassResult::AtRisk
        } else {
            PassResult::Converged
        }
    }

    pub const fn exit_code(self) -> u8 {
        match self {
            PassResult::Converged => exit::CONVERGED,
            PassResult::AtRisk => exit::AT_RISK,
            PassResult::Error => exit::ERROR,
        }
    }
}

impl std::fmt::Display for PassResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Counts of what a pass observed, by kind.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ObservedCounts {
    pub processes: usize,
    pub opencode_sessions: usize,
    pub worktree_rows: usize,
    pub agent_rows: usize,
    pub root_entries: usize,
    pub stale_admin_entries: usize,
    /// Processes whose environment this controller could not read, so
    /// that it cannot tell whether they are agents: other users'
    /// processes and setuid programs, for a controller that is not root.
    /// Processes gone mid-scan are not counted; kernel threads neither.
    pub unreadable_processes: usize,
    /// Those processes by real uid (the user who started them; a setuid
    /// program counts under its caller).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub unreadable_by_uid: BTreeMap<u32, usize>,
    /// Retired worktrees waiting in the trash for the reclaimer.
    pub trash: crate::act::trash::reclaim::TrashStatus,
    /// Why nothing under the worktree root was judged this pass (it is
    /// not what it was recorded as): `None` while it is itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub root_held: Option<String>,
    /// Whether the fork lineage (`processes.lineage`) is followed.
    pub lineage: LineageView,
    /// The space of the file system holding the worktree root; absent
    /// when it could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub root_space: Option<RootSpace>,
}

/// The space of the file system holding the worktree root (`statvfs`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootSpace {
    /// What an unprivileged user may still write.
    pub free_bytes: u64,
    pub total_bytes: u64,
}

impl RootSpace {
    /// The space of the file system holding `path`; `None` when it cannot
    /// be read.
    pub fn of(path: &std::path::Path) -> Option<RootSpace> {
        let st = nix::sys::statvfs::statvfs(path).ok()?;
        let unit = st.fragment_size() as u64;
        Some(RootSpace {
            free_bytes: (st.blocks_available() as u64).saturating_mul(unit),
            total_bytes: (st.blocks() as u64).saturating_mul(unit),
        })
    }
}

/// The fork lineage as a pass saw it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineageView {
    pub state: LineageRun,
    /// Why it is not running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
    /// Times the kernel's queue overflowed since the controller started:
    /// what was forked then is not followed.
    #[serde(default)]
    pub lost_events: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LineageRun {
    On,
    #[default]
    Off,
    /// Asked for (`auto` or `true`) and not running.
    Unavailable,
}

/// A worktree kept because removing it would lose work.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeptWorktree {
    pub target: String,
    pub worktree_id: Option<String>,
    pub session_id: Option<String>,
    pub reasons: Vec<AtRisk>,
    /// When these reasons were found: this pass, or an earlier one whose
    /// verdict was reused because nothing it rests on changed.
    pub checked_at: String,
    /// Whether this pass reused an earlier verdict instead of a preflight.
    pub verdict_reused: bool,
    /// What it holds on disk (allocated blocks), measured with the
    /// verdict; absent when it could not be walked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
}

/// One pass, start to end.
#[derive(Clone, Debug, Serialize)]
pub struct PassReport {
    pub trigger: Trigger,
    pub scope: Scope,
    /// `plan`: what would be done; nothing was.
    pub dry_run: bool,
    pub force: bool,
    #[serde(serialize_with = "rfc3339")]
    pub started_at: SystemTime,
    pub duration_ms: u64,
    pub observed: ObservedCounts,
    /// Planned actions (dry run only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub planned: Vec<Action>,
    /// What each action came to.
    pub results: Vec<ActionResult>,
    /// Drift seen and left for later on purpose (too young, ...).
    pub pending: Vec<Pending>,
    pub at_risk: Vec<KeptWorktree>,
    /// Failures of the pass itself (observation, database, opencode
    /// failing).
    pub errors: Vec<String>,
    /// What deserves attention but is no failure (opencode not running).
    pub warnings: Vec<String>,
    /// Set when the pass could not read its state (and so did nothing):
    /// callers answer differently when there was nothing to act on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_unreadable: Option<StateUnreadable>,
}

/// Why a pass could not read its state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StateUnreadable {
    /// The database could not be reached or did not answer in time: worth
    /// trying again shortly.
    DatabaseUnreachable,
    /// The database answered with an error (a missing table, a bad row):
    /// trying again will not help until someone looks.
    Other,
}

impl StateUnreadable {
    /// A connection that failed, or a call that ran out of time, is the
    /// database being unreachable; whatever else the database said is not.
    pub fn of(e: &StoreError) -> StateUnreadable {
        match e {
            StoreError::Connect { .. } | StoreError::Unreachable { .. } => {
                StateUnreadable::DatabaseUnreachable
            }
            _ => StateUnreadable::Other,
        }
    }
}

fn rfc3339<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_rfc3339_millis(*t))
}

impl PassReport {
    /// This report as the answer to requests that arrived while `before`
    /// was acting: `before`'s actions first (their effects are what the
    /// requests asked about), then this run's; everything else (what is
    /// pending, at risk, the errors) as this run found it.
    pub fn after(mut self, before: &PassReport) -> PassReport {
        let mut results = before.results.clone();
        // A forced run answers for itself what an earlier one left to
        // another run: this one read the state after it.
        if self.force {
            results.retain(|r| !crate::act::run::executor::left_to_concurrent_run(r));
        }
        results.append(&mut self.results);
        self.results = results;
        self
    }

    /// Collects the worktrees kept at risk from the results.
    pub fn collect_at_risk(&mut self) {
        let started_at = self.started_at;
        self.at_risk = self
            .results
            .iter()
            .filter_map(|r| match &r.outcome {
                Outcome::KeptAtRisk { reasons, .. } => Some(KeptWorktree {
                    target: r.target.to_string(),
                    worktree_id: match &r.action.kind {
                        crate::plan::ActionKind::RemoveWorktree { worktree } => {
                            worktree.row_id.clone()
                        }
                        _ => None,
                    },
                    session_id: r.action.owner.session_id.clone(),
                    reasons: reasons.clone(),
                    checked_at: match &r.detail {
                        Detail::Kept(c) => c.checked_at.clone(),
                        _ => humantime::format_rfc3339_seconds(started_at).to_string(),
                    },
                    verdict_reused: matches!(&r.detail, Detail::Kept(c) if c.verdict_reused),
                    bytes: match &r.detail {
                        Detail::Kept(c) => c.bytes,
                        _ => None,
                    },
                }),
                _ => None,
            })
            .collect();
    }

    /// An error on any error, failure, refusal or deferral, or a worktree
    /// of an unsafe repository (a tree laid out to lead the controller's
    /// writes elsewhere is someone's doing, not a state of work); else at
    /// risk when something is kept at risk; else converged. A dry run
    /// answers by its plan: converged when there is nothing to do, an error
    /// on errors.
    pub fn result(&self) -> PassResult {
        PassResult::of(self.error_count(), self.at_risk.len())
    }

    /// What makes [`PassReport::result`] `error`, counted: see
    /// [`count_errors`]. Every summary that shows a count of errors shows
    /// this one, so that a pass whose result is `error` never reads as
    /// "0 error(s)".
    pub fn error_count(&self) -> usize {
        count_errors(
            self.errors.len(),
            self.results.iter().map(|r| r.outcome.name()),
            self.at_risk
                .iter()
                .flat_map(|k| k.reasons.iter().map(crate::risk::AtRisk::kind)),
        )
    }

    /// Every error of the pass, a line each, as a nudge's answer lists
    /// them: the pass's own, then each action that failed, was refused or
    /// deferred (with what it says), then each worktree kept as an unsafe
    /// repository. As many as [`PassReport::error_count`] counts.
    pub fn all_errors(&self) -> Vec<String> {
        let actions = self
            .results
            .iter()
            .filter(|r| ERROR_OUTCOMES.contains(&r.outcome.name()))
            .map(|r| {
                let (outcome, kind) = (r.outcome.name(), r.action.name());
                format!("{kind} {}: {outcome}: {}", r.target, r.outcome.text())
            });
        let unsafe_repositories = self.at_risk.iter().flat_map(|k| {
            k.reasons
                .iter()
                .filter(|reason| reason.kind() == ERROR_AT_RISK)
                .map(|reason| format!("{} kept at risk: {reason}", k.target))
        });
        self.errors
            .iter()
            .cloned()
            .chain(actions)
            .chain(unsafe_repositories)
            .collect()
    }

    /// The actions not started because the pass ran out of time
    /// (`loop.pass_timeout`): left for the next pass.
    pub fn left_for_next_pass(&self) -> Vec<&ActionResult> {
        self.results
            .iter()
            .filter(
                |r| matches!(&r.outcome, Outcome::Deferred { why } if why.contains(PASS_TIMEOUT)),
            )
            .collect()
    }

    /// Every process still there after its termination's kill (SIGKILL, or
    /// `cgroup.kill`), with the target it belonged to and its state: never
    /// forgotten, always named.
    pub fn survivors(&self) -> Vec<(String, i32, char)> {
        let mut out = Vec::new();
        for r in &self.results {
            let listed: Vec<(i32, char)> = match &r.detail {
                crate::act::Detail::Terminated(t) => {
                    t.survivors.iter().map(|s| (s.pid, s.state)).collect()
                }
                crate::act::Detail::CgroupStopped(c) => {
                    c.survivors.iter().map(|s| (s.pid, s.state)).collect()
                }
                _ => continue,
            };
            out.extend(
                listed
                    .into_iter()
                    .map(|(pid, state)| (r.target.to_string(), pid, state)),
            );
        }
        out
    }

    /// The targets of a forced pass's actions that did not happen because
    /// another run was acting on them throughout (the pass waited for it
    /// and read the state again, as often as it could): "busy, retry"
    /// (HTTP 409, exit [`exit::BUSY`]). Empty for a pass without force,
    /// which rightly leaves a target to the run that held it.
    pub fn busy(&self) -> Vec<String> {
        if !self.force || self.dry_run {
            return Vec::new();
        }
        self.results
            .iter()
            .filter(|r| crate::act::run::executor::left_to_concurrent_run(r))
            .map(|r| r.target.to_string())
            .collect()
    }

    /// The exit code of [`PassReport::result`]; [`exit::BUSY`] when a
    /// forced action did not happen because another run held its target.
    pub fn exit_code(&self) -> u8 {
        if self.busy().is_empty() {
            self.result().exit_code()
        } else {
            exit::BUSY
        }
    }

    /// A readable account: one line per action with its reason and outcome.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{} pass ({}, {}) in {} ms: {} labelled process(es), {} agent row(s), {} worktree row(s), {} root entr(ies), {} stale admin entr(ies)",
            if self.dry_run { "planned" } else { "reconcile" },
            self.trigger,
            scope_text(&self.scope),
            self.duration_ms,
            self.observed.processes,
            self.observed.agent_rows,
            self.observed.worktree_rows,
            self.observed.root_entries,
            self.observed.stale_admin_entries,
        );
        let t = &self.observed.trash;
        if t.entries > 0 || !t.foreign.is_empty() {
            let _ = writeln!(
                s,
                "trash {}: {} entr(ies), about {} bytes, waiting for reclaim since {}{}",
                t.path.display(),
                t.entries,
                t.bytes,
                t.oldest_retired_at.as_deref().unwrap_or("-"),
                if t.foreign.is_empty() {
                    String::new()
                } else {
                    format!("; {} foreign name(s) left alone", t.foreign.len())
                }
            );
        }
        if self.dry_run {
            if self.planned.is_empty() {
                let _ = writeln!(s, "nothing to do");
            }
            for a in &self.planned {
                let _ = writeln!(s, "  would {:<22} {}  — {}", a.name(), a.key(), a.reason);
            }
        } else if self.results.is_empty() {
            let _ = writeln!(s, "nothing to do");
        }
        for r in &self.results {
            let _ = writeln!(
                s,
                "  {:<12} {:<22} {}  — {}",
                r.outcome.name(),
                r.action.name(),
                r.target,
                r.action.reason
            );
            match &r.outcome {
                Outcome::KeptAtRisk { reasons, .. } => {
                    for why in reasons {
                        let _ = writeln!(s, "      at risk: {why}");
                    }
                }
                Outcome::Done { note } if !note.is_empty() => {
                    let _ = writeln!(s, "      {note}");
                }
                Outcome::Skipped { why } | Outcome::Deferred { why } | Outcome::Refused { why } => {
                    let _ = writeln!(s, "      {why}");
                }
                Outcome::Failed { error } => {
                    let _ = writeln!(s, "      error: {error}");
                }
                _ => {}
            }
        }
        for p in &self.pending {
            let _ = writeln!(s, "  pending {}  — {}", p.target, p.why);
        }
        for w in &self.warnings {
            let _ = writeln!(s, "  warning: {w}");
        }
        for e in &self.errors {
            let _ = writeln!(s, "  error: {e}");
        }
        let left = self.left_for_next_pass().len();
        if left > 0 {
            let _ = writeln!(
                s,
                "{left} action(s) not started: {PASS_TIMEOUT} ran out; left for the next pass"
            );
        }
        let survivors = self.survivors();
        if !survivors.is_empty() {
            let named: Vec<String> = survivors
                .iter()
                .map(|(target, pid, state)| format!("pid {pid} (state {state}) of {target}"))
                .collect();
            let _ = writeln!(
                s,
                "{} process(es) still there after the kill: {}",
                survivors.len(),
                named.join(", ")
            );
        }
        if let Some(why) = self.observed.lineage.why.as_deref() {
            let _ = writeln!(s, "fork lineage unavailable: {why}");
        }
        if self.observed.unreadable_processes > 0 {
            let _ = writeln!(
                s,
                "{} process(es) whose environment could not be read (by uid: {}): an agent among \
                 them is invisible to this controller",
                self.observed.unreadable_processes,
                by_uid(&self.observed.unreadable_by_uid),
            );
        }
        let _ = writeln!(
            s,
            "result: {}, {} error(s)",
            self.result(),
            self.error_count()
        );
        s
    }
}

/// The outcomes ([`Outcome::name`]) that make a pass's result `error`.
pub const ERROR_OUTCOMES: [&str; 3] = ["failed", "refused", "deferred"];

/// The at-risk reason ([`crate::risk::AtRisk::kind`]) that makes a pass's
/// result `error`: a tree laid out to lead the controller's writes
/// elsewhere is someone's doing, not a state of work.
pub const ERROR_AT_RISK: &str = "unsafe_repository";

/// How many errors a pass had, from what a summary of it shows: its own
/// `errors`, each action whose outcome (by name) failed, was refused or
/// deferred, and each worktree kept as an unsafe repository (by reason
/// kind). The result is `error` exactly when this is not 0.
pub fn count_errors<'a>(
    errors: usize,
    outcomes: impl IntoIterator<Item = &'a str>,
    at_risk_kinds: impl IntoIterator<Item = &'a str>,
) -> usize {
    errors
        + outcomes
            .into_iter()
            .filter(|o| ERROR_OUTCOMES.contains(o))
            .count()
        + at_risk_kinds
            .into_iter()
            .filter(|k| *k == ERROR_AT_RISK)
            .count()
}

/// `uid 1000: 3, uid 1001: 1`, or `-` for none.
pub fn by_uid(m: &BTreeMap<u32, usize>) -> String {
    if m.is_empty() {
        return "-".into();
    }
    m.iter()
        .map(|(uid, n)| format!("uid {uid}: {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn scope_text(scope: &Scope) -> String {
    match scope {
        Scope::Host => "whole host".into(),
        Scope::Chat(id) => format!("chat {id}"),
        Scope::Session(id) => format!("session {id}"),
    }
}
