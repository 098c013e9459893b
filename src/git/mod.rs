//! Everything that reads or writes git state, through libgit2 (git2).

pub mod admin;
pub mod archive;
pub mod base;
pub mod paths;
pub mod preflight;
pub(crate) mod reach;
pub(crate) mod scan;

#[cfg(test)]
pub(crate) mod testutil;

use std::path::PathBuf;

/// A git operation that failed, with the repository or worktree it concerned.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("cannot open git repository at {path}: {source}")]
    Open { path: PathBuf, source: git2::Error },
    #[error("git operation `{op}` failed in {path}: {source}")]
    Op {
        op: &'static str,
        path: PathBuf,
        source: git2::Error,
    },
    #[error("{path}: {detail}")]
    Invalid { path: PathBuf, detail: String },
}
