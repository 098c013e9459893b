//! The statements of each database, side by side. They differ only where
//! the dialects do: epoch extraction, the id-list parameter, `now()`, JSON.
//! Timestamps are read as float seconds since the epoch so that one decoder
//! serves both.

pub struct Dialect {
    pub chats_naming_opencode_session: &'static str,
    pub chats_of_session: &'static str,
    pub repositories_of_host: &'static str,
    pub worktrees_of_host: &'static str,
    pub open_agent_rows_of_host: &'static str,
    pub chats_by_id: &'static str,
    pub sessions_by_id: &'static str,
    pub worktrees_naming: &'static str,
    pub host_worktrees_naming: &'static str,
    pub mark_at_risk: &'static str,
    pub mark_active: &'static str,
    pub mark_removed: &'static str,
    pub close_agent_row: &'static str,
    pub close_agent_row_recording: &'static str,
    pub append_audit: &'static str,
    pub open_intents: &'static str,
}

/// The same texts serve both databases.
const CHATS_NAMING_OPENCODE_SESSION: &str = "SELECT DISTINCT chat_id FROM agent_sessions \
     WHERE agent_session_id = $1 AND status = 'open' AND backend = 'opencode_server'";
const CHATS_OF_SESSION: &str = "SELECT id FROM chats WHERE session_id = $1 ORDER BY id";

/// The distinct repositories of a host, one index seek per repository
/// (a "loose index scan" on `worktrees_host_repo`): the cost follows the
/// number of repositories, not the rows the host's history left behind.
/// The same text serves both databases.
const REPOSITORIES_OF_HOST: &str = "WITH RECURSIVE r(repo_path) AS ( \
         SELECT min(repo_path) FROM worktrees WHERE host = $1 \
         UNION ALL \
         SELECT (SELECT min(w.repo_path) FROM worktrees w \
                 WHERE w.host = $1 AND w.repo_path > r.repo_path) \
         FROM r WHERE r.repo_path IS NOT NULL) \
         SELECT repo_path FROM r WHERE repo_path IS NOT NULL ORDER BY repo_path";

pub static POSTGRES: Dialect = Dialect {
    chats_naming_opencode_session: CHATS_NAMING_OPENCODE_SESSION,
    chats_of_session: CHATS_OF_SESSION,
    repositories_of_host: REPOSITORIES_OF_HOST,
    worktrees_of_host: "SELECT id, session_id, repo_path, path, branch, base_ref, state, \
         EXTRACT(EPOCH FROM created_at)::float8 AS created \
         FROM worktrees WHERE host = $1 AND state <> 'removed' ORDER BY id",
    open_agent_rows_of_host: "SELECT id, chat_id, session_id, agent, backend, agent_session_id, \
         worktree_id, pid, pid_start_time, EXTRACT(EPOCH FROM created_at)::float8 AS created \
         FROM agent_sessions WHERE host = $1 AND status = 'open' ORDER BY id",
    // chats_by_id and sessions_by_id: one index lookup per id, whatever the
    // size of the tables. The planner guesses 100 rows for the id list and,
    // past that guess, would hash-join against a scan of the whole table;
    // a LATERAL subquery with OFFSET 0 cannot be flattened into such a join.
    chats_by_id: "SELECT c.id, c.session_id, c.status, \
         EXTRACT(EPOCH FROM c.created_at)::float8 AS created, \
         EXTRACT(EPOCH FROM c.updated_at)::float8 AS updated, \
         s.status AS s_status, \
         EXTRACT(EPOCH FROM s.created_at)::float8 AS s_created, \
         EXTRACT(EPOCH FROM s.updated_at)::float8 AS s_updated \
         FROM (SELECT DISTINCT jsonb_array_elements_text($1::jsonb) AS id) ids \
         JOIN LATERAL (SELECT * FROM chats WHERE id = ids.id OFFSET 0) c ON true \
         LEFT JOIN LATERAL (SELECT * FROM sessions WHERE id = c.session_id OFFSET 0) s ON true",
    sessions_by_id: "WITH ids(id) AS (SELECT DISTINCT jsonb_array_elements_text($1::jsonb)) \
         SELECT ids.id AS id, s.status AS status, \
         EXTRACT(EPOCH FROM s.created_at)::float8 AS created, \
         EXTRACT(EPOCH FROM s.updated_at)::float8 AS updated, \
         c.open_chats, c.total_chats, c.last_chat_change \
         FROM ids LEFT JOIN LATERAL (SELECT * FROM sessions WHERE id = ids.id OFFSET 0) s ON true \
         LEFT JOIN LATERAL (SELECT count(*) FILTER (WHERE status = 'open') AS open_chats, \
             count(*) AS total_chats, \
             EXTRACT(EPOCH FROM max(updated_at))::float8 AS last_chat_change \
             FROM chats WHERE session_id = ids.id) c ON true",
    worktrees_naming:
        "SELECT id FROM worktrees WHERE (path = $1 OR id = $2) AND state <> 'removed'",
    host_worktrees_naming: "SELECT id, session_id FROM worktrees \
         WHERE host = $1 AND state <> 'removed' \
         AND (path IN (SELECT jsonb_array_elements_text($2::jsonb)) OR id = $3) ORDER BY id",
    mark_at_risk: "UPDATE worktrees SET state = 'at_risk', at_risk_reasons = $2::jsonb \
         WHERE id = $1 AND state <> 'removed' \
         AND (state <> 'at_risk' OR at_risk_reasons IS DISTINCT FROM $2::jsonb)",
    mark_active: "UPDATE worktrees SET state = 'active', at_risk_reasons = NULL \
         WHERE id = $1 AND state = 'at_risk'",
    mark_removed:
        "UPDATE worktrees SET state = 'removed', removed_at = now(), at_risk_reasons = NULL \
         WHERE id = $1 AND state <> 'removed'",
    close_agent_row: "UPDATE agent_sessions SET status = 'closed', closed_at = now() \
         WHERE id = $1 AND status = 'open'",
    close_agent_row_recording: "UPDATE agent_sessions SET status = 'closed', closed_at = now() \
         WHERE id = $1 AND status = 'open' AND pid = $2 \
         AND pid_start_time IS NOT DISTINCT FROM $3",
    append_audit: "INSERT INTO reconciler_audit \
         (host, chat_id, session_id, action, target, outcome, reason, detail, intent_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9) RETURNING id",
    open_intents:
        "SELECT i.id, i.action, i.target, CAST(i.detail AS TEXT), i.chat_id, i.session_id \
         FROM reconciler_audit i \
         WHERE i.host = $1 AND i.outcome = 'intent' \
         AND NOT EXISTS (SELECT 1 FROM reconciler_audit o WHERE o.intent_id = i.id) \
         ORDER BY i.id",
};

pub static SQLITE: Dialect = Dialect {
    chats_naming_opencode_session: CHATS_NAMING_OPENCODE_SESSION,
    chats_of_session: CHATS_OF_SESSION,
    repositories_of_host: REPOSITORIES_OF_HOST,
    worktrees_of_host: "SELECT id, session_id, repo_path, path, branch, base_ref, state, \
         CAST(unixepoch(created_at, 'subsec') AS REAL) AS created \
         FROM worktrees WHERE host = $1 AND state <> 'removed' ORDER BY id",
    open_agent_rows_of_host: "SELECT id, chat_id, session_id, agent, backend, agent_session_id, \
         worktree_id, pid, pid_start_time, CAST(unixepoch(created_at, 'subsec') AS REAL) AS created \
         FROM agent_sessions WHERE host = $1 AND status = 'open' ORDER BY id",
    chats_by_id: "SELECT c.id, c.session_id, c.status, \
         CAST(unixepoch(c.created_at, 'subsec') AS REAL) AS created, \
         CAST(unixepoch(c.updated_at, 'subsec') AS REAL) AS updated, \
         s.status AS s_status, \
         CAST(unixepoch(s.created_at, 'subsec') AS REAL) AS s_created, \
         CAST(unixepoch(s.updated_at, 'subsec') AS REAL) AS s_updated \
         FROM chats c LEFT JOIN sessions s ON s.id = c.session_id \
         WHERE c.id IN (SELECT value FROM json_each($1))",
    // One pass over each session's chats (not one per aggregate).
    sessions_by_id: "WITH ids(id) AS (SELECT value FROM json_each($1)), \
         agg AS (SELECT c.session_id AS sid, sum(c.status = 'open') AS open_chats, \
             count(*) AS total_chats, max(c.updated_at) AS last FROM chats c \
             WHERE c.session_id IN (SELECT id FROM ids) GROUP BY c.session_id) \
         SELECT ids.id AS id, s.status AS status, \
         CAST(unixepoch(s.created_at, 'subsec') AS REAL) AS created, \
         CAST(unixepoch(s.updated_at, 'subsec') AS REAL) AS updated, \
         coalesce(agg.open_chats, 0) AS open_chats, \
         coalesce(agg.total_chats, 0) AS total_chats, \
         CAST(unixepoch(agg.last, 'subsec') AS REAL) AS last_chat_change \
         FROM ids LEFT JOIN sessions s ON s.id = ids.id LEFT JOIN agg ON agg.sid = ids.id",
    worktrees_naming: "SELECT id FROM worktrees WHERE (path = $1 OR id = $2) AND state <> 'removed'",
    host_worktrees_naming: "SELECT id, session_id FROM worktrees \
         WHERE host = $1 AND state <> 'removed' \
         AND (path IN (SELECT value FROM json_each($2)) OR id = $3) ORDER BY id",
    mark_at_risk: "UPDATE worktrees SET state = 'at_risk', at_risk_reasons = $2 \
         WHERE id = $1 AND state <> 'removed' \
         AND (state <> 'at_risk' OR at_risk_reasons IS NOT $2)",
    mark_active: "UPDATE worktrees SET state = 'active', at_risk_reasons = NULL \
         WHERE id = $1 AND state = 'at_risk'",
    mark_removed: "UPDATE worktrees SET state = 'removed', \
         removed_at = strftime('%Y-%m-%d %H:%M:%f', 'now'), at_risk_reasons = NULL \
         WHERE id = $1 AND state <> 'removed'",
    close_agent_row: "UPDATE agent_sessions SET status = 'closed', \
         closed_at = strftime('%Y-%m-%d %H:%M:%f', 'now') WHERE id = $1 AND status = 'open'",
    close_agent_row_recording: "UPDATE agent_sessions SET status = 'closed', \
         closed_at = strftime('%Y-%m-%d %H:%M:%f', 'now') \
         WHERE id = $1 AND status = 'open' AND pid = $2 AND pid_start_time IS $3",
    append_audit: "INSERT INTO reconciler_audit \
         (host, chat_id, session_id, action, target, outcome, reason, detail, intent_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
    open_intents: "SELECT i.id, i.action, i.target, i.detail, i.chat_id, i.session_id \
         FROM reconciler_audit i \
         WHERE i.host = $1 AND i.outcome = 'intent' \
         AND NOT EXISTS (SELECT 1 FROM reconciler_audit o WHERE o.intent_id = i.id) \
         ORDER BY i.id",
};
