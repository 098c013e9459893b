//! What became of an action: its [`Outcome`], and the facts its body
//! found on the way ([`Detail`]), typed while the executor works and JSON
//! only in the answer, the report and the audit record.

use std::time::SystemTime;

use serde::Serialize;

use crate::act::process::terminate;
use crate::git::archive::Archived;
use crate::plan::{Action, Target};
use crate::risk::AtRisk;

/// What became of one action.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// Done now (or found already done).
    Done { note: String },
    /// The worktree holds work; it was kept and marked.
    KeptAtRisk {
        reasons: Vec<AtRisk>,
        /// The row already carried exactly these reasons: nothing new to
        /// record.
        unchanged: bool,
    },
    /// Nothing to do after all: the owner is live again, or the target is
    /// no longer there.
    Skipped { why: String },
    /// Not attempted this pass: backing off, an earlier stage failed, or
    /// the controller is stopping. Still drift.
    Deferred { why: String },
    /// Refused as unsafe (a path outside the root).
    Refused { why: String },
    /// Attempted and failed; the target backs off.
    Failed { error: String },
}

impl Outcome {
    pub fn name(&self) -> &'static str {
        match self {
            Outcome::Done { .. } => "done",
            Outcome::KeptAtRisk { .. } => "kept_at_risk",
            Outcome::Skipped { .. } => "skipped",
            Outcome::Deferred { .. } => "deferred",
            Outcome::Refused { .. } => "refused",
            Outcome::Failed { .. } => "failed",
        }
    }

    /// What the outcome says, in one line: the note, the reasons, or why.
    pub fn text(&self) -> String {
        match self {
            Outcome::Done { note } => note.clone(),
            Outcome::KeptAtRisk { reasons, .. } => reasons
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
            Outcome::Skipped { why } | Outcome::Deferred { why } | Outcome::Refused { why } => {
                why.clone()
            }
            Outcome::Failed { error } => error.clone(),
        }
    }
}

/// One action and what became of it.
#[derive(Clone, Debug, Serialize)]
pub struct ActionResult {
    pub action: Action,
    /// The action's key; serialized as its text.
    pub target: Target,
    #[serde(flatten)]
    pub outcome: Outcome,
    /// Extra facts: the archive ref of a forced removal, and the like.
    #[serde(skip_serializing_if = "Detail::is_none")]
    pub detail: Detail,
    pub duration_ms: u64,
    /// The `intent` audit record written before the action's destructive
    /// step, if it got that far.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub intent_id: Option<i64>,
    /// The outcome could not be written to the audit table: an error of
    /// the pass, whatever the outcome.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit_error: Option<String>,
}

impl ActionResult {
    /// The result of an action whose body did not run (or did not end).
    pub(in crate::act) fn not_run(action: Action, outcome: Outcome) -> ActionResult {
        ActionResult {
            target: action.key(),
            action,
            outcome,
            detail: Detail::None,
            duration_ms: 0,
            intent_id: None,
            audit_error: None,
        }
    }
}

/// The facts an action's body found, beside its outcome. Serializes to the
/// JSON the answers and the audit table have always carried: `null` when
/// there is nothing to say.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Detail {
    #[default]
    None,
    /// What a termination signalled, and what became of each process.
    Terminated(terminate::Terminated),
    /// What stopping an agent's cgroup signalled, spared and left.
    CgroupStopped(crate::act::process::cgroup::Stopped),
    /// A worktree kept at risk: when its verdict was reached.
    Kept(Checked),
    /// A worktree removed, or the steps of a removal that failed.
    Removed(Removal),
    /// A stale admin entry pruned.
    Pruned(Pruned),
}

impl Detail {
    pub fn is_none(&self) -> bool {
        *self == Detail::None
    }

    /// As JSON, for the answer and the audit record.
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

/// When a kept worktree's verdict was reached, and whether this pass
/// reused it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Checked {
    pub checked_at: String,
    pub verdict_reused: bool,
    /// What the worktree holds on disk (allocated blocks, one walk when
    /// the verdict was reached); `None` when it could not be walked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
}

impl Checked {
    pub fn new(at: SystemTime, reused: bool, bytes: Option<u64>) -> Checked {
        Checked {
            checked_at: humantime::format_rfc3339_seconds(at).to_string(),
            verdict_reused: reused,
            bytes,
        }
    }
}

/// What a worktree removal did, step by step; a step not taken is absent.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Removal {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_entries_pruned: Option<usize>,
    /// The force archive of its whole state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archive: Option<Archived>,
    /// Why the directory was deleted in place rather than retired.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deleted_in_place: Option<String>,
    /// The reasons the force archive overrode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forced_over: Option<Vec<AtRisk>>,
    /// Where the commits only its reflog reached are kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<Archived>,
    /// What became of its opencode instance ([`crate::act::worktree::dispose`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub opencode_instance: Option<String>,
    /// The trash entry it was retired to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trash: Option<String>,
}

/// What pruning a stale admin entry kept first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Pruned {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archive: Option<Archived>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unreachable_commits: Option<Vec<String>>,
}

/// Why an action failed. The executor makes its text once, into
/// [`Outcome::Failed`], where it is recorded and answered; until then the
/// source is kept, so that a caller can tell a database that did not answer
/// from a refusal.
#[derive(Debug, thiserror::Error)]
pub enum ActError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Opencode(#[from] crate::opencode::Error),
    /// No destructive step was taken: the intent could not be written
    /// first, so nothing may be.
    #[error("not acting: the intent audit record could not be written first: {0}")]
    IntentNotWritten(#[source] crate::store::StoreError),
    /// No destructive step was taken: the host lock could not be
    /// confirmed (its own text says why).
    #[error("not acting: {0}")]
    NotConfirmed(String),
    /// The blocking pool could not run the step.
    #[error("worker thread failed: {0}")]
    Worker(#[source] tokio::task::JoinError),
    /// What a file system or `/proc` step said, as it said it.
    #[error("{0}")]
    Step(String),
}

impl From<String> for ActError {
    fn from(why: String) -> ActError {
        ActError::Step(why)
    }
}
