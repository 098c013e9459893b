-- The orchestrator's tables (created only where they do not exist yet: in
-- production the orchestrator owns them) and the controller's audit table.
-- No foreign keys: a deleted chat or session row must leave the rows that
-- name it behind as evidence of what still has to be torn down.

CREATE TABLE IF NOT EXISTS sessions (
    id         TEXT PRIMARY KEY,
    status     TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'archived', 'deleted')),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS chats (
    id         TEXT PRIMARY KEY,
    session_id TEXT NOT NULL,
    status     TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'archived', 'deleted')),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
-- Live-chat counts per session.
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
    pid_start_time   BIGINT,
    status           TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'closed')),
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    closed_at        TIMESTAMPTZ
);
-- A pass reads the open rows of its own host only.
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
    at_risk_reasons JSONB,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    removed_at      TIMESTAMPTZ
);
-- A pass reads the worktrees of its own host that are not removed yet.
CREATE INDEX IF NOT EXISTS worktrees_host_present ON worktrees (host) WHERE state <> 'removed';
CREATE INDEX IF NOT EXISTS worktrees_session ON worktrees (session_id);
CREATE INDEX IF NOT EXISTS worktrees_path ON worktrees (path);

-- Append-only: every action the controller took, with its outcome and why.
CREATE TABLE IF NOT EXISTS reconciler_audit (
    id         BIGSERIAL PRIMARY KEY,
    at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    host       TEXT NOT NULL,
    chat_id    TEXT,
    session_id TEXT,
    action     TEXT NOT NULL,
    target     TEXT NOT NULL,
    outcome    TEXT NOT NULL,
    reason     TEXT NOT NULL,
    detail     JSONB
);
CREATE INDEX IF NOT EXISTS reconciler_audit_chat ON reconciler_audit (chat_id);
CREATE INDEX IF NOT EXISTS reconciler_audit_at ON reconciler_audit (at);

CREATE OR REPLACE FUNCTION reconciler_audit_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'reconciler_audit is append-only';
END;
$$ LANGUAGE plpgsql;

DROP TRIGGER IF EXISTS reconciler_audit_no_change ON reconciler_audit;
CREATE TRIGGER reconciler_audit_no_change
    BEFORE UPDATE OR DELETE ON reconciler_audit
    FOR EACH ROW EXECUTE FUNCTION reconciler_audit_append_only();
