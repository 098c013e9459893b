//! The interval loop: a host pass at once and every `loop.interval` (plus
//! jitter) while this instance leads, with systemd told of readiness and
//! its watchdog petted throughout.
//!
//! # Guarantees
//! - The lock is confirmed before every pass; a failed confirmation stops
//!   the loop acting at once and sends it back to take the lock anew.
//! - An action that found the lock unconfirmable cuts the sleep short: the
//!   lock is taken again now, not at the next interval.
//! - On cancellation the actions in flight finish under the lock, then it
//!   is released.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::leader::Role;
use super::Service;
use crate::controller::repeats::Repeats;
use crate::controller::{Mode, Trigger};
use crate::model::{Force, Scope};

impl Service {
    /// Acts for the host until cancelled: takes the host's lock (standing by
    /// while another instance holds it), then runs a host pass at once and
    /// every `loop.interval` (plus jitter) while the lock is held. Tells
    /// systemd READY=1 after the first pass and pets its watchdog from the
    /// loop (no-ops without systemd).
    pub async fn run(&self) {
        let host = self.controller.config().host.id.clone();
        let mut ready_sent = false;
        let mut trigger = Trigger::Startup;
        let mut repeats = Repeats::default();
        let fence = Arc::clone(self.controller.executor().fence());
        while !self.cancel.is_cancelled() {
            let Some(lock) = self.acquire(&host, &mut repeats).await else {
                break;
            };
            tracing::info!(host, lock = ?lock, "acting for this host");
            fence.install(lock);
            self.set_role(Role::Leader);
            loop {
                if let Err(why) = fence.confirm().await {
                    tracing::error!(host, why, "not acting; taking the host lock again");
                    self.set_role(Role::Unsure { why });
                    trigger = Trigger::Startup;
                    break;
                }
                self.host_pass(trigger, &mut repeats).await;
                if !ready_sent {
                    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
                    ready_sent = true;
                }
                let delay = self.controller.next_delay();
                self.set_next_pass_at(SystemTime::now() + delay);
                tokio::select! {
                    slept = self.sleep_petting_watchdog(delay) => if !slept { break },
                    // An action found the lock unconfirmable: take it
                    // again now, not at the next interval.
                    _ = fence.lost() => {}
                }
                trigger = Trigger::Interval;
            }
        }
        // The actions in flight finish under the lock; then it goes.
        self.drain().await;
        fence.release();
    }

    /// One pass of the loop, its summary (or why it did not finish) logged.
    async fn host_pass(&self, trigger: Trigger, repeats: &mut Repeats) {
        match self
            .reconcile(Scope::Host, Mode::act(Force::Off), trigger)
            .await
        {
            Ok(report) => crate::controller::log_summary(&report, repeats),
            Err(e) => {
                if let Some(line) = repeats.note(&e.to_string(), Instant::now()) {
                    tracing::error!(error = %line, "host pass did not finish");
                }
            }
        }
    }

    /// Sleeps `d`, petting systemd's watchdog at least twice per watchdog
    /// period; false when cancelled.
    pub(super) async fn sleep_petting_watchdog(&self, d: Duration) -> bool {
        let period = watchdog_period();
        let until = tokio::time::Instant::now() + d;
        loop {
            if period.is_some() {
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
            }
            let now = tokio::time::Instant::now();
            if now >= until {
                return true;
            }
            let step = period.map_or(until - now, |p| p.min(until - now));
            tokio::select! {
                _ = self.cancel.cancelled() => return false,
                _ = tokio::time::sleep(step) => {}
            }
        }
    }
}

/// Half of systemd's watchdog period (at least 100 ms), so that one late
/// wake-up never misses it; `None` without a watchdog.
fn watchdog_period() -> Option<Duration> {
    let mut usec = 0;
    sd_notify::watchdog_enabled(false, &mut usec)
        .then(|| Duration::from_micros(usec / 2).max(Duration::from_millis(100)))
}
