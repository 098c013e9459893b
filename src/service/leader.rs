//! Leadership: whether this instance acts for its host, and the wait for
//! the host's lock that `run` and `once` share.
//!
//! # Guarantees
//! - An instance is [`Role::Leader`] only with the lock in hand; a failed
//!   confirmation makes it [`Role::Unsure`] at once, even mid-pass.
//! - After a lock was lost, the instance stays `unsure` while `pg_locks`
//!   may show its own old connection as the holder: only another backend
//!   makes it `standby` (test
//!   `a_frozen_leader_never_acts_after_another_instance_took_the_lock`).

use std::convert::Infallible;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::Service;
use crate::controller::repeats::Repeats;
use crate::store::lock::{FenceState, HostLock};
use crate::store::{Store, StoreError};

/// How often a standby instance tries to take the host's lock.
pub const STANDBY_RETRY: Duration = Duration::from_secs(2);

/// Whether this instance acts for its host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "role", rename_all = "snake_case")]
pub enum Role {
    /// Holds the host's lock and acts.
    Leader,
    /// Another instance holds the host's lock, or it is not taken yet:
    /// this one does not act.
    Standby { why: String },
    /// The lock could not be confirmed within its bound: this instance
    /// stopped acting at once and acts again only once it has taken the
    /// lock anew.
    Unsure { why: String },
}

impl Role {
    /// The role an instance starts in: leader only with a lock in hand
    /// (`run` takes it; an embedder may have installed one).
    pub fn at_start(fence: FenceState) -> Role {
        match fence {
            FenceState::Held => Role::Leader,
            _ => Role::Standby {
                why: "taking the host lock".into(),
            },
        }
    }

    /// Why this instance must not act now; `None` for the leader.
    pub fn not_acting(&self) -> Option<String> {
        match self {
            Role::Leader => None,
            Role::Standby { why } => Some(why.clone()),
            Role::Unsure { why } => Some(format!("unsure of the host lock: {why}")),
        }
    }
}

/// What a wait for the host's lock does between its attempts.
pub(crate) trait LockWait {
    type Error;
    /// Another session holds the lock.
    async fn busy(&mut self) -> Result<(), Self::Error>;
    /// The attempt itself failed.
    async fn failed(&mut self, e: StoreError) -> Result<(), Self::Error>;
    /// Waits before the next attempt; false once cancelled.
    async fn pause(&mut self) -> bool;
}

/// Takes the host's lock, trying again every pause while another session
/// holds it; `None` when the wait was cancelled first.
pub(crate) async fn wait_for_host_lock<W: LockWait>(
    store: &Store,
    host: &str,
    wait: &mut W,
) -> Result<Option<HostLock>, W::Error> {
    loop {
        match store.try_lock_host(host).await {
            Ok(Some(lock)) => return Ok(Some(lock)),
            Ok(None) => wait.busy().await?,
            Err(e) => wait.failed(e).await?,
        }
        if !wait.pause().await {
            return Ok(None);
        }
    }
}

/// The service's wait: the role shows why it does not act, the watchdog
/// is petted meanwhile, and a failure that repeats is logged once.
struct Standby<'a> {
    service: &'a Service,
    host: &'a str,
    repeats: &'a mut Repeats,
    /// The kind of role last logged: said once per kind, unsure then
    /// standby once the holder is known to be another instance.
    said: Option<std::mem::Discriminant<Role>>,
}

impl LockWait for Standby<'_> {
    type Error = Infallible;

    async fn busy(&mut self) -> Result<(), Infallible> {
        let role = self.service.without_lock(self.host).await;
        let kind = std::mem::discriminant(&role);
        if self.said != Some(kind) {
            match &role {
                Role::Unsure { why } => tracing::warn!("{why}; waiting for it"),
                Role::Standby { why } => {
                    tracing::warn!("{why}; standing by until it goes away")
                }
                Role::Leader => {}
            }
            self.said = Some(kind);
        }
        self.service.set_role(role);
        Ok(())
    }

    async fn failed(&mut self, e: StoreError) -> Result<(), Infallible> {
        if let Some(line) = self.repeats.note(&e.to_string(), Instant::now()) {
            tracing::error!(error = %line, "cannot take the host lock; retrying");
        }
        let why = format!("cannot take the host lock: {e}");
        // Whether another instance took over is unknown.
        self.service
            .set_role(match self.service.controller.executor().fence().state() {
                FenceState::Lost { why: lost } => Role::Unsure {
                    why: format!("{lost}; {why}"),
                },
                _ => Role::Standby { why },
            });
        Ok(())
    }

    async fn pause(&mut self) -> bool {
        self.service.sleep_petting_watchdog(STANDBY_RETRY).await
    }
}

impl Service {
    /// Waits for the host's lock; `None` once cancelled.
    pub(super) async fn acquire(&self, host: &str, repeats: &mut Repeats) -> Option<HostLock> {
        let mut standby = Standby {
            service: self,
            host,
            repeats,
            said: None,
        };
        match wait_for_host_lock(self.controller.store(), host, &mut standby).await {
            Ok(lock) => lock,
            Err(never) => match never {},
        }
    }

    /// The role while another session holds the host's lock. After a lock
    /// was dropped because it could not be confirmed, that session may be
    /// this instance's own old one (a frozen connection the server has not
    /// ended yet): `unsure` until `pg_locks` shows another backend, then
    /// `standby`.
    async fn without_lock(&self, host: &str) -> Role {
        let fence = self.controller.executor().fence();
        let mut holder = None;
        if let FenceState::Lost { why } = fence.state() {
            let old = fence.lost_backend();
            match self.controller.store().lock_holder(host).await {
                Ok(Some(pid)) if Some(pid) == old => {
                    return Role::Unsure {
                        why: format!(
                            "{why}; the lock of host {host} is still held by this instance's \
                             previous connection (backend {pid}), until the database server \
                             ends that session"
                        ),
                    }
                }
                Ok(Some(pid)) => holder = Some(pid),
                _ => {
                    return Role::Unsure {
                        why: format!(
                            "{why}; the lock of host {host} is still held, by this instance's \
                             previous connection or by another instance"
                        ),
                    }
                }
            }
        }
        fence.release();
        Role::Standby {
            why: format!(
                "another instance holds the lock of host {host}{}",
                holder
                    .map(|pid| format!(" (backend {pid})"))
                    .unwrap_or_default()
            ),
        }
    }

    pub fn set_role(&self, role: Role) {
        self.metrics
            .leader
            .set(i64::from(matches!(role, Role::Leader)));
        *self.role.lock() = role;
    }

    /// The role; `unsure` as soon as a confirmation of the lock failed,
    /// even in the middle of a pass.
    pub fn role(&self) -> Role {
        let role = self.role.lock().clone();
        match (role, self.controller.executor().fence().state()) {
            (Role::Leader, FenceState::Lost { why }) => Role::Unsure { why },
            (role, _) => role,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_leader_acts_and_the_others_say_why() {
        assert_eq!(Role::Leader.not_acting(), None);
        let standby = Role::Standby { why: "held".into() };
        assert_eq!(standby.not_acting().as_deref(), Some("held"));
        let unsure = Role::Unsure {
            why: "frozen".into(),
        };
        assert_eq!(
            unsure.not_acting().as_deref(),
            Some("unsure of the host lock: frozen")
        );
    }

    #[test]
    fn the_role_serializes_as_a_tag_beside_its_reason() {
        let v = serde_json::to_value(Role::Standby { why: "w".into() }).unwrap();
        assert_eq!(v, serde_json::json!({"role": "standby", "why": "w"}));
        let back: Role = serde_json::from_value(v).unwrap();
        assert_eq!(back, Role::Standby { why: "w".into() });
        assert_eq!(
            serde_json::to_value(Role::Leader).unwrap(),
            serde_json::json!({"role": "leader"})
        );
    }
}
