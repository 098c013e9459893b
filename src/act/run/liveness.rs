//! The re-checks right before a destructive step: an owner live again, or
//! a directory claimed by a live row, keeps everything (DESIGN.md rule 4).
//! The rule itself is the store's ([`crate::store::live`]); these apply it
//! to an action.

use std::time::{Duration, SystemTime};

use crate::act::process::terminate::{ChatLiveness, LiveAnswer};
use crate::act::run::outcome::ActError;
use crate::git;
use crate::plan::{Action, WorktreeTarget};
use crate::root::WorktreeRoot;
use crate::store::Store;

/// What the re-checks read: the store's liveness, and the rows of this
/// host that may name a directory, resolved under the root. Every actor
/// that destroys asks it right before.
pub(in crate::act) struct Recheck {
    pub(in crate::act) store: Store,
    pub(in crate::act) root: WorktreeRoot,
    pub(in crate::act) host: String,
    /// `worktrees.orphan_min_age`: a session without a chat row yet keeps
    /// its worktree while younger.
    pub(in crate::act) orphan_min_age: Duration,
}

impl Recheck {
    /// `Some(why)` when the action's owner became live again since the plan:
    /// the chat for a chat's action, else the session (any live chat of it)
    /// for a session's action.
    pub(in crate::act) async fn owner_is_live(
        &self,
        action: &Action,
    ) -> Result<Option<String>, ActError> {
        if let Some(chat) = &action.owner.chat_id {
            let live = self.chat_is_live(chat).await?;
            return Ok(live.then(|| format!("chat {chat} is live again")));
        }
        if let Some(session) = &action.owner.session_id {
            if self.session_is_live(session, SystemTime::now()).await? {
                return Ok(Some(format!("session {session} is live again")));
            }
        }
        Ok(None)
    }

    /// Whether chat `id` is live now ([`crate::store::Store::chat_liveness`]).
    pub(in crate::act) async fn chat_is_live(&self, id: &str) -> Result<bool, ActError> {
        let l = self.store.chat_liveness(id).await?;
        Ok(l.live)
    }

    /// Whether session `id` keeps its worktree at `now`
    /// ([`crate::store::Store::session_liveness`]).
    async fn session_is_live(&self, id: &str, now: SystemTime) -> Result<bool, ActError> {
        let l = self
            .store
            .session_liveness(id, now, self.orphan_min_age)
            .await?;
        Ok(l.live)
    }

    /// `Some(why)` when the worktree must be kept after all: its owner is
    /// live again, another row of a live session names the same directory,
    /// or, for an orphan, a row now names it.
    pub(in crate::act) async fn worktree_claimed(
        &self,
        action: &Action,
        wt: &WorktreeTarget,
    ) -> Result<Option<String>, ActError> {
        if wt.row_id.is_some() {
            if let Some(why) = self.owner_is_live(action).await? {
                return Ok(Some(why));
            }
            return self.live_row_naming(wt).await;
        }
        let mut rows = self
            .store
            .worktree_rows_naming(&wt.path.to_string_lossy(), &wt.name)
            .await?;
        for (id, _) in self.rows_resolving_to(wt).await? {
            if !rows.contains(&id) {
                rows.push(id);
            }
        }
        Ok((!rows.is_empty()).then(|| format!("row {} now names this directory", rows.join(", "))))
    }

    /// `(id, session_id)` of this host's rows not yet removed whose path,
    /// however spelled (a symlink, a relative path), leads to the very
    /// directory at `wt.path` (by device and inode): a spelling no query
    /// by text can match.
    async fn rows_resolving_to(
        &self,
        wt: &WorktreeTarget,
    ) -> Result<Vec<(String, String)>, ActError> {
        use std::os::unix::fs::MetadataExt;
        let Ok(meta) = std::fs::symlink_metadata(&wt.path) else {
            return Ok(Vec::new());
        };
        let here = (meta.dev(), meta.ino());
        let rows = self.store.host_rows(&self.host).await?;
        // A plain `<root>/<name>` spelling was matched by text already (a
        // symlink entry of the root is a refused path the planner
        // resolves): only the other spellings are resolved, a stat each.
        Ok(rows
            .worktrees
            .into_iter()
            .filter(|r| !self.root.spelled_plainly(&r.path))
            .filter(|r| self.root.resolve_claim(&r.path) == Some(here))
            .map(|r| (r.id, r.session_id))
            .collect())
    }

    /// `Some(why)` when a row of this host other than the one acted on
    /// names the same directory and its session keeps its worktree (the
    /// rule of [`Recheck::owner_is_live`]): a path claimed by any live row
    /// is never removed. Two rows may name one directory (the orchestrator
    /// reusing a path, a row copied by hand); the row acted on speaks only
    /// for its own session.
    ///
    /// The directory is looked up as spelled by the plan (lexically and
    /// canonically, with and without a trailing `/`) and as `<root>/<id>`,
    /// and every row of this host is resolved (following its links, a
    /// relative path from the root) and compared by device and inode, so a
    /// row that spells the directory otherwise still claims it.
    async fn live_row_naming(&self, wt: &WorktreeTarget) -> Result<Option<String>, ActError> {
        let mut paths: Vec<String> = git::paths::spellings(&wt.path)
            .into_iter()
            .chain([self.root.path().join(&wt.name)])
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        paths.extend(paths.clone().into_iter().map(|p| format!("{p}/")));
        paths.sort();
        paths.dedup();
        let mut rows = self
            .store
            .host_worktree_rows_naming(&self.host, &paths, &wt.name)
            .await?;
        for r in self.rows_resolving_to(wt).await? {
            if !rows.contains(&r) {
                rows.push(r);
            }
        }
        let now = SystemTime::now();
        for (id, session) in rows {
            if wt.row_id.as_deref() == Some(id.as_str()) {
                continue;
            }
            if self.session_is_live(&session, now).await? {
                return Ok(Some(format!(
                    "row {id} of live session {session} names this directory too"
                )));
            }
        }
        Ok(None)
    }
}

/// A termination asks the store, right before SIGKILL, whether a chat is
/// live again ([`Recheck::chat_is_live`]).
impl ChatLiveness for Recheck {
    fn is_live<'a>(&'a self, chat_id: &'a str) -> LiveAnswer<'a> {
        Box::pin(async move { self.chat_is_live(chat_id).await.map_err(|e| e.to_string()) })
    }
}
