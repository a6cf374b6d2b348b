-- Complete subtrees of the audit log's Merkle tree above the leaves (the
-- leaves are audit_log.leaf_hash), stored as appends complete them, so
-- roots and proofs are served without rehashing the log.
CREATE TABLE audit_nodes (
    level INTEGER NOT NULL,
    idx   INTEGER NOT NULL,
    hash  BLOB    NOT NULL,
    PRIMARY KEY (level, idx)
);

-- Every checkpoint signed, so none is ever signed inconsistent with an
-- earlier one.
CREATE TABLE audit_checkpoints (
    size      INTEGER PRIMARY KEY,
    root      BLOB    NOT NULL,
    note      TEXT    NOT NULL,
    issued_on INTEGER NOT NULL
);

-- Reduction totals per tenant, kind and month, kept in the transaction of
-- each record: no personal data, and not shrunk by erasure or retention,
-- like the audit entries they must reconcile with.
CREATE TABLE reduction_totals (
    tenant_id    INTEGER NOT NULL,
    kind         TEXT    NOT NULL,
    month        INTEGER NOT NULL,
    events       INTEGER NOT NULL,
    reduction_mg INTEGER NOT NULL,
    points       INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, kind, month)
);
