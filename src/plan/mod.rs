//! The planner: `(desired, actual, policy, now) -> Plan`, a pure function.
//!
//! It compares what the database says should exist with what the host has
//! and lists the actions that remove the difference, each with the reason a
//! human would want to read. It does no I/O: every fact it needs (liveness,
//! path verdicts, ages) is in its inputs, so every drift case is tested
//! here without a database, a repository or a process.
//!
//! # Guarantees
//! - Nothing owned by a live chat is ever planned for teardown.
//! - A path claimed by any live row is never planned for removal: when two
//!   rows name one directory, the one whose session is gone does not speak
//!   for the other (test `a_path_claimed_by_a_live_row_is_never_removed`).
//! - A directory with no row is planned only once older than the orphan
//!   minimum age; until then it is listed as pending.
//! - A row whose path leaves the root is planned only as a refusal, which
//!   touches nothing.
//! - An admin entry of a worktree moved inside the root is never planned
//!   for pruning, only listed as pending (test
//!   `admin_entry_of_a_moved_worktree_is_not_pruned`).
//! - A row the store could not read is never taken for a missing one:
//!   what an unreadable chat, session or worktree row may own is kept and
//!   listed as pending (test `what_an_unreadable_row_may_own_is_kept`).
//! - Actions come out grouped and ordered (see [`Stage`]) so the executor
//!   can run groups concurrently and stages in order.

use std::path::Path;
use std::time::{Duration, SystemTime};

mod action;
mod admin;
mod agents;
mod brake;
mod cgroups;
mod opencode;
mod processes;
mod worktrees;

pub use action::*;
use admin::plan_admin_entries;
use agents::plan_agent_rows;
use cgroups::plan_cgroups;
use opencode::plan_opencode;
use processes::plan_processes;
use worktrees::{plan_orphan_dirs, plan_worktree_rows};

use crate::model::{ActualState, DesiredState, Scope};

/// The settings the planner applies.
#[derive(Clone, Debug)]
pub struct Policy {
    /// A directory under the root with no live owner is reaped only once
    /// this old; an open session without any chat keeps its worktree this
    /// long.
    pub worktree_orphan_min_age: Duration,
    /// A labelled process whose chat has no row is left alone while younger
    /// than this: the row may not be committed yet.
    pub process_orphan_min_age: Duration,
    /// An opencode session that no open row of a live chat names is deleted
    /// only once this old.
    pub opencode_orphan_min_age: Duration,
    /// This controller's instance (`processes.instance`): when set, a
    /// process whose instance label does not carry it is another
    /// controller's, never a candidate.
    pub instance: Option<String>,
    /// The brake: at most this many removals and prunes of worktrees and
    /// admin entries in one pass (`worktrees.max_removals_per_pass`).
    pub max_removals: usize,
    /// At most this many agent terminations in one pass
    /// (`processes.max_terminations_per_pass`).
    pub max_terminations: usize,
    /// A stale admin entry is pruned only once its directory has been
    /// missing this long (`worktrees.stale_entry_grace`).
    pub stale_entry_grace: Duration,
}

/// Plans the actions of one pass. Pure.
pub fn plan(
    desired: &DesiredState,
    actual: &ActualState,
    policy: &Policy,
    now: SystemTime,
    scope: &Scope,
) -> Plan {
    let mut out = Plan::default();
    plan_processes(desired, actual, policy, now, &mut out);
    plan_cgroups(desired, actual, policy, now, &mut out);
    plan_agent_rows(desired, actual, policy, now, &mut out);
    let waits = plan_opencode(desired, actual, policy, now, &mut out);
    match &actual.root_held {
        // What is under a root that is not itself was not seen: a row whose
        // directory seems gone is not removed, an admin entry whose
        // directory seems gone is not stale.
        Some(why) => hold_worktrees(desired, why, &mut out),
        None => {
            let claimed = plan_worktree_rows(desired, actual, policy, now, &waits, &mut out);
            plan_orphan_dirs(actual, &claimed, policy, now, &waits, &mut out);
            plan_admin_entries(desired, actual, policy, now, &mut out);
        }
    }
    out.actions.retain(|a| in_scope(a, scope, desired));
    out.pending.retain(|_| *scope == Scope::Host);
    brake::brake(&mut out, policy);
    // Stable: within a stage, actions keep the order they were planned in.
    out.actions.sort_by_cached_key(|a| (a.group(), a.stage()));
    out
}

/// Every worktree row pending, with why the root holds them.
fn hold_worktrees(desired: &DesiredState, why: &str, out: &mut Plan) {
    for row in &desired.worktrees {
        out.pending.push(Pending {
            target: Target::WorktreeRow(row.id.clone()),
            why: why.to_string(),
        });
    }
}

fn in_scope(action: &Action, scope: &Scope, desired: &DesiredState) -> bool {
    match scope {
        Scope::Host => true,
        Scope::Session(id) => action.owner.session_id.as_deref() == Some(id.as_str()),
        Scope::Chat(id) => {
            if action.owner.chat_id.as_deref() == Some(id.as_str()) {
                return true;
            }
            // The chat's session's worktree-level actions come along: the
            // planner only emits them once no live chat remains.
            let session = desired
                .chats
                .get(id)
                .and_then(|c| c.chat.as_ref())
                .map(|c| c.session_id.as_str());
            action.owner.chat_id.is_none()
                && session.is_some()
                && action.owner.session_id.as_deref() == session
        }
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
