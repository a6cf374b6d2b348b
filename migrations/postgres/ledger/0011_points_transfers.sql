-- Points moved between a person's linked accounts on two platforms
-- (pooling: spending on one platform what was earned on another): one row on the
-- sending side, found by a keyed hash of the platform's reference; the
-- points lines on both sides carry the transfer id.
CREATE TABLE points_transfers (
    transfer_id   BYTEA    PRIMARY KEY,
    tenant_id     BIGINT NOT NULL,
    subject       BYTEA    NOT NULL,
    reference_key BYTEA    NOT NULL,
    link_id       BYTEA    NOT NULL,
    points        BIGINT NOT NULL CHECK (points > 0),
    day           BIGINT NOT NULL,
    audit_seq     BIGINT NOT NULL,
    created_at    BIGINT NOT NULL,
    UNIQUE (tenant_id, reference_key)
);
CREATE INDEX points_transfers_by_subject ON points_transfers (tenant_id, subject);
