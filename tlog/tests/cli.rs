//! `callproof-verify` end to end: exit codes 0 (valid), 1 (invalid), 2 (usage).

use std::path::Path;
use std::process::Command;

use callproof_tlog::proof::format_consistency_proof;
use callproof_tlog::store::LogReader;

use crate::support::*;

fn verify(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_callproof-verify"))
        .args(args)
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn log_audit_exit_codes() {
    let golden = tessera_log();
    let (code, stdout, _) = verify(&["log", "--key", TESSERA_VERIFIER, path_str(&golden)]);
    assert_eq!(code, 0, "{stdout}");
    assert!(
        stdout.starts_with("OK: example.com/log/testdata at size 15"),
        "{stdout}"
    );

    // The key may be given as a file.
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("log.pub");
    std::fs::write(&key_file, format!("{TESSERA_VERIFIER}\n")).unwrap();
    let (code, stdout, _) = verify(&[
        "--json",
        "log",
        "--key",
        path_str(&key_file),
        path_str(&golden),
    ]);
    assert_eq!(code, 0);
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["valid"], true);
    assert_eq!(report["size"], 15);

    // A changed byte: exit 1, naming the file.
    let copy = dir.path().join("log");
    copy_dir(&golden, &copy);
    let bundle = copy.join("tile/entries/000.p/15");
    let mut bytes = std::fs::read(&bundle).unwrap();
    bytes[2] ^= 1; // the first byte of entry 0, "one"
    std::fs::write(&bundle, bytes).unwrap();
    let (code, stdout, _) = verify(&["--json", "log", "--key", TESSERA_VERIFIER, path_str(&copy)]);
    assert_eq!(code, 1, "{stdout}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["valid"], false);
    assert!(
        report["file"]
            .as_str()
            .unwrap()
            .ends_with("tile/0/000.p/15"),
        "{report}"
    );
    let error = report["error"].as_str().unwrap();
    assert!(
        error.contains("entry 0 in tile/entries/000.p/15"),
        "{error}"
    );

    // A different key: exit 1. A malformed key or missing arguments: exit 2.
    let (_, other_key) = callproof_tlog::note::NoteSigner::generate(TESSERA_ORIGIN).unwrap();
    assert_eq!(
        verify(&["log", "--key", &other_key, path_str(&golden)]).0,
        1
    );
    assert_eq!(
        verify(&["log", "--key", "not-a-key", path_str(&golden)]).0,
        2
    );
    assert_eq!(verify(&["log", path_str(&golden)]).0, 2);
    assert_eq!(verify(&["frobnicate"]).0, 2);
    assert_eq!(
        verify(&["log", "--key", TESSERA_VERIFIER, "/nonexistent"]).0,
        1
    );
}

#[test]
fn proof_and_consistency_commands() {
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str| dir.path().join(name);
    runtime().block_on(async {
        let store = memory_store();
        let mut writer = tessera_writer(&store).await;
        for entry in TESSERA_ENTRIES {
            writer
                .append(&[entry.as_bytes().to_vec()], &[])
                .await
                .unwrap();
        }
        let reader = LogReader::new(
            store.clone(),
            object_store::path::Path::default(),
            tessera_verifier(),
        );
        let latest = reader.checkpoint().await.unwrap();
        let proof = reader.tlog_proof(2, &latest).await.unwrap();
        std::fs::write(file("three.tlog-proof"), proof.to_bytes()).unwrap();
        let consistency = reader.consistency_proof(5, 15, 15).await.unwrap();
        std::fs::write(file("5-15.proof"), format_consistency_proof(&consistency)).unwrap();
    });
    std::fs::write(file("three"), "three").unwrap();
    std::fs::write(file("four"), "four").unwrap();
    let proof = file("three.tlog-proof");
    let (code, stdout, _) = verify(&[
        "proof",
        "--key",
        TESSERA_VERIFIER,
        path_str(&file("three")),
        path_str(&proof),
    ]);
    assert_eq!(code, 0, "{stdout}");
    let (code, stdout, _) = verify(&[
        "proof",
        "--key",
        TESSERA_VERIFIER,
        path_str(&file("four")),
        path_str(&proof),
    ]);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("three.tlog-proof"), "{stdout}");

    let golden = tessera_log();
    let old = golden.join("checkpoint.5");
    let new = golden.join("checkpoint.15");
    let consistency = file("5-15.proof");
    let (code, stdout, _) = verify(&[
        "consistency",
        "--key",
        TESSERA_VERIFIER,
        path_str(&old),
        path_str(&new),
        path_str(&consistency),
    ]);
    assert_eq!(code, 0, "{stdout}");
    let wrong_old = golden.join("checkpoint.6");
    let (code, _, _) = verify(&[
        "consistency",
        "--key",
        TESSERA_VERIFIER,
        path_str(&wrong_old),
        path_str(&new),
        path_str(&consistency),
    ]);
    assert_eq!(code, 1);
    // Equal sizes need an empty proof.
    std::fs::write(file("empty.proof"), "").unwrap();
    let (code, _, _) = verify(&[
        "--json",
        "consistency",
        "--key",
        TESSERA_VERIFIER,
        path_str(&new),
        path_str(&new),
        path_str(&file("empty.proof")),
    ]);
    assert_eq!(code, 0);
    // From the empty tree: an empty proof, and the size-0 checkpoint's root is checked.
    let old = golden.join("checkpoint.0");
    let (code, stdout, _) = verify(&[
        "consistency",
        "--key",
        TESSERA_VERIFIER,
        path_str(&old),
        path_str(&new),
        path_str(&file("empty.proof")),
    ]);
    assert_eq!(code, 0, "{stdout}");
}

/// `callproof-verify bundle` said OK for a bundle from which an entry, its proof and its
/// manifest line were removed, and for one whose report.html was rewritten: now exit 1, naming
/// them.
#[test]
fn bundle_command_names_a_removed_entry_and_a_rewritten_report() {
    use callproof_tlog::bundle::{self, Manifest};

    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, files: &bundle::BundleFiles| {
        let path = dir.path().join(name);
        std::fs::write(&path, crate::bundle::tar_gz(files)).unwrap();
        path
    };
    let valid = crate::bundle::valid_bundle();
    let path = write("valid.tar.gz", &valid);
    let (code, stdout, stderr) = verify(&["bundle", "--key", TESSERA_VERIFIER, path_str(&path)]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.starts_with("OK: "), "{stdout}");
    assert!(stdout.contains("8 entries, 2 edge entries"), "{stdout}");

    // The range narrowed to the kept checkpoint at 6: the edge after it is in the period.
    let narrowed = crate::bundle::bundle_of(&crate::bundle::Options {
        entries_to: 6,
        ..Default::default()
    });
    let path = write("narrowed.tar.gz", &narrowed);
    let (code, stdout, _) = verify(&["bundle", "--key", TESSERA_VERIFIER, path_str(&path)]);
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout.contains("INVALID: partition 0 index 6: logs/0/entries/6: the entry just after the range 2..6 has time"),
        "{stdout}"
    );

    let mut removed = valid.clone();
    removed.remove(&bundle::entry_path(0, 4));
    removed.remove(&bundle::proof_path(0, 4));
    let mut manifest: Manifest = serde_json::from_slice(&removed[bundle::MANIFEST_PATH]).unwrap();
    manifest.partitions[0].entries.retain(|index| *index != 4);
    removed.insert(
        bundle::MANIFEST_PATH.into(),
        serde_json::to_vec_pretty(&manifest).unwrap(),
    );
    let path = write("removed.tar.gz", &removed);
    let (code, stdout, _) = verify(&["bundle", "--key", TESSERA_VERIFIER, path_str(&path)]);
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout.contains("INVALID: partition 0 index 4: logs/0/entries/4: missing"),
        "{stdout}"
    );

    let mut rewritten = valid.clone();
    let html = String::from_utf8(rewritten[bundle::REPORT_HTML_PATH].clone()).unwrap();
    rewritten.insert(
        bundle::REPORT_HTML_PATH.into(),
        html.replace("No exceptions.", "No exceptions at all.")
            .into_bytes(),
    );
    let path = write("rewritten.tar.gz", &rewritten);
    let (code, stdout, _) = verify(&["bundle", "--key", TESSERA_VERIFIER, path_str(&path)]);
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout.contains("INVALID: report.html: is not the page of the report the entries give"),
        "{stdout}"
    );
}
