//! Database notifications: with PostgreSQL, `LISTEN` on the notify channel.
//! Payloads `chat:<id>`, `session:<id>` or empty (the whole host) become the
//! same requests as a nudge.
//!
//! # Guarantees
//! - After a lost connection the listener reconnects with backoff (1 s,
//!   doubling, at most 30 s) and then asks for a full pass: notifications
//!   sent while it was away are lost, the state they pointed at is not.
//! - The listener's connection carries the application name
//!   `boo-reconciler listen <channel>`, so operators can find it in
//!   `pg_stat_activity`.

use std::time::Duration;

use sqlx::postgres::{PgListener, PgPoolOptions};
use tokio_util::sync::CancellationToken;

use super::{Pool, Store};
use crate::plan::Scope;

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
            let attempt = async {
                let pool = PgPoolOptions::new()
                    .max_connections(1)
                    .connect_with(opts.clone())
                    .await?;
                let mut l = PgListener::connect_with(&pool).await?;
                l.ignore_pool_close_event(true);
                l.listen(channel).await?;
                Ok::<_, sqlx::Error>((pool, l))
            };
            let (_pool, mut listener) = tokio::select! {
                _ = cancel.cancelled() => return,
                r = attempt => match r {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::warn!(error = %e, channel, retry_in = ?delay, "cannot listen for notifications");
                        tokio::select! {
                            _ = cancel.cancelled() => return,
                            _ = tokio::time::sleep(delay) => {}
                        }
                        delay = (delay * 2).min(Duration::from_secs(30));
                        continue;
                    }
                }
            };
            tracing::info!(channel, "listening for notifications");
            delay = Duration::from_secs(1);
            if !first {
                on(Notice::Reconnected);
            }
            first = false;
            loop {
                let next = tokio::select! {
                    _ = cancel.cancelled() => return,
                    n = listener.try_recv() => n,
                };
                match next {
                    Ok(Some(n)) => match parse_payload(n.payload()) {
                        Ok(scope) => on(Notice::Reconcile(scope)),
                        Err(e) => tracing::warn!(channel, "{e}"),
                    },
                    // The connection was lost; start over on a fresh one.
                    Ok(None) | Err(_) => {
                        tracing::warn!(channel, "notification connection lost; reconnecting");
                        break;
                    }
                }
            }
        }
    }
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
}
