//! The reclaimer: frees the space of retired worktrees in the trash
//! ([`crate::act::trash`]), in the background, a bounded number at once.
//!
//! # Guarantees
//! 1. **Only the controller's own entries.** An entry is deleted only when
//!    its name has the trash's pattern ([`trash::parse_entry`]) *and* its
//!    record, written by [`trash::retire`] before the rename, names the
//!    very directory at that name (same `(st_dev, st_ino)`); the deletion
//!    checks that identity again on the entry's handle
//!    ([`delete::delete_dir_expecting`]). Any other name — one of the right
//!    shape that the controller did not retire, or whose directory is not
//!    the one recorded — is listed as foreign (`TrashStatus::foreign`) and
//!    left alone (tests `reclaim_deletes_only_entries_of_the_pattern`,
//!    `a_name_of_the_entry_shape_the_controller_did_not_retire_is_left_alone`,
//!    and `a_live_worktree_renamed_into_the_trash_is_never_reclaimed` in
//!    `tests/trash_safety.rs`). The record goes once its entry is gone;
//!    a record without an entry (a crash between the two) goes once
//!    [`trash::STALE_RECORD`] old.
//! 2. **The safe removal, nothing new.** Each entry is deleted with
//!    [`delete::delete_dir`] with the trash as its root: no symlink
//!    followed, no mount point crossed, nothing outside the entry touched
//!    (test `reclaim_never_follows_a_symlink_out_of_the_trash`).
//! 3. **Bounded.** At most `worktrees.reclaim_parallel` entries are deleted
//!    at once (test `reclaim_runs_at_most_the_configured_number_at_once`).
//! 4. **Resumable.** No state is needed: whatever is in the trash (a
//!    previous process's half-deleted entry too) is deleted by the next
//!    sweep, at start-up and on every wake-up (test
//!    `reclaim_resumes_on_a_half_deleted_entry`, and
//!    `a_crash_in_the_middle_of_a_reclaim_converges` in `tests/crash.rs`).
//! 5. **Never silent.** An entry that cannot be deleted is logged as an
//!    error with its path, counted in `boo_reconciler_trash_reclaim_failures_total`,
//!    shown in [`TrashStatus::errors`] (and so in `plan`, `once` and
//!    `/status`), and retried with the same backoff as any target (test
//!    `an_entry_that_cannot_be_deleted_is_reported_and_backs_off`).

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::act::trash;
use crate::act::trash::delete;
use crate::backoff::Backoff;
use crate::root::WorktreeRoot;

/// How often `run` looks at the trash when nothing wakes it: entries left
/// by another process, retries after a backoff.
const IDLE_SWEEP: Duration = Duration::from_secs(60);

/// The Prometheus handles the reclaimer keeps up to date.
#[derive(Clone)]
pub struct ReclaimMetrics {
    pub entries: prometheus::IntGauge,
    pub bytes: prometheus::IntGauge,
    pub duration: prometheus::Histogram,
    pub failures: prometheus::IntCounter,
}

/// An entry the reclaimer failed to delete.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct TrashError {
    pub path: PathBuf,
    pub error: String,
    pub failures: u32,
    /// Seconds until the next attempt.
    pub next_attempt_in_s: u64,
}

/// What waits in the trash.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TrashStatus {
    pub path: PathBuf,
    pub entries: usize,
    /// Estimated ([`trash::estimate_bytes`]: allocated blocks, measured
    /// once per entry).
    pub bytes: u64,
    /// When the oldest entry was retired (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oldest_retired_at: Option<String>,
    /// Entries being deleted now.
    pub reclaiming: usize,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<TrashError>,
    /// Names in the trash the controller did not make: never deleted.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub foreign: Vec<PathBuf>,
}

#[derive(Default)]
struct State {
    sizes: HashMap<PathBuf, u64>,
    running: HashSet<PathBuf>,
    backoff: Backoff<String>,
}

/// The reclaimer of one root. Cheap to share.
pub struct Reclaimer {
    root: WorktreeRoot,
    limit: Arc<Semaphore>,
    state: Mutex<State>,
    wake: Notify,
    metrics: OnceLock<ReclaimMetrics>,
    /// Deletions under way now, and the most there ever were at once.
    active: AtomicUsize,
    peak: AtomicUsize,
}

/// What one sweep came to.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Swept {
    pub reclaimed: usize,
    pub failed: Vec<(PathBuf, String)>,
}

impl Reclaimer {
    pub fn new(root: WorktreeRoot, parallel: usize) -> Reclaimer {
        Reclaimer {
            root,
            limit: Arc::new(Semaphore::new(parallel.max(1))),
            state: Mutex::new(State::default()),
            wake: Notify::new(),
            metrics: OnceLock::new(),
            active: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
        }
    }

    /// Keeps `m` up to date from now on.
    pub fn attach_metrics(&self, m: ReclaimMetrics) {
        let _ = self.metrics.set(m);
    }

    /// Something was retired: sweep soon.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Sweeps at once, then on every wake-up and every [`IDLE_SWEEP`] until
    /// cancelled. Deletions in flight finish before it returns.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        while !cancel.is_cancelled() {
            self.sweep(&cancel).await;
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(IDLE_SWEEP) => {}
                _ = cancel.cancelled() => {}
            }
        }
    }

    /// Deletes every entry that is not backing off, `reclaim_parallel` at
    /// a time, looking at the trash again after each deletion (entries
    /// retired meanwhile are taken too); returns once none is left to
    /// start. `cancel` stops new deletions, not those in flight.
    pub async fn sweep(self: &Arc<Self>, cancel: &CancellationToken) -> Swept {
        let mut out = Swept::default();
        let mut set = tokio::task::JoinSet::new();
        loop {
            if !cancel.is_cancelled() {
                for entry in self.eligible() {
                    let me = Arc::clone(self);
                    let permit = Arc::clone(&self.limit);
                    set.spawn(async move {
                        let _permit = permit.acquire_owned().await.expect("never closed");
                        let now = me.active.fetch_add(1, Ordering::SeqCst) + 1;
                        me.peak.fetch_max(now, Ordering::SeqCst);
                        let path = entry.path.clone();
                        let started = Instant::now();
                        let r = {
                            let me = Arc::clone(&me);
                            tokio::task::spawn_blocking(move || me.reclaim_one(&entry))
                                .await
                                .unwrap_or_else(|e| Err(format!("worker thread failed: {e}")))
                        };
                        me.active.fetch_sub(1, Ordering::SeqCst);
                        me.finished(&path, &r, started.elapsed());
                        (path, r)
                    });
                }
            }
            let Some(done) = set.join_next().await else {
                break;
            };
            match done {
                Ok((_, Ok(()))) => out.reclaimed += 1,
                Ok((path, Err(e))) => out.failed.push((path, e)),
                Err(e) => tracing::error!(error = %e, "a reclaim task failed"),
            }
        }
        self.update_gauges();
        out
    }

    /// Entries to start now: in the trash, retired by the controller (see
    /// [`trash::list`]), not running, not backing off. Marks them running.
    fn eligible(&self) -> Vec<trash::TrashEntry> {
        let listing = match trash::list(&self.root) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(trash = %trash::trash_path(&self.root).display(), error = %e, "cannot list the trash");
                return Vec::new();
            }
        };
        trash::forget_stale_records(&self.root, &listing);
        let now = Instant::now();
        let mut st = self.state.lock();
        let mut out = Vec::new();
        for e in listing.entries {
            let key = e.path.display().to_string();
            if st.running.contains(&e.path) || st.backoff.blocking(&key, now).is_some() {
                continue;
            }
            st.running.insert(e.path.clone());
            out.push(e);
        }
        out
    }

    /// Measures (once) and deletes one entry. Blocking.
    fn reclaim_one(&self, entry: &trash::TrashEntry) -> Result<(), String> {
        let path = entry.path.as_path();
        let known = self.state.lock().sizes.contains_key(path);
        if !known {
            let bytes = trash::estimate_bytes(path);
            self.state.lock().sizes.insert(path.to_path_buf(), bytes);
            self.update_gauges();
        }
        // The trash is the root of its entries: the same checks as a
        // worktree's removal, one level down, on a trash checked again;
        // and only the directory the record names (the listing found it
        // there, and the deletion checks it again on its handle).
        let trash_root = self.trash_root()?;
        delete::delete_dir_expecting(&trash_root, path, Some((entry.dev, entry.ino)))
            .map_err(|e| e.to_string())?;
        trash::forget_record_of(&self.root, path);
        Ok(())
    }

    /// The trash as the root of its entries, checked on its handle first
    /// and then the very directory opened.
    fn trash_root(&self) -> Result<WorktreeRoot, String> {
        let root_fd = self.root.open_handle().map_err(|e| e.to_string())?;
        let fd = trash::open_existing_trash(&self.root, &root_fd)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("{} is gone", trash::trash_path(&self.root).display()))?;
        let st = nix::sys::stat::fstat(&fd).map_err(|e| e.to_string())?;
        let trash_root =
            WorktreeRoot::open(&trash::trash_path(&self.root)).map_err(|e| e.to_string())?;
        if (trash_root.dev(), trash_root.ino()) != (st.st_dev, st.st_ino) {
            return Err(format!(
                "{} changed while it was being opened",
                trash::trash_path(&self.root).display()
            ));
        }
        Ok(trash_root)
    }

    fn finished(&self, entry: &std::path::Path, r: &Result<(), String>, took: Duration) {
        let key = entry.display().to_string();
        let mut st = self.state.lock();
        st.running.remove(entry);
        match r {
            Ok(()) => {
                st.sizes.remove(entry);
                st.backoff.succeeded(&key);
                tracing::info!(entry = %entry.display(), took_ms = took.as_millis() as u64, "trash entry reclaimed");
                if let Some(m) = self.metrics.get() {
                    m.duration.observe(took.as_secs_f64());
                }
            }
            Err(e) => {
                let b = st.backoff.failed(&key, Instant::now(), e);
                tracing::error!(entry = %entry.display(), error = %e, failures = b.failures,
                    "cannot reclaim a trash entry; retried after a backoff");
                if let Some(m) = self.metrics.get() {
                    m.failures.inc();
                }
            }
        }
    }

    /// What waits in the trash now. Blocking: measures entries not
    /// measured yet.
    pub fn status(&self) -> TrashStatus {
        let mut out = TrashStatus {
            path: trash::trash_path(&self.root),
            ..TrashStatus::default()
        };
        let listing = match trash::list(&self.root) {
            Ok(l) => l,
            Err(e) => {
                out.errors.push(TrashError {
                    path: out.path.clone(),
                    error: e.to_string(),
                    failures: 1,
                    next_attempt_in_s: 0,
                });
                return out;
            }
        };
        let unknown: Vec<PathBuf> = {
            let st = self.state.lock();
            listing
                .entries
                .iter()
                .filter(|e| !st.sizes.contains_key(&e.path))
                .map(|e| e.path.clone())
                .collect()
        };
        let measured: Vec<(PathBuf, u64)> = unknown
            .into_iter()
            .map(|p| {
                let b = trash::estimate_bytes(&p);
                (p, b)
            })
            .collect();
        let now = Instant::now();
        let mut st = self.state.lock();
        st.sizes.extend(measured);
        let present: HashSet<&PathBuf> = listing.entries.iter().map(|e| &e.path).collect();
        st.sizes.retain(|p, _| present.contains(p));
        out.entries = listing.entries.len();
        out.bytes = st.sizes.values().sum();
        out.oldest_retired_at = listing
            .entries
            .first()
            .map(|e| humantime::format_rfc3339_seconds(e.retired_at).to_string());
        out.reclaiming = self.active.load(Ordering::SeqCst);
        for e in &listing.entries {
            if let Some(b) = st
                .backoff
                .entries()
                .find_map(|(k, b)| (*k == e.path.display().to_string()).then_some(b))
            {
                out.errors.push(TrashError {
                    path: e.path.clone(),
                    error: b.last_error.clone(),
                    failures: b.failures,
                    next_attempt_in_s: b.next_attempt.saturating_duration_since(now).as_secs(),
                });
            }
        }
        out.foreign = listing.foreign;
        drop(st);
        if let Some(m) = self.metrics.get() {
            m.entries.set(out.entries as i64);
            m.bytes.set(out.bytes.min(i64::MAX as u64) as i64);
        }
        out
    }

    fn update_gauges(&self) {
        if self.metrics.get().is_none() {
            return;
        }
        let entries = trash::list(&self.root)
            .map(|l| l.entries.len())
            .unwrap_or(0);
        let bytes: u64 = self.state.lock().sizes.values().sum();
        if let Some(m) = self.metrics.get() {
            m.entries.set(entries as i64);
            m.bytes.set(bytes.min(i64::MAX as u64) as i64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::act::trash::testing::{fixture, Tmpfs};
    use std::fs;

    fn retire_tree(root: &WorktreeRoot, id: &str, files: usize) -> PathBuf {
        let wt = root.path().join(id);
        fs::create_dir_all(wt.join("a/b")).unwrap();
        for i in 0..files {
            fs::write(wt.join(format!("a/b/f{i}")), "x").unwrap();
        }
        match crate::act::trash::testing::retire_path(root, &wt).unwrap() {
            trash::Retired::Moved { entry } => entry,
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn reclaim_deletes_only_entries_of_the_pattern() {
        let (_tmp, root, _outside) = fixture();
        let entry = retire_tree(&root, "w1", 10);
        let foreign = trash::trash_path(&root).join("notes");
        fs::create_dir_all(&foreign).unwrap();
        let r = Arc::new(Reclaimer::new(root.clone(), 2));
        let swept = r.sweep(&CancellationToken::new()).await;
        assert_eq!(swept.reclaimed, 1);
        assert!(!entry.exists());
        assert!(foreign.is_dir(), "a foreign name is never deleted");
        let s = r.status();
        assert_eq!((s.entries, s.bytes), (0, 0));
        assert_eq!(s.foreign, vec![foreign]);
    }

    #[tokio::test]
    async fn a_name_of_the_entry_shape_the_controller_did_not_retire_is_left_alone() {
        let (_tmp, root, _outside) = fixture();
        let ours = retire_tree(&root, "w1", 3);
        let trash = trash::trash_path(&root);
        // A retired entry whose directory was replaced under the same name:
        // its record names the one retired, not this one.
        let replaced = retire_tree(&root, "w2", 3);
        fs::rename(&replaced, root.path().join("w2-retired")).unwrap();
        fs::create_dir(&replaced).unwrap();
        fs::write(replaced.join("live.txt"), "live").unwrap();
        // The right shape, never retired (no record).
        let planted = trash.join("w3.1764000000000000000");
        fs::create_dir(&planted).unwrap();
        fs::write(planted.join("live.txt"), "live").unwrap();
        let r = Arc::new(Reclaimer::new(root.clone(), 2));
        let swept = r.sweep(&CancellationToken::new()).await;
        assert_eq!(
            swept,
            Swept {
                reclaimed: 1,
                failed: vec![]
            }
        );
        assert!(!ours.exists());
        assert!(
            !trash
                .join(trash::record_name(ours.file_name().unwrap()))
                .exists(),
            "the record goes with its entry"
        );
        for left in [&replaced, &planted] {
            assert_eq!(fs::read(left.join("live.txt")).unwrap(), b"live");
        }
        let s = r.status();
        assert_eq!(s.entries, 0);
        assert_eq!(s.foreign, vec![replaced, planted]);
    }

    #[tokio::test]
    async fn reclaim_never_follows_a_symlink_out_of_the_trash() {
        let (_tmp, root, outside) = fixture();
        let entry = retire_tree(&root, "w1", 1);
        std::os::unix::fs::symlink(&outside, entry.join("out")).unwrap();
        std::os::unix::fs::symlink(outside.join("keep.txt"), entry.join("f")).unwrap();
        let r = Arc::new(Reclaimer::new(root.clone(), 1));
        assert_eq!(r.sweep(&CancellationToken::new()).await.reclaimed, 1);
        assert!(!entry.exists());
        assert_eq!(fs::read(outside.join("keep.txt")).unwrap(), b"keep");
    }

    #[tokio::test]
    async fn reclaim_runs_at_most_the_configured_number_at_once() {
        let (_tmp, root, _outside) = fixture();
        for i in 0..5 {
            retire_tree(&root, &format!("w{i}"), 50);
        }
        let r = Arc::new(Reclaimer::new(root.clone(), 2));
        let swept = r.sweep(&CancellationToken::new()).await;
        assert_eq!(swept.reclaimed, 5);
        let peak = r.peak.load(Ordering::SeqCst);
        assert!((1..=2).contains(&peak), "{peak} deletions at once");
        assert_eq!(r.active.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn reclaim_resumes_on_a_half_deleted_entry() {
        let (_tmp, root, _outside) = fixture();
        let entry = retire_tree(&root, "w1", 20);
        // What a process killed in the middle leaves: some files gone.
        for i in 0..10 {
            fs::remove_file(entry.join(format!("a/b/f{i}"))).unwrap();
        }
        let r = Arc::new(Reclaimer::new(root.clone(), 1));
        assert_eq!(r.sweep(&CancellationToken::new()).await.reclaimed, 1);
        assert!(!entry.exists());
    }

    #[tokio::test]
    async fn an_entry_that_cannot_be_deleted_is_reported_and_backs_off() {
        let (_tmp, root, _outside) = fixture();
        let entry = retire_tree(&root, "w1", 1);
        // A mount point inside: the safe removal refuses it.
        let Some(tmpfs) = Tmpfs::mount(&entry.join("a")) else {
            return;
        };
        let r = Arc::new(Reclaimer::new(root.clone(), 1));
        let swept = r.sweep(&CancellationToken::new()).await;
        let status = r.status();
        let again = r.sweep(&CancellationToken::new()).await;
        drop(tmpfs);
        assert_eq!(swept.reclaimed, 0);
        assert_eq!(swept.failed.len(), 1, "{swept:?}");
        assert_eq!(swept.failed[0].0, entry);
        assert!(swept.failed[0].1.contains("mount point"), "{swept:?}");
        assert_eq!(status.errors.len(), 1);
        assert_eq!(status.errors[0].path, entry);
        assert!(status.errors[0].next_attempt_in_s > 0);
        assert_eq!(again, Swept::default(), "backing off: not retried at once");
        assert!(entry.is_dir());
    }
}
