-- v10 -> v11: The audit log and the check-in records are append-only, enforced by the database
-- only: postgres until "end only"
CREATE OR REPLACE FUNCTION caseroom_append_only() RETURNS TRIGGER LANGUAGE plpgsql AS $$
BEGIN
	RAISE EXCEPTION '% is append-only', TG_TABLE_NAME;
END $$;
CREATE OR REPLACE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON audit
	FOR EACH ROW EXECUTE FUNCTION caseroom_append_only();
CREATE OR REPLACE TRIGGER checkins_append_only BEFORE UPDATE OR DELETE ON checkins
	FOR EACH ROW EXECUTE FUNCTION caseroom_append_only();
CREATE OR REPLACE TRIGGER checkin_versions_append_only BEFORE UPDATE OR DELETE ON checkin_versions
	FOR EACH ROW EXECUTE FUNCTION caseroom_append_only();
-- end only postgres
-- only: sqlite until "end only"
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'audit is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'audit is append-only'); END;
CREATE TRIGGER IF NOT EXISTS checkins_no_update BEFORE UPDATE ON checkins
BEGIN SELECT RAISE(ABORT, 'checkins is append-only'); END;
CREATE TRIGGER IF NOT EXISTS checkins_no_delete BEFORE DELETE ON checkins
BEGIN SELECT RAISE(ABORT, 'checkins is append-only'); END;
CREATE TRIGGER IF NOT EXISTS checkin_versions_no_update BEFORE UPDATE ON checkin_versions
BEGIN SELECT RAISE(ABORT, 'checkin_versions is append-only'); END;
CREATE TRIGGER IF NOT EXISTS checkin_versions_no_delete BEFORE DELETE ON checkin_versions
BEGIN SELECT RAISE(ABORT, 'checkin_versions is append-only'); END;
-- end only sqlite
