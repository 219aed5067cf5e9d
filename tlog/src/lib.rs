//! `callproof-tlog`: the callproof transparency log, laid out as a C2SP tlog-tiles log.
//!
//! - [`hash`]: RFC 6962 leaf and node hashes;
//! - [`tile`]: tile and entry-bundle paths and contents (C2SP `tlog-tiles`);
//! - [`checkpoint`]: checkpoint bodies (C2SP `tlog-checkpoint`);
//! - [`note`]: Ed25519 signed notes and their keys (C2SP `signed-note`);
//! - [`proof`]: inclusion and consistency proofs, built from tiles through [`proof::HashReader`]
//!   and verified without them, and the `c2sp.org/tlog-proof@v1` format;
//! - [`audit`]: the offline full audit of a log directory behind `callproof-verify log`;
//! - [`bundle`]: evidence bundles (the evidence API's exports) and their offline check;
//! - `store` (feature `store`): the writer and reader over `object_store`.
//!
//! Without the `store` feature the crate does no network I/O and has no async runtime.

pub mod audit;
pub mod bundle;
pub mod checkpoint;
mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod hash;
pub mod note;
pub mod proof;
#[cfg(feature = "store")]
pub mod store;
pub mod tile;

pub use error::{Error, Result};
