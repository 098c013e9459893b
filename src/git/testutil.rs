//! Fixtures for the git tests: real repositories and worktrees built with
//! the `git` CLI in temporary directories, isolated from the machine's git
//! configuration.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Once;

use globset::{Glob, GlobSet, GlobSetBuilder};

/// The default precious globs of the tests.
pub fn precious() -> GlobSet {
    let mut b = GlobSetBuilder::new();
    b.add(Glob::new(".env").unwrap());
    b.add(Glob::new(".env.*").unwrap());
    b.build().unwrap()
}

/// Keeps libgit2 (in this process) away from the user's and the system's
/// git configuration.
fn isolate_libgit2() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for level in [
            git2::ConfigLevel::System,
            git2::ConfigLevel::XDG,
            git2::ConfigLevel::Global,
            git2::ConfigLevel::ProgramData,
        ] {
            // SAFETY: called once, before any test of this process opens a
            // repository through this fixture module.
            unsafe {
                let _ = git2::opts::set_search_path(level, "/nonexistent-boo-test-config");
            }
        }
    });
}

pub fn git_cmd(dir: &Path, home: &Path) -> Command {
    let mut c = Command::new("git");
    c.current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "Test Author")
        .env("GIT_AUTHOR_EMAIL", "author@example.com")
        .env("GIT_COMMITTER_NAME", "Test Author")
        .env("GIT_COMMITTER_EMAIL", "author@example.com")
        .env("GIT_EDITOR", "true")
        .env("LC_ALL", "C")
        .args([
            "-c",
            "init.defaultBranch=main",
            "-c",
            "protocol.file.allow=always",
            "-c",
            "advice.detachedHead=false",
            "-c",
            "core.autocrlf=false",
            "-c",
            "commit.gpgsign=false",
        ]);
    c
}

/// A main repository with one commit on `main` and a root directory for
/// worktrees, all in one temporary directory.
pub struct Fixture {
    pub tmp: tempfile::TempDir,
    pub repo: PathBuf,
    pub root: PathBuf,
    pub home: PathBuf,
}

impl Fixture {
    pub fn new() -> Fixture {
        Fixture::new_with(&[])
    }

    /// A fixture whose main repository is made by `git init -q <init…>`
    /// (`--object-format=sha256`, `--ref-format=reftable`).
    pub fn new_with(init: &[&str]) -> Fixture {
        isolate_libgit2();
        let tmp = tempfile::tempdir().unwrap();
        let base = fs::canonicalize(tmp.path()).unwrap();
        let repo = base.join("repo");
        let root = base.join("root");
        let home = base.join("home");
        for d in [&repo, &root, &home] {
            fs::create_dir_all(d).unwrap();
        }
        let f = Fixture {
            tmp,
            repo,
            root,
            home,
        };
        let mut args = vec!["init", "-q"];
        args.extend_from_slice(init);
        f.git(&f.repo, &args);
        write(&f.repo.join("README"), "hello\n");
        write(&f.repo.join("lib.txt"), "one\ntwo\nthree\nfour\nfive\n");
        write(
            &f.repo.join(".gitignore"),
            "target/\nnode_modules/\n.env\n.env.*\n",
        );
        f.git(&f.repo, &["add", "-A"]);
        f.git(&f.repo, &["commit", "-q", "-m", "initial"]);
        f
    }

    pub fn cmd(&self, dir: &Path) -> Command {
        git_cmd(dir, &self.home)
    }

    pub fn try_git(&self, dir: &Path, args: &[&str]) -> Output {
        self.cmd(dir).args(args).output().unwrap()
    }

    /// Runs git in `dir`, panicking with its output when it fails; returns
    /// stdout, trimmed.
    pub fn git(&self, dir: &Path, args: &[&str]) -> String {
        let out = self.try_git(dir, args);
        assert!(
            out.status.success(),
            "git {args:?} in {} failed:\n{}\n{}",
            dir.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// `git worktree add -q <opts…> <path> [<rev>]`; returns `path`.
    pub fn add_worktree(&self, path: &Path, opts: &[&str], rev: Option<&str>) -> PathBuf {
        let mut args = vec!["worktree", "add", "-q"];
        args.extend_from_slice(opts);
        args.push(path.to_str().unwrap());
        args.extend(rev);
        self.git(&self.repo, &args);
        path.to_path_buf()
    }

    /// `git worktree add -b <branch> <root>/<name> main`.
    pub fn worktree(&self, name: &str, branch: &str) -> PathBuf {
        self.add_worktree(&self.root.join(name), &["-b", branch], Some("main"))
    }

    /// `git worktree add --detach <root>/<name> <rev>`.
    pub fn detached(&self, name: &str, rev: &str) -> PathBuf {
        self.add_worktree(&self.root.join(name), &["--detach"], Some(rev))
    }

    /// Commits everything in `dir` with `msg`; returns the commit id.
    pub fn commit_all(&self, dir: &Path, msg: &str) -> String {
        self.git(dir, &["add", "-A"]);
        self.git(dir, &["commit", "-q", "-m", msg]);
        self.git(dir, &["rev-parse", "HEAD"])
    }

    pub fn rev(&self, dir: &Path, rev: &str) -> String {
        self.git(dir, &["rev-parse", rev])
    }

    /// Expires every reflog of the main repository and prunes at once:
    /// afterwards an object is there only if a ref reaches it.
    pub fn expire_and_gc(&self) {
        self.git(&self.repo, &["reflog", "expire", "--expire=now", "--all"]);
        self.git(&self.repo, &["gc", "-q", "--prune=now"]);
    }

    /// A repository `subsrc` (one commit) beside the main one, added to
    /// it as the submodule `sub` on `main`, and initialised in a new
    /// detached worktree `<root>/<name>`: its git directory lives in the
    /// worktree's admin entry (`.git/worktrees/<name>/modules/sub`).
    /// Returns the worktree and the submodule's directory.
    pub fn worktree_with_submodule(&self, name: &str) -> (PathBuf, PathBuf) {
        const FILE: &str = "protocol.file.allow=always";
        let src = self.tmp.path().join("subsrc");
        if !src.exists() {
            fs::create_dir_all(&src).unwrap();
            self.git(&src, &["init", "-q"]);
            write(&src.join("s.txt"), "s\n");
            self.commit_all(&src, "sub initial");
            let url = src.to_str().unwrap();
            self.git(
                &self.repo,
                &["-c", FILE, "submodule", "add", "-q", url, "sub"],
            );
            self.git(&self.repo, &["commit", "-q", "-m", "add sub"]);
        }
        let wt = self.detached(name, "main");
        self.git(&wt, &["-c", FILE, "submodule", "update", "--init", "-q"]);
        let sub = wt.join("sub");
        let gitdir = self.git(&sub, &["rev-parse", "--absolute-git-dir"]);
        assert!(
            gitdir.contains(&format!("/worktrees/{name}/modules/")),
            "{gitdir}"
        );
        (wt, sub)
    }

    /// Whether the main repository holds object `oid`.
    pub fn has_object(&self, oid: &str) -> bool {
        self.try_git(&self.repo, &["cat-file", "-e", oid])
            .status
            .success()
    }
}

pub fn write(path: &Path, content: &str) {
    if let Some(p) = path.parent() {
        fs::create_dir_all(p).unwrap();
    }
    fs::write(path, content).unwrap();
}

pub fn set_exec(path: &Path) {
    let mut perm = fs::metadata(path).unwrap().permissions();
    perm.set_mode(0o755);
    fs::set_permissions(path, perm).unwrap();
}
