//! The record of each host's worktree root (`reconciler_roots`,
//! [`crate::root_record`]).

use super::{Pool, Store, StoreError};
use crate::root_record::RootRecord;

const READ: &str = "SELECT root_path, mount, held_entries FROM reconciler_roots WHERE host = $1";
const WRITE: &str = "INSERT INTO reconciler_roots \
     (host, root_path, mount, held_entries, recorded_unix) VALUES ($1, $2, $3, $4, $5) \
     ON CONFLICT (host) DO UPDATE SET root_path = excluded.root_path, \
     mount = excluded.mount, held_entries = excluded.held_entries, \
     recorded_unix = excluded.recorded_unix";

impl Store {
    /// The record of `host`'s root, if any.
    pub async fn root_record(&self, host: &str) -> Result<Option<RootRecord>, StoreError> {
        const WHAT: &str = "reading the worktree root's record";
        self.bounded(WHAT, async move {
            let row: Option<(String, String, bool)> =
                with_pool!(self, p => sqlx::query_as(READ).bind(host).fetch_optional(p).await)
                    .map_err(|e| self.query_err(WHAT, e))?;
            Ok(row.map(|(path, mount, held_entries)| RootRecord {
                path,
                mount,
                held_entries,
            }))
        })
        .await
    }

    /// Records `record` as `host`'s root.
    pub async fn record_root(
        &self,
        host: &str,
        record: &RootRecord,
        now_unix: i64,
    ) -> Result<(), StoreError> {
        const WHAT: &str = "recording the worktree root";
        self.bounded(WHAT, async move {
            with_pool!(self, p => sqlx::query(WRITE)
                .bind(host)
                .bind(&record.path)
                .bind(&record.mount)
                .bind(record.held_entries)
                .bind(now_unix)
                .execute(p)
                .await
                .map(drop))
            .map_err(|e| self.query_err(WHAT, e))
        })
        .await
    }
}
