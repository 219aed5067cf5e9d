//! The evidence format: what the processor writes and everyone else reads.
//!
//! - [`entry`]: the bytes of one log entry (canonical JSON of the masked event and where it came
//!   from), and the content-addressed blobs that hold values too large for an entry.
//! - [`index_schema`]: the search index's schema and the document of each entry, shared by the
//!   processor (which writes the index), `reindex` and the evidence API (which reads it).
//! - [`split`]: the index as immutable splits in the object store (layout, the split object's
//!   bundle format, which splits readers search).
//! - [`store`]: opening the object store named by `storage.url`, where each partition's log
//!   lives, and reading a range of entries with their blobs put back.
//!
//! No Kafka and no writing here: the evidence API depends on this crate, never on the
//! processor.

pub mod entry;
mod error;
pub mod index_schema;
pub mod split;
pub mod store;

pub use error::FormatError;
