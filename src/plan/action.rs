//! What the planner answers with: actions, their targets and owners,
//! and what it left pending.

use std::path::PathBuf;

use serde::Serialize;

use crate::model::{Backend, StaleAdminEntry};

/// Who an action is for. Both are `None` for an orphan with no row.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize)]
pub struct Owner {
    pub session_id: Option<String>,
    pub chat_id: Option<String>,
}

/// A worktree directory to remove: the path is already confined to the root.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WorktreeTarget {
    /// The `worktrees` row, or `None` for a directory no row names.
    pub row_id: Option<String>,
    /// The directory's name under the root (the worktree id by contract).
    pub name: String,
    pub path: PathBuf,
    pub branch: Option<String>,
    pub base_ref: Option<String>,
    /// The main repository the row names (untrusted: the preflight checks
    /// that the directory is a worktree of exactly this repository).
    pub repo_path: Option<PathBuf>,
}

/// A process to stop, as observed: `(pid, start_time)` is its identity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProcessTarget {
    pub pid: i32,
    pub start_time: u64,
    pub pgid: i32,
    pub chat_id: String,
    pub agent: Option<String>,
    pub command: String,
    /// Seconds the process had been running when observed.
    pub age_secs: u64,
    /// The `agent_sessions` row that recorded this pid and start time,
    /// when the target comes from it rather than from a labelled process:
    /// the process no longer carries its labels, and the recorded start
    /// time alone says it is the same process.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recorded_by_row: Option<String>,
    /// The labelled process this one was forked from, when the target
    /// comes from the fork lineage ([`crate::observe::lineage`]) rather
    /// than from its own labels: the first check then accepts it without
    /// any chat label, never with another chat's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tied_to: Option<i32>,
}

/// An agent's cgroup to stop ([`crate::cgroup`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CgroupTarget {
    pub path: PathBuf,
    pub chat_id: String,
    pub agent: String,
    /// The agent's pid as the launcher recorded it.
    pub pid: i32,
    /// How many processes were in it when observed.
    pub members: usize,
    /// Seconds since it was made, when observed.
    pub age_secs: u64,
}

/// The process an `agent_sessions` row records, as the row records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct RecordedProcess {
    pub pid: i32,
    pub start_time: Option<u64>,
}

/// An opencode session to delete (abort, then delete; its children go
/// with it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OpencodeTarget {
    pub id: String,
    /// Where the server says it works, when listed.
    pub directory: Option<PathBuf>,
    /// The root entry the directory is in, when listed.
    pub worktree_dir: Option<PathBuf>,
    /// The chat whose rows name it, if any.
    pub chat_id: Option<String>,
    /// The agent of the row that names it, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// Seconds since the server created it, when listed.
    pub age_secs: Option<u64>,
}

/// What to do. Each kind is idempotent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ActionKind {
    /// Stop a labelled agent process and every descendant: SIGTERM, a
    /// grace, SIGKILL; identity re-checked before every signal.
    TerminateProcess { process: ProcessTarget },
    /// Stop every process of an agent's cgroup: SIGTERM to each, a grace,
    /// the chat's liveness read again, `cgroup.kill`; then remove the
    /// empty cgroup.
    StopCgroup { cgroup: CgroupTarget },
    /// Remove an agent cgroup no process is in any more.
    RemoveCgroup { path: PathBuf },
    /// Abort, then delete, a session on the opencode server; "not found"
    /// counts as done.
    DeleteOpencodeSession { session: OpencodeTarget },
    /// Mark an open `agent_sessions` row closed.
    CloseAgentRow {
        row_id: String,
        backend: Backend,
        /// The row's agent: what the close hook's answer names it by.
        agent: String,
        /// Why this row in particular (pid gone, pid reused, …).
        why: String,
        /// Set when the row is closed because the process it records no
        /// longer exists, whatever its chat's liveness: the executor then
        /// re-reads the pid right before, and closes the row only while it
        /// still records exactly this process (the launcher may have
        /// restarted the agent and recorded the new one meanwhile).
        #[serde(skip_serializing_if = "Option::is_none")]
        recorded_process: Option<RecordedProcess>,
    },
    /// Preflight the worktree right before acting; remove it when nothing
    /// would be lost (with force: archive, then remove); otherwise keep it
    /// and mark it at risk.
    RemoveWorktree { worktree: WorktreeTarget },
    /// The row's directory is already gone: mark the row removed.
    MarkWorktreeRemoved { worktree_id: String, path: PathBuf },
    /// The session is live again: clear the at-risk mark.
    MarkWorktreeActive { worktree_id: String },
    /// Prune an admin entry whose directory is gone, after keeping its
    /// unreachable commits under an archive ref.
    PruneAdminEntry { entry: StaleAdminEntry },
    /// The row's path leaves the root: record the refusal, touch nothing.
    RefusePath {
        worktree_id: String,
        path: PathBuf,
        why: String,
    },
}

impl ActionKind {
    /// Whether the action spends most of its time waiting out a grace
    /// (SIGTERM, then up to `processes.term_grace` before SIGKILL): such
    /// actions take a permit of `processes.max_parallel_terminations`
    /// instead of `loop.max_parallel_actions`, so that a pass's
    /// terminations share one grace instead of waiting out one per slot.
    pub fn waits_on_a_grace(&self) -> bool {
        matches!(
            self,
            ActionKind::TerminateProcess { .. } | ActionKind::StopCgroup { .. }
        )
    }
}

/// The order of work within one group (one session, or one orphan): each
/// stage starts only when the one before it has finished. Processes go
/// before opencode sessions, those before rows, rows before the worktree.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Processes,
    Opencode,
    Rows,
    Worktree,
    Admin,
}

/// One planned action with its reason.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Action {
    #[serde(flatten)]
    pub kind: ActionKind,
    pub owner: Owner,
    pub reason: String,
}

/// An action's kind without its data: what the audit table, the metrics
/// and the answers name it by, and what an intent read back from the
/// database is matched on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ActionName {
    TerminateProcess,
    StopCgroup,
    RemoveCgroup,
    DeleteOpencodeSession,
    CloseAgentRow,
    RemoveWorktree,
    MarkWorktreeRemoved,
    MarkWorktreeActive,
    PruneAdminEntry,
    RefusePath,
}

impl ActionName {
    pub const ALL: [ActionName; 10] = [
        ActionName::TerminateProcess,
        ActionName::StopCgroup,
        ActionName::RemoveCgroup,
        ActionName::CloseAgentRow,
        ActionName::DeleteOpencodeSession,
        ActionName::RemoveWorktree,
        ActionName::MarkWorktreeRemoved,
        ActionName::MarkWorktreeActive,
        ActionName::PruneAdminEntry,
        ActionName::RefusePath,
    ];

    /// The short name used in the audit table and metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            ActionName::TerminateProcess => "terminate_process",
            ActionName::StopCgroup => "stop_cgroup",
            ActionName::RemoveCgroup => "remove_cgroup",
            ActionName::DeleteOpencodeSession => "delete_opencode_session",
            ActionName::CloseAgentRow => "close_agent_row",
            ActionName::RemoveWorktree => "remove_worktree",
            ActionName::MarkWorktreeRemoved => "mark_worktree_removed",
            ActionName::MarkWorktreeActive => "mark_worktree_active",
            ActionName::PruneAdminEntry => "prune_admin_entry",
            ActionName::RefusePath => "refuse_path",
        }
    }

    /// The kind a recorded name stands for; `None` for a name this
    /// version does not know.
    pub fn parse(name: &str) -> Option<ActionName> {
        ActionName::ALL.into_iter().find(|n| n.as_str() == name)
    }
}

impl ActionKind {
    /// Its kind, without its data.
    pub fn name(&self) -> ActionName {
        match self {
            ActionKind::TerminateProcess { .. } => ActionName::TerminateProcess,
            ActionKind::StopCgroup { .. } => ActionName::StopCgroup,
            ActionKind::RemoveCgroup { .. } => ActionName::RemoveCgroup,
            ActionKind::DeleteOpencodeSession { .. } => ActionName::DeleteOpencodeSession,
            ActionKind::CloseAgentRow { .. } => ActionName::CloseAgentRow,
            ActionKind::RemoveWorktree { .. } => ActionName::RemoveWorktree,
            ActionKind::MarkWorktreeRemoved { .. } => ActionName::MarkWorktreeRemoved,
            ActionKind::MarkWorktreeActive { .. } => ActionName::MarkWorktreeActive,
            ActionKind::PruneAdminEntry { .. } => ActionName::PruneAdminEntry,
            ActionKind::RefusePath { .. } => ActionName::RefusePath,
        }
    }
}

impl Action {
    /// The short name used in the audit table and metrics.
    pub fn name(&self) -> &'static str {
        self.kind.name().as_str()
    }

    /// What the action acts on: the key of its backoff, claim and audit.
    pub fn key(&self) -> Target {
        match &self.kind {
            ActionKind::TerminateProcess { process } => Target::Process {
                pid: process.pid,
                start_time: process.start_time,
            },
            ActionKind::StopCgroup { cgroup } => Target::Cgroup(cgroup.path.clone()),
            ActionKind::RemoveCgroup { path } => Target::Cgroup(path.clone()),
            ActionKind::CloseAgentRow { row_id, .. } => Target::AgentRow(row_id.clone()),
            ActionKind::DeleteOpencodeSession { session } => Target::Opencode(session.id.clone()),
            ActionKind::RemoveWorktree { worktree } => Target::Worktree(worktree.path.clone()),
            ActionKind::MarkWorktreeRemoved { worktree_id, .. }
            | ActionKind::MarkWorktreeActive { worktree_id }
            | ActionKind::RefusePath { worktree_id, .. } => {
                Target::WorktreeRow(worktree_id.clone())
            }
            ActionKind::PruneAdminEntry { entry } => Target::AdminEntry {
                repo: entry.repo_path.clone(),
                name: entry.name.clone(),
            },
        }
    }

    pub fn stage(&self) -> Stage {
        match self.kind {
            ActionKind::TerminateProcess { .. }
            | ActionKind::StopCgroup { .. }
            | ActionKind::RemoveCgroup { .. } => Stage::Processes,
            ActionKind::DeleteOpencodeSession { .. } => Stage::Opencode,
            ActionKind::CloseAgentRow { .. }
            | ActionKind::MarkWorktreeActive { .. }
            | ActionKind::MarkWorktreeRemoved { .. } => Stage::Rows,
            ActionKind::RemoveWorktree { .. } | ActionKind::RefusePath { .. } => Stage::Worktree,
            ActionKind::PruneAdminEntry { .. } => Stage::Admin,
        }
    }

    /// The group whose stages run in order: the session, else the chat,
    /// else the target.
    pub fn group(&self) -> String {
        match (&self.owner.session_id, &self.owner.chat_id, &self.kind) {
            (Some(s), _, _) => format!("session:{s}"),
            (None, Some(c), _) => format!("chat:{c}"),
            // An orphan session in an orphan directory goes before the
            // directory: same group as the directory's removal.
            (None, None, ActionKind::DeleteOpencodeSession { session }) => {
                match &session.worktree_dir {
                    Some(dir) => Target::Worktree(dir.to_path_buf()).to_string(),
                    None => self.key().to_string(),
                }
            }
            (None, None, _) => self.key().to_string(),
        }
    }

    /// Whether the action destroys something, so that liveness must be
    /// re-checked right before it.
    #[cfg(test)]
    pub fn is_destructive(&self) -> bool {
        matches!(
            self.kind,
            ActionKind::TerminateProcess { .. }
                | ActionKind::StopCgroup { .. }
                | ActionKind::DeleteOpencodeSession { .. }
                | ActionKind::CloseAgentRow { .. }
                | ActionKind::RemoveWorktree { .. }
                | ActionKind::PruneAdminEntry { .. }
        )
    }
}

/// What an action acts on, or what the planner left pending: one key per
/// thing, whatever the pass. Shown (and serialized) as `kind:identity`,
/// the text the audit table and the answers carry.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// `process:<pid>@<start time>`: a pid alone may be reused.
    Process { pid: i32, start_time: u64 },
    /// `cgroup:<path>`: an agent's cgroup.
    Cgroup(PathBuf),
    /// `agent-row:<id>`.
    AgentRow(String),
    /// `opencode:<session id>`.
    Opencode(String),
    /// `worktree:<path>`: a directory, with or without a row.
    Worktree(PathBuf),
    /// `worktree-row:<id>`: a worktree's row, not its directory.
    WorktreeRow(String),
    /// `admin-entry:<repo>/.git/worktrees/<name>`.
    AdminEntry { repo: PathBuf, name: String },
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Process { pid, start_time } => write!(f, "process:{pid}@{start_time}"),
            Target::Cgroup(path) => write!(f, "cgroup:{}", path.display()),
            Target::AgentRow(id) => write!(f, "agent-row:{id}"),
            Target::Opencode(id) => write!(f, "opencode:{id}"),
            Target::Worktree(path) => write!(f, "worktree:{}", path.display()),
            Target::WorktreeRow(id) => write!(f, "worktree-row:{id}"),
            Target::AdminEntry { repo, name } => {
                write!(f, "admin-entry:{}/.git/worktrees/{name}", repo.display())
            }
        }
    }
}

impl Serialize for Target {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Something the planner saw and deliberately left for later.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Pending {
    /// Serialized as its text, as the answers and the status carry it.
    pub target: Target,
    pub why: String,
}

/// The planner's answer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub actions: Vec<Action>,
    pub pending: Vec<Pending>,
    /// When the state this plan rests on began to be read (set by the
    /// caller; the planner is pure). An action whose target another run
    /// has acted on since then is stale and left to that run.
    #[serde(skip)]
    pub observed_at: Option<std::time::Instant>,
}
