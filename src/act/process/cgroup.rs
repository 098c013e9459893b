//! Stopping an agent's cgroup ([`crate::cgroup`]) and removing empty ones.
//!
//! # Guarantees
//!
//! 1. **Every process of the cgroup, however it hid.** SIGTERM goes to each
//!    member (the cgroup and every cgroup below it), labelled or not, in
//!    its own session or not; after the grace `cgroup.kill` stops every
//!    member at once, forks of the grace included. Test:
//!    `every_escape_of_a_launched_agent_is_stopped_with_its_cgroup`.
//! 2. **Only members.** Each SIGTERM goes through a pidfd opened before the
//!    pid is checked to be in the cgroup still: a member that exited and
//!    whose pid was reused by a process elsewhere is never signalled.
//!    `cgroup.kill` acts on membership, not pids. Test:
//!    `a_pid_that_left_the_cgroup_is_never_signalled`.
//! 3. **Never a live chat's agent.** The chat's liveness is read again
//!    right before `cgroup.kill`: a chat live again keeps its agent (it had
//!    SIGTERM; the result says so). A liveness that cannot be read kills
//!    nothing. A member carrying the labels of another chat that is live
//!    is spared with its descendants, and reported; the others are then
//!    killed one by one instead of with `cgroup.kill`. Tests:
//!    `a_chat_reopened_during_the_grace_keeps_its_agent`,
//!    `a_live_chats_process_inside_another_agents_cgroup_is_spared`.
//! 4. **Nothing reported done that is not done.** What is still a member
//!    after the kill (and a bounded wait) is a survivor, by pid and state;
//!    the cgroup is removed only once empty (the kernel refuses to remove
//!    a populated one).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::Signal;
use serde::Serialize;

use crate::act::process::terminate::{pidfd_open, pidfd_send_signal, ChatLiveness};
use crate::act::process::ProcessActor;
use crate::act::run::executor::{blocking, skipped, Applied, Gate};
use crate::act::run::outcome::{Detail, Outcome};
use crate::cgroup;
use crate::observe::processes::{self, LabelNames};
use crate::plan::{Action, CgroupTarget};

/// The longest wait between two looks at the cgroup.
const POLL: Duration = Duration::from_millis(50);
/// Most agents exit within milliseconds of SIGTERM.
const FIRST_POLL: Duration = Duration::from_millis(1);
/// How long `cgroup.kill` is given before what is left is a survivor.
const KILL_WAIT: Duration = Duration::from_secs(1);

/// A member left alone: it carries the labels of another chat, which is
/// live.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Spared {
    pub pid: i32,
    pub chat_id: String,
}

/// A member still there after the kill.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Survivor {
    pub pid: i32,
    pub state: char,
}

/// Why members left after the grace were not killed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum NotKilled {
    /// The chat is live again: its agent keeps running (it had SIGTERM).
    LiveAgain { chat_id: String },
    /// The chat's liveness could not be read: never killed on a guess.
    LivenessUnknown { error: String },
    /// The path is not in a cgroup v2 mount: nothing was signalled.
    NotACgroup,
}

impl std::fmt::Display for NotKilled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotKilled::LiveAgain { chat_id } => write!(
                f,
                "chat {chat_id} is live again; its agent had SIGTERM, not SIGKILL"
            ),
            NotKilled::LivenessUnknown { error } => write!(
                f,
                "the chat's liveness cannot be read ({error}); never killed on a guess"
            ),
            NotKilled::NotACgroup => f.write_str("not in a cgroup v2 mount; nothing signalled"),
        }
    }
}

/// What [`stop`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Stopped {
    pub cgroup: PathBuf,
    /// Members sent SIGTERM.
    pub signalled: Vec<i32>,
    /// Whether anything was left after the grace to kill.
    pub killed: bool,
    pub spared: Vec<Spared>,
    pub survivors: Vec<Survivor>,
    /// Why the kill was not sent though members were left.
    pub not_killed: Option<NotKilled>,
    /// Whether the cgroup is gone at the end.
    pub removed: bool,
}

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cgroup {}: SIGTERM to {} process(es)",
            self.cgroup.display(),
            self.signalled.len()
        )?;
        if let Some(why) = &self.not_killed {
            write!(f, "; not killed: {why}")?;
        } else if self.killed {
            f.write_str("; the rest killed after the grace")?;
        }
        if !self.spared.is_empty() {
            let s: Vec<String> = self
                .spared
                .iter()
                .map(|s| format!("pid {} (live chat {})", s.pid, s.chat_id))
                .collect();
            write!(f, "; spared: {}", s.join(", "))?;
        }
        if !self.survivors.is_empty() {
            let s: Vec<String> = self
                .survivors
                .iter()
                .map(|s| format!("pid {} (state {})", s.pid, s.state))
                .collect();
            write!(f, "; still there after the kill: {}", s.join(", "))?;
        }
        if self.removed {
            f.write_str("; cgroup removed")?;
        }
        Ok(())
    }
}

/// Stops every process of the agent cgroup `path` of chat `chat`: see the
/// module's guarantees. `live` answers whether a chat is live (asked right
/// before the kill, and for the chats whose labels a member carries);
/// `after_term` is called once SIGTERM is sent.
pub async fn stop(
    path: &Path,
    chat: &str,
    grace: Duration,
    labels: &LabelNames,
    live: &dyn ChatLiveness,
    after_term: &(dyn Fn() + Sync),
) -> Stopped {
    let mut out = Stopped {
        cgroup: path.to_path_buf(),
        ..Stopped::default()
    };
    let Some(rel) = relative_of(path).await else {
        out.not_killed = Some(NotKilled::NotACgroup);
        return out;
    };
    let members = read_members(path, labels).await;
    let spared = spared(&members, chat, live).await;
    out.spared = spared
        .iter()
        .map(|(pid, chat)| Spared {
            pid: *pid,
            chat_id: chat.clone(),
        })
        .collect();
    let targets: Vec<i32> = members
        .keys()
        .copied()
        .filter(|p| !spared.contains_key(p))
        .collect();
    out.signalled = signal_members(&rel, targets, Signal::SIGTERM).await;
    crate::crash_point!("stop_cgroup.after_term");
    after_term();
    let spared_pids: BTreeSet<i32> = spared.keys().copied().collect();
    if wait_empty(path, &spared_pids, grace).await.is_empty() {
        out.removed = remove_if_empty(path, &spared_pids).await;
        return out;
    }
    match live.is_live(chat).await {
        Ok(false) => {}
        Ok(true) => {
            out.not_killed = Some(NotKilled::LiveAgain {
                chat_id: chat.to_owned(),
            });
            return out;
        }
        Err(error) => {
            out.not_killed = Some(NotKilled::LivenessUnknown { error });
            return out;
        }
    }
    out.killed = true;
    kill(path, &rel, &spared_pids, labels).await;
    let left = wait_empty(path, &spared_pids, KILL_WAIT).await;
    out.survivors = left
        .into_iter()
        .map(|(pid, state)| Survivor { pid, state })
        .collect();
    if out.survivors.is_empty() {
        out.removed = remove_if_empty(path, &spared_pids).await;
    } else {
        tracing::warn!(cgroup = %path.display(), survivors = ?out.survivors, "processes survived cgroup.kill");
    }
    out
}

/// The members of `path`, when every one of them is spared (see
/// [`stop`]): `None` when any is this chat's to stop, or none is left.
async fn only_spared(
    path: &Path,
    chat: &str,
    labels: &LabelNames,
    live: &dyn ChatLiveness,
) -> Option<Vec<Spared>> {
    let members = read_members(path, labels).await;
    let spared = spared(&members, chat, live).await;
    (!members.is_empty() && spared.len() == members.len()).then(|| {
        spared
            .into_iter()
            .map(|(pid, chat_id)| Spared { pid, chat_id })
            .collect()
    })
}

/// One member: its parent and the chat label it carries, if any.
struct Member {
    ppid: i32,
    chat: Option<String>,
}

async fn relative_of(path: &Path) -> Option<PathBuf> {
    let path = path.to_path_buf();
    run_blocking(move || {
        let mounts = crate::mounts::parse(&std::fs::read(crate::mounts::MOUNTINFO).ok()?);
        let m = crate::mounts::holding(&mounts, &path)?;
        (m.fstype == "cgroup2")
            .then(|| cgroup::relative(&m.point, &path))
            .flatten()
    })
    .await
}

async fn read_members(path: &Path, labels: &LabelNames) -> BTreeMap<i32, Member> {
    let (path, labels) = (path.to_path_buf(), labels.clone());
    run_blocking(move || {
        cgroup::members(&path)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|pid| {
                let id = processes::identity(pid, &labels)?;
                Some((
                    pid,
                    Member {
                        ppid: id.ppid,
                        chat: id.chat_label,
                    },
                ))
            })
            .collect()
    })
    .await
}

/// The members carrying the labels of another chat that is live, with
/// their descendants among the members: chat id by pid.
async fn spared(
    members: &BTreeMap<i32, Member>,
    chat: &str,
    live: &dyn ChatLiveness,
) -> BTreeMap<i32, String> {
    let mut verdicts: HashMap<&str, bool> = HashMap::new();
    let mut out = BTreeMap::new();
    for (&pid, m) in members {
        let Some(other) = m.chat.as_deref().filter(|c| *c != chat) else {
            continue;
        };
        let is_live = match verdicts.get(other) {
            Some(v) => *v,
            None => {
                // Unreadable is not live: a member of this cgroup is this
                // agent's unless another chat is known to want it.
                let v = live.is_live(other).await.unwrap_or(false);
                verdicts.insert(other, v);
                v
            }
        };
        if is_live {
            out.insert(pid, other.to_owned());
        }
    }
    // Their descendants go with them, labelled or not.
    loop {
        let more: Vec<(i32, String)> = members
            .iter()
            .filter(|(pid, m)| !out.contains_key(pid) && out.contains_key(&m.ppid))
            .map(|(pid, m)| (*pid, out[&m.ppid].clone()))
            .collect();
        if more.is_empty() {
            break;
        }
        out.extend(more);
    }
    out
}

/// Sends `sig` to each of `pids` still in the cgroup `rel`; returns those
/// signalled. The pidfd is opened before the membership check, so the
/// signal reaches the process checked or none.
async fn signal_members(rel: &Path, pids: Vec<i32>, sig: Signal) -> Vec<i32> {
    let rel = rel.to_path_buf();
    run_blocking(move || {
        let me = std::process::id() as i32;
        pids.into_iter()
            .filter(|&pid| pid > 1 && pid != me)
            .filter(|&pid| signal_member(&rel, pid, sig))
            .collect()
    })
    .await
}

fn signal_member(rel: &Path, pid: i32, sig: Signal) -> bool {
    let fd = match pidfd_open(pid) {
        Ok(fd) => Some(fd),
        Err(Errno::ESRCH) => return false,
        Err(_) => None,
    };
    if !cgroup::contains(rel, pid) {
        return false;
    }
    let sent = match &fd {
        Some(fd) => pidfd_send_signal(fd, sig),
        None => nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig),
    };
    sent.is_ok()
}

/// `cgroup.kill` when nothing is spared; otherwise (or on a kernel without
/// it) SIGKILL to each member not spared, listed again so that the forks
/// of the grace are included.
async fn kill(path: &Path, rel: &Path, spared: &BTreeSet<i32>, labels: &LabelNames) {
    if spared.is_empty() {
        let p = path.to_path_buf();
        match run_blocking(move || cgroup::kill(&p)).await {
            Ok(()) => return,
            Err(e) => tracing::warn!(cgroup = %path.display(), error = %e,
                "cgroup.kill failed; killing each member"),
        }
    }
    // Forks keep coming while members are killed one by one: a few rounds.
    for _ in 0..5 {
        let members = read_members(path, labels).await;
        let targets: Vec<i32> = members
            .keys()
            .copied()
            .filter(|p| !spared.contains(p))
            .collect();
        if targets.is_empty() {
            return;
        }
        signal_members(rel, targets, Signal::SIGKILL).await;
    }
}

/// Waits up to `limit` until no member but the spared is left; returns
/// those left, with their states.
async fn wait_empty(path: &Path, spared: &BTreeSet<i32>, limit: Duration) -> BTreeMap<i32, char> {
    let deadline = Instant::now() + limit;
    let mut poll = FIRST_POLL;
    loop {
        let left = left_in(path, spared).await;
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        tokio::time::sleep(poll.min(deadline.saturating_duration_since(Instant::now()))).await;
        poll = (poll * 2).min(POLL);
    }
}

async fn left_in(path: &Path, spared: &BTreeSet<i32>) -> BTreeMap<i32, char> {
    let (path, spared) = (path.to_path_buf(), spared.clone());
    run_blocking(move || {
        // The kernel's own word first (`populated 0` in cgroup.events);
        // the members are listed only while it says some are left.
        if spared.is_empty() && cgroup::populated(&path).is_ok_and(|p| !p) {
            return BTreeMap::new();
        }
        cgroup::members(&path)
            .unwrap_or_default()
            .into_iter()
            .filter(|p| !spared.contains(p))
            .filter_map(|pid| {
                let stat = procfs::process::Process::new(pid).ok()?.stat().ok()?;
                processes::is_alive_state(stat.state).then_some((pid, stat.state))
            })
            .collect()
    })
    .await
}

/// Removes the cgroup when nothing (not even a spared member) is in it.
async fn remove_if_empty(path: &Path, spared: &BTreeSet<i32>) -> bool {
    if !spared.is_empty() {
        return false;
    }
    let p = path.to_path_buf();
    run_blocking(move || match cgroup::remove(&p) {
        Ok(()) => true,
        Err(e) => {
            tracing::info!(cgroup = %p.display(), error = %e, "cgroup not removed yet");
            false
        }
    })
    .await
}

async fn run_blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

impl ProcessActor {
    /// Stops an agent's cgroup, write-ahead, unless its chat is live again.
    pub(in crate::act) async fn stop_cgroup(
        &self,
        action: &Action,
        cg: &CgroupTarget,
        intent: &mut Option<i64>,
        gate: &Gate,
    ) -> Applied {
        if let Some(why) = self.recheck.owner_is_live(action).await? {
            return Ok(skipped(why));
        }
        // Only processes of live chats left: nothing to signal, and no
        // intent (nor audit record) every pass for it.
        if let Some(left) = only_spared(&cg.path, &cg.chat_id, &self.labels, &*self.recheck).await {
            return Ok(skipped(format!(
                "only processes of live chats are left in it: {}; left alone",
                left.iter()
                    .map(|s| format!("pid {} (chat {})", s.pid, s.chat_id))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        self.audit
            .announce(action, serde_json::json!(cg), intent)
            .await?;
        let open = || gate.open();
        let s = stop(
            &cg.path,
            &cg.chat_id,
            self.term_grace,
            &self.labels,
            &*self.recheck,
            &open,
        )
        .await;
        Ok((stopped_outcome(&s), Detail::CgroupStopped(s)))
    }

    /// Removes an agent cgroup found empty; one a process entered since is
    /// left (the kernel refuses it).
    pub(in crate::act) async fn remove_cgroup(&self, path: &Path) -> Applied {
        let p = path.to_path_buf();
        blocking(move || match cgroup::populated(&p) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Ok(skipped("the cgroup is gone already".into()))
            }
            Ok(true) => Ok(skipped("a process is in it again".into())),
            _ => cgroup::remove(&p)
                .map(|()| {
                    (
                        Outcome::Done {
                            note: "empty cgroup removed".into(),
                        },
                        Detail::None,
                    )
                })
                .map_err(|e| format!("cannot remove {}: {e}", p.display())),
        })
        .await
    }
}

/// What stopping a cgroup came to, as an outcome.
fn stopped_outcome(s: &Stopped) -> Outcome {
    if !s.survivors.is_empty() {
        return Outcome::Failed {
            error: format!("{s}; retried next pass"),
        };
    }
    match &s.not_killed {
        Some(NotKilled::LiveAgain { .. }) => Outcome::Skipped { why: s.to_string() },
        Some(_) => Outcome::Failed {
            error: s.to_string(),
        },
        None => Outcome::Done {
            note: s.to_string(),
        },
    }
}

#[cfg(test)]
mod tests;
