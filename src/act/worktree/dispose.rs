//! The opencode server's instance for a worktree that has been removed.
//!
//! `opencode serve` keeps an instance (a file watcher, language servers)
//! for every directory it has served, until it exits: on a long-running
//! server each retired worktree would leave one behind. Once a worktree is
//! removed, its sessions are already deleted (the opencode stage runs
//! before the worktree stage of the same group), so its instance serves
//! nothing any more and is disposed of ([`Client::dispose_instance`]).
//!
//! # Guarantees
//! - Never while the server lists a session working in the directory (one
//!   started after the plan was observed): its instance is in use.
//! - Never without that listing: when the server cannot be asked, nothing
//!   is disposed of. A failed listing or dispose is noted and logged, and
//!   the removal stays done (its row is already marked removed). Nothing
//!   retries it: an instance left behind goes when the server restarts.
//! - A server that is not running (connection refused) holds no instance:
//!   noted, not a warning.
//! - Only while `opencode.enabled` is on and `opencode.url` names a
//!   server.
//!
//! What became of it is the removal's `detail.opencode_instance`:
//! `disposed`, `kept: …`, `not running: …` or `error: …`.

use std::path::PathBuf;

use crate::opencode::{Client, Error, FailureKind};
use crate::plan::WorktreeTarget;
use crate::root::WorktreeRoot;

/// Disposes of the instance for the removed worktree `wt` unless a session
/// still works in it, and says what became of it; `None` without a
/// `client` (no opencode, or `opencode.enabled` off).
pub async fn after_removal(
    client: Option<&Client>,
    root: &WorktreeRoot,
    wt: &WorktreeTarget,
) -> Option<String> {
    let client = client?;
    let said = dispose(client, &directories(root, wt)).await;
    if said.starts_with("error: ") {
        tracing::warn!(worktree = %wt.path.display(), opencode = client.url(),
            "removed, but its opencode instance was not disposed of: {said}");
    } else {
        tracing::debug!(worktree = %wt.path.display(), opencode = client.url(),
            "opencode instance: {said}");
    }
    Some(said)
}

/// The spellings a client of the server may have used for the worktree:
/// as planned, and under the root both canonical and as configured (the
/// spellings the controller counts as under the root when it lists
/// sessions). The server keys its instances by the string it was given.
fn directories(root: &WorktreeRoot, wt: &WorktreeTarget) -> Vec<PathBuf> {
    let mut out = vec![wt.path.clone()];
    for dir in [
        root.path().join(&wt.name),
        root.configured_path().join(&wt.name),
    ] {
        if !out.contains(&dir) {
            out.push(dir);
        }
    }
    out
}

async fn dispose(client: &Client, directories: &[PathBuf]) -> String {
    // All listings first: one remaining session keeps every spelling's
    // instance, as they may be one directory.
    for dir in directories {
        match client.list_sessions(dir).await {
            Ok(sessions) => {
                if let Some(s) = sessions.first() {
                    return format!(
                        "kept: opencode session {} still works in {}",
                        s.id,
                        dir.display()
                    );
                }
            }
            Err(e) => return failed(&e),
        }
    }
    for dir in directories {
        if let Err(e) = client.dispose_instance(dir).await {
            return failed(&e);
        }
    }
    "disposed".into()
}

fn failed(e: &Error) -> String {
    match e.kind() {
        FailureKind::NotRunning => format!("not running: {e}"),
        FailureKind::Failing => format!("error: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(root: &WorktreeRoot, name: &str) -> WorktreeTarget {
        WorktreeTarget {
            row_id: Some(name.into()),
            name: name.into(),
            path: root.path().join(name),
            branch: None,
            base_ref: None,
            repo_path: None,
        }
    }

    #[test]
    fn one_directory_when_the_root_has_one_spelling() {
        let tmp = tempfile::tempdir().unwrap();
        let root = WorktreeRoot::prepare(&tmp.path().canonicalize().unwrap().join("r")).unwrap();
        let wt = target(&root, "w1");
        assert_eq!(directories(&root, &wt), vec![root.path().join("w1")]);
    }

    #[test]
    fn a_root_under_a_symlink_gives_both_spellings() {
        let tmp = tempfile::tempdir().unwrap();
        let real = tmp.path().canonicalize().unwrap().join("real");
        std::fs::create_dir(&real).unwrap();
        let link = tmp.path().canonicalize().unwrap().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let root = WorktreeRoot::prepare(&link.join("r")).unwrap();
        assert_eq!(root.path(), real.join("r"));
        let wt = target(&root, "w1");
        assert_eq!(
            directories(&root, &wt),
            vec![real.join("r/w1"), link.join("r/w1")]
        );
    }
}
