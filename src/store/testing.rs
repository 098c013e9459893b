//! Fixture SQL for the integration tests and the benchmark, which write
//! the orchestrator's rows (and poison them) as no part of the controller
//! does. Not part of the API: hidden from the documentation, and nothing
//! under `src/` calls it.
//!
//! The methods stay inherent, rather than behind a trait to import, so that
//! a fixture reads `store.execute_raw(…)` wherever it is written.

use sqlx::Row;

use super::{AuditRecord, Pool, Store, StoreError};

impl Store {
    /// Runs one statement of fixture SQL (no parameters).
    #[doc(hidden)]
    pub async fn execute_raw(&self, statement: &str) -> Result<u64, StoreError> {
        self.bounded("executing statement", async move {
            with_pool!(self, p => sqlx::raw_sql(statement).execute(p).await.map(|r| r.rows_affected()))
                .map_err(|e| self.query_err("executing statement", e))
        })
        .await
    }

    /// Runs a query and returns every column of every row as text.
    #[doc(hidden)]
    pub async fn query_strings(
        &self,
        statement: &str,
    ) -> Result<Vec<Vec<Option<String>>>, StoreError> {
        self.bounded("running query", async move {
            with_pool!(self, p => {
                sqlx::query(statement).fetch_all(p).await.and_then(|rows| {
                    rows.into_iter()
                        .map(|r| (0..r.len()).map(|i| r.try_get::<Option<String>, _>(i)).collect())
                        .collect()
                })
            })
            .map_err(|e| self.query_err("running query", e))
        })
        .await
    }

    /// Audit records, oldest first, without their details.
    #[doc(hidden)]
    pub async fn audit_records(&self) -> Result<Vec<AuditRecord>, StoreError> {
        self.bounded("reading audit records", async move {
            with_pool!(self, p => {
                sqlx::query("SELECT host, chat_id, session_id, action, target, outcome, reason, intent_id FROM reconciler_audit ORDER BY id")
                    .fetch_all(p).await
                    .and_then(|rows| rows.into_iter().map(|r| -> Result<_, sqlx::Error> {
                        Ok(AuditRecord {
                            host: r.try_get("host")?,
                            chat_id: r.try_get("chat_id")?,
                            session_id: r.try_get("session_id")?,
                            action: r.try_get("action")?,
                            target: r.try_get("target")?,
                            outcome: r.try_get("outcome")?,
                            reason: r.try_get("reason")?,
                            detail: serde_json::Value::Null,
                            intent_id: r.try_get("intent_id")?,
                        })
                    }).collect())
            })
            .map_err(|e| self.query_err("reading audit records", e))
        })
        .await
    }
}
