-- The key store: one random salt per subject. Deleting a row is
-- crypto-shredding: every copy of that subject's ciphertext becomes
-- unreadable.
CREATE TABLE subject_keys (
    subject    BYTEA    PRIMARY KEY,
    -- A random name for the key, for tombstones; never derived from the subject.
    key_id     BYTEA    NOT NULL UNIQUE,
    salt       BYTEA    NOT NULL,
    created_at BIGINT  NOT NULL
);
