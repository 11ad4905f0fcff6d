//! Conflicts: offline changes the server's state did not allow, kept
//! rather than lost.
//!
//! When replay finds that a logged change no longer fits the server (the
//! file changed there too, the name was taken, the object went, the server
//! refused), the change and every later change that depends on it move out
//! of the log into one [`ConflictRecord`], in one batch:
//! - the local data (the writer's unstored chunks) moves under a key of
//!   the conflict's own, dirty, so it is never evicted and later writes
//!   cannot touch it; so does the base data when the cache held it;
//! - the local views of the objects named are dropped: the path shows the
//!   server's version from then on.
//!
//! Nothing is discarded: `afsd-rs conflicts` lists the conflict with its
//! kind, path, uid and the three data versions, and `afsd-rs conflict cat`
//! gives the local (or base) bytes. Resolving them is the next step.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use afs_proto::types::Fid;
use cache::{FidKey, Op, Store};
use serde::{Deserialize, Serialize};

use crate::journal::{LogRecord, SPACE_CONFLICT};
use crate::mutation::Change;
use crate::writes::local_dv;
use crate::{Error, Result};

/// Vnode of the keys conflict data is kept under (the uniquifier is the
/// conflict's id): beside the local fids, never a server's.
pub(crate) const CONFLICT_VNODE: u32 = 0xFFFF_FFFD;
/// Data versions of the kept data under a conflict key.
pub(crate) const KEPT_LOCAL: u64 = 0;
pub(crate) const KEPT_BASE: u64 = 1;

/// What kind of disagreement a conflict is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConflictKind {
    /// Both sides changed the file's data.
    UpdateUpdate,
    /// We changed it; the server's copy was removed.
    UpdateRemove,
    /// We removed it; the server's copy was changed.
    RemoveUpdate,
    /// A name we bound (create, link, rename) is bound to something else
    /// on the server, or one we rely on moved.
    NameName,
    /// The same attribute changed on both sides.
    Attr,
    /// The server refused the change (rights, quota, a non-empty
    /// directory...).
    Refused,
    /// Depends on a change that became a conflict.
    Dependent,
}

impl ConflictKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            ConflictKind::UpdateUpdate => "update/update",
            ConflictKind::UpdateRemove => "update/remove",
            ConflictKind::RemoveUpdate => "remove/update",
            ConflictKind::NameName => "name/name",
            ConflictKind::Attr => "attr",
            ConflictKind::Refused => "refused",
            ConflictKind::Dependent => "dependent",
        }
    }
}

/// A conflict as kept in the cache.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct ConflictRecord {
    pub id: u64,
    pub kind: ConflictKind,
    pub reason: String,
    /// Where the object was, as far as the cache could tell.
    pub path: String,
    /// The object the conflict is about.
    pub fid: Fid,
    pub base_dv: Option<u64>,
    pub local_dv: Option<u64>,
    pub server_dv: Option<u64>,
    /// Bytes of local data kept, when the change had data.
    pub local_len: Option<u64>,
    /// Bytes of base data kept, when the cache held it.
    pub base_len: Option<u64>,
    pub detected: u64,
    /// The records moved out of the log, first the one in conflict.
    pub records: Vec<LogRecord>,
}

/// What `afsd-rs conflicts` shows of one conflict.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConflictInfo {
    pub id: u64,
    pub kind: String,
    pub cell: String,
    pub volume: u32,
    pub path: String,
    pub fid: (u32, u32, u32),
    pub uid: u32,
    /// The change that met the conflict (store, create, unlink...).
    pub change: String,
    pub base_dv: Option<u64>,
    pub local_dv: Option<u64>,
    pub server_dv: Option<u64>,
    pub local_bytes: Option<u64>,
    pub detected: u64,
    pub reason: String,
    /// How many logged changes the conflict holds.
    pub changes: usize,
}

/// Which kept version to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConflictSide {
    Local,
    Base,
    /// What the path shows now (read through the client, as its user).
    Server,
}

impl ConflictRecord {
    pub(crate) fn info(&self) -> ConflictInfo {
        let first = &self.records[0];
        ConflictInfo {
            id: self.id,
            kind: self.kind.as_str().to_string(),
            cell: first.m.cell.clone(),
            volume: first.m.volume,
            path: self.path.clone(),
            fid: (self.fid.volume, self.fid.vnode, self.fid.unique),
            uid: first.m.uid,
            change: first.m.change.kind().to_string(),
            base_dv: self.base_dv,
            local_dv: self.local_dv,
            server_dv: self.server_dv,
            local_bytes: self.local_len,
            detected: self.detected,
            reason: self.reason.clone(),
            changes: self.records.len(),
        }
    }

    fn cell(&self) -> &str {
        &self.records[0].m.cell
    }

    /// The key the kept data lives under.
    pub(crate) fn kept_key(&self) -> FidKey {
        FidKey::new(self.cell(), self.fid.volume, CONFLICT_VNODE, self.id as u32)
    }
}

/// The conflicts of this cache.
pub(crate) struct Conflicts {
    store: Arc<dyn Store>,
    next_id: AtomicU64,
    /// Objects of conflicts just made whose server status replay fetches
    /// before it ends: the path shows the server's version, and a
    /// resolution made offline later must be decided against it.
    pub(crate) to_fetch: std::sync::Mutex<Vec<(String, Fid, u32)>>,
}

impl Conflicts {
    pub(crate) fn load(store: Arc<dyn Store>) -> Result<Conflicts> {
        let max = store
            .records(SPACE_CONFLICT)?
            .iter()
            .filter_map(|(k, _)| Some(u64::from_be_bytes(k.as_slice().try_into().ok()?)))
            .max()
            .unwrap_or(0);
        Ok(Conflicts {
            store,
            next_id: AtomicU64::new(max + 1),
            to_fetch: std::sync::Mutex::new(Vec::new()),
        })
    }

    pub(crate) fn all(&self) -> Vec<ConflictRecord> {
        self.store
            .records(SPACE_CONFLICT)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(_, v)| bincode::deserialize(&v).ok())
            .collect()
    }

    pub(crate) fn get(&self, id: u64) -> Option<ConflictRecord> {
        self.store
            .get_record(SPACE_CONFLICT, &id.to_be_bytes())
            .ok()
            .flatten()
            .and_then(|v| bincode::deserialize(&v).ok())
    }

    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::SeqCst)
    }

    /// The ops that keep a conflict: its record, and its data moved under
    /// its own key (local chunks of each store it holds, and the base
    /// chunks of the object when held).
    pub(crate) fn keep_ops(&self, c: &mut ConflictRecord, base_dv: Option<u64>) -> Vec<Op> {
        let mut ops = Vec::new();
        let kept = c.kept_key();
        for r in &c.records {
            if let Change::StoreData { fid, data } = &r.m.change {
                let key = FidKey::new(&r.m.cell, fid.volume, fid.vnode, fid.unique);
                let dv = local_dv(r.m.uid);
                for (cdv, idx, _) in self.store.dirty_chunks(&key) {
                    if cdv == dv {
                        ops.push(Op::MoveChunkTo {
                            from: key.clone(),
                            from_dv: dv,
                            index: idx,
                            to: kept.clone(),
                            to_dv: KEPT_LOCAL,
                            dirty: true,
                        });
                    }
                }
                c.local_len = Some(data.length);
                if let Some(bdv) = base_dv {
                    let mut blen = 0;
                    for (cdv, idx, size) in self.store.dirty_chunks(&key) {
                        if cdv == bdv {
                            ops.push(Op::MoveChunkTo {
                                from: key.clone(),
                                from_dv: bdv,
                                index: idx,
                                to: kept.clone(),
                                to_dv: KEPT_BASE,
                                dirty: true,
                            });
                            blen += size;
                        }
                    }
                    if blen > 0 {
                        c.base_len = Some(blen);
                    }
                }
            }
        }
        ops.push(Op::PutRecord {
            space: SPACE_CONFLICT,
            key: c.id.to_be_bytes().to_vec(),
            value: bincode::serialize(&*c).unwrap_or_default(),
        });
        ops
    }

    /// The bytes of a kept version. The local one is the file as the
    /// writer had it: its dirty chunks over the base contents.
    pub(crate) fn data(&self, c: &ConflictRecord, side: ConflictSide, cs: u64) -> Result<Vec<u8>> {
        let kept = c.kept_key();
        let (dv, len) = match side {
            ConflictSide::Local => (KEPT_LOCAL, c.local_len),
            ConflictSide::Base => (KEPT_BASE, c.base_len),
            ConflictSide::Server => {
                return Err(Error::Invalid(
                    "the server's version is read through the client".into(),
                ))
            }
        };
        let Some(len) = len else {
            return Err(Error::Offline(format!(
                "conflict {}: no {} data was kept",
                c.id,
                match side {
                    ConflictSide::Local => "local",
                    _ => "base",
                }
            )));
        };
        let store_rec = c.records.iter().find_map(|r| match &r.m.change {
            Change::StoreData { data, .. } => Some(data.clone()),
            _ => None,
        });
        let mut out = Vec::with_capacity(len as usize);
        let chunks = len.div_ceil(cs.max(1));
        for idx in 0..chunks {
            let start = out.len();
            let want = (len - idx * cs).min(cs) as usize;
            let mine = match (&store_rec, side) {
                (Some(d), ConflictSide::Local) => d.chunks.contains(&idx),
                _ => true,
            };
            if mine {
                if let Some(b) = self.store.get_chunk_range(&kept, dv, idx, 0, want)? {
                    out.extend_from_slice(&b);
                }
            } else {
                // An unchanged chunk of the local version is the base's,
                // up to the old contents still in force.
                let base_len = store_rec.as_ref().map_or(0, |d| d.base_len);
                let upto = base_len.saturating_sub(idx * cs).min(want as u64) as usize;
                if upto > 0 {
                    if let Some(b) = self.store.get_chunk_range(&kept, KEPT_BASE, idx, 0, upto)? {
                        out.extend_from_slice(&b);
                    }
                }
            }
            out.resize(start + want, 0);
        }
        Ok(out)
    }
}
