//! Offline verification of an exported audit log: no database, no network,
//! no secret — only the export and the public key it carries. This module
//! reads the export; [`LogVerifier`] does the checking, as it does online.
//!
//! `entries.bin` is a header (`CLAUDIT1`) and then, per entry:
//! `seq: u64 | leaf_hash: [32] | chain_hash: [32] | present: u8 | (len: u32 | entry bytes)?`,
//! integers big-endian; `present` is 0 once retention emptied the entry.

use std::io::{self, Write};
use std::path::Path;

use super::checkpoint::{Checkpoint, NoteVerifier};
use super::verify::{LogVerifier, StoredRow, VerifiedLog, VerifyError};

const MAGIC: &[u8; 8] = b"CLAUDIT1";

/// Appends one entry to an export (the header is written before the first).
pub fn write_record(out: &mut impl Write, seq: u64, leaf: &[u8], chain: &[u8], entry: Option<&[u8]>) -> io::Result<()> {
    if seq == 1 {
        out.write_all(MAGIC)?;
    }
    out.write_all(&seq.to_be_bytes())?;
    out.write_all(leaf)?;
    out.write_all(chain)?;
    match entry {
        Some(bytes) => {
            out.write_all(&[1])?;
            out.write_all(&u32::try_from(bytes.len()).map_err(io::Error::other)?.to_be_bytes())?;
            out.write_all(bytes)
        }
        None => out.write_all(&[0]),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    #[error("{0}")]
    Export(String),
    #[error(transparent)]
    Entry(#[from] VerifyError),
}

/// Verifies the export in `dir` against `pinned`, the verifier key the
/// auditor holds (without it, the key shipped in the export is trusted),
/// and also against `kept`, signed checkpoints the auditor saved earlier.
/// `progress` shows a bar on a terminal.
pub fn verify_dir(
    dir: &Path,
    pinned: Option<&str>,
    kept: &[String],
    progress: bool,
) -> Result<VerifiedLog, OfflineError> {
    let read = |name: &str| {
        std::fs::read(dir.join(name))
            .map_err(|e| OfflineError::Export(format!("cannot read {name} in {}: {e}", dir.display())))
    };
    let vkey = String::from_utf8(read("public-key.vkey")?)
        .map_err(|_| OfflineError::Export("public-key.vkey is not text".into()))?;
    let vkey = match pinned {
        Some(pinned) if pinned.trim() != vkey.trim() => {
            return Err(OfflineError::Export(
                "the export's public key is not the one you pinned: it was signed by another key".into(),
            ))
        }
        Some(pinned) => pinned.trim().to_owned(),
        None => vkey.trim().to_owned(),
    };
    let verifier = NoteVerifier::from_vkey(&vkey).map_err(|e| OfflineError::Export(format!("public key: {e}")))?;
    let mut checkpoints = Vec::new();
    let listing = std::fs::read_dir(dir.join("checkpoints"))
        .map_err(|e| OfflineError::Export(format!("cannot list checkpoints/: {e}")))?;
    for file in listing {
        let path = file.map_err(|e| OfflineError::Export(e.to_string()))?.path();
        let note =
            std::fs::read_to_string(&path).map_err(|e| OfflineError::Export(format!("{}: {e}", path.display())))?;
        let cp = verifier
            .verify(&note, verifier.name())
            .map_err(|e| OfflineError::Export(format!("checkpoint {} does not verify: {e}", path.display())))?;
        checkpoints.push(cp);
    }
    for note in kept {
        let cp = verifier
            .verify(note, verifier.name())
            .map_err(|e| OfflineError::Export(format!("a kept checkpoint does not verify: {e}")))?;
        checkpoints.push(cp);
    }
    let entries = read("entries.bin")?;
    verify_entries(&entries, &checkpoints, progress)
}

/// Verifies exported entries against signed (already verified) checkpoints:
/// parses the records and feeds them to the one log verifier.
pub fn verify_entries(bytes: &[u8], checkpoints: &[Checkpoint], progress: bool) -> Result<VerifiedLog, OfflineError> {
    let bar = progress.then(|| {
        let bar = indicatif::ProgressBar::new(bytes.len() as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {percent:>3}% {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let mut rest = match bytes.strip_prefix(MAGIC.as_slice()) {
        Some(rest) => rest,
        None if bytes.is_empty() => bytes,
        None => {
            return Err(OfflineError::Export(
                "entries.bin is not an audit export (bad header)".into(),
            ))
        }
    };
    let mut log = LogVerifier::new(checkpoints)?;
    while !rest.is_empty() {
        let (row, after) = parse_record(rest, log.entries() + 1)?;
        log.push(row)?;
        rest = after;
        if let Some(bar) = &bar {
            if row.seq % 65_536 == 0 {
                bar.set_position((bytes.len() - rest.len()) as u64);
            }
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let verified = log.finish()?;
    // An export ends at the checkpoint it signs; without one over all of
    // it, entries cut from its tail would go unnoticed.
    if !verified.covered_by_checkpoint {
        return Err(OfflineError::Export(format!(
            "no signed checkpoint covers the whole export ({} entries): it cannot be trusted to be complete",
            verified.entries
        )));
    }
    Ok(verified)
}

/// Splits the first record off `bytes`; `expected` is the entry it should
/// be, named if the record cannot be read.
fn parse_record(bytes: &[u8], expected: u64) -> Result<(StoredRow<'_>, &[u8]), VerifyError> {
    let fail = |reason: &str| VerifyError {
        seq: expected,
        reason: reason.into(),
    };
    let truncated = || fail("the export is truncated inside this entry");
    let (seq, after) = bytes.split_first_chunk::<8>().ok_or_else(truncated)?;
    let (leaf_hash, after) = after.split_first_chunk::<32>().ok_or_else(truncated)?;
    let (chain_hash, after) = after.split_first_chunk::<32>().ok_or_else(truncated)?;
    let (present, after) = after.split_first().ok_or_else(truncated)?;
    let (entry, after) = match present {
        0 => (None, after),
        1 => {
            let (len, body) = after.split_first_chunk::<4>().ok_or_else(truncated)?;
            let len = u32::from_be_bytes(*len) as usize;
            if body.len() < len {
                return Err(truncated());
            }
            let (entry, after) = body.split_at(len);
            (Some(entry), after)
        }
        _ => return Err(fail("malformed presence flag")),
    };
    let row = StoredRow {
        seq: u64::from_be_bytes(*seq),
        entry,
        leaf_hash,
        chain_hash,
    };
    Ok((row, after))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::chain::{chain_hash, GENESIS};
    use crate::audit::checkpoint::NoteSigner;
    use crate::audit::merkle::{leaf_hash, Frontier};
    use crate::audit::{Action, AuditEntry};

    /// An export of `n` entries, the ones in `emptied` written as emptied,
    /// with a checkpoint over all of them.
    fn export(n: u64, emptied: &[u64]) -> (Vec<u8>, Vec<Checkpoint>) {
        let (mut bytes, mut chain, mut tree) = (Vec::new(), GENESIS, Frontier::default());
        for seq in 1..=n {
            let entry = AuditEntry {
                seq,
                at: 0,
                actor: None,
                action: Action::KeysReshredded { keys: 1 },
            }
            .encode();
            let leaf = leaf_hash(&entry);
            chain = chain_hash(&chain, &leaf);
            tree.push(leaf);
            let body = (!emptied.contains(&seq)).then_some(entry.as_slice());
            write_record(&mut bytes, seq, &leaf, &chain, body).unwrap();
        }
        let signer = NoteSigner::from_seed("test/audit", &[1; 32]);
        let cp = signer
            .verifier()
            .verify(
                &signer.sign(&Checkpoint::new("test/audit", n, tree.root())),
                "test/audit",
            )
            .unwrap();
        (bytes, vec![cp])
    }

    #[test]
    fn only_the_oldest_entries_may_be_emptied() {
        let (bytes, cps) = export(6, &[1, 2]);
        assert_eq!(verify_entries(&bytes, &cps, false).unwrap().emptied, 2);
        let (bytes, cps) = export(6, &[1, 4]);
        let Err(OfflineError::Entry(e)) = verify_entries(&bytes, &cps, false) else {
            panic!("accepted")
        };
        assert_eq!(e.seq, 4);
    }

    #[test]
    fn an_export_no_checkpoint_covers_is_refused() {
        let (bytes, _) = export(3, &[]);
        assert!(verify_entries(&bytes, &[], false).is_err());
    }
}
