//! The nudges: a pass now for a chat, a session or the host, answered
//! with what it did.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use crate::controller::queue::QueueError;
use crate::controller::Mode;
use crate::model::{Force, Scope, ScopeKind};
use crate::report::StateUnreadable;
use crate::service::Liveness;

use super::answer::{json, Health, Legacy, NudgeAnswer, Readiness, Subject};
use super::input::{bad_request, error, parse_flags, path_id, Flags};
use super::{App, METRICS_CONTENT_TYPE};

pub(super) async fn reconcile_host(State(app): State<App>, RawQuery(query): RawQuery) -> Response {
    let flags = match parse_flags(query.as_deref()) {
        Ok(f) => f,
        Err(e) => return bad_request(e),
    };
    nudge(app, Scope::Host, flags, "host", false).await
}

pub(super) async fn nudge_by_id(
    app: App,
    of: ScopeKind,
    path: Result<Path<String>, PathRejection>,
    query: Option<String>,
    label: &'static str,
    legacy: bool,
) -> Response {
    let id = match path_id(of, path) {
        Ok(id) => id,
        Err(e) => return bad_request(e),
    };
    let flags = match parse_flags(query.as_deref()) {
        Ok(f) => f,
        Err(e) => return bad_request(e),
    };
    let scope = Scope::of(of, id);
    nudge(app, scope, flags, label, legacy).await
}

pub(super) async fn nudge(
    app: App,
    scope: Scope,
    flags: Flags,
    label: &'static str,
    legacy: bool,
) -> Response {
    // Without a token anyone on the host can send a request: it may only
    // hasten what a pass would do anyway, never archive and remove work a
    // pass keeps. With one, the guard has already checked it. A dry run
    // acts on nothing, forced or not.
    if flags.force && !flags.dry_run && app.token.is_none() {
        return force_needs_token();
    }
    let service = &app.service;
    service
        .metrics()
        .nudges_total
        .with_label_values(&[label])
        .inc();
    let mode = if flags.dry_run {
        Mode::DryRun
    } else {
        Mode::act(Force::from(flags.force))
    };
    let outcome = match service.nudge(scope.clone(), mode, legacy).await {
        Ok(o) => o,
        Err(e) => return queue_error(&e),
    };
    let report = &outcome.report;
    let (subject, mut errors) = subject(&scope, outcome.liveness);
    let legacy = match (&scope, legacy) {
        (_, false) | (Scope::Host, _) => None,
        (Scope::Chat(id), true) => Some(Legacy::chat(report, id)),
        (Scope::Session(id), true) => {
            let chats = match outcome.chats {
                Some(Ok(chats)) => chats,
                Some(Err(e)) => {
                    errors.push(e);
                    Vec::new()
                }
                None => Vec::new(),
            };
            Some(Legacy::session(report, id, &chats))
        }
    };
    let mut body = NudgeAnswer::of(report, subject, errors);
    body.legacy = legacy;
    if !body.busy.is_empty() {
        return busy_response(&body);
    }
    nudge_response(report.state_unreadable, &body)
}

/// 403: `?force=true` on a controller that has no token to check.
pub(super) fn force_needs_token() -> Response {
    error(
        StatusCode::FORBIDDEN,
        "force needs http.token: this controller serves without a token, so ?force=true \
         (archive and remove worktrees kept at risk) is refused to every caller; a request \
         without a token may only do what a pass would do anyway. Set http.token (or the \
         environment variable BOO_RECONCILER_TOKEN) to a secret, restart `run`, and send \
         `Authorization: Bearer <token>` with the forced request; or drop ?force=true for a \
         plain nudge",
    )
}

/// 409 with `Retry-After`: a forced action did not happen because another
/// run was acting on its target throughout; the body is the pass's answer
/// with `error` naming the targets.
pub(super) fn busy_response(body: &NudgeAnswer) -> Response {
    let mut value = serde_json::to_value(body).unwrap_or(serde_json::Value::Null);
    if let Some(map) = value.as_object_mut() {
        map.insert(
            "error".into(),
            format!(
                "busy, retry: another run was acting on {} throughout; the forced action on it \
                 did not happen",
                body.busy.join(", ")
            )
            .into(),
        );
    }
    let mut r = json(StatusCode::CONFLICT, &value);
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    r
}

/// Who the nudge was about and whether they are live now, by the store's
/// one reading of liveness; why that could not be read, if it could not.
fn subject(scope: &Scope, read: Option<Result<Liveness, String>>) -> (Subject, Vec<String>) {
    let (live, known, errors) = match read {
        None => (None, None, Vec::new()),
        Some(Ok(l)) => (Some(l.live), Some(l.known), Vec::new()),
        Some(Err(e)) => (None, None, vec![e]),
    };
    let subject = match scope {
        Scope::Host => Subject::Host {},
        Scope::Chat(id) => Subject::Chat {
            chat_id: id.clone(),
            live,
            known,
        },
        Scope::Session(id) => Subject::Session {
            session_id: id.clone(),
            live,
            known,
        },
    };
    (subject, errors)
}

/// A pass that read its state answers 200 whatever its actions came to
/// (the body says what failed); one that could not read it did nothing,
/// and the status says whether trying again soon may help.
pub(super) fn nudge_response<T: Serialize>(
    unreadable: Option<StateUnreadable>,
    body: &T,
) -> Response {
    let status = match unreadable {
        None => StatusCode::OK,
        Some(StateUnreadable::DatabaseUnreachable) => StatusCode::SERVICE_UNAVAILABLE,
        Some(StateUnreadable::Other) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let mut r = json(status, body);
    if status == StatusCode::SERVICE_UNAVAILABLE {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    }
    r
}

/// The run did not happen or did not finish: 503, try again.
pub(super) fn queue_error(e: &QueueError) -> Response {
    let message = match e {
        QueueError::Timeout(_) => format!("{e}: the run was abandoned; try again"),
        QueueError::StillWorking { .. } => {
            format!("{e}; a follow-up run waits for it: try again")
        }
        // Shutting down, or (once the service can stand by) not acting for
        // this host: the message says which.
        #[allow(unreachable_patterns)]
        _ => e.to_string(),
    };
    let mut r = error(StatusCode::SERVICE_UNAVAILABLE, message);
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    r
}

pub(super) async fn status(State(app): State<App>) -> Response {
    Json(app.service.status()).into_response()
}

pub(super) async fn healthz() -> Response {
    json(StatusCode::OK, &Health { ok: true })
}

pub(super) async fn readyz(State(app): State<App>) -> Response {
    match app.service.ready().await {
        Ok(()) => json(
            StatusCode::OK,
            &Readiness {
                ready: true,
                error: None,
            },
        ),
        Err(why) => json(
            StatusCode::SERVICE_UNAVAILABLE,
            &Readiness {
                ready: false,
                error: Some(why),
            },
        ),
    }
}

pub(super) async fn metrics(State(app): State<App>) -> Response {
    (
        [(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
        app.service.metrics().render(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nudge_answers_by_whether_its_pass_read_its_state() {
        let cases = [
            (None, StatusCode::OK, None),
            (
                Some(StateUnreadable::DatabaseUnreachable),
                StatusCode::SERVICE_UNAVAILABLE,
                Some("5"),
            ),
            (
                Some(StateUnreadable::Other),
                StatusCode::INTERNAL_SERVER_ERROR,
                None,
            ),
        ];
        for (unreadable, status, retry_after) in cases {
            let mut body = serde_json::Map::new();
            body.insert("ok".into(), serde_json::json!(false));
            let r = nudge_response(unreadable, &body);
            assert_eq!(r.status(), status, "{unreadable:?}");
            assert_eq!(
                r.headers()
                    .get(header::RETRY_AFTER)
                    .map(|v| v.to_str().unwrap()),
                retry_after,
                "{unreadable:?}"
            );
            assert_eq!(
                r.headers().get(header::CONTENT_TYPE).unwrap(),
                "application/json"
            );
        }
    }
}
