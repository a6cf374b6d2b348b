-- The ledger database. Subject salts live in the separate key store, so a
-- copy of this file never carries the keys that open its records.

CREATE TABLE meta (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE tenants (
    id         INTEGER PRIMARY KEY,
    name       TEXT    NOT NULL UNIQUE,
    role       TEXT    NOT NULL CHECK (role IN ('platform', 'auditor', 'admin')),
    -- BLAKE3 of the bearer key; the key itself is never stored.
    key_hash   BLOB    NOT NULL UNIQUE,
    created_at INTEGER NOT NULL
);

-- Each methodology version's exact text: past records keep pointing at the
-- rules that computed them.
CREATE TABLE methodologies (
    version         TEXT    PRIMARY KEY,
    digest          BLOB    NOT NULL,
    body            TEXT    NOT NULL,
    first_loaded_at INTEGER NOT NULL
);

-- Coarse records, sealed with the subject's key. `kind` and `day` are in
-- the clear for retention and withdrawal; everything else is in `sealed`.
CREATE TABLE records (
    record_id   BLOB    PRIMARY KEY,
    tenant_id   INTEGER NOT NULL REFERENCES tenants (id),
    subject     BLOB    NOT NULL,
    kind        TEXT    NOT NULL,
    day         INTEGER NOT NULL,
    key_version INTEGER NOT NULL,
    sealed      BLOB    NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE INDEX records_by_subject ON records (tenant_id, subject, day, record_id);

-- Accounting lines: credits now, redemptions later.
CREATE TABLE ledger_entries (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id           INTEGER NOT NULL REFERENCES tenants (id),
    subject             BLOB    NOT NULL,
    record_id           BLOB,
    kind                TEXT    NOT NULL,
    variant             TEXT    NOT NULL,
    day                 INTEGER NOT NULL,
    month               INTEGER NOT NULL,
    reduction_mg        INTEGER NOT NULL,
    points              INTEGER NOT NULL,
    methodology_version TEXT    NOT NULL,
    capped              INTEGER NOT NULL,
    created_at          INTEGER NOT NULL
);
CREATE INDEX ledger_by_subject_day ON ledger_entries (tenant_id, subject, day);
CREATE INDEX ledger_by_record ON ledger_entries (record_id);

-- Keyed hashes of platforms' event ids with the receipt they produced, so a
-- retry returns the original receipt.
CREATE TABLE idempotency_keys (
    tenant_id           INTEGER NOT NULL,
    event_key           BLOB    NOT NULL,
    -- Keyed fingerprint of the event's content: a reused id with other
    -- content is refused instead of answered with this receipt.
    content_hash        BLOB    NOT NULL,
    subject             BLOB    NOT NULL,
    record_id           BLOB    NOT NULL,
    reduction_mg        INTEGER NOT NULL,
    points              INTEGER NOT NULL,
    methodology_version TEXT    NOT NULL,
    capped              INTEGER NOT NULL,
    audit_seq           INTEGER NOT NULL,
    created_at          INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, event_key)
);

-- The audit log. `entry` is the canonical encoding that is hashed; the
-- retention sweeper empties it when the entry expires, keeping `leaf_hash`
-- and `chain_hash` so the chain still verifies. `at`, `tenant_id` and
-- `subject_ref` copy fields of the entry for lookups.
CREATE TABLE audit_log (
    seq         INTEGER PRIMARY KEY,
    entry       BLOB,
    leaf_hash   BLOB    NOT NULL,
    chain_hash  BLOB    NOT NULL,
    at          INTEGER NOT NULL,
    tenant_id   INTEGER,
    subject_ref BLOB
);
CREATE INDEX audit_by_subject ON audit_log (subject_ref);
CREATE INDEX audit_by_time ON audit_log (at);

-- The chain head. Every write transaction locks this row first, which
-- serializes appends across connections and servers.
CREATE TABLE audit_head (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    seq        INTEGER NOT NULL,
    chain_hash BLOB    NOT NULL
);
INSERT INTO audit_head (id, seq, chain_hash) VALUES (1, 0, zeroblob(32));
