//! Writer scenarios: batches, extensions, resuming, and crashes between writes.

use std::sync::Arc;

use callproof_tlog::Error;
use callproof_tlog::audit::audit_log_dir;
use callproof_tlog::checkpoint::Checkpoint;
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

/// A crash after an append was claimed, with some of its tiles written and no checkpoint:
/// the next writer completes it from its claim, and the log is the one a writer that never
/// crashed would have written.
#[test]
fn crash_after_the_claim_rolls_forward_on_open() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let store: Arc<dyn ObjectStore> =
            Arc::new(LocalFileSystem::new_with_prefix(dir.path()).unwrap());
        let mut writer = tessera_writer(&store).await;
        writer.append(&entries(0..200), &[]).await.unwrap();
        // 200 -> 500 completes tile 0 and starts tile 1; its partial bundle cannot be written.
        let blocked = dir.path().join("tile/entries/001.p/244");
        std::fs::create_dir_all(blocked.join("blocker")).unwrap();
        let error = writer.append(&entries(200..500), &[]).await.unwrap_err();
        assert!(matches!(error, Error::Store { .. }), "{error}");
        assert_eq!(writer.size(), 200);
        assert!(dir.path().join("appends/200").is_file());
        assert!(!dir.path().join("checkpoints/500").exists());
        drop(writer);
        std::fs::remove_dir_all(&blocked).unwrap();

        let mut writer = tessera_writer(&store).await;
        assert_eq!(writer.size(), 500);
        writer.append(&entries(500..600), &[]).await.unwrap();

        let other = memory_store();
        let mut reference = tessera_writer(&other).await;
        reference.append(&entries(0..200), &[]).await.unwrap();
        reference.append(&entries(200..500), &[]).await.unwrap();
        reference.append(&entries(500..600), &[]).await.unwrap();
        assert_eq!(
            writer.checkpoint().checkpoint,
            reference.checkpoint().checkpoint
        );
        assert_eq!(
            tiles_at_size(&store, 600).await,
            tiles_at_size(&other, 600).await
        );
        // The completed claim no longer carries the entries: they are in the tiles.
        let claim = read_object(&store, "appends/200").await.unwrap();
        assert!(!contains(&claim, b"entry 300"));
    });
    let report = audit_log_dir(dir.path(), &tessera_verifier(), &mut |_, _| {}).unwrap();
    assert_eq!(report.kept_checkpoints, vec![0, 200, 500, 600]);
    assert_eq!(report.unchecked_files, Vec::<String>::new());
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

fn uncommitted(range: std::ops::Range<u64>) -> Vec<Vec<u8>> {
    range
        .map(|index| format!("uncommitted {index}").into_bytes())
        .collect()
}

/// A retry of the same batch after a failure past its claim (here: the kept copy could not
/// be written) finds its own claim and succeeds; any other batch is refused, since the claimed
/// one is in the log whether this writer finishes it or the next one does.
#[test]
fn failure_after_the_claim_allows_only_the_same_batch() {
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
        assert!(matches!(error, Error::Fenced { size: 10 }), "{error}");
        assert!(error.to_string().contains("reopen the log"), "{error}");
        writer.append(&entries(10..20), &[]).await.unwrap();
        assert_eq!(writer.size(), 20);
        writer.append(&entries(20..30), &[]).await.unwrap();
    });
    let report = audit_log_dir(dir.path(), &tessera_verifier(), &mut |_, _| {}).unwrap();
    assert_eq!(report.kept_checkpoints, vec![0, 10, 20, 30]);
}

/// Every object in `store` with its bytes.
async fn snapshot(store: &Arc<dyn ObjectStore>) -> Vec<(String, Vec<u8>)> {
    let mut objects = Vec::new();
    for path in list_objects(store).await {
        let bytes = read_object(store, &path).await.unwrap();
        objects.push((path, bytes));
    }
    objects
}

/// Two writers of one log, each believing it is the only one (a processor that lost its
/// partition and the one that took it over): the one that appends second from the same size
/// is refused before it writes anything, and so is every later append of a writer left behind.
#[test]
fn a_writer_behind_another_is_fenced_and_writes_nothing() {
    runtime().block_on(async {
        let store = memory_store();
        let mut first = tessera_writer(&store).await;
        first.append(&entries(0..10), &[]).await.unwrap();
        let mut second = tessera_writer(&store).await;
        assert_eq!(second.size(), 10);

        second.append(&entries(10..300), &[]).await.unwrap();
        let before = snapshot(&store).await;
        for batch in [
            uncommitted(10..20),
            uncommitted(10..300),
            uncommitted(10..11),
        ] {
            let error = first.append(&batch, &[]).await.unwrap_err();
            assert!(matches!(error, Error::Fenced { size: 10 }), "{error}");
        }
        assert_eq!(first.size(), 10);
        assert_eq!(
            snapshot(&store).await,
            before,
            "a fenced writer wrote something"
        );

        // The second writer goes on; the first one, reopened, continues after it.
        second.append(&entries(300..301), &[]).await.unwrap();
        let mut first = tessera_writer(&store).await;
        assert_eq!(first.size(), 301);
        first.append(&entries(301..400), &[]).await.unwrap();
        let error = second
            .append(&uncommitted(301..302), &[])
            .await
            .unwrap_err();
        assert!(matches!(error, Error::Fenced { size: 301 }), "{error}");

        let reader = LogReader::new(store.clone(), Path::default(), tessera_verifier());
        let checkpoint = reader.checkpoint().await.unwrap();
        assert_eq!(checkpoint.checkpoint.size, 400);
        for index in [0, 9, 10, 299, 300, 301, 399] {
            assert_eq!(
                reader.entry(index, 400).await.unwrap(),
                format!("entry {index}").into_bytes()
            );
        }
    });
}

/// Writers racing on one log, each reopening whenever it is fenced: every batch a writer was
/// told is appended is in the log exactly once, no fenced batch is, and the log audits clean.
#[test]
fn racing_writers_never_fork_or_lose_an_acknowledged_batch() {
    let dir = tempfile::tempdir().unwrap();
    let (appended, fenced) = runtime().block_on(async {
        let store: Arc<dyn ObjectStore> =
            Arc::new(LocalFileSystem::new_with_prefix(dir.path()).unwrap());
        tessera_writer(&store).await;
        let writers = (0..4u64).map(|writer_id| {
            let store = store.clone();
            tokio::spawn(async move {
                let (mut appended, mut fenced) = (Vec::new(), 0usize);
                let mut writer = tessera_writer(&store).await;
                for batch_id in 0..25u64 {
                    let batch: Vec<Vec<u8>> = (0..1 + (writer_id * 7 + batch_id) % 40)
                        .map(|n| {
                            format!("writer {writer_id} batch {batch_id} entry {n}").into_bytes()
                        })
                        .collect();
                    match writer.append(&batch, &[]).await {
                        Ok(_) => appended.extend(batch),
                        Err(Error::Fenced { .. }) => {
                            fenced += 1;
                            writer = tessera_writer(&store).await;
                        }
                        Err(error) => panic!("writer {writer_id}: {error}"),
                    }
                    tokio::task::yield_now().await;
                }
                (appended, fenced)
            })
        });
        let mut all = Vec::new();
        let mut fenced = 0;
        for handle in writers.collect::<Vec<_>>() {
            let (appended, writer_fenced) = handle.await.unwrap();
            all.extend(appended);
            fenced += writer_fenced;
        }
        (all, fenced)
    });
    let report = audit_log_dir(dir.path(), &tessera_verifier(), &mut |_, _| {}).unwrap();
    assert_eq!(report.unchecked_files, Vec::<String>::new());
    let in_log = read_all_entries(dir.path(), report.checkpoint.size);
    let mut expected = appended.clone();
    expected.sort();
    let mut found = in_log.clone();
    found.sort();
    assert_eq!(
        found, expected,
        "the log holds exactly the acknowledged batches"
    );
    eprintln!(
        "{} entries in {} appends; {fenced} appends fenced",
        in_log.len(),
        report.kept_checkpoints.len() - 1
    );
}

/// Every entry of a log of `size` entries in a directory, in order.
fn read_all_entries(dir: &std::path::Path, size: u64) -> Vec<Vec<u8>> {
    runtime().block_on(async {
        let store: Arc<dyn ObjectStore> = Arc::new(LocalFileSystem::new_with_prefix(dir).unwrap());
        let reader = LogReader::new(store, Path::default(), tessera_verifier());
        let mut entries = Vec::new();
        for index in 0..size {
            entries.push(reader.entry(index, size).await.unwrap());
        }
        entries
    })
}

#[test]
fn open_refuses_a_claim_it_cannot_vouch_for() {
    runtime().block_on(async {
        let store = memory_store();
        let mut writer = tessera_writer(&store).await;
        writer.append(&entries(0..10), &[]).await.unwrap();
        drop(writer);
        let (other_key, _) = NoteSigner::generate("other.example/log").unwrap();
        let other_key: NoteSigner = other_key.parse().unwrap();
        let foreign_note = other_key
            .sign(
                &Checkpoint {
                    origin: TESSERA_ORIGIN.into(),
                    size: 11,
                    root_hash: [0; 32],
                    extensions: vec![],
                }
                .to_text(),
            )
            .unwrap();
        // A note of ours for size 11, over entries other than the claim's.
        let mut honest = tessera_writer(&memory_store()).await;
        honest.append(&entries(0..11), &[]).await.unwrap();
        let our_note = honest.checkpoint().note.clone();
        let claim = |to: u64, note: &[u8], entries: &[&[u8]]| {
            let mut bytes = format!("callproof-append 10 {to} {}\n", note.len()).into_bytes();
            bytes.extend_from_slice(note);
            for entry in entries {
                bytes.extend_from_slice(&(entry.len() as u16).to_be_bytes());
                bytes.extend_from_slice(entry);
            }
            bytes
        };
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("garbage", b"garbage".to_vec()),
            (
                "no entries past the header",
                b"callproof-append 10 11 99999\n".to_vec(),
            ),
            ("another key", claim(11, &foreign_note, &[b"entry 10"])),
            (
                "entries not of its root",
                claim(11, &our_note, &[b"something else"]),
            ),
            (
                "sizes not its checkpoint's",
                claim(12, &our_note, &[b"entry 10", b"x"]),
            ),
        ];
        for (case, bytes) in cases {
            store
                .put(&Path::from("appends/10"), PutPayload::from(bytes))
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
                "{case}: {:?}",
                result.err()
            );
        }
        // The honest claim is completed.
        store
            .put(
                &Path::from("appends/10"),
                PutPayload::from(claim(11, &our_note, &[b"entry 10"])),
            )
            .await
            .unwrap();
        let writer = tessera_writer(&store).await;
        assert_eq!(writer.checkpoint().note, our_note);
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

/// A store that cannot create an object only if it is absent (as S3 with
/// `aws_conditional_put = disabled`, or an S3-compatible store without `If-None-Match`).
#[derive(Debug)]
struct NoConditionalWrites(object_store::memory::InMemory);

impl std::fmt::Display for NoConditionalWrites {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NoConditionalWrites")
    }
}

#[async_trait::async_trait]
impl ObjectStore for NoConditionalWrites {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        options: object_store::PutOptions,
    ) -> object_store::Result<object_store::PutResult> {
        if options.mode != object_store::PutMode::Overwrite {
            return Err(object_store::Error::NotImplemented);
        }
        self.0.put_opts(location, payload, options).await
    }
    async fn put_multipart_opts(
        &self,
        location: &Path,
        options: object_store::PutMultipartOptions,
    ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
        self.0.put_multipart_opts(location, options).await
    }
    async fn get_opts(
        &self,
        location: &Path,
        options: object_store::GetOptions,
    ) -> object_store::Result<object_store::GetResult> {
        self.0.get_opts(location, options).await
    }
    async fn delete(&self, location: &Path) -> object_store::Result<()> {
        self.0.delete(location).await
    }
    fn list(
        &self,
        prefix: Option<&Path>,
    ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>> {
        self.0.list(prefix)
    }
    async fn list_with_delimiter(
        &self,
        prefix: Option<&Path>,
    ) -> object_store::Result<object_store::ListResult> {
        self.0.list_with_delimiter(prefix).await
    }
    async fn copy(&self, from: &Path, to: &Path) -> object_store::Result<()> {
        self.0.copy(from, to).await
    }
    async fn copy_if_not_exists(&self, from: &Path, to: &Path) -> object_store::Result<()> {
        self.0.copy_if_not_exists(from, to).await
    }
}

/// Without conditional writes the single writer cannot be enforced: the writer refuses to
/// append, naming the reason, and leaves no entry behind.
#[test]
fn a_store_without_conditional_writes_is_refused() {
    runtime().block_on(async {
        let store: Arc<dyn ObjectStore> =
            Arc::new(NoConditionalWrites(object_store::memory::InMemory::new()));
        let mut writer = tessera_writer(&store).await;
        let error = writer.append(&entries(0..3), &[]).await.unwrap_err();
        assert!(
            matches!(error, Error::ConditionalWriteUnsupported { .. }),
            "{error}"
        );
        assert!(
            error
                .to_string()
                .contains("one writer per log cannot be enforced"),
            "{error}"
        );
        assert_eq!(writer.size(), 0);
        assert_eq!(
            list_objects(&store).await,
            vec!["checkpoint", "checkpoints/0"]
        );
    });
}
