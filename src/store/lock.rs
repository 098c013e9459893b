//! One controller per host: a PostgreSQL session-level advisory lock keyed
//! by the host id, or, with SQLite, an exclusive `flock` on a file beside
//! the database.
//!
//! # Guarantees
//! - While a [`HostLock`] is held, no other instance with the same host id
//!   (and the same database) holds one.
//! - The PostgreSQL lock lives on its own connection, outside the pool: it
//!   ends when that connection ends (crash, network loss, server restart),
//!   which [`HostLock::still_held`] detects before every pass.

use std::fs::{File, OpenOptions};
use std::path::PathBuf;

use nix::fcntl::{Flock, FlockArg};
use sqlx::{Connection, PgConnection};

use super::{Pool, Store, StoreError};

/// A held host lock; released on drop.
pub enum HostLock {
    Postgres { conn: PgConnection, key: i64 },
    Sqlite { _file: Flock<File>, path: PathBuf },
}

impl std::fmt::Debug for HostLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostLock::Postgres { key, .. } => write!(f, "advisory lock {key}"),
            HostLock::Sqlite { path, .. } => write!(f, "flock on {}", path.display()),
        }
    }
}

/// The advisory-lock key of a host: FNV-1a of a fixed prefix and the host
/// id, so that the key is stable across versions and platforms.
pub fn advisory_key(host: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in "boo-reconciler:".bytes().chain(host.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h as i64
}

impl Store {
    /// [`Store::try_lock_host`] without its bound.
    pub(crate) async fn try_lock_host_unbounded(
        &self,
        host: &str,
    ) -> Result<Option<HostLock>, StoreError> {
        match &self.pool {
            Pool::Postgres(p) => {
                let opts = (*p.connect_options()).clone();
                let mut conn = PgConnection::connect_with(&opts)
                    .await
                    .map_err(|e| self.query_err("opening the lock connection", e))?;
                let key = advisory_key(host);
                let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                    .bind(key)
                    .fetch_one(&mut conn)
                    .await
                    .map_err(|e| self.query_err("taking the advisory lock", e))?;
                Ok(got.then_some(HostLock::Postgres { conn, key }))
            }
            Pool::Sqlite(p) => {
                let db = p.connect_options().get_filename().to_path_buf();
                let mut name = db.file_name().unwrap_or_default().to_os_string();
                name.push(format!(".{host}.lock"));
                let path = db.with_file_name(name);
                let file = OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&path)
                    .map_err(|e| self.contract(format!("opening {}: {e}", path.display())))?;
                match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                    Ok(f) => Ok(Some(HostLock::Sqlite { _file: f, path })),
                    Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
                    Err((_, e)) => Err(self.contract(format!("locking {}: {e}", path.display()))),
                }
            }
        }
    }
}

impl HostLock {
    /// Whether the lock is still ours: for PostgreSQL, whether its
    /// connection still answers (the lock dies with it).
    pub async fn still_held(&mut self) -> bool {
        match self {
            HostLock::Postgres { conn, .. } => conn.ping().await.is_ok(),
            HostLock::Sqlite { .. } => true,
        }
    }
}
