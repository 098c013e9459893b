//! Effects: carrying out a [`crate::plan::Plan`] against the host without
//! ever losing work.
//!
//! One concern per file:
//! - [`executor`]: groups and stages, the parallelism bound, backoff, and
//!   the task each action runs to its end on (its guarantees are there).
//! - [`claim`]: two runs never act on one target at once.
//! - [`audit`]: the [`audit::Audit`], which owns the audit record of each
//!   change of verdict, the write-ahead intent before each destructive step
//!   and the host lock it confirms; [`intent`]: what an intent records, and
//!   what a later pass finds of one a crash left open.
//! - [`liveness`]: the re-checks of liveness right before destroying.
//! - The action bodies, per resource: [`process`], [`session`],
//!   [`worktree`] (with [`removal`], [`kept`], [`dispose`]) and [`admin`].
//! - The destructive primitives, each with numbered guarantees:
//!   [`terminate`], [`trash`], [`remove`], [`reclaim`].

mod admin;
pub mod audit;
pub mod cgroup;
pub mod claim;
pub mod dispose;
pub mod executor;
mod intent;
pub mod kept;
mod liveness;
pub mod outcome;
mod process;
pub mod reclaim;
pub mod removal;
pub mod remove;
mod session;
pub mod stamp;
pub mod terminate;
pub mod trash;
mod worktree;

pub use executor::{BackingOff, Executor, RunOptions};
pub use outcome::{ActionResult, Detail, Outcome};
pub use removal::{archive_and_remove, inspect, Inspection};
