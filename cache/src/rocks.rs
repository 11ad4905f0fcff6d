//! The on-disk store, on RocksDB.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rocksdb::{Options, WriteBatch, DB};
use serde::{de::DeserializeOwned, Serialize};

use crate::key::{
    all_tokens_prefix, all_usage_prefix, chunk_key, chunk_key_of, dir_key, meta_key, prefix_end,
    status_key, usage_key_of,
};
use crate::usage::{translate, Accounting, ChunkMeta, KeySpan};
use crate::{
    Batch, DirRecord, Error, EvictReport, FidKey, Limits, Result, StatusRecord, Store, TokenRecord,
    Usage,
};

/// Memtable size. Chunks are 1 MiB values; a clean chunk evicted while still
/// in the memtable never reaches the disk.
const WRITE_BUFFER: usize = 64 << 20;
/// Smallest memtable once a byte limit is set.
const MIN_WRITE_BUFFER: u64 = 4 << 20;
/// Smallest dead space worth a manual compaction.
const MIN_SLACK: u64 = 8 << 20;

/// Dead space (bytes in files beyond the live data) tolerated before a
/// manual compaction: a quarter of the byte limit, at least [`MIN_SLACK`]
/// (and 64 MiB when unlimited).
fn compaction_slack(limits: Limits) -> u64 {
    if limits.max_bytes == 0 {
        64 << 20
    } else {
        (limits.max_bytes / 4).max(MIN_SLACK)
    }
}

/// Memtable size for a limit: an eighth of it, between 4 and 64 MiB, so that
/// one flush of data later evicted is small against the limit.
fn write_buffer_for(limits: Limits) -> u64 {
    if limits.max_bytes == 0 {
        WRITE_BUFFER as u64
    } else {
        (limits.max_bytes / 8).clamp(MIN_WRITE_BUFFER, WRITE_BUFFER as u64)
    }
}

/// A RocksDB database in the cache directory. RocksDB's lock file keeps a
/// second daemon from opening the same cache.
pub struct RocksStore {
    state: Mutex<State>,
    db: DB,
}

#[derive(Default)]
struct State {
    acc: Accounting,
    /// Bytes evicted since the last manual compaction, and their key span.
    evicted: u64,
    span: Option<KeySpan>,
}

impl RocksStore {
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|source| Error::Dir {
            path: dir.display().to_string(),
            source,
        })?;
        // The store holds tokens: only the daemon's user may enter.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(
            |source| Error::Dir {
                path: dir.display().to_string(),
                source,
            },
        )?;
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.set_max_open_files(256);
        opts.set_keep_log_file_num(3);
        // Tuned for 1 MiB values: a memtable holding many chunks, few
        // levels whose sizes follow the data (space amplification ~1.1x
        // instead of up to 2x), background work limited to the two cores a
        // small client has, and writes spread out instead of in bursts.
        opts.set_write_buffer_size(WRITE_BUFFER);
        opts.set_max_write_buffer_number(2);
        opts.set_target_file_size_base(WRITE_BUFFER as u64);
        opts.set_level_compaction_dynamic_level_bytes(true);
        opts.set_max_background_jobs(2);
        opts.set_bytes_per_sync(1 << 20);
        let db = DB::open(&opts, dir.join("db"))?;
        let acc = load_accounting(&db)?;
        Ok(RocksStore {
            state: Mutex::new(State {
                acc,
                evicted: 0,
                span: None,
            }),
            db,
        })
    }

    fn get_raw(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.db.get(key)?)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes `wb`; on failure the in-memory accounting, already updated,
    /// is rebuilt from the disk so that it never drifts from the data.
    fn write(&self, st: &mut State, wb: WriteBatch, durable: bool) -> Result<()> {
        let mut wo = rocksdb::WriteOptions::default();
        wo.disable_wal(!durable);
        if let Err(e) = self.db.write_opt(wb, &wo) {
            let limits = st.acc.limits();
            if let Ok(acc) = load_accounting(&self.db) {
                st.acc = acc;
                st.acc.set_limits(limits);
            }
            return Err(e.into());
        }
        Ok(())
    }

    /// Evicts with the state locked. Pending touches go in the same write.
    /// Returns the report and the key range to compact, when due.
    fn evict_locked(&self, st: &mut State) -> Result<(EvictReport, Option<KeySpan>)> {
        let mut wb = WriteBatch::default();
        st.acc.drain_touches(&mut wb);
        let (report, span) = st.acc.evict(&mut wb);
        // Evicted data is refetchable: no log needed. Chunk and usage record
        // go in the same write, so a lost eviction brings back both.
        self.write(st, wb, false)?;
        if report.over_limit {
            tracing::warn!(
                usage = ?st.acc.usage(),
                limits = ?st.acc.limits(),
                "cache above its limits: the rest is dirty data"
            );
        }
        st.evicted += report.bytes;
        if let Some((lo, hi)) = span {
            st.span = Some(match st.span.take() {
                None => (lo, hi),
                Some((a, b)) => (a.min(lo), b.max(hi)),
            });
        }
        // The space of evicted chunks returns to the file system when a
        // compaction meets their tombstones. Background compaction does it
        // eventually; force it over the evicted range when the files hold
        // notably more than the live data and enough was evicted since the
        // last time for it to pay off.
        let slack = compaction_slack(st.acc.limits());
        let mut due = None;
        if st.evicted >= slack {
            let on_disk = self
                .db
                .property_int_value(rocksdb::properties::TOTAL_SST_FILES_SIZE)
                .ok()
                .flatten()
                .unwrap_or(u64::MAX);
            if on_disk > st.acc.usage().bytes.saturating_add(slack) {
                due = st.span.take();
                st.evicted = 0;
            }
        }
        Ok((report, due))
    }

    /// Compacts the chunk keys in [lo, hi] and their usage records, so that
    /// the space of evicted chunks returns to the file system.
    fn compact(&self, (lo, hi): KeySpan) {
        let end = prefix_end(&hi);
        self.db.compact_range(Some(&lo), Some(&end));
        self.db
            .compact_range(Some(usage_key_of(&lo)), Some(usage_key_of(&end)));
    }

    /// Writes pending touches (last-use times) to the disk.
    fn persist_touches(&self, st: &mut State) -> Result<()> {
        let mut wb = WriteBatch::default();
        if st.acc.drain_touches(&mut wb) > 0 {
            // Never in the log: a surviving touch then implies the chunk it
            // names survived too (unlogged writes are lost only as a suffix).
            self.write(st, wb, false)?;
        }
        Ok(())
    }

    #[cfg(test)]
    pub(crate) fn check_invariants(&self) {
        self.state().acc.check_invariants();
    }

    /// Sum of the sizes of the database's files (test measurements).
    #[cfg(test)]
    pub(crate) fn disk_size(&self) -> u64 {
        let dir = self.db.path();
        std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter_map(|e| e.metadata().ok())
            .filter(|m| m.is_file())
            .map(|m| m.len())
            .sum()
    }
}

impl Drop for RocksStore {
    fn drop(&mut self) {
        let mut st = std::mem::take(&mut *self.state());
        if let Err(e) = self.persist_touches(&mut st) {
            tracing::warn!("cache: last-use times not saved: {e}");
        }
    }
}

/// Rebuilds the accounting from the usage records.
fn load_accounting(db: &DB) -> Result<Accounting> {
    let start = all_usage_prefix();
    let end = prefix_end(&start);
    let mut records = Vec::new();
    for item in db.iterator(rocksdb::IteratorMode::From(
        &start,
        rocksdb::Direction::Forward,
    )) {
        let (k, v) = item?;
        if k.as_ref() >= end.as_slice() {
            break;
        }
        let meta: ChunkMeta = decode(&k, &v)?;
        records.push((chunk_key_of(&k), meta));
    }
    Ok(Accounting::from_records(records))
}

pub(crate) fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    // Serialising plain structs of integers and byte vectors cannot fail.
    bincode::serialize(v).unwrap_or_default()
}

pub(crate) fn decode<T: DeserializeOwned>(key: &[u8], v: &[u8]) -> Result<T> {
    bincode::deserialize(v).map_err(|e| Error::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        msg: e.to_string(),
    })
}

impl Store for RocksStore {
    fn get_status(&self, fid: &FidKey) -> Result<Option<StatusRecord>> {
        let key = status_key(fid);
        self.get_raw(&key)?.map(|v| decode(&key, &v)).transpose()
    }
    fn get_chunk(&self, fid: &FidKey, dv: u64, index: u64) -> Result<Option<Vec<u8>>> {
        self.get_raw(&chunk_key(fid, dv, index))
    }
    fn get_dir(&self, fid: &FidKey) -> Result<Option<DirRecord>> {
        let key = dir_key(fid);
        self.get_raw(&key)?.map(|v| decode(&key, &v)).transpose()
    }
    fn get_meta(&self, name: &str) -> Result<Option<Vec<u8>>> {
        self.get_raw(&meta_key(name))
    }
    fn tokens(&self) -> Result<Vec<TokenRecord>> {
        let start = all_tokens_prefix();
        let end = prefix_end(&start);
        let mut out = Vec::new();
        for item in self.db.iterator(rocksdb::IteratorMode::From(
            &start,
            rocksdb::Direction::Forward,
        )) {
            let (k, v) = item?;
            if k.as_ref() >= end.as_slice() {
                break;
            }
            out.push(decode(&k, &v)?);
        }
        Ok(out)
    }
    fn apply(&self, batch: Batch) -> Result<()> {
        let mut st = self.state();
        let mut wb = WriteBatch::default();
        let grew = translate(&mut st.acc, batch.ops, &mut wb);
        self.write(&mut st, wb, batch.durable)?;
        if grew && st.acc.over_limits() {
            let (_, due) = self.evict_locked(&mut st)?;
            drop(st);
            if let Some(range) = due {
                self.compact(range);
            }
        }
        Ok(())
    }
    fn usage(&self) -> Usage {
        self.state().acc.usage()
    }
    fn set_limits(&self, limits: Limits) {
        let mut st = self.state();
        if write_buffer_for(st.acc.limits()) != write_buffer_for(limits) {
            let size = write_buffer_for(limits).to_string();
            if let Err(e) = self.db.set_options(&[("write_buffer_size", &size)]) {
                tracing::warn!("cache: write buffer size not changed: {e}");
            }
        }
        st.acc.set_limits(limits);
    }
    fn touch(&self, fid: &FidKey, data_version: u64, index: u64) {
        let mut st = self.state();
        if st.acc.touch(&chunk_key(fid, data_version, index)) {
            if let Err(e) = self.persist_touches(&mut st) {
                tracing::warn!("cache: last-use times not saved: {e}");
            }
        }
    }
    fn evict(&self) -> Result<EvictReport> {
        let mut st = self.state();
        let (report, due) = self.evict_locked(&mut st)?;
        drop(st);
        if let Some(range) = due {
            self.compact(range);
        }
        Ok(report)
    }
    fn flush_fid(&self, fid: &FidKey) -> Result<()> {
        let mut st = self.state();
        let mut wb = WriteBatch::default();
        st.acc.flush_fid(fid, &mut wb);
        self.write(&mut st, wb, true)
    }
    fn flush_volume(&self, cell: &str, volume: u32) -> Result<()> {
        let mut st = self.state();
        let mut wb = WriteBatch::default();
        st.acc.flush_volume(cell, volume, &mut wb);
        self.write(&mut st, wb, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MemoryStore, Op};

    fn status(dv: u64) -> StatusRecord {
        StatusRecord {
            file_type: 1,
            length: 10,
            data_version: dv,
            mode: 0o644,
            owner: 1,
            group: 0,
            link_count: 1,
            author: 1,
            client_modtime: 5,
            server_modtime: 6,
            parent_vnode: 1,
            parent_unique: 1,
            anonymous_access: 0,
            callback_expires: 0,
            fetched_at: 0,
        }
    }

    fn exercise(store: &dyn Store) {
        let a = FidKey::new("test.lab", 536870915, 2, 3);
        let b = FidKey::new("test.lab", 536870915, 2, 4);
        let mut batch = Batch::new();
        batch
            .push(Op::PutStatus(a.clone(), status(7)))
            .push(Op::PutChunk {
                fid: a.clone(),
                data_version: 7,
                index: 0,
                data: b"abc".to_vec(),
            })
            .push(Op::PutChunk {
                fid: a.clone(),
                data_version: 7,
                index: 1,
                data: b"def".to_vec(),
            })
            .push(Op::PutChunk {
                fid: b.clone(),
                data_version: 1,
                index: 0,
                data: b"other".to_vec(),
            });
        store.apply(batch).unwrap();
        assert_eq!(store.get_status(&a).unwrap(), Some(status(7)));
        assert_eq!(
            store.get_chunk(&a, 7, 1).unwrap().as_deref(),
            Some(&b"def"[..])
        );
        // A chunk of another data version is a different record.
        assert_eq!(store.get_chunk(&a, 8, 1).unwrap(), None);

        let mut batch = Batch::new();
        batch.push(Op::DeleteChunks(a.clone()));
        store.apply(batch).unwrap();
        assert_eq!(store.get_chunk(&a, 7, 0).unwrap(), None);
        assert_eq!(store.get_chunk(&a, 7, 1).unwrap(), None);
        // A neighbouring fid is untouched by the range delete.
        assert_eq!(
            store.get_chunk(&b, 1, 0).unwrap().as_deref(),
            Some(&b"other"[..])
        );

        let dir = DirRecord {
            data_version: 3,
            entries: vec![crate::DirEntryRecord {
                name: b"x".to_vec(),
                vnode: 2,
                unique: 3,
            }],
        };
        let mut batch = Batch::new();
        batch.push(Op::PutDir(b.clone(), dir.clone()));
        batch.push(Op::PutMeta("uuid".into(), vec![1, 2]));
        store.apply(batch).unwrap();
        assert_eq!(store.get_dir(&b).unwrap(), Some(dir));
        assert_eq!(store.get_meta("uuid").unwrap(), Some(vec![1, 2]));

        let tok = |uid: u32, cell: &str| crate::TokenRecord {
            uid,
            cell: cell.into(),
            vice_id: 2,
            principal: "alice@TEST.LAB".into(),
            kvno: 256,
            ticket: vec![0x61, 1, 2],
            session_key: [1; 8],
            start: 10,
            end: 20,
        };
        let mut batch = Batch::new();
        batch.push(Op::PutToken(tok(1000, "a.lab")));
        batch.push(Op::PutToken(tok(1000, "b.lab")));
        batch.push(Op::PutToken(tok(1001, "a.lab")));
        store.apply(batch).unwrap();
        assert_eq!(store.tokens().unwrap().len(), 3);
        let mut batch = Batch::new();
        batch.push(Op::DeleteToken {
            uid: 1000,
            cell: "a.lab".into(),
        });
        store.apply(batch).unwrap();
        let left = store.tokens().unwrap();
        assert_eq!(left, vec![tok(1000, "b.lab"), tok(1001, "a.lab")]);
    }

    #[test]
    fn memory_store_semantics() {
        exercise(&MemoryStore::new());
    }

    #[test]
    fn rocks_store_semantics_and_persistence() {
        let tmp = tempfile::tempdir().unwrap();
        {
            let store = RocksStore::open(tmp.path()).unwrap();
            exercise(&store);
        }
        let store = RocksStore::open(tmp.path()).unwrap();
        let b = FidKey::new("test.lab", 536870915, 2, 4);
        assert_eq!(
            store.get_chunk(&b, 1, 0).unwrap().as_deref(),
            Some(&b"other"[..])
        );
        assert_eq!(store.get_meta("uuid").unwrap(), Some(vec![1, 2]));
        assert_eq!(store.tokens().unwrap().len(), 2, "tokens survive a reopen");
    }

    #[test]
    fn second_open_of_same_cache_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let _first = RocksStore::open(tmp.path()).unwrap();
        assert!(RocksStore::open(tmp.path()).is_err());
    }
}
