//! Writer scenarios: batches, extensions, resuming, and crashes between writes.

use std::collections::HashSet;
use std::sync::Arc;

use callproof_tlog::Error;
use callproof_tlog::audit::audit_log_dir;
use callproof_tlog::checkpoint::Checkpoint;
use callproof_tlog::hash::leaf_hash;
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
/// writer trusts only the checkpoint, deletes the orphaned tiles and writes its own.
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

/// Whether `haystack` holds `needle` anywhere.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

/// Fails unless no file under `tile/` holds one of `uncommitted` or its leaf hash.
fn assert_no_tile_holds(dir: &std::path::Path, uncommitted: &[Vec<u8>]) {
    let hashes: HashSet<[u8; 32]> = uncommitted.iter().map(|entry| leaf_hash(entry)).collect();
    for file in list_files(&dir.join("tile")) {
        let bytes = std::fs::read(dir.join("tile").join(&file)).unwrap();
        if file.starts_with("entries/") {
            assert!(!contains(&bytes, b"uncommitted"), "tile/{file}");
        } else {
            assert!(
                bytes.chunks_exact(32).all(|hash| !hashes.contains(hash)),
                "tile/{file} holds the leaf hash of an uncommitted entry"
            );
        }
    }
}

fn uncommitted(range: std::ops::Range<u64>) -> Vec<Vec<u8>> {
    range
        .map(|index| format!("uncommitted {index}").into_bytes())
        .collect()
}

/// Regression: an append that crashed between its tiles and its checkpoint left partial
/// tiles of a width no checkpoint has (`tile/0/001.p/244`, holding uncommitted entries);
/// a resume whose batches ended elsewhere never rewrote them, and the audit failed the
/// honest log because they were not prefixes of the later tiles.
#[test]
fn crash_then_resume_with_other_batches_audits_clean() {
    let dir = tempfile::tempdir().unwrap();
    let crashed = uncommitted(200..500);
    runtime().block_on(async {
        let store: Arc<dyn ObjectStore> =
            Arc::new(LocalFileSystem::new_with_prefix(dir.path()).unwrap());
        let mut writer = tessera_writer(&store).await;
        writer.append(&entries(0..200), &[]).await.unwrap();
        let committed = read_object(&store, "checkpoint").await.unwrap();
        // 200 -> 500 fills tile 0 and starts tile 1, then "crashes": its checkpoint is lost.
        writer.append(&crashed, &[]).await.unwrap();
        store
            .put(&Path::from("checkpoint"), PutPayload::from(committed))
            .await
            .unwrap();
        store.delete(&Path::from("checkpoints/500")).await.unwrap();
        drop(writer);
        for file in ["tile/0/001.p/244", "tile/entries/001.p/244", "tile/0/000"] {
            assert!(dir.path().join(file).is_file(), "{file}");
        }

        let mut writer = tessera_writer(&store).await;
        assert_eq!(writer.size(), 200);
        // Reopening removed every file of the lost append.
        assert_no_tile_holds(dir.path(), &crashed);
        for file in ["tile/0/001.p/244", "tile/entries/001.p/244", "tile/0/000"] {
            assert!(!dir.path().join(file).exists(), "{file}");
        }
        // Other batch ends and other entries, past the end of tile 1 (512).
        for (start, end) in [(200, 400), (400, 600), (600, 601)] {
            writer.append(&entries(start..end), &[]).await.unwrap();
        }
        let other = memory_store();
        let mut reference = tessera_writer(&other).await;
        reference.append(&entries(0..601), &[]).await.unwrap();
        assert_eq!(
            writer.checkpoint().checkpoint.root_hash,
            reference.checkpoint().checkpoint.root_hash
        );
    });
    let report = audit_log_dir(dir.path(), &tessera_verifier(), &mut |_, _| {}).unwrap();
    assert_eq!(report.checkpoint.size, 601);
    assert_eq!(report.kept_checkpoints, vec![0, 200, 400, 600, 601]);
    assert_eq!(report.unchecked_files, Vec::<String>::new());
    assert_no_tile_holds(dir.path(), &crashed);
}

/// An append that fails before its checkpoint, then another batch from the same writer
/// (not a retry): the failed append's files go before the new ones are written.
#[test]
fn failed_append_then_another_batch_leaves_no_stale_tiles() {
    let dir = tempfile::tempdir().unwrap();
    let failed = uncommitted(200..300);
    runtime().block_on(async {
        let store: Arc<dyn ObjectStore> =
            Arc::new(LocalFileSystem::new_with_prefix(dir.path()).unwrap());
        let mut writer = tessera_writer(&store).await;
        writer.append(&entries(0..200), &[]).await.unwrap();
        // A directory where the batch's partial bundle goes makes that one write fail.
        let blocked = dir.path().join("tile/entries/001.p/44");
        std::fs::create_dir_all(blocked.join("blocker")).unwrap();
        let error = writer.append(&failed, &[]).await.unwrap_err();
        assert!(matches!(error, Error::Store { .. }), "{error}");
        assert_eq!(writer.size(), 200);
        std::fs::remove_dir_all(&blocked).unwrap();
        writer.append(&entries(200..290), &[]).await.unwrap();
        assert_no_tile_holds(dir.path(), &failed);
        assert!(!dir.path().join("tile/0/001.p/44").exists());
        writer.append(&entries(290..600), &[]).await.unwrap();
    });
    let report = audit_log_dir(dir.path(), &tessera_verifier(), &mut |_, _| {}).unwrap();
    assert_eq!(report.kept_checkpoints, vec![0, 200, 290, 600]);
    assert_eq!(report.unchecked_files, Vec::<String>::new());
}

/// A retry of the same batch after its checkpoint was written but the append still failed
/// (here: the kept copy could not be written) finds its own checkpoint and succeeds; any
/// other batch is refused, since the log has moved on without the writer knowing.
#[test]
fn failure_after_the_checkpoint_allows_only_the_same_batch() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let store: Arc<dyn ObjectStore> =
            Arc::new(LocalFileSystem::new_with_prefix(dir.path()).unwrap());
        let mut writer = tessera_writer(&store).await;
        writer.append(&entries(0..10), &[]).await.unwrap();
        let blocked = dir.path().join("checkpoints/20");
        std::fs::create_dir_all(blocked.join("blocker")).unwrap();
        assert!(writer.append(&entries(10..20), &[]).await.is_err());
        assert_eq!(writer.size(), 10);
        std::fs::remove_dir_all(&blocked).unwrap();
        let error = writer.append(&entries(10..15), &[]).await.unwrap_err();
        assert!(error.to_string().contains("reopen the log"), "{error}");
        writer.append(&entries(10..20), &[]).await.unwrap();
        assert_eq!(writer.size(), 20);
        writer.append(&entries(20..30), &[]).await.unwrap();
    });
    let report = audit_log_dir(dir.path(), &tessera_verifier(), &mut |_, _| {}).unwrap();
    assert_eq!(report.kept_checkpoints, vec![0, 10, 20, 30]);
}

#[test]
fn open_refuses_a_pending_append_it_did_not_write() {
    runtime().block_on(async {
        let store = memory_store();
        let mut writer = tessera_writer(&store).await;
        writer.append(&entries(0..10), &[]).await.unwrap();
        drop(writer);
        assert_eq!(
            read_object(&store, "pending-append").await.unwrap(),
            b"0 10\n"
        );
        for pending in [&b"garbage"[..], b"3 7\n", b"10 18446744073709551615\n"] {
            store
                .put(&Path::from("pending-append"), PutPayload::from(pending))
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
                "{pending:?}: {:?}",
                result.err()
            );
        }
    });
}

/// Regression: a checkpoint of 2^56 entries or more made `open` shift a `u64` by 64 while
/// locating the level-7 tile (a panic in debug builds). Now it looks for the tiles and
/// finds them missing.
#[test]
fn open_with_a_huge_checkpoint_is_refused_without_a_panic() {
    runtime().block_on(async {
        let store = memory_store();
        for size in [1u64 << 56, u64::MAX] {
            let checkpoint = Checkpoint {
                origin: TESSERA_ORIGIN.into(),
                size,
                root_hash: [0; 32],
                extensions: Vec::new(),
            };
            let note = tessera_signer().sign(&checkpoint.to_text()).unwrap();
            store
                .put(&Path::from("checkpoint"), PutPayload::from(note))
                .await
                .unwrap();
            let result = LogWriter::open(
                store.clone(),
                Path::default(),
                tessera_signer(),
                TESSERA_ORIGIN.into(),
            )
            .await;
            match result {
                Err(Error::Corrupt(reason)) => {
                    assert!(reason.contains("tile/7/000.p/"), "{reason}")
                }
                other => panic!("{size}: {:?}", other.err()),
            }
        }
    });
}
