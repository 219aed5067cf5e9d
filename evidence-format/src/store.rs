//! Where the logs live: the object store named by `storage.url`, each partition's log under
//! `logs/<partition>/`, and the entries read back with their blobs.

use std::sync::Arc;

use callproof_config::StorageConfig;
use callproof_tlog::store::LogReader;
use callproof_tlog::tile::{TILE_WIDTH, parse_bundle, tile_width};
use futures::{StreamExt as _, TryStreamExt as _};
use object_store::ObjectStore;
use object_store::path::Path;
use serde_json::Value;

use crate::FormatError;
use crate::entry::{blob_path, blob_references, restore_blob};

/// The object-store prefix of a partition's log.
pub fn log_prefix(partition: i32) -> Path {
    Path::from(format!("logs/{partition}"))
}

/// Opens the store named by `storage.url`. A `file://` directory is created if missing.
pub fn open_store(config: &StorageConfig) -> Result<Arc<dyn ObjectStore>, FormatError> {
    let bad_url = |reason: String| FormatError::StoreUrl {
        url: config.url.clone(),
        reason,
    };
    let local_path = if config.url.contains("://") {
        None
    } else {
        // A plain path: a local directory, relative to the working directory.
        Some(std::path::PathBuf::from(&config.url))
    };
    let url = match &local_path {
        Some(_) => None,
        None => Some(url::Url::parse(&config.url).map_err(|error| bad_url(error.to_string()))?),
    };
    let file_path = match (&local_path, &url) {
        (Some(path), _) => Some(path.clone()),
        (None, Some(url)) if url.scheme() == "file" => Some(
            url.to_file_path()
                .map_err(|()| bad_url("not an absolute local path".into()))?,
        ),
        _ => None,
    };
    if let Some(path) = file_path {
        std::fs::create_dir_all(&path).map_err(|error| FormatError::StoreUnwritable {
            url: config.url.clone(),
            reason: format!("cannot create {}: {error}", path.display()),
        })?;
        let store = object_store::local::LocalFileSystem::new_with_prefix(&path)
            .map_err(|error| bad_url(error.to_string()))?;
        return Ok(Arc::new(store));
    }
    let Some(url) = url else {
        return Err(bad_url("not a URL".into()));
    };
    let options = config
        .options
        .iter()
        .map(|(key, value)| (key.clone(), value.expose().to_string()));
    let (store, prefix) =
        object_store::parse_url_opts(&url, options).map_err(|error| bad_url(error.to_string()))?;
    let store: Arc<dyn ObjectStore> = Arc::from(store);
    if prefix.as_ref().is_empty() {
        Ok(store)
    } else {
        Ok(Arc::new(object_store::prefix::PrefixStore::new(
            store, prefix,
        )))
    }
}

/// Reads log entries `from..to` of a log whose checkpoint has `tree_size` entries, with their
/// blobs put back, in log order.
pub async fn read_entries(
    reader: &LogReader,
    store: &Arc<dyn ObjectStore>,
    partition: i32,
    from: u64,
    to: u64,
    tree_size: u64,
) -> Result<Vec<Value>, FormatError> {
    let width = u64::from(TILE_WIDTH);
    if from >= to {
        return Ok(Vec::new());
    }
    let bundles: Vec<u64> = (from / width..=(to - 1) / width).collect();
    let fetched: Vec<(u64, Vec<u8>)> = futures::stream::iter(bundles)
        .map(|bundle| async move {
            let bytes = reader
                .bundle(bundle, tile_width(0, bundle, tree_size))
                .await
                .map_err(|source| FormatError::Log { partition, source })?;
            Ok::<_, FormatError>((bundle, bytes))
        })
        .buffered(8)
        .try_collect()
        .await?;
    let mut entries = Vec::with_capacity((to - from) as usize);
    for (bundle, bytes) in &fetched {
        let parsed =
            parse_bundle(bytes).map_err(|source| FormatError::Log { partition, source })?;
        for (position, raw) in parsed.into_iter().enumerate() {
            let index = bundle * width + position as u64;
            if index < from || index >= to {
                continue;
            }
            let bad = |reason: String| FormatError::BadEntry {
                partition,
                index,
                reason,
            };
            let mut entry: Value =
                serde_json::from_slice(raw).map_err(|error| bad(error.to_string()))?;
            for (pointer, sha256_hex) in blob_references(&entry) {
                let path = object_store::path::Path::from(blob_path(&sha256_hex));
                let blob = store
                    .get(&path)
                    .await
                    .map_err(|source| FormatError::Store {
                        path: path.to_string(),
                        source,
                    })?
                    .bytes()
                    .await
                    .map_err(|source| FormatError::Store {
                        path: path.to_string(),
                        source,
                    })?;
                restore_blob(&mut entry, &pointer, &sha256_hex, &blob).map_err(bad)?;
            }
            entries.push(entry);
        }
    }
    if entries.len() as u64 != to - from {
        return Err(FormatError::Log {
            partition,
            source: callproof_tlog::Error::Corrupt(format!(
                "expected entries {from}..{to}, read {}",
                entries.len()
            )),
        });
    }
    Ok(entries)
}
