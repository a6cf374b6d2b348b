-- The person's privacy center (issue 16). A platform asks for a console
-- link; only a hash of its random token is kept, with the tenant and the
-- person's pseudonym it opens. Opening it deletes the row (single use) and
-- starts a session, likewise kept only as a hash of its random id. Neither
-- table holds a platform's user id.
CREATE TABLE console_tokens (
    token_hash BYTEA PRIMARY KEY,
    tenant_id  BIGINT NOT NULL,
    pseudonym  BYTEA NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX console_tokens_by_subject ON console_tokens (tenant_id, pseudonym);

CREATE TABLE console_sessions (
    session_hash BYTEA PRIMARY KEY,
    tenant_id    BIGINT NOT NULL,
    pseudonym    BYTEA NOT NULL,
    -- The form token every state-changing form carries back.
    csrf         TEXT    NOT NULL,
    created_at   BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL
);
CREATE INDEX console_sessions_by_subject ON console_sessions (tenant_id, pseudonym);
