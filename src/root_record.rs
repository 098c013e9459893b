//! What the worktree root is, recorded, and whether a pass sees it so.
//!
//! An unmounted root shows the empty directory under its mount point; a
//! root another file system was mounted over shows someone else's
//! directories. Either way every worktree would look gone: rows marked
//! removed, admin entries pruned, and once the real root is back its
//! worktrees are orphans. The handle check ([`crate::root::WorktreeRoot`])
//! sees a root that changes under a running controller; this record sees
//! one that changed while it was not running, or before it first looked.
//!
//! The record (`reconciler_roots`, one row per host) holds the root's path,
//! the mount holding it ([`crate::mounts::Mount::identity`]) and whether
//! the last pass found anything in it. A pass **holds** (judges nothing
//! under the root, marks no row removed, prunes no admin entry) when:
//!
//! 1. the mount holding the root is not the recorded one (unmounted,
//!    another file system);
//! 2. the root is empty while rows say worktrees are in it, and the last
//!    pass found it holding some, or nothing was ever recorded.
//!
//! It goes on by itself when the root is itself again. When the change is
//! meant (a new disk, a root wiped on purpose), `boo-reconciler
//! accept-root` records the root as it is now.

use serde::Serialize;

/// What is recorded of the root.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RootRecord {
    pub path: String,
    pub mount: String,
    /// The last pass found at least one entry in it.
    pub held_entries: bool,
}

/// What a pass sees of the root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RootSeen {
    pub path: String,
    pub mount: String,
    /// Entries under the root (the trash not counted).
    pub entries: usize,
    /// Rows not removed whose path lies in the root.
    pub rows: usize,
}

impl RootSeen {
    pub fn record(&self) -> RootRecord {
        RootRecord {
            path: self.path.clone(),
            mount: self.mount.clone(),
            held_entries: self.entries > 0,
        }
    }
}

/// What to do with what a pass sees.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The root is itself: record this (when it differs from the record).
    Record(RootRecord),
    /// The root is not what was recorded: why.
    Hold(String),
}

const ACCEPT: &str = "if the root is what it should be now, `boo-reconciler accept-root` \
                      records it as it is";

/// The judgement, given the record (of this host) and what the pass saw.
pub fn judge(recorded: Option<&RootRecord>, seen: &RootSeen) -> Verdict {
    // A record of another root (the setting changed) says nothing of
    // this one.
    let recorded = recorded.filter(|r| r.path == seen.path);
    if let Some(r) = recorded {
        if r.mount != seen.mount {
            return Verdict::Hold(format!(
                "the worktree root {} is on {}, but was recorded on {}: unmounted, or another \
                 file system; nothing under it is judged, marked removed or pruned until it is \
                 back ({ACCEPT})",
                seen.path, seen.mount, r.mount
            ));
        }
    }
    let emptied = seen.entries == 0 && seen.rows > 0;
    match recorded {
        Some(r) if emptied && r.held_entries => Verdict::Hold(format!(
            "the worktree root {} is empty while {} row(s) say worktrees are in it, and the \
             last pass found it holding some; nothing under it is judged, marked removed or \
             pruned until they are back ({ACCEPT})",
            seen.path, seen.rows
        )),
        None if emptied => Verdict::Hold(format!(
            "the worktree root {} is empty while {} row(s) say worktrees are in it, and no \
             earlier pass recorded what it is; nothing under it is judged, marked removed or \
             pruned ({ACCEPT})",
            seen.path, seen.rows
        )),
        _ => Verdict::Record(seen.record()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(mount: &str, entries: usize, rows: usize) -> RootSeen {
        RootSeen {
            path: "/tmp/booworktrees".into(),
            mount: mount.into(),
            entries,
            rows,
        }
    }

    const DISK: &str = "/dev/sdb1:/ on /tmp/booworktrees (type ext4)";
    const TMP: &str = "tmpfs:/ on /tmp (type tmpfs)";

    #[test]
    fn a_root_on_another_mount_than_recorded_holds() {
        let r = seen(DISK, 3, 3).record();
        assert_eq!(
            judge(Some(&r), &seen(DISK, 3, 3)),
            Verdict::Record(r.clone())
        );
        match judge(Some(&r), &seen(TMP, 0, 3)) {
            Verdict::Hold(why) => {
                assert!(why.contains("recorded on /dev/sdb1"), "{why}");
                assert!(why.contains("accept-root"), "{why}");
            }
            v => panic!("{v:?}"),
        }
        // Even with nothing in it and no row: the mount is not the one.
        assert!(matches!(
            judge(Some(&r), &seen(TMP, 0, 0)),
            Verdict::Hold(_)
        ));
    }

    #[test]
    fn a_root_emptied_while_rows_say_worktrees_are_there_holds() {
        let full = seen(TMP, 2, 2).record();
        assert!(matches!(
            judge(Some(&full), &seen(TMP, 0, 2)),
            Verdict::Hold(_)
        ));
        // Never recorded: empty with rows holds too.
        assert!(matches!(judge(None, &seen(TMP, 0, 2)), Verdict::Hold(_)));
        // Recorded empty (accepted, or it was empty): it goes on.
        let empty = seen(TMP, 0, 2).record();
        assert_eq!(
            judge(Some(&empty), &seen(TMP, 0, 2)),
            Verdict::Record(empty.clone())
        );
        // No rows: an empty root is just empty.
        assert!(matches!(
            judge(Some(&full), &seen(TMP, 0, 0)),
            Verdict::Record(_)
        ));
        // Some entries left: worktrees deleted one by one are not a root
        // that moved.
        assert!(matches!(
            judge(Some(&full), &seen(TMP, 1, 5)),
            Verdict::Record(_)
        ));
    }

    #[test]
    fn a_record_of_another_root_says_nothing_of_this_one() {
        let mut other = seen(DISK, 2, 2).record();
        other.path = "/srv/elsewhere".into();
        assert!(matches!(
            judge(Some(&other), &seen(TMP, 1, 1)),
            Verdict::Record(_)
        ));
    }
}
