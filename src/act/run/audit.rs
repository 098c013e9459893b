//! The audit: the record of each action, and the write-ahead `intent`
//! before each destructive step. [`Audit`] owns what that takes: the
//! store it writes to, the host lock it confirms, the last verdict per
//! target, the intents still in flight, and whether some intent may be
//! left open.
//!
//! # Guarantees
//! - No destructive step without its intent written first and the host
//!   lock confirmed after it ([`Audit::announce`]; test
//!   `no_step_is_announced_without_its_intent_and_the_lock`).
//! - An outcome that concludes an intent is always written.
//! - Every intent is concluded: by its outcome, or by an `interrupted`
//!   record from the first pass that can write one ([`Audit::settle`];
//!   tests `an_intent_left_open_is_concluded_once_and_never_while_in_flight`,
//!   `an_outcome_that_could_not_be_written_is_settled_later`, and the crash
//!   tests of `tests/crash.rs`). Intents of actions still running are
//!   never concluded as interrupted.
//! - A deferral is never written: it is not a verdict, and the next pass
//!   decides.
//! - A worktree still kept at risk for the same reasons, a path refused
//!   again or an action skipped again for the same reason is written once,
//!   when the verdict is reached, and again only when it changes (test
//!   `a_repeated_verdict_is_recorded_once`).

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::act::run::outcome::{ActError, ActionResult, Outcome};
use crate::plan::{Action, Owner, Target};
use crate::store::lock::Fence;
use crate::store::{AuditRecord, OpenIntent, Store, StoreError};

/// The verdict last recorded per target.
#[derive(Default)]
struct Recorded {
    last: Mutex<HashMap<Target, String>>,
}

impl Recorded {
    /// Whether an outcome without an intent deserves a record; remembers it
    /// when it does.
    fn worth(&self, target: &Target, outcome: &Outcome, text: &str) -> bool {
        if matches!(outcome, Outcome::Deferred { .. }) {
            return false;
        }
        if matches!(
            outcome,
            Outcome::KeptAtRisk {
                unchanged: true,
                ..
            }
        ) {
            return false;
        }
        let verdict = format!("{}:{text}", outcome.name());
        let repeats = matches!(
            outcome,
            Outcome::KeptAtRisk { .. } | Outcome::Refused { .. } | Outcome::Skipped { .. }
        );
        let mut last = self.last.lock();
        if repeats && last.get(target) == Some(&verdict) {
            return false;
        }
        last.insert(target.clone(), verdict);
        true
    }
}

/// The audit of one host's actions.
pub struct Audit {
    store: Store,
    host: String,
    /// The host lock, confirmed before every destructive step.
    fence: Arc<Fence>,
    /// The last verdict recorded per target, so that the audit table gets
    /// changes, not repeats.
    recorded: Recorded,
    /// Intents written by actions still running: never concluded as
    /// interrupted.
    in_flight: Mutex<HashSet<i64>>,
    /// Whether some intent may be left without an outcome: at start (a
    /// previous process may have crashed) and after an outcome record
    /// failed to be written.
    settle_needed: AtomicBool,
}

impl Audit {
    /// The audit of `host`, confirming `fence` before every destructive
    /// step. Its first [`Audit::settle`] looks for intents a previous
    /// process left open.
    pub fn new(store: Store, host: String, fence: Arc<Fence>) -> Audit {
        Audit {
            store,
            host,
            fence,
            recorded: Recorded::default(),
            in_flight: Mutex::new(HashSet::new()),
            settle_needed: AtomicBool::new(true),
        }
    }

    /// The host lock every destructive step is confirmed against.
    pub fn fence(&self) -> &Arc<Fence> {
        &self.fence
    }

    /// Writes the audit record of a result (and logs it), unless it repeats
    /// the verdict last recorded for the same target; an outcome that
    /// concludes an intent is always written, and its intent is no longer
    /// in flight. Answers why the record could not be written, if it could
    /// not.
    pub async fn record(&self, r: &ActionResult, target: &Target) -> Option<String> {
        let text = r.outcome.text();
        let worth = r.intent_id.is_some() || self.recorded.worth(target, &r.outcome, &text);
        match &r.outcome {
            Outcome::Failed { .. } => {
                tracing::warn!(action = r.action.name(), target = %r.target, reason = %r.action.reason, outcome = r.outcome.name(), "{text}")
            }
            // The same verdict again (a worktree still kept, a deferral):
            // at info it would repeat every kept worktree every pass;
            // `/status` and the report still show it.
            _ if !worth => {
                tracing::debug!(action = r.action.name(), target = %r.target, reason = %r.action.reason, outcome = r.outcome.name(), "{text} (as last recorded)")
            }
            _ => {
                tracing::info!(action = r.action.name(), target = %r.target, reason = %r.action.reason, outcome = r.outcome.name(), "{text}")
            }
        }
        if !worth {
            return None;
        }
        let detail = serde_json::json!({
            "action": &r.action.kind,
            "outcome": &r.outcome,
            "detail": &r.detail,
        });
        let audit = AuditRecord {
            host: self.host.clone(),
            chat_id: r.action.owner.chat_id.clone(),
            session_id: r.action.owner.session_id.clone(),
            action: r.action.name().to_string(),
            target: r.target.to_string(),
            outcome: r.outcome.name().to_string(),
            reason: if text.is_empty() {
                r.action.reason.clone()
            } else {
                format!("{}: {text}", r.action.reason)
            },
            detail,
            intent_id: r.intent_id,
        };
        let written = self.conclude(r.intent_id, &audit).await;
        match written {
            Ok(()) => None,
            Err(e) => {
                tracing::error!(error = %e, target = %r.target, "cannot write audit record");
                Some(format!(
                    "the audit record of {} {} could not be written: {e}",
                    r.action.name(),
                    r.target
                ))
            }
        }
    }

    /// Announces the destructive step of `action`: appends its `intent`
    /// record (its id goes to `intent`), then confirms the host lock. An
    /// error means the step must not be taken.
    pub async fn announce(
        &self,
        action: &Action,
        detail: serde_json::Value,
        intent: &mut Option<i64>,
    ) -> Result<(), ActError> {
        let id = self
            .intend(
                &action.owner,
                action.name(),
                &action.key().to_string(),
                &action.reason,
                detail,
            )
            .await?;
        *intent = Some(id);
        self.confirm().await
    }

    /// Appends an `intent` record and marks it in flight until
    /// [`Audit::conclude`].
    pub async fn intend(
        &self,
        owner: &Owner,
        action: &str,
        target: &str,
        reason: &str,
        detail: serde_json::Value,
    ) -> Result<i64, ActError> {
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
            .map_err(ActError::IntentNotWritten)?;
        self.in_flight.lock().insert(id);
        Ok(id)
    }

    /// Confirms the host lock: an error means no destructive step may be
    /// taken now.
    pub async fn confirm(&self) -> Result<(), ActError> {
        self.fence.confirm().await.map_err(ActError::NotConfirmed)
    }

    /// Appends `record`, the outcome of the intent `intent` (if any): that
    /// intent is no longer in flight, and when the record cannot be
    /// written it is left for [`Audit::settle`] to conclude.
    pub async fn conclude(
        &self,
        intent: Option<i64>,
        record: &AuditRecord,
    ) -> Result<(), StoreError> {
        let written = self.store.append_audit(record).await;
        if let Some(id) = intent {
            if written.is_err() {
                // Its intent stays open: conclude it once the database
                // answers again.
                self.settle_needed.store(true, Ordering::Relaxed);
            }
            self.in_flight.lock().remove(&id);
        }
        written.map(|_| ())
    }

    /// Concludes the intents left without an outcome (by a previous
    /// process that crashed, or an outcome that could not be written): each
    /// gets an `interrupted` record saying what `found` finds now. Answers
    /// one line per intent concluded; the drift itself is planned again
    /// like any other. Does nothing unless an intent may be open.
    pub async fn settle<F, Fut>(&self, found: F) -> Result<Vec<String>, String>
    where
        F: Fn(OpenIntent) -> Fut,
        Fut: Future<Output = String>,
    {
        if !self.settle_needed.swap(false, Ordering::Relaxed) {
            return Ok(Vec::new());
        }
        let again = || self.settle_needed.store(true, Ordering::Relaxed);
        let open = self.store.open_intents(&self.host).await.map_err(|e| {
            again();
            format!("cannot read the intents left without an outcome: {e}")
        })?;
        let running = self.in_flight.lock().clone();
        let mut lines = Vec::new();
        for i in open.into_iter().filter(|i| !running.contains(&i.id)) {
            let found = found(i.clone()).await;
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Owner;

    fn refused(why: &str) -> Outcome {
        Outcome::Refused { why: why.into() }
    }

    #[test]
    fn a_repeated_verdict_is_recorded_once() {
        let r = Recorded::default();
        let t = Target::WorktreeRow("w1".into());
        assert!(r.worth(&t, &refused("outside"), "outside"));
        assert!(!r.worth(&t, &refused("outside"), "outside"));
        assert!(
            r.worth(&t, &refused("a symlink"), "a symlink"),
            "a change is recorded"
        );
        let other = Target::WorktreeRow("w2".into());
        assert!(
            r.worth(&other, &refused("a symlink"), "a symlink"),
            "per target"
        );
    }

    #[test]
    fn a_deferral_or_an_unchanged_kept_verdict_is_never_recorded() {
        let r = Recorded::default();
        let t = Target::Worktree("/w".into());
        let deferred = Outcome::Deferred { why: "x".into() };
        assert!(!r.worth(&t, &deferred, "x"));
        let unchanged = Outcome::KeptAtRisk {
            reasons: vec![],
            unchanged: true,
        };
        assert!(!r.worth(&t, &unchanged, ""));
    }

    #[test]
    fn a_done_outcome_is_recorded_every_time() {
        let r = Recorded::default();
        let t = Target::AgentRow("a".into());
        let done = Outcome::Done {
            note: "row closed".into(),
        };
        assert!(r.worth(&t, &done, "row closed"));
        assert!(r.worth(&t, &done, "row closed"));
    }

    /// A SQLite store of its own, migrated, with a second connection that
    /// injects faults into it.
    async fn store() -> (tempfile::TempDir, Store, sqlx::SqlitePool) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("audit.db").display());
        let store = Store::connect(&url).await.unwrap();
        store.migrate().await.unwrap();
        let raw = sqlx::SqlitePool::connect(&url).await.unwrap();
        (dir, store, raw)
    }

    /// Every insert into the audit table that `when` holds for fails from
    /// now on, until [`heal`].
    async fn refuse(raw: &sqlx::SqlitePool, when: &str) {
        let sql = format!(
            "CREATE TRIGGER refuse BEFORE INSERT ON reconciler_audit \
             WHEN {when} BEGIN SELECT RAISE(ABORT, 'injected'); END"
        );
        sqlx::query(&sql).execute(raw).await.unwrap();
    }

    async fn heal(raw: &sqlx::SqlitePool) {
        sqlx::query("DROP TRIGGER refuse")
            .execute(raw)
            .await
            .unwrap();
    }

    async fn outcomes(store: &Store) -> Vec<(String, Option<i64>)> {
        let records = store.audit_records().await.unwrap();
        records
            .into_iter()
            .map(|r| (r.outcome, r.intent_id))
            .collect()
    }

    fn action() -> Action {
        Action {
            kind: crate::plan::ActionKind::RemoveCgroup {
                path: "/sys/fs/cgroup/boo/x".into(),
            },
            owner: Owner::default(),
            reason: "its chat is closed".into(),
        }
    }

    fn outcome_of(intent: i64) -> AuditRecord {
        AuditRecord {
            host: "h".into(),
            chat_id: None,
            session_id: None,
            action: "remove_cgroup".into(),
            target: "x".into(),
            outcome: "done".into(),
            reason: "removed".into(),
            detail: serde_json::Value::Null,
            intent_id: Some(intent),
        }
    }

    /// An intent of `audit` on `target`, left in flight.
    async fn intend(audit: &Audit, target: &str) -> i64 {
        let owner = Owner::default();
        let detail = serde_json::json!({});
        let id = audit.intend(&owner, "remove_cgroup", target, "r", detail);
        id.await.unwrap()
    }

    async fn held_fence(store: &Store) -> Arc<Fence> {
        let fence = Arc::new(Fence::new(std::time::Duration::from_secs(5)));
        fence.install(store.try_lock_host("h").await.unwrap().expect("free"));
        fence
    }

    #[tokio::test]
    async fn no_step_is_announced_without_its_intent_and_the_lock() {
        let (_dir, store, raw) = store().await;
        // Without the host lock: the intent is written first, and the
        // step is refused after it.
        let unheld = Audit::new(
            store.clone(),
            "h".into(),
            Arc::new(Fence::new(std::time::Duration::from_secs(5))),
        );
        let mut intent = None;
        let e = unheld
            .announce(&action(), serde_json::json!({}), &mut intent)
            .await;
        let e = e.unwrap_err();
        assert!(matches!(e, ActError::NotConfirmed(_)), "{e:?}");
        let text = e.to_string();
        assert!(
            text.starts_with("not acting: ") && text.contains("does not hold the host lock"),
            "{text}"
        );
        let written = intent.expect("the intent is written before the lock is asked");
        assert_eq!(outcomes(&store).await, [("intent".to_string(), None)]);

        // With the lock but no intent written: refused, and nothing else.
        let audit = Audit::new(store.clone(), "h".into(), held_fence(&store).await);
        refuse(&raw, "1").await;
        let mut intent = None;
        let e = audit
            .announce(&action(), serde_json::json!({}), &mut intent)
            .await;
        let e = e.unwrap_err();
        assert!(matches!(e, ActError::IntentNotWritten(_)), "{e:?}");
        let text = e.to_string();
        assert!(
            text.starts_with("not acting: the intent audit record could not be written first: ")
                && text.contains("injected"),
            "{text}"
        );
        assert_eq!(intent, None);
        heal(&raw).await;

        // Both: the step may be taken, its intent named.
        let mut intent = None;
        audit
            .announce(&action(), serde_json::json!({"pid": 7}), &mut intent)
            .await
            .unwrap();
        assert!(intent.is_some_and(|id| id != written));
        assert_eq!(outcomes(&store).await.len(), 2);
    }

    #[tokio::test]
    async fn an_intent_left_open_is_concluded_once_and_never_while_in_flight() {
        let (_dir, store, _raw) = store().await;
        let fence = held_fence(&store).await;
        // A process that wrote an intent and died before its outcome.
        let crashed = Audit::new(store.clone(), "h".into(), Arc::clone(&fence));
        let left = intend(&crashed, "x").await;
        drop(crashed);

        let audit = Audit::new(store.clone(), "h".into(), fence);
        let running = intend(&audit, "y").await;
        let lines = audit
            .settle(|i| async move { format!("looked at {}", i.target) })
            .await
            .unwrap();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].contains(&format!("intent #{left} had no outcome"))
                && lines[0].ends_with("found: looked at x"),
            "{lines:?}"
        );
        assert_eq!(
            outcomes(&store).await,
            [
                ("intent".to_string(), None),
                ("intent".to_string(), None),
                ("interrupted".to_string(), Some(left)),
            ],
            "the intent in flight is not concluded"
        );
        // Nothing may be open any more: no second look, no second record.
        let again = audit
            .settle(|_| async { unreachable!("nothing to look at") })
            .await;
        assert_eq!(again.unwrap(), Vec::<String>::new());
        audit
            .conclude(Some(running), &outcome_of(running))
            .await
            .unwrap();
        assert_eq!(
            outcomes(&store).await.last(),
            Some(&("done".to_string(), Some(running)))
        );
    }

    #[tokio::test]
    async fn an_outcome_that_could_not_be_written_is_settled_later() {
        let (_dir, store, raw) = store().await;
        let audit = Audit::new(store.clone(), "h".into(), held_fence(&store).await);
        assert!(audit
            .settle(|_| async { String::new() })
            .await
            .unwrap()
            .is_empty());
        let id = intend(&audit, "x").await;
        refuse(&raw, "NEW.outcome <> 'intent'").await;
        let e = audit.conclude(Some(id), &outcome_of(id)).await.unwrap_err();
        assert!(e.to_string().contains("injected"), "{e}");
        // While the database refuses, the intent stays to be settled.
        assert!(audit.settle(|_| async { "gone".into() }).await.is_err());
        heal(&raw).await;
        let lines = audit.settle(|_| async { "gone".into() }).await.unwrap();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert_eq!(
            outcomes(&store).await.last(),
            Some(&("interrupted".to_string(), Some(id)))
        );
    }
}
