//! Accounting of cached file data: sizes, last use and dirtiness of every
//! chunk, the limits, and the choice of what to evict.
//!
//! Both stores keep one [`Accounting`] in memory and translate batches through
//! [`translate`], so they account identically. The persistent side is one
//! small usage record per chunk (key kind `u`, same suffix as the chunk key),
//! always written in the same atomic write as the chunk itself.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::key::{
    chunk_key, chunk_prefix, dir_key, prefix_end, status_key, token_key, usage_key_of,
};
use crate::key::{meta_key, volume_prefix, KIND_CHUNK, KIND_DIR, KIND_STATUS};
use crate::rocks::encode;
use crate::{FidKey, Op};

/// What the cache holds of file data. `bytes` and `entries` count every
/// chunk, dirty ones included; `dirty_*` is the part that must never be
/// evicted (not yet stored to a fileserver).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub bytes: u64,
    pub entries: u64,
    pub dirty_bytes: u64,
    pub dirty_entries: u64,
}

/// Bounds of the file-data cache; 0 means unlimited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    pub max_bytes: u64,
    pub max_entries: u64,
}

/// What one eviction removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EvictReport {
    pub chunks: u64,
    pub bytes: u64,
    /// Usage is still above a limit after evicting every clean chunk: the
    /// rest is dirty data, which is never evicted.
    pub over_limit: bool,
}

/// The usage record of one chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ChunkMeta {
    pub size: u64,
    /// Value of the store's use counter at the last put or touch.
    pub last_use: u64,
    pub dirty: bool,
}

/// A span of keys, first and last inclusive.
pub(crate) type KeySpan = (Vec<u8>, Vec<u8>);

/// Where translated writes go: a RocksDB `WriteBatch` or the memory map.
pub(crate) trait Sink {
    fn put(&mut self, key: Vec<u8>, value: Vec<u8>);
    fn delete(&mut self, key: Vec<u8>);
    fn delete_range(&mut self, start: Vec<u8>, end: Vec<u8>);
}

impl Sink for rocksdb::WriteBatch {
    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        rocksdb::WriteBatch::put(self, key, value)
    }
    fn delete(&mut self, key: Vec<u8>) {
        rocksdb::WriteBatch::delete(self, key)
    }
    fn delete_range(&mut self, start: Vec<u8>, end: Vec<u8>) {
        rocksdb::WriteBatch::delete_range(self, start, end)
    }
}

impl Sink for BTreeMap<Vec<u8>, Vec<u8>> {
    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.insert(key, value);
    }
    fn delete(&mut self, key: Vec<u8>) {
        self.remove(&key);
    }
    fn delete_range(&mut self, start: Vec<u8>, end: Vec<u8>) {
        let doomed: Vec<_> = self.range(start..end).map(|(k, _)| k.clone()).collect();
        for k in doomed {
            self.remove(&k);
        }
    }
}

/// Persist pending touches once this many chunks were touched.
pub(crate) const TOUCH_PERSIST_EVERY: usize = 1024;

/// In-memory accounting. Keyed by chunk key.
#[derive(Default)]
pub(crate) struct Accounting {
    chunks: BTreeMap<Vec<u8>, ChunkMeta>,
    /// Clean chunks by last use: eviction order.
    lru: BTreeSet<(u64, Vec<u8>)>,
    clock: u64,
    usage: Usage,
    limits: Limits,
    /// Chunks whose last use changed since their usage record was written.
    pending_touch: BTreeSet<Vec<u8>>,
}

impl Accounting {
    /// Rebuilds the accounting from stored usage records (chunk key, meta).
    pub fn from_records(records: impl IntoIterator<Item = (Vec<u8>, ChunkMeta)>) -> Self {
        let mut acc = Accounting::default();
        for (key, meta) in records {
            acc.clock = acc.clock.max(meta.last_use + 1);
            acc.insert_meta(key, meta);
        }
        acc
    }

    pub fn usage(&self) -> Usage {
        self.usage
    }
    pub fn limits(&self) -> Limits {
        self.limits
    }
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    fn tick(&mut self) -> u64 {
        let t = self.clock;
        self.clock += 1;
        t
    }

    fn insert_meta(&mut self, key: Vec<u8>, meta: ChunkMeta) {
        self.remove(&key);
        self.usage.bytes += meta.size;
        self.usage.entries += 1;
        if meta.dirty {
            self.usage.dirty_bytes += meta.size;
            self.usage.dirty_entries += 1;
        } else {
            self.lru.insert((meta.last_use, key.clone()));
        }
        self.chunks.insert(key, meta);
    }

    /// Records a put of a chunk; returns its new usage record.
    fn put(&mut self, key: Vec<u8>, size: u64, dirty: bool) -> ChunkMeta {
        let meta = ChunkMeta {
            size,
            last_use: self.tick(),
            dirty,
        };
        self.insert_meta(key, meta);
        meta
    }

    pub fn remove(&mut self, key: &[u8]) -> Option<ChunkMeta> {
        let meta = self.chunks.remove(key)?;
        self.usage.bytes -= meta.size;
        self.usage.entries -= 1;
        if meta.dirty {
            self.usage.dirty_bytes -= meta.size;
            self.usage.dirty_entries -= 1;
        } else {
            self.lru.remove(&(meta.last_use, key.to_vec()));
        }
        self.pending_touch.remove(key);
        Some(meta)
    }

    fn keys_in(&self, start: &[u8], end: &[u8]) -> Vec<(Vec<u8>, ChunkMeta)> {
        self.chunks
            .range(start.to_vec()..end.to_vec())
            .map(|(k, m)| (k.clone(), *m))
            .collect()
    }

    fn remove_range(&mut self, start: &[u8], end: &[u8]) {
        for (k, _) in self.keys_in(start, end) {
            self.remove(&k);
        }
    }

    /// Marks a chunk clean; returns its new record, None when not stored.
    fn mark_clean(&mut self, key: &[u8]) -> Option<ChunkMeta> {
        let meta = *self.chunks.get(key)?;
        if meta.dirty {
            let clean = ChunkMeta {
                dirty: false,
                ..meta
            };
            self.insert_meta(key.to_vec(), clean);
            Some(clean)
        } else {
            Some(meta)
        }
    }

    /// Records a use. Returns true when enough touches are pending that
    /// they should be persisted.
    pub fn touch(&mut self, key: &[u8]) -> bool {
        let Some(meta) = self.chunks.get(key).copied() else {
            return false;
        };
        let now = self.tick();
        if !meta.dirty {
            self.lru.remove(&(meta.last_use, key.to_vec()));
            self.lru.insert((now, key.to_vec()));
        }
        if let Some(m) = self.chunks.get_mut(key) {
            m.last_use = now;
        }
        self.pending_touch.insert(key.to_vec());
        self.pending_touch.len() >= TOUCH_PERSIST_EVERY
    }

    /// Writes the usage records of touched chunks into `sink` and forgets
    /// them as pending. Returns how many were written.
    pub fn drain_touches(&mut self, sink: &mut impl Sink) -> usize {
        let pending = std::mem::take(&mut self.pending_touch);
        let n = pending.len();
        for key in pending {
            if let Some(meta) = self.chunks.get(&key) {
                sink.put(usage_key_of(&key), encode(meta));
            }
        }
        n
    }

    pub fn over_limits(&self) -> bool {
        let l = self.limits;
        (l.max_bytes > 0 && self.usage.bytes > l.max_bytes)
            || (l.max_entries > 0 && self.usage.entries > l.max_entries)
    }

    /// Evicts least-recently-used clean chunks until within the limits:
    /// deletes them (and their usage records) through `sink`. Returns the
    /// report and the evicted chunk keys' span (first, last) if any.
    pub fn evict(&mut self, sink: &mut impl Sink) -> (EvictReport, Option<KeySpan>) {
        let mut report = EvictReport::default();
        let mut span: Option<KeySpan> = None;
        while self.over_limits() {
            let Some((_, key)) = self.lru.iter().next().cloned() else {
                break;
            };
            let meta = self.remove(&key).expect("lru entry is accounted");
            sink.delete(usage_key_of(&key));
            sink.delete(key.clone());
            report.chunks += 1;
            report.bytes += meta.size;
            span = Some(match span {
                None => (key.clone(), key),
                Some((lo, hi)) => (lo.min(key.clone()), hi.max(key)),
            });
        }
        report.over_limit = self.over_limits();
        (report, span)
    }

    /// Deletes the clean chunks in [start, end) through `sink`.
    fn drop_clean_range(&mut self, start: &[u8], end: &[u8], sink: &mut impl Sink) {
        for (key, meta) in self.keys_in(start, end) {
            if !meta.dirty {
                self.remove(&key);
                sink.delete(usage_key_of(&key));
                sink.delete(key);
            }
        }
    }

    /// Flush of one fid: clean chunks, status and directory.
    pub fn flush_fid(&mut self, fid: &FidKey, sink: &mut impl Sink) {
        let start = chunk_prefix(fid);
        let end = prefix_end(&start);
        self.drop_clean_range(&start, &end, sink);
        sink.delete(status_key(fid));
        sink.delete(dir_key(fid));
    }

    /// Flush of every fid of a volume: clean chunks, statuses, directories.
    pub fn flush_volume(&mut self, cell: &str, volume: u32, sink: &mut impl Sink) {
        let start = volume_prefix(KIND_CHUNK, cell, volume);
        let end = prefix_end(&start);
        self.drop_clean_range(&start, &end, sink);
        for kind in [KIND_STATUS, KIND_DIR] {
            let start = volume_prefix(kind, cell, volume);
            let end = prefix_end(&start);
            sink.delete_range(start, end);
        }
    }

    #[cfg(test)]
    pub fn check_invariants(&self) {
        let mut u = Usage::default();
        let mut clean = 0;
        for (k, m) in &self.chunks {
            u.bytes += m.size;
            u.entries += 1;
            if m.dirty {
                u.dirty_bytes += m.size;
                u.dirty_entries += 1;
            } else {
                clean += 1;
                assert!(self.lru.contains(&(m.last_use, k.clone())));
            }
        }
        assert_eq!(u, self.usage);
        assert_eq!(clean, self.lru.len());
    }
}

/// Translates the ops of a batch into writes on `sink`, keeping `acc` in
/// step. Returns true when the batch added file data (eviction may be due).
pub(crate) fn translate(acc: &mut Accounting, ops: Vec<Op>, sink: &mut impl Sink) -> bool {
    let mut grew = false;
    for op in ops {
        match op {
            Op::PutStatus(fid, rec) => sink.put(status_key(&fid), encode(&rec)),
            Op::DeleteStatus(fid) => sink.delete(status_key(&fid)),
            Op::PutChunk {
                fid,
                data_version,
                index,
                data,
            } => {
                put_chunk(acc, sink, &fid, data_version, index, data, false);
                grew = true;
            }
            Op::PutDirtyChunk {
                fid,
                data_version,
                index,
                data,
            } => {
                put_chunk(acc, sink, &fid, data_version, index, data, true);
                grew = true;
            }
            Op::MarkClean {
                fid,
                data_version,
                index,
            } => {
                let key = chunk_key(&fid, data_version, index);
                if let Some(meta) = acc.mark_clean(&key) {
                    sink.put(usage_key_of(&key), encode(&meta));
                }
            }
            Op::DeleteChunks(fid) => {
                let start = chunk_prefix(&fid);
                let end = prefix_end(&start);
                acc.remove_range(&start, &end);
                sink.delete_range(usage_key_of(&start), usage_key_of(&end));
                sink.delete_range(start, end);
            }
            Op::PutDir(fid, rec) => sink.put(dir_key(&fid), encode(&rec)),
            Op::DeleteDir(fid) => sink.delete(dir_key(&fid)),
            Op::PutMeta(name, v) => sink.put(meta_key(&name), v),
            Op::PutToken(t) => sink.put(token_key(t.uid, &t.cell), encode(&t)),
            Op::DeleteToken { uid, cell } => sink.delete(token_key(uid, &cell)),
        }
    }
    grew
}

fn put_chunk(
    acc: &mut Accounting,
    sink: &mut impl Sink,
    fid: &FidKey,
    dv: u64,
    index: u64,
    data: Vec<u8>,
    dirty: bool,
) {
    let key = chunk_key(fid, dv, index);
    let meta = acc.put(key.clone(), data.len() as u64, dirty);
    sink.put(usage_key_of(&key), encode(&meta));
    sink.put(key, data);
}
