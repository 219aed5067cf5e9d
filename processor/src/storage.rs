//! The object store: opened from `storage.url`, checked writable at start.

use std::sync::Arc;

use object_store::path::Path;
use object_store::{ObjectStore, PutMode, PutPayload};

use crate::ProcessorError;

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
