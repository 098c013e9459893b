//! Whom a termination signals: the agent, its descendants and the members
//! of the group it leads — less the processes carrying the label of
//! another chat that is live, which are left alone with their own
//! descendants (guarantee 6 of [`super::terminate`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use super::signal::{guard_group, Me};
use super::{off_thread, Agent, ChatLiveness, Spared, Terminated};
use crate::observe::processes::{identity, is_alive_state, EnvChat, LabelNames, Snapshot};

/// What is being stopped: the expected identities.
#[derive(Clone, Debug)]
pub(super) struct Tracking {
    /// The agent's pid.
    pub agent: i32,
    /// The agent's chat: a process carrying another chat's label is asked
    /// about before it is signalled.
    pub chat_id: String,
    /// pid -> start time, the agent included.
    pub procs: BTreeMap<i32, u64>,
    /// Tracked processes carrying the label of another chat, not live when
    /// asked, by pid: asked again right before SIGKILL.
    pub foreign: BTreeMap<i32, String>,
    /// Left alone, with their descendants: pid -> start time.
    pub spared: BTreeMap<i32, u64>,
}

/// The liveness answers of one step, by chat: each chat is asked once.
pub(super) type Answers = HashMap<String, Result<bool, String>>;

/// Whom to stop as the snapshot shows them before the first signal (so
/// that descendants re-parented to pid 1 when their parent dies are still
/// known): the agent, its descendants and, when it leads a group that may
/// be signalled, that group's members; then the group, if it may be
/// signalled. Parent links are only meaningful if the snapshot saw the
/// same agent process.
pub(super) async fn tracking(
    target: &Agent,
    snap: &Snapshot,
    ancestors: &HashSet<i32>,
    me: &Me,
    labels: &LabelNames,
    live: &dyn ChatLiveness,
    out: &mut Terminated,
) -> (Tracking, Option<i32>) {
    let mut track = Tracking {
        agent: target.pid,
        chat_id: target.chat_id.clone(),
        procs: BTreeMap::from([(target.pid, target.start_time)]),
        foreign: BTreeMap::new(),
        spared: BTreeMap::new(),
    };
    let seen = snap.entries.get(&target.pid).copied();
    let same = seen.is_some_and(|e| e.start_time == target.start_time);
    let mut group = None;
    let mut found = Vec::new();
    if same {
        found.extend(snap.descendants_of(target.pid));
        if seen.is_some_and(|e| e.pgid == target.pid) {
            match guard_group(target.pid, me, snap, ancestors) {
                Ok(()) => {
                    group = Some(target.pid);
                    found.extend(snap.group_members(target.pid));
                }
                Err(why) => tracing::warn!(pid = target.pid, %why, "group not signalled"),
            }
        }
    }
    found.retain(|(pid, _)| signallable(*pid, ancestors, me));
    let mut answers = Answers::new();
    admit(&mut track, found, snap, labels, live, &mut answers, out).await;
    (track, group)
}

/// Whether `pid` may be tracked at all: never pid 0 or 1, this process,
/// or one of its ancestors.
pub(super) fn signallable(pid: i32, ancestors: &HashSet<i32>, me: &Me) -> bool {
    pid > 1 && pid != me.pid && !ancestors.contains(&pid)
}

/// Children forked (or group members joined) during the grace are the
/// agent's too, and get SIGKILL; protected pids stay untracked, and the
/// processes of live chats are left alone as at the start.
#[allow(clippy::too_many_arguments)]
pub(super) async fn track_late_descendants(
    track: &mut Tracking,
    snap: &Snapshot,
    group: Option<i32>,
    ancestors: &HashSet<i32>,
    me: &Me,
    labels: &LabelNames,
    live: &dyn ChatLiveness,
    answers: &mut Answers,
    out: &mut Terminated,
) {
    let mut more = Vec::new();
    for (&pid, &start) in &track.procs {
        if snap
            .entries
            .get(&pid)
            .is_some_and(|e| e.start_time == start && is_alive_state(e.state))
        {
            more.extend(snap.descendants_of(pid));
            if group.is_some() && snap.entries[&pid].pgid == track.agent {
                more.extend(snap.group_members(track.agent));
            }
        }
    }
    more.retain(|(pid, _)| signallable(*pid, ancestors, me));
    admit(track, more, snap, labels, live, answers, out).await;
}

/// Adds the processes `found` (pid, start time) to `track`, but for those
/// that carry the chat label of another chat which is live, or whose
/// liveness cannot be read: those are spared, reported in `out`, and so
/// are their descendants. A process of another chat that is not live is
/// tracked, and remembered to be asked about again before SIGKILL.
///
/// The label is the chat label alone, whatever the other labels say: the
/// side that keeps a process is taken whenever a live chat is named.
async fn admit(
    track: &mut Tracking,
    found: Vec<(i32, u64)>,
    snap: &Snapshot,
    labels: &LabelNames,
    live: &dyn ChatLiveness,
    answers: &mut Answers,
    out: &mut Terminated,
) {
    let left_alone = spared_subtrees(track, snap);
    let new: Vec<(i32, u64)> = found
        .into_iter()
        .filter(|(pid, _)| !track.procs.contains_key(pid) && !left_alone.contains(pid))
        .collect::<BTreeMap<_, _>>()
        .into_iter()
        .collect();
    if new.is_empty() {
        return;
    }
    let read = {
        let labels = labels.clone();
        off_thread(move || {
            new.into_iter()
                .map(|(pid, start)| (pid, start, chat_label(pid, start, &labels)))
                .collect::<Vec<_>>()
        })
        .await
    };
    let mut spared_any = false;
    for (pid, start, chat) in read {
        let Some(chat) = chat.filter(|c| *c != track.chat_id) else {
            track.procs.insert(pid, start);
            continue;
        };
        match ask(live, &chat, answers).await {
            Ok(false) => {
                track.procs.insert(pid, start);
                track.foreign.insert(pid, chat);
            }
            answer => {
                spare(track, out, pid, start, &chat, answer, "");
                spared_any = true;
            }
        }
    }
    if spared_any {
        drop_spared(track, snap);
    }
}

/// Before SIGKILL: every other chat whose processes are tracked is asked
/// again (unless asked in this step already); the processes of one live by
/// now are spared (they had SIGTERM), with their descendants.
pub(super) async fn ask_again(
    track: &mut Tracking,
    snap: &Snapshot,
    live: &dyn ChatLiveness,
    answers: &mut Answers,
    out: &mut Terminated,
) {
    let chats: BTreeSet<String> = track.foreign.values().cloned().collect();
    let mut spared_any = false;
    for chat in chats {
        let answer = ask(live, &chat, answers).await;
        if answer == Ok(false) {
            continue;
        }
        let pids: Vec<i32> = track
            .foreign
            .iter()
            .filter(|(_, c)| **c == chat)
            .map(|(p, _)| *p)
            .collect();
        for pid in pids {
            if let Some(start) = track.procs.get(&pid).copied() {
                let again = "; it already had SIGTERM";
                spare(track, out, pid, start, &chat, answer.clone(), again);
                spared_any = true;
            }
        }
    }
    if spared_any {
        drop_spared(track, snap);
    }
}

/// The answer for `chat`, asked once per step.
async fn ask(live: &dyn ChatLiveness, chat: &str, answers: &mut Answers) -> Result<bool, String> {
    if let Some(a) = answers.get(chat) {
        return a.clone();
    }
    let a = live.is_live(chat).await;
    answers.insert(chat.to_owned(), a.clone());
    a
}

/// Moves `pid` from the tracked processes to the spared ones, and reports
/// it with why (`answer`: live, or unknown).
fn spare(
    track: &mut Tracking,
    out: &mut Terminated,
    pid: i32,
    start: u64,
    chat: &str,
    answer: Result<bool, String>,
    suffix: &str,
) {
    let why = match answer {
        Ok(_) => format!("chat {chat} is live{suffix}"),
        Err(e) => format!(
            "chat {chat}'s liveness cannot be read ({e}): never signalled on a guess{suffix}"
        ),
    };
    tracing::info!(pid, agent = track.agent, chat, %why, "a process below the agent is left alone");
    track.procs.remove(&pid);
    track.foreign.remove(&pid);
    track.spared.insert(pid, start);
    out.spared.push(Spared {
        pid,
        chat_id: chat.to_owned(),
        why,
    });
    out.spared.sort_by_key(|s| s.pid);
}

/// Untracks the descendants of every spared process (never the agent).
fn drop_spared(track: &mut Tracking, snap: &Snapshot) {
    let left_alone = spared_subtrees(track, snap);
    let agent = track.agent;
    track
        .procs
        .retain(|pid, _| *pid == agent || !left_alone.contains(pid));
    let procs = &track.procs;
    track.foreign.retain(|pid, _| procs.contains_key(pid));
}

/// The spared processes and, as the snapshot shows them, their
/// descendants.
pub(super) fn spared_subtrees(track: &Tracking, snap: &Snapshot) -> HashSet<i32> {
    let mut out = HashSet::new();
    for (&pid, &start) in &track.spared {
        out.insert(pid);
        if snap
            .entries
            .get(&pid)
            .is_some_and(|e| e.start_time == start)
        {
            out.extend(snap.descendants_of(pid).into_iter().map(|(p, _)| p));
        }
    }
    out
}

/// Whether a spared process (or one of its descendants) is in `group`:
/// then the group is never signalled as a whole, and its other members are
/// signalled one by one.
pub(super) fn spared_in_group(track: &Tracking, snap: &Snapshot, group: i32) -> bool {
    spared_subtrees(track, snap)
        .iter()
        .any(|p| snap.entries.get(p).is_some_and(|e| e.pgid == group))
}

/// The chat label of the process (pid, start time), read raw; `None` when
/// it carries none, cannot be read, or the pid names another process now.
fn chat_label(pid: i32, start: u64, labels: &LabelNames) -> Option<String> {
    let id = identity(pid, labels).filter(|i| i.start_time == start)?;
    match id.env_chat {
        EnvChat::Present(chat) => Some(chat),
        EnvChat::Absent | EnvChat::Unreadable => None,
    }
}
