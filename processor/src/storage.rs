//! The object store: opened from `storage.url`, checked writable at start.

use std::sync::Arc;

use callproof_config::StorageConfig;
use object_store::path::Path;
use object_store::{ObjectStore, PutMode, PutPayload};

use crate::ProcessorError;

/// Opens the store named by `storage.url`. A `file://` directory is created if missing.
pub fn open_store(config: &StorageConfig) -> Result<Arc<dyn ObjectStore>, ProcessorError> {
    let bad_url = |reason: String| ProcessorError::StoreUrl {
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
        std::fs::create_dir_all(&path).map_err(|error| ProcessorError::StoreUnwritable {
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

/// Creates (only if absent) and deletes a probe object, so that a store that is unwritable,
/// or cannot write conditionally (which the single writer of each log relies on), stops the
/// processor at start with a clear message rather than at its first batch.
pub async fn check_writable(store: &Arc<dyn ObjectStore>, url: &str) -> Result<(), ProcessorError> {
    let probe = Path::from(format!(
        "_probe/{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_nanos())
            .unwrap_or_default()
    ));
    let unwritable = |error: object_store::Error| ProcessorError::StoreUnwritable {
        url: url.to_string(),
        reason: error.to_string(),
    };
    match store
        .put_opts(
            &probe,
            PutPayload::from_static(b"probe"),
            PutMode::Create.into(),
        )
        .await
    {
        Ok(_) => {}
        Err(object_store::Error::NotImplemented | object_store::Error::NotSupported { .. }) => {
            return Err(ProcessorError::StoreUnwritable {
                url: url.to_string(),
                reason: "it cannot create an object only if it is absent, which fences the single writer of each log (on S3 and MinIO, leave aws_conditional_put at its default, etag)".into(),
            });
        }
        Err(error) => return Err(unwritable(error)),
    }
    store.delete(&probe).await.map_err(unwritable)?;
    Ok(())
}
