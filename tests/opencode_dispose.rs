//! The opencode server's instance for a removed worktree: disposed of once
//! the worktree's last session is gone, as the real `opencode serve` shows
//! it (its `server.instance.disposed` event); and, against recording
//! stubs, which calls are made, in which order, and what a failing dispose
//! does to the removal.

mod common;
#[path = "support/opencode_server.rs"]
mod opencode_server;
#[path = "support/opencode_world.rs"]
mod opencode_world;
#[path = "support/stub.rs"]
mod stub;

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use boo_reconciler::act::RunOptions;
use boo_reconciler::controller::{Controller, Notes};
use boo_reconciler::model::Scope;
use boo_reconciler::report::{exit, PassReport};
use common::{act_pass, Db, World};
use opencode_server::{Events, OpencodeServer};
use opencode_world::world_with_server;
use tokio_util::sync::CancellationToken;

/// How long the server may take to send an event.
const EVENT_WAIT: Duration = Duration::from_secs(10);

/// The `remove_worktree` result among `results` (each as the report
/// serialises it).
fn removal(results: &[serde_json::Value]) -> serde_json::Value {
    results
        .iter()
        .find(|r| r["action"]["kind"] == "remove_worktree")
        .cloned()
        .unwrap_or_else(|| panic!("no remove_worktree in {results:#?}"))
}

fn report_results(report: &PassReport) -> Vec<serde_json::Value> {
    serde_json::to_value(report).unwrap()["results"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The outcome and `opencode_instance` of the audited removal (its
/// intent, written before it, aside).
async fn audited_removal(w: &World) -> (String, String) {
    let rows = w
        .store
        .query_strings(
            "SELECT outcome, CAST(detail AS TEXT) FROM reconciler_audit \
             WHERE action = 'remove_worktree' AND outcome <> 'intent'",
        )
        .await
        .expect("query the audit table");
    assert_eq!(rows.len(), 1, "{rows:?}");
    let detail: serde_json::Value =
        serde_json::from_str(rows[0][1].as_deref().expect("a detail")).expect("JSON detail");
    (
        rows[0][0].clone().expect("an outcome"),
        detail["detail"]["opencode_instance"]
            .as_str()
            .unwrap_or_else(|| panic!("no opencode_instance in {detail:#}"))
            .to_owned(),
    )
}

/// The `server.instance.disposed` events about `directory`.
fn disposed_of(events: &Events, directory: &Path) -> Vec<serde_json::Value> {
    let dir = directory.to_str().unwrap();
    events
        .all()
        .into_iter()
        .filter(|e| {
            e["payload"]["type"] == "server.instance.disposed"
                && e["payload"]["properties"]["directory"] == dir
        })
        .collect()
}

/// The position in `events` of the first one that `matches`, waiting for
/// it.
fn position(events: &Events, what: &str, matches: impl Fn(&serde_json::Value) -> bool) -> usize {
    events
        .wait_for(EVENT_WAIT, &matches)
        .unwrap_or_else(|| panic!("no event {what} in {:#?}", events.all()));
    events.all().iter().position(matches).unwrap()
}

fn session_deleted(id: &str) -> impl Fn(&serde_json::Value) -> bool + '_ {
    move |e| {
        e["payload"]["type"] == "session.deleted" && e["payload"]["properties"]["sessionID"] == id
    }
}

/// An archived session s1 with an archived chat c1 and a worktree w1; its
/// path.
async fn archived_worktree(w: &World) -> std::path::PathBuf {
    w.chat_worktree("s1", "c1", "w1", "archived").await
}

/// The removal of `report`, a pass that converged with `path` removed and
/// the removal done.
fn done_removal(report: &PassReport, path: &Path) -> serde_json::Value {
    assert_eq!(report.exit_code(), exit::CONVERGED, "{}", report.render());
    assert!(!path.exists());
    let removed = removal(&report_results(report));
    assert_eq!(removed["outcome"], "done", "{removed:#}");
    removed
}

/// An archived session s1 whose archived chat c1 has an opencode row r1
/// naming a session in worktree w1.
async fn archived_with_a_session(w: &World, oc: &OpencodeServer) -> (std::path::PathBuf, String) {
    let path = archived_worktree(w).await;
    let ses = oc.create_session(&path);
    w.opencode_row("r1", "c1", "s1", &ses).await;
    (path, ses)
}

// -- the real server ----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_instance_of_a_removed_worktree_is_disposed_of_after_its_last_session() {
    let (oc, w) = world_with_server(Db::Postgres).await;
    let (path, ses) = archived_with_a_session(&w, &oc).await;
    let events = oc.events();

    let report = w.once(Scope::Host, false).await;
    assert_eq!(report.exit_code(), exit::CONVERGED, "{}", report.render());
    assert!(!oc.session_exists(&ses));
    assert!(!path.exists());
    let removed = removal(&report_results(&report));
    assert_eq!(removed["outcome"], "done", "{removed:#}");
    assert_eq!(
        removed["detail"]["opencode_instance"], "disposed",
        "{removed:#}"
    );

    let deleted = position(&events, "session.deleted", session_deleted(&ses));
    let disposed = position(&events, "server.instance.disposed", |e| {
        e["payload"]["type"] == "server.instance.disposed"
            && e["payload"]["properties"]["directory"] == path.to_str().unwrap()
    });
    assert!(
        deleted < disposed,
        "the session went first: {:#?}",
        events.all()
    );
    // Disposing boots an instance first when there is none: one call for
    // one spelling of the directory, not one per spelling tried.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(disposed_of(&events, &path).len(), 1, "{:#?}", events.all());
    // The audit record carries it too.
    assert_eq!(
        audited_removal(&w).await,
        ("done".into(), "disposed".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_started_after_the_plan_keeps_the_instance() {
    let (oc, w) = world_with_server(Db::Sqlite).await;
    let (path, ses) = archived_with_a_session(&w, &oc).await;
    let c: Controller = w.controller();
    let (plan, _) = c
        .plan(&Scope::Host, true, &mut Notes::default())
        .await
        .expect("plan");
    // Between the observation and the removal, a session starts in the
    // directory: the removal goes ahead (it was planned on what was seen),
    // but that session's instance must not be pulled from under it.
    let late = oc.create_session(&path);
    let events = oc.events();

    let results: Vec<serde_json::Value> = c
        .executor()
        .execute(&plan, RunOptions::default(), &CancellationToken::new())
        .await
        .iter()
        .map(|r| serde_json::to_value(r).unwrap())
        .collect();
    let removed = removal(&results);
    assert_eq!(removed["outcome"], "done", "{results:#?}");
    assert!(!path.exists());
    let said = removed["detail"]["opencode_instance"].as_str().unwrap();
    assert_eq!(
        said,
        format!(
            "kept: opencode session {late} still works in {}",
            path.display()
        )
    );
    assert!(oc.session_exists(&late));
    assert!(!oc.session_exists(&ses));
    // The stream works (the deletion shows), and no dispose follows.
    position(&events, "session.deleted", session_deleted(&ses));
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        disposed_of(&events, &path).is_empty(),
        "{:#?}",
        events.all()
    );
}

// -- recording stubs ----------------------------------------------------------

const SES: &str = "ses_0123456789abcdefABCDEFghij";

/// A server that lists `sessions` (id, directory) for every directory,
/// none for one directory (what is left after the deletions), deletes and
/// aborts anything, and answers `dispose` to `POST /instance/dispose`.
async fn opencode_stub(
    sessions: Vec<(String, String)>,
    dispose: &'static str,
) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let data: Vec<serde_json::Value> = sessions
        .iter()
        .map(|(id, dir)| {
            serde_json::json!({
                "id": id, "projectID": "global",
                "time": {"created": now, "updated": now},
                "location": {"directory": dir},
            })
        })
        .collect();
    let all = serde_json::json!({"data": data, "cursor": {}}).to_string();
    let json = |body: &str| stub::http("200 OK", "application/json", body).to_owned();
    stub::recording(move |method, target| {
        let path = target.split('?').next().unwrap_or("");
        match (method, path) {
            ("GET", "/global/health") => json(r#"{"healthy":true,"version":"1.18.33"}"#),
            ("GET", "/api/session") if target.contains("directory=") => {
                json(r#"{"data":[],"cursor":{}}"#)
            }
            ("GET", "/api/session") => json(&all),
            ("POST", p) if p.ends_with("/abort") => json("true"),
            ("DELETE", p) if p.starts_with("/session/") => json("true"),
            ("POST", "/instance/dispose") => dispose.to_owned(),
            _ => stub::http(
                "404 Not Found",
                "application/json",
                r#"{"name":"NotFoundError","data":{"message":"no such route"}}"#,
            )
            .to_owned(),
        }
    })
    .await
}

/// The query value of `name` in a recorded `METHOD /path?query`.
fn query_value(call: &str, name: &str) -> Option<String> {
    let query = call.split_once('?')?.1;
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_dispose_call_after_the_delete_with_the_directory_encoded() {
    let mut w = World::new(Db::Postgres).await;
    let path = archived_worktree(&w).await;
    w.opencode_row("r1", "c1", "s1", SES).await;
    let dir = path.to_str().unwrap().to_owned();
    let (url, calls) = opencode_stub(
        vec![(SES.into(), dir.clone())],
        stub::http("200 OK", "application/json", "true"),
    )
    .await;
    w.opencode_url = Some(url);

    let report = w.once(Scope::Host, false).await;
    assert_eq!(report.exit_code(), exit::CONVERGED, "{}", report.render());
    assert!(!path.exists());
    let removed = removal(&report_results(&report));
    assert_eq!(
        removed["detail"]["opencode_instance"], "disposed",
        "{removed:#}"
    );

    let calls = calls.lock().unwrap().clone();
    let at = |prefix: &str| {
        calls
            .iter()
            .position(|c| c.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in {calls:#?}"))
    };
    let disposes: Vec<&String> = calls
        .iter()
        .filter(|c| c.starts_with("POST /instance/dispose"))
        .collect();
    assert_eq!(disposes.len(), 1, "{calls:#?}");
    let dispose = disposes[0];
    assert_eq!(
        query_value(dispose, "directory").as_deref(),
        Some(dir.as_str())
    );
    let encoded: String = url::form_urlencoded::byte_serialize(dir.as_bytes()).collect();
    assert!(
        dispose.contains(&format!("directory={encoded}")),
        "the path is sent URL-encoded: {dispose}"
    );
    let deleted = at(&format!("DELETE /session/{SES}"));
    let listed = calls
        .iter()
        .position(|c| {
            c.starts_with("GET /api/session")
                && query_value(c, "directory").as_deref() == Some(dir.as_str())
        })
        .unwrap_or_else(|| panic!("no listing of {dir} in {calls:#?}"));
    let disposed = at("POST /instance/dispose");
    assert!(
        deleted < listed && listed < disposed,
        "delete, then the check for what remains, then dispose: {calls:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_dispose_leaves_the_removal_done_with_the_error_in_its_detail() {
    let mut w = World::new(Db::Sqlite).await;
    let path = archived_worktree(&w).await;
    w.opencode_row("r1", "c1", "s1", SES).await;
    let (url, calls) = opencode_stub(
        vec![(SES.into(), path.to_str().unwrap().into())],
        stub::http(
            "500 Internal Server Error",
            "application/json",
            r#"{"name":"UnknownError","data":{"message":"Unexpected server error."}}"#,
        ),
    )
    .await;
    w.opencode_url = Some(url);

    let report = w.once(Scope::Host, false).await;
    let removed = removal(&report_results(&report));
    assert_eq!(removed["outcome"], "done", "{removed:#}");
    assert!(!path.exists());
    assert_eq!(w.row_state("w1").await.0, "removed");
    let said = removed["detail"]["opencode_instance"].as_str().unwrap();
    assert!(
        said.starts_with("error: ")
            && said.contains("500 Internal Server Error to POST /instance/dispose")
            && said.contains("UnknownError"),
        "{said}"
    );
    assert_eq!(report.exit_code(), exit::CONVERGED, "{}", report.render());
    assert_eq!(audited_removal(&w).await, ("done".into(), said.into()));
    // Not retried: the removal is done, and the next pass has nothing to do.
    let again = w.once(Scope::Host, false).await;
    assert!(again.results.is_empty(), "{}", again.render());
    let calls = calls.lock().unwrap();
    assert_eq!(
        calls
            .iter()
            .filter(|c| c.starts_with("POST /instance/dispose"))
            .count(),
        1,
        "{calls:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_disposed_while_opencode_is_switched_off_not_running_or_has_no_url() {
    // Switched off: the server is still listed (that is observation), but
    // nothing is sent to it about the removed worktree.
    let w = World::new(Db::Postgres).await;
    w.session("s1", "archived").await;
    let path = w.worktree("w1", "s1").await;
    let (url, calls) =
        opencode_stub(vec![], stub::http("200 OK", "application/json", "true")).await;
    let mut config = w.config();
    config.opencode.url = Some(url.parse().unwrap());
    config.opencode.enabled = false;
    // As `World::controller`: each test's world is a host of its own.
    let c = w.controller_with(config, w.store.clone());
    let report = act_pass(&c, Scope::Host, false).await;
    let removed = done_removal(&report, &path);
    assert!(
        removed["detail"].get("opencode_instance").is_none(),
        "{removed:#}"
    );
    let calls = calls.lock().unwrap().clone();
    assert!(
        calls.iter().any(|c| c.starts_with("GET /api/session")),
        "the stub is the configured server: {calls:#?}"
    );
    assert!(calls.iter().all(|c| c.starts_with("GET ")), "{calls:#?}");

    // Nothing listening at opencode.url: no server, so no instance; the
    // removal is done and says so.
    let mut w = World::new(Db::Sqlite).await;
    w.opencode_url = Some(format!("http://127.0.0.1:{}", opencode_server::free_port()));
    w.session("s1", "archived").await;
    let path = w.worktree("w1", "s1").await;
    let report = w.once(Scope::Host, false).await;
    let removed = done_removal(&report, &path);
    let said = removed["detail"]["opencode_instance"].as_str().unwrap();
    assert!(
        said.starts_with("not running: nothing listens at "),
        "{said}"
    );

    // No opencode.url: no client, nothing in the detail.
    let w = World::new(Db::Sqlite).await;
    w.session("s1", "archived").await;
    let path = w.worktree("w1", "s1").await;
    let report = w.once(Scope::Host, false).await;
    let removed = done_removal(&report, &path);
    assert!(
        removed["detail"].get("opencode_instance").is_none(),
        "{removed:#}"
    );
}
