//! The domain: what the database says should exist (desired state) and what
//! the host has (actual state). Every other module speaks these types; this
//! module does no I/O.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

/// Lifecycle of a session or chat row, as the orchestrator writes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RowStatus {
    Open,
    Archived,
    Deleted,
}

impl RowStatus {
    pub fn parse(s: &str) -> Option<RowStatus> {
        match s {
            "open" => Some(RowStatus::Open),
            "archived" => Some(RowStatus::Archived),
            "deleted" => Some(RowStatus::Deleted),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RowStatus::Open => "open",
            RowStatus::Archived => "archived",
            RowStatus::Deleted => "deleted",
        }
    }
}

impl fmt::Display for RowStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `sessions` row as far as liveness is concerned.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SessionRow {
    pub id: String,
    pub status: RowStatus,
    pub created_at: SystemTime,
    pub updated_at: SystemTime,
}

/// A `chats` row as far as liveness is concerned.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ChatRow {
    pub id: String,
    pub session_id: String,
    pub status: RowStatus,
    pub created_at: SystemTime,
    pub updated_at: SystemTime,
}

/// Everything the database says about one chat id: the chat row if it
/// exists and the row of the session it belongs to if that exists.
///
/// A chat is live iff its row exists, is `open`, and its session's row
/// exists and is `open` (DESIGN.md).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ChatState {
    pub chat_id: String,
    pub chat: Option<ChatRow>,
    pub session: Option<SessionRow>,
}

impl ChatState {
    pub fn is_live(&self) -> bool {
        matches!(
            (&self.chat, &self.session),
            (Some(c), Some(s)) if c.status == RowStatus::Open && s.status == RowStatus::Open
        )
    }

    /// Why the chat is not live, for humans ("chat c1 archived 4m ago"), or
    /// `None` when it is live.
    pub fn not_live_because(&self, now: SystemTime) -> Option<String> {
        match (&self.chat, &self.session) {
            (None, _) => Some(format!("chat {} has no row", self.chat_id)),
            (Some(c), _) if c.status != RowStatus::Open => Some(format!(
                "chat {} {} {}",
                c.id,
                c.status,
                ago(now, c.updated_at)
            )),
            (Some(c), None) => Some(format!(
                "session {} of chat {} has no row",
                c.session_id, c.id
            )),
            (Some(c), Some(s)) if s.status != RowStatus::Open => Some(format!(
                "session {} of chat {} {} {}",
                s.id,
                c.id,
                s.status,
                ago(now, s.updated_at)
            )),
            _ => None,
        }
    }
}

/// Everything the database says about one session id: its row if any and
/// how many of its chats are live.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SessionState {
    pub session_id: String,
    pub session: Option<SessionRow>,
    /// Chats of the session whose own status is `open`.
    pub open_chats: u64,
    /// Chat rows of the session in any status.
    pub total_chats: u64,
    /// The newest `updated_at` among the session's chat rows, if any.
    pub last_chat_change: Option<SystemTime>,
}

impl SessionState {
    /// Whether the session still has a live chat. A session that is open
    /// but has no chat row at all is treated as live until it is older
    /// than `young`: the orchestrator creates the worktree before the first
    /// chat row is committed.
    pub fn keeps_worktree(&self, now: SystemTime, young: Duration) -> bool {
        match &self.session {
            Some(s) if s.status == RowStatus::Open => {
                self.open_chats > 0 || (self.total_chats == 0 && age(now, s.created_at) < young)
            }
            _ => false,
        }
    }

    /// Why the worktree of this session may go, for humans, or `None` when
    /// the session keeps it.
    pub fn releases_worktree_because(&self, now: SystemTime, young: Duration) -> Option<String> {
        if self.keeps_worktree(now, young) {
            return None;
        }
        Some(match &self.session {
            None => format!("session {} has no row", self.session_id),
            Some(s) if s.status != RowStatus::Open => {
                format!("session {} {} {}", s.id, s.status, ago(now, s.updated_at))
            }
            Some(s) if self.total_chats == 0 => format!(
                "session {} has had no chat since it was created {}",
                s.id,
                ago(now, s.created_at)
            ),
            Some(s) => format!(
                "session {} has no open chat (last of {} closed {})",
                s.id,
                self.total_chats,
                self.last_chat_change
                    .map(|t| ago(now, t))
                    .unwrap_or_else(|| "at an unknown time".into())
            ),
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    Acp,
    OpencodeServer,
}

impl Backend {
    pub fn parse(s: &str) -> Option<Backend> {
        match s {
            "acp" => Some(Backend::Acp),
            "opencode_server" => Some(Backend::OpencodeServer),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Acp => "acp",
            Backend::OpencodeServer => "opencode_server",
        }
    }
}

/// An open `agent_sessions` row of this host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AgentSessionRow {
    pub id: String,
    pub chat_id: String,
    pub session_id: String,
    pub agent: String,
    pub backend: Backend,
    pub agent_session_id: Option<String>,
    pub worktree_id: Option<String>,
    pub pid: Option<i32>,
    pub pid_start_time: Option<u64>,
    pub created_at: SystemTime,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorktreeState {
    Active,
    AtRisk,
    Removed,
}

impl WorktreeState {
    pub fn parse(s: &str) -> Option<WorktreeState> {
        match s {
            "active" => Some(WorktreeState::Active),
            "at_risk" => Some(WorktreeState::AtRisk),
            "removed" => Some(WorktreeState::Removed),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            WorktreeState::Active => "active",
            WorktreeState::AtRisk => "at_risk",
            WorktreeState::Removed => "removed",
        }
    }
}

/// A `worktrees` row of this host that is not `removed`. `path` and
/// `repo_path` are untrusted input: see [`crate::root`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WorktreeRow {
    pub id: String,
    pub session_id: String,
    pub repo_path: PathBuf,
    pub path: PathBuf,
    pub branch: Option<String>,
    pub base_ref: Option<String>,
    pub state: WorktreeState,
    pub created_at: SystemTime,
}

/// The desired state of one host for one pass, read with a constant number
/// of queries.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DesiredState {
    /// Worktree rows of this host not yet `removed`.
    pub worktrees: Vec<WorktreeRow>,
    /// Open agent_sessions rows of this host.
    pub agent_sessions: Vec<AgentSessionRow>,
    /// Every session named by a worktree row or an agent row, or asked for.
    pub sessions: HashMap<String, SessionState>,
    /// Every chat named by an agent row or a process label, or asked for.
    pub chats: HashMap<String, ChatState>,
    /// Every main repository named by a worktree row of this host, removed
    /// or not: where stale admin entries may hide once their directory and
    /// row are gone.
    pub repositories: Vec<PathBuf>,
    /// Rows that could not be decoded. They are left out of the fields
    /// above, and the planner keeps whatever they may own: an unreadable
    /// chat row is not a chat without a row.
    pub unreadable: Vec<UnreadableRow>,
}

impl DesiredState {
    /// The unreadable row of `table` whose id is `id`, if any.
    pub fn unreadable(&self, table: Table, id: &str) -> Option<&UnreadableRow> {
        self.unreadable
            .iter()
            .find(|r| r.table == table && r.id.as_deref() == Some(id))
    }
}

/// A table of the orchestrator's schema, as errors name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Table {
    Sessions,
    Chats,
    AgentSessions,
    Worktrees,
}

impl Table {
    pub fn as_str(self) -> &'static str {
        match self {
            Table::Sessions => "sessions",
            Table::Chats => "chats",
            Table::AgentSessions => "agent_sessions",
            Table::Worktrees => "worktrees",
        }
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A row that holds a value outside the contract (an out-of-range pid, an
/// unknown status, a negative start time, text that is not UTF-8): one such
/// row is reported and skipped, and never stops the rest of the pass.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UnreadableRow {
    pub table: Table,
    /// `None` when the id itself cannot be read.
    pub id: Option<String>,
    pub why: String,
}

impl fmt::Display for UnreadableRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.id {
            Some(id) => write!(f, "{} row {id} cannot be read: {}", self.table, self.why),
            None => write!(
                f,
                "a {} row with an unreadable id cannot be read: {}",
                self.table, self.why
            ),
        }
    }
}

/// What kind of thing sits directly under the worktree root.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    Directory,
    Symlink,
    File,
    Other,
}

/// An entry directly under the worktree root.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WorktreeDir {
    /// The entry's file name, which by the layout contract is the worktree id.
    pub name: String,
    pub path: PathBuf,
    pub kind: EntryKind,
    /// Birth time where the file system records it, else last modification.
    pub created: SystemTime,
    /// The main repository named by the entry's `.git` file, if it has one.
    pub repo_path: Option<PathBuf>,
    /// The git directory the entry's `.git` file names (for a linked
    /// worktree, its admin entry `<repo>/.git/worktrees/<name>`), if it has
    /// such a file.
    pub gitdir: Option<PathBuf>,
    /// `(device, inode)` of the entry itself, not followed if a link: how a
    /// row that spells its path otherwise (a symlink, a relative path) is
    /// matched with it.
    pub file_id: Option<(u64, u64)>,
}

/// A main repository's `.git/worktrees/<name>` entry whose `gitdir` points
/// into the root at a directory that no longer exists.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StaleAdminEntry {
    pub repo_path: PathBuf,
    pub name: String,
    /// Where the entry says its worktree was.
    pub worktree_path: PathBuf,
    /// The commit the entry's HEAD resolves to, if it resolves.
    pub head: Option<String>,
    /// The branch the entry's HEAD names, if it is symbolic.
    pub branch: Option<String>,
    /// The entry's `locked` file, if any: its reason (may be empty). git
    /// itself locks an entry while `git worktree add` runs.
    pub locked: Option<String>,
    /// When a pass first saw the directory missing; `None` when that could
    /// not be recorded (the entry then waits: never pruned on a guess).
    pub missing_since: Option<SystemTime>,
}

/// A main repository's admin entry whose recorded directory is gone but
/// that a directory under the root points at through its `.git` file: a
/// worktree moved without `git worktree move`. It is not stale, and is left
/// alone (`git worktree repair <now_at>` updates the entry).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MovedAdminEntry {
    pub repo_path: PathBuf,
    pub name: String,
    /// Where the entry says its worktree is (no longer there).
    pub worktree_path: PathBuf,
    /// The directory whose `.git` file names the entry.
    pub now_at: PathBuf,
}

/// The verdict on a worktree row's untrusted path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum PathCheck {
    /// The path is a direct child of the root; it may or may not exist.
    Inside { path: PathBuf, exists: bool },
    /// The path leaves the root, or is not a plain directory entry in it.
    Refused { why: String },
}

/// A process on this host that carries the chat label in its environment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AgentProcess {
    pub pid: i32,
    pub ppid: i32,
    /// Process group id; the agent leads its group when `pgid == pid`.
    pub pgid: i32,
    /// Session id (setsid) of the process.
    pub sid: i32,
    /// Field 22 of `/proc/<pid>/stat`, in clock ticks since boot: with the
    /// pid, the identity of the process.
    pub start_time: u64,
    /// When the process started, from the start time and the boot time.
    pub started_at: SystemTime,
    /// The state letter of `/proc/<pid>/stat` (`R`, `S`, `D`, …).
    pub state: char,
    /// The value of the chat label (`BOO_CHAT_ID`).
    pub chat_id: String,
    pub session_id: Option<String>,
    pub agent: Option<String>,
    /// The value of the instance label (`BOO_INSTANCE`), if any.
    pub instance: Option<String>,
    /// The command line, arguments joined by spaces.
    pub command: String,
    /// The working directory, when readable.
    pub cwd: Option<PathBuf>,
}

/// A session on the shared opencode server whose directory lies under the
/// worktree root (sessions elsewhere are other users' and never touched).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OpencodeSession {
    pub id: String,
    pub directory: PathBuf,
    pub parent_id: Option<String>,
    pub created: SystemTime,
    /// The entry of the root the directory is in (`<root>/<worktree id>`).
    pub worktree_dir: PathBuf,
}

/// What the opencode server looked like to this pass.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum OpencodeView {
    /// `opencode.url` is empty: this host has no opencode.
    #[default]
    Off,
    /// Nothing listens (connection refused): no session can be active, so
    /// nothing waits on opencode; its sessions are deleted once it is back.
    NotRunning { why: String },
    /// It runs but does not answer usably: the opencode part waits (and
    /// backs off), and so do the worktrees whose chats have opencode rows.
    Failing { why: String },
    /// The sessions it has under the root.
    Listed { sessions: Vec<OpencodeSession> },
}

/// Whether `id` can be sent to the server as a session id.
///
/// The server generates ids as `ses_` + 12 lowercase hex digits (time and
/// counter) + 14 base62 characters, e.g. `ses_df4003625ffecleddWGg81mkxB`;
/// its API validates only the `ses` prefix (it answers 500 for an id
/// without it), and the v2 API creates sessions with a caller-chosen id of
/// that form. So this accepts what the server accepts and what cannot change
/// the request's path: `ses` followed by 1 to 125 ASCII letters, digits, `_`
/// or `-`. Ids come from the database, which is untrusted input.
pub fn is_wellformed_opencode_id(id: &str) -> bool {
    match id.strip_prefix("ses") {
        Some(rest) => {
            !rest.is_empty()
                && id.len() <= 128
                && rest
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        }
        None => false,
    }
}

/// The actual state of one host for one pass.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ActualState {
    pub dirs: Vec<WorktreeDir>,
    pub stale_admin_entries: Vec<StaleAdminEntry>,
    /// Admin entries of worktrees moved inside the root: never pruned.
    pub moved_admin_entries: Vec<MovedAdminEntry>,
    /// The verdict on each worktree row's path, by worktree row id.
    pub row_paths: HashMap<String, PathCheck>,
    /// The directory each worktree row whose path is refused (a symlink, a
    /// relative path, one outside the root) leads to, by row id, as
    /// `(device, inode)` ([`crate::root::WorktreeRoot::resolve_claim`]): a
    /// row claims that directory even so. A path the root takes in is
    /// matched through [`ActualState::row_paths`].
    pub row_targets: HashMap<String, (u64, u64)>,
    /// Why the root was not observed (not the directory prepared: unmounted,
    /// replaced); the planner then plans nothing under it.
    pub root_held: Option<String>,
    /// Live processes carrying the chat label.
    pub processes: Vec<AgentProcess>,
    /// The agent cgroups under `processes.cgroup_parent` of this
    /// controller's instance ([`crate::observe::cgroups`]).
    pub cgroups: Vec<AgentCgroup>,
    /// Processes tied to a chat by fork lineage that carry no labels now
    /// ([`crate::observe::lineage`]; empty unless `processes.lineage`).
    pub tied: Vec<Tied>,
    /// What runs now at each pid recorded in an open `acp` row of this
    /// host: `None` when nothing (or only a zombie) does.
    pub recorded_pids: HashMap<i32, Option<PidIdentity>>,
    pub opencode: OpencodeView,
}

/// A process tied to a chat by fork lineage ([`crate::observe::lineage`]),
/// alive now without its chat's labels.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Tied {
    pub pid: i32,
    pub ppid: i32,
    pub pgid: i32,
    pub start_time: u64,
    pub started_at: std::time::SystemTime,
    pub chat_id: String,
    pub via: i32,
    pub command: String,
}

/// An agent's cgroup ([`crate::cgroup`]), as observed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AgentCgroup {
    pub path: PathBuf,
    /// What its name records, or why the name does not read as a record
    /// (then it is reported and never acted on).
    pub record: Result<crate::cgroup::Record, String>,
    /// The pids in it and below it.
    pub members: Vec<i32>,
    /// When it was made (its directory's modification time: the kernel
    /// sets it at creation and changes it only when a child cgroup is
    /// made or removed).
    pub created: SystemTime,
}

/// Who a pid is right now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PidIdentity {
    pub start_time: u64,
    /// The value of the chat label in its environment, if any.
    pub chat_label: Option<String>,
    /// Its environment was read and carries no chat label at all (cleared
    /// by `exec env -i`, zeroed by `setproctitle()`); `false` when it could
    /// not be read, or carries a label this controller does not take.
    pub unlabelled: bool,
}

/// `now - then`, zero when `then` is in the future (clock skew between the
/// database and this host).
pub fn age(now: SystemTime, then: SystemTime) -> Duration {
    now.duration_since(then).unwrap_or_default()
}

/// "4m ago", rounded to whole seconds so that reasons stay readable.
pub fn ago(now: SystemTime, then: SystemTime) -> String {
    let secs = age(now, then).as_secs();
    format!(
        "{} ago",
        humantime::format_duration(Duration::from_secs(secs))
    )
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

impl Scope {
    /// Its kind, without the id.
    pub fn kind(&self) -> ScopeKind {
        match self {
            Scope::Host => ScopeKind::Host,
            Scope::Chat(_) => ScopeKind::Chat,
            Scope::Session(_) => ScopeKind::Session,
        }
    }

    /// The chat's or session's id; `None` for the host.
    pub fn id(&self) -> Option<&str> {
        match self {
            Scope::Host => None,
            Scope::Chat(id) | Scope::Session(id) => Some(id),
        }
    }

    /// The scope of `kind` over `id`; `id` is not used for the host.
    pub fn of(kind: ScopeKind, id: String) -> Scope {
        match kind {
            ScopeKind::Host => Scope::Host,
            ScopeKind::Chat => Scope::Chat(id),
            ScopeKind::Session => Scope::Session(id),
        }
    }
}

/// Whether a pass archives, then removes, worktrees kept at risk (and
/// prunes locked admin entries): `?force=true`, `once --force`. One type
/// from the request to the removal.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Force {
    #[default]
    Off,
    On,
}

impl Force {
    pub fn is_on(self) -> bool {
        self == Force::On
    }
}

impl From<bool> for Force {
    fn from(on: bool) -> Force {
        if on {
            Force::On
        } else {
            Force::Off
        }
    }
}

/// A [`Scope`] without its id: what a nudge's answer names, what a route's
/// id is of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScopeKind {
    Host,
    Chat,
    Session,
}

impl ScopeKind {
    /// The word, as serialized.
    pub const fn as_str(self) -> &'static str {
        match self {
            ScopeKind::Host => "host",
            ScopeKind::Chat => "chat",
            ScopeKind::Session => "session",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn session(status: RowStatus) -> SessionRow {
        SessionRow {
            id: "s1".into(),
            status,
            created_at: t(1000),
            updated_at: t(1000),
        }
    }

    fn chat(status: RowStatus) -> ChatRow {
        ChatRow {
            id: "c1".into(),
            session_id: "s1".into(),
            status,
            created_at: t(1000),
            updated_at: t(1060),
        }
    }

    #[test]
    fn chat_is_live_only_when_chat_and_session_are_open() {
        let cases = [
            (Some(RowStatus::Open), Some(RowStatus::Open), true),
            (Some(RowStatus::Archived), Some(RowStatus::Open), false),
            (Some(RowStatus::Deleted), Some(RowStatus::Open), false),
            (Some(RowStatus::Open), Some(RowStatus::Archived), false),
            (Some(RowStatus::Open), Some(RowStatus::Deleted), false),
            (Some(RowStatus::Open), None, false),
            (None, Some(RowStatus::Open), false),
            (None, None, false),
        ];
        for (c, s, live) in cases {
            let st = ChatState {
                chat_id: "c1".into(),
                chat: c.map(chat),
                session: s.map(session),
            };
            assert_eq!(st.is_live(), live, "{c:?} {s:?}");
            assert_eq!(st.not_live_because(t(1300)).is_none(), live);
        }
    }

    #[test]
    fn reason_names_the_chat_and_its_age() {
        let st = ChatState {
            chat_id: "c1".into(),
            chat: Some(chat(RowStatus::Archived)),
            session: Some(session(RowStatus::Open)),
        };
        assert_eq!(
            st.not_live_because(t(1300)).unwrap(),
            "chat c1 archived 4m ago"
        );
    }

    #[test]
    fn open_session_without_chats_keeps_worktree_only_while_young() {
        let st = SessionState {
            session_id: "s1".into(),
            session: Some(session(RowStatus::Open)),
            open_chats: 0,
            total_chats: 0,
            last_chat_change: None,
        };
        let young = Duration::from_secs(600);
        assert!(st.keeps_worktree(t(1100), young));
        assert!(!st.keeps_worktree(t(1000 + 601), young));
    }

    #[test]
    fn session_with_only_closed_chats_releases_worktree() {
        let st = SessionState {
            session_id: "s1".into(),
            session: Some(session(RowStatus::Open)),
            open_chats: 0,
            total_chats: 2,
            last_chat_change: Some(t(1060)),
        };
        let why = st
            .releases_worktree_because(t(1300), Duration::from_secs(600))
            .unwrap();
        assert_eq!(why, "session s1 has no open chat (last of 2 closed 4m ago)");
    }
}
