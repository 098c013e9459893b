//! The audit record of each action: written for every change of verdict,
//! not for every pass that finds the same one again.
//!
//! # Guarantees
//! - An outcome that concludes an intent is always written.
//! - A deferral is never written: it is not a verdict, and the next pass
//!   decides.
//! - A worktree still kept at risk for the same reasons, a path refused
//!   again or an action skipped again for the same reason is written once,
//!   when the verdict is reached, and again only when it changes (test
//!   `a_repeated_verdict_is_recorded_once`).

use std::collections::HashMap;
use std::sync::Mutex;

use super::executor::Executor;
use super::outcome::{ActionResult, Outcome};
use super::unpoisoned::lock;
use crate::plan::Target;
use crate::store::AuditRecord;

/// The verdict last recorded per target.
#[derive(Default)]
pub struct Recorded {
    last: Mutex<HashMap<Target, String>>,
}

impl Recorded {
    /// Whether an outcome without an intent deserves a record; remembers it
    /// when it does.
    pub fn worth(&self, target: &Target, outcome: &Outcome, text: &str) -> bool {
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
        let mut last = lock(&self.last);
        if repeats && last.get(target) == Some(&verdict) {
            return false;
        }
        last.insert(target.clone(), verdict);
        true
    }
}

impl Executor {
    /// Writes the audit record of a result (and logs it), unless it repeats
    /// the verdict last recorded for the same target; an outcome that
    /// concludes an intent is always written. Answers why the record could
    /// not be written, if it could not.
    pub(super) async fn record(&self, r: &ActionResult, target: &Target) -> Option<String> {
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
        match self.store.append_audit(&audit).await {
            Ok(_) => None,
            Err(e) => {
                tracing::error!(error = %e, target = %r.target, "cannot write audit record");
                if r.intent_id.is_some() {
                    // Its intent stays open: conclude it once the
                    // database answers again.
                    self.settle_needed
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                }
                Some(format!(
                    "the audit record of {} {} could not be written: {e}",
                    r.action.name(),
                    r.target
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
