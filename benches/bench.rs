//! What a pass, a nudge, the preflight and a removal cost, at scale and
//! against git itself. Builds its own fixture (a repository, linked
//! worktrees, a database of either kind, labelled sleeping agents) in a
//! temporary directory, runs release code, prints a table.
//!
//! ```sh
//! cargo bench --bench bench                  # the full run (bench/README.md)
//! cargo bench --bench bench -- --help        # every knob
//! cargo bench --bench bench -- --smoke       # a tiny fixture, seconds
//! ```
//!
//! Nothing here asserts a target: the figures are printed with the target
//! beside them, met or not.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use boo_reconciler::act::{self, Inspection, Outcome, RunOptions};
use boo_reconciler::config::Config;
use boo_reconciler::controller::{Controller, Mode, Trigger};
use boo_reconciler::git::preflight::Depth;
use boo_reconciler::model::Scope;
use boo_reconciler::plan::WorktreeTarget;
use boo_reconciler::report::PassReport;
use boo_reconciler::root::WorktreeRoot;
use boo_reconciler::store::Store;
use clap::Parser;
use tokio_util::sync::CancellationToken;
use tracing::subscriber::Interest;
use tracing::{Event, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;

const HOST: &str = "bench-host";

#[derive(Parser, Debug)]
#[command(about = "boo-reconciler benchmark: builds a fixture, prints a table")]
struct Args {
    /// Tracked files in the main repository (F)
    #[arg(long, default_value_t = 5000)]
    files: usize,
    /// Live linked worktrees under the root (W)
    #[arg(long, default_value_t = 200)]
    worktrees: usize,
    /// Chat counts of the idle-pass figure (C); the largest is also the
    /// one `run`'s peak RSS is read at
    #[arg(long, value_delimiter = ',', default_values_t = [1_000, 10_000, 100_000])]
    chats: Vec<usize>,
    /// Chats in the database while the other figures run
    #[arg(long, default_value_t = 10_000)]
    base_chats: usize,
    /// Fraction of sessions (and their chats) archived
    #[arg(long, default_value_t = 0.5)]
    archived: f64,
    /// Labelled sleeping agent processes of live chats (P)
    #[arg(long, default_value_t = 100)]
    processes: usize,
    /// Archived sessions per drifted pass (D)
    #[arg(long, value_delimiter = ',', default_values_t = [1, 10, 100])]
    drift: Vec<usize>,
    /// Nudges timed for the latency figure
    #[arg(long, default_value_t = 100)]
    nudges: usize,
    /// Idle connections held open while /healthz is timed
    #[arg(long, default_value_t = 2000)]
    idle_connections: usize,
    /// /healthz requests timed beside the idle connections
    #[arg(long, default_value_t = 200)]
    probes: usize,
    /// Worktrees kept at risk in the steady-state figure (K), each a full
    /// checkout of the F files with one untracked file
    #[arg(long, value_delimiter = ',', default_values_t = [0, 20, 200])]
    kept: Vec<usize>,
    /// Repetitions of each timed figure (median, min, max)
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Databases to run against
    #[arg(long, value_delimiter = ',', default_values_t = [DbKind::Sqlite, DbKind::Postgres])]
    db: Vec<DbKind>,
    /// The PostgreSQL server [default: DATABASE_URL, else the local one]
    #[arg(long)]
    postgres_url: Option<String>,
    /// Figures to run (idle also reads `run`'s peak RSS)
    #[arg(long, value_delimiter = ',', default_values_t = [Figure::Idle, Figure::Drift, Figure::Nudge, Figure::Healthz, Figure::Kept, Figure::Git])]
    figures: Vec<Figure>,
    /// Where the fixture goes [default: a temporary directory]
    #[arg(long)]
    dir: Option<PathBuf>,
    /// A tiny fixture that runs in seconds: checks that the benchmark
    /// works, measures nothing worth reading
    #[arg(long)]
    smoke: bool,
    /// Passed by `cargo bench`; ignored
    #[arg(long, hide = true)]
    bench: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum DbKind {
    Sqlite,
    Postgres,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Figure {
    Idle,
    Drift,
    Nudge,
    Healthz,
    Kept,
    Git,
}

impl std::fmt::Display for Figure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Figure::Idle => "idle",
            Figure::Drift => "drift",
            Figure::Nudge => "nudge",
            Figure::Healthz => "healthz",
            Figure::Kept => "kept",
            Figure::Git => "git",
        })
    }
}

impl std::fmt::Display for DbKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DbKind::Sqlite => "sqlite",
            DbKind::Postgres => "postgres",
        })
    }
}

impl Args {
    fn shrink_for_smoke(&mut self) {
        self.files = 50;
        self.worktrees = 4;
        self.chats = vec![100, 500];
        self.base_chats = 100;
        self.processes = 3;
        self.drift = vec![1, 2];
        self.nudges = 5;
        self.idle_connections = 200;
        self.probes = 5;
        self.kept = vec![0, 2];
        self.runs = 2;
    }
}

// ------------------------------------------------------- statement count --

/// Counts the statements sqlx logs (target `sqlx::query`, one event per
/// statement executed) while `COUNTING` is on; everything else is off, so
/// that logging costs nothing in the timed passes.
static COUNTING: AtomicBool = AtomicBool::new(false);
static STATEMENTS: AtomicU64 = AtomicU64::new(0);

struct CountStatements;

impl<S: Subscriber> Layer<S> for CountStatements {
    fn register_callsite(&self, m: &'static Metadata<'static>) -> Interest {
        if m.target() == "sqlx::query" {
            Interest::sometimes()
        } else {
            Interest::never()
        }
    }
    fn enabled(&self, m: &Metadata<'_>, _: Context<'_, S>) -> bool {
        m.target() == "sqlx::query" && COUNTING.load(Ordering::Relaxed)
    }
    fn on_event(&self, e: &Event<'_>, _: Context<'_, S>) {
        if e.metadata().target() == "sqlx::query" {
            STATEMENTS.fetch_add(1, Ordering::Relaxed);
            let mut v = StatementVisitor::default();
            e.record(&mut v);
            STATEMENT_LOG
                .lock()
                .expect("statement log")
                .push((v.summary, v.elapsed_ms));
        }
    }
}

/// Each counted statement's summary (its first words) and time, for the
/// table's notes: where the database time of a pass goes.
static STATEMENT_LOG: std::sync::Mutex<Vec<(String, f64)>> = std::sync::Mutex::new(Vec::new());

#[derive(Default)]
struct StatementVisitor {
    summary: String,
    elapsed_ms: f64,
}

impl tracing::field::Visit for StatementVisitor {
    fn record_f64(&mut self, field: &tracing::field::Field, value: f64) {
        if field.name() == "elapsed_secs" {
            self.elapsed_ms = value * 1e3;
        }
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "summary" {
            self.summary = value.to_string();
        }
    }
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "summary" && self.summary.is_empty() {
            self.summary = format!("{value:?}");
        }
    }
}

// ------------------------------------------------------------- figures --

/// Median, min and max of a sample.
#[derive(Clone, Copy)]
struct Spread {
    median: f64,
    min: f64,
    max: f64,
}

fn spread(samples: &[f64]) -> Spread {
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    let median = if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    };
    Spread {
        median,
        min: s[0],
        max: s[n - 1],
    }
}

/// The `q` quantile (nearest rank) of a sample.
fn quantile(samples: &[f64], q: f64) -> f64 {
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len());
    s[rank - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// One line of the table.
struct Row {
    figure: String,
    db: String,
    value: String,
    spread: String,
    target: String,
}

#[derive(Default)]
struct Table(Vec<Row>);

impl Table {
    fn add(&mut self, figure: impl Into<String>, db: &str, value: String, spread: String) {
        self.add_with_target(figure, db, value, spread, String::new());
    }
    fn add_with_target(
        &mut self,
        figure: impl Into<String>,
        db: &str,
        value: String,
        spread: String,
        target: String,
    ) {
        let row = Row {
            figure: figure.into(),
            db: db.into(),
            value,
            spread,
            target,
        };
        eprintln!(
            "  {} [{}]: {} {} {}",
            row.figure, row.db, row.value, row.spread, row.target
        );
        self.0.push(row);
    }
    fn timed(
        &mut self,
        figure: impl Into<String>,
        db: &str,
        s: Spread,
        target: Option<(f64, &str)>,
    ) {
        let target = match target {
            Some((limit, what)) => format!(
                "{what} {} ({})",
                if s.median <= limit { "met" } else { "MISSED" },
                fmt_ms(s.median)
            ),
            None => String::new(),
        };
        self.add_with_target(
            figure,
            db,
            fmt_ms(s.median),
            format!("{} – {}", fmt_ms(s.min), fmt_ms(s.max)),
            target,
        );
    }
    fn markdown(&self) -> String {
        let mut out = String::from(
            "| figure | db | median | min – max | target |\n| --- | --- | --- | --- | --- |\n",
        );
        for r in &self.0 {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} |",
                r.figure, r.db, r.value, r.spread, r.target
            );
        }
        out
    }
}

fn fmt_ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0} ms")
    } else if v >= 10.0 {
        format!("{v:.1} ms")
    } else {
        format!("{v:.2} ms")
    }
}

// ------------------------------------------------------------- fixture --

/// `git` with a configuration of its own, not the machine's.
fn git(dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = git_command(dir)
        .args(args)
        .output()
        .with_context(|| format!("running git {args:?}"))?;
    if !out.status.success() {
        bail!(
            "git {args:?} in {} failed: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn git_command(dir: &Path) -> Command {
    let mut c = Command::new("git");
    c.current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "bench")
        .env("GIT_AUTHOR_EMAIL", "bench@localhost")
        .env("GIT_COMMITTER_NAME", "bench")
        .env("GIT_COMMITTER_EMAIL", "bench@localhost");
    c
}

/// The host side of the fixture: a repository, its worktrees, agents.
struct Host {
    repo: PathBuf,
    root: PathBuf,
    labels: [String; 3],
    /// Live worktrees: (session index, path).
    live: Vec<(usize, PathBuf)>,
    /// The live agents: (chat index, pid, start time).
    agents: Vec<(usize, i32, u64)>,
    children: Vec<Child>,
}

impl Drop for Host {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn make_repo(repo: &Path, files: usize) -> anyhow::Result<()> {
    std::fs::create_dir_all(repo)?;
    git(repo, &["init", "-q", "-b", "main"])?;
    for i in 0..files {
        let dir = repo.join(format!("src/d{:03}", i / 100));
        if i % 100 == 0 {
            std::fs::create_dir_all(&dir)?;
        }
        std::fs::write(
            dir.join(format!("f{i:05}.txt")),
            format!("file {i}\nsome content of a source file\n"),
        )?;
    }
    std::fs::write(repo.join(".gitignore"), "target/\n")?;
    git(repo, &["add", "-A"])?;
    git(repo, &["commit", "-q", "-m", "fixture"])?;
    Ok(())
}

fn add_worktree(repo: &Path, root: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let path = root.join(name);
    git(
        repo,
        &[
            "worktree",
            "add",
            "-q",
            "-b",
            &format!("boo/{name}"),
            path.to_str().context("path")?,
            "main",
        ],
    )?;
    Ok(path)
}

/// The start time of `pid` (field 22 of its stat), its identity.
fn start_time(pid: i32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = &stat[stat.rfind(')').context("stat")? + 2..];
    Ok(after.split(' ').nth(19).context("stat field 22")?.parse()?)
}

/// `sh -c script` as a launcher starts an agent: a process group of its
/// own, the labels in its environment.
fn spawn_agent(
    labels: &[String; 3],
    chat: &str,
    session: &str,
    script: &str,
    cwd: &Path,
) -> anyhow::Result<Child> {
    let child = Command::new("sh")
        .args(["-c", script])
        .current_dir(cwd)
        .process_group(0)
        .env(&labels[0], chat)
        .env(&labels[1], session)
        .env(&labels[2], "bench-agent")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    // The labels are read from /proc: wait until the exec is done.
    let pid = child.id() as i32;
    for _ in 0..500 {
        if let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) {
            if env
                .windows(labels[0].len())
                .any(|w| w == labels[0].as_bytes())
            {
                return Ok(child);
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    bail!("agent {pid} did not start")
}

impl Host {
    fn build(dir: &Path, args: &Args) -> anyhow::Result<Host> {
        let repo = dir.join("repo");
        let root = dir.join("booworktrees");
        std::fs::create_dir_all(&root)?;
        let t = Instant::now();
        make_repo(&repo, args.files)?;
        eprintln!(
            "fixture: repository with {} files in {:.1}s",
            args.files,
            t.elapsed().as_secs_f64()
        );
        let t = Instant::now();
        let mut live = Vec::new();
        for i in 0..args.worktrees {
            live.push((i, add_worktree(&repo, &root, &format!("live-{i}"))?));
        }
        eprintln!(
            "fixture: {} worktrees in {:.1}s",
            args.worktrees,
            t.elapsed().as_secs_f64()
        );
        let n = fastrand::u64(..);
        let labels = [
            format!("BOO_BENCH_CHAT_{n}"),
            format!("BOO_BENCH_SESSION_{n}"),
            format!("BOO_BENCH_AGENT_{n}"),
        ];
        let mut host = Host {
            repo,
            root,
            labels,
            live,
            agents: Vec::new(),
            children: Vec::new(),
        };
        for j in 0..args.processes {
            // Chats of the first sessions, which are open.
            let chat = j;
            let child = spawn_agent(
                &host.labels,
                &format!("c{chat}"),
                &format!("s{}", chat / 5),
                "exec sleep 1000000",
                dir,
            )?;
            let pid = child.id() as i32;
            host.agents.push((chat, pid, start_time(pid)?));
            host.children.push(child);
        }
        Ok(host)
    }

    fn config(&self, url: &str) -> anyhow::Result<Config> {
        let mut c = Config::defaults()?;
        c.database.url = url.to_string();
        c.host.id = HOST.into();
        c.worktrees.root = self.root.clone();
        c.r#loop.jitter = Duration::ZERO;
        c.processes.chat_label = self.labels[0].clone();
        c.processes.session_label = self.labels[1].clone();
        c.processes.agent_label = self.labels[2].clone();
        // No opencode server in the fixture.
        c.opencode.url = None;
        Ok(c)
    }

    /// A controller of the fixture's host; the fixture is the only
    /// controller of its database, so it acts as the lock's holder.
    fn controller(&self, url: &str, store: &Store) -> anyhow::Result<Controller> {
        let c = Controller::new(
            self.config(url)?,
            store.clone(),
            WorktreeRoot::prepare(&self.root)?,
        );
        c.executor()
            .fence()
            .install(boo_reconciler::store::lock::HostLock::Assumed);
        Ok(c)
    }
}

/// A database of either kind, isolated for this run.
struct Db {
    kind: DbKind,
    url: String,
    store: Store,
    schema: Option<(String, Store)>,
}

impl Db {
    async fn open(kind: DbKind, dir: &Path, pg: &str) -> anyhow::Result<Db> {
        let (url, schema) = match kind {
            DbKind::Sqlite => (format!("sqlite://{}", dir.join("bench.db").display()), None),
            DbKind::Postgres => {
                let admin = Store::connect(pg)
                    .await
                    .with_context(|| format!("PostgreSQL at {pg} is required"))?;
                let schema = format!("bench_{}", fastrand::u64(..));
                admin
                    .execute_raw(&format!("CREATE SCHEMA {schema}"))
                    .await?;
                let sep = if pg.contains('?') { '&' } else { '?' };
                (
                    format!("{pg}{sep}options=-c%20search_path%3D{schema}"),
                    Some((schema, admin)),
                )
            }
        };
        let store = Store::connect(&url).await?;
        store.migrate().await?;
        Ok(Db {
            kind,
            url,
            store,
            schema,
        })
    }

    async fn drop_schema(&mut self) {
        if let Some((schema, admin)) = self.schema.take() {
            let _ = admin
                .execute_raw(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                .await;
        }
    }

    /// Inserts `rows` (each already a parenthesised value list) 500 at a
    /// time.
    async fn insert(&self, head: &str, rows: impl Iterator<Item = String>) -> anyhow::Result<()> {
        let rows: Vec<String> = rows.collect();
        for chunk in rows.chunks(500) {
            self.store
                .execute_raw(&format!("{head} VALUES {}", chunk.join(",")))
                .await?;
        }
        Ok(())
    }

    /// Replaces the tables' contents with `chats` chats over `chats / 5`
    /// sessions, the first `1 - archived` of them open; the live worktrees
    /// and agents of `host` belong to open sessions and chats. Archived
    /// sessions leave history behind: a removed worktree row each, a
    /// closed agent row per chat.
    async fn fill(&self, host: &Host, chats: usize, archived: f64) -> anyhow::Result<()> {
        let t = Instant::now();
        for table in [
            "chats",
            "sessions",
            "agent_sessions",
            "worktrees",
            "reconciler_audit",
        ] {
            self.store
                .execute_raw(&format!("DELETE FROM {table}"))
                .await?;
        }
        let sessions = chats.div_ceil(5);
        // The live worktrees and agents need open sessions: a small C
        // archives fewer.
        let needed = host.live.len().max(host.agents.len().div_ceil(5));
        if sessions < needed {
            bail!(
                "{chats} chats make {sessions} sessions: too few for {} live worktrees and {} agents",
                host.live.len(),
                host.agents.len()
            );
        }
        let open = (((sessions as f64) * (1.0 - archived)).ceil() as usize).max(needed);
        let status = |s: usize| if s < open { "open" } else { "archived" };
        self.insert(
            "INSERT INTO sessions (id, status)",
            (0..sessions).map(|s| format!("('s{s}','{}')", status(s))),
        )
        .await?;
        self.insert(
            "INSERT INTO chats (id, session_id, status)",
            (0..chats).map(|c| format!("('c{c}','s{}','{}')", c / 5, status(c / 5))),
        )
        .await?;
        let repo = host.repo.display();
        self.insert(
            "INSERT INTO worktrees (id, session_id, repo_path, path, branch, base_ref, host, state)",
            host.live
                .iter()
                .map(|(s, path)| {
                    let name = path.file_name().unwrap().to_string_lossy();
                    format!(
                        "('{name}','s{s}','{repo}','{}','boo/{name}','main','{HOST}','active')",
                        path.display()
                    )
                })
                .chain((open..sessions).map(|s| {
                    format!(
                        "('old-{s}','s{s}','{repo}','{}/old-{s}','boo/old-{s}','main','{HOST}','removed')",
                        host.root.display()
                    )
                })),
        )
        .await?;
        let live: BTreeMap<usize, (i32, u64)> = host
            .agents
            .iter()
            .map(|(c, pid, st)| (*c, (*pid, *st)))
            .collect();
        self.insert(
            "INSERT INTO agent_sessions (id, chat_id, session_id, agent, backend, host, pid, pid_start_time, status)",
            (0..chats).map(|c| match live.get(&c) {
                Some((pid, st)) => format!(
                    "('a{c}','c{c}','s{}','goose','acp','{HOST}',{pid},{st},'open')",
                    c / 5
                ),
                None => format!(
                    "('a{c}','c{c}','s{}','goose','acp','{HOST}',NULL,NULL,'closed')",
                    c / 5
                ),
            }),
        )
        .await?;
        if self.kind == DbKind::Postgres {
            self.store.execute_raw("ANALYZE").await?;
        }
        nix::unistd::sync();
        eprintln!(
            "fixture [{}]: {chats} chats, {sessions} sessions ({open} open) in {:.1}s",
            self.kind,
            t.elapsed().as_secs_f64()
        );
        Ok(())
    }
}

// ------------------------------------------------------------- passes --

async fn pass(c: &Controller, scope: Scope) -> PassReport {
    c.pass(
        scope,
        Mode::Act(RunOptions::default()),
        Trigger::Command,
        &CancellationToken::new(),
    )
    .await
}

/// The pass must have found nothing to do: a busy "idle" pass would
/// measure the wrong thing.
fn check_idle(r: &PassReport) -> anyhow::Result<()> {
    if !r.results.is_empty() || !r.errors.is_empty() || !r.pending.is_empty() {
        bail!(
            "the idle fixture is not idle: {} result(s) {:?}, errors {:?}, {} pending",
            r.results.len(),
            r.results.iter().map(|x| &x.target).collect::<Vec<_>>(),
            r.errors,
            r.pending.len()
        );
    }
    Ok(())
}

fn done(r: &PassReport, kind: &str) -> usize {
    r.results
        .iter()
        .filter(|x| x.action.name() == kind && matches!(x.outcome, Outcome::Done { .. }))
        .count()
}

/// Figure 1: idle passes at each C. Answers (median ms, statements) per C.
async fn idle(
    args: &Args,
    host: &Host,
    db: &Db,
    table: &mut Table,
) -> anyhow::Result<BTreeMap<usize, (f64, u64)>> {
    let mut out = BTreeMap::new();
    let mut sizes = args.chats.clone();
    sizes.sort_unstable();
    for &c in &sizes {
        db.fill(host, c, args.archived).await?;
        let controller = host.controller(&db.url, &db.store)?;
        check_idle(&pass(&controller, Scope::Host).await)?;
        let mut samples = Vec::new();
        for _ in 0..args.runs.max(10) {
            let t = Instant::now();
            let r = pass(&controller, Scope::Host).await;
            samples.push(ms(t.elapsed()));
            check_idle(&r)?;
        }
        breakdown(host, db, &controller, args.runs.max(10)).await?;
        STATEMENTS.store(0, Ordering::SeqCst);
        STATEMENT_LOG.lock().expect("statement log").clear();
        COUNTING.store(true, Ordering::SeqCst);
        check_idle(&pass(&controller, Scope::Host).await)?;
        COUNTING.store(false, Ordering::SeqCst);
        let statements = STATEMENTS.load(Ordering::SeqCst);
        for (summary, took) in STATEMENT_LOG.lock().expect("statement log").iter() {
            eprintln!("    statement {took:7.3} ms  {summary}");
        }
        let s = spread(&samples);
        let target = (c == 10_000).then_some((10.0, "≤ 10 ms"));
        table.timed(
            format!(
                "1. idle pass, C={c}, W={}, P={}",
                host.live.len(),
                host.agents.len()
            ),
            &db.kind.to_string(),
            s,
            target,
        );
        table.add(
            format!("1. SQL statements per idle pass, C={c}"),
            &db.kind.to_string(),
            statements.to_string(),
            String::new(),
        );
        out.insert(c, (s.median, statements));
        if Some(&c) == sizes.last() {
            rss(host, db, c, table).await?;
        }
    }
    if let (Some((c0, (t0, n0))), Some((c1, (t1, n1)))) =
        (out.first_key_value(), out.last_key_value())
    {
        let ratio = t1 / t0;
        table.add_with_target(
            format!("1. idle pass ratio C={c1} / C={c0}"),
            &db.kind.to_string(),
            format!("{ratio:.2}"),
            format!("statements {n0} → {n1}"),
            format!(
                "≤ 3 {}; statements {}",
                if ratio <= 3.0 { "met" } else { "MISSED" },
                if n0 == n1 {
                    "constant: met"
                } else {
                    "vary: MISSED"
                }
            ),
        );
    }
    Ok(out)
}

/// Where an idle pass's time goes: each observation on its own, as the
/// pass runs it (medians, logged).
async fn breakdown(host: &Host, db: &Db, c: &Controller, runs: usize) -> anyhow::Result<()> {
    use boo_reconciler::observe::{processes, worktrees};
    let labels = processes::LabelNames::from(&c.config().processes);
    let mut t_scan = Vec::new();
    let mut t_db = Vec::new();
    let mut t_pids = Vec::new();
    let mut t_wt = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let scan = processes::scan(&labels);
        t_scan.push(ms(t.elapsed()));
        let mut interest = boo_reconciler::store::Interest::default();
        interest
            .chats
            .extend(scan.processes.iter().map(|p| p.chat_id.clone()));
        let t = Instant::now();
        let desired = db.store.desired_state(HOST, &interest).await?;
        t_db.push(ms(t.elapsed()));
        let t = Instant::now();
        for r in &desired.agent_sessions {
            if let Some(pid) = r.pid {
                std::hint::black_box(processes::identity(pid, &labels));
            }
        }
        t_pids.push(ms(t.elapsed()));
        let t = Instant::now();
        std::hint::black_box(worktrees::observe(
            c.root(),
            &desired.worktrees,
            &desired.repositories,
        ));
        t_wt.push(ms(t.elapsed()));
    }
    eprintln!(
        "    breakdown [{}]: process scan {}, desired state (SQL) {}, recorded pids {}, worktrees {} ({} processes on the host, {} root entries)",
        db.kind,
        fmt_ms(spread(&t_scan).median),
        fmt_ms(spread(&t_db).median),
        fmt_ms(spread(&t_pids).median),
        fmt_ms(spread(&t_wt).median),
        std::fs::read_dir("/proc")?
            .filter(|e| e.as_ref().is_ok_and(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok()))
            .count(),
        std::fs::read_dir(&host.root)?.count(),
    );
    Ok(())
}

/// Figure 5: peak RSS of `boo-reconciler run` through its first pass (an
/// idle pass over the fixture as it is now).
async fn rss(host: &Host, db: &Db, chats: usize, table: &mut Table) -> anyhow::Result<()> {
    use std::io::{BufRead, BufReader};
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_boo-reconciler"));
    for (k, _) in std::env::vars() {
        if k.starts_with("BOO_RECONCILER_") {
            cmd.env_remove(k);
        }
    }
    cmd.args(["--database-url", &db.url, "--host-id", HOST])
        .arg("--worktree-root")
        .arg(&host.root);
    for (k, v) in [
        ("processes.chat_label", host.labels[0].as_str()),
        ("processes.session_label", &host.labels[1]),
        ("processes.agent_label", &host.labels[2]),
        ("opencode.url", ""),
        ("loop.interval", "1h"),
        ("http.listen", &format!("127.0.0.1:{port}")),
        ("database.notify_channel", "boo_bench_nobody"),
    ] {
        cmd.arg("--set").arg(format!("{k}={v}"));
    }
    let mut child = cmd
        .args(["--log-format", "json", "run"])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()?;
    let stderr = child.stderr.take().context("stderr")?;
    let pid = child.id() as i32;
    let finished = tokio::task::spawn_blocking(move || {
        let mut lines = BufReader::new(stderr).lines();
        for line in lines.by_ref().map_while(Result::ok) {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            if v["fields"]["message"] == "pass finished" {
                // Keep draining so that the daemon never blocks on a full
                // pipe.
                std::thread::spawn(move || lines.for_each(drop));
                return Ok(v);
            }
        }
        bail!("run exited before its first pass finished")
    });
    let summary = tokio::time::timeout(Duration::from_secs(300), finished).await??;
    let summary = summary?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let hwm_kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .context("VmHWM")?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()?;
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = child.wait();
    let mb = hwm_kb / 1024.0;
    table.add_with_target(
        format!("5. peak RSS of `run` through its first pass, C={chats}"),
        &db.kind.to_string(),
        format!("{mb:.1} MB"),
        format!(
            "pass: {} ms, {} action(s)",
            summary["fields"]["duration_ms"], summary["fields"]["actions"]
        ),
        format!("≤ 40 MB {}", if mb <= 40.0 { "met" } else { "MISSED" }),
    );
    Ok(())
}

/// Sessions `tag-s<k>` for `k` in `ks`, each with one clean worktree
/// `tag-w<k>`, one chat `tag-c<k>` whose agent runs `script` in the
/// worktree, and their rows (session and chat with `status`, the worktree
/// active, the agent row open with the agent's pid). The agents are killed
/// and reaped on drop.
struct Sessions {
    children: Vec<Child>,
}

impl Sessions {
    async fn make(
        host: &Host,
        db: &Db,
        tag: &str,
        ks: std::ops::Range<usize>,
        status: &str,
        script: &str,
    ) -> anyhow::Result<Sessions> {
        let mut children = Vec::new();
        let (mut sessions, mut chats, mut worktrees, mut agents) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let repo = host.repo.display();
        for k in ks {
            let (s, c, w) = (
                format!("{tag}-s{k}"),
                format!("{tag}-c{k}"),
                format!("{tag}-w{k}"),
            );
            let path = add_worktree(&host.repo, &host.root, &w)?;
            let child = spawn_agent(&host.labels, &c, &s, script, &path)?;
            let pid = child.id() as i32;
            agents.push(format!(
                "('{tag}-a{k}','{c}','{s}','goose','acp','{HOST}',{pid},{},'open')",
                start_time(pid)?
            ));
            children.push(child);
            sessions.push(format!("('{s}','{status}')"));
            chats.push(format!("('{c}','{s}','{status}')"));
            worktrees.push(format!(
                "('{w}','{s}','{repo}','{}','boo/{w}','main','{HOST}','active')",
                path.display()
            ));
        }
        db.insert("INSERT INTO sessions (id, status)", sessions.into_iter())
            .await?;
        db.insert(
            "INSERT INTO chats (id, session_id, status)",
            chats.into_iter(),
        )
        .await?;
        db.insert(
            "INSERT INTO worktrees (id, session_id, repo_path, path, branch, base_ref, host, state)",
            worktrees.into_iter(),
        )
        .await?;
        db.insert(
            "INSERT INTO agent_sessions (id, chat_id, session_id, agent, backend, host, pid, pid_start_time, status)",
            agents.into_iter(),
        )
        .await?;
        Ok(Sessions { children })
    }
}

impl Drop for Sessions {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Figure 2: a host pass over the base fixture plus D drifted sessions.
async fn drifted(args: &Args, host: &Host, db: &Db, table: &mut Table) -> anyhow::Result<()> {
    let controller = host.controller(&db.url, &db.store)?;
    for &d in &args.drift {
        let mut per_session = Vec::new();
        let mut totals = Vec::new();
        for run in 0..args.runs {
            let tag = format!("{}-drift{d}r{run}", db.kind);
            // Two processes per agent that exit on TERM: a shell and its
            // child.
            let drift =
                Sessions::make(host, db, &tag, 0..d, "archived", "sleep 1000000 & wait").await?;
            nix::unistd::sync();
            let t = Instant::now();
            let r = pass(&controller, Scope::Host).await;
            let took = ms(t.elapsed());
            drop(drift);
            let (removed, stopped) = (done(&r, "remove_worktree"), done(&r, "terminate_process"));
            if removed != d || stopped != d || !r.errors.is_empty() {
                bail!(
                    "the drifted pass did not converge: {removed}/{d} worktrees removed, {stopped}/{d} agents stopped, errors {:?}, results {:#?}",
                    r.errors,
                    r.results.iter().map(|x| (&x.target, x.outcome.name())).collect::<Vec<_>>()
                );
            }
            totals.push(took);
            per_session.push(took / d as f64);
        }
        let s = spread(&per_session);
        let total = spread(&totals);
        table.add(
            format!("2. drifted pass, D={d}: time per drifted session"),
            &db.kind.to_string(),
            fmt_ms(s.median),
            format!(
                "{} – {}; whole pass {}",
                fmt_ms(s.min),
                fmt_ms(s.max),
                fmt_ms(total.median)
            ),
        );
    }
    Ok(())
}

/// Figure 7: steady-state host passes (nothing changed since the last)
/// with K worktrees of archived sessions kept at risk, each a checkout of
/// the F files holding one untracked file. K = 0 is the idle pass of the
/// same fixture. The worktrees and their rows are removed afterwards.
async fn kept(args: &Args, host: &Host, db: &Db, table: &mut Table) -> anyhow::Result<()> {
    let most = args.kept.iter().copied().max().unwrap_or(0);
    let archived: Vec<String> = db
        .store
        .query_strings(&format!(
            "SELECT id FROM sessions WHERE status = 'archived' ORDER BY id LIMIT {most}"
        ))
        .await?
        .into_iter()
        .filter_map(|r| r[0].clone())
        .collect();
    if archived.len() < most {
        bail!("{} archived sessions: too few for K={most}", archived.len());
    }
    let repo = host.repo.display().to_string();
    let mut made: Vec<PathBuf> = Vec::new();
    let mut sizes = args.kept.clone();
    sizes.sort_unstable();
    let mut base = None;
    let result = async {
        for &k in &sizes {
            let t = Instant::now();
            while made.len() < k {
                let i = made.len();
                let name = format!("kept-{i}");
                let path = add_worktree(&host.repo, &host.root, &name)?;
                std::fs::write(path.join("notes.txt"), "work in progress\n")?;
                db.store
                    .execute_raw(&format!(
                        "INSERT INTO worktrees (id, session_id, repo_path, path, branch, base_ref, host, state) \
                         VALUES ('{name}','{}','{repo}','{}','boo/{name}','main','{HOST}','active')",
                        archived[i],
                        path.display()
                    ))
                    .await?;
                made.push(path);
            }
            nix::unistd::sync();
            let controller = host.controller(&db.url, &db.store)?;
            let first = pass(&controller, Scope::Host).await;
            eprintln!(
                "kept [{}] K={k}: {:.1}s to build, first pass (full preflights) {:.0} ms",
                db.kind,
                t.elapsed().as_secs_f64(),
                first.duration_ms
            );
            let steady = |r: &PassReport| -> anyhow::Result<usize> {
                let reused = r.at_risk.iter().filter(|w| w.verdict_reused).count();
                if r.at_risk.len() != k || !r.errors.is_empty() || !r.pending.is_empty() {
                    bail!(
                        "K={k}: {} kept, errors {:?}, {} pending",
                        r.at_risk.len(),
                        r.errors,
                        r.pending.len()
                    );
                }
                Ok(reused)
            };
            steady(&first)?;
            let mut samples = Vec::new();
            let mut reused = usize::MAX;
            for _ in 0..args.runs.max(10) {
                let t = Instant::now();
                let r = pass(&controller, Scope::Host).await;
                samples.push(ms(t.elapsed()));
                reused = reused.min(steady(&r)?);
            }
            eprintln!(
                "kept [{}] K={k}: at least {reused} of {k} verdicts reused in each timed pass",
                db.kind
            );
            let s = spread(&samples);
            let b = *base.get_or_insert(s.median);
            let target = (k == most && k > 0).then_some((2.0 * b, "≤ 2× K=0"));
            table.timed(
                format!("7. steady-state pass, K={k} kept at risk (F={})", args.files),
                &db.kind.to_string(),
                s,
                target,
            );
            if k > 0 {
                table.add(
                    format!("7. steady-state pass K={k} / K=0"),
                    &db.kind.to_string(),
                    format!("{:.2}", s.median / b),
                    String::new(),
                );
            }
        }
        anyhow::Ok(())
    }
    .await;
    for path in &made {
        let name = path
            .file_name()
            .context("name")?
            .to_string_lossy()
            .into_owned();
        git(
            &host.repo,
            &[
                "worktree",
                "remove",
                "--force",
                path.to_str().context("path")?,
            ],
        )?;
        git(&host.repo, &["branch", "-D", &format!("boo/{name}")])?;
    }
    db.store
        .execute_raw("DELETE FROM worktrees WHERE id LIKE 'kept-%'")
        .await?;
    result
}

/// Figure 3: `POST /reconcile/:chatId` to answer, through the real server
/// on loopback, for a chat with one agent process and one clean worktree.
async fn nudges(args: &Args, host: &Host, db: &Db, table: &mut Table) -> anyhow::Result<()> {
    use boo_reconciler::service::Service;
    let controller = host.controller(&db.url, &db.store)?;
    let service = Service::new(controller, CancellationToken::new());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(boo_reconciler::http::serve(
        listener,
        boo_reconciler::http::router(Arc::clone(&service), None),
        shutdown.clone(),
    ));
    // The reclaimer frees the retired worktrees meanwhile, as in `run`:
    // the nudges pay for sharing the disk with it.
    let reclaimer = service.start_reclaimer(shutdown.clone());
    let client = reqwest::Client::new();
    let tag = format!("{}-nudge", db.kind);
    let mut samples = Vec::new();
    let mut per_action: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    // Prepared in batches, so that the fixture stays close to its size.
    let batch = 10;
    let mut i = 0;
    while i < args.nudges {
        let n = batch.min(args.nudges - i);
        let agents = Sessions::make(host, db, &tag, i..i + n, "open", "exec sleep 1000000").await?;
        // The fixture's own writes are flushed first: the nudges must not
        // pay for the write-back of the worktrees just checked out.
        nix::unistd::sync();
        for k in i..i + n {
            // Archived as the orchestrator archives: the chat, and its
            // session with it.
            db.store
                .execute_raw(&format!(
                    "UPDATE chats SET status = 'archived' WHERE id = '{tag}-c{k}'"
                ))
                .await?;
            db.store
                .execute_raw(&format!(
                    "UPDATE sessions SET status = 'archived' WHERE id = '{tag}-s{k}'"
                ))
                .await?;
            let t = Instant::now();
            let resp = client
                .post(format!("{base}/reconcile/{tag}-c{k}"))
                .send()
                .await?;
            let status = resp.status();
            let answer: serde_json::Value = resp.json().await?;
            samples.push(ms(t.elapsed()));
            for a in answer["actions"].as_array().into_iter().flatten() {
                if let (Some(kind), Some(d)) = (a["kind"].as_str(), a["duration_ms"].as_f64()) {
                    per_action.entry(kind.to_string()).or_default().push(d);
                }
            }
            if let Some(d) = answer["duration_ms"].as_f64() {
                per_action.entry("(whole run)".into()).or_default().push(d);
            }
            let kinds: Vec<(&str, &str)> = answer["actions"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|a| {
                    (
                        a["kind"].as_str().unwrap_or(""),
                        a["outcome"].as_str().unwrap_or(""),
                    )
                })
                .collect();
            if !status.is_success()
                || !kinds.contains(&("terminate_process", "done"))
                || !kinds.contains(&("remove_worktree", "done"))
            {
                bail!("nudge {k} did not tear the chat down: {status} {answer:#}");
            }
        }
        drop(agents);
        i += n;
    }
    shutdown.cancel();
    let _ = server.await;
    let _ = reclaimer.await;
    // Beside it, in the same run: what the git CLI takes for the same
    // worktree (the check and the removal an orchestrator would run).
    let mut git_cli = Vec::new();
    for run in 0..args.runs {
        let wt = add_worktree(&host.repo, &host.root, &format!("{tag}-git-{run}"))?;
        nix::unistd::sync();
        let t = Instant::now();
        git(&wt, &["status", "--porcelain"])?;
        git(
            &host.repo,
            &["worktree", "remove", wt.to_str().context("path")?],
        )?;
        git_cli.push(ms(t.elapsed()));
    }
    let parts: Vec<String> = per_action
        .iter()
        .map(|(k, v)| format!("{k} {}", fmt_ms(spread(v).median)))
        .collect();
    eprintln!(
        "    nudge breakdown [{}] (medians): {}",
        db.kind,
        parts.join(", ")
    );
    let p50 = quantile(&samples, 0.50);
    let p99 = quantile(&samples, 0.99);
    let s = spread(&samples);
    table.add_with_target(
        format!("3. nudge latency p50 / p99 over {}", samples.len()),
        &db.kind.to_string(),
        format!("{} / {}", fmt_ms(p50), fmt_ms(p99)),
        format!("{} – {}", fmt_ms(s.min), fmt_ms(s.max)),
        format!("p99 ≤ 50 ms {}", if p99 <= 50.0 { "met" } else { "MISSED" }),
    );
    let g = spread(&git_cli);
    table.timed(
        format!(
            "3. git status --porcelain + git worktree remove (F={})",
            args.files
        ),
        &db.kind.to_string(),
        g,
        None,
    );
    let ratio = p50 / g.median;
    table.add_with_target(
        "3. nudge p50 / git CLI",
        &db.kind.to_string(),
        format!("{ratio:.3}"),
        String::new(),
        format!("≤ 0.1 {}", if ratio <= 0.1 { "met" } else { "MISSED" }),
    );
    Ok(())
}

/// `/healthz` latency while `idle_connections` connections are open and
/// silent (half of them with a request cut off after its first header
/// line), as a flood of half-open connections leaves them.
async fn healthz(args: &Args, host: &Host, db: &Db, table: &mut Table) -> anyhow::Result<()> {
    use boo_reconciler::service::Service;
    use tokio::io::AsyncWriteExt;
    let controller = host.controller(&db.url, &db.store)?;
    let service = Service::new(controller, CancellationToken::new());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(boo_reconciler::http::serve(
        listener,
        boo_reconciler::http::router(Arc::clone(&service), None),
        shutdown.clone(),
    ));
    let mut idle = Vec::with_capacity(args.idle_connections);
    for i in 0..args.idle_connections {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        if i % 2 == 0 {
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await?;
        }
        idle.push(s);
    }
    let client = reqwest::Client::new();
    let mut samples = Vec::with_capacity(args.probes);
    for _ in 0..args.probes {
        let t = Instant::now();
        let resp = client.get(format!("http://{addr}/healthz")).send().await?;
        let status = resp.status();
        resp.bytes().await?;
        samples.push(ms(t.elapsed()));
        if !status.is_success() {
            bail!("/healthz answered {status}");
        }
    }
    drop(idle);
    shutdown.cancel();
    let _ = server.await;
    let p50 = quantile(&samples, 0.50);
    let p99 = quantile(&samples, 0.99);
    let s = spread(&samples);
    table.add_with_target(
        format!(
            "6. /healthz p50 / p99 over {}, {} idle connections open",
            samples.len(),
            args.idle_connections
        ),
        &db.kind.to_string(),
        format!("{} / {}", fmt_ms(p50), fmt_ms(p99)),
        format!("{} – {}", fmt_ms(s.min), fmt_ms(s.max)),
        format!(
            "p99 ≤ 100 ms {}",
            if p99 <= 100.0 { "met" } else { "MISSED" }
        ),
    );
    Ok(())
}

// ------------------------------------------------- preflight and removal --

fn target_of(path: &Path) -> WorktreeTarget {
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    WorktreeTarget {
        row_id: Some(name.clone()),
        branch: Some(format!("boo/{name}")),
        base_ref: Some("main".into()),
        repo_path: None,
        name,
        path: path.to_path_buf(),
    }
}

/// The controller's at-risk check of every live worktree, run as the
/// executor runs it: on the blocking pool, `loop.max_parallel_actions` at
/// a time.
async fn controller_preflight(host: &Host, config: &Config) -> anyhow::Result<f64> {
    let root = WorktreeRoot::prepare(&host.root)?;
    let precious = config.precious_globs();
    let limit = Arc::new(tokio::sync::Semaphore::new(
        config.r#loop.max_parallel_actions,
    ));
    // One list of the repository's refs for the pass, as the executor
    // keeps one.
    let refs = Arc::new(boo_reconciler::git::refs::RefsCache::default());
    let t = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for (_, path) in &host.live {
        let (root, precious, limit) = (root.clone(), precious.clone(), Arc::clone(&limit));
        let refs = Arc::clone(&refs);
        let wt = target_of(path);
        set.spawn(async move {
            let _permit = limit.acquire_owned().await.expect("open");
            tokio::task::spawn_blocking(move || {
                (
                    wt.path.clone(),
                    act::inspect(&root, &wt, &precious, Depth::All, &refs),
                )
            })
            .await
            .expect("preflight task")
        });
    }
    let mut verdicts = Vec::new();
    while let Some(v) = set.join_next().await {
        verdicts.push(v?);
    }
    let took = ms(t.elapsed());
    for (path, v) in verdicts {
        if !matches!(&v, Inspection::Reasons(r, _) if r.is_empty()) {
            bail!("live worktree {} is not clean: {v:?}", path.display());
        }
    }
    Ok(took)
}

/// The git CLI's cheapest equivalent, one worktree after the other.
fn git_loop_script(host: &Host) -> String {
    let mut s = String::from("set -e\n");
    for (_, path) in &host.live {
        let name = path.file_name().unwrap().to_string_lossy();
        let _ = writeln!(
            s,
            "git -C '{p}' status --porcelain=v2 --untracked-files=all >/dev/null\n\
             git -C '{p}' rev-list HEAD --not --exclude=boo/{name} --branches --tags --remotes >/dev/null",
            p = path.display()
        );
    }
    s
}

fn git_loop(host: &Host, script: &str) -> anyhow::Result<f64> {
    // One shell for the whole loop, with git's isolated configuration.
    let mut sh = Command::new("sh");
    sh.arg("-c").arg(script).current_dir(&host.repo);
    for (k, v) in git_command(&host.repo).get_envs() {
        if let Some(v) = v {
            sh.env(k, v);
        }
    }
    let t = Instant::now();
    let status = sh.status()?;
    let took = ms(t.elapsed());
    if !status.success() {
        bail!("the git loop failed");
    }
    Ok(took)
}

/// Where the check of one worktree goes, one worktree after the other on
/// one core (medians over the live worktrees): the whole check as the
/// executor runs it (mount points + the git preflight), git's status
/// within it, the other git commands within it, and the rest — the
/// controller's own checks (the walk, identity, mount points, parsing).
fn preflight_breakdown(host: &Host, config: &Config, table: &mut Table) -> anyhow::Result<()> {
    use boo_reconciler::git::preflight::{preflight_costed, Preflight};
    let precious = config.precious_globs();
    let refs = boo_reconciler::git::refs::RefsCache::default();
    let (mut total, mut status, mut other, mut own) = (vec![], vec![], vec![], vec![]);
    let mut mounts = vec![];
    let mut calls = 0;
    for (_, path) in &host.live {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let t = Instant::now();
        std::hint::black_box(act::trash::delete::mount_points_inside(path)?);
        mounts.push(ms(t.elapsed()));
        let (reasons, cost) = preflight_costed(&Preflight {
            worktree: path,
            branch: Some(&format!("boo/{name}")),
            base_ref: Some("main"),
            repo_path: None,
            precious: &precious,
            timeout: boo_reconciler::git::cli::DEFAULT_TIMEOUT,
            depth: Depth::All,
            refs: Some(&refs),
        });
        let whole = t.elapsed();
        if !reasons.is_empty() {
            bail!("live worktree {} is not clean: {reasons:?}", path.display());
        }
        let st = cost.in_git("status");
        total.push(ms(whole));
        status.push(ms(st));
        other.push(ms(cost.all_git() - st));
        own.push(ms(whole - cost.all_git()));
        calls = cost.git.len();
    }
    let (t, st, o, c) = (
        spread(&total),
        spread(&status),
        spread(&other),
        spread(&own),
    );
    table.timed(
        "4. preflight of one worktree (one core): whole",
        "-",
        t,
        None,
    );
    table.timed("4. … of which git status", "-", st, None);
    table.add(
        "4. … of which other git commands",
        "-",
        fmt_ms(o.median),
        format!("{} commands in all per worktree", calls),
    );
    table.add(
        "4. … of which the mount-point walk (part of the controller's own)",
        "-",
        fmt_ms(spread(&mounts).median),
        String::new(),
    );
    let share = c.median / st.median;
    table.add_with_target(
        "4. … controller's own checks on top of git status",
        "-",
        format!("{:.0} %", share * 100.0),
        format!("{} of {} status", fmt_ms(c.median), fmt_ms(st.median)),
        format!("≤ 20 % {}", if share <= 0.2 { "met" } else { "MISSED" }),
    );
    Ok(())
}

async fn preflight_and_removal(
    args: &Args,
    host: &Host,
    config: &Config,
    table: &mut Table,
) -> anyhow::Result<()> {
    let script = git_loop_script(host);
    // One untimed round each: both read the same files from a warm cache.
    controller_preflight(host, config).await?;
    git_loop(host, &script)?;
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for _ in 0..args.runs {
        ours.push(controller_preflight(host, config).await?);
        theirs.push(git_loop(host, &script)?);
    }
    preflight_breakdown(host, config, table)?;
    let (o, g) = (spread(&ours), spread(&theirs));
    let w = host.live.len();
    table.timed(format!("4. preflight of W={w}: controller"), "-", o, None);
    table.timed(format!("4. preflight of W={w}: git loop"), "-", g, None);
    let speedup = g.median / o.median;
    table.add_with_target(
        "4. preflight speed-up git / controller",
        "-",
        format!("{speedup:.2}×"),
        format!("controller / git = {:.2}", o.median / g.median),
        format!("≥ 1.0× {}", if speedup >= 1.0 { "met" } else { "MISSED" }),
    );

    let root = WorktreeRoot::prepare(&host.root)?;
    let precious = config.precious_globs();
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for run in 0..args.runs {
        let a = add_worktree(&host.repo, &host.root, &format!("rm-ctl-{run}"))?;
        let b = add_worktree(&host.repo, &host.root, &format!("rm-git-{run}"))?;
        nix::unistd::sync();
        // Alternate which goes first, so that neither always finds the
        // other's leftovers in the cache.
        for first in [run % 2 == 0, run % 2 == 1] {
            if first {
                let wt = target_of(&a);
                let refs = boo_reconciler::git::refs::RefsCache::default();
                let t = Instant::now();
                let pinned = match act::inspect(&root, &wt, &precious, Depth::All, &refs) {
                    Inspection::Reasons(r, Some(pinned)) if r.is_empty() => pinned,
                    other => bail!("{} is not clean: {other:?}", a.display()),
                };
                let (outcome, _) = act::archive_then_retire(
                    &root,
                    &wt,
                    &pinned,
                    &precious,
                    false,
                    &[],
                    std::time::SystemTime::now(),
                );
                ours.push(ms(t.elapsed()));
                if !matches!(outcome, Outcome::Done { .. }) || a.exists() {
                    bail!("the controller did not remove {}: {outcome:?}", a.display());
                }
            } else {
                let t = Instant::now();
                git(&host.repo, &["worktree", "remove", b.to_str().unwrap()])?;
                theirs.push(ms(t.elapsed()));
                if b.exists() {
                    bail!("git worktree remove left {}", b.display());
                }
            }
        }
    }
    let (o, g) = (spread(&ours), spread(&theirs));
    table.timed(
        format!(
            "4. removal of one clean worktree (F={}): controller (preflight + retire)",
            args.files
        ),
        "-",
        o,
        None,
    );
    table.timed(
        "4. removal of one clean worktree: git worktree remove",
        "-",
        g,
        None,
    );
    let ratio = o.median / g.median;
    table.add_with_target(
        "4. removal ratio controller / git",
        "-",
        format!("{ratio:.2}"),
        String::new(),
        format!("≤ 1.2 {}", if ratio <= 1.2 { "met" } else { "MISSED" }),
    );
    reclaim_throughput(args, host, &root, table)
}

/// Figure 4, continued: the reclaimer's deletion of a retired worktree
/// against `rm -rf` on an identical tree, in files per second.
fn reclaim_throughput(
    args: &Args,
    host: &Host,
    root: &WorktreeRoot,
    table: &mut Table,
) -> anyhow::Result<()> {
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    let mut files = 0usize;
    for run in 0..args.runs {
        let a = add_worktree(&host.repo, &host.root, &format!("rc-ctl-{run}"))?;
        let b = add_worktree(&host.repo, &host.root, &format!("rc-rm-{run}"))?;
        files = walkdir::WalkDir::new(&a).into_iter().count();
        let act::trash::Pin::Pinned(mut pinned) = act::trash::pin(root, &a)? else {
            bail!("{} cannot be pinned", a.display());
        };
        pinned.stamp_tree()?;
        let entry = match act::trash::retire(root, &pinned, std::time::SystemTime::now())? {
            act::trash::Retired::Moved { entry } => entry,
            other => bail!("{} was not retired: {other:?}", a.display()),
        };
        nix::unistd::sync();
        for first in [run % 2 == 0, run % 2 == 1] {
            if first {
                let trash = WorktreeRoot::open(&act::trash::trash_path(root))?;
                let t = Instant::now();
                act::trash::delete::delete_dir(&trash, &entry)?;
                ours.push(ms(t.elapsed()));
            } else {
                let t = Instant::now();
                let st = Command::new("rm").arg("-rf").arg(&b).status()?;
                theirs.push(ms(t.elapsed()));
                if !st.success() || b.exists() {
                    bail!("rm -rf {} failed", b.display());
                }
            }
        }
        git(&host.repo, &["worktree", "prune"])?;
    }
    let (o, r) = (spread(&ours), spread(&theirs));
    let rate = |m: f64| files as f64 / (m / 1e3);
    table.add(
        format!("4. reclaim of one retired worktree ({files} entries): reclaimer"),
        "-",
        format!("{:.0} files/s", rate(o.median)),
        format!(
            "{} ({} – {})",
            fmt_ms(o.median),
            fmt_ms(o.min),
            fmt_ms(o.max)
        ),
    );
    table.add(
        format!("4. reclaim of an identical tree ({files} entries): rm -rf"),
        "-",
        format!("{:.0} files/s", rate(r.median)),
        format!(
            "{} ({} – {})",
            fmt_ms(r.median),
            fmt_ms(r.min),
            fmt_ms(r.max)
        ),
    );
    let ratio = r.median / o.median;
    table.add_with_target(
        "4. reclaim throughput reclaimer / rm -rf",
        "-",
        format!("{ratio:.2}×"),
        String::new(),
        format!("≥ 0.8× {}", if ratio >= 0.8 { "met" } else { "MISSED" }),
    );
    Ok(())
}

// ---------------------------------------------------------------- main --

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "?".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_string())
        })
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or("?".into(), |kb| format!("{} GiB", kb / 1024 / 1024));
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let git = git(Path::new("/"), &["--version"]).unwrap_or_default();
    format!(
        "{cores} cores ({cpu}), {mem}, Linux {}, {}",
        kernel.trim(),
        git.trim()
    )
}

fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if args.smoke {
        args.shrink_for_smoke();
    }
    tracing_subscriber::registry().with(CountStatements).init();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let tmp;
    let dir = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            tempfile::tempdir_in(d)?.keep()
        }
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    let pg = args
        .postgres_url
        .clone()
        .or_else(|| std::env::var("DATABASE_URL").ok())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".into());
    eprintln!("machine: {}", machine());
    eprintln!("{args:?}");
    let started = Instant::now();
    let host = Host::build(&dir, &args)?;
    // Writing back the fixture's files would otherwise run under the timed
    // passes (a kernel thread busy on one of the two cores).
    let t = Instant::now();
    nix::unistd::sync();
    eprintln!(
        "fixture: flushed to disk in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    let mut table = Table::default();
    let mut result = Ok(());
    for &kind in &args.db {
        let mut db = Db::open(kind, &dir, &pg).await?;
        let r = async {
            let on = |f| args.figures.contains(&f);
            if on(Figure::Idle) {
                idle(&args, &host, &db, &mut table).await?;
            }
            db.fill(&host, args.base_chats, args.archived).await?;
            if on(Figure::Drift) {
                drifted(&args, &host, &db, &mut table).await?;
            }
            if on(Figure::Nudge) {
                nudges(&args, &host, &db, &mut table).await?;
            }
            if on(Figure::Healthz) {
                healthz(&args, &host, &db, &mut table).await?;
            }
            if on(Figure::Kept) {
                kept(&args, &host, &db, &mut table).await?;
            }
            anyhow::Ok(())
        }
        .await;
        db.drop_schema().await;
        if r.is_err() {
            result = r;
            break;
        }
    }
    if result.is_ok() && args.figures.contains(&Figure::Git) {
        let config = host.config("sqlite::memory:")?;
        result = preflight_and_removal(&args, &host, &config, &mut table).await;
    }
    println!("machine: {}", machine());
    println!(
        "fixture: F={} files, W={} worktrees, P={} agents, archived fraction {}, {} run(s) per figure{}",
        args.files,
        args.worktrees,
        args.processes,
        args.archived,
        args.runs,
        if args.smoke { " (smoke: figures not meaningful)" } else { "" }
    );
    println!();
    print!("{}", table.markdown());
    println!("\ntotal {:.0}s", started.elapsed().as_secs_f64());
    result
}
