//! The sessions actor: the body of the action on opencode sessions.

use std::sync::Arc;

use crate::act::run::audit::Audit;
use crate::act::run::executor::{done, skipped, Applied};
use crate::act::run::liveness::Recheck;
use crate::act::run::outcome::Detail;
use crate::opencode::{Client, Deleted};
use crate::plan::{Action, OpencodeTarget};
use crate::store::Store;

/// Deletes opencode sessions no live chat owns.
pub(super) struct SessionActor {
    /// `None` when this host has no opencode (`opencode.url` empty).
    pub(super) opencode: Option<Client>,
    pub(super) store: Store,
    pub(super) audit: Arc<Audit>,
    pub(super) recheck: Arc<Recheck>,
}

impl SessionActor {
    /// Aborts, then deletes, a session on the opencode server, once sure
    /// that no live chat owns it now.
    pub(super) async fn delete_opencode_session(
        &self,
        action: &Action,
        session: &OpencodeTarget,
        intent: &mut Option<i64>,
    ) -> Applied {
        let Some(client) = &self.opencode else {
            return Ok(skipped("opencode is off on this host".into()));
        };
        // A row's session goes only while its chat is not live. (An orphan's
        // owner session only orders it before that session's worktree: the
        // session itself may well be live.)
        if session.chat_id.is_some() {
            if let Some(why) = self.recheck.owner_is_live(action).await? {
                return Ok(skipped(why));
            }
        }
        // An orphan may have been claimed by a row since the plan.
        for chat in self.store.chats_with_open_rows_naming(&session.id).await? {
            if self.recheck.chat_is_live(&chat).await? {
                return Ok(skipped(format!(
                    "live chat {chat} has an open row naming it"
                )));
            }
        }
        self.audit
            .announce(
                action,
                serde_json::json!({ "session": &session.id }),
                intent,
            )
            .await?;
        client.abort(&session.id).await?;
        let note = match client.delete(&session.id).await? {
            Deleted::Deleted => "aborted and deleted (with its child sessions)",
            Deleted::AlreadyGone => "already gone on the server (404)",
        };
        Ok((done(note), Detail::None))
    }
}

impl SessionActor {
    /// What an interrupted deletion's intent leaves to do: a later pass
    /// deletes the session if the server still lists it.
    pub(in crate::act) fn found_after_deletion() -> String {
        "the session is deleted by a later pass if the server still lists it".into()
    }
}
