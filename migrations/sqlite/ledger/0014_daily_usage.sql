-- What each account reported per day, kind and variant, kept with the
-- ledger lines it sums (written in their transaction, deleted with them by
-- withdrawal, erasure and retention). The daily caps, the counting-once
-- rule between linked accounts and the report's people count read these
-- few rows instead of every line of the day, a scan that grew with each
-- account's activity and slowed every batch as the ledger filled up.
-- `reduction_mg` is the platform's own figure: earned plus counted elsewhere.
CREATE TABLE daily_usage (
    tenant_id    INTEGER NOT NULL,
    subject      BLOB    NOT NULL,
    day          INTEGER NOT NULL,
    kind         TEXT    NOT NULL,
    variant      TEXT    NOT NULL,
    -- Lines that earned or were counted elsewhere (reduction above zero).
    credited     INTEGER NOT NULL,
    reduction_mg INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, subject, day, kind, variant)
) WITHOUT ROWID;
CREATE INDEX daily_usage_by_day ON daily_usage (day);

INSERT INTO daily_usage (tenant_id, subject, day, kind, variant, credited, reduction_mg)
SELECT tenant_id, subject, day, kind, variant,
       SUM(CASE WHEN reduction_mg + counted_elsewhere_mg > 0 THEN 1 ELSE 0 END),
       SUM(reduction_mg + counted_elsewhere_mg)
FROM ledger_entries WHERE record_id IS NOT NULL
GROUP BY tenant_id, subject, day, kind, variant;
