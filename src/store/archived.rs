//! What the `archives` and `restore` commands read and write: every
//! worktree row a host ever had (an archive outlives its worktree, so
//! removed rows count), the audit records that name an archive, and the
//! row of a restored worktree.

use sqlx::FromRow;

use super::{Pool, Store, StoreError};

/// One worktree row, whatever its state.
#[derive(Clone, Debug, PartialEq, Eq, FromRow)]
pub struct WorktreeRow {
    pub id: String,
    pub session_id: String,
    pub repo_path: String,
    pub path: String,
    pub branch: Option<String>,
    pub base_ref: Option<String>,
    pub state: String,
}

/// An audit record that names an archive.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, FromRow)]
pub struct ArchiveAudit {
    pub id: i64,
    pub at: String,
    pub action: String,
    pub outcome: String,
    pub reason: String,
}

impl Store {
    /// Every worktree row of `host`, removed ones too, by id.
    pub async fn host_worktree_history(&self, host: &str) -> Result<Vec<WorktreeRow>, StoreError> {
        const WHAT: &str = "reading the host's worktree rows";
        self.bounded(WHAT, async move {
            with_pool!(self, p => {
                sqlx::query(
                    "SELECT id, session_id, repo_path, path, branch, base_ref, state \
                     FROM worktrees WHERE host = $1 ORDER BY id",
                )
                .bind(host)
                .fetch_all(p)
                .await
                .and_then(|rows| rows.iter().map(WorktreeRow::from_row).collect())
            })
            .map_err(|e| self.query_err(WHAT, e))
        })
        .await
    }

    /// The audit records of `host` whose detail names `reference`, oldest
    /// first: the force's intent and its outcome.
    pub async fn audit_naming(
        &self,
        host: &str,
        reference: &str,
    ) -> Result<Vec<ArchiveAudit>, StoreError> {
        const WHAT: &str = "reading the audit records of an archive";
        let pattern = format!(
            "%\"{}\"%",
            reference.replace('%', "\\%").replace('_', "\\_")
        );
        self.bounded(WHAT, async move {
            with_pool!(self, p => {
                sqlx::query(
                    "SELECT id, CAST(at AS TEXT) AS at, action, outcome, reason FROM reconciler_audit \
                     WHERE host = $1 AND CAST(detail AS TEXT) LIKE $2 ESCAPE '\\' ORDER BY id",
                )
                .bind(host)
                .bind(&pattern)
                .fetch_all(p)
                .await
                .and_then(|rows| rows.iter().map(ArchiveAudit::from_row).collect())
            })
            .map_err(|e| self.query_err(WHAT, e))
        })
        .await
    }

    /// Whether any worktree row (of any host, in any state) has the id
    /// `id`: a restored worktree's row must not collide with one.
    pub async fn worktree_row_exists(&self, id: &str) -> Result<bool, StoreError> {
        const WHAT: &str = "looking up a worktree row id";
        self.bounded(WHAT, async move {
            with_pool!(self, p => {
                sqlx::query("SELECT id FROM worktrees WHERE id = $1")
                    .bind(id)
                    .fetch_optional(p)
                    .await
                    .map(|r| r.is_some())
            })
            .map_err(|e| self.query_err(WHAT, e))
        })
        .await
    }

    /// The row of a worktree restored for a live session.
    pub async fn insert_worktree_row(
        &self,
        host: &str,
        row: &WorktreeRow,
    ) -> Result<(), StoreError> {
        const WHAT: &str = "writing the restored worktree's row";
        self.bounded(WHAT, async move {
            with_pool!(self, p => {
                sqlx::query(
                    "INSERT INTO worktrees (id, session_id, repo_path, path, branch, base_ref, host) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(&row.id)
                .bind(&row.session_id)
                .bind(&row.repo_path)
                .bind(&row.path)
                .bind(&row.branch)
                .bind(&row.base_ref)
                .bind(host)
                .execute(p)
                .await
                .map(|_| ())
            })
            .map_err(|e| self.query_err(WHAT, e))
        })
        .await
    }
}
