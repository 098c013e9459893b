//! Agent cgroups whose chat is not live, and empty ones.
//!
//! The same rules as for labelled processes ([`super::processes`]): a live
//! chat keeps its agent, an unreadable chat row keeps it (pending), a chat
//! without a row keeps it until `processes.orphan_min_age`. A cgroup whose
//! name does not read as a record is reported once that old and never
//! acted on: its chat is not guessed. An empty cgroup of any chat is
//! removed once that old (younger, its launcher may be moving in).

use std::time::{Duration, SystemTime};

use crate::model::{age, ActualState, AgentCgroup, DesiredState};

use super::processes::{judge_chat, Chat};
use super::{Action, ActionKind, CgroupTarget, Owner, Pending, Plan, Policy, Target};

pub(super) fn plan_cgroups(
    desired: &DesiredState,
    actual: &ActualState,
    policy: &Policy,
    now: SystemTime,
    out: &mut Plan,
) {
    for cg in &actual.cgroups {
        let up = age(now, cg.created);
        let old_enough = up >= policy.process_orphan_min_age;
        let record = match &cg.record {
            Ok(r) => r,
            Err(why) => {
                if old_enough {
                    out.pending.push(Pending {
                        target: Target::Cgroup(cg.path.clone()),
                        why: format!(
                            "its name does not record an agent ({why}); left alone: its chat is \
                             not guessed"
                        ),
                    });
                }
                continue;
            }
        };
        let owner = Owner {
            session_id: desired
                .chats
                .get(&record.chat)
                .and_then(|s| s.chat.as_ref().map(|c| c.session_id.clone()))
                .or_else(|| record.session.clone()),
            chat_id: Some(record.chat.clone()),
        };
        if cg.members.is_empty() {
            if old_enough {
                out.actions.push(Action {
                    kind: ActionKind::RemoveCgroup {
                        path: cg.path.clone(),
                    },
                    owner,
                    reason: format!(
                        "no process is left in the cgroup of {} (chat {})",
                        record.agent, record.chat
                    ),
                });
            }
            continue;
        }
        let up_text = humantime::format_duration(Duration::from_secs(up.as_secs()));
        let key = Target::Cgroup(cg.path.clone());
        let why = match judge_chat(desired, &record.chat, up, policy, now) {
            Chat::Live => continue,
            Chat::Unreadable(u) => {
                out.pending.push(Pending {
                    target: key,
                    why: format!("its agent's chat {}: {u}; kept", record.chat),
                });
                continue;
            }
            Chat::NoRowYet => {
                out.pending.push(Pending {
                    target: key,
                    why: format!(
                        "the cgroup of {} records chat {} which has no row, {up_text} old: \
                         stopped once {} old",
                        record.agent,
                        record.chat,
                        humantime::format_duration(policy.process_orphan_min_age)
                    ),
                });
                continue;
            }
            Chat::Done(why) => why,
        };
        out.actions.push(Action {
            kind: ActionKind::StopCgroup {
                cgroup: target(cg, record, up),
            },
            owner,
            reason: format!(
                "{why}; {} (pid {}) and {} process(es) in its cgroup, up {up_text}",
                record.agent,
                record.pid,
                cg.members.len()
            ),
        });
    }
}

fn target(cg: &AgentCgroup, record: &crate::cgroup::Record, up: Duration) -> CgroupTarget {
    CgroupTarget {
        path: cg.path.clone(),
        chat_id: record.chat.clone(),
        agent: record.agent.clone(),
        pid: record.pid,
        members: cg.members.len(),
        age_secs: up.as_secs(),
    }
}

/// Whether `pid` is in an agent cgroup recording chat `chat`: left to
/// that cgroup's teardown, labels or not.
pub(super) fn in_chat_cgroup(actual: &ActualState, pid: i32, chat: &str) -> bool {
    actual.cgroups.iter().any(|cg| {
        cg.record.as_ref().is_ok_and(|r| r.chat == chat) && cg.members.binary_search(&pid).is_ok()
    })
}
