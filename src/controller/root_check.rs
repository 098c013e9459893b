//! The worktree root against its record ([`crate::root_record`]): before
//! anything under the root is judged, a pass checks that the root is the
//! directory, on the mount, that it was recorded as (recording what it saw
//! when that is a change the record accepts); `accept-root` records the
//! root as it is now. Apart from the pass because it is the one place the
//! controller reads the root's mount and its record, for both.

use std::collections::HashSet;
use std::ffi::OsString;

use super::unix_now;
use crate::model::PathCheck;
use crate::observe::worktrees::RootView;
use crate::root::WorktreeRoot;
use crate::root_record::{RootRecord, RootSeen, Verdict};
use crate::store::Store;

/// Whether the root is what its record says: why not, or `None`
/// (recording what the pass saw, with `record`, when it differs from the
/// record). A root whose mount or record cannot be read is not judged on a
/// guess: it holds.
pub(super) async fn check(
    store: &Store,
    root: &WorktreeRoot,
    host: &str,
    observed: &RootView,
    record: bool,
) -> Option<String> {
    let mount = match crate::mounts::mount_of(root.path()) {
        Ok(m) => m.identity(),
        Err(e) => {
            return Some(format!(
                "the worktree root's mount cannot be read ({e}); nothing under it is judged, \
                 marked removed or pruned"
            ))
        }
    };
    // A worktree this controller retired itself (its removal cut short
    // before the row was marked) is in the trash, not gone from the
    // root: its row does not count.
    let retired: HashSet<OsString> = std::fs::read_dir(crate::act::trash::trash_path(root))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| crate::act::trash::parse_entry(&e.file_name()).map(|(id, _)| id))
        .collect();
    let seen = RootSeen {
        path: root.path().display().to_string(),
        mount,
        entries: observed.dirs.len(),
        rows: observed
            .row_paths
            .iter()
            .filter(|(_, c)| match c {
                PathCheck::Inside { path, .. } => {
                    path.file_name().is_none_or(|n| !retired.contains(n))
                }
                _ => false,
            })
            .count(),
    };
    let recorded = match store.root_record(host).await {
        Ok(r) => r,
        Err(e) => {
            return Some(format!(
                "the worktree root's record cannot be read ({e}); nothing under it is \
                 judged, marked removed or pruned"
            ))
        }
    };
    match crate::root_record::judge(recorded.as_ref(), &seen) {
        Verdict::Hold(why) => Some(why),
        Verdict::Record(r) => {
            if record && recorded.as_ref() != Some(&r) {
                if let Err(e) = store.record_root(host, &r, unix_now()).await {
                    tracing::warn!("recording the worktree root: {e}");
                }
            }
            None
        }
    }
}

/// Records the root as it is now (`accept-root`): what was recorded
/// before, and what is now.
pub(super) async fn accept(
    store: &Store,
    root: &WorktreeRoot,
    host: &str,
) -> anyhow::Result<(Option<RootRecord>, RootRecord)> {
    let rows = store.host_rows(host).await?;
    let root = root.clone();
    let seen = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let entries = std::fs::read_dir(root.path())?
            .flatten()
            .filter(|e| e.file_name() != crate::root::TRASH_DIR)
            .count();
        let rows = rows
            .worktrees
            .iter()
            .filter(|r| matches!(root.check(&r.path), PathCheck::Inside { .. }))
            .count();
        Ok(RootSeen {
            path: root.path().display().to_string(),
            mount: crate::mounts::mount_of(root.path())?.identity(),
            entries,
            rows,
        })
    })
    .await??;
    let before = store.root_record(host).await?;
    let now = seen.record();
    store.record_root(host, &now, unix_now()).await?;
    tracing::warn!(root = %now.path, mount = %now.mount, "the worktree root is recorded as it is now");
    Ok((before, now))
}
