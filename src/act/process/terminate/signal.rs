//! The signals themselves: each one right after a check of the process it
//! is meant for, through a pidfd bound by that check, and never to a
//! protected pid or group (guarantees 1 and 3 of [`super::terminate`]).

use std::collections::HashSet;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::libc;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use procfs::process::Process;

use super::collect::Tracking;
use super::NotSignalled;
use crate::observe::processes::{identity_of, is_alive_state, EnvChat, LabelNames, Snapshot};

/// What the agent's chat label must say at a check.
#[derive(Clone, Copy)]
pub(super) enum Label<'a> {
    /// Not read: pid and start time alone say who the process is (every
    /// check after the agent's first SIGTERM, and every other process).
    Ignored,
    /// Exactly this chat: the agent as the label scan observed it.
    Is(&'a str, &'a LabelNames),
    /// This chat or none at all: the agent as a row recorded it, found
    /// running without its labels. Another chat's label is never accepted.
    IsOrAbsent(&'a str, &'a LabelNames),
}

/// What the SIGTERM step did: the group signalled and the processes
/// signalled, or why the agent was not; the pids found reused either way.
pub(super) struct TermStep {
    pub sent: Result<(Option<i32>, Vec<i32>), NotSignalled>,
    pub changed: Vec<i32>,
}

/// Verifies every tracked process, the agent last, and sends SIGTERM to
/// the agent's group (when `group` is still the one it leads) or to the
/// agent, then to every other verified process outside that group. The
/// agent is checked against `label` here, and only here: this is where its
/// identity at observation is confirmed. An agent already gone leaves the
/// other verified processes to be signalled one by one: they were its
/// descendants when observed, and must not outlive it unnoticed.
///
/// Runs on the blocking pool: each check reads `/proc/<pid>/stat` and the
/// agent's `environ`, which wait on the process's memory-map lock, and
/// each signal must follow its check at once.
pub(super) fn sigterm(
    track: &Tracking,
    start_time: u64,
    label: Label<'_>,
    group: Option<i32>,
    me: &Me,
) -> TermStep {
    let agent = track.agent;
    let mut changed = Vec::new();
    let others = verify_all(track, me, &mut changed);
    let (group, mut signalled) = match verify(agent, start_time, label, me) {
        Ok(leader) => {
            let group = group.filter(|g| leader.pgid == *g);
            match group {
                Some(g) => send_group(g, Signal::SIGTERM, me),
                None => send(&leader, Signal::SIGTERM),
            }
            (group, vec![agent])
        }
        Err(NotSignalled::Gone) if !others.is_empty() => (None, Vec::new()),
        Err(why) => {
            return TermStep {
                sent: Err(why),
                changed,
            }
        }
    };
    for v in &others {
        if group != Some(v.pgid) {
            send(v, Signal::SIGTERM);
        }
        signalled.push(v.pid);
    }
    drop(others);
    signalled.sort_unstable();
    TermStep {
        sent: Ok((group, signalled)),
        changed,
    }
}

/// What the SIGKILL step did.
pub(super) struct KillStep {
    pub group: Option<i32>,
    pub sent: Vec<i32>,
    pub changed: Vec<i32>,
}

/// [`sigterm`]'s twin after the grace, with SIGKILL: the group again only
/// while the agent still leads it and [`guard_group`] allows it. The agent
/// is re-identified by pid and start time alone: it had its SIGTERM as the
/// process observed, and a process that re-exec'd itself without its
/// labels (or rewrote its environment) is still that process. On the
/// blocking pool for the same reasons.
pub(super) fn sigkill(
    track: &Tracking,
    group: Option<i32>,
    snap: &Snapshot,
    ancestors: &HashSet<i32>,
    me: &Me,
) -> KillStep {
    let agent = track.agent;
    let mut changed = Vec::new();
    let others = verify_all(track, me, &mut changed);
    let mut kill_group = None;
    let mut sent_kill: Vec<i32> = others.iter().map(|v| v.pid).collect();
    if let Some(&start) = track.procs.get(&agent) {
        match verify(agent, start, Label::Ignored, me) {
            Ok(leader) => {
                // The group again (processes that joined it during the
                // grace are the agent's too), if the agent still leads it.
                kill_group = group
                    .filter(|g| leader.pgid == *g && guard_group(*g, me, snap, ancestors).is_ok());
                match kill_group {
                    Some(g) => send_group(g, Signal::SIGKILL, me),
                    None => send(&leader, Signal::SIGKILL),
                }
                sent_kill.push(agent);
            }
            Err(NotSignalled::Gone) => {}
            Err(why) => {
                // Only another start time gets here: the agent is gone and
                // its pid names another process.
                tracing::warn!(pid = agent, %why, "agent not killed");
                changed.push(agent);
            }
        }
    }
    for v in &others {
        if kill_group != Some(v.pgid) {
            send(v, Signal::SIGKILL);
        }
    }
    drop(others);
    sent_kill.sort_unstable();
    KillStep {
        group: kill_group,
        sent: sent_kill,
        changed,
    }
}

/// This process: never signalled, nor its group.
#[derive(Clone, Copy)]
pub(super) struct Me {
    pub pid: i32,
    pub pgid: i32,
}

impl Me {
    pub fn current() -> Me {
        Me {
            pid: std::process::id() as i32,
            pgid: nix::unistd::getpgrp().as_raw(),
        }
    }
}

/// Refuses the pids that are never signalled alone: 0 and negatives
/// (`kill(2)` reads them as groups), 1 (init), and this process.
pub(super) fn guard(pid: i32, me: &Me) -> Result<(), String> {
    if pid <= 0 {
        Err(format!(
            "pid {pid} names no single process (0 and negative pids address process groups)"
        ))
    } else if pid == 1 {
        Err("pid 1 is init".to_owned())
    } else if pid == me.pid {
        Err(format!("pid {pid} is this controller"))
    } else {
        Ok(())
    }
}

/// Refuses the groups that are never signalled: 0, 1 and negatives, this
/// process's own group, and a group holding one of its ancestors.
pub(super) fn guard_group(
    pgid: i32,
    me: &Me,
    snap: &Snapshot,
    ancestors: &HashSet<i32>,
) -> Result<(), String> {
    if pgid <= 1 {
        return Err(format!("process group {pgid} is never signalled"));
    }
    if pgid == me.pgid || pgid == me.pid {
        return Err(format!(
            "process group {pgid} is this controller's own (pid {})",
            me.pid
        ));
    }
    if let Some(a) = snap
        .entries
        .values()
        .find(|e| e.pgid == pgid && (ancestors.contains(&e.pid) || e.pid == me.pid))
    {
        return Err(format!(
            "process group {pgid} holds pid {}, an ancestor of this controller",
            a.pid
        ));
    }
    Ok(())
}

/// A process verified to be the one expected, with a pidfd on it when the
/// kernel has them: a signal sent through it reaches that process or none.
pub(super) struct Verified {
    pid: i32,
    pidfd: Option<OwnedFd>,
    pgid: i32,
}

pub(super) enum Check {
    Same(Verified),
    Gone,
    Differs(NotSignalled),
}

/// Opens a pidfd on `pid`, then checks through `/proc` that it is still
/// the process that started at `start_time`, alive, and carrying the chat
/// label `label` asks for. Opening first makes the check bind the pidfd:
/// had the pid been reused before the open, the check would see the other
/// process's start time.
pub(super) fn check(pid: i32, start_time: u64, label: Label<'_>, me: &Me) -> Check {
    if let Err(why) = guard(pid, me) {
        return Check::Differs(NotSignalled::Protected { why });
    }
    let pidfd = match pidfd_open(pid) {
        Ok(fd) => Some(fd),
        Err(Errno::ESRCH) => return Check::Gone,
        Err(e) => {
            tracing::debug!(pid, error = %e, "pidfd_open failed; falling back to kill(2)");
            None
        }
    };
    let Ok(process) = Process::new(pid) else {
        return Check::Gone;
    };
    let Ok(stat) = process.stat() else {
        return Check::Gone;
    };
    if stat.starttime != start_time {
        return Check::Differs(NotSignalled::StartTimeDiffers {
            found: stat.starttime,
            expected: start_time,
        });
    }
    if !is_alive_state(stat.state) {
        return Check::Gone;
    }
    let (expected, labels, absent_too) = match label {
        Label::Ignored => ("", None, false),
        Label::Is(chat, labels) => (chat, Some(labels), false),
        Label::IsOrAbsent(chat, labels) => (chat, Some(labels), true),
    };
    if let Some(labels) = labels {
        let found = identity_of(&process, labels).map_or(EnvChat::Unreadable, |i| i.env_chat);
        let accepted = match &found {
            EnvChat::Present(chat) => chat == expected,
            EnvChat::Absent => absent_too,
            EnvChat::Unreadable => false,
        };
        if !accepted {
            // A process that exits while being read loses its environment.
            if process.stat().map_or(true, |s| !is_alive_state(s.state)) {
                return Check::Gone;
            }
            return Check::Differs(NotSignalled::LabelDiffers {
                found: match found {
                    EnvChat::Present(chat) => Some(chat),
                    EnvChat::Absent | EnvChat::Unreadable => None,
                },
                expected: expected.to_owned(),
            });
        }
    }
    Check::Same(Verified {
        pid,
        pidfd,
        pgid: stat.pgrp,
    })
}

/// [`check`] as a result: the verified process, or why it is not signalled.
pub(super) fn verify(
    pid: i32,
    start_time: u64,
    label: Label<'_>,
    me: &Me,
) -> Result<Verified, NotSignalled> {
    match check(pid, start_time, label, me) {
        Check::Same(v) => Ok(v),
        Check::Gone => Err(NotSignalled::Gone),
        Check::Differs(why) => Err(why),
    }
}

/// Verifies every tracked process but the agent, by pid and start time;
/// those whose pid now names another process are added to `changed`.
fn verify_all(track: &Tracking, me: &Me, changed: &mut Vec<i32>) -> Vec<Verified> {
    let mut out = Vec::new();
    for (&pid, &start) in &track.procs {
        if pid == track.agent {
            continue;
        }
        match check(pid, start, Label::Ignored, me) {
            Check::Same(v) => out.push(v),
            Check::Gone => {}
            Check::Differs(why) => {
                tracing::info!(pid, %why, "not signalled");
                changed.push(pid);
            }
        }
    }
    out
}

/// Sends `sig` to a verified process. Failure (it exited meanwhile, or we
/// may not signal it) is logged; what survives is reported by the caller.
fn send(v: &Verified, sig: Signal) {
    let result = match &v.pidfd {
        Some(fd) => pidfd_send_signal(fd, sig).map_err(|e| e.to_string()),
        None => nix::sys::signal::kill(Pid::from_raw(v.pid), sig).map_err(|e| e.to_string()),
    };
    if let Err(error) = result {
        tracing::debug!(pid = v.pid, signal = %sig, %error, "signal not delivered");
    }
}

/// `killpg(pgid, sig)`, refused for the groups [`guard_group`] protects
/// (checked again here, so no code path can signal our own group).
pub(super) fn send_group(pgid: i32, sig: Signal, me: &Me) {
    if pgid <= 1 || pgid == me.pgid || pgid == me.pid {
        tracing::error!(pgid, "refusing to signal a protected process group");
        return;
    }
    if let Err(error) = nix::sys::signal::killpg(Pid::from_raw(pgid), sig) {
        tracing::debug!(pgid, signal = %sig, %error, "group signal not delivered");
    }
}

/// `pidfd_open(2)`: a descriptor that names this process and no later
/// holder of its pid. nix has no wrapper for it.
pub(in crate::act) fn pidfd_open(pid: i32) -> Result<OwnedFd, Errno> {
    if pid <= 0 {
        return Err(Errno::ESRCH);
    }
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor
    // or -1; no memory is passed.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: the kernel just returned this descriptor, owned by no one else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// `pidfd_send_signal(2)` with no `siginfo`: the signal reaches the process
/// `fd` names, or nothing if it has exited.
pub(in crate::act) fn pidfd_send_signal(fd: &OwnedFd, sig: Signal) -> Result<(), Errno> {
    // SAFETY: a live descriptor, a signal number, a null siginfo (allowed:
    // the kernel then fills it in as for kill(2)) and no flags.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            sig as libc::c_int,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    Errno::result(r).map(drop)
}
