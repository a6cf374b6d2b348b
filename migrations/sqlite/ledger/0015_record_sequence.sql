-- Records keyed by an append-ordered number instead of their random id.
-- A random key puts every insert on a page of its own once the index
-- outgrows the page cache, twice per event (the records' key and the
-- ledger lines' index of it): the ledger slowed down as it filled. A
-- record's `seq` is now the sequence number of the audit entry that
-- records it, so new records and their ledger lines' references to them
-- both append at the end of their indexes. Records from before are
-- numbered by their row number, negated: apart from every audit sequence
-- number (from 1 up) by construction, and recognisable. The record id seen
-- outside stays 128 random bits, bound into the sealed record's associated
-- data; nothing looks a record up by it alone any more, so its index is the
-- person's (unique there, which the listing's cursor relies on).
-- Upgrading rewrites both tables in one transaction; a record inserted
-- without `seq` (by hand) would be given the next number, which the next
-- recorded event then refuses to reuse: insert records with their `seq`.
CREATE TABLE records_by_seq (
    seq         INTEGER PRIMARY KEY,
    record_id   BLOB    NOT NULL,
    tenant_id   INTEGER NOT NULL REFERENCES tenants (id),
    subject     BLOB    NOT NULL,
    kind        TEXT    NOT NULL,
    day         INTEGER NOT NULL,
    key_version INTEGER NOT NULL,
    sealed      BLOB    NOT NULL,
    created_at  INTEGER NOT NULL
);
INSERT INTO records_by_seq (seq, record_id, tenant_id, subject, kind, day, key_version, sealed, created_at)
SELECT -rowid, record_id, tenant_id, subject, kind, day, key_version, sealed, created_at FROM records;

ALTER TABLE ledger_entries ADD COLUMN record_seq INTEGER;
UPDATE ledger_entries
SET record_seq = (SELECT -records.rowid FROM records WHERE records.record_id = ledger_entries.record_id)
WHERE record_id IS NOT NULL;
DROP INDEX ledger_by_record;
CREATE INDEX ledger_by_record_seq ON ledger_entries (record_seq);

-- Dropping the table drops its indexes and triggers; they are made again
-- on the new one as they were.
DROP TABLE records;
ALTER TABLE records_by_seq RENAME TO records;
CREATE UNIQUE INDEX records_by_subject ON records (tenant_id, subject, day, record_id);
CREATE INDEX records_by_day ON records (day);
CREATE TRIGGER records_sealed_under_a_live_key BEFORE INSERT ON records
WHEN NOT EXISTS (SELECT 1 FROM key_versions WHERE version = NEW.key_version AND retired_on IS NULL)
BEGIN
    SELECT RAISE(ABORT, 'carbon-ledger: no record may be sealed under a retired or unknown root key version');
END;
CREATE TRIGGER records_resealed_under_a_live_key BEFORE UPDATE OF key_version ON records
WHEN NOT EXISTS (SELECT 1 FROM key_versions WHERE version = NEW.key_version AND retired_on IS NULL)
BEGIN
    SELECT RAISE(ABORT, 'carbon-ledger: no record may be sealed under a retired or unknown root key version');
END;
