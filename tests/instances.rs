//! Two controllers on one host: the release binary, real agent processes.
//! A controller with `processes.instance` stops only its own instance's
//! agents; without one, a second controller of another database on the
//! same labels refuses to start, naming the first.

mod common;

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{alive, free_port, set_all, world_command, Agent, Db, World};

both_databases!(an_instance_stops_its_own_agents_and_never_another_instances);

/// The binary for `w`'s database, host and root, scanning `labels`.
fn bin(w: &World, url: &str, labels: &World) -> Command {
    let mut c = world_command(w, url);
    set_all(&mut c, &labels.label_settings());
    set_all(
        &mut c,
        &[
            ("opencode.url", ""),
            ("loop.interval", "1h"),
            ("loop.jitter", "0s"),
            ("database.notify_channel", "boo_test_nobody"),
        ],
    );
    c
}

/// An agent of `chat` as the launcher starts it, with `instance` in the
/// instance label when given.
fn agent(w: &World, chat: &str, instance: Option<&str>) -> Agent {
    let mut c = Command::new("sleep");
    c.arg("1000")
        .process_group(0)
        .env(&w.labels[0], chat)
        .env(&w.labels[1], "s1")
        .env(&w.labels[2], "test-agent")
        .env_remove("BOO_INSTANCE")
        .stdin(Stdio::null());
    if let Some(i) = instance {
        c.env("BOO_INSTANCE", i);
    }
    let agent = Agent(c.spawn().expect("spawn agent"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read(format!("/proc/{}/environ", agent.pid())).map_or(true, |e| e.is_empty()) {
        assert!(Instant::now() < deadline, "agent never started");
        std::thread::sleep(Duration::from_millis(2));
    }
    agent
}

async fn an_instance_stops_its_own_agents_and_never_another_instances(db: Db) {
    let w = World::new(db).await;
    w.session("s1", "open").await;
    w.chat("c1", "s1", "archived").await;
    let blue = agent(&w, "c1", Some("blue"));
    let green = agent(&w, "c1", Some("green"));
    let unlabelled = agent(&w, "c1", None);
    let started = |a: &Agent| (a.pid(), a.start_time());
    let (blue, green, unlabelled) = (started(&blue), started(&green), started(&unlabelled));

    let mut once = bin(&w, &w.url, &w);
    set_all(&mut once, &[("processes.instance", "blue")]);
    let out = once.args(["once", "--json"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !alive(blue.0, blue.1),
        "its own instance's agent is stopped"
    );
    assert!(alive(green.0, green.1), "another instance's agent runs on");
    assert!(
        alive(unlabelled.0, unlabelled.1),
        "an agent without instance runs on"
    );
    let signalled: Vec<String> = w
        .audit()
        .await
        .into_iter()
        .filter(|a| a.action == "terminate_process")
        .map(|a| a.target)
        .collect();
    assert!(
        signalled
            .iter()
            .all(|t| t.starts_with(&format!("process:{}@", blue.0))),
        "{signalled:?}"
    );
    assert!(!signalled.is_empty(), "{stdout}");

    // A controller without an instance takes every agent of its labels.
    let out = bin(&w, &w.url, &w).arg("once").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(!alive(green.0, green.1) && !alive(unlabelled.0, unlabelled.1));
}

/// A `run` process whose JSON log messages arrive on a channel; killed and
/// reaped on drop.
struct Daemon {
    child: Child,
    messages: mpsc::Receiver<String>,
}

impl Daemon {
    fn start(mut c: Command) -> Daemon {
        let mut child = c
            .args(["--set", &format!("http.listen=127.0.0.1:{}", free_port())])
            .args(["--log-format", "json", "run"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let messages = common::log_messages(child.stderr.take().unwrap());
        Daemon { child, messages }
    }

    /// Waits until it has passed its start (the scan lock included).
    fn started(c: Command) -> Daemon {
        let mut d = Daemon::start(c);
        let mut seen = Vec::new();
        loop {
            match d.messages.recv_timeout(Duration::from_secs(60)) {
                Ok(m) if m == "controller started" => return d,
                Ok(m) => seen.push(m),
                Err(_) => panic!(
                    "not started (exit {:?}): {seen:?}",
                    d.child.try_wait().ok().flatten()
                ),
            }
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it still runs after a moment.
    fn still_running(&mut self) -> bool {
        std::thread::sleep(Duration::from_millis(300));
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `c` run to its end: its exit code and stderr.
fn refused(mut c: Command) -> (Option<i32>, String) {
    let out = c
        .args(["--set", &format!("http.listen=127.0.0.1:{}", free_port())])
        .arg("run")
        .stdout(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_controller_of_another_database_refuses_to_start_unless_instances_differ() {
    // The first on PostgreSQL, with a password in its URL (the server
    // trusts the tests' connections and ignores it); the others on SQLite
    // files of their own, all scanning the first one's labels.
    let pg = World::new(Db::Postgres).await;
    // A host id of its own: on the shared PostgreSQL database the advisory
    // lock of the tests' host id is other tests' to take.
    let host = format!("instances-{}", fastrand::u64(..));
    let bin = |w: &World, url: &str, labels: &World| {
        let mut c = bin(w, url, labels);
        set_all(&mut c, &[("host.id", &host)]);
        c
    };
    let url = pg.url.replacen("postgres@", "postgres:hunter2@", 1);
    assert_ne!(url, pg.url, "{}", pg.url);
    let sqlite = World::new(Db::Sqlite).await;
    let third = World::new(Db::Sqlite).await;

    let mut first = Daemon::started(bin(&pg, &url, &pg));
    let (code, err) = refused(bin(&sqlite, &sqlite.url, &pg));
    assert_eq!(code, Some(2), "{err}");
    for needle in [
        format!("pid {}", first.pid()),
        "postgres://postgres:***@".to_owned(),
        "processes.instance".to_owned(),
        pg.labels[0].clone(),
    ] {
        assert!(err.contains(&needle), "{needle}: {err}");
    }
    assert!(!err.contains("hunter2"), "{err}");
    assert!(first.still_running(), "the first one goes on");
    // Reading is no fight: plan takes no lock.
    let out = bin(&sqlite, &sqlite.url, &pg).arg("plan").output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Its own labels: another controller's processes, no conflict.
    let apart = Daemon::started(bin(&third, &third.url, &third));
    drop(apart);

    // Killed with SIGKILL, the first leaves nothing behind.
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    let mut second = Daemon::started(bin(&sqlite, &sqlite.url, &pg));
    assert!(second.still_running());
    drop(second);

    // Distinct instances share the host; the same instance of another
    // database does not.
    let instance = |mut c: Command, i: &str| {
        set_all(&mut c, &[("processes.instance", i)]);
        c
    };
    let mut blue = Daemon::started(instance(bin(&pg, &url, &pg), "blue"));
    let mut green = Daemon::started(instance(bin(&sqlite, &sqlite.url, &pg), "green"));
    let (code, err) = refused(instance(bin(&third, &third.url, &pg), "blue"));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains(&format!("pid {}", blue.pid())), "{err}");
    // Nor one without an instance, which would take both instances' agents.
    let (code, err) = refused(bin(&third, &third.url, &pg));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("processes.instance"), "{err}");
    assert!(blue.still_running() && green.still_running());
}
