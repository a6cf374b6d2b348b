-- Consent in force, one row per subject and purpose.
CREATE TABLE consents (
    tenant_id      INTEGER NOT NULL,
    subject        BLOB    NOT NULL,
    purpose        TEXT    NOT NULL,
    notice_version INTEGER NOT NULL,
    -- Comma-separated behaviour kinds, or '*' for every kind.
    kinds          TEXT    NOT NULL,
    granted_at     INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, subject, purpose)
);

-- Append-only proof of consent: every grant and withdrawal.
CREATE TABLE consent_history (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id      INTEGER NOT NULL,
    subject        BLOB    NOT NULL,
    purpose        TEXT    NOT NULL,
    action         TEXT    NOT NULL CHECK (action IN ('grant', 'withdraw')),
    notice_version INTEGER NOT NULL,
    kinds          TEXT    NOT NULL,
    at             INTEGER NOT NULL
);
CREATE INDEX consent_history_by_subject ON consent_history (tenant_id, subject, purpose, id);
CREATE INDEX consent_history_by_time ON consent_history (at);

-- The retention sweeper finds expired rows by these.
CREATE INDEX records_by_day ON records (day);
CREATE INDEX ledger_by_day ON ledger_entries (day);
CREATE INDEX idempotency_by_created ON idempotency_keys (created_at);
