//! The offline audit accepts the golden log and refuses any single changed byte.

use std::path::Path;

use callproof_tlog::audit::audit_log_dir;

use crate::support::*;

fn audit(
    dir: &Path,
) -> Result<callproof_tlog::audit::AuditReport, callproof_tlog::audit::AuditFailure> {
    audit_log_dir(dir, &tessera_verifier(), &mut |_, _| {})
}

#[test]
fn golden_log_passes() {
    let report = audit(&tessera_log()).unwrap();
    assert_eq!(report.checkpoint.size, 15);
    assert_eq!(report.kept_checkpoints.len(), 16);
    // 15 partial bundles and 15 partial tiles, all covered by a checkpoint.
    assert_eq!((report.bundles_checked, report.tiles_checked), (15, 15));
    assert!(report.unchecked_files.is_empty());
}

#[test]
fn every_flipped_byte_of_every_file_fails() {
    let golden = tessera_log();
    let copy = tempfile::tempdir().unwrap();
    copy_dir(&golden, copy.path());
    let mut checked = 0;
    for file in list_files(&golden)
        .into_iter()
        .filter(|file| file != "LICENSE")
    {
        let original = std::fs::read(golden.join(&file)).unwrap();
        let len = original.len();
        let mut positions = vec![0, 1, len / 3, len / 2, len.saturating_sub(2), len - 1];
        positions.sort_unstable();
        positions.dedup();
        for position in positions {
            for flip in [0x01u8, 0x80] {
                let mut changed = original.clone();
                changed[position] ^= flip;
                std::fs::write(copy.path().join(&file), &changed).unwrap();
                let result = audit(copy.path());
                assert!(
                    result.is_err(),
                    "{file}: flipping {flip:#x} at byte {position} went unnoticed"
                );
                checked += 1;
            }
        }
        // Truncated and extended copies fail too.
        for changed in [
            original[..len - 1].to_vec(),
            [original.as_slice(), b"\n"].concat(),
        ] {
            std::fs::write(copy.path().join(&file), &changed).unwrap();
            assert!(
                audit(copy.path()).is_err(),
                "{file}: length change went unnoticed"
            );
        }
        std::fs::write(copy.path().join(&file), &original).unwrap();
    }
    assert!(checked > 500, "{checked}");
    audit(copy.path()).unwrap();
}

#[test]
fn failure_names_file_and_entry() {
    let copy = tempfile::tempdir().unwrap();
    copy_dir(&tessera_log(), copy.path());
    let file = copy.path().join("tile/0/000.p/15");
    let mut tile = std::fs::read(&file).unwrap();
    tile[3 * 32 + 7] ^= 1;
    std::fs::write(&file, tile).unwrap();
    let failure = audit(copy.path()).unwrap_err();
    assert_eq!(failure.path, "tile/0/000.p/15");
    assert!(failure.to_string().contains("entry 3"), "{failure}");

    let missing = tempfile::tempdir().unwrap();
    copy_dir(&tessera_log(), missing.path());
    std::fs::remove_file(missing.path().join("tile/entries/000.p/15")).unwrap();
    let failure = audit(missing.path()).unwrap_err();
    assert_eq!(failure.path, "tile/entries/000.p/15");
}

#[test]
fn missing_kept_checkpoints_are_fine_but_a_forked_one_is_not() {
    let copy = tempfile::tempdir().unwrap();
    copy_dir(&tessera_log(), copy.path());
    for size in 0..=15 {
        std::fs::remove_file(copy.path().join(format!("checkpoint.{size}"))).unwrap();
    }
    let report = audit(copy.path()).unwrap();
    assert!(report.kept_checkpoints.is_empty());
    // A validly signed checkpoint for size 5 that is not a prefix of the log (a fork).
    let signer = tessera_signer();
    let forked = callproof_tlog::checkpoint::Checkpoint {
        origin: TESSERA_ORIGIN.into(),
        size: 5,
        root_hash: [7; 32],
        extensions: vec![],
    };
    std::fs::create_dir_all(copy.path().join("checkpoints")).unwrap();
    std::fs::write(
        copy.path().join("checkpoints/5"),
        signer.sign(&forked.to_text()).unwrap(),
    )
    .unwrap();
    let failure = audit(copy.path()).unwrap_err();
    assert_eq!(failure.path, "checkpoints/5");
}

/// An older partial tile or bundle that differs from the current one fails the audit only
/// if a kept checkpoint relies on it; otherwise an append that crashed before publishing
/// its checkpoint may have left it, and it is reported instead.
#[test]
fn a_differing_older_partial_fails_only_when_a_kept_checkpoint_has_it() {
    let copy = tempfile::tempdir().unwrap();
    copy_dir(&tessera_log(), copy.path());
    for file in ["tile/0/000.p/7", "tile/entries/000.p/7"] {
        let path = copy.path().join(file);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[3] ^= 1;
        std::fs::write(&path, bytes).unwrap();
    }
    let failure = audit(copy.path()).unwrap_err();
    assert_eq!(failure.path, "tile/0/000.p/7");

    std::fs::remove_file(copy.path().join("checkpoint.7")).unwrap();
    let report = audit(copy.path()).unwrap();
    assert_eq!(
        report.unchecked_files,
        vec!["tile/0/000.p/7", "tile/entries/000.p/7"]
    );
    assert_eq!((report.bundles_checked, report.tiles_checked), (14, 14));
}
