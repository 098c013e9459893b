//! Named crash points, for the tests that kill the real binary in the
//! middle of a destructive step and prove that the next pass converges.
//!
//! A point is inert unless the `fail` crate is built with its `failpoints`
//! feature (this crate's `failpoints` feature, or the test build, where the
//! dev-dependency turns it on) *and* the `FAILPOINTS` environment variable
//! arms it. Armed with the `return` action, the process aborts on the spot:
//! no destructor runs, nothing is flushed, exactly as a `kill -9` or an OOM
//! kill would leave it. `sleep(ms)` delays the step instead (a slow file
//! system), and counts work as in the `fail` crate (`200*off->return`
//! aborts at the 201st evaluation).
//!
//! The points:
//!
//! | name | where |
//! | --- | --- |
//! | `trash.after_record` | the trash's record of the directory is written; the rename not done |
//! | `trash.before_check` | the worktree is in the trash, its tree not yet compared with its stamp |
//! | `remove.after_rename` | the worktree is in the trash; admin entry, row and audit not yet written |
//! | `remove.after_admin_prune` | the admin entry is pruned; row and audit not yet written |
//! | `remove.before_row_update` | the removal is done on disk; the row still says `active` |
//! | `remove.between_entries` | between two unlinks of a directory removal (a reclaim in progress) |
//! | `archive.midway` | a force archive has written its objects but not its ref |
//! | `remove.before_retire` | right before the rename (a slow step, with `sleep`) |
//! | `stop_cgroup.after_term` | an agent cgroup's members have SIGTERM; the grace not waited, nothing killed |

/// Arms the points named in `FAILPOINTS`, once, for the life of the
/// process. A no-op when they are not compiled in.
pub fn setup() {
    if fail::has_failpoints() && std::env::var_os("FAILPOINTS").is_some() {
        // The scenario guards the registry until dropped; the points stay
        // armed for the whole process.
        std::mem::forget(fail::FailScenario::setup());
    }
}

/// A named crash point: aborts the process when armed with `return`.
#[macro_export]
macro_rules! crash_point {
    ($name:literal) => {
        fail::fail_point!($name, |_| std::process::abort())
    };
}
