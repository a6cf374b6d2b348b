-- Root key versions. Version 1 is the root key file; later versions are in
-- the keyring file beside it, never in a database: only each one's public
-- fingerprint is here, so a keyring that does not belong is refused. The
-- current version (new records are sealed under it) is the highest that is
-- not retired. `created_on` and `retired_on` are days (midnight, UTC, in
-- Unix seconds); version 1 dates from the database itself.
CREATE TABLE key_versions (
    version     INTEGER PRIMARY KEY CHECK (version >= 1),
    fingerprint TEXT,
    created_on  INTEGER,
    retired_on  INTEGER
);
INSERT INTO key_versions (version) VALUES (1);

-- A retired version's key material is dropped: the database itself refuses
-- a record sealed under it (say by a server that has not yet seen the
-- rotation), which nobody could open later.
CREATE TRIGGER records_sealed_under_a_live_key BEFORE INSERT ON records
WHEN NOT EXISTS (SELECT 1 FROM key_versions WHERE version = NEW.key_version AND retired_on IS NULL)
BEGIN
    SELECT RAISE(ABORT, 'carbon-ledger: no record may be sealed under a retired or unknown root key version');
END;
CREATE TRIGGER records_resealed_under_a_live_key BEFORE UPDATE OF key_version ON records
WHEN NOT EXISTS (SELECT 1 FROM key_versions WHERE version = NEW.key_version AND retired_on IS NULL)
BEGIN
    SELECT RAISE(ABORT, 'carbon-ledger: no record may be sealed under a retired or unknown root key version');
END;

-- A redemption's sealed text likewise.
CREATE TRIGGER redemptions_sealed_under_a_live_key BEFORE INSERT ON redemptions
WHEN NOT EXISTS (SELECT 1 FROM key_versions WHERE version = NEW.key_version AND retired_on IS NULL)
BEGIN
    SELECT RAISE(ABORT, 'carbon-ledger: no record may be sealed under a retired or unknown root key version');
END;
CREATE TRIGGER redemptions_resealed_under_a_live_key BEFORE UPDATE OF key_version ON redemptions
WHEN NOT EXISTS (SELECT 1 FROM key_versions WHERE version = NEW.key_version AND retired_on IS NULL)
BEGIN
    SELECT RAISE(ABORT, 'carbon-ledger: no record may be sealed under a retired or unknown root key version');
END;
