//! The crate's error type.

/// What can go wrong reading or encoding evidence. Messages name the thing and the reason, and
/// never quote event data.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    #[error("`storage.url` {url:?} cannot be opened: {reason}")]
    StoreUrl { url: String, reason: String },
    #[error("the object store at {url} is not writable: {reason}")]
    StoreUnwritable { url: String, reason: String },
    #[error("log of partition {partition}: {source}")]
    Log {
        partition: i32,
        #[source]
        source: callproof_tlog::Error,
    },
    #[error("object store at {path}: {source}")]
    Store {
        path: String,
        #[source]
        source: object_store::Error,
    },
    #[error("entry {index} of partition {partition}: {reason}")]
    BadEntry {
        partition: i32,
        index: u64,
        reason: String,
    },
    #[error("index split {name}: {reason}")]
    Split { name: String, reason: String },
    #[error("cannot encode an entry: {0}")]
    Encode(String),
}
