use std::collections::BTreeSet;

use serde_json::json;

use super::*;

/// Builds one partition's index from entries shaped as the processor stores them.
fn build(root: &Path, partition: i32, events: &[(i64, &str, &str, &str)]) {
    let fields = IndexFields::new();
    let dir = callproof_evidence_format::index_schema::partition_index_dir(root, partition);
    std::fs::create_dir_all(&dir).unwrap();
    let index = Index::create_in_dir(&dir, fields.schema.clone()).unwrap();
    let mut writer: tantivy::IndexWriter = index.writer(15_000_000).unwrap();
    for (log_index, (time, kind, subject, body)) in events.iter().enumerate() {
        let entry = json!({"event": {
            "event_id": format!("e-{partition}-{log_index}"),
            "call_id": format!("call-{}", log_index / 2),
            "kind": kind,
            "time": time,
            "function": "get_customer",
            "principal": {"subject": subject, "groups": ["support"]},
            "request": {"body": body},
            "masking": if body.contains("REDACTED") { json!([{"detector": "EMAIL", "path": "/request/body", "count": 1}]) } else { json!([]) },
        }});
        writer
            .add_document(fields.document(&entry, partition, log_index as u64))
            .unwrap();
    }
    writer.commit().unwrap();
}

fn keys(page: &SearchPage) -> Vec<(i32, u64)> {
    page.hits
        .iter()
        .map(|hit| (hit.partition, hit.log_index))
        .collect()
}

#[test]
fn cursor_pages_visit_every_hit_once_newest_first_even_with_equal_times() {
    let dir = tempfile::tempdir().unwrap();
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
    build(dir.path(), 0, &events);
    build(dir.path(), 1, &events[..20]);
    let index = SearchIndex::open(dir.path()).unwrap();
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
    let dir = tempfile::tempdir().unwrap();
    build(
        dir.path(),
        0,
        &[
            (10, "call_received", "ana", "refund for [REDACTED:EMAIL]"),
            (11, "call_denied", "bo", "refund"),
            (12, "call_received", "bo", "shipment"),
            (13, "call_completed", "ana", "refund done"),
        ],
    );
    let index = SearchIndex::open(dir.path()).unwrap();
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
    let dir = tempfile::tempdir().unwrap();
    let fields = IndexFields::new();
    let index_dir = callproof_evidence_format::index_schema::partition_index_dir(dir.path(), 0);
    std::fs::create_dir_all(&index_dir).unwrap();
    let index = Index::create_in_dir(&index_dir, fields.schema.clone()).unwrap();
    let mut writer: tantivy::IndexWriter = index.writer(15_000_000).unwrap();
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
        writer
            .add_document(fields.document(&json!({"event": event}), 0, log_index as u64))
            .unwrap();
    }
    writer.commit().unwrap();
    let index = SearchIndex::open(dir.path()).unwrap();
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

/// Writes one partition's index as the processor does, with `schema` (today's, or an older one
/// whose fields are a prefix of it), from event JSON.
fn write_index(
    root: &Path,
    partition: i32,
    schema: &tantivy::schema::Schema,
    events: &[serde_json::Value],
) {
    let fields = IndexFields::new();
    let dir = callproof_evidence_format::index_schema::partition_index_dir(root, partition);
    std::fs::create_dir_all(&dir).unwrap();
    let index = Index::create_in_dir(&dir, schema.clone()).unwrap();
    let mut writer: tantivy::IndexWriter = index.writer(15_000_000).unwrap();
    for (log_index, event) in events.iter().enumerate() {
        writer
            .add_document(fields.document(&json!({ "event": event }), partition, log_index as u64))
            .unwrap();
    }
    writer.commit().unwrap();
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
/// before those fields panicked in tantivy (a field id past the index's schema), and a reader
/// kept the schema of the index it was opened on after the processor rebuilt it.
#[test]
fn an_index_of_an_older_schema_is_searched_by_its_fields_and_reopened_once_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let old_events = [
        json!({"event_id": "old-0", "call_id": "old-0", "kind": "call_received", "time": 10,
               "function": "get_customer", "principal": {"subject": "ana"},
               "request": {"body": "refund"}}),
        json!({"event_id": "old-1", "call_id": "old-1", "kind": "call_received", "time": 11,
               "function": "get_customer", "principal": {"subject": "bo"},
               "request": {"body": "refund"}}),
    ];
    write_index(dir.path(), 0, &schema_v1(), &old_events);
    write_index(
        dir.path(),
        1,
        &IndexFields::new().schema,
        &[mcp_event("new-0", 12, "crm")],
    );
    let index = SearchIndex::open(dir.path()).unwrap();
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

    // The processor replaces the old index with one of today's schema at the same path.
    let old_dir = callproof_evidence_format::index_schema::partition_index_dir(dir.path(), 0);
    std::fs::rename(&old_dir, dir.path().join("0.set-aside-1")).unwrap();
    let mut rebuilt = old_events.to_vec();
    rebuilt.push(mcp_event("new-1", 13, "crm"));
    write_index(dir.path(), 0, &IndexFields::new().schema, &rebuilt);
    let by_server = Filter {
        mcp_server: Some("crm".into()),
        ..Filter::default()
    };
    // Found once the directory is listed again (every RESCAN_INTERVAL).
    let deadline = Instant::now() + Duration::from_secs(30);
    while ids(by_server.clone()) != ["new-1", "new-0"] {
        assert!(Instant::now() < deadline, "{:?}", ids(by_server.clone()));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(ids(Filter::default()), ["new-1", "new-0", "old-1", "old-0"]);
}
