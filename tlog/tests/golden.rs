//! The writer reproduces the golden Tessera log byte for byte.

use callproof_tlog::audit::audit_log_dir;
use object_store::local::LocalFileSystem;

use crate::support::*;

#[test]
fn writer_reproduces_tessera_log_byte_for_byte() {
    runtime().block_on(async {
        let golden = tessera_log();
        let store = memory_store();
        let mut writer = tessera_writer(&store).await;
        // Opening an empty log publishes the empty checkpoint.
        assert_eq!(
            writer.checkpoint().note,
            std::fs::read(golden.join("checkpoint.0")).unwrap()
        );
        for (position, entry) in TESSERA_ENTRIES.iter().enumerate() {
            let size = position + 1;
            let signed = writer
                .append(&[entry.as_bytes().to_vec()], &[])
                .await
                .unwrap();
            let expected = std::fs::read(golden.join(format!("checkpoint.{size}"))).unwrap();
            assert_eq!(
                String::from_utf8_lossy(&signed.note),
                String::from_utf8_lossy(&expected),
                "checkpoint.{size}"
            );
            assert_eq!(
                read_object(&store, &format!("checkpoints/{size}"))
                    .await
                    .unwrap(),
                expected
            );
        }
        assert_eq!(
            read_object(&store, "checkpoint").await.unwrap(),
            std::fs::read(golden.join("checkpoint")).unwrap()
        );
        // Every tile and bundle of the golden log, and nothing else under tile/.
        let golden_tiles: Vec<String> = list_files(&golden)
            .into_iter()
            .filter(|file| file.starts_with("tile/"))
            .collect();
        for file in &golden_tiles {
            assert_eq!(
                read_object(&store, file).await.as_deref(),
                Some(std::fs::read(golden.join(file)).unwrap().as_slice()),
                "{file}"
            );
        }
        let written_tiles: Vec<String> = list_objects(&store)
            .await
            .into_iter()
            .filter(|path| path.starts_with("tile/"))
            .collect();
        assert_eq!(written_tiles, golden_tiles);
    });
}

#[test]
fn log_written_to_local_filesystem_passes_the_audit() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let store: std::sync::Arc<dyn object_store::ObjectStore> =
            std::sync::Arc::new(LocalFileSystem::new_with_prefix(dir.path()).unwrap());
        let mut writer = tessera_writer(&store).await;
        for entry in TESSERA_ENTRIES {
            writer
                .append(&[entry.as_bytes().to_vec()], &[])
                .await
                .unwrap();
        }
    });
    let report = audit_log_dir(dir.path(), &tessera_verifier(), &mut |_, _| {}).unwrap();
    assert_eq!(report.checkpoint.size, 15);
    assert_eq!(report.kept_checkpoints, (0..=15).collect::<Vec<u64>>());
    assert!(report.unchecked_files.is_empty());
    // Same tiles as the golden log.
    for file in list_files(&tessera_log())
        .iter()
        .filter(|file| file.starts_with("tile/"))
    {
        assert_eq!(
            std::fs::read(dir.path().join(file)).unwrap(),
            std::fs::read(tessera_log().join(file)).unwrap(),
            "{file}"
        );
    }
}
