//! The one error type of the crate.
//!
//! Messages are lowercase and name the offending thing (a configuration key, a detector, a
//! field rule). They never quote a matched value: errors end up in logs, and a log line must
//! not carry the PII the masker exists to remove.

/// Everything that can go wrong while building a [`Masker`](crate::Masker) or masking input.
#[derive(thiserror::Error, Debug)]
#[non_exhaustive]
pub enum MaskingError {
    /// A `[masking]` key holds a value the engine cannot use.
    #[error("`masking.{key}` {reason}")]
    InvalidConfig { key: &'static str, reason: String },

    /// `masking.detectors` (or `masking.detector_replacement`) names a detector that does not exist.
    #[error("unknown detector `{name}` in `masking.{key}`")]
    UnknownDetector { key: &'static str, name: String },

    /// A `[[masking.custom]]` entry is unusable: bad name, bad or too expensive pattern.
    #[error("custom detector `{name}`: {reason}")]
    InvalidCustomDetector { name: String, reason: String },

    /// A policy field rule is not a JSON pointer nor a key name.
    #[error("field rule {rule:?}: {reason}")]
    InvalidFieldRule { rule: String, reason: String },

    /// The JSON document nests deeper than `masking.max_depth`.
    #[error("document nests deeper than `masking.max_depth` ({max_depth})")]
    TooDeep { max_depth: usize },

    /// Input handed to [`Masker::mask_bytes`](crate::Masker::mask_bytes) is not UTF-8.
    #[error("input is not valid UTF-8 (first invalid byte at offset {offset})")]
    InvalidUtf8 { offset: usize },
}
