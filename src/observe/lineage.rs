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
//!   pid *and* start time. Events come in order, so a parent's exit (which
//!   removes its tie) follows its forks: a fork by a tied pid is that
//!   process's, even when it has exited by the time the event is read (the
//!   intermediate of a double fork). When events are lost, every tie whose
//!   pid no longer has its start time is dropped at once: a pid reused
//!   after a lost exit event ties nothing.
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
use std::sync::{Arc, Weak};

use nix::libc;
use parking_lot::Mutex;
use procfs::process::Process;

use super::processes::{self, LabelNames};
use crate::model::Tied;

/// The connector's process-events channel (`CN_IDX_PROC`, `CN_VAL_PROC`).
const CN_IDX_PROC: u32 = 1;
const CN_VAL_PROC: u32 = 1;
/// The socket's queue: a host that forks in bursts while the thread waits
/// for a lock loses fewer events with a large one.
const QUEUE: libc::c_int = 8 << 20;
/// The start time of a tie whose process had exited when its fork was
/// read: no live process has it (start times count from boot, and a
/// process started at 0 is the kernel's own).
const GONE: u64 = 0;
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

#[derive(Default)]
struct State {
    tied: HashMap<i32, Tie>,
    /// Receive errors that lost events (`ENOBUFS`).
    lost: u64,
    /// Why the connector stopped, if it did.
    error: Option<String>,
    /// The thread has taken a datagram off the socket and not yet applied
    /// it (see [`Lineage::caught_up`]).
    handling: bool,
}

/// The lineage listener; it stops when the last handle is dropped.
#[derive(Clone)]
pub struct Lineage {
    state: Arc<Mutex<State>>,
    fd: Arc<OwnedFd>,
}

impl Lineage {
    /// Subscribes to the process connector and follows it on a thread of
    /// its own; an error when the socket cannot be opened (no
    /// `CAP_NET_ADMIN`, no `AF_NETLINK`).
    pub fn start(labels: LabelNames) -> io::Result<Lineage> {
        let fd = Arc::new(subscribe(QUEUE)?);
        let state = Arc::new(Mutex::new(State::default()));
        let weak = Arc::downgrade(&state);
        let lineage = Lineage {
            state,
            fd: Arc::clone(&fd),
        };
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
    /// that what they fork from now on is followed. A process's labels
    /// outrank its lineage: one forked by another chat's agent that now
    /// carries a chat's labels is that chat's from here on, as the label
    /// scan spares it with its descendants.
    pub fn seed(&self, labelled: &[crate::model::AgentProcess]) {
        let mut st = self.state.lock();
        for p in labelled {
            let tie = Tie {
                start_time: p.start_time,
                chat_id: p.chat_id.clone(),
                via: p.pid,
            };
            match st.tied.get(&p.pid) {
                Some(t) if t.start_time == p.start_time && t.chat_id == p.chat_id => {}
                _ => {
                    st.tied.insert(p.pid, tie);
                }
            }
        }
    }

    /// Whether every event the kernel has queued so far is applied, waiting
    /// up to `within` for the thread to get there: a caller that has just
    /// seen processes die (a teardown) then reads ties that include what
    /// they forked before dying.
    pub fn caught_up(&self, within: std::time::Duration) -> bool {
        let until = std::time::Instant::now() + within;
        loop {
            // The thread marks a datagram taken before it takes it (after
            // poll): either it is marked, or it is still in the queue.
            let handling = self.state.lock().handling;
            if !handling && !queued(&self.fd) {
                return true;
            }
            if std::time::Instant::now() >= until {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    /// Times events were lost since the start.
    pub fn lost(&self) -> u64 {
        self.state.lock().lost
    }

    /// The tied processes alive now that the scan did not list as
    /// labelled (`labelled`): checked by pid and start time; the dead are
    /// forgotten. With what was lost or went wrong, for the pass's report.
    pub fn hidden(&self, labelled: &HashSet<i32>) -> (Vec<Tied>, Option<String>) {
        // The labelled ones the scan has just read are not read again.
        let ties: Vec<(i32, Tie)> = self
            .state
            .lock()
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
                // Its exit event, still on its way, removes it.
                _ if tie.start_time == GONE => {}
                _ => dead.push((pid, tie.start_time)),
            }
        }
        let mut st = self.state.lock();
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

/// A netlink socket subscribed to the process events, with a queue of
/// `queue` bytes.
fn subscribe(queue: libc::c_int) -> io::Result<OwnedFd> {
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
    if set_option(&fd, libc::SO_RCVBUFFORCE, &queue).is_err() {
        let _ = set_option(&fd, libc::SO_RCVBUF, &queue);
    }
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

fn follow(fd: Arc<OwnedFd>, state: Weak<Mutex<State>>, labels: LabelNames) {
    let mut buf = vec![0u8; 8192];
    loop {
        let Some(state) = state.upgrade() else {
            return;
        };
        // The timeout lets the thread notice that its owner is gone.
        let mut ready = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&mut ready, 1, 500) } <= 0 {
            continue;
        }
        state.lock().handling = true;
        let got = receive(&fd, &mut buf, &state, &labels);
        state.lock().handling = false;
        if got == Received::Failed {
            return;
        }
    }
}

/// Whether a datagram (or an error) waits on the socket.
fn queued(fd: &OwnedFd) -> bool {
    let mut byte = [0u8; 1];
    // SAFETY: a buffer of the length given; nothing is taken off.
    let n = unsafe {
        libc::recv(
            fd.as_raw_fd(),
            byte.as_mut_ptr().cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    n >= 0 || io::Error::last_os_error().raw_os_error() != Some(libc::EAGAIN)
}

/// What one receive brought.
#[derive(Debug, PartialEq, Eq)]
enum Received {
    Events,
    /// Nothing queued.
    Idle,
    /// The kernel's queue overflowed: events were dropped, counted.
    Lost,
    /// The socket failed; why is kept and the lineage stops.
    Failed,
}

fn receive(fd: &OwnedFd, buf: &mut [u8], state: &Mutex<State>, labels: &LabelNames) -> Received {
    // SAFETY: a buffer of the length given.
    let n = unsafe {
        libc::recv(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT,
        )
    };
    if n >= 0 {
        handle(&buf[..n as usize], state, labels);
        return Received::Events;
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EAGAIN | libc::EINTR) => Received::Idle,
        Some(libc::ENOBUFS) => {
            state.lock().lost += 1;
            revalidate(state);
            Received::Lost
        }
        _ => {
            state.lock().error = Some(e.to_string());
            Received::Failed
        }
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
            // The parent's exit comes after its forks in the stream, and
            // removes its tie: a pid found tied here is still the process
            // tied, even when it has exited since (an intermediate of a
            // double fork exits at once; reading its start time now would
            // lose its child). Only lost events break that order, and
            // they revalidate every tie ([`revalidate`]).
            let Some(tie) = state.lock().tied.get(&parent).cloned() else {
                return;
            };
            // A child gone already (the intermediate of a double fork) is
            // still tied, so that its own forks, further down the stream,
            // are: with no start time (`GONE`), it never matches a live
            // process, and its exit event removes it.
            let start = start_time(child).unwrap_or(GONE);
            state.lock().tied.insert(
                child,
                Tie {
                    start_time: start,
                    ..tie
                },
            );
        }
        PROC_EVENT_EXEC => {
            let Some(pid) = arg(0) else { return };
            let Some(id) = processes::identity(pid, labels) else {
                return;
            };
            if let Some(chat) = id.chat_label {
                state.lock().tied.insert(
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
                state.lock().tied.remove(&pid);
            }
        }
        _ => {}
    }
}

/// After lost events, exits may be missing and their pids reused: only
/// the ties whose pid still has the start time tied are kept.
fn revalidate(state: &Mutex<State>) {
    let ties: Vec<(i32, u64)> = state
        .lock()
        .tied
        .iter()
        .map(|(p, t)| (*p, t.start_time))
        .collect();
    let stale: Vec<(i32, u64)> = ties
        .into_iter()
        .filter(|(pid, start)| start_time(*pid) != Some(*start))
        .collect();
    let mut st = state.lock();
    for (pid, start) in stale {
        if st.tied.get(&pid).is_some_and(|t| t.start_time == start) {
            st.tied.remove(&pid);
        }
    }
}

fn start_time(pid: i32) -> Option<u64> {
    Process::new(pid).ok()?.stat().ok().map(|s| s.starttime)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> LabelNames {
        LabelNames {
            chat: "BOO_LINEAGE_TEST_CHAT".into(),
            session: "BOO_LINEAGE_TEST_SESSION".into(),
            agent: "BOO_LINEAGE_TEST_AGENT".into(),
            instance_label: "BOO_LINEAGE_TEST_INSTANCE".into(),
            instance: None,
        }
    }

    /// Events dropped by a full queue are counted and said with every
    /// pass: the lineage never passes for complete when it is not.
    #[test]
    fn events_lost_to_a_full_queue_are_counted_and_said() {
        // The smallest queue the kernel allows, not read while the host
        // forks: it overflows.
        let fd = subscribe(1).expect("the connector (needs CAP_NET_ADMIN: run as root)");
        for _ in 0..200 {
            std::process::Command::new("true").status().unwrap();
        }
        let state = Arc::new(Mutex::new(State::default()));
        let mut buf = vec![0u8; 8192];
        let mut lost = 0;
        loop {
            match receive(&fd, &mut buf, &state, &labels()) {
                Received::Events => {}
                Received::Lost => lost += 1,
                Received::Idle => break,
                Received::Failed => panic!("{:?}", state.lock().error),
            }
        }
        assert!(lost >= 1, "200 forks did not overflow the smallest queue");
        let lineage = Lineage {
            state,
            fd: Arc::new(fd),
        };
        assert_eq!(lineage.lost(), lost);
        let (_, note) = lineage.hidden(&HashSet::new());
        let note = note.expect("lost events are said");
        assert!(
            note.contains(&format!("lost events {lost} time(s)")),
            "{note}"
        );
    }

    /// A fork by a tied process ties the child; a fork by a pid the
    /// lineage does not know ties nothing; an exec with a chat's label
    /// ties that process.
    #[test]
    fn a_fork_of_a_tied_process_is_tied_and_nothing_else_is() {
        let labels = labels();
        let lineage = Lineage::start(labels.clone()).expect("the connector (run as root)");
        // Labelled at exec: tied. It forks an unlabelled grandchild into a
        // session of its own, which is tied through it.
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("grandchild");
        let mut agent = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "sleep 0.3; (setsid env -i sh -c 'echo $$ > {}; exec sleep 1000' &); exec sleep 1000",
                out.display()
            ))
            .env(&labels.chat, "lineage-chat")
            .env(&labels.agent, "test-agent")
            .spawn()
            .unwrap();
        let mut stranger = std::process::Command::new("env")
            .args(["-i", "sleep", "1000"])
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let grandchild: i32 = loop {
            if let Some(pid) = std::fs::read_to_string(&out)
                .ok()
                .and_then(|s| s.trim().parse().ok())
            {
                break pid;
            }
            assert!(std::time::Instant::now() < deadline, "no grandchild");
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        assert!(lineage.caught_up(std::time::Duration::from_secs(5)));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let tied = loop {
            let (tied, note) = lineage.hidden(&HashSet::from([agent.id() as i32]));
            assert_eq!(note, None);
            if tied.iter().any(|t| t.pid == grandchild) {
                break tied;
            }
            assert!(std::time::Instant::now() < deadline, "{tied:?}");
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        let g = tied.iter().find(|t| t.pid == grandchild).unwrap();
        assert_eq!(g.chat_id, "lineage-chat");
        assert!(
            !tied.iter().any(|t| t.pid == stranger.id() as i32),
            "an unrelated process is not tied: {tied:?}"
        );
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(grandchild),
            nix::sys::signal::Signal::SIGKILL,
        );
        for c in [&mut agent, &mut stranger] {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The intermediate of a double fork exits at once; when the lineage
    /// reads the fork events only after that (a busy host), the grandchild
    /// is tied all the same.
    #[test]
    fn a_grandchild_is_tied_though_its_parent_exited_before_the_event_was_read() {
        let labels = labels();
        let lineage = Lineage::start(labels.clone()).expect("the connector (run as root)");
        let dir = tempfile::tempdir().unwrap();
        let (go, out) = (dir.path().join("go"), dir.path().join("grandchild"));
        let mut agent = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "while [ ! -e {go} ]; do sleep 0.01; done; \
                 (setsid env -i sh -c 'echo $$ > {out}; exec sleep 1000' &); exec sleep 1000",
                go = go.display(),
                out = out.display()
            ))
            .env(&labels.chat, "lineage-chat")
            .env(&labels.agent, "test-agent")
            .spawn()
            .unwrap();
        let wait = |what: &str, f: &dyn Fn() -> bool| {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while !f() {
                assert!(std::time::Instant::now() < deadline, "{what}");
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        };
        wait("the agent tied", &|| {
            lineage.caught_up(std::time::Duration::from_secs(1))
                && lineage.state.lock().tied.contains_key(&(agent.id() as i32))
        });
        // The thread cannot apply events while this is held: the double
        // fork happens, and its intermediate exits, before they are read.
        let held = lineage.state.lock();
        std::fs::write(&go, "").unwrap();
        let grandchild: i32 = {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            loop {
                if let Some(pid) = std::fs::read_to_string(&out)
                    .ok()
                    .and_then(|s| s.trim().parse().ok())
                {
                    break pid;
                }
                assert!(std::time::Instant::now() < deadline, "no grandchild");
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        };
        // Its parent, the subshell, is gone (reparented to the reaper).
        let ppid_is_not_agent = || {
            Process::new(grandchild)
                .and_then(|p| p.stat())
                .is_ok_and(|s| s.ppid != agent.id() as i32 && s.ppid != 0)
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !ppid_is_not_agent() {
            assert!(
                std::time::Instant::now() < deadline,
                "the subshell never exited"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        drop(held);
        assert!(lineage.caught_up(std::time::Duration::from_secs(5)));
        let (tied, _) = lineage.hidden(&HashSet::new());
        let kill = |pid: i32| {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        };
        kill(grandchild);
        let _ = agent.kill();
        let _ = agent.wait();
        assert!(
            tied.iter()
                .any(|t| t.pid == grandchild && t.chat_id == "lineage-chat"),
            "the grandchild {grandchild} is not tied: {tied:?}"
        );
    }

    /// A process tied to one chat by its lineage that the scan finds
    /// labelled with another is that other chat's: labels outrank lineage.
    #[test]
    fn a_scan_label_outranks_a_lineage_tie() {
        let lineage = Lineage {
            state: Arc::new(Mutex::new(State::default())),
            fd: Arc::new(subscribe(1).expect("the connector (run as root)")),
        };
        let me = std::process::id() as i32;
        let start = start_time(me).unwrap();
        lineage.state.lock().tied.insert(
            me,
            Tie {
                start_time: start,
                chat_id: "gone".into(),
                via: 1,
            },
        );
        let labelled = crate::model::AgentProcess {
            pid: me,
            ppid: 1,
            pgid: me,
            sid: me,
            start_time: start,
            started_at: std::time::SystemTime::now(),
            state: 'S',
            chat_id: "live".into(),
            session_id: None,
            agent: None,
            instance: None,
            command: String::new(),
            cwd: None,
        };
        lineage.seed(std::slice::from_ref(&labelled));
        let tie = lineage.state.lock().tied.get(&me).cloned().unwrap();
        assert_eq!(tie.chat_id, "live");
        assert_eq!(tie.via, me);
        // The same chat again keeps the tie as it was.
        lineage.seed(std::slice::from_ref(&labelled));
        assert_eq!(lineage.state.lock().tied.get(&me), Some(&tie));
    }
}
