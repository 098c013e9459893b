//! `acp` agent rows: closed once their process is stopped or gone; the
//! process a row records is stopped first when it runs without its labels.

use std::time::{Duration, SystemTime};

use crate::model::{age, ActualState, AgentSessionRow, Backend, DesiredState, PidIdentity, Table};

use super::{
    Action, ActionKind, Owner, Pending, Plan, Policy, ProcessTarget, RecordedProcess, Target,
};

/// Open `acp` rows whose recorded process no longer exists (its pid is
/// gone, or runs another process: the start time differs), whatever their
/// chat's liveness; and open `acp` rows of chats that are not live, closed
/// once the chat's processes are stopped (a later stage of the same group).
///
/// A recorded pid is signalled on the row's word only when the row
/// records its start time too, the process there has exactly that start
/// time (the same process, DESIGN.md), and its environment was read and
/// carries no chat label at all: an agent that cleared its environment
/// (`exec env -i`, `setproctitle()`) is still the agent the row recorded,
/// and the label scan can no longer see it. One whose start time differs,
/// whose environment cannot be read, or that carries another label, never
/// is; nor is one recorded without a start time.
pub(super) fn plan_agent_rows(
    desired: &DesiredState,
    actual: &ActualState,
    policy: &Policy,
    now: SystemTime,
    out: &mut Plan,
) {
    for row in &desired.agent_sessions {
        if row.backend != Backend::Acp {
            continue;
        }
        if let Some((recorded, detail)) = recorded_process_gone(row, actual) {
            let why = chat_state_text(desired, row, now);
            out.actions
                .push(close_row(row, &why, detail, Some(recorded)));
            continue;
        }
        let Some(why) = chat_not_live(desired, row, now, "the row stays open", out) else {
            continue;
        };
        if let Some((pid, start)) = recorded_and_unlabelled(row, actual)
            // In its chat's cgroup it is stopped with the cgroup.
            .filter(|(pid, _)| !super::cgroups::in_chat_cgroup(actual, *pid, &row.chat_id))
        {
            match stop_unlabelled(desired, row, (pid, start), &why, policy, now) {
                Ok(stop) => {
                    let detail = format!("agent pid {pid} stopped first");
                    // Two rows may record one process: one termination.
                    if !out.actions.iter().any(|a| a.key() == stop.key()) {
                        out.actions.push(stop);
                    }
                    out.actions.push(close_row(row, &why, detail, None));
                }
                Err(why) => out.pending.push(Pending {
                    target: Target::AgentRow(row.id.clone()),
                    why,
                }),
            }
            continue;
        }
        match recorded_process_stopped(row, actual, &why) {
            Ok(detail) => out.actions.push(close_row(row, &why, detail, None)),
            Err(why) => out.pending.push(Pending {
                target: Target::AgentRow(row.id.clone()),
                why,
            }),
        }
    }
}

/// The row's recorded `(pid, start time)`, when the process there is the
/// very one the row recorded (pid and start time both) and its
/// environment carries no chat label at all.
fn recorded_and_unlabelled(row: &AgentSessionRow, actual: &ActualState) -> Option<(i32, u64)> {
    let pid = row.pid?;
    let start = row.pid_start_time?;
    let now_at_pid: &PidIdentity = actual.recorded_pids.get(&pid)?.as_ref()?;
    (now_at_pid.start_time == start && now_at_pid.unlabelled && now_at_pid.chat_label.is_none())
        .then_some((pid, start))
}

/// The termination of the process `row` records, which runs without its
/// labels; or, `Err`, why the row waits instead.
fn stop_unlabelled(
    desired: &DesiredState,
    row: &AgentSessionRow,
    (pid, start_time): (i32, u64),
    why: &str,
    policy: &Policy,
    now: SystemTime,
) -> Result<Action, String> {
    if let Some(instance) = &policy.instance {
        // Another controller's agents may be recorded in the same table,
        // and a process without labels cannot say whose it is.
        return Err(format!(
            "{why}; recorded pid {pid} runs without any label, and with instance {instance} \
             configured a row alone cannot say it is this instance's: never signalled; \
             the row stays open until it exits"
        ));
    }
    let row_age = age(now, row.created_at);
    let has_chat_row = desired
        .chats
        .get(&row.chat_id)
        .is_some_and(|s| s.chat.is_some());
    if !has_chat_row && row_age < policy.process_orphan_min_age {
        // As for a labelled process: the chat's row may not be committed
        // yet.
        return Err(format!(
            "{why}; recorded pid {pid} runs without its labels, its row {} old: \
             stopped once {} old",
            humantime::format_duration(Duration::from_secs(row_age.as_secs())),
            humantime::format_duration(policy.process_orphan_min_age)
        ));
    }
    Ok(Action {
        kind: ActionKind::TerminateProcess {
            process: ProcessTarget {
                pid,
                start_time,
                // Not observed: the row records no group.
                pgid: 0,
                chat_id: row.chat_id.clone(),
                agent: Some(row.agent.clone()),
                command: String::new(),
                age_secs: row_age.as_secs(),
                recorded_by_row: Some(row.id.clone()),
                tied_to: None,
            },
        },
        owner: Owner {
            session_id: Some(row.session_id.clone()),
            chat_id: Some(row.chat_id.clone()),
        },
        reason: format!(
            "{why}; {} pid {pid} recorded by row {} runs without its labels, \
             with the recorded start time {}: the same process",
            row.agent, row.id, start_time
        ),
    })
}

/// How the chat of a row whose process is gone stands, for the reason:
/// whatever it is, the row of a process that no longer exists is closed.
pub(super) fn chat_state_text(
    desired: &DesiredState,
    row: &AgentSessionRow,
    now: SystemTime,
) -> String {
    let state = desired.chats.get(&row.chat_id);
    match state.and_then(|s| s.not_live_because(now)) {
        Some(why) => why,
        None if state.is_some_and(|s| s.is_live()) => format!("chat {} is live", row.chat_id),
        None if desired.unreadable(Table::Chats, &row.chat_id).is_some() => {
            format!("chat {}'s row cannot be read", row.chat_id)
        }
        None => format!("chat {} has no row", row.chat_id),
    }
}

/// Why the chat of `row` is not live; `None` when it is live, or when its
/// row cannot be read (then `row` waits, pending, and `kept` says what is
/// kept meanwhile).
pub(super) fn chat_not_live(
    desired: &DesiredState,
    row: &AgentSessionRow,
    now: SystemTime,
    kept: &str,
    out: &mut Plan,
) -> Option<String> {
    let state = desired.chats.get(&row.chat_id);
    if state.is_some_and(|s| s.is_live()) {
        return None;
    }
    if let Some(u) = desired.unreadable(Table::Chats, &row.chat_id) {
        out.pending.push(Pending {
            target: Target::AgentRow(row.id.clone()),
            why: format!("{u}; {kept}"),
        });
        return None;
    }
    Some(
        state
            .and_then(|s| s.not_live_because(now))
            .unwrap_or_else(|| format!("chat {} has no row", row.chat_id)),
    )
}

/// For the row of a chat that is not live: why it may be closed now (its
/// agent's process was stopped first, or none is recorded); or, `Err`, why
/// it stays open this pass.
pub(super) fn recorded_process_stopped(
    row: &AgentSessionRow,
    actual: &ActualState,
    why: &str,
) -> Result<String, String> {
    let Some(pid) = row.pid else {
        return Ok("no pid recorded".to_string());
    };
    match actual.recorded_pids.get(&pid).cloned().flatten() {
        // Not looked up this pass: the row waits for a pass that does.
        None => Err(format!(
            "{why}; recorded pid {pid} was not looked up this pass"
        )),
        Some(id) if id.chat_label.as_deref() == Some(row.chat_id.as_str()) => {
            Ok(format!("agent pid {pid} stopped first"))
        }
        // In the cgroup recording this chat: stopped with it, labels or not.
        Some(_) if super::cgroups::in_chat_cgroup(actual, pid, &row.chat_id) => {
            Ok(format!("agent pid {pid} stopped first with its cgroup"))
        }
        // The recorded process runs but does not carry this chat's label:
        // it is never signalled, and the row stays open as evidence until
        // it exits.
        Some(id) => Err(format!(
            "{why}; recorded pid {pid} is running without chat {}'s label \
             ({}): never signalled; the row stays open until it exits",
            row.chat_id,
            id.chat_label
                .map(|l| format!("label {l}"))
                .unwrap_or_else(|| "no label".into())
        )),
    }
}

/// Closes `row`: `why` its chat is done with, `detail` why this row.
pub(super) fn close_row(
    row: &AgentSessionRow,
    why: &str,
    detail: String,
    recorded_process: Option<RecordedProcess>,
) -> Action {
    Action {
        kind: ActionKind::CloseAgentRow {
            row_id: row.id.clone(),
            backend: row.backend,
            agent: row.agent.clone(),
            why: detail.clone(),
            recorded_process,
        },
        owner: Owner {
            session_id: Some(row.session_id.clone()),
            chat_id: Some(row.chat_id.clone()),
        },
        reason: format!("{why}; {detail}"),
    }
}

/// The row's recorded process and why it no longer exists, when this pass
/// looked its pid up and found nothing alive there, or a process with
/// another start time. `None` when no pid is recorded, the pid was not
/// looked up, or a process runs there with the recorded start time (or with
/// no start time recorded to compare it to).
pub(super) fn recorded_process_gone(
    row: &AgentSessionRow,
    actual: &ActualState,
) -> Option<(RecordedProcess, String)> {
    let pid = row.pid?;
    let recorded = RecordedProcess {
        pid,
        start_time: row.pid_start_time,
    };
    match actual.recorded_pids.get(&pid)? {
        None => Some((recorded, format!("recorded pid {pid} is gone"))),
        Some(now_at_pid) => {
            let start = row.pid_start_time?;
            (start != now_at_pid.start_time).then(|| {
                (
                    recorded,
                    format!(
                        "recorded pid {pid} was reused (start time {} now, {start} recorded): \
                         not signalled",
                        now_at_pid.start_time
                    ),
                )
            })
        }
    }
}
