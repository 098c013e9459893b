//! The store against real databases: the desired-state queries, row
//! updates, and the append-only audit table.

mod common;
#[path = "support/freezing_proxy.rs"]
mod freezing_proxy;

use std::collections::BTreeSet;

use std::time::{Duration, Instant};

use boo_reconciler::act::RunOptions;
use boo_reconciler::controller::{Mode, Trigger};
use boo_reconciler::model::Scope;
use boo_reconciler::model::{RowStatus, WorktreeState};
use boo_reconciler::report::exit;
use boo_reconciler::store::{AuditRecord, Interest, Store, Timeouts};
use common::{through, upstream, world_command, Db, World, HOST};
use freezing_proxy::FreezingProxy;
use sqlx::postgres::PgConnectOptions;
use tokio_util::sync::CancellationToken;

both_databases!(
    desired_state_reads_this_hosts_rows_and_liveness,
    audit_table_is_append_only,
    worktree_row_marks_are_idempotent,
    rows_naming_a_directory_are_this_hosts_present_rows_by_path_or_id,
    one_undecodable_row_never_stops_the_host,
);

const SHORT: Timeouts = Timeouts {
    connect: Duration::from_secs(1),
    query: Duration::from_secs(1),
};

/// A stall longer than any bound here: a pass that waits on the database
/// for ever would end only when the test harness gives up.
const NEVER: Duration = Duration::from_secs(30);

/// A PostgreSQL world whose archived session s1 and chat c1 own worktree
/// w1 (its path), and a proxy in front of its server with the URL through
/// it.
async fn archived_behind_a_proxy() -> (World, std::path::PathBuf, FreezingProxy, String) {
    let w = World::new(Db::Postgres).await;
    let path = w.chat_worktree("s1", "c1", "w1", "archived").await;
    let proxy = FreezingProxy::start(upstream()).await;
    let url = through(&w.url, proxy.addr());
    (w, path, proxy, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_database_ends_the_pass_within_its_bound_and_the_next_pass_works() {
    let (w, path, proxy, url) = archived_behind_a_proxy().await;
    let store = Store::open_with(&url, false, SHORT)
        .await
        .expect("through the proxy");
    let mut config = w.config();
    config.database.url = url;
    let controller = w.controller_with(config, store);
    let cancel = CancellationToken::new();
    let pass = || {
        controller.pass(
            Scope::Host,
            Mode::Act(RunOptions::default()),
            Trigger::Command,
            &cancel,
        )
    };

    proxy.freeze();
    let t0 = Instant::now();
    let report = tokio::time::timeout(NEVER, pass())
        .await
        .expect("the pass ends while the database is frozen");
    println!("pass against a frozen database: {:?}", t0.elapsed());
    assert_eq!(report.exit_code(), exit::ERROR, "{}", report.render());
    assert!(
        report
            .errors
            .iter()
            .any(|e| e.contains("did not answer within 1s") && e.contains("database.url")),
        "{:?}",
        report.errors
    );
    assert!(
        path.exists(),
        "nothing is done on a state that was not read"
    );

    proxy.thaw();
    let report = tokio::time::timeout(NEVER, pass())
        .await
        .expect("pass ends");
    assert_eq!(report.exit_code(), exit::CONVERGED, "{}", report.render());
    assert!(!path.exists());
    assert_eq!(w.row_state("w1").await.0, "removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_against_a_frozen_database_exits_1_saying_it_did_not_answer() {
    let (w, path, proxy, url) = archived_behind_a_proxy().await;
    let once = || {
        let mut c = tokio::process::Command::from(world_command(&w, &url));
        c.args(["--set", &format!("processes.chat_label={}", w.labels[0])])
            .args(["--set", "database.connect_timeout=1s"])
            .args(["--set", "database.query_timeout=1s"])
            .arg("once")
            .kill_on_drop(true)
            .output()
    };

    proxy.freeze();
    let out = tokio::time::timeout(NEVER, once())
        .await
        .expect("once ends while the database is frozen")
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("did not answer within 1s"), "{err}");
    assert!(err.contains("database.url"), "{err}");
    assert!(path.exists());

    proxy.thaw();
    let out = tokio::time::timeout(NEVER, once())
        .await
        .expect("once ends")
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!path.exists());
}

#[tokio::test]
async fn database_errors_say_what_failed_and_which_setting() {
    let base = common::postgres_url();
    let opts: PgConnectOptions = base.parse().unwrap();
    // Nothing listens on port 1.
    let refused = through(&base, "127.0.0.1:1".parse().unwrap());
    let no_db_url = {
        let db = opts.get_database().unwrap_or(opts.get_username());
        let (head, tail) = base
            .split_once('?')
            .map_or((base.as_str(), ""), |(h, t)| (h, t));
        let head = head
            .strip_suffix(db)
            .expect("URL ends with the database name");
        format!(
            "{head}boo_no_such_database{}{tail}",
            if tail.is_empty() { "" } else { "?" }
        )
    };
    let no_role_url = base.replacen(
        &format!("//{}", opts.get_username()),
        "//boo_no_such_role",
        1,
    );
    for (url, expected) in [
        (
            refused.as_str(),
            "connection refused at 127.0.0.1:1".to_string(),
        ),
        (
            no_db_url.as_str(),
            "database \"boo_no_such_database\" does not exist".to_string(),
        ),
        (
            no_role_url.as_str(),
            "authentication failed for user \"boo_no_such_role\"".to_string(),
        ),
    ] {
        let e = Store::open_with(url, false, SHORT)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains(&expected), "{url}: {e}");
        assert!(e.contains("(database.url)"), "{url}: {e}");
        assert!(!e.contains("pool timed out"), "{url}: {e}");
    }
}

/// Rows the orchestrator (or a bug in it) may leave that no decoder can
/// read. Which ones can be written depends on the database: PostgreSQL's
/// `INTEGER` holds no out-of-range pid and its text holds no invalid UTF-8,
/// and the CHECK constraints our migrations add (the orchestrator's own
/// tables may lack them) are dropped here to let an unknown value in.
async fn poison(w: &World, db: Db) -> Vec<&'static str> {
    let agent = |id: &str, chat: &str, backend: &str, pid: &str, start: &str| {
        format!(
            "INSERT INTO agent_sessions (id, chat_id, session_id, agent, backend, host, pid, pid_start_time) \
             VALUES ('{id}', {chat}, 's1', 'goose', '{backend}', '{HOST}', {pid}, {start});"
        )
    };
    let mut sql = String::new();
    let mut expected = vec![
        "agent_sessions row bad-start cannot be read: pid_start_time -5 is negative",
        "agent_sessions row bad-backend cannot be read: unknown backend \"warp\"",
        "chats row cz cannot be read: unknown status \"zombie\"",
    ];
    match db {
        Db::Sqlite => {
            sql.push_str("PRAGMA ignore_check_constraints = ON;");
            sql.push_str(&agent("bad-pid", "'c1'", "acp", "4294967297", "1"));
            sql.push_str(&agent(
                "bad-utf8",
                "CAST(X'63ff' AS TEXT)",
                "acp",
                "NULL",
                "NULL",
            ));
            sql.push_str(&format!(
                "INSERT INTO worktrees (id, session_id, repo_path, path, host) \
                 VALUES ('w-bad', 's1', '{}', CAST(X'2f746d702fff' AS TEXT), '{HOST}');",
                w.repo.display()
            ));
            expected.extend([
                "agent_sessions row bad-pid cannot be read: pid:",
                "agent_sessions row bad-utf8 cannot be read: chat_id:",
                "worktrees row w-bad cannot be read: path:",
            ]);
        }
        Db::Postgres => {
            sql.push_str(
                "ALTER TABLE agent_sessions DROP CONSTRAINT agent_sessions_backend_check;",
            );
            sql.push_str("ALTER TABLE chats DROP CONSTRAINT chats_status_check;");
        }
    }
    sql.push_str(&agent("bad-start", "'c1'", "acp", "42", "-5"));
    sql.push_str(&agent("bad-backend", "'c1'", "warp", "NULL", "NULL"));
    sql.push_str("INSERT INTO chats (id, session_id, status) VALUES ('cz', 's1', 'zombie');");
    sql.push_str(&agent("of-cz", "'cz'", "acp", "NULL", "NULL"));
    if matches!(db, Db::Sqlite) {
        sql.push_str("PRAGMA ignore_check_constraints = OFF;");
    }
    w.sql(&sql).await;
    expected
}

async fn one_undecodable_row_never_stops_the_host(db: Db) {
    let w = World::new(db).await;
    let path = w.chat_worktree("s1", "c1", "w1", "archived").await;
    w.acp_row("good", "c1", "s1", None).await;
    let expected = poison(&w, db).await;

    let report = w.once(Scope::Host, false).await;
    assert_eq!(report.exit_code(), exit::ERROR, "{}", report.render());
    for e in &expected {
        assert!(
            report.errors.iter().any(|x| x.contains(e)),
            "no error names {e:?}: {:?}",
            report.errors
        );
    }
    // Everything else proceeds: the readable row is closed, the worktree
    // of the archived session removed.
    assert!(!path.exists(), "{}", report.render());
    assert_eq!(w.row_state("w1").await.0, "removed");
    assert_eq!(w.agent_row("good").await.0, "closed");
    // What the unreadable chat row may own is kept.
    assert_eq!(w.agent_row("of-cz").await.0, "open");
    assert!(
        report
            .pending
            .iter()
            .any(|p| p.target.to_string() == "agent-row:of-cz"),
        "{}",
        report.render()
    );
}

async fn desired_state_reads_this_hosts_rows_and_liveness(db: Db) {
    let w = World::new(db).await;
    w.session("s1", "open").await;
    w.chat("c1", "s1", "open").await;
    w.chat("c2", "s1", "archived").await;
    w.session("s2", "archived").await;
    w.chat("c3", "s2", "open").await;
    w.worktree_row("w1", "s1", "/tmp/booworktrees/w1").await;
    w.worktree_row("w2", "s2", "/tmp/booworktrees/w2").await;
    w.worktree_row("w3", "ghost", "/tmp/booworktrees/w3").await;
    w.sql("INSERT INTO worktrees (id, session_id, repo_path, path, host) VALUES ('other', 's1', '/r', '/p', 'another-host')").await;
    w.sql("INSERT INTO worktrees (id, session_id, repo_path, path, host, state) VALUES ('gone', 's1', '/r', '/p', 'test-host', 'removed')").await;
    w.sql(&format!("INSERT INTO agent_sessions (id, chat_id, session_id, agent, backend, host, pid, pid_start_time) VALUES ('a1', 'c3', 's2', 'goose', 'acp', '{HOST}', 42, 123456)")).await;
    w.sql(&format!("INSERT INTO agent_sessions (id, chat_id, session_id, agent, backend, host, status) VALUES ('a2', 'c1', 's1', 'goose', 'acp', '{HOST}', 'closed')")).await;

    let interest = Interest {
        chats: BTreeSet::from(["nobody".to_string()]),
        sessions: BTreeSet::new(),
    };
    let d = w.store.desired_state(HOST, &interest).await.unwrap();
    let ids: Vec<_> = d.worktrees.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["w1", "w2", "w3"]);
    assert!(d.worktrees.iter().all(|r| r.state == WorktreeState::Active));
    assert_eq!(d.agent_sessions.len(), 1);
    assert_eq!(d.agent_sessions[0].pid, Some(42));
    assert_eq!(d.agent_sessions[0].pid_start_time, Some(123456));

    // c3 is open but its session is archived: not live.
    let c3 = &d.chats["c3"];
    assert!(!c3.is_live());
    assert_eq!(c3.session.as_ref().unwrap().status, RowStatus::Archived);
    assert!(d.chats["nobody"].chat.is_none());

    let s1 = &d.sessions["s1"];
    assert_eq!((s1.open_chats, s1.total_chats), (1, 2));
    assert!(s1.last_chat_change.is_some());
    assert!(d.sessions["ghost"].session.is_none());
    assert_eq!(
        d.sessions["s2"].session.as_ref().unwrap().status,
        RowStatus::Archived
    );

    // Timestamps defaulted by the database come back as recent times.
    let age = std::time::SystemTime::now()
        .duration_since(s1.session.as_ref().unwrap().created_at)
        .unwrap();
    assert!(age.as_secs() < 300, "created_at read back as {age:?} ago");
}

async fn audit_table_is_append_only(db: Db) {
    let w = World::new(db).await;
    w.store
        .append_audit(&AuditRecord {
            host: HOST.into(),
            chat_id: Some("c1".into()),
            session_id: None,
            action: "remove_worktree".into(),
            target: "worktree:/x".into(),
            outcome: "done".into(),
            reason: "test".into(),
            detail: serde_json::json!({"k": 1}),
            intent_id: None,
        })
        .await
        .unwrap();
    assert_eq!(w.audit().await.len(), 1);
    assert!(w
        .store
        .execute_raw("UPDATE reconciler_audit SET outcome = 'x'")
        .await
        .is_err());
    assert!(w
        .store
        .execute_raw("DELETE FROM reconciler_audit")
        .await
        .is_err());
    assert_eq!(w.audit().await[0].outcome, "done");
}

async fn worktree_row_marks_are_idempotent(db: Db) {
    let w = World::new(db).await;
    w.worktree_row("w1", "s1", "/tmp/booworktrees/w1").await;
    let reasons = vec![boo_reconciler::risk::AtRisk::Locked { reason: None }];
    w.store.mark_worktree_at_risk("w1", &reasons).await.unwrap();
    let (state, json) = w.row_state("w1").await;
    assert_eq!(state, "at_risk");
    assert!(json.unwrap().contains("locked"));
    w.store.mark_worktree_active("w1").await.unwrap();
    assert_eq!(w.row_state("w1").await, ("active".to_string(), None));
    w.store.mark_worktree_removed("w1").await.unwrap();
    w.store.mark_worktree_removed("w1").await.unwrap();
    assert_eq!(w.row_state("w1").await.0, "removed");
    // A removed row is never brought back to at_risk.
    w.store.mark_worktree_at_risk("w1", &reasons).await.unwrap();
    assert_eq!(w.row_state("w1").await.0, "removed");
    assert_eq!(
        w.store
            .worktree_rows_naming("/tmp/booworktrees/w1", "w1")
            .await
            .unwrap(),
        Vec::<String>::new()
    );
}

async fn rows_naming_a_directory_are_this_hosts_present_rows_by_path_or_id(db: Db) {
    let w = World::new(db).await;
    let dir = "/tmp/booworktrees/w1";
    w.worktree_row("w1", "s1", dir).await;
    w.worktree_row("w2", "s2", dir).await;
    // Named as `<root>/<its id>` whatever its path says.
    w.worktree_row("w3", "s3", "/elsewhere").await;
    w.sql("UPDATE worktrees SET id = 'w1x' WHERE id = 'w3'")
        .await;
    w.worktree_row("w4", "s4", &format!("{dir}/")).await;
    w.worktree_row("gone", "s5", dir).await;
    w.store.mark_worktree_removed("gone").await.unwrap();
    w.worktree_row("other-host", "s6", dir).await;
    w.sql("UPDATE worktrees SET host = 'elsewhere' WHERE id = 'other-host'")
        .await;
    let paths = [dir.to_string(), format!("{dir}/")];
    let rows = w
        .store
        .host_worktree_rows_naming(HOST, &paths, "w1x")
        .await
        .unwrap();
    let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    };
    assert_eq!(
        rows,
        pairs(&[("w1", "s1"), ("w1x", "s3"), ("w2", "s2"), ("w4", "s4")])
    );
    assert_eq!(
        w.store
            .host_worktree_rows_naming(HOST, &[], "none")
            .await
            .unwrap(),
        Vec::<(String, String)>::new()
    );
}
