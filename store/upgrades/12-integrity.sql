-- v11 -> v12: Check-in claimed and receive times, TRUNCATE refused on the append-only tables, pruning of message text, indexes for metrics
-- The time a check-in's event claims (origin_server_ts, set by the sender's homeserver) and the time caseroom
-- received it; checkins.effective_at is the claimed time unless that lies in the future or too far back. Check-ins
-- recorded before this version have no row. Append-only like the check-ins.
CREATE TABLE IF NOT EXISTS checkin_times (
	checkin_id  BIGINT NOT NULL PRIMARY KEY REFERENCES checkins (id),
	claimed_at  BIGINT NOT NULL,
	received_at BIGINT NOT NULL
);

-- only: postgres until "end only"
CREATE OR REPLACE TRIGGER checkin_times_append_only BEFORE UPDATE OR DELETE ON checkin_times
	FOR EACH ROW EXECUTE FUNCTION caseroom_append_only();
-- TRUNCATE fires no row triggers: a statement trigger refuses it.
CREATE OR REPLACE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit
	FOR EACH STATEMENT EXECUTE FUNCTION caseroom_append_only();
CREATE OR REPLACE TRIGGER checkins_no_truncate BEFORE TRUNCATE ON checkins
	FOR EACH STATEMENT EXECUTE FUNCTION caseroom_append_only();
CREATE OR REPLACE TRIGGER checkin_versions_no_truncate BEFORE TRUNCATE ON checkin_versions
	FOR EACH STATEMENT EXECUTE FUNCTION caseroom_append_only();
CREATE OR REPLACE TRIGGER checkin_times_no_truncate BEFORE TRUNCATE ON checkin_times
	FOR EACH STATEMENT EXECUTE FUNCTION caseroom_append_only();
-- end only postgres
-- only: sqlite until "end only"
CREATE TRIGGER IF NOT EXISTS checkin_times_no_update BEFORE UPDATE ON checkin_times
BEGIN SELECT RAISE(ABORT, 'checkin_times is append-only'); END;
CREATE TRIGGER IF NOT EXISTS checkin_times_no_delete BEFORE DELETE ON checkin_times
BEGIN SELECT RAISE(ABORT, 'checkin_times is append-only'); END;
-- end only sqlite

-- Message text is removed after the retention window (raw = '' and content = '' once pruned); these indexes find
-- what is still to prune without reading the whole table.
CREATE INDEX IF NOT EXISTS inbox_prune_idx ON inbox (processed_at) WHERE raw <> '';
CREATE INDEX IF NOT EXISTS outgoing_prune_idx ON outgoing (COALESCE(sent_at, failed_at)) WHERE content <> '';

-- Metrics count open and dead EHR work from these, not from the whole outbox.
CREATE INDEX IF NOT EXISTS ehr_outbox_pending_created_idx ON ehr_outbox (created_at) WHERE delivered_at IS NULL AND dead_at IS NULL;
CREATE INDEX IF NOT EXISTS ehr_outbox_dead_idx ON ehr_outbox (dead_at) WHERE dead_at IS NOT NULL;
