//! Stopping an agent process and everything it started.
//!
//! See [`terminate`] for the guarantees. The two failures this module
//! exists to prevent: killing only the direct child (which left hundreds of
//! orphaned MCP servers behind), and signalling a stale pid (which killed an
//! unrelated process).

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::libc;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use procfs::process::Process;
use serde::Serialize;

use crate::observe::processes::{is_alive_state, LabelNames, Snapshot};

/// The longest wait between two checks for exit.
const POLL: Duration = Duration::from_millis(50);
/// Most agents exit within milliseconds of SIGTERM: look again soon, then
/// back off to [`POLL`], so that a nudge does not wait a whole poll.
const FIRST_POLL: Duration = Duration::from_millis(1);

/// How long SIGKILL is given to take effect before the processes still
/// there are reported as survivors (a process in `D` state, say).
const KILL_WAIT: Duration = Duration::from_secs(1);

/// The agent process to stop, as observed: the pid alone is never enough.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Target {
    pub pid: i32,
    /// Field 22 of `/proc/<pid>/stat` when the process was observed.
    pub start_time: u64,
    /// The value of the chat label when the process was observed.
    pub chat_id: String,
}

impl Target {
    /// What the audit, the claims and the backoff know this process by:
    /// the key [`crate::plan::Action::key`] gives a planned termination of
    /// it, so that a stop decided during a removal reads as one planned
    /// (and a reused pid never as the process it was).
    pub fn key(&self) -> crate::plan::Target {
        crate::plan::Target::Process {
            pid: self.pid,
            start_time: self.start_time,
        }
    }
}

impl From<&crate::model::AgentProcess> for Target {
    fn from(p: &crate::model::AgentProcess) -> Self {
        Target {
            pid: p.pid,
            start_time: p.start_time,
            chat_id: p.chat_id.clone(),
        }
    }
}

/// Why the agent itself was not signalled.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum NotSignalled {
    /// No process has the pid any more, or it is a zombie: nothing to do.
    Gone,
    /// The pid belongs to a process that started at another time: the pid
    /// was reused by an unrelated process.
    StartTimeDiffers { found: u64, expected: u64 },
    /// The process's chat label is not the one observed (or is missing).
    LabelDiffers {
        found: Option<String>,
        expected: String,
    },
    /// The pid is one this controller never signals: 0 or negative (they
    /// address groups), 1, its own, or one of its ancestors.
    Protected { why: String },
}

impl fmt::Display for NotSignalled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotSignalled::Gone => f.write_str("process already gone"),
            NotSignalled::StartTimeDiffers { found, expected } => write!(
                f,
                "identity mismatch: start time {found}, expected {expected} (pid reused); not signalled"
            ),
            NotSignalled::LabelDiffers { found, expected } => write!(
                f,
                "identity mismatch: chat label {}, expected {expected:?}; not signalled",
                found
                    .as_deref()
                    .map_or_else(|| "missing".to_owned(), |v| format!("{v:?}"))
            ),
            NotSignalled::Protected { why } => write!(f, "refused: {why}"),
        }
    }
}

/// A process still there after SIGKILL and [`KILL_WAIT`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Survivor {
    pub pid: i32,
    /// Its state letter when last seen (`D`: uninterruptible sleep, …).
    pub state: char,
}

/// What [`terminate`] did. Every pid is one that was identified as the
/// agent or one of its descendants (or a member of the group it leads).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Terminated {
    /// The agent's pid.
    pub pid: i32,
    /// The process group signalled as a whole (the agent's pid, when it
    /// leads its group).
    pub group: Option<i32>,
    /// Every process sent SIGTERM, directly or through the group.
    pub signalled: Vec<i32>,
    /// Of those, the ones gone before the grace ran out.
    pub exited_on_term: Vec<i32>,
    /// Sent SIGKILL after the grace, and gone.
    pub killed: Vec<i32>,
    /// Still there after SIGKILL: not forgotten, reported.
    pub survivors: Vec<Survivor>,
    /// Tracked processes whose pid belonged to another process (or whose
    /// label changed) at a later re-check, and so were not signalled again.
    pub identity_changed: Vec<i32>,
    /// Why the agent itself was not signalled; `None` when it was.
    pub not_signalled: Option<NotSignalled>,
}

impl Terminated {
    fn new(pid: i32) -> Self {
        Terminated {
            pid,
            ..Terminated::default()
        }
    }

    /// Whether nothing of the agent is left: it was stopped with all its
    /// processes, or it was already gone.
    #[cfg(test)]
    pub fn all_gone(&self) -> bool {
        self.survivors.is_empty() && matches!(self.not_signalled, None | Some(NotSignalled::Gone))
    }
}

impl fmt::Display for Terminated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(why) = &self.not_signalled {
            return write!(f, "pid {}: {why}", self.pid);
        }
        write!(
            f,
            "pid {}: SIGTERM to {} process(es)",
            self.pid,
            self.signalled.len()
        )?;
        if let Some(g) = self.group {
            write!(f, " (group {g})")?;
        }
        write!(f, "; {} exited", self.exited_on_term.len())?;
        if !self.killed.is_empty() {
            write!(f, ", {} killed after the grace", self.killed.len())?;
        }
        if !self.survivors.is_empty() {
            let s: Vec<String> = self
                .survivors
                .iter()
                .map(|s| format!("{} ({})", s.pid, s.state))
                .collect();
            write!(f, "; still there after SIGKILL: {}", s.join(", "))?;
        }
        Ok(())
    }
}

/// Stops the agent `target` and every process it started: SIGTERM, up to
/// `grace` to exit, then SIGKILL for whatever is left.
///
/// # Guarantees
///
/// 1. **Identity is re-checked right before every signal.** The agent is
///    signalled only while its pid names a process with the observed start
///    time (field 22 of `/proc/<pid>/stat`) *and* the observed chat label
///    value (`labels.chat`); a pid reused by another process, or whose
///    label changed, is never signalled, and [`Terminated::not_signalled`]
///    says why. Every other process is re-identified by (pid, start time)
///    before each signal. The check and the signal go through one pidfd
///    (`pidfd_open` before the check, `pidfd_send_signal` after it), so a
///    pid reused between the two cannot be hit; kernels without pidfds
///    (before 5.3) fall back to `kill(2)` right after the check.
///    Test: `identity_is_rechecked_before_every_signal_*`.
///
/// 2. **The whole process group and every descendant.** When the agent
///    leads its group (pgid == pid, the launcher contract), the group is
///    signalled with `killpg`, right after the leader is re-verified: a
///    process is in the agent's group only because the agent (or one of
///    its descendants) put it there, so the group is the agent's by
///    contract, labelled or not. The group id cannot name another group
///    while the verified leader lives. Besides the group, every descendant
///    (by parent links in `/proc`, transitively, labels not needed) is
///    signalled, including those that left the group or the session
///    (`setsid`). Descendants are collected *before* the first signal, so
///    that those re-parented to pid 1 when their parent dies are still
///    known, and before SIGKILL the descendants of any survivor are
///    collected again (children forked during the grace). A group the
///    agent does not lead is never signalled: then each process is
///    signalled on its own. Nothing else is signalled: an unrelated
///    process, a sibling, the caller. Test:
///    `whole_group_and_every_descendant_are_signalled_*`.
///
/// 3. **Never pid 1, 0 or a negative pid, this process, one of its
///    ancestors, or this process's own group.** These are refused before
///    any signal (the agent then gets [`NotSignalled::Protected`]); `killpg`
///    of the controller's own group (or of a group holding one of its
///    ancestors) cannot happen, whatever the target. Test:
///    `never_signals_pid_1_0_negatives_itself_its_ancestors_or_its_own_group`.
///
/// 4. **TERM, grace, KILL, never blocking a thread.** After SIGTERM the
///    processes are polled (after 1 ms, then twice as long each time up to
///    every 50 ms) with `tokio::time::sleep` until all
///    are gone or `grace` has passed; the survivors (re-identified) get
///    SIGKILL and up to one more second; whatever is still there then is
///    reported in [`Terminated::survivors`] with its state (`D`, …), not
///    forgotten. A zombie counts as gone: its parent (or init) reaps it,
///    not this controller. Many terminations run concurrently in about
///    one grace. Every `/proc` read (the snapshots, each check before a
///    signal, each poll) runs on the blocking pool: a read of a process's
///    `stat` or `environ` waits on its memory-map lock, which a process in
///    `D` state may hold for as long as it likes. Tests: `term_then_grace_then_kill_*`,
///    `exits_on_sigterm_is_reported_exited_on_term`.
///
/// 5. **A full report.** [`Terminated`] lists what was signalled, what
///    exited on SIGTERM, what was killed, what survived and why the agent
///    was not signalled; it serializes for reports and audit records.
///    Test: `outcome_is_a_serializable_report`.
///
/// Anything that still escapes (a process forked after the last
/// collection into a new session) keeps the inherited chat label and is
/// found by the next pass's scan.
pub async fn terminate(target: &Target, grace: Duration, labels: &LabelNames) -> Terminated {
    run(target, grace, labels, |_| {}).await
}

/// What is being stopped: the expected identities.
#[derive(Clone)]
struct Tracking {
    /// The chat label value the agent must still carry.
    chat_id: String,
    /// pid -> start time, the agent included.
    procs: BTreeMap<i32, u64>,
}

/// [`terminate`], with a hook run right before the SIGKILL phase (tests
/// use it to simulate a pid being reused during the grace).
async fn run(
    target: &Target,
    grace: Duration,
    labels: &LabelNames,
    before_kill: impl FnOnce(&mut Tracking),
) -> Terminated {
    let mut out = Terminated::new(target.pid);
    let me = Me::current();
    let (snap, ancestors) = match refuse_protected(target, &me).await {
        Ok(v) => v,
        Err(why) => {
            out.not_signalled = Some(why);
            return out;
        }
    };
    let (mut track, group) = tracking(target, &snap, &ancestors, &me);
    let Some((group, signalled)) = term_step(target, &track, labels, group, me, &mut out).await
    else {
        return out;
    };

    let alive = wait_grace(&track, grace).await;
    out.exited_on_term = signalled
        .iter()
        .copied()
        .filter(|p| !alive.contains_key(p))
        .collect();
    if alive.is_empty() {
        return out;
    }

    before_kill(&mut track);
    let sent_kill = kill_step(&mut track, target, labels, group, ancestors, me, &mut out).await;
    let alive = wait_kill(&track).await;
    out.killed = sent_kill
        .iter()
        .copied()
        .filter(|p| !alive.contains_key(p))
        .collect();
    out.survivors = alive
        .into_iter()
        .map(|(pid, state)| Survivor { pid, state })
        .collect();
    if !out.survivors.is_empty() {
        tracing::warn!(pid = target.pid, survivors = ?out.survivors, "processes survived SIGKILL");
    }
    out
}

/// Guarantee 3 for the agent, before anything is tracked; the snapshot
/// and ancestors it reads are returned for tracking.
async fn refuse_protected(
    target: &Target,
    me: &Me,
) -> Result<(Snapshot, HashSet<i32>), NotSignalled> {
    if let Err(why) = guard(target.pid, me) {
        return Err(NotSignalled::Protected { why });
    }
    let snap = snapshot().await;
    let ancestors: HashSet<i32> = snap.ancestors_of(me.pid).into_iter().collect();
    if ancestors.contains(&target.pid) {
        return Err(NotSignalled::Protected {
            why: format!(
                "pid {} is an ancestor of this controller (pid {})",
                target.pid, me.pid
            ),
        });
    }
    Ok((snap, ancestors))
}

/// Whom to stop, collected before the first signal so that descendants
/// re-parented to pid 1 when their parent dies are still known; and the
/// group, if it may be signalled.
fn tracking(
    target: &Target,
    snap: &Snapshot,
    ancestors: &HashSet<i32>,
    me: &Me,
) -> (Tracking, Option<i32>) {
    // Whom to track: the agent, its descendants, and its group if it leads
    // one, as the snapshot shows them. Parent links are only meaningful if
    // the snapshot saw the same agent process.
    let mut track = Tracking {
        chat_id: target.chat_id.clone(),
        procs: BTreeMap::from([(target.pid, target.start_time)]),
    };
    let seen = snap.entries.get(&target.pid).copied();
    let same = seen.is_some_and(|e| e.start_time == target.start_time);
    let mut group = None;
    if same {
        track.procs.extend(snap.descendants_of(target.pid));
        if seen.is_some_and(|e| e.pgid == target.pid) {
            match guard_group(target.pid, me, snap, ancestors) {
                Ok(()) => {
                    group = Some(target.pid);
                    track.procs.extend(snap.group_members(target.pid));
                }
                Err(why) => tracing::warn!(pid = target.pid, %why, "group not signalled"),
            }
        }
    }
    track
        .procs
        .retain(|pid, _| *pid > 1 && *pid != me.pid && !ancestors.contains(pid));
    (track, group)
}

/// [`sigterm`] on the blocking pool, recorded in `out`: the group and the
/// processes signalled, or `None` when the agent was not (`out` says why).
async fn term_step(
    target: &Target,
    track: &Tracking,
    labels: &LabelNames,
    group: Option<i32>,
    me: Me,
    out: &mut Terminated,
) -> Option<(Option<i32>, Vec<i32>)> {
    // SIGTERM. Verify everything first (pidfds pin the processes), the
    // agent last, right before the group signal.
    let term = {
        let (track, labels) = (track.clone(), labels.clone());
        let (pid, start) = (target.pid, target.start_time);
        off_thread(move || sigterm(&track, pid, start, &labels, group, &me)).await
    };
    out.identity_changed.extend(term.changed);
    let (group, signalled) = match term.sent {
        Ok(sent) => sent,
        Err(why) => {
            out.not_signalled = Some(why);
            return None;
        }
    };
    out.group = group;
    tracing::info!(pid = target.pid, ?group, processes = ?signalled, "SIGTERM sent");
    out.signalled = signalled.clone();
    Some((group, signalled))
}

/// The grace, never slept past so that SIGKILL is not late; returns what
/// is still alive at its end (nothing, if all exited sooner).
async fn wait_grace(track: &Tracking, grace: Duration) -> BTreeMap<i32, char> {
    let deadline = Instant::now() + grace;
    let mut alive = still_alive(track).await;
    let mut poll = FIRST_POLL;
    while !alive.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(poll.min(deadline.saturating_duration_since(Instant::now()))).await;
        poll = (poll * 2).min(POLL);
        alive = still_alive(track).await;
    }
    alive
}

/// [`sigkill`] on the blocking pool after the grace; the pids it found
/// reused leave `track`, so that they are never reported as survivors.
/// Returns the processes sent SIGKILL.
async fn kill_step(
    track: &mut Tracking,
    target: &Target,
    labels: &LabelNames,
    group: Option<i32>,
    ancestors: HashSet<i32>,
    me: Me,
    out: &mut Terminated,
) -> Vec<i32> {
    // SIGKILL. Children forked during the grace are collected too.
    let snap = snapshot().await;
    track_late_descendants(track, &snap, target.pid, group, &ancestors, &me);
    let kill = {
        let (track, labels) = (track.clone(), labels.clone());
        let pid = target.pid;
        off_thread(move || sigkill(&track, pid, &labels, group, &snap, &ancestors, &me)).await
    };
    let (kill_group, sent_kill, changed) = (kill.group, kill.sent, kill.changed);
    tracing::warn!(pid = target.pid, group = ?kill_group, processes = ?sent_kill, "SIGKILL sent after the grace");
    for pid in &changed {
        track.procs.remove(pid);
    }
    out.identity_changed.extend(changed);
    out.identity_changed.sort_unstable();
    out.identity_changed.dedup();
    sent_kill
}

/// Children forked (or group members joined) during the grace are the
/// agent's too, and get SIGKILL; protected pids stay untracked.
fn track_late_descendants(
    track: &mut Tracking,
    snap: &Snapshot,
    agent: i32,
    group: Option<i32>,
    ancestors: &HashSet<i32>,
    me: &Me,
) {
    let mut more = Vec::new();
    for (&pid, &start) in &track.procs {
        if snap
            .entries
            .get(&pid)
            .is_some_and(|e| e.start_time == start && is_alive_state(e.state))
        {
            more.extend(snap.descendants_of(pid));
            if group.is_some() && snap.entries[&pid].pgid == agent {
                more.extend(snap.group_members(agent));
            }
        }
    }
    for (pid, start) in more {
        if pid > 1 && pid != me.pid && !ancestors.contains(&pid) {
            track.procs.entry(pid).or_insert(start);
        }
    }
}

/// Gives SIGKILL [`KILL_WAIT`] to take effect, so that only what it cannot
/// stop (a process in `D` state, say) is reported as a survivor.
async fn wait_kill(track: &Tracking) -> BTreeMap<i32, char> {
    let deadline = Instant::now() + KILL_WAIT;
    let mut alive = still_alive(track).await;
    let mut poll = FIRST_POLL;
    while !alive.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(poll).await;
        poll = (poll * 2).min(POLL);
        alive = still_alive(track).await;
    }
    alive
}

/// What the SIGTERM step did: the group signalled and the processes
/// signalled, or why the agent was not; the pids found reused either way.
struct TermStep {
    sent: Result<(Option<i32>, Vec<i32>), NotSignalled>,
    changed: Vec<i32>,
}

/// Verifies every tracked process, the agent last, and sends SIGTERM to
/// the agent's group (when `group` is still the one it leads) or to the
/// agent, then to every other verified process outside that group. Runs on
/// the blocking pool: each check reads `/proc/<pid>/stat` and the agent's
/// `environ`, which wait on the process's memory-map lock, and each signal
/// must follow its check at once.
fn sigterm(
    track: &Tracking,
    agent: i32,
    start_time: u64,
    labels: &LabelNames,
    group: Option<i32>,
    me: &Me,
) -> TermStep {
    let mut changed = Vec::new();
    let others = verify_all(track, agent, me, &mut changed);
    let leader = match verify_agent(agent, start_time, &track.chat_id, labels, me) {
        Ok(v) => v,
        Err(why) => {
            return TermStep {
                sent: Err(why),
                changed,
            }
        }
    };
    let group = group.filter(|g| leader.pgid == *g);
    let mut signalled = vec![agent];
    match group {
        Some(g) => send_group(g, Signal::SIGTERM, me),
        None => send(&leader, Signal::SIGTERM),
    }
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
struct KillStep {
    group: Option<i32>,
    sent: Vec<i32>,
    changed: Vec<i32>,
}

/// [`sigterm`]'s twin after the grace, with SIGKILL: the group again only
/// while the agent still leads it and [`guard_group`] allows it. On the
/// blocking pool for the same reasons.
fn sigkill(
    track: &Tracking,
    agent: i32,
    labels: &LabelNames,
    group: Option<i32>,
    snap: &Snapshot,
    ancestors: &HashSet<i32>,
    me: &Me,
) -> KillStep {
    let mut changed = Vec::new();
    let others = verify_all(track, agent, me, &mut changed);
    let mut kill_group = None;
    let mut sent_kill: Vec<i32> = others.iter().map(|v| v.pid).collect();
    if let Some(&start) = track.procs.get(&agent) {
        match verify_agent(agent, start, &track.chat_id, labels, me) {
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

/// Runs `f` on the blocking pool as if it were called here: its panic is
/// the caller's.
async fn off_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// This process: never signalled, nor its group.
#[derive(Clone, Copy)]
struct Me {
    pid: i32,
    pgid: i32,
}

impl Me {
    fn current() -> Me {
        Me {
            pid: std::process::id() as i32,
            pgid: nix::unistd::getpgrp().as_raw(),
        }
    }
}

/// Refuses the pids that are never signalled alone: 0 and negatives
/// (`kill(2)` reads them as groups), 1 (init), and this process.
fn guard(pid: i32, me: &Me) -> Result<(), String> {
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
fn guard_group(
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
struct Verified {
    pid: i32,
    pidfd: Option<OwnedFd>,
    pgid: i32,
}

enum Check {
    Same(Verified),
    Gone,
    Differs(NotSignalled),
}

/// Opens a pidfd on `pid`, then checks through `/proc` that it is still
/// the process that started at `start_time`, alive, and (for the agent)
/// carrying the chat label `chat`. Opening first makes the check bind the
/// pidfd: had the pid been reused before the open, the check would see the
/// other process's start time.
fn check(pid: i32, start_time: u64, chat: Option<(&str, &LabelNames)>, me: &Me) -> Check {
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
    if let Some((expected, labels)) = chat {
        let found = process.environ().ok().and_then(|env| {
            env.get(std::ffi::OsStr::new(&labels.chat))
                .and_then(|v| v.to_str())
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        });
        if found.as_deref() != Some(expected) {
            // A process that exits while being read loses its environment.
            if crate::observe::processes::identity_of(&process, labels)
                .is_none_or(|i| !is_alive_state(i.state))
            {
                return Check::Gone;
            }
            return Check::Differs(NotSignalled::LabelDiffers {
                found,
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

fn verify_agent(
    pid: i32,
    start_time: u64,
    chat: &str,
    labels: &LabelNames,
    me: &Me,
) -> Result<Verified, NotSignalled> {
    match check(pid, start_time, Some((chat, labels)), me) {
        Check::Same(v) => Ok(v),
        Check::Gone => Err(NotSignalled::Gone),
        Check::Differs(why) => Err(why),
    }
}

/// Verifies every tracked process but the agent; those whose pid now names
/// another process are added to `changed`.
fn verify_all(track: &Tracking, agent: i32, me: &Me, changed: &mut Vec<i32>) -> Vec<Verified> {
    let mut out = Vec::new();
    for (&pid, &start) in &track.procs {
        if pid == agent {
            continue;
        }
        match check(pid, start, None, me) {
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
fn send_group(pgid: i32, sig: Signal, me: &Me) {
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
fn pidfd_open(pid: i32) -> Result<OwnedFd, Errno> {
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
fn pidfd_send_signal(fd: &OwnedFd, sig: Signal) -> Result<(), Errno> {
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

/// The tracked processes still alive (same start time, not a zombie), with
/// their states, read on the blocking pool: a `/proc/<pid>/stat` read waits
/// on the process's memory-map lock, which a process in `D` state may hold.
async fn still_alive(track: &Tracking) -> BTreeMap<i32, char> {
    let procs = track.procs.clone();
    off_thread(move || {
        procs
            .into_iter()
            .filter_map(|(pid, start)| {
                let stat = Process::new(pid).ok()?.stat().ok()?;
                (stat.starttime == start && is_alive_state(stat.state)).then_some((pid, stat.state))
            })
            .collect()
    })
    .await
}

/// A `/proc` snapshot, taken on the blocking pool (thousands of reads).
async fn snapshot() -> Snapshot {
    tokio::task::spawn_blocking(Snapshot::take)
        .await
        .unwrap_or_else(|e| {
            tracing::warn!(error = %e, "process snapshot failed");
            Snapshot::default()
        })
}

#[cfg(test)]
mod tests;
