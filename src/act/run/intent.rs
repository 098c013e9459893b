//! What the write-ahead intents of destructive steps record, and what a
//! later pass finds of the target of one a crash left open. Writing and
//! concluding them is the [`crate::act::run::audit::Audit`]'s.
//!
//! # Guarantees
//! - An intent left open is concluded with what is found of its target now
//!   ([`crate::act::run::executor::Executor::settle`]; test
//!   `an_intent_left_by_a_crash_is_concluded_with_what_was_found`, and the
//!   crash tests of `tests/crash.rs`).

use std::time::SystemTime;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::act::trash;
use crate::git;
use crate::plan::WorktreeTarget;
use crate::root::WorktreeRoot;

/// What the intent of a worktree removal records: the directory, where it
/// is retired to, and for a force the archive ref it is about to write.
/// The trash entry it is retired as, and the `(device, inode)` of the
/// directory judged, which is the only directory that may move there
/// (the trash's own record of it is what the reclaimer goes by, see
/// [`trash`]).
#[derive(Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub(in crate::act) struct RemovalIntent {
    pub path: Option<String>,
    pub trash: String,
    pub trash_entry: String,
    pub dev: u64,
    pub ino: u64,
    pub force_archive: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive_ref: Option<String>,
}

/// What the intent of a signal records that a later pass reads back: the
/// process, by pid and start time (the rest is for the operator).
#[derive(Debug, Default, Deserialize)]
pub(in crate::act) struct SignalIntent {
    pub pid: i64,
    pub start_time: Option<u64>,
}

/// What the intent of a cgroup's stop records that a later pass reads
/// back.
#[derive(Debug, Default, Deserialize)]
pub(in crate::act) struct CgroupIntent {
    pub path: Option<String>,
}

/// The intent of removing `wt`, pinned as `pinned`, to be retired at `now`.
pub(in crate::act) fn removal(
    root: &WorktreeRoot,
    wt: &WorktreeTarget,
    pinned: &trash::Pinned,
    archive: bool,
    now: SystemTime,
) -> serde_json::Value {
    let intent = RemovalIntent {
        path: Some(wt.path.display().to_string()),
        trash: trash::trash_path(root).display().to_string(),
        trash_entry: pinned.entry_name(now).to_string_lossy().into_owned(),
        dev: pinned.dev(),
        ino: pinned.ino(),
        force_archive: archive,
        archive_ref: archive.then(|| git::archive::archive_ref_base(&wt.name, now)),
    };
    serde_json::to_value(intent).unwrap_or_default()
}

/// An intent's detail read through its type; what does not read as one
/// (an older or damaged record) reads as nothing recorded.
pub(in crate::act) fn read<T: DeserializeOwned + Default>(detail: &serde_json::Value) -> T {
    T::deserialize(detail).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_removal_intent_is_written_as_before_and_read_back_through_its_type() {
        for archive_ref in [None, Some("refs/boo/archive/w1/1".to_string())] {
            let intent = RemovalIntent {
                path: Some("/tmp/booworktrees/w1".into()),
                trash: "/tmp/booworktrees/.boo-trash".into(),
                trash_entry: "w1.17".into(),
                dev: 2049,
                ino: 77,
                force_archive: archive_ref.is_some(),
                archive_ref: archive_ref.clone(),
            };
            let written = serde_json::to_value(&intent).unwrap();
            // The shape every earlier record has, which `interrupted`
            // records and operators read.
            let mut before = serde_json::json!({
                "path": "/tmp/booworktrees/w1",
                "trash": "/tmp/booworktrees/.boo-trash",
                "trash_entry": "w1.17",
                "dev": 2049,
                "ino": 77,
                "force_archive": archive_ref.is_some(),
            });
            if let Some(r) = &archive_ref {
                before["archive_ref"] = r.clone().into();
            }
            assert_eq!(written.to_string(), before.to_string());
            assert_eq!(read::<RemovalIntent>(&written), intent);
        }
    }

    #[test]
    fn a_detail_that_does_not_read_as_its_type_reads_as_nothing_recorded() {
        let odd = serde_json::json!({ "pid": "seven", "path": 3 });
        let SignalIntent { pid, start_time } = read(&odd);
        assert_eq!((pid, start_time), (0, None));
        assert_eq!(read::<CgroupIntent>(&odd).path, None);
        let signal = read::<SignalIntent>(&serde_json::json!({
            "pid": 42, "start_time": 9, "chat_id": "c1"
        }));
        assert_eq!((signal.pid, signal.start_time), (42, Some(9)));
    }
}
