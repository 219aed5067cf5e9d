//! `callproof-verify` builds without tokio: the crate's normal dependencies without the
//! `store` feature contain no tokio (nor object_store).

use std::process::Command;

#[test]
fn verifier_dependencies_have_no_tokio() {
    let output = Command::new(env!("CARGO"))
        .args([
            "tree",
            "--offline",
            "-p",
            "callproof-tlog",
            "--no-default-features",
            "-e",
            "normal",
            "--prefix",
            "none",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let tree = String::from_utf8_lossy(&output.stdout);
    assert!(tree.contains("ed25519-dalek"), "{tree}");
    for forbidden in ["tokio ", "object_store ", "rdkafka ", "tantivy "] {
        assert!(!tree.contains(forbidden), "{forbidden}found in:\n{tree}");
    }
}
