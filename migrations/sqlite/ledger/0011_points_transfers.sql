-- Points moved between a person's linked accounts on two platforms
-- (pooling: spending on one platform what was earned on another): one row on the
-- sending side, found by a keyed hash of the platform's reference; the
-- points lines on both sides carry the transfer id.
CREATE TABLE points_transfers (
    transfer_id   BLOB    PRIMARY KEY,
    tenant_id     INTEGER NOT NULL,
    subject       BLOB    NOT NULL,
    reference_key BLOB    NOT NULL,
    link_id       BLOB    NOT NULL,
    points        INTEGER NOT NULL CHECK (points > 0),
    day           INTEGER NOT NULL,
    audit_seq     INTEGER NOT NULL,
    created_at    INTEGER NOT NULL,
    UNIQUE (tenant_id, reference_key)
);
CREATE INDEX points_transfers_by_subject ON points_transfers (tenant_id, subject);
