//! The `[masking]` section of the deployment TOML.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// The `[masking]` section. Every key has a default, so an empty section is valid.
///
/// ```toml
/// [masking]
/// detectors = ["CREDIT_CARD", "EMAIL"]   # omit for all built-ins
/// threshold = 0.5
/// replacement = "hmac"
/// hmac_key = "${CALLPROOF_MASKING_KEY}"
/// detector_replacement = { CREDIT_CARD = "partial" }
///
/// [[masking.custom]]
/// name = "EMPLOYEE_ID"
/// pattern = 'EMP-[0-9]{6}'
/// context = ["employee"]
/// ```
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MaskingConfig {
    /// Enabled built-in detectors by name; `None` enables all of them. Custom detectors are
    /// always enabled.
    pub detectors: Option<Vec<String>>,
    /// Also scan (and rename) JSON object keys.
    pub scan_keys: bool,
    /// Minimum confidence (0.0–1.0) for a validated match to be masked. Context words move a
    /// match's confidence up or down before it is compared with this.
    pub threshold: f32,
    /// Default replacement for every detector.
    pub replacement: Replacement,
    /// Per-detector replacement, overriding `replacement` (e.g. `CREDIT_CARD = "partial"`).
    pub detector_replacement: BTreeMap<String, Replacement>,
    /// How many trailing letters or digits `partial` keeps (1–8).
    pub partial_keep: usize,
    /// HMAC-SHA-256 key, required as soon as one detector uses `hmac`.
    pub hmac_key: Option<String>,
    /// Number of hex characters of the HMAC kept in the token (8–64).
    pub hmac_token_len: usize,
    /// Detectors defined by configuration.
    pub custom: Vec<CustomDetector>,
    /// Deepest JSON nesting accepted; deeper documents are an error, not a stack overflow.
    pub max_depth: usize,
}

impl Default for MaskingConfig {
    fn default() -> Self {
        MaskingConfig {
            detectors: None,
            scan_keys: false,
            threshold: 0.5,
            replacement: Replacement::Redact,
            detector_replacement: BTreeMap::new(),
            partial_keep: 4,
            hmac_key: None,
            hmac_token_len: 10,
            custom: Vec::new(),
            max_depth: 128,
        }
    }
}

// Hand-written so that the HMAC key never reaches a log through `{:?}`.
impl fmt::Debug for MaskingConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MaskingConfig")
            .field("detectors", &self.detectors)
            .field("scan_keys", &self.scan_keys)
            .field("threshold", &self.threshold)
            .field("replacement", &self.replacement)
            .field("detector_replacement", &self.detector_replacement)
            .field("partial_keep", &self.partial_keep)
            .field("hmac_key", &self.hmac_key.as_ref().map(|_| "<redacted>"))
            .field("hmac_token_len", &self.hmac_token_len)
            .field("custom", &self.custom)
            .field("max_depth", &self.max_depth)
            .finish()
    }
}

/// What a detected value is replaced with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Replacement {
    /// `[REDACTED:<DETECTOR>]`
    #[default]
    Redact,
    /// `[REDACTED:<DETECTOR>:...1111]`: the last `partial_keep` letters or digits survive.
    Partial,
    /// `[HMAC:<DETECTOR>:3f9a1c2b7d]`: equal values give equal tokens, so auditors can
    /// correlate occurrences without seeing the value.
    Hmac,
}

/// A `[[masking.custom]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomDetector {
    /// Stable name reported in findings and tokens: `[A-Z][A-Z0-9_]*`, at most 64 characters.
    pub name: String,
    /// A `regex` crate pattern (linear time by construction; size-limited at load).
    pub pattern: String,
    /// Checksum the match must also pass.
    #[serde(default)]
    pub validator: Option<Validator>,
    /// Words near the match (or in the JSON key holding it) that raise confidence.
    #[serde(default)]
    pub context: Vec<String>,
    /// Words near the match that lower confidence.
    #[serde(default)]
    pub negative_context: Vec<String>,
    /// Confidence of a match before context words (0.0–1.0).
    #[serde(default = "default_custom_confidence")]
    pub confidence: f32,
}

fn default_custom_confidence() -> f32 {
    0.8
}

/// Checksums a custom detector can require.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Validator {
    /// Luhn over the digits of the match (card numbers, IMEIs, many national IDs).
    Luhn,
    /// ISO 7064 MOD 97-10 as in IBANs: first four characters moved to the end, letters as
    /// 10–35, remainder must be 1.
    Mod97,
}
