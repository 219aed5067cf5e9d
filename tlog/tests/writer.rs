//! Writer scenarios: batches, extensions, resuming, and crashes between writes.

use std::sync::Arc;

use callproof_tlog::Error;
use callproof_tlog::audit::audit_log_dir;
use callproof_tlog::note::NoteSigner;
use callproof_tlog::store::{LogReader, LogWriter};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, PutPayload};

use crate::support::*;

fn entries(range: std::ops::Range<u64>) -> Vec<Vec<u8>> {
    range
        .map(|index| format!("entry {index}").into_bytes())
        .collect()
}

/// Every tile path the tree of `size` entries needs, with the bytes in `store`.
async fn tiles_at_size(store: &Arc<dyn ObjectStore>, size: u64) -> Vec<(String, Vec<u8>)> {
    use callproof_tlog::tile::{TileId, entries_path, tile_width};
    let mut tiles = Vec::new();
    for level in 0..8u8 {
        let mut index = 0;
        while let Some(tile) = TileId::for_tree_size(level, index, size) {
            tiles.push(tile.path());
            if level == 0 {
                tiles.push(entries_path(index, tile_width(0, index, size)));
            }
            index += 1;
        }
    }
    let mut contents = Vec::new();
    for path in tiles {
        let bytes = read_object(store, &path)
            .await
            .unwrap_or_else(|| panic!("{path} missing"));
        contents.push((path, bytes));
    }
    contents
}

#[test]
fn batches_across_tile_boundaries_audit_clean() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let store: Arc<dyn ObjectStore> =
            Arc::new(LocalFileSystem::new_with_prefix(dir.path()).unwrap());
        let mut writer = tessera_writer(&store).await;
        // Sizes 1, 256 (a full tile and a level-1 partial), 257, 65,536 (a full level-1 tile), 70,000.
        for (start, end) in [
            (0, 1),
            (1, 256),
            (256, 257),
            (257, 65_536),
            (65_536, 70_000),
        ] {
            let signed = writer
                .append(&entries(start..end), &[format!("offset {end}")])
                .await
                .unwrap();
            assert_eq!(signed.checkpoint.size, end);
            assert_eq!(signed.checkpoint.extensions, vec![format!("offset {end}")]);
            assert_eq!(writer.size(), end);
        }
    });
    for (file, present) in [
        ("tile/0/000", true),
        ("tile/1/000.p/1", true),
        ("tile/1/000", true),
        ("tile/1/001.p/17", true),
        ("tile/2/000.p/1", true),
        ("tile/0/273.p/112", true),
        ("tile/entries/273.p/112", true),
        ("checkpoints/65536", true),
    ] {
        assert_eq!(dir.path().join(file).is_file(), present, "{file}");
    }
    let report = audit_log_dir(dir.path(), &tessera_verifier(), &mut |_, _| {}).unwrap();
    assert_eq!(report.checkpoint.size, 70_000);
    assert_eq!(
        report.kept_checkpoints,
        vec![0, 1, 256, 257, 65_536, 70_000]
    );
}

#[test]
fn resuming_continues_the_same_log() {
    runtime().block_on(async {
        let store = memory_store();
        let mut writer = tessera_writer(&store).await;
        writer.append(&entries(0..300), &[]).await.unwrap();
        drop(writer);
        let mut writer = tessera_writer(&store).await;
        assert_eq!(writer.size(), 300);
        writer.append(&entries(300..600), &[]).await.unwrap();

        // The same entries in one batch give the same tree.
        let other = memory_store();
        let mut reference = tessera_writer(&other).await;
        let signed = reference.append(&entries(0..600), &[]).await.unwrap();
        assert_eq!(
            writer.checkpoint().checkpoint.root_hash,
            signed.checkpoint.root_hash
        );
        assert_eq!(
            tiles_at_size(&store, 600).await,
            tiles_at_size(&other, 600).await
        );
    });
}

/// A crash after the tiles of a batch were written but before its checkpoint: the next
/// writer trusts only the checkpoint, and its appends overwrite the orphaned tiles.
#[test]
fn crash_before_checkpoint_leaves_log_consistent() {
    runtime().block_on(async {
        let store = memory_store();
        let mut writer = tessera_writer(&store).await;
        writer.append(&entries(0..200), &[]).await.unwrap();
        let committed = read_object(&store, "checkpoint").await.unwrap();
        // This batch completes tile 0 and starts tile 1, then "crashes": its checkpoint is lost.
        writer.append(&entries(1000..1300), &[]).await.unwrap();
        store
            .put(&Path::from("checkpoint"), PutPayload::from(committed))
            .await
            .unwrap();
        store.delete(&Path::from("checkpoints/500")).await.unwrap();
        drop(writer);

        let mut writer = tessera_writer(&store).await;
        assert_eq!(writer.size(), 200);
        writer.append(&entries(200..500), &[]).await.unwrap();

        let other = memory_store();
        let mut reference = tessera_writer(&other).await;
        reference.append(&entries(0..500), &[]).await.unwrap();
        assert_eq!(
            writer.checkpoint().checkpoint,
            reference.checkpoint().checkpoint
        );
        assert_eq!(
            tiles_at_size(&store, 500).await,
            tiles_at_size(&other, 500).await
        );
    });
}

/// A crash between `checkpoint` and its kept copy: reopening writes the kept copy.
#[test]
fn crash_before_kept_checkpoint_is_repaired_on_open() {
    runtime().block_on(async {
        let store = memory_store();
        let mut writer = tessera_writer(&store).await;
        writer.append(&entries(0..10), &[]).await.unwrap();
        store.delete(&Path::from("checkpoints/10")).await.unwrap();
        drop(writer);
        let _writer = tessera_writer(&store).await;
        assert_eq!(
            read_object(&store, "checkpoints/10").await,
            read_object(&store, "checkpoint").await
        );
    });
}

#[test]
fn open_refuses_tampered_state_wrong_key_and_wrong_origin() {
    runtime().block_on(async {
        let store = memory_store();
        let mut writer = tessera_writer(&store).await;
        writer.append(&entries(0..10), &[]).await.unwrap();
        drop(writer);

        let (other_key, _) = NoteSigner::generate(TESSERA_ORIGIN).unwrap();
        let result = LogWriter::open(
            store.clone(),
            Path::default(),
            other_key.parse().unwrap(),
            TESSERA_ORIGIN.into(),
        )
        .await;
        assert!(
            matches!(result, Err(Error::Corrupt(_))),
            "{:?}",
            result.err()
        );

        let result = LogWriter::open(
            store.clone(),
            Path::default(),
            tessera_signer(),
            "other.example/log".into(),
        )
        .await;
        assert!(
            matches!(result, Err(Error::Corrupt(_))),
            "{:?}",
            result.err()
        );

        let mut tile = read_object(&store, "tile/0/000.p/10").await.unwrap();
        tile[5] ^= 1;
        store
            .put(&Path::from("tile/0/000.p/10"), PutPayload::from(tile))
            .await
            .unwrap();
        let result = LogWriter::open(
            store.clone(),
            Path::default(),
            tessera_signer(),
            TESSERA_ORIGIN.into(),
        )
        .await;
        assert!(
            matches!(result, Err(Error::Corrupt(_))),
            "{:?}",
            result.err()
        );
    });
}

#[test]
fn append_refuses_oversized_entries_and_bad_extensions() {
    runtime().block_on(async {
        let store = memory_store();
        let mut writer = tessera_writer(&store).await;
        let too_big = vec![vec![1u8; 3], vec![0u8; 65_536]];
        let error = writer.append(&too_big, &[]).await.unwrap_err();
        assert!(
            matches!(
                error,
                Error::EntryTooLarge {
                    position: 1,
                    len: 65_536
                }
            ),
            "{error}"
        );
        let max = vec![vec![7u8; 65_535]];
        writer.append(&max, &[]).await.unwrap();
        assert!(
            writer
                .append(&entries(0..1), &["two\nlines".into()])
                .await
                .is_err()
        );
        assert!(
            writer
                .append(&entries(0..1), &[String::new()])
                .await
                .is_err()
        );
        assert_eq!(writer.size(), 1);
        let reader = LogReader::new(store.clone(), Path::default(), tessera_verifier());
        assert_eq!(reader.entry(0, 1).await.unwrap(), max[0]);
    });
}

#[test]
fn writer_under_a_prefix_and_reader_checkpoints() {
    runtime().block_on(async {
        let store = memory_store();
        let prefix = Path::from("logs/3");
        let mut writer = LogWriter::open(
            store.clone(),
            prefix.clone(),
            tessera_signer(),
            TESSERA_ORIGIN.into(),
        )
        .await
        .unwrap();
        writer
            .append(&entries(0..5), &["kafka-offset 41".into()])
            .await
            .unwrap();
        assert!(
            read_object(&store, "logs/3/tile/entries/000.p/5")
                .await
                .is_some()
        );
        let reader = LogReader::new(store.clone(), prefix, tessera_verifier());
        let latest = reader.checkpoint().await.unwrap();
        assert_eq!(latest.checkpoint.size, 5);
        assert_eq!(
            latest.checkpoint.extensions,
            vec!["kafka-offset 41".to_owned()]
        );
        assert_eq!(&latest, writer.checkpoint());
        assert_eq!(reader.kept_checkpoint(0).await.unwrap().checkpoint.size, 0);
        assert_eq!(reader.entry(4, 5).await.unwrap(), b"entry 4");
        assert!(reader.entry(5, 5).await.is_err());
    });
}
