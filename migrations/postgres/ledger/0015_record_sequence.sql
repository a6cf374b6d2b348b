-- Records keyed by an append-ordered number instead of their random id.
-- A random key puts every insert on a page of its own once the index
-- outgrows the buffer cache, twice per event (the records' key and the
-- ledger lines' index of it): the ledger slowed down as it filled. A
-- record's `seq` is now the sequence number of the audit entry that
-- records it, so new records and their ledger lines' references to them
-- both append at the end of their indexes. Records from before are
-- numbered in the order they were written, from 1: below any later
-- entry's sequence number (each record was written with an entry of its
-- own, after a consent's), so no number is ever used twice. The record id
-- seen outside stays 128 random bits, bound into the sealed record's
-- associated data; nothing looks a record up by it any more, so it needs
-- no index of its own.
ALTER TABLE records ADD COLUMN seq BIGINT;
UPDATE records SET seq = numbered.n
FROM (SELECT record_id, row_number() OVER (ORDER BY created_at, record_id) AS n FROM records) AS numbered
WHERE records.record_id = numbered.record_id;

ALTER TABLE ledger_entries ADD COLUMN record_seq BIGINT;
UPDATE ledger_entries SET record_seq = records.seq
FROM records WHERE records.record_id = ledger_entries.record_id;
DROP INDEX ledger_by_record;
CREATE INDEX ledger_by_record_seq ON ledger_entries (record_seq);

ALTER TABLE records DROP CONSTRAINT records_pkey;
ALTER TABLE records ALTER COLUMN seq SET NOT NULL;
ALTER TABLE records ADD PRIMARY KEY (seq);
