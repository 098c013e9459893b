//! What a nudge answers when its pass cannot read its state, and how the
//! notification listener copes with a database that goes silent: the real
//! HTTP server on loopback, a real database, and a TCP proxy in front of
//! PostgreSQL that freezes or goes away.

mod common;
#[path = "support/freezing_proxy.rs"]
mod freezing_proxy;

use std::time::{Duration, Instant};

use boo_reconciler::controller::Controller;
use boo_reconciler::http;
use boo_reconciler::model::Scope;
use boo_reconciler::service::Service;
use boo_reconciler::store::listen::Notice;
use boo_reconciler::store::{Store, Timeouts};
use common::{
    free_port, serve_on_loopback, set_all, startup_pass, through, upstream, world_command, Db,
    World,
};
use freezing_proxy::FreezingProxy;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::StatusCode;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

both_databases!(
    a_state_read_that_fails_otherwise_answers_500_and_the_next_answers_200,
    actions_that_fail_on_a_state_that_was_read_still_answer_200,
);

/// Longer than any bound here, so that a wait that would never end fails
/// the test instead of hanging it.
const NEVER: Duration = Duration::from_secs(60);

const SHORT: Timeouts = Timeouts {
    connect: Duration::from_secs(1),
    query: Duration::from_secs(1),
};

/// A controller of `w` whose database is `url`, bounded by [`SHORT`].
async fn controller_at(w: &World, url: &str) -> Controller {
    let store = Store::open_with(url, false, SHORT)
        .await
        .expect("open the store");
    let mut config = w.config();
    config.database.url = url.to_string();
    config.database.connect_timeout = SHORT.connect;
    config.database.query_timeout = SHORT.query;
    // The only controller of this test's host: it acts as the lock's
    // holder.
    w.controller_with(config, store)
}

/// A client that gives up only after [`NEVER`]. reqwest is built without a
/// TLS provider of its own: it needs one installed even for plain HTTP.
fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().timeout(NEVER).build().unwrap()
}

/// The HTTP server on `127.0.0.1:0` in front of a service of `controller`,
/// after its start-up pass.
struct Server {
    base: String,
    shutdown: CancellationToken,
    client: reqwest::Client,
}

impl Server {
    async fn start(controller: Controller) -> Server {
        let service = Service::new(controller, CancellationToken::new());
        startup_pass(&service).await;
        let (base, shutdown, _) =
            serve_on_loopback(&service, None, http::ServeOptions::default()).await;
        Server {
            base,
            shutdown,
            client: http_client(),
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str) -> (StatusCode, HeaderMap, Value) {
        let resp = self
            .client
            .request(method, format!("{}{path}", self.base))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("body");
        let body = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{path} answered {status} non-JSON ({e}): {text}"));
        (status, headers, body)
    }

    async fn post(&self, path: &str) -> (StatusCode, HeaderMap, Value) {
        self.call(reqwest::Method::POST, path).await
    }

    /// The `state_unreadable` of the last pass in `/status`.
    async fn last_unreadable(&self) -> Value {
        let (status, _, body) = self.call(reqwest::Method::GET, "/status").await;
        assert_eq!(status, StatusCode::OK, "{body:#}");
        body["last_pass"]
            .get("state_unreadable")
            .cloned()
            .unwrap_or(Value::Null)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The errors of a nudge's answer, which must be one of a pass that failed.
fn failed_errors(body: &Value) -> Vec<String> {
    assert_eq!(body["ok"], false, "{body:#}");
    assert_eq!(body["result"], "error", "{body:#}");
    body["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no errors in {body:#}"))
        .iter()
        .map(|e| e.as_str().expect("errors are strings").to_string())
        .collect()
}

/// A PostgreSQL world with an archived session s1 and chat c1 (no
/// worktree yet), and a proxy in front of its server.
async fn archived_chat_behind_a_proxy() -> (World, FreezingProxy) {
    let w = World::new(Db::Postgres).await;
    w.session("s1", "archived").await;
    w.chat("c1", "s1", "archived").await;
    let proxy = FreezingProxy::start(upstream()).await;
    (w, proxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_database_answers_503_with_retry_after_then_200_once_it_answers() {
    let (w, proxy) = archived_chat_behind_a_proxy().await;
    let server = Server::start(controller_at(&w, &through(&w.url, proxy.addr())).await).await;
    // Added after the start-up pass, so that only the nudges can remove it.
    let path = w.worktree("w1", "s1").await;

    proxy.freeze();
    let (status, headers, body) = server.post("/reconcile/c1").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body:#}");
    assert_eq!(headers[RETRY_AFTER], "5");
    assert_eq!(body["chat_id"], "c1", "the usual answer: {body:#}");
    let errors = failed_errors(&body);
    assert!(
        errors
            .iter()
            .any(|e| e.contains("database.url") && e.contains("did not answer within 1s")),
        "{errors:#?}"
    );
    assert!(
        path.exists(),
        "nothing is done on a state that was not read"
    );

    proxy.thaw();
    let (status, headers, body) = server.post("/reconcile/c1").await;
    assert_eq!(status, StatusCode::OK, "{body:#}");
    assert!(headers.get(RETRY_AFTER).is_none());
    assert_eq!(body["result"], "converged", "{body:#}");
    assert!(!path.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_gone_away_answers_503_and_status_says_it_was_unreachable() {
    let w = World::new(Db::Postgres).await;
    let proxy = FreezingProxy::start(upstream()).await;
    let server = Server::start(controller_at(&w, &through(&w.url, proxy.addr())).await).await;
    assert_eq!(server.last_unreadable().await, Value::Null);

    // Its port closes and its connections end: connection refused.
    drop(proxy);
    for path in [
        "/reconcile",
        "/sessions/s1/reconcile",
        "/api/chats/c1/close",
    ] {
        let (status, headers, body) = server.post(path).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{path}: {body:#}");
        assert_eq!(headers[RETRY_AFTER], "5", "{path}");
        let errors = failed_errors(&body);
        assert!(
            errors.iter().any(|e| e.contains("database.url")),
            "{path}: {errors:#?}"
        );
    }
    assert_eq!(server.last_unreadable().await, "database_unreachable");
}

async fn a_state_read_that_fails_otherwise_answers_500_and_the_next_answers_200(db: Db) {
    let w = World::new(db).await;
    let server = Server::start(w.controller()).await;
    let (status, _, body) = server.post("/reconcile").await;
    assert_eq!(status, StatusCode::OK, "{body:#}");
    assert_eq!(body["result"], "converged", "{body:#}");

    // The database answers, with an error: a table the pass reads is gone.
    w.sql("ALTER TABLE worktrees RENAME TO worktrees_away")
        .await;
    for path in ["/reconcile", "/reconcile/c1", "/api/sessions/s1/close"] {
        let (status, headers, body) = server.post(path).await;
        assert_eq!(
            status,
            StatusCode::INTERNAL_SERVER_ERROR,
            "{path}: {body:#}"
        );
        assert!(headers.get(RETRY_AFTER).is_none(), "{path}");
        let errors = failed_errors(&body);
        assert!(
            errors.iter().any(|e| e.contains("worktrees")),
            "{path}: {errors:#?}"
        );
    }
    assert_eq!(server.last_unreadable().await, "other");

    w.sql("ALTER TABLE worktrees_away RENAME TO worktrees")
        .await;
    let (status, _, body) = server.post("/reconcile").await;
    assert_eq!(status, StatusCode::OK, "{body:#}");
    assert_eq!(body["result"], "converged", "{body:#}");
    assert_eq!(server.last_unreadable().await, Value::Null);
}

async fn actions_that_fail_on_a_state_that_was_read_still_answer_200(db: Db) {
    let w = World::new(db).await;
    w.session("s1", "archived").await;
    let server = Server::start(w.controller()).await;
    // A row pointing outside the root: its removal is refused.
    w.worktree_row("w-etc", "s1", "/etc").await;

    let (status, headers, body) = server.post("/sessions/s1/reconcile").await;
    assert_eq!(status, StatusCode::OK, "{body:#}");
    assert!(headers.get(RETRY_AFTER).is_none());
    failed_errors(&body);
    assert!(
        body["actions"]
            .as_array()
            .expect("actions")
            .iter()
            .any(|a| a["outcome"] == "refused"),
        "{body:#}"
    );
    assert_eq!(server.last_unreadable().await, Value::Null);
}

// ------------------------------------------------------ once beside a daemon --

/// The binary for `w` with the database `url` and the HTTP address `port`.
fn bin(w: &World, url: &str, port: u16) -> tokio::process::Command {
    let mut c = world_command(w, url);
    set_all(&mut c, &w.label_settings());
    set_all(
        &mut c,
        &[
            ("loop.interval", "1h"),
            ("loop.jitter", "0s"),
            ("http.listen", &format!("127.0.0.1:{port}")),
            ("database.connect_timeout", "1s"),
            ("database.query_timeout", "1s"),
            ("database.notify_channel", "boo_test_nobody"),
        ],
    );
    let mut c = tokio::process::Command::from(c);
    c.kill_on_drop(true);
    c
}

/// Waits until the daemon at `port` is ready (its start-up pass is done).
async fn wait_ready(port: u16, daemon: &mut tokio::process::Child) {
    let client = http_client();
    let deadline = Instant::now() + NEVER;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = daemon.try_wait() {
            panic!("the daemon exited before it was ready: {status}");
        }
        let ready = client
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .send()
            .await;
        if ready.is_ok_and(|r| r.status() == StatusCode::OK) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the daemon was not ready within {NEVER:?}");
}

/// The host lock is taken by the daemon only: no other test in this file
/// runs one, so none competes for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_beside_a_daemon_whose_database_froze_prints_its_answer_and_exits_1() {
    let (w, proxy) = archived_chat_behind_a_proxy().await;
    let port = free_port();
    let mut daemon = bin(&w, &through(&w.url, proxy.addr()), port)
        .args(["--log-format", "json", "run"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start the daemon");
    wait_ready(port, &mut daemon).await;
    let path = w.worktree("w1", "s1").await;

    // The daemon still holds the lock (the server keeps its session), but
    // its passes can no longer read anything.
    proxy.freeze();
    let out = tokio::time::timeout(
        NEVER,
        bin(&w, &w.url, port)
            .args(["once", "--chat", "c1", "--json"])
            .output(),
    )
    .await
    .expect("once ends rather than waiting for the lock")
    .expect("run once");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        !stderr.contains("waiting for the lock"),
        "a 503 carrying a pass's answer is no daemon stopping: {stderr}"
    );
    let answer: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("once prints the daemon's answer ({e}): {stdout}{stderr}"));
    let errors = failed_errors(&answer);
    assert!(
        errors
            .iter()
            .any(|e| e.contains("did not answer within 1s")),
        "{errors:#?}"
    );
    assert!(path.exists());
    proxy.thaw();
    let _ = daemon.kill().await;
}

// ---------------------------------------------------------- the listener --

/// Sends `payload` on `channel` until `notices` yields a notice `want`
/// accepts (a notification sent before the listener is listening is lost).
async fn notify_until(
    w: &World,
    channel: &str,
    payload: &str,
    notices: &mut mpsc::UnboundedReceiver<Notice>,
    want: impl Fn(&Notice) -> bool,
) {
    let deadline = Instant::now() + NEVER;
    while Instant::now() < deadline {
        w.sql(&format!("SELECT pg_notify('{channel}', '{payload}')"))
            .await;
        let wait = tokio::time::sleep(Duration::from_millis(500));
        tokio::pin!(wait);
        loop {
            tokio::select! {
                _ = &mut wait => break,
                n = notices.recv() => {
                    let n = n.expect("the listener runs");
                    if want(&n) {
                        return;
                    }
                }
            }
        }
    }
    panic!("{payload:?} on {channel} was never delivered within {NEVER:?}");
}

/// Waits until `ok` holds, checking every 100 ms; panics after [`NEVER`].
async fn eventually<F: std::future::Future<Output = bool>>(what: &str, mut ok: impl FnMut() -> F) {
    let deadline = Instant::now() + NEVER;
    while Instant::now() < deadline {
        if ok().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what}: not within {NEVER:?}");
}

/// The backend pids of the listener's connections.
async fn listener_backends(w: &World, channel: &str) -> Vec<String> {
    w.store
        .query_strings(&format!(
            "SELECT CAST(pid AS TEXT) FROM pg_stat_activity \
             WHERE application_name = 'boo-reconciler listen {channel}'"
        ))
        .await
        .expect("pg_stat_activity")
        .into_iter()
        .filter_map(|r| r[0].clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_listener_reconnects_and_delivers_again() {
    let w = World::new(Db::Postgres).await;
    let channel = format!("boo_test_listen_{}", fastrand::u64(..));
    let proxy = FreezingProxy::start(upstream()).await;
    let store = Store::open_with(&through(&w.url, proxy.addr()), false, SHORT)
        .await
        .expect("through the proxy");
    let (tx, mut notices) = mpsc::unbounded_channel();
    let cancel = CancellationToken::new();
    let listening = tokio::spawn({
        let (cancel, channel) = (cancel.clone(), channel.clone());
        async move {
            store
                .listen(&channel, cancel, move |n| {
                    let _ = tx.send(n);
                })
                .await
        }
    });
    notify_until(&w, &channel, "chat:c1", &mut notices, |n| {
        *n == Notice::Reconcile(Scope::Chat("c1".into()))
    })
    .await;
    let before = listener_backends(&w, &channel).await;
    assert_eq!(before.len(), 1, "{before:?}");
    let accepted = proxy.accepted();

    // Frozen, the listener's connection stays open and says nothing: only
    // its own check finds out. It then tries a new connection, which the
    // freeze holds too: a second one shows that the first was given up at
    // its bound.
    proxy.freeze();
    eventually("the listener gives up its frozen connections", || async {
        proxy.accepted() >= accepted + 2
    })
    .await;
    proxy.thaw();
    let deadline = Instant::now() + NEVER;
    loop {
        let n = tokio::time::timeout_at(deadline.into(), notices.recv())
            .await
            .expect("the listener says it reconnected")
            .expect("the listener runs");
        if n == Notice::Reconnected {
            break;
        }
    }
    notify_until(&w, &channel, "session:s9", &mut notices, |n| {
        *n == Notice::Reconcile(Scope::Session("s9".into()))
    })
    .await;
    // The connection given up is closed once it answers again: one
    // listening backend, a new one.
    eventually("only the new listener connection is left", || async {
        let now = listener_backends(&w, &channel).await;
        now.len() == 1 && now != before
    })
    .await;

    cancel.cancel();
    tokio::time::timeout(NEVER, listening)
        .await
        .expect("the listener stops when cancelled")
        .expect("listener task");
}
