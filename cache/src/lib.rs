//! Persistent cache of AFS objects for afsd-rs.
//!
//! The cache knows records, not the network: vnode statuses (with the data
//! version they were fetched at and their callback), file data in fixed-size
//! chunks keyed by `(fid, data version, chunk index)` so that a chunk of an
//! older data version can never be served as current, and parsed directories.
//!
//! Every change goes through [`Store::apply`] with a [`Batch`] of [`Op`]s,
//! applied atomically. That single path is where the offline change log of
//! disconnected operation will join: a logged mutation and its effect on the
//! cache land in the same batch.

mod error;
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

#[cfg(test)]
mod tests;
