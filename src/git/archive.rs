//! Force preserves: the full state of a worktree committed under
//! `refs/boo/archive/<worktree id>/<unix seconds>` before removal.
//!
//! The archive is shaped like a `git stash push --include-untracked`
//! commit, so that in a fresh worktree checked out (detached) at the ref's
//! first parent, `git stash apply --index <ref>` brings every file back
//! byte for byte, with its executable bit or symlink target:
//!
//! * `W` (the ref): tree = the working tree's tracked files as they are on
//!   disk (including assume-unchanged files, whose changes `git stash`
//!   would miss, and skip-worktree files, taken from the index when absent
//!   as sparse checkout leaves them); parents `H`, `I` and, when there are
//!   untracked or precious files, `U`.
//! * `H`: HEAD's commit, also when detached. When HEAD names a branch that
//!   no longer exists, the newest commit of the worktree's HEAD reflog (the
//!   commit the branch last pointed at here), which keeps the orphaned
//!   commits reachable. When there is no such commit (an unborn branch), a
//!   parentless commit of the empty tree stands in for it.
//! * `I`: tree = the index, parent `H`. A conflicted path is stored as its
//!   working-tree file (with the conflict markers), or left out if that
//!   file is absent: `git stash` refuses to stash a conflicted index, and
//!   the stages themselves come from commits that refs keep. Intent-to-add
//!   entries are not staged content and are left out of `I` (their file is
//!   in `W`).
//! * `U`: parentless, tree = untracked files, ignored files matching the
//!   precious globs, and the working files of nested repositories and of
//!   submodules with uncommitted changes (below their paths).
//!
//! Nested repositories and submodules whose HEAD or local branches hold
//! commits that none of their remote-tracking refs reaches are also fetched
//! into the main repository: `HEAD` to `<ref>-nested/<n>` and local
//! branches to `<ref>-nested/<n>-heads/<branch>` (`n` counts the nested
//! repositories and submodules of the worktree from 0, in path order).
//!
//! File contents are stored raw (no clean filters), which is what
//! "byte for byte" means. Trees are built in memory (`git2::Index::new`);
//! the worktree's index file, its branch, `refs/stash` and every other ref
//! are left alone. Operation state files (a rebase's todo list, `MERGE_HEAD`)
//! are not archived, only their effect on files and HEAD.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::SystemTime;

use git2::{
    AutotagOption, Commit, ErrorCode, FetchOptions, Index, IndexEntry, IndexTime, ObjectType, Oid,
    Repository, Signature, Time,
};
use globset::GlobSet;

use super::mode::{EXEC, GITLINK, INTENT_TO_ADD, REGULAR, SKIP_WORKTREE, STAGE_MASK, SYMLINK};
use super::paths::{
    common_dir_of_admin, dot_git, has_dot_git, is_inside, join_rel, open_exact, ref_component,
    rel_str, DotGit,
};
use super::reach::{ref_tips, unreachable};
use super::scan::scan;
use super::GitError;

/// Where an archived state was stored in the main repository.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Archived {
    pub reference: String,
    pub commit: String,
}

/// The identity of every commit the reconciler writes.
pub const ARCHIVE_NAME: &str = "boo-reconciler";
pub const ARCHIVE_EMAIL: &str = "boo-reconciler@localhost";

const MAX_NESTING: usize = 8;

pub(crate) fn unix_secs(now: SystemTime) -> u64 {
    now.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Creates `base` (or `base-1`, `base-2`, … when it exists) pointing at
/// `id`, never overwriting. Returns the name created.
pub(crate) fn create_archive_ref(
    repo: &Repository,
    base: &str,
    id: Oid,
    msg: &str,
) -> Result<String, git2::Error> {
    for n in 0..10_000u32 {
        let name = if n == 0 {
            base.to_string()
        } else {
            format!("{base}-{n}")
        };
        match repo.reference(&name, id, false, msg) {
            Ok(_) => return Ok(name),
            Err(e) if e.code() == ErrorCode::Exists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(git2::Error::from_str("no free archive ref name"))
}

/// The newest commit HEAD's reflog recorded, if the reflog has one that
/// still exists.
fn reflog_head(repo: &Repository) -> Option<Oid> {
    let log = repo.reflog("HEAD").ok()?;
    log.iter()
        .map(|e| e.id_new())
        .find(|id| !id.is_zero())
        .filter(|id| repo.find_commit(*id).is_ok())
}

/// Commits of HEAD and the local branches of `repo` that no
/// remote-tracking ref reaches.
fn local_only_commits(repo: &Repository) -> Result<usize, git2::Error> {
    let mut tips = Vec::new();
    if let Ok(c) = repo.head().and_then(|h| h.peel_to_commit()) {
        tips.push(c.id());
    }
    tips.extend(ref_tips(repo, &|n| !n.starts_with("refs/heads/"))?);
    let hide = ref_tips(repo, &|n| !n.starts_with("refs/remotes/"))?;
    Ok(unreachable(repo, &tips, &hide)?.len())
}

fn entry(path: &[u8], id: Oid, mode: u32) -> IndexEntry {
    IndexEntry {
        ctime: IndexTime::new(0, 0),
        mtime: IndexTime::new(0, 0),
        dev: 0,
        ino: 0,
        mode,
        uid: 0,
        gid: 0,
        file_size: 0,
        id,
        flags: 0,
        flags_extended: 0,
        path: path.to_vec(),
    }
}

/// Writes the file or symlink at `path` as a blob, raw. `None` when there
/// is no file or symlink there (absent, a directory, a fifo…).
/// `tracked_mode` is the index mode, kept for regular files when
/// `core.fileMode` is false.
fn workdir_blob(
    repo: &Repository,
    path: &Path,
    tracked_mode: Option<u32>,
    filemode: bool,
) -> io::Result<Option<(Oid, u32)>> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if meta.file_type().is_symlink() {
        let target = fs::read_link(path)?;
        let id = repo
            .blob(target.as_os_str().as_bytes())
            .map_err(io::Error::other)?;
        return Ok(Some((id, SYMLINK)));
    }
    if !meta.is_file() {
        return Ok(None);
    }
    let mode = if filemode {
        if meta.permissions().mode() & 0o100 != 0 {
            EXEC
        } else {
            REGULAR
        }
    } else {
        match tracked_mode {
            Some(m @ (EXEC | REGULAR)) => m,
            _ => REGULAR,
        }
    };
    let odb = repo.odb().map_err(io::Error::other)?;
    let mut file = fs::File::open(path)?;
    let mut w = odb
        .writer(meta.len() as usize, ObjectType::Blob)
        .map_err(io::Error::other)?;
    io::copy(&mut file, &mut w)?;
    let id = w.finalize().map_err(io::Error::other)?;
    Ok(Some((id, mode)))
}

/// Builds trees for one archive, reporting errors against the worktree.
struct Builder<'a> {
    repo: &'a Repository,
    worktree: &'a Path,
    filemode: bool,
}

impl Builder<'_> {
    fn git(&self, op: &'static str) -> impl Fn(git2::Error) -> GitError + '_ {
        move |source| GitError::Op {
            op,
            path: self.worktree.to_path_buf(),
            source,
        }
    }

    fn io(&self, path: &Path) -> impl Fn(io::Error) -> GitError + '_ {
        let path = path.to_path_buf();
        move |e| GitError::Invalid {
            path: path.clone(),
            detail: format!("cannot archive: {e}"),
        }
    }

    /// Adds the file at `dir/rel` to `idx` as `prefix/rel`; a vanished file
    /// is skipped (it holds nothing any more).
    fn add_file(
        &self,
        idx: &mut Index,
        dir: &Path,
        prefix: &[u8],
        rel: &[u8],
    ) -> Result<(), GitError> {
        let full = join_rel(dir, rel);
        if let Some((id, mode)) =
            workdir_blob(self.repo, &full, None, self.filemode).map_err(self.io(&full))?
        {
            idx.add(&entry(&prefixed(prefix, rel), id, mode))
                .map_err(self.git("index add"))?;
        }
        Ok(())
    }

    /// Adds every file worth keeping of the repository (or plain directory)
    /// at `dir` to `idx` below `prefix`: its tracked files as on disk,
    /// untracked and precious ignored files, and recursively its nested
    /// repositories and submodules. `.git` is never included.
    fn add_repo_files(
        &self,
        idx: &mut Index,
        dir: &Path,
        prefix: &[u8],
        precious: &GlobSet,
        depth: usize,
    ) -> Result<(), GitError> {
        let repo = match open_exact(dir) {
            Ok(r) if r.workdir().is_some() && depth < MAX_NESTING => r,
            _ => return self.add_plain_dir(idx, dir, prefix),
        };
        let index = repo.index().map_err(self.git("nested index"))?;
        let mut tracked: BTreeSet<Vec<u8>> = BTreeSet::new();
        let mut gitlinks: BTreeSet<Vec<u8>> = BTreeSet::new();
        for e in index.iter() {
            if e.mode == GITLINK {
                gitlinks.insert(e.path.clone());
            } else {
                tracked.insert(e.path.clone());
            }
        }
        let s = scan(&repo, precious, false).map_err(|e| GitError::Invalid {
            path: dir.to_path_buf(),
            detail: format!("cannot archive nested repository: {e}"),
        })?;
        tracked.extend(s.untracked);
        tracked.extend(s.precious);
        for rel in &tracked {
            self.add_file(idx, dir, prefix, rel)?;
        }
        for rel in gitlinks.iter().chain(s.nested.iter()) {
            let sub = join_rel(dir, rel);
            if sub.is_dir() {
                self.add_repo_files(idx, &sub, &prefixed(prefix, rel), precious, depth + 1)?;
            }
        }
        Ok(())
    }

    /// Adds every file below `dir` except `.git` entries.
    fn add_plain_dir(&self, idx: &mut Index, dir: &Path, prefix: &[u8]) -> Result<(), GitError> {
        let walk = walkdir::WalkDir::new(dir)
            .follow_links(false)
            .sort_by_file_name()
            .min_depth(1)
            .into_iter()
            .filter_entry(|e| e.file_name() != ".git");
        for e in walk {
            let e = e.map_err(|e| GitError::Invalid {
                path: dir.to_path_buf(),
                detail: format!("cannot archive: {e}"),
            })?;
            let ft = e.file_type();
            if !(ft.is_file() || ft.is_symlink()) {
                continue;
            }
            let rel = e.path().strip_prefix(dir).unwrap_or(e.path());
            self.add_file(idx, dir, prefix, rel.as_os_str().as_bytes())?;
        }
        Ok(())
    }
}

fn prefixed(prefix: &[u8], rel: &[u8]) -> Vec<u8> {
    if prefix.is_empty() {
        return rel.to_vec();
    }
    let mut p = prefix.to_vec();
    p.push(b'/');
    p.extend_from_slice(rel);
    p
}

/// Fetches the HEAD and local branches of the repository at `dir` into
/// `main` below `refname`.
fn fetch_nested(main: &Repository, dir: &Path, refname: &str) -> Result<(), git2::Error> {
    let nested = open_exact(dir)?;
    let url = dir
        .to_str()
        .ok_or_else(|| git2::Error::from_str("nested repository path is not UTF-8"))?;
    let mut specs = vec![format!("+refs/heads/*:{refname}-heads/*")];
    if nested.head().and_then(|h| h.peel_to_commit()).is_ok() {
        specs.push(format!("+HEAD:{refname}"));
    }
    let mut remote = main.remote_anonymous(url)?;
    let mut fo = FetchOptions::new();
    fo.update_fetchhead(false)
        .download_tags(AutotagOption::None);
    remote.fetch(
        &specs,
        Some(&mut fo),
        Some("boo-reconciler: archive nested repository"),
    )?;
    Ok(())
}

/// The ref an archive of `worktree_id` made at `now` is written to
/// (`-<n>` is appended when it exists already): what the write-ahead
/// intent of a force names before the archive is made.
pub fn archive_ref_base(worktree_id: &str, now: SystemTime) -> String {
    format!(
        "refs/boo/archive/{}/{}",
        ref_component(worktree_id),
        unix_secs(now)
    )
}

/// Commits the full state of `worktree` (index, working tree, untracked and
/// precious ignored files, HEAD) to an archive ref in its main repository.
pub fn archive(
    worktree: &Path,
    worktree_id: &str,
    now: SystemTime,
    precious: &GlobSet,
) -> Result<Archived, GitError> {
    let invalid = |detail: String| GitError::Invalid {
        path: worktree.to_path_buf(),
        detail,
    };
    let admin = match dot_git(worktree) {
        DotGit::File { gitdir } => gitdir,
        DotGit::Directory => return Err(invalid(
            "a standalone repository: an archive ref would live inside the directory being removed"
                .into(),
        )),
        DotGit::Missing => return Err(invalid("not a git worktree (no .git)".into())),
        DotGit::Broken { detail } => return Err(invalid(detail)),
    };
    let common = common_dir_of_admin(&admin).ok_or_else(|| {
        invalid(format!(
            "{} is not a linked worktree's git directory",
            admin.display()
        ))
    })?;
    if is_inside(&common, worktree) {
        return Err(invalid(
            "the main repository lives inside the worktree; an archive there would be removed with it"
                .into(),
        ));
    }
    let repo = open_exact(worktree).map_err(|source| GitError::Open {
        path: worktree.to_path_buf(),
        source,
    })?;
    let main = open_exact(&common).map_err(|source| GitError::Open {
        path: common.clone(),
        source,
    })?;
    let workdir = repo
        .workdir()
        .ok_or_else(|| invalid("no working directory".into()))?
        .to_path_buf();
    let filemode = repo
        .config()
        .and_then(|c| c.get_bool("core.filemode"))
        .unwrap_or(true);
    let b = Builder {
        repo: &repo,
        worktree,
        filemode,
    };
    let secs = unix_secs(now);
    let sig = Signature::new(ARCHIVE_NAME, ARCHIVE_EMAIL, &Time::new(secs as i64, 0))
        .map_err(b.git("signature"))?;

    // H
    let head_ref = repo.find_reference("HEAD").map_err(b.git("read HEAD"))?;
    let (head, label) = match head_ref.symbolic_target().map_err(b.git("read HEAD"))? {
        Some(t) => {
            let short = t.strip_prefix("refs/heads/").unwrap_or(t).to_string();
            match repo.refname_to_id(t) {
                Ok(id) => (Some(id), short),
                Err(_) => (reflog_head(&repo), format!("{short} (deleted)")),
            }
        }
        None => (
            Some(head_ref.peel_to_commit().map_err(b.git("read HEAD"))?.id()),
            "(no branch)".to_string(),
        ),
    };
    let head: Commit<'_> = match head {
        Some(id) => repo.find_commit(id).map_err(b.git("read HEAD commit"))?,
        None => {
            let empty = Index::new()
                .and_then(|mut i| i.write_tree_to(&repo))
                .map_err(b.git("write empty tree"))?;
            let tree = repo.find_tree(empty).map_err(b.git("write empty tree"))?;
            let id = repo
                .commit(
                    None,
                    &sig,
                    &sig,
                    &format!("boo-reconciler: unborn HEAD of {worktree_id} ({label})"),
                    &tree,
                    &[],
                )
                .map_err(b.git("commit"))?;
            repo.find_commit(id).map_err(b.git("commit"))?
        }
    };
    let on = format!(
        "{label}: {} {}",
        &head.id().to_string()[..7],
        head.summary().ok().flatten().unwrap_or("")
    );

    // I: the index, conflicts resolved to the working-tree file.
    let index = repo.index().map_err(b.git("read index"))?;
    let mut i_idx = Index::new().map_err(b.git("index"))?;
    let mut conflicted: BTreeSet<Vec<u8>> = BTreeSet::new();
    let mut skip_worktree: BTreeSet<Vec<u8>> = BTreeSet::new();
    let mut intent_to_add: Vec<(Vec<u8>, u32)> = Vec::new();
    for e in index.iter() {
        if e.flags & STAGE_MASK != 0 {
            conflicted.insert(e.path.clone());
            continue;
        }
        if e.flags_extended & INTENT_TO_ADD != 0 {
            intent_to_add.push((e.path.clone(), e.mode));
            continue;
        }
        if e.flags_extended & SKIP_WORKTREE != 0 {
            skip_worktree.insert(e.path.clone());
        }
        i_idx
            .add(&entry(&e.path, e.id, e.mode))
            .map_err(b.git("index add"))?;
    }
    for path in &conflicted {
        let full = join_rel(&workdir, path);
        if let Some((id, mode)) = workdir_blob(&repo, &full, None, filemode).map_err(b.io(&full))? {
            i_idx
                .add(&entry(path, id, mode))
                .map_err(b.git("index add"))?;
        }
    }
    let i_tree = i_idx
        .write_tree_to(&repo)
        .map_err(b.git("write index tree"))?;

    // W: tracked files as on disk.
    let mut w_idx = Index::new().map_err(b.git("index"))?;
    let tracked: Vec<(Vec<u8>, Oid, u32)> = i_idx
        .iter()
        .map(|e| (e.path.clone(), e.id, e.mode))
        .chain(
            intent_to_add
                .iter()
                .map(|(p, m)| (p.clone(), Oid::ZERO_SHA1, *m)),
        )
        .collect();
    for (path, id, mode) in tracked {
        let full = join_rel(&workdir, &path);
        if mode == GITLINK {
            let at = open_exact(&full)
                .ok()
                .and_then(|r| {
                    r.head()
                        .and_then(|h| h.peel_to_commit())
                        .ok()
                        .map(|c| c.id())
                })
                .unwrap_or(id);
            w_idx
                .add(&entry(&path, at, GITLINK))
                .map_err(b.git("index add"))?;
            continue;
        }
        match workdir_blob(&repo, &full, Some(mode), filemode).map_err(b.io(&full))? {
            Some((id, mode)) => w_idx
                .add(&entry(&path, id, mode))
                .map_err(b.git("index add"))?,
            None if skip_worktree.contains(&path) && fs::symlink_metadata(&full).is_err() => w_idx
                .add(&entry(&path, id, mode))
                .map_err(b.git("index add"))?,
            None => {} // deleted, or now a directory (its files are untracked)
        }
    }
    let w_tree = w_idx
        .write_tree_to(&repo)
        .map_err(b.git("write worktree tree"))?;

    // U: untracked, precious ignored, nested repositories, dirty submodules.
    let s = scan(&repo, precious, false).map_err(|e| invalid(format!("cannot archive: {e}")))?;
    let mut u_idx = Index::new().map_err(b.git("index"))?;
    for rel in s.untracked.iter().chain(s.precious.iter()) {
        b.add_file(&mut u_idx, &workdir, b"", rel)?;
    }
    let mut nested_repos: Vec<Vec<u8>> = Vec::new();
    for rel in &s.nested {
        let dir = join_rel(&workdir, rel);
        b.add_repo_files(&mut u_idx, &dir, rel, precious, 1)?;
        nested_repos.push(rel.clone());
    }
    for e in index.iter() {
        if e.mode != GITLINK || e.flags & STAGE_MASK != 0 {
            continue;
        }
        let dir = join_rel(&workdir, &e.path);
        if !has_dot_git(&dir) {
            continue;
        }
        let Ok(sub) = open_exact(&dir) else { continue };
        let dirty = scan(&sub, precious, false)
            .map(|s| {
                !(s.staged.is_empty()
                    && s.unstaged.is_empty()
                    && s.untracked.is_empty()
                    && s.conflicts.is_empty()
                    && s.precious.is_empty()
                    && s.nested.is_empty())
            })
            .unwrap_or(true);
        if dirty {
            b.add_repo_files(&mut u_idx, &dir, &e.path, precious, 1)?;
        }
        nested_repos.push(e.path.clone());
    }
    nested_repos.sort();
    nested_repos.dedup();
    let u_commit = if u_idx.is_empty() {
        None
    } else {
        let u_tree = u_idx
            .write_tree_to(&repo)
            .map_err(b.git("write untracked tree"))?;
        let tree = repo
            .find_tree(u_tree)
            .map_err(b.git("write untracked tree"))?;
        let id = repo
            .commit(
                None,
                &sig,
                &sig,
                &format!("untracked files on {on}"),
                &tree,
                &[],
            )
            .map_err(b.git("commit"))?;
        Some(repo.find_commit(id).map_err(b.git("commit"))?)
    };

    let i_commit = {
        let tree = repo.find_tree(i_tree).map_err(b.git("write index tree"))?;
        let id = repo
            .commit(None, &sig, &sig, &format!("index on {on}"), &tree, &[&head])
            .map_err(b.git("commit"))?;
        repo.find_commit(id).map_err(b.git("commit"))?
    };
    let w_commit = {
        let tree = repo
            .find_tree(w_tree)
            .map_err(b.git("write worktree tree"))?;
        let mut parents = vec![&head, &i_commit];
        if let Some(u) = &u_commit {
            parents.push(u);
        }
        let msg = format!(
            "WIP on {on}\n\nboo-reconciler archive of worktree {worktree_id} ({}) at {secs}\n",
            worktree.display()
        );
        repo.commit(None, &sig, &sig, &msg, &tree, &parents)
            .map_err(b.git("commit"))?
    };

    // Objects written, no ref yet: a crash here leaves unreachable objects
    // (git gc's) and the worktree untouched.
    crate::crash_point!("archive.midway");
    let base = archive_ref_base(worktree_id, now);
    let reference = create_archive_ref(
        &main,
        &base,
        w_commit,
        &format!("boo-reconciler: archive of worktree {worktree_id}"),
    )
    .map_err(b.git("create archive ref"))?;

    for (n, rel) in nested_repos.iter().enumerate() {
        let dir = join_rel(&workdir, rel);
        let Ok(nested) = open_exact(&dir) else {
            continue;
        };
        let unpushed = local_only_commits(&nested).map_err(|source| GitError::Op {
            op: "nested commits",
            path: dir.clone(),
            source,
        })?;
        if unpushed == 0 {
            continue;
        }
        fetch_nested(&main, &dir, &format!("{reference}-nested/{n}")).map_err(|source| {
            GitError::Op {
                op: "fetch nested repository",
                path: dir.clone(),
                source,
            }
        })?;
        tracing::info!(
            nested = %rel_str(rel),
            reference = %format!("{reference}-nested/{n}"),
            "archived nested repository commits"
        );
    }

    super::owner::hand_back(&common).map_err(|e| {
        invalid(format!(
            "cannot hand what the archive wrote back to the repository's owner: {e}"
        ))
    })?;
    Ok(Archived {
        reference,
        commit: w_commit.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::fs;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::{symlink, PermissionsExt};
    use std::path::Path;
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::git::testutil::{precious, set_exec, write, Fixture};

    const NOW: u64 = 1_700_000_000;

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(NOW)
    }

    #[derive(Debug, PartialEq, Eq)]
    enum Node {
        File { bytes: Vec<u8>, exec: bool },
        Symlink(Vec<u8>),
    }

    /// Every file and symlink below `dir`, except `.git` and the paths
    /// `skip` names (top-level entries).
    fn files(dir: &Path, skip: &[&str]) -> BTreeMap<String, Node> {
        let mut out = BTreeMap::new();
        let walk = walkdir::WalkDir::new(dir)
            .min_depth(1)
            .follow_links(false)
            .into_iter()
            .filter_entry(|e| {
                let rel = e.path().strip_prefix(dir).unwrap();
                e.file_name() != ".git" && !skip.iter().any(|s| rel == Path::new(s))
            });
        for e in walk {
            let e = e.unwrap();
            let rel = e
                .path()
                .strip_prefix(dir)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let ft = e.file_type();
            if ft.is_symlink() {
                let t = fs::read_link(e.path()).unwrap();
                out.insert(rel, Node::Symlink(t.as_os_str().as_bytes().to_vec()));
            } else if ft.is_file() {
                let m = fs::metadata(e.path()).unwrap();
                out.insert(
                    rel,
                    Node::File {
                        bytes: fs::read(e.path()).unwrap(),
                        exec: m.permissions().mode() & 0o100 != 0,
                    },
                );
            }
        }
        out
    }

    fn exists(f: &Fixture, oid: &str) -> bool {
        f.try_git(&f.repo, &["cat-file", "-e", oid])
            .status
            .success()
    }

    #[test]
    fn archive_restores_everything_byte_for_byte_and_survives_gc() {
        let f = Fixture::new();
        write(&f.repo.join("tool.sh"), "#!/bin/sh\necho hi\n");
        write(&f.repo.join("both.txt"), "base\n");
        symlink("README", f.repo.join("tracked-link")).unwrap();
        f.commit_all(&f.repo, "more files");
        // A stash of the user's in the main repository, which must stay.
        write(&f.repo.join("README"), "stashed by the user\n");
        f.git(&f.repo, &["stash", "-q"]);
        let stash_before = f.rev(&f.repo, "refs/stash");

        let wt = f.worktree("w", "b");
        f.git(&wt, &["checkout", "-q", "--detach"]);
        write(&wt.join("detached.txt"), "committed on a detached HEAD\n");
        let detached = f.commit_all(&wt, "detached work");

        // staged
        write(&wt.join("README"), "staged content\n");
        f.git(&wt, &["add", "README"]);
        // staged, then changed again (index differs from HEAD and file)
        write(&wt.join("both.txt"), "staged\n");
        f.git(&wt, &["add", "both.txt"]);
        write(&wt.join("both.txt"), "staged\nand unstaged\n");
        // unstaged, deleted, exec bit, retargeted symlink
        write(&wt.join("lib.txt"), "one\n2\nthree\n");
        fs::remove_file(wt.join("detached.txt")).unwrap();
        set_exec(&wt.join("tool.sh"));
        fs::remove_file(wt.join("tracked-link")).unwrap();
        symlink("lib.txt", wt.join("tracked-link")).unwrap();
        // untracked: a file, an executable, a symlink, binary bytes
        write(&wt.join("notes/todo.md"), "- untracked\n");
        write(&wt.join("run.sh"), "#!/bin/sh\n");
        set_exec(&wt.join("run.sh"));
        symlink("../README", wt.join("notes/up")).unwrap();
        fs::write(wt.join("blob.bin"), [0u8, 159, 146, 150, 255, b'\n', b'\r']).unwrap();
        // a staged new file
        write(&wt.join("added.txt"), "added\n");
        f.git(&wt, &["add", "added.txt"]);
        // precious ignored, and build output that is not kept
        write(&wt.join(".env"), "SECRET=1\n");
        write(&wt.join("config/.env.local"), "SECRET=2\n");
        write(&wt.join("target/debug/app"), "build output\n");

        let index_path = f.repo.join(".git/worktrees/w/index");
        let index_before = fs::read(&index_path).unwrap();
        let refs_before = f.git(&f.repo, &["for-each-ref"]);
        let status_before = f.git(&wt, &["status", "--porcelain", "--ignored"]);
        let head_before = f.rev(&wt, "HEAD");
        let original = files(&wt, &["target"]);

        let a = archive(&wt, "w", now(), &precious()).unwrap();
        assert_eq!(a.reference, format!("refs/boo/archive/w/{NOW}"));
        assert_eq!(f.rev(&f.repo, &a.reference), a.commit);
        assert_eq!(f.rev(&f.repo, &format!("{}^1", a.reference)), detached);
        assert_eq!(
            f.git(&f.repo, &["log", "-1", "--format=%an <%ae> %at", &a.commit]),
            format!("boo-reconciler <boo-reconciler@localhost> {NOW}")
        );

        // Nothing of the user's changed.
        assert_eq!(fs::read(&index_path).unwrap(), index_before);
        let refs_after = f.git(&f.repo, &["for-each-ref"]);
        let refs_after: Vec<&str> = refs_after
            .lines()
            .filter(|l| !l.contains("refs/boo/"))
            .collect();
        assert_eq!(refs_after, refs_before.lines().collect::<Vec<_>>());
        assert_eq!(f.rev(&f.repo, "refs/stash"), stash_before);
        assert_eq!(f.rev(&wt, "HEAD"), head_before);
        assert_eq!(
            f.git(&wt, &["status", "--porcelain", "--ignored"]),
            status_before
        );

        // A fresh worktree at the first parent gets it all back.
        let fresh = f.root.join("fresh");
        let base = format!("{}^1", a.reference);
        f.git(
            &f.repo,
            &[
                "worktree",
                "add",
                "-q",
                "--detach",
                fresh.to_str().unwrap(),
                &base,
            ],
        );
        f.git(&fresh, &["stash", "apply", "--index", &a.reference]);
        assert_eq!(files(&fresh, &[]), original);
        assert_eq!(
            f.git(&fresh, &["diff", "--cached", "--binary"]),
            f.git(&wt, &["diff", "--cached", "--binary"])
        );
        assert_eq!(
            f.git(&fresh, &["status", "--porcelain"]),
            f.git(&wt, &["status", "--porcelain"])
        );

        // Remove both worktrees; the archive ref alone keeps everything.
        let i = f.rev(&f.repo, &format!("{}^2", a.reference));
        let u = f.rev(&f.repo, &format!("{}^3", a.reference));
        for w in [&wt, &fresh] {
            fs::remove_dir_all(w).unwrap();
        }
        f.git(&f.repo, &["worktree", "prune"]);
        f.git(&f.repo, &["reflog", "expire", "--expire=now", "--all"]);
        f.git(&f.repo, &["gc", "-q", "--prune=now"]);
        for oid in [&a.commit, &detached, &i, &u] {
            assert!(exists(&f, oid), "{oid} lost by gc");
        }
        // Control: an unreferenced commit does not survive, so the check
        // above can fail.
        let tree = f.rev(&f.repo, "HEAD^{tree}");
        let dangling = f.git(&f.repo, &["commit-tree", "-m", "dangling", &tree]);
        f.git(&f.repo, &["gc", "-q", "--prune=now"]);
        assert!(!exists(&f, &dangling));
    }

    #[test]
    fn archive_of_a_clean_worktree_has_no_untracked_parent() {
        let f = Fixture::new();
        let wt = f.worktree("w", "b");
        let a = archive(&wt, "w", now(), &precious()).unwrap();
        assert_eq!(
            f.git(&f.repo, &["rev-list", "--parents", "-n1", &a.commit])
                .split(' ')
                .count(),
            3
        );
        assert_eq!(
            f.rev(&f.repo, &format!("{}^{{tree}}", a.reference)),
            f.rev(&f.repo, "main^{tree}")
        );
    }

    #[test]
    fn archive_never_overwrites_an_existing_ref() {
        let f = Fixture::new();
        let wt = f.worktree("w", "b");
        let a1 = archive(&wt, "w", now(), &precious()).unwrap();
        write(&wt.join("new.txt"), "x\n");
        let a2 = archive(&wt, "w", now(), &precious()).unwrap();
        let a3 = archive(&wt, "w", now(), &precious()).unwrap();
        assert_eq!(a1.reference, format!("refs/boo/archive/w/{NOW}"));
        assert_eq!(a2.reference, format!("refs/boo/archive/w/{NOW}-1"));
        assert_eq!(a3.reference, format!("refs/boo/archive/w/{NOW}-2"));
        assert_eq!(f.rev(&f.repo, &a1.reference), a1.commit);
        assert_ne!(a1.commit, a2.commit);
    }

    #[test]
    fn archive_keeps_hidden_changes_and_conflicts() {
        let f = Fixture::new();
        let wt = f.worktree("w", "b");
        f.git(&wt, &["update-index", "--assume-unchanged", "lib.txt"]);
        write(&wt.join("lib.txt"), "hidden change\n");
        write(&wt.join("README"), "ours\n");
        f.commit_all(&wt, "ours");
        write(&f.repo.join("README"), "theirs\n");
        f.commit_all(&f.repo, "theirs");
        assert!(!f.try_git(&wt, &["merge", "main"]).status.success());
        let conflicted = fs::read(wt.join("README")).unwrap();
        assert!(String::from_utf8_lossy(&conflicted).contains("<<<<<<<"));

        let a = archive(&wt, "w", now(), &precious()).unwrap();
        let show = |rev: &str| f.git(&f.repo, &["show", rev]);
        assert_eq!(show(&format!("{}:lib.txt", a.reference)), "hidden change");
        assert_eq!(
            show(&format!("{}:README", a.reference)).as_bytes(),
            String::from_utf8_lossy(&conflicted).trim_end().as_bytes()
        );
        assert_eq!(
            show(&format!("{}^2:README", a.reference)),
            show(&format!("{}:README", a.reference))
        );
    }

    #[test]
    fn archive_of_a_deleted_branch_keeps_its_commits() {
        let f = Fixture::new();
        let wt = f.worktree("w", "b");
        write(&wt.join("a.txt"), "a\n");
        let c = f.commit_all(&wt, "a");
        f.git(&f.repo, &["update-ref", "-d", "refs/heads/b"]);
        write(&wt.join("a.txt"), "a2\n");
        let a = archive(&wt, "w", now(), &precious()).unwrap();
        assert_eq!(f.rev(&f.repo, &format!("{}^1", a.reference)), c);
        assert_eq!(
            f.git(&f.repo, &["show", &format!("{}:a.txt", a.reference)]),
            "a2"
        );
        fs::remove_dir_all(&wt).unwrap();
        f.git(&f.repo, &["worktree", "prune"]);
        f.git(&f.repo, &["reflog", "expire", "--expire=now", "--all"]);
        f.git(&f.repo, &["gc", "-q", "--prune=now"]);
        assert!(exists(&f, &c));
    }

    #[test]
    fn archive_of_an_unborn_head_uses_an_empty_base() {
        let f = Fixture::new();
        let wt = f.root.join("w");
        f.git(
            &f.repo,
            &[
                "worktree",
                "add",
                "-q",
                "--orphan",
                "-b",
                "o",
                wt.to_str().unwrap(),
            ],
        );
        write(&wt.join("first.txt"), "first\n");
        let a = archive(&wt, "w", now(), &precious()).unwrap();
        let base = format!("{}^1", a.reference);
        assert_eq!(
            f.rev(&f.repo, &format!("{base}^{{tree}}")),
            "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
        );
        assert_eq!(
            f.git(&f.repo, &["show", &format!("{}^3:first.txt", a.reference)]),
            "first"
        );
    }

    #[test]
    fn archive_keeps_nested_repositories_files_and_commits() {
        let f = Fixture::new();
        let wt = f.worktree("w", "b");
        let nested = wt.join("vendor/lib");
        fs::create_dir_all(&nested).unwrap();
        f.git(&nested, &["init", "-q"]);
        write(&nested.join("x.txt"), "x\n");
        let head = f.commit_all(&nested, "nested work");
        write(&nested.join("x.txt"), "x changed\n");
        write(&nested.join("y.txt"), "untracked in nested\n");
        let a = archive(&wt, "w", now(), &precious()).unwrap();
        let show = |rev: String| f.git(&f.repo, &["show", &rev]);
        assert_eq!(
            show(format!("{}^3:vendor/lib/x.txt", a.reference)),
            "x changed"
        );
        assert_eq!(
            show(format!("{}^3:vendor/lib/y.txt", a.reference)),
            "untracked in nested"
        );
        assert!(
            f.try_git(
                &f.repo,
                &[
                    "cat-file",
                    "-e",
                    &format!("{}^3:vendor/lib/.git", a.reference)
                ]
            )
            .status
            .code()
                != Some(0)
        );
        assert_eq!(f.rev(&f.repo, &format!("{}-nested/0", a.reference)), head);
        assert_eq!(
            f.rev(&f.repo, &format!("{}-nested/0-heads/main", a.reference)),
            head
        );
    }

    #[test]
    fn archive_refuses_what_it_cannot_keep() {
        let f = Fixture::new();
        // A standalone repository would take its archive with it.
        let standalone = f.root.join("s");
        fs::create_dir(&standalone).unwrap();
        f.git(&standalone, &["init", "-q"]);
        assert!(archive(&standalone, "s", now(), &precious()).is_err());
        // A plain directory has no repository to archive into.
        let plain = f.root.join("p");
        write(&plain.join("f"), "x\n");
        assert!(archive(&plain, "p", now(), &precious()).is_err());
    }
}
