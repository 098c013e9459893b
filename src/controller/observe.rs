//! Reading both states for a pass, then planning: the desired state from
//! the database, the actual one from the host (processes, agent cgroups,
//! what the fork lineage ties, the worktree root, the opencode server's
//! sessions), overlapped where one does not need another; and what a pass
//! that may write records of what it saw (when admin entries were first
//! seen missing, the root's record). Apart from the pass because it is the
//! one reading of the state, which the pass repeats when it plans again.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, SystemTime};

use super::{root_check, unix_now, Controller, Notes, PassError};
use crate::model::{OpencodeView, Scope, Tied};
use crate::observe;
use crate::observe::processes::{self, LabelNames};
use crate::plan::{self, Plan};
use crate::report::{ObservedCounts, RootSpace};
use crate::store::Interest;

impl Controller {
    /// Reads both states and plans. With `record`, it writes what the pass
    /// saw that later passes judge by: when admin entries were first seen
    /// missing ([`Controller::record_missing`]) and what the root is
    /// ([`root_check::check`]); without, it writes nothing.
    pub async fn plan(
        &self,
        scope: &Scope,
        record: bool,
        notes: &mut Notes,
    ) -> Result<(Plan, ObservedCounts), crate::store::StoreError> {
        let mut interest = Interest::default();
        match scope {
            Scope::Host => {}
            Scope::Chat(id) => {
                interest.chats = BTreeSet::from([id.clone()]);
            }
            Scope::Session(id) => {
                interest.sessions = BTreeSet::from([id.clone()]);
            }
        }
        let observed_at = std::time::Instant::now();
        let labels = LabelNames::from(&self.config.processes);
        // The opencode server is asked while the host is observed.
        let (host, listing) = tokio::join!(
            self.observe_host(interest, labels),
            self.opencode.list(self.executor.opencode(), &self.root)
        );
        let opencode_notes = Notes {
            errors: listing.error.into_iter().map(PassError::Observe).collect(),
            warnings: listing.warning.into_iter().collect(),
        };
        let opencode = listing.view;
        let HostView {
            scan,
            tied,
            cgroups,
            desired,
            recorded_pids,
            mut observed,
            errors,
        } = host?;
        notes
            .errors
            .extend(errors.into_iter().map(PassError::Observe));
        // One bad row is an error of the pass, never the end of it.
        notes
            .errors
            .extend(desired.unreadable.iter().map(|u| PassError::UnreadableRow {
                url: self.store.url().to_string(),
                row: u.to_string(),
            }));
        if observed.root_held.is_none() {
            let host = &self.config.host.id;
            if let Some(why) =
                root_check::check(&self.store, &self.root, host, &observed, record).await
            {
                tracing::warn!(root = %self.root.path().display(), "{why}");
                notes.errors.push(PassError::RootHeld(why.clone()));
                observed.root_held = Some(why);
            }
        }
        // Only a full view of the admin entries may forget a record of one
        // that went missing: a partial one would restart its grace.
        let complete = observed.errors.is_empty() && observed.root_held.is_none();
        notes
            .errors
            .extend(observed.errors.drain(..).map(PassError::Observe));
        self.record_missing(&mut observed.stale_admin_entries, complete, record, notes)
            .await;
        notes.errors.extend(opencode_notes.errors);
        notes.warnings.extend(opencode_notes.warnings);
        let counts = ObservedCounts {
            opencode_sessions: match &opencode {
                OpencodeView::Listed { sessions } => sessions.len(),
                _ => 0,
            },
            processes: scan.processes.len(),
            unreadable_processes: scan.skipped,
            unreadable_by_uid: scan.unreadable_by_uid.clone(),
            worktree_rows: desired.worktrees.len(),
            agent_rows: desired.agent_sessions.len(),
            root_entries: observed.dirs.len(),
            root_held: observed.root_held.clone(),
            lineage: self.lineage.view(),
            stale_admin_entries: observed.stale_admin_entries.len(),
            trash: {
                let reclaimer = std::sync::Arc::clone(self.executor.reclaimer());
                tokio::task::spawn_blocking(move || reclaimer.status())
                    .await
                    .unwrap_or_default()
            },
            root_space: {
                // A hung mount must not hold an async thread.
                let root = self.root.path().to_path_buf();
                tokio::task::spawn_blocking(move || RootSpace::of(&root))
                    .await
                    .ok()
                    .flatten()
            },
        };
        // An entry the reclaimer cannot delete is an error of every pass
        // until it is gone: never left silently.
        for e in &counts.trash.errors {
            notes.errors.push(PassError::TrashEntry {
                path: e.path.clone(),
                failures: e.failures,
                next_attempt_in_s: e.next_attempt_in_s,
                error: e.error.clone(),
            });
        }
        let actual = crate::model::ActualState {
            dirs: observed.dirs,
            stale_admin_entries: observed.stale_admin_entries,
            moved_admin_entries: observed.moved_admin_entries,
            row_paths: observed.row_paths.into_iter().collect(),
            row_targets: observed.row_targets.into_iter().collect(),
            root_held: observed.root_held,
            processes: scan.processes,
            cgroups,
            tied,
            recorded_pids,
            opencode,
        };
        let plan = plan::plan(&desired, &actual, &self.policy, SystemTime::now(), scope);
        let mut plan = crate::switches::Switches::from(&self.config).apply(plan);
        plan.observed_at = Some(observed_at);
        Ok((plan, counts))
    }

    /// Fills in when each stale admin entry was first seen missing, from
    /// the database (recording this pass's first sightings). Written even
    /// by a pass that acts on nothing: it is what the pass saw. When the
    /// database cannot say, the entries stay unknown and wait.
    async fn record_missing(
        &self,
        entries: &mut [crate::model::StaleAdminEntry],
        complete: bool,
        record: bool,
        notes: &mut Notes,
    ) {
        let keys: Vec<(String, String)> = entries
            .iter()
            .map(|e| (e.repo_path.display().to_string(), e.name.clone()))
            .collect();
        let now = unix_now();
        match self
            .store
            .missing_since(&self.config.host.id, &keys, now, complete, record)
            .await
        {
            Ok(since) => {
                for (e, s) in entries.iter_mut().zip(since) {
                    e.missing_since =
                        s.map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s.max(0) as u64));
                }
            }
            Err(e) => notes.errors.push(PassError::MissingSince(e)),
        }
    }

    /// The processes, the database and the worktrees, overlapped where one
    /// does not need another: the scan runs beside the reading of the
    /// host's rows; the worktrees are observed beside the liveness queries
    /// (which need the chats the scan found).
    async fn observe_host(
        &self,
        mut interest: Interest,
        labels: LabelNames,
    ) -> Result<HostView, crate::store::StoreError> {
        let scan_task = {
            let labels = labels.clone();
            tokio::task::spawn_blocking(move || processes::scan(&labels))
        };
        let cgroups_task = {
            let setting = self.config.processes.cgroup_parent.clone();
            let instance = labels.instance.clone();
            tokio::task::spawn_blocking(move || observe_cgroups(&setting, instance.as_deref()))
        };
        let rows = self.store.host_rows(&self.config.host.id).await?;
        let observe_task = {
            let root = self.root.clone();
            let (rows, repos) = (rows.worktrees.clone(), rows.repositories.clone());
            tokio::task::spawn_blocking(move || observe::worktrees::observe(&root, &rows, &repos))
        };
        let mut errors = Vec::new();
        let scan = scan_task.await.unwrap_or_else(|e| {
            errors.push(format!("scanning processes failed: {e}"));
            Default::default()
        });
        // The labels name chats whose liveness the desired state must
        // include.
        interest
            .chats
            .extend(scan.processes.iter().map(|p| p.chat_id.clone()));
        let tied = self.lineage.tied(&scan, &mut errors);
        let (cgroups, cgroup_error) = cgroups_task.await.unwrap_or_else(|e| {
            (
                Vec::new(),
                Some(format!("observing agent cgroups failed: {e}")),
            )
        });
        errors.extend(cgroup_error);
        interest
            .chats
            .extend(tied.iter().map(|t| t.chat_id.clone()));
        interest.chats.extend(
            cgroups
                .iter()
                .filter_map(|c| c.record.as_ref().ok().map(|r| r.chat.clone())),
        );
        let desired = self.store.liveness(rows, &interest).await?;
        let recorded_pids = recorded_pids(&scan, &desired, labels).await;
        let observed = observe_task
            .await
            .unwrap_or_else(|e| observe::worktrees::RootView {
                errors: vec![format!("observing worktrees failed: {e}")],
                ..Default::default()
            });
        Ok(HostView {
            scan,
            tied,
            cgroups,
            desired,
            recorded_pids,
            observed,
            errors,
        })
    }
}

/// What one observation of the host found.
struct HostView {
    scan: processes::Scan,
    tied: Vec<Tied>,
    cgroups: Vec<crate::model::AgentCgroup>,
    desired: crate::model::DesiredState,
    recorded_pids: HashMap<i32, Option<crate::model::PidIdentity>>,
    observed: observe::worktrees::RootView,
    /// Observations that failed; the pass goes on without them.
    errors: Vec<String>,
}

/// The agent cgroups of this instance, and why some could not be seen:
/// an error of the pass (agents there are not seen), never taken for "no
/// agents".
fn observe_cgroups(
    setting: &str,
    instance: Option<&str>,
) -> (Vec<crate::model::AgentCgroup>, Option<String>) {
    let is_root = nix::unistd::geteuid().is_root();
    match crate::cgroup::Parent::resolve(setting, is_root) {
        Ok(crate::cgroup::Parent::At { path, .. }) => {
            let seen = observe::cgroups::observe(&path, instance);
            (seen.cgroups, seen.error)
        }
        Ok(_) => (Vec::new(), None),
        Err(e) => (Vec::new(), Some(e)),
    }
}

/// Who each pid recorded in an open agent row is now. A pid the scan just
/// read as a labelled agent needs no second read; only the others (gone,
/// reused, unlabelled) are looked up.
async fn recorded_pids(
    scan: &processes::Scan,
    desired: &crate::model::DesiredState,
    labels: LabelNames,
) -> HashMap<i32, Option<crate::model::PidIdentity>> {
    let scanned: HashMap<i32, crate::model::PidIdentity> = scan
        .processes
        .iter()
        .map(|p| {
            (
                p.pid,
                crate::model::PidIdentity {
                    start_time: p.start_time,
                    chat_label: Some(p.chat_id.clone()),
                    unlabelled: false,
                },
            )
        })
        .collect();
    let (known, unknown): (Vec<i32>, Vec<i32>) = desired
        .agent_sessions
        .iter()
        .filter_map(|r| r.pid)
        .partition(|pid| scanned.contains_key(pid));
    let mut out: HashMap<i32, Option<crate::model::PidIdentity>> = known
        .into_iter()
        .map(|pid| (pid, scanned.get(&pid).cloned()))
        .collect();
    if unknown.is_empty() {
        return out;
    }
    let looked_up = tokio::task::spawn_blocking(move || {
        unknown
            .into_iter()
            .map(|pid| {
                let id = processes::identity(pid, &labels)
                    .filter(|id| processes::is_alive_state(id.state))
                    .map(|id| crate::model::PidIdentity {
                        start_time: id.start_time,
                        chat_label: id.chat_label,
                        unlabelled: id.env_chat == processes::EnvChat::Absent,
                    });
                (pid, id)
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default();
    out.extend(looked_up);
    out
}
