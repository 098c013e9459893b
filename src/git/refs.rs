//! The refs of a main repository that outlive any one of its worktrees,
//! as git lists them, read once and reused while their storage is
//! untouched: the commit check of a clean worktree then needs no git
//! command of its own (every tip it has is one of these refs' objects).
//!
//! # Guarantees
//!
//! 1. **Git lists them.** The list is `git for-each-ref refs/`, less the
//!    per-worktree refs (`refs/worktree/*`, `refs/bisect/*`,
//!    `refs/rewritten/*`), which vanish with their worktree; nothing here
//!    parses a ref file.
//! 2. **Never older than the storage.** A list is reused only while a stamp
//!    of the ref storage is unchanged: `packed-refs`, and every entry below
//!    `refs/` and `reftable/` — name, inode, size, mode, mtime and ctime.
//!    Git replaces a ref file, `packed-refs` and `tables.list` by renaming a
//!    new file over it, so every update it makes shows as a new inode
//!    whatever the clock's granularity. A stamp with any entry changed in
//!    the second before it was taken is not trusted at all (an in-place
//!    edit by hand within one clock tick would not show): such a list is
//!    used once and not kept. Test: `a_ref_moved_deleted_or_added_is_seen_at_once`.
//! 3. **Only ever keeps.** A tip found among the refs is reachable; one that
//!    is not is left to `git rev-list` as before. A stale list could only
//!    make a worktree safe that is not, which guarantee 2 rules out.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;

use super::cli::Git;

/// How recent a change makes a stamp untrusted.
const SETTLE: Duration = Duration::from_secs(1);

/// The refs that outlive a worktree, `(name, object)`.
pub type Survivors = Arc<Vec<(String, String)>>;

/// Lists of surviving refs per main repository (its common directory).
#[derive(Default)]
pub struct RefsCache {
    lists: Mutex<HashMap<PathBuf, (u64, Survivors)>>,
}

impl RefsCache {
    /// The surviving refs of the repository whose common directory is
    /// `common`, asking `git` (a worktree of it) only when the storage
    /// changed since they were listed.
    pub fn survivors(&self, git: &Git, common: &Path) -> Result<Survivors, String> {
        let (stamp, settled) = stamp(common, SystemTime::now());
        if settled {
            let lists = self.lists.lock();
            if let Some((s, list)) = lists.get(common) {
                if *s == stamp {
                    return Ok(Arc::clone(list));
                }
            }
        }
        let list: Survivors = Arc::new(list_survivors(git)?);
        let mut lists = self.lists.lock();
        if settled {
            lists.insert(common.to_path_buf(), (stamp, Arc::clone(&list)));
        } else {
            lists.remove(common);
        }
        Ok(list)
    }
}

/// `git for-each-ref refs/` less the per-worktree refs.
fn list_survivors(git: &Git) -> Result<Vec<(String, String)>, String> {
    let o = git
        .run(&["for-each-ref", "--format=%(objectname) %(refname)", "refs/"])
        .map_err(|e| e.to_string())?;
    let text = o.stdout_str();
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((id, name)) = line.split_once(' ') else {
            return Err(format!("unexpected for-each-ref line {line:?}"));
        };
        if ["refs/worktree/", "refs/bisect/", "refs/rewritten/"]
            .iter()
            .any(|p| name.starts_with(p))
        {
            continue;
        }
        out.push((name.to_string(), id.to_string()));
    }
    Ok(out)
}

/// A hash of the ref storage of `common`, and whether nothing in it
/// changed in the [`SETTLE`] before `now`.
fn stamp(common: &Path, now: SystemTime) -> (u64, bool) {
    let mut h = DefaultHasher::new();
    let recent = now.checked_sub(SETTLE).unwrap_or(SystemTime::UNIX_EPOCH);
    let mut settled = true;
    let mut entry = |path: &Path, h: &mut DefaultHasher| {
        path.hash(h);
        match std::fs::symlink_metadata(path) {
            Ok(m) => {
                (m.ino(), m.size(), m.mode(), m.mtime(), m.mtime_nsec()).hash(h);
                (m.ctime(), m.ctime_nsec()).hash(h);
                let changed = SystemTime::UNIX_EPOCH
                    + Duration::new(m.ctime().max(m.mtime()).max(0) as u64, 0);
                // Whole seconds, rounded down: one more second of margin.
                if changed + Duration::from_secs(1) > recent {
                    settled = false;
                }
            }
            Err(e) => e.kind().hash(h),
        }
    };
    entry(&common.join("packed-refs"), &mut h);
    for top in ["refs", "reftable"] {
        let mut paths: Vec<PathBuf> = walkdir::WalkDir::new(common.join(top))
            .follow_links(false)
            .into_iter()
            .map(|e| match e {
                Ok(e) => e.into_path(),
                Err(e) => e.path().map(Path::to_path_buf).unwrap_or_default(),
            })
            .collect();
        paths.sort();
        for p in paths {
            entry(&p, &mut h);
        }
    }
    (h.finish(), settled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::git::cli::DEFAULT_TIMEOUT;
    use crate::git::testutil::{write, Fixture};

    /// Waits until what was just written has settled: a ctime cannot be
    /// set back, only left behind.
    fn settle() {
        std::thread::sleep(SETTLE + Duration::from_millis(1500));
    }

    #[test]
    fn a_ref_moved_deleted_or_added_is_seen_at_once() {
        let f = Fixture::new();
        let wt = f.worktree("w", "b");
        let common = f.repo.join(".git");
        let git = Git::for_dir(&wt, DEFAULT_TIMEOUT).unwrap();
        let cache = RefsCache::default();
        let names = |list: &Survivors| -> Vec<String> {
            let mut v: Vec<String> = list.iter().map(|(n, _)| n.clone()).collect();
            v.sort();
            v
        };
        settle();
        let first = cache.survivors(&git, &common).unwrap();
        assert_eq!(names(&first), ["refs/heads/b", "refs/heads/main"]);
        // Unchanged and settled: the same list, not a new one.
        let again = cache.survivors(&git, &common).unwrap();
        assert!(Arc::ptr_eq(&first, &again));
        // Each of git's own updates is seen by the next call, however
        // soon it comes, and a stamp that has not settled is not kept.
        write(&wt.join("n.txt"), "n\n");
        let c = f.commit_all(&wt, "moves b");
        let moved = cache.survivors(&git, &common).unwrap();
        assert!(
            moved.contains(&("refs/heads/b".into(), c.clone())),
            "{moved:?}"
        );
        f.git(&f.repo, &["tag", "t", &c]);
        assert!(names(&cache.survivors(&git, &common).unwrap()).contains(&"refs/tags/t".into()));
        f.git(&f.repo, &["tag", "-d", "t"]);
        assert!(!names(&cache.survivors(&git, &common).unwrap()).contains(&"refs/tags/t".into()));
        // Packed, then deleted from packed-refs.
        f.git(&f.repo, &["branch", "gone", &c]);
        f.git(&f.repo, &["pack-refs", "--all"]);
        assert!(names(&cache.survivors(&git, &common).unwrap()).contains(&"refs/heads/gone".into()));
        f.git(&f.repo, &["branch", "-D", "gone"]);
        assert_eq!(
            names(&cache.survivors(&git, &common).unwrap()),
            ["refs/heads/b", "refs/heads/main"]
        );
        // Per-worktree refs never survive their worktree.
        f.git(&wt, &["update-ref", "refs/worktree/keep", &c]);
        f.git(&wt, &["update-ref", "refs/bisect/bad", &c]);
        assert_eq!(
            names(&cache.survivors(&git, &common).unwrap()),
            ["refs/heads/b", "refs/heads/main"]
        );
    }

    #[test]
    fn a_recent_change_is_never_trusted() {
        let f = Fixture::new();
        let common = f.repo.join(".git");
        let (_, settled) = stamp(&common, SystemTime::now());
        assert!(!settled, "a repository made just now has not settled");
        settle();
        let (a, settled) = stamp(&common, SystemTime::now());
        assert!(settled);
        // An edit in place, by hand, within the same second: the stamp may
        // not see it, so it must not be trusted.
        let main = common.join("refs/heads/main");
        let text = std::fs::read_to_string(&main).unwrap();
        std::fs::write(&main, text).unwrap();
        let (b, settled) = stamp(&common, SystemTime::now());
        assert!(!settled);
        assert_ne!(a, b, "the ctime moved");
    }
}
