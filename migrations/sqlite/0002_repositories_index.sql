-- The repositories of a host are read every pass, from every worktree row
-- the host ever had (removed ones included): an index on (host, repo_path)
-- lets that read skip from one repository to the next instead of scanning
-- the history.
CREATE INDEX IF NOT EXISTS worktrees_host_repo ON worktrees (host, repo_path);
