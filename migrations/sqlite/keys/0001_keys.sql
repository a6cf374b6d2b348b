-- The key store: one random salt per subject. Deleting a row is
-- crypto-shredding: every copy of that subject's ciphertext becomes
-- unreadable.
CREATE TABLE subject_keys (
    -- The pseudonym: keyed hash of tenant and external id, for lookup only.
    subject    BLOB    PRIMARY KEY,
    -- A random name for the key, for tombstones; never derived from the subject.
    key_id     BLOB    NOT NULL UNIQUE,
    salt       BLOB    NOT NULL,
    -- The subject's reference in the ledger tables (derived from the salt),
    -- so rows whose key is gone can be found and purged.
    ledger_ref BLOB    NOT NULL UNIQUE,
    created_at INTEGER NOT NULL
);

-- Names the ledger this key store belongs to (the same id is in the
-- ledger's meta table): a mismatched pair is refused before anything
-- could mistake a wrong or empty key store for erased keys.
CREATE TABLE meta (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
