//! The planner: `(desired, actual, policy, now) -> Plan`, a pure function.
//!
//! It compares what the database says should exist with what the host has
//! and lists the actions that remove the difference, each with the reason a
//! human would want to read. It does no I/O: every fact it needs (liveness,
//! path verdicts, ages) is in its inputs, so every drift case is tested
//! here without a database, a repository or a process.
//!
//! # Guarantees
//! - Nothing owned by a live chat is ever planned for teardown.
//! - A path claimed by any live row is never planned for removal: when two
//!   rows name one directory, the one whose session is gone does not speak
//!   for the other (test `a_path_claimed_by_a_live_row_is_never_removed`).
//! - A directory with no row is planned only once older than the orphan
//!   minimum age; until then it is listed as pending.
//! - A row whose path leaves the root is planned only as a refusal, which
//!   touches nothing.
//! - An admin entry of a worktree moved inside the root is never planned
//!   for pruning, only listed as pending (test
//!   `admin_entry_of_a_moved_worktree_is_not_pruned`).
//! - A row the store could not read is never taken for a missing one:
//!   what an unreadable chat, session or worktree row may own is kept and
//!   listed as pending (test `what_an_unreadable_row_may_own_is_kept`).
//! - Actions come out grouped and ordered (see [`Stage`]) so the executor
//!   can run groups concurrently and stages in order.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::model::{
    age, is_wellformed_opencode_id, ActualState, AgentProcess, AgentSessionRow, Backend,
    DesiredState, EntryKind, OpencodeSession, OpencodeView, PathCheck, StaleAdminEntry, Table,
    WorktreeRow, WorktreeState,
};

/// The settings the planner applies.
#[derive(Clone, Debug)]
pub struct Policy {
    /// A directory under the root with no live owner is reaped only once
    /// this old; an open session without any chat keeps its worktree this
    /// long.
    pub worktree_orphan_min_age: Duration,
    /// A labelled process whose chat has no row is left alone while younger
    /// than this: the row may not be committed yet.
    pub process_orphan_min_age: Duration,
    /// An opencode session that no open row of a live chat names is deleted
    /// only once this old.
    pub opencode_orphan_min_age: Duration,
}

/// Which part of the host a pass looks at.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "scope", content = "id", rename_all = "snake_case")]
pub enum Scope {
    /// Everything on the host.
    Host,
    /// One chat, and its session's worktree if that chat was its last.
    Chat(String),
    /// Every chat of one session, and its worktree.
    Session(String),
}

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
    #[serde(default, skip_serializing_if = "Option::is_none")]
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

impl Action {
    /// The short name used in the audit table and metrics.
    pub fn name(&self) -> &'static str {
        match self.kind {
            ActionKind::TerminateProcess { .. } => "terminate_process",
            ActionKind::DeleteOpencodeSession { .. } => "delete_opencode_session",
            ActionKind::CloseAgentRow { .. } => "close_agent_row",
            ActionKind::RemoveWorktree { .. } => "remove_worktree",
            ActionKind::MarkWorktreeRemoved { .. } => "mark_worktree_removed",
            ActionKind::MarkWorktreeActive { .. } => "mark_worktree_active",
            ActionKind::PruneAdminEntry { .. } => "prune_admin_entry",
            ActionKind::RefusePath { .. } => "refuse_path",
        }
    }

    /// What the action acts on: the key of its backoff, claim and audit.
    pub fn key(&self) -> Target {
        match &self.kind {
            ActionKind::TerminateProcess { process } => Target::Process {
                pid: process.pid,
                start_time: process.start_time,
            },
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
            ActionKind::TerminateProcess { .. } => Stage::Processes,
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

/// Plans the actions of one pass. Pure.
pub fn plan(
    desired: &DesiredState,
    actual: &ActualState,
    policy: &Policy,
    now: SystemTime,
    scope: &Scope,
) -> Plan {
    let mut out = Plan::default();
    plan_processes(desired, actual, policy, now, &mut out);
    plan_agent_rows(desired, actual, now, &mut out);
    let waits = plan_opencode(desired, actual, policy, now, &mut out);
    let claimed = plan_worktree_rows(desired, actual, policy, now, &waits, &mut out);
    plan_orphan_dirs(actual, &claimed, policy, now, &waits, &mut out);
    plan_admin_entries(desired, actual, policy, now, &mut out);
    out.actions.retain(|a| in_scope(a, scope, desired));
    out.pending.retain(|_| *scope == Scope::Host);
    // Stable: within a stage, actions keep the order they were planned in.
    out.actions.sort_by_cached_key(|a| (a.group(), a.stage()));
    out
}

/// Labelled processes whose chat is not live.
fn plan_processes(
    desired: &DesiredState,
    actual: &ActualState,
    policy: &Policy,
    now: SystemTime,
    out: &mut Plan,
) {
    // Stopping a process stops its descendants: target the top of each
    // chat's labelled tree only (a child whose leader died becomes a top).
    let labelled: HashSet<(i32, &str)> = actual
        .processes
        .iter()
        .map(|p| (p.pid, p.chat_id.as_str()))
        .collect();
    for p in &actual.processes {
        if labelled.contains(&(p.ppid, p.chat_id.as_str())) {
            continue;
        }
        let state = desired.chats.get(&p.chat_id);
        if state.is_some_and(|s| s.is_live()) {
            continue;
        }
        if let Some(u) = desired.unreadable(Table::Chats, &p.chat_id) {
            out.pending.push(Pending {
                target: Target::Process {
                    pid: p.pid,
                    start_time: p.start_time,
                },
                why: format!(
                    "pid {} is labelled with chat {}: {u}; kept",
                    p.pid, p.chat_id
                ),
            });
            continue;
        }
        let up = age(now, p.started_at);
        let up_text = humantime::format_duration(Duration::from_secs(up.as_secs()));
        let has_row = state.is_some_and(|s| s.chat.is_some());
        if !has_row && up < policy.process_orphan_min_age {
            out.pending.push(Pending {
                target: Target::Process {
                    pid: p.pid,
                    start_time: p.start_time,
                },
                why: format!(
                    "pid {} ({}) is labelled with chat {} which has no row, {up_text} old: \
                     stopped once {} old",
                    p.pid,
                    p.agent.as_deref().unwrap_or("agent"),
                    p.chat_id,
                    humantime::format_duration(policy.process_orphan_min_age)
                ),
            });
            continue;
        }
        let why = state
            .and_then(|s| s.not_live_because(now))
            .unwrap_or_else(|| format!("chat {} has no row", p.chat_id));
        out.actions.push(Action {
            kind: ActionKind::TerminateProcess {
                process: process_target(p, up),
            },
            owner: Owner {
                session_id: state
                    .and_then(|s| s.chat.as_ref().map(|c| c.session_id.clone()))
                    .or_else(|| p.session_id.clone()),
                chat_id: Some(p.chat_id.clone()),
            },
            reason: format!(
                "{why}; {} pid {} up {up_text}",
                p.agent.as_deref().unwrap_or("agent"),
                p.pid
            ),
        });
    }
}

fn process_target(p: &AgentProcess, up: Duration) -> ProcessTarget {
    ProcessTarget {
        pid: p.pid,
        start_time: p.start_time,
        pgid: p.pgid,
        chat_id: p.chat_id.clone(),
        agent: p.agent.clone(),
        command: p.command.clone(),
        age_secs: up.as_secs(),
    }
}

/// Open `acp` rows whose recorded process no longer exists (its pid is
/// gone, or runs another process: the start time differs), whatever their
/// chat's liveness; and open `acp` rows of chats that are not live, closed
/// once the chat's processes are stopped (a later stage of the same group).
/// A recorded pid is never signalled on the row's word alone: only a
/// labelled process is, and one whose start time differs never is.
fn plan_agent_rows(desired: &DesiredState, actual: &ActualState, now: SystemTime, out: &mut Plan) {
    for row in &desired.agent_sessions {
        if row.backend != Backend::Acp {
            continue;
        }
        if let Some((recorded, detail)) = recorded_process_gone(row, actual) {
            let why = chat_state_text(desired, row, now);
            out.actions
                .push(close_row(row, &why, detail, Some(recorded)));
            continue;
        }
        let Some(why) = chat_not_live(desired, row, now, "the row stays open", out) else {
            continue;
        };
        match recorded_process_stopped(row, actual, &why) {
            Ok(detail) => out.actions.push(close_row(row, &why, detail, None)),
            Err(why) => out.pending.push(Pending {
                target: Target::AgentRow(row.id.clone()),
                why,
            }),
        }
    }
}

/// How the chat of a row whose process is gone stands, for the reason:
/// whatever it is, the row of a process that no longer exists is closed.
fn chat_state_text(desired: &DesiredState, row: &AgentSessionRow, now: SystemTime) -> String {
    let state = desired.chats.get(&row.chat_id);
    match state.and_then(|s| s.not_live_because(now)) {
        Some(why) => why,
        None if state.is_some_and(|s| s.is_live()) => format!("chat {} is live", row.chat_id),
        None if desired.unreadable(Table::Chats, &row.chat_id).is_some() => {
            format!("chat {}'s row cannot be read", row.chat_id)
        }
        None => format!("chat {} has no row", row.chat_id),
    }
}

/// Why the chat of `row` is not live; `None` when it is live, or when its
/// row cannot be read (then `row` waits, pending, and `kept` says what is
/// kept meanwhile).
fn chat_not_live(
    desired: &DesiredState,
    row: &AgentSessionRow,
    now: SystemTime,
    kept: &str,
    out: &mut Plan,
) -> Option<String> {
    let state = desired.chats.get(&row.chat_id);
    if state.is_some_and(|s| s.is_live()) {
        return None;
    }
    if let Some(u) = desired.unreadable(Table::Chats, &row.chat_id) {
        out.pending.push(Pending {
            target: Target::AgentRow(row.id.clone()),
            why: format!("{u}; {kept}"),
        });
        return None;
    }
    Some(
        state
            .and_then(|s| s.not_live_because(now))
            .unwrap_or_else(|| format!("chat {} has no row", row.chat_id)),
    )
}

/// For the row of a chat that is not live: why it may be closed now (its
/// agent's process was stopped first, or none is recorded); or, `Err`, why
/// it stays open this pass.
fn recorded_process_stopped(
    row: &AgentSessionRow,
    actual: &ActualState,
    why: &str,
) -> Result<String, String> {
    let Some(pid) = row.pid else {
        return Ok("no pid recorded".to_string());
    };
    match actual.recorded_pids.get(&pid).cloned().flatten() {
        // Not looked up this pass: the row waits for a pass that does.
        None => Err(format!(
            "{why}; recorded pid {pid} was not looked up this pass"
        )),
        Some(id) if id.chat_label.as_deref() == Some(row.chat_id.as_str()) => {
            Ok(format!("agent pid {pid} stopped first"))
        }
        // The recorded process runs but does not carry this chat's label:
        // it is never signalled, and the row stays open as evidence until
        // it exits.
        Some(id) => Err(format!(
            "{why}; recorded pid {pid} is running without chat {}'s label \
             ({}): never signalled; the row stays open until it exits",
            row.chat_id,
            id.chat_label
                .map(|l| format!("label {l}"))
                .unwrap_or_else(|| "no label".into())
        )),
    }
}

/// Closes `row`: `why` its chat is done with, `detail` why this row.
fn close_row(
    row: &AgentSessionRow,
    why: &str,
    detail: String,
    recorded_process: Option<RecordedProcess>,
) -> Action {
    Action {
        kind: ActionKind::CloseAgentRow {
            row_id: row.id.clone(),
            backend: row.backend,
            agent: row.agent.clone(),
            why: detail.clone(),
            recorded_process,
        },
        owner: Owner {
            session_id: Some(row.session_id.clone()),
            chat_id: Some(row.chat_id.clone()),
        },
        reason: format!("{why}; {detail}"),
    }
}

/// The row's recorded process and why it no longer exists, when this pass
/// looked its pid up and found nothing alive there, or a process with
/// another start time. `None` when no pid is recorded, the pid was not
/// looked up, or a process runs there with the recorded start time (or with
/// no start time recorded to compare it to).
fn recorded_process_gone(
    row: &AgentSessionRow,
    actual: &ActualState,
) -> Option<(RecordedProcess, String)> {
    let pid = row.pid?;
    let recorded = RecordedProcess {
        pid,
        start_time: row.pid_start_time,
    };
    match actual.recorded_pids.get(&pid)? {
        None => Some((recorded, format!("recorded pid {pid} is gone"))),
        Some(now_at_pid) => {
            let start = row.pid_start_time?;
            (start != now_at_pid.start_time).then(|| {
                (
                    recorded,
                    format!(
                        "recorded pid {pid} was reused (start time {} now, {start} recorded): \
                         not signalled",
                        now_at_pid.start_time
                    ),
                )
            })
        }
    }
}

/// Worktrees that must wait this pass, with why: by directory (an opencode
/// session still works in it) and by session (opencode is failing and the
/// session's chats have opencode rows).
#[derive(Debug, Default)]
struct Waits {
    dirs: HashMap<PathBuf, String>,
    sessions: HashMap<String, String>,
}

impl Waits {
    fn for_worktree(&self, path: &Path, session: Option<&str>) -> Option<&String> {
        self.dirs
            .get(path)
            .or_else(|| session.and_then(|s| self.sessions.get(s)))
    }
}

/// Opencode sessions: those named by open rows of chats that are not live
/// (deleted, then their rows closed), and those under the root that no open
/// row names (deleted once older than the minimum age). Returns what the
/// worktrees must wait for.
fn plan_opencode(
    desired: &DesiredState,
    actual: &ActualState,
    policy: &Policy,
    now: SystemTime,
    out: &mut Plan,
) -> Waits {
    let mut waits = Waits::default();
    let mut deleting: HashSet<String> = HashSet::new();
    for row in opencode_rows(desired) {
        plan_opencode_row(row, desired, actual, now, &mut deleting, &mut waits, out);
    }
    let OpencodeView::Listed { sessions } = &actual.opencode else {
        return waits;
    };
    plan_orphan_opencode(sessions, desired, actual, policy, now, &mut deleting, out);
    // Whatever stays on the server keeps its worktree.
    for s in sessions {
        let goes = deleting.contains(&s.id)
            || s.parent_id.as_deref().is_some_and(|p| deleting.contains(p));
        if !goes {
            waits
                .dirs
                .entry(s.worktree_dir.clone())
                .or_insert_with(|| format!("opencode session {} still works in it", s.id));
        }
    }
    waits
}

fn opencode_rows(desired: &DesiredState) -> impl Iterator<Item = &AgentSessionRow> + '_ {
    desired
        .agent_sessions
        .iter()
        .filter(|r| r.backend == Backend::OpencodeServer)
}

/// An open `opencode_server` row of a chat that is not live: its session
/// deleted (once per session id), then the row closed; or, while opencode
/// cannot be asked, both kept (and, while it fails, the session's
/// worktree).
fn plan_opencode_row(
    row: &AgentSessionRow,
    desired: &DesiredState,
    actual: &ActualState,
    now: SystemTime,
    deleting: &mut HashSet<String>,
    waits: &mut Waits,
    out: &mut Plan,
) {
    let kept = "its opencode session and row are kept";
    let Some(why) = chat_not_live(desired, row, now, kept, out) else {
        return;
    };
    let owner = Owner {
        session_id: Some(row.session_id.clone()),
        chat_id: Some(row.chat_id.clone()),
    };
    let close = |detail: String| close_row(row, &why, detail, None);
    let id = match row.agent_session_id.as_deref() {
        None => {
            out.actions
                .push(close("no opencode session id recorded".into()));
            return;
        }
        Some(id) if !is_wellformed_opencode_id(id) => {
            out.actions.push(close(format!(
                "malformed opencode session id {id:?}: the server would answer 500, so it is never sent"
            )));
            return;
        }
        Some(id) => id,
    };
    match &actual.opencode {
        OpencodeView::Off => out.actions.push(close(
            "opencode is off on this host (opencode.url is empty)".into(),
        )),
        OpencodeView::NotRunning { why: down } => out.pending.push(Pending {
            target: Target::Opencode(id.to_string()),
            why: format!(
                "{why}; opencode is not running ({down}): session {id} is deleted once it is \
                 back, and row {} stays open until then",
                row.id
            ),
        }),
        OpencodeView::Failing { why: failing } => {
            out.pending.push(Pending {
                target: Target::Opencode(id.to_string()),
                why: format!("{why}; waiting for opencode: {failing}"),
            });
            waits.sessions.insert(
                row.session_id.clone(),
                format!("waiting for opencode to delete session {id}: {failing}"),
            );
        }
        OpencodeView::Listed { .. } => {
            if deleting.insert(id.to_string()) {
                let listed = match &actual.opencode {
                    OpencodeView::Listed { sessions } => sessions.iter().find(|s| s.id == id),
                    _ => None,
                };
                out.actions.push(Action {
                    kind: ActionKind::DeleteOpencodeSession {
                        session: OpencodeTarget {
                            id: id.to_string(),
                            directory: listed.map(|s| s.directory.clone()),
                            worktree_dir: listed.map(|s| s.worktree_dir.clone()),
                            chat_id: Some(row.chat_id.clone()),
                            agent: Some(row.agent.clone()),
                            age_secs: listed.map(|s| age(now, s.created).as_secs()),
                        },
                    },
                    owner: owner.clone(),
                    reason: why.clone(),
                });
            }
            out.actions
                .push(close(format!("opencode session {id} deleted first")));
        }
    }
}

/// Sessions on the server that no open row names: deleted once older than
/// the minimum age (a child goes with its parent).
fn plan_orphan_opencode(
    sessions: &[OpencodeSession],
    desired: &DesiredState,
    actual: &ActualState,
    policy: &Policy,
    now: SystemTime,
    deleting: &mut HashSet<String>,
    out: &mut Plan,
) {
    let named: HashSet<&str> = opencode_rows(desired)
        .filter_map(|r| r.agent_session_id.as_deref())
        .collect();
    let on_server: HashSet<&str> = sessions.iter().map(|s| s.id.as_str()).collect();
    let session_of_dir: HashMap<&PathBuf, &str> = desired
        .worktrees
        .iter()
        .filter_map(|w| match actual.row_paths.get(&w.id) {
            Some(PathCheck::Inside { path, .. }) => Some((path, w.session_id.as_str())),
            _ => None,
        })
        .collect();
    for s in sessions {
        if named.contains(s.id.as_str()) || deleting.contains(&s.id) {
            continue;
        }
        // A child goes with its parent.
        if s.parent_id
            .as_deref()
            .is_some_and(|p| on_server.contains(p))
        {
            continue;
        }
        let old = age(now, s.created);
        let shown = humantime::format_duration(Duration::from_secs(old.as_secs()));
        if old < policy.opencode_orphan_min_age {
            out.pending.push(Pending {
                target: Target::Opencode(s.id.clone()),
                why: format!(
                    "no open row names opencode session {} in {}, {shown} old: deleted once {} old",
                    s.id,
                    s.directory.display(),
                    humantime::format_duration(policy.opencode_orphan_min_age)
                ),
            });
            continue;
        }
        deleting.insert(s.id.clone());
        out.actions.push(Action {
            kind: ActionKind::DeleteOpencodeSession {
                session: OpencodeTarget {
                    id: s.id.clone(),
                    directory: Some(s.directory.clone()),
                    worktree_dir: Some(s.worktree_dir.clone()),
                    chat_id: None,
                    agent: None,
                    age_secs: Some(old.as_secs()),
                },
            },
            owner: Owner {
                session_id: session_of_dir.get(&s.worktree_dir).map(|s| s.to_string()),
                chat_id: None,
            },
            reason: format!(
                "no open row names this session in {}, {shown} old",
                s.directory.display()
            ),
        });
    }
}

/// Plans the rows of this host; returns the directories the rows claim so
/// that they are not taken for orphans.
fn plan_worktree_rows(
    desired: &DesiredState,
    actual: &ActualState,
    policy: &Policy,
    now: SystemTime,
    waits: &Waits,
    out: &mut Plan,
) -> HashSet<PathBuf> {
    let mut claimed = HashSet::new();
    let live_claims = live_claims(desired, actual, policy, now);
    for row in &desired.worktrees {
        let check = actual.row_paths.get(&row.id);
        if let Some(PathCheck::Inside { path, .. }) = check {
            claimed.insert(path.clone());
        }
        // A directory named by the row's id belongs to the row even when the
        // row's path is refused: it is not an orphan to reap.
        if let Some(d) = actual.dirs.iter().find(|d| d.name == row.id) {
            claimed.insert(d.path.clone());
        }
        let Some(reason) = worktree_released(desired, row, policy, now, out) else {
            continue;
        };
        if let Some(PathCheck::Inside { path, exists: true }) = check {
            if let Some(why) = worktree_held(row, path, &reason, &live_claims, waits) {
                out.pending.push(Pending {
                    target: Target::Worktree(path.to_path_buf()),
                    why,
                });
                continue;
            }
        }
        out.actions.push(released_row_action(row, check, reason));
    }
    // An unreadable worktree row still owns `<root>/<its id>`.
    for u in &desired.unreadable {
        let (Table::Worktrees, Some(id)) = (u.table, &u.id) else {
            continue;
        };
        if let Some(d) = actual.dirs.iter().find(|d| &d.name == id) {
            claimed.insert(d.path.clone());
            out.pending.push(Pending {
                target: Target::Worktree(d.path.to_path_buf()),
                why: format!("{u}; its directory is kept"),
            });
        }
    }
    claimed
}

/// Why the session of `row` releases its worktree; `None` when it keeps
/// it (a live session's at-risk mark is cleared) or the row must wait (its
/// session's row cannot be read, or does not exist yet and the worktree
/// row is young: rule 7), pushed as pending.
fn worktree_released(
    desired: &DesiredState,
    row: &WorktreeRow,
    policy: &Policy,
    now: SystemTime,
    out: &mut Plan,
) -> Option<String> {
    let wait = |why: String, out: &mut Plan| {
        out.pending.push(Pending {
            target: Target::WorktreeRow(row.id.clone()),
            why,
        });
        None
    };
    if let Some(u) = desired.unreadable(Table::Sessions, &row.session_id) {
        return wait(format!("{u}; its worktree is kept"), out);
    }
    let session = desired.sessions.get(&row.session_id);
    let release = match session {
        Some(s) => s.releases_worktree_because(now, policy.worktree_orphan_min_age),
        None => Some(format!("session {} has no row", row.session_id)),
    };
    let Some(reason) = release else {
        if row.state == WorktreeState::AtRisk {
            out.actions.push(Action {
                kind: ActionKind::MarkWorktreeActive {
                    worktree_id: row.id.clone(),
                },
                owner: worktree_owner(row),
                reason: format!("session {} is live again", row.session_id),
            });
        }
        return None;
    };
    // A session row that does not exist yet may simply not be committed
    // yet.
    let session_missing = session.is_none_or(|s| s.session.is_none());
    let row_age = age(now, row.created_at);
    if session_missing && row_age < policy.worktree_orphan_min_age {
        return wait(
            format!(
                "{reason}, but the worktree row is {} old: released once {} old",
                humantime::format_duration(Duration::from_secs(row_age.as_secs())),
                humantime::format_duration(policy.worktree_orphan_min_age)
            ),
            out,
        );
    }
    Some(reason)
}

/// Why the existing directory of a released row must stay this pass: a
/// row of a live session names it too, or something still works in it.
fn worktree_held(
    row: &WorktreeRow,
    path: &Path,
    reason: &str,
    live_claims: &HashMap<PathBuf, Vec<&WorktreeRow>>,
    waits: &Waits,
) -> Option<String> {
    let other = live_claims
        .get(path)
        .and_then(|rows| rows.iter().find(|r| r.id != row.id));
    if let Some(other) = other {
        return Some(format!(
            "{reason}; but row {} of live session {} names this directory too: kept",
            other.id, other.session_id
        ));
    }
    waits
        .for_worktree(path, Some(&row.session_id))
        .map(|wait| format!("{reason}; {wait}"))
}

/// What to do with a released row, by what its path is.
fn released_row_action(row: &WorktreeRow, check: Option<&PathCheck>, reason: String) -> Action {
    let (kind, reason) = match check {
        Some(PathCheck::Inside { path, exists: true }) => (
            ActionKind::RemoveWorktree {
                worktree: WorktreeTarget {
                    row_id: Some(row.id.clone()),
                    name: file_name(path),
                    path: path.clone(),
                    branch: row.branch.clone(),
                    base_ref: row.base_ref.clone(),
                    repo_path: Some(row.repo_path.clone()),
                },
            },
            reason,
        ),
        Some(PathCheck::Inside {
            path,
            exists: false,
        }) => (
            ActionKind::MarkWorktreeRemoved {
                worktree_id: row.id.clone(),
                path: path.clone(),
            },
            format!("{reason}; directory already gone"),
        ),
        Some(PathCheck::Refused { why }) => (
            ActionKind::RefusePath {
                worktree_id: row.id.clone(),
                path: row.path.clone(),
                why: why.clone(),
            },
            reason,
        ),
        None => (
            ActionKind::RefusePath {
                worktree_id: row.id.clone(),
                path: row.path.clone(),
                why: "path was not checked".into(),
            },
            reason,
        ),
    };
    Action {
        kind,
        owner: worktree_owner(row),
        reason,
    }
}

fn worktree_owner(row: &WorktreeRow) -> Owner {
    Owner {
        session_id: Some(row.session_id.clone()),
        chat_id: None,
    }
}

/// Whether a worktree row's session keeps its worktree, counting a session
/// whose row cannot be read as one that does.
fn session_keeps_worktree(
    desired: &DesiredState,
    session_id: &str,
    policy: &Policy,
    now: SystemTime,
) -> bool {
    desired.unreadable(Table::Sessions, session_id).is_some()
        || desired
            .sessions
            .get(session_id)
            .is_some_and(|s| s.keeps_worktree(now, policy.worktree_orphan_min_age))
}

/// The directories that rows of live sessions claim, with those rows: a
/// row claims its confined path and the directory named after its id (the
/// layout `<root>/<worktree id>`).
fn live_claims<'a>(
    desired: &'a DesiredState,
    actual: &ActualState,
    policy: &Policy,
    now: SystemTime,
) -> HashMap<PathBuf, Vec<&'a WorktreeRow>> {
    let by_name: HashMap<&str, &PathBuf> = actual
        .dirs
        .iter()
        .map(|d| (d.name.as_str(), &d.path))
        .collect();
    let mut out: HashMap<PathBuf, Vec<&WorktreeRow>> = HashMap::new();
    for row in &desired.worktrees {
        if !session_keeps_worktree(desired, &row.session_id, policy, now) {
            continue;
        }
        let mut paths: Vec<&PathBuf> = Vec::with_capacity(2);
        if let Some(PathCheck::Inside { path, .. }) = actual.row_paths.get(&row.id) {
            paths.push(path);
        }
        if let Some(p) = by_name.get(row.id.as_str()) {
            if !paths.contains(p) {
                paths.push(p);
            }
        }
        for p in paths {
            out.entry(p.clone()).or_default().push(row);
        }
    }
    out
}

/// Directories under the root that no row claims.
fn plan_orphan_dirs(
    actual: &ActualState,
    claimed: &HashSet<PathBuf>,
    policy: &Policy,
    now: SystemTime,
    waits: &Waits,
    out: &mut Plan,
) {
    for dir in &actual.dirs {
        if claimed.contains(&dir.path) {
            continue;
        }
        let target = Target::Worktree(dir.path.to_path_buf());
        if dir.kind != EntryKind::Directory {
            out.pending.push(Pending {
                target,
                why: format!(
                    "{:?} entry under the root with no row: not a worktree, left alone",
                    dir.kind
                )
                .to_lowercase(),
            });
            continue;
        }
        let old = age(now, dir.created);
        let shown = humantime::format_duration(Duration::from_secs(old.as_secs()));
        if old < policy.worktree_orphan_min_age {
            out.pending.push(Pending {
                target,
                why: format!(
                    "no row for this directory, {shown} old: reaped once {} old",
                    humantime::format_duration(policy.worktree_orphan_min_age)
                ),
            });
            continue;
        }
        if let Some(wait) = waits.for_worktree(&dir.path, None) {
            out.pending.push(Pending {
                target,
                why: format!("no row for this directory, {shown} old; {wait}"),
            });
            continue;
        }
        out.actions.push(Action {
            kind: ActionKind::RemoveWorktree {
                worktree: WorktreeTarget {
                    row_id: None,
                    name: dir.name.clone(),
                    path: dir.path.clone(),
                    branch: None,
                    base_ref: None,
                    repo_path: None,
                },
            },
            owner: Owner::default(),
            reason: format!("no row for this directory, {shown} old"),
        });
    }
}

/// Admin entries whose directory is gone, unless a live session's row still
/// names that path (the orchestrator may be re-creating it).
fn plan_admin_entries(
    desired: &DesiredState,
    actual: &ActualState,
    policy: &Policy,
    now: SystemTime,
    out: &mut Plan,
) {
    for moved in &actual.moved_admin_entries {
        out.pending.push(Pending {
            target: Target::AdminEntry {
                repo: moved.repo_path.clone(),
                name: moved.name.clone(),
            },
            why: format!(
                "directory {} is gone but {} points at this entry: a moved worktree, \
                 never pruned (`git worktree repair {}` updates the entry)",
                moved.worktree_path.display(),
                moved.now_at.display(),
                moved.now_at.display()
            ),
        });
    }
    for entry in &actual.stale_admin_entries {
        let live_row = desired.worktrees.iter().find(|row| {
            matches!(actual.row_paths.get(&row.id),
                Some(PathCheck::Inside { path, .. }) if *path == entry.worktree_path)
                && session_keeps_worktree(desired, &row.session_id, policy, now)
        });
        if let Some(row) = live_row {
            out.pending.push(Pending {
                target: Target::AdminEntry {
                    repo: entry.repo_path.clone(),
                    name: entry.name.clone(),
                },
                why: format!(
                    "directory {} is gone but session {} is live",
                    entry.worktree_path.display(),
                    row.session_id
                ),
            });
            continue;
        }
        let session_id = desired
            .worktrees
            .iter()
            .find(|row| {
                matches!(actual.row_paths.get(&row.id),
                    Some(PathCheck::Inside { path, .. }) if *path == entry.worktree_path)
            })
            .map(|row| row.session_id.clone());
        out.actions.push(Action {
            kind: ActionKind::PruneAdminEntry {
                entry: entry.clone(),
            },
            owner: Owner {
                session_id,
                chat_id: None,
            },
            reason: format!(
                "worktree directory {} no longer exists",
                entry.worktree_path.display()
            ),
        });
    }
}

fn in_scope(action: &Action, scope: &Scope, desired: &DesiredState) -> bool {
    match scope {
        Scope::Host => true,
        Scope::Session(id) => action.owner.session_id.as_deref() == Some(id.as_str()),
        Scope::Chat(id) => {
            if action.owner.chat_id.as_deref() == Some(id.as_str()) {
                return true;
            }
            // The chat's session's worktree-level actions come along: the
            // planner only emits them once no live chat remains.
            let session = desired
                .chats
                .get(id)
                .and_then(|c| c.chat.as_ref())
                .map(|c| c.session_id.as_str());
            action.owner.chat_id.is_none()
                && session.is_some()
                && action.owner.session_id.as_deref() == session
        }
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
