//! The HTTP front door: nudges that reconcile at once and answer with what
//! they did, the status dump, health, readiness and metrics.
//!
//! # Routes
//!
//! The table below, the router, the 404 listing and the README are checked
//! against one table, [`routes::ROUTES`].
//!
//! | route | what it does |
//! | --- | --- |
//! | `POST /reconcile/{chatId}` | reconciles one chat (and its session's worktree if it was the last live chat) |
//! | `POST /sessions/{sessionId}/reconcile` | reconciles every chat of a session, and its worktree |
//! | `POST /reconcile` | a full pass of the host |
//! | `POST /api/chats/{chatId}/close` | the orchestrator's close hook: `POST /reconcile/{chatId}` with its legacy answer keys |
//! | `POST /api/sessions/{sessionId}/close` | the same for a session |
//! | `GET /status` | the status dump |
//! | `GET /healthz` | 200 `{"ok":true}` while the process answers (never needs the token) |
//! | `GET /readyz` | 200 `{"ready":true}`, or 503 `{"ready":false,"error":…}` |
//! | `GET /metrics` | Prometheus text format 0.0.4 |
//!
//! Every `POST` route takes `?force=` and `?dry_run=` (`true`, `false`, `1`,
//! `0`); any other query parameter is an error, so that a typo
//! (`?froce=true`) is not silently a non-forced pass. The `GET` routes ignore
//! their query. Request bodies are ignored (and refused above 64 KiB).
//!
//! # Guarantees
//! - Every error is JSON `{"error": "…"}` with a message that says which
//!   rule was broken: 400 bad id or query, 401 missing or wrong token, 404
//!   unknown route, 405 wrong method, 413 body too large, 503 the run did
//!   not finish (queue timeout, shutting down).
//! - A nudge whose pass read its state answers 200, even when actions
//!   failed (`"ok": false` and the errors say what). One whose pass could
//!   not read its state answers the same body with 503 and `Retry-After: 5`
//!   when the database is unreachable, 500 when it failed otherwise (a
//!   missing table): `/status` shows it as the report's `state_unreadable`.
//! - Ids are percent-decoded, then validated: 1 to 128 bytes of
//!   `[A-Za-z0-9_.:-]`.
//! - Nudges go through the service's queue: concurrent nudges for one key
//!   share runs, and a nudge never overlaps another run's action on the same
//!   target. A dry run writes nothing.
//! - A client cannot hold a connection by sending nothing: request headers
//!   must arrive within [`ServeOptions::header_read_timeout`], and that also
//!   bounds how long an idle keep-alive connection stays open.
//! - Idle connections do not keep `/healthz` waiting: thousands of them
//!   (2,000 in test `healthz_answers_while_2000_idle_connections_are_open`)
//!   are each served beside the others, well under the connection cap, and
//!   the open-file limit is raised to the cap at start where the hard limit
//!   allows it.
//! - With a token, every route except `/healthz` needs
//!   `Authorization: Bearer <token>`, compared in constant time.

use std::collections::BTreeSet;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::{Extension, Json, Router};
use http_body_util::BodyExt;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde::Serialize;
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::controller::queue::QueueError;
use crate::controller::{Mode, Trigger};
use crate::plan::Scope;
use crate::report::StateUnreadable;
use crate::service::Service;

pub mod answer;
pub mod routes;

use answer::{json, ErrorAnswer, Health, Legacy, NudgeAnswer, Readiness, Subject};
use routes::{empty_id_route, Handler, IdOf, Route, ROUTES};

/// Request bodies above this are refused (413); bodies are ignored anyway.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// A body past the limit is still read (and dropped) up to this, so that
/// the client gets the 413 rather than a reset connection.
const DRAIN_BYTES: usize = 1024 * 1024;
/// The longest id accepted, in bytes.
pub const MAX_ID_BYTES: usize = 128;
/// The content type of `/metrics`.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// The query parameters of the `POST` routes.
const PARAMS: &[&str] = &["force", "dry_run"];

#[derive(Clone)]
struct App {
    service: Arc<Service>,
    token: Option<Arc<str>>,
}

/// The routes, served by [`serve`]. With `token`, every route except
/// `/healthz` needs `Authorization: Bearer <token>`; an empty token lets
/// nothing through.
pub fn router(service: Arc<Service>, token: Option<String>) -> Router {
    let app = App {
        service,
        token: token.map(Arc::from),
    };
    ROUTES
        .iter()
        .fold(Router::new(), |r, route| {
            r.route(route.pattern, serving(route))
        })
        // Only after the routes: it applies to the routes present.
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .layer(middleware::from_fn(limit_body))
        .layer(middleware::from_fn_with_state(app.clone(), authorize))
        .with_state(app)
}

/// What answers `route`.
fn serving(route: &Route) -> MethodRouter<App> {
    match route.handler {
        Handler::NudgeId { of, label, legacy } => post(
            move |State(app): State<App>,
                  path: Result<Path<String>, PathRejection>,
                  RawQuery(query): RawQuery| {
                nudge_by_id(app, of, path, query, label, legacy)
            },
        ),
        Handler::NudgeHost => post(reconcile_host),
        Handler::Status => get(status),
        Handler::Healthz => get(healthz),
        Handler::Readyz => get(readyz),
        Handler::Metrics => get(metrics),
    }
}

/// Refuses a listen address that other machines can reach when no token
/// protects it, unless `allow_insecure_remote`.
pub fn check_listen(
    addr: SocketAddr,
    token: Option<&str>,
    allow_insecure_remote: bool,
) -> Result<(), String> {
    if token.is_some_and(|t| t.trim().is_empty()) {
        return Err(
            "http.token (BOO_RECONCILER_TOKEN) is set but empty: set a non-empty secret, \
             or unset it to serve without authentication on a loopback address"
                .into(),
        );
    }
    if token.is_some() || addr.ip().to_canonical().is_loopback() || allow_insecure_remote {
        return Ok(());
    }
    let reach = if addr.ip().is_unspecified() {
        "every network interface"
    } else {
        "a non-loopback address"
    };
    Err(format!(
        "refusing to listen on {addr} without a token: that is {reach}, so anyone who can reach \
         it could tear down chats and worktrees (POST /reconcile/…, with ?force=true) and read \
         the status. Set http.token (or the environment variable BOO_RECONCILER_TOKEN) to \
         require `Authorization: Bearer <token>`, listen on a loopback address such as \
         127.0.0.1, or set http.allow_insecure_remote = true to accept the risk"
    ))
}

/// How [`serve_with`] treats connections.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// A request's headers must arrive within this (also how long an idle
    /// keep-alive connection is kept).
    pub header_read_timeout: Duration,
    /// A request's body (read and dropped) must arrive within this.
    pub body_read_timeout: Duration,
    /// Connections served at once; further ones wait in the listen backlog
    /// (behind which a probe would wait for a slot to free).
    pub max_connections: usize,
    /// After shutdown, how long requests in flight may take to finish before
    /// their connections are dropped. A nudge's run is not cancelled by
    /// that: it runs in the service's queue.
    pub shutdown_grace: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            // The clients are the orchestrator and probes on a near network:
            // a request's headers come in one packet or not at all.
            header_read_timeout: Duration::from_secs(5),
            body_read_timeout: Duration::from_secs(10),
            // Large enough that a flood of idle connections is served
            // beside the probes, not in front of them; an idle connection
            // costs a file descriptor and a few KiB.
            max_connections: 8192,
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// Serves `router` on `listener` until `shutdown` fires; then accepts no
/// more connections, lets requests in flight finish (idle connections are
/// closed at once) and returns.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> io::Result<()> {
    serve_with(listener, router, shutdown, ServeOptions::default()).await
}

/// [`serve`] with explicit limits.
pub async fn serve_with(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
    opts: ServeOptions,
) -> io::Result<()> {
    let router = router.layer(Extension(BodyReadTimeout(opts.body_read_timeout)));
    raise_open_file_limit(opts.max_connections);
    let slots = Arc::new(Semaphore::new(opts.max_connections.max(1)));
    let mut conns = JoinSet::new();
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = Arc::clone(&slots).acquire_owned() => p.expect("semaphore never closed"),
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: pause rather than
                    // spin; a connection aborted before accept is routine.
                    if !matches!(e.kind(), io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset) {
                        tracing::warn!(error = %e, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let shutdown = shutdown.clone();
        let read_timeout = opts.header_read_timeout;
        conns.spawn(async move {
            let _permit = permit;
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(read_timeout)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
        // Reap finished connections so the set does not grow.
        while conns.try_join_next().is_some() {}
    }
    drop(listener);
    let drained = tokio::time::timeout(opts.shutdown_grace, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            connections = conns.len(),
            "requests still in flight after the shutdown grace: dropping their connections"
        );
        conns.abort_all();
    }
    Ok(())
}

/// Raises the soft limit on open files so that `connections` (plus the
/// descriptors the rest of the controller uses) fit, as far as the hard
/// limit allows: the common soft default of 1024 would otherwise make
/// `accept` fail long before the connection cap is reached.
fn raise_open_file_limit(connections: usize) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let wanted = connections as u64 + 512;
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    if soft >= wanted {
        return;
    }
    let new = wanted.min(hard);
    match setrlimit(Resource::RLIMIT_NOFILE, new, hard) {
        Ok(()) if new >= wanted => {}
        Ok(()) => tracing::warn!(
            limit = new,
            wanted,
            "the open-file limit is below what http.listen may need (raise LimitNOFILE)"
        ),
        Err(e) => tracing::warn!(error = %e, soft, wanted, "cannot raise the open-file limit"),
    }
}

// ---------------------------------------------------------------- errors --

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    json(
        status,
        &ErrorAnswer {
            error: message.into(),
        },
    )
}

fn bad_request(message: impl Into<String>) -> Response {
    error(StatusCode::BAD_REQUEST, message)
}

/// 1 to [`MAX_ID_BYTES`] bytes of `[A-Za-z0-9_.:-]`.
fn validate_id(of: IdOf, id: &str) -> Result<(), String> {
    let what = of.name();
    if id.is_empty() {
        return Err(format!("{what} id is empty"));
    }
    if id.len() > MAX_ID_BYTES {
        return Err(format!(
            "{what} id is {} bytes long: at most {MAX_ID_BYTES} are allowed",
            id.len()
        ));
    }
    if let Some((at, c)) = id
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-')))
    {
        return Err(format!(
            "{what} id has {c:?} at byte {at}: only letters A-Z a-z, digits 0-9 and _ . : - \
             are allowed (after percent-decoding)"
        ));
    }
    Ok(())
}

/// The id of a path, decoded and validated; else the message of the 400.
fn path_id(of: IdOf, path: Result<Path<String>, PathRejection>) -> Result<String, String> {
    let id = match path {
        Ok(Path(id)) => id,
        Err(PathRejection::FailedToDeserializePathParams(e))
            if matches!(
                e.kind(),
                axum::extract::path::ErrorKind::InvalidUtf8InPathParam { .. }
            ) =>
        {
            return Err(format!(
                "{} id is not valid UTF-8 after percent-decoding",
                of.name()
            ))
        }
        Err(e) => return Err(format!("{} id: {}", of.name(), e.body_text())),
    };
    validate_id(of, &id)?;
    Ok(id)
}

/// `?force=` and `?dry_run=`.
#[derive(Clone, Copy, Debug, Default)]
struct Flags {
    force: bool,
    dry_run: bool,
}

fn parse_flags(query: Option<&str>) -> Result<Flags, String> {
    let mut flags = Flags::default();
    let mut seen = BTreeSet::new();
    let Some(query) = query.filter(|q| !q.is_empty()) else {
        return Ok(flags);
    };
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        let slot = match name.as_ref() {
            "force" => &mut flags.force,
            "dry_run" => &mut flags.dry_run,
            other => {
                return Err(format!(
                    "unknown query parameter {:?}: accepted are {}",
                    truncate(other, 64),
                    PARAMS.join(", ")
                ))
            }
        };
        if !seen.insert(name.to_string()) {
            return Err(format!("query parameter {name} is given more than once"));
        }
        *slot = match value.as_ref() {
            "true" | "1" => true,
            "false" | "0" => false,
            v => {
                return Err(format!(
                    "query parameter {name}={:?}: accepted values are true, false, 1 and 0",
                    truncate(v, 64)
                ))
            }
        };
    }
    Ok(flags)
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

async fn not_found(method: Method, uri: Uri) -> Response {
    if let Some(of) = empty_id_route(uri.path()) {
        if method == Method::POST {
            return bad_request(format!("{} id is empty", of.name()));
        }
        return method_not_allowed(method, uri).await;
    }
    error(
        StatusCode::NOT_FOUND,
        format!(
            "no route {method} {}: the routes are {}",
            truncate(uri.path(), 200),
            routes::listing()
        ),
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    let path = uri.path();
    let allowed = routes::verb_of(path).allow();
    let mut r = error(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "method {method} is not allowed on {}: use {allowed}",
            truncate(path, 200)
        ),
    );
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allowed));
    r
}

// ------------------------------------------------------------ middleware --

/// How long a body may take; set by [`serve_with`].
#[derive(Clone, Copy)]
struct BodyReadTimeout(Duration);

/// Reads (and drops) the request body before the route runs, so that a
/// keep-alive connection stays in step and a client that sent a body gets
/// its answer: at most [`MAX_BODY_BYTES`] within
/// [`ServeOptions::body_read_timeout`].
async fn limit_body(req: Request, next: Next) -> Response {
    let (parts, mut body) = req.into_parts();
    let timeout = parts
        .extensions
        .get::<BodyReadTimeout>()
        .map_or(ServeOptions::default().body_read_timeout, |t| t.0);
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let too_large = |n: u64| {
        let mut r = error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "request body is {n} bytes or more: at most {MAX_BODY_BYTES} are accepted, and \
                 bodies are ignored"
            ),
        );
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        r
    };
    if let Some(n) = declared.filter(|n| *n > DRAIN_BYTES as u64) {
        // Not worth reading: answer, and the connection closes.
        return too_large(n);
    }
    let read = tokio::time::timeout(timeout, async {
        let mut seen = 0usize;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| e.to_string())?;
            if let Some(data) = frame.data_ref() {
                seen = seen.saturating_add(data.len());
                // Past the limit, drain a while more so the client reads the
                // answer rather than a reset.
                if seen > DRAIN_BYTES {
                    break;
                }
            }
        }
        Ok::<usize, String>(seen)
    })
    .await;
    match read {
        Err(_) => {
            let mut r = error(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request body did not arrive within {}",
                    humantime::format_duration(timeout)
                ),
            );
            r.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            r
        }
        Ok(Err(e)) => bad_request(format!("cannot read the request body: {e}")),
        Ok(Ok(n)) if n > MAX_BODY_BYTES => too_large(n as u64),
        Ok(Ok(_)) => {
            next.run(Request::from_parts(parts, axum::body::Body::empty()))
                .await
        }
    }
}

async fn authorize(State(app): State<App>, req: Request, next: Next) -> Response {
    let Some(token) = &app.token else {
        return next.run(req).await;
    };
    if req.uri().path() == "/healthz" {
        return next.run(req).await;
    }
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| bearer(v.as_bytes()));
    let (message, challenge) = match presented {
        None => (
            "missing bearer token: send `Authorization: Bearer <token>`",
            r#"Bearer realm="boo-reconciler""#,
        ),
        Some(None) => (
            "the Authorization header is not `Bearer <token>`",
            r#"Bearer realm="boo-reconciler", error="invalid_request""#,
        ),
        Some(Some(given)) => {
            let expected = token.as_bytes();
            if !expected.is_empty() && bool::from(given.ct_eq(expected)) {
                return next.run(req).await;
            }
            (
                "invalid bearer token",
                r#"Bearer realm="boo-reconciler", error="invalid_token""#,
            )
        }
    };
    let mut r = error(StatusCode::UNAUTHORIZED, message);
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    r
}

/// The credentials of `Bearer <credentials>` (scheme case-insensitive).
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let scheme = b"bearer ";
    if value.len() < scheme.len() || !value[..scheme.len()].eq_ignore_ascii_case(scheme) {
        return None;
    }
    let rest = &value[scheme.len()..];
    let start = rest.iter().position(|b| *b != b' ')?;
    let end = rest.iter().rposition(|b| *b != b' ')? + 1;
    Some(&rest[start..end])
}

// ---------------------------------------------------------------- nudges --

async fn reconcile_host(State(app): State<App>, RawQuery(query): RawQuery) -> Response {
    let flags = match parse_flags(query.as_deref()) {
        Ok(f) => f,
        Err(e) => return bad_request(e),
    };
    nudge(app, Scope::Host, flags, "host", false).await
}

async fn nudge_by_id(
    app: App,
    of: IdOf,
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
    let scope = match of {
        IdOf::Chat => Scope::Chat(id),
        IdOf::Session => Scope::Session(id),
    };
    nudge(app, scope, flags, label, legacy).await
}

async fn nudge(
    app: App,
    scope: Scope,
    flags: Flags,
    label: &'static str,
    legacy: bool,
) -> Response {
    let service = &app.service;
    service
        .metrics
        .nudges_total
        .with_label_values(&[label])
        .inc();
    let mode = if flags.dry_run {
        Mode::DryRun
    } else {
        Mode::act(flags.force)
    };
    let report = match service.reconcile(scope.clone(), mode, Trigger::Nudge).await {
        Ok(r) => r,
        Err(e) => return queue_error(&e),
    };
    let (subject, mut errors) = subject(service, &scope).await;
    let legacy = match (&scope, legacy) {
        (_, false) | (Scope::Host, _) => None,
        (Scope::Chat(id), true) => Some(Legacy::chat(&report, id)),
        (Scope::Session(id), true) => {
            let chats = match service.controller.store.chats_of_session(id).await {
                Ok(chats) => chats,
                Err(e) => {
                    errors.push(format!(
                        "cannot read the chats of session {id}: {e}; \
                         only those the pass acted for are answered for"
                    ));
                    Vec::new()
                }
            };
            Some(Legacy::session(&report, id, &chats))
        }
    };
    let mut body = NudgeAnswer::of(&report, subject, errors);
    body.legacy = legacy;
    nudge_response(report.state_unreadable, &body)
}

/// Who the nudge was about and whether they are live now, by the store's
/// one reading of liveness; why that could not be read, if it could not.
async fn subject(service: &Service, scope: &Scope) -> (Subject, Vec<String>) {
    let store = &service.controller.store;
    let (of, id, read) = match scope {
        Scope::Host => return (Subject::Host {}, Vec::new()),
        Scope::Chat(id) => (IdOf::Chat, id, store.chat_liveness(id).await),
        Scope::Session(id) => {
            let young = service.controller.config.worktrees.orphan_min_age;
            let read = store.session_liveness(id, SystemTime::now(), young).await;
            (IdOf::Session, id, read)
        }
    };
    let (live, known, errors) = match read {
        Ok(l) => (Some(l.live), Some(l.known), Vec::new()),
        Err(e) => (
            None,
            None,
            vec![format!(
                "cannot read whether {} {id} is live: {e}",
                of.name()
            )],
        ),
    };
    let id = id.clone();
    let subject = match of {
        IdOf::Chat => Subject::Chat {
            chat_id: id,
            live,
            known,
        },
        IdOf::Session => Subject::Session {
            session_id: id,
            live,
            known,
        },
    };
    (subject, errors)
}

/// A pass that read its state answers 200 whatever its actions came to
/// (the body says what failed); one that could not read it did nothing,
/// and the status says whether trying again soon may help.
fn nudge_response<T: Serialize>(unreadable: Option<StateUnreadable>, body: &T) -> Response {
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
fn queue_error(e: &QueueError) -> Response {
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

// -------------------------------------------------------------- read-only --

async fn status(State(app): State<App>) -> Response {
    Json(app.service.status()).into_response()
}

async fn healthz() -> Response {
    json(StatusCode::OK, &Health { ok: true })
}

async fn readyz(State(app): State<App>) -> Response {
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

async fn metrics(State(app): State<App>) -> Response {
    (
        [(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
        app.service.metrics.render(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked_by_each_rule() {
        assert!(validate_id(IdOf::Chat, "c1").is_ok());
        assert!(validate_id(IdOf::Chat, "A-z_0.9:x").is_ok());
        assert!(validate_id(IdOf::Chat, &"a".repeat(128)).is_ok());
        assert!(validate_id(IdOf::Chat, "")
            .unwrap_err()
            .contains("chat id is empty"));
        assert!(validate_id(IdOf::Session, &"a".repeat(129))
            .unwrap_err()
            .contains("129 bytes long: at most 128"));
        let e = validate_id(IdOf::Chat, "a/b").unwrap_err();
        assert!(e.contains("'/' at byte 1"), "{e}");
        assert!(validate_id(IdOf::Chat, "é").is_err());
        assert!(validate_id(IdOf::Chat, "a b").is_err());
        assert!(validate_id(IdOf::Chat, "a\0").is_err());
    }

    #[test]
    fn flags_accept_only_known_parameters_and_values() {
        let f = parse_flags(Some("force=true&dry_run=0")).unwrap();
        assert!(f.force && !f.dry_run);
        let f = parse_flags(Some("force=1")).unwrap();
        assert!(f.force);
        assert!(!parse_flags(None).unwrap().force);
        assert!(!parse_flags(Some("")).unwrap().force);
        let e = parse_flags(Some("force=maybe")).unwrap_err();
        assert!(
            e.contains("force=\"maybe\"") && e.contains("true, false, 1 and 0"),
            "{e}"
        );
        let e = parse_flags(Some("forse=true")).unwrap_err();
        assert!(e.contains("unknown query parameter \"forse\""), "{e}");
        let e = parse_flags(Some("force=true&force=false")).unwrap_err();
        assert!(e.contains("more than once"), "{e}");
        assert!(parse_flags(Some("force")).is_err());
        assert!(parse_flags(Some("force=TRUE")).is_err());
    }

    #[test]
    fn bearer_credentials_are_parsed() {
        assert_eq!(bearer(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer(b"bearer  abc "), Some(&b"abc"[..]));
        assert_eq!(bearer(b"Basic abc"), None);
        assert_eq!(bearer(b"Bearer "), None);
        assert_eq!(bearer(b"Bearer"), None);
    }

    #[test]
    fn listening_beyond_loopback_needs_a_token_or_consent() {
        let local: SocketAddr = "127.0.0.1:7070".parse().unwrap();
        let local6: SocketAddr = "[::1]:7070".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:7070".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:7070".parse().unwrap();
        let lan: SocketAddr = "10.0.0.5:7070".parse().unwrap();
        for a in [local, local6, mapped] {
            assert!(check_listen(a, None, false).is_ok(), "{a}");
        }
        for a in [any, lan] {
            let e = check_listen(a, None, false).unwrap_err();
            assert!(e.contains(&a.to_string()), "{e}");
            assert!(e.contains("http.token"), "{e}");
            assert!(e.contains("BOO_RECONCILER_TOKEN"), "{e}");
            assert!(e.contains("http.allow_insecure_remote = true"), "{e}");
            assert!(check_listen(a, Some("s3cret"), false).is_ok());
            assert!(check_listen(a, None, true).is_ok());
        }
        assert!(check_listen(any, None, false)
            .unwrap_err()
            .contains("every network interface"));
        let e = check_listen(local, Some(" "), false).unwrap_err();
        assert!(e.contains("empty"), "{e}");
    }

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

    #[test]
    fn empty_ids_of_known_routes_are_recognised() {
        assert!(matches!(empty_id_route("/reconcile/"), Some(IdOf::Chat)));
        assert!(matches!(
            empty_id_route("/sessions//reconcile"),
            Some(IdOf::Session)
        ));
        assert!(empty_id_route("/nope").is_none());
    }
}
