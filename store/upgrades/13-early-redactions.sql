-- v12 -> v13: Redactions of events the bot has not processed yet, kept until the event arrives
CREATE TABLE IF NOT EXISTS early_redactions (
	event_id    TEXT   PRIMARY KEY, -- the redaction
	room_id     TEXT   NOT NULL,
	redacts     TEXT   NOT NULL,
	sender      TEXT   NOT NULL,
	received_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS early_redactions_redacts_idx ON early_redactions (redacts);
