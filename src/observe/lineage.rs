//! Fork lineage of labelled agents, from the kernel's process connector
//! (`processes.lineage`).
//!
//! Why: a scan of environments sees only what carries the labels when the
//! pass looks. An agent's grandchild that double-forked into a session of
//! its own with an empty environment (`setsid env -i …`), or an agent that
//! wiped its own environment, is no longer labelled and no longer below a
//! labelled process. The kernel reports every fork, exec and exit as it
//! happens (`NETLINK_CONNECTOR`, group `CN_IDX_PROC`): a process forked by
//! a process tied to a chat is tied to that chat too, whatever it does to
//! its environment or its parent links afterwards.
//!
//! # Guarantees
//! - A process is tied only by what was seen: its labels at an exec, the
//!   scan's labels (which seed the processes started before this
//!   controller), or a fork by a process tied already. A tie is keyed by
//!   pid *and* start time, and a fork counts only while the forking pid
//!   still has the start time it was tied with: a pid reused after a lost
//!   exit event ties nothing.
//! - Nothing is guessed: what was forked while the controller was not
//!   listening (before it started, or while events were lost) is not
//!   tied; lost events are counted and reported with each pass.
//! - A tied process is only ever a candidate: the planner applies the
//!   chat's liveness, and the termination's first check accepts it only
//!   with that chat's label or none (never another chat's).
//!
//! Needs `CAP_NET_ADMIN` (root has it) and `AF_NETLINK`; where the socket
//! cannot be opened, why is reported and the label scan goes on alone.

use std::collections::{HashMap, HashSet};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex, Weak};

use nix::libc;
use procfs::process::Process;

use super::processes::{self, LabelNames};
use crate::act::unpoisoned::lock;

/// The connector's process-events channel (`CN_IDX_PROC`, `CN_VAL_PROC`).
const CN_IDX_PROC: u32 = 1;
const CN_VAL_PROC: u32 = 1;
/// `PROC_CN_MCAST_LISTEN`.
const MCAST_LISTEN: u32 = 1;
const PROC_EVENT_FORK: u32 = 0x1;
const PROC_EVENT_EXEC: u32 = 0x2;
const PROC_EVENT_EXIT: u32 = 0x8000_0000;
/// `nlmsghdr` (16 bytes) + `cn_msg` (20): where `proc_event` starts.
const EVENT: usize = 36;
/// `proc_event`: `what`, `cpu`, `timestamp_ns`, then the event's data.
const DATA: usize = EVENT + 16;

/// Why a process is tied to a chat.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tie {
    pub start_time: u64,
    pub chat_id: String,
    /// The labelled process it descends from (itself when labelled).
    pub via: i32,
}

/// A tied process alive now without its chat's labels.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Tied {
    pub pid: i32,
    pub ppid: i32,
    pub pgid: i32,
    pub start_time: u64,
    pub started_at: std::time::SystemTime,
    pub chat_id: String,
    pub via: i32,
    pub command: String,
}

#[derive(Default)]
struct State {
    tied: HashMap<i32, Tie>,
    /// Receive errors that lost events (`ENOBUFS`).
    lost: u64,
    /// Why the connector stopped, if it did.
    error: Option<String>,
}

/// The lineage listener; it stops when the last handle is dropped.
#[derive(Clone)]
pub struct Lineage {
    state: Arc<Mutex<State>>,
}

impl Lineage {
    /// Subscribes to the process connector and follows it on a thread of
    /// its own; an error when the socket cannot be opened (no
    /// `CAP_NET_ADMIN`, no `AF_NETLINK`).
    pub fn start(labels: LabelNames) -> io::Result<Lineage> {
        let fd = subscribe()?;
        let state = Arc::new(Mutex::new(State::default()));
        let weak = Arc::downgrade(&state);
        let lineage = Lineage { state };
        let seeded = lineage.clone();
        std::thread::Builder::new()
            .name("boo-lineage".into())
            .spawn(move || {
                // Subscribed first, then the agents already running are
                // seeded: nothing forked between the two is missed.
                seeded.seed(&processes::scan(&labels).processes);
                drop(seeded);
                follow(fd, weak, labels)
            })?;
        Ok(lineage)
    }

    /// Ties the labelled processes a scan found (each to its own chat), so
    /// that what they fork from now on is followed.
    pub fn seed(&self, labelled: &[crate::model::AgentProcess]) {
        let mut st = lock(&self.state);
        for p in labelled {
            let tie = Tie {
                start_time: p.start_time,
                chat_id: p.chat_id.clone(),
                via: p.pid,
            };
            match st.tied.get(&p.pid) {
                Some(t) if t.start_time == p.start_time => {}
                _ => {
                    st.tied.insert(p.pid, tie);
                }
            }
        }
    }

    /// The tied processes alive now that the scan did not list as
    /// labelled (`labelled`): checked by pid and start time; the dead are
    /// forgotten. With what was lost or went wrong, for the pass's report.
    pub fn hidden(&self, labelled: &HashSet<i32>) -> (Vec<Tied>, Option<String>) {
        // The labelled ones the scan has just read are not read again.
        let ties: Vec<(i32, Tie)> = lock(&self.state)
            .tied
            .iter()
            .filter(|(p, _)| !labelled.contains(p))
            .map(|(p, t)| (*p, t.clone()))
            .collect();
        let boot = processes::boot_time();
        let mut out = Vec::new();
        let mut dead = Vec::new();
        for (pid, tie) in ties {
            let stat =
                Process::new(pid).and_then(|p| Ok((p.stat()?, p.cmdline().unwrap_or_default())));
            match stat {
                Ok((s, cmd))
                    if s.starttime == tie.start_time && processes::is_alive_state(s.state) =>
                {
                    out.push(Tied {
                        pid,
                        ppid: s.ppid,
                        pgid: s.pgrp,
                        start_time: s.starttime,
                        started_at: processes::started_at(boot, s.starttime),
                        chat_id: tie.chat_id,
                        via: tie.via,
                        command: cmd.join(" "),
                    });
                }
                _ => dead.push((pid, tie.start_time)),
            }
        }
        let mut st = lock(&self.state);
        for (pid, start) in dead {
            if st.tied.get(&pid).is_some_and(|t| t.start_time == start) {
                st.tied.remove(&pid);
            }
        }
        let note = match (&st.error, st.lost) {
            (Some(e), _) => Some(format!("fork lineage stopped: {e}; only labels are seen")),
            (None, 0) => None,
            (None, n) => Some(format!(
                "fork lineage lost events {n} time(s) (the kernel's queue overflowed): a process \
                 forked then is not followed"
            )),
        };
        out.sort_by_key(|t| t.pid);
        (out, note)
    }
}

/// A netlink socket subscribed to the process events.
fn subscribe() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the descriptor is owned below.
    let raw = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            libc::NETLINK_CONNECTOR,
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: just returned by the kernel, owned by no one else.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: a zeroed sockaddr_nl is valid; the fields are set below.
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    addr.nl_groups = CN_IDX_PROC;
    // SAFETY: a valid address of the size given.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            std::ptr::addr_of!(addr).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // A timeout lets the thread notice that its owner is gone; a large
    // queue loses fewer events on a host that forks in bursts.
    let timeout = libc::timeval {
        tv_sec: 0,
        tv_usec: 500_000,
    };
    set_option(&fd, libc::SO_RCVTIMEO, &timeout)?;
    let _ = set_option(&fd, libc::SO_RCVBUFFORCE, &(8 << 20 as libc::c_int));
    let mut msg = Vec::with_capacity(40);
    msg.extend_from_slice(&40u32.to_ne_bytes()); // nlmsg_len
    msg.extend_from_slice(&(libc::NLMSG_DONE as u16).to_ne_bytes());
    msg.extend_from_slice(&0u16.to_ne_bytes()); // flags
    msg.extend_from_slice(&0u32.to_ne_bytes()); // seq
    msg.extend_from_slice(&std::process::id().to_ne_bytes());
    msg.extend_from_slice(&CN_IDX_PROC.to_ne_bytes());
    msg.extend_from_slice(&CN_VAL_PROC.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes()); // seq
    msg.extend_from_slice(&0u32.to_ne_bytes()); // ack
    msg.extend_from_slice(&4u16.to_ne_bytes()); // len
    msg.extend_from_slice(&0u16.to_ne_bytes()); // flags
    msg.extend_from_slice(&MCAST_LISTEN.to_ne_bytes());
    // SAFETY: a buffer of the length given.
    let sent = unsafe { libc::send(fd.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

fn set_option<T>(fd: &OwnedFd, name: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: a valid pointer to a value of the size given.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            name,
            std::ptr::from_ref(value).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn follow(fd: OwnedFd, state: Weak<Mutex<State>>, labels: LabelNames) {
    let mut buf = vec![0u8; 8192];
    loop {
        // SAFETY: a buffer of the length given.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        let Some(state) = state.upgrade() else {
            return;
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EAGAIN | libc::EINTR) => continue,
                Some(libc::ENOBUFS) => lock(&state).lost += 1,
                _ => {
                    lock(&state).error = Some(e.to_string());
                    return;
                }
            }
            continue;
        }
        handle(&buf[..n as usize], &state, &labels);
    }
}

fn word(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// One datagram: one or more netlink messages, each one process event.
fn handle(mut b: &[u8], state: &Mutex<State>, labels: &LabelNames) {
    while let Some(len) = word(b, 0).map(|l| l as usize) {
        if len < 16 || len > b.len() {
            return;
        }
        event(&b[..len], state, labels);
        b = &b[(len + 3) & !3..];
    }
}

fn event(m: &[u8], state: &Mutex<State>, labels: &LabelNames) {
    let Some(what) = word(m, EVENT) else { return };
    let arg = |i: usize| word(m, DATA + 4 * i).map(|v| v as i32);
    match what {
        PROC_EVENT_FORK => {
            let (Some(parent), Some(child), Some(child_tgid)) = (arg(1), arg(2), arg(3)) else {
                return;
            };
            if child != child_tgid {
                return; // a thread
            }
            let Some(tie) = lock(state).tied.get(&parent).cloned() else {
                return;
            };
            // The forking pid must still be the process tied.
            if start_time(parent) != Some(tie.start_time) {
                return;
            }
            if let Some(start) = start_time(child) {
                lock(state).tied.insert(
                    child,
                    Tie {
                        start_time: start,
                        ..tie
                    },
                );
            }
        }
        PROC_EVENT_EXEC => {
            let Some(pid) = arg(0) else { return };
            let Some(id) = processes::identity(pid, labels) else {
                return;
            };
            if let Some(chat) = id.chat_label {
                lock(state).tied.insert(
                    pid,
                    Tie {
                        start_time: id.start_time,
                        chat_id: chat,
                        via: pid,
                    },
                );
            }
        }
        PROC_EVENT_EXIT => {
            let (Some(pid), Some(tgid)) = (arg(0), arg(1)) else {
                return;
            };
            if pid == tgid {
                lock(state).tied.remove(&pid);
            }
        }
        _ => {}
    }
}

fn start_time(pid: i32) -> Option<u64> {
    Process::new(pid).ok()?.stat().ok().map(|s| s.starttime)
}
