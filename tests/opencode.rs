//! opencode sessions end to end: the real `opencode serve` (the pinned npm
//! package, installed on demand), and fault-injecting stubs for a server
//! that hangs, fails or is not there.

mod common;
#[path = "support/opencode_server.rs"]
mod opencode_server;
#[path = "support/opencode_world.rs"]
mod opencode_world;
#[path = "support/stub.rs"]
mod stub;

use std::time::Duration;

use boo_reconciler::act::RunOptions;
use boo_reconciler::controller::{Controller, Mode, Trigger};
use boo_reconciler::model::Scope;
use boo_reconciler::report::{exit, PassReport};
use common::{alive, Db, World};
use opencode_world::world_with_server;
use tokio_util::sync::CancellationToken;

both_databases!(
    sessions_of_an_archived_chat_are_deleted_with_their_children_and_rows_closed,
    live_sessions_and_sessions_outside_the_root_survive,
    orphan_session_under_the_root_waits_for_the_minimum_age,
    deleting_again_is_a_no_op_and_a_row_naming_a_deleted_session_is_closed,
    malformed_session_id_row_is_closed_and_never_retried,
);

async fn once(w: &World) -> PassReport {
    w.once(Scope::Host, false).await
}

async fn sessions_of_an_archived_chat_are_deleted_with_their_children_and_rows_closed(db: Db) {
    let (oc, w) = world_with_server(db).await;
    let path = w.chat_worktree("s1", "c1", "w1", "archived").await;
    let parent = oc.create_session(&path);
    let child = oc.create_child_session(&path, &parent);
    w.opencode_row("r1", "c1", "s1", &parent).await;

    let report = once(&w).await;
    assert_eq!(report.exit_code(), exit::CONVERGED, "{}", report.render());
    assert!(!oc.session_exists(&parent), "parent deleted");
    assert!(!oc.session_exists(&child), "child went with it");
    assert_eq!(w.agent_row("r1").await, ("closed".into(), true));
    assert!(!path.exists(), "the worktree went after its sessions");
    let audit = w.audit().await;
    let names: Vec<(&str, &str)> = audit
        .iter()
        .map(|a| (a.action.as_str(), a.outcome.as_str()))
        .collect();
    assert_eq!(
        names,
        [
            ("delete_opencode_session", "intent"),
            ("delete_opencode_session", "done"),
            ("close_agent_row", "done"),
            ("remove_worktree", "intent"),
            ("remove_worktree", "done")
        ],
        "in this order"
    );
    // The report shows the session with id, directory, chat, age, reason.
    let json = serde_json::to_value(&report).unwrap();
    let s = &json["results"][0]["action"]["session"];
    assert_eq!(s["id"], parent.as_str());
    assert_eq!(s["chat_id"], "c1");
    assert!(s["directory"].as_str().unwrap().ends_with("/w1"));
    assert!(s["age_secs"].is_u64());
    assert!(json["results"][0]["action"]["reason"]
        .as_str()
        .unwrap()
        .contains("archived"));
}

async fn live_sessions_and_sessions_outside_the_root_survive(db: Db) {
    let (oc, mut w) = world_with_server(db).await;
    w.opencode_orphan_min_age = Duration::ZERO;
    let path = w.chat_worktree("s1", "c1", "w1", "open").await;
    let live = oc.create_session(&path);
    w.opencode_row("r1", "c1", "s1", &live).await;
    let elsewhere = oc.create_session(&oc.directory("someone-else"));

    let report = once(&w).await;
    assert!(report.results.is_empty(), "{}", report.render());
    assert!(oc.session_exists(&live));
    assert!(
        oc.session_exists(&elsewhere),
        "outside the root: never touched"
    );
    assert_eq!(w.agent_row("r1").await.0, "open");
}

async fn orphan_session_under_the_root_waits_for_the_minimum_age(db: Db) {
    let (oc, mut w) = world_with_server(db).await;
    let path = w.chat_worktree("s1", "c1", "w1", "open").await;
    let orphan = oc.create_session(&path);

    let report = once(&w).await;
    assert!(report.results.is_empty(), "{}", report.render());
    assert!(report
        .pending
        .iter()
        .any(|p| p.target.to_string() == format!("opencode:{orphan}")));
    assert!(oc.session_exists(&orphan), "young: kept");

    w.opencode_orphan_min_age = Duration::ZERO;
    let report = once(&w).await;
    assert_eq!(report.exit_code(), exit::CONVERGED, "{}", report.render());
    assert!(!oc.session_exists(&orphan), "old enough: deleted");
    assert!(path.exists(), "the live session's worktree stays");
}

async fn deleting_again_is_a_no_op_and_a_row_naming_a_deleted_session_is_closed(db: Db) {
    let (oc, w) = world_with_server(db).await;
    w.session("s1", "archived").await;
    w.chat("c1", "s1", "archived").await;
    let gone = oc.create_session(&oc.directory("d"));
    let (status, _) = oc
        .request("DELETE", &format!("/session/{gone}"), None)
        .unwrap();
    assert_eq!(status, 200);
    w.opencode_row("r1", "c1", "s1", &gone).await;

    let report = once(&w).await;
    assert_eq!(report.exit_code(), exit::CONVERGED, "{}", report.render());
    assert_eq!(w.agent_row("r1").await, ("closed".into(), true));
    assert!(
        report.render().contains("already gone"),
        "{}",
        report.render()
    );
    let again = once(&w).await;
    assert!(again.results.is_empty(), "{}", again.render());
}

async fn malformed_session_id_row_is_closed_and_never_retried(db: Db) {
    let (_oc, w) = world_with_server(db).await;
    w.session("s1", "archived").await;
    w.chat("c1", "s1", "archived").await;
    w.opencode_row("r1", "c1", "s1", "not-a-session").await;

    let report = once(&w).await;
    assert_eq!(report.exit_code(), exit::CONVERGED, "{}", report.render());
    assert_eq!(w.agent_row("r1").await, ("closed".into(), true));
    let audit = w.audit().await;
    assert_eq!(audit.len(), 1);
    assert!(
        audit[0].reason.contains("malformed opencode session id"),
        "{}",
        audit[0].reason
    );
    let again = once(&w).await;
    assert!(again.results.is_empty(), "{}", again.render());
}

// -- a server that fails ------------------------------------------------------

/// Two archived sessions on one host: s1's chat has an opencode row and a
/// worktree; s2's chat has a running agent and a worktree, and no opencode
/// row. Two passes of one controller against `url`.
async fn faulty(db: Db, url: String) -> (World, [PassReport; 2], (i32, u64)) {
    let mut w = World::new(db).await;
    w.opencode_url = Some(url);
    w.session("s1", "archived").await;
    w.chat("c1", "s1", "archived").await;
    w.worktree("w1", "s1").await;
    w.opencode_row("r1", "c1", "s1", "ses_0123456789abcdefABCDEFghij")
        .await;
    let w2 = w.chat_worktree("s2", "c2", "w2", "archived").await;
    let agent = w.agent("c2", "s2", "exec sleep 1000", w.tmp.path());
    let id = (agent.pid(), agent.start_time());
    let c: Controller = w.controller();
    let cancel = CancellationToken::new();
    let pass = || {
        c.pass(
            Scope::Host,
            Mode::Act(RunOptions::default()),
            Trigger::Command,
            &cancel,
        )
    };
    let first = pass().await;
    let second = pass().await;
    // The same pass still handled what does not wait for opencode.
    assert!(!alive(id.0, id.1), "{}", first.render());
    assert!(!w2.exists(), "{}", first.render());
    assert_eq!(w.agent_row("r1").await.0, "open", "{}", first.render());
    drop(agent);
    (w, [first, second], id)
}

/// A failing server: an error with a clear reason, backoff for the opencode
/// part, the worktree of the chat with opencode rows waiting.
async fn failing(db: Db, url: String, reason: &str) {
    let (w, [first, second], _) = faulty(db, url).await;
    assert_eq!(first.exit_code(), exit::ERROR);
    assert!(
        first.errors.iter().any(|e| e.contains(reason)),
        "{reason} in {:?}",
        first.errors
    );
    assert!(w.root.join("w1").exists(), "{}", first.render());
    assert!(first
        .pending
        .iter()
        .any(|p| p.target.to_string().ends_with("/w1") && p.why.contains("waiting for opencode")));
    assert!(
        second.errors.iter().any(|e| e.contains("backing off")),
        "{:?}",
        second.errors
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_never_answers_fails_with_a_timeout_and_backs_off() {
    let url = stub::stub(None).await;
    failing(Db::Postgres, url, "did not answer").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_answering_500_fails_and_backs_off() {
    let url = stub::stub(Some(stub::http(
        "500 Internal Server Error",
        "application/json",
        "{\"name\":\"UnknownError\"}",
    )))
    .await;
    failing(Db::Sqlite, url, "500").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_answering_html_fails_and_backs_off() {
    let url = stub::stub(Some(stub::http("200 OK", "text/html", "<html></html>"))).await;
    failing(Db::Postgres, url, "text/html").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_is_not_running_is_a_warning_and_nothing_waits() {
    let port = opencode_server::free_port();
    let (w, [first, _], _) = faulty(Db::Sqlite, format!("http://127.0.0.1:{port}")).await;
    assert_eq!(first.exit_code(), exit::CONVERGED, "{}", first.render());
    assert!(
        first.warnings.iter().any(|e| e.contains("not running")),
        "{:?}",
        first.warnings
    );
    assert!(
        !w.root.join("w1").exists(),
        "nothing waits: {}",
        first.render()
    );
    assert!(first
        .pending
        .iter()
        .any(|p| p.why.contains("deleted once it is back")));
}
