//! Offline verification of an exported audit log: no database, no network,
//! no secret — only the export and the public key it carries.
//!
//! `entries.bin` is a header (`CLAUDIT1`) and then, per entry:
//! `seq: u64 | leaf_hash: [32] | chain_hash: [32] | present: u8 | (len: u32 | entry bytes)?`,
//! integers big-endian; `present` is 0 once retention emptied the entry.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{self, Write};
use std::path::Path;

use super::chain::{chain_hash, GENESIS};
use super::checkpoint::{Checkpoint, NoteVerifier};
use super::merkle::{leaf_hash, Frontier};
use super::{Action, AuditEntry, VerifyError};

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

/// Reductions and points per tenant, kind and month, from the log alone.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub events: i64,
    pub reduction_mg: i64,
    pub points: i64,
}

#[derive(Debug, Default)]
pub struct OfflineReport {
    pub entries: u64,
    /// The oldest entries, emptied by retention: the totals do not cover them.
    pub emptied: u64,
    pub checkpoints: usize,
    /// Keyed by (tenant, kind, month as `YYYYMM`).
    pub totals: BTreeMap<(i64, String, i64), Totals>,
}

#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    #[error("{0}")]
    Export(String),
    #[error(transparent)]
    Entry(#[from] VerifyError),
}

fn bad(seq: u64, reason: impl Into<String>) -> OfflineError {
    OfflineError::Entry(VerifyError {
        seq,
        reason: reason.into(),
    })
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
) -> Result<OfflineReport, OfflineError> {
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
    checkpoints.sort_by_key(|cp| cp.size);
    let entries = read("entries.bin")?;
    verify_entries(&entries, &checkpoints, progress)
}

/// Verifies exported entries against signed (already verified) checkpoints.
pub fn verify_entries(bytes: &[u8], checkpoints: &[Checkpoint], progress: bool) -> Result<OfflineReport, OfflineError> {
    let bar = progress.then(|| {
        let bar = indicatif::ProgressBar::new(bytes.len() as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {percent:>3}% {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let mut report = OfflineReport {
        checkpoints: checkpoints.len(),
        ..OfflineReport::default()
    };
    let mut rest = match bytes.strip_prefix(MAGIC.as_slice()) {
        Some(rest) => rest,
        None if bytes.is_empty() => bytes,
        None => {
            return Err(OfflineError::Export(
                "entries.bin is not an audit export (bad header)".into(),
            ))
        }
    };
    let mut tree = Frontier::default();
    let mut chain = GENESIS;
    let mut erased = HashSet::new();
    // Totals by (tenant, month), then kind: looked up by &str, so the hot
    // loop allocates nothing for entries of a kind already seen.
    let mut totals: HashMap<(i64, i64), HashMap<String, Totals>> = HashMap::new();
    let mut next_checkpoint = 0;
    while let Some(cp) = checkpoints.get(next_checkpoint).filter(|cp| cp.size == 0) {
        if cp.root != tree.root() {
            return Err(bad(1, "a signed checkpoint of the empty log has a wrong root"));
        }
        next_checkpoint += 1;
    }
    while !rest.is_empty() {
        let expected = tree.size() + 1;
        let truncated = || bad(expected, "the export is truncated inside this entry");
        let (seq, after) = rest.split_first_chunk::<8>().ok_or_else(truncated)?;
        let (leaf, after) = after.split_first_chunk::<32>().ok_or_else(truncated)?;
        let (stored_chain, after) = after.split_first_chunk::<32>().ok_or_else(truncated)?;
        let (present, mut after) = after.split_first().ok_or_else(truncated)?;
        let seq = u64::from_be_bytes(*seq);
        if seq != expected {
            return Err(bad(
                expected,
                if seq > expected {
                    format!("missing (the log continues at entry {seq})")
                } else {
                    format!("out of order (found entry {seq})")
                },
            ));
        }
        if *present == 1 {
            let (len, body) = after.split_first_chunk::<4>().ok_or_else(truncated)?;
            let len = u32::from_be_bytes(*len) as usize;
            let entry_bytes = body.get(..len).ok_or_else(truncated)?;
            after = &body[len..];
            if leaf_hash(entry_bytes) != *leaf {
                return Err(bad(seq, "contents do not match their leaf hash (altered)"));
            }
            let entry = AuditEntry::decode(entry_bytes).map_err(|e| bad(seq, e.to_string()))?;
            if entry.seq != seq {
                return Err(bad(seq, format!("its contents claim position {}", entry.seq)));
            }
            check_rules(&entry, &mut erased, &mut totals)?;
        } else if *present != 0 {
            return Err(bad(seq, "malformed presence flag"));
        } else if report.emptied + 1 != seq {
            return Err(bad(
                seq,
                "emptied out of turn: retention empties only the oldest entries",
            ));
        } else {
            report.emptied += 1;
        }
        chain = chain_hash(&chain, leaf);
        if chain != *stored_chain {
            return Err(bad(
                seq,
                "does not match the hash chain (it, or an entry before it, was altered, removed or inserted)",
            ));
        }
        rest = after;
        tree.push(*leaf);
        while let Some(cp) = checkpoints.get(next_checkpoint).filter(|cp| cp.size == tree.size()) {
            if cp.root != tree.root() {
                return Err(bad(
                    seq,
                    format!(
                        "the log up to here does not match the signed checkpoint of size {}",
                        cp.size
                    ),
                ));
            }
            next_checkpoint += 1;
        }
        if let Some(bar) = &bar {
            if seq % 65_536 == 0 {
                bar.set_position((bytes.len() - rest.len()) as u64);
            }
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if let Some(cp) = checkpoints.get(next_checkpoint) {
        return Err(bad(
            tree.size() + 1,
            format!(
                "missing: a signed checkpoint covers {} entries, the export holds {}",
                cp.size,
                tree.size()
            ),
        ));
    }
    if checkpoints.last().is_none_or(|cp| cp.size != tree.size()) {
        return Err(OfflineError::Export(format!(
            "no signed checkpoint covers the whole export ({} entries): it cannot be trusted to be complete",
            tree.size()
        )));
    }
    report.entries = tree.size();
    report.totals = totals
        .into_iter()
        .flat_map(|((tenant, month), kinds)| kinds.into_iter().map(move |(kind, t)| ((tenant, kind, month), t)))
        .collect::<BTreeMap<_, _>>();
    Ok(report)
}

/// The log's own rules, and the totals it implies.
fn check_rules(
    entry: &AuditEntry,
    erased: &mut HashSet<[u8; 16]>,
    totals: &mut HashMap<(i64, i64), HashMap<String, Totals>>,
) -> Result<(), OfflineError> {
    if let Some(subject) = entry.action.subject() {
        if erased.contains(subject.as_bytes()) {
            return Err(bad(
                entry.seq,
                "an entry for an audit reference after its erasure entry",
            ));
        }
    }
    match &entry.action {
        Action::SubjectErased { subject, .. } => {
            erased.insert(*subject.as_bytes());
        }
        Action::RecordWritten {
            kind,
            day,
            reduction_mg,
            points,
            ..
        } => {
            let tenant = entry.actor.map_or(0, |t| t.get());
            let kinds = totals.entry((tenant, i64::from(day.month()))).or_default();
            let totals = match kinds.get_mut(kind.as_str()) {
                Some(t) => t,
                None => kinds.entry(kind.clone()).or_default(),
            };
            totals.events += 1;
            totals.reduction_mg += reduction_mg;
            totals.points += points;
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::chain::{chain_hash, GENESIS};
    use crate::audit::checkpoint::NoteSigner;
    use crate::audit::Action;

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
