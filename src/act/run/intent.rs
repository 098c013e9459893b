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
#[derive(Debug, Serialize, PartialEq, Eq)]
pub(in crate::act) struct RemovalIntent {
    pub path: String,
    pub trash: String,
    pub trash_entry: String,
    pub dev: u64,
    pub ino: u64,
    pub force_archive: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archive_ref: Option<String>,
}

/// What a later pass reads back of the intent of a removal or of a
/// cgroup's stop: the path it names.
#[derive(Debug, Default, Deserialize)]
pub(in crate::act) struct PathIntent {
    #[serde(default, deserialize_with = "lenient")]
    pub path: Option<String>,
}

/// What a later pass reads back of the intent of a signal: the process, by
/// pid and start time (the rest is for the operator).
#[derive(Debug, Default, Deserialize)]
pub(in crate::act) struct SignalIntent {
    #[serde(default, deserialize_with = "lenient")]
    pub pid: Option<i64>,
    #[serde(default, deserialize_with = "lenient")]
    pub start_time: Option<u64>,
}

/// A field of a recorded intent that is missing or not of its type reads
/// as not recorded, and leaves the other fields readable: a record written
/// by an older version, or edited by hand, is still concluded.
fn lenient<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: DeserializeOwned,
{
    let v = serde_json::Value::deserialize(d)?;
    Ok(T::deserialize(v).ok())
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
        path: wt.path.display().to_string(),
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
                path: "/tmp/booworktrees/w1".into(),
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
            let back = read::<PathIntent>(&written);
            assert_eq!(back.path.as_deref(), Some("/tmp/booworktrees/w1"));
        }
    }

    #[test]
    fn each_field_of_an_intent_reads_on_its_own() {
        // A record with only the path (an older version's) reads its path.
        let old = serde_json::json!({ "path": "/w" });
        assert_eq!(read::<PathIntent>(&old).path.as_deref(), Some("/w"));
        // A field not of its type reads as not recorded, and only it.
        let odd = serde_json::json!({ "pid": 42, "start_time": "x", "path": 3 });
        let s = read::<SignalIntent>(&odd);
        assert_eq!((s.pid, s.start_time), (Some(42), None));
        assert_eq!(read::<PathIntent>(&odd).path, None);
        let signal = read::<SignalIntent>(&serde_json::json!({
            "pid": 42, "start_time": 9, "chat_id": "c1"
        }));
        assert_eq!((signal.pid, signal.start_time), (Some(42), Some(9)));
        let none = read::<SignalIntent>(&serde_json::json!("not an object"));
        assert_eq!((none.pid, none.start_time), (None, None));
    }
}
