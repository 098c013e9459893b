//! `boo-reconciler launch`: starts an agent labelled, as its process
//! group's leader, in a cgroup of its own ([`crate::cgroup`]), then
//! becomes the agent (`exec`), so that standard input and output (the
//! agent's ACP channel) are the caller's, untouched, and the agent's pid
//! is the one the orchestrator spawned.
//!
//! Where no cgroup can be made (no v2 hierarchy, `auto` as a non-root
//! user, the kernel refusing the move), it says why once on standard
//! error and execs with the labels only: the agent then depends on the
//! label scan, and an agent that clears its environment and leaves its
//! process tree escapes it. A cgroup parent that is configured but does
//! not exist or cannot be written is a configuration error (exit 2),
//! never a silent downgrade.

use std::ffi::OsString;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use crate::cgroup::{self, Parent, Record};
use crate::config::Config;
use crate::observe::processes::LabelNames;

/// What to launch.
#[derive(Clone, Debug)]
pub struct Launch {
    pub chat: String,
    pub session: Option<String>,
    pub agent: String,
    /// The agent's command and arguments.
    pub command: Vec<OsString>,
}

/// Why `launch` did not become the agent.
#[derive(Debug)]
pub enum Error {
    /// Bad input or configuration: exit 2.
    Usage(String),
    /// The command could not be run: exit 127, as a shell does.
    Exec(String),
}

/// Prepares the labels and the cgroup, then execs the agent: returns only
/// on failure.
pub fn run(config: &Config, launch: &Launch) -> Error {
    if let Err(why) = check(launch) {
        return Error::Usage(why);
    }
    let parent = match Parent::resolve(&config.processes.cgroup_parent, is_root()) {
        Ok(p) => p,
        Err(why) => return Error::Usage(why),
    };
    let labels = LabelNames::from(&config.processes);
    let record = Record {
        chat: launch.chat.clone(),
        session: launch.session.clone(),
        agent: launch.agent.clone(),
        instance: labels.instance.clone(),
        pid: std::process::id() as i32,
    };
    match contain(&parent, &record) {
        Ok(Some(path)) => tracing::debug!(cgroup = %path.display(), "agent contained"),
        Ok(None) => {}
        Err(Contain::Usage(why)) => return Error::Usage(why),
        Err(Contain::Without(why)) => eprintln!(
            "boo-reconciler launch: no cgroup for this agent ({why}); running it with its labels only"
        ),
    }
    lead_own_group();
    let mut cmd = std::process::Command::new(&launch.command[0]);
    cmd.args(&launch.command[1..])
        .env(&labels.chat, &launch.chat)
        .env(&labels.agent, &launch.agent);
    match &launch.session {
        Some(s) => cmd.env(&labels.session, s),
        None => cmd.env_remove(&labels.session),
    };
    if let Some(i) = &labels.instance {
        cmd.env(&labels.instance_label, i);
    }
    let e = cmd.exec();
    Error::Exec(format!(
        "cannot run {}: {e}",
        launch.command[0].to_string_lossy()
    ))
}

fn check(launch: &Launch) -> Result<(), String> {
    for (flag, value) in [("--chat", &launch.chat), ("--agent", &launch.agent)] {
        if value.trim().is_empty() {
            return Err(format!("{flag} is empty: give the agent's {}", &flag[2..]));
        }
    }
    if launch.session.as_ref().is_some_and(|s| s.trim().is_empty()) {
        return Err("--session is empty: give the session id, or leave the flag out".into());
    }
    if launch.command.is_empty() {
        return Err(
            "no command given: boo-reconciler launch --chat ID --agent NAME -- CMD ARGS…".into(),
        );
    }
    Ok(())
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Why the agent is not in a cgroup of its own.
enum Contain {
    /// The configured parent is wrong: the operator must fix it.
    Usage(String),
    /// No cgroup can be made here: say why once and go on with labels.
    Without(String),
}

/// Makes this agent's cgroup under `parent` and moves this process into
/// it; `Ok(None)` when cgroups are off.
fn contain(parent: &Parent, record: &Record) -> Result<Option<PathBuf>, Contain> {
    let (path, auto) = match parent {
        Parent::Off => return Ok(None),
        Parent::Unavailable(why) => return Err(Contain::Without(why.clone())),
        Parent::At { path, auto } => (path, *auto),
    };
    ready_parent(path, auto)?;
    let name = record.name().map_err(Contain::Usage)?;
    let cg = path.join(&name);
    // The controller removes empty cgroups only once they are older than
    // processes.orphan_min_age; should it (or a leftover of an earlier
    // agent with this pid) get in the way, the cgroup is made again.
    let mut last = None;
    for _ in 0..3 {
        match make_and_enter(&cg, record.pid) {
            Ok(()) => return Ok(Some(cg)),
            Err(e) => last = Some(e),
        }
    }
    let e = last.expect("tried at least once");
    Err(Contain::Without(format!(
        "cannot move into {}: {e}",
        cg.display()
    )))
}

/// The parent exists (made by `auto` on first use) and this user may make
/// cgroups in it.
fn ready_parent(path: &Path, auto: bool) -> Result<(), Contain> {
    if !path.is_dir() {
        if auto {
            if let Err(e) = std::fs::create_dir(path) {
                if e.kind() != io::ErrorKind::AlreadyExists {
                    return Err(Contain::Without(format!(
                        "cannot make {}: {e}",
                        path.display()
                    )));
                }
            }
        } else {
            return Err(Contain::Usage(format!(
                "processes.cgroup_parent {} does not exist: make it (mkdir {0}) and, for a \
                 non-root orchestrator, delegate it to that user (chown -R USER {0}), or set \
                 processes.cgroup_parent = \"off\"",
                path.display()
            )));
        }
    }
    let writable = nix::unistd::access(path, nix::unistd::AccessFlags::W_OK).is_ok();
    if !writable {
        return Err(Contain::Usage(format!(
            "processes.cgroup_parent {} is not writable by uid {}: delegate it to this user \
             (chown -R {} {0}), launch as root, or set processes.cgroup_parent = \"off\"",
            path.display(),
            nix::unistd::geteuid(),
            nix::unistd::geteuid()
        )));
    }
    Ok(())
}

fn make_and_enter(cg: &Path, pid: i32) -> io::Result<()> {
    match std::fs::create_dir(cg) {
        Ok(()) => {}
        // A cgroup left by an earlier agent that had this pid: empty, or
        // the kernel refuses to remove it and the move below fails.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let _ = std::fs::remove_dir(cg);
            std::fs::create_dir(cg)?;
        }
        Err(e) => return Err(e),
    }
    cgroup::enter(cg, pid).inspect_err(|_| {
        let _ = std::fs::remove_dir(cg);
    })
}

/// The launcher contract (DESIGN.md): the agent leads its process group,
/// so that the whole group can be signalled. A session leader already
/// does (and may not change groups).
fn lead_own_group() {
    let me = nix::unistd::getpid();
    if nix::unistd::getpgrp() == me || nix::unistd::getsid(None).ok() == Some(me) {
        return;
    }
    if let Err(e) = nix::unistd::setpgid(me, me) {
        tracing::debug!(error = %e, "could not lead a process group of its own");
    }
}
