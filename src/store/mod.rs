//! The desired state: what the database says should exist, and the writes
//! the controller makes (row states, audit records).
//!
//! # Guarantees
//! - A pass reads its desired state with a constant number of queries (five),
//!   whatever the number of chats: rows are scoped to this host and to the
//!   ids a pass actually met.
//! - Rows are decoded one by one: a row holding a value outside the
//!   contract (an out-of-range pid, an unknown status, a negative start
//!   time, text that is not UTF-8) is returned as an [`UnreadableRow`]
//!   naming its table and id, and the other rows are read as usual (test
//!   `one_undecodable_row_never_stops_the_host`).
//! - The audit table is append-only (a trigger refuses UPDATE and DELETE).
//! - Every call is bounded (`database.query_timeout`, and
//!   `database.connect_timeout` for a connection), and a database that
//!   cannot be reached is named with the cause and the setting: see
//!   [`bound`].
//! - Errors name the database URL without its password.

mod bound;
mod identity;
pub mod listen;
pub mod live;
pub mod lock;
mod rows;
mod sql;

pub use bound::{Timeouts, URL_SETTING};

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::Row;

use crate::config::redact_url;
use crate::model::{
    AgentSessionRow, ChatState, DesiredState, SessionState, Table, UnreadableRow, WorktreeRow,
};
use crate::risk::AtRisk;
use rows::{AgentColumns, ChatColumns, SessionColumns, WorktreeColumns};

/// A database failure, with the (password-free) URL it concerned.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL is neither `sqlite://…` nor `postgres://…`.
    #[error("unsupported database URL {url}: expected sqlite://PATH or postgres://…")]
    Scheme { url: String },
    /// The database could not be reached or opened; `why` names the cause
    /// ("connection refused at 127.0.0.1:5432").
    #[error("cannot connect to database {url} ({setting}): {why}", setting = bound::URL_SETTING)]
    Connect { url: String, why: String },
    /// A call found the database unreachable, or got no answer within
    /// `database.query_timeout`.
    #[error("database {url} ({setting}): {what}: {why}", setting = bound::URL_SETTING)]
    Unreachable {
        url: String,
        what: &'static str,
        why: String,
    },
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
    timeouts: Timeouts,
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

// Declared after `with_pool!`, which they use.
pub mod archived;
mod missing;
mod root;
#[doc(hidden)]
pub mod testing;

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
    /// For an outcome: the `intent` record it concludes (write-ahead
    /// audit of destructive actions).
    pub intent_id: Option<i64>,
}

/// An `intent` audit record of this host that no later record concludes:
/// an action interrupted by a crash or a lost database.
#[derive(Clone, Debug)]
pub struct OpenIntent {
    pub id: i64,
    pub action: String,
    pub target: String,
    pub detail: serde_json::Value,
    pub chat_id: Option<String>,
    pub session_id: Option<String>,
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
    /// Rows that could not be decoded, left out of the fields above.
    pub unreadable: Vec<UnreadableRow>,
}

/// The ids a pass met besides the rows of its host, whose liveness it needs.
#[derive(Clone, Debug, Default)]
pub struct Interest {
    pub chats: BTreeSet<String>,
    pub sessions: BTreeSet<String>,
}

impl Store {
    /// The bounds of this store's calls (`database.*_timeout`).
    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// Connects to `sqlite://PATH` (created if missing) or `postgres://…`.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        Store::open(url, true).await
    }

    /// Connects; a missing SQLite file is created only when `create`.
    pub async fn open(url: &str, create: bool) -> Result<Store, StoreError> {
        Store::open_with(url, create, Timeouts::default()).await
    }

    /// Connects with these bounds on every call; a missing SQLite file is
    /// created only when `create`.
    pub async fn open_with(
        url: &str,
        create: bool,
        timeouts: Timeouts,
    ) -> Result<Store, StoreError> {
        let shown = redact_url(url);
        let connect = |source: sqlx::Error| StoreError::Connect {
            url: shown.clone(),
            why: source.to_string(),
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
                    .acquire_timeout(timeouts.connect)
                    .connect_with(opts)
                    .await
                    .map_err(connect)?,
            )
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let opts = PgConnectOptions::from_str(url).map_err(connect)?;
            let pool = PgPoolOptions::new()
                .max_connections(8)
                .acquire_timeout(timeouts.connect)
                .connect_with(opts.clone())
                .await;
            match pool {
                Ok(p) => Pool::Postgres(p),
                // The pool says only "timed out" for a refused connection
                // or a server that does not answer; one direct attempt
                // says which.
                Err(sqlx::Error::PoolTimedOut) => {
                    return Err(StoreError::Connect {
                        url: shown.clone(),
                        why: bound::diagnose(&opts, timeouts.connect).await,
                    })
                }
                Err(e) => {
                    return Err(StoreError::Connect {
                        url: shown.clone(),
                        why: bound::describe(&e, &opts),
                    })
                }
            }
        } else {
            return Err(StoreError::Scheme { url: shown });
        };
        Ok(Store {
            pool,
            url: shown,
            timeouts,
        })
    }

    /// The URL without its password.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Applies the migrations under `migrations/postgres` or
    /// `migrations/sqlite`.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        // Building an index on the orchestrator's large tables may take
        // minutes: migrations get their own, longer bound.
        self.bounded_by(
            bound::MIGRATION_TIMEOUT,
            "applying migrations",
            async move {
                let r = match &self.pool {
                    Pool::Postgres(p) => sqlx::migrate!("./migrations/postgres").run(p).await,
                    Pool::Sqlite(p) => sqlx::migrate!("./migrations/sqlite").run(p).await,
                };
                r.map_err(|source| StoreError::Migrate {
                    url: self.url.clone(),
                    source,
                })
            },
        )
        .await
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.bounded("ping", async move {
            with_pool!(self, p => sqlx::query("SELECT 1").execute(p).await.map(|_| ()))
                .map_err(|e| self.query_err("ping", e))
        })
        .await
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
        self.bounded("reading this host's rows", async move {
            let (worktrees, mut unreadable) = self.worktree_rows(host).await?;
            let (agent_sessions, bad_agents) = self.open_agent_rows(host).await?;
            unreadable.extend(bad_agents);
            // A repository path that is not text belongs to a worktree row that
            // is already reported as unreadable; the others are still searched.
            let repositories = with_pool!(self, p => {
                sqlx::query(self.sql().repositories_of_host).bind(host).fetch_all(p).await
                    .map(|rows| rows.iter().filter_map(|r| r.try_get::<String, _>("repo_path").ok()).collect::<Vec<_>>())
            })
            .map_err(|e| self.query_err("reading repositories", e))?
            .into_iter()
            .map(PathBuf::from)
            .collect();
            Ok(HostRows {
                worktrees,
                agent_sessions,
                repositories,
                unreadable,
            })
        })
        .await
    }

    /// Completes `rows` into the desired state: the liveness of every chat
    /// and session the rows or `interest` name. Two queries.
    pub async fn liveness(
        &self,
        rows: HostRows,
        interest: &Interest,
    ) -> Result<DesiredState, StoreError> {
        self.bounded("reading the liveness of chats and sessions", async move {
            let HostRows {
                worktrees,
                agent_sessions,
                repositories,
                mut unreadable,
            } = rows;
            let mut chat_ids = interest.chats.clone();
            chat_ids.extend(agent_sessions.iter().map(|r| r.chat_id.clone()));
            let (chats, bad_chats) = self.chat_states_each(&chat_ids).await?;
            unreadable.extend(bad_chats);

            let mut session_ids = interest.sessions.clone();
            session_ids.extend(worktrees.iter().map(|w| w.session_id.clone()));
            session_ids.extend(agent_sessions.iter().map(|r| r.session_id.clone()));
            session_ids.extend(
                chats
                    .values()
                    .filter_map(|c| c.chat.as_ref().map(|c| c.session_id.clone())),
            );
            let (sessions, bad_sessions) = self.session_states_each(&session_ids).await?;
            unreadable.extend(bad_sessions);

            Ok(DesiredState {
                worktrees,
                agent_sessions,
                sessions,
                chats,
                repositories,
                unreadable,
            })
        })
        .await
    }

    async fn worktree_rows(
        &self,
        host: &str,
    ) -> Result<(Vec<WorktreeRow>, Vec<UnreadableRow>), StoreError> {
        let decoded = with_pool!(self, p => {
            let rows = sqlx::query(self.sql().worktrees_of_host).bind(host).fetch_all(p).await
                .map_err(|e| self.query_err("reading worktrees", e))?;
            rows.iter().map(|r| rows::decode::<WorktreeColumns, _>(r, Table::Worktrees)).collect::<Vec<_>>()
        });
        Ok(rows::split(
            decoded
                .into_iter()
                .map(|d| d.and_then(WorktreeColumns::into_row)),
        ))
    }

    async fn open_agent_rows(
        &self,
        host: &str,
    ) -> Result<(Vec<AgentSessionRow>, Vec<UnreadableRow>), StoreError> {
        let decoded = with_pool!(self, p => {
            let rows = sqlx::query(self.sql().open_agent_rows_of_host).bind(host).fetch_all(p).await
                .map_err(|e| self.query_err("reading agent_sessions", e))?;
            rows.iter().map(|r| rows::decode::<AgentColumns, _>(r, Table::AgentSessions)).collect::<Vec<_>>()
        });
        Ok(rows::split(
            decoded
                .into_iter()
                .map(|d| d.and_then(AgentColumns::into_row)),
        ))
    }

    /// The liveness of each chat id, including ids with no row. A chat row
    /// that cannot be read is an error here: a re-check must not take it
    /// for a chat without a row.
    pub async fn chat_states(
        &self,
        ids: &BTreeSet<String>,
    ) -> Result<HashMap<String, ChatState>, StoreError> {
        self.bounded("reading chats", async move {
            let (states, unreadable) = self.chat_states_each(ids).await?;
            match unreadable.into_iter().next() {
                Some(u) => Err(self.contract(u.to_string())),
                None => Ok(states),
            }
        })
        .await
    }

    /// The liveness of each chat id, decoded row by row: the ids whose row
    /// (or whose session's row) cannot be read are left out of the map and
    /// returned beside it.
    async fn chat_states_each(
        &self,
        ids: &BTreeSet<String>,
    ) -> Result<(HashMap<String, ChatState>, Vec<UnreadableRow>), StoreError> {
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
            return Ok((out, Vec::new()));
        }
        let list = id_list(ids);
        let decoded = with_pool!(self, p => {
            let rows = sqlx::query(self.sql().chats_by_id).bind(&list).fetch_all(p).await
                .map_err(|e| self.query_err("reading chats", e))?;
            rows.iter().map(|r| rows::decode::<ChatColumns, _>(r, Table::Chats)).collect::<Vec<_>>()
        });
        let (states, unreadable) = rows::split(
            decoded
                .into_iter()
                .map(|d| d.and_then(ChatColumns::into_state)),
        );
        // A chat whose row cannot be read is neither live nor without a
        // row: it leaves the map.
        for u in &unreadable {
            if let Some(id) = &u.id {
                out.remove(id);
            }
        }
        for state in states {
            out.insert(state.chat_id.clone(), state);
        }
        Ok((out, unreadable))
    }

    /// The liveness of each session id, including ids with no row. A
    /// session row that cannot be read is an error here (see
    /// [`Store::chat_states`]).
    pub async fn session_states(
        &self,
        ids: &BTreeSet<String>,
    ) -> Result<HashMap<String, SessionState>, StoreError> {
        self.bounded("reading sessions", async move {
            let (states, unreadable) = self.session_states_each(ids).await?;
            match unreadable.into_iter().next() {
                Some(u) => Err(self.contract(u.to_string())),
                None => Ok(states),
            }
        })
        .await
    }

    /// The liveness of each session id, decoded row by row; the ids whose
    /// row cannot be read are left out of the map and returned beside it.
    async fn session_states_each(
        &self,
        ids: &BTreeSet<String>,
    ) -> Result<(HashMap<String, SessionState>, Vec<UnreadableRow>), StoreError> {
        if ids.is_empty() {
            return Ok((HashMap::new(), Vec::new()));
        }
        let list = id_list(ids);
        let decoded = with_pool!(self, p => {
            let rows = sqlx::query(self.sql().sessions_by_id).bind(&list).fetch_all(p).await
                .map_err(|e| self.query_err("reading sessions", e))?;
            rows.iter().map(|r| rows::decode::<SessionColumns, _>(r, Table::Sessions)).collect::<Vec<_>>()
        });
        let (states, unreadable) = rows::split(
            decoded
                .into_iter()
                .map(|d| d.and_then(SessionColumns::into_state)),
        );
        let out = states
            .into_iter()
            .map(|s| (s.session_id.clone(), s))
            .collect();
        Ok((out, unreadable))
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
        self.bounded("reading worktrees by path", async move {
            with_pool!(self, p => {
                sqlx::query(self.sql().worktrees_naming).bind(path).bind(id).fetch_all(p).await
                    .and_then(|rows| rows.into_iter().map(|r| r.try_get::<String, _>("id")).collect())
            })
            .map_err(|e| self.query_err("reading worktrees by path", e))
        })
        .await
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
        self.bounded("reading this host's worktrees by path", async move {
            let paths = serde_json::to_string(paths).expect("strings serialize");
            with_pool!(self, p => {
                sqlx::query(self.sql().host_worktrees_naming).bind(host).bind(&paths).bind(id).fetch_all(p).await
                    .and_then(|rows| rows.into_iter().map(|r| Ok((r.try_get::<String, _>("id")?, r.try_get::<String, _>("session_id")?))).collect())
            })
            .map_err(|e| self.query_err("reading this host's worktrees by path", e))
        })
        .await
    }

    /// The chats whose open opencode rows name `session`: the re-check
    /// before deleting a session found with no row.
    pub async fn chats_with_open_rows_naming(
        &self,
        session: &str,
    ) -> Result<Vec<String>, StoreError> {
        let sql = self.sql().chats_naming_opencode_session;
        self.strings(
            "reading agent_sessions by opencode session",
            sql,
            session,
            "chat_id",
        )
        .await
    }

    /// The ids of the chats whose rows name `session`, in order: the close
    /// hook answers for each of them.
    pub async fn chats_of_session(&self, session: &str) -> Result<Vec<String>, StoreError> {
        let sql = self.sql().chats_of_session;
        self.strings("reading chats by session", sql, session, "id")
            .await
    }

    /// One text column of the rows `sql` selects for `key`.
    async fn strings(
        &self,
        what: &'static str,
        sql: &'static str,
        key: &str,
        column: &'static str,
    ) -> Result<Vec<String>, StoreError> {
        self.bounded(what, async move {
            with_pool!(self, p => {
                sqlx::query(sql).bind(key).fetch_all(p).await
                    .and_then(|rows| rows.into_iter().map(|r| r.try_get::<String, _>(column)).collect())
            })
            .map_err(|e| self.query_err(what, e))
        })
        .await
    }

    /// Marks a worktree row `at_risk` with its reasons. Returns whether the
    /// row changed (false: it already carried exactly these reasons).
    pub async fn mark_worktree_at_risk(
        &self,
        id: &str,
        reasons: &[AtRisk],
    ) -> Result<bool, StoreError> {
        self.bounded("marking worktree at risk", async move {
            let json = serde_json::to_string(reasons).expect("reasons serialize");
            with_pool!(self, p => sqlx::query(self.sql().mark_at_risk).bind(id).bind(&json).execute(p).await.map(|r| r.rows_affected() > 0))
                .map_err(|e| self.query_err("marking worktree at risk", e))
        })
        .await
    }

    /// Marks a worktree row `active` again (its session is live again).
    pub async fn mark_worktree_active(&self, id: &str) -> Result<(), StoreError> {
        self.bounded("marking worktree active", async move {
            with_pool!(self, p => sqlx::query(self.sql().mark_active).bind(id).execute(p).await.map(|_| ()))
                .map_err(|e| self.query_err("marking worktree active", e))
        })
        .await
    }

    /// Marks a worktree row `removed` with `removed_at`.
    pub async fn mark_worktree_removed(&self, id: &str) -> Result<(), StoreError> {
        self.bounded("marking worktree removed", async move {
            with_pool!(self, p => sqlx::query(self.sql().mark_removed).bind(id).execute(p).await.map(|_| ()))
                .map_err(|e| self.query_err("marking worktree removed", e))
        })
        .await
    }

    /// Marks one open agent_sessions row `closed` with `closed_at`. Returns
    /// whether a row changed (false: already closed).
    pub async fn close_agent_row(&self, id: &str) -> Result<bool, StoreError> {
        self.bounded("closing agent_sessions row", async move {
            with_pool!(self, p => sqlx::query(self.sql().close_agent_row).bind(id).execute(p).await.map(|r| r.rows_affected() > 0))
                .map_err(|e| self.query_err("closing agent_sessions row", e))
        })
        .await
    }

    /// Marks an open agent_sessions row `closed` only while it records the
    /// process `(pid, start_time)`: a row the launcher has meanwhile pointed
    /// at a new process stays open. Returns whether a row changed.
    pub async fn close_agent_row_recording(
        &self,
        id: &str,
        pid: i32,
        start_time: Option<u64>,
    ) -> Result<bool, StoreError> {
        self.bounded("closing agent_sessions row", async move {
            let start = start_time.map(|s| s as i64);
            with_pool!(self, p => sqlx::query(self.sql().close_agent_row_recording).bind(id).bind(pid).bind(start).execute(p).await.map(|r| r.rows_affected() > 0))
                .map_err(|e| self.query_err("closing agent_sessions row", e))
        })
        .await
    }

    /// Appends one audit record; answers its id.
    pub async fn append_audit(&self, rec: &AuditRecord) -> Result<i64, StoreError> {
        self.bounded("appending audit record", async move {
            let detail = rec.detail.to_string();
            with_pool!(self, p => sqlx::query_scalar::<_, i64>(self.sql().append_audit)
                .bind(&rec.host)
                .bind(&rec.chat_id)
                .bind(&rec.session_id)
                .bind(&rec.action)
                .bind(&rec.target)
                .bind(&rec.outcome)
                .bind(&rec.reason)
                .bind(&detail)
                .bind(rec.intent_id)
                .fetch_one(p).await)
            .map_err(|e| self.query_err("appending audit record", e))
        })
        .await
    }

    /// The `intent` records of `host` that no record concludes, oldest
    /// first.
    pub async fn open_intents(&self, host: &str) -> Result<Vec<OpenIntent>, StoreError> {
        self.bounded("reading unconcluded intents", async move {
            with_pool!(self, p => sqlx::query(self.sql().open_intents)
                .bind(host)
                .fetch_all(p).await
                .and_then(|rows| rows.into_iter().map(|r| -> Result<_, sqlx::Error> {
                    let detail: Option<String> = r.try_get(3)?;
                    Ok(OpenIntent {
                        id: r.try_get(0)?,
                        action: r.try_get(1)?,
                        target: r.try_get(2)?,
                        detail: detail
                            .and_then(|d| serde_json::from_str(&d).ok())
                            .unwrap_or(serde_json::Value::Null),
                        chat_id: r.try_get(4)?,
                        session_id: r.try_get(5)?,
                    })
                }).collect()))
            .map_err(|e| self.query_err("reading unconcluded intents", e))
        })
        .await
    }
}

/// Ids travel as one JSON array parameter, so that one statement serves any
/// number of ids on both databases.
fn id_list(ids: &BTreeSet<String>) -> String {
    serde_json::to_string(ids).expect("strings serialize")
}
