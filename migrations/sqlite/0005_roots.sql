-- What each host's worktree root is (its path, the mount holding it) and
-- whether the last pass found anything in it: a pass that sees another
-- mount, or an emptied root while rows say worktrees are there, holds.
CREATE TABLE IF NOT EXISTS reconciler_roots (
    host          TEXT PRIMARY KEY,
    root_path     TEXT NOT NULL,
    mount         TEXT NOT NULL,
    held_entries  BOOLEAN NOT NULL,
    recorded_unix BIGINT NOT NULL
);
