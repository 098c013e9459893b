//! The actual state: what the host has. Each submodule observes one kind of
//! resource and never fails the whole pass for one unreadable item: what
//! cannot be read is reported and left out.

pub mod processes;
pub mod worktrees;
