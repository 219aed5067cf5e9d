//! The indexer over a real log in a local-filesystem object store.

use std::sync::Arc;
use std::time::Duration;

use callproof_evidence_format::index_schema::{Hit, search};
use callproof_evidence_format::split::{list_partition, open_split};
use callproof_tlog::note::NoteSigner;
use callproof_tlog::store::LogWriter;
use object_store::local::LocalFileSystem;

use super::*;

struct Fixture {
    dir: tempfile::TempDir,
    store: Arc<dyn ObjectStore>,
    writer: LogWriter,
    verifier: NoteVerifier,
    appended: u64,
}

impl Fixture {
    async fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("store")).unwrap();
        let store: Arc<dyn ObjectStore> =
            Arc::new(LocalFileSystem::new_with_prefix(dir.path().join("store")).unwrap());
        let (signer, _) = NoteSigner::generate("test.callproof/log").unwrap();
        let signer: NoteSigner = signer.parse().unwrap();
        let verifier = signer.verifier();
        let writer = LogWriter::open(
            store.clone(),
            log_prefix(0),
            signer,
            "test.callproof/log/0".into(),
        )
        .await
        .unwrap();
        Fixture {
            dir,
            store,
            writer,
            verifier,
            appended: 0,
        }
    }

    /// Appends `n` events of function `refund` with ids `e<index>`.
    async fn append(&mut self, n: u64) {
        let entries: Vec<Vec<u8>> = (self.appended..self.appended + n)
            .map(|index| {
                serde_json::to_vec(&serde_json::json!({"event": {
                    "event_id": format!("e{index}"),
                    "call_id": format!("c{index}"),
                    "kind": "call_received",
                    "function": "refund",
                    "time": 1_700_000_000_000_000i64 + index as i64,
                }}))
                .unwrap()
            })
            .collect();
        self.writer.append(&entries, &[]).await.unwrap();
        self.appended += n;
    }

    fn settings(&self, merge_factor: usize, grace: Duration) -> Settings {
        Settings {
            scratch_dir: self.dir.path().join("scratch"),
            split_interval: Duration::from_millis(10),
            split_max_entries: 1_000,
            writer_memory_mb: 15,
            merge_factor,
            merge_max_entries: 1_000_000,
            gc_grace: grace,
        }
    }

    fn indexer(&self, merge_factor: usize, grace: Duration) -> PartitionIndexer {
        PartitionIndexer::new(
            self.store.clone(),
            self.verifier.clone(),
            0,
            self.settings(merge_factor, grace),
        )
    }

    /// Every hit of the splits `splits`, downloaded to a directory of the reader's own.
    async fn search_splits(&self, splits: &[SplitId], reader: &Path) -> Vec<Hit> {
        std::fs::create_dir_all(reader).unwrap();
        let mut indexes = Vec::new();
        for split in splits {
            let path = reader.join(format!("{}.split", split.name()));
            if !path.exists() {
                download(&self.store, split, &path).await.unwrap();
            }
            indexes.push((0, open_split(&path, split).unwrap().0));
        }
        search(&indexes, "*", 1_000_000).unwrap()
    }

    async fn cover(&self) -> (Vec<SplitId>, u64) {
        list_partition(&self.store, 0).await.unwrap().cover()
    }

    /// Every hit a reader listing now finds.
    async fn search_now(&self) -> Vec<Hit> {
        let (cover, _) = self.cover().await;
        let reader = self.dir.path().join("reader-now");
        self.search_splits(&cover, &reader).await
    }
}

fn indexes_of(hits: &[Hit]) -> Vec<u64> {
    let mut indexes: Vec<u64> = hits.iter().map(|hit| hit.log_index).collect();
    indexes.sort_unstable();
    indexes
}

#[tokio::test]
async fn a_split_is_searchable_only_once_published() {
    let mut fixture = Fixture::new().await;
    fixture.append(5).await;
    let split = SplitId {
        partition: 0,
        start: 0,
        end: 5,
        level: 0,
        id: "unpublished".into(),
    };
    let fields = IndexFields::new();
    let documents: Vec<TantivyDocument> = (0..5)
        .map(|index| {
            let entry = serde_json::json!({"event": {"event_id": format!("e{index}")}});
            fields.document(&entry, 0, index)
        })
        .collect();
    let settings = fixture.settings(10, Duration::from_secs(3600));
    let bytes = build_split(&settings.scratch_dir, &split, documents.into_iter(), 15).unwrap();
    // The object, whole, but not published: no reader takes it.
    fixture
        .store
        .put(&split.object_path(), PutPayload::from(bytes))
        .await
        .unwrap();
    assert_eq!(fixture.cover().await, (vec![], 0));
    assert!(fixture.search_now().await.is_empty());
    publish(&fixture.store, &split).await.unwrap();
    assert_eq!(fixture.cover().await, (vec![split], 5));
    assert_eq!(indexes_of(&fixture.search_now().await), [0, 1, 2, 3, 4]);
}

#[tokio::test]
async fn a_split_that_is_not_what_its_name_says_is_refused() {
    let fixture = Fixture::new().await;
    let built = SplitId {
        partition: 0,
        start: 0,
        end: 5,
        level: 0,
        id: "built".into(),
    };
    let fields = IndexFields::new();
    let documents = (0..5).map(|index| {
        let entry = serde_json::json!({"event": {"event_id": format!("e{index}")}});
        fields.document(&entry, 0, index)
    });
    let settings = fixture.settings(10, Duration::from_secs(3600));
    let bytes = build_split(&settings.scratch_dir, &built, documents, 15).unwrap();
    let path = fixture.dir.path().join("built.split");
    std::fs::write(&path, &bytes).unwrap();
    assert!(open_split(&path, &built).is_ok());
    // The same object under the name of another range, partition or level: each would put
    // its entries at the wrong place of the cover.
    for (named, refusal) in [
        (
            SplitId {
                end: 9,
                ..built.clone()
            },
            "not what its name says",
        ),
        (
            SplitId {
                start: 4,
                end: 9,
                ..built.clone()
            },
            "not what its name says",
        ),
        (
            SplitId {
                partition: 1,
                ..built.clone()
            },
            "not what its name says",
        ),
        (
            SplitId {
                level: 1,
                ..built.clone()
            },
            "not what its name says",
        ),
    ] {
        let error = open_split(&path, &named).unwrap_err().to_string();
        assert!(error.contains(refusal), "{}: {error}", named.name());
        assert!(error.contains(&named.name()), "{error}");
    }
    // A manifest that matches its name over an index that lacks entries of the range.
    let short = SplitId {
        id: "short".into(),
        ..built.clone()
    };
    let documents = (0..3).map(|index| {
        let entry = serde_json::json!({"event": {"event_id": format!("e{index}")}});
        fields.document(&entry, 0, index)
    });
    let bytes = build_split(&settings.scratch_dir, &short, documents, 15).unwrap();
    let path = fixture.dir.path().join("short.split");
    std::fs::write(&path, &bytes).unwrap();
    let error = open_split(&path, &short).unwrap_err().to_string();
    assert!(error.contains("3 documents for 5 entries"), "{error}");
}

#[tokio::test]
async fn the_indexer_follows_the_log_and_reports_what_is_searchable() {
    let mut fixture = Fixture::new().await;
    let indexer = fixture.indexer(10, Duration::from_secs(3600));
    // No log entries yet.
    assert_eq!(indexer.step().await.unwrap().searchable, 0);
    fixture.append(7).await;
    let step = indexer.step().await.unwrap();
    assert_eq!((step.log_size, step.searchable, step.indexed), (7, 7, true));
    fixture.append(3).await;
    let step = indexer.step().await.unwrap();
    assert_eq!((step.log_size, step.searchable), (10, 10));
    // Nothing new: nothing written.
    assert!(!indexer.step().await.unwrap().indexed);
    let hits = fixture.search_now().await;
    assert_eq!(indexes_of(&hits), (0..10).collect::<Vec<_>>());
    assert!(hits.iter().any(|hit| hit.event_id.as_deref() == Some("e9")));
}

#[tokio::test]
async fn two_indexers_on_one_partition_never_make_an_entry_searchable_twice() {
    let mut fixture = Fixture::new().await;
    let first = fixture.indexer(3, Duration::from_secs(3600));
    let second = fixture.indexer(3, Duration::from_secs(3600));
    for round in 0..12 {
        fixture.append(1 + round % 4).await;
        // Both list the same cover and build the same range at once (a rebalance where the
        // old owner is still at work); then one of them runs ahead.
        let (a, b) = tokio::join!(first.step(), second.step());
        a.unwrap();
        b.unwrap();
        if round % 3 == 0 {
            fixture.append(2).await;
            first.step().await.unwrap();
        }
    }
    let (a, b) = tokio::join!(first.step(), second.step());
    assert_eq!(a.unwrap().searchable, fixture.appended);
    b.unwrap();
    let hits = fixture.search_now().await;
    assert_eq!(
        indexes_of(&hits),
        (0..fixture.appended).collect::<Vec<_>>(),
        "every entry exactly once"
    );
    // Both published splits from the same positions: the race did happen.
    let listing = list_partition(&fixture.store, 0).await.unwrap();
    let mut starts: Vec<u64> = listing.published.iter().map(|split| split.start).collect();
    let all = starts.len();
    starts.sort_unstable();
    starts.dedup();
    assert!(
        starts.len() < all,
        "no two splits from one position: {listing:?}"
    );
}

#[tokio::test]
async fn a_merge_replaces_its_sources_and_a_reader_of_them_works_until_the_grace_period_ends() {
    let mut fixture = Fixture::new().await;
    let indexer = fixture.indexer(3, Duration::from_secs(3600));
    for _ in 0..2 {
        fixture.append(4).await;
        indexer.step().await.unwrap();
    }
    let (old_cover, _) = fixture.cover().await;
    assert_eq!(old_cover.len(), 2);
    // A reader that listed before the merge, with the splits downloaded as it searches.
    let old_reader = fixture.dir.path().join("old-reader");
    let before = fixture.search_splits(&old_cover, &old_reader).await;
    assert_eq!(indexes_of(&before), (0..8).collect::<Vec<_>>());

    fixture.append(4).await;
    let step = indexer.step().await.unwrap();
    assert!(step.indexed && step.merged, "{step:?}");
    let (cover, end) = fixture.cover().await;
    assert_eq!(end, 12);
    assert_eq!(cover.len(), 1, "{cover:?}");
    assert_eq!(cover[0].level, 1);
    let mut after = fixture.search_now().await;
    assert_eq!(indexes_of(&after), (0..12).collect::<Vec<_>>());
    after.retain(|hit| hit.log_index < 8);
    after.sort();
    let mut before = before;
    before.sort();
    assert_eq!(
        after, before,
        "the merged split finds what its sources found"
    );

    // Replaced, marked, but inside the grace period: nothing deleted, and a reader that has
    // not downloaded them yet still can.
    let listing = list_partition(&fixture.store, 0).await.unwrap();
    assert_eq!(listing.deleted.len(), 3, "{listing:?}");
    assert_eq!(
        collect_garbage(&fixture.store, &listing, Duration::from_secs(3600))
            .await
            .unwrap(),
        0
    );
    let late_reader = fixture.dir.path().join("late-reader");
    assert_eq!(
        indexes_of(&fixture.search_splits(&old_cover, &late_reader).await),
        (0..8).collect::<Vec<_>>()
    );
    // Past it, they are gone: their markers and objects.
    let deleted = collect_garbage(&fixture.store, &listing, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(deleted, 9);
    let listing = list_partition(&fixture.store, 0).await.unwrap();
    assert_eq!(listing.objects.len(), 1);
    assert_eq!(listing.published.len(), 1);
    assert!(listing.deleted.is_empty());
    assert!(
        fixture
            .store
            .head(&old_cover[0].object_path())
            .await
            .is_err()
    );
    // The old reader's downloaded copies still answer.
    assert_eq!(
        indexes_of(&fixture.search_splits(&old_cover, &old_reader).await),
        (0..8).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn an_unpublished_split_object_is_deleted_after_the_grace_period_only() {
    let mut fixture = Fixture::new().await;
    fixture.append(2).await;
    let split = SplitId {
        partition: 0,
        start: 0,
        end: 2,
        level: 0,
        id: "orphan".into(),
    };
    fixture
        .store
        .put(&split.object_path(), PutPayload::from(vec![1u8, 2, 3]))
        .await
        .unwrap();
    let listing = list_partition(&fixture.store, 0).await.unwrap();
    assert_eq!(
        collect_garbage(&fixture.store, &listing, Duration::from_secs(3600))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        collect_garbage(&fixture.store, &listing, Duration::ZERO)
            .await
            .unwrap(),
        1
    );
}

#[tokio::test]
async fn a_rebuild_gives_the_same_hits_and_replaces_every_split() {
    let mut fixture = Fixture::new().await;
    let indexer = fixture.indexer(10, Duration::from_secs(3600));
    for n in [3, 5, 2] {
        fixture.append(n).await;
        indexer.step().await.unwrap();
    }
    let mut before = fixture.search_now().await;
    let (old_cover, _) = fixture.cover().await;
    let indexed = rebuild(
        fixture.store.clone(),
        fixture.verifier.clone(),
        0,
        fixture.settings(10, Duration::from_secs(3600)),
    )
    .await
    .unwrap();
    assert_eq!(indexed, 10);
    let (cover, end) = fixture.cover().await;
    assert_eq!(end, 10);
    assert!(cover.iter().all(|split| !old_cover.contains(split)));
    let mut after = fixture.search_now().await;
    before.sort();
    after.sort();
    assert_eq!(before, after);
}

#[tokio::test]
async fn merges_go_up_the_levels() {
    let mut fixture = Fixture::new().await;
    let indexer = fixture.indexer(2, Duration::from_secs(3600));
    for _ in 0..8 {
        fixture.append(3).await;
        indexer.step().await.unwrap();
    }
    // One merge a step: the last ones follow without new entries.
    for _ in 0..10 {
        if !indexer.step().await.unwrap().merged {
            break;
        }
    }
    let (cover, end) = fixture.cover().await;
    assert_eq!(end, 24);
    assert_eq!(
        cover.iter().map(|split| split.level).collect::<Vec<_>>(),
        [3]
    );
    assert_eq!(
        indexes_of(&fixture.search_now().await),
        (0..24).collect::<Vec<_>>()
    );
}
