//! Open files and their unstored changes, keyed by fid and identity.
//!
//! Each (file, uid) that writes has its own [`OpenFile`] state and its own
//! dirty chunks in the cache (under a local data version per uid, see
//! [`local_dv`]), so one user's unstored bytes are never shown to another
//! and are stored only as the user who wrote them. A close or fsync turns
//! the state into a [`Mutation`] (StoreData) for the executor. Descriptors
//! are numbered handles: the kernel gives back the handle at read, write,
//! flush and release, so the handle names the node and the opener.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use cache::{Batch, FidKey, Op, StatusRecord, Store, LOCAL_DATA_VERSION};

use crate::data::FileData;
use crate::executor::Executor;
use crate::identity::Identity;
use crate::inode::NodeRef;
use crate::journal::RecState;
use crate::mutation::{BaseState, Change, Mutation};
use crate::openfile::{spans, OpenFile};
use crate::validate::Validator;
use crate::{Error, Result};

/// The data version `uid`'s unstored chunks are kept under: one per writer
/// at the top of the range, where no server version reaches.
pub(crate) fn local_dv(uid: u32) -> u64 {
    LOCAL_DATA_VERSION - u64::from(uid)
}

/// The lowest local data version (see [`local_dv`]).
pub(crate) const LOWEST_LOCAL_DV: u64 = LOCAL_DATA_VERSION - u32::MAX as u64;

/// A descriptor the kernel holds.
#[derive(Clone, Debug)]
pub(crate) struct Handle {
    pub node: NodeRef,
    pub ino: u64,
    pub uid: u32,
    pub write: bool,
}

type StateCell = Arc<tokio::sync::Mutex<OpenFile>>;
/// The lock on a file's write state, held across the awaits of a change.
pub(crate) type OpenGuard = tokio::sync::OwnedMutexGuard<OpenFile>;
type StateKey = (FidKey, u32);

/// Open descriptors and the write state of files being written.
pub(crate) struct OpenFiles {
    store: Arc<dyn Store>,
    valid: Arc<Validator>,
    data: Arc<FileData>,
    exec: Arc<Executor>,
    handles: Mutex<HashMap<u64, Handle>>,
    next_handle: AtomicU64,
    states: Mutex<HashMap<StateKey, StateCell>>,
    /// Lengths of files being written as their writer sees them.
    lengths: Mutex<HashMap<StateKey, u64>>,
    /// Files unlinked while open: hidden under another name on the server
    /// until their last descriptor closes.
    unlinked: Mutex<HashMap<FidKey, Hidden>>,
}

/// Where a file unlinked while open waits for its last close, and who
/// removes it then.
#[derive(Clone, Debug)]
pub(crate) struct Hidden {
    pub dir: NodeRef,
    pub name: Vec<u8>,
    pub uid: u32,
}

/// A batch of unstored writes of a connected volume. Not logged: close
/// stores to the fileserver before returning, so what a crash loses here
/// was never acknowledged. (Offline, writes are logged: `apply_writes`.)
fn unlogged(ops: Vec<Op>) -> Batch {
    Batch::of(ops, false)
}

impl OpenFiles {
    pub(crate) fn new(
        store: Arc<dyn Store>,
        valid: Arc<Validator>,
        data: Arc<FileData>,
        exec: Arc<Executor>,
    ) -> Self {
        OpenFiles {
            store,
            valid,
            data,
            exec,
            handles: Mutex::new(HashMap::new()),
            next_handle: AtomicU64::new(1),
            states: Mutex::new(HashMap::new()),
            lengths: Mutex::new(HashMap::new()),
            unlinked: Mutex::new(HashMap::new()),
        }
    }

    /// Whether any descriptor is open on the file.
    pub(crate) fn is_open(&self, key: &FidKey) -> bool {
        self.handles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .any(|h| &h.node.key() == key)
    }

    /// Records a file unlinked while open (see [`Hidden`]). False when its
    /// last descriptor closed meanwhile: the caller removes it now.
    pub(crate) fn hide(&self, key: FidKey, hidden: Hidden) -> bool {
        // Under the handles' lock, as the last close decides under it.
        let handles = self.handles.lock().unwrap_or_else(|e| e.into_inner());
        if !handles.values().any(|h| h.node.key() == key) {
            return false;
        }
        self.unlinked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, hidden);
        true
    }

    /// Every file unlinked while open and not yet removed (at unmount:
    /// their descriptors are gone with the mount).
    pub(crate) fn take_hidden(&self) -> Vec<Hidden> {
        self.unlinked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .map(|(_, h)| h)
            .collect()
    }

    /// Whether the file was unlinked while open.
    pub(crate) fn is_hidden(&self, key: &FidKey) -> bool {
        self.unlinked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(key)
    }

    /// Forgets descriptor `fh`; when it was the last of a file unlinked
    /// while open, the hidden name to remove. Decided under the handles'
    /// lock, so that of two closes racing, exactly one is the last.
    pub(crate) fn close_handle(&self, fh: u64) -> Option<Hidden> {
        let mut handles = self.handles.lock().unwrap_or_else(|e| e.into_inner());
        let h = handles.remove(&fh)?;
        let key = h.node.key();
        if handles.values().any(|o| o.node.key() == key) {
            return None;
        }
        self.unlinked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key)
    }

    /// Registers a descriptor and returns its handle.
    pub(crate) fn add_handle(&self, h: Handle) -> u64 {
        let fh = self.next_handle.fetch_add(1, Ordering::SeqCst);
        self.handles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(fh, h);
        fh
    }

    pub(crate) fn handle(&self, fh: u64) -> Result<Handle> {
        self.handles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&fh)
            .cloned()
            .ok_or(Error::BadHandle)
    }

    /// The length `uid` sees of a file it writes.
    pub(crate) fn length(&self, key: &FidKey, uid: u32) -> Option<u64> {
        self.lengths
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(key.clone(), uid))
            .copied()
    }

    /// Whether anyone writes the file or holds changes to it not yet
    /// stored: its kernel page cache may hold bytes some users must not see.
    pub(crate) fn changing(&self, key: &FidKey) -> bool {
        self.states
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .any(|(k, _)| k == key)
    }

    /// Whether `uid` holds the file open for writing.
    pub(crate) fn is_writing(&self, key: &FidKey, uid: u32) -> bool {
        self.state(key, uid)
            .and_then(|c| c.try_lock().ok().map(|f| f.writers > 0))
            // Locked: someone is changing it, so it is being written.
            .unwrap_or_else(|| self.state(key, uid).is_some())
    }

    fn note_length(&self, key: &FidKey, uid: u32, length: u64) {
        self.lengths
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((key.clone(), uid), length);
    }

    fn state(&self, key: &FidKey, uid: u32) -> Option<StateCell> {
        self.states
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(key.clone(), uid))
            .cloned()
    }

    /// The write state of (file, uid), locked, and still the one in force:
    /// a state dropped by [`OpenFiles::close_if_done`] while we waited for
    /// its lock is not written to; a fresh one is taken instead.
    async fn lock_state(&self, key: &FidKey, uid: u32, st: &StatusRecord) -> OpenGuard {
        let k = (key.clone(), uid);
        loop {
            let f = self
                .states
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(k.clone())
                .or_insert_with(|| {
                    Arc::new(tokio::sync::Mutex::new(OpenFile::new(
                        st.length,
                        st.data_version,
                    )))
                })
                .clone();
            let g = f.clone().lock_owned().await;
            let live = self
                .states
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&k)
                .is_some_and(|cur| Arc::ptr_eq(cur, &f));
            if live {
                return g;
            }
        }
    }

    /// Forgets the write state once no one writes and all is stored.
    /// Called with the state locked (`f`), so the decision holds.
    fn close_if_done(&self, key: &FidKey, uid: u32, cell: &StateCell, f: &OpenFile) {
        if f.writers == 0 && !f.modified {
            let k = (key.clone(), uid);
            let mut map = self.states.lock().unwrap_or_else(|e| e.into_inner());
            if !map.get(&k).is_some_and(|cur| Arc::ptr_eq(cur, cell)) {
                return; // already gone, and maybe replaced
            }
            map.remove(&k);
            self.lengths
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&k);
        }
    }

    /// A file being changed by `who`: its current status and write state.
    /// The fileserver judges the write at store time (the owner and insert
    /// rules make PRSFS_WRITE alone the wrong test).
    async fn writable(&self, node: &NodeRef, who: &Identity) -> Result<OpenGuard> {
        let st = self.valid.file(node, who, 0).await?;
        Ok(self.lock_state(&node.key(), who.uid, &st).await)
    }

    /// An open for writing (`truncate`: O_TRUNC).
    pub(crate) async fn open_write(
        &self,
        node: &NodeRef,
        who: &Identity,
        truncate: bool,
    ) -> Result<()> {
        let mut f = self.writable(node, who).await?;
        if truncate && f.length > 0 {
            self.truncate_state(node, who, &mut f, 0).await?;
        } else if truncate {
            f.modified = true;
        }
        // Counted once the open cannot fail any more: a failed open gets
        // no release.
        f.writers += 1;
        self.note_length(&node.key(), who.uid, f.length);
        Ok(())
    }

    /// Writes into the cached chunks of the file: a chunk written for the
    /// first time is first copied from the old contents (unless the write
    /// covers them all), then changed in place.
    pub(crate) async fn write(
        &self,
        node: &NodeRef,
        who: &Identity,
        offset: u64,
        data: &[u8],
    ) -> Result<u32> {
        let mut f = self.writable(node, who).await?;
        let cs = self.data.chunk_size();
        let key = node.key();
        let dv = local_dv(who.uid);
        let end = offset
            .checked_add(data.len() as u64)
            .ok_or(Error::Invalid("write past the largest offset".into()))?;
        let mut ops = Vec::new();
        let mut new_dirty = Vec::new();
        for (idx, off, range) in spans(offset, data.len() as u64, cs) {
            if !f.dirty.contains(&idx) {
                let base = if f.write_covers_base(idx, cs, offset, end) {
                    Vec::new()
                } else {
                    self.base_bytes(node, who, &f, idx).await?
                };
                ops.push(Op::PutDirtyChunk {
                    fid: key.clone(),
                    data_version: dv,
                    index: idx,
                    data: base,
                });
                new_dirty.push(idx);
            }
            ops.push(Op::WriteChunk {
                fid: key.clone(),
                data_version: dv,
                index: idx,
                offset: off,
                data: data[range].to_vec(),
            });
        }
        let mut next = f.clone();
        next.dirty.extend(new_dirty);
        next.length = next.length.max(end);
        next.modified = true;
        next.refused = None;
        next.logged = false;
        self.apply_writes(node, who, &next, ops)?;
        *f = next;
        self.note_length(&key, who.uid, f.length);
        Ok(data.len() as u32)
    }

    /// Writes a state's cache ops: unlogged online (close stores before it
    /// returns), or, while the volume takes no changes, through the store's
    /// log with the file's change record, so that a bare write survives a
    /// crash of the daemon and is replayed (see `local.rs`).
    fn apply_writes(
        &self,
        node: &NodeRef,
        who: &Identity,
        next: &OpenFile,
        ops: Vec<Op>,
    ) -> Result<()> {
        if !self.exec.must_log(&node.cell, node.fid.volume) {
            self.store.apply(unlogged(ops))?;
            return Ok(());
        }
        // Offline nothing can be evicted to make room for unstored data:
        // past the cache's size, writes fail rather than lose anything.
        let limit = self.store.limits().disk_bytes;
        if limit > 0 {
            let incoming: u64 = ops
                .iter()
                .map(|op| match op {
                    Op::WriteChunk { data, .. } | Op::PutDirtyChunk { data, .. } => {
                        data.len() as u64
                    }
                    _ => 0,
                })
                .sum();
            let held = self.store.usage().dirty_bytes;
            if held + incoming > limit {
                return Err(Error::NoSpace(format!(
                    "{held} bytes of changes and base data are held for replay, the cache holds {limit}"
                )));
            }
        }
        let m = self.store_record(node, who, next);
        self.exec
            .log_change(who, &m, RecState::Open, ops, false)
            .map(|_| ())
    }

    /// The StoreData record of `uid`'s changes to a file.
    fn store_record(&self, node: &NodeRef, who: &Identity, f: &OpenFile) -> Mutation {
        Mutation {
            cell: node.cell.clone(),
            volume: node.fid.volume,
            uid: who.uid,
            vice_id: who.vice_id.or(who.anchor),
            base: vec![BaseState {
                fid: node.fid,
                data_version: f.base_dv,
                length: f.server_len,
                bindings: Vec::new(),
            }],
            change: Change::StoreData {
                fid: node.fid,
                data: f.change(local_dv(who.uid)),
            },
        }
    }

    /// truncate(2)/ftruncate: cut in the cache, then stored at once when
    /// the user has no descriptor open for writing.
    pub(crate) async fn truncate(&self, node: &NodeRef, who: &Identity, size: u64) -> Result<()> {
        let mut f = self.writable(node, who).await?;
        self.truncate_state(node, who, &mut f, size).await?;
        self.note_length(&node.key(), who.uid, f.length);
        if f.writers == 0 {
            self.store_state(node, who, &mut f).await?;
            let cell = tokio::sync::OwnedMutexGuard::mutex(&f).clone();
            self.close_if_done(&node.key(), who.uid, &cell, &f);
        }
        Ok(())
    }

    /// Stores `uid`'s changes to the file if any (close and fsync): when
    /// this returns Ok the fileserver has the data.
    pub(crate) async fn flush(&self, node: &NodeRef, uid: u32) -> Result<()> {
        let Some(cell) = self.state(&node.key(), uid) else {
            return Ok(());
        };
        let mut f = cell.lock().await;
        if !f.modified || f.logged {
            return match f.refused {
                Some(errno) => Err(refused(errno)),
                None => Ok(()),
            };
        }
        // The changes are stored as the user who made them.
        let who = self.valid.who(uid, node);
        self.store_state(node, &who, &mut f).await
    }

    /// The close of a write descriptor. The write state goes with the last
    /// writer, unless a store failed: then the changes stay, in the cache,
    /// and the next close or fsync stores them.
    pub(crate) async fn release(&self, node: &NodeRef, uid: u32, write: bool) {
        let key = node.key();
        let Some(cell) = self.state(&key, uid) else {
            return;
        };
        let mut f = cell.lock().await;
        if write {
            f.writers = f.writers.saturating_sub(1);
        }
        let logged = self.exec.journal.pending.contains(&key);
        if f.writers == 0 && f.modified && !logged {
            tracing::warn!(
                fid = ?node.fid,
                uid,
                length = f.length,
                "closed with changes not stored; they stay in the cache"
            );
        }
        self.close_if_done(&key, uid, &cell, &f);
    }

    /// Reads a file as `who` sees it while writing it (None: `who` has no
    /// changes to it): dirty chunks from the cache, the rest from the old
    /// contents, zeros past them.
    pub(crate) async fn read(
        &self,
        node: &NodeRef,
        who: &Identity,
        offset: u64,
        size: u32,
    ) -> Option<Result<Vec<u8>>> {
        // Most reads are of files nobody here writes: no key to build.
        if self
            .states
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
        {
            return None;
        }
        let cell = self.state(&node.key(), who.uid)?;
        let f = cell.lock().await;
        Some(self.read_state(node, who, &f, offset, size).await)
    }

    async fn read_state(
        &self,
        node: &NodeRef,
        who: &Identity,
        f: &OpenFile,
        offset: u64,
        size: u32,
    ) -> Result<Vec<u8>> {
        let cs = self.data.chunk_size();
        let end = f.length.min(offset.saturating_add(size as u64));
        if offset >= end {
            return Ok(Vec::new());
        }
        let key = node.key();
        let dv = local_dv(who.uid);
        let mut out = Vec::with_capacity((end - offset) as usize);
        for (idx, off, range) in spans(offset, end - offset, cs) {
            let want = range.len();
            let start = out.len();
            if f.dirty.contains(&idx) {
                if let Some(d) = self.store.get_chunk_range(&key, dv, idx, off, want)? {
                    out.extend_from_slice(&d);
                }
            } else {
                let from = idx * cs + off;
                let to = (from + want as u64).min(f.base_len);
                if from < to {
                    out.extend(self.data.read(node, from, to - from, who).await?);
                }
            }
            out.resize(start + want, 0);
        }
        Ok(out)
    }

    /// The old contents of chunk `idx` still in force (clipped at
    /// `base_len`), as the file holds them now.
    async fn base_bytes(
        &self,
        node: &NodeRef,
        who: &Identity,
        f: &OpenFile,
        idx: u64,
    ) -> Result<Vec<u8>> {
        match f.base_span(idx, self.data.chunk_size()) {
            Some((from, to)) => self.data.read(node, from, to - from, who).await,
            None => Ok(Vec::new()),
        }
    }

    /// Cuts or extends a write state to `size`, in the cache. The chunk
    /// holding the new last byte is made dirty when the old contents do
    /// not reach it, so that the store sends it.
    async fn truncate_state(
        &self,
        node: &NodeRef,
        who: &Identity,
        state: &mut OpenFile,
        size: u64,
    ) -> Result<()> {
        let cs = self.data.chunk_size();
        let key = node.key();
        let dv = local_dv(who.uid);
        // Worked out on a copy: the state changes only once the cache has.
        let mut next = state.clone();
        let f = &mut next;
        let (dropped, cut) = f.truncate(size, cs);
        let mut ops: Vec<Op> = dropped
            .into_iter()
            .map(|index| Op::DeleteChunk {
                fid: key.clone(),
                data_version: dv,
                index,
            })
            .collect();
        if let Some((index, length)) = cut {
            ops.push(Op::TruncateChunk {
                fid: key.clone(),
                data_version: dv,
                index,
                length,
            });
        }
        if let Some(last) = f.needs_last_chunk(cs) {
            let base = self.base_bytes(node, who, f, last).await?;
            ops.push(Op::PutDirtyChunk {
                fid: key.clone(),
                data_version: dv,
                index: last,
                data: base,
            });
            ops.push(Op::TruncateChunk {
                fid: key.clone(),
                data_version: dv,
                index: last,
                length: f.chunk_len(last, cs),
            });
            f.dirty.insert(last);
        }
        next.modified = true;
        next.logged = false;
        self.apply_writes(node, who, &next, ops)?;
        *state = next;
        Ok(())
    }

    /// Stores a write state's changes through the executor and makes the
    /// stored state its new base.
    async fn store_state(&self, node: &NodeRef, who: &Identity, f: &mut OpenFile) -> Result<()> {
        let m = self.store_record(node, who, f);
        let mut r = self.exec.execute(who, &m).await;
        if matches!(&r, Err(e) if e.errno() == libc::EDQUOT) {
            // Over quota: once more, in case space was freed meanwhile.
            r = self.exec.execute(who, &m).await;
        }
        match r {
            // Logged, not sent: the changes stay this writer's, in the
            // cache, until replay stores them.
            Ok(out) if out.logged => {
                f.logged = true;
                Ok(())
            }
            Ok(out) => {
                let dv = out.status.map(|s| s.data_version).unwrap_or(f.base_dv);
                f.stored(dv);
                Ok(())
            }
            Err(e) if lasting(&e) => {
                self.drop_refused(node, who, f, &e).await?;
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// Replay of a logged store: `uid`'s changes to the file as they are
    /// now (a later write may have added to the logged ones), sent as
    /// `who` from piece `from_piece`. Returns the file's new status.
    pub(crate) async fn replay_store(
        &self,
        node: &NodeRef,
        who: &Identity,
        logged: &crate::mutation::DataChange,
        from_piece: usize,
    ) -> Result<Option<StatusRecord>> {
        let key = node.key();
        let cell = match self.state(&key, who.uid) {
            Some(c) => c,
            None => {
                self.restore(node, who.uid, logged);
                self.state(&key, who.uid).ok_or(Error::BadHandle)?
            }
        };
        let mut f = cell.lock().await;
        if !f.modified {
            return Ok(None);
        }
        // The pieces already on the server are those of the logged change;
        // a state that grew since is sent whole.
        let from_piece = if f.change(local_dv(who.uid)) == *logged {
            from_piece
        } else {
            0
        };
        let m = self.store_record(node, who, &f);
        let out = self.exec.send(who, &m, from_piece, None).await?;
        let st = out.status;
        let dv = st.as_ref().map_or(f.base_dv, |s| s.data_version);
        f.stored(dv);
        self.close_if_done(&key, who.uid, &cell, &f);
        Ok(st)
    }

    /// Makes `uid`'s write state of a file from its logged change (at
    /// start: the change log outlives the daemon).
    pub(crate) fn restore(&self, node: &NodeRef, uid: u32, logged: &crate::mutation::DataChange) {
        let mut f = OpenFile::from_change(logged);
        f.modified = true;
        f.logged = true;
        let k = (node.key(), uid);
        self.note_length(&k.0, uid, f.length);
        self.states
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(k)
            .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(f)));
    }

    /// Forgets every write state of a file (made and removed offline, or
    /// its changes moved to a conflict).
    pub(crate) fn forget(&self, key: &FidKey) {
        self.states
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(k, _), _| k != key);
        self.lengths
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(k, _), _| k != key);
    }

    /// Forgets `uid`'s write state of a file (its changes went to a
    /// conflict).
    pub(crate) fn forget_uid(&self, key: &FidKey, uid: u32) {
        let k = (key.clone(), uid);
        self.states
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&k);
        self.lengths
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&k);
    }

    /// `uid`'s write state of a file is based on the server's version
    /// `dv` of `length` bytes now (an earlier store of it settled): every
    /// change since its old base stays dirty and is sent whole.
    pub(crate) fn rebase_to(&self, key: &FidKey, uid: u32, dv: u64, length: u64) {
        if let Some(c) = self.state(key, uid) {
            if let Ok(mut f) = c.try_lock() {
                f.base_dv = dv;
                f.server_len = length;
            }
        }
    }

    /// Write states of a file based on version `old` are based on `new`
    /// (a store replayed for another of its writers moved it).
    pub(crate) fn rebase_from(&self, key: &FidKey, old: u64, new: u64) {
        let cells: Vec<StateCell> = self
            .states
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|((k, _), _)| k == key)
            .map(|(_, v)| v.clone())
            .collect();
        for c in cells {
            if let Ok(mut f) = c.try_lock() {
                if f.base_dv == old {
                    f.base_dv = new;
                }
            }
        }
    }

    /// A write state keyed by another fid (a file made offline got its
    /// server fid).
    pub(crate) fn rekey(&self, old: &FidKey, new: &FidKey) {
        let mut states = self.states.lock().unwrap_or_else(|e| e.into_inner());
        let moved: Vec<_> = states.keys().filter(|(k, _)| k == old).cloned().collect();
        for k in moved {
            if let Some(v) = states.remove(&k) {
                states.insert((new.clone(), k.1), v);
            }
        }
        drop(states);
        let mut lengths = self.lengths.lock().unwrap_or_else(|e| e.into_inner());
        let moved: Vec<_> = lengths.keys().filter(|(k, _)| k == old).cloned().collect();
        for k in moved {
            if let Some(v) = lengths.remove(&k) {
                lengths.insert((new.clone(), k.1), v);
            }
        }
        let mut handles = self.handles.lock().unwrap_or_else(|e| e.into_inner());
        for h in handles.values_mut() {
            if &h.node.key() == old {
                h.node.fid = afs_proto::types::Fid::new(new.volume, new.vnode, new.unique);
            }
        }
    }

    /// Drops changes the fileserver refused for good: their chunks go, the
    /// file shows the server's contents again, and the writer's later
    /// closes report the refusal. Nothing of them was ever shown to
    /// another uid.
    async fn drop_refused(
        &self,
        node: &NodeRef,
        who: &Identity,
        f: &mut OpenFile,
        e: &Error,
    ) -> Result<()> {
        let key = node.key();
        let dv = local_dv(who.uid);
        let ops = f
            .dirty
            .iter()
            .map(|&index| Op::DeleteChunk {
                fid: key.clone(),
                data_version: dv,
                index,
            })
            .collect();
        self.store.apply(unlogged(ops))?;
        tracing::warn!(
            cell = %node.cell,
            fid = ?node.fid,
            uid = who.uid,
            bytes = f.length,
            reason = %e,
            "the fileserver refused the store: the changes are dropped"
        );
        // The server's state is the base again; a file removed meanwhile
        // keeps the last one known.
        self.valid.forget(&key);
        let (length, dv) = match self.valid.valid_status(node, who).await {
            Ok(st) => (st.length, st.data_version),
            Err(_) => (f.server_len, f.base_dv),
        };
        let writers = f.writers;
        *f = OpenFile::new(length, dv);
        f.writers = writers;
        f.refused = Some(e.errno());
        self.note_length(&key, who.uid, length);
        Ok(())
    }
}

/// Refusals a retry will not cure: the changes cannot be stored as this
/// user, ever (a network failure, by contrast, keeps them for the next
/// close).
fn lasting(e: &Error) -> bool {
    matches!(
        e.errno(),
        libc::EACCES
            | libc::EPERM
            | libc::ENOENT
            | libc::ESTALE
            | libc::EDQUOT
            | libc::ENOSPC
            | libc::EFBIG
            | libc::EROFS
            | libc::EISDIR
    )
}

fn refused(errno: i32) -> Error {
    Error::Shared {
        errno,
        msg: "the fileserver refused the changes; they were dropped".into(),
    }
}
