//! The fenced host lock and the write-ahead audit, against real databases,
//! real processes and real worktrees: nothing destructive happens unless
//! its intent is written first and the lock confirmed after it.

mod common;
#[path = "support/freezing_proxy.rs"]
mod freezing_proxy;

use std::sync::Arc;
use std::time::{Duration, Instant};

use boo_reconciler::act::Outcome;
use boo_reconciler::controller::queue::QueueError;
use boo_reconciler::controller::{Controller, Mode, Trigger};
use boo_reconciler::model::{Force, Scope};
use boo_reconciler::report::exit;
use boo_reconciler::root::WorktreeRoot;
use boo_reconciler::service::{Role, Service};
use boo_reconciler::store::lock::{advisory_key, Fence, FenceState};
use boo_reconciler::store::{AuditRecord, Store, Timeouts};
use common::{
    act_pass, alive, eventually, ready_within, spawn_service, through, upstream, Db, Running,
    World, HOST,
};
use freezing_proxy::FreezingProxy;
use tokio_util::sync::CancellationToken;

both_databases!(
    a_read_only_database_stops_every_destructive_action,
    an_intent_left_by_a_crash_is_concluded_with_what_was_found,
);

/// The tests here that take the real host lock share one key (the host
/// id is the same in every world): one at a time.
static LOCK_TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const SHORT: Timeouts = Timeouts {
    connect: Duration::from_secs(1),
    query: Duration::from_secs(1),
};

/// The URL of the same database, opened read-only: SQLite's `mode=ro`, or
/// PostgreSQL sessions whose transactions are all read-only.
fn read_only(w: &World) -> String {
    if w.url.starts_with("sqlite:") {
        format!("{}?mode=ro", w.url)
    } else {
        assert!(w.url.contains("options=-c"), "{}", w.url);
        w.url.replacen(
            "options=-c",
            "options=-c%20default_transaction_read_only%3Don%20-c",
            1,
        )
    }
}

async fn a_read_only_database_stops_every_destructive_action(db: Db) {
    let w = World::new(db).await;
    let wt = w.chat_worktree("s1", "c1", "w1", "archived").await;
    // A second session, without an agent: its removal is refused on its
    // own (the first's waits on its agent's termination).
    let wt2 = w.chat_worktree("s2", "c2", "w2", "archived").await;
    let agent = w.agent("c1", "s1", "exec sleep 300", &w.outside);
    w.acp_row("a1", "c1", "s1", Some((agent.pid(), agent.start_time())))
        .await;

    let store = Store::open_with(&read_only(&w), false, SHORT)
        .await
        .expect("a read-only database opens");
    let controller = w.controller_with(w.config(), store);
    let report = act_pass(&controller, Scope::Host, false).await;
    assert_eq!(report.exit_code(), exit::ERROR, "{}", report.render());
    let failed: Vec<_> = report
        .results
        .iter()
        .filter(|r| matches!(&r.outcome, Outcome::Failed { error } if error.contains("intent audit record could not be written")))
        .map(|r| r.action.name())
        .collect();
    assert!(
        failed.contains(&"terminate_process") && failed.contains(&"remove_worktree"),
        "both destructive actions refused for want of their intent: {}",
        report.render()
    );
    assert!(wt.exists() && wt2.exists(), "no worktree was touched");
    assert!(
        alive(agent.pid(), agent.start_time()),
        "the agent was not signalled"
    );
    assert!(w.audit().await.is_empty(), "nothing could be written");

    // Writable again: the next pass acts, write-ahead.
    let report = w.once(Scope::Host, false).await;
    assert_eq!(report.exit_code(), exit::CONVERGED, "{}", report.render());
    assert!(!wt.exists() && !wt2.exists());
    assert!(!alive(agent.pid(), agent.start_time()));
    let audit = w.audit().await;
    for action in ["terminate_process", "remove_worktree"] {
        let of: Vec<&AuditRecord> = audit.iter().filter(|r| r.action == action).collect();
        let intents = of.iter().filter(|r| r.outcome == "intent").count();
        let done = of
            .iter()
            .filter(|r| r.outcome == "done" && r.intent_id.is_some())
            .count();
        let expected = if action == "remove_worktree" { 2 } else { 1 };
        assert_eq!(intents, expected, "{action}: {of:?}");
        assert_eq!(
            done, expected,
            "each intent concluded by its outcome: {of:?}"
        );
    }
    assert!(w.store.open_intents(HOST).await.unwrap().is_empty());
}

async fn an_intent_left_by_a_crash_is_concluded_with_what_was_found(db: Db) {
    let w = World::new(db).await;
    // What a process killed between its intents and their outcomes leaves:
    // a signal to a process that has since exited, a removal of a
    // directory that is still there.
    let gone = {
        let mut c = std::process::Command::new("true").spawn().unwrap();
        let pid = c.id() as i32;
        c.wait().unwrap();
        pid
    };
    let kept = w.root.join("w9");
    std::fs::create_dir(&kept).unwrap();
    let intent = |action: &str, target: &str, detail: serde_json::Value| AuditRecord {
        host: HOST.into(),
        chat_id: Some("c1".into()),
        session_id: Some("s1".into()),
        action: action.into(),
        target: target.into(),
        outcome: "intent".into(),
        reason: "test".into(),
        detail,
        intent_id: None,
    };
    let signal = w
        .store
        .append_audit(&intent(
            "terminate_process",
            &format!("process:{gone}"),
            serde_json::json!({ "pid": gone, "start_time": 1, "chat_id": "c1" }),
        ))
        .await
        .unwrap();
    let removal = w
        .store
        .append_audit(&intent(
            "remove_worktree",
            "worktree:w9",
            serde_json::json!({ "path": kept.display().to_string() }),
        ))
        .await
        .unwrap();
    // Another host's intent is not this controller's to conclude.
    let mut other = intent("remove_worktree", "worktree:x", serde_json::json!({}));
    other.host = "another-host".into();
    w.store.append_audit(&other).await.unwrap();
    assert_eq!(w.store.open_intents(HOST).await.unwrap().len(), 2);

    let report = w.once(Scope::Host, false).await;
    assert!(
        report
            .warnings
            .iter()
            .any(|l| l.contains(&format!("intent #{signal}"))),
        "{:?}",
        report.warnings
    );
    let audit = w.audit().await;
    let concluded = |id: i64| {
        audit
            .iter()
            .find(|r| r.intent_id == Some(id))
            .unwrap_or_else(|| panic!("intent #{id} concluded: {audit:?}"))
    };
    let s = concluded(signal);
    assert_eq!(s.outcome, "interrupted");
    assert!(
        s.reason.contains(&format!("pid {gone} is gone")),
        "{}",
        s.reason
    );
    let r = concluded(removal);
    assert_eq!(r.outcome, "interrupted");
    assert!(
        r.reason
            .contains(&format!("{} is still in place", kept.display())),
        "{}",
        r.reason
    );
    assert!(kept.exists(), "concluding an intent touches nothing");
    assert!(w.store.open_intents(HOST).await.unwrap().is_empty());
    // Concluded once: a later pass finds nothing to conclude.
    let before = w.audit().await.len();
    let again = w.once(Scope::Host, false).await;
    assert!(again.warnings.iter().all(|l| !l.contains("intent #")));
    assert_eq!(w.audit().await.len(), before);
    let others = w.store.open_intents("another-host").await.unwrap();
    assert_eq!(others.len(), 1, "another host's intent is left alone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_database_locked_by_another_writer_stops_every_destructive_action() {
    use sqlx::{Connection, Executor};
    let w = World::new(Db::Sqlite).await;
    let wt = w.chat_worktree("s1", "c1", "w1", "archived").await;
    // Another writer holds the write lock for the whole pass.
    let mut writer = sqlx::SqliteConnection::connect(&w.url).await.unwrap();
    writer.execute("BEGIN IMMEDIATE").await.unwrap();

    let store = Store::open_with(&w.url, false, SHORT).await.unwrap();
    let controller = w.controller_with(w.config(), store);
    let report = act_pass(&controller, Scope::Host, false).await;
    assert_eq!(report.exit_code(), exit::ERROR, "{}", report.render());
    let removal = report
        .results
        .iter()
        .find(|r| r.action.name() == "remove_worktree")
        .unwrap_or_else(|| panic!("{}", report.render()));
    assert!(
        matches!(&removal.outcome, Outcome::Failed { error } if error.contains("intent audit record could not be written")),
        "{:?}",
        removal.outcome
    );
    assert!(wt.exists(), "not removed without its intent on record");
    writer.execute("ROLLBACK").await.unwrap();
    drop(writer);
    assert!(w.audit().await.is_empty());

    let report = w.once(Scope::Host, false).await;
    assert_eq!(report.exit_code(), exit::CONVERGED, "{}", report.render());
    assert!(!wt.exists());
}

/// The backend pid holding this host's advisory lock, if any.
async fn lock_holder(w: &World) -> Option<String> {
    let rows = w
        .store
        .query_strings(&format!(
            "SELECT CAST(pid AS TEXT) FROM pg_locks WHERE locktype = 'advisory' AND granted \
             AND objsubid = 1 AND ((classid::bigint << 32) | objid::bigint) = {}",
            advisory_key(HOST)
        ))
        .await
        .unwrap();
    rows.first().and_then(|r| r[0].clone())
}

async fn terminate_backend(w: &World, pid: &str) {
    let rows = w
        .store
        .query_strings(&format!("SELECT CAST(pg_terminate_backend({pid}) AS TEXT)"))
        .await
        .unwrap();
    assert_eq!(
        rows[0][0].as_deref(),
        Some("true"),
        "backend {pid} terminated"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_that_cannot_be_confirmed_is_dropped_and_refuses_until_taken_again() {
    let _turn = LOCK_TURN.lock().await;
    let w = World::new(Db::Postgres).await;
    let proxy = FreezingProxy::start(upstream()).await;
    let store = Store::open_with(&through(&w.url, proxy.addr()), false, SHORT)
        .await
        .unwrap();
    let fence = Fence::new(SHORT.query);
    assert!(fence.confirm().await.is_err(), "no lock, no action");
    fence.install(store.try_lock_host(HOST).await.unwrap().expect("free"));
    fence.confirm().await.expect("held and answering");

    // Frozen: the confirmation gives up within its bound and drops the lock.
    proxy.freeze();
    let t = Instant::now();
    let e = fence.confirm().await.unwrap_err();
    let took = t.elapsed();
    assert!(e.contains("did not answer within 1s"), "{e}");
    assert!(took < Duration::from_secs(10), "bounded: {took:?}");
    assert!(matches!(fence.state(), FenceState::Lost { .. }));
    let t = Instant::now();
    assert!(fence.confirm().await.is_err(), "still refused");
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "without a round trip"
    );
    proxy.thaw();
    assert!(fence.confirm().await.is_err(), "refused until taken again");

    // Taken again once the old session is gone, directly this time; a
    // terminated backend is found by the next confirmation.
    let direct = w.store.clone();
    assert!(
        eventually(Duration::from_secs(15), async || {
            match direct.try_lock_host(HOST).await.unwrap() {
                Some(lock) => {
                    fence.install(lock);
                    true
                }
                None => false,
            }
        })
        .await,
        "the dropped lock's session ended and freed the lock"
    );
    fence.confirm().await.expect("taken again");
    let holder = lock_holder(&w).await.expect("held");
    terminate_backend(&w, &holder).await;
    let e = fence.confirm().await.unwrap_err();
    assert!(e.contains("the lock's connection failed"), "{e}");
    fence.release();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_leader_never_acts_after_another_instance_took_the_lock() {
    let _turn = LOCK_TURN.lock().await;
    let mut w = World::new(Db::Postgres).await;
    w.interval = Duration::from_secs(3600);
    let path = w.chat_worktree("s1", "c1", "w1", "open").await;

    // The first instance reaches the database through a proxy.
    let proxy = FreezingProxy::start(upstream()).await;
    let url = through(&w.url, proxy.addr());
    let store = Store::open_with(&url, false, SHORT).await.unwrap();
    let mut config = w.config();
    config.database.url = url;
    let controller = Controller::new(config, store, WorktreeRoot::prepare(&w.root).unwrap());
    let stop_first = CancellationToken::new();
    let first = Service::new(controller, stop_first.clone());
    assert!(
        matches!(first.role(), Role::Standby { .. }),
        "no role before the lock is taken"
    );
    let first_run = tokio::spawn({
        let s = Arc::clone(&first);
        async move { s.run().await }
    });
    assert!(ready_within(&first, Duration::from_secs(15)).await);

    // Its connections freeze, and its lock's session is ended on the
    // server: the lock is free, and the first instance cannot know.
    proxy.freeze();
    let holder = lock_holder(&w).await.expect("the first instance holds it");
    terminate_backend(&w, &holder).await;
    let stalled = tokio::time::timeout(
        Duration::from_secs(30),
        first.reconcile(
            Scope::Chat("c1".into()),
            Mode::act(Force::Off),
            Trigger::Nudge,
        ),
    )
    .await
    .expect("a nudge during the stall is answered within its bounds");
    if let Ok(report) = &stalled {
        assert!(!report.errors.is_empty(), "{}", report.render());
    }

    // A second instance takes the lock.
    let (second, stop_second, second_run) = spawn_service(w.controller());
    assert!(ready_within(&second, Duration::from_secs(15)).await);
    assert_ne!(lock_holder(&w).await, Some(holder.clone()));

    // The chat goes; the first instance's database comes back, and it is
    // nudged before it noticed anything: it plans the removal, writes its
    // intent, fails to confirm the lock and does not act.
    w.sql("UPDATE sessions SET status = 'archived' WHERE id = 's1'")
        .await;
    proxy.thaw();
    let report = first
        .reconcile(
            Scope::Chat("c1".into()),
            Mode::act(Force::Off),
            Trigger::Nudge,
        )
        .await
        .expect("still believed to lead");
    let removal = report
        .results
        .iter()
        .find(|r| r.action.name() == "remove_worktree")
        .unwrap_or_else(|| panic!("the removal was planned: {}", report.render()));
    assert!(
        matches!(&removal.outcome, Outcome::Failed { error }
            if error.contains("not acting") && error.contains("host lock could not be confirmed")),
        "{:?}",
        removal.outcome
    );
    assert!(path.exists(), "the first instance did not act");
    assert!(
        eventually(Duration::from_secs(15), async || matches!(
            first.role(),
            Role::Standby { .. }
        ))
        .await,
        "it tried to take the lock again at once and stands by: {:?}",
        first.role()
    );
    assert!(first.ready().await.is_err());
    assert!(matches!(
        first
            .reconcile(
                Scope::Chat("c1".into()),
                Mode::act(Force::Off),
                Trigger::Nudge
            )
            .await,
        Err(QueueError::Standby(_))
    ));
    assert!(path.exists());

    // The leader does the work, once.
    let done = second
        .reconcile(
            Scope::Chat("c1".into()),
            Mode::act(Force::Off),
            Trigger::Nudge,
        )
        .await
        .unwrap();
    assert_eq!(done.exit_code(), exit::CONVERGED, "{}", done.render());
    assert!(!path.exists());
    let outcomes: Vec<String> = w
        .audit()
        .await
        .iter()
        .filter(|r| r.action == "remove_worktree")
        .map(|r| r.outcome.clone())
        .collect();
    assert_eq!(outcomes, ["intent", "failed", "intent", "done"]);
    assert!(w.store.open_intents(HOST).await.unwrap().is_empty());

    // Once the second lets go, the first takes the lock again and leads.
    stop_second.cancel();
    second_run.await.unwrap();
    assert!(
        eventually(Duration::from_secs(15), async || first.role()
            == Role::Leader)
        .await,
        "{:?}",
        first.role()
    );
    stop_first.cancel();
    first_run.await.unwrap();
}

/// Continues a stopped PostgreSQL backend however the test ends.
struct Stopped(nix::unistd::Pid);

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(self.0, nix::sys::signal::Signal::SIGCONT);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_still_held_by_this_instances_frozen_session_keeps_it_unsure_naming_the_backend() {
    let _turn = LOCK_TURN.lock().await;
    let mut w = World::new(Db::Postgres).await;
    // Each pass of the loop confirms the lock first.
    w.interval = Duration::from_secs(1);
    let store = Store::open_with(&w.url, false, SHORT).await.unwrap();
    let running = Running::ready(Controller::new(
        w.config(),
        store,
        WorktreeRoot::prepare(&w.root).unwrap(),
    ))
    .await;
    let service = &running.service;

    // The lock's backend stops answering (a real stopped process on the
    // server; the session, and so the lock, stay): the confirmation gives
    // up, and the lock cannot be taken again while that session lives.
    let holder = lock_holder(&w).await.expect("held");
    let pid = nix::unistd::Pid::from_raw(holder.parse().unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP)
        .expect("stopping the lock's backend: this test needs PostgreSQL on this host, and root");
    let stopped = Stopped(pid);
    let named = format!("this instance's previous connection (backend {holder})");
    assert!(
        eventually(Duration::from_secs(15), async || matches!(
            service.role(),
            Role::Unsure { why } if why.contains(&named)
        ))
        .await,
        "unsure, naming its own old backend, never a plain standby: {:?}",
        service.role()
    );
    assert!(service.ready().await.is_err());
    assert!(matches!(
        service
            .reconcile(Scope::Host, Mode::act(Force::Off), Trigger::Nudge)
            .await,
        Err(QueueError::Standby(_))
    ));

    // Continued, the backend finds its client gone and ends, and with it
    // the session: the lock is taken anew.
    drop(stopped);
    assert!(
        eventually(Duration::from_secs(20), async || service.role()
            == Role::Leader)
        .await,
        "{:?}",
        service.role()
    );
    assert_ne!(lock_holder(&w).await, Some(holder));
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_answers_within_two_seconds_when_the_database_is_frozen() {
    let _turn = LOCK_TURN.lock().await;
    let mut w = World::new(Db::Postgres).await;
    w.interval = Duration::from_secs(3600);
    let proxy = FreezingProxy::start(upstream()).await;
    let url = through(&w.url, proxy.addr());
    // Connections and queries may take 10 s (whether the ping finds an
    // idle connection or opens one); a readiness probe gives up long
    // before.
    let slow = Timeouts {
        connect: Duration::from_secs(10),
        query: Duration::from_secs(10),
    };
    let store = Store::open_with(&url, false, slow).await.unwrap();
    let mut config = w.config();
    config.database.url = url;
    config.database.query_timeout = slow.query;
    let running = Running::ready(Controller::new(
        config,
        store,
        WorktreeRoot::prepare(&w.root).unwrap(),
    ))
    .await;
    proxy.freeze();
    let t = Instant::now();
    let e = running.service.ready().await.unwrap_err();
    let took = t.elapsed();
    assert!(e.contains("did not answer within 2s"), "{e}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    proxy.thaw();
    running.stop().await;
}
