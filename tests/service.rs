//! The running service: database notifications and one controller per host,
//! against real databases.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use boo_reconciler::controller::queue::QueueError;
use boo_reconciler::controller::{Mode, Trigger};
use boo_reconciler::model::{Force, Scope};
use boo_reconciler::service::Role;
use common::{eventually, ready_within, spawn_service, Db, World};

both_databases!(second_instance_with_the_same_host_acts_only_after_the_first_stops);

fn quiet_world(w: &mut World) {
    // Passes run only at start and on demand in these tests.
    w.interval = Duration::from_secs(3600);
}

async fn second_instance_with_the_same_host_acts_only_after_the_first_stops(db: Db) {
    let mut w = World::new(db).await;
    quiet_world(&mut w);
    let path = w.chat_worktree("s1", "c1", "w1", "open").await;

    let (first, stop_first, first_run) = spawn_service(w.controller());
    assert!(ready_within(&first, Duration::from_secs(10)).await);

    let (second, stop_second, second_run) = spawn_service(w.controller());
    assert!(
        eventually(Duration::from_secs(10), async || matches!(
            second.role(),
            Role::Standby { .. }
        ))
        .await
    );
    assert!(second.ready().await.unwrap_err().starts_with("standby"));

    w.sql("UPDATE sessions SET status = 'archived' WHERE id = 's1'")
        .await;
    let refused = second
        .reconcile(
            Scope::Chat("c1".into()),
            Mode::act(Force::Off),
            Trigger::Nudge,
        )
        .await;
    assert!(
        matches!(refused, Err(QueueError::Standby(_))),
        "{refused:?}"
    );
    assert!(path.exists(), "the standby instance did not act");

    stop_first.cancel();
    first_run.await.unwrap();
    drop(first);
    assert!(
        eventually(Duration::from_secs(15), async || !path.exists()).await,
        "the second instance took over and removed the worktree"
    );
    assert_eq!(second.role(), Role::Leader);
    // The directory goes before the audit record is written: wait for it.
    let removals = async || {
        w.audit()
            .await
            .iter()
            .filter(|a| a.action == "remove_worktree" && a.outcome == "done")
            .count()
    };
    assert!(eventually(Duration::from_secs(10), async || removals().await == 1).await);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(removals().await, 1, "exactly one removal");
    stop_second.cancel();
    second_run.await.unwrap();
}

/// The listener's backend pid, by its application name.
async fn listener_pid(w: &World, channel: &str) -> Option<String> {
    let rows = w
        .store
        .query_strings(&format!(
            "SELECT CAST(pid AS TEXT) FROM pg_stat_activity \
             WHERE application_name = 'boo-reconciler listen {channel}'"
        ))
        .await
        .unwrap();
    rows.first().and_then(|r| r[0].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notification_tears_a_chat_down_and_survives_a_killed_listener() {
    let mut w = World::new(Db::Postgres).await;
    quiet_world(&mut w);
    let channel = format!("boo_test_{}", fastrand::u32(..));
    for (s, c, wt) in [("s1", "c1", "w1"), ("s2", "c2", "w2"), ("s3", "c3", "w3")] {
        w.session(s, "open").await;
        w.chat(c, s, "open").await;
        w.worktree(wt, s).await;
    }
    let (svc, cancel, run) = spawn_service(w.controller());
    let listen = tokio::spawn({
        let (s, ch) = (Arc::clone(&svc), channel.clone());
        async move { s.listen(&ch).await }
    });
    assert!(ready_within(&svc, Duration::from_secs(10)).await);
    assert!(
        eventually(Duration::from_secs(10), async || listener_pid(&w, &channel)
            .await
            .is_some())
        .await
    );

    // Whether the worktree `id` is removed within 10 s.
    let removed = async |id: &str| {
        eventually(Duration::from_secs(10), async || !w.root.join(id).exists()).await
    };

    // 1. A notification sent by hand from another connection.
    w.sql("UPDATE chats SET status = 'archived' WHERE id = 'c1'")
        .await;
    let t0 = Instant::now();
    w.sql(&format!("SELECT pg_notify('{channel}', 'chat:c1')"))
        .await;
    assert!(removed("w1").await);
    println!("notification to teardown: {:?}", t0.elapsed());

    // 2. The listener's connection is killed: it comes back and works.
    let old = listener_pid(&w, &channel).await.unwrap();
    w.sql(&format!("SELECT pg_terminate_backend({old})")).await;
    assert!(
        eventually(Duration::from_secs(15), async || {
            matches!(listener_pid(&w, &channel).await, Some(p) if p != old)
        })
        .await,
        "the listener reconnected"
    );
    // The reconnection asked for a full pass; now wait for it to settle so
    // that the next removal can only come from the next notification.
    tokio::time::sleep(Duration::from_millis(300)).await;
    w.sql("UPDATE chats SET status = 'archived' WHERE id = 'c2'")
        .await;
    w.sql(&format!("SELECT pg_notify('{channel}', 'chat:c2')"))
        .await;
    assert!(removed("w2").await);

    // 3. The trigger the migrations install notifies in the transaction
    // that archives the chat.
    w.sql(&format!(
        "BEGIN; SELECT set_config('boo.notify_channel', '{channel}', true); \
         UPDATE chats SET status = 'archived' WHERE id = 'c3'; COMMIT;"
    ))
    .await;
    assert!(removed("w3").await);

    cancel.cancel();
    run.await.unwrap();
    listen.await.unwrap();
}
