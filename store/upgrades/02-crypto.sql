-- v1 -> v2 (compatible with v1+): The bot's own Matrix device for end-to-end encryption
CREATE TABLE bot_device (
	-- the bot user the device belongs to; a new bot username gets a new device
	user_id      TEXT   NOT NULL PRIMARY KEY,
	device_id    TEXT   NOT NULL,
	-- the device's access token, sealed with encryption.pickle_key
	access_token TEXT   NOT NULL,
	-- recovery key of the cross-signing keys caseroom made, sealed with encryption.pickle_key; NULL until made
	recovery_key TEXT,
	created_at   BIGINT NOT NULL
);
