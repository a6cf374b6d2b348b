-- The points ledger: append-only, one line per earning, redemption,
-- refund or expiry, each with the subject's balance after it. Lines are
-- never edited: a refund is a reversing line, an expiry a debit line.
CREATE TABLE points_entries (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id     BIGINT  NOT NULL,
    subject       BYTEA   NOT NULL,
    entry         TEXT    NOT NULL CHECK (entry IN ('earn', 'redeem', 'refund', 'expire', 'transfer_in', 'transfer_out')),
    -- Signed: credits positive, debits negative.
    points        BIGINT  NOT NULL,
    balance       BIGINT  NOT NULL CHECK (balance >= 0),
    day           BIGINT  NOT NULL,
    -- Credits only: the day their unspent points expire (NULL: never),
    -- fixed when they are credited, so a later policy change gives notice.
    expires_on    BIGINT,
    -- The record an earning came from, or the redemption (or transfer
    -- between linked accounts) a line belongs to.
    record_id     BYTEA,
    redemption_id BYTEA,
    -- The audit entry of a redemption's or refund's line, for retries.
    audit_seq     BIGINT,
    created_at    BIGINT  NOT NULL
);
CREATE INDEX points_by_subject ON points_entries (tenant_id, subject, id);
CREATE INDEX points_by_expiry ON points_entries (expires_on) WHERE expires_on IS NOT NULL;
CREATE INDEX points_by_redemption ON points_entries (redemption_id) WHERE redemption_id IS NOT NULL;

-- A redemption: looked up by a keyed hash of the platform's reference; the
-- reference and description are sealed with the subject's key.
CREATE TABLE redemptions (
    redemption_id BYTEA   PRIMARY KEY,
    tenant_id     BIGINT  NOT NULL,
    subject       BYTEA   NOT NULL,
    reference_key BYTEA   NOT NULL,
    content_hash  BYTEA   NOT NULL,
    points        BIGINT  NOT NULL CHECK (points > 0),
    day           BIGINT  NOT NULL,
    key_version   BIGINT  NOT NULL,
    sealed        BYTEA   NOT NULL,
    audit_seq     BIGINT  NOT NULL,
    created_at    BIGINT  NOT NULL,
    UNIQUE (tenant_id, reference_key)
);
CREATE INDEX redemptions_by_subject ON redemptions (tenant_id, subject, created_at);

-- Points already earned become the first lines of the points ledger.
INSERT INTO points_entries (tenant_id, subject, entry, points, balance, day, expires_on, record_id, created_at)
SELECT tenant_id, subject, 'earn', points,
       SUM(points) OVER (PARTITION BY tenant_id, subject ORDER BY id ROWS UNBOUNDED PRECEDING),
       day, NULL, record_id, created_at
FROM ledger_entries WHERE points > 0 ORDER BY id;

-- Distinct people per report cell, so small cells are judged by people,
-- not events.
ALTER TABLE reduction_totals ADD COLUMN people BIGINT NOT NULL DEFAULT 0;
UPDATE reduction_totals SET people = (
    SELECT COUNT(DISTINCT l.subject) FROM ledger_entries l
    WHERE l.tenant_id = reduction_totals.tenant_id AND l.kind = reduction_totals.kind
      AND l.month = reduction_totals.month AND l.record_id IS NOT NULL
);
