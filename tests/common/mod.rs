//! Test fixtures: real git repositories and worktrees in temp dirs, a
//! database of either kind, and a controller wired to both.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use boo_reconciler::act::RunOptions;
use boo_reconciler::config::Config;
use boo_reconciler::controller::{Controller, Mode, Trigger};
use boo_reconciler::model::{Force, Scope};
use boo_reconciler::report::PassReport;
use boo_reconciler::root::WorktreeRoot;
use boo_reconciler::store::Store;
use tokio_util::sync::CancellationToken;

/// A [`boo_reconciler::service::Service`] running its loop on a task of
/// its own, as `run` does.
pub struct Running {
    pub service: std::sync::Arc<boo_reconciler::service::Service>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Starts `controller`'s loop and waits until it is ready to act.
    pub async fn ready(controller: Controller) -> Running {
        let (service, stop, task) = spawn_service(controller);
        assert!(
            ready_within(&service, Duration::from_secs(15)).await,
            "the service never became ready: {:?}",
            service.role()
        );
        Running {
            service,
            stop,
            task,
        }
    }

    /// Stops the loop as SIGTERM would and waits for it.
    pub async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap();
    }
}

/// `controller`'s [`boo_reconciler::service::Service`] with its loop
/// started on a task of its own, as `run` does; cancelling the token stops
/// it, and the task ends once it has.
pub fn spawn_service(
    controller: Controller,
) -> (
    std::sync::Arc<boo_reconciler::service::Service>,
    CancellationToken,
    tokio::task::JoinHandle<()>,
) {
    let stop = CancellationToken::new();
    let service = boo_reconciler::service::Service::new(controller, stop.clone());
    let task = tokio::spawn({
        let s = std::sync::Arc::clone(&service);
        async move { s.run().await }
    });
    (service, stop, task)
}

/// A pass of `controller` over `scope` that acts (with `force` or not), as
/// `once` runs it.
pub async fn act_pass(controller: &Controller, scope: Scope, force: bool) -> PassReport {
    controller
        .pass(
            scope,
            Mode::Act(RunOptions::new(Force::from(force))),
            Trigger::Command,
            &CancellationToken::new(),
        )
        .await
}

/// `service`'s start-up pass: once it is done the service is ready.
pub async fn startup_pass(service: &boo_reconciler::service::Service) {
    service
        .reconcile(Scope::Host, Mode::act(Force::Off), Trigger::Startup)
        .await
        .expect("start-up pass");
}

/// The HTTP server on `127.0.0.1:0` in front of `service`, asking for
/// `token` and bounded by `opts`: its base URL, the token that shuts it
/// down, and the task serving it.
pub async fn serve_on_loopback(
    service: &std::sync::Arc<boo_reconciler::service::Service>,
    token: Option<String>,
    opts: boo_reconciler::http::ServeOptions,
) -> (
    String,
    CancellationToken,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    use boo_reconciler::http;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    let router = http::router(std::sync::Arc::clone(service), token);
    let handle = tokio::spawn(http::serve_with(listener, router, shutdown.clone(), opts));
    (base, shutdown, handle)
}

/// The binary under test with none of the `BOO_RECONCILER_*` variables of
/// the environment the tests run in: only what each test sets.
pub fn bin_command() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_boo-reconciler"));
    for (k, _) in std::env::vars() {
        if k.starts_with("BOO_RECONCILER_") {
            c.env_remove(k);
        }
    }
    // Tests run at once as root: none may see another's agent cgroups
    // under the shared default parent. A test that wants them names a
    // parent of its own (`--set` wins over the environment).
    c.env("BOO_RECONCILER_PROCESSES_CGROUP_PARENT", "off");
    c
}

/// [`bin_command`] in `w`'s temp dir, aimed at host [`HOST`], `w`'s
/// worktree root and the database `url` (`w.url`, or a proxy in front of
/// it).
pub fn world_command(w: &World, url: &str) -> Command {
    let mut c = bin_command();
    c.current_dir(w.tmp.path())
        .args(["--database-url", url, "--host-id", HOST])
        .arg("--worktree-root")
        .arg(&w.root);
    c
}

/// `--set key=value` for each pair, in order.
pub fn set_all(c: &mut Command, settings: &[(&str, &str)]) {
    for (key, value) in settings {
        c.arg("--set").arg(format!("{key}={value}"));
    }
}

/// A port nothing listens on now (the kernel's pick, let go at once).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub const HOST: &str = "test-host";

/// Which database a test runs against.
#[derive(Clone, Copy, Debug)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// The PostgreSQL server tests use: `DATABASE_URL`, else the local one.
pub fn postgres_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

/// `url` with its host and port replaced by `addr` (a proxy in front of
/// the same server).
pub fn through(url: &str, addr: std::net::SocketAddr) -> String {
    let opts: sqlx::postgres::PgConnectOptions = url.parse().expect("PostgreSQL URL");
    let from = format!("{}:{}", opts.get_host(), opts.get_port());
    assert!(url.contains(&from), "{url} names no host:port to replace");
    url.replacen(&from, &addr.to_string(), 1)
}

/// The address of the tests' PostgreSQL server, for a proxy to forward to.
pub fn upstream() -> std::net::SocketAddr {
    use std::net::ToSocketAddrs;
    let opts: sqlx::postgres::PgConnectOptions = postgres_url().parse().expect("PostgreSQL URL");
    (opts.get_host(), opts.get_port())
        .to_socket_addrs()
        .expect("PostgreSQL address")
        .next()
        .expect("PostgreSQL address")
}

/// Whether `service` becomes ready (see `Service::ready`) within `limit`.
pub async fn ready_within(service: &boo_reconciler::service::Service, limit: Duration) -> bool {
    eventually(limit, async || service.ready().await.is_ok()).await
}

/// Polls `f` every 20 ms until it holds or `limit` passes.
pub async fn eventually(limit: Duration, mut f: impl AsyncFnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    f().await
}

/// A database isolated for one test: a fresh SQLite file, or a fresh schema
/// on the PostgreSQL server. An unreachable PostgreSQL fails the test: it is
/// never skipped.
pub async fn database(kind: Db, dir: &Path) -> (String, Store, Option<String>) {
    let mut schema_made = None;
    let url = match kind {
        Db::Sqlite => format!("sqlite://{}", dir.join("test.db").display()),
        Db::Postgres => {
            let base = postgres_url();
            let admin = Store::connect(&base).await.unwrap_or_else(|e| {
                panic!("PostgreSQL is required for the tests and is not reachable: {e}")
            });
            let schema = format!("t_{}", fastrand::u64(..));
            admin
                .execute_raw(&format!("CREATE SCHEMA {schema}"))
                .await
                .expect("create schema");
            schema_made = Some(schema.clone());
            let sep = if base.contains('?') { '&' } else { '?' };
            format!("{base}{sep}options=-c%20search_path%3D{schema}")
        }
    };
    let store = Store::connect(&url).await.expect("connect");
    store.migrate().await.expect("migrate");
    (url, store, schema_made)
}

/// Drops a test's schema; runs on its own thread and runtime because it is
/// called from `Drop`.
fn drop_schema(schema: String) {
    let _ = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            if let Ok(admin) = Store::connect(&postgres_url()).await {
                let _ = admin
                    .execute_raw(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                    .await;
            }
        });
    })
    .join();
}

/// `git` in `dir`, isolated from the machine's configuration and
/// committing as the tests' author: every git command a test runs starts
/// here, so that no test depends on who runs it.
pub fn git_command(dir: &Path) -> Command {
    let mut c = Command::new("git");
    c.current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "Test")
        .env("GIT_AUTHOR_EMAIL", "test@example.com")
        .env("GIT_COMMITTER_NAME", "Test")
        .env("GIT_COMMITTER_EMAIL", "test@example.com");
    c
}

/// Runs `git` in `dir` ([`git_command`]), failing the test when git fails;
/// returns stdout, trimmed.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = git_command(dir).args(args).output().expect("run git");
    assert!(
        out.status.success(),
        "git {args:?} in {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `git worktree add --detach <dest> <rev>` in `repo`: where a test brings
/// an archive back, on its base commit.
pub fn detached_worktree(repo: &Path, dest: &Path, rev: &str) {
    git(
        repo,
        &[
            "worktree",
            "add",
            "-q",
            "--detach",
            dest.to_str().unwrap(),
            rev,
        ],
    );
}

/// How [`files`] reads a tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tree {
    /// The tree must be read whole: a directory it cannot read fails the
    /// test (it would hide a change), and a worktree's `.git` file is part
    /// of what must stay untouched.
    Whole,
    /// A tree a crashed process left half way (a retired worktree the
    /// reclaimer was deleting, directories that go while it walks): a
    /// directory it cannot read is skipped rather than failing the test,
    /// and `.git` directories are left out, since a removal's prune
    /// rewrites the main repository's.
    HalfWay,
}

/// Every file under `dir` with its contents, sorted, read as `how` says.
pub fn files(dir: &Path, how: Tree) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let entries = match std::fs::read_dir(&d) {
            Ok(entries) => entries,
            Err(_) if how == Tree::HalfWay => continue,
            Err(e) => panic!("{}: {e}", d.display()),
        };
        for e in entries {
            let p = e.unwrap().path();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            if meta.is_dir() {
                if how == Tree::HalfWay && p.file_name().is_some_and(|n| n == ".git") {
                    continue;
                }
                todo.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().display().to_string();
                out.push((rel, std::fs::read(&p).unwrap_or_default()));
            }
        }
    }
    out.sort();
    out
}

/// Whether `git worktree list` in `repo` still names `path` (its
/// admin entry is there): by the exact line, since a temporary
/// directory's random name may contain any short id.
pub fn worktree_listed(repo: &Path, path: &Path) -> bool {
    let line = format!("worktree {}", path.display());
    git(repo, &["worktree", "list", "--porcelain"])
        .lines()
        .any(|l| l == line)
}

/// Asserts that a command succeeded, showing its stderr when it did not.
pub fn assert_succeeded(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Whether `git` succeeds in `dir`.
pub fn git_ok(dir: &Path, args: &[&str]) -> bool {
    git_command(dir)
        .args(args)
        .output()
        .expect("run git")
        .status
        .success()
}

/// A temp dir holding a main repository, a worktree root, an outside dir
/// and a database; plus a controller configured for them.
pub struct World {
    pub tmp: tempfile::TempDir,
    pub repo: PathBuf,
    pub root: PathBuf,
    pub outside: PathBuf,
    pub store: Store,
    pub url: String,
    pub orphan_min_age: Duration,
    pub interval: Duration,
    pub process_orphan_min_age: Duration,
    pub term_grace: Duration,
    /// This world's label names: unique, so that no other test's agents
    /// are ever seen (or stopped) by this world's controller.
    pub labels: [String; 3],
    /// `opencode.url`; off unless a test sets it.
    pub opencode_url: Option<String>,
    pub opencode_orphan_min_age: Duration,
    /// `worktrees.stale_entry_grace`: none unless a test sets it, so that
    /// a directory deleted behind git's back is pruned on the next pass.
    pub stale_entry_grace: Duration,
    /// `processes.cgroup_parent`: off unless a test names a parent of its
    /// own (tests run at once; none may see another's agents).
    pub cgroup_parent: String,
    /// `processes.lineage`: off unless a test turns it on.
    pub lineage: bool,
    schema: Option<String>,
}

impl Drop for World {
    fn drop(&mut self) {
        if let Some(schema) = self.schema.take() {
            drop_schema(schema);
        }
    }
}

impl World {
    pub async fn new(kind: Db) -> World {
        let tmp = tempfile::tempdir().expect("tempdir");
        let repo = tmp.path().join("repo");
        let root = tmp.path().join("booworktrees");
        let outside = tmp.path().join("outside");
        for d in [&repo, &root, &outside] {
            std::fs::create_dir_all(d).unwrap();
        }
        git(&repo, &["init", "-q", "-b", "main"]);
        std::fs::write(repo.join("README.md"), "hello\n").unwrap();
        std::fs::write(repo.join(".gitignore"), "target/\n.env\n.env.*\n").unwrap();
        git(&repo, &["add", "."]);
        git(&repo, &["commit", "-q", "-m", "initial"]);
        let (url, store, schema) = database(kind, tmp.path()).await;
        World {
            tmp,
            repo,
            root,
            outside,
            store,
            url,
            orphan_min_age: Duration::from_secs(600),
            interval: Duration::from_secs(30),
            process_orphan_min_age: Duration::from_secs(120),
            term_grace: Duration::from_secs(5),
            labels: {
                let n = fastrand::u64(..);
                [
                    format!("BOO_TEST_CHAT_{n}"),
                    format!("BOO_TEST_SESSION_{n}"),
                    format!("BOO_TEST_AGENT_{n}"),
                ]
            },
            opencode_url: None,
            opencode_orphan_min_age: Duration::from_secs(600),
            stale_entry_grace: Duration::ZERO,
            cgroup_parent: "off".into(),
            lineage: false,
            schema,
        }
    }

    /// This world's labels as the binary's `processes.*_label` settings.
    pub fn label_settings(&self) -> [(&'static str, &str); 3] {
        [
            ("processes.chat_label", &self.labels[0]),
            ("processes.session_label", &self.labels[1]),
            ("processes.agent_label", &self.labels[2]),
        ]
    }

    pub fn config(&self) -> Config {
        let mut c = Config::defaults().expect("defaults");
        c.database.url = self.url.clone();
        c.host.id = HOST.into();
        c.worktrees.root = self.root.clone();
        c.worktrees.orphan_min_age = self.orphan_min_age;
        c.r#loop.interval = self.interval;
        c.r#loop.jitter = Duration::ZERO;
        c.processes.chat_label = self.labels[0].clone();
        c.processes.session_label = self.labels[1].clone();
        c.processes.agent_label = self.labels[2].clone();
        c.processes.orphan_min_age = self.process_orphan_min_age;
        c.processes.term_grace = self.term_grace;
        c.opencode.url = self
            .opencode_url
            .as_ref()
            .map(|u| u.parse().expect("opencode URL"));
        c.opencode.orphan_min_age = self.opencode_orphan_min_age;
        c.worktrees.stale_entry_grace = self.stale_entry_grace;
        c.processes.cgroup_parent = self.cgroup_parent.clone();
        c.processes.lineage = self.lineage.to_string();
        // The real server answers in milliseconds; a loaded 2-core machine
        // (the whole suite at once) has been seen to take over 1 s.
        c.opencode.timeout = Duration::from_secs(3);
        c
    }

    /// A controller that acts as if it held the host lock: each test's
    /// world has a host of its own. (A `Service`'s `run` takes the real
    /// lock, replacing this.)
    pub fn controller(&self) -> Controller {
        self.controller_with(self.config(), self.store.clone())
    }

    /// A controller for this world's root with `config` and `store` (a
    /// database reached another way), acting as if it held the host lock
    /// as [`World::controller`]'s does.
    pub fn controller_with(&self, config: Config, store: Store) -> Controller {
        let root = WorktreeRoot::prepare(&self.root).expect("root");
        let c = Controller::new(config, store, root);
        c.executor()
            .fence()
            .install(boo_reconciler::store::lock::HostLock::Assumed);
        c
    }

    pub async fn once(&self, scope: Scope, force: bool) -> PassReport {
        act_pass(&self.controller(), scope, force).await
    }

    pub async fn plan(&self) -> PassReport {
        self.controller()
            .pass(
                Scope::Host,
                Mode::DryRun,
                Trigger::Command,
                &CancellationToken::new(),
            )
            .await
    }

    pub async fn sql(&self, statement: &str) {
        self.store.execute_raw(statement).await.expect(statement);
    }

    pub async fn session(&self, id: &str, status: &str) {
        self.sql(&format!(
            "INSERT INTO sessions (id, status) VALUES ('{id}', '{status}')"
        ))
        .await;
    }

    pub async fn chat(&self, id: &str, session: &str, status: &str) {
        self.sql(&format!(
            "INSERT INTO chats (id, session_id, status) VALUES ('{id}', '{session}', '{status}')"
        ))
        .await;
    }

    /// A session and its chat, both with `status`, and the session's
    /// worktree (as [`World::worktree`]); the worktree's path.
    pub async fn chat_worktree(
        &self,
        session: &str,
        chat: &str,
        worktree: &str,
        status: &str,
    ) -> PathBuf {
        self.session(session, status).await;
        self.chat(chat, session, status).await;
        self.worktree(worktree, session).await
    }

    /// `git worktree add <root>/<id> -b boo/<id>` and its row.
    pub async fn worktree(&self, id: &str, session: &str) -> PathBuf {
        let path = self.add_worktree(id);
        self.worktree_row(id, session, &path.display().to_string())
            .await;
        path
    }

    pub fn add_worktree(&self, id: &str) -> PathBuf {
        let path = self.root.join(id);
        git(
            &self.repo,
            &[
                "worktree",
                "add",
                "-q",
                "-b",
                &format!("boo/{id}"),
                path.to_str().unwrap(),
                "main",
            ],
        );
        path
    }

    pub async fn worktree_row(&self, id: &str, session: &str, path: &str) {
        self.sql(&format!(
            "INSERT INTO worktrees (id, session_id, repo_path, path, branch, base_ref, host) \
             VALUES ('{id}', '{session}', '{}', '{path}', 'boo/{id}', 'main', '{HOST}')",
            self.repo.display()
        ))
        .await;
    }

    /// The state and reasons of a worktree row.
    pub async fn row_state(&self, id: &str) -> (String, Option<String>) {
        let rows = self
            .store
            .query_strings(&format!(
                "SELECT state, CAST(at_risk_reasons AS TEXT) FROM worktrees WHERE id = '{id}'"
            ))
            .await
            .expect("query");
        let r = &rows[0];
        (r[0].clone().unwrap(), r[1].clone())
    }

    /// `sh -c script` started as a launcher starts an agent: its own
    /// process group, this world's labels in its environment, in `cwd`.
    pub fn agent(&self, chat: &str, session: &str, script: &str, cwd: &Path) -> Agent {
        use std::os::unix::process::CommandExt;
        let child = Command::new("sh")
            .args(["-c", script])
            .current_dir(cwd)
            .process_group(0)
            .env(&self.labels[0], chat)
            .env(&self.labels[1], session)
            .env(&self.labels[2], "test-agent")
            .stdin(std::process::Stdio::null())
            .spawn()
            .expect("spawn agent");
        let agent = Agent(child);
        agent.wait_started();
        agent
    }

    /// Records an open `acp` row for an agent.
    pub async fn acp_row(&self, id: &str, chat: &str, session: &str, pid: Option<(i32, u64)>) {
        let (pid, start) = match pid {
            Some((p, s)) => (p.to_string(), s.to_string()),
            None => ("NULL".into(), "NULL".into()),
        };
        self.sql(&format!(
            "INSERT INTO agent_sessions (id, chat_id, session_id, agent, backend, host, pid, pid_start_time) \
             VALUES ('{id}', '{chat}', '{session}', 'goose', 'acp', '{HOST}', {pid}, {start})"
        ))
        .await;
    }

    /// Records an open `opencode_server` row naming `ses`.
    pub async fn opencode_row(&self, id: &str, chat: &str, session: &str, ses: &str) {
        self.sql(&format!(
            "INSERT INTO agent_sessions (id, chat_id, session_id, agent, backend, agent_session_id, host) \
             VALUES ('{id}', '{chat}', '{session}', 'opencode', 'opencode_server', '{ses}', '{HOST}')"
        ))
        .await;
    }

    /// `(status, closed_at is set)` of an agent row.
    pub async fn agent_row(&self, id: &str) -> (String, bool) {
        let rows = self
            .store
            .query_strings(&format!(
                "SELECT status, CAST(closed_at AS TEXT) FROM agent_sessions WHERE id = '{id}'"
            ))
            .await
            .expect("query");
        (rows[0][0].clone().unwrap(), rows[0][1].is_some())
    }

    pub async fn audit(&self) -> Vec<boo_reconciler::store::AuditRecord> {
        self.store.audit_records().await.expect("audit")
    }
}

/// Generates one test per database from `async fn name(db: Db)`.
#[macro_export]
macro_rules! both_databases {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() { super::$name($crate::common::Db::Sqlite).await }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() { super::$name($crate::common::Db::Postgres).await }
            )*
        }
    };
}

/// A process spawned by a test; killed (if need be) and reaped on drop. It
/// is the test's child, so once dead it stays a zombie until reaped here.
pub struct Agent(pub std::process::Child);

impl Agent {
    pub fn pid(&self) -> i32 {
        self.0.id() as i32
    }

    /// Field 22 of /proc/<pid>/stat.
    pub fn start_time(&self) -> u64 {
        start_time_of(self.pid()).expect("agent is running")
    }

    /// Waits until the shell has exec'd (its environment is readable).
    fn wait_started(&self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::fs::read(format!("/proc/{}/environ", self.pid())).map_or(true, |e| e.is_empty())
        {
            assert!(std::time::Instant::now() < deadline, "agent never started");
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Field 22 of /proc/<pid>/stat, if the process exists.
pub fn start_time_of(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    after.split(' ').nth(19)?.parse().ok()
}

/// Whether `pid` runs and is not a zombie (nor the same pid reused).
pub fn alive(pid: i32, start: u64) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let state = after.chars().next().unwrap_or('X');
    start_time_of(pid) == Some(start) && !matches!(state, 'Z' | 'X' | 'x')
}

/// Live processes whose environment carries `label` = `value`.
pub fn labelled(label: &str, value: &str) -> Vec<i32> {
    let needle = format!("{label}={value}\0");
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        if String::from_utf8_lossy(&env).contains(&needle)
            && start_time_of(pid).is_some_and(|s| alive(pid, s))
        {
            out.push(pid);
        }
    }
    out
}

/// The message of each line a daemon logs (JSON lines: `fields.message`;
/// any other line as it is), read on a thread of its own: the log never
/// ends while the daemon runs, and a test must never block on it.
pub fn log_messages(stderr: std::process::ChildStderr) -> std::sync::mpsc::Receiver<String> {
    use std::io::{BufRead, BufReader};
    let (tx, messages) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let msg = serde_json::from_str::<serde_json::Value>(&line)
                .ok()
                .and_then(|v| v["fields"]["message"].as_str().map(str::to_owned))
                .unwrap_or(line);
            if tx.send(msg).is_err() {
                return;
            }
        }
    });
    messages
}

/// A world whose session s1 and chat c1 are archived, for the tests that
/// switch users: they need root (as CI runs them).
pub async fn archived_world(db: Db) -> World {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test switches users: run the suite as root (as CI does)"
    );
    let w = World::new(db).await;
    w.session("s1", "archived").await;
    w.chat("c1", "s1", "archived").await;
    w
}
