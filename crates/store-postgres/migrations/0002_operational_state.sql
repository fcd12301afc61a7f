-- Operational state leaves the sign-in records table: each kind gets its own table and typed
-- store operations (issue 22). Rows the previous schema kept in auth_records move here.

-- progress of jobs that resume where they stopped (the synthetic region, the demo's steps)
CREATE TABLE job_marks (job TEXT COLLATE "C" NOT NULL PRIMARY KEY, data TEXT COLLATE "C" NOT NULL, updated_at BIGINT NOT NULL);

-- when a person last opened a record's document list (key: a hash of person and record)
CREATE TABLE seen_marks (mark_key TEXT COLLATE "C" NOT NULL PRIMARY KEY, seen_at BIGINT NOT NULL, expires_at BIGINT NOT NULL);
CREATE INDEX seen_marks_expiry ON seen_marks (expires_at);

-- the outcome of an ingestion submission, for the producer that sent it
CREATE TABLE submission_status (workflow TEXT COLLATE "C" NOT NULL PRIMARY KEY, producer TEXT COLLATE "C" NOT NULL, body TEXT COLLATE "C" NOT NULL, expires_at BIGINT NOT NULL);
CREATE INDEX submission_status_expiry ON submission_status (expires_at);

-- which message may notify a patient of a professional's accesses in an hour
CREATE TABLE notification_claims (claim_key TEXT COLLATE "C" NOT NULL PRIMARY KEY, message_id TEXT COLLATE "C" NOT NULL, expires_at BIGINT NOT NULL);
CREATE INDEX notification_claims_expiry ON notification_claims (expires_at);

-- a write that readiness makes and removes after the storage was full
CREATE TABLE readiness_probe (id BIGINT NOT NULL PRIMARY KEY, data TEXT COLLATE "C" NOT NULL);

INSERT INTO job_marks (job, data, updated_at) SELECT 'seed/' || id, data, 0 FROM auth_records WHERE kind = 'seed-progress';
INSERT INTO job_marks (job, data, updated_at) SELECT 'demo/' || id, data, 0 FROM auth_records WHERE kind = 'demo-seeded';
-- a mark that is not a number (never written so, but a failed cast would stop every start) is dropped
INSERT INTO seen_marks (mark_key, seen_at, expires_at) SELECT id, CAST(data AS BIGINT), expires_at FROM auth_records WHERE kind = 'portal-seen' AND data ~ '^[0-9]{1,18}$';
INSERT INTO submission_status (workflow, producer, body, expires_at) SELECT id, subject, data, expires_at FROM auth_records WHERE kind = 'ingest-status';
INSERT INTO notification_claims (claim_key, message_id, expires_at) SELECT id, data, expires_at FROM auth_records WHERE kind = 'notified';
DELETE FROM auth_records WHERE kind IN ('seed-progress', 'demo-seeded', 'portal-seen', 'ingest-status', 'notified', 'readiness-probe');
