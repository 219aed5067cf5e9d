//! PII and secret detection and masking, shared by ingress and the processor.
//!
//! - [`MaskingConfig`] is the `[masking]` section of the deployment TOML.
//! - [`Masker::new`] compiles it once; the [`Masker`] is `Send + Sync` and meant to be shared
//!   in an `Arc`.
//! - [`Masker::mask_json`] masks a JSON document in place: policy [`FieldRules`] first, then
//!   the detectors over every string (keys too if configured, and numbers that are card
//!   numbers). [`Masker::mask_text`] and [`Masker::mask_bytes`] mask free text.
//! - Every call returns [`Finding`]s: detector, JSON pointer and count, never the value.
//!
//! This crate knows nothing of HTTP, Kafka or files (the `callproof-mask` binary aside).
#![forbid(unsafe_code)]

mod checksum;
mod config;
mod detectors;
mod error;
mod fields;
mod masker;
mod phone;

pub use config::{CustomDetector, MaskingConfig, Replacement, Validator};
pub use error::MaskingError;
pub use fields::FieldRules;
pub use masker::Masker;

/// Names of the built-in detectors, in the order they are reported.
pub const BUILTIN_DETECTORS: [&str; 10] = [
    "CREDIT_CARD",
    "US_SSN",
    "IBAN",
    "EMAIL",
    "PHONE",
    "IP_ADDRESS",
    "AWS_ACCESS_KEY",
    "JWT",
    "BEARER_TOKEN",
    "PRIVATE_KEY",
];

/// Detector name reported for values masked by a policy field rule.
pub const FIELD_DETECTOR: &str = "FIELD";

/// One detector's hits in one value. Never carries the value itself.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Finding {
    /// Stable detector name (`CREDIT_CARD`, a custom name, or `FIELD` for policy fields).
    pub detector: String,
    /// RFC 6901 pointer of the value (after key masking); `""` for the root or free text.
    pub path: String,
    /// Number of matches in that value.
    pub count: u32,
}
