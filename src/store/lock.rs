//! One controller per host: a PostgreSQL session-level advisory lock keyed
//! by the host id, or, with SQLite, an exclusive `flock` on a file beside
//! the database.
//!
//! # Guarantees
//! - While a [`HostLock`] is held, no other instance with the same host id
//!   (and the same database) holds one.
//! - The PostgreSQL lock lives on its own connection, outside the pool: it
//!   ends when that connection ends (crash, network loss, server restart).
//! - Nothing destructive happens on a lock that is not confirmed: the
//!   [`Fence`] asks the lock's own connection, within a bound, before every
//!   destructive action and before every pass; one confirmation that fails
//!   or does not answer in time drops the lock at once, and the fence
//!   refuses every action until the lock is taken again (test
//!   `a_frozen_leader_never_acts_after_another_instance_took_the_lock`).

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};
use parking_lot::Mutex;
use sqlx::{Connection, PgConnection};

use super::{Pool, Store, StoreError};

/// The `pg_locks` condition for the granted advisory lock on the bigint
/// key `$1`: a session-level lock on one bigint key shows as classid (high
/// half), objid (low half), objsubid 1.
macro_rules! key_rows {
    () => {
        "locktype = 'advisory' AND granted AND objsubid = 1 \
         AND ((classid::bigint << 32) | objid::bigint) = $1"
    };
}

/// A held host lock; released on drop.
pub enum HostLock {
    Postgres {
        conn: PgConnection,
        key: i64,
        /// The lock session's backend pid, as `pg_locks` names its holder.
        backend: i32,
    },
    /// Taken on the blocking pool; dropped wherever the lock is. Dropping
    /// unlocks and closes the file on the calling thread, which does not
    /// wait: unlocking never waits for another holder, and nothing was
    /// written to the file, so closing it has nothing to flush.
    Sqlite { _file: Flock<File>, path: PathBuf },
    /// Exclusivity that the embedder guarantees by construction (a test
    /// with one controller per database): always confirmed. The commands
    /// never use it.
    Assumed,
}

impl std::fmt::Debug for HostLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostLock::Postgres { key, backend, .. } => {
                write!(f, "advisory lock {key} (backend {backend})")
            }
            HostLock::Sqlite { path, .. } => write!(f, "flock on {}", path.display()),
            HostLock::Assumed => write!(f, "assumed exclusive"),
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
                let (got, backend): (bool, i32) =
                    sqlx::query_as("SELECT pg_try_advisory_lock($1), pg_backend_pid()")
                        .bind(key)
                        .fetch_one(&mut conn)
                        .await
                        .map_err(|e| self.query_err("taking the advisory lock", e))?;
                Ok(got.then_some(HostLock::Postgres { conn, key, backend }))
            }
            Pool::Sqlite(p) => {
                let db = p.connect_options().get_filename().to_path_buf();
                let mut name = db.file_name().unwrap_or_default().to_os_string();
                name.push(format!(".{host}.lock"));
                let path = db.with_file_name(name);
                // Opening and locking a local file does not wait, but a
                // database on a network file system can stall both: they run
                // on the blocking pool, so that the bound on this call holds
                // and no worker of the runtime waits with them.
                let taken = tokio::task::spawn_blocking({
                    let path = path.clone();
                    move || flock_exclusive(&path)
                })
                .await;
                match taken {
                    Ok(Ok(file)) => Ok(file.map(|f| HostLock::Sqlite { _file: f, path })),
                    Ok(Err(why)) => Err(self.contract(why)),
                    Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                    Err(e) => Err(self.contract(format!("locking {}: {e}", path.display()))),
                }
            }
        }
    }
}

/// The exclusive `flock` on `path` (created if missing), taken without
/// waiting: `None` while another process holds it. Blocks on the file
/// system: call it on the blocking pool.
fn flock_exclusive(path: &Path) -> Result<Option<Flock<File>>, String> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| format!("opening {}: {e}", path.display()))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(f) => Ok(Some(f)),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => Err(format!("locking {}: {e}", path.display())),
    }
}

impl Store {
    /// The backend pid of the session holding `host`'s advisory lock, if
    /// any (PostgreSQL; `None` with SQLite). Bounded by
    /// `database.query_timeout`.
    pub async fn lock_holder(&self, host: &str) -> Result<Option<i32>, StoreError> {
        let Pool::Postgres(p) = &self.pool else {
            return Ok(None);
        };
        self.bounded("looking up the holder of the host lock", async {
            sqlx::query_scalar(concat!(
                "SELECT pid FROM pg_locks WHERE ",
                key_rows!(),
                " LIMIT 1"
            ))
            .bind(advisory_key(host))
            .fetch_optional(p)
            .await
            .map_err(|e| self.query_err("looking up the holder of the host lock", e))
        })
        .await
    }
}

impl HostLock {
    /// The PostgreSQL backend pid of the lock's session.
    pub fn backend(&self) -> Option<i32> {
        match self {
            HostLock::Postgres { backend, .. } => Some(*backend),
            HostLock::Sqlite { .. } | HostLock::Assumed => None,
        }
    }

    /// Whether the lock is still ours, asked of the lock itself: for
    /// PostgreSQL, whether the lock's own session still holds the advisory
    /// lock (a round trip on its connection; the lock dies with it). Not
    /// bounded here: [`Fence::confirm`] bounds it.
    async fn confirm(&mut self) -> Result<(), String> {
        match self {
            HostLock::Postgres { conn, key, .. } => {
                let held: bool = sqlx::query_scalar(concat!(
                    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE ",
                    key_rows!(),
                    " AND pid = pg_backend_pid())"
                ))
                .bind(*key)
                .fetch_one(conn)
                .await
                .map_err(|e| format!("the lock's connection failed: {e}"))?;
                if held {
                    Ok(())
                } else {
                    Err("the lock's session no longer holds the advisory lock".into())
                }
            }
            HostLock::Sqlite { .. } | HostLock::Assumed => Ok(()),
        }
    }
}

/// Whether this instance may act for its host now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FenceState {
    /// No lock yet (starting, or standing by).
    NotHeld,
    /// The lock is held; each destructive action confirms it first.
    Held,
    /// A confirmation failed: the lock was dropped and nothing is acted on
    /// until it is taken again.
    Lost { why: String },
}

/// The host lock as the executor sees it: confirmed, within a bound,
/// before anything destructive.
pub struct Fence {
    /// Shared with a confirmation in flight, so that dropping the lock on
    /// a failure never waits for a frozen connection.
    lock: Mutex<Option<Arc<tokio::sync::Mutex<HostLock>>>>,
    state: Mutex<FenceState>,
    /// The backend of the lock last installed, kept once it is lost: the
    /// session that may still hold it on the server.
    backend: Mutex<Option<i32>>,
    bound: Duration,
    /// Wakes the loop that takes the lock again, the moment it is lost.
    lost: tokio::sync::Notify,
}

impl std::fmt::Debug for Fence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Fence({:?})", self.state())
    }
}

impl Fence {
    /// A fence without a lock; every confirmation is bounded by `bound`.
    pub fn new(bound: Duration) -> Fence {
        Fence {
            lock: Mutex::new(None),
            state: Mutex::new(FenceState::NotHeld),
            backend: Mutex::new(None),
            bound,
            lost: tokio::sync::Notify::new(),
        }
    }

    /// Acts under `lock` from now on (it replaces any earlier one).
    pub fn install(&self, lock: HostLock) {
        *self.backend.lock() = lock.backend();
        *self.lock.lock() = Some(Arc::new(tokio::sync::Mutex::new(lock)));
        *self.state.lock() = FenceState::Held;
    }

    /// Lets go of the lock (standing by, or shutting down).
    pub fn release(&self) {
        self.lock.lock().take();
        self.backend.lock().take();
        *self.state.lock() = FenceState::NotHeld;
    }

    /// Resolves once the lock has been lost (at once if it was lost since
    /// the last call).
    pub async fn lost(&self) {
        self.lost.notified().await
    }

    /// The backend pid of a lock that was lost (PostgreSQL): its session
    /// may hold the lock on the server until the server ends it.
    pub fn lost_backend(&self) -> Option<i32> {
        match self.state() {
            FenceState::Lost { .. } => *self.backend.lock(),
            _ => None,
        }
    }

    pub fn state(&self) -> FenceState {
        self.state.lock().clone()
    }

    /// `Ok` when the lock is held and its own connection confirms it
    /// within the bound. Otherwise the lock is dropped at once (a lock
    /// that cannot be confirmed may be another instance's by now) and the
    /// answer says why; later calls fail without a round trip until
    /// [`Fence::install`].
    pub async fn confirm(&self) -> Result<(), String> {
        let lock = match self.state() {
            FenceState::NotHeld => return Err("this instance does not hold the host lock".into()),
            FenceState::Lost { why } => {
                return Err(format!(
                "the host lock could not be confirmed ({why}); not acting until it is taken again"
            ))
            }
            FenceState::Held => self.lock.lock().clone(),
        };
        let Some(lock) = lock else {
            return Err("this instance does not hold the host lock".into());
        };
        let answer = tokio::time::timeout(self.bound, async { lock.lock().await.confirm().await })
            .await
            .unwrap_or_else(|_| {
                Err(format!(
                    "its connection did not answer within {}",
                    humantime::format_duration(self.bound)
                ))
            });
        match answer {
            Ok(()) => Ok(()),
            Err(why) => {
                self.lose(&lock, &why);
                Err(format!(
                    "the host lock could not be confirmed ({why}); not acting until it is taken again"
                ))
            }
        }
    }

    /// Drops `lock` if it is still the installed one (a newer lock taken
    /// meanwhile stays).
    fn lose(&self, lock: &Arc<tokio::sync::Mutex<HostLock>>, why: &str) {
        let mut slot = self.lock.lock();
        if slot.as_ref().is_some_and(|l| Arc::ptr_eq(l, lock)) {
            slot.take();
            *self.state.lock() = FenceState::Lost { why: why.into() };
            self.lost.notify_one();
            tracing::error!(why, "the host lock could not be confirmed: it is dropped and nothing is acted on until it is taken again");
        }
    }
}
