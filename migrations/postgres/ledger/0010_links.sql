-- Accounts linked across platforms (issue 10). A link is stored between
-- the two accounts' ledger references (derived from each person's salt,
-- never from a platform's user id), one row per side so each platform
-- finds its own side by its own reference. Erasure or withdrawal of the
-- interconnection consent on either side deletes both rows at once.
CREATE TABLE subject_links (
    link_id      BYTEA   NOT NULL,
    tenant_id    BIGINT  NOT NULL,
    subject      BYTEA   NOT NULL,
    -- This side's audit reference, for the unlink entries an erasure or a
    -- withdrawal on the other side appends for this side.
    audit_ref    BYTEA   NOT NULL,
    peer_tenant  BIGINT  NOT NULL,
    peer_subject BYTEA   NOT NULL,
    linked_at    BIGINT  NOT NULL,
    PRIMARY KEY (link_id, tenant_id),
    -- At most one link between an account and each other platform.
    UNIQUE (tenant_id, subject, peer_tenant)
);
CREATE INDEX subject_links_by_peer ON subject_links (peer_tenant, peer_subject);

-- Outstanding link codes: only a keyed hash of the code, bound to the
-- issuing platform's account; one per account, deleted when redeemed,
-- replaced or expired.
CREATE TABLE link_codes (
    code_hash  BYTEA   PRIMARY KEY,
    tenant_id  BIGINT  NOT NULL,
    subject    BYTEA   NOT NULL,
    expires_at BIGINT  NOT NULL,
    UNIQUE (tenant_id, subject)
);
CREATE INDEX link_codes_by_expiry ON link_codes (expires_at);

-- The part of a record's credit that a linked account had claimed already
-- (DB11/T 3043-2024: a reduction is claimed once). The ledger line holds
-- what this account earned; these hold what it did not, so the platform's
-- own figure is reduction_mg + counted_elsewhere_mg.
ALTER TABLE ledger_entries ADD COLUMN counted_elsewhere_mg BIGINT  NOT NULL DEFAULT 0;
ALTER TABLE ledger_entries ADD COLUMN counted_elsewhere_points BIGINT  NOT NULL DEFAULT 0;
ALTER TABLE idempotency_keys ADD COLUMN counted_elsewhere_mg BIGINT  NOT NULL DEFAULT 0;
ALTER TABLE idempotency_keys ADD COLUMN counted_elsewhere_points BIGINT  NOT NULL DEFAULT 0;
