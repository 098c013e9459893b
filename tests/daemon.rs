//! The binary as an operator runs it beside a daemon: `status` reads a
//! running `run`, and `once` hands its work to the daemon instead of acting
//! beside it. Real processes, loopback HTTP, both databases.
//!
//! The PostgreSQL host lock is keyed by the host id across the database:
//! this file holds the only test that runs a daemon per database kind, so
//! that no other test in the same binary competes for it.

mod common;

use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{free_port, set_all, world_command, Db, World, HOST};
use serde_json::Value;

both_databases!(once_beside_a_running_daemon_nudges_it_and_status_shows_it);

const TOKEN: &str = "daemon-test-token";

/// The binary with `w`'s database, host, root and labels, and an HTTP
/// address of its own.
fn bin(w: &World, port: u16) -> Command {
    let mut c = world_command(w, &w.url);
    // Every command here carries the daemon's token, unless it overrides
    // it with --set.
    c.env("BOO_RECONCILER_TOKEN", TOKEN);
    set_all(&mut c, &w.label_settings());
    set_all(
        &mut c,
        &[
            ("processes.term_grace", "5s"),
            ("loop.interval", "1h"),
            ("loop.jitter", "0s"),
            ("http.listen", &format!("127.0.0.1:{port}")),
            // Deaf to the notifications the schema's triggers send: the
            // teardown here must come from the nudge.
            ("database.notify_channel", "boo_test_nobody"),
        ],
    );
    c
}

/// A `run` process; its JSON log messages arrive on `messages`. Stopped
/// with SIGTERM (and reaped) on drop.
struct Daemon {
    child: Child,
    messages: mpsc::Receiver<String>,
}

impl Daemon {
    fn start(w: &World, port: u16) -> Daemon {
        let mut child = bin(w, port)
            .args(["--log-format", "json", "run"])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let messages = common::log_messages(child.stderr.take().unwrap());
        Daemon { child, messages }
    }

    /// Waits for the log message `msg`; panics with what was seen instead.
    fn wait_for(&self, msg: &str, limit: Duration) {
        let deadline = std::time::Instant::now() + limit;
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match self.messages.recv_timeout(left) {
                Ok(m) if m == msg => return,
                Ok(m) => seen.push(m),
                Err(_) => break,
            }
        }
        panic!("the daemon did not log {msg:?} within {limit:?}; it logged {seen:#?}");
    }

    /// What the daemon logged since the last look.
    fn logged(&self) -> Vec<String> {
        self.messages.try_iter().collect()
    }

    fn stop(&mut self) -> Option<i32> {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        for _ in 0..300 {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        self.child.wait().ok().and_then(|s| s.code())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
    }
}

/// Runs `boo-reconciler args…` for `w` to completion, on a blocking thread.
async fn cli(w: &World, port: u16, args: &[&str]) -> Output {
    let mut c = bin(w, port);
    c.args(args);
    tokio::task::spawn_blocking(move || c.output().unwrap())
        .await
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn explain(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        stdout(o),
        String::from_utf8_lossy(&o.stderr)
    )
}

async fn once_beside_a_running_daemon_nudges_it_and_status_shows_it(db: Db) {
    let w = World::new(db).await;
    let path = w.chat_worktree("s1", "c1", "w1", "open").await;
    let agent = w.agent("c1", "s1", "exec sleep 600", &path);
    let (pid, start) = (agent.pid(), agent.start_time());

    let port = free_port();
    let mut daemon = Daemon::start(&w, port);
    daemon.wait_for("pass finished", Duration::from_secs(30));

    // `status` reads the daemon: as JSON, and as tables.
    let out = cli(&w, port, &["status", "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", explain(&out));
    let status: Value = serde_json::from_str(&stdout(&out)).expect("status JSON");
    assert_eq!(status["host"], HOST);
    assert_eq!(status["role"], "leader");
    assert_eq!(status["last_host_pass"]["trigger"], "startup");
    let out = cli(&w, port, &["status"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", explain(&out));
    let text = stdout(&out);
    assert!(text.contains(&format!("on host {HOST} — leader")), "{text}");
    assert!(text.contains("RECENT PASSES"), "{text}");
    assert!(text.contains("startup"), "{text}");

    // A daemon that refuses the nudge (a wrong token) will hold the lock
    // for good: `once` says so and fails instead of waiting for ever.
    let out = cli(&w, port, &["--set", "http.token=wrong", "once"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", explain(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refused the nudge"), "{err}");
    assert!(err.contains("401"), "{err}");
    assert!(err.contains("http.token"), "{err}");

    // The session is archived; `once` beside the daemon asks it to do the
    // work rather than acting itself.
    w.sql("UPDATE chats SET status = 'archived' WHERE id = 'c1'")
        .await;
    w.sql("UPDATE sessions SET status = 'archived' WHERE id = 's1'")
        .await;
    let out = cli(&w, port, &["once", "--session", "s1", "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", explain(&out));
    let answer: Value = serde_json::from_str(&stdout(&out)).expect("answer JSON");
    assert_eq!(answer["trigger"], "nudge", "the daemon ran it: {answer:#}");
    assert_eq!(answer["session_id"], "s1");
    assert_eq!(answer["result"], "converged", "{answer:#}");
    let kinds: Vec<&str> = answer["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"terminate_process"),
        "{answer:#}\n{:#?}",
        daemon.logged()
    );
    assert!(kinds.contains(&"remove_worktree"), "{kinds:?}");
    assert!(!path.exists());
    assert!(!common::alive(pid, start));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("asking it to reconcile"), "{err}");

    // Nothing left: the human answer says so, from the daemon again.
    let out = cli(&w, port, &["once"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", explain(&out));
    let text = stdout(&out);
    assert!(
        text.starts_with(&format!(
            "reconciled by the running controller at http://127.0.0.1:{port} (host -)"
        )),
        "{text}"
    );
    assert!(text.contains(": converged, 0 action(s)"), "{text}");

    // Exactly one teardown: `once` did not act beside the daemon.
    let audit = w.audit().await;
    let count = |action: &str| {
        audit
            .iter()
            .filter(|a| a.action == action && a.outcome == "done")
            .count()
    };
    assert_eq!(
        count("remove_worktree"),
        1,
        "{audit:#?}\n{:#?}",
        daemon.logged()
    );
    assert_eq!(count("terminate_process"), 1, "{audit:#?}");

    // With the daemon gone, `once` takes the lock and acts itself.
    assert_eq!(daemon.stop(), Some(0));
    w.session("s2", "archived").await;
    let path2 = w.worktree("w2", "s2").await;
    let out = cli(&w, port, &["once", "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", explain(&out));
    let report: Value = serde_json::from_str(&stdout(&out)).expect("report JSON");
    assert_eq!(report["trigger"], "command", "{report:#}");
    assert!(!path2.exists());
    drop(agent);
}
