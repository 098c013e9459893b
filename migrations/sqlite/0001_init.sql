-- The orchestrator's tables (created only where they do not exist yet) and
-- the controller's audit table. Timestamps are UTC text
-- 'YYYY-MM-DD HH:MM:SS.SSS', as SQLite's date functions read them.
-- No foreign keys: a deleted chat or session row must leave the rows that
-- name it behind as evidence of what still has to be torn down.

CREATE TABLE IF NOT EXISTS sessions (
    id         TEXT PRIMARY KEY,
    status     TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'archived', 'deleted')),
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')),
    updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now'))
);

CREATE TABLE IF NOT EXISTS chats (
    id         TEXT PRIMARY KEY,
    session_id TEXT NOT NULL,
    status     TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'archived', 'deleted')),
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')),
    updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now'))
);
CREATE INDEX IF NOT EXISTS chats_session_status ON chats (session_id, status);

CREATE TABLE IF NOT EXISTS agent_sessions (
    id               TEXT PRIMARY KEY,
    chat_id          TEXT NOT NULL,
    session_id       TEXT NOT NULL,
    agent            TEXT NOT NULL,
    backend          TEXT NOT NULL CHECK (backend IN ('acp', 'opencode_server')),
    agent_session_id TEXT,
    worktree_id      TEXT,
    host             TEXT NOT NULL,
    pid              INTEGER,
    pid_start_time   INTEGER,
    status           TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'closed')),
    created_at       TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')),
    closed_at        TEXT
);
CREATE INDEX IF NOT EXISTS agent_sessions_host_open ON agent_sessions (host) WHERE status = 'open';
CREATE INDEX IF NOT EXISTS agent_sessions_chat ON agent_sessions (chat_id);

CREATE TABLE IF NOT EXISTS worktrees (
    id              TEXT PRIMARY KEY,
    session_id      TEXT NOT NULL,
    repo_path       TEXT NOT NULL,
    path            TEXT NOT NULL,
    branch          TEXT,
    base_ref        TEXT,
    host            TEXT NOT NULL,
    state           TEXT NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'at_risk', 'removed')),
    at_risk_reasons TEXT,
    created_at      TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')),
    removed_at      TEXT
);
CREATE INDEX IF NOT EXISTS worktrees_host_present ON worktrees (host) WHERE state <> 'removed';
CREATE INDEX IF NOT EXISTS worktrees_session ON worktrees (session_id);
CREATE INDEX IF NOT EXISTS worktrees_path ON worktrees (path);

CREATE TABLE IF NOT EXISTS reconciler_audit (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    at         TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')),
    host       TEXT NOT NULL,
    chat_id    TEXT,
    session_id TEXT,
    action     TEXT NOT NULL,
    target     TEXT NOT NULL,
    outcome    TEXT NOT NULL,
    reason     TEXT NOT NULL,
    detail     TEXT
);
CREATE INDEX IF NOT EXISTS reconciler_audit_chat ON reconciler_audit (chat_id);
CREATE INDEX IF NOT EXISTS reconciler_audit_at ON reconciler_audit (at);

CREATE TRIGGER IF NOT EXISTS reconciler_audit_no_update
    BEFORE UPDATE ON reconciler_audit
    BEGIN SELECT RAISE(ABORT, 'reconciler_audit is append-only'); END;
CREATE TRIGGER IF NOT EXISTS reconciler_audit_no_delete
    BEFORE DELETE ON reconciler_audit
    BEGIN SELECT RAISE(ABORT, 'reconciler_audit is append-only'); END;
