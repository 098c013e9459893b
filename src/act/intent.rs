//! The write-ahead audit of destructive steps: an `intent` record before
//! the step, the outcome after it naming the intent, and, for intents a
//! crash or a lost database left open, a record of what a later pass found.
//!
//! # Guarantees
//! - No destructive step without its intent written first and the host
//!   lock confirmed after it ([`Executor::announce`]).
//! - Every intent is concluded: by its outcome, or by an `interrupted`
//!   record from the first pass that can write one ([`Executor::settle`];
//!   test `an_intent_left_by_a_crash_is_concluded_with_what_was_found`, and the crash tests of `tests/crash.rs`).
//!   Intents of actions still running are never concluded as interrupted.

use std::sync::atomic::Ordering;
use std::time::SystemTime;

use super::executor::Executor;
use super::outcome::Outcome;
use super::process::terminated_outcome;
use super::unpoisoned::lock;
use super::{terminate, trash};
use crate::git;
use crate::observe::processes;
use crate::plan::{Action, WorktreeTarget};
use crate::root::WorktreeRoot;
use crate::store::{AuditRecord, OpenIntent};

impl Executor {
    /// Announces the destructive step of `action`: appends its `intent`
    /// record (its id goes to `intent`), then confirms the host lock. An
    /// error means the step must not be taken.
    pub(super) async fn announce(
        &self,
        action: &Action,
        detail: serde_json::Value,
        intent: &mut Option<i64>,
    ) -> Result<(), String> {
        let id = self
            .write_intent(
                &action.owner,
                action.name(),
                &action.key().to_string(),
                &action.reason,
                detail,
            )
            .await?;
        *intent = Some(id);
        self.fence
            .confirm()
            .await
            .map_err(|e| format!("not acting: {e}"))
    }

    /// Appends an `intent` record and marks it in flight.
    async fn write_intent(
        &self,
        owner: &crate::plan::Owner,
        action: &str,
        target: &str,
        reason: &str,
        detail: serde_json::Value,
    ) -> Result<i64, String> {
        let id = self
            .store
            .append_audit(&AuditRecord {
                host: self.host.clone(),
                chat_id: owner.chat_id.clone(),
                session_id: owner.session_id.clone(),
                action: action.to_string(),
                target: target.to_string(),
                outcome: "intent".into(),
                reason: reason.to_string(),
                detail,
                intent_id: None,
            })
            .await
            .map_err(|e| {
                format!("not acting: the intent audit record could not be written first: {e}")
            })?;
        lock(&self.in_flight).insert(id);
        Ok(id)
    }

    /// Concludes the intents left without an outcome (by a previous
    /// process that crashed, or an outcome that could not be written): each
    /// gets an `interrupted` record saying what is found now. Answers one
    /// line per intent concluded; the drift itself is planned again like
    /// any other. Does nothing unless an intent may be open.
    pub async fn settle(&self) -> Result<Vec<String>, String> {
        if !self.settle_needed.swap(false, Ordering::Relaxed) {
            return Ok(Vec::new());
        }
        let again = || self.settle_needed.store(true, Ordering::Relaxed);
        let open = self.store.open_intents(&self.host).await.map_err(|e| {
            again();
            format!("cannot read the intents left without an outcome: {e}")
        })?;
        let running = lock(&self.in_flight).clone();
        let mut lines = Vec::new();
        for i in open.into_iter().filter(|i| !running.contains(&i.id)) {
            let found = self.found_after(&i).await;
            let reason = format!(
                "intent #{} had no outcome (the controller stopped, or lost its database, during the action); found: {found}",
                i.id
            );
            let rec = AuditRecord {
                host: self.host.clone(),
                chat_id: i.chat_id.clone(),
                session_id: i.session_id.clone(),
                action: i.action.clone(),
                target: i.target.clone(),
                outcome: "interrupted".into(),
                reason: reason.clone(),
                detail: serde_json::json!({ "found": found, "intent": i.detail }),
                intent_id: Some(i.id),
            };
            if let Err(e) = self.store.append_audit(&rec).await {
                again();
                return Err(format!("cannot conclude intent #{}: {e}", i.id));
            }
            tracing::warn!(action = %i.action, target = %i.target, "{reason}");
            lines.push(format!("{} {}: {reason}", i.action, i.target));
        }
        Ok(lines)
    }

    /// What is there now of the target of an interrupted intent.
    async fn found_after(&self, i: &OpenIntent) -> String {
        let (root, labels, i) = (self.root.clone(), self.labels.clone(), i.clone());
        tokio::task::spawn_blocking(move || found_now(&root, &labels, &i))
            .await
            .unwrap_or_else(|e| format!("cannot look: {e}"))
    }
}

impl Executor {
    /// Terminates an agent found inside a worktree about to be removed,
    /// write-ahead like any signal: intent, lock confirmed, signal,
    /// outcome.
    pub(super) async fn terminate_inside(
        &self,
        action: &Action,
        target: &terminate::Target,
    ) -> Result<(), String> {
        let name = "terminate_process";
        let what = target.key().to_string();
        let reason = format!(
            "an agent of chat {} inside a worktree being removed",
            target.chat_id
        );
        let id = self
            .write_intent(
                &action.owner,
                name,
                &what,
                &reason,
                serde_json::json!(target),
            )
            .await?;
        let confirmed = self.fence.confirm().await;
        let (outcome, note) = match &confirmed {
            Ok(()) => {
                let t = self.stop_agent(target).await;
                let o = terminated_outcome(&t);
                let note = o.text();
                (o, note)
            }
            Err(e) => (
                Outcome::Failed {
                    error: format!("not acting: {e}"),
                },
                format!("not acting: {e}"),
            ),
        };
        let written = self
            .store
            .append_audit(&AuditRecord {
                host: self.host.clone(),
                chat_id: action.owner.chat_id.clone(),
                session_id: action.owner.session_id.clone(),
                action: name.into(),
                target: what,
                outcome: outcome.name().into(),
                reason: format!("{reason}: {note}"),
                detail: serde_json::json!({ "outcome": &outcome }),
                intent_id: Some(id),
            })
            .await;
        lock(&self.in_flight).remove(&id);
        if written.is_err() {
            self.settle_needed
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        confirmed.map_err(|e| format!("not acting: {e}"))
    }
}

/// What the intent of a worktree removal records: the directory, where it
/// is retired to, and for a force the archive ref it is about to write.
/// The trash entry it is retired as, and the `(device, inode)` of the
/// directory judged, which is the only directory that may move there
/// (the trash's own record of it is what the reclaimer goes by, see
/// [`trash`]).
pub(super) fn removal(
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
fn found_now(root: &WorktreeRoot, labels: &processes::LabelNames, i: &OpenIntent) -> String {
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
