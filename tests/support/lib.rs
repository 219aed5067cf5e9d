//! Test harness shared by the crates' integration tests and the end-to-end tests: the real
//! broker started by `.ci/run` (or a private one, or one behind TLS), a local OIDC issuer with its own keys, a
//! function service that records what reached it, and helpers to run the callproof binaries.
//!
//! Nothing here fakes a part of the system under test: the broker is Tansu, the issuer and the
//! function are real HTTP servers on loopback.

pub mod broker;
pub mod function_service;
pub mod issuer;
pub mod process;
pub mod tls;
pub mod webhook;

/// The workspace root, for paths to committed files and `../shared`.
pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default()
}
