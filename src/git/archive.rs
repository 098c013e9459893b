//! Force preserves: the full state of a worktree committed under
//! `refs/boo/archive/<worktree id>/<unix seconds>` before removal.

use std::path::Path;
use std::time::SystemTime;

use globset::GlobSet;

use super::GitError;

/// Where an archived state was stored in the main repository.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Archived {
    pub reference: String,
    pub commit: String,
}

/// Commits the full state of `worktree` (index, working tree, untracked and
/// precious ignored files, HEAD) to an archive ref in its main repository.
pub fn archive(
    worktree: &Path,
    worktree_id: &str,
    now: SystemTime,
    precious: &GlobSet,
) -> Result<Archived, GitError> {
    let _ = (worktree, worktree_id, now, precious);
    todo!("archive")
}
