//! The preflight: every reason removing a worktree would lose work.

use std::path::Path;

use globset::GlobSet;

use crate::risk::AtRisk;

/// What the preflight needs to know about one worktree.
pub struct Preflight<'a> {
    /// The worktree directory (already confined to the root by the caller).
    pub worktree: &'a Path,
    /// The branch recorded in the `worktrees` row, if any.
    pub branch: Option<&'a str>,
    /// The ref the worktree was created from (`worktrees.base_ref`), if any.
    pub base_ref: Option<&'a str>,
    /// Ignored files matching these globs are work (`.env`).
    pub precious: &'a GlobSet,
}

/// Every reason removing the worktree would lose work; empty means safe.
/// Never returns an error: a check that cannot finish is itself a reason
/// ([`AtRisk::PreflightFailed`]), so that doubt always keeps the worktree.
pub fn preflight(p: &Preflight<'_>) -> Vec<AtRisk> {
    let _ = p;
    todo!("preflight")
}
