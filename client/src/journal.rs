//! The change log of disconnected operation: every change made while a
//! volume cannot take it at once, persistent, in order, per volume.
//!
//! A [`LogRecord`] is a [`Mutation`] (the self-contained change record
//! every change already is) with its place in the log, its replay state and
//! what the local edit decided (the fid a create made, the object a remove
//! took away). Records are written in the same store batch as the change's
//! local effect on the cache, synced to disk: what a user was told succeeded
//! is on disk, and the log never names an effect that is not.
//!
//! The journal also keeps:
//! - the *base* of every object changed offline: its status and listing as
//!   the server last gave them, captured before the first offline change,
//!   with its cached data held in the cache (never evicted) until the last
//!   change to the object is on the server or in a conflict;
//! - which fids have unreplayed changes ([`Pending`]): the cache manager
//!   serves those from their local state, whatever the server says, until
//!   replay is done with them.
//!
//! Compaction happens as records are logged (see `local.rs`): records that
//! cancel out are deleted in the batch that would have added the last one.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use afs_proto::types::Fid;
use cache::{Batch, DirRecord, FidKey, Op, StatusRecord, Store};
use serde::{Deserialize, Serialize};

use crate::mutation::{Change, Mutation};
use crate::Result;

/// Record spaces of the client in the cache ([`Op::PutRecord`]).
pub(crate) const SPACE_LOG: u8 = b'l';
pub(crate) const SPACE_BASE: u8 = b'b';
pub(crate) const SPACE_RIGHTS: u8 = b'r';
pub(crate) const SPACE_CONFLICT: u8 = b'x';
pub(crate) const SPACE_VOLUME: u8 = b'v';

/// Vnode numbers of objects made offline, as Coda chooses them: no
/// fileserver hands out vnode indexes this high, and the parity (odd for
/// directories) is AFS's. The uniquifier comes from a persistent counter.
pub(crate) const LOCAL_DIR_VNODE: u32 = 0xFFFF_FFFF;
pub(crate) const LOCAL_FILE_VNODE: u32 = 0xFFFF_FFFE;

/// True for a fid made offline, not yet known to any server.
pub(crate) fn is_local(fid: Fid) -> bool {
    fid.vnode >= LOCAL_FILE_VNODE
}

/// Where a record is in its life.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum RecState {
    /// A StoreData of a file a descriptor still writes: its data grows
    /// until the close makes it Pending. Kept so that writes survive a
    /// crash of the daemon before the close.
    Open,
    /// Waiting for replay.
    Pending,
    /// Being sent, or sent without an answer recorded: the server may have
    /// applied it. `pre` holds the data versions of the objects named,
    /// just before the send, for settling it by looking.
    InFlight { pre: Vec<(Fid, u64)> },
}

/// One logged change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LogRecord {
    pub seq: u64,
    pub state: RecState,
    /// Unix seconds of the change (sent as its modification time).
    pub time: u64,
    pub m: Mutation,
    /// The object a create made, under its local fid (until replayed).
    pub created: Option<Fid>,
    /// The object a remove (or a rename over it) took away, and its data
    /// version then: replay removes it only if the server still has it so.
    pub victim: Option<(Fid, u64)>,
    /// The object a rename moves.
    pub moved: Option<Fid>,
    /// Where the change happened, as the cache showed it then (for
    /// messages and conflicts).
    pub path: String,
}

impl LogRecord {
    /// Every fid the record names.
    pub(crate) fn fids(&self) -> Vec<Fid> {
        let mut v = self.m.change.dirs();
        match &self.m.change {
            Change::StoreStatus { fid, .. }
            | Change::StoreData { fid, .. }
            | Change::StoreAcl { fid, .. } => v.push(*fid),
            Change::Link { existing, .. } => v.push(*existing),
            _ => {}
        }
        v.extend(self.created);
        v.extend(self.victim.map(|(f, _)| f));
        v.extend(self.moved);
        v.sort_by_key(|f| (f.vnode, f.unique));
        v.dedup();
        v
    }

    /// The bytes replay will send.
    pub(crate) fn bytes(&self) -> u64 {
        match &self.m.change {
            Change::StoreData { data, .. } => data.length,
            _ => 0,
        }
    }

    /// Replaces fid `old` by `new` everywhere in the record.
    pub(crate) fn rekey(&mut self, old: Fid, new: Fid) -> bool {
        let mut changed = false;
        let mut fix = |f: &mut Fid| {
            if *f == old {
                *f = new;
                changed = true;
            }
        };
        match &mut self.m.change {
            Change::CreateFile { dir, .. }
            | Change::MakeDir { dir, .. }
            | Change::Symlink { dir, .. }
            | Change::RemoveFile { dir, .. }
            | Change::RemoveDir { dir, .. } => fix(dir),
            Change::Link { dir, existing, .. } => {
                fix(dir);
                fix(existing);
            }
            Change::Rename {
                from_dir, to_dir, ..
            } => {
                fix(from_dir);
                fix(to_dir);
            }
            Change::StoreStatus { fid, .. }
            | Change::StoreData { fid, .. }
            | Change::StoreAcl { fid, .. } => fix(fid),
        }
        for b in &mut self.m.base {
            fix(&mut b.fid);
            for (_, bound) in &mut b.bindings {
                if let Some(f) = bound {
                    fix(f);
                }
            }
        }
        if let Some(f) = &mut self.created {
            fix(f);
        }
        if let Some((f, _)) = &mut self.victim {
            fix(f);
        }
        if let Some(f) = &mut self.moved {
            fix(f);
        }
        changed
    }

    fn key(&self) -> Vec<u8> {
        log_key(&self.m.cell, self.m.volume, self.seq)
    }
}

/// Log keys sort by cell, volume, then sequence number.
fn log_key(cell: &str, volume: u32, seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(cell.len() + 13);
    k.push(cell.len().min(255) as u8);
    k.extend_from_slice(&cell.as_bytes()[..cell.len().min(255)]);
    k.extend_from_slice(&volume.to_be_bytes());
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// The key of a fid's record in a fid-keyed space (bases, rights).
pub(crate) fn fid_record_key(key: &FidKey) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.cell.len() + 13);
    k.push(key.cell.len().min(255) as u8);
    k.extend_from_slice(&key.cell.as_bytes()[..key.cell.len().min(255)]);
    k.extend_from_slice(&key.volume.to_be_bytes());
    k.extend_from_slice(&key.vnode.to_be_bytes());
    k.extend_from_slice(&key.unique.to_be_bytes());
    k
}

/// An object as it was before its first offline change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct BaseRecord {
    pub status: StatusRecord,
    pub dir: Option<DirRecord>,
}

/// Fids with changes not yet replayed, with the records that name them.
#[derive(Default)]
pub(crate) struct Pending {
    seqs: Mutex<HashMap<FidKey, BTreeSet<u64>>>,
}

impl Pending {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<FidKey, BTreeSet<u64>>> {
        self.seqs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// True when the object has unreplayed changes: it is served from its
    /// local state.
    pub(crate) fn contains(&self, key: &FidKey) -> bool {
        let c = self.lock();
        !c.is_empty() && c.contains_key(key)
    }

    /// How many records name the object.
    fn count(&self, key: &FidKey) -> usize {
        self.lock().get(key).map_or(0, |s| s.len())
    }

    /// The records that name the object.
    fn seqs(&self, key: &FidKey) -> Vec<u64> {
        self.lock()
            .get(key)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }

    fn add(&self, keys: &[FidKey], seq: u64) {
        let mut c = self.lock();
        for k in keys {
            c.entry(k.clone()).or_default().insert(seq);
        }
    }

    fn remove(&self, keys: &[FidKey], seq: u64) {
        let mut c = self.lock();
        for k in keys {
            if let Some(s) = c.get_mut(k) {
                s.remove(&seq);
                if s.is_empty() {
                    c.remove(k);
                }
            }
        }
    }
}

type VolKey = (String, u32);

/// The change log, in memory and in the store.
pub(crate) struct Journal {
    store: Arc<dyn Store>,
    pub(crate) pending: Arc<Pending>,
    recs: Mutex<BTreeMap<VolKey, BTreeMap<u64, LogRecord>>>,
    /// Data versions of the bases captured, by fid.
    bases: Mutex<HashMap<FidKey, u64>>,
    next_seq: AtomicU64,
    next_unique: AtomicU32,
}

fn keys_of(rec: &LogRecord) -> Vec<FidKey> {
    rec.fids()
        .into_iter()
        .map(|f| FidKey::new(&rec.m.cell, f.volume, f.vnode, f.unique))
        .collect()
}

impl Journal {
    /// Reads the log and the bases from the store.
    pub(crate) fn load(store: Arc<dyn Store>) -> Result<Journal> {
        let mut recs: BTreeMap<VolKey, BTreeMap<u64, LogRecord>> = BTreeMap::new();
        let pending = Arc::new(Pending::default());
        let mut max_seq = 0;
        for (k, v) in store.records(SPACE_LOG)? {
            let rec: LogRecord = bincode::deserialize(&v).map_err(|e| {
                crate::Error::Protocol(format!("change log record {k:?} unreadable: {e}"))
            })?;
            max_seq = max_seq.max(rec.seq);
            pending.add(&keys_of(&rec), rec.seq);
            recs.entry((rec.m.cell.clone(), rec.m.volume))
                .or_default()
                .insert(rec.seq, rec);
        }
        let mut bases = HashMap::new();
        for (k, v) in store.records(SPACE_BASE)? {
            if let (Some(key), Ok(b)) = (parse_fid_key(&k), bincode::deserialize::<BaseRecord>(&v))
            {
                bases.insert(key, b.status.data_version);
            }
        }
        let unique = store
            .get_meta("local-unique")?
            .and_then(|b| b.try_into().ok())
            .map(u32::from_be_bytes)
            .unwrap_or(0);
        Ok(Journal {
            store,
            pending,
            recs: Mutex::new(recs),
            bases: Mutex::new(bases),
            next_seq: AtomicU64::new(max_seq + 1),
            next_unique: AtomicU32::new(unique + 1),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<VolKey, BTreeMap<u64, LogRecord>>> {
        self.recs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// True when the volume has records not yet replayed.
    pub(crate) fn has_log(&self, cell: &str, volume: u32) -> bool {
        self.lock()
            .get(&(cell.to_string(), volume))
            .is_some_and(|m| !m.is_empty())
    }

    /// The volume's records, in order.
    pub(crate) fn records(&self, cell: &str, volume: u32) -> Vec<LogRecord> {
        self.lock()
            .get(&(cell.to_string(), volume))
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// One record.
    pub(crate) fn get(&self, cell: &str, volume: u32, seq: u64) -> Option<LogRecord> {
        self.lock()
            .get(&(cell.to_string(), volume))
            .and_then(|m| m.get(&seq).cloned())
    }

    /// Volumes with records.
    pub(crate) fn volumes(&self) -> Vec<VolKey> {
        self.lock()
            .iter()
            .filter(|(_, m)| !m.is_empty())
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Records and bytes to send, per volume.
    pub(crate) fn totals(&self, cell: &str, volume: u32) -> (u64, u64) {
        self.lock()
            .get(&(cell.to_string(), volume))
            .map(|m| (m.len() as u64, m.values().map(|r| r.bytes()).sum()))
            .unwrap_or((0, 0))
    }

    /// The records that name an object, in order.
    pub(crate) fn records_of(&self, cell: &str, fid: Fid) -> Vec<LogRecord> {
        let key = FidKey::new(cell, fid.volume, fid.vnode, fid.unique);
        let seqs = self.pending.seqs(&key);
        if seqs.is_empty() {
            return Vec::new();
        }
        let recs = self.lock();
        let Some(m) = recs.get(&(cell.to_string(), fid.volume)) else {
            return Vec::new();
        };
        seqs.iter().filter_map(|s| m.get(s).cloned()).collect()
    }

    /// Every record of every volume that matches.
    pub(crate) fn find(&self, f: impl Fn(&LogRecord) -> bool) -> Vec<LogRecord> {
        self.lock()
            .values()
            .flat_map(|m| m.values())
            .filter(|r| f(r))
            .cloned()
            .collect()
    }

    /// A new record (not yet committed) with the next sequence number.
    pub(crate) fn new_record(&self, m: Mutation, state: RecState) -> LogRecord {
        LogRecord {
            seq: self.next_seq.fetch_add(1, Ordering::SeqCst),
            state,
            time: crate::status::now_secs(),
            m,
            created: None,
            victim: None,
            moved: None,
            path: String::new(),
        }
    }

    /// A fid for an object made offline; the counter is saved with `ops`.
    pub(crate) fn new_fid(&self, volume: u32, dir: bool, ops: &mut Vec<Op>) -> Fid {
        let unique = self.next_unique.fetch_add(1, Ordering::SeqCst);
        ops.push(Op::PutMeta(
            "local-unique".into(),
            unique.to_be_bytes().to_vec(),
        ));
        let vnode = if dir {
            LOCAL_DIR_VNODE
        } else {
            LOCAL_FILE_VNODE
        };
        Fid::new(volume, vnode, unique)
    }

    /// The base of `key` has been captured.
    pub(crate) fn has_base(&self, key: &FidKey) -> bool {
        self.bases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(key)
    }

    /// The base of an object changed offline.
    pub(crate) fn base(&self, key: &FidKey) -> Option<BaseRecord> {
        self.store
            .get_record(SPACE_BASE, &fid_record_key(key))
            .ok()
            .flatten()
            .and_then(|v| bincode::deserialize(&v).ok())
    }

    /// The ops that capture the base of an object at its first offline
    /// change: its status and listing, and its cached data held.
    pub(crate) fn base_ops(&self, key: &FidKey, base: BaseRecord, ops: &mut Vec<Op>) {
        if self.has_base(key) || is_local(Fid::new(key.volume, key.vnode, key.unique)) {
            return;
        }
        ops.push(Op::Hold {
            fid: key.clone(),
            data_version: base.status.data_version,
        });
        ops.push(Op::PutRecord {
            space: SPACE_BASE,
            key: fid_record_key(key),
            value: bincode::serialize(&base).unwrap_or_default(),
        });
    }

    /// Writes `ops` with records added or replaced (`puts`) and removed
    /// (`deletes`, by volume and seq), in one batch: synced to disk when
    /// `sync`, else through the store's log only. Bases of objects left
    /// without records are released in the same batch.
    pub(crate) fn commit(
        &self,
        mut ops: Vec<Op>,
        puts: Vec<LogRecord>,
        deletes: Vec<LogRecord>,
        sync: bool,
    ) -> Result<()> {
        let mut recs = self.lock();
        // What the counts become, to release bases in this batch.
        let mut delta: HashMap<FidKey, i64> = HashMap::new();
        let mut replaced = Vec::new();
        for d in &deletes {
            if let Some(old) = recs
                .get(&(d.m.cell.clone(), d.m.volume))
                .and_then(|m| m.get(&d.seq))
            {
                for k in keys_of(old) {
                    *delta.entry(k).or_default() -= 1;
                }
                ops.push(Op::DeleteRecord {
                    space: SPACE_LOG,
                    key: old.key(),
                });
            }
        }
        for p in &puts {
            if let Some(old) = recs
                .get(&(p.m.cell.clone(), p.m.volume))
                .and_then(|m| m.get(&p.seq))
            {
                for k in keys_of(old) {
                    *delta.entry(k).or_default() -= 1;
                }
                replaced.push(old.clone());
            }
            for k in keys_of(p) {
                *delta.entry(k).or_default() += 1;
            }
            ops.push(Op::PutRecord {
                space: SPACE_LOG,
                key: p.key(),
                value: bincode::serialize(p).unwrap_or_default(),
            });
        }
        let mut released = Vec::new();
        {
            let bases = self.bases.lock().unwrap_or_else(|e| e.into_inner());
            for (k, d) in &delta {
                let now = self.pending.count(k) as i64;
                if now + d <= 0 {
                    if let Some(dv) = bases.get(k) {
                        ops.push(Op::Release {
                            fid: k.clone(),
                            data_version: *dv,
                        });
                        ops.push(Op::DeleteRecord {
                            space: SPACE_BASE,
                            key: fid_record_key(k),
                        });
                        released.push(k.clone());
                    }
                }
            }
        }
        let new_bases: Vec<(FidKey, u64)> = ops
            .iter()
            .filter_map(|op| match op {
                Op::PutRecord {
                    space: SPACE_BASE,
                    key,
                    value,
                } => Some((
                    parse_fid_key(key)?,
                    bincode::deserialize::<BaseRecord>(value)
                        .ok()?
                        .status
                        .data_version,
                )),
                _ => None,
            })
            .collect();
        let mut batch = if sync { Batch::synced() } else { Batch::new() };
        batch.ops = ops;
        self.store.apply(batch)?;
        // The store has it: now memory.
        for d in &deletes {
            if let Some(m) = recs.get_mut(&(d.m.cell.clone(), d.m.volume)) {
                if let Some(old) = m.remove(&d.seq) {
                    self.pending.remove(&keys_of(&old), old.seq);
                }
            }
        }
        for old in &replaced {
            self.pending.remove(&keys_of(old), old.seq);
        }
        for p in puts {
            self.pending.add(&keys_of(&p), p.seq);
            recs.entry((p.m.cell.clone(), p.m.volume))
                .or_default()
                .insert(p.seq, p);
        }
        recs.retain(|_, m| !m.is_empty());
        let mut bases = self.bases.lock().unwrap_or_else(|e| e.into_inner());
        for k in released {
            bases.remove(&k);
        }
        for (k, dv) in new_bases {
            bases.entry(k).or_insert(dv);
        }
        Ok(())
    }
}

/// The fid a [`fid_record_key`] names.
pub(crate) fn parse_fid_key(k: &[u8]) -> Option<FidKey> {
    let n = *k.first()? as usize;
    let cell = std::str::from_utf8(k.get(1..1 + n)?).ok()?;
    let rest = k.get(1 + n..)?;
    if rest.len() != 12 {
        return None;
    }
    let w =
        |at: usize| -> Option<u32> { Some(u32::from_be_bytes(rest[at..at + 4].try_into().ok()?)) };
    Some(FidKey::new(cell, w(0)?, w(4)?, w(8)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mutation::BaseState;

    fn rec(j: &Journal, change: Change) -> LogRecord {
        j.new_record(
            Mutation {
                cell: "c".into(),
                volume: 7,
                uid: 1,
                vice_id: Some(2),
                base: vec![BaseState {
                    fid: Fid::new(7, 1, 1),
                    data_version: 3,
                    length: 2048,
                    bindings: vec![],
                }],
                change,
            },
            RecState::Pending,
        )
    }

    #[test]
    fn records_survive_a_reload_and_bases_go_with_the_last_record() {
        let store: Arc<dyn Store> = Arc::new(cache::MemoryStore::new());
        let j = Journal::load(store.clone()).unwrap();
        let dir = Fid::new(7, 1, 1);
        let mut ops = Vec::new();
        let f = j.new_fid(7, false, &mut ops);
        assert!(is_local(f));
        let mut r1 = rec(
            &j,
            Change::CreateFile {
                dir,
                name: b"a".to_vec(),
                mode: 0o644,
            },
        );
        r1.created = Some(f);
        let dkey = FidKey::new("c", 7, 1, 1);
        let st = StatusRecord {
            file_type: 2,
            length: 2048,
            data_version: 3,
            mode: 0o755,
            owner: 1,
            group: 0,
            link_count: 2,
            author: 1,
            client_modtime: 0,
            server_modtime: 0,
            parent_vnode: 1,
            parent_unique: 1,
            anonymous_access: 0,
            callback_expires: 0,
            fetched_at: 0,
        };
        j.base_ops(
            &dkey,
            BaseRecord {
                status: st,
                dir: None,
            },
            &mut ops,
        );
        j.commit(ops, vec![r1.clone()], vec![], true).unwrap();
        assert!(j.pending.contains(&dkey));
        assert!(j.has_log("c", 7));
        let again = Journal::load(store.clone()).unwrap();
        assert_eq!(again.records("c", 7), vec![r1.clone()]);
        assert!(again.has_base(&dkey));
        assert!(again
            .pending
            .contains(&FidKey::new("c", 7, f.vnode, f.unique)));
        let next = again.new_fid(7, true, &mut Vec::new());
        assert_ne!(next.unique, f.unique, "the counter survives");
        // The last record goes: the base goes with it.
        again.commit(vec![], vec![], vec![r1], true).unwrap();
        assert!(!again.has_log("c", 7));
        assert!(!again.pending.contains(&dkey));
        assert!(!again.has_base(&dkey));
        assert!(store.records(SPACE_BASE).unwrap().is_empty());
        assert!(store.records(SPACE_LOG).unwrap().is_empty());
    }

    #[test]
    fn rekey_replaces_a_local_fid_everywhere() {
        let store: Arc<dyn Store> = Arc::new(cache::MemoryStore::new());
        let j = Journal::load(store).unwrap();
        let local = Fid::new(7, LOCAL_DIR_VNODE, 5);
        let mut r = rec(
            &j,
            Change::Rename {
                from_dir: local,
                from_name: b"a".to_vec(),
                to_dir: Fid::new(7, 1, 1),
                to_name: b"b".to_vec(),
            },
        );
        r.moved = Some(Fid::new(7, LOCAL_FILE_VNODE, 6));
        assert!(r.rekey(local, Fid::new(7, 9, 9)));
        assert!(!r.fids().contains(&local));
        assert!(!r.rekey(local, Fid::new(7, 9, 9)));
    }
}
