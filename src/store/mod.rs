//! The desired state: what the database says should exist, and the writes
//! the controller makes (row states, audit records).
//!
//! # Guarantees
//! - A pass reads its desired state with a constant number of queries (five),
//!   whatever the number of chats: rows are scoped to this host and to the
//!   ids a pass actually met.
//! - The audit table is append-only (a trigger refuses UPDATE and DELETE).
//! - Errors name the database URL without its password.

pub mod listen;
pub mod lock;
mod sql;

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::Row;

use crate::config::redact_url;
use crate::model::{
    AgentSessionRow, Backend, ChatRow, ChatState, DesiredState, SessionRow, SessionState, Status,
    WorktreeRow, WorktreeState,
};
use crate::risk::AtRisk;

/// A database failure, with the (password-free) URL it concerned.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL is neither `sqlite://…` nor `postgres://…`.
    #[error("unsupported database URL {url}: expected sqlite://PATH or postgres://…")]
    Scheme { url: String },
    /// The database could not be reached or opened.
    #[error("cannot connect to database {url}: {source}")]
    Connect { url: String, source: sqlx::Error },
    /// Applying migrations failed.
    #[error("cannot migrate database {url}: {source}")]
    Migrate {
        url: String,
        source: sqlx::migrate::MigrateError,
    },
    /// A query failed.
    #[error("database {url}: {what}: {source}")]
    Query {
        url: String,
        what: &'static str,
        source: sqlx::Error,
    },
    /// A row holds a value outside the contract (an unknown status).
    #[error("database {url}: {what}")]
    Contract { url: String, what: String },
}

#[derive(Clone, Debug)]
enum Pool {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

/// A connection pool to the orchestrator's database.
#[derive(Clone, Debug)]
pub struct Store {
    pool: Pool,
    /// For messages: the URL without its password.
    url: String,
}

/// Runs `$body` with `$pool` bound to whichever pool the store has; the body
/// is compiled once per database, so sqlx's generic API works in both.
macro_rules! with_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match &$store.pool {
            Pool::Postgres($pool) => $body,
            Pool::Sqlite($pool) => $body,
        }
    };
}

/// One record of the append-only audit table.
#[derive(Clone, Debug, Serialize)]
pub struct AuditRecord {
    pub host: String,
    pub chat_id: Option<String>,
    pub session_id: Option<String>,
    pub action: String,
    pub target: String,
    pub outcome: String,
    pub reason: String,
    pub detail: serde_json::Value,
}

/// The rows of one host: the first half of its desired state.
#[derive(Clone, Debug, Default)]
pub struct HostRows {
    /// Worktree rows not yet `removed`.
    pub worktrees: Vec<WorktreeRow>,
    /// Open agent_sessions rows.
    pub agent_sessions: Vec<AgentSessionRow>,
    /// Main repositories named by any worktree row, removed or not.
    pub repositories: Vec<PathBuf>,
}

/// The ids a pass met besides the rows of its host, whose liveness it needs.
#[derive(Clone, Debug, Default)]
pub struct Interest {
    pub chats: BTreeSet<String>,
    pub sessions: BTreeSet<String>,
}

impl Store {
    /// Connects to `sqlite://PATH` (created if missing) or `postgres://…`.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        Store::open(url, true).await
    }

    /// Connects; a missing SQLite file is created only when `create`.
    pub async fn open(url: &str, create: bool) -> Result<Store, StoreError> {
        let shown = redact_url(url);
        let connect = |source| StoreError::Connect {
            url: shown.clone(),
            source,
        };
        let pool = if url.starts_with("sqlite:") {
            let opts = SqliteConnectOptions::from_str(url)
                .map_err(connect)?
                .create_if_missing(create)
                .journal_mode(SqliteJournalMode::Wal)
                // The orchestrator may write while a pass reads.
                .busy_timeout(Duration::from_secs(5));
            Pool::Sqlite(
                SqlitePoolOptions::new()
                    .max_connections(4)
                    .connect_with(opts)
                    .await
                    .map_err(connect)?,
            )
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let opts = PgConnectOptions::from_str(url).map_err(connect)?;
            Pool::Postgres(
                PgPoolOptions::new()
                    .max_connections(8)
                    .acquire_timeout(Duration::from_secs(5))
                    .connect_with(opts)
                    .await
                    .map_err(connect)?,
            )
        } else {
            return Err(StoreError::Scheme { url: shown });
        };
        Ok(Store { pool, url: shown })
    }

    /// The URL without its password.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self.pool, Pool::Postgres(_))
    }

    /// Applies the migrations under `migrations/postgres` or
    /// `migrations/sqlite`.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let r = match &self.pool {
            Pool::Postgres(p) => sqlx::migrate!("./migrations/postgres").run(p).await,
            Pool::Sqlite(p) => sqlx::migrate!("./migrations/sqlite").run(p).await,
        };
        r.map_err(|source| StoreError::Migrate {
            url: self.url.clone(),
            source,
        })
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        with_pool!(self, p => sqlx::query("SELECT 1").execute(p).await.map(|_| ()))
            .map_err(|e| self.query_err("ping", e))
    }

    fn query_err(&self, what: &'static str, source: sqlx::Error) -> StoreError {
        StoreError::Query {
            url: self.url.clone(),
            what,
            source,
        }
    }

    fn contract(&self, what: String) -> StoreError {
        StoreError::Contract {
            url: self.url.clone(),
            what,
        }
    }

    fn sql(&self) -> &'static sql::Dialect {
        match self.pool {
            Pool::Postgres(_) => &sql::POSTGRES,
            Pool::Sqlite(_) => &sql::SQLITE,
        }
    }

    /// The desired state of `host`: its worktree rows not yet removed, its
    /// open agent rows, and the liveness of every chat and session they or
    /// `interest` name, and the repositories its worktrees belong to. Five
    /// queries, whatever the size of the tables: [`Store::host_rows`] then
    /// [`Store::liveness`].
    pub async fn desired_state(
        &self,
        host: &str,
        interest: &Interest,
    ) -> Result<DesiredState, StoreError> {
        let rows = self.host_rows(host).await?;
        self.liveness(rows, interest).await
    }

    /// What `host` has: its worktree rows not yet removed, its open agent
    /// rows and the repositories of its worktrees. Three queries.
    pub async fn host_rows(&self, host: &str) -> Result<HostRows, StoreError> {
        let worktrees = self.worktree_rows(host).await?;
        let agent_sessions = self.open_agent_rows(host).await?;
        let repositories = with_pool!(self, p => {
            sqlx::query(self.sql().repositories_of_host).bind(host).fetch_all(p).await
                .and_then(|rows| rows.into_iter().map(|r| r.try_get::<String, _>("repo_path")).collect::<Result<Vec<_>, _>>())
        })
        .map_err(|e| self.query_err("reading repositories", e))?
        .into_iter()
        .map(PathBuf::from)
        .collect();
        Ok(HostRows {
            worktrees,
            agent_sessions,
            repositories,
        })
    }

    /// Completes `rows` into the desired state: the liveness of every chat
    /// and session the rows or `interest` name. Two queries.
    pub async fn liveness(
        &self,
        rows: HostRows,
        interest: &Interest,
    ) -> Result<DesiredState, StoreError> {
        let HostRows {
            worktrees,
            agent_sessions,
            repositories,
        } = rows;
        let mut chat_ids = interest.chats.clone();
        chat_ids.extend(agent_sessions.iter().map(|r| r.chat_id.clone()));
        let chats = self.chat_states(&chat_ids).await?;

        let mut session_ids = interest.sessions.clone();
        session_ids.extend(worktrees.iter().map(|w| w.session_id.clone()));
        session_ids.extend(agent_sessions.iter().map(|r| r.session_id.clone()));
        session_ids.extend(
            chats
                .values()
                .filter_map(|c| c.chat.as_ref().map(|c| c.session_id.clone())),
        );
        let sessions = self.session_states(&session_ids).await?;

        Ok(DesiredState {
            worktrees,
            agent_sessions,
            sessions,
            chats,
            repositories,
        })
    }

    async fn worktree_rows(&self, host: &str) -> Result<Vec<WorktreeRow>, StoreError> {
        let rows = with_pool!(self, p => {
            sqlx::query(self.sql().worktrees_of_host).bind(host).fetch_all(p).await.map_err(|e| self.query_err("reading worktrees", e))?
                .into_iter()
                .map(|r| -> Result<_, sqlx::Error> {
                    Ok((
                        r.try_get::<String, _>("id")?,
                        r.try_get::<String, _>("session_id")?,
                        r.try_get::<String, _>("repo_path")?,
                        r.try_get::<String, _>("path")?,
                        r.try_get::<Option<String>, _>("branch")?,
                        r.try_get::<Option<String>, _>("base_ref")?,
                        r.try_get::<String, _>("state")?,
                        r.try_get::<f64, _>("created")?,
                    ))
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .map_err(|e| self.query_err("decoding worktrees", e))?;
        rows.into_iter()
            .map(
                |(id, session_id, repo_path, path, branch, base_ref, state, created)| {
                    let state = WorktreeState::parse(&state).ok_or_else(|| {
                        self.contract(format!("worktree {id} has unknown state {state:?}"))
                    })?;
                    Ok(WorktreeRow {
                        id,
                        session_id,
                        repo_path: PathBuf::from(repo_path),
                        path: PathBuf::from(path),
                        branch,
                        base_ref,
                        state,
                        created_at: from_epoch(created),
                    })
                },
            )
            .collect()
    }

    async fn open_agent_rows(&self, host: &str) -> Result<Vec<AgentSessionRow>, StoreError> {
        let rows = with_pool!(self, p => {
            sqlx::query(self.sql().open_agent_rows_of_host).bind(host).fetch_all(p).await.map_err(|e| self.query_err("reading agent_sessions", e))?
                .into_iter()
                .map(|r| -> Result<_, sqlx::Error> {
                    Ok((
                        r.try_get::<String, _>("id")?,
                        r.try_get::<String, _>("chat_id")?,
                        r.try_get::<String, _>("session_id")?,
                        r.try_get::<String, _>("agent")?,
                        r.try_get::<String, _>("backend")?,
                        r.try_get::<Option<String>, _>("agent_session_id")?,
                        r.try_get::<Option<String>, _>("worktree_id")?,
                        r.try_get::<Option<i32>, _>("pid")?,
                        r.try_get::<Option<i64>, _>("pid_start_time")?,
                        r.try_get::<f64, _>("created")?,
                    ))
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .map_err(|e| self.query_err("decoding agent_sessions", e))?;
        rows.into_iter()
            .map(
                |(
                    id,
                    chat_id,
                    session_id,
                    agent,
                    backend,
                    agent_session_id,
                    worktree_id,
                    pid,
                    start,
                    created,
                )| {
                    let backend = Backend::parse(&backend).ok_or_else(|| {
                        self.contract(format!(
                            "agent_sessions {id} has unknown backend {backend:?}"
                        ))
                    })?;
                    Ok(AgentSessionRow {
                        id,
                        chat_id,
                        session_id,
                        agent,
                        backend,
                        agent_session_id,
                        worktree_id,
                        pid,
                        pid_start_time: start.and_then(|s| u64::try_from(s).ok()),
                        created_at: from_epoch(created),
                    })
                },
            )
            .collect()
    }

    /// The liveness of each chat id, including ids with no row.
    pub async fn chat_states(
        &self,
        ids: &BTreeSet<String>,
    ) -> Result<HashMap<String, ChatState>, StoreError> {
        let mut out: HashMap<String, ChatState> = ids
            .iter()
            .map(|id| {
                (
                    id.clone(),
                    ChatState {
                        chat_id: id.clone(),
                        chat: None,
                        session: None,
                    },
                )
            })
            .collect();
        if ids.is_empty() {
            return Ok(out);
        }
        let list = id_list(ids);
        let rows = with_pool!(self, p => {
            sqlx::query(self.sql().chats_by_id).bind(&list).fetch_all(p).await.map_err(|e| self.query_err("reading chats", e))?
                .into_iter()
                .map(|r| -> Result<_, sqlx::Error> {
                    Ok((
                        r.try_get::<String, _>("id")?,
                        r.try_get::<String, _>("session_id")?,
                        r.try_get::<String, _>("status")?,
                        r.try_get::<f64, _>("created")?,
                        r.try_get::<f64, _>("updated")?,
                        r.try_get::<Option<String>, _>("s_status")?,
                        r.try_get::<Option<f64>, _>("s_created")?,
                        r.try_get::<Option<f64>, _>("s_updated")?,
                    ))
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .map_err(|e| self.query_err("decoding chats", e))?;
        for (id, session_id, status, created, updated, s_status, s_created, s_updated) in rows {
            let status = self.status(&status, "chat", &id)?;
            let session = match s_status {
                Some(s) => Some(SessionRow {
                    id: session_id.clone(),
                    status: self.status(&s, "session", &session_id)?,
                    created_at: from_epoch(s_created.unwrap_or_default()),
                    updated_at: from_epoch(s_updated.unwrap_or_default()),
                }),
                None => None,
            };
            out.insert(
                id.clone(),
                ChatState {
                    chat_id: id.clone(),
                    chat: Some(ChatRow {
                        id,
                        session_id,
                        status,
                        created_at: from_epoch(created),
                        updated_at: from_epoch(updated),
                    }),
                    session,
                },
            );
        }
        Ok(out)
    }

    /// The liveness of each session id, including ids with no row.
    pub async fn session_states(
        &self,
        ids: &BTreeSet<String>,
    ) -> Result<HashMap<String, SessionState>, StoreError> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let list = id_list(ids);
        let rows = with_pool!(self, p => {
            sqlx::query(self.sql().sessions_by_id).bind(&list).fetch_all(p).await.map_err(|e| self.query_err("reading sessions", e))?
                .into_iter()
                .map(|r| -> Result<_, sqlx::Error> {
                    Ok((
                        r.try_get::<String, _>("id")?,
                        r.try_get::<Option<String>, _>("status")?,
                        r.try_get::<Option<f64>, _>("created")?,
                        r.try_get::<Option<f64>, _>("updated")?,
                        r.try_get::<i64, _>("open_chats")?,
                        r.try_get::<i64, _>("total_chats")?,
                        r.try_get::<Option<f64>, _>("last_chat_change")?,
                    ))
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .map_err(|e| self.query_err("decoding sessions", e))?;
        let mut out = HashMap::with_capacity(rows.len());
        for (id, status, created, updated, open, total, last) in rows {
            let session = match status {
                Some(s) => Some(SessionRow {
                    id: id.clone(),
                    status: self.status(&s, "session", &id)?,
                    created_at: from_epoch(created.unwrap_or_default()),
                    updated_at: from_epoch(updated.unwrap_or_default()),
                }),
                None => None,
            };
            out.insert(
                id.clone(),
                SessionState {
                    session_id: id,
                    session,
                    open_chats: open.max(0) as u64,
                    total_chats: total.max(0) as u64,
                    last_chat_change: last.map(from_epoch),
                },
            );
        }
        Ok(out)
    }

    /// One chat's liveness, read now: the re-check before a destructive
    /// action.
    pub async fn chat_state(&self, id: &str) -> Result<ChatState, StoreError> {
        let ids = BTreeSet::from([id.to_string()]);
        Ok(self
            .chat_states(&ids)
            .await?
            .remove(id)
            .expect("chat_states answers every id asked"))
    }

    /// One session's liveness, read now.
    pub async fn session_state(&self, id: &str) -> Result<SessionState, StoreError> {
        let ids = BTreeSet::from([id.to_string()]);
        self.session_states(&ids)
            .await?
            .remove(id)
            .ok_or_else(|| self.contract(format!("session {id} missing from its own query")))
    }

    /// Ids of worktree rows (any host) not yet removed that name `path` or
    /// whose id is `id`: the re-check before reaping a directory as an orphan.
    pub async fn worktree_rows_naming(
        &self,
        path: &str,
        id: &str,
    ) -> Result<Vec<String>, StoreError> {
        with_pool!(self, p => {
            sqlx::query(self.sql().worktrees_naming).bind(path).bind(id).fetch_all(p).await
                .and_then(|rows| rows.into_iter().map(|r| r.try_get::<String, _>("id")).collect())
        })
        .map_err(|e| self.query_err("reading worktrees by path", e))
    }

    /// `(id, session_id)` of the rows of `host` not yet removed that name
    /// the directory spelled as any of `paths`, or whose id is `id` (the
    /// layout `<root>/<worktree id>` makes that directory theirs): the
    /// re-check, right before a row's worktree is removed, that no other
    /// row of a live session names the same directory.
    pub async fn host_worktree_rows_naming(
        &self,
        host: &str,
        paths: &[String],
        id: &str,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let paths = serde_json::to_string(paths).expect("strings serialize");
        with_pool!(self, p => {
            sqlx::query(self.sql().host_worktrees_naming).bind(host).bind(&paths).bind(id).fetch_all(p).await
                .and_then(|rows| rows.into_iter().map(|r| Ok((r.try_get::<String, _>("id")?, r.try_get::<String, _>("session_id")?))).collect())
        })
        .map_err(|e| self.query_err("reading this host's worktrees by path", e))
    }

    /// The chats whose open opencode rows name `session`: the re-check
    /// before deleting a session found with no row.
    pub async fn chats_with_open_rows_naming(
        &self,
        session: &str,
    ) -> Result<Vec<String>, StoreError> {
        with_pool!(self, p => {
            sqlx::query(self.sql().chats_naming_opencode_session).bind(session).fetch_all(p).await
                .and_then(|rows| rows.into_iter().map(|r| r.try_get::<String, _>("chat_id")).collect())
        })
        .map_err(|e| self.query_err("reading agent_sessions by opencode session", e))
    }

    /// Marks a worktree row `at_risk` with its reasons. Returns whether the
    /// row changed (false: it already carried exactly these reasons).
    pub async fn mark_worktree_at_risk(
        &self,
        id: &str,
        reasons: &[AtRisk],
    ) -> Result<bool, StoreError> {
        let json = serde_json::to_string(reasons).expect("reasons serialize");
        with_pool!(self, p => sqlx::query(self.sql().mark_at_risk).bind(id).bind(&json).execute(p).await.map(|r| r.rows_affected() > 0))
            .map_err(|e| self.query_err("marking worktree at risk", e))
    }

    /// Marks a worktree row `active` again (its session is live again).
    pub async fn mark_worktree_active(&self, id: &str) -> Result<(), StoreError> {
        with_pool!(self, p => sqlx::query(self.sql().mark_active).bind(id).execute(p).await.map(|_| ()))
            .map_err(|e| self.query_err("marking worktree active", e))
    }

    /// Marks a worktree row `removed` with `removed_at`.
    pub async fn mark_worktree_removed(&self, id: &str) -> Result<(), StoreError> {
        with_pool!(self, p => sqlx::query(self.sql().mark_removed).bind(id).execute(p).await.map(|_| ()))
            .map_err(|e| self.query_err("marking worktree removed", e))
    }

    /// Marks one open agent_sessions row `closed` with `closed_at`. Returns
    /// whether a row changed (false: already closed).
    pub async fn close_agent_row(&self, id: &str) -> Result<bool, StoreError> {
        with_pool!(self, p => sqlx::query(self.sql().close_agent_row).bind(id).execute(p).await.map(|r| r.rows_affected() > 0))
            .map_err(|e| self.query_err("closing agent_sessions row", e))
    }

    /// Appends one audit record.
    pub async fn append_audit(&self, rec: &AuditRecord) -> Result<(), StoreError> {
        let detail = rec.detail.to_string();
        with_pool!(self, p => sqlx::query(self.sql().append_audit)
            .bind(&rec.host)
            .bind(&rec.chat_id)
            .bind(&rec.session_id)
            .bind(&rec.action)
            .bind(&rec.target)
            .bind(&rec.outcome)
            .bind(&rec.reason)
            .bind(&detail)
            .execute(p).await.map(|_| ()))
        .map_err(|e| self.query_err("appending audit record", e))
    }

    /// Audit records, oldest first (for reports and tests).
    pub async fn audit_records(&self) -> Result<Vec<AuditRecord>, StoreError> {
        with_pool!(self, p => {
            sqlx::query("SELECT host, chat_id, session_id, action, target, outcome, reason, detail FROM reconciler_audit ORDER BY id")
                .fetch_all(p).await
                .and_then(|rows| rows.into_iter().map(|r| -> Result<_, sqlx::Error> {
                    Ok(AuditRecord {
                        host: r.try_get("host")?,
                        chat_id: r.try_get("chat_id")?,
                        session_id: r.try_get("session_id")?,
                        action: r.try_get("action")?,
                        target: r.try_get("target")?,
                        outcome: r.try_get("outcome")?,
                        reason: r.try_get("reason")?,
                        detail: serde_json::Value::Null,
                    })
                }).collect())
        })
        .map_err(|e| self.query_err("reading audit records", e))
    }

    /// Runs one statement of test or fixture SQL (no parameters).
    pub async fn execute_raw(&self, statement: &str) -> Result<u64, StoreError> {
        with_pool!(self, p => sqlx::raw_sql(statement).execute(p).await.map(|r| r.rows_affected()))
            .map_err(|e| self.query_err("executing statement", e))
    }

    /// Runs a query and returns every column of every row as text (for
    /// tests and fixtures).
    pub async fn query_strings(
        &self,
        statement: &str,
    ) -> Result<Vec<Vec<Option<String>>>, StoreError> {
        with_pool!(self, p => {
            sqlx::query(statement).fetch_all(p).await.and_then(|rows| {
                rows.into_iter()
                    .map(|r| (0..r.len()).map(|i| r.try_get::<Option<String>, _>(i)).collect())
                    .collect()
            })
        })
        .map_err(|e| self.query_err("running query", e))
    }

    fn status(&self, s: &str, what: &str, id: &str) -> Result<Status, StoreError> {
        Status::parse(s)
            .ok_or_else(|| self.contract(format!("{what} {id} has unknown status {s:?}")))
    }
}

/// Ids travel as one JSON array parameter, so that one statement serves any
/// number of ids on both databases.
fn id_list(ids: &BTreeSet<String>) -> String {
    serde_json::to_string(ids).expect("strings serialize")
}

fn from_epoch(secs: f64) -> SystemTime {
    if secs.is_finite() && secs > 0.0 {
        SystemTime::UNIX_EPOCH + Duration::from_secs_f64(secs)
    } else {
        SystemTime::UNIX_EPOCH
    }
}
