-- Tombstones: the random ids of erased subjects' keys (never anything
-- derived from the person), kept with the audit log, so that erasures can
-- be re-applied to a key store restored from an older backup.
CREATE TABLE erasures (
    key_id    BYTEA    PRIMARY KEY,
    erased_on BIGINT  NOT NULL
);
