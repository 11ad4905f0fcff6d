//! The store abstraction and its single write path.

use crate::{DirRecord, FidKey, Result, StatusRecord, TokenRecord};

/// One change to the cache. Changes are only ever applied in a [`Batch`].
#[derive(Clone, Debug)]
pub enum Op {
    PutStatus(FidKey, StatusRecord),
    /// Forget a status (callback broken and object gone, or flushed).
    DeleteStatus(FidKey),
    PutChunk {
        fid: FidKey,
        data_version: u64,
        index: u64,
        data: Vec<u8>,
    },
    /// Drop every chunk of a fid, of every data version.
    DeleteChunks(FidKey),
    PutDir(FidKey, DirRecord),
    DeleteDir(FidKey),
    /// Small named values: the client's UUID, the chunk size in use.
    PutMeta(String, Vec<u8>),
    PutToken(TokenRecord),
    DeleteToken {
        uid: u32,
        cell: String,
    },
}

/// An atomic group of changes.
///
/// `durable` batches (tokens, the client's UUID, and later anything a user
/// wrote) go through RocksDB's write-ahead log and survive a daemon crash.
/// Clean batches hold only what was fetched from a server and can be fetched
/// again: they skip the log, which halves the disk writes of a cold read.
#[derive(Clone, Debug)]
pub struct Batch {
    pub ops: Vec<Op>,
    pub durable: bool,
}

impl Default for Batch {
    fn default() -> Self {
        Batch {
            ops: Vec::new(),
            durable: true,
        }
    }
}

impl Batch {
    /// A durable batch: the safe default.
    pub fn new() -> Self {
        Batch::default()
    }
    /// A batch of refetchable server data, written without the log.
    pub fn clean() -> Self {
        Batch {
            ops: Vec::new(),
            durable: false,
        }
    }
    pub fn push(&mut self, op: Op) -> &mut Self {
        self.ops.push(op);
        self
    }
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// A cache store. Implemented on disk by [`crate::RocksStore`] and in memory by
/// [`crate::MemoryStore`] (unit tests of the cache manager).
pub trait Store: Send + Sync {
    fn get_status(&self, fid: &FidKey) -> Result<Option<StatusRecord>>;
    fn get_chunk(&self, fid: &FidKey, data_version: u64, index: u64) -> Result<Option<Vec<u8>>>;
    fn get_dir(&self, fid: &FidKey) -> Result<Option<DirRecord>>;
    fn get_meta(&self, name: &str) -> Result<Option<Vec<u8>>>;
    /// Every stored token, of every user.
    fn tokens(&self) -> Result<Vec<TokenRecord>>;
    /// The single write path: applies every op of the batch atomically.
    fn apply(&self, batch: Batch) -> Result<()>;
}
