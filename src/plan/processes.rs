//! Labelled agent processes whose chat is not live.
//!
//! With `processes.instance` set, only processes of that instance are
//! candidates. The scan lists no other (`observe::processes`); the plan
//! holds to it as well, so that a process another controller owns can
//! never become an action, whatever the observation handed in.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime};

use crate::model::{age, ActualState, AgentProcess, DesiredState, Table, Tied};

use super::{Action, ActionKind, Owner, Pending, Plan, Policy, ProcessTarget, Target};

/// Labelled processes whose chat is not live.
pub(super) fn plan_processes(
    desired: &DesiredState,
    actual: &ActualState,
    policy: &Policy,
    now: SystemTime,
    out: &mut Plan,
) {
    // Processes tied to a chat by fork lineage that carry no labels now
    // are that chat's agents too, under the same rules.
    let tied: Vec<AgentProcess> = actual.tied.iter().map(|t| as_agent(t, policy)).collect();
    let vias: HashMap<i32, i32> = actual.tied.iter().map(|t| (t.pid, t.via)).collect();
    let all: Vec<&AgentProcess> = actual.processes.iter().chain(&tied).collect();
    // Stopping a process stops its descendants: target the top of each
    // chat's labelled tree only (a child whose leader died becomes a top).
    let labelled: HashSet<(i32, &str)> = all.iter().map(|p| (p.pid, p.chat_id.as_str())).collect();
    for p in all.iter().copied() {
        if labelled.contains(&(p.ppid, p.chat_id.as_str())) {
            continue;
        }
        if !of_this_instance(p, policy) {
            continue;
        }
        // Its agent's cgroup is stopped as a whole.
        if super::cgroups::in_chat_cgroup(actual, p.pid, &p.chat_id) {
            continue;
        }
        let state = desired.chats.get(&p.chat_id);
        let up = age(now, p.started_at);
        let up_text = humantime::format_duration(Duration::from_secs(up.as_secs()));
        let target = Target::Process {
            pid: p.pid,
            start_time: p.start_time,
        };
        let why = match judge_chat(desired, &p.chat_id, up, policy, now) {
            Chat::Live => continue,
            Chat::Unreadable(u) => {
                out.pending.push(Pending {
                    target,
                    why: format!(
                        "pid {} is labelled with chat {}: {u}; kept",
                        p.pid, p.chat_id
                    ),
                });
                continue;
            }
            Chat::NoRowYet => {
                out.pending.push(Pending {
                    target,
                    why: format!(
                        "pid {} ({}) is labelled with chat {} which has no row, {up_text} old: \
                         stopped once {} old",
                        p.pid,
                        p.agent.as_deref().unwrap_or("agent"),
                        p.chat_id,
                        humantime::format_duration(policy.process_orphan_min_age)
                    ),
                });
                continue;
            }
            Chat::Done(why) => why,
        };
        let via = vias.get(&p.pid).copied();
        let lineage = match via {
            // Tied when it exec'd with its labels, then dropped them.
            Some(v) if v == p.pid => " (labelled when it started, now without its labels)".into(),
            Some(v) => format!(" (forked from pid {v}, now without its labels)"),
            None => String::new(),
        };
        out.actions.push(Action {
            kind: ActionKind::TerminateProcess {
                process: ProcessTarget {
                    tied_to: via,
                    ..process_target(p, up)
                },
            },
            owner: Owner {
                session_id: state
                    .and_then(|s| s.chat.as_ref().map(|c| c.session_id.clone()))
                    .or_else(|| p.session_id.clone()),
                chat_id: Some(p.chat_id.clone()),
            },
            reason: format!(
                "{why}; {} pid {}{lineage} up {up_text}",
                p.agent.as_deref().unwrap_or("agent"),
                p.pid
            ),
        });
    }
}

/// How an agent's chat stands: the one rule for labelled processes, tied
/// processes and agent cgroups.
pub(super) enum Chat {
    /// Live: its agent runs on.
    Live,
    /// Its row cannot be read: what it may own is kept.
    Unreadable(String),
    /// No row, and the agent younger than `processes.orphan_min_age`: the
    /// row may not be committed yet.
    NoRowYet,
    /// Done with, for this reason: its agent is stopped.
    Done(String),
}

/// [`Chat`] of `chat`, for an agent up for `up`.
pub(super) fn judge_chat(
    desired: &DesiredState,
    chat: &str,
    up: Duration,
    policy: &Policy,
    now: SystemTime,
) -> Chat {
    let state = desired.chats.get(chat);
    if state.is_some_and(|s| s.is_live()) {
        return Chat::Live;
    }
    if let Some(u) = desired.unreadable(Table::Chats, chat) {
        return Chat::Unreadable(u.to_string());
    }
    let has_row = state.is_some_and(|s| s.chat.is_some());
    if !has_row && up < policy.process_orphan_min_age {
        return Chat::NoRowYet;
    }
    Chat::Done(
        state
            .and_then(|s| s.not_live_because(now))
            .unwrap_or_else(|| format!("chat {chat} has no row")),
    )
}

/// A tied process as the agent it is: its chat from its lineage; its
/// instance this controller's (only this instance's labelled processes are
/// followed).
fn as_agent(t: &Tied, policy: &Policy) -> AgentProcess {
    AgentProcess {
        pid: t.pid,
        ppid: t.ppid,
        pgid: t.pgid,
        sid: 0,
        start_time: t.start_time,
        started_at: t.started_at,
        state: 'S',
        chat_id: t.chat_id.clone(),
        session_id: None,
        agent: None,
        instance: policy.instance.clone(),
        command: t.command.clone(),
        cwd: None,
    }
}

/// Whether `p` may be this controller's: always without an instance,
/// otherwise only when its instance label carries exactly this one.
fn of_this_instance(p: &AgentProcess, policy: &Policy) -> bool {
    policy
        .instance
        .as_ref()
        .is_none_or(|mine| p.instance.as_ref() == Some(mine))
}

pub(super) fn process_target(p: &AgentProcess, up: Duration) -> ProcessTarget {
    ProcessTarget {
        pid: p.pid,
        start_time: p.start_time,
        pgid: p.pgid,
        chat_id: p.chat_id.clone(),
        agent: p.agent.clone(),
        command: p.command.clone(),
        age_secs: up.as_secs(),
        recorded_by_row: None,
        tied_to: None,
    }
}
