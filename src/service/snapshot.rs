//! What `/status` and `/readyz` show: the last passes, the drift they left,
//! what backs off, and whether this instance is ready.
//!
//! # Guarantees
//! - The snapshot is updated after every pass that went through the queue
//!   ([`record`]); `/status` reads it without waiting for a pass.
//! - [`Status`] is the one definition of the document: the service
//!   serializes it, `boo-reconciler status` deserializes it (with its own
//!   reading of the two parts whose types do not deserialize, see
//!   [`crate::status::StatusDoc`]).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::leader::Role;
use super::Service;
use crate::act::trash::reclaim::TrashStatus;
use crate::act::{ActionResult, Outcome};
use crate::backoff::BackingOff;
use crate::model::Scope;
use crate::plan::Pending;
use crate::report::{KeptWorktree, PassReport, PassResult, Trigger};

/// How many recent passes `/status` lists.
const RECENT: usize = 20;

/// How long `/readyz` waits for the database (at most
/// `database.query_timeout`).
const READY_PING: Duration = Duration::from_secs(2);

/// What the passes left for `/status` and `/readyz`.
#[derive(Default)]
pub(super) struct State {
    last_pass: Option<Arc<PassReport>>,
    last_host_pass: Option<Arc<PassReport>>,
    last_host_pass_done: Option<Instant>,
    recent: VecDeque<RecentPass>,
    next_pass_at: Option<SystemTime>,
}

/// Keeps the last passes and their triggers.
pub(super) fn record(state: &Mutex<State>, report: &PassReport) {
    let report = Arc::new(report.clone());
    let mut st = state.lock();
    if report.scope == Scope::Host {
        st.last_host_pass = Some(Arc::clone(&report));
        st.last_host_pass_done = Some(Instant::now());
    }
    st.recent.push_front(RecentPass::of(&report));
    st.recent.truncate(RECENT);
    st.last_pass = Some(report);
}

/// One line of the pass history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecentPass {
    pub trigger: Trigger,
    #[serde(with = "scope_wire")]
    pub scope: Scope,
    pub started_at: String,
    pub duration_ms: u64,
    pub result: PassResult,
    pub actions: usize,
}

impl RecentPass {
    fn of(report: &PassReport) -> RecentPass {
        RecentPass {
            trigger: report.trigger,
            scope: report.scope.clone(),
            started_at: humantime::format_rfc3339_millis(report.started_at).to_string(),
            duration_ms: report.duration_ms,
            result: report.result(),
            actions: report.results.len(),
        }
    }
}

/// [`Scope`] on the wire (`{"scope": "chat", "id": "c1"}`): the planner's
/// type only serializes, and the planner stays free of what readers need.
mod scope_wire {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::model::Scope;

    #[derive(Deserialize)]
    #[serde(tag = "scope", content = "id", rename_all = "snake_case")]
    enum Wire {
        Host,
        Chat(String),
        Session(String),
    }

    pub fn serialize<S: Serializer>(scope: &Scope, s: S) -> Result<S::Ok, S::Error> {
        scope.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Scope, D::Error> {
        Ok(match Wire::deserialize(d)? {
            Wire::Host => Scope::Host,
            Wire::Chat(id) => Scope::Chat(id),
            Wire::Session(id) => Scope::Session(id),
        })
    }
}

/// Drift that the last host pass left: not done, with the reason.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriftItem {
    pub target: String,
    pub kind: String,
    pub state: String,
    pub reason: String,
}

impl DriftItem {
    fn from_result(a: &ActionResult) -> DriftItem {
        DriftItem {
            target: a.target.to_string(),
            kind: a.action.name().into(),
            state: a.outcome.name().into(),
            reason: a.action.reason.clone(),
        }
    }

    fn from_pending(p: &Pending) -> DriftItem {
        DriftItem {
            target: p.target.to_string(),
            kind: "pending".into(),
            state: "pending".into(),
            reason: p.why.clone(),
        }
    }

    /// What the host pass left undone: actions neither done nor skipped,
    /// then what it left pending.
    fn left_by(pass: &PassReport) -> Vec<DriftItem> {
        pass.results
            .iter()
            .filter(|a| !matches!(a.outcome, Outcome::Done { .. } | Outcome::Skipped { .. }))
            .map(DriftItem::from_result)
            .chain(pass.pending.iter().map(DriftItem::from_pending))
            .collect()
    }
}

/// The `/status` document. The service shows its own pass reports and
/// trash; a reader picks the types it reads them as.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Status<Pass = Arc<PassReport>, Trash = TrashStatus> {
    pub version: String,
    pub host: String,
    #[serde(flatten)]
    pub role: Role,
    pub started_at: String,
    pub uptime_secs: u64,
    /// The settings, secrets left out.
    pub config: serde_json::Value,
    pub last_pass: Option<Pass>,
    pub last_host_pass: Option<Pass>,
    pub pending_drift: Vec<DriftItem>,
    pub at_risk: Vec<KeptWorktree>,
    pub backoff: Vec<BackingOff>,
    pub next_pass_at: Option<String>,
    pub queue_depth: usize,
    pub recent_passes: Vec<RecentPass>,
    /// Retired worktrees waiting for the reclaimer, and those it cannot
    /// delete.
    pub trash: Trash,
}

impl Service {
    pub(super) fn set_next_pass_at(&self, at: SystemTime) {
        self.state.lock().next_pass_at = Some(at);
    }

    /// `Ok` when the database answers, this instance leads, and a host pass
    /// finished within three intervals; otherwise why not.
    pub async fn ready(&self) -> Result<(), String> {
        match self.role() {
            Role::Standby { why } => return Err(format!("standby: {why}")),
            Role::Unsure { why } => return Err(format!("unsure of the host lock: {why}")),
            Role::Leader => {}
        }
        // A readiness probe gives up within a second or two: answer
        // before it does, however long a query may take.
        let bound = READY_PING.min(self.controller.config().database.query_timeout);
        match tokio::time::timeout(bound, self.controller.store().ping()).await {
            Ok(r) => r.map_err(|e| e.to_string())?,
            Err(_) => {
                return Err(format!(
                    "the database did not answer within {}",
                    humantime::format_duration(bound)
                ))
            }
        }
        let last = self.state.lock().last_host_pass_done;
        fresh(last, self.controller.config().r#loop.interval * 3)
    }

    /// Everything `/status` shows.
    pub fn status(&self) -> Status {
        let st = self.state.lock();
        let host = st.last_host_pass.clone();
        let executor = self.controller.executor();
        Status {
            version: env!("CARGO_PKG_VERSION").into(),
            host: self.controller.config().host.id.clone(),
            role: self.role(),
            started_at: humantime::format_rfc3339_seconds(self.started_at).to_string(),
            uptime_secs: self.started.elapsed().as_secs(),
            config: serde_json::to_value(self.controller.config().summary())
                .unwrap_or(serde_json::Value::Null),
            last_pass: st.last_pass.clone(),
            last_host_pass: host.clone(),
            pending_drift: host.as_deref().map(DriftItem::left_by).unwrap_or_default(),
            at_risk: host.map(|r| r.at_risk.clone()).unwrap_or_default(),
            backoff: executor.backoff_snapshot(),
            next_pass_at: st
                .next_pass_at
                .map(|t| humantime::format_rfc3339_seconds(t).to_string()),
            queue_depth: self.queue.depth(),
            recent_passes: st.recent.iter().cloned().collect(),
            trash: executor.reclaimer().status(),
        }
    }
}

/// Whether the last host pass finished within `limit`.
fn fresh(last: Option<Instant>, limit: Duration) -> Result<(), String> {
    match last {
        Some(t) if t.elapsed() <= limit => Ok(()),
        Some(t) => Err(format!(
            "the last host pass finished {} ago, more than three intervals",
            humantime::format_duration(Duration::from_secs(t.elapsed().as_secs()))
        )),
        None => Err("no host pass has finished yet".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recent_pass_keeps_its_wire_form() {
        let p = RecentPass {
            trigger: Trigger::Nudge,
            scope: Scope::Chat("c1".into()),
            started_at: "t".into(),
            duration_ms: 4,
            result: PassResult::AtRisk,
            actions: 2,
        };
        let text = serde_json::to_string(&p).unwrap();
        assert_eq!(
            text,
            r#"{"trigger":"nudge","scope":{"scope":"chat","id":"c1"},"started_at":"t","duration_ms":4,"result":"at_risk","actions":2}"#
        );
        assert_eq!(serde_json::from_str::<RecentPass>(&text).unwrap(), p);
        let host = serde_json::json!({"trigger": "interval", "scope": {"scope": "host"},
            "started_at": "t", "duration_ms": 1, "result": "converged", "actions": 0});
        let back: RecentPass = serde_json::from_value(host).unwrap();
        assert_eq!(back.scope, Scope::Host);
        assert_eq!(
            serde_json::to_string(&back.scope).unwrap(),
            r#"{"scope":"host"}"#
        );
    }

    #[test]
    fn a_backoff_entry_counts_whole_seconds_to_the_next_attempt() {
        let b = BackingOff::new(
            "process:1".into(),
            3,
            Duration::from_millis(2900),
            "x".into(),
        );
        assert_eq!(
            serde_json::to_string(&b).unwrap(),
            r#"{"target":"process:1","failures":3,"next_attempt_in_secs":2,"last_error":"x"}"#
        );
    }

    #[test]
    fn readiness_needs_a_host_pass_within_the_limit() {
        let limit = Duration::from_secs(60);
        assert!(fresh(Some(Instant::now()), limit).is_ok());
        assert_eq!(
            fresh(None, limit).unwrap_err(),
            "no host pass has finished yet"
        );
        let old = Instant::now().checked_sub(Duration::from_secs(120));
        if let Some(old) = old {
            assert!(fresh(Some(old), limit)
                .unwrap_err()
                .contains("more than three intervals"));
        }
    }
}
