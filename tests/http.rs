//! The HTTP front door end to end: the real server on a loopback port, a
//! real HTTP client, real repositories and worktrees, a real database.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use boo_reconciler::http::{self, ServeOptions};
use boo_reconciler::plan::Target;
use boo_reconciler::service::Service;
use common::{files, git, git_ok, serve_on_loopback, startup_pass, Db, Tree, World, HOST};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

both_databases!(
    chat_nudge_removes_the_worktree_of_its_archived_session,
    close_aliases_answer_in_the_old_hooks_shape,
    dry_run_answers_with_the_plan_and_changes_nothing,
    force_archives_and_removes_an_at_risk_worktree,
    live_chat_answers_200_with_nothing_done,
    unknown_chat_answers_200,
    session_and_host_nudges_reconcile_their_scope,
    concurrent_nudges_for_one_chat_tear_down_once,
    nudge_during_a_full_pass_acts_once_per_target,
    metrics_parse_and_count_the_actions,
    force_without_a_configured_token_is_403_and_keeps_the_worktree,
    force_with_a_wrong_token_is_401_and_with_the_right_one_archives,
    a_forced_request_waits_for_the_run_holding_its_worktree_then_archives_it,
    a_forced_request_held_past_the_pass_timeout_answers_409_busy,
);

/// The token of the servers that have one.
const TOKEN: &str = "s3cret-token";

/// A server on `127.0.0.1:0` in front of a service of `world`.
struct Server {
    service: Arc<Service>,
    base: String,
    shutdown: CancellationToken,
    handle: JoinHandle<std::io::Result<()>>,
    client: reqwest::Client,
    token: Option<String>,
}

impl Server {
    /// Starts the server; the service has run its start-up pass (ready).
    async fn start(world: &World, token: Option<&str>) -> Server {
        Server::start_with(world, token, ServeOptions::default(), true).await
    }

    async fn start_with(
        world: &World,
        token: Option<&str>,
        opts: ServeOptions,
        ready: bool,
    ) -> Server {
        Server::start_controller(world.controller(), token, opts, ready).await
    }

    async fn start_controller(
        controller: boo_reconciler::controller::Controller,
        token: Option<&str>,
        opts: ServeOptions,
        ready: bool,
    ) -> Server {
        let service = Service::new(controller, CancellationToken::new());
        if ready {
            startup_pass(&service).await;
        }
        let (base, shutdown, handle) =
            serve_on_loopback(&service, token.map(String::from), opts).await;
        Server {
            service,
            base,
            shutdown,
            handle,
            client: http_client(),
            token: token.map(String::from),
        }
    }

    /// Sends `method path` with the server's token; answers the status, the
    /// headers and the body as JSON (or a string for non-JSON bodies).
    async fn call(
        &self,
        method: Method,
        path: &str,
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        self.call_as(method, path, self.token.as_deref()).await
    }

    async fn call_as(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, headers, body)
    }

    async fn post(&self, path: &str) -> Value {
        let (status, _, body) = self.call(Method::POST, path).await;
        assert_eq!(status, StatusCode::OK, "POST {path}: {body:#}");
        body
    }

    async fn metrics(&self) -> HashMap<String, f64> {
        let (status, headers, body) = self.call(Method::GET, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            headers[reqwest::header::CONTENT_TYPE],
            "text/plain; version=0.0.4"
        );
        parse_prometheus(body.as_str().expect("metrics are text")).unwrap_or_else(|e| panic!("{e}"))
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.handle)
            .await
            .expect("serve returns after shutdown")
            .expect("serve task")
            .expect("serve");
    }
}

/// The actions of an answer with the given kind and outcome.
fn actions<'a>(answer: &'a Value, kind: &str, outcome: &str) -> Vec<&'a Value> {
    answer["actions"]
        .as_array()
        .unwrap_or_else(|| panic!("no actions in {answer:#}"))
        .iter()
        .filter(|a| a["kind"] == kind && a["outcome"] == outcome)
        .collect()
}

/// Audit records of `action` with `outcome`, by target.
async fn audited(w: &World, action: &str, outcome: &str) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for a in w.audit().await {
        if a.action == action && a.outcome == outcome {
            *m.entry(a.target).or_default() += 1;
        }
    }
    m
}

/// An archived session `s` with one archived chat `c` and a clean worktree.
/// A fresh world of `db` and a [`Server`] in front of it, with no token.
async fn served(db: Db) -> (World, Server) {
    let w = World::new(db).await;
    let srv = Server::start(&w, None).await;
    (w, srv)
}

async fn archived(w: &World, s: &str, c: &str, wt: &str) -> std::path::PathBuf {
    w.chat_worktree(s, c, wt, "archived").await
}

// ------------------------------------------------------------- success --

async fn chat_nudge_removes_the_worktree_of_its_archived_session(db: Db) {
    let (w, srv) = served(db).await;
    let path = archived(&w, "s1", "c1", "w1").await;

    let answer = srv.post("/reconcile/c1").await;
    assert_eq!(answer["scope"], "chat");
    assert_eq!(answer["chat_id"], "c1");
    assert_eq!(answer["live"], false);
    assert_eq!(answer["known"], true);
    assert_eq!(answer["ok"], true);
    assert_eq!(answer["result"], "converged");
    assert_eq!(answer["dry_run"], false);
    assert_eq!(answer["trigger"], "nudge");
    let done = actions(&answer, "remove_worktree", "done");
    assert_eq!(done.len(), 1, "{answer:#}");
    let a = done[0];
    assert_eq!(a["target"], format!("worktree:{}", path.display()));
    assert!(
        a["reason"]
            .as_str()
            .unwrap()
            .contains("session s1 archived"),
        "{a:#}"
    );
    assert_eq!(a["owner"]["session_id"], "s1");
    assert_eq!(a["action"]["worktree"]["row_id"], "w1");
    assert!(answer["at_risk"].as_array().unwrap().is_empty());
    assert!(answer["errors"].as_array().unwrap().is_empty());
    assert!(!path.exists(), "worktree removed");
    assert_eq!(w.row_state("w1").await.0, "removed");
    assert!(
        git_ok(&w.repo, &["rev-parse", "--verify", "boo/w1"]),
        "branch kept"
    );

    // Again: nothing left to do.
    let again = srv.post("/reconcile/c1").await;
    assert!(again["actions"].as_array().unwrap().is_empty(), "{again:#}");
    assert_eq!(again["ok"], true);
    srv.stop().await;
}

/// A JSON type, as the old close hook's answers used them.
#[derive(Clone, Copy, Debug)]
enum Json {
    Bool,
    String,
    /// A list of strings.
    Names,
    /// A list of objects of exactly this shape.
    ListOf(&'static [(&'static str, Json)]),
}

/// `POST /api/chats/{chatId}/close`, as the old hook answered it.
const OLD_CHAT_CLOSE: &[(&str, Json)] = &[
    ("ok", Json::Bool),
    ("disposed", Json::Names),
    ("worktreeRemoved", Json::Bool),
    ("worktreeAtRisk", Json::Bool),
];

/// One chat of `POST /api/sessions/{sessionId}/close`'s `results`.
const OLD_SESSION_RESULT: &[(&str, Json)] = &[
    ("chatId", Json::String),
    ("disposed", Json::Names),
    ("worktreeRemoved", Json::Bool),
    ("worktreeAtRisk", Json::Bool),
];

const OLD_SESSION_CLOSE: &[(&str, Json)] = &[
    ("ok", Json::Bool),
    ("results", Json::ListOf(OLD_SESSION_RESULT)),
];

/// Every key of `shape` is in `answer` with its type (the controller's own
/// keys may stand beside them); the objects of a `ListOf` have exactly the
/// shape's keys.
fn assert_shape(answer: &Value, shape: &[(&str, Json)], exact: bool) {
    let object = answer.as_object().expect("an object");
    if exact {
        let keys: HashSet<&str> = object.keys().map(String::as_str).collect();
        let old: HashSet<&str> = shape.iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, old, "exactly the old keys: {answer:#}");
    }
    for (key, kind) in shape {
        let v = object
            .get(*key)
            .unwrap_or_else(|| panic!("{key} missing: {answer:#}"));
        let fits = match kind {
            Json::Bool => v.is_boolean(),
            Json::String => v.is_string(),
            Json::Names => v.as_array().is_some_and(|a| a.iter().all(Value::is_string)),
            Json::ListOf(inner) => match v.as_array() {
                Some(a) => {
                    a.iter().for_each(|o| assert_shape(o, inner, true));
                    true
                }
                None => false,
            },
        };
        assert!(fits, "{key} is not {kind:?}: {answer:#}");
    }
}

async fn close_aliases_answer_in_the_old_hooks_shape(db: Db) {
    let (w, srv) = served(db).await;
    let path = archived(&w, "s1", "c1", "w1").await;
    // The chat's agent: a labelled process in its worktree and its row,
    // both naming it as the launcher does.
    let agent = w.agent("c1", "s1", "exec sleep 600", &path);
    let (pid, start) = (agent.pid(), agent.start_time());
    w.sql(&format!(
        "INSERT INTO agent_sessions (id, chat_id, session_id, agent, backend, host, pid, pid_start_time) \
         VALUES ('a1', 'c1', 's1', 'test-agent', 'acp', '{HOST}', {pid}, {start})"
    ))
    .await;
    // An unrelated process of another chat stays.
    w.session("s9", "open").await;
    w.chat("c9", "s9", "open").await;
    let bystander = w.agent("c9", "s9", "exec sleep 600", w.tmp.path());

    let answer = srv.post("/api/chats/c1/close").await;
    assert_shape(&answer, OLD_CHAT_CLOSE, false);
    assert_eq!(answer["ok"], true, "{answer:#}");
    assert_eq!(answer["chatId"], "c1");
    assert_eq!(
        answer["disposed"],
        serde_json::json!(["test-agent"]),
        "its process and its row are one agent: {answer:#}"
    );
    assert_eq!(answer["worktreeRemoved"], true);
    assert_eq!(answer["worktreeAtRisk"], false);
    assert_eq!(answer["atRiskReasons"], serde_json::json!([]));
    // The full answer comes along.
    assert_eq!(answer["chat_id"], "c1");
    assert_eq!(answer["live"], false);
    assert_eq!(actions(&answer, "terminate_process", "done").len(), 1);
    assert_eq!(actions(&answer, "close_agent_row", "done").len(), 1);
    assert_eq!(actions(&answer, "remove_worktree", "done").len(), 1);
    assert!(!path.exists());
    assert!(!common::alive(pid, start), "the agent is stopped");
    assert!(common::alive(bystander.pid(), bystander.start_time()));

    // The session alias: one entry per chat of the session, the one with
    // nothing to stop included.
    let path2 = archived(&w, "s2", "c2", "w2").await;
    w.chat("c3", "s2", "archived").await;
    w.sql(&format!(
        "INSERT INTO agent_sessions (id, chat_id, session_id, agent, backend, host) \
         VALUES ('a2', 'c2', 's2', 'goose', 'acp', '{HOST}')"
    ))
    .await;
    let answer = srv.post("/api/sessions/s2/close?force=false").await;
    assert_shape(&answer, OLD_SESSION_CLOSE, false);
    assert_eq!(answer["ok"], true, "{answer:#}");
    assert_eq!(
        answer["results"],
        serde_json::json!([
            {"chatId": "c2", "disposed": ["goose"], "worktreeRemoved": true, "worktreeAtRisk": false},
            {"chatId": "c3", "disposed": [], "worktreeRemoved": true, "worktreeAtRisk": false},
        ]),
        "{answer:#}"
    );
    assert_eq!(answer["session_id"], "s2");
    assert_eq!(answer["scope"], "session");
    assert!(!path2.exists());

    // A second close: nothing left, still ok, still the same shape.
    let again = srv.post("/api/chats/c1/close").await;
    assert_shape(&again, OLD_CHAT_CLOSE, false);
    assert_eq!(again["ok"], true);
    assert_eq!(again["worktreeRemoved"], false);
    assert_eq!(again["disposed"], serde_json::json!([]));
    let again = srv.post("/api/sessions/s2/close").await;
    assert_shape(&again, OLD_SESSION_CLOSE, false);
    assert_eq!(again["results"][0]["disposed"], serde_json::json!([]));
    assert_eq!(again["results"][1]["worktreeRemoved"], false);
    // An unknown session: ok, no chats.
    let unknown = srv.post("/api/sessions/nope/close").await;
    assert_shape(&unknown, OLD_SESSION_CLOSE, false);
    assert_eq!(unknown["results"], serde_json::json!([]));

    let m = srv.metrics().await;
    assert_eq!(m[r#"boo_reconciler_nudges_total{route="chat_close"}"#], 2.0);
    assert_eq!(
        m[r#"boo_reconciler_nudges_total{route="session_close"}"#],
        3.0
    );
    srv.stop().await;
}

async fn dry_run_answers_with_the_plan_and_changes_nothing(db: Db) {
    let (w, srv) = served(db).await;
    let path = archived(&w, "s1", "c1", "w1").await;
    let audit_before = w.audit().await.len();

    for route in [
        "/reconcile/c1?dry_run=true",
        "/api/chats/c1/close?dry_run=1&force=true",
    ] {
        let answer = srv.post(route).await;
        assert_eq!(answer["dry_run"], true, "{answer:#}");
        let planned = actions(&answer, "remove_worktree", "planned");
        assert_eq!(planned.len(), 1, "{answer:#}");
        assert_eq!(planned[0]["target"], format!("worktree:{}", path.display()));
    }
    assert!(path.exists(), "nothing removed");
    assert_eq!(w.row_state("w1").await.0, "active");
    assert_eq!(w.audit().await.len(), audit_before, "no audit record");
    srv.stop().await;
}

async fn force_archives_and_removes_an_at_risk_worktree(db: Db) {
    let w = World::new(db).await;
    let srv = Server::start(&w, Some(TOKEN)).await;
    let path = archived(&w, "s1", "c1", "w1").await;
    fs::write(path.join("notes.txt"), "unsaved work\n").unwrap();

    let answer = srv.post("/reconcile/c1").await;
    assert_eq!(answer["result"], "at_risk", "{answer:#}");
    assert_eq!(answer["ok"], true);
    let kept = actions(&answer, "remove_worktree", "kept_at_risk");
    assert_eq!(kept.len(), 1, "{answer:#}");
    assert_eq!(kept[0]["at_risk_reasons"][0]["kind"], "untracked");
    let at_risk = answer["at_risk"].as_array().unwrap();
    assert_eq!(at_risk.len(), 1);
    assert_eq!(at_risk[0]["worktree_id"], "w1");
    assert_eq!(at_risk[0]["reasons"][0]["kind"], "untracked");
    assert!(path.join("notes.txt").exists());

    let legacy = srv.post("/api/chats/c1/close").await;
    assert_eq!(legacy["worktreeAtRisk"], true, "{legacy:#}");
    assert_eq!(legacy["worktreeRemoved"], false);
    let reasons = legacy["atRiskReasons"].as_array().unwrap();
    assert!(
        reasons[0].as_str().unwrap().contains("notes.txt"),
        "{legacy:#}"
    );

    let forced = srv.post("/reconcile/c1?force=true").await;
    assert_eq!(forced["force"], true);
    let done = actions(&forced, "remove_worktree", "done");
    assert_eq!(done.len(), 1, "{forced:#}");
    let reference = done[0]["detail"]["archive"]["reference"]
        .as_str()
        .unwrap_or_else(|| panic!("archive ref in {forced:#}"))
        .to_string();
    assert!(reference.starts_with("refs/boo/archive/w1/"), "{reference}");
    assert!(!path.exists());
    // The work is in the archive ref's untracked part.
    let files = git(
        &w.repo,
        &["ls-tree", "-r", "--name-only", &format!("{reference}^3")],
    );
    assert!(files.contains("notes.txt"), "{files}");
    srv.stop().await;
}

async fn live_chat_answers_200_with_nothing_done(db: Db) {
    let w = World::new(db).await;
    let srv = Server::start(&w, Some(TOKEN)).await;
    let path = w.chat_worktree("s1", "c1", "w1", "open").await;

    for route in ["/reconcile/c1?force=true", "/api/chats/c1/close"] {
        let answer = srv.post(route).await;
        assert_eq!(answer["live"], true, "{answer:#}");
        assert_eq!(answer["ok"], true);
        assert!(
            answer["actions"].as_array().unwrap().is_empty(),
            "{answer:#}"
        );
    }
    assert!(path.exists());
    assert_eq!(w.row_state("w1").await.0, "active");
    srv.stop().await;
}

async fn unknown_chat_answers_200(db: Db) {
    let (_w, srv) = served(db).await;
    let answer = srv.post("/reconcile/no-such-chat").await;
    assert_eq!(answer["chat_id"], "no-such-chat");
    assert_eq!(answer["live"], false);
    assert_eq!(answer["known"], false);
    assert_eq!(answer["ok"], true);
    assert!(answer["actions"].as_array().unwrap().is_empty());
    let answer = srv.post("/sessions/no-such-session/reconcile").await;
    assert_eq!(answer["known"], false);
    assert_eq!(answer["live"], false);
    srv.stop().await;
}

async fn session_and_host_nudges_reconcile_their_scope(db: Db) {
    let (w, srv) = served(db).await;
    let p1 = archived(&w, "s1", "c1", "w1").await;
    let p2 = archived(&w, "s2", "c2", "w2").await;

    let answer = srv.post("/sessions/s1/reconcile").await;
    assert_eq!(answer["scope"], "session");
    assert_eq!(answer["session_id"], "s1");
    assert_eq!(answer["live"], false);
    assert_eq!(
        actions(&answer, "remove_worktree", "done").len(),
        1,
        "{answer:#}"
    );
    assert!(!p1.exists());
    assert!(p2.exists(), "another session's worktree is out of scope");

    let answer = srv.post("/reconcile").await;
    assert_eq!(answer["scope"], "host");
    assert!(answer.get("live").is_none());
    let done = actions(&answer, "remove_worktree", "done");
    assert_eq!(done.len(), 1, "{answer:#}");
    assert_eq!(done[0]["target"], format!("worktree:{}", p2.display()));
    assert!(!p2.exists());

    let m = srv.metrics().await;
    assert_eq!(m[r#"boo_reconciler_nudges_total{route="session"}"#], 1.0);
    assert_eq!(m[r#"boo_reconciler_nudges_total{route="host"}"#], 1.0);
    srv.stop().await;
}

// --------------------------------------------------------- concurrency --

async fn concurrent_nudges_for_one_chat_tear_down_once(db: Db) {
    const N: usize = 200;
    let w = World::new(db).await;
    let srv = Arc::new(Server::start(&w, None).await);
    let path = archived(&w, "s1", "c1", "w1").await;

    // Open the connections first, so that the nudges go out together.
    let warm: Vec<_> = (0..N)
        .map(|_| {
            let srv = Arc::clone(&srv);
            tokio::spawn(async move { srv.call(Method::GET, "/healthz").await.0 })
        })
        .collect();
    for h in warm {
        assert_eq!(h.await.unwrap(), StatusCode::OK);
    }
    let gate = Arc::new(tokio::sync::Barrier::new(N));
    let nudges: Vec<_> = (0..N)
        .map(|_| {
            let (srv, gate) = (Arc::clone(&srv), Arc::clone(&gate));
            tokio::spawn(async move {
                gate.wait().await;
                srv.call(Method::POST, "/reconcile/c1").await
            })
        })
        .collect();
    let mut answers = Vec::new();
    for h in nudges {
        let (status, _, body) = h.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{body:#}");
        answers.push(body);
    }

    // Exactly one teardown.
    assert!(!path.exists());
    let removals = audited(&w, "remove_worktree", "done").await;
    assert_eq!(removals.len(), 1, "{removals:?}");
    assert_eq!(removals.values().sum::<usize>(), 1, "{removals:?}");

    // 200 identical answers: the nudges that arrived while the teardown was
    // under way wait for a follow-up run (it must see the database as it is
    // after their request), and that run's answer includes the teardown
    // they overlapped. Timing fields (started_at, duration) differ between
    // the runs and are left out of the comparison.
    let mut groups: BTreeMap<String, usize> = BTreeMap::new();
    for a in &answers {
        let same = serde_json::json!({
            "ok": a["ok"], "live": a["live"], "actions": a["actions"],
            "at_risk": a["at_risk"], "errors": a["errors"],
        });
        *groups.entry(same.to_string()).or_default() += 1;
    }
    assert_eq!(groups.len(), 1, "one answer for all: {groups:#?}");
    let answer = &answers[0];
    assert_eq!(answer["ok"], true, "{answer:#}");
    assert_eq!(answer["live"], false);
    let removal = &answer["actions"][0];
    assert_eq!(removal["kind"], "remove_worktree", "{answer:#}");
    assert_eq!(removal["outcome"], "done");
    let m = srv.metrics().await;
    assert_eq!(m[r#"boo_reconciler_nudges_total{route="chat"}"#], N as f64);
    let passes: f64 = m
        .iter()
        .filter(|(k, _)| {
            k.starts_with("boo_reconciler_reconcile_total{") && k.contains(r#"trigger="nudge""#)
        })
        .map(|(_, v)| v)
        .sum();
    assert!(
        passes as usize >= groups.len(),
        "each distinct answer is a run's: {passes} passes, {} distinct answers",
        groups.len()
    );
    assert!(
        passes <= (N / 10) as f64,
        "{N} concurrent nudges coalesce into few runs, not {passes}"
    );
    assert_eq!(
        m[r#"boo_reconciler_actions_total{kind="remove_worktree",outcome="done"}"#],
        1.0
    );
    Arc::into_inner(srv).expect("last reference").stop().await;
}

async fn nudge_during_a_full_pass_acts_once_per_target(db: Db) {
    let w = World::new(db).await;
    let srv = Arc::new(Server::start(&w, None).await);
    let mut paths = Vec::new();
    for i in 0..8 {
        paths.push(archived(&w, &format!("s{i}"), &format!("c{i}"), &format!("w{i}")).await);
    }
    let full = {
        let srv = Arc::clone(&srv);
        tokio::spawn(async move { srv.call(Method::POST, "/reconcile").await })
    };
    // Right behind it: a nudge for one of the chats the full pass covers.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let (s, _, chat) = srv.call(Method::POST, "/reconcile/c3").await;
    assert_eq!(s, StatusCode::OK, "{chat:#}");
    let (s, _, host) = full.await.unwrap();
    assert_eq!(s, StatusCode::OK, "{host:#}");
    assert_eq!(chat["ok"], true, "{chat:#}");
    assert_eq!(host["ok"], true, "{host:#}");

    for p in &paths {
        assert!(!p.exists(), "{} removed", p.display());
    }
    let removals = audited(&w, "remove_worktree", "done").await;
    assert_eq!(removals.len(), paths.len(), "{removals:?}");
    for (target, n) in &removals {
        assert_eq!(*n, 1, "{target} removed once: {removals:?}");
    }
    // Between the two answers, each worktree was removed exactly once.
    let mut done: HashMap<String, usize> = HashMap::new();
    for answer in [&chat, &host] {
        for a in actions(answer, "remove_worktree", "done") {
            *done
                .entry(a["target"].as_str().unwrap().into())
                .or_default() += 1;
        }
    }
    assert_eq!(done.len(), paths.len(), "{chat:#} {host:#}");
    assert!(done.values().all(|n| *n == 1), "{done:?}");
    // What the nudge did to its worktree depends on when it came: it removed
    // it (the full pass then left it alone), left it to the full pass that
    // was removing it, or found the directory gone and only the row left to
    // mark. Never a second removal.
    for a in chat["actions"].as_array().unwrap() {
        let seen = (a["kind"].as_str().unwrap(), a["outcome"].as_str().unwrap());
        assert!(
            matches!(
                seen,
                ("remove_worktree", "done")
                    | ("remove_worktree", "skipped")
                    | ("mark_worktree_removed", "done")
                    | ("mark_worktree_removed", "skipped")
            ),
            "{a:#}"
        );
        if seen.1 == "skipped" && seen.0 == "remove_worktree" {
            assert_eq!(a["message"], "handled by a concurrent run");
        }
    }
    Arc::into_inner(srv).expect("last reference").stop().await;
}

// ------------------------------------------------------------- force --

/// An archived session `s` with chat `c` and a worktree `wt` holding an
/// untracked file: kept by every pass, removed only by force.
async fn dirty(w: &World, s: &str, c: &str, wt: &str) -> std::path::PathBuf {
    let path = archived(w, s, c, wt).await;
    fs::write(path.join("notes.txt"), format!("unsaved work of {wt}\n")).unwrap();
    path
}

/// Every route that takes `?force=`, forced, for chat `c` and session `s`;
/// the host's last.
fn forced_routes(c: &str, s: &str) -> [String; 5] {
    [
        format!("/reconcile/{c}?force=true"),
        format!("/sessions/{s}/reconcile?force=true"),
        format!("/api/chats/{c}/close?force=true"),
        format!("/api/sessions/{s}/close?dry_run=false&force=true"),
        "/reconcile?force=1".into(),
    ]
}

/// The worktree at `path` is there, whole (`before` is its files), its row
/// active or at risk, and it was never archived nor removed.
async fn untouched(w: &World, path: &std::path::Path, before: &[(String, Vec<u8>)]) {
    assert!(path.exists(), "{} removed", path.display());
    assert_eq!(
        files(path, Tree::Whole),
        before,
        "{} changed",
        path.display()
    );
    let id = path.file_name().unwrap().to_str().unwrap();
    assert_ne!(w.row_state(id).await.0, "removed");
    assert!(audited(w, "remove_worktree", "done").await.is_empty());
    assert!(git(&w.repo, &["for-each-ref", "refs/boo/archive/"]).is_empty());
}

async fn force_without_a_configured_token_is_403_and_keeps_the_worktree(db: Db) {
    let (w, srv) = served(db).await;
    let path = dirty(&w, "s1", "c1", "w1").await;
    let before = files(&path, Tree::Whole);

    for route in forced_routes("c1", "s1") {
        // A token sent anyway changes nothing: there is none to check it
        // against.
        for token in [None, Some("anything")] {
            let (status, _, body) = srv.call_as(Method::POST, &route, token).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "POST {route}: {body:#}");
            let error = body["error"].as_str().unwrap_or_default();
            assert!(error.contains("http.token"), "{body:#}");
            assert!(error.contains("BOO_RECONCILER_TOKEN"), "{body:#}");
            assert!(error.contains("Authorization: Bearer"), "{body:#}");
            untouched(&w, &path, &before).await;
        }
    }
    let m = srv.metrics().await;
    assert_eq!(
        m[r#"boo_reconciler_actions_total{kind="remove_worktree",outcome="done"}"#],
        0.0
    );

    // A plain nudge needs no token, as the old close hook's callers send
    // none: it does what a pass does, and keeps the worktree.
    let plain = srv.post("/reconcile/c1").await;
    assert_eq!(plain["result"], "at_risk", "{plain:#}");
    assert_eq!(actions(&plain, "remove_worktree", "kept_at_risk").len(), 1);
    let legacy = srv.post("/api/chats/c1/close").await;
    assert_eq!(legacy["worktreeAtRisk"], true, "{legacy:#}");
    let legacy = srv.post("/api/sessions/s1/close").await;
    assert_eq!(legacy["ok"], true, "{legacy:#}");
    // A dry run acts on nothing, forced or not.
    let dry = srv
        .post("/sessions/s1/reconcile?dry_run=true&force=true")
        .await;
    assert_eq!(dry["dry_run"], true, "{dry:#}");
    untouched(&w, &path, &before).await;
    assert_eq!(w.row_state("w1").await.0, "at_risk");

    // A closed chat whose worktree is clean still goes on a plain nudge.
    let clean = archived(&w, "s2", "c2", "w2").await;
    let answer = srv.post("/api/chats/c2/close").await;
    assert_eq!(answer["worktreeRemoved"], true, "{answer:#}");
    assert!(!clean.exists());
    srv.stop().await;
}

async fn force_with_a_wrong_token_is_401_and_with_the_right_one_archives(db: Db) {
    let w = World::new(db).await;
    let srv = Server::start(&w, Some(TOKEN)).await;
    // A worktree of its own for each route; the host route goes last, when
    // only its own is left.
    let mut cases = Vec::new();
    for i in 1..=5 {
        let (s, c, wt) = (format!("s{i}"), format!("c{i}"), format!("w{i}"));
        let path = dirty(&w, &s, &c, &wt).await;
        let route = forced_routes(&c, &s)[i - 1].clone();
        let before = files(&path, Tree::Whole);
        cases.push((route, path, before));
    }
    for (route, _, _) in &cases {
        for token in [
            None,
            Some("wrong"),
            Some("s3cret-token-but-longer"),
            Some(""),
        ] {
            let (status, headers, body) = srv.call_as(Method::POST, route, token).await;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "POST {route} with {token:?}"
            );
            assert!(headers[reqwest::header::WWW_AUTHENTICATE]
                .to_str()
                .unwrap()
                .starts_with("Bearer"));
            assert!(body["error"].is_string(), "{body:#}");
        }
    }
    for (_, path, before) in &cases {
        untouched(&w, path, before).await;
    }

    for (route, path, _) in &cases {
        let answer = srv.post(route).await;
        assert_eq!(answer["force"], true, "{answer:#}");
        let done = actions(&answer, "remove_worktree", "done");
        assert_eq!(done.len(), 1, "POST {route}: {answer:#}");
        assert_eq!(done[0]["target"], format!("worktree:{}", path.display()));
        let reference = done[0]["detail"]["archive"]["reference"]
            .as_str()
            .unwrap_or_else(|| panic!("archive ref in {answer:#}"));
        let listed = git(
            &w.repo,
            &["ls-tree", "-r", "--name-only", &format!("{reference}^3")],
        );
        assert!(listed.contains("notes.txt"), "{listed}");
        assert!(!path.exists(), "POST {route} removed {}", path.display());
    }
    let removals = audited(&w, "remove_worktree", "done").await;
    assert_eq!(removals.len(), cases.len(), "{removals:?}");
    srv.stop().await;
}

/// A forced request for `c1` sent in the background with the server's
/// token.
fn forced_in_background(
    srv: &Arc<Server>,
    route: &'static str,
) -> JoinHandle<(StatusCode, reqwest::header::HeaderMap, Value)> {
    let srv = Arc::clone(srv);
    tokio::spawn(async move { srv.call(Method::POST, route).await })
}

async fn a_forced_request_waits_for_the_run_holding_its_worktree_then_archives_it(db: Db) {
    let w = World::new(db).await;
    let srv = Arc::new(Server::start(&w, Some(TOKEN)).await);
    let path = dirty(&w, "s1", "c1", "w1").await;
    let target = Target::Worktree(path.clone());

    // Another run acts on the worktree (and, being without force, would
    // keep it): the forced request must wait for it, not skip it.
    let other_run = srv.service.hold(&target).await;
    let other_run = other_run.expect("nothing else holds the worktree");
    let forced = forced_in_background(&srv, "/reconcile/c1?force=true");
    let plain = forced_in_background(&srv, "/api/chats/c1/close");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !forced.is_finished(),
        "the forced request waits for the other run"
    );
    assert!(path.join("notes.txt").exists());
    drop(other_run);

    let (status, _, answer) = forced.await.unwrap();
    assert_eq!(status, StatusCode::OK, "{answer:#}");
    assert_eq!(answer["ok"], true, "{answer:#}");
    let done = actions(&answer, "remove_worktree", "done");
    assert_eq!(done.len(), 1, "{answer:#}");
    assert!(
        done[0]["detail"]["archive"]["reference"].is_string(),
        "{answer:#}"
    );
    for a in answer["actions"].as_array().unwrap() {
        assert_ne!(
            a["outcome"], "skipped",
            "a forced action skipped: {answer:#}"
        );
    }
    assert!(answer.get("busy").is_none(), "{answer:#}");
    assert!(!path.exists());
    // The plain nudge that met the same run keeps today's behaviour: it
    // leaves the worktree to the run that acts on it, and never removes it.
    let (status, _, plain) = plain.await.unwrap();
    assert_eq!(status, StatusCode::OK, "{plain:#}");
    assert!(
        actions(&plain, "remove_worktree", "done").is_empty(),
        "{plain:#}"
    );
    let removals = audited(&w, "remove_worktree", "done").await;
    assert_eq!(removals.values().sum::<usize>(), 1, "{removals:?}");
    Arc::into_inner(srv).expect("last reference").stop().await;
}

async fn a_forced_request_held_past_the_pass_timeout_answers_409_busy(db: Db) {
    let w = World::new(db).await;
    let mut config = w.config();
    config.r#loop.pass_timeout = Duration::from_secs(2);
    let controller = w.controller_with(config, w.store.clone());
    let srv =
        Server::start_controller(controller, Some(TOKEN), ServeOptions::default(), true).await;
    let srv = Arc::new(srv);
    let path = dirty(&w, "s1", "c1", "w1").await;
    let before = files(&path, Tree::Whole);
    let target = Target::Worktree(path.clone());

    // The other run holds the worktree past the pass's time (and within
    // the queue's bound, twice that): the forced action cannot be taken.
    let other_run = srv.service.hold(&target).await;
    let other_run = other_run.expect("nothing else holds the worktree");
    let forced = forced_in_background(&srv, "/api/sessions/s1/close?force=true");
    tokio::time::sleep(Duration::from_secs(3)).await;
    drop(other_run);
    let (status, headers, answer) = forced.await.unwrap();
    assert_eq!(status, StatusCode::CONFLICT, "{answer:#}");
    assert_eq!(headers[reqwest::header::RETRY_AFTER], "5");
    let error = answer["error"].as_str().unwrap_or_default();
    assert!(error.contains("busy, retry"), "{answer:#}");
    assert!(error.contains(&target.to_string()), "{answer:#}");
    assert_eq!(answer["busy"], serde_json::json!([target.to_string()]));
    assert_eq!(answer["ok"], false, "{answer:#}");
    assert_eq!(answer["results"][0]["worktreeRemoved"], false, "{answer:#}");
    untouched(&w, &path, &before).await;

    // Tried again, with nothing in the way, it is done.
    let again = srv.post("/api/sessions/s1/close?force=true").await;
    assert_eq!(again["results"][0]["worktreeRemoved"], true, "{again:#}");
    assert!(!path.exists());
    Arc::into_inner(srv).expect("last reference").stop().await;
}

// ----------------------------------------------------------- bad input --

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_answers_json_errors() {
    let (_w, srv) = served(Db::Sqlite).await;
    let long = "a".repeat(129);
    let cases: Vec<(Method, String, StatusCode, &str)> = vec![
        (
            Method::POST,
            "/reconcile/".into(),
            StatusCode::BAD_REQUEST,
            "chat id is empty",
        ),
        (
            Method::POST,
            "/sessions//reconcile".into(),
            StatusCode::BAD_REQUEST,
            "session id is empty",
        ),
        (
            Method::POST,
            "/api/chats//close".into(),
            StatusCode::BAD_REQUEST,
            "chat id is empty",
        ),
        (
            Method::POST,
            "/api/sessions//close".into(),
            StatusCode::BAD_REQUEST,
            "session id is empty",
        ),
        (
            Method::POST,
            format!("/reconcile/{long}"),
            StatusCode::BAD_REQUEST,
            "129 bytes long: at most 128",
        ),
        (
            Method::POST,
            format!("/api/sessions/{long}/close"),
            StatusCode::BAD_REQUEST,
            "session id is 129 bytes",
        ),
        (
            Method::POST,
            "/reconcile/a%2Fb".into(),
            StatusCode::BAD_REQUEST,
            "chat id has '/' at byte 1",
        ),
        (
            Method::POST,
            "/reconcile/a%20b".into(),
            StatusCode::BAD_REQUEST,
            "chat id has ' ' at byte 1",
        ),
        (
            Method::POST,
            "/reconcile/%C3%A9".into(),
            StatusCode::BAD_REQUEST,
            "only letters A-Z a-z, digits 0-9 and _ . : -",
        ),
        (
            Method::POST,
            "/reconcile/%FF".into(),
            StatusCode::BAD_REQUEST,
            "not valid UTF-8",
        ),
        (
            Method::POST,
            "/reconcile/c1%00".into(),
            StatusCode::BAD_REQUEST,
            "chat id has '\\0'",
        ),
        (
            Method::POST,
            "/reconcile/c1?force=maybe".into(),
            StatusCode::BAD_REQUEST,
            "force=\"maybe\": accepted values are true, false, 1 and 0",
        ),
        (
            Method::POST,
            "/reconcile/c1?dry_run=yes".into(),
            StatusCode::BAD_REQUEST,
            "dry_run=\"yes\"",
        ),
        (
            Method::POST,
            "/reconcile?force=".into(),
            StatusCode::BAD_REQUEST,
            "force=\"\"",
        ),
        (
            Method::POST,
            "/reconcile/c1?forse=true".into(),
            StatusCode::BAD_REQUEST,
            "unknown query parameter \"forse\": accepted are force, dry_run",
        ),
        (
            Method::POST,
            "/api/chats/c1/close?force=true&force=true".into(),
            StatusCode::BAD_REQUEST,
            "more than once",
        ),
        (
            Method::GET,
            "/nope".into(),
            StatusCode::NOT_FOUND,
            "no route GET /nope",
        ),
        (
            Method::POST,
            "/reconcile/c1/extra".into(),
            StatusCode::NOT_FOUND,
            "no route",
        ),
        (
            Method::GET,
            "/reconcile/c1".into(),
            StatusCode::METHOD_NOT_ALLOWED,
            "method GET is not allowed on /reconcile/c1: use POST",
        ),
        (
            Method::PUT,
            "/reconcile".into(),
            StatusCode::METHOD_NOT_ALLOWED,
            "use POST",
        ),
        (
            Method::DELETE,
            "/status".into(),
            StatusCode::METHOD_NOT_ALLOWED,
            "use GET",
        ),
        (
            Method::POST,
            "/metrics".into(),
            StatusCode::METHOD_NOT_ALLOWED,
            "use GET",
        ),
    ];
    for (method, path, status, says) in cases {
        let (got, headers, body) = srv.call(method.clone(), &path).await;
        assert_eq!(got, status, "{method} {path}: {body:#}");
        let message = body["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{method} {path}: not a JSON error: {body:#}"));
        assert!(
            message.contains(says),
            "{method} {path}: {message:?} lacks {says:?}"
        );
        assert!(headers[reqwest::header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("application/json"));
        if status == StatusCode::METHOD_NOT_ALLOWED {
            assert!(
                headers.contains_key(reqwest::header::ALLOW),
                "{method} {path}"
            );
        }
    }
    // A body is ignored, and refused when large.
    let resp = srv
        .client
        .post(format!("{}/reconcile/c1", srv.base))
        .body(vec![b'x'; 100 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("at most 65536"),
        "{body:#}"
    );
    let resp = srv
        .client
        .post(format!("{}/reconcile/c1", srv.base))
        .body("{\"ignored\": true}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    // No nudge was counted for the refused requests.
    let m = srv.metrics().await;
    assert_eq!(m[r#"boo_reconciler_nudges_total{route="chat"}"#], 1.0);
    srv.stop().await;
}

/// Sends raw bytes on a fresh connection and reads until the server closes
/// it (or `limit` passes); answers what came back.
async fn raw(base: &str, bytes: &[u8], limit: Duration) -> (String, bool) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let closed = tokio::time::timeout(limit, async {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .is_ok();
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_or_garbled_clients_cannot_hold_or_break_the_server() {
    let w = World::new(Db::Sqlite).await;
    let opts = ServeOptions {
        header_read_timeout: Duration::from_millis(300),
        body_read_timeout: Duration::from_millis(300),
        ..ServeOptions::default()
    };
    let srv = Server::start_with(&w, None, opts, true).await;
    let t0 = Instant::now();
    // Headers that never end, and a connection that sends nothing.
    let (_, closed) = raw(
        &srv.base,
        b"POST /reconcile/c1 HTTP/1.1\r\nHost: x\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(closed, "a half-sent request is cut off");
    let (_, closed) = raw(&srv.base, b"", Duration::from_secs(5)).await;
    assert!(closed, "a silent connection is cut off");
    assert!(t0.elapsed() < Duration::from_secs(5));
    // Garbage, a huge header, a path hyper refuses: answered or closed.
    for bytes in [
        b"\x00\xff\x13garbage\r\n\r\n".to_vec(),
        format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(1 << 20)).into_bytes(),
        b"GET /reconcile/a b HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        b"POST /reconcile/c1 HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n".to_vec(),
        b"POST /reconcile/c1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nffffff\r\nabc".to_vec(),
    ] {
        let (_, closed) = raw(&srv.base, &bytes, Duration::from_secs(5)).await;
        assert!(closed, "connection closed for {:?}", String::from_utf8_lossy(&bytes[..40.min(bytes.len())]));
    }
    let (answer, _) = raw(
        &srv.base,
        b"POST /reconcile/c1 HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    // Still serving.
    let (status, _, body) = srv.call(Method::GET, "/healthz").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, serde_json::json!({"ok": true}));
    srv.stop().await;
}

/// A flood of idle connections (opened, then silent or with a request cut
/// off half-way) must not keep the liveness probe waiting behind them. The
/// latency itself is measured by the benchmark; here it only has to answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_answers_while_2000_idle_connections_are_open() {
    use tokio::io::AsyncWriteExt;
    let w = World::new(Db::Sqlite).await;
    // The options `run` uses.
    let srv = Server::start(&w, None).await;
    let addr = srv.base.trim_start_matches("http://").to_string();
    let mut idle = Vec::with_capacity(2000);
    for i in 0..2000 {
        let mut s = tokio::net::TcpStream::connect(&addr)
            .await
            .expect("connect");
        if i % 2 == 0 {
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
                .await
                .expect("half a request");
        }
        idle.push(s);
    }
    let t0 = Instant::now();
    let (status, _, body) =
        tokio::time::timeout(Duration::from_secs(5), srv.call(Method::GET, "/healthz"))
            .await
            .expect("/healthz answers while 2000 idle connections are open");
    println!(
        "/healthz with 2000 idle connections open: {:?}",
        t0.elapsed()
    );
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, serde_json::json!({"ok": true}));
    // They were all still open: the server answered beside them, not after
    // cutting them off.
    let mut buf = [0u8; 1];
    let closed = idle
        .iter()
        .filter(|s| !matches!(s.try_read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock))
        .count();
    assert_eq!(
        closed, 0,
        "idle connections closed before /healthz answered"
    );
    drop(idle);
    srv.stop().await;
}

// -------------------------------------------------------------- access --

/// Every route a token guards: all but `/healthz`.
const GUARDED_ROUTES: [(Method, &str); 8] = [
    (Method::POST, "/reconcile/c1"),
    (Method::POST, "/sessions/s1/reconcile"),
    (Method::POST, "/reconcile"),
    (Method::POST, "/api/chats/c1/close"),
    (Method::POST, "/api/sessions/s1/close"),
    (Method::GET, "/status"),
    (Method::GET, "/readyz"),
    (Method::GET, "/metrics"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_guards_every_route_but_healthz() {
    let w = World::new(Db::Sqlite).await;
    let srv = Server::start(&w, Some("s3cret-token")).await;
    for (method, path) in &GUARDED_ROUTES {
        for token in [
            None,
            Some("wrong"),
            Some("s3cret-token-but-longer"),
            Some(""),
        ] {
            let (status, headers, body) = srv.call_as(method.clone(), path, token).await;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{method} {path} with {token:?}"
            );
            assert!(headers[reqwest::header::WWW_AUTHENTICATE]
                .to_str()
                .unwrap()
                .starts_with("Bearer"));
            assert!(body["error"].is_string(), "{body:#}");
        }
        let (status, _, body) = srv
            .call_as(method.clone(), path, Some("s3cret-token"))
            .await;
        assert_eq!(status, StatusCode::OK, "{method} {path}: {body:#}");
    }
    // Another scheme is not a bearer token; the scheme's case does not matter.
    let status_with = async |authorization: &str| {
        srv.client
            .get(format!("{}/status", srv.base))
            .header("Authorization", authorization)
            .send()
            .await
            .unwrap()
            .status()
    };
    assert_eq!(
        status_with("Basic czNjcmV0LXRva2Vu").await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(status_with("bearer s3cret-token").await, StatusCode::OK);
    // Unknown routes do not answer before the token is checked.
    let (status, _, _) = srv.call_as(Method::GET, "/nope", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, _) = srv
        .call_as(Method::GET, "/nope", Some("s3cret-token"))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // /healthz is open.
    let (status, _, body) = srv.call_as(Method::GET, "/healthz", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["ok"], true);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_every_route_is_open() {
    let (_w, srv) = served(Db::Sqlite).await;
    // Every route: the guarded ones and /healthz.
    for (method, path) in GUARDED_ROUTES.iter().chain([&(Method::GET, "/healthz")]) {
        // A token sent anyway is ignored.
        for token in [None, Some("anything")] {
            let (status, _, body) = srv.call_as(method.clone(), path, token).await;
            assert_eq!(status, StatusCode::OK, "{method} {path}: {body:#}");
        }
    }
    srv.stop().await;
}

// ---------------------------------------------------------- read-only --

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_health_and_readiness() {
    let w = World::new(Db::Sqlite).await;
    // No host pass yet: alive, not ready.
    let srv = Server::start_with(&w, None, ServeOptions::default(), false).await;
    let (status, _, body) = srv.call(Method::GET, "/healthz").await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, serde_json::json!({"ok": true}))
    );
    let (status, _, body) = srv.call(Method::GET, "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body:#}");
    assert_eq!(body["ready"], false);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("no host pass has finished yet"),
        "{body:#}"
    );

    // A host pass makes it ready and shows in the status.
    srv.post("/reconcile").await;
    let (status, _, body) = srv.call(Method::GET, "/readyz").await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, serde_json::json!({"ready": true}))
    );
    let (status, _, body) = srv.call(Method::GET, "/status").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["host"], HOST);
    assert_eq!(body["role"], "leader");
    assert_eq!(body["last_host_pass"]["trigger"], "nudge");
    assert_eq!(body["recent_passes"].as_array().unwrap().len(), 1);
    assert!(body["config"]["worktrees"]["root"].is_string(), "{body:#}");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_the_request_in_flight_and_stops_accepting() {
    let w = World::new(Db::Sqlite).await;
    let srv = Arc::new(Server::start(&w, None).await);
    let path = archived(&w, "s1", "c1", "w1").await;
    // A keep-alive connection that stays idle must not hold shutdown up.
    let idle = tokio::net::TcpStream::connect(srv.base.trim_start_matches("http://"))
        .await
        .unwrap();
    let nudge = {
        let srv = Arc::clone(&srv);
        tokio::spawn(async move { srv.call(Method::POST, "/reconcile/c1").await })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    let base = srv.base.clone();
    let srv = {
        let (status, _, body) = nudge.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{body:#}");
        assert_eq!(actions(&body, "remove_worktree", "done").len(), 1);
        Arc::into_inner(srv).unwrap()
    };
    assert!(!path.exists());
    let t0 = Instant::now();
    srv.stop().await;
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "idle connections do not delay shutdown"
    );
    drop(idle);
    assert!(
        TcpStream::connect(base.trim_start_matches("http://")).is_err() || {
            // The port may be taken again by then; if it connects, it is
            // not ours: nothing answers HTTP on it.
            let mut s = TcpStream::connect(base.trim_start_matches("http://")).unwrap();
            let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
            let mut buf = [0u8; 16];
            s.set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            !matches!(s.read(&mut buf), Ok(n) if n > 0)
        },
        "no longer accepting"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_does_not_finish_answers_503() {
    use sqlx::Connection;
    let w = World::new(Db::Postgres).await;
    let mut config = w.config();
    config.r#loop.pass_timeout = Duration::from_millis(100);
    let root = boo_reconciler::root::WorktreeRoot::prepare(&w.root).unwrap();
    let controller = boo_reconciler::controller::Controller::new(config, w.store.clone(), root);
    controller
        .executor()
        .fence()
        .install(boo_reconciler::store::lock::HostLock::Assumed);
    let service = Service::new(controller, CancellationToken::new());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(http::serve(
        listener,
        http::router(Arc::clone(&service), None),
        shutdown.clone(),
    ));
    // Hold the tables the pass reads: it cannot finish within its bound
    // (twice the pass timeout).
    let mut blocker = sqlx::PgConnection::connect(&w.url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut blocker).await.unwrap();
    sqlx::query("LOCK TABLE worktrees, agent_sessions, chats, sessions IN ACCESS EXCLUSIVE MODE")
        .execute(&mut blocker)
        .await
        .unwrap();
    let resp = http_client()
        .post(format!("{base}/reconcile/c1"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(resp.headers()[reqwest::header::RETRY_AFTER], "5");
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("did not finish within"),
        "{body:#}"
    );
    sqlx::query("ROLLBACK").execute(&mut blocker).await.unwrap();
    shutdown.cancel();
    server.await.unwrap().unwrap();
}

// ------------------------------------------------------------- metrics --

async fn metrics_parse_and_count_the_actions(db: Db) {
    let (w, srv) = served(db).await;
    let key = r#"boo_reconciler_actions_total{kind="remove_worktree",outcome="done"}"#;
    let before = srv.metrics().await;
    assert_eq!(before[key], 0.0);
    assert_eq!(before[r#"boo_reconciler_nudges_total{route="chat"}"#], 0.0);
    assert_eq!(
        before[r#"boo_reconciler_reconcile_total{result="converged",trigger="startup"}"#],
        1.0
    );

    archived(&w, "s1", "c1", "w1").await;
    srv.post("/reconcile/c1").await;
    let after = srv.metrics().await;
    assert_eq!(after[key], 1.0);
    assert_eq!(after[r#"boo_reconciler_nudges_total{route="chat"}"#], 1.0);
    assert_eq!(
        after[r#"boo_reconciler_reconcile_total{result="converged",trigger="nudge"}"#],
        1.0
    );
    assert_eq!(
        after[r#"boo_reconciler_reconcile_time_seconds_count{trigger="nudge"}"#],
        1.0
    );
    srv.stop().await;
}

/// A strict reader of the Prometheus text format 0.0.4: `# HELP` and
/// `# TYPE` lines, then `name{label="value",…} value` samples of a declared
/// family. Answers each sample's `name{labels}` (as written) and value.
fn parse_prometheus(text: &str) -> Result<HashMap<String, f64>, String> {
    fn is_name(s: &str) -> bool {
        let mut cs = s.chars();
        cs.next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && cs.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    }
    fn labels(s: &str, line: usize) -> Result<(), String> {
        // name="value" pairs, comma-separated; values escape \\ \" \n.
        let mut rest = s;
        while !rest.is_empty() {
            let eq = rest
                .find('=')
                .ok_or(format!("line {line}: label without ="))?;
            let name = &rest[..eq];
            if !is_name(name) || name.contains(':') {
                return Err(format!("line {line}: bad label name {name:?}"));
            }
            rest = rest[eq + 1..]
                .strip_prefix('"')
                .ok_or(format!("line {line}: label value not quoted"))?;
            let mut end = None;
            let mut chars = rest.char_indices();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => match chars.next() {
                        Some((_, '\\' | '"' | 'n')) => {}
                        _ => return Err(format!("line {line}: bad escape")),
                    },
                    '"' => {
                        end = Some(i);
                        break;
                    }
                    '\n' => return Err(format!("line {line}: newline in label value")),
                    _ => {}
                }
            }
            let end = end.ok_or(format!("line {line}: unterminated label value"))?;
            rest = &rest[end + 1..];
            if let Some(r) = rest.strip_prefix(',') {
                rest = r;
            } else if !rest.is_empty() {
                return Err(format!("line {line}: junk after label value: {rest:?}"));
            }
        }
        Ok(())
    }
    if !text.ends_with('\n') {
        return Err("the text does not end with a newline".into());
    }
    let mut types: HashMap<String, String> = HashMap::new();
    let mut helped: HashSet<String> = HashSet::new();
    let mut samples = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kw, name, tail) = (parts.next(), parts.next(), parts.next());
            let name = name
                .filter(|n| is_name(n))
                .ok_or(format!("line {n}: bad name"))?;
            match (kw, tail) {
                (Some("HELP"), Some(_)) => {
                    if !helped.insert(name.to_string()) {
                        return Err(format!("line {n}: second HELP for {name}"));
                    }
                }
                (Some("TYPE"), Some(t))
                    if ["counter", "gauge", "histogram", "summary", "untyped"].contains(&t) =>
                {
                    if types.insert(name.to_string(), t.to_string()).is_some() {
                        return Err(format!("line {n}: second TYPE for {name}"));
                    }
                }
                _ => return Err(format!("line {n}: bad comment line {line:?}")),
            }
            continue;
        }
        if line.is_empty() || line.starts_with('#') {
            return Err(format!("line {n}: unexpected {line:?}"));
        }
        let (series, rest) = match line.find('{') {
            Some(open) => {
                let close = line
                    .rfind('}')
                    .filter(|c| *c > open)
                    .ok_or(format!("line {n}: '{{' without '}}'"))?;
                labels(&line[open + 1..close], n)?;
                (&line[..=close], &line[close + 1..])
            }
            None => {
                let sp = line.find(' ').ok_or(format!("line {n}: no value"))?;
                (&line[..sp], &line[sp..])
            }
        };
        let name = series.split('{').next().unwrap_or_default();
        if !is_name(name) {
            return Err(format!("line {n}: bad metric name {name:?}"));
        }
        let rest = rest
            .strip_prefix(' ')
            .ok_or(format!("line {n}: no space before the value"))?;
        let mut fields = rest.split(' ');
        let value = match fields.next().unwrap_or_default() {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v
                .parse::<f64>()
                .map_err(|e| format!("line {n}: value {v:?}: {e}"))?,
        };
        if let Some(ts) = fields.next() {
            ts.parse::<i64>()
                .map_err(|e| format!("line {n}: timestamp {ts:?}: {e}"))?;
        }
        if fields.next().is_some() {
            return Err(format!("line {n}: junk after the value"));
        }
        let declared = types.contains_key(name)
            || ["_bucket", "_sum", "_count"].iter().any(|suffix| {
                name.strip_suffix(suffix).is_some_and(|base| {
                    matches!(
                        types.get(base).map(String::as_str),
                        Some("histogram" | "summary")
                    )
                })
            });
        if !declared {
            return Err(format!("line {n}: sample of {name} without a # TYPE line"));
        }
        if samples.insert(series.to_string(), value).is_some() {
            return Err(format!("line {n}: {series} appears twice"));
        }
    }
    if samples.is_empty() {
        return Err("no samples".into());
    }
    Ok(samples)
}

/// A plain-HTTP client. The crate's reqwest is built without a default
/// TLS provider (the opencode client brings its own), so one is installed
/// for the tests' clients.
fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}
