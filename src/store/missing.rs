//! When each stale admin entry was first seen without its directory
//! (`reconciler_missing_entries`): the clock of `worktrees.stale_entry_grace`,
//! kept in the database so that a restart, or a `once` run, does not reset
//! it to zero (which would only delay a prune) nor lose it.

use super::{Pool, Store, StoreError};

/// One admin entry: its main repository and its name.
pub type EntryKey = (String, String);

const RECORD: &str = "INSERT INTO reconciler_missing_entries \
     (host, repo_path, name, first_missing_unix) VALUES ($1, $2, $3, $4) \
     ON CONFLICT (host, repo_path, name) DO NOTHING";
const READ: &str = "SELECT first_missing_unix FROM reconciler_missing_entries \
     WHERE host = $1 AND repo_path = $2 AND name = $3";
const ALL: &str = "SELECT repo_path, name FROM reconciler_missing_entries WHERE host = $1";
const FORGET: &str =
    "DELETE FROM reconciler_missing_entries WHERE host = $1 AND repo_path = $2 AND name = $3";

impl Store {
    /// When each of `entries` was first seen missing (unix seconds), in
    /// order: `now` for one seen for the first time. With `complete` (the
    /// pass saw every admin entry of the host), the records of entries not
    /// among them are forgotten: pruned, or their directory is back.
    /// Without `write` (a pass that writes nothing) it only reads: an entry
    /// never recorded is `None`.
    pub async fn missing_since(
        &self,
        host: &str,
        entries: &[EntryKey],
        now: i64,
        complete: bool,
        write: bool,
    ) -> Result<Vec<Option<i64>>, StoreError> {
        const WHAT: &str = "recording when admin entries went missing";
        self.bounded(WHAT, async move {
            let mut since = Vec::with_capacity(entries.len());
            for (repo, name) in entries {
                if write {
                    with_pool!(self, p => sqlx::query(RECORD).bind(host).bind(repo).bind(name).bind(now).execute(p).await.map(drop))
                        .map_err(|e| self.query_err(WHAT, e))?;
                }
                let t: Option<(i64,)> = with_pool!(self, p => sqlx::query_as(READ).bind(host).bind(repo).bind(name).fetch_optional(p).await)
                    .map_err(|e| self.query_err(WHAT, e))?;
                since.push(t.map(|(t,)| t));
            }
            if complete && write {
                let known: Vec<(String, String)> =
                    with_pool!(self, p => sqlx::query_as(ALL).bind(host).fetch_all(p).await)
                        .map_err(|e| self.query_err(WHAT, e))?;
                for (repo, name) in known {
                    if entries.iter().any(|(r, n)| *r == repo && *n == name) {
                        continue;
                    }
                    with_pool!(self, p => sqlx::query(FORGET).bind(host).bind(&repo).bind(&name).execute(p).await.map(drop))
                        .map_err(|e| self.query_err(WHAT, e))?;
                }
            }
            Ok(since)
        })
        .await
    }
}
