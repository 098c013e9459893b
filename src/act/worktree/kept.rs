//! Verdicts that keep a worktree, reused while nothing they rest on has
//! changed: a kept worktree costs a few `lstat`s per pass instead of a
//! preflight.
//!
//! # Guarantees
//! - Only a verdict that keeps is ever reused. Nothing here can remove
//!   anything: a worktree is removed only after a fresh preflight, run
//!   right before the removal, as always (test
//!   `an_unchanged_fingerprint_never_lets_a_stale_verdict_remove_anything`).
//! - A verdict is reused only while its [`Fingerprint`] is unchanged and
//!   for at most `worktrees.recheck_interval`; never with `--force`, and
//!   never in a pass whose scope names the worktree's chat or session (a
//!   nudge, a notification, `once --chat`).
//! - Reasons the fingerprint cannot see — a submodule's own state, a mount
//!   point, a directory that is not a worktree, a preflight that failed —
//!   are never reused: such worktrees get the full preflight every pass.
//!
//! # What the fingerprint covers
//! The state of git around the worktree: the worktree directory itself,
//! its `.git` file, its admin directory (whose mtime and ctime change
//! whenever git renames a file into it or creates or removes an entry:
//! HEAD, the index, `locked`, a rebase or merge that starts or ends), the
//! content of HEAD and the index's stamp, and in the main repository
//! `packed-refs`, `HEAD`, `config`, `info/exclude` and every directory
//! under `refs/` (a ref written, moved or deleted renames a file in its
//! directory). Then, for each finding the verdict names (the sample of
//! paths of each reason): the path itself (inode, size, mode, mtime,
//! ctime), each directory from the worktree down to it and the
//! `.gitignore` in each; for a process using the worktree, its
//! `/proc/<pid>` and working directory. A worktree becomes safe only when
//! every finding is gone, and a finding cannot go without one of these
//! changing — except by means that leave no trace on them: a file whose
//! content is restored with its old mtime and ctime (not possible without
//! privileges for ctime), an ignore rule changed in the global excludes
//! file, or a finding beyond the sample of ten. Those are seen within
//! `worktrees.recheck_interval`.

use std::collections::HashMap;
use std::fs;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;

use crate::risk::AtRisk;

/// What a kept verdict rests on: the git state around the worktree (read
/// before its preflight, so that a change during the preflight shows as a
/// change next time) and its findings (read after).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fingerprint {
    pub git: u64,
    pub findings: u64,
}

struct Kept {
    fingerprint: Fingerprint,
    reasons: Vec<AtRisk>,
    /// What the worktree held on disk when the verdict was reached.
    bytes: Option<u64>,
    checked_at: SystemTime,
    checked: Instant,
}

/// The verdicts of worktrees kept at risk, by directory.
pub struct KeptVerdicts {
    kept: Mutex<HashMap<PathBuf, Kept>>,
    recheck: Duration,
    /// Each main repository's [`refs_state`] as the pass numbered in the
    /// value read it, by common directory: with hundreds of worktrees of
    /// one repository, its refs are walked once per pass. A ref that moves
    /// during the pass shows at the next one; a stamp that is a little old
    /// can only make a keep verdict be reused once more or rechecked once
    /// more, never let anything be removed.
    refs: Mutex<HashMap<PathBuf, (u64, u64)>>,
    /// What worktrees whose verdict the fingerprint cannot cover held on
    /// disk, and when that was measured ([`KeptVerdicts::bytes`]).
    sizes: Mutex<HashMap<PathBuf, (u64, Instant)>>,
}

/// A verdict that may be reused if the fingerprint still matches.
pub struct Candidate {
    pub reasons: Vec<AtRisk>,
    pub bytes: Option<u64>,
    pub checked_at: SystemTime,
    fingerprint: Fingerprint,
}

impl Candidate {
    /// Whether `now` is the fingerprint the verdict was reached on.
    pub fn still(&self, now: Option<Fingerprint>) -> bool {
        now == Some(self.fingerprint)
    }
}

impl KeptVerdicts {
    pub fn new(recheck: Duration) -> KeptVerdicts {
        KeptVerdicts {
            kept: Mutex::new(HashMap::new()),
            recheck,
            refs: Mutex::new(HashMap::new()),
            sizes: Mutex::new(HashMap::new()),
        }
    }

    /// What the worktree at `dir` holds on disk, by `measure` (a walk).
    /// A verdict the fingerprint covers is reused while nothing changes,
    /// so its walk happens once per change. One it cannot cover (`covered`
    /// false) is reached afresh every pass: its worktree is walked at most
    /// once per `recheck` interval, and the last measure stands between.
    pub fn bytes(&self, dir: &Path, covered: bool, measure: impl FnOnce() -> u64) -> u64 {
        if !covered {
            if let Some(&(bytes, at)) = self.sizes.lock().get(dir) {
                if at.elapsed() < self.recheck {
                    return bytes;
                }
            }
        }
        let bytes = measure();
        let mut sizes = self.sizes.lock();
        sizes.retain(|_, (_, at)| at.elapsed() < self.recheck);
        if covered {
            sizes.remove(dir);
        } else {
            sizes.insert(dir.to_path_buf(), (bytes, Instant::now()));
        }
        bytes
    }

    /// [`refs_state`] of the repository at `common`, read at most once in
    /// pass number `pass`.
    pub fn refs_stamp(&self, common: &Path, pass: u64) -> u64 {
        if let Some(&(p, stamp)) = self.refs.lock().get(common) {
            if p == pass {
                return stamp;
            }
        }
        let stamp = refs_state(common);
        self.refs.lock().insert(common.to_path_buf(), (pass, stamp));
        stamp
    }

    /// The verdict on `dir` if it is recent enough to be reused.
    pub fn candidate(&self, dir: &Path) -> Option<Candidate> {
        let kept = self.kept.lock();
        let k = kept.get(dir)?;
        (k.checked.elapsed() < self.recheck).then(|| Candidate {
            reasons: k.reasons.clone(),
            bytes: k.bytes,
            checked_at: k.checked_at,
            fingerprint: k.fingerprint,
        })
    }

    /// Remembers a fresh verdict that keeps `dir`; one the fingerprint
    /// cannot cover is forgotten instead.
    pub fn remember(
        &self,
        dir: &Path,
        fingerprint: Option<Fingerprint>,
        reasons: &[AtRisk],
        bytes: Option<u64>,
        checked_at: SystemTime,
    ) {
        let mut kept = self.kept.lock();
        match fingerprint {
            Some(fingerprint) => {
                kept.insert(
                    dir.to_path_buf(),
                    Kept {
                        fingerprint,
                        reasons: reasons.to_vec(),
                        bytes,
                        checked_at,
                        checked: Instant::now(),
                    },
                );
            }
            None => {
                kept.remove(dir);
            }
        }
    }

    /// Drops the verdict on `dir` (removed, skipped, refused: anything but
    /// kept).
    pub fn forget(&self, dir: &Path) {
        self.kept.lock().remove(dir);
    }
}

/// The git part of the fingerprint of the worktree at `wt`; `None` when
/// its links cannot be read (the preflight decides then).
pub fn git_state(wt: &Path) -> Option<u64> {
    git_state_with(wt, &refs_state)
}

/// [`git_state`] with the main repository's part (`refs`, given the
/// common directory) from elsewhere: a pass reads it once per repository
/// ([`KeptVerdicts::refs_stamp`]), not once per worktree.
pub fn git_state_with(wt: &Path, refs: &dyn Fn(&Path) -> u64) -> Option<u64> {
    let mut h = DefaultHasher::new();
    stamp(&mut h, wt);
    let dot_git = wt.join(".git");
    stamp(&mut h, &dot_git);
    let link = fs::read_to_string(&dot_git).ok()?;
    link.hash(&mut h);
    let admin = link.strip_prefix("gitdir:")?.trim();
    let admin = wt.join(admin);
    // Git writes its admin files as `<name>.lock` renamed into place, and
    // starts and ends a rebase, merge, cherry-pick, revert, bisect or lock
    // by creating and removing entries here: each changes the directory's
    // own mtime and ctime. HEAD and the index are read as well.
    stamp(&mut h, &admin);
    fs::read_to_string(admin.join("HEAD")).ok()?.hash(&mut h);
    stamp(&mut h, &admin.join("index"));
    let common = fs::read_to_string(admin.join("commondir")).ok()?;
    // `<common>/worktrees/<name>/../..` as written: one spelling per
    // repository, whichever worktree names it, so that its refs are read
    // once per pass.
    let common = crate::git::paths::normalize(&admin.join(common.trim()));
    common.hash(&mut h);
    refs(&common).hash(&mut h);
    stamp(&mut h, &wt.join(".gitignore"));
    Some(h.finish())
}

/// The main repository's part of the git state: `packed-refs`, `HEAD`,
/// `config`, `info/exclude` and every directory under `refs/` (a ref
/// written, moved or deleted renames a file in its directory). Each
/// directory's hash is added, not chained, so that the order `readdir`
/// gives needs no sorting.
pub fn refs_state(common: &Path) -> u64 {
    let mut h = DefaultHasher::new();
    for f in ["packed-refs", "HEAD", "config", "info", "info/exclude"] {
        stamp(&mut h, &common.join(f));
    }
    let mut dirs: u64 = 0;
    for d in walkdir::WalkDir::new(common.join("refs"))
        .follow_links(false)
        .same_file_system(true)
        .into_iter()
        .filter_entry(|e| e.file_type().is_dir())
        .filter_map(Result::ok)
    {
        let mut dh = DefaultHasher::new();
        d.path().hash(&mut dh);
        stamp(&mut dh, d.path());
        dirs = dirs.wrapping_add(dh.finish());
    }
    dirs.hash(&mut h);
    h.finish()
}

/// The findings part of the fingerprint; `None` when a reason is one the
/// fingerprint cannot see (never reused).
pub fn findings(wt: &Path, reasons: &[AtRisk]) -> Option<u64> {
    let mut h = DefaultHasher::new();
    for r in reasons {
        r.kind().hash(&mut h);
        match r {
            AtRisk::Staged { paths, .. }
            | AtRisk::Unstaged { paths, .. }
            | AtRisk::Untracked { paths, .. }
            | AtRisk::Conflicts { paths, .. }
            | AtRisk::HiddenChanges { paths, .. }
            | AtRisk::PreciousIgnored { paths, .. }
            | AtRisk::Unreadable { paths, .. } => {
                for p in paths {
                    finding(&mut h, wt, p)?;
                }
            }
            AtRisk::NestedRepository { path } => finding(&mut h, wt, path)?,
            AtRisk::InUse { pid, .. } => {
                let proc = PathBuf::from(format!("/proc/{pid}"));
                stamp(&mut h, &proc);
                fs::read_link(proc.join("cwd")).ok().hash(&mut h);
            }
            // Seen by the git part: refs, HEAD, the admin directory.
            AtRisk::UnmergedCommits { .. }
            | AtRisk::OperationInProgress { .. }
            | AtRisk::Locked { .. }
            | AtRisk::BranchDeleted { .. } => {}
            AtRisk::Submodule { .. }
            | AtRisk::MountPoint { .. }
            | AtRisk::NotAWorktree { .. }
            | AtRisk::PreflightFailed { .. }
            | AtRisk::UnsafeRepository { .. } => return None,
            AtRisk::ChangedDuringRemoval { .. } => return None,
        }
    }
    Some(h.finish())
}

/// Both parts at once, as a reuse check reads them.
pub fn fingerprint(wt: &Path, reasons: &[AtRisk]) -> Option<Fingerprint> {
    fingerprint_with(wt, reasons, &refs_state)
}

/// [`fingerprint`] with the main repository's part from `refs`.
pub fn fingerprint_with(
    wt: &Path,
    reasons: &[AtRisk],
    refs: &dyn Fn(&Path) -> u64,
) -> Option<Fingerprint> {
    Some(Fingerprint {
        git: git_state_with(wt, refs)?,
        findings: findings(wt, reasons)?,
    })
}

/// A finding at `rel` (relative to the worktree, as git names it): the
/// path, and each directory down to it with its `.gitignore`. A path that
/// climbs out is not a finding this can watch.
fn finding(h: &mut DefaultHasher, wt: &Path, rel: &str) -> Option<()> {
    let rel = Path::new(rel.trim_end_matches('/'));
    if rel
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return None;
    }
    rel.hash(h);
    let mut dir = wt.to_path_buf();
    for c in rel.parent().into_iter().flat_map(Path::components) {
        dir.push(c);
        stamp(h, &dir);
        stamp(h, &dir.join(".gitignore"));
    }
    stamp(h, &wt.join(rel));
    Some(())
}

/// What `lstat` says of `path` that changes when it is written, replaced,
/// renamed, chmod'ed or removed (a directory: when an entry in it is).
fn stamp(h: &mut DefaultHasher, path: &Path) {
    match fs::symlink_metadata(path) {
        Ok(m) => (
            m.dev(),
            m.ino(),
            m.mode(),
            m.size(),
            m.mtime(),
            m.mtime_nsec(),
            m.ctime(),
            m.ctime_nsec(),
        )
            .hash(h),
        Err(e) => e.kind().hash(h),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::git::testutil::*;

    fn untracked(p: &str) -> Vec<AtRisk> {
        vec![AtRisk::Untracked {
            count: 1,
            paths: vec![p.into()],
        }]
    }

    #[test]
    fn a_finding_that_goes_changes_the_fingerprint_and_nothing_else_does() {
        let f = Fixture::new();
        let wt = f.worktree("w1", "boo/w1");
        std::fs::create_dir_all(wt.join("a/b")).unwrap();
        std::fs::write(wt.join("a/b/notes.txt"), "draft\n").unwrap();
        let reasons = untracked("a/b/notes.txt");
        let before = fingerprint(&wt, &reasons).expect("covered");
        assert_eq!(fingerprint(&wt, &reasons), Some(before), "stable");
        std::fs::remove_file(wt.join("a/b/notes.txt")).unwrap();
        assert_ne!(fingerprint(&wt, &reasons), Some(before));
    }

    #[test]
    fn an_ignore_rule_added_beside_a_finding_changes_the_fingerprint() {
        let f = Fixture::new();
        let wt = f.worktree("w1", "boo/w1");
        std::fs::create_dir_all(wt.join("a")).unwrap();
        std::fs::write(wt.join("a/x.log"), "log\n").unwrap();
        let reasons = untracked("a/x.log");
        let before = fingerprint(&wt, &reasons).unwrap();
        std::fs::write(wt.join("a/.gitignore"), "*.log\n").unwrap();
        assert_ne!(fingerprint(&wt, &reasons), Some(before));
    }

    #[test]
    fn a_commit_or_a_ref_moved_in_the_main_repository_changes_the_git_part() {
        let f = Fixture::new();
        let wt = f.worktree("w1", "boo/w1");
        let before = git_state(&wt).expect("readable links");
        assert_eq!(git_state(&wt), Some(before));
        write(&wt.join("new.txt"), "x\n");
        f.commit_all(&wt, "work");
        let committed = git_state(&wt).unwrap();
        assert_ne!(committed, before, "a commit in the worktree");
        f.git(&f.repo, &["branch", "elsewhere"]);
        assert_ne!(
            git_state(&wt),
            Some(committed),
            "a ref created in the main repository"
        );
        let unlocked = git_state(&wt).unwrap();
        f.git(&f.repo, &["worktree", "lock", wt.to_str().unwrap()]);
        assert_ne!(git_state(&wt), Some(unlocked), "a lock");
    }

    #[test]
    fn a_repositorys_refs_are_read_once_per_pass_and_again_at_the_next() {
        let f = Fixture::new();
        let wt = f.worktree("w1", "boo/w1");
        let common = f.repo.join(".git");
        let v = KeptVerdicts::new(Duration::from_secs(600));
        let first = v.refs_stamp(&common, 1);
        assert_eq!(first, refs_state(&common));
        f.git(&f.repo, &["branch", "elsewhere"]);
        assert_ne!(refs_state(&common), first, "a new branch moves the stamp");
        assert_eq!(v.refs_stamp(&common, 1), first, "read once in pass 1");
        assert_eq!(
            v.refs_stamp(&common, 2),
            refs_state(&common),
            "read again in pass 2"
        );
        let via = |pass| git_state_with(&wt, &|c: &Path| v.refs_stamp(c, pass));
        assert_eq!(via(2), git_state(&wt), "the cached part is the same part");
        let other = f.worktree("w2", "boo/w2");
        let spelled = std::cell::RefCell::new(Vec::new());
        for w in [&wt, &other] {
            git_state_with(w, &|c: &Path| {
                spelled.borrow_mut().push(c.to_path_buf());
                0
            });
        }
        let spelled = spelled.into_inner();
        assert_eq!(
            spelled[0], spelled[1],
            "one key per repository: {spelled:?}"
        );
        assert_eq!(
            fs::canonicalize(&spelled[0]).unwrap(),
            fs::canonicalize(&common).unwrap()
        );
    }

    #[test]
    fn reasons_it_cannot_see_are_never_covered() {
        let f = Fixture::new();
        let wt = f.worktree("w1", "boo/w1");
        for r in [
            AtRisk::PreflightFailed { error: "x".into() },
            AtRisk::MountPoint { path: "m".into() },
            AtRisk::Submodule {
                path: "s".into(),
                detail: "d".into(),
            },
        ] {
            assert_eq!(fingerprint(&wt, std::slice::from_ref(&r)), None, "{r:?}");
        }
        assert_eq!(
            fingerprint(&wt, &untracked("../outside")),
            None,
            "a path that climbs out"
        );
    }

    #[test]
    fn a_verdict_is_reused_only_within_the_recheck_interval() {
        let fp = Fingerprint {
            git: 1,
            findings: 2,
        };
        let dir = Path::new("/x/w1");
        let v = KeptVerdicts::new(Duration::from_secs(600));
        v.remember(
            dir,
            Some(fp),
            &untracked("a"),
            Some(4096),
            SystemTime::now(),
        );
        let c = v.candidate(dir).expect("fresh");
        assert_eq!(c.bytes, Some(4096), "what it costs comes with the verdict");
        assert!(c.still(Some(fp)));
        assert!(!c.still(Some(Fingerprint { git: 9, ..fp })));
        assert!(!c.still(None));
        v.forget(dir);
        assert!(v.candidate(dir).is_none());
        let never = KeptVerdicts::new(Duration::ZERO);
        never.remember(
            dir,
            Some(fp),
            &untracked("a"),
            Some(4096),
            SystemTime::now(),
        );
        assert!(never.candidate(dir).is_none(), "interval passed");
        v.remember(dir, None, &untracked("a"), Some(4096), SystemTime::now());
        assert!(
            v.candidate(dir).is_none(),
            "uncovered verdicts are not kept"
        );
    }

    #[test]
    fn a_worktree_the_fingerprint_cannot_cover_is_walked_once_per_interval() {
        let dir = Path::new("/x/w1");
        let walks = std::cell::Cell::new(0);
        let walk = || {
            walks.set(walks.get() + 1);
            100 * walks.get() as u64
        };
        let v = KeptVerdicts::new(Duration::from_secs(600));
        assert_eq!(v.bytes(dir, false, walk), 100);
        assert_eq!(v.bytes(dir, false, walk), 100, "the last measure stands");
        assert_eq!(walks.get(), 1);
        // A covered verdict is measured each time it is reached (once per
        // change), and its measure replaces the stand-in.
        assert_eq!(v.bytes(dir, true, walk), 200);
        assert_eq!(v.bytes(dir, false, walk), 300);
        assert_eq!(walks.get(), 3);
        let every = KeptVerdicts::new(Duration::ZERO);
        every.bytes(dir, false, walk);
        every.bytes(dir, false, walk);
        assert_eq!(walks.get(), 5, "the interval passed: walked again");
    }
}
