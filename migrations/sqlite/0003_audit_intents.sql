-- Write-ahead audit: every destructive action first appends an `intent`
-- record, then its outcome, which names the intent it concludes. An intent
-- no record names is an action a crash (or a lost database) interrupted;
-- the next pass finds it by the partial index and records what it found.
ALTER TABLE reconciler_audit ADD COLUMN intent_id INTEGER;
CREATE INDEX IF NOT EXISTS reconciler_audit_intent ON reconciler_audit (intent_id)
    WHERE intent_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS reconciler_audit_open_intent ON reconciler_audit (host)
    WHERE outcome = 'intent';
