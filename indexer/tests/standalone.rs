//! `callproof-indexer` on its own: a process with no Kafka, given only the deployment file,
//! indexes every partition's log it finds in the store, and a reader with nothing but the store
//! finds every entry exactly once.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use callproof_evidence_format::index_schema::search;
use callproof_evidence_format::split::{list_index, open_split};
use callproof_evidence_format::store::log_prefix;
use callproof_tlog::note::NoteSigner;
use callproof_tlog::store::LogWriter;
use object_store::ObjectStore;
use object_store::local::LocalFileSystem;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standalone_indexer_indexes_every_log_it_finds() {
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("store");
    std::fs::create_dir_all(&store_dir).unwrap();
    let store: Arc<dyn ObjectStore> =
        Arc::new(LocalFileSystem::new_with_prefix(&store_dir).unwrap());
    let (signer_key, verifier_key) = NoteSigner::generate("standalone.test/log").unwrap();
    let signer: NoteSigner = signer_key.parse().unwrap();
    // Two partitions' logs, as processors elsewhere wrote them.
    let sizes = BTreeMap::from([(0, 25u64), (2, 7u64)]);
    let mut writers = BTreeMap::new();
    for (&partition, &size) in &sizes {
        let mut writer = LogWriter::open(
            store.clone(),
            log_prefix(partition),
            signer.clone(),
            format!("standalone.test/log/{partition}"),
        )
        .await
        .unwrap();
        append(&mut writer, partition, 0, size).await;
        writers.insert(partition, writer);
    }
    let config = dir.path().join("indexer.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[storage]
url = "file://{store}"

# The deployment's one file: the processor's signing key is named but does not exist here,
# so an indexer that tried to read it would not start.
[log]
signing_key_file = "{key}"

[index]
verifier_key = "{verifier_key}"
scratch_dir = "{scratch}"
in_process = false
split_interval_ms = 100
merge_factor = 2
"#,
            store = store_dir.display(),
            key = dir.path().join("absent-log.key").display(),
            scratch = dir.path().join("scratch").display(),
        ),
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = std::fs::File::create(dir.path().join("indexer.log")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_callproof-indexer"))
        .arg("--config")
        .arg(&config)
        .arg("--metrics-listen")
        .arg(format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();

    let wait_for = |expected: BTreeMap<i32, u64>| {
        let store = store.clone();
        let deadline = Instant::now() + Duration::from_secs(60);
        async move {
            loop {
                let covered: BTreeMap<i32, u64> = list_index(&store)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|(partition, listing)| (partition, listing.cover().1))
                    .collect();
                if covered == expected {
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "covered {covered:?}, expected {expected:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    wait_for(sizes.clone()).await;
    // The logs grow: the indexer follows (and merges, merge_factor 2).
    for (partition, writer) in &mut writers {
        append(writer, *partition, sizes[partition], 5).await;
    }
    let grown: BTreeMap<i32, u64> = sizes.iter().map(|(p, size)| (*p, size + 5)).collect();
    wait_for(grown.clone()).await;
    // How far search reaches, per partition, on the indexer's own /metrics.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let metrics = reqwest_free_get(port, "/metrics");
        if metrics.contains(r#"callproof_indexer_searchable_entries{partition="2"} 12"#)
            && metrics.contains(r#"callproof_indexer_lag_entries{partition="0"} 0"#)
        {
            break;
        }
        assert!(Instant::now() < deadline, "{metrics}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();

    // A reader with nothing but the store: every entry of every log, once.
    let mut indexes = Vec::new();
    for (partition, listing) in list_index(&store).await.unwrap() {
        for split in listing.cover().0 {
            let path = store_dir.join(split.object_path().as_ref());
            indexes.push((partition, open_split(&path, &split).unwrap().0));
        }
    }
    let mut found: Vec<(i32, u64)> = search(&indexes, "*", 1_000)
        .unwrap()
        .into_iter()
        .map(|hit| (hit.partition, hit.log_index))
        .collect();
    found.sort_unstable();
    let expected: Vec<(i32, u64)> = grown
        .iter()
        .flat_map(|(partition, size)| (0..*size).map(|index| (*partition, index)))
        .collect();
    assert_eq!(found, expected);
}

async fn append(writer: &mut LogWriter, partition: i32, from: u64, n: u64) {
    let entries: Vec<Vec<u8>> = (from..from + n)
        .map(|index| {
            serde_json::to_vec(&serde_json::json!({"event": {
                "event_id": format!("e-{partition}-{index}"),
                "kind": "call_received",
                "time": 1_700_000_000_000_000i64 + index as i64,
            }}))
            .unwrap()
        })
        .collect();
    writer.append(&entries, &[]).await.unwrap();
}

/// GET over a plain TCP connection (the indexer's metrics endpoint, on loopback).
fn reqwest_free_get(port: u16, path: &str) -> String {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}
