//! Database notifications: with PostgreSQL, `LISTEN` on the notify channel.
//! Payloads `chat:<id>`, `session:<id>` or empty (the whole host) become the
//! same requests as a nudge.
//!
//! # Guarantees
//! - Connecting the listener ends within `database.connect_timeout`, and
//!   its `LISTEN` within `database.query_timeout`; a failed attempt is
//!   retried with backoff (1 s, doubling, at most 30 s).
//! - A connection that goes silent (open, but no byte comes back: a
//!   partition, a frozen proxy) is found out: after
//!   [`silence_check_interval`] without a notification the listener sends
//!   `SELECT 1` on its own connection, bounded by `database.query_timeout`.
//!   With the defaults a frozen connection is given up within 40 s (test
//!   `a_frozen_listener_reconnects_and_delivers_again`).
//! - After a lost (or silent) connection the listener says why in one
//!   warning naming the channel, reconnects and then asks for a full pass:
//!   notifications sent while it was away are lost, the state they pointed
//!   at is not.
//! - The listener's connection carries the application name
//!   `boo-reconciler listen <channel>`, so operators can find it in
//!   `pg_stat_activity`.
//!
//! # Caveats
//! - A connection given up while frozen is closed in the background once
//!   it answers again, or when the operating system gives up on it; until
//!   then its backend may still show in `pg_stat_activity` beside the new
//!   one.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use tokio_util::sync::CancellationToken;

use super::{Pool, Store};
use crate::model::Scope;

/// How long a listener hears nothing before it checks that its connection
/// still answers: three query bounds, and at least 5 s, so that a quiet
/// channel costs the server one trivial round trip every so often while a
/// frozen connection is noticed well within a minute with the defaults.
pub fn silence_check_interval(query_timeout: Duration) -> Duration {
    (query_timeout * 3).max(Duration::from_secs(5))
}

/// What a notification asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    /// Reconcile this scope.
    Reconcile(Scope),
    /// The listener was away: reconcile everything.
    Reconnected,
}

/// Parses a payload: `chat:<id>`, `session:<id>`, or empty.
pub fn parse_payload(payload: &str) -> Result<Scope, String> {
    let p = payload.trim();
    if p.is_empty() {
        return Ok(Scope::Host);
    }
    match p.split_once(':') {
        Some(("chat", id)) if !id.is_empty() => Ok(Scope::Chat(id.to_string())),
        Some(("session", id)) if !id.is_empty() => Ok(Scope::Session(id.to_string())),
        _ => Err(format!(
            "unrecognised notification payload {p:?}: expected chat:<id>, session:<id> or empty"
        )),
    }
}

impl Store {
    /// Listens on `channel` until `cancel`, calling `on` for each notice.
    /// Returns at once with SQLite (it has no notifications).
    pub async fn listen(
        &self,
        channel: &str,
        cancel: CancellationToken,
        mut on: impl FnMut(Notice) + Send,
    ) {
        let Pool::Postgres(pool) = &self.pool else {
            return;
        };
        let opts = (*pool.connect_options())
            .clone()
            .application_name(&format!("boo-reconciler listen {channel}"));
        let mut delay = Duration::from_secs(1);
        let mut first = true;
        loop {
            let attempt = tokio::select! {
                _ = cancel.cancelled() => return,
                r = self.connect_listener(&opts, channel) => r,
            };
            let (pool, mut listener) = match attempt {
                Ok(l) => l,
                Err(why) => {
                    tracing::warn!(error = %why, channel, retry_in = ?delay, "cannot listen for notifications");
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(Duration::from_secs(30));
                    continue;
                }
            };
            tracing::info!(channel, "listening for notifications");
            delay = Duration::from_secs(1);
            if !first {
                on(Notice::Reconnected);
            }
            first = false;
            let why = tokio::select! {
                _ = cancel.cancelled() => return,
                why = self.relay(&mut listener, &mut on) => why,
            };
            tracing::warn!(channel, error = %why, "notification connection lost; reconnecting");
            discard(pool, listener);
        }
    }

    /// A listener on `channel`, connected within `database.connect_timeout`
    /// and listening within `database.query_timeout`; else why not.
    async fn connect_listener(
        &self,
        opts: &PgConnectOptions,
        channel: &str,
    ) -> Result<(PgPool, PgListener), String> {
        let bound = self.timeouts.connect;
        let connect = async {
            let pool = PgPoolOptions::new()
                .max_connections(1)
                .acquire_timeout(bound)
                .connect_with(opts.clone())
                .await?;
            let listener = PgListener::connect_with(&pool).await?;
            Ok::<_, sqlx::Error>((pool, listener))
        };
        let (pool, mut listener) = match tokio::time::timeout(bound, connect).await {
            Err(_) => {
                return Err(format!(
                    "database {} did not answer within {}",
                    self.url,
                    humantime::format_duration(bound)
                ))
            }
            Ok(Err(e)) => return Err(super::bound::describe(&e, opts)),
            Ok(Ok(l)) => l,
        };
        listener.ignore_pool_close_event(true);
        // A lost connection comes back through `listen`, which bounds the
        // reconnection and asks for the full pass; sqlx's own reconnection
        // would do neither.
        listener.eager_reconnect(false);
        let query = self.timeouts.query;
        let why = match tokio::time::timeout(query, listener.listen(channel)).await {
            Ok(Ok(())) => return Ok((pool, listener)),
            Ok(Err(e)) => format!("LISTEN {channel} failed: {e}"),
            Err(_) => format!(
                "LISTEN {channel} got no answer within {}",
                humantime::format_duration(query)
            ),
        };
        discard(pool, listener);
        Err(why)
    }

    /// Hands each notification to `on` until the connection is lost or
    /// stops answering; returns why it ended.
    async fn relay(&self, listener: &mut PgListener, on: &mut impl FnMut(Notice)) -> String {
        let quiet = silence_check_interval(self.timeouts.query);
        loop {
            // `try_recv` is cancel-safe: a notification half read when the
            // wait runs out is read in full by the next call.
            match tokio::time::timeout(quiet, listener.try_recv()).await {
                Ok(Ok(Some(n))) => match parse_payload(n.payload()) {
                    Ok(scope) => on(Notice::Reconcile(scope)),
                    Err(e) => tracing::warn!(channel = n.channel(), "{e}"),
                },
                Ok(Ok(None)) => return "the connection ended".into(),
                Ok(Err(e)) => return e.to_string(),
                Err(_) => {
                    if let Err(why) = self.still_answers(listener, quiet).await {
                        return why;
                    }
                }
            }
        }
    }

    /// One round trip on the listener's own connection, within
    /// `database.query_timeout`: a silent channel and a frozen connection
    /// look the same until something is asked.
    async fn still_answers(
        &self,
        listener: &mut PgListener,
        quiet: Duration,
    ) -> Result<(), String> {
        let query = self.timeouts.query;
        match tokio::time::timeout(query, sqlx::query("SELECT 1").execute(&mut *listener)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!(
                "a check after {} of silence failed: {e}",
                humantime::format_duration(quiet)
            )),
            Err(_) => Err(format!(
                "nothing heard for {} and a check got no answer within {}",
                humantime::format_duration(quiet),
                humantime::format_duration(query)
            )),
        }
    }
}

/// Lets go of a listener that will not be used again. The pool is closed
/// first, so that its connection, handed back once the listener's parting
/// `UNLISTEN` gets through, is closed rather than kept idle.
fn discard(pool: PgPool, listener: PgListener) {
    // Closing takes effect on the call; waiting for it would wait on the
    // very connection that stopped answering.
    let _closing = pool.close();
    drop(listener);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads() {
        assert_eq!(parse_payload(""), Ok(Scope::Host));
        assert_eq!(parse_payload("chat:c1"), Ok(Scope::Chat("c1".into())));
        assert_eq!(
            parse_payload(" session:s1 "),
            Ok(Scope::Session("s1".into()))
        );
        assert!(parse_payload("chat:").is_err());
        assert!(parse_payload("worktree:w1").is_err());
    }

    #[test]
    fn silence_is_checked_after_three_query_bounds_and_never_under_5s() {
        assert_eq!(
            silence_check_interval(Duration::from_secs(10)),
            Duration::from_secs(30)
        );
        assert_eq!(
            silence_check_interval(Duration::from_secs(1)),
            Duration::from_secs(5)
        );
        assert_eq!(
            silence_check_interval(Duration::from_millis(1)),
            Duration::from_secs(5)
        );
    }
}
