-- 0004 compact storage (issue 20, decision 0010): a region on one disk.
--
-- 1. Resource content is stored as a zstd frame compressed with a dictionary trained on FHIR
--    resources (`crates/store/src/content.rs`); the program compresses the existing rows right
--    after this file runs, in the same transaction. SQLite keeps the declared column type: a
--    TEXT column holds the BLOBs as they are.
-- 2. History no longer repeats the current version: the history row of the current version
--    holds no content (reads take it from `resources`); it gets its content when a newer
--    version replaces it.
-- 3. The search-index tables and the locator are keyed by their primary key (WITHOUT ROWID):
--    each row is stored once, in that key's B-tree, instead of in a table plus an index on the
--    key; an index table's value index carries the resource id, so a search reads it without
--    visiting the table. History stays a rowid table: its two indexes by time would carry its
--    whole key instead of a rowid, which costs more than the key index it would save.

UPDATE resource_history SET content = X''
WHERE deleted = 0 AND EXISTS (
  SELECT 1 FROM resources c
  WHERE c.patient_key = resource_history.patient_key AND c.res_type = resource_history.res_type
    AND c.id = resource_history.id AND c.version = resource_history.version);

CREATE TABLE locator_compact (res_type TEXT NOT NULL, id TEXT NOT NULL, patient_key BLOB NOT NULL, PRIMARY KEY (res_type, id)) WITHOUT ROWID;
INSERT INTO locator_compact SELECT res_type, id, patient_key FROM locator;
DROP TABLE locator;
ALTER TABLE locator_compact RENAME TO locator;

CREATE TABLE idx_token_compact (patient_key BLOB NOT NULL, res_type TEXT NOT NULL, res_id TEXT NOT NULL, param TEXT NOT NULL, seq BIGINT NOT NULL, grp BIGINT NOT NULL, system TEXT, code TEXT, text TEXT, PRIMARY KEY (patient_key, res_type, res_id, param, seq)) WITHOUT ROWID;
INSERT INTO idx_token_compact SELECT patient_key, res_type, res_id, param, seq, grp, system, code, text FROM idx_token;
DROP TABLE idx_token;
ALTER TABLE idx_token_compact RENAME TO idx_token;
CREATE INDEX idx_token_value ON idx_token (res_type, param, code, patient_key, system);

CREATE TABLE idx_string_compact (patient_key BLOB NOT NULL, res_type TEXT NOT NULL, res_id TEXT NOT NULL, param TEXT NOT NULL, seq BIGINT NOT NULL, grp BIGINT NOT NULL, norm TEXT NOT NULL, exact TEXT NOT NULL, PRIMARY KEY (patient_key, res_type, res_id, param, seq)) WITHOUT ROWID;
INSERT INTO idx_string_compact SELECT patient_key, res_type, res_id, param, seq, grp, norm, exact FROM idx_string;
DROP TABLE idx_string;
ALTER TABLE idx_string_compact RENAME TO idx_string;
CREATE INDEX idx_string_value ON idx_string (res_type, param, norm, patient_key);

CREATE TABLE idx_date_compact (patient_key BLOB NOT NULL, res_type TEXT NOT NULL, res_id TEXT NOT NULL, param TEXT NOT NULL, seq BIGINT NOT NULL, grp BIGINT NOT NULL, lo BIGINT NOT NULL, hi BIGINT NOT NULL, PRIMARY KEY (patient_key, res_type, res_id, param, seq)) WITHOUT ROWID;
INSERT INTO idx_date_compact SELECT patient_key, res_type, res_id, param, seq, grp, lo, hi FROM idx_date;
DROP TABLE idx_date;
ALTER TABLE idx_date_compact RENAME TO idx_date;
CREATE INDEX idx_date_value ON idx_date (res_type, param, lo, hi, patient_key);

CREATE TABLE idx_ref_compact (patient_key BLOB NOT NULL, res_type TEXT NOT NULL, res_id TEXT NOT NULL, param TEXT NOT NULL, seq BIGINT NOT NULL, grp BIGINT NOT NULL, target_type TEXT, target_id TEXT, url TEXT, PRIMARY KEY (patient_key, res_type, res_id, param, seq)) WITHOUT ROWID;
INSERT INTO idx_ref_compact SELECT patient_key, res_type, res_id, param, seq, grp, target_type, target_id, url FROM idx_ref;
DROP TABLE idx_ref;
ALTER TABLE idx_ref_compact RENAME TO idx_ref;
CREATE INDEX idx_ref_value ON idx_ref (res_type, param, target_id, patient_key, target_type);

CREATE TABLE idx_number_compact (patient_key BLOB NOT NULL, res_type TEXT NOT NULL, res_id TEXT NOT NULL, param TEXT NOT NULL, seq BIGINT NOT NULL, grp BIGINT NOT NULL, value REAL NOT NULL, PRIMARY KEY (patient_key, res_type, res_id, param, seq)) WITHOUT ROWID;
INSERT INTO idx_number_compact SELECT patient_key, res_type, res_id, param, seq, grp, value FROM idx_number;
DROP TABLE idx_number;
ALTER TABLE idx_number_compact RENAME TO idx_number;
CREATE INDEX idx_number_value ON idx_number (res_type, param, value, patient_key);

CREATE TABLE idx_quantity_compact (patient_key BLOB NOT NULL, res_type TEXT NOT NULL, res_id TEXT NOT NULL, param TEXT NOT NULL, seq BIGINT NOT NULL, grp BIGINT NOT NULL, value REAL NOT NULL, system TEXT, code TEXT, unit TEXT, PRIMARY KEY (patient_key, res_type, res_id, param, seq)) WITHOUT ROWID;
INSERT INTO idx_quantity_compact SELECT patient_key, res_type, res_id, param, seq, grp, value, system, code, unit FROM idx_quantity;
DROP TABLE idx_quantity;
ALTER TABLE idx_quantity_compact RENAME TO idx_quantity;
CREATE INDEX idx_quantity_value ON idx_quantity (res_type, param, code, value, patient_key);

CREATE TABLE idx_uri_compact (patient_key BLOB NOT NULL, res_type TEXT NOT NULL, res_id TEXT NOT NULL, param TEXT NOT NULL, seq BIGINT NOT NULL, grp BIGINT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (patient_key, res_type, res_id, param, seq)) WITHOUT ROWID;
INSERT INTO idx_uri_compact SELECT patient_key, res_type, res_id, param, seq, grp, value FROM idx_uri;
DROP TABLE idx_uri;
ALTER TABLE idx_uri_compact RENAME TO idx_uri;
CREATE INDEX idx_uri_value ON idx_uri (res_type, param, value, patient_key);
