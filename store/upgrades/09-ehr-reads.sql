-- v8 -> v9: EHR reads: per-case polling cursors and the EHR results already posted into case rooms
-- Where polling of one case and one resource type has got to: the newest meta.lastUpdated read (ms since epoch).
CREATE TABLE ehr_read_cursors (
	case_id       BIGINT NOT NULL REFERENCES cases (id),
	resource_type TEXT   NOT NULL,
	last_updated  BIGINT NOT NULL,
	updated_at    BIGINT NOT NULL,
	PRIMARY KEY (case_id, resource_type)
);

-- Every EHR result (Observation/<id>, DiagnosticReport/<id>) posted into a case room, written in the transaction
-- that queues the notice: polling and the subscription endpoint both go through it, so each result is posted once.
CREATE TABLE ehr_seen (
	case_id      BIGINT NOT NULL REFERENCES cases (id),
	resource_key TEXT   NOT NULL,
	version_id   TEXT   NOT NULL,
	last_updated BIGINT NOT NULL,
	source       TEXT   NOT NULL,
	outgoing_seq BIGINT,
	seen_at      BIGINT NOT NULL,
	PRIMARY KEY (case_id, resource_key)
);

-- Cases opened before this version start reading at the upgrade: their earlier results are not news.
INSERT INTO ehr_read_cursors (case_id, resource_type, last_updated, updated_at)
-- only: postgres
SELECT c.id, t.resource_type, (EXTRACT(EPOCH FROM now()) * 1000)::BIGINT, (EXTRACT(EPOCH FROM now()) * 1000)::BIGINT
-- only: sqlite (line commented)
--SELECT c.id, t.resource_type, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER), CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)
FROM cases c CROSS JOIN (SELECT 'Observation' AS resource_type UNION ALL SELECT 'DiagnosticReport') t
WHERE c.patient_ref IS NOT NULL AND c.closed_at IS NULL;
