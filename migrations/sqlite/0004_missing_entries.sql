-- When each worktree admin entry was first seen without its directory: a
-- stale entry is pruned only once its directory has been missing for
-- `worktrees.stale_entry_grace`, never on the first pass that misses it.
-- The controller forgets a row once the entry is pruned or its directory
-- is back.
CREATE TABLE IF NOT EXISTS reconciler_missing_entries (
    host               TEXT NOT NULL,
    repo_path          TEXT NOT NULL,
    name               TEXT NOT NULL,
    first_missing_unix BIGINT NOT NULL,
    PRIMARY KEY (host, repo_path, name)
);
