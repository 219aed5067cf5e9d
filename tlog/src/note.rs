//! C2SP `signed-note` with Ed25519 signatures: keys, signing and verification.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// Signature type identifier of Ed25519 in signed notes.
const ALGORITHM_ED25519: u8 = 0x01;
/// Most signature lines a note may carry; the spec requires accepting at least 16.
pub const MAX_SIGNATURES: usize = 100;
/// Largest note accepted, to bound the work an attacker can cause.
pub const MAX_NOTE_SIZE: usize = 1 << 20;

/// The key ID of an Ed25519 key: `SHA-256(name || 0x0A || 0x01 || public key)[:4]`.
pub fn key_id(name: &str, public_key: &[u8; 32]) -> u32 {
    let mut hasher = Sha256::new();
    hasher.update(name.as_bytes());
    hasher.update([b'\n', ALGORITHM_ED25519]);
    hasher.update(public_key);
    let digest = hasher.finalize();
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

fn check_key_name(name: &str) -> Result<()> {
    if name.is_empty() || name.contains('+') || name.chars().any(char::is_whitespace) {
        return Err(Error::malformed(
            "key name",
            format!("a key name must be non-empty, without spaces or `+`, but it is {name:?}"),
        ));
    }
    Ok(())
}

/// Decodes the `hash+base64` tail of a key string into the key ID and the 32 key bytes.
fn decode_key_parts(what: &'static str, id_hex: &str, key_base64: &str) -> Result<(u32, [u8; 32])> {
    if id_hex.len() != 8 || !id_hex.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        return Err(Error::malformed(what, "the key ID is not 8 hex digits"));
    }
    let id = u32::from_str_radix(id_hex, 16)
        .map_err(|_| Error::malformed(what, "the key ID is not 8 hex digits"))?;
    let bytes = STANDARD
        .decode(key_base64)
        .map_err(|error| Error::malformed(what, format!("invalid base64: {error}")))?;
    match bytes.split_first() {
        Some((&ALGORITHM_ED25519, key)) => {
            let key = <[u8; 32]>::try_from(key).map_err(|_| {
                Error::malformed(
                    what,
                    format!("an Ed25519 key is 32 bytes, not {}", key.len()),
                )
            })?;
            Ok((id, key))
        }
        Some((algorithm, _)) => Err(Error::malformed(
            what,
            format!("unsupported signature type {algorithm:#04x}, only Ed25519 (0x01) is"),
        )),
        None => Err(Error::malformed(what, "the key is empty")),
    }
}

/// A key that signs notes, parsed from `PRIVATE+KEY+<name>+<keyid>+<base64(0x01 || seed)>`.
#[derive(Clone)]
pub struct NoteSigner {
    name: String,
    key_id: u32,
    key: SigningKey,
}

impl NoteSigner {
    /// Generates a new key pair for `name`; returns the signer key string (secret) and the
    /// verifier key string (public).
    pub fn generate(name: &str) -> Result<(String, String)> {
        check_key_name(name)?;
        let key = SigningKey::generate(&mut rand::rngs::OsRng);
        let signer = Self {
            name: name.to_owned(),
            key_id: key_id(name, key.verifying_key().as_bytes()),
            key,
        };
        Ok((signer.to_key_string(), signer.verifier().to_string()))
    }

    /// The signer key string (`PRIVATE+KEY+...`); it is secret, handle it as such.
    pub fn to_key_string(&self) -> String {
        let mut encoded = vec![ALGORITHM_ED25519];
        encoded.extend_from_slice(self.key.as_bytes());
        format!(
            "PRIVATE+KEY+{}+{:08x}+{}",
            self.name,
            self.key_id,
            STANDARD.encode(encoded)
        )
    }

    /// The key name (also the name on the signature lines).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key ID.
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// The matching verifier.
    pub fn verifier(&self) -> NoteVerifier {
        NoteVerifier {
            name: self.name.clone(),
            key_id: self.key_id,
            key: self.key.verifying_key(),
        }
    }

    /// Signs a note text (which must end with a newline) and returns the signed note:
    /// the text, a blank line and one signature line.
    pub fn sign(&self, text: &str) -> Result<Vec<u8>> {
        check_note_text(text)?;
        let signature = self.key.sign(text.as_bytes());
        let mut encoded = self.key_id.to_be_bytes().to_vec();
        encoded.extend_from_slice(&signature.to_bytes());
        let note = format!(
            "{text}\n\u{2014} {} {}\n",
            self.name,
            STANDARD.encode(encoded)
        );
        Ok(note.into_bytes())
    }
}

impl FromStr for NoteSigner {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        const WHAT: &str = "signer key";
        let text = text.trim();
        // The base64 key may itself contain `+`, so split off the first four fields only.
        let parts: Vec<&str> = text.splitn(5, '+').collect();
        let [private, key_word, name, id_hex, key_base64] = parts.as_slice() else {
            return Err(Error::malformed(
                WHAT,
                "expected PRIVATE+KEY+<name>+<keyid>+<key>",
            ));
        };
        if *private != "PRIVATE" || *key_word != "KEY" {
            return Err(Error::malformed(WHAT, "expected the PRIVATE+KEY+ prefix"));
        }
        check_key_name(name)?;
        let (id, seed) = decode_key_parts(WHAT, id_hex, key_base64)?;
        let key = SigningKey::from_bytes(&seed);
        if key_id(name, key.verifying_key().as_bytes()) != id {
            return Err(Error::malformed(WHAT, "the key ID does not match the key"));
        }
        Ok(Self {
            name: (*name).to_owned(),
            key_id: id,
            key,
        })
    }
}

impl fmt::Debug for NoteSigner {
    // Never print the private key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NoteSigner")
            .field("name", &self.name)
            .field("key_id", &format_args!("{:08x}", self.key_id))
            .finish_non_exhaustive()
    }
}

/// A key that verifies notes, parsed from `<name>+<keyid>+<base64(0x01 || public key)>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoteVerifier {
    name: String,
    key_id: u32,
    key: VerifyingKey,
}

impl NoteVerifier {
    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key ID.
    pub fn key_id(&self) -> u32 {
        self.key_id
    }
}

impl FromStr for NoteVerifier {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        const WHAT: &str = "verifier key";
        let text = text.trim();
        // The base64 key may itself contain `+`, so split off the first two fields only.
        let parts: Vec<&str> = text.splitn(3, '+').collect();
        let [name, id_hex, key_base64] = parts.as_slice() else {
            return Err(Error::malformed(WHAT, "expected <name>+<keyid>+<key>"));
        };
        check_key_name(name)?;
        let (id, public) = decode_key_parts(WHAT, id_hex, key_base64)?;
        if key_id(name, &public) != id {
            return Err(Error::malformed(WHAT, "the key ID does not match the key"));
        }
        let key = VerifyingKey::from_bytes(&public)
            .map_err(|_| Error::malformed(WHAT, "not a valid Ed25519 public key"))?;
        Ok(Self {
            name: (*name).to_owned(),
            key_id: id,
            key,
        })
    }
}

impl fmt::Display for NoteVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut encoded = vec![ALGORITHM_ED25519];
        encoded.extend_from_slice(self.key.as_bytes());
        write!(
            f,
            "{}+{:08x}+{}",
            self.name,
            self.key_id,
            STANDARD.encode(encoded)
        )
    }
}

/// One signature line of a note.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoteSignature {
    pub name: String,
    pub key_id: u32,
    /// The signature proper, without the 4-byte key ID.
    pub signature: Vec<u8>,
}

/// A parsed, not yet verified, signed note.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedNote {
    /// The note text, ending with a newline (without the blank separator line).
    pub text: String,
    pub signatures: Vec<NoteSignature>,
}

fn check_note_text(text: &str) -> Result<()> {
    if !text.ends_with('\n') {
        return Err(Error::malformed(
            "note",
            "the text does not end with a newline",
        ));
    }
    if let Some(control) = text.chars().find(|&c| c < ' ' && c != '\n') {
        return Err(Error::malformed(
            "note",
            format!("control character {control:?} in the text"),
        ));
    }
    Ok(())
}

impl SignedNote {
    /// Parses a signed note; the text is separated from the signatures by the last blank line.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        const WHAT: &str = "signed note";
        if bytes.len() > MAX_NOTE_SIZE {
            return Err(Error::malformed(
                WHAT,
                format!(
                    "a note is at most {MAX_NOTE_SIZE} bytes, this one is {}",
                    bytes.len()
                ),
            ));
        }
        let note = std::str::from_utf8(bytes)
            .map_err(|error| Error::malformed(WHAT, format!("not UTF-8: {error}")))?;
        if let Some(control) = note.chars().find(|&c| c < ' ' && c != '\n') {
            return Err(Error::malformed(
                WHAT,
                format!("control character {control:?} in the note"),
            ));
        }
        let separator = note
            .rfind("\n\n")
            .ok_or_else(|| Error::malformed(WHAT, "no blank line before the signatures"))?;
        let (text, signature_block) = (&note[..=separator], &note[separator + 2..]);
        let signature_block = signature_block
            .strip_suffix('\n')
            .ok_or_else(|| Error::malformed(WHAT, "the signatures do not end with a newline"))?;
        let mut signatures = Vec::new();
        for line in signature_block.split('\n') {
            if signatures.len() == MAX_SIGNATURES {
                return Err(Error::malformed(
                    WHAT,
                    format!("more than {MAX_SIGNATURES} signatures"),
                ));
            }
            signatures.push(parse_signature_line(line)?);
        }
        Ok(Self {
            text: text.to_owned(),
            signatures,
        })
    }

    /// Verifies the note's signature by `verifier` and returns the note text.
    ///
    /// Signatures by other keys are ignored, as the spec requires (they may be witness
    /// cosignatures). Exactly one signature by the verifier's key must be present and valid:
    /// a duplicate is refused rather than guessed at.
    pub fn verify(&self, verifier: &NoteVerifier) -> Result<&str> {
        let mut matching = self.signatures.iter().filter(|signature| {
            signature.name == verifier.name && signature.key_id == verifier.key_id
        });
        let signature = matching.next().ok_or_else(|| {
            Error::Signature(format!(
                "no signature by key {}+{:08x}",
                verifier.name, verifier.key_id
            ))
        })?;
        if matching.next().is_some() {
            return Err(Error::Signature(format!(
                "duplicate signatures by key {}+{:08x}",
                verifier.name, verifier.key_id
            )));
        }
        let signature = Signature::from_slice(&signature.signature).map_err(|_| {
            Error::Signature(format!(
                "an Ed25519 signature is 64 bytes, not {}",
                signature.signature.len()
            ))
        })?;
        verifier
            .key
            .verify(self.text.as_bytes(), &signature)
            .map_err(|_| {
                Error::Signature(format!(
                    "the signature by key {}+{:08x} does not match the note text",
                    verifier.name, verifier.key_id
                ))
            })?;
        Ok(&self.text)
    }

    /// Parses `bytes` and verifies it in one step.
    pub fn open(bytes: &[u8], verifier: &NoteVerifier) -> Result<String> {
        let note = Self::parse(bytes)?;
        note.verify(verifier).map(str::to_owned)
    }
}

fn parse_signature_line(line: &str) -> Result<NoteSignature> {
    const WHAT: &str = "note signature line";
    let rest = line.strip_prefix("\u{2014} ").ok_or_else(|| {
        Error::malformed(WHAT, format!("{line:?} does not start with an em dash"))
    })?;
    let (name, encoded) = rest.split_once(' ').ok_or_else(|| {
        Error::malformed(WHAT, format!("no space after the key name in {line:?}"))
    })?;
    check_key_name(name)?;
    let bytes = STANDARD
        .decode(encoded)
        .map_err(|error| Error::malformed(WHAT, format!("invalid base64: {error}")))?;
    let (id, signature) = bytes
        .split_first_chunk::<4>()
        .ok_or_else(|| Error::malformed(WHAT, "a signature is at least the 4-byte key ID"))?;
    Ok(NoteSignature {
        name: name.to_owned(),
        key_id: u32::from_be_bytes(*id),
        signature: signature.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIGNER: &str = "PRIVATE+KEY+example.com/log/testdata+33d7b496+AeymY/SZAX0jZcJ8enZ5FY1Dz+wTML2yWSkK+9DSF3eg";
    const VERIFIER: &str =
        "example.com/log/testdata+33d7b496+AeHTu4Q3hEIMHNqc6fASMsq3rKNx280NI+oO5xCFkkSx";

    #[test]
    fn keys_round_trip_and_match() {
        let signer: NoteSigner = SIGNER.parse().unwrap();
        assert_eq!(signer.to_key_string(), SIGNER);
        assert_eq!(signer.verifier().to_string(), VERIFIER);
        let verifier: NoteVerifier = VERIFIER.parse().unwrap();
        assert_eq!(signer.verifier(), verifier);
        assert!(!format!("{signer:?}").contains("AeymY"));
    }

    #[test]
    fn generated_keys_sign_and_verify() {
        let (signer, verifier) = NoteSigner::generate("callproof.example/logs/0").unwrap();
        let signer: NoteSigner = signer.parse().unwrap();
        let verifier: NoteVerifier = verifier.parse().unwrap();
        let note = signer.sign("hello\n").unwrap();
        assert_eq!(SignedNote::open(&note, &verifier).unwrap(), "hello\n");
    }

    #[test]
    fn refuses_wrong_key_tampering_and_duplicates() {
        let signer: NoteSigner = SIGNER.parse().unwrap();
        let verifier = signer.verifier();
        let note = signer.sign("a\n\nb\n").unwrap();
        assert_eq!(SignedNote::open(&note, &verifier).unwrap(), "a\n\nb\n");

        let (_, other) = NoteSigner::generate("example.com/log/testdata").unwrap();
        let other: NoteVerifier = other.parse().unwrap();
        assert!(SignedNote::open(&note, &other).is_err());

        let mut tampered = note.clone();
        tampered[0] ^= 1;
        assert!(SignedNote::open(&tampered, &verifier).is_err());

        let text = String::from_utf8(note.clone()).unwrap();
        let signature_line = text.lines().last().unwrap();
        let duplicated = format!("{text}{signature_line}\n");
        let error = SignedNote::open(duplicated.as_bytes(), &verifier).unwrap_err();
        assert!(error.to_string().contains("duplicate"), "{error}");
    }

    #[test]
    fn refuses_mismatched_key_ids() {
        let wrong_id = VERIFIER.replace("33d7b496", "33d7b497");
        assert!(wrong_id.parse::<NoteVerifier>().is_err());
        let wrong_id = SIGNER.replace("33d7b496", "33d7b497");
        assert!(wrong_id.parse::<NoteSigner>().is_err());
        assert!("a+b".parse::<NoteVerifier>().is_err());
        assert!("".parse::<NoteSigner>().is_err());
    }
}
