//! The brake: a pass that would remove, prune or terminate far more than
//! usual acts up to the limits and leaves the rest pending with the
//! reason, so that a wrong database or a wrong root cannot empty a host
//! in one pass (an operator sees the pending list grow and can stop the
//! controller before the next one).
//!
//! Whole groups are held (a session's or a chat's teardown runs in order:
//! processes, sessions, rows, then the worktree), never an action out of
//! its group: a row is never closed while the process it records is held
//! back. The first group is always let through, however large: one
//! chat's teardown is never a mass removal.

use std::collections::{HashMap, HashSet};

use super::action::{Action, ActionKind, Pending, Plan};
use super::Policy;

/// What one action weighs against each limit: (removals, terminations).
fn weight(a: &Action) -> (usize, usize) {
    match a.kind {
        ActionKind::RemoveWorktree { .. } | ActionKind::PruneAdminEntry { .. } => (1, 0),
        ActionKind::TerminateProcess { .. } | ActionKind::StopCgroup { .. } => (0, 1),
        _ => (0, 0),
    }
}

/// Holds back, as pending, the groups past the limits of `policy`.
pub(super) fn brake(out: &mut Plan, policy: &Policy) {
    let total = out
        .actions
        .iter()
        .map(weight)
        .fold((0, 0), |s, w| (s.0 + w.0, s.1 + w.1));
    if total.0 <= policy.max_removals && total.1 <= policy.max_terminations {
        return;
    }
    let mut per_group: HashMap<String, (usize, usize)> = HashMap::new();
    let mut order = Vec::new();
    for a in &out.actions {
        let g = a.group();
        let w = weight(a);
        let e = per_group.entry(g.clone()).or_insert_with(|| {
            order.push(g);
            (0, 0)
        });
        *e = (e.0 + w.0, e.1 + w.1);
    }
    let (mut removals, mut terminations) = (0, 0);
    let mut held = HashSet::new();
    for g in order {
        let (r, t) = per_group[&g];
        let first = removals == 0 && terminations == 0;
        if first
            || (removals + r <= policy.max_removals && terminations + t <= policy.max_terminations)
        {
            removals += r;
            terminations += t;
        } else {
            held.insert(g);
        }
    }
    let why = format!(
        "held by the brake: this pass would remove or prune {} worktree(s) and admin entr(ies) \
         (worktrees.max_removals_per_pass = {}) and terminate {} process(es) \
         (processes.max_terminations_per_pass = {}); the rest waits for the next pass. \
         If this is not expected, stop the controller and check its database and root",
        total.0, policy.max_removals, total.1, policy.max_terminations
    );
    let (kept, waiting): (Vec<Action>, Vec<Action>) = out
        .actions
        .drain(..)
        .partition(|a| !held.contains(&a.group()));
    out.actions = kept;
    for a in waiting {
        out.pending.push(Pending {
            target: a.key(),
            why: format!("{}: {}", a.reason, why),
        });
    }
}
