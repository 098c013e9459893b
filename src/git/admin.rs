//! A main repository's worktree admin entries (`.git/worktrees/<name>`).
//!
//! These functions read git's bookkeeping files by hand and never run
//! repository discovery upward: a directory under the worktree root must
//! not resolve to a repository that happens to enclose the root.
//!
//! # Guarantees
//! - An entry is stale only when its recorded directory is gone *and* no
//!   directory under the root points at it: a worktree moved by hand
//!   (`mv <root>/a <root>/b`) keeps its entry, which `<root>/b` needs
//!   ([`scan_entries`], test `admin_entry_of_a_moved_worktree_is_not_pruned`).
//! - [`prune_for`] refuses while the recorded directory exists.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use git2::{Oid, Repository};

use super::paths::{
    admin_entries, common_dir_of_admin, common_dir_of_repo, dot_git, is_inside, open_exact,
    read_head_file, same_location, spellings, workdir_of_common, AdminEntry, DotGit, HeadFile,
};
use super::GitError;
use crate::model::{MovedAdminEntry, StaleAdminEntry};

/// The main repository (its working directory) that the linked worktree at
/// `dir` belongs to, read from `dir/.git`; `None` if `dir` is not a linked
/// worktree.
///
/// `dir/.git` must be a file `gitdir: <repo>/.git/worktrees/<name>`; the
/// admin directory's `commondir` names the common git directory, and when
/// the admin directory is gone the layout `<common>/worktrees/<name>`
/// still tells. A `.git` file of a submodule (pointing at
/// `.git/modules/<name>`) is not a linked worktree. For a bare main
/// repository the common git directory itself is returned.
pub fn main_repository_of(dir: &Path) -> Option<PathBuf> {
    match dot_git(dir) {
        DotGit::File { gitdir } => main_repository_of_gitdir(&gitdir),
        _ => None,
    }
}

/// [`main_repository_of`] from the git directory a `.git` file names.
pub fn main_repository_of_gitdir(gitdir: &Path) -> Option<PathBuf> {
    common_dir_of_admin(gitdir).map(|c| workdir_of_common(&c))
}

fn invalid(path: &Path, detail: impl Into<String>) -> GitError {
    GitError::Invalid {
        path: path.to_path_buf(),
        detail: detail.into(),
    }
}

fn io_invalid(path: &Path, what: &str, e: io::Error) -> GitError {
    invalid(path, format!("{what}: {e}"))
}

/// Runs `f`, a write or a removal inside the repository whose common
/// directory is `common`, with the filesystem credentials of that
/// directory's owner ([`crate::creds`]): whatever the owner planted there
/// leads it only where the owner could go anyway.
fn as_owner_of<T: Send>(
    common: &Path,
    what: &str,
    f: impl FnOnce() -> T + Send,
) -> Result<T, GitError> {
    let who = crate::creds::owner_of(common).map_err(|e| io_invalid(common, what, e))?;
    crate::creds::with_fs_creds(who.as_ref(), f).map_err(|e| io_invalid(common, what, e))
}

/// Nothing is written to, or removed from, a repository whose own state
/// is reached through a symlink ([`super::links`]).
fn refuse_unsafe(common: &Path, admin: Option<&Path>) -> Result<(), GitError> {
    match super::links::unsafe_links(common, admin) {
        None => Ok(()),
        Some(detail) => Err(invalid(
            common,
            format!("unsafe repository, left alone: {detail}"),
        )),
    }
}

fn common_dir(repo: &Path) -> Result<PathBuf, GitError> {
    common_dir_of_repo(repo).ok_or_else(|| invalid(repo, "not a git repository"))
}

fn open_common(common: &Path) -> Result<Repository, GitError> {
    open_exact(common).map_err(|source| GitError::Open {
        path: common.to_path_buf(),
        source,
    })
}

/// What an admin entry's `HEAD` says, resolved in `repo`:
/// `(commit, branch)`. The commit is `None` when the branch does not exist
/// or the object is missing.
fn entry_head(repo: &Repository, entry: &AdminEntry) -> (Option<Oid>, Option<String>) {
    match read_head_file(&entry.dir.join("HEAD")) {
        Ok(HeadFile::Symbolic(r)) => {
            let id = repo.refname_to_id(&r).ok();
            let branch = r.strip_prefix("refs/heads/").unwrap_or(&r).to_string();
            (id, Some(branch))
        }
        Ok(HeadFile::Detached(id)) => (repo.find_commit(id).is_ok().then_some(id), None),
        Err(_) => (None, None),
    }
}

/// The links from the directories under the worktree root back to git:
/// the git directory each one's `.git` file names. Read once per pass (the
/// observation has read every `.git` file already) and asked once per
/// admin entry.
///
/// An admin entry some directory points at is in use whatever its own
/// `gitdir` file says: git follows the worktree's `.git` file, not the
/// entry, to find the repository, so pruning the entry would leave that
/// directory's `.git` pointing at nothing.
#[derive(Clone, Debug, Default)]
pub struct Gitlinks {
    /// Every spelling of a named git directory -> the directory naming it.
    by_gitdir: HashMap<PathBuf, PathBuf>,
}

impl Gitlinks {
    /// From `(gitdir, directory)` pairs: `directory/.git` names `gitdir`.
    pub fn new(links: impl IntoIterator<Item = (PathBuf, PathBuf)>) -> Gitlinks {
        let mut by_gitdir = HashMap::new();
        for (gitdir, dir) in links {
            for spelling in spellings(&gitdir) {
                by_gitdir.entry(spelling).or_insert_with(|| dir.clone());
            }
        }
        Gitlinks { by_gitdir }
    }

    /// Reads the `.git` files of the directories directly under `root`
    /// (symlinks are not followed: a link under the root is not a
    /// worktree). An unreadable root gives no links.
    pub fn read(root: &Path) -> Gitlinks {
        let Ok(entries) = fs::read_dir(root) else {
            return Gitlinks::default();
        };
        Gitlinks::new(entries.flatten().filter_map(|e| {
            let dir = e.path();
            if !e.file_type().ok()?.is_dir() {
                return None;
            }
            match dot_git(&dir) {
                DotGit::File { gitdir } => Some((gitdir, dir)),
                _ => None,
            }
        }))
    }

    /// The directory whose `.git` file names `gitdir`, by any spelling.
    pub fn pointing_at(&self, gitdir: &Path) -> Option<&Path> {
        spellings(gitdir)
            .iter()
            .find_map(|s| self.by_gitdir.get(s))
            .map(PathBuf::as_path)
    }
}

/// What [`scan_entries`] found among a repository's admin entries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AdminScan {
    /// Recorded directory gone, and nothing under the root points at them.
    pub stale: Vec<StaleAdminEntry>,
    /// Recorded directory gone, but a directory under the root points at
    /// them: moved by hand, left alone.
    pub moved: Vec<MovedAdminEntry>,
}

/// Admin entries of `repo` whose worktree path lies inside `root` but no
/// longer exists (see [`scan_entries`]), reading the root's links itself.
pub fn stale_entries(repo: &Path, root: &Path) -> Result<Vec<StaleAdminEntry>, GitError> {
    Ok(scan_entries(repo, root, &Gitlinks::read(root))?.stale)
}

/// The admin entries of `repo` whose worktree path lies inside `root` but
/// no longer exists, split into the stale ones and the moved ones.
///
/// `repo` is the main repository's working directory (or its git
/// directory). An entry qualifies when its `gitdir` file names
/// `<something>/.git` with `<something>` inside `root` (compared after
/// lexical normalization, and also with existing ancestors canonicalized)
/// and `<something>` does not exist (not even as a dangling symlink). It is
/// moved, not stale, when `links` has a directory pointing at it.
pub fn scan_entries(repo: &Path, root: &Path, links: &Gitlinks) -> Result<AdminScan, GitError> {
    let common = common_dir(repo)?;
    let entries =
        admin_entries(&common).map_err(|e| io_invalid(&common, "reading worktrees", e))?;
    let mut git: Option<Repository> = None;
    let mut out = AdminScan::default();
    for entry in entries {
        let Some(wt) = entry.worktree_path() else {
            continue;
        };
        if !is_inside(&wt, root) || entry.worktree_exists() {
            continue;
        }
        if let Some(dir) = links.pointing_at(&entry.dir) {
            out.moved.push(MovedAdminEntry {
                repo_path: workdir_of_common(&common),
                name: entry.name.clone(),
                worktree_path: wt,
                now_at: dir.to_path_buf(),
            });
            continue;
        }
        if git.is_none() {
            git = Some(open_common(&common)?);
        }
        let (head, branch) = entry_head(git.as_ref().expect("opened above"), &entry);
        out.stale.push(StaleAdminEntry {
            repo_path: workdir_of_common(&common),
            name: entry.name.clone(),
            worktree_path: wt,
            head: head.map(|o| o.to_string()),
            branch,
            locked: fs::read_to_string(entry.dir.join("locked"))
                .ok()
                .map(|r| r.trim().to_string()),
            missing_since: None,
        });
    }
    Ok(out)
}

/// The directory under `root` that now points at `entry` (a worktree
/// moved by hand since the entry was found stale), if any: the re-check
/// right before pruning it.
pub fn moved_to(entry: &StaleAdminEntry, root: &Path) -> Option<PathBuf> {
    let common = common_dir_of_repo(&entry.repo_path)?;
    Gitlinks::read(root)
        .pointing_at(&common.join("worktrees").join(&entry.name))
        .map(Path::to_path_buf)
}

/// Removes the admin entries of `repo` that point at `worktree_path`, once
/// that directory is gone. Returns how many were pruned.
///
/// Refuses (an error) while `worktree_path` exists, even as a dangling
/// symlink. A lock on the entry is ignored: the caller decided.
pub fn prune_for(repo: &Path, worktree_path: &Path) -> Result<usize, GitError> {
    if fs::symlink_metadata(worktree_path).is_ok() {
        return Err(invalid(
            worktree_path,
            "still exists; refusing to prune its worktree admin entry",
        ));
    }
    let common = common_dir(repo)?;
    let entries =
        admin_entries(&common).map_err(|e| io_invalid(&common, "reading worktrees", e))?;
    let target = worktree_path.join(".git");
    let mut pruned = 0;
    for e in entries {
        let Some(g) = &e.gitdir_target else { continue };
        if !same_location(g, &target) {
            continue;
        }
        refuse_unsafe(&common, Some(&e.dir))?;
        as_owner_of(&common, "removing admin entry", || {
            fs::remove_dir_all(&e.dir)
        })?
        .map_err(|err| io_invalid(&e.dir, "removing admin entry", err))?;
        pruned += 1;
    }
    Ok(pruned)
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::git::testutil::{write, Fixture};

    #[test]
    fn main_repository_of_reads_the_gitfile_only() {
        let f = Fixture::new();
        let wt = f.worktree("w", "b");
        assert_eq!(main_repository_of(&wt), Some(f.repo.clone()));
        // The main repository itself, a plain directory, a directory
        // inside a repository: not linked worktrees, and no discovery
        // upward finds the enclosing one.
        assert_eq!(main_repository_of(&f.repo), None);
        assert_eq!(main_repository_of(&f.root), None);
        fs::create_dir_all(f.repo.join("inner")).unwrap();
        assert_eq!(main_repository_of(&f.repo.join("inner")), None);
        assert_eq!(main_repository_of(&f.root.join("missing")), None);
        // A relative gitdir and a pruned admin directory still tell.
        let other = f.root.join("rel");
        fs::create_dir_all(&other).unwrap();
        write(
            &other.join(".git"),
            "gitdir: ../../repo/.git/worktrees/gone\n",
        );
        assert_eq!(main_repository_of(&other), Some(f.repo.clone()));
        // A submodule's gitfile names .git/modules/<name>: not a worktree.
        write(
            &other.join(".git"),
            &format!("gitdir: {}/.git/modules/sub\n", f.repo.display()),
        );
        fs::create_dir_all(f.repo.join(".git/modules/sub")).unwrap();
        assert_eq!(main_repository_of(&other), None);
    }

    #[test]
    fn stale_entries_inside_the_root_only() {
        let f = Fixture::new();
        let gone = f.worktree("gone", "g");
        let kept = f.worktree("kept", "k");
        let detached = f.detached("det", "main");
        write(&detached.join("d.txt"), "d\n");
        let d = f.commit_all(&detached, "detached");
        let outside = f.add_worktree(&f.tmp.path().join("outside"), &["-b", "o"], Some("main"));
        for dir in [&gone, &detached, &outside] {
            fs::remove_dir_all(dir).unwrap();
        }
        let main = f.rev(&f.repo, "main");
        let stale = stale_entries(&f.repo, &f.root).unwrap();
        assert_eq!(
            stale,
            vec![
                StaleAdminEntry {
                    repo_path: f.repo.clone(),
                    name: "det".into(),
                    worktree_path: detached.clone(),
                    head: Some(d.clone()),
                    branch: None,
                    locked: None,
                    missing_since: None,
                },
                StaleAdminEntry {
                    repo_path: f.repo.clone(),
                    name: "gone".into(),
                    worktree_path: gone.clone(),
                    head: Some(main.clone()),
                    branch: Some("g".into()),
                    locked: None,
                    missing_since: None,
                },
            ]
        );
        assert!(kept.exists());
        // The git directory works as well as the working directory.
        assert_eq!(stale_entries(&f.repo.join(".git"), &f.root).unwrap(), stale);
        // A root spelled with `..` is the same root.
        let spelled = f.root.join("../root");
        assert_eq!(stale_entries(&f.repo, &spelled).unwrap().len(), 2);
    }

    #[test]
    fn admin_entry_of_a_moved_worktree_is_not_pruned() {
        let f = Fixture::new();
        let a = f.worktree("a", "a");
        let b = f.root.join("b");
        fs::rename(&a, &b).unwrap();
        // git finds the repository through b's own `.git` file: b works,
        // and needs the entry.
        assert!(f.try_git(&b, &["status", "--porcelain"]).status.success());
        let moved = MovedAdminEntry {
            repo_path: f.repo.clone(),
            name: "a".into(),
            worktree_path: a.clone(),
            now_at: b.clone(),
        };
        let scan = scan_entries(&f.repo, &f.root, &Gitlinks::read(&f.root)).unwrap();
        assert_eq!(
            scan,
            AdminScan {
                stale: vec![],
                moved: vec![moved.clone()]
            }
        );
        assert_eq!(stale_entries(&f.repo, &f.root).unwrap(), vec![]);
        // The git directory as the repository's spelling, and a relative
        // gitdir line (`worktree.useRelativePaths`), name the same entry.
        write(&b.join(".git"), "gitdir: ../../repo/.git/worktrees/a\n");
        let scan = scan_entries(&f.repo.join(".git"), &f.root, &Gitlinks::read(&f.root)).unwrap();
        assert_eq!(scan.moved, vec![moved]);
        assert!(scan.stale.is_empty());

        // The re-check right before pruning sees the move too.
        let entry = StaleAdminEntry {
            repo_path: f.repo.clone(),
            name: "a".into(),
            worktree_path: a.clone(),
            head: None,
            branch: None,
            locked: None,
            missing_since: None,
        };
        assert_eq!(moved_to(&entry, &f.root), Some(b.clone()));

        // Once nothing points at it any more, it is stale.
        fs::remove_dir_all(&b).unwrap();
        assert_eq!(moved_to(&entry, &f.root), None);
        let stale = stale_entries(&f.repo, &f.root).unwrap();
        assert_eq!(
            stale.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(),
            ["a"]
        );
    }

    #[test]
    fn prune_for_refuses_while_the_directory_exists() {
        let f = Fixture::new();
        let a = f.worktree("a", "a");
        let b = f.worktree("b", "b");
        f.git(&f.repo, &["worktree", "lock", a.to_str().unwrap()]);
        assert!(prune_for(&f.repo, &a).is_err());
        assert!(f.repo.join(".git/worktrees/a").is_dir());
        fs::remove_dir_all(&a).unwrap();
        // Locked, but the caller decided.
        assert_eq!(prune_for(&f.repo, &a).unwrap(), 1);
        assert!(!f.repo.join(".git/worktrees/a").exists());
        assert!(f.repo.join(".git/worktrees/b").is_dir());
        assert_eq!(prune_for(&f.repo, &a).unwrap(), 0);
        let list = f.git(&f.repo, &["worktree", "list", "--porcelain"]);
        assert!(!list.contains(a.to_str().unwrap()), "{list}");
        assert!(list.contains(b.to_str().unwrap()), "{list}");
    }
}
