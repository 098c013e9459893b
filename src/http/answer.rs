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
use std::collections::BTreeMap;

use crate::act::{ActionResult, Outcome};
use crate::model::ScopeKind;
use crate::plan::{self, Action, ActionKind};
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
    /// The targets of forced actions that did not happen because another
    /// run was acting on them throughout: the answer is a 409, "busy,
    /// retry" ([`PassReport::busy`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub busy: Vec<String>,
    /// The close hook's keys, on its routes only.
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub legacy: Option<Legacy>,
}

fn nudged() -> Trigger {
    Trigger::Nudge
}

impl NudgeAnswer {
    /// The answer for `report`: its `errors` are every error of the pass
    /// ([`PassReport::all_errors`], a refused or failed action's included),
    /// then the nudge's own (reading liveness), which make it an error
    /// whatever the pass came to.
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
            scope: report.scope.kind(),
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
            errors: report.all_errors().into_iter().chain(errors).collect(),
            busy: report.busy(),
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
            target: r.target.to_string(),
            outcome: r.outcome.name().into(),
            reason: r.action.reason.clone(),
            message: r.outcome.text(),
            detail: r.detail.to_value(),
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
            target: a.key().to_string(),
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

/// What the orchestrator's close hook answered for one chat: the agents
/// it stopped, by name, and what became of the chat's worktree (its
/// session's: the worktree goes once the session's last live chat is gone).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatClosed {
    #[serde(rename = "chatId")]
    pub chat_id: String,
    pub disposed: Vec<String>,
    #[serde(rename = "worktreeRemoved")]
    pub worktree_removed: bool,
    #[serde(rename = "worktreeAtRisk")]
    pub worktree_at_risk: bool,
}

/// The close hook's keys, beside the controller's own: a chat's close
/// answers with [`ChatClosed`]'s keys (and the reasons a worktree was
/// kept); a session's with one [`ChatClosed`] per chat of the session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Legacy {
    Chat {
        #[serde(flatten)]
        closed: ChatClosed,
        #[serde(rename = "atRiskReasons")]
        at_risk_reasons: Vec<String>,
    },
    Session {
        results: Vec<ChatClosed>,
    },
}

impl Legacy {
    /// The hook's answer to closing `chat`.
    pub fn chat(report: &PassReport, chat: &str) -> Legacy {
        Legacy::Chat {
            closed: closed(report, chat),
            at_risk_reasons: report
                .at_risk
                .iter()
                .flat_map(|k| k.reasons.iter().map(ToString::to_string))
                .collect(),
        }
    }

    /// The hook's answer to closing `session`: one entry for each of
    /// `chats` (the chats the database names for it) and for each other
    /// chat of the session that the pass acted for, in order.
    pub fn session(report: &PassReport, session: &str, chats: &[String]) -> Legacy {
        let acted = report.results.iter().filter_map(|r| {
            let owner = &r.action.owner;
            (owner.session_id.as_deref() == Some(session))
                .then_some(owner.chat_id.as_ref())
                .flatten()
        });
        let ids: std::collections::BTreeSet<&String> = chats.iter().chain(acted).collect();
        Legacy::Session {
            results: ids.into_iter().map(|c| closed(report, c)).collect(),
        }
    }
}

fn closed(report: &PassReport, chat: &str) -> ChatClosed {
    let done = report
        .results
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Done { .. }));
    ChatClosed {
        chat_id: chat.to_string(),
        disposed: disposed(&report.results, chat),
        worktree_removed: done
            .clone()
            .any(|r| r.action.kind.name() == plan::ActionName::RemoveWorktree),
        worktree_at_risk: !report.at_risk.is_empty(),
    }
}

/// The agents of `chat` that the pass stopped, by name, in order: each
/// agent once, however many of its parts (its process, its opencode
/// session, its row) were stopped. An agent is named by its row's
/// `agent`, else by its process's `BOO_AGENT` label, else by its
/// program.
fn disposed(results: &[ActionResult], chat: &str) -> Vec<String> {
    // Per name: how many rows, opencode sessions and processes went. Two
    // agents of one name in a chat are two of each; one agent's row and
    // process are one of each.
    let mut parts: BTreeMap<String, [usize; 3]> = BTreeMap::new();
    for r in results {
        if !matches!(r.outcome, Outcome::Done { .. })
            || r.action.owner.chat_id.as_deref() != Some(chat)
        {
            continue;
        }
        let (name, part) = match &r.action.kind {
            ActionKind::CloseAgentRow { agent, .. } => (agent.clone(), 0),
            ActionKind::DeleteOpencodeSession { session } => match &session.agent {
                Some(agent) => (agent.clone(), 1),
                None => continue,
            },
            ActionKind::TerminateProcess { process } => (process_name(process), 2),
            ActionKind::StopCgroup { cgroup } => (cgroup.agent.clone(), 2),
            _ => continue,
        };
        parts.entry(name).or_default()[part] += 1;
    }
    parts
        .into_iter()
        .flat_map(|(name, n)| {
            let times = n.into_iter().max().unwrap_or(0);
            std::iter::repeat_n(name, times)
        })
        .collect()
}

fn process_name(p: &plan::ProcessTarget) -> String {
    if let Some(agent) = p.agent.as_deref().filter(|a| !a.is_empty()) {
        return agent.to_string();
    }
    let program = p.command.split_whitespace().next().unwrap_or_default();
    std::path::Path::new(program)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| format!("pid {}", p.pid))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Scope;

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
        a.legacy = Some(Legacy::chat(&r, "c1"));
        let text = body(json(StatusCode::OK, &a));
        assert_eq!(
            text,
            concat!(
                r#"{"actions":[],"atRiskReasons":[],"at_risk":[],"chatId":"c1","chat_id":"c1","#,
                r#""disposed":[],"dry_run":false,"duration_ms":7,"errors":[],"force":false,"#,
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

    fn result(kind: ActionKind, chat: Option<&str>, outcome: Outcome) -> ActionResult {
        ActionResult {
            action: Action {
                kind,
                owner: plan::Owner {
                    session_id: Some("s1".into()),
                    chat_id: chat.map(Into::into),
                },
                reason: String::new(),
            },
            target: plan::Target::AgentRow(String::new()),
            outcome,
            detail: crate::act::Detail::None,
            duration_ms: 0,
            intent_id: None,
            audit_error: None,
        }
    }

    fn done() -> Outcome {
        Outcome::Done {
            note: String::new(),
        }
    }

    fn process(pid: i32, chat: &str, agent: Option<&str>, command: &str) -> ActionKind {
        ActionKind::TerminateProcess {
            process: plan::ProcessTarget {
                pid,
                start_time: 1,
                pgid: pid,
                chat_id: chat.into(),
                agent: agent.map(Into::into),
                command: command.into(),
                age_secs: 60,
                recorded_by_row: None,
                tied_to: None,
            },
        }
    }

    fn row(id: &str, agent: &str) -> ActionKind {
        ActionKind::CloseAgentRow {
            row_id: id.into(),
            backend: crate::model::Backend::Acp,
            agent: agent.into(),
            why: String::new(),
            recorded_process: None,
        }
    }

    fn opencode(id: &str, chat: Option<&str>, agent: Option<&str>) -> ActionKind {
        ActionKind::DeleteOpencodeSession {
            session: plan::OpencodeTarget {
                id: id.into(),
                directory: None,
                worktree_dir: None,
                chat_id: chat.map(Into::into),
                agent: agent.map(Into::into),
                age_secs: None,
            },
        }
    }

    #[test]
    fn a_forced_action_left_to_another_run_is_busy_and_a_plain_one_is_not() {
        let left = || {
            result(
                row("a1", "goose"),
                Some("c1"),
                Outcome::Skipped {
                    why: crate::act::run::executor::HANDLED_BY_CONCURRENT_RUN.into(),
                },
            )
        };
        let subject = Subject::Host {};
        let mut plain = report();
        plain.results = vec![left()];
        let a = NudgeAnswer::of(&plain, subject.clone(), Vec::new());
        assert!(a.busy.is_empty());
        assert_eq!(plain.exit_code(), crate::report::exit::CONVERGED);

        let mut forced = report();
        forced.force = true;
        forced.results = vec![left()];
        let a = NudgeAnswer::of(&forced, subject.clone(), Vec::new());
        assert_eq!(a.busy, vec!["agent-row:".to_string()]);
        assert!(body(json(StatusCode::CONFLICT, &a)).contains(r#""busy":["agent-row:"]"#));
        assert_eq!(forced.exit_code(), crate::report::exit::BUSY);

        // A forced follow-up read the state after the run it followed: what
        // that run left to another is this one's to answer for.
        let mut follow_up = report();
        follow_up.force = true;
        follow_up.results = vec![result(row("a2", "goose"), Some("c1"), done())];
        let after = follow_up.after(&forced);
        assert_eq!(after.results.len(), 1);
        assert!(after.busy().is_empty());
        // A plain follow-up keeps the earlier run's actions as they were.
        let mut plain_follow_up = report();
        plain_follow_up.results = vec![result(row("a2", "goose"), Some("c1"), done())];
        assert_eq!(plain_follow_up.after(&plain).results.len(), 2);
    }

    #[test]
    fn each_agent_stopped_is_named_once_however_many_of_its_parts_went() {
        let results = vec![
            // claude: its process and its row.
            result(
                process(10, "c1", Some("claude"), "node claude"),
                Some("c1"),
                done(),
            ),
            result(row("r1", "claude"), Some("c1"), done()),
            // Two goose agents, each with its row, one process left.
            result(row("r2", "goose"), Some("c1"), done()),
            result(row("r3", "goose"), Some("c1"), done()),
            result(
                process(11, "c1", Some("goose"), "goose acp"),
                Some("c1"),
                done(),
            ),
            // opencode: its server session and its row.
            result(
                opencode("ses_1", Some("c1"), Some("opencode")),
                Some("c1"),
                done(),
            ),
            result(row("r4", "opencode"), Some("c1"), done()),
            // A labelled process without BOO_AGENT: named by its program.
            result(
                process(12, "c1", None, "/usr/bin/aider --yes"),
                Some("c1"),
                done(),
            ),
            // Not stopped: failed, or kept.
            result(
                process(13, "c1", Some("codex"), "codex"),
                Some("c1"),
                Outcome::Failed {
                    error: "EPERM".into(),
                },
            ),
            // Another chat's, and an opencode session no row names.
            result(row("r5", "claude"), Some("c2"), done()),
            result(opencode("ses_2", None, None), None, done()),
        ];
        assert_eq!(
            disposed(&results, "c1"),
            ["aider", "claude", "goose", "goose", "opencode"]
        );
        assert_eq!(disposed(&results, "c2"), ["claude"]);
        assert!(disposed(&results, "c3").is_empty());
    }

    #[test]
    fn a_session_close_answers_for_every_chat_of_the_session_in_order() {
        let mut r = report();
        r.scope = Scope::Session("s1".into());
        r.results = vec![
            result(row("r1", "claude"), Some("c2"), done()),
            // A chat whose row is gone but whose agent row named the session.
            result(row("r2", "goose"), Some("c0"), done()),
            result(
                ActionKind::MarkWorktreeActive {
                    worktree_id: "w1".into(),
                },
                None,
                done(),
            ),
        ];
        let Legacy::Session { results } = Legacy::session(&r, "s1", &["c1".into(), "c2".into()])
        else {
            panic!("a session's answer");
        };
        let chats: Vec<_> = results.iter().map(|c| c.chat_id.as_str()).collect();
        assert_eq!(chats, ["c0", "c1", "c2"]);
        assert_eq!(results[0].disposed, ["goose"]);
        assert!(results[1].disposed.is_empty());
        assert_eq!(results[2].disposed, ["claude"]);
        let text = serde_json::to_string(&results[2]).unwrap();
        assert_eq!(
            text,
            r#"{"chatId":"c2","disposed":["claude"],"worktreeRemoved":false,"worktreeAtRisk":false}"#
        );
    }
}
