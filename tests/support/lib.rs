//! Test harness shared by the crates' integration tests and the end-to-end tests: the real
//! broker started by `.ci/run` (or a private one, or one behind TLS), a local OIDC issuer with its own keys, a
//! function service that records what reached it, upstream MCP servers of the official Python SDK
//! (`mcp_upstream`), and helpers to run the callproof binaries.
//!
//! Nothing here fakes a part of the system under test: the broker is Tansu, the issuer and the
//! function are real HTTP servers on loopback.

pub mod broker;
pub mod function_service;
pub mod issuer;
pub mod mcp_upstream;
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

/// The number of entries in every partition's log in a local store (`file://` URL's directory),
/// read from the checkpoints' second lines: how far the processor has got, seen from outside.
pub fn logged_entries(store: &std::path::Path) -> u64 {
    let Ok(partitions) = std::fs::read_dir(store.join("logs")) else {
        return 0;
    };
    partitions
        .filter_map(|partition| {
            let checkpoint =
                std::fs::read_to_string(partition.ok()?.path().join("checkpoint")).ok()?;
            checkpoint.lines().nth(1)?.parse::<u64>().ok()
        })
        .sum()
}

/// Log entries in published index splits, summed over the partitions of the local store at
/// `store`: per partition the largest end among the split names under `index/<p>/published/`
/// (`<start>-<end>-<level>-<id>`). With one indexer per partition, its splits are contiguous
/// from entry 0, so this is how many entries search reaches.
pub fn published_entries(store: &std::path::Path) -> u64 {
    let Ok(partitions) = std::fs::read_dir(store.join("index")) else {
        return 0;
    };
    partitions
        .flatten()
        .map(|partition| {
            std::fs::read_dir(partition.path().join("published"))
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|marker| {
                    let name = marker.file_name().to_string_lossy().to_string();
                    name.split('-').nth(1)?.parse::<u64>().ok()
                })
                .max()
                .unwrap_or(0)
        })
        .sum()
}
