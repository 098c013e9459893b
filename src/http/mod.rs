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
//!   rule was broken: 400 bad id or query, 401 missing or wrong token, 403
//!   `?force=true` without a configured token, 404 unknown route, 405 wrong
//!   method, 409 a forced action another run held throughout (busy), 413
//!   body too large, 503 the run did not finish (queue timeout, shutting
//!   down).
//! - An unauthenticated request can only hasten what a pass would do
//!   anyway: `?force=true` (on every route and alias that takes it) needs
//!   `http.token` configured and presented; without one configured it
//!   answers 403 naming the setting, and nothing runs. A plain nudge and a
//!   dry run need no token when none is configured (tests
//!   `force_without_a_configured_token_is_403_and_keeps_the_worktree`,
//!   `force_with_a_wrong_token_is_401_and_with_the_right_one_archives`).
//! - A forced request is never answered 200 with its action left to
//!   another run: it waits for that run and takes its own step, or
//!   answers 409 with `Retry-After: 5`, the pass's answer, `busy` (the
//!   targets) and `error` ("busy, retry …") (tests
//!   `a_forced_request_waits_for_the_run_holding_its_worktree_then_archives_it`,
//!   `a_forced_request_held_past_the_pass_timeout_answers_409_busy`).
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

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::middleware::{self};
use axum::routing::{get, post, MethodRouter};
use axum::{Extension, Router};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::service::Service;

pub mod answer;
mod guard;
mod input;
mod nudge;
pub mod routes;

use guard::{authorize, limit_body, BodyReadTimeout};
use input::{method_not_allowed, not_found};
use nudge::{healthz, metrics, nudge_by_id, readyz, reconcile_host, status};
use routes::{Handler, Route, ROUTES};

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
         it could tear down chats and the worktrees a pass would remove (POST /reconcile/…) and \
         read the status (?force=true is refused to everyone without a token). Set http.token \
         (or the environment variable BOO_RECONCILER_TOKEN) to require `Authorization: Bearer \
         <token>`, listen on a loopback address such as 127.0.0.1, or set http.allow_insecure_remote = true to accept the risk"
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
