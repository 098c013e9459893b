//! Test fixtures: real git repositories and worktrees in temp dirs, a
//! database of either kind, and a controller wired to both.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use boo_reconciler::act::RunOptions;
use boo_reconciler::config::Config;
use boo_reconciler::controller::{Controller, Mode, Trigger};
use boo_reconciler::plan::Scope;
use boo_reconciler::report::PassReport;
use boo_reconciler::root::WorktreeRoot;
use boo_reconciler::store::Store;
use tokio_util::sync::CancellationToken;

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

/// Runs `git` in `dir` with a configuration isolated from the machine's.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "Test")
        .env("GIT_AUTHOR_EMAIL", "test@example.com")
        .env("GIT_COMMITTER_NAME", "Test")
        .env("GIT_COMMITTER_EMAIL", "test@example.com")
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?} in {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Whether `git` succeeds in `dir`.
pub fn git_ok(dir: &Path, args: &[&str]) -> bool {
    Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
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
            schema,
        }
    }

    pub fn config(&self) -> Config {
        let mut c = Config::defaults().expect("defaults");
        c.database.url = self.url.clone();
        c.host.id = HOST.into();
        c.worktrees.root = self.root.clone();
        c.worktrees.orphan_min_age = self.orphan_min_age;
        c.r#loop.interval = self.interval;
        c.r#loop.jitter = Duration::ZERO;
        c
    }

    pub fn controller(&self) -> Controller {
        let root = WorktreeRoot::prepare(&self.root).expect("root");
        Controller::new(self.config(), self.store.clone(), root)
    }

    pub async fn once(&self, scope: Scope, force: bool) -> PassReport {
        self.controller()
            .pass(
                scope,
                Mode::Act(RunOptions { force }),
                Trigger::Command,
                &CancellationToken::new(),
            )
            .await
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
