-- Root key versions. Version 1 is the root key file; later versions are in
-- the keyring file beside it, never in a database: only each one's public
-- fingerprint is here, so a keyring that does not belong is refused. The
-- current version (new records are sealed under it) is the highest that is
-- not retired. `created_on` and `retired_on` are days (midnight, UTC, in
-- Unix seconds); version 1 dates from the database itself.
CREATE TABLE key_versions (
    version     BIGINT PRIMARY KEY CHECK (version >= 1),
    fingerprint TEXT,
    created_on  BIGINT,
    retired_on  BIGINT
);
INSERT INTO key_versions (version) VALUES (1);

-- A retired version's key material is dropped: the database itself refuses
-- a record sealed under it (say by a server that has not yet seen the
-- rotation), which nobody could open later. Checked once per statement, so
-- a batch insert pays one lookup, not one per row.
CREATE FUNCTION records_sealed_under_a_live_key() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (
        SELECT 1 FROM new_rows n
        WHERE NOT EXISTS (SELECT 1 FROM key_versions k WHERE k.version = n.key_version AND k.retired_on IS NULL)
    ) THEN
        RAISE EXCEPTION 'carbon-ledger: no record may be sealed under a retired or unknown root key version';
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER records_sealed_under_a_live_key AFTER INSERT ON records
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION records_sealed_under_a_live_key();
CREATE TRIGGER records_resealed_under_a_live_key AFTER UPDATE ON records
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION records_sealed_under_a_live_key();

-- A redemption's sealed text likewise.
CREATE TRIGGER redemptions_sealed_under_a_live_key AFTER INSERT ON redemptions
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION records_sealed_under_a_live_key();
CREATE TRIGGER redemptions_resealed_under_a_live_key AFTER UPDATE ON redemptions
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION records_sealed_under_a_live_key();
