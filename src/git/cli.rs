//! Running the git CLI, which is the authority on what counts as work
//! (DESIGN rule 8): bounded in time, as the owner of the repository, and
//! with nothing of the repository's own that runs code on its behalf.
//!
//! # Guarantees
//!
//! 1. **Never with the controller's privileges over another user's
//!    repository.** A root controller runs git as the owner of the
//!    directory it asks about (that user's uid, primary gid and
//!    supplementary groups, and home directory, so that git reads the
//!    owner's own `~/.gitconfig` and excludes file as the owner's own
//!    `git status` would). A controller that is not root and does not own
//!    the directory cannot switch and does not run git there at all
//!    ([`GitCliError::NotOwner`]): it would either be refused by git's
//!    ownership check or run another user's filters as itself.
//!    Test: `runs_as_the_owner_of_the_directory` (tests/as_root.rs runs it
//!    with a real second user).
//! 2. **No hooks, no fsmonitor, no pager, no prompt, no optional locks.**
//!    `core.hooksPath=/dev/null`, `core.fsmonitor=false`, `GIT_PAGER=cat`,
//!    `GIT_TERMINAL_PROMPT=0`, and `GIT_OPTIONAL_LOCKS=0` so that a status
//!    never rewrites the index. Every `GIT_*` variable of the controller's
//!    own environment is dropped (a stray `GIT_DIR` or `GIT_INDEX_FILE`
//!    would make git judge another repository). The command-line `-c`
//!    settings reach the child processes git starts (submodules) through
//!    git's own `GIT_CONFIG_PARAMETERS`. Clean filters still run, as the
//!    owner: they are how the owner's own `git status` sees the files.
//!    Test: `hooks_and_fsmonitor_never_run`.
//! 3. **Bounded.** A command still running after its timeout is killed
//!    with its whole process group (a filter process included) and
//!    reported as [`GitCliError::TimedOut`]. Test: `a_hung_git_is_killed_at_the_timeout`.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The default bound on one git command.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// A git command that could not give an answer.
#[derive(Debug, thiserror::Error)]
pub enum GitCliError {
    #[error("cannot run git in {dir}: {source}")]
    Spawn {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("git {args} in {dir} did not finish within {timeout:?}; killed")]
    TimedOut {
        dir: PathBuf,
        args: String,
        timeout: Duration,
    },
    #[error("git {args} in {dir} failed ({status}): {stderr}")]
    Failed {
        dir: PathBuf,
        args: String,
        status: ExitStatus,
        stderr: String,
    },
    #[error(
        "{dir} belongs to uid {owner}; this controller runs as uid {me} and cannot run git as its owner (run it as root or as uid {owner})"
    )]
    NotOwner { dir: PathBuf, owner: u32, me: u32 },
}

pub use crate::creds::RunAs;

/// A place to run git in, as the right user, with a bound.
#[derive(Clone, Debug)]
pub struct Git {
    dir: PathBuf,
    run_as: Option<RunAs>,
    timeout: Duration,
    /// `GIT_INDEX_FILE`: an index of the caller's instead of the
    /// repository's own.
    index_file: Option<PathBuf>,
    /// `GIT_DIR`: a git directory named outright, for one whose working
    /// directory is gone (a stale admin entry) or never was (a submodule's
    /// git directory kept inside it).
    git_dir: Option<PathBuf>,
}

/// What a git command printed.
#[derive(Debug)]
pub struct Output {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Output {
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// Who runs git for a directory owned by `owner`, when this process runs
/// as `me`: `Ok(None)` means "as this process".
fn run_as_for(dir: &Path, owner: u32, me: u32) -> Result<Option<RunAs>, GitCliError> {
    crate::creds::who_for(owner, me).map_err(|e| GitCliError::NotOwner {
        dir: dir.to_path_buf(),
        owner: e.owner,
        me: e.me,
    })
}

impl Git {
    /// Git for `dir`, run as the owner of `dir` (see guarantee 1).
    pub fn for_dir(dir: &Path, timeout: Duration) -> Result<Git, GitCliError> {
        let meta = std::fs::symlink_metadata(dir).map_err(|source| GitCliError::Spawn {
            dir: dir.to_path_buf(),
            source,
        })?;
        let me = nix::unistd::geteuid().as_raw();
        Ok(Git {
            dir: dir.to_path_buf(),
            run_as: run_as_for(dir, meta.uid(), me)?,
            timeout,
            index_file: None,
            git_dir: None,
        })
    }

    /// The same user and bound, in another directory (a submodule of the
    /// worktree this was made for).
    pub fn at(&self, dir: &Path) -> Git {
        Git {
            dir: dir.to_path_buf(),
            ..self.clone()
        }
    }

    /// The same, reading and writing the index file `index` (a scratch
    /// index: the repository's own is left alone).
    pub fn with_index(&self, index: &Path) -> Git {
        Git {
            index_file: Some(index.to_path_buf()),
            ..self.clone()
        }
    }

    /// The same user and bound, on the git directory `git_dir` itself
    /// (`GIT_DIR`): no discovery, no working directory.
    pub fn with_git_dir(&self, git_dir: &Path) -> Git {
        Git {
            git_dir: Some(git_dir.to_path_buf()),
            ..self.clone()
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn run_as(&self) -> Option<&RunAs> {
        self.run_as.as_ref()
    }

    fn command<S: AsRef<OsStr>>(&self, args: &[S]) -> Command {
        let mut c = Command::new("git");
        for k in git_vars(std::env::vars_os().map(|(k, _)| k)) {
            c.env_remove(k);
        }
        c.args([
            "--no-pager",
            "-c",
            "core.hooksPath=/dev/null",
            "-c",
            "core.fsmonitor=false",
            "-c",
            "color.ui=false",
        ])
        .args(args)
        .current_dir(&self.dir)
        .env("GIT_OPTIONAL_LOCKS", "0")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_PAGER", "cat")
        .env("PAGER", "cat")
        .env("LC_ALL", "C")
        .envs(self.index_file.iter().map(|i| ("GIT_INDEX_FILE", i)))
        .envs(self.git_dir.iter().map(|d| ("GIT_DIR", d)))
        // A submodule's `core.worktree` names a directory that may be gone;
        // git would refuse to start rather than ignore it. Nothing run this
        // way reads or writes a working tree.
        .envs(self.git_dir.iter().map(|d| ("GIT_WORK_TREE", d)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own group: a timeout kills git and whatever it started.
        .process_group(0);
        if let Some(r) = &self.run_as {
            match &r.home {
                Some(h) => c.env("HOME", h),
                None => c.env_remove("HOME"),
            };
            c.env_remove("XDG_CONFIG_HOME");
            let (uid, gid, groups) = (r.uid, r.gid, r.groups.clone());
            // SAFETY: setgroups, setgid and setuid are async-signal-safe
            // system calls; the group list was computed before the fork.
            unsafe {
                c.pre_exec(move || {
                    let gids: Vec<nix::unistd::Gid> = groups
                        .iter()
                        .map(|g| nix::unistd::Gid::from_raw(*g))
                        .collect();
                    nix::unistd::setgroups(&gids)?;
                    nix::unistd::setgid(nix::unistd::Gid::from_raw(gid))?;
                    nix::unistd::setuid(nix::unistd::Uid::from_raw(uid))?;
                    Ok(())
                });
            }
        }
        c
    }

    /// The commit `rev` names (peeled), `None` when it names none.
    pub fn commit_of(&self, rev: &str) -> Result<Option<String>, GitCliError> {
        let (st, o) = self.run_status(
            &[
                "rev-parse",
                "--verify",
                "-q",
                "--end-of-options",
                &format!("{rev}^{{commit}}"),
            ],
            &[],
        )?;
        Ok(st
            .success()
            .then(|| o.stdout_str().trim().to_string())
            .filter(|s| !s.is_empty()))
    }

    /// Runs `git <args>` and returns what it printed, or an error when it
    /// exits non-zero.
    pub fn run<S: AsRef<OsStr>>(&self, args: &[S]) -> Result<Output, GitCliError> {
        self.run_with_input(args, &[])
    }

    /// Runs `git <args>` with `input` on its standard input.
    pub fn run_with_input<S: AsRef<OsStr>>(
        &self,
        args: &[S],
        input: &[u8],
    ) -> Result<Output, GitCliError> {
        let (status, out) = self.run_status(args, input)?;
        if status.success() {
            Ok(out)
        } else {
            Err(GitCliError::Failed {
                dir: self.dir.clone(),
                args: show_args(args),
                status,
                stderr: out.stderr_str().trim().to_string(),
            })
        }
    }

    /// Runs `git <args>` and returns its exit status with what it printed,
    /// whatever the status.
    ///
    /// The exit is waited for, not polled: a poll's sleep is added to
    /// every command's time, and the preflight runs several per worktree.
    pub fn run_status<S: AsRef<OsStr>>(
        &self,
        args: &[S],
        input: &[u8],
    ) -> Result<(ExitStatus, Output), GitCliError> {
        let started = Instant::now();
        let spawn_err = |source: std::io::Error| {
            GitCliError::Spawn {
            dir: self.dir.clone(),
            source: match (&self.run_as, source.raw_os_error()) {
                // The switch to the owner failed in the child.
                (Some(r), Some(nix::libc::EPERM)) => std::io::Error::new(
                    source.kind(),
                    format!(
                        "cannot switch to the owner (uid {}, gid {}): {source}; a root controller needs CAP_SETUID and CAP_SETGID (see the root unit)",
                        r.uid, r.gid
                    ),
                ),
                _ => source,
            },
        }
        };
        let mut child = self.command(args).spawn().map_err(spawn_err)?;
        let pgid = child.id() as i32;
        let writer = match child.stdin.take() {
            // Dropping the pipe closes git's standard input at once.
            Some(_) if input.is_empty() => None,
            Some(mut stdin) => {
                let input = input.to_vec();
                Some(std::thread::spawn(move || {
                    // A git that exits without reading all of it is not an
                    // error of ours; its status says what happened.
                    let _ = stdin.write_all(&input);
                }))
            }
            None => None,
        };
        let err = child.stderr.take().map(|mut p| {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let _ = p.read_to_end(&mut buf);
                buf
            })
        });
        // One thread reads what git prints until it closes the pipe, then
        // reaps it; this thread waits for that with the deadline.
        let (tx, rx) = std::sync::mpsc::channel();
        let mut stdout = child.stdout.take();
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(p) = stdout.as_mut() {
                let _ = p.read_to_end(&mut buf);
            }
            let _ = tx.send(child.wait().map(|s| (s, buf)));
        });
        let finished = match rx.recv_timeout(self.timeout) {
            Ok(r) => r,
            Err(_) => {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pgid),
                    nix::sys::signal::Signal::SIGKILL,
                );
                // Killed, the group closes its pipes and is reaped; a
                // process that left the group and holds them open is not
                // waited for.
                let _ = rx.recv_timeout(KILL_GRACE);
                return Err(GitCliError::TimedOut {
                    dir: self.dir.clone(),
                    args: show_args(args),
                    timeout: self.timeout,
                });
            }
        };
        let (status, stdout) = finished.map_err(spawn_err)?;
        if let Some(w) = writer {
            let _ = w.join();
        }
        let output = Output {
            stdout,
            stderr: err.and_then(|e| e.join().ok()).unwrap_or_default(),
        };
        spent::record(args, started.elapsed());
        Ok((status, output))
    }
}

/// How long a killed git's pipes are waited for.
const KILL_GRACE: Duration = Duration::from_secs(1);

/// The time spent in git, per command, by what runs on this thread
/// inside [`spent::measured`]: what the preflight's cost breakdown reads
/// (the preflight runs on one thread of the blocking pool).
pub mod spent {
    use std::cell::RefCell;
    use std::ffi::OsStr;
    use std::time::Duration;

    thread_local! {
        static CALLS: RefCell<Option<Vec<(String, Duration)>>> = const { RefCell::new(None) };
    }

    /// Runs `f` and returns what it returned with every git command it
    /// ran on this thread: the subcommand and how long it took.
    pub fn measured<T>(f: impl FnOnce() -> T) -> (T, Vec<(String, Duration)>) {
        let outer = CALLS.with(|c| c.replace(Some(Vec::new())));
        let value = f();
        let calls = CALLS.with(|c| c.replace(outer)).unwrap_or_default();
        (value, calls)
    }

    pub(super) fn record<S: AsRef<OsStr>>(args: &[S], took: Duration) {
        CALLS.with(|c| {
            if let Some(calls) = c.borrow_mut().as_mut() {
                let name = args
                    .first()
                    .map(|a| a.as_ref().to_string_lossy().into_owned())
                    .unwrap_or_default();
                calls.push((name, took));
            }
        });
    }
}

/// The variables of an environment that would steer git.
fn git_vars(keys: impl Iterator<Item = std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    keys.filter(|k| k.as_encoded_bytes().starts_with(b"GIT_"))
        .collect()
}

fn show_args<S: AsRef<OsStr>>(args: &[S]) -> String {
    args.iter()
        .map(|a| a.as_ref().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::git::testutil::Fixture;

    #[test]
    fn the_owner_is_the_user_unless_it_differs() {
        let d = Path::new("/tmp");
        assert_eq!(run_as_for(d, 1000, 1000).unwrap(), None);
        assert!(matches!(
            run_as_for(d, 1000, 1001),
            Err(GitCliError::NotOwner {
                owner: 1000,
                me: 1001,
                ..
            })
        ));
        let r = run_as_for(d, 0x7fff_fff0, 0).unwrap().unwrap();
        assert_eq!((r.uid, r.gid, r.home), (0x7fff_fff0, 0x7fff_fff0, None));
    }

    #[test]
    fn runs_as_the_owner_of_the_directory() {
        // As this process, when it owns the directory.
        let f = Fixture::new();
        let g = Git::for_dir(&f.repo, DEFAULT_TIMEOUT).unwrap();
        assert_eq!(g.run_as(), None);
        assert!(g.run(&["status"]).is_ok());
    }

    #[test]
    fn hooks_and_fsmonitor_never_run() {
        let f = Fixture::new();
        let witness = f.repo.join("ran");
        let hook = format!("#!/bin/sh\ntouch '{}'\n", witness.display());
        let hooks = f.repo.join(".git/hooks");
        std::fs::create_dir_all(&hooks).unwrap();
        for name in ["post-index-change", "reference-transaction", "fsmonitor"] {
            let p = hooks.join(name);
            std::fs::write(&p, &hook).unwrap();
            crate::git::testutil::set_exec(&p);
        }
        f.git(
            &f.repo,
            &[
                "config",
                "core.fsmonitor",
                hooks.join("fsmonitor").to_str().unwrap(),
            ],
        );
        let g = Git::for_dir(&f.repo, DEFAULT_TIMEOUT).unwrap();
        g.run(&["status", "--porcelain=v2"]).unwrap();
        g.run(&["update-ref", "refs/heads/x", "HEAD"]).unwrap();
        assert!(!witness.exists(), "a hook or fsmonitor ran");
    }

    #[test]
    fn the_controllers_own_git_environment_is_ignored() {
        let keys = ["GIT_DIR", "GIT_INDEX_FILE", "PATH", "GIT_WORK_TREE", "HOME"]
            .map(std::ffi::OsString::from);
        assert_eq!(
            git_vars(keys.into_iter()),
            ["GIT_DIR", "GIT_INDEX_FILE", "GIT_WORK_TREE"].map(std::ffi::OsString::from)
        );
        let f = Fixture::new();
        let g = Git::for_dir(&f.repo, DEFAULT_TIMEOUT).unwrap();
        let c = g.command(&["status"]);
        let envs: Vec<_> = c.get_envs().collect();
        assert!(envs.contains(&(OsStr::new("GIT_OPTIONAL_LOCKS"), Some(OsStr::new("0")))));
    }

    #[test]
    fn a_hung_git_is_killed_at_the_timeout() {
        let f = Fixture::new();
        // An alias that runs a shell which never ends: it must be killed,
        // not waited for.
        let pidfile = f.repo.join("pid");
        f.git(
            &f.repo,
            &[
                "config",
                "alias.hang",
                &format!("!echo $$ > '{}'; sleep 30", pidfile.display()),
            ],
        );
        let g = Git::for_dir(&f.repo, Duration::from_secs(1)).unwrap();
        let e = g.run(&["hang"]).unwrap_err();
        assert!(matches!(e, GitCliError::TimedOut { .. }), "{e}");
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // Killed: gone, a zombie waiting for its new parent to reap it, or
        // the pid already taken by an unrelated process (tests run in
        // parallel): never the shell still sleeping.
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| s.rsplit(')').next().map(|r| r.trim().chars().next()))
            .flatten();
        let sleeping_shell = String::from_utf8_lossy(&cmdline).contains("sleep")
            && !matches!(state, None | Some('Z'));
        assert!(!sleeping_shell, "shell {pid} still runs: {state:?}");
    }

    #[test]
    fn the_time_in_git_is_recorded_only_inside_measured() {
        let f = Fixture::new();
        let g = Git::for_dir(&f.repo, DEFAULT_TIMEOUT).unwrap();
        g.run(&["rev-parse", "HEAD"]).unwrap();
        let (answer, calls) = spent::measured(|| {
            g.run(&["status", "--porcelain"]).unwrap();
            let _ = g.run(&["rev-parse", "--verify", "nope"]);
            42
        });
        assert_eq!(answer, 42);
        let names: Vec<&str> = calls.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["status", "rev-parse"]);
        assert!(calls.iter().all(|(_, d)| *d > Duration::ZERO));
        let (_, none) = spent::measured(|| ());
        assert!(none.is_empty());
    }

    #[test]
    fn a_failing_command_says_what_git_said() {
        let f = Fixture::new();
        let g = Git::for_dir(&f.repo, DEFAULT_TIMEOUT).unwrap();
        let e = g.run(&["rev-parse", "--verify", "nope"]).unwrap_err();
        let s = e.to_string();
        assert!(
            s.contains("rev-parse --verify nope") && s.contains("fatal"),
            "{s}"
        );
    }
}
