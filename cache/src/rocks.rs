//! The on-disk store: records in RocksDB, chunks in files beside it.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use rocksdb::{Options, WriteBatch, DB};

use crate::files::{allocated_bytes, ChunkFiles, FileAction};
use crate::key::{
    all_tokens_prefix, all_usage_prefix, chunk_key, chunk_key_of, dir_key, meta_key, prefix_end,
    record_prefix, status_key, KIND_CHUNK,
};
use crate::record::decode;
use crate::usage::{translate, Accounting, ChunkMeta, Sink};
use crate::{
    Batch, DirRecord, Error, EvictReport, FidKey, Limits, Op, Result, StatusRecord, Store,
    TokenRecord, Usage,
};

/// Memtable size. The records are small (statuses, directories, usage
/// records of chunks).
const WRITE_BUFFER: usize = 2 << 20;
/// Bound of the write-ahead log. Only durable batches (tokens, the UUID)
/// use it, and RocksDB preallocates each log file at the smaller of this
/// and 1.1 times the memtable: 1 MiB instead of 4.4.
const MAX_WAL: u64 = 1 << 20;

/// How stale the measure of the database's size may be when a put checks
/// the disk bound (evictions always measure afresh).
const MEASURE_EVERY: std::time::Duration = std::time::Duration::from_millis(20);

/// Name of the meta record saying chunks live in files. Caches from before
/// held chunks as RocksDB values; those are dropped once.
const LAYOUT: &str = "chunk-layout";
const LAYOUT_FILES: &[u8] = b"files-v1";

/// The cache directory: RocksDB in `db/`, chunk files in `chunks/`.
/// RocksDB's lock file keeps a second daemon from opening the same cache.
pub struct RocksStore {
    state: Mutex<State>,
    db: DB,
    files: ChunkFiles,
    db_dir: PathBuf,
}

#[derive(Default)]
struct State {
    acc: Accounting,
    /// Bytes of the chunk directories, and when the overhead was measured.
    dir_bytes: u64,
    measured: Option<std::time::Instant>,
    /// The last eviction left usage above the limits (warned about).
    over_warned: bool,
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
        // Small and few files besides the data: the cache limit covers them.
        opts.set_keep_log_file_num(2);
        opts.set_max_log_file_size(1 << 20);
        opts.set_log_level(rocksdb::LogLevel::Warn);
        opts.set_manifest_preallocation_size(64 << 10);
        opts.set_max_manifest_file_size(4 << 20);
        opts.set_write_buffer_size(WRITE_BUFFER);
        opts.set_max_write_buffer_number(2);
        opts.set_max_total_wal_size(MAX_WAL);
        opts.set_level_compaction_dynamic_level_bytes(true);
        opts.set_max_background_jobs(2);
        let db_dir = dir.join("db");
        let db = DB::open(&opts, &db_dir)?;
        if db.get(meta_key(LAYOUT))?.as_deref() != Some(LAYOUT_FILES) {
            // Chunks of the old layout were values: drop them and their usage.
            let mut wb = WriteBatch::default();
            let chunks = vec![KIND_CHUNK];
            let usage = all_usage_prefix();
            wb.delete_range(chunks.clone(), prefix_end(&chunks));
            wb.delete_range(usage.clone(), prefix_end(&usage));
            wb.put(meta_key(LAYOUT), LAYOUT_FILES);
            db.write(wb)?;
            db.compact_range(Some(&chunks), Some(&prefix_end(&chunks)));
        }
        let files = ChunkFiles::open(dir.join("chunks"))?;
        let acc = load_accounting(&db, &files)?;
        let store = RocksStore {
            state: Mutex::new(State {
                acc,
                ..State::default()
            }),
            db,
            files,
            db_dir,
        };
        store.measure_overhead(&mut store.state());
        Ok(store)
    }

    /// Every (key, value) whose key starts with `prefix`, in key order.
    fn scan(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let end = prefix_end(prefix);
        let mut out = Vec::new();
        for item in self.db.iterator(rocksdb::IteratorMode::From(
            prefix,
            rocksdb::Direction::Forward,
        )) {
            let (k, v) = item?;
            if k.as_ref() >= end.as_slice() {
                break;
            }
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    fn get_raw(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.db.get(key)?)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What the record database and the directories occupy now, for the
    /// disk bound.
    fn measure_overhead(&self, st: &mut State) {
        if self.files.take_new_dir() {
            st.dir_bytes = self.files.dir_bytes();
        }
        st.acc
            .set_overhead(allocated_bytes(&self.db_dir) + st.dir_bytes);
        st.measured = Some(std::time::Instant::now());
    }

    /// [`RocksStore::measure_overhead`] when a directory was made or the
    /// last measure is older than [`MEASURE_EVERY`]: cheap enough per put.
    fn maybe_measure_overhead(&self, st: &mut State) {
        let stale = st.measured.is_none_or(|t| t.elapsed() >= MEASURE_EVERY);
        if stale || self.files.new_dir_pending() {
            self.measure_overhead(st);
        }
    }

    /// Carries out a translated batch: new file contents first, then the
    /// records, then the unlinks (see `files.rs` on crash consistency). On
    /// failure the in-memory accounting, already updated, is rebuilt from
    /// the disk so that it never drifts from the data.
    fn write(
        &self,
        st: &mut State,
        wb: WriteBatch,
        actions: Vec<FileAction>,
        durable: bool,
        sync: bool,
    ) -> Result<()> {
        let mut wo = rocksdb::WriteOptions::default();
        wo.disable_wal(!durable && !sync);
        wo.set_sync(sync);
        let res = self
            .files
            .apply_writes(&actions, sync)
            .and_then(|()| Ok(self.db.write_opt(wb, &wo)?));
        if let Err(e) = res {
            let limits = st.acc.limits();
            if let Ok(acc) = load_accounting(&self.db, &self.files) {
                let pinned = st.acc.take_pinned();
                st.acc = acc;
                st.acc.set_limits(limits);
                st.acc.restore_pinned(pinned);
            }
            return Err(e);
        }
        self.files.apply_deletes(&actions);
        Ok(())
    }

    /// Where every batch is carried out, whoever built it: a caller, an
    /// eviction, the close. With `persist_touches` the pending last-use
    /// times join the write. A batch that changed only memory (uses below
    /// the group size) writes nothing. Returns whether the batch added
    /// file data.
    fn apply_locked(&self, st: &mut State, batch: Batch, persist_touches: bool) -> Result<bool> {
        let mut wb = LazyBatch::default();
        let mut actions = Vec::new();
        let grew = translate(&mut st.acc, batch.ops, &mut wb, &mut actions);
        if persist_touches {
            st.acc.drain_touches(&mut wb);
        }
        if wb.0.is_some() || !actions.is_empty() {
            self.write(
                st,
                wb.0.unwrap_or_default(),
                actions,
                batch.durable,
                batch.sync,
            )?;
        }
        Ok(grew)
    }

    /// Evicts with the state locked. Pending touches go in the same write.
    fn evict_locked(&self, st: &mut State) -> Result<EvictReport> {
        self.measure_overhead(st);
        let (ops, mut report) = st.acc.eviction();
        // Evicted data is refetchable: no log needed. A lost record delete
        // finds the file gone at the next open and drops the record.
        self.apply_locked(st, Batch::of(ops, false), true)?;
        report.over_limit = st.acc.over_limits();
        // Said once per stretch above the limits, not at every write.
        if report.over_limit && !st.over_warned {
            tracing::warn!(
                usage = ?st.acc.usage(),
                limits = ?st.acc.limits(),
                "cache above its limits: the rest is data not yet stored"
            );
        }
        st.over_warned = report.over_limit;
        Ok(report)
    }

    #[cfg(test)]
    pub(crate) fn check_invariants(&self) {
        self.state().acc.check_invariants();
    }

    /// Bytes the whole cache directory occupies (test measurements).
    #[cfg(test)]
    pub(crate) fn disk_size(&self) -> u64 {
        fn walk(p: &Path) -> u64 {
            use std::os::unix::fs::MetadataExt;
            let Ok(m) = std::fs::symlink_metadata(p) else {
                return 0;
            };
            if m.is_dir() {
                m.blocks() * 512
                    + std::fs::read_dir(p)
                        .map(|es| es.filter_map(|e| e.ok()).map(|e| walk(&e.path())).sum())
                        .unwrap_or(0)
            } else {
                m.blocks() * 512
            }
        }
        walk(&self.db_dir) + walk(self.files.root())
    }
}

/// A `WriteBatch` made at its first record: a batch of uses alone (every
/// cached read makes one) then costs no RocksDB object.
#[derive(Default)]
struct LazyBatch(Option<WriteBatch>);

impl Sink for LazyBatch {
    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.0
            .get_or_insert_with(WriteBatch::default)
            .put(key, value)
    }
    fn delete(&mut self, key: Vec<u8>) {
        self.0.get_or_insert_with(WriteBatch::default).delete(key)
    }
    fn delete_range(&mut self, start: Vec<u8>, end: Vec<u8>) {
        self.0
            .get_or_insert_with(WriteBatch::default)
            .delete_range(start, end)
    }
}

impl Drop for RocksStore {
    fn drop(&mut self) {
        let mut st = std::mem::take(&mut *self.state());
        if let Err(e) = self.apply_locked(&mut st, Batch::clean(), true) {
            tracing::warn!("cache: last-use times not saved: {e}");
        }
    }
}

/// Rebuilds the accounting from the usage records and the chunk files,
/// reconciling the two: a record whose file is gone is dropped, a file
/// without a record is removed, and a file's size wins over its record's.
fn load_accounting(db: &DB, files: &ChunkFiles) -> Result<Accounting> {
    let start = all_usage_prefix();
    let end = prefix_end(&start);
    let mut on_disk: std::collections::HashMap<Vec<u8>, u64> = files.scan()?.into_iter().collect();
    let mut records = Vec::new();
    let mut stale = WriteBatch::default();
    for item in db.iterator(rocksdb::IteratorMode::From(
        &start,
        rocksdb::Direction::Forward,
    )) {
        let (k, v) = item?;
        if k.as_ref() >= end.as_slice() {
            break;
        }
        let mut meta: ChunkMeta = decode(&k, &v)?;
        let key = chunk_key_of(&k);
        match on_disk.remove(&key) {
            // A clean chunk is written whole before its record: a shorter
            // file lost its tail in a power cut. Fetched again, not served.
            Some(size) if !meta.dirty && size < meta.size => {
                stale.delete(&k);
                files.remove_orphan(&key);
            }
            Some(size) => {
                meta.size = size;
                records.push((key, meta));
            }
            None => stale.delete(&k),
        }
    }
    for key in on_disk.keys() {
        files.remove_orphan(key);
    }
    if !stale.is_empty() || !on_disk.is_empty() {
        tracing::info!(
            records = stale.len(),
            files = on_disk.len(),
            "cache: dropped chunk records without files and files without records"
        );
        db.write(stale)?;
    }
    Ok(Accounting::from_records(records))
}

impl Store for RocksStore {
    fn get_status(&self, fid: &FidKey) -> Result<Option<StatusRecord>> {
        let key = status_key(fid);
        self.get_raw(&key)?.map(|v| decode(&key, &v)).transpose()
    }
    fn get_chunk(&self, fid: &FidKey, dv: u64, index: u64) -> Result<Option<Vec<u8>>> {
        let key = chunk_key(fid, dv, index);
        // A file is read only while its record says it is ours; a file of
        // an interrupted write has no record and is not served.
        if self.state().acc.size_of(&key).is_none() {
            return Ok(None);
        }
        self.files.read(&key)
    }
    fn get_chunk_range(
        &self,
        fid: &FidKey,
        dv: u64,
        index: u64,
        offset: u64,
        len: usize,
    ) -> Result<Option<Vec<u8>>> {
        let key = chunk_key(fid, dv, index);
        if self.state().acc.size_of(&key).is_none() {
            return Ok(None);
        }
        self.files.read_range(&key, offset, len)
    }
    fn cached_bytes(&self, fid: &FidKey, data_version: u64) -> u64 {
        self.state().acc.cached_bytes(fid, data_version)
    }
    fn set_pinned(&self, fid: &FidKey, pinned: bool) {
        self.state().acc.set_pinned(fid, pinned);
    }
    fn dirty_chunks(&self, fid: &FidKey) -> Vec<(u64, u64, u64)> {
        self.state().acc.dirty_of(fid)
    }
    fn get_dir(&self, fid: &FidKey) -> Result<Option<DirRecord>> {
        let key = dir_key(fid);
        self.get_raw(&key)?.map(|v| decode(&key, &v)).transpose()
    }
    fn get_meta(&self, name: &str) -> Result<Option<Vec<u8>>> {
        self.get_raw(&meta_key(name))
    }
    fn tokens(&self) -> Result<Vec<TokenRecord>> {
        self.scan(&all_tokens_prefix())?
            .into_iter()
            .map(|(k, v)| decode(&k, &v))
            .collect()
    }
    fn get_record(&self, space: u8, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.get_raw(&crate::key::record_key(space, key))
    }
    fn records(&self, space: u8) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let start = record_prefix(space);
        Ok(self
            .scan(&start)?
            .into_iter()
            .map(|(k, v)| (k[start.len()..].to_vec(), v))
            .collect())
    }
    fn apply(&self, batch: Batch) -> Result<()> {
        let mut st = self.state();
        // A batch of fetched data (new clean chunks with their status and
        // listings): room is made before it is written, so the cache
        // directory never exceeds its limit. Batches that touch, flush or
        // drop chunks are evicted for afterwards, when their own effects
        // are known.
        let fetched_only = batch.ops.iter().all(|op| {
            matches!(
                op,
                Op::PutChunk { .. } | Op::PutStatus(..) | Op::PutDir(..) | Op::DeleteDir(..)
            )
        });
        let incoming: Vec<(Vec<u8>, u64)> = batch
            .ops
            .iter()
            .filter_map(|op| match op {
                Op::PutChunk {
                    fid,
                    data_version,
                    index,
                    data,
                } => Some((
                    crate::key::chunk_key(fid, *data_version, *index),
                    data.len() as u64,
                )),
                _ => None,
            })
            .collect();
        if fetched_only && !incoming.is_empty() {
            let (ops, _) = st.acc.eviction_for(&incoming);
            if !ops.is_empty() {
                self.apply_locked(&mut st, Batch::of(ops, false), true)?;
            }
        }
        if self.apply_locked(&mut st, batch, false)? {
            if st.acc.limits().disk_bytes > 0 {
                self.maybe_measure_overhead(&mut st);
            }
            if st.acc.over_limits() {
                self.evict_locked(&mut st)?;
            }
        }
        Ok(())
    }
    fn usage(&self) -> Usage {
        self.state().acc.usage()
    }
    fn disk_usage(&self) -> u64 {
        let mut st = self.state();
        self.measure_overhead(&mut st);
        st.acc.disk_bytes()
    }
    fn set_limits(&self, limits: Limits) {
        self.state().acc.set_limits(limits);
    }
    fn limits(&self) -> Limits {
        self.state().acc.limits()
    }
    fn persist(&self) -> Result<()> {
        let mut st = self.state();
        self.apply_locked(&mut st, Batch::clean(), true)?;
        self.db.flush()?;
        Ok(())
    }
    fn evict(&self) -> Result<EvictReport> {
        let mut st = self.state();
        self.evict_locked(&mut st)
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
