-- Archiving or deleting a chat or session notifies the controller inside
-- the same transaction (delivered on commit): payload 'chat:<id>' or
-- 'session:<id>' on the channel named by the setting boo.notify_channel,
-- 'boo_reconcile' by default. Install the same function and triggers on the
-- orchestrator's database when it is not this one (README, "Notifications").

CREATE OR REPLACE FUNCTION boo_reconcile_notify() RETURNS trigger AS $$
DECLARE
    channel text := coalesce(nullif(current_setting('boo.notify_channel', true), ''), 'boo_reconcile');
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify(channel, TG_ARGV[0] || ':' || OLD.id);
        RETURN OLD;
    END IF;
    IF NEW.status IS DISTINCT FROM OLD.status AND NEW.status <> 'open' THEN
        PERFORM pg_notify(channel, TG_ARGV[0] || ':' || NEW.id);
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

DROP TRIGGER IF EXISTS boo_reconcile_chats ON chats;
CREATE TRIGGER boo_reconcile_chats
    AFTER UPDATE OF status OR DELETE ON chats
    FOR EACH ROW EXECUTE FUNCTION boo_reconcile_notify('chat');

DROP TRIGGER IF EXISTS boo_reconcile_sessions ON sessions;
CREATE TRIGGER boo_reconcile_sessions
    AFTER UPDATE OF status OR DELETE ON sessions
    FOR EACH ROW EXECUTE FUNCTION boo_reconcile_notify('session');
