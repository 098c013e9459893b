//! Every database call is bounded, and its failure says what failed.
//!
//! A server that stops answering while its connections stay open (a
//! network partition, a frozen proxy, a stopped VM) makes sqlx wait for
//! ever on a query, and for `acquire_timeout` on a pool only to say "pool
//! timed out". Neither tells an operator what to fix.
//!
//! # Guarantees
//! - Each call through [`Store::bounded`] ends within
//!   `database.query_timeout` (applying the migrations: within
//!   [`MIGRATION_TIMEOUT`]), plus at most `database.connect_timeout` to
//!   find out why the database cannot be reached (test
//!   `a_frozen_database_ends_the_pass_within_its_bound_and_the_next_pass_works`).
//! - A failure to reach the database names the cause as the driver saw it
//!   ("connection refused at 127.0.0.1:5432", "authentication failed for
//!   user …", "database … does not exist", "did not answer within 2s") and
//!   the setting the address came from (`database.url`), never only "pool
//!   timed out".
//!
//! # Caveats
//! - A call abandoned at its bound may still complete on the server (an
//!   UPDATE that reached it before the stall): every write the controller
//!   makes is idempotent, so the next pass converges either way.

use std::future::Future;
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use sqlx::Connection;

use super::{Pool, Store, StoreError};

/// The setting a database address comes from, as errors name it.
pub const URL_SETTING: &str = "database.url";

/// The bounds on database calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// Opening a connection, or waiting for a free one from the pool.
    pub connect: Duration,
    /// One call: a query, an update, a pass's reading of its rows.
    pub query: Duration,
}

impl Default for Timeouts {
    /// The built-in defaults of `database.connect_timeout` and
    /// `database.query_timeout`.
    fn default() -> Timeouts {
        Timeouts {
            connect: Duration::from_secs(5),
            query: Duration::from_secs(10),
        }
    }
}

impl From<&crate::config::Database> for Timeouts {
    fn from(d: &crate::config::Database) -> Timeouts {
        Timeouts {
            connect: d.connect_timeout,
            query: d.query_timeout,
        }
    }
}

/// The bound on applying the migrations: building an index on a large
/// table is slow, but a stalled server must still not hold the start-up
/// for ever.
pub const MIGRATION_TIMEOUT: Duration = Duration::from_secs(15 * 60);

impl Store {
    /// Runs one database call within `database.query_timeout`. A call that
    /// runs out, or fails because no connection could be had, is reported
    /// as the database being unreachable, with why.
    pub(crate) async fn bounded<T>(
        &self,
        what: &'static str,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        self.bounded_by(self.timeouts.query, what, call).await
    }

    /// [`Store::bounded`] with another bound than `database.query_timeout`.
    pub(crate) async fn bounded_by<T>(
        &self,
        limit: Duration,
        what: &'static str,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(limit, call).await {
            Ok(Err(StoreError::Query { source, .. })) if is_unreachable(&source) => {
                Err(self.unreachable(what, &source).await)
            }
            Ok(r) => r,
            Err(_) => Err(StoreError::Unreachable {
                url: self.url.clone(),
                what,
                why: format!(
                    "the database did not answer within {}",
                    humantime::format_duration(limit)
                ),
            }),
        }
    }

    /// Takes the host's lock if nobody holds it: `Ok(None)` when another
    /// instance does. Bounded like every other call.
    pub async fn try_lock_host(
        &self,
        host: &str,
    ) -> Result<Option<super::lock::HostLock>, StoreError> {
        self.bounded("taking the host lock", self.try_lock_host_unbounded(host))
            .await
    }

    /// Why `what` could not reach the database: for a pool that timed out,
    /// one direct connection attempt says what the pool did not.
    pub(crate) async fn unreachable(&self, what: &'static str, e: &sqlx::Error) -> StoreError {
        let why = match (e, &self.pool) {
            (sqlx::Error::PoolTimedOut, Pool::Postgres(p)) => {
                diagnose(&p.connect_options(), self.timeouts.connect).await
            }
            (sqlx::Error::PoolTimedOut, Pool::Sqlite(_)) => format!(
                "no connection was free within {}",
                humantime::format_duration(self.timeouts.connect)
            ),
            (e, Pool::Postgres(p)) => describe(e, &p.connect_options()),
            (e, Pool::Sqlite(_)) => e.to_string(),
        };
        StoreError::Unreachable {
            url: self.url.clone(),
            what,
            why,
        }
    }
}

/// Whether `e` means the database could not be reached at all (rather than
/// that a statement failed).
fn is_unreachable(e: &sqlx::Error) -> bool {
    matches!(
        e,
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::Tls(_)
    )
}

/// Opens one connection outside the pool, within `bound`, and says why it
/// fails ("the server answers" when it does not fail: the pool was full).
pub(crate) async fn diagnose(opts: &PgConnectOptions, bound: Duration) -> String {
    match tokio::time::timeout(bound, sqlx::PgConnection::connect_with(opts)).await {
        Err(_) => format!(
            "the database did not answer within {} at {}",
            humantime::format_duration(bound),
            address(opts)
        ),
        Ok(Err(e)) => describe(&e, opts),
        Ok(Ok(conn)) => {
            let _ = conn.close().await;
            format!(
                "no pooled connection was free within {} (the server at {} answers)",
                humantime::format_duration(bound),
                address(opts)
            )
        }
    }
}

/// A connection failure in an operator's words.
pub(crate) fn describe(e: &sqlx::Error, opts: &PgConnectOptions) -> String {
    match e {
        sqlx::Error::Io(io) => match io.kind() {
            std::io::ErrorKind::ConnectionRefused => {
                format!("connection refused at {}", address(opts))
            }
            std::io::ErrorKind::TimedOut => format!("connection to {} timed out", address(opts)),
            _ => format!("cannot reach {}: {io}", address(opts)),
        },
        sqlx::Error::Database(db) => match db.code().as_deref() {
            Some("28P01") | Some("28000") => format!(
                "authentication failed for user {:?} at {}: {}",
                opts.get_username(),
                address(opts),
                db.message()
            ),
            Some("3D000") => format!(
                "database {:?} does not exist at {}",
                opts.get_database().unwrap_or(opts.get_username()),
                address(opts)
            ),
            _ => db.message().to_string(),
        },
        e => e.to_string(),
    }
}

/// `host:port`, or the socket directory.
fn address(opts: &PgConnectOptions) -> String {
    let host = opts.get_host();
    if host.starts_with('/') {
        format!("{host}/.s.PGSQL.{}", opts.get_port())
    } else {
        format!("{host}:{}", opts.get_port())
    }
}
