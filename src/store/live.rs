//! Whether an owner is live now, read afresh: the rule a nudge answers by
//! and a destructive step re-checks (DESIGN.md rule 4), in one place.

use std::time::{Duration, SystemTime};

use super::{Store, StoreError};

/// What the database says of one chat or session right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Liveness {
    /// A chat: its row and its session's are open. A session: it keeps its
    /// worktree (a live chat, or no chat row yet while younger than the
    /// orphan minimum age).
    pub live: bool,
    /// Whether its row exists at all.
    pub known: bool,
}

impl Store {
    /// Whether chat `id` is live.
    pub async fn chat_liveness(&self, id: &str) -> Result<Liveness, StoreError> {
        let st = self.chat_state(id).await?;
        Ok(Liveness {
            live: st.is_live(),
            known: st.chat.is_some(),
        })
    }

    /// Whether session `id` keeps its worktree at `now`, a session without
    /// chats counting as live while younger than `young`.
    pub async fn session_liveness(
        &self,
        id: &str,
        now: SystemTime,
        young: Duration,
    ) -> Result<Liveness, StoreError> {
        let st = self.session_state(id).await?;
        Ok(Liveness {
            live: st.keeps_worktree(now, young),
            known: st.session.is_some(),
        })
    }
}
