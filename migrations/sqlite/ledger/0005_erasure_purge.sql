-- An erasure answers once its tombstone and audit entry are committed and
-- the key is shredded; the rows, unreadable from then on, are purged in
-- the background. Until that purge is done the tombstone keeps the rows'
-- tenant and ledger reference (already on every row it points at; cleared
-- by the purge), and it keeps the erasure's audit entry so that a retry
-- answers with the same receipt.
ALTER TABLE erasures ADD COLUMN tenant_id INTEGER;
ALTER TABLE erasures ADD COLUMN pending_ref BLOB;
ALTER TABLE erasures ADD COLUMN audit_seq INTEGER;
CREATE INDEX erasures_pending ON erasures (key_id) WHERE pending_ref IS NOT NULL;

-- Erasure counts and purges a person's retry keys by these.
CREATE INDEX idempotency_by_subject ON idempotency_keys (tenant_id, subject);

-- Exports page through a person's ledger lines and audit entries in key
-- order: these make each page a range scan instead of a rescan.
CREATE INDEX ledger_by_subject_day_id ON ledger_entries (tenant_id, subject, day, id);
DROP INDEX ledger_by_subject_day;
CREATE INDEX audit_by_subject_seq ON audit_log (subject_ref, seq);
DROP INDEX audit_by_subject;
