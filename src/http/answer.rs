//! The bodies the HTTP API answers with, as types: the service serializes
//! them and the client reads them back.
//!
//! Every body goes out through [`json`], which orders its keys: the
//! answers have always been sorted maps, and clients compare them byte for
//! byte. The parts whose types only serialize (an action's owner and kind,
//! what a pass left pending) are type parameters, so that a reader picks
//! its own reading of them.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use crate::act::{ActionResult, Outcome};
use crate::plan::{self, Action, Scope};
use crate::report::{KeptWorktree, PassReport, PassResult, Trigger};
use crate::risk::AtRisk;

/// `body` with `status`, its keys in order.
pub fn json<T: Serialize>(status: StatusCode, body: &T) -> Response {
    let value = serde_json::to_value(body).unwrap_or(serde_json::Value::Null);
    (status, Json(value)).into_response()
}

/// Every error: `{"error": "…"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorAnswer {
    pub error: String,
}

/// `/healthz`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub ok: bool,
}

/// `/readyz`: ready, or why not.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Readiness {
    pub ready: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Which kind of scope a nudge reconciled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScopeKind {
    Host,
    Chat,
    Session,
}

impl ScopeKind {
    /// The word, as serialized.
    pub const fn as_str(self) -> &'static str {
        match self {
            ScopeKind::Host => "host",
            ScopeKind::Chat => "chat",
            ScopeKind::Session => "session",
        }
    }
}

impl From<&Scope> for ScopeKind {
    fn from(s: &Scope) -> ScopeKind {
        match s {
            Scope::Host => ScopeKind::Host,
            Scope::Chat(_) => ScopeKind::Chat,
            Scope::Session(_) => ScopeKind::Session,
        }
    }
}

/// Who a nudge was about, and whether they are live now (`null` when that
/// could not be read; the errors say why).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Subject {
    Chat {
        chat_id: String,
        live: Option<bool>,
        known: Option<bool>,
    },
    Session {
        session_id: String,
        live: Option<bool>,
        known: Option<bool>,
    },
    Host {},
}

impl Subject {
    /// The chat's or session's id; `None` for the host.
    pub fn id(&self) -> Option<&str> {
        match self {
            Subject::Chat { chat_id: id, .. } | Subject::Session { session_id: id, .. } => Some(id),
            Subject::Host {} => None,
        }
    }
}

/// The answer to a nudge: what the run did (or, dry, would do).
///
/// To read one back, only what it is about is required (scope, subject,
/// result, duration, actions, what was kept, errors): the rest has
/// defaults, so that a reader which shows an answer asks for no more than
/// it shows. What the pass kept at risk is a type parameter like the
/// others.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NudgeAnswer<
    Owner = plan::Owner,
    Kind = plan::ActionKind,
    Pending = plan::Pending,
    Kept = KeptWorktree,
> {
    pub scope: ScopeKind,
    #[serde(flatten)]
    pub subject: Subject,
    #[serde(default)]
    pub ok: bool,
    pub result: PassResult,
    #[serde(default)]
    pub dry_run: bool,
    #[serde(default)]
    pub force: bool,
    /// Every answer is a nudge's: one without its trigger was one.
    #[serde(default = "nudged")]
    pub trigger: Trigger,
    #[serde(default)]
    pub started_at: String,
    pub duration_ms: u64,
    #[serde(bound(
        deserialize = "Owner: Deserialize<'de> + Default, Kind: Deserialize<'de> + Default"
    ))]
    pub actions: Vec<ActionAnswer<Owner, Kind>>,
    pub at_risk: Vec<Kept>,
    #[serde(default)]
    pub pending: Vec<Pending>,
    pub errors: Vec<String>,
    /// The close hook's keys, on its routes only.
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub legacy: Option<Legacy>,
}

fn nudged() -> Trigger {
    Trigger::Nudge
}

impl NudgeAnswer {
    /// The answer for `report`; `errors` are the nudge's own (reading
    /// liveness), and make it an error whatever the pass came to.
    pub fn of(report: &PassReport, subject: Subject, errors: Vec<String>) -> NudgeAnswer {
        let result = if errors.is_empty() {
            report.result()
        } else {
            PassResult::Error
        };
        let actions = if report.dry_run {
            report.planned.iter().map(ActionAnswer::planned).collect()
        } else {
            report.results.iter().map(ActionAnswer::taken).collect()
        };
        NudgeAnswer {
            scope: ScopeKind::from(&report.scope),
            subject,
            ok: result != PassResult::Error,
            result,
            dry_run: report.dry_run,
            force: report.force,
            trigger: report.trigger,
            started_at: humantime::format_rfc3339_millis(report.started_at).to_string(),
            duration_ms: report.duration_ms,
            actions,
            at_risk: report.at_risk.clone(),
            pending: report.pending.clone(),
            errors: report.errors.iter().cloned().chain(errors).collect(),
            legacy: None,
        }
    }
}

/// One action of a nudge's answer: taken (with its outcome) or, in a dry
/// run, planned.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ActionAnswer<Owner = plan::Owner, Kind = plan::ActionKind> {
    pub kind: String,
    pub target: String,
    pub outcome: String,
    pub reason: String,
    pub message: String,
    #[serde(default)]
    pub detail: serde_json::Value,
    #[serde(default)]
    pub owner: Owner,
    #[serde(default)]
    pub action: Kind,
    /// Absent from a planned action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// Only on a worktree kept at risk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_risk_reasons: Option<Vec<AtRisk>>,
}

impl ActionAnswer {
    fn taken(r: &ActionResult) -> ActionAnswer {
        ActionAnswer {
            kind: r.action.name().into(),
            target: r.target.clone(),
            outcome: r.outcome.name().into(),
            reason: r.action.reason.clone(),
            message: r.outcome.text(),
            detail: r.detail.clone(),
            owner: r.action.owner.clone(),
            action: r.action.kind.clone(),
            duration_ms: Some(r.duration_ms),
            at_risk_reasons: match &r.outcome {
                Outcome::KeptAtRisk { reasons, .. } => Some(reasons.clone()),
                _ => None,
            },
        }
    }

    fn planned(a: &Action) -> ActionAnswer {
        ActionAnswer {
            kind: a.name().into(),
            target: a.target(),
            outcome: "planned".into(),
            reason: a.reason.clone(),
            message: String::new(),
            detail: serde_json::Value::Null,
            owner: a.owner.clone(),
            action: a.kind.clone(),
            duration_ms: None,
            at_risk_reasons: None,
        }
    }
}

/// The keys the orchestrator's close hook answered with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Legacy {
    #[serde(rename = "chatId", default, skip_serializing_if = "Option::is_none")]
    pub chat_id: Option<String>,
    #[serde(rename = "sessionId", default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    pub disposed: usize,
    #[serde(rename = "worktreeRemoved")]
    pub worktree_removed: bool,
    #[serde(rename = "worktreeAtRisk")]
    pub worktree_at_risk: bool,
    #[serde(rename = "atRiskReasons")]
    pub at_risk_reasons: Vec<String>,
}

impl Legacy {
    pub fn of(report: &PassReport, subject: &Subject) -> Legacy {
        let done = || {
            report
                .results
                .iter()
                .filter(|r| matches!(r.outcome, Outcome::Done { .. }))
        };
        let disposed = done()
            .filter(|r| {
                matches!(
                    r.action.name(),
                    "terminate_process" | "delete_opencode_session" | "close_agent_row"
                )
            })
            .count();
        let (chat_id, session_id) = match subject {
            Subject::Chat { chat_id, .. } => (Some(chat_id.clone()), None),
            Subject::Session { session_id, .. } => (None, Some(session_id.clone())),
            Subject::Host {} => (None, None),
        };
        Legacy {
            chat_id,
            session_id,
            disposed,
            worktree_removed: done().any(|r| r.action.name() == "remove_worktree"),
            worktree_at_risk: !report.at_risk.is_empty(),
            at_risk_reasons: report
                .at_risk
                .iter()
                .flat_map(|k| k.reasons.iter().map(ToString::to_string))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> PassReport {
        PassReport {
            trigger: Trigger::Nudge,
            scope: Scope::Chat("c1".into()),
            dry_run: false,
            force: false,
            started_at: std::time::UNIX_EPOCH,
            duration_ms: 7,
            observed: Default::default(),
            planned: Vec::new(),
            results: Vec::new(),
            pending: Vec::new(),
            at_risk: Vec::new(),
            errors: Vec::new(),
            warnings: Vec::new(),
            state_unreadable: None,
        }
    }

    fn body(r: Response) -> String {
        let bytes = futures_body(r);
        String::from_utf8(bytes).unwrap()
    }

    fn futures_body(r: Response) -> Vec<u8> {
        use http_body_util::BodyExt;
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(r.into_body().collect())
            .unwrap()
            .to_bytes()
            .to_vec()
    }

    #[test]
    fn a_close_hook_answer_keeps_its_keys_sorted_as_ever() {
        let r = report();
        let subject = Subject::Chat {
            chat_id: "c1".into(),
            live: Some(false),
            known: None,
        };
        let mut a = NudgeAnswer::of(&r, subject.clone(), Vec::new());
        a.legacy = Some(Legacy::of(&r, &subject));
        let text = body(json(StatusCode::OK, &a));
        assert_eq!(
            text,
            concat!(
                r#"{"actions":[],"atRiskReasons":[],"at_risk":[],"chatId":"c1","chat_id":"c1","#,
                r#""disposed":0,"dry_run":false,"duration_ms":7,"errors":[],"force":false,"#,
                r#""known":null,"live":false,"ok":true,"pending":[],"result":"converged","#,
                r#""scope":"chat","started_at":"1970-01-01T00:00:00.000Z","trigger":"nudge","#,
                r#""worktreeAtRisk":false,"worktreeRemoved":false}"#
            )
        );
        let back: NudgeAnswer<serde_json::Value, serde_json::Value, serde_json::Value> =
            serde_json::from_str(&text).unwrap();
        assert_eq!(back.subject, subject);
        assert_eq!(back.legacy, a.legacy);
        assert_eq!(back.result, PassResult::Converged);
    }

    #[test]
    fn a_host_answer_has_no_subject_keys_and_its_own_errors_fail_it() {
        let mut r = report();
        r.scope = Scope::Host;
        let a = NudgeAnswer::of(&r, Subject::Host {}, vec!["cannot read".into()]);
        let text = body(json(StatusCode::OK, &a));
        assert_eq!(
            text,
            concat!(
                r#"{"actions":[],"at_risk":[],"dry_run":false,"duration_ms":7,"#,
                r#""errors":["cannot read"],"force":false,"ok":false,"pending":[],"#,
                r#""result":"error","scope":"host","started_at":"1970-01-01T00:00:00.000Z","#,
                r#""trigger":"nudge"}"#
            )
        );
        let back: NudgeAnswer<serde_json::Value, serde_json::Value, serde_json::Value> =
            serde_json::from_str(&text).unwrap();
        assert_eq!(back.subject, Subject::Host {});
        assert_eq!(back.legacy, None);
    }

    #[test]
    fn the_small_answers_keep_their_bodies() {
        let cases = [
            (json(StatusCode::OK, &Health { ok: true }), r#"{"ok":true}"#),
            (
                json(
                    StatusCode::OK,
                    &Readiness {
                        ready: true,
                        error: None,
                    },
                ),
                r#"{"ready":true}"#,
            ),
            (
                json(
                    StatusCode::OK,
                    &Readiness {
                        ready: false,
                        error: Some("x".into()),
                    },
                ),
                r#"{"error":"x","ready":false}"#,
            ),
            (
                json(StatusCode::OK, &ErrorAnswer { error: "e".into() }),
                r#"{"error":"e"}"#,
            ),
        ];
        for (r, want) in cases {
            assert_eq!(body(r), want);
        }
    }
}
