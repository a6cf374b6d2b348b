-- What each account reported per day, kind and variant, kept with the
-- ledger lines it sums (written in their transaction, deleted with them by
-- withdrawal, erasure and retention). The daily caps, the counting-once
-- rule between linked accounts and the report's people count read these
-- few rows instead of every line of the day, a scan that grew with each
-- account's activity and slowed every batch as the ledger filled up.
-- `reduction_mg` is the platform's own figure: earned plus counted elsewhere.
CREATE TABLE daily_usage (
    tenant_id    BIGINT  NOT NULL,
    subject      BYTEA   NOT NULL,
    day          BIGINT  NOT NULL,
    kind         TEXT    NOT NULL,
    variant      TEXT    NOT NULL,
    -- Lines that earned or were counted elsewhere (reduction above zero).
    credited     BIGINT  NOT NULL,
    reduction_mg BIGINT  NOT NULL,
    PRIMARY KEY (tenant_id, subject, day, kind, variant)
);
CREATE INDEX daily_usage_by_day ON daily_usage (day);

INSERT INTO daily_usage (tenant_id, subject, day, kind, variant, credited, reduction_mg)
SELECT tenant_id, subject, day, kind, variant,
       CAST(SUM(CASE WHEN reduction_mg + counted_elsewhere_mg > 0 THEN 1 ELSE 0 END) AS BIGINT),
       CAST(SUM(reduction_mg + counted_elsewhere_mg) AS BIGINT)
FROM ledger_entries WHERE record_id IS NOT NULL
GROUP BY tenant_id, subject, day, kind, variant;
