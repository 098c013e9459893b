//! The columns of each row a pass reads, as the database hands them over,
//! and how they become the domain's rows.
//!
//! Each query's columns are one [`FromRow`] struct, decoded row by row (not
//! with `query_as`, which would fail the whole query on one bad row): a row
//! holding a value outside the contract becomes an [`UnreadableRow`] that
//! names its table, its id when that at least can be read, and the column
//! or value at fault. The fields are declared in the order of the columns,
//! so that the first one that cannot be read is the one reported.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use sqlx::{ColumnIndex, Decode, FromRow, Row, Type};

use crate::model::{
    AgentSessionRow, Backend, ChatRow, ChatState, RowStatus, SessionRow, SessionState, Table,
    UnreadableRow, WorktreeRow, WorktreeState,
};

/// `row` decoded as `C`, or why it cannot be read.
pub(super) fn decode<'r, C, R>(row: &'r R, table: Table) -> Result<C, UnreadableRow>
where
    R: Row,
    C: FromRow<'r, R>,
    &'r str: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
{
    C::from_row(row).map_err(|e| UnreadableRow {
        table,
        id: row.try_get::<String, _>("id").ok(),
        why: column_error(e),
    })
}

/// The rows that could be read, and beside them those that could not.
pub(super) fn split<T>(
    rows: impl IntoIterator<Item = Result<T, UnreadableRow>>,
) -> (Vec<T>, Vec<UnreadableRow>) {
    let mut read = Vec::new();
    let mut unreadable = Vec::new();
    for row in rows {
        match row {
            Ok(r) => read.push(r),
            Err(u) => unreadable.push(u),
        }
    }
    (read, unreadable)
}

/// A decoding failure as the report shows it: "pid: …", naming the column
/// so that the report says which value is wrong.
fn column_error(e: sqlx::Error) -> String {
    match e {
        // sqlx names the column by its Debug form, quoted.
        sqlx::Error::ColumnDecode { index, source } => {
            format!("{}: {source}", index.trim_matches('"'))
        }
        sqlx::Error::ColumnNotFound(ref column) => format!("{column}: {e}"),
        e => e.to_string(),
    }
}

/// A `worktrees` row of this host not yet removed.
#[derive(FromRow)]
pub(super) struct WorktreeColumns {
    id: String,
    session_id: String,
    repo_path: String,
    path: String,
    branch: Option<String>,
    base_ref: Option<String>,
    state: String,
    created: f64,
}

impl WorktreeColumns {
    pub(super) fn into_row(self) -> Result<WorktreeRow, UnreadableRow> {
        let Some(state) = WorktreeState::parse(&self.state) else {
            return Err(UnreadableRow {
                table: Table::Worktrees,
                id: Some(self.id),
                why: format!("unknown state {:?}", self.state),
            });
        };
        Ok(WorktreeRow {
            id: self.id,
            session_id: self.session_id,
            repo_path: PathBuf::from(self.repo_path),
            path: PathBuf::from(self.path),
            branch: self.branch,
            base_ref: self.base_ref,
            state,
            created_at: from_epoch(self.created),
        })
    }
}

/// An open `agent_sessions` row of this host.
#[derive(FromRow)]
pub(super) struct AgentColumns {
    id: String,
    chat_id: String,
    session_id: String,
    agent: String,
    backend: String,
    agent_session_id: Option<String>,
    worktree_id: Option<String>,
    pid: Option<i32>,
    pid_start_time: Option<i64>,
    created: f64,
}

impl AgentColumns {
    pub(super) fn into_row(self) -> Result<AgentSessionRow, UnreadableRow> {
        let bad = |id: String, why: String| UnreadableRow {
            table: Table::AgentSessions,
            id: Some(id),
            why,
        };
        let Some(backend) = Backend::parse(&self.backend) else {
            return Err(bad(self.id, format!("unknown backend {:?}", self.backend)));
        };
        // A start time is clock ticks since boot: a negative one cannot
        // name a process, and reading it as "none recorded" would weaken
        // the identity check.
        let pid_start_time = match self.pid_start_time.map(u64::try_from) {
            None => None,
            Some(Ok(s)) => Some(s),
            Some(Err(_)) => {
                return Err(bad(
                    self.id,
                    format!(
                        "pid_start_time {} is negative",
                        self.pid_start_time.unwrap_or_default()
                    ),
                ))
            }
        };
        Ok(AgentSessionRow {
            id: self.id,
            chat_id: self.chat_id,
            session_id: self.session_id,
            agent: self.agent,
            backend,
            agent_session_id: self.agent_session_id,
            worktree_id: self.worktree_id,
            pid: self.pid,
            pid_start_time,
            created_at: from_epoch(self.created),
        })
    }
}

/// A `chats` row with its session's row beside it (`s_*`, null when the
/// session has none).
#[derive(FromRow)]
pub(super) struct ChatColumns {
    id: String,
    session_id: String,
    status: String,
    created: f64,
    updated: f64,
    s_status: Option<String>,
    s_created: Option<f64>,
    s_updated: Option<f64>,
}

impl ChatColumns {
    pub(super) fn into_state(self) -> Result<ChatState, UnreadableRow> {
        let bad = |id: String, why: String| UnreadableRow {
            table: Table::Chats,
            id: Some(id),
            why,
        };
        let Some(status) = RowStatus::parse(&self.status) else {
            return Err(bad(self.id, format!("unknown status {:?}", self.status)));
        };
        let session = match self.s_status {
            Some(s) => match RowStatus::parse(&s) {
                Some(st) => Some(SessionRow {
                    id: self.session_id.clone(),
                    status: st,
                    created_at: from_epoch(self.s_created.unwrap_or_default()),
                    updated_at: from_epoch(self.s_updated.unwrap_or_default()),
                }),
                // Its session's liveness is unknown, so the chat's is.
                None => {
                    let why = format!("its session {} has unknown status {s:?}", self.session_id);
                    return Err(bad(self.id, why));
                }
            },
            None => None,
        };
        Ok(ChatState {
            chat_id: self.id.clone(),
            chat: Some(ChatRow {
                id: self.id,
                session_id: self.session_id,
                status,
                created_at: from_epoch(self.created),
                updated_at: from_epoch(self.updated),
            }),
            session,
        })
    }
}

/// One asked-for session id: its row's columns (null when it has none) and
/// the counts of its chats.
#[derive(FromRow)]
pub(super) struct SessionColumns {
    id: String,
    status: Option<String>,
    created: Option<f64>,
    updated: Option<f64>,
    open_chats: i64,
    total_chats: i64,
    last_chat_change: Option<f64>,
}

impl SessionColumns {
    pub(super) fn into_state(self) -> Result<SessionState, UnreadableRow> {
        let session = match self.status {
            Some(s) => match RowStatus::parse(&s) {
                Some(st) => Some(SessionRow {
                    id: self.id.clone(),
                    status: st,
                    created_at: from_epoch(self.created.unwrap_or_default()),
                    updated_at: from_epoch(self.updated.unwrap_or_default()),
                }),
                None => {
                    return Err(UnreadableRow {
                        table: Table::Sessions,
                        id: Some(self.id),
                        why: format!("unknown status {s:?}"),
                    })
                }
            },
            None => None,
        };
        Ok(SessionState {
            session_id: self.id,
            session,
            open_chats: self.open_chats.max(0) as u64,
            total_chats: self.total_chats.max(0) as u64,
            last_chat_change: self.last_chat_change.map(from_epoch),
        })
    }
}

fn from_epoch(secs: f64) -> SystemTime {
    if secs.is_finite() && secs > 0.0 {
        SystemTime::UNIX_EPOCH + Duration::from_secs_f64(secs)
    } else {
        SystemTime::UNIX_EPOCH
    }
}
