//! An in-memory store with the same semantics as the RocksDB one.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use crate::files::FileAction;
use crate::key::{
    all_tokens_prefix, chunk_key, dir_key, meta_key, prefix_end, record_prefix, status_key,
};
use crate::record::decode;
use crate::usage::{translate, Accounting, Sink};
use crate::{
    Batch, DirRecord, EvictReport, FidKey, Limits, Result, StatusRecord, Store, TokenRecord, Usage,
};

/// Keeps encoded records in an ordered map, so range deletes behave exactly
/// as on disk. Usage records are kept in the map too, as on disk.
#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    map: BTreeMap<Vec<u8>, Vec<u8>>,
    acc: Accounting,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.lock().map.get(key).cloned()
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

/// Chunk "files" are values of the map under their chunk keys.
fn apply_files(map: &mut BTreeMap<Vec<u8>, Vec<u8>>, actions: Vec<FileAction>) {
    for a in actions {
        match a {
            FileAction::Put { key, data } => {
                map.insert(key, data);
            }
            FileAction::Write { key, offset, data } => {
                let v = map.entry(key).or_default();
                let end = offset as usize + data.len();
                if v.len() < end {
                    v.resize(end, 0);
                }
                v[offset as usize..end].copy_from_slice(&data);
            }
            FileAction::Truncate { key, len } => {
                map.entry(key).or_default().resize(len as usize, 0);
            }
            FileAction::Rename { from, to } => {
                if let Some(v) = map.remove(&from) {
                    map.insert(to, v);
                }
            }
            FileAction::Link { from, to } => {
                if let Some(v) = map.get(&from).cloned() {
                    map.insert(to, v);
                }
            }
            FileAction::Delete { key } => {
                map.remove(&key);
            }
            FileAction::Sync { .. } => {}
        }
    }
}

impl Inner {
    /// Where every batch is carried out, as in the RocksDB store: a
    /// caller's, an eviction's. Returns whether it added file data.
    fn apply(&mut self, batch: Batch, persist_touches: bool) -> bool {
        let mut files = Vec::new();
        let grew = translate(&mut self.acc, batch.ops, &mut self.map, &mut files);
        if persist_touches {
            self.acc.drain_touches(&mut self.map);
        }
        apply_files(&mut self.map, files);
        grew
    }

    fn evict(&mut self) -> EvictReport {
        let (ops, mut report) = self.acc.eviction();
        self.apply(Batch::of(ops, false), true);
        report.over_limit = self.acc.over_limits();
        report
    }
}

impl MemoryStore {
    #[cfg(test)]
    pub(crate) fn check_invariants(&self) {
        self.lock().acc.check_invariants();
    }
}

impl Store for MemoryStore {
    fn get_status(&self, fid: &FidKey) -> Result<Option<StatusRecord>> {
        let key = status_key(fid);
        self.get(&key).map(|v| decode(&key, &v)).transpose()
    }
    fn get_chunk(&self, fid: &FidKey, dv: u64, index: u64) -> Result<Option<Vec<u8>>> {
        Ok(self.get(&chunk_key(fid, dv, index)))
    }
    fn get_dir(&self, fid: &FidKey) -> Result<Option<DirRecord>> {
        let key = dir_key(fid);
        self.get(&key).map(|v| decode(&key, &v)).transpose()
    }
    fn get_meta(&self, name: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.get(&meta_key(name)))
    }
    fn get_record(&self, space: u8, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.get(&crate::key::record_key(space, key)))
    }
    fn records(&self, space: u8) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let start = record_prefix(space);
        let end = prefix_end(&start);
        let inner = self.lock();
        Ok(inner
            .map
            .range(start.clone()..end)
            .map(|(k, v)| (k[start.len()..].to_vec(), v.clone()))
            .collect())
    }
    fn tokens(&self) -> Result<Vec<TokenRecord>> {
        let start = all_tokens_prefix();
        let end = prefix_end(&start);
        let inner = self.lock();
        inner
            .map
            .range(start..end)
            .map(|(k, v)| decode(k, v))
            .collect()
    }
    fn cached_bytes(&self, fid: &FidKey, data_version: u64) -> u64 {
        self.lock().acc.cached_bytes(fid, data_version)
    }
    fn set_pinned(&self, fid: &FidKey, pinned: bool) {
        self.lock().acc.set_pinned(fid, pinned);
    }
    fn dirty_chunks(&self, fid: &FidKey) -> Vec<(u64, u64, u64)> {
        self.lock().acc.dirty_of(fid)
    }
    fn apply(&self, batch: Batch) -> Result<()> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        if inner.apply(batch, false) && inner.acc.over_limits() {
            inner.evict();
        }
        Ok(())
    }
    fn usage(&self) -> Usage {
        self.lock().acc.usage()
    }
    fn disk_usage(&self) -> u64 {
        self.lock().acc.disk_bytes()
    }
    fn set_limits(&self, limits: Limits) {
        self.lock().acc.set_limits(limits);
    }
    fn limits(&self) -> Limits {
        self.lock().acc.limits()
    }
    fn evict(&self) -> Result<EvictReport> {
        Ok(self.lock().evict())
    }
}
