//! Deleting a worktree directory: never following symlinks, never crossing
//! into another mounted file system, never outside the root.

use std::path::{Path, PathBuf};

use crate::root::WorktreeRoot;

#[derive(Debug, thiserror::Error)]
pub enum RemoveError {
    #[error("{path} is not a direct entry of the worktree root: {why}")]
    OutsideRoot { path: PathBuf, why: String },
    #[error("mount point inside {path}: {mount}")]
    MountPoint { path: PathBuf, mount: PathBuf },
    #[error("cannot remove {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Mount points at or below `dir`.
pub fn mount_points_inside(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let _ = dir;
    todo!()
}

/// Deletes `dir`, a direct entry of `root`, and everything below it.
pub fn remove_dir(root: &WorktreeRoot, dir: &Path) -> Result<(), RemoveError> {
    let _ = (root, dir);
    todo!()
}
