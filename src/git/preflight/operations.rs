//! Locks and operations in progress.

use std::path::Path;
use std::{fs, io};

use crate::risk::AtRisk;

pub(super) fn locked(admin: &Path, out: &mut Vec<AtRisk>) {
    let lock = admin.join("locked");
    match fs::read_to_string(&lock) {
        Ok(s) => {
            let r = s.trim();
            out.push(AtRisk::Locked {
                reason: (!r.is_empty()).then(|| r.to_string()),
            });
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(_) => out.push(AtRisk::Locked { reason: None }),
    }
}

/// The operations in progress in the worktree whose git directory is
/// `gitdir` (each worktree keeps its own `MERGE_HEAD`, `rebase-merge/`, …),
/// read from the files git itself keeps for them.
pub(crate) fn operations(gitdir: &Path) -> Vec<String> {
    let has = |n: &str| fs::symlink_metadata(gitdir.join(n)).is_ok();
    let mut ops = Vec::new();
    if has("MERGE_HEAD") {
        ops.push("merge");
    }
    if has("rebase-merge") {
        ops.push("rebase");
    }
    if has("rebase-apply") {
        ops.push(if has("rebase-apply/applying") {
            "am"
        } else {
            "rebase"
        });
    }
    if has("CHERRY_PICK_HEAD") {
        ops.push("cherry-pick");
    }
    if has("REVERT_HEAD") {
        ops.push("revert");
    }
    if has("sequencer") && !has("CHERRY_PICK_HEAD") && !has("REVERT_HEAD") {
        ops.push("cherry-pick/revert sequence");
    }
    if has("BISECT_LOG") || has("BISECT_START") {
        ops.push("bisect");
    }
    let mut ops: Vec<String> = ops.into_iter().map(String::from).collect();
    ops.dedup();
    ops
}
