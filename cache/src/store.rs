//! The store abstraction and its single write path.

use crate::{DirRecord, EvictReport, FidKey, Limits, Result, StatusRecord, TokenRecord, Usage};

/// One change to the cache. Changes are only ever applied in a [`Batch`].
#[derive(Clone, Debug)]
pub enum Op {
    PutStatus(FidKey, StatusRecord),
    /// Forget a status (callback broken and object gone, or flushed).
    DeleteStatus(FidKey),
    /// A chunk of file data fetched from the fileserver: clean, evictable.
    /// Replaces a stored chunk of the same key, dirty or not.
    PutChunk {
        fid: FidKey,
        data_version: u64,
        index: u64,
        data: Vec<u8>,
    },
    /// A chunk written locally and not yet stored to the fileserver: never
    /// evicted nor flushed until [`Op::MarkClean`]. Put it in a durable batch.
    PutDirtyChunk {
        fid: FidKey,
        data_version: u64,
        index: u64,
        data: Vec<u8>,
    },
    /// The chunk was stored to the fileserver: it becomes evictable. A no-op
    /// when the chunk is not in the cache.
    MarkClean {
        fid: FidKey,
        data_version: u64,
        index: u64,
    },
    /// Writes `data` at `offset` of a chunk, in place, making it dirty; a
    /// missing chunk starts empty and a gap reads as zeros. This is how a
    /// user's writes reach the cache without rewriting whole chunks.
    WriteChunk {
        fid: FidKey,
        data_version: u64,
        index: u64,
        offset: u64,
        data: Vec<u8>,
    },
    /// Cuts (or extends with zeros) a chunk to `length` bytes, making it dirty.
    TruncateChunk {
        fid: FidKey,
        data_version: u64,
        index: u64,
        length: u64,
    },
    /// The chunk now belongs to data version `to_dv` and is clean: what a
    /// store to the fileserver does to the chunks it sent (they move from
    /// [`crate::LOCAL_DATA_VERSION`] to the version the server gave), and to
    /// the unchanged chunks of a file whose version moved by our store
    /// alone. Replaces a chunk already under `to_dv`; a no-op when absent.
    MoveChunk {
        fid: FidKey,
        index: u64,
        from_dv: u64,
        to_dv: u64,
    },
    /// Drop one chunk, dirty or not (a truncated file's tail).
    DeleteChunk {
        fid: FidKey,
        data_version: u64,
        index: u64,
    },
    /// Drop every chunk of a fid, of every data version, dirty ones included.
    DeleteChunks(FidKey),
    /// Drop every dirty chunk of `data_version` or above, of every fid,
    /// but those of the (fid, data version) pairs in `keep`: unstored
    /// writes of a daemon that died before their close returned (local
    /// versions sit at the top of the range, one per writer), except the
    /// ones the change log still names.
    DiscardDirty {
        data_version: u64,
        keep: Vec<(FidKey, u64)>,
    },
    /// Every chunk of (fid, data version) becomes dirty: never evicted nor
    /// flushed until [`Op::Release`]. The base data of an object changed
    /// offline is held so, until the change is on the server.
    Hold {
        fid: FidKey,
        data_version: u64,
    },
    /// Every chunk of (fid, data version) becomes clean (evictable) again.
    Release {
        fid: FidKey,
        data_version: u64,
    },
    /// Moves a chunk to another fid and data version, keeping it dirty or
    /// making it clean: a file made offline takes its server fid, and a
    /// conflict keeps the local version under a key of its own.
    MoveChunkTo {
        from: FidKey,
        from_dv: u64,
        index: u64,
        to: FidKey,
        to_dv: u64,
        dirty: bool,
    },
    /// Makes the chunk files of (fid, data version), written earlier
    /// without a sync, durable with this batch (a close offline). Only a
    /// [`Batch::synced`] batch syncs.
    SyncChunks {
        fid: FidKey,
        data_version: u64,
    },
    /// A record of the client's own, opaque to the cache (the change log,
    /// base states, rights, conflicts), in its `space`; records of one
    /// space are listed in key order by [`Store::records`].
    PutRecord {
        space: u8,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    DeleteRecord {
        space: u8,
        key: Vec<u8>,
    },
    /// Drop the clean chunks of a fid but those of data version `keep` (its
    /// version moved); dirty ones, not yet stored, stay.
    DeleteCleanChunks {
        fid: FidKey,
        keep: Option<u64>,
    },
    /// A use of a chunk, for LRU eviction; a no-op for a chunk not in the
    /// cache. Uses are hints: they are kept in memory and written in groups
    /// (every thousand or so, at an eviction, at close), so that the read
    /// which causes one costs no disk write. Meant for clean batches: a
    /// group written in a durable one would go through the log for nothing.
    Touch {
        fid: FidKey,
        data_version: u64,
        index: u64,
    },
    /// Forget the clean chunks, directory and status of one fid: its
    /// callback is gone or a user asked. Dirty chunks stay.
    FlushFid(FidKey),
    /// [`Op::FlushFid`] for every fid of a volume of a cell.
    FlushVolume {
        cell: String,
        volume: u32,
    },
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
///
/// A `sync` batch is durable across a power cut too: the chunk files it
/// writes (or names in [`Op::SyncChunks`]) are fsynced and the log is
/// synced before [`Store::apply`] returns. What a user's close or fsync
/// acknowledged offline is written so.
#[derive(Clone, Debug)]
pub struct Batch {
    pub ops: Vec<Op>,
    pub durable: bool,
    pub sync: bool,
}

impl Default for Batch {
    fn default() -> Self {
        Batch {
            ops: Vec::new(),
            durable: true,
            sync: false,
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
            sync: false,
        }
    }
    /// A batch that survives a power cut (see [`Batch`]).
    pub fn synced() -> Self {
        Batch {
            ops: Vec::new(),
            durable: true,
            sync: true,
        }
    }
    /// A batch of `ops` that goes through the log (survives a crash of the
    /// daemon, not a power cut) or not.
    pub fn of(ops: Vec<Op>, durable: bool) -> Self {
        Batch {
            ops,
            durable,
            sync: false,
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
    /// Up to `len` bytes of a chunk from `offset` (shorter at its end).
    fn get_chunk_range(
        &self,
        fid: &FidKey,
        data_version: u64,
        index: u64,
        offset: u64,
        len: usize,
    ) -> Result<Option<Vec<u8>>> {
        Ok(self.get_chunk(fid, data_version, index)?.map(|c| {
            let from = (offset as usize).min(c.len());
            let to = from.saturating_add(len).min(c.len());
            c[from..to].to_vec()
        }))
    }
    /// The dirty chunks of a fid: (data version, index, size).
    fn dirty_chunks(&self, fid: &FidKey) -> Vec<(u64, u64, u64)>;
    /// Bytes cached of one data version of a fid (its chunks' sizes).
    fn cached_bytes(&self, fid: &FidKey, data_version: u64) -> u64;
    /// Pins (or unpins) a fid: its chunks, of every data version, are then
    /// never evicted ([`Usage::pinned_bytes`] counts them). Pins live in
    /// memory: the client, which keeps the pin records, sets them again
    /// when it starts, before anything can be evicted.
    fn set_pinned(&self, fid: &FidKey, pinned: bool);
    fn get_dir(&self, fid: &FidKey) -> Result<Option<DirRecord>>;
    fn get_meta(&self, name: &str) -> Result<Option<Vec<u8>>>;
    /// Every stored token, of every user.
    fn tokens(&self) -> Result<Vec<TokenRecord>>;
    /// Every record of `space` (see [`Op::PutRecord`]), in key order.
    fn records(&self, space: u8) -> Result<Vec<(Vec<u8>, Vec<u8>)>>;
    /// One record of `space`.
    fn get_record(&self, space: u8, key: &[u8]) -> Result<Option<Vec<u8>>>;
    /// The single write path: applies every op of the batch atomically.
    /// When the batch added file data and usage is above the limits, clean
    /// chunks are then evicted (see [`Store::evict`]). The writing methods
    /// below are shorthands for a batch, or build one themselves.
    fn apply(&self, batch: Batch) -> Result<()>;

    /// What the file-data chunks occupy now (their bytes).
    fn usage(&self) -> Usage;
    /// What the whole cache occupies on disk, as bounded by
    /// [`Limits::disk_bytes`]: chunk files in whole blocks plus the records.
    fn disk_usage(&self) -> u64;
    /// The bounds in force.
    fn limits(&self) -> Limits;
    /// Makes everything applied so far durable, clean batches included
    /// (they skip the log): done when a volume goes offline, so that what
    /// was fetched until then survives a crash while offline.
    fn persist(&self) -> Result<()> {
        Ok(())
    }
    /// Bounds of the file-data cache (0 = unlimited). Takes effect at the
    /// next batch that adds data, or at once through [`Store::evict`].
    fn set_limits(&self, limits: Limits);
    /// Removes least-recently-used clean chunks until usage is within the
    /// limits. Dirty chunks are never removed, even when that leaves usage
    /// above a limit ([`EvictReport::over_limit`]). The store builds the
    /// deletes as a batch and applies it as it applies any other.
    fn evict(&self) -> Result<EvictReport>;

    /// [`Op::Touch`] in a batch of its own. Called on every cached read, so
    /// it reports no error: a lost use only makes eviction's choice worse.
    fn touch(&self, fid: &FidKey, data_version: u64, index: u64) {
        let mut batch = Batch::clean();
        batch.push(Op::Touch {
            fid: fid.clone(),
            data_version,
            index,
        });
        if let Err(e) = self.apply(batch) {
            tracing::warn!("cache: last-use times not saved: {e}");
        }
    }
    /// [`Op::FlushFid`] in a batch of its own.
    fn flush_fid(&self, fid: &FidKey) -> Result<()> {
        let mut batch = Batch::new();
        batch.push(Op::FlushFid(fid.clone()));
        self.apply(batch)
    }
    /// [`Op::FlushVolume`] in a batch of its own.
    fn flush_volume(&self, cell: &str, volume: u32) -> Result<()> {
        let mut batch = Batch::new();
        batch.push(Op::FlushVolume {
            cell: cell.to_string(),
            volume,
        });
        self.apply(batch)
    }
}
