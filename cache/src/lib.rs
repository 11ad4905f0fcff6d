//! Persistent cache of AFS objects for afsd-rs.
//!
//! The cache knows records, not the network: vnode statuses (with the data
//! version they were fetched at and their callback), file data in fixed-size
//! chunks keyed by `(fid, data version, chunk index)` so that a chunk of an
//! older data version can never be served as current, and parsed directories.
//! Records live in RocksDB; chunks are plain files beside it (see `files.rs`
//! for why), so the cache directory's size follows the limit at all times.
//!
//! Every change goes through [`Store::apply`] with a [`Batch`] of [`Op`]s,
//! applied atomically: flushes, uses of chunks and the store's own
//! evictions too. That single path is where the offline change log of
//! disconnected operation will join: a logged mutation and its effect on the
//! cache land in the same batch. (Only the repairs at open, which drop
//! records whose files are gone, write outside it.)

mod error;
mod files;
mod key;
mod memory;
mod record;
mod rocks;
mod store;
mod usage;

pub use error::{Error, Result};
pub use key::FidKey;
pub use memory::MemoryStore;
pub use record::{DirEntryRecord, DirRecord, StatusRecord, TokenRecord};
pub use rocks::RocksStore;
pub use store::{Batch, Op, Store};
pub use usage::{EvictReport, Limits, Usage};

/// The data version of chunks written locally and not yet stored to the
/// fileserver. No server version reaches it, so unstored data can never be
/// served as a server's; a store moves the chunks to the version it created
/// ([`Op::MoveChunk`]).
pub const LOCAL_DATA_VERSION: u64 = u64::MAX;

#[cfg(test)]
mod tests;
