//! Shared test data and helpers.

use std::path::PathBuf;
use std::sync::Arc;

use callproof_tlog::note::{NoteSigner, NoteVerifier};
use callproof_tlog::store::LogWriter;
use object_store::ObjectStore;
use object_store::memory::InMemory;
use object_store::path::Path;

/// The test vectors of transparency-dev, with their licenses (`tests/testdata/README.md`).
pub fn testdata() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/testdata"))
}

pub fn tessera_log() -> PathBuf {
    testdata().join("tessera-log")
}

/// Key, origin and entries of the golden Tessera log (see `testdata/README.md`).
pub const TESSERA_SIGNER: &str =
    "PRIVATE+KEY+example.com/log/testdata+33d7b496+AeymY/SZAX0jZcJ8enZ5FY1Dz+wTML2yWSkK+9DSF3eg";
pub const TESSERA_VERIFIER: &str =
    "example.com/log/testdata+33d7b496+AeHTu4Q3hEIMHNqc6fASMsq3rKNx280NI+oO5xCFkkSx";
pub const TESSERA_ORIGIN: &str = "example.com/log/testdata";
pub const TESSERA_ENTRIES: [&str; 15] = [
    "one", "two", "three", "four", "five", "six", "seven", "eit", "nain", "ten", "ileven", "twelf",
    "threeten", "fourten", "fivten",
];

pub fn tessera_signer() -> NoteSigner {
    TESSERA_SIGNER.parse().unwrap()
}

pub fn tessera_verifier() -> NoteVerifier {
    TESSERA_VERIFIER.parse().unwrap()
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

pub fn memory_store() -> Arc<dyn ObjectStore> {
    Arc::new(InMemory::new())
}

/// Opens a writer with the Tessera key over `store` at the root prefix.
pub async fn tessera_writer(store: &Arc<dyn ObjectStore>) -> LogWriter {
    LogWriter::open(
        store.clone(),
        Path::default(),
        tessera_signer(),
        TESSERA_ORIGIN.to_owned(),
    )
    .await
    .unwrap()
}

/// The contents of an object, if present.
pub async fn read_object(store: &Arc<dyn ObjectStore>, path: &str) -> Option<Vec<u8>> {
    match store.get(&Path::from(path)).await {
        Ok(result) => Some(result.bytes().await.unwrap().to_vec()),
        Err(object_store::Error::NotFound { .. }) => None,
        Err(error) => panic!("{path}: {error}"),
    }
}

/// Every object path in the store.
pub async fn list_objects(store: &Arc<dyn ObjectStore>) -> Vec<String> {
    use futures::TryStreamExt as _;
    let mut paths: Vec<String> = store
        .list(None)
        .map_ok(|meta| meta.location.to_string())
        .try_collect()
        .await
        .unwrap();
    paths.sort();
    paths
}

/// Every file under `dir`, as `/`-separated relative paths.
pub fn list_files(dir: &std::path::Path) -> Vec<String> {
    fn walk(root: &std::path::Path, dir: &std::path::Path, files: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, files);
            } else {
                let relative = path.strip_prefix(root).unwrap();
                files.push(relative.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    let mut files = Vec::new();
    walk(dir, dir, &mut files);
    files.sort();
    files
}

/// Copies a directory tree.
pub fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    for file in list_files(from) {
        let target = to.join(&file);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::copy(from.join(&file), target).unwrap();
    }
}
