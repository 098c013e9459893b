//! Everything that reads or writes git state: the git CLI where git's own
//! view decides ([`cli`], [`preflight`], [`keep`], [`verify`], the restore
//! of an archive in [`restore`] and the listing of archives in
//! [`archive::list`]), libgit2 (git2) where reading and building serve
//! (the writing of an archive in [`archive`], [`admin`]).

pub mod admin;
pub mod archive;
pub mod cli;
pub mod keep;
pub mod links;
pub mod mode;
pub mod paths;
pub mod preflight;
pub(crate) mod reach;
pub mod refs;
pub mod restore;
pub(crate) mod scan;
pub mod stale;
pub mod status;
pub mod verify;

#[cfg(test)]
pub(crate) mod scenes;
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
