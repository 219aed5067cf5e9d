use std::collections::BTreeSet;

use serde_json::json;

use super::*;

/// An object store on the local filesystem, and the runtime the index downloads on.
struct Store {
    dir: tempfile::TempDir,
    store: Arc<dyn ObjectStore>,
    runtime: tokio::runtime::Runtime,
}

impl Store {
    fn new() -> Store {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("store")).unwrap();
        let store: Arc<dyn ObjectStore> = Arc::new(
            object_store::local::LocalFileSystem::new_with_prefix(dir.path().join("store"))
                .unwrap(),
        );
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        Store {
            dir,
            store,
            runtime,
        }
    }

    /// A search index with a cache directory of its own, listing the splits at every search.
    fn index(&self) -> SearchIndex {
        self.index_with_cache("cache", u64::MAX)
    }

    fn index_with_cache(&self, name: &str, bytes: u64) -> SearchIndex {
        SearchIndex::open(
            self.store.clone(),
            self.runtime.handle().clone(),
            &self.dir.path().join(name),
            bytes,
            Duration::ZERO,
        )
        .unwrap()
    }

    /// Writes a split of `events` (event JSON) at log entries `start..`, with `schema`
    /// (today's, or an older one whose fields are a prefix of it); published if `publish`.
    fn write_split(
        &self,
        partition: i32,
        start: u64,
        schema: &tantivy::schema::Schema,
        events: &[serde_json::Value],
        publish: bool,
    ) -> SplitId {
        let fields = IndexFields::new();
        let split = SplitId {
            partition,
            start,
            end: start + events.len() as u64,
            level: 0,
            id: format!("{:08x}", rand_suffix() as u32),
        };
        let dir = tempfile::tempdir_in(self.dir.path()).unwrap();
        let index = tantivy::Index::create_in_dir(dir.path(), schema.clone()).unwrap();
        let mut writer: tantivy::IndexWriter = index.writer(15_000_000).unwrap();
        for (offset, event) in events.iter().enumerate() {
            writer
                .add_document(fields.document(
                    &json!({ "event": event }),
                    partition,
                    start + offset as u64,
                ))
                .unwrap();
        }
        writer.commit().unwrap();
        writer.wait_merging_threads().unwrap();
        let bytes =
            callproof_evidence_format::split::pack_split(dir.path(), &index, &split, 2).unwrap();
        self.runtime.block_on(async {
            self.store
                .put(&split.object_path(), bytes.into())
                .await
                .unwrap();
            if publish {
                self.store
                    .put(&split.published_path(), Vec::<u8>::new().into())
                    .await
                    .unwrap();
            }
        });
        split
    }

    fn mark_deleted(&self, split: &SplitId) {
        self.runtime.block_on(async {
            self.store
                .put(&split.deleted_path(), Vec::<u8>::new().into())
                .await
                .unwrap();
        });
    }

    /// One partition's index of entries shaped as the processor stores them, as one split.
    fn build(&self, partition: i32, events: &[(i64, &str, &str, &str)]) {
        let events: Vec<serde_json::Value> = events
            .iter()
            .enumerate()
            .map(|(log_index, (time, kind, subject, body))| {
                json!({
                    "event_id": format!("e-{partition}-{log_index}"),
                    "call_id": format!("call-{}", log_index / 2),
                    "kind": kind,
                    "time": time,
                    "function": "get_customer",
                    "principal": {"subject": subject, "groups": ["support"]},
                    "request": {"body": body},
                    "masking": if body.contains("REDACTED") { json!([{"detector": "EMAIL", "path": "/request/body", "count": 1}]) } else { json!([]) },
                })
            })
            .collect();
        self.write_split(partition, 0, &IndexFields::new().schema, &events, true);
    }
}

fn keys(page: &SearchPage) -> Vec<(i32, u64)> {
    page.hits
        .iter()
        .map(|hit| (hit.partition, hit.log_index))
        .collect()
}

#[test]
fn cursor_pages_visit_every_hit_once_newest_first_even_with_equal_times() {
    let store = Store::new();
    // Many events share a microsecond, across two partitions.
    let events: Vec<(i64, &str, &str, &str)> = (0..37)
        .map(|i| {
            (
                1_000 + (i / 5) as i64,
                "call_received",
                "ana",
                "refund please",
            )
        })
        .collect();
    store.build(0, &events);
    store.build(1, &events[..20]);
    let index = store.index();
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = index.search(&Filter::default(), 4, cursor).unwrap();
        assert!(page.hits.len() <= 4);
        seen.extend(page.hits.iter().map(IndexedEvent::key));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(seen.len(), 57);
    let unique: BTreeSet<_> = seen.iter().copied().collect();
    assert_eq!(unique.len(), 57, "no hit twice");
    let mut sorted = seen.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(seen, sorted, "newest first by (time, partition, index)");
}

#[test]
fn filters_combine_with_the_query_and_time_is_precise_to_the_microsecond() {
    let store = Store::new();
    store.build(
        0,
        &[
            (10, "call_received", "ana", "refund for [REDACTED:EMAIL]"),
            (11, "call_denied", "bo", "refund"),
            (12, "call_received", "bo", "shipment"),
            (13, "call_completed", "ana", "refund done"),
        ],
    );
    let index = store.index();
    let search = |filter: Filter| keys(&index.search(&filter, 10, None).unwrap());
    assert_eq!(
        search(Filter {
            query: Some("refund".into()),
            ..Filter::default()
        }),
        [(0, 3), (0, 1), (0, 0)]
    );
    assert_eq!(
        search(Filter {
            query: Some("refund".into()),
            subject: Some("ana".into()),
            ..Filter::default()
        }),
        [(0, 3), (0, 0)]
    );
    assert_eq!(
        search(Filter {
            from_micros: Some(11),
            to_micros: Some(13),
            ..Filter::default()
        }),
        [(0, 2), (0, 1)]
    );
    assert_eq!(
        search(Filter {
            detector: Some("EMAIL".into()),
            ..Filter::default()
        }),
        [(0, 0)]
    );
    assert_eq!(
        search(Filter {
            kind: Some("call_denied".into()),
            ..Filter::default()
        }),
        [(0, 1)]
    );
    assert_eq!(
        index
            .count(&Filter {
                subject: Some("bo".into()),
                ..Filter::default()
            })
            .unwrap(),
        2
    );
    for bad in [
        Filter {
            query: Some("function:(".into()),
            ..Filter::default()
        },
        Filter {
            kind: Some("call_exploded".into()),
            ..Filter::default()
        },
        Filter {
            decision: Some("maybe".into()),
            ..Filter::default()
        },
        Filter {
            mcp_outcome: Some("success".into()),
            ..Filter::default()
        },
        Filter {
            from_micros: Some(5),
            to_micros: Some(5),
            ..Filter::default()
        },
    ] {
        assert!(
            matches!(index.search(&bad, 10, None), Err(SearchError::BadQuery(_))),
            "{bad:?}"
        );
    }
}

#[test]
fn cursors_round_trip_and_refuse_garbage() {
    let cursor = Cursor {
        time_micros: -5,
        partition: 3,
        log_index: 99,
    };
    assert_eq!(Cursor::decode(&cursor.encode()).unwrap(), cursor);
    assert!(Cursor::decode("not a cursor").is_err());
    assert!(Cursor::decode(&URL_SAFE_NO_PAD.encode("v2:1:2:3")).is_err());
}

#[test]
fn an_mcp_call_is_found_by_its_server_tool_and_outcome_in_the_query_and_the_filters() {
    let store = Store::new();
    let calls = [
        (
            "mcp:crm__get_customer",
            Some(("crm", "get_customer", "result")),
        ),
        (
            "mcp:billing__get_customer",
            Some(("billing", "get_customer", "tool_error")),
        ),
        (
            "mcp:crm__delete_customer",
            Some(("crm", "delete_customer", "tool_error")),
        ),
        ("get_customer", None),
    ];
    let mut events = Vec::new();
    for (log_index, (function, mcp)) in calls.into_iter().enumerate() {
        let mut event = json!({
            "event_id": format!("e-{log_index}"),
            "call_id": format!("call-{log_index}"),
            "kind": "call_completed",
            "time": 1_000 + log_index as i64,
            "function": function,
        });
        if let Some((server, tool, outcome)) = mcp {
            event["mcp"] = json!({
                "method": "tools/call",
                "server": server,
                "tool": tool,
                "outcome": outcome,
            });
        }
        events.push(event);
    }
    // Two splits: hits are merged across them.
    store.write_split(0, 0, &IndexFields::new().schema, &events[..2], true);
    store.write_split(0, 2, &IndexFields::new().schema, &events[2..], true);
    let index = store.index();
    // Through `q`, the query over the indexed fields, as an auditor searches.
    let found = |query: &str| -> Vec<String> {
        let filter = Filter {
            query: Some(query.into()),
            ..Filter::default()
        };
        index
            .search(&filter, 10, None)
            .unwrap()
            .hits
            .into_iter()
            .filter_map(|hit| hit.function)
            .collect()
    };
    assert_eq!(
        found("mcp_tool:get_customer"),
        ["mcp:billing__get_customer", "mcp:crm__get_customer"]
    );
    assert_eq!(
        found("mcp_tool:get_customer AND mcp_server:crm"),
        ["mcp:crm__get_customer"]
    );
    assert_eq!(
        found("mcp_method:\"tools/call\" -mcp_server:crm"),
        ["mcp:billing__get_customer"]
    );

    // Through the filters (`mcp_server=`, `mcp_tool=`, `mcp_outcome=`), exact and ANDed.
    let filtered = |filter: Filter| -> Vec<String> {
        index
            .search(&filter, 10, None)
            .unwrap()
            .hits
            .into_iter()
            .filter_map(|hit| hit.function)
            .collect()
    };
    assert_eq!(
        filtered(Filter {
            mcp_server: Some("crm".into()),
            ..Filter::default()
        }),
        ["mcp:crm__delete_customer", "mcp:crm__get_customer"]
    );
    assert_eq!(
        filtered(Filter {
            mcp_tool: Some("get_customer".into()),
            ..Filter::default()
        }),
        ["mcp:billing__get_customer", "mcp:crm__get_customer"]
    );
    assert_eq!(
        filtered(Filter {
            mcp_outcome: Some("tool_error".into()),
            ..Filter::default()
        }),
        ["mcp:crm__delete_customer", "mcp:billing__get_customer"]
    );
    assert_eq!(
        filtered(Filter {
            mcp_server: Some("crm".into()),
            mcp_outcome: Some("tool_error".into()),
            ..Filter::default()
        }),
        ["mcp:crm__delete_customer"]
    );
    // Exact values: a tool's name is not a word of a longer one, nor of `function`.
    assert!(
        filtered(Filter {
            mcp_tool: Some("customer".into()),
            ..Filter::default()
        })
        .is_empty()
    );
}

#[test]
fn the_mcp_outcome_filter_accepts_exactly_the_schema_outcomes() {
    let outcomes: Vec<&str> = callproof_schemas::McpOutcome::ALL
        .iter()
        .map(|outcome| outcome.as_str())
        .collect();
    assert_eq!(outcomes, MCP_OUTCOMES);
}

/// The schema of index version 1: today's fields without the `mcp_*` ones added last.
fn schema_v1() -> tantivy::schema::Schema {
    let mut builder = tantivy::schema::Schema::builder();
    for (_, entry) in IndexFields::new().schema.fields() {
        if !entry.name().starts_with("mcp_") {
            builder.add_field(entry.clone());
        }
    }
    builder.build()
}

fn mcp_event(event_id: &str, time: i64, server: &str) -> serde_json::Value {
    json!({
        "event_id": event_id,
        "call_id": event_id,
        "kind": "call_completed",
        "time": time,
        "function": format!("mcp:{server}__get_customer"),
        "principal": {"subject": "ana"},
        "request": {"body": "refund"},
        "mcp": {"method": "tools/call", "server": server, "tool": "get_customer", "outcome": "result"},
    })
}

/// Regression: a search naming an `mcp_*` field (in `q` or as a filter) over an index written
/// before those fields panicked in tantivy (a field id past the index's schema). A split of an
/// older schema is searched by its fields until `reindex` replaces it.
#[test]
fn a_split_of_an_older_schema_is_searched_by_its_fields_until_replaced() {
    let store = Store::new();
    let old_events = [
        json!({"event_id": "old-0", "call_id": "old-0", "kind": "call_received", "time": 10,
               "function": "get_customer", "principal": {"subject": "ana"},
               "request": {"body": "refund"}}),
        json!({"event_id": "old-1", "call_id": "old-1", "kind": "call_received", "time": 11,
               "function": "get_customer", "principal": {"subject": "bo"},
               "request": {"body": "refund"}}),
    ];
    let old = store.write_split(0, 0, &schema_v1(), &old_events, true);
    store.write_split(
        1,
        0,
        &IndexFields::new().schema,
        &[mcp_event("new-0", 12, "crm")],
        true,
    );
    let index = store.index();
    let ids = |filter: Filter| -> Vec<String> {
        let page = index.search(&filter, 10, None).unwrap();
        let scanned = index.scan(&filter).unwrap().len();
        assert_eq!(index.count(&filter).unwrap(), page.hits.len(), "{filter:?}");
        assert_eq!(scanned, page.hits.len(), "{filter:?}");
        page.hits
            .into_iter()
            .filter_map(|hit| hit.event_id)
            .collect()
    };
    let query = |text: &str| Filter {
        query: Some(text.into()),
        ..Filter::default()
    };
    // The old index answers what it has, and nothing for the fields it lacks.
    assert_eq!(ids(Filter::default()), ["new-0", "old-1", "old-0"]);
    assert_eq!(ids(query("refund")), ["new-0", "old-1", "old-0"]);
    assert_eq!(
        ids(Filter {
            subject: Some("ana".into()),
            ..Filter::default()
        }),
        ["new-0", "old-0"]
    );
    assert_eq!(ids(query("mcp_tool:get_customer AND refund")), ["new-0"]);
    assert_eq!(
        ids(Filter {
            mcp_server: Some("crm".into()),
            subject: Some("ana".into()),
            ..Filter::default()
        }),
        ["new-0"]
    );
    // A query no schema knows is still refused.
    assert!(matches!(
        index.search(&query("colour:blue"), 10, None),
        Err(SearchError::BadQuery(_))
    ));

    // `reindex` publishes a split of today's schema over the same entries and more, and marks
    // the old one for deletion.
    let mut rebuilt = old_events.to_vec();
    rebuilt.push(mcp_event("new-1", 13, "crm"));
    store.write_split(0, 0, &IndexFields::new().schema, &rebuilt, true);
    store.mark_deleted(&old);
    let by_server = Filter {
        mcp_server: Some("crm".into()),
        ..Filter::default()
    };
    assert_eq!(ids(by_server), ["new-1", "new-0"]);
    assert_eq!(ids(Filter::default()), ["new-1", "new-0", "old-1", "old-0"]);
    assert_eq!(
        index.searchable().unwrap(),
        BTreeMap::from([(0, 3), (1, 1)])
    );
}

fn event(event_id: &str, time: i64) -> serde_json::Value {
    json!({"event_id": event_id, "call_id": event_id, "kind": "call_received", "time": time,
           "function": "get_customer", "request": {"body": "refund"}})
}

#[test]
fn only_published_splits_from_entry_zero_are_searched_and_each_answer_says_how_far() {
    let store = Store::new();
    let schema = IndexFields::new().schema;
    let index = store.index();
    // Complete but not published: not searched.
    store.write_split(0, 0, &schema, &[event("a", 1), event("b", 2)], false);
    let page = index.search(&Filter::default(), 10, None).unwrap();
    assert!(page.hits.is_empty());
    assert_eq!(page.searchable, BTreeMap::from([(0, 0)]));
    // Published, but after a gap (entries 0..2 are not published yet): not searched either.
    store.write_split(0, 2, &schema, &[event("c", 3)], true);
    let page = index.search(&Filter::default(), 10, None).unwrap();
    assert!(page.hits.is_empty());
    assert_eq!(page.searchable, BTreeMap::from([(0, 0)]));
    // Two indexers built entries 0..2 (a rebalance): both published, each entry found once.
    store.write_split(0, 0, &schema, &[event("a", 1), event("b", 2)], true);
    store.write_split(0, 0, &schema, &[event("a", 1), event("b", 2)], true);
    let page = index.search(&Filter::default(), 10, None).unwrap();
    let ids: Vec<_> = page
        .hits
        .iter()
        .filter_map(|hit| hit.event_id.clone())
        .collect();
    assert_eq!(ids, ["c", "b", "a"]);
    assert_eq!(page.searchable, BTreeMap::from([(0, 3)]));
    assert_eq!(index.count(&Filter::default()).unwrap(), 3);
}

#[test]
fn the_cache_stays_under_its_bound_and_every_event_is_still_found() {
    let store = Store::new();
    let schema = IndexFields::new().schema;
    let mut expected = Vec::new();
    for split in 0..8u64 {
        let events: Vec<_> = (0..20)
            .map(|i| {
                let n = split * 20 + i;
                expected.push(format!("e{n}"));
                event(&format!("e{n}"), n as i64)
            })
            .collect();
        store.write_split(0, split * 20, &schema, &events, true);
    }
    let split_bytes = std::fs::read_dir(store.dir.path().join("store/index/0/splits"))
        .unwrap()
        .flatten()
        .map(|entry| entry.metadata().unwrap().len())
        .max()
        .unwrap();
    // Room for three splits of the eight.
    let bound = 3 * split_bytes;
    // Ahead of searches, everything is fetched when it fits, nothing when it does not.
    let roomy = store.index();
    assert_eq!(roomy.prefetch().unwrap(), 8);
    let index = store.index_with_cache("small-cache", bound);
    assert_eq!(index.prefetch().unwrap(), 0);
    for _ in 0..2 {
        let mut found: Vec<String> = index
            .scan(&Filter::default())
            .unwrap()
            .into_iter()
            .filter_map(|hit| hit.event_id)
            .collect();
        found.sort();
        let mut want = expected.clone();
        want.sort();
        assert_eq!(found, want);
        assert!(
            index.cache().bytes() <= bound,
            "{} > {bound}",
            index.cache().bytes()
        );
        let on_disk: u64 = std::fs::read_dir(store.dir.path().join("small-cache"))
            .unwrap()
            .flatten()
            .map(|entry| entry.metadata().unwrap().len())
            .sum();
        assert!(on_disk <= bound, "{on_disk} bytes on disk, bound {bound}");
        assert_eq!(index.cache().len(), 3);
    }
    let page = index.search(&Filter::default(), 5, None).unwrap();
    assert_eq!(page.hits[0].event_id.as_deref(), Some("e159"));
}

/// A reader whose listing names a split that is gone (deleted after its grace period while the
/// reader was stalled) fails that search with `Unavailable`, and lists again for the next one.
#[test]
fn a_split_gone_from_the_store_is_listed_again_after_one_failed_search() {
    let store = Store::new();
    let schema = IndexFields::new().schema;
    let old = store.write_split(0, 0, &schema, &[event("a", 1), event("b", 2)], true);
    let index = SearchIndex::open(
        store.store.clone(),
        store.runtime.handle().clone(),
        &store.dir.path().join("cache"),
        u64::MAX,
        Duration::from_secs(3600),
    )
    .unwrap();
    assert_eq!(index.searchable().unwrap(), BTreeMap::from([(0, 2)]));
    // Replaced (by a rebuild over a longer log) and deleted, before this reader downloaded it.
    store.write_split(
        0,
        0,
        &schema,
        &[event("a", 1), event("b", 2), event("c", 3)],
        true,
    );
    store.mark_deleted(&old);
    store.runtime.block_on(async {
        for path in [old.object_path(), old.published_path()] {
            store.store.delete(&path).await.unwrap();
        }
    });
    let first = index.search(&Filter::default(), 10, None);
    assert!(
        matches!(first, Err(SearchError::Unavailable(_))),
        "{first:?}"
    );
    let second = index.search(&Filter::default(), 10, None).unwrap();
    assert_eq!(second.hits.len(), 3);
    assert_eq!(second.searchable, BTreeMap::from([(0, 3)]));
}
