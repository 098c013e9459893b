//! The worktree root: the one directory the controller may delete in.
//! Paths from the database are untrusted; this module decides whether one
//! names an entry of the root.

use std::path::{Path, PathBuf};

use crate::model::PathCheck;

/// Why the configured root cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RootError {
    #[error("worktree root {path}: {why}")]
    Refused { path: PathBuf, why: String },
    #[error("worktree root {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A validated worktree root.
#[derive(Clone, Debug)]
pub struct WorktreeRoot {
    path: PathBuf,
}

impl WorktreeRoot {
    /// Creates the root if missing and refuses `/`, a home directory, a
    /// symlink, or anything that is not a directory.
    pub fn prepare(path: &Path) -> Result<WorktreeRoot, RootError> {
        let _ = path;
        todo!()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether an untrusted path names a direct entry of the root.
    pub fn check(&self, untrusted: &Path) -> PathCheck {
        let _ = untrusted;
        todo!()
    }
}
