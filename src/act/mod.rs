//! Effects: carrying out a [`crate::plan::Plan`] against the host without
//! ever losing work. The folders show who does what:
//!
//! - [`run`]: the executor (groups and stages, the parallelism bounds,
//!   backoff, the task each action runs to its end on; its guarantees are
//!   there), the claim per target, the [`run::audit::Audit`] (the record of
//!   each change of verdict, the write-ahead intent before each destructive
//!   step and the host lock it confirms), what an intent records, the typed
//!   outcomes, and the re-checks of liveness right before destroying.
//! - One actor per resource, each with only the context it needs:
//!   [`process`] (agents, their cgroups and rows; `terminate` the signals),
//!   `session` (opencode sessions) and [`worktree`] (directories, their rows
//!   and stale admin entries: the removal, the verdicts that keep, the
//!   disposal of the opencode instance).
//! - [`trash`]: the retirement of a worktree with one rename, the stamp that
//!   sees a writer, the safe deletion and the reclaimer that frees the
//!   space later.
//!
//! Words, one step each: a worktree is *retired* when one rename moves it
//! into the trash; a trash entry is *reclaimed* when its space is freed;
//! *remove* is the action (`remove_worktree`) that judges, then retires.

pub mod process;
pub mod run;
mod session;
pub mod trash;
pub mod worktree;

pub use run::executor::{Executor, RunOptions};
pub use run::outcome::{ActionResult, Detail, Outcome};
pub use worktree::removal::{archive_then_retire, inspect, Inspection};
