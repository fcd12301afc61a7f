-- 0001 initial: the schema of the first release (SQLite).
-- Idempotent (IF NOT EXISTS): a database made by a release before versioned migrations is
-- adopted as it is and recorded at version 1.

-- resources: the current version of every resource, under its patient's key
CREATE TABLE IF NOT EXISTS resources (patient_key BLOB NOT NULL, res_type TEXT NOT NULL, id TEXT NOT NULL, version BIGINT NOT NULL, last_updated BIGINT NOT NULL, deleted BIGINT NOT NULL, content TEXT NOT NULL, restrict_bits BIGINT NOT NULL DEFAULT 0, PRIMARY KEY (patient_key, res_type, id));
CREATE INDEX IF NOT EXISTS resources_type_id ON resources (res_type, id);
CREATE INDEX IF NOT EXISTS resources_type_updated ON resources (res_type, last_updated);

-- every version, as written
CREATE TABLE IF NOT EXISTS resource_history (patient_key BLOB NOT NULL, res_type TEXT NOT NULL, id TEXT NOT NULL, version BIGINT NOT NULL, last_updated BIGINT NOT NULL, deleted BIGINT NOT NULL, method TEXT NOT NULL, content TEXT NOT NULL, PRIMARY KEY (patient_key, res_type, id, version));
CREATE INDEX IF NOT EXISTS history_updated ON resource_history (last_updated);
CREATE INDEX IF NOT EXISTS history_type_updated ON resource_history (res_type, last_updated);

-- where a resource lives (its patient's key)
CREATE TABLE IF NOT EXISTS locator (res_type TEXT NOT NULL, id TEXT NOT NULL, patient_key BLOB NOT NULL, PRIMARY KEY (res_type, id));

-- the transactional outbox
CREATE TABLE IF NOT EXISTS outbox (patient_key BLOB NOT NULL, id BLOB NOT NULL, kind TEXT NOT NULL, payload TEXT NOT NULL, created_at BIGINT NOT NULL, available_at BIGINT NOT NULL, attempts BIGINT NOT NULL, done_at BIGINT, last_error TEXT, PRIMARY KEY (patient_key, id));
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (available_at) WHERE done_at IS NULL;

-- sign-in records (sessions, tokens, single-use state) and other small records
CREATE TABLE IF NOT EXISTS auth_records (kind TEXT NOT NULL, id TEXT NOT NULL, subject TEXT NOT NULL, data TEXT NOT NULL, expires_at BIGINT NOT NULL, PRIMARY KEY (kind, id));
CREATE INDEX IF NOT EXISTS auth_records_subject ON auth_records (kind, subject);
CREATE INDEX IF NOT EXISTS auth_records_expiry ON auth_records (expires_at);

-- search index: token values
CREATE TABLE IF NOT EXISTS idx_token (patient_key BLOB NOT NULL, res_type TEXT NOT NULL, res_id TEXT NOT NULL, param TEXT NOT NULL, seq BIGINT NOT NULL, grp BIGINT NOT NULL, system TEXT, code TEXT, text TEXT);
CREATE UNIQUE INDEX IF NOT EXISTS idx_token_owner ON idx_token (patient_key, res_type, res_id, param, seq);
CREATE INDEX IF NOT EXISTS idx_token_value ON idx_token (res_type, param, code, patient_key, system);

-- search index: string values
CREATE TABLE IF NOT EXISTS idx_string (patient_key BLOB NOT NULL, res_type TEXT NOT NULL, res_id TEXT NOT NULL, param TEXT NOT NULL, seq BIGINT NOT NULL, grp BIGINT NOT NULL, norm TEXT NOT NULL, exact TEXT NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS idx_string_owner ON idx_string (patient_key, res_type, res_id, param, seq);
CREATE INDEX IF NOT EXISTS idx_string_value ON idx_string (res_type, param, norm, patient_key);

-- search index: date values
CREATE TABLE IF NOT EXISTS idx_date (patient_key BLOB NOT NULL, res_type TEXT NOT NULL, res_id TEXT NOT NULL, param TEXT NOT NULL, seq BIGINT NOT NULL, grp BIGINT NOT NULL, lo BIGINT NOT NULL, hi BIGINT NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS idx_date_owner ON idx_date (patient_key, res_type, res_id, param, seq);
CREATE INDEX IF NOT EXISTS idx_date_value ON idx_date (res_type, param, lo, hi, patient_key);

-- search index: ref values
CREATE TABLE IF NOT EXISTS idx_ref (patient_key BLOB NOT NULL, res_type TEXT NOT NULL, res_id TEXT NOT NULL, param TEXT NOT NULL, seq BIGINT NOT NULL, grp BIGINT NOT NULL, target_type TEXT, target_id TEXT, url TEXT);
CREATE UNIQUE INDEX IF NOT EXISTS idx_ref_owner ON idx_ref (patient_key, res_type, res_id, param, seq);
CREATE INDEX IF NOT EXISTS idx_ref_value ON idx_ref (res_type, param, target_id, patient_key, target_type);

-- search index: number values
CREATE TABLE IF NOT EXISTS idx_number (patient_key BLOB NOT NULL, res_type TEXT NOT NULL, res_id TEXT NOT NULL, param TEXT NOT NULL, seq BIGINT NOT NULL, grp BIGINT NOT NULL, value REAL NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS idx_number_owner ON idx_number (patient_key, res_type, res_id, param, seq);
CREATE INDEX IF NOT EXISTS idx_number_value ON idx_number (res_type, param, value, patient_key);

-- search index: quantity values
CREATE TABLE IF NOT EXISTS idx_quantity (patient_key BLOB NOT NULL, res_type TEXT NOT NULL, res_id TEXT NOT NULL, param TEXT NOT NULL, seq BIGINT NOT NULL, grp BIGINT NOT NULL, value REAL NOT NULL, system TEXT, code TEXT, unit TEXT);
CREATE UNIQUE INDEX IF NOT EXISTS idx_quantity_owner ON idx_quantity (patient_key, res_type, res_id, param, seq);
CREATE INDEX IF NOT EXISTS idx_quantity_value ON idx_quantity (res_type, param, code, value, patient_key);

-- search index: uri values
CREATE TABLE IF NOT EXISTS idx_uri (patient_key BLOB NOT NULL, res_type TEXT NOT NULL, res_id TEXT NOT NULL, param TEXT NOT NULL, seq BIGINT NOT NULL, grp BIGINT NOT NULL, value TEXT NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS idx_uri_owner ON idx_uri (patient_key, res_type, res_id, param, seq);
CREATE INDEX IF NOT EXISTS idx_uri_value ON idx_uri (res_type, param, value, patient_key);
