//! Stopping an agent process and everything it started.
//!
//! See [`terminate`] for the guarantees. The failures this module exists
//! to prevent: killing only the direct child (which left hundreds of
//! orphaned MCP servers behind), signalling a stale pid (which killed an
//! unrelated process), killing the agent of a chat reopened during the
//! grace, and saying "done" while the agent lives on without its labels.

mod collect;
mod signal;

pub(in crate::act) use signal::{pidfd_open, pidfd_send_signal};

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use procfs::process::Process;
use serde::Serialize;

use crate::observe::processes::{is_alive_state, LabelNames, Snapshot};
use collect::{Answers, Tracking};
#[cfg(test)]
use signal::{guard_group, send_group};
use signal::{Label, Me};

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
pub struct Agent {
    pub pid: i32,
    /// Field 22 of `/proc/<pid>/stat` when the process was observed.
    pub start_time: u64,
    /// The value of the chat label when the process was observed; for a
    /// target recorded by a row, the row's chat.
    pub chat_id: String,
    /// The `agent_sessions` row that recorded this pid and start time,
    /// when the target comes from it rather than from a labelled process:
    /// the first check then accepts the process without any chat label
    /// (an agent that cleared its environment is still the process the
    /// row recorded), though never with another chat's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recorded_by_row: Option<String>,
    /// The labelled process this one was forked from, when the target
    /// comes from the fork lineage: accepted without any chat label as
    /// for [`Agent::recorded_by_row`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tied_to: Option<i32>,
}

impl Agent {
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

impl From<&crate::model::AgentProcess> for Agent {
    fn from(p: &crate::model::AgentProcess) -> Self {
        Agent {
            pid: p.pid,
            start_time: p.start_time,
            chat_id: p.chat_id.clone(),
            recorded_by_row: None,
            tied_to: None,
        }
    }
}

/// The answer of [`ChatLiveness::is_live`].
pub type LiveAnswer<'a> = Pin<Box<dyn Future<Output = Result<bool, String>> + Send + 'a>>;

/// Whether a chat is live right now, asked during a termination: right
/// before SIGKILL for the agent's own chat, and for every other chat whose
/// label a process below the agent carries. `Err` when it cannot be known
/// (the database is down): then nothing of that chat is signalled.
pub trait ChatLiveness: Sync {
    fn is_live<'a>(&'a self, chat_id: &'a str) -> LiveAnswer<'a>;
}

/// A plain function answers at once (tests, and callers that already
/// know).
impl<F> ChatLiveness for F
where
    F: Fn(&str) -> Result<bool, String> + Sync,
{
    fn is_live<'a>(&'a self, chat_id: &'a str) -> LiveAnswer<'a> {
        let answer = self(chat_id);
        Box::pin(std::future::ready(answer))
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
    /// At the first SIGTERM, the process's chat label is not the one
    /// observed (or is missing, for a target the label scan found).
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

/// Why SIGKILL was withheld after the grace: the agent had SIGTERM, and
/// what is still running of it is left running.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum KeptAlive {
    /// The agent's chat is live again: a reopened chat keeps its agent.
    LiveAgain { chat_id: String },
    /// Whether the chat is live could not be read: never killed on a guess.
    LivenessUnknown { chat_id: String, error: String },
}

impl fmt::Display for KeptAlive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeptAlive::LiveAgain { chat_id } => write!(
                f,
                "chat {chat_id} is live again: SIGKILL withheld; it already had SIGTERM"
            ),
            KeptAlive::LivenessUnknown { chat_id, error } => write!(
                f,
                "chat {chat_id}'s liveness cannot be read ({error}): SIGKILL withheld, \
                 never sent on a guess; it already had SIGTERM"
            ),
        }
    }
}

/// A process below the agent left alone, with its descendants: it carries
/// the label of another chat, which is live (or whose liveness cannot be
/// read).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Spared {
    pub pid: i32,
    /// The chat its label names.
    pub chat_id: String,
    pub why: String,
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
    /// Tracked processes whose pid belonged to another process (another
    /// start time) at a later re-check: they were gone, and were not
    /// signalled again. A label alone never puts a process here.
    pub identity_changed: Vec<i32>,
    /// Why the agent itself was not signalled; `None` when it was.
    pub not_signalled: Option<NotSignalled>,
    /// Why SIGKILL was withheld after the grace; `None` when it was not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kept_alive: Option<KeptAlive>,
    /// With [`Terminated::kept_alive`]: the processes still running then.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub kept: Vec<i32>,
    /// Processes below the agent left alone: they carry a live chat's
    /// label.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub spared: Vec<Spared>,
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
        self.survivors.is_empty()
            && self.kept_alive.is_none()
            && matches!(self.not_signalled, None | Some(NotSignalled::Gone))
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
        if let Some(kept) = &self.kept_alive {
            write!(f, "; {kept}")?;
            if !self.kept.is_empty() {
                write!(f, "; still running: {}", join(&self.kept))?;
            }
        }
        if !self.survivors.is_empty() {
            let s: Vec<String> = self
                .survivors
                .iter()
                .map(|s| format!("{} ({})", s.pid, s.state))
                .collect();
            write!(f, "; still there after SIGKILL: {}", s.join(", "))?;
        }
        if !self.spared.is_empty() {
            let s: Vec<String> = self
                .spared
                .iter()
                .map(|s| format!("{} ({})", s.pid, s.why))
                .collect();
            write!(f, "; left alone below it: {}", s.join(", "))?;
        }
        Ok(())
    }
}

fn join(pids: &[i32]) -> String {
    pids.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Stops the agent `target` and every process it started: SIGTERM, up to
/// `grace` to exit, then — unless its chat is live again — SIGKILL for
/// whatever is left. `live` answers whether a chat is live.
///
/// # Guarantees
///
/// 1. **Identity is re-checked right before every signal.** Every process
///    is signalled only while its pid names a process with the observed
///    start time (field 22 of `/proc/<pid>/stat`); a pid reused by another
///    process is never signalled. The check and the signal go through one
///    pidfd (`pidfd_open` before the check, `pidfd_send_signal` after it),
///    so a pid reused between the two cannot be hit; kernels without
///    pidfds (before 5.3) fall back to `kill(2)` right after the check.
///    The agent's first SIGTERM also requires the observed chat label
///    (`labels.chat`): a process relabelled before it is not the one
///    observed, and [`Terminated::not_signalled`] says why. A target a row
///    recorded ([`Agent::recorded_by_row`]) may carry that chat's label
///    or none at all, never another chat's. After that first SIGTERM the
///    label no longer matters: the same pid and start time are the same
///    process whatever its environment says, so an agent that re-exec'd
///    itself without its labels (or rewrote its environment) during the
///    grace still gets SIGKILL. Tests:
///    `identity_is_rechecked_before_every_signal_*`,
///    `an_agent_that_drops_its_labels_during_the_grace_is_killed`,
///    `a_row_target_without_labels_is_stopped_but_never_one_with_another_chats_label`.
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
/// 5. **Never a live chat's agent.** The agent's chat is asked about again
///    right before SIGKILL (after the grace, when it may have been
///    reopened): live again, nothing is killed, and
///    [`Terminated::kept_alive`] says so (the agent already had SIGTERM);
///    an answer that cannot be had (the database is down) withholds SIGKILL
///    too, never killing on a guess. Test:
///    `a_chat_reopened_during_the_grace_keeps_its_agent_*`.
///
/// 6. **Never a live chat's process below another chat's agent.** A
///    descendant or group member carrying the chat label of another chat
///    is signalled only while that chat is not live (asked when it is
///    collected, and again right before SIGKILL); otherwise it and its
///    descendants are left alone — the group is then signalled member by
///    member, never with `killpg` — and reported in
///    [`Terminated::spared`]. Test:
///    `a_live_chats_process_below_the_agent_is_left_alone_and_reported`.
///
/// 7. **A full report, never "gone" while something stays.**
///    [`Terminated`] lists what was signalled, what exited on SIGTERM,
///    what was killed, what survived, what was spared and kept, and why
///    the agent was not signalled; it serializes for reports and audit
///    records. Every tracked process still there after SIGKILL is a
///    survivor: only a process whose pid now names another start time
///    leaves the tracking, the agent included. An agent gone before its
///    SIGTERM still leaves its observed descendants signalled. Tests:
///    `outcome_is_a_serializable_report`,
///    `descendants_of_an_agent_gone_before_its_sigterm_are_still_stopped`.
///
/// Anything that still escapes (a process forked after the last
/// collection into a new session) keeps the inherited chat label and is
/// found by the next pass's scan.
pub async fn terminate(
    target: &Agent,
    grace: Duration,
    labels: &LabelNames,
    live: &dyn ChatLiveness,
) -> Terminated {
    run(target, grace, labels, live, &|| {}, |_| {}).await
}

/// [`terminate`], calling `after_term` once SIGTERM is sent (or it is
/// known that none will be): the executor then lets the next termination
/// start while this one waits out its grace.
pub async fn terminate_then(
    target: &Agent,
    grace: Duration,
    labels: &LabelNames,
    live: &dyn ChatLiveness,
    after_term: &(dyn Fn() + Sync),
) -> Terminated {
    run(target, grace, labels, live, after_term, |_| {}).await
}

/// [`terminate`], with a hook run right before the SIGKILL phase (tests
/// use it to simulate a pid being reused during the grace).
async fn run(
    target: &Agent,
    grace: Duration,
    labels: &LabelNames,
    live: &dyn ChatLiveness,
    after_term: &(dyn Fn() + Sync),
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
    let (mut track, group) =
        collect::tracking(target, &snap, &ancestors, &me, labels, live, &mut out).await;
    let group = group.filter(|g| !collect::spared_in_group(&track, &snap, *g));
    let termed = term_step(target, &track, labels, group, me, &mut out).await;
    after_term();
    let Some((group, signalled)) = termed else {
        out.spared.clear();
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
    let Some(sent_kill) = kill_step(&mut track, labels, live, group, ancestors, me, &mut out).await
    else {
        out.kept = still_alive(&track).await.into_keys().collect();
        tracing::warn!(pid = target.pid, kept = ?out.kept, why = %out.kept_alive.as_ref().map(ToString::to_string).unwrap_or_default(), "SIGKILL withheld");
        return out;
    };
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
    target: &Agent,
    me: &Me,
) -> Result<(Snapshot, HashSet<i32>), NotSignalled> {
    if let Err(why) = signal::guard(target.pid, me) {
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

/// [`signal::sigterm`] on the blocking pool, recorded in `out`: the group
/// and the processes signalled, or `None` when nothing was (`out` says
/// why).
async fn term_step(
    target: &Agent,
    track: &Tracking,
    labels: &LabelNames,
    group: Option<i32>,
    me: Me,
    out: &mut Terminated,
) -> Option<(Option<i32>, Vec<i32>)> {
    // SIGTERM. Verify everything first (pidfds pin the processes), the
    // agent last, right before the group signal.
    let term = {
        let (track, labels, target) = (track.clone(), labels.clone(), target.clone());
        off_thread(move || {
            let vouched = target.recorded_by_row.is_some() || target.tied_to.is_some();
            let label = if vouched {
                Label::IsOrAbsent(&target.chat_id, &labels)
            } else {
                Label::Is(&target.chat_id, &labels)
            };
            signal::sigterm(&track, target.start_time, label, group, &me)
        })
        .await
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

/// [`signal::sigkill`] on the blocking pool after the grace, unless the
/// agent's chat is live again (or that cannot be known: `out.kept_alive`
/// says which, and `None` is returned). The pids found reused leave
/// `track`, so that they are never reported as survivors. Returns the
/// processes sent SIGKILL.
async fn kill_step(
    track: &mut Tracking,
    labels: &LabelNames,
    live: &dyn ChatLiveness,
    group: Option<i32>,
    ancestors: HashSet<i32>,
    me: Me,
    out: &mut Terminated,
) -> Option<Vec<i32>> {
    // Children forked during the grace are collected too; the other chats
    // are asked again (any may have been reopened), the agent's own last,
    // right before the signal.
    let snap = snapshot().await;
    let mut answers = Answers::new();
    collect::track_late_descendants(
        track,
        &snap,
        group,
        &ancestors,
        &me,
        labels,
        live,
        &mut answers,
        out,
    )
    .await;
    collect::ask_again(track, &snap, live, &mut answers, out).await;
    let chat_id = track.chat_id.clone();
    match live.is_live(&chat_id).await {
        Ok(false) => {}
        Ok(true) => {
            out.kept_alive = Some(KeptAlive::LiveAgain { chat_id });
            return None;
        }
        Err(error) => {
            out.kept_alive = Some(KeptAlive::LivenessUnknown { chat_id, error });
            return None;
        }
    }
    let group = group.filter(|g| !collect::spared_in_group(track, &snap, *g));
    let kill = {
        let track = track.clone();
        off_thread(move || signal::sigkill(&track, group, &snap, &ancestors, &me)).await
    };
    let (kill_group, sent_kill, changed) = (kill.group, kill.sent, kill.changed);
    tracing::warn!(pid = track.agent, group = ?kill_group, processes = ?sent_kill, "SIGKILL sent after the grace");
    for pid in &changed {
        track.procs.remove(pid);
    }
    out.identity_changed.extend(changed);
    out.identity_changed.sort_unstable();
    out.identity_changed.dedup();
    Some(sent_kill)
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

/// Runs `f` on the blocking pool as if it were called here: its panic is
/// the caller's.
async fn off_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
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
