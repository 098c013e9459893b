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

use crate::act::trash;
use crate::git;
use crate::observe::processes;
use crate::plan::WorktreeTarget;
use crate::root::WorktreeRoot;
use crate::store::OpenIntent;

/// What the intent of a worktree removal records: the directory, where it
/// is retired to, and for a force the archive ref it is about to write.
/// The trash entry it is retired as, and the `(device, inode)` of the
/// directory judged, which is the only directory that may move there
/// (the trash's own record of it is what the reclaimer goes by, see
/// [`trash`]).
pub(in crate::act) fn removal(
    root: &WorktreeRoot,
    wt: &WorktreeTarget,
    pinned: &trash::Pinned,
    archive: bool,
    now: SystemTime,
) -> serde_json::Value {
    let mut v = serde_json::json!({
        "path": wt.path.display().to_string(),
        "trash": trash::trash_path(root).display().to_string(),
        "trash_entry": pinned.entry_name(now).to_string_lossy(),
        "dev": pinned.dev(),
        "ino": pinned.ino(),
        "force_archive": archive,
    });
    if archive {
        v["archive_ref"] = git::archive::archive_ref_base(&wt.name, now).into();
    }
    v
}

/// What is there now of the target of `i`, looked up without acting.
pub(in crate::act) fn found_now(
    root: &WorktreeRoot,
    labels: &processes::LabelNames,
    i: &OpenIntent,
) -> String {
    match i.action.as_str() {
        "terminate_process" => {
            let pid = i.detail["pid"].as_i64().unwrap_or(0) as i32;
            let start = i.detail["start_time"].as_u64();
            match processes::identity(pid, labels) {
                Some(id) if processes::is_alive_state(id.state) && Some(id.start_time) == start => {
                    format!("pid {pid} still runs (planned again like any agent)")
                }
                _ => format!("pid {pid} is gone"),
            }
        }
        "remove_worktree" => {
            let Some(path) = i.detail["path"].as_str().map(std::path::PathBuf::from) else {
                return "no path recorded".into();
            };
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
            let in_trash = trash::list(root)
                .map(|l| {
                    l.entries
                        .iter()
                        .filter(|e| Some(&e.worktree_id) == name.as_ref())
                        .count()
                })
                .unwrap_or(0);
            let place = if path.symlink_metadata().is_ok() {
                format!("{} is still in place (judged again)", path.display())
            } else {
                format!("{} is gone", path.display())
            };
            match in_trash {
                0 => place,
                n => format!("{place}; {n} trash entr(ies) of it wait for reclaim"),
            }
        }
        "stop_cgroup" => match i.detail["path"].as_str() {
            Some(path) => match crate::cgroup::members(std::path::Path::new(path)) {
                Ok(m) if !m.is_empty() => format!(
                    "{} process(es) still in {path} (planned again like any agent)",
                    m.len()
                ),
                _ => format!("{path} is empty or gone"),
            },
            None => "no path recorded".into(),
        },
        "delete_opencode_session" => {
            "the session is deleted by a later pass if the server still lists it".into()
        }
        _ => "the target is planned again like any other".into(),
    }
}
