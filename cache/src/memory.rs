//! An in-memory store with the same semantics as the RocksDB one.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::key::{
    all_tokens_prefix, chunk_key, chunk_prefix, dir_key, meta_key, prefix_end, status_key,
    token_key,
};
use crate::{Batch, DirRecord, FidKey, Op, Result, StatusRecord, Store, TokenRecord};

/// Keeps encoded records in an ordered map, so range deletes behave exactly
/// as on disk.
#[derive(Default)]
pub struct MemoryStore {
    map: Mutex<BTreeMap<Vec<u8>, Vec<u8>>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
    }
}

impl Store for MemoryStore {
    fn get_status(&self, fid: &FidKey) -> Result<Option<StatusRecord>> {
        let key = status_key(fid);
        self.get(&key)
            .map(|v| crate::rocks::decode(&key, &v))
            .transpose()
    }
    fn get_chunk(&self, fid: &FidKey, dv: u64, index: u64) -> Result<Option<Vec<u8>>> {
        Ok(self.get(&chunk_key(fid, dv, index)))
    }
    fn get_dir(&self, fid: &FidKey) -> Result<Option<DirRecord>> {
        let key = dir_key(fid);
        self.get(&key)
            .map(|v| crate::rocks::decode(&key, &v))
            .transpose()
    }
    fn get_meta(&self, name: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.get(&meta_key(name)))
    }
    fn tokens(&self) -> Result<Vec<TokenRecord>> {
        let start = all_tokens_prefix();
        let end = prefix_end(&start);
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.range(start..end)
            .map(|(k, v)| crate::rocks::decode(k, v))
            .collect()
    }
    fn apply(&self, batch: Batch) -> Result<()> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        for op in batch.ops {
            match op {
                Op::PutStatus(fid, rec) => {
                    map.insert(status_key(&fid), crate::rocks::encode(&rec));
                }
                Op::DeleteStatus(fid) => {
                    map.remove(&status_key(&fid));
                }
                Op::PutChunk {
                    fid,
                    data_version,
                    index,
                    data,
                } => {
                    map.insert(chunk_key(&fid, data_version, index), data);
                }
                Op::DeleteChunks(fid) => {
                    let start = chunk_prefix(&fid);
                    let end = prefix_end(&start);
                    let doomed: Vec<_> = map.range(start..end).map(|(k, _)| k.clone()).collect();
                    for k in doomed {
                        map.remove(&k);
                    }
                }
                Op::PutDir(fid, rec) => {
                    map.insert(dir_key(&fid), crate::rocks::encode(&rec));
                }
                Op::DeleteDir(fid) => {
                    map.remove(&dir_key(&fid));
                }
                Op::PutMeta(name, v) => {
                    map.insert(meta_key(&name), v);
                }
                Op::PutToken(t) => {
                    map.insert(token_key(t.uid, &t.cell), crate::rocks::encode(&t));
                }
                Op::DeleteToken { uid, cell } => {
                    map.remove(&token_key(uid, &cell));
                }
            }
        }
        Ok(())
    }
}
