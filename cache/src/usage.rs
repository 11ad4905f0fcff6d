//! Accounting of cached file data: sizes, last use and dirtiness of every
//! chunk, the limits, and the choice of what to evict.
//!
//! Both stores keep one [`Accounting`] in memory and translate batches through
//! [`translate`], so they account identically. The persistent side is one
//! small usage record per chunk (key kind `u`, same suffix as the chunk key),
//! always written in the same atomic write as the chunk itself.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::files::{FileAction, FileSink};
use crate::key::{
    chunk_key, chunk_prefix, dir_key, parse_chunk_key, prefix_end, status_key, token_key,
    usage_key_of,
};
use crate::key::{meta_key, record_key, volume_prefix, KIND_CHUNK, KIND_DIR, KIND_STATUS};
use crate::record::encode;
use crate::{FidKey, Op};

/// The unit a file system allocates in: a chunk of n bytes occupies n
/// rounded up to this on disk.
pub(crate) const BLOCK: u64 = 4096;

fn blocks_of(size: u64) -> u64 {
    size.div_ceil(BLOCK) * BLOCK
}

/// What the cache holds of file data. `bytes` and `entries` count every
/// chunk, dirty ones included; `dirty_*` is the part that must never be
/// evicted (not yet stored to a fileserver).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub bytes: u64,
    pub entries: u64,
    pub dirty_bytes: u64,
    pub dirty_entries: u64,
    /// Bytes of chunks of pinned fids (dirty or not): never evicted either.
    pub pinned_bytes: u64,
}

/// Bounds of the file-data cache; 0 means unlimited.
///
/// `max_bytes` bounds the bytes of file data; `disk_bytes` bounds what the
/// whole cache directory occupies on disk: chunk files rounded up to the
/// file system's blocks, plus the database of records. A user's "cache
/// size" is the latter; the former is what the accounting tests reason in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    pub max_bytes: u64,
    pub max_entries: u64,
    pub disk_bytes: u64,
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

/// Where translated writes go: a RocksDB `WriteBatch` or the memory map.
/// The impls live beside their stores, so the accounting depends on neither.
pub(crate) trait Sink {
    fn put(&mut self, key: Vec<u8>, value: Vec<u8>);
    fn delete(&mut self, key: Vec<u8>);
    fn delete_range(&mut self, start: Vec<u8>, end: Vec<u8>);
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
    /// Chunk bytes rounded up to whole blocks.
    blocks: u64,
    /// What the store's other files occupy (the record database), as last
    /// measured by the store.
    overhead: u64,
    limits: Limits,
    /// Chunks whose last use changed since their usage record was written.
    pending_touch: BTreeSet<Vec<u8>>,
    /// Chunk key prefixes (one per fid) of pinned fids: their chunks, of
    /// every data version, are never evicted. Kept in memory only; the
    /// client, which owns the pins, sets them at start.
    pinned: BTreeSet<Vec<u8>>,
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
    pub fn set_overhead(&mut self, bytes: u64) {
        self.overhead = bytes;
    }
    /// Bytes on disk: chunk files by whole blocks, plus the overhead.
    pub fn disk_bytes(&self) -> u64 {
        self.blocks + self.overhead
    }

    /// The prefix of a chunk key naming its fid (without version and index).
    fn fid_prefix(key: &[u8]) -> &[u8] {
        &key[..key.len().saturating_sub(16)]
    }

    fn is_pinned(&self, key: &[u8]) -> bool {
        !self.pinned.is_empty() && self.pinned.contains(Self::fid_prefix(key))
    }

    /// Whether eviction may take this chunk: clean and not pinned.
    fn evictable(&self, key: &[u8], meta: &ChunkMeta) -> bool {
        !meta.dirty && !self.is_pinned(key)
    }

    /// Pins or unpins every chunk of a fid, of any data version, present or
    /// to come.
    pub fn set_pinned(&mut self, fid: &FidKey, pinned: bool) {
        let start = chunk_prefix(fid);
        let end = prefix_end(&start);
        if pinned == self.pinned.contains(&start) {
            return;
        }
        let chunks = self.keys_in(&start, &end);
        if pinned {
            for (k, m) in &chunks {
                self.lru.remove(&(m.last_use, k.clone()));
                self.usage.pinned_bytes += m.size;
            }
            self.pinned.insert(start);
        } else {
            self.pinned.remove(&start);
            for (k, m) in chunks {
                self.usage.pinned_bytes -= m.size;
                if !m.dirty {
                    self.lru.insert((m.last_use, k));
                }
            }
        }
    }

    /// The pinned fids' prefixes (carried over a reload of the accounting).
    pub(crate) fn take_pinned(&mut self) -> BTreeSet<Vec<u8>> {
        std::mem::take(&mut self.pinned)
    }

    /// Restores pins taken by [`Accounting::take_pinned`] into a fresh
    /// accounting.
    pub(crate) fn restore_pinned(&mut self, pinned: BTreeSet<Vec<u8>>) {
        for prefix in pinned {
            let end = prefix_end(&prefix);
            for (k, m) in self.keys_in(&prefix, &end) {
                self.lru.remove(&(m.last_use, k));
                self.usage.pinned_bytes += m.size;
            }
            self.pinned.insert(prefix);
        }
    }

    /// Bytes cached of one data version of a fid.
    pub fn cached_bytes(&self, fid: &FidKey, data_version: u64) -> u64 {
        let mut start = chunk_prefix(fid);
        start.extend_from_slice(&data_version.to_be_bytes());
        let end = prefix_end(&start);
        self.chunks.range(start..end).map(|(_, m)| m.size).sum()
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
        self.blocks += blocks_of(meta.size);
        if meta.dirty {
            self.usage.dirty_bytes += meta.size;
            self.usage.dirty_entries += 1;
        }
        if self.is_pinned(&key) {
            self.usage.pinned_bytes += meta.size;
        } else if !meta.dirty {
            self.lru.insert((meta.last_use, key.clone()));
        }
        self.chunks.insert(key, meta);
    }

    /// Changes a chunk's dirtiness, keeping its last use.
    fn put_meta(&mut self, key: Vec<u8>, size: u64, dirty: bool) -> ChunkMeta {
        let old = self.remove(&key);
        let meta = ChunkMeta {
            size,
            last_use: old.map_or_else(|| self.tick(), |m| m.last_use),
            dirty,
        };
        self.insert_meta(key, meta);
        meta
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
        self.blocks -= blocks_of(meta.size);
        if meta.dirty {
            self.usage.dirty_bytes -= meta.size;
            self.usage.dirty_entries -= 1;
        }
        if self.is_pinned(key) {
            self.usage.pinned_bytes -= meta.size;
        } else if !meta.dirty {
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
        if self.evictable(key, &meta) {
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

    fn over(&self, bytes: u64, entries: u64, disk: u64) -> bool {
        let l = self.limits;
        (l.max_bytes > 0 && bytes > l.max_bytes)
            || (l.max_entries > 0 && entries > l.max_entries)
            || (l.disk_bytes > 0 && disk > l.disk_bytes)
    }

    pub fn over_limits(&self) -> bool {
        self.over(self.usage.bytes, self.usage.entries, self.disk_bytes())
    }

    /// Forgets a chunk: its usage record through `sink`, its file through
    /// `files` (after the record is gone).
    fn drop_chunk(&mut self, key: &[u8], sink: &mut impl Sink, files: &mut impl FileSink) {
        self.remove(key);
        sink.delete(usage_key_of(key));
        files.file(FileAction::Delete { key: key.to_vec() });
    }

    /// An eviction as ops: deletes of the least-recently-used clean chunks
    /// that bring usage within the limits, and the report of what they
    /// remove (`over_limit` is for the store to tell after applying them).
    /// Chosen under the store's lock and applied under it, so every chunk
    /// named is still clean when its delete runs.
    pub fn eviction(&self) -> (Vec<Op>, EvictReport) {
        self.eviction_for(&[])
    }

    /// As [`Accounting::eviction`], leaving room for the new chunks of a
    /// batch about to be applied, so that the cache makes room before it
    /// writes rather than after (the directory then never holds more than
    /// the limit, even for a moment).
    pub fn eviction_for(&self, incoming: &[(Vec<u8>, u64)]) -> (Vec<Op>, EvictReport) {
        let (mut bytes, mut entries, mut disk) =
            (self.usage.bytes, self.usage.entries, self.disk_bytes());
        // A chunk the batch replaces grows or shrinks in place; a new one
        // adds an entry. Neither is a victim: it is about to be the most
        // recently used.
        for (key, size) in incoming {
            match self.chunks.get(key) {
                Some(old) => {
                    bytes = (bytes + size).saturating_sub(old.size);
                    disk = (disk + blocks_of(*size)).saturating_sub(blocks_of(old.size));
                }
                None => {
                    bytes += size;
                    entries += 1;
                    disk += blocks_of(*size);
                }
            }
        }
        let mut ops = Vec::new();
        let mut report = EvictReport::default();
        for (_, key) in &self.lru {
            if !self.over(bytes, entries, disk) {
                break;
            }
            if incoming.iter().any(|(k, _)| k == key) {
                continue;
            }
            let Some((fid, data_version, index)) = parse_chunk_key(key) else {
                continue;
            };
            let size = self.chunks.get(key).map_or(0, |m| m.size);
            bytes -= size;
            entries -= 1;
            disk -= blocks_of(size);
            ops.push(Op::DeleteChunk {
                fid,
                data_version,
                index,
            });
            report.chunks += 1;
            report.bytes += size;
        }
        (ops, report)
    }

    /// Drops the chunks in [start, end): the clean ones, or all.
    fn drop_range(
        &mut self,
        start: &[u8],
        end: &[u8],
        dirty_too: bool,
        sink: &mut impl Sink,
        files: &mut impl FileSink,
    ) {
        for (key, meta) in self.keys_in(start, end) {
            if dirty_too || self.evictable(&key, &meta) {
                self.drop_chunk(&key, sink, files);
            }
        }
    }

    /// Flush of one fid: clean chunks, status and directory.
    fn flush_fid(&mut self, fid: &FidKey, sink: &mut impl Sink, files: &mut impl FileSink) {
        let start = chunk_prefix(fid);
        let end = prefix_end(&start);
        self.drop_range(&start, &end, false, sink, files);
        sink.delete(status_key(fid));
        sink.delete(dir_key(fid));
    }

    /// Flush of every fid of a volume: clean chunks, statuses, directories.
    fn flush_volume(
        &mut self,
        cell: &str,
        volume: u32,
        sink: &mut impl Sink,
        files: &mut impl FileSink,
    ) {
        let start = volume_prefix(KIND_CHUNK, cell, volume);
        let end = prefix_end(&start);
        self.drop_range(&start, &end, false, sink, files);
        for kind in [KIND_STATUS, KIND_DIR] {
            let start = volume_prefix(kind, cell, volume);
            let end = prefix_end(&start);
            sink.delete_range(start, end);
        }
    }

    /// The data versions and indexes of a fid's dirty chunks, with sizes.
    pub fn dirty_of(&self, fid: &FidKey) -> Vec<(u64, u64, u64)> {
        let start = chunk_prefix(fid);
        let end = prefix_end(&start);
        let n = start.len();
        self.keys_in(&start, &end)
            .into_iter()
            .filter(|(_, m)| m.dirty)
            .filter_map(|(k, m)| {
                let dv = u64::from_be_bytes(k.get(n..n + 8)?.try_into().ok()?);
                let idx = u64::from_be_bytes(k.get(n + 8..n + 16)?.try_into().ok()?);
                Some((dv, idx, m.size))
            })
            .collect()
    }

    /// Size of a chunk as accounted; None when not in the cache.
    pub fn size_of(&self, key: &[u8]) -> Option<u64> {
        self.chunks.get(key).map(|m| m.size)
    }

    #[cfg(test)]
    pub fn check_invariants(&self) {
        let mut u = Usage::default();
        let mut clean = 0;
        for (k, m) in &self.chunks {
            u.bytes += m.size;
            u.entries += 1;
            if self.is_pinned(k) {
                u.pinned_bytes += m.size;
            }
            if m.dirty {
                u.dirty_bytes += m.size;
                u.dirty_entries += 1;
            }
            if self.evictable(k, m) {
                clean += 1;
                assert!(self.lru.contains(&(m.last_use, k.clone())));
            }
        }
        assert_eq!(u, self.usage);
        assert_eq!(clean, self.lru.len());
        let blocks: u64 = self.chunks.values().map(|m| blocks_of(m.size)).sum();
        assert_eq!(blocks, self.blocks);
    }
}

/// The data version in a chunk key: kind, cell length, cell, volume,
/// vnode, uniquifier, then the version (all big-endian).
fn dv_of(key: &[u8]) -> Option<u64> {
    let at = 2 + *key.get(1)? as usize + 12;
    Some(u64::from_be_bytes(key.get(at..at + 8)?.try_into().ok()?))
}

enum OpKind {
    Hold,
    Other,
}

/// Translates the ops of a batch into record writes on `sink` and file
/// actions on `files`, keeping `acc` in step. Returns true when the batch
/// added file data (eviction may be due).
pub(crate) fn translate(
    acc: &mut Accounting,
    ops: Vec<Op>,
    sink: &mut impl Sink,
    files: &mut impl FileSink,
) -> bool {
    let mut grew = false;
    for op in ops {
        let op_kind = if matches!(op, Op::Hold { .. }) {
            OpKind::Hold
        } else {
            OpKind::Other
        };
        match op {
            Op::PutStatus(fid, rec) => sink.put(status_key(&fid), encode(&rec)),
            Op::DeleteStatus(fid) => sink.delete(status_key(&fid)),
            Op::PutChunk {
                fid,
                data_version,
                index,
                data,
            } => {
                let key = chunk_key(&fid, data_version, index);
                let meta = acc.put(key.clone(), data.len() as u64, false);
                sink.put(usage_key_of(&key), encode(&meta));
                files.file(FileAction::Put { key, data });
                grew = true;
            }
            Op::PutDirtyChunk {
                fid,
                data_version,
                index,
                data,
            } => {
                let key = chunk_key(&fid, data_version, index);
                let meta = acc.put(key.clone(), data.len() as u64, true);
                sink.put(usage_key_of(&key), encode(&meta));
                files.file(FileAction::Put { key, data });
                grew = true;
            }
            Op::WriteChunk {
                fid,
                data_version,
                index,
                offset,
                data,
            } => {
                let key = chunk_key(&fid, data_version, index);
                let end = offset + data.len() as u64;
                let size = acc.size_of(&key).unwrap_or(0).max(end);
                let meta = acc.put(key.clone(), size, true);
                sink.put(usage_key_of(&key), encode(&meta));
                files.file(FileAction::Write { key, offset, data });
                grew = true;
            }
            Op::TruncateChunk {
                fid,
                data_version,
                index,
                length,
            } => {
                let key = chunk_key(&fid, data_version, index);
                let meta = acc.put(key.clone(), length, true);
                sink.put(usage_key_of(&key), encode(&meta));
                files.file(FileAction::Truncate { key, len: length });
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
            Op::MoveChunk {
                fid,
                index,
                from_dv,
                to_dv,
            } => {
                let from = chunk_key(&fid, from_dv, index);
                let to = chunk_key(&fid, to_dv, index);
                if from != to {
                    if let Some(old) = acc.remove(&from) {
                        sink.delete(usage_key_of(&from));
                        let meta = acc.put(to.clone(), old.size, false);
                        sink.put(usage_key_of(&to), encode(&meta));
                        files.file(FileAction::Rename { from, to });
                    }
                } else if let Some(meta) = acc.mark_clean(&from) {
                    sink.put(usage_key_of(&from), encode(&meta));
                }
            }
            Op::DeleteChunk {
                fid,
                data_version,
                index,
            } => {
                let key = chunk_key(&fid, data_version, index);
                if acc.size_of(&key).is_some() {
                    acc.drop_chunk(&key, sink, files);
                }
            }
            Op::DeleteChunks(fid) => {
                let start = chunk_prefix(&fid);
                let end = prefix_end(&start);
                acc.drop_range(&start, &end, true, sink, files);
            }
            Op::DeleteCleanChunks { fid, keep } => {
                let start = chunk_prefix(&fid);
                let end = prefix_end(&start);
                for (key, meta) in acc.keys_in(&start, &end) {
                    let dv = key
                        .get(start.len()..start.len() + 8)
                        .and_then(|b| b.try_into().ok())
                        .map(u64::from_be_bytes);
                    if !meta.dirty && (keep.is_none() || dv != keep) {
                        acc.drop_chunk(&key, sink, files);
                    }
                }
            }
            Op::DiscardDirty { data_version, keep } => {
                let kept: BTreeSet<Vec<u8>> = keep
                    .iter()
                    .map(|(fid, dv)| {
                        let mut p = chunk_prefix(fid);
                        p.extend_from_slice(&dv.to_be_bytes());
                        p
                    })
                    .collect();
                let doomed: Vec<Vec<u8>> = acc
                    .chunks
                    .iter()
                    .filter(|(k, m)| m.dirty && dv_of(k).is_some_and(|dv| dv >= data_version))
                    .filter(|(k, _)| !kept.iter().any(|p| k.starts_with(p)))
                    .map(|(k, _)| k.clone())
                    .collect();
                for key in doomed {
                    acc.drop_chunk(&key, sink, files);
                }
            }
            Op::Hold { fid, data_version } | Op::Release { fid, data_version } => {
                let dirty = matches!(op_kind, OpKind::Hold);
                let mut start = chunk_prefix(&fid);
                start.extend_from_slice(&data_version.to_be_bytes());
                let end = prefix_end(&start);
                for (key, meta) in acc.keys_in(&start, &end) {
                    if meta.dirty != dirty {
                        let m = acc.put_meta(key.clone(), meta.size, dirty);
                        sink.put(usage_key_of(&key), encode(&m));
                    }
                }
            }
            Op::MoveChunkTo {
                from,
                from_dv,
                index,
                to,
                to_dv,
                dirty,
            } => {
                let from = chunk_key(&from, from_dv, index);
                let to = chunk_key(&to, to_dv, index);
                if from != to {
                    if let Some(old) = acc.remove(&from) {
                        sink.delete(usage_key_of(&from));
                        if acc.size_of(&to).is_some() {
                            acc.remove(&to);
                        }
                        let meta = acc.put(to.clone(), old.size, dirty);
                        sink.put(usage_key_of(&to), encode(&meta));
                        // Linked, then unlinked after the records: the
                        // data is never without a file the records name.
                        files.file(FileAction::Link {
                            from: from.clone(),
                            to,
                        });
                        files.file(FileAction::Delete { key: from });
                    }
                }
            }
            Op::SyncChunks { fid, data_version } => {
                let mut start = chunk_prefix(&fid);
                start.extend_from_slice(&data_version.to_be_bytes());
                let end = prefix_end(&start);
                for (key, _) in acc.keys_in(&start, &end) {
                    files.file(FileAction::Sync { key });
                }
            }
            Op::PutRecord { space, key, value } => sink.put(record_key(space, &key), value),
            Op::DeleteRecord { space, key } => sink.delete(record_key(space, &key)),
            Op::Touch {
                fid,
                data_version,
                index,
            } => {
                if acc.touch(&chunk_key(&fid, data_version, index)) {
                    // Enough uses are pending to be worth a write: this one.
                    acc.drain_touches(sink);
                }
            }
            Op::FlushFid(fid) => acc.flush_fid(&fid, sink, files),
            Op::FlushVolume { cell, volume } => acc.flush_volume(&cell, volume, sink, files),
            Op::PutDir(fid, rec) => sink.put(dir_key(&fid), encode(&rec)),
            Op::DeleteDir(fid) => sink.delete(dir_key(&fid)),
            Op::PutMeta(name, v) => sink.put(meta_key(&name), v),
            Op::PutToken(t) => sink.put(token_key(t.uid, &t.cell), encode(&t)),
            Op::DeleteToken { uid, cell } => sink.delete(token_key(uid, &cell)),
        }
    }
    grew
}
