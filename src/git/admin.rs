//! A main repository's worktree admin entries (`.git/worktrees/<name>`).

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::archive::Archived;
use super::GitError;
use crate::model::StaleAdminEntry;

/// The main repository (its working directory) that the linked worktree at
/// `dir` belongs to, read from `dir/.git`; `None` if `dir` is not a linked
/// worktree.
pub fn main_repository_of(dir: &Path) -> Option<PathBuf> {
    let _ = dir;
    todo!()
}

/// Admin entries of `repo` whose worktree path lies inside `root` but no
/// longer exists.
pub fn stale_entries(repo: &Path, root: &Path) -> Result<Vec<StaleAdminEntry>, GitError> {
    let _ = (repo, root);
    todo!()
}

/// Commits reachable from the entry's HEAD and from no ref of the repository.
pub fn unreachable_commits(entry: &StaleAdminEntry) -> Result<Vec<String>, GitError> {
    let _ = entry;
    todo!()
}

/// Keeps the entry's HEAD reachable under
/// `refs/boo/archive/<entry name>/<unix seconds>`.
pub fn archive_head(entry: &StaleAdminEntry, now: SystemTime) -> Result<Archived, GitError> {
    let _ = (entry, now);
    todo!()
}

/// Removes the admin entries of `repo` that point at `worktree_path`, once
/// that directory is gone. Returns how many were pruned.
pub fn prune_for(repo: &Path, worktree_path: &Path) -> Result<usize, GitError> {
    let _ = (repo, worktree_path);
    todo!()
}
