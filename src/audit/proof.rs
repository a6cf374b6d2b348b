//! A self-contained inclusion proof of one audit entry, checkable offline:
//! the entry's bytes, its leaf index, the inclusion path, the signed
//! checkpoint the path leads to, and the verifier key.
//!
//! ```text
//! carbon-ledger/audit-proof@v1\n
//! vkey <verifier key>\n
//! extra <base64 canonical entry bytes>\n
//! index <leaf index, decimal>\n
//! <base64 hash>\n                     (the inclusion path, zero or more lines)
//! \n
//! <signed checkpoint note>
//! ```
//!
//! Everything from `extra` on is a C2SP `tlog-proof@v1` body: replace the
//! first two lines with `c2sp.org/tlog-proof@v1` to get one. The key is in
//! the file so that it is self-contained; a verifier that holds the key
//! from elsewhere passes it instead, and the file's is then ignored.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use super::checkpoint::{Checkpoint, CheckpointError, NoteVerifier};
use super::merkle::{leaf_hash, verify_inclusion, Hash};
use super::AuditEntry;

/// The first line of a proof file.
pub const HEADER: &str = "carbon-ledger/audit-proof@v1";
/// Larger files are refused before parsing.
const MAX_FILE_BYTES: usize = 1 << 20;
/// A path never has more hashes than the tree has levels.
const MAX_PATH: usize = 64;

/// Why a proof file does not verify, said so a person can act on it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProofFileError {
    #[error("malformed proof file: {0}")]
    Malformed(&'static str),
    #[error("the verifier key is not usable: {0}")]
    Key(CheckpointError),
    #[error("the checkpoint does not verify against key {key}: {error}")]
    Checkpoint { key: String, error: CheckpointError },
    #[error("the entry bytes do not decode as an audit entry: {0}")]
    Entry(String),
    #[error("the entry says it is entry {found}, but the proof is for entry {expected}")]
    WrongSeq { expected: u64, found: u64 },
    #[error("the entry is not leaf {index} of the tree of size {size} that the checkpoint signs: {reason}")]
    NotIncluded { index: u64, size: u64, reason: String },
}

/// A parsed proof file (not yet verified).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProofFile {
    pub vkey: String,
    pub entry: Vec<u8>,
    /// The leaf index: the entry's sequence number minus one.
    pub index: u64,
    pub path: Vec<Hash>,
    pub note: String,
}

/// What a proof file that verified shows.
#[derive(Debug)]
pub struct VerifiedProof {
    pub entry: AuditEntry,
    pub checkpoint: Checkpoint,
    /// The verifier key the checkpoint was checked against.
    pub vkey: String,
}

impl ProofFile {
    /// The file's text.
    pub fn render(&self) -> String {
        let mut out = format!(
            "{HEADER}\nvkey {}\nextra {}\nindex {}\n",
            self.vkey,
            STANDARD.encode(&self.entry),
            self.index
        );
        for hash in &self.path {
            out.push_str(&STANDARD.encode(hash));
            out.push('\n');
        }
        out.push('\n');
        out.push_str(&self.note);
        out
    }

    /// Parses a proof file strictly: canonical base64, no stray lines.
    pub fn parse(text: &str) -> Result<Self, ProofFileError> {
        use ProofFileError::Malformed as Bad;
        if text.len() > MAX_FILE_BYTES {
            return Err(Bad("larger than 1 MiB"));
        }
        let (head, note) = text
            .split_once("\n\n")
            .ok_or(Bad("no blank line before the checkpoint"))?;
        let mut lines = head.split('\n');
        if lines.next() != Some(HEADER) {
            return Err(Bad("the first line is not carbon-ledger/audit-proof@v1"));
        }
        let mut field = |name: &'static str, what: &'static str| {
            lines.next().and_then(|line| line.strip_prefix(name)).ok_or(Bad(what))
        };
        let vkey = field("vkey ", "the second line is not `vkey <key>`")?.to_owned();
        let entry = field("extra ", "the third line is not `extra <base64 entry>`")?;
        let entry = canonical_base64(entry).ok_or(Bad("the entry is not canonical base64"))?;
        let index = field("index ", "the fourth line is not `index <number>`")?;
        if index.is_empty() || !index.bytes().all(|b| b.is_ascii_digit()) || (index.len() > 1 && index.starts_with('0'))
        {
            return Err(Bad("the index is not a canonical decimal number"));
        }
        let index = index.parse().map_err(|_| Bad("the index is out of range"))?;
        let mut path = Vec::new();
        for line in lines {
            if path.len() == MAX_PATH {
                return Err(Bad("the inclusion path is too long"));
            }
            let hash = canonical_base64(line).ok_or(Bad("an inclusion path line is not canonical base64"))?;
            path.push(
                hash.try_into()
                    .map_err(|_| Bad("an inclusion path hash is not 32 bytes"))?,
            );
        }
        Ok(Self {
            vkey,
            entry,
            index,
            path,
            note: note.to_owned(),
        })
    }

    /// Checks the file: the checkpoint's signature against `trusted_vkey`
    /// (or, without one, the key in the file), the entry's encoding and
    /// position, and its inclusion in the tree the checkpoint signs.
    pub fn verify(&self, trusted_vkey: Option<&str>) -> Result<VerifiedProof, ProofFileError> {
        let vkey = trusted_vkey.unwrap_or(&self.vkey).trim();
        let verifier = NoteVerifier::from_vkey(vkey).map_err(ProofFileError::Key)?;
        // This log's checkpoints name their origin after the key.
        let checkpoint = verifier
            .verify(&self.note, verifier.name())
            .map_err(|error| ProofFileError::Checkpoint {
                key: verifier.vkey(),
                error,
            })?;
        let entry = AuditEntry::decode(&self.entry).map_err(|e| ProofFileError::Entry(e.to_string()))?;
        let expected = self.index.saturating_add(1);
        if entry.seq != expected {
            return Err(ProofFileError::WrongSeq {
                expected,
                found: entry.seq,
            });
        }
        verify_inclusion(
            &leaf_hash(&self.entry),
            self.index,
            checkpoint.size,
            &self.path,
            &checkpoint.root,
        )
        .map_err(|e| ProofFileError::NotIncluded {
            index: self.index,
            size: checkpoint.size,
            reason: e.to_string(),
        })?;
        Ok(VerifiedProof {
            entry,
            checkpoint,
            vkey: verifier.vkey(),
        })
    }
}

fn canonical_base64(text: &str) -> Option<Vec<u8>> {
    let bytes = STANDARD.decode(text).ok()?;
    (STANDARD.encode(&bytes) == text).then_some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::checkpoint::NoteSigner;
    use crate::audit::merkle::{node_hash, Frontier};
    use crate::audit::Action;
    use crate::domain::TenantId;

    const NAME: &str = "carbon-ledger-test";

    /// A proof of entry 2 in a log of three entries, signed.
    fn proof() -> (ProofFile, NoteSigner) {
        let signer = NoteSigner::from_seed(NAME, &[9; 32]);
        let entries: Vec<Vec<u8>> = (1..=3)
            .map(|seq| {
                AuditEntry {
                    seq,
                    at: 86_400 * 20_000,
                    actor: Some(TenantId::new(1)),
                    action: Action::PolicyLoaded {
                        digest: [seq as u8; 32],
                        methodology_version: "v1".into(),
                    },
                }
                .encode()
            })
            .collect();
        let leaves: Vec<Hash> = entries.iter().map(|e| leaf_hash(e)).collect();
        let mut tree = Frontier::default();
        leaves.iter().for_each(|l| tree.push(*l));
        // Leaf 1 of 3: its sibling is leaf 0, then the lone leaf 2.
        let path = vec![leaves[0], leaves[2]];
        assert_eq!(node_hash(&node_hash(&leaves[0], &leaves[1]), &leaves[2]), tree.root());
        let note = signer.sign(&Checkpoint::new(NAME, 3, tree.root()));
        let file = ProofFile {
            vkey: signer.vkey(),
            entry: entries[1].clone(),
            index: 1,
            path,
            note,
        };
        (file, signer)
    }

    #[test]
    fn a_good_file_verifies_and_round_trips() {
        let (file, _) = proof();
        let text = file.render();
        let parsed = ProofFile::parse(&text).unwrap();
        assert_eq!(parsed, file);
        let verified = parsed.verify(None).unwrap();
        assert_eq!(verified.entry.seq, 2);
        assert_eq!(verified.checkpoint.size, 3);
        // Its tail is a C2SP tlog-proof body.
        assert!(text.lines().nth(2).unwrap().starts_with("extra "));
    }

    /// Any one byte changed anywhere fails, with a message and no panic.
    #[test]
    fn every_one_byte_change_fails() {
        let (file, _) = proof();
        let text = file.render().into_bytes();
        for at in 0..text.len() {
            let mut changed = text.clone();
            changed[at] ^= 0x01;
            let Ok(changed) = String::from_utf8(changed) else {
                continue;
            };
            let result = ProofFile::parse(&changed).and_then(|f| f.verify(None).map(|_| ()));
            assert!(result.is_err(), "byte {at} changed still verifies");
            assert!(!result.unwrap_err().to_string().is_empty());
        }
    }

    #[test]
    fn a_pinned_key_overrides_the_file() {
        let (file, _) = proof();
        let other = NoteSigner::from_seed(NAME, &[8; 32]).vkey();
        let e = file.verify(Some(&other)).unwrap_err();
        assert!(matches!(e, ProofFileError::Checkpoint { .. }), "{e}");
        // A forger who swaps in their own key is caught by the pinned one.
        let forger = NoteSigner::from_seed(NAME, &[7; 32]);
        let mut forged = file.clone();
        let body = format!("{}\n", file.note.split("\n\n").next().unwrap());
        forged.note = forger.sign(&Checkpoint::parse_body(&body).unwrap());
        forged.vkey = forger.vkey();
        assert!(forged.verify(None).is_ok());
        assert!(forged.verify(Some(&file.vkey)).is_err());
    }

    #[test]
    fn an_entry_at_another_index_fails() {
        let (mut file, _) = proof();
        file.index = 0;
        assert!(matches!(file.verify(None), Err(ProofFileError::WrongSeq { .. })));
    }
}
