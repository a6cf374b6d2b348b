//! Signed tree heads: a C2SP `tlog-checkpoint` body in a C2SP `signed-note`, Ed25519.
//!
//! ```text
//! <origin>\n
//! <tree size, decimal, no leading zeros>\n
//! <base64 root hash>\n
//! [<extension line>\n ...]
//! \n
//! — <key name> <base64(key id (4 bytes) || Ed25519 signature (64 bytes))>\n   (one or more)
//! ```
//!
//! The dash is U+2014 EM DASH. The signature covers the body: everything before the blank
//! line, including the body's final newline. `key id = SHA-256(name || 0x0A || 0x01 ||
//! public key)[:4]`, and the verifier key string is `<name>+<hex key id>+<base64(0x01 ||
//! public key)>`. Base64 is the standard padded alphabet (RFC 4648 §4) and is parsed
//! canonically.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest as _, Sha256};
use thiserror::Error;

/// Signature type byte for Ed25519 in C2SP signed-note.
const ED25519_TYPE: u8 = 0x01;
/// U+2014 EM DASH followed by a space.
const SIGNATURE_PREFIX: &str = "\u{2014} ";
/// Verifiers must accept at least 16 signatures; Go's `note` package caps at 100.
const MAX_SIGNATURES: usize = 100;
/// Upper bound on the size of a note we parse.
const MAX_NOTE_BYTES: usize = 1 << 20;

/// Errors from building, signing, parsing or verifying checkpoints.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum CheckpointError {
    #[error("invalid key name: must be non-empty, without spaces, '+' or control characters")]
    InvalidKeyName,
    #[error("malformed verifier key: {0}")]
    MalformedVkey(&'static str),
    #[error("verifier key id does not match its name and public key")]
    KeyIdMismatch,
    #[error("invalid Ed25519 public key")]
    InvalidPublicKey,
    #[error("malformed note: {0}")]
    MalformedNote(&'static str),
    #[error("malformed checkpoint: {0}")]
    MalformedCheckpoint(&'static str),
    #[error("signature from the trusted key does not verify")]
    BadSignature,
    #[error("no signature from the trusted key")]
    NoSignature,
    #[error("checkpoint origin {found:?} is not the expected {expected:?}")]
    WrongOrigin { expected: String, found: String },
}

/// A transparency log checkpoint (C2SP `tlog-checkpoint`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: [u8; 32],
    /// Opaque extension lines (signed, non-empty, without the newline). We emit none.
    pub extensions: Vec<String>,
}

impl Checkpoint {
    /// A checkpoint without extension lines.
    pub fn new(origin: impl Into<String>, size: u64, root: [u8; 32]) -> Self {
        Checkpoint {
            origin: origin.into(),
            size,
            root,
            extensions: Vec::new(),
        }
    }

    /// The note text: `<origin>\n<size>\n<base64 root>\n` followed by one line per extension.
    pub fn body(&self) -> String {
        let mut body = format!("{}\n{}\n{}\n", self.origin, self.size, STANDARD.encode(self.root));
        for line in &self.extensions {
            body.push_str(line);
            body.push('\n');
        }
        body
    }

    /// Checks that [`Checkpoint::body`] is a well-formed checkpoint body: a non-empty origin,
    /// non-empty extension lines, and no control characters anywhere.
    pub fn validate(&self) -> Result<(), CheckpointError> {
        if !is_valid_line(&self.origin) {
            return Err(CheckpointError::MalformedCheckpoint("origin must be a non-empty line"));
        }
        if !self.extensions.iter().all(|line| is_valid_line(line)) {
            return Err(CheckpointError::MalformedCheckpoint(
                "extension lines must be non-empty lines",
            ));
        }
        Ok(())
    }

    /// Parses a checkpoint body (the note text, ending in a newline). Strict: at least three
    /// non-empty lines, a decimal size without leading zeros, a canonical base64 32-byte root.
    pub fn parse_body(body: &str) -> Result<Self, CheckpointError> {
        use CheckpointError::MalformedCheckpoint as Bad;
        let text = body.strip_suffix('\n').ok_or(Bad("body must end in a newline"))?;
        let lines: Vec<&str> = text.split('\n').collect();
        if lines.len() < 3 {
            return Err(Bad("fewer than three lines"));
        }
        if !lines.iter().all(|line| is_valid_line(line)) {
            return Err(Bad("empty line or control character"));
        }
        let size_line = lines[1];
        if !size_line.bytes().all(|b| b.is_ascii_digit()) || (size_line.len() > 1 && size_line.starts_with('0')) {
            return Err(Bad("tree size is not a canonical decimal number"));
        }
        let size = size_line.parse::<u64>().map_err(|_| Bad("tree size out of range"))?;
        let root_bytes = decode_base64(lines[2]).ok_or(Bad("root hash is not canonical base64"))?;
        let root: [u8; 32] = root_bytes.try_into().map_err(|_| Bad("root hash is not 32 bytes"))?;
        Ok(Checkpoint {
            origin: lines[0].to_owned(),
            size,
            root,
            extensions: lines[3..].iter().map(|line| (*line).to_owned()).collect(),
        })
    }
}

/// A non-empty line with no control characters (so no newline either).
fn is_valid_line(line: &str) -> bool {
    !line.is_empty() && !line.chars().any(char::is_control)
}

/// C2SP key names: non-empty, no Unicode spaces, no '+'. We also refuse control characters.
fn is_valid_key_name(name: &str) -> bool {
    !name.is_empty() && !name.chars().any(|c| c.is_whitespace() || c == '+' || c.is_control())
}

/// Standard padded base64, accepted only in its canonical form.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let bytes = STANDARD.decode(text).ok()?;
    (STANDARD.encode(&bytes) == text).then_some(bytes)
}

fn key_id(name: &str, public_key: &VerifyingKey) -> [u8; 4] {
    let mut hasher = Sha256::new();
    hasher.update(name.as_bytes());
    hasher.update([b'\n', ED25519_TYPE]);
    hasher.update(public_key.as_bytes());
    let digest = hasher.finalize();
    [digest[0], digest[1], digest[2], digest[3]]
}

fn vkey_string(name: &str, id: [u8; 4], public_key: &VerifyingKey) -> String {
    let mut typed = Vec::with_capacity(33);
    typed.push(ED25519_TYPE);
    typed.extend_from_slice(public_key.as_bytes());
    format!("{name}+{}+{}", hex::encode(id), STANDARD.encode(typed))
}

/// Signs checkpoints as a C2SP signed note. The secret key is zeroized on drop and never
/// printed.
pub struct NoteSigner {
    name: String,
    key: SigningKey,
    id: [u8; 4],
}

impl fmt::Debug for NoteSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NoteSigner")
            .field("name", &self.name)
            .field("key_id", &hex::encode(self.id))
            .field("key", &"<redacted>")
            .finish()
    }
}

impl NoteSigner {
    /// A signer with key name `name` and the Ed25519 key derived from the 32-byte `seed`.
    ///
    /// # Panics
    ///
    /// If `name` is not a valid key name (empty, or containing a space, '+' or a control
    /// character). Use [`NoteSigner::try_from_seed`] for names that are not fixed in code.
    pub fn from_seed(name: &str, seed: &[u8; 32]) -> Self {
        match Self::try_from_seed(name, seed) {
            Ok(signer) => signer,
            Err(e) => panic!("NoteSigner::from_seed({name:?}): {e}"),
        }
    }

    /// Like [`NoteSigner::from_seed`], returning an error for an invalid key name.
    pub fn try_from_seed(name: &str, seed: &[u8; 32]) -> Result<Self, CheckpointError> {
        if !is_valid_key_name(name) {
            return Err(CheckpointError::InvalidKeyName);
        }
        let key = SigningKey::from_bytes(seed);
        let id = key_id(name, &key.verifying_key());
        Ok(NoteSigner {
            name: name.to_owned(),
            key,
            id,
        })
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The full signed note: the checkpoint body, a blank line and one signature line.
    ///
    /// # Panics
    ///
    /// If the checkpoint is malformed (see [`Checkpoint::validate`]); use
    /// [`NoteSigner::try_sign`] for checkpoints whose origin is not fixed in code.
    pub fn sign(&self, cp: &Checkpoint) -> String {
        match self.try_sign(cp) {
            Ok(note) => note,
            Err(e) => panic!("NoteSigner::sign: {e}"),
        }
    }

    /// Like [`NoteSigner::sign`], returning an error for a malformed checkpoint.
    pub fn try_sign(&self, cp: &Checkpoint) -> Result<String, CheckpointError> {
        cp.validate()?;
        let body = cp.body();
        let signature = self.key.sign(body.as_bytes());
        let mut blob = Vec::with_capacity(4 + Signature::BYTE_SIZE);
        blob.extend_from_slice(&self.id);
        blob.extend_from_slice(&signature.to_bytes());
        Ok(format!(
            "{body}\n{SIGNATURE_PREFIX}{} {}\n",
            self.name,
            STANDARD.encode(blob)
        ))
    }

    /// The verifier key string, `<name>+<hex key id>+<base64(0x01 || public key)>`.
    pub fn vkey(&self) -> String {
        vkey_string(&self.name, self.id, &self.key.verifying_key())
    }

    /// The matching verifier.
    pub fn verifier(&self) -> NoteVerifier {
        NoteVerifier {
            name: self.name.clone(),
            id: self.id,
            key: self.key.verifying_key(),
        }
    }
}

/// Verifies checkpoints signed by one trusted Ed25519 key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoteVerifier {
    name: String,
    id: [u8; 4],
    key: VerifyingKey,
}

impl NoteVerifier {
    /// Parses a verifier key string `<name>+<8 hex digits key id>+<base64(0x01 || public key)>`,
    /// checking that the key id is the one computed from the name and the key.
    pub fn from_vkey(vkey: &str) -> Result<Self, CheckpointError> {
        use CheckpointError::MalformedVkey as Bad;
        let mut parts = vkey.splitn(3, '+');
        let (Some(name), Some(id_hex), Some(key_b64)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(Bad("expected <name>+<key id>+<key>"));
        };
        if !is_valid_key_name(name) {
            return Err(CheckpointError::InvalidKeyName);
        }
        if id_hex.len() != 8 || !id_hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Bad("key id is not 8 hex digits"));
        }
        let mut id = [0u8; 4];
        hex::decode_to_slice(id_hex, &mut id).map_err(|_| Bad("key id is not 8 hex digits"))?;
        let typed = decode_base64(key_b64).ok_or(Bad("key is not canonical base64"))?;
        let (&key_type, key_bytes) = typed.split_first().ok_or(Bad("empty key"))?;
        if key_type != ED25519_TYPE {
            return Err(Bad("not an Ed25519 key"));
        }
        let key_bytes: &[u8; 32] = key_bytes.try_into().map_err(|_| Bad("Ed25519 key is not 32 bytes"))?;
        let key = VerifyingKey::from_bytes(key_bytes).map_err(|_| CheckpointError::InvalidPublicKey)?;
        if key.is_weak() {
            return Err(CheckpointError::InvalidPublicKey);
        }
        if key_id(name, &key) != id {
            return Err(CheckpointError::KeyIdMismatch);
        }
        Ok(NoteVerifier {
            name: name.to_owned(),
            id,
            key,
        })
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The verifier key string this verifier was built from (canonical form).
    pub fn vkey(&self) -> String {
        vkey_string(&self.name, self.id, &self.key)
    }

    /// Parses and verifies a signed checkpoint note.
    ///
    /// The note must be well formed (UTF-8 without control characters other than newline, a
    /// checkpoint body, exactly one blank line, one or more well-formed signature lines, a
    /// final newline). Signature lines from other keys (another name or key id) are ignored;
    /// every line with this key's name and id must verify, and there must be at least one.
    /// Finally the origin must equal `expected_origin`.
    pub fn verify(&self, note: &str, expected_origin: &str) -> Result<Checkpoint, CheckpointError> {
        use CheckpointError::MalformedNote as Bad;
        if note.len() > MAX_NOTE_BYTES {
            return Err(Bad("note too large"));
        }
        if note.chars().any(|c| c.is_control() && c != '\n') {
            return Err(Bad("control character"));
        }
        // The text ends at the last blank line; a checkpoint body has no blank lines, so the
        // body parse below rejects a note with more than one.
        let split = note.rfind("\n\n").ok_or(Bad("no blank line before the signatures"))?;
        let (body, signatures) = (&note[..=split], &note[split + 2..]);
        if body.contains("\n\n") {
            return Err(Bad("more than one blank line"));
        }
        let checkpoint = Checkpoint::parse_body(body)?;

        let signatures = signatures.strip_suffix('\n').ok_or(Bad("note must end in a newline"))?;
        let mut verified = 0usize;
        for (count, line) in signatures.split('\n').enumerate() {
            if count >= MAX_SIGNATURES {
                return Err(Bad("too many signatures"));
            }
            let rest = line
                .strip_prefix(SIGNATURE_PREFIX)
                .ok_or(Bad("signature line without em dash"))?;
            let (name, blob) = rest.split_once(' ').ok_or(Bad("signature line without a signature"))?;
            if !is_valid_key_name(name) {
                return Err(Bad("invalid key name in a signature line"));
            }
            let blob = decode_base64(blob).ok_or(Bad("signature is not canonical base64"))?;
            if blob.len() < 5 {
                return Err(Bad("signature too short"));
            }
            let (id, signature) = blob.split_at(4);
            if name != self.name || id != self.id {
                continue; // Another key: ignored, as the spec requires.
            }
            let signature = Signature::from_slice(signature).map_err(|_| CheckpointError::BadSignature)?;
            self.key
                .verify_strict(body.as_bytes(), &signature)
                .map_err(|_| CheckpointError::BadSignature)?;
            verified += 1;
        }
        if verified == 0 {
            return Err(CheckpointError::NoSignature);
        }
        if checkpoint.origin != expected_origin {
            return Err(CheckpointError::WrongOrigin {
                expected: expected_origin.to_owned(),
                found: checkpoint.origin,
            });
        }
        Ok(checkpoint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORIGIN: &str = "example.org/carbon-ledger/audit/blake3-v1";
    const NAME: &str = "carbon-ledger-test";

    fn test_signer() -> NoteSigner {
        NoteSigner::from_seed(NAME, &[0x07; 32])
    }

    fn test_checkpoint() -> Checkpoint {
        Checkpoint::new(ORIGIN, 17, *blake3::hash(b"").as_bytes())
    }

    /// A signature line from another key over `body`.
    fn foreign_line(name: &str, seed: u8, body: &str) -> String {
        let other = NoteSigner::from_seed(name, &[seed; 32]);
        let note = other.sign(&Checkpoint::parse_body(body).unwrap());
        note.lines().last().unwrap().to_owned() + "\n"
    }

    fn split_note(note: &str) -> (&str, &str) {
        let i = note.rfind("\n\n").unwrap();
        (&note[..=i], &note[i + 2..])
    }

    // The published vector (docs/audit-test-vectors.md).
    const VECTOR_VKEY: &str = "carbon-ledger-test+0ed2e883+AepKbGPinFIKvvVQexMuxfmVR3auvr57kkIe6mkURtIs";
    const VECTOR_NOTE: &str = "example.org/carbon-ledger/audit/blake3-v1\n\
        17\n\
        rxNJufX5oaagQE3qNtzJSZvLJcmtwRK3zJqTyuQfMmI=\n\
        \n\
        \u{2014} carbon-ledger-test \
        DtLogwsMWNoXXxltAWx02Q7f3c+BHzZcIV6vSvXMRSZHgUGhbBzunhwUxSpLi3IquqP/UIt6+5RNksKDy+b0h/QZAgs=\n";

    #[test]
    fn fixed_test_vector() {
        let signer = test_signer();
        let note = signer.sign(&test_checkpoint());
        assert_eq!(signer.vkey(), VECTOR_VKEY);
        assert_eq!(note, VECTOR_NOTE);
        let verifier = NoteVerifier::from_vkey(VECTOR_VKEY).unwrap();
        assert_eq!(verifier.verify(VECTOR_NOTE, ORIGIN).unwrap(), test_checkpoint());

        let doc = include_str!("../../docs/audit-test-vectors.md");
        assert!(
            doc.contains(&format!("```text\n{VECTOR_VKEY}\n```")),
            "vkey missing from the doc"
        );
        assert!(
            doc.contains(&format!("```text\n{VECTOR_NOTE}```")),
            "note missing from the doc"
        );
    }

    #[test]
    fn round_trip() {
        let signer = test_signer();
        let verifier = NoteVerifier::from_vkey(&signer.vkey()).unwrap();
        assert_eq!(verifier, signer.verifier());
        assert_eq!(verifier.name(), NAME);
        assert_eq!(verifier.vkey(), signer.vkey());
        for cp in [
            test_checkpoint(),
            Checkpoint::new(ORIGIN, 0, [0; 32]),
            Checkpoint::new(ORIGIN, u64::MAX, [0xff; 32]),
            Checkpoint {
                extensions: vec!["ext one".into(), "ext-2".into()],
                ..test_checkpoint()
            },
        ] {
            let note = signer.sign(&cp);
            assert_eq!(verifier.verify(&note, ORIGIN).unwrap(), cp);
            assert_eq!(Checkpoint::parse_body(&cp.body()).unwrap(), cp);
        }
    }

    #[test]
    fn body_format() {
        let cp = Checkpoint::new("o", 5, [0; 32]);
        assert_eq!(cp.body(), "o\n5\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n");
        let signer = test_signer();
        let note = signer.sign(&cp);
        let (body, sigs) = split_note(&note);
        assert_eq!(body, cp.body());
        assert!(sigs.starts_with("\u{2014} carbon-ledger-test "));
        let blob = STANDARD.decode(sigs.trim_end().rsplit(' ').next().unwrap()).unwrap();
        assert_eq!(blob.len(), 68);
        let vkey = signer.vkey();
        assert_eq!(hex::encode(&blob[..4]), vkey.split('+').nth(1).unwrap());
        // The key id as specified.
        let mut h = Sha256::new();
        h.update(b"carbon-ledger-test\n\x01");
        h.update(signer.verifier().key.as_bytes());
        assert_eq!(&h.finalize()[..4], &blob[..4]);
    }

    #[test]
    fn wrong_key_rejected() {
        let note = test_signer().sign(&test_checkpoint());
        // Same name, different key: different key id, so the signature is unknown.
        let other_key = NoteSigner::from_seed(NAME, &[0x08; 32]).verifier();
        assert_eq!(other_key.verify(&note, ORIGIN), Err(CheckpointError::NoSignature));
        // Same key, different name.
        let other_name = NoteSigner::from_seed("someone-else", &[0x07; 32]).verifier();
        assert_eq!(other_name.verify(&note, ORIGIN), Err(CheckpointError::NoSignature));
        // Right name and key id, wrong public key: a forged verifier key has a mismatching id.
        let signer = test_signer();
        let forged = format!(
            "{NAME}+{}+{}",
            signer.vkey().split('+').nth(1).unwrap(),
            NoteSigner::from_seed(NAME, &[0x08; 32])
                .vkey()
                .splitn(3, '+')
                .nth(2)
                .unwrap()
        );
        assert_eq!(NoteVerifier::from_vkey(&forged), Err(CheckpointError::KeyIdMismatch));
        let impostor = NoteVerifier {
            key: NoteSigner::from_seed(NAME, &[0x08; 32]).verifier().key,
            ..signer.verifier()
        };
        assert_eq!(impostor.verify(&note, ORIGIN), Err(CheckpointError::BadSignature));
    }

    #[test]
    fn altered_body_rejected() {
        let verifier = test_signer().verifier();
        let note = test_signer().sign(&test_checkpoint());
        let root_b64 = STANDARD.encode(test_checkpoint().root);
        let mut other_root = test_checkpoint().root;
        other_root[0] ^= 1;
        let alterations = [
            note.replacen(ORIGIN, "example.org/carbon-ledger/audit/blake3-v2", 1),
            note.replacen("\n17\n", "\n18\n", 1),
            note.replacen(&root_b64, &STANDARD.encode(other_root), 1),
            note.replacen("\n\n", "\nextension\n\n", 1),
        ];
        for altered in alterations {
            assert_ne!(altered, note);
            assert_eq!(verifier.verify(&altered, ORIGIN), Err(CheckpointError::BadSignature));
        }
        let moved = note.replacen(ORIGIN, "example.org/carbon-ledger/audit/blake3-v2", 1);
        let r = verifier.verify(&moved, "example.org/carbon-ledger/audit/blake3-v2");
        assert_eq!(r, Err(CheckpointError::BadSignature));
    }

    #[test]
    fn wrong_origin_rejected() {
        let note = test_signer().sign(&test_checkpoint());
        let r = test_signer().verifier().verify(&note, "example.org/other");
        assert!(matches!(r, Err(CheckpointError::WrongOrigin { .. })));
    }

    #[test]
    fn unknown_signatures_ignored_but_not_sufficient() {
        let signer = test_signer();
        let verifier = signer.verifier();
        let note = signer.sign(&test_checkpoint());
        let (body, ours) = split_note(&note);
        let theirs = foreign_line("witness.example/w1", 9, body);
        let same_name_other_id = foreign_line(NAME, 10, body);
        let junk_sig = format!("\u{2014} other.example/k {}\n", STANDARD.encode([1u8, 2, 3, 4, 5]));
        let long_sig = format!("\u{2014} other.example/pq {}\n", STANDARD.encode([9u8; 3000]));
        for extra in [&theirs, &same_name_other_id, &junk_sig, &long_sig] {
            for note in [format!("{body}\n{extra}{ours}"), format!("{body}\n{ours}{extra}")] {
                assert_eq!(verifier.verify(&note, ORIGIN).unwrap(), test_checkpoint());
            }
            assert_eq!(
                verifier.verify(&format!("{body}\n{extra}"), ORIGIN),
                Err(CheckpointError::NoSignature)
            );
        }
        assert_eq!(
            verifier.verify(&format!("{body}\n{theirs}{same_name_other_id}"), ORIGIN),
            Err(CheckpointError::NoSignature)
        );
        // Our name and id with a bad signature rejects the note, even next to a good one.
        let mut blob = STANDARD.decode(ours.trim_end().rsplit(' ').next().unwrap()).unwrap();
        blob[10] ^= 1;
        let bad = format!("\u{2014} {NAME} {}\n", STANDARD.encode(&blob));
        for note in [
            format!("{body}\n{bad}"),
            format!("{body}\n{ours}{bad}"),
            format!("{body}\n{bad}{ours}"),
        ] {
            assert_eq!(verifier.verify(&note, ORIGIN), Err(CheckpointError::BadSignature));
        }
        // Our name and id with a truncated signature.
        let short = format!("\u{2014} {NAME} {}\n", STANDARD.encode(&blob[..40]));
        assert_eq!(
            verifier.verify(&format!("{body}\n{ours}{short}"), ORIGIN),
            Err(CheckpointError::BadSignature)
        );
        // Sixteen foreign signatures are fine; a hundred and one lines are not.
        let many = format!("{body}\n{}{ours}", theirs.repeat(16));
        assert!(verifier.verify(&many, ORIGIN).is_ok());
        let too_many = format!("{body}\n{}{ours}", theirs.repeat(100));
        assert!(matches!(
            verifier.verify(&too_many, ORIGIN),
            Err(CheckpointError::MalformedNote(_))
        ));
    }

    #[test]
    fn malformed_notes_rejected() {
        let signer = test_signer();
        let verifier = signer.verifier();
        let note = signer.sign(&test_checkpoint());
        let (body, ours) = split_note(&note);
        let sig_b64 = ours.trim_end().rsplit(' ').next().unwrap();
        let root_b64 = STANDARD.encode(test_checkpoint().root);
        let cases: Vec<String> = vec![
            String::new(),
            "\n".into(),
            "\n\n".into(),
            body.to_owned(),                                             // no signatures, no blank line
            format!("{body}{ours}"),                                     // missing blank line
            format!("{body}\n"),                                         // blank line, no signatures
            format!("{body}\n\n{ours}"),                                 // two blank lines
            format!("\n{body}\n{ours}"),                                 // leading blank line
            format!("{body}\n{}", ours.trim_end()),                      // no final newline
            format!("{body}\n{ours}\n"),                                 // trailing blank line
            format!("{body}\n{ours}garbage"),                            // trailing garbage
            format!("{body}\n{ours}garbage\n"),                          // trailing garbage line
            format!("{body}\n{}", ours.replace('\u{2014}', "-")),        // ASCII dash
            format!("{body}\n{}", ours.replace('\u{2014}', "\u{2013}")), // en dash
            format!("{body}\n{}", ours.replacen(' ', "  ", 1)),          // two spaces
            format!("{body}\n{}", ours.replace(sig_b64, &sig_b64.replace('=', ""))), // unpadded
            format!("{body}\n{}", ours.replace(sig_b64, &format!("{sig_b64}=="))), // over-padded
            format!(
                "{body}\n{}",
                ours.replace(sig_b64, &sig_b64.replacen('A', "*", 1).replacen('a', "*", 1))
            ),
            format!("{body}\n{}", ours.replace(sig_b64, "")), // empty signature
            format!("{body}\n{}", ours.replace('\n', "\r\n")), // CRLF
            format!("{}\n{ours}", body.replace('\n', "\r\n")),
            format!("{}\n{ours}", body.replace("\n17\n", "\n017\n")),
            format!("{}\n{ours}", body.replace("\n17\n", "\n+17\n")),
            format!("{}\n{ours}", body.replace("\n17\n", "\n 17\n")),
            format!("{}\n{ours}", body.replace("\n17\n", "\n18446744073709551616\n")),
            format!("{}\n{ours}", body.replace("\n17\n", "\n\n")),
            format!("{}\n{ours}", body.replace(&root_b64, &root_b64.replace('=', ""))),
            format!("{}\n{ours}", body.replace(&root_b64, &STANDARD.encode([0u8; 31]))),
            format!("{}\n{ours}", body.replace(&root_b64, &STANDARD.encode([0u8; 33]))),
            format!("{}\n{ours}", body.replace(&root_b64, "not base64!")),
            format!("{}\n{ours}", body.replace(ORIGIN, "")),
            format!("{}\n{ours}", body.replace(ORIGIN, "a\tb")),
            format!("{}\n{ours}", body.replacen('\n', "\n\u{0}", 1)),
            format!("{ORIGIN}\n17\n\n{ours}"), // two-line body
            format!("\u{2014} {NAME} {sig_b64}\n\n{ours}"),
            "x".repeat(MAX_NOTE_BYTES + 1),
        ];
        for (i, case) in cases.iter().enumerate() {
            let r = verifier.verify(case, ORIGIN);
            assert!(r.is_err(), "case {i} accepted: {case:?}");
        }
        // Mutating every byte position does not panic and never verifies.
        let bytes = note.as_bytes();
        for i in 0..bytes.len() {
            for delta in [1u8, 0x20, 0x80] {
                let mut b = bytes.to_vec();
                b[i] ^= delta;
                if let Ok(s) = std::str::from_utf8(&b) {
                    assert!(verifier.verify(s, ORIGIN).is_err(), "byte {i} ^ {delta:#x} accepted");
                }
            }
            let truncated = String::from_utf8_lossy(&bytes[..i]);
            assert!(verifier.verify(&truncated, ORIGIN).is_err());
        }
    }

    #[test]
    fn malformed_vkeys_rejected() {
        let vkey = test_signer().vkey();
        let (name, rest) = vkey.split_once('+').unwrap();
        let (id, key) = rest.split_once('+').unwrap();
        let cases = [
            String::new(),
            name.to_owned(),
            format!("{name}+{id}"),
            format!("+{id}+{key}"),
            format!("a b+{id}+{key}"),
            format!("{name}+{}+{key}", &id[..7]),
            format!("{name}+{id}0+{key}"),
            format!("{name}+zzzzzzzz+{key}"),
            format!("{name}+{id}+{key}="),
            format!("{name}+{id}+{}", &key[..key.len() - 4]),
            format!("{name}+{id}+{}", STANDARD.encode([1u8; 32])),
            format!("{name}+{id}+{}", STANDARD.encode([2u8; 33])),
            format!("{name}+{id}+{}", STANDARD.encode([1u8; 34])),
            format!(
                "{name}+{id}+{}",
                STANDARD.encode({
                    let mut weak = [0u8; 33];
                    weak[0] = 1;
                    weak[1] = 1; // the identity point: small order
                    weak
                })
            ),
            format!("{name}x+{id}+{key}"),
        ];
        for case in &cases {
            assert!(NoteVerifier::from_vkey(case).is_err(), "accepted {case:?}");
        }
        assert!(NoteVerifier::from_vkey(&vkey).is_ok());
        assert!(NoteVerifier::from_vkey(&format!("{name}+{}+{key}", id.to_uppercase())).is_ok());
    }

    #[test]
    fn invalid_names_and_checkpoints() {
        for name in ["", "a b", "a+b", "a\nb", "a\u{a0}b"] {
            assert_eq!(
                NoteSigner::try_from_seed(name, &[1; 32]).err(),
                Some(CheckpointError::InvalidKeyName)
            );
        }
        let signer = test_signer();
        for cp in [
            Checkpoint::new("", 1, [0; 32]),
            Checkpoint::new("a\nb", 1, [0; 32]),
            Checkpoint {
                extensions: vec![String::new()],
                ..test_checkpoint()
            },
            Checkpoint {
                extensions: vec!["x\ny".into()],
                ..test_checkpoint()
            },
        ] {
            assert!(signer.try_sign(&cp).is_err());
        }
        fn zeroized_on_drop<T: zeroize::ZeroizeOnDrop>() {}
        zeroized_on_drop::<SigningKey>();
        let debug = format!("{signer:?}");
        assert!(debug.contains("redacted") && !debug.contains("0707"), "{debug}");
    }

    #[test]
    #[should_panic(expected = "invalid key name")]
    fn from_seed_panics_on_an_invalid_name() {
        let _ = NoteSigner::from_seed("has space", &[1; 32]);
    }
}
