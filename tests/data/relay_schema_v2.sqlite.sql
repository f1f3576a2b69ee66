-- The relay's SQLite layout before versioned schemas (layout 2 in bridge/relay/storage/schema.py),
-- as relay.db was written by sealgate main at commit 8c4e673 (sqlite_master, in creation order).
CREATE TABLE envelopes (
	envelope_id BLOB NOT NULL, 
	mailbox_id BLOB NOT NULL, 
	size BIGINT NOT NULL, 
	sha256 BLOB NOT NULL, 
	received BIGINT NOT NULL, 
	tiebreak BIGINT NOT NULL, 
	depositor BLOB NOT NULL, 
	PRIMARY KEY (envelope_id)
)
 WITHOUT ROWID;
CREATE INDEX envelopes_by_mailbox ON envelopes (mailbox_id, received, tiebreak);
CREATE INDEX envelopes_by_age ON envelopes (received, tiebreak);
CREATE TABLE tombstones (
	envelope_id BLOB NOT NULL, 
	depositor BLOB NOT NULL, 
	reason VARCHAR(16) NOT NULL, 
	hour BIGINT NOT NULL, 
	PRIMARY KEY (envelope_id)
)
 WITHOUT ROWID;
CREATE INDEX tombstones_by_age ON tombstones (hour);
CREATE TABLE directory_records (
	lookup_id BLOB NOT NULL, 
	version BIGINT NOT NULL, 
	sealed BLOB NOT NULL, 
	signature BLOB NOT NULL, 
	PRIMARY KEY (lookup_id)
);
CREATE TABLE gateway_revocations (
	gateway_key BLOB NOT NULL, 
	signature BLOB NOT NULL, 
	PRIMARY KEY (gateway_key)
);
