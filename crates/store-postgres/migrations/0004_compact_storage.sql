-- 0004 compact storage (issue 20, decision 0010): a region on one disk.
--
-- 1. Resource content is stored as a zstd frame compressed with a dictionary trained on FHIR
--    resources (`crates/store/src/content.rs`): the column becomes BYTEA, and the program
--    compresses the existing rows right after this file runs, in the same transaction.
-- 2. History no longer repeats the current version: the history row of the current version
--    holds no content (reads take it from `resources`); it gets its content when a newer
--    version replaces it.

UPDATE resource_history h SET content = ''
WHERE h.deleted = 0 AND EXISTS (
  SELECT 1 FROM resources c
  WHERE c.patient_key = h.patient_key AND c.res_type = h.res_type AND c.id = h.id AND c.version = h.version);

ALTER TABLE resources ALTER COLUMN content TYPE BYTEA USING convert_to(content, 'UTF8');
ALTER TABLE resource_history ALTER COLUMN content TYPE BYTEA USING convert_to(content, 'UTF8');
-- the frames do not compress further: keep PostgreSQL from trying (TOAST still moves large ones out of line)
ALTER TABLE resources ALTER COLUMN content SET STORAGE EXTERNAL;
ALTER TABLE resource_history ALTER COLUMN content SET STORAGE EXTERNAL;
