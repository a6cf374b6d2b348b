-- The key store: one random salt per subject. Deleting a row is
-- crypto-shredding: every copy of that subject's ciphertext becomes
-- unreadable.
CREATE TABLE subject_keys (
    subject    BLOB    PRIMARY KEY,
    -- A random name for the key, for tombstones; never derived from the subject.
    key_id     BLOB    NOT NULL UNIQUE,
    salt       BLOB    NOT NULL,
    created_at INTEGER NOT NULL
);
