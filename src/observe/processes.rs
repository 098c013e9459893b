//! Agent processes on this host, read from `/proc`.
//!
//! An agent process is one whose environment carries both the chat label
//! and the agent label (`BOO_CHAT_ID` and `BOO_AGENT` by default, see
//! [`LabelNames`]) with non-empty values; its descendants are the agent's
//! too, by ancestry, labelled or not. Two labels rather than one: a single
//! variable that leaked into an ordinary environment (a shell that
//! exported it, a login script) must not make processes candidates for
//! termination; the launcher sets both.
//!
//! With an instance configured ([`LabelNames::instance`],
//! `processes.instance`), a process is an agent only if its instance label
//! (`BOO_INSTANCE` by default) carries exactly that value too: an agent of
//! another controller sharing the host, or one started without the label,
//! is not this controller's, is never listed, and fails the re-check right
//! before a signal ([`identity`]) the same way.
//!
//! Everything here is a best-effort read of a moving target: a process that
//! vanishes mid-read, belongs to a user we may not inspect, or is otherwise
//! unreadable is left out (logged at debug level), never an error. What
//! could not be read is counted, by the real uid of the process
//! ([`Scan::skipped`], [`Scan::unreadable_by_uid`]): a controller that is
//! not root cannot read other users' environments nor a setuid program's,
//! and an agent among those is invisible to it. A process gone mid-read is
//! counted apart ([`Scan::gone`]); a kernel thread (whose environment only
//! root may open, and which is never an agent) not at all. Zombies (`Z`) and dead tasks (`X`) are not alive and are never
//! listed. The calling process itself is never listed.
//!
//! Cost: [`scan`] runs every pass on hosts with thousands of processes. It
//! reads each process's environment first (one small read through an
//! already open `/proc/<pid>` handle, searched in place, the processes
//! spread over the cores) and reads `stat`, `cmdline` and `cwd`
//! only for the few that carry the label. [`Snapshot::take`] reads `stat`
//! alone; [`processes_in`] reads `cwd` alone and `stat`/`cmdline` only for
//! the processes that match.

use std::collections::{HashMap, HashSet, VecDeque};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime};

use procfs::process::{Process, Stat};
use serde::Serialize;

use crate::model::AgentProcess;

/// The names of the environment variables that label an agent process.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LabelNames {
    /// Marks an agent and names its chat (`BOO_CHAT_ID`).
    pub chat: String,
    /// Names the agent's session (`BOO_SESSION_ID`).
    pub session: String,
    /// Names the agent (`BOO_AGENT`).
    pub agent: String,
    /// Names the controller instance an agent belongs to (`BOO_INSTANCE`).
    pub instance_label: String,
    /// This controller's instance: when set, only processes whose
    /// `instance_label` has exactly this value are agents.
    pub instance: Option<String>,
}

impl Default for LabelNames {
    fn default() -> Self {
        LabelNames {
            chat: "BOO_CHAT_ID".into(),
            session: "BOO_SESSION_ID".into(),
            agent: "BOO_AGENT".into(),
            instance_label: "BOO_INSTANCE".into(),
            instance: None,
        }
    }
}

impl From<&crate::config::Processes> for LabelNames {
    fn from(p: &crate::config::Processes) -> Self {
        LabelNames {
            chat: p.chat_label.clone(),
            session: p.session_label.clone(),
            agent: p.agent_label.clone(),
            instance_label: p.instance_label.clone(),
            instance: p.instance().map(str::to_owned),
        }
    }
}

/// The result of [`scan`].
#[derive(Clone, Debug, Default, Serialize)]
pub struct Scan {
    /// Every live process carrying the chat label, by pid.
    pub processes: Vec<AgentProcess>,
    /// Processes still there whose environment (or, labelled, whose
    /// `stat`) could not be read: permission denied, most often. Whether
    /// they are agents is unknown.
    pub skipped: usize,
    /// [`Scan::skipped`] by the real uid of each process (`u32::MAX` when
    /// even that could not be read).
    pub unreadable_by_uid: std::collections::BTreeMap<u32, usize>,
    /// Processes that exited between the listing of `/proc` and their
    /// read: nothing is unknown about them.
    pub gone: usize,
}

/// A fresh read of one process, for the re-check right before a signal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Identity {
    /// Field 22 of `/proc/<pid>/stat`: with the pid, who the process is.
    pub start_time: u64,
    /// The state letter (`R`, `S`, `D`, `Z`, …).
    pub state: char,
    /// The value of the chat label, if the environment carries it and the
    /// agent label, both non-empty (a zombie's environment cannot be read:
    /// `None`).
    pub chat_label: Option<String>,
    /// The chat label alone, read raw (whatever the agent and instance
    /// labels say): how a process that no longer carries its labels is told
    /// from one whose environment cannot be read at all.
    pub env_chat: EnvChat,
    pub ppid: i32,
    pub pgid: i32,
}

/// What a process's environment says of the chat label, read raw.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "environ", content = "chat", rename_all = "snake_case")]
pub enum EnvChat {
    /// The environment could not be read (another user's process, a
    /// process gone mid-read): nothing is known of its labels.
    Unreadable,
    /// Read, with no non-empty chat label in it: never set, cleared by
    /// `exec env -i`, or overwritten in place (`setproctitle()` leaves
    /// `/proc/<pid>/environ` reading as zeros).
    Absent,
    /// The chat label's value.
    Present(String),
}

/// Whether a state letter of `/proc/<pid>/stat` belongs to a live process:
/// zombies (`Z`) and dead tasks (`X`, `x`) are gone.
pub fn is_alive_state(state: char) -> bool {
    !matches!(state, 'Z' | 'X' | 'x')
}

/// Every live process whose environment carries `labels.chat` and
/// `labels.agent` with non-empty values, except the calling process. See the module docs for
/// what is skipped and what it costs.
pub fn scan(labels: &LabelNames) -> Scan {
    let pids = match list_pids() {
        Ok(pids) => pids,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list /proc; no agent process observed");
            return Scan::default();
        }
    };
    let boot = boot_time();
    // Reading environments is most of a pass's cost on a busy host.
    let mut out = Scan::default();
    for seen in super::on_cores(&pids, 64, |pid| scan_one(*pid, labels, boot)) {
        match seen {
            Seen::Agent(agent) => out.processes.push(*agent),
            Seen::NotAnAgent => {}
            Seen::Gone => out.gone += 1,
            Seen::Unreadable { uid } => {
                out.skipped += 1;
                *out.unreadable_by_uid.entry(uid).or_default() += 1;
            }
        }
    }
    out.processes.sort_by_key(|p| p.pid);
    out
}

/// Every pid in `/proc` except this process's.
fn list_pids() -> std::io::Result<Vec<i32>> {
    let me = std::process::id() as i32;
    Ok(std::fs::read_dir("/proc")?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| *pid != me)
        .collect())
}

/// What the scan made of one pid.
enum Seen {
    Agent(Box<AgentProcess>),
    /// Unlabelled, a zombie, or a kernel thread.
    NotAnAgent,
    /// Gone mid-read.
    Gone,
    /// Not ours to read (or failing to read for another reason): by the
    /// real uid of the process.
    Unreadable {
        uid: u32,
    },
}

/// The `PF_KTHREAD` bit of the flags in `/proc/<pid>/stat`.
const PF_KTHREAD: u32 = 0x0020_0000;

/// What a failed read of `pid` through `process` means: the process is
/// gone, is a kernel thread, or is there and unreadable (by its real uid).
/// `stat` and `status` are readable by anyone while the process exists,
/// so they tell these apart.
fn unread(process: Option<&Process>, pid: i32, error: &dyn std::fmt::Display) -> Seen {
    let opened;
    let process = match process {
        Some(p) => p,
        None => match Process::new(pid) {
            Ok(p) => {
                opened = p;
                &opened
            }
            Err(_) => return Seen::Gone,
        },
    };
    match process.stat() {
        Err(_) => return Seen::Gone,
        Ok(stat) if !is_alive_state(stat.state) => return Seen::NotAnAgent,
        Ok(stat) if stat.flags & PF_KTHREAD != 0 => return Seen::NotAnAgent,
        Ok(_) => {}
    }
    let uid = process.status().map_or(u32::MAX, |s| s.ruid);
    tracing::debug!(pid, uid, error = %error, "process unreadable; counted, not judged");
    Seen::Unreadable { uid }
}

fn scan_one(pid: i32, labels: &LabelNames, boot: Option<u64>) -> Seen {
    let process = match Process::new(pid) {
        Ok(p) => p,
        Err(e) => return unread(None, pid, &e),
    };
    thread_local! {
        // One buffer per scanning thread: most processes are not agents,
        // and growing a fresh buffer for each would cost more than the read.
        static ENVIRON: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    ENVIRON.with_borrow_mut(|environ| {
        if let Err(e) = read_environ(&process, environ) {
            return unread(Some(&process), pid, &e);
        }
        let Some(chat_id) = agent_chat(environ, labels) else {
            return Seen::NotAnAgent;
        };
        agent_of(&process, chat_id, environ, labels, boot)
    })
}

fn agent_of(
    process: &Process,
    chat_id: String,
    environ: &[u8],
    labels: &LabelNames,
    boot: Option<u64>,
) -> Seen {
    let pid = process.pid;
    match read_agent(process, chat_id, environ, labels, boot) {
        Ok(Some(agent)) => Seen::Agent(Box::new(agent)),
        Ok(None) => Seen::NotAnAgent, // a zombie
        Err(e) => unread(Some(process), pid, &e),
    }
}

fn read_agent(
    process: &Process,
    chat_id: String,
    environ: &[u8],
    labels: &LabelNames,
    boot: Option<u64>,
) -> procfs::ProcResult<Option<AgentProcess>> {
    let stat = process.stat()?;
    if !is_alive_state(stat.state) {
        return Ok(None);
    }
    let command = command_line(process, &stat);
    let cwd = process.cwd().ok();
    Ok(Some(AgentProcess {
        pid: process.pid,
        ppid: stat.ppid,
        pgid: stat.pgrp,
        sid: stat.session,
        start_time: stat.starttime,
        started_at: started_at(boot, stat.starttime),
        state: stat.state,
        chat_id,
        session_id: label(environ, &labels.session),
        agent: label(environ, &labels.agent),
        instance: label(environ, &labels.instance_label),
        command,
        cwd,
    }))
}

/// A fresh read of `pid`: its start time, state, chat label, parent and
/// group; `None` when no such process exists or it cannot be read.
pub fn identity(pid: i32, labels: &LabelNames) -> Option<Identity> {
    if pid <= 0 {
        return None;
    }
    let process = Process::new(pid).ok()?;
    identity_of(&process, labels)
}

/// [`identity`] through an open `/proc/<pid>` handle: every read goes to
/// the same process, even if the pid is reused meanwhile.
pub(crate) fn identity_of(process: &Process, labels: &LabelNames) -> Option<Identity> {
    let stat = process.stat().ok()?;
    // A zombie's environment reads empty; any error means no label either.
    let mut environ = Vec::new();
    let readable = read_environ(process, &mut environ).is_ok();
    let chat_label = readable.then(|| agent_chat(&environ, labels)).flatten();
    let env_chat = match readable.then(|| label(&environ, &labels.chat)) {
        None => EnvChat::Unreadable,
        Some(None) => EnvChat::Absent,
        Some(Some(chat)) => EnvChat::Present(chat),
    };
    Some(Identity {
        start_time: stat.starttime,
        state: stat.state,
        chat_label,
        env_chat,
        ppid: stat.ppid,
        pgid: stat.pgrp,
    })
}

/// Live processes (labelled or not, never the calling process) whose
/// working directory is `dir` or inside it, with their command lines.
///
/// Paths are compared canonically, component by component (`/a/b` is not
/// inside `/a/bc`). A process whose working directory was deleted still
/// counts: the kernel shows it as `<old path> (deleted)`, and the old path
/// is what is compared.
pub fn processes_in(dir: &Path) -> Vec<(i32, String)> {
    let dir = canonical_or_normal(dir);
    let me = std::process::id() as i32;
    let Ok(all) = procfs::process::all_processes() else {
        tracing::warn!("cannot list /proc; no process observed");
        return Vec::new();
    };
    let mut out = Vec::new();
    for process in all.flatten() {
        if process.pid == me {
            continue;
        }
        let Ok(cwd) = process.cwd() else { continue };
        let cwd = effective_cwd(process.pid, cwd);
        if !cwd.starts_with(&dir) {
            continue;
        }
        let Ok(stat) = process.stat() else { continue };
        if !is_alive_state(stat.state) {
            continue;
        }
        out.push((process.pid, command_line(&process, &stat)));
    }
    out.sort();
    out
}

/// The path a process's `cwd` link names, without the kernel's
/// ` (deleted)` suffix when the directory really was deleted (and not
/// merely named so).
fn effective_cwd(pid: i32, cwd: PathBuf) -> PathBuf {
    const SUFFIX: &[u8] = b" (deleted)";
    let bytes = cwd.as_os_str().as_bytes();
    if !bytes.ends_with(SUFFIX) {
        return cwd;
    }
    // A live directory literally named "... (deleted)" is the same file as
    // the process's working directory; a deleted one is not reachable by
    // that path at all.
    let same = match (
        std::fs::metadata(&cwd),
        std::fs::metadata(format!("/proc/{pid}/cwd")),
    ) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    };
    if same {
        cwd
    } else {
        PathBuf::from(OsStr::from_bytes(&bytes[..bytes.len() - SUFFIX.len()]))
    }
}

/// `dir` with symlinks resolved, or, when it does not exist (any more),
/// made absolute and lexically normalised.
fn canonical_or_normal(dir: &Path) -> PathBuf {
    if let Ok(c) = std::fs::canonicalize(dir) {
        return c;
    }
    let abs = if dir.is_absolute() {
        dir.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(dir)
    };
    let mut out = PathBuf::new();
    for c in abs.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// All live descendants of `pid` (children, their children, …) with their
/// start times, from one snapshot of `/proc`: see [`Snapshot`].
pub fn descendants(pid: i32) -> Vec<(i32, u64)> {
    Snapshot::take().descendants_of(pid)
}

/// One process of a [`Snapshot`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ProcEntry {
    pub pid: i32,
    pub ppid: i32,
    pub pgid: i32,
    pub sid: i32,
    pub start_time: u64,
    pub state: char,
}

/// The `stat` of every readable process, read in one sweep of `/proc`, for
/// walking parent links and group membership consistently.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub entries: HashMap<i32, ProcEntry>,
}

impl Snapshot {
    /// Reads `/proc` now; unreadable processes are left out.
    pub fn take() -> Snapshot {
        let mut entries = HashMap::new();
        let Ok(all) = procfs::process::all_processes() else {
            tracing::warn!("cannot list /proc; empty process snapshot");
            return Snapshot { entries };
        };
        for process in all.flatten() {
            if let Ok(stat) = process.stat() {
                entries.insert(
                    process.pid,
                    ProcEntry {
                        pid: process.pid,
                        ppid: stat.ppid,
                        pgid: stat.pgrp,
                        sid: stat.session,
                        start_time: stat.starttime,
                        state: stat.state,
                    },
                );
            }
        }
        Snapshot { entries }
    }

    /// Live descendants of `pid` by parent links, transitively, sorted by
    /// pid; `pid` itself is not included.
    pub fn descendants_of(&self, pid: i32) -> Vec<(i32, u64)> {
        let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
        for e in self.entries.values() {
            children.entry(e.ppid).or_default().push(e.pid);
        }
        let mut seen = HashSet::from([pid]);
        let mut queue = VecDeque::from([pid]);
        let mut out = Vec::new();
        while let Some(p) = queue.pop_front() {
            for &c in children.get(&p).into_iter().flatten() {
                // Parent links of one snapshot cannot cycle, but a pid
                // reused between two reads of the sweep could fake one.
                if c <= 1 || !seen.insert(c) {
                    continue;
                }
                queue.push_back(c);
                let e = &self.entries[&c];
                if is_alive_state(e.state) {
                    out.push((c, e.start_time));
                }
            }
        }
        out.sort_unstable();
        out
    }

    /// Live members of process group `pgid`, sorted by pid.
    pub fn group_members(&self, pgid: i32) -> Vec<(i32, u64)> {
        let mut out: Vec<(i32, u64)> = self
            .entries
            .values()
            .filter(|e| e.pgid == pgid && is_alive_state(e.state))
            .map(|e| (e.pid, e.start_time))
            .collect();
        out.sort_unstable();
        out
    }

    /// `pid`'s parent, grandparent, … up to (not including) pid 0.
    pub fn ancestors_of(&self, pid: i32) -> Vec<i32> {
        let mut out = Vec::new();
        let mut seen = HashSet::from([pid]);
        let mut p = pid;
        while let Some(e) = self.entries.get(&p) {
            if e.ppid <= 0 || !seen.insert(e.ppid) {
                break;
            }
            out.push(e.ppid);
            p = e.ppid;
        }
        out
    }
}

/// Reads the raw environment (`NAME=value` entries, each ending in NUL)
/// through the process's open `/proc/<pid>` handle into `buf`.
fn read_environ(process: &Process, buf: &mut Vec<u8>) -> std::io::Result<()> {
    use std::io::Read;
    buf.clear();
    process
        .open_relative("environ")
        .map_err(std::io::Error::other)?
        .read_to_end(buf)?;
    Ok(())
}

/// The chat of an agent: the chat label's value, when the environment
/// carries it and the agent label too, and this controller's instance when
/// it has one (see the module docs).
fn agent_chat(environ: &[u8], labels: &LabelNames) -> Option<String> {
    label(environ, &labels.agent)?;
    if let Some(mine) = &labels.instance {
        if label(environ, &labels.instance_label).as_ref() != Some(mine) {
            return None;
        }
    }
    label(environ, &labels.chat)
}

/// The value of `name` in a raw environment when present, valid UTF-8 and
/// non-empty. The first entry of that name wins, as with `getenv`.
fn label(environ: &[u8], name: &str) -> Option<String> {
    let name = name.as_bytes();
    environ
        .split(|b| *b == 0)
        .find_map(|entry| {
            entry
                .strip_prefix(name)
                .and_then(|rest| rest.strip_prefix(b"="))
        })
        .and_then(|v| std::str::from_utf8(v).ok())
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

/// The command line joined by spaces, or `[comm]` when it is empty (kernel
/// threads, processes that cleared it).
fn command_line(process: &Process, stat: &Stat) -> String {
    match process.cmdline() {
        Ok(args) if !args.is_empty() => args.join(" "),
        _ => format!("[{}]", stat.comm),
    }
}

pub(crate) fn boot_time() -> Option<u64> {
    match procfs::boot_time_secs() {
        Ok(b) => Some(b),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the boot time; process start times unknown");
            None
        }
    }
}

/// Boot time + `start_time` clock ticks; the epoch when the boot time is
/// unknown.
pub(crate) fn started_at(boot: Option<u64>, start_time: u64) -> SystemTime {
    let Some(boot) = boot else {
        return SystemTime::UNIX_EPOCH;
    };
    let tps = procfs::ticks_per_second().max(1);
    let since_boot = Duration::from_secs(start_time / tps)
        + Duration::from_nanos((start_time % tps) * 1_000_000_000 / tps);
    SystemTime::UNIX_EPOCH + Duration::from_secs(boot) + since_boot
}

#[cfg(test)]
mod unreadable_tests;

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;
    use std::process::{Child, Command, Stdio};
    use std::time::Instant;

    /// A spawned process killed and reaped when the test ends, pass or fail.
    struct Spawned(Child);

    impl Drop for Spawned {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn unique(prefix: &str) -> String {
        format!("{prefix}-{}-{}", std::process::id(), fastrand::u64(..))
    }

    /// `sleep 1000` in its own process group, with the given environment.
    fn sleeper(env: &[(&str, &str)], cwd: Option<&Path>) -> Spawned {
        let mut cmd = Command::new("sleep");
        cmd.arg("1000")
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        if let Some(d) = cwd {
            cmd.current_dir(d);
        }
        let child = Spawned(cmd.spawn().expect("spawn sleep"));
        wait_exec(child.0.id() as i32);
        child
    }

    /// Waits until the kernel shows the new program's environment: `spawn`
    /// returns once exec has begun, a moment before the new environment
    /// is readable in /proc (it reads empty until then).
    pub(crate) fn wait_exec(pid: i32) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let exited = || identity(pid, &LabelNames::default()).is_none_or(|i| i.state == 'Z');
        while std::fs::read(format!("/proc/{pid}/environ")).map_or(true, |e| e.is_empty())
            && !exited()
        {
            assert!(Instant::now() < deadline, "pid {pid} never finished exec");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Field 22 of /proc/<pid>/stat, parsed independently of procfs.
    fn start_time_of(pid: i32) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let after_comm = &stat[stat.rfind(')').unwrap() + 2..];
        // after_comm starts at field 3 (state): field 22 is index 19.
        after_comm.split(' ').nth(19).unwrap().parse().unwrap()
    }

    #[test]
    fn labels_are_read_from_the_raw_environment_by_exact_name() {
        let env = b"PATH=/bin\0BOO_CHAT_ID_OLD=x\0XBOO_CHAT_ID=y\0BOO_CHAT_ID=c1\0BOO_CHAT_ID=c2\0EMPTY=\0BAD=\xff\0NOEQUALS\0";
        // Not a longer name that starts with it, nor one that ends with it;
        // the first of two entries wins, as with getenv.
        assert_eq!(label(env, "BOO_CHAT_ID").as_deref(), Some("c1"));
        assert_eq!(label(env, "EMPTY"), None);
        assert_eq!(label(env, "BAD"), None);
        assert_eq!(label(env, "NOEQUALS"), None);
        assert_eq!(label(env, "MISSING"), None);
        assert_eq!(label(b"", "BOO_CHAT_ID"), None);
        assert_eq!(
            label(b"BOO_CHAT_ID=last", "BOO_CHAT_ID").as_deref(),
            Some("last")
        );
    }

    #[test]
    fn alive_states() {
        for s in ['R', 'S', 'D', 'T', 't', 'I', 'W'] {
            assert!(is_alive_state(s), "{s}");
        }
        for s in ['Z', 'X', 'x'] {
            assert!(!is_alive_state(s), "{s}");
        }
    }

    #[test]
    fn scan_finds_a_labelled_process_with_all_fields() {
        let chat = unique("chat");
        let dir = tempfile::tempdir().unwrap();
        let before = SystemTime::now();
        let child = sleeper(
            &[
                ("BOO_CHAT_ID", &chat),
                ("BOO_SESSION_ID", "s-1"),
                ("BOO_AGENT", "sleepy"),
            ],
            Some(dir.path()),
        );
        let pid = child.0.id() as i32;
        let scan = scan(&LabelNames::default());
        let found: Vec<_> = scan
            .processes
            .iter()
            .filter(|p| p.chat_id == chat)
            .collect();
        assert_eq!(found.len(), 1, "{found:?}");
        let p = found[0];
        assert_eq!(p.pid, pid);
        assert_eq!(p.ppid, std::process::id() as i32);
        assert_eq!(p.pgid, pid, "process_group(0) makes it a leader");
        assert_eq!(p.sid, nix::unistd::getsid(None).unwrap().as_raw());
        assert_eq!(p.start_time, start_time_of(pid));
        // Tick granularity (10 ms) and boot time rounding (1 s).
        let slack = Duration::from_secs(2);
        assert!(
            p.started_at + slack >= before,
            "{:?} {:?}",
            p.started_at,
            before
        );
        assert!(p.started_at <= SystemTime::now() + slack);
        assert!(matches!(p.state, 'S' | 'R'), "{}", p.state);
        assert_eq!(p.session_id.as_deref(), Some("s-1"));
        assert_eq!(p.agent.as_deref(), Some("sleepy"));
        assert_eq!(p.command, "sleep 1000");
        assert_eq!(
            p.cwd.as_deref(),
            Some(dir.path().canonicalize().unwrap().as_path())
        );
        assert!(
            scan.processes
                .iter()
                .all(|p| p.pid != std::process::id() as i32),
            "never lists itself"
        );
    }

    #[test]
    fn scan_uses_the_configured_label_names() {
        let chat = unique("chat");
        let child = sleeper(&[("OTHER_CHAT", &chat), ("OTHER_AGENT", "x")], None);
        let labels = LabelNames {
            chat: "OTHER_CHAT".into(),
            session: "OTHER_SESSION".into(),
            agent: "OTHER_AGENT".into(),
            ..LabelNames::default()
        };
        let found: Vec<_> = scan(&labels)
            .processes
            .into_iter()
            .filter(|p| p.chat_id == chat)
            .collect();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].pid, child.0.id() as i32);
        assert_eq!(found[0].session_id, None);
        assert_eq!(found[0].agent.as_deref(), Some("x"));
        assert!(scan(&LabelNames::default())
            .processes
            .iter()
            .all(|p| p.pid != child.0.id() as i32));
    }

    #[test]
    fn scan_skips_unlabelled_empty_labelled_and_zombie_processes() {
        let chat = unique("chat");
        let unlabelled = sleeper(&[("BOO_SESSION_ID", &chat)], None);
        let empty = sleeper(
            &[
                ("BOO_CHAT_ID", ""),
                ("BOO_SESSION_ID", &chat),
                ("BOO_AGENT", "a"),
            ],
            None,
        );
        // A labelled child that exits at once and is not waited for: a zombie.
        let mut zombie = Command::new("true");
        zombie.env("BOO_CHAT_ID", &chat).env("BOO_AGENT", "a");
        let zombie = Spawned(zombie.spawn().unwrap());
        let zpid = zombie.0.id() as i32;
        let deadline = Instant::now() + Duration::from_secs(10);
        while identity(zpid, &LabelNames::default()).map(|i| i.state) != Some('Z') {
            assert!(Instant::now() < deadline, "child never became a zombie");
            std::thread::sleep(Duration::from_millis(10));
        }
        let labelled = sleeper(&[("BOO_CHAT_ID", &chat), ("BOO_AGENT", "a")], None);

        let scan = scan(&LabelNames::default());
        let pids: Vec<i32> = scan
            .processes
            .iter()
            .filter(|p| p.chat_id == chat || p.session_id.as_deref() == Some(&chat))
            .map(|p| p.pid)
            .collect();
        assert_eq!(pids, vec![labelled.0.id() as i32]);
        for skipped in [&unlabelled, &empty, &zombie] {
            assert!(!scan
                .processes
                .iter()
                .any(|p| p.pid == skipped.0.id() as i32));
        }
    }

    #[test]
    fn a_process_is_an_agent_only_with_the_chat_label_and_the_agent_label() {
        let labels = LabelNames::default();
        let both = b"PATH=/bin\0BOO_CHAT_ID=c1\0BOO_AGENT=goose\0";
        assert_eq!(agent_chat(both, &labels).as_deref(), Some("c1"));
        for not_an_agent in [
            &b"BOO_CHAT_ID=c1\0"[..],
            b"BOO_CHAT_ID=c1\0BOO_AGENT=\0",
            b"BOO_AGENT=goose\0",
            b"BOO_CHAT_ID=c1\0BOO_SESSION_ID=s1\0",
        ] {
            assert_eq!(agent_chat(not_an_agent, &labels), None, "{not_an_agent:?}");
        }

        // The same, end to end: the scan and the re-check before a signal.
        let chat = unique("chat");
        let chat_only = sleeper(&[("BOO_CHAT_ID", &chat), ("BOO_SESSION_ID", "s1")], None);
        let pid = chat_only.0.id() as i32;
        assert!(scan(&labels).processes.iter().all(|p| p.pid != pid));
        assert_eq!(identity(pid, &labels).unwrap().chat_label, None);
    }

    #[test]
    fn with_an_instance_only_the_agents_of_that_instance_are_agents() {
        let mine = LabelNames {
            instance: Some("blue".into()),
            ..LabelNames::default()
        };
        let own = b"BOO_CHAT_ID=c1\0BOO_AGENT=goose\0BOO_INSTANCE=blue\0";
        assert_eq!(agent_chat(own, &mine).as_deref(), Some("c1"));
        for not_mine in [
            &b"BOO_CHAT_ID=c1\0BOO_AGENT=goose\0"[..],
            b"BOO_CHAT_ID=c1\0BOO_AGENT=goose\0BOO_INSTANCE=\0",
            b"BOO_CHAT_ID=c1\0BOO_AGENT=goose\0BOO_INSTANCE=green\0",
            b"BOO_CHAT_ID=c1\0BOO_AGENT=goose\0BOO_INSTANCE=blue2\0",
            b"BOO_CHAT_ID=c1\0BOO_AGENT=goose\0BOO_INSTANCE_X=blue\0",
            // The first entry of a name wins, as with getenv.
            b"BOO_CHAT_ID=c1\0BOO_AGENT=goose\0BOO_INSTANCE=green\0BOO_INSTANCE=blue\0",
        ] {
            assert_eq!(agent_chat(not_mine, &mine), None, "{not_mine:?}");
        }
        // Without an instance, the instance label does not matter.
        let any = LabelNames::default();
        for environ in [
            &own[..],
            b"BOO_CHAT_ID=c1\0BOO_AGENT=goose\0BOO_INSTANCE=green\0",
        ] {
            assert_eq!(agent_chat(environ, &any).as_deref(), Some("c1"));
        }

        // End to end: the scan and the re-check before a signal.
        let chat = unique("chat");
        let labels = LabelNames {
            chat: format!("BOO_TEST_CHAT_{}", fastrand::u64(..)),
            instance_label: format!("BOO_TEST_INSTANCE_{}", fastrand::u64(..)),
            instance: Some("blue".into()),
            ..LabelNames::default()
        };
        let with = |instance: Option<&str>| {
            let mut env = vec![(labels.chat.as_str(), chat.as_str()), ("BOO_AGENT", "a")];
            env.extend(instance.map(|i| (labels.instance_label.as_str(), i)));
            sleeper(&env, None)
        };
        let blue = with(Some("blue"));
        let green = with(Some("green"));
        let none = with(None);
        let pid = |s: &Spawned| s.0.id() as i32;
        let found: Vec<(i32, Option<String>)> = scan(&labels)
            .processes
            .into_iter()
            .filter(|p| p.chat_id == chat)
            .map(|p| (p.pid, p.instance))
            .collect();
        assert_eq!(found, vec![(pid(&blue), Some("blue".to_string()))]);
        assert_eq!(
            identity(pid(&blue), &labels).unwrap().chat_label,
            Some(chat.clone())
        );
        for other in [&green, &none] {
            assert_eq!(identity(pid(other), &labels).unwrap().chat_label, None);
        }
        // The same processes, seen by a controller without an instance.
        let any = LabelNames {
            instance: None,
            ..labels.clone()
        };
        let found = scan(&any)
            .processes
            .into_iter()
            .filter(|p| p.chat_id == chat)
            .count();
        assert_eq!(found, 3);
    }

    #[test]
    fn identity_reads_start_time_state_label_and_links() {
        let chat = unique("chat");
        let child = sleeper(&[("BOO_CHAT_ID", &chat), ("BOO_AGENT", "a")], None);
        let pid = child.0.id() as i32;
        let id = identity(pid, &LabelNames::default()).unwrap();
        assert_eq!(id.start_time, start_time_of(pid));
        assert_eq!(id.chat_label.as_deref(), Some(chat.as_str()));
        assert_eq!(id.ppid, std::process::id() as i32);
        assert_eq!(id.pgid, pid);
        assert!(is_alive_state(id.state));
        assert_eq!(identity(0, &LabelNames::default()), None);
        assert_eq!(identity(-1, &LabelNames::default()), None);
        // An unused pid (pid_max is at most 2^22).
        assert_eq!(identity(i32::MAX, &LabelNames::default()), None);
    }

    #[test]
    fn identity_tells_a_cleared_environment_from_another_label() {
        let labels = LabelNames::default();
        let chat = unique("chat");
        // The chat label without the agent label: not an agent, but its
        // environment names a chat.
        let chat_only = sleeper(&[("BOO_CHAT_ID", &chat)], None);
        let id = identity(chat_only.0.id() as i32, &labels).unwrap();
        assert_eq!(id.chat_label, None);
        assert_eq!(id.env_chat, EnvChat::Present(chat.clone()));
        // An environment with no label at all.
        let plain = sleeper(&[("BOO_SESSION_ID", &chat)], None);
        let id = identity(plain.0.id() as i32, &labels).unwrap();
        assert_eq!(id.env_chat, EnvChat::Absent);
        // Zeroed in place (setproctitle) reads as no label either.
        assert_eq!(label(&[0u8; 64], "BOO_CHAT_ID"), None);
    }

    #[test]
    fn processes_in_finds_unlabelled_processes_inside_a_directory_only() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        let inside = root.join("ab");
        let deeper = inside.join("sub");
        let outside = root.join("abc"); // shares a string prefix
        std::fs::create_dir_all(&deeper).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        let a = sleeper(&[], Some(&inside));
        let b = sleeper(&[], Some(&deeper));
        let c = sleeper(&[], Some(&outside));
        let found = processes_in(&inside);
        let pids: Vec<i32> = found.iter().map(|(p, _)| *p).collect();
        let mut want = vec![a.0.id() as i32, b.0.id() as i32];
        want.sort();
        assert_eq!(pids, want, "{found:?}");
        assert!(found.iter().all(|(_, cmd)| cmd == "sleep 1000"));
        assert!(!pids.contains(&(c.0.id() as i32)));

        // Through a symlink and with `..`: canonical comparison.
        let link = root.join("link");
        std::os::unix::fs::symlink(&inside, &link).unwrap();
        assert_eq!(processes_in(&link).len(), 2);
        assert_eq!(processes_in(&deeper.join("..")).len(), 2);

        // A deleted working directory still counts.
        std::fs::remove_dir(&deeper).unwrap();
        let found = processes_in(&inside);
        assert!(
            found.iter().any(|(p, _)| *p == b.0.id() as i32),
            "{found:?}"
        );
        assert_eq!(
            processes_in(&deeper),
            vec![(b.0.id() as i32, "sleep 1000".to_string())]
        );
    }

    #[test]
    fn processes_in_does_not_strip_a_real_deleted_suffix() {
        let tmp = tempfile::tempdir().unwrap();
        let odd = tmp.path().join("x (deleted)");
        let plain = tmp.path().join("x");
        std::fs::create_dir_all(&odd).unwrap();
        std::fs::create_dir_all(&plain).unwrap();
        let a = sleeper(&[], Some(&odd));
        assert_eq!(processes_in(&plain), vec![]);
        assert_eq!(processes_in(&odd).len(), 1);
        drop(a);
    }

    #[test]
    fn descendants_are_found_transitively_with_start_times() {
        // sh -> (sleep, sh -> sleep)
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "sleep 1000 & sh -c 'sleep 1000 & wait' & wait"])
            .process_group(0);
        let root = Spawned(cmd.spawn().unwrap());
        let pid = root.0.id() as i32;
        // Whatever happens, the grandchildren go with the group.
        struct Group(i32);
        impl Drop for Group {
            fn drop(&mut self) {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(self.0),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        let _group = Group(pid);
        let deadline = Instant::now() + Duration::from_secs(10);
        let found = loop {
            let d = descendants(pid);
            if d.len() == 3 {
                break d;
            }
            assert!(Instant::now() < deadline, "{d:?}");
            std::thread::sleep(Duration::from_millis(20));
        };
        for (p, st) in &found {
            assert_eq!(*st, start_time_of(*p));
        }
        let snap = Snapshot::take();
        assert!(snap.ancestors_of(found[2].0).contains(&pid));
        assert_eq!(snap.group_members(pid).len(), 4);
    }
}
