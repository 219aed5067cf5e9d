//! The crate's error type.

/// Everything that can go wrong in `callproof-tlog`.
///
/// Parsers and verifiers never panic on input: every refusal is one of these, with a
/// lowercase message naming the thing that was refused and why.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Input (a tile, bundle, checkpoint, note, key or proof) that does not follow its format.
    #[error("malformed {what}: {reason}")]
    Malformed { what: &'static str, reason: String },

    /// A signed note with no valid signature by the expected key, or a bad one.
    #[error("signature verification failed: {0}")]
    Signature(String),

    /// A Merkle proof that does not prove what it claims.
    #[error("invalid proof: {0}")]
    InvalidProof(String),

    /// An index or tree size outside what the log (or the request) allows.
    #[error("{what} {value} is out of range: {reason}")]
    OutOfRange {
        what: &'static str,
        value: u64,
        reason: String,
    },

    /// An entry too large for the 16-bit length prefix of an entry bundle.
    #[error("an entry is at most {max} bytes, but entry {position} of the batch is {len} bytes", max = crate::tile::MAX_ENTRY_SIZE)]
    EntryTooLarge { position: usize, len: usize },

    /// Stored data that contradicts the signed checkpoint (tampering or a bug).
    #[error("log is corrupt: {0}")]
    Corrupt(String),

    /// A tile or bundle that the operation needs but the reader could not provide.
    #[error("missing {0}")]
    Missing(String),

    /// An I/O error reading a log from the local filesystem.
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },

    /// Another writer appended to the log from the size this writer is at (it claimed the
    /// append first): this writer's view of the log is stale, and it must reopen the log
    /// before appending again. Nothing it wrote is in the log.
    #[error("another writer appended to the log at size {size}: reopen the log")]
    Fenced { size: u64 },

    /// The object store cannot create an object only if it is absent, so the single writer
    /// of a log cannot be enforced: the writer refuses to append rather than risk a fork.
    #[error(
        "the object store cannot create {path} only if it is absent: one writer per log cannot be enforced; use a store with conditional writes (S3 or MinIO with aws_conditional_put = etag, the default; the local filesystem)"
    )]
    ConditionalWriteUnsupported { path: String },

    /// An error from the object store.
    #[cfg(feature = "store")]
    #[error("object store error at {path}: {source}")]
    Store {
        path: String,
        #[source]
        source: object_store::Error,
    },
}

impl Error {
    pub(crate) fn malformed(what: &'static str, reason: impl Into<String>) -> Self {
        Self::Malformed {
            what,
            reason: reason.into(),
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
