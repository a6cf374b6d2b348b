-- Records keyed by an append-ordered number instead of their random id.
-- A random key puts every insert on a page of its own once the index
-- outgrows the buffer cache, twice per event (the records' key and the
-- ledger lines' index of it): the ledger slowed down as it filled. A
-- record's `seq` is now the sequence number of the audit entry that
-- records it, so new records and their ledger lines' references to them
-- both append at the end of their indexes. Records from before are
-- numbered -1, -2, … (by day written, then id): apart from every audit
-- sequence number (from 1 up) by construction, and recognisable. The
-- record id seen outside stays 128 random bits, bound into the sealed
-- record's associated data; nothing looks a record up by it alone any
-- more, so its index is the person's (unique there, which the listing's
-- cursor relies on). Upgrading rewrites both tables under their locks:
-- stop the servers of the older version first, as their inserts lack
-- `seq` and are refused.
ALTER TABLE records ADD COLUMN seq BIGINT;
UPDATE records SET seq = -numbered.n
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
DROP INDEX records_by_subject;
CREATE UNIQUE INDEX records_by_subject ON records (tenant_id, subject, day, record_id);
