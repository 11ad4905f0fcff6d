//! The executor of [`Mutation`] records: the single path every change
//! takes. It builds the request from the record alone, sends it as the
//! record's identity, and applies the server's reply to the cache: the new
//! status of every object touched and, when a directory's data version
//! moved by exactly our change, the listing edited in place with the
//! record's own local edit ([`Change::edit_dir`]).

use std::sync::Arc;

use afs_proto::fs as rpcs;
use afs_proto::types::{CallBack, FetchStatus, Fid};
use cache::{Batch, DirEntryRecord, FidKey, Op, StatusRecord, Store};

use crate::dirs::Dirs;
use crate::fileserver::FsReply;
use crate::identity::Identity;
use crate::inode::NodeRef;
use crate::journal::{Journal, RecState};
use crate::mutation::{Change, DataChange, Mutation};
use crate::openfile::OpenFile;
use crate::status::now_secs;
use crate::validate::Validator;
use crate::{Error, Result, Stats, VolType};

/// Most bytes sent in one StoreData64 call (the call is held in memory).
const STORE_PIECE: u64 = 8 << 20;

/// What executing a record produced.
#[derive(Default)]
pub(crate) struct Outcome {
    /// The object a create made, with its status.
    pub created: Option<(NodeRef, StatusRecord)>,
    /// The file's new status after a store.
    pub status: Option<StatusRecord>,
    /// The change was made in the cache and logged, not sent.
    pub logged: bool,
    /// Objects made offline whose every change cancelled out (their write
    /// state goes too).
    pub cancelled: Vec<FidKey>,
}

impl Outcome {
    pub(crate) fn none() -> Self {
        Outcome::default()
    }
}

/// What the cache held before a call, for applying its reply.
struct Prepared {
    start: u64,
    epoch: u64,
    /// The object the call is about (the directory of a name change).
    target: NodeRef,
    /// Last known statuses of the objects the reply updates.
    old: Vec<(Fid, Option<StatusRecord>)>,
    /// The entry a rename moves, from the cached source listing.
    moved: Option<DirEntryRecord>,
}

impl Prepared {
    fn old(&self, fid: Fid) -> Option<&StatusRecord> {
        self.old
            .iter()
            .find(|(f, _)| *f == fid)
            .and_then(|(_, s)| s.as_ref())
    }
}

/// Runs mutations against the fileserver and applies their results, or
/// makes them in the cache and logs them (`local.rs`).
pub(crate) struct Executor {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) stats: Arc<Stats>,
    pub(crate) valid: Arc<Validator>,
    pub(crate) dirs: Arc<Dirs>,
    pub(crate) journal: Arc<Journal>,
    /// Held while a change decides on the log's contents.
    pub(crate) log_lock: std::sync::Mutex<()>,
    chunk_size: u64,
}

/// The node a fid of a record names (changes happen in RW volumes only).
fn node_of(m: &Mutation, fid: Fid) -> NodeRef {
    NodeRef {
        cell: m.cell.clone(),
        fid,
        vol_type: VolType::Rw,
    }
}

impl Executor {
    pub(crate) fn new(
        store: Arc<dyn Store>,
        stats: Arc<Stats>,
        valid: Arc<Validator>,
        dirs: Arc<Dirs>,
        journal: Arc<Journal>,
        chunk_size: u64,
    ) -> Self {
        Executor {
            store,
            stats,
            valid,
            dirs,
            journal,
            log_lock: std::sync::Mutex::new(()),
            chunk_size,
        }
    }

    /// Sends `m` as `who` and applies the reply. `who` must be the record's
    /// identity (the caller resolved `m.uid`'s token).
    ///
    /// Three steps, kept apart: the request comes from the record alone
    /// ([`Change::request`]); it is sent; the reply is applied to the cache
    /// ([`Executor::apply`]), with the record's own local edit of listings
    /// ([`Change::edit_dir`]).
    pub(crate) async fn execute(&self, who: &Identity, m: &Mutation) -> Result<Outcome> {
        if self.must_log(&m.cell, m.volume) {
            return self.log_change(who, m, RecState::Pending, Vec::new(), true);
        }
        match self.send(who, m, 0, None).await {
            Err(e)
                if crate::connectivity::is_network(&e)
                    && !matches!(m.change, Change::StoreAcl { .. }) =>
            {
                // The fileserver went away with the call: the change may
                // have been applied or not. It is logged as sent, and
                // settled by looking at the server when it is back.
                tracing::warn!(
                    change = m.change.kind(),
                    "{e}; the change is logged and will be settled at reconnection"
                );
                let pre = m.base.iter().map(|b| (b.fid, b.data_version)).collect();
                self.log_change(who, m, RecState::InFlight { pre }, Vec::new(), true)
            }
            r => r,
        }
    }

    /// Sends `m` as `who` now and applies the reply (the online path, and
    /// replay's). A StoreData starts at piece `from_piece` (pieces already
    /// on the server are not sent twice). `moved` is the object a rename
    /// moves when the caller knows it (replay does: the log says, where the
    /// cached listing may bind the name to a later object).
    pub(crate) async fn send(
        &self,
        who: &Identity,
        m: &Mutation,
        from_piece: usize,
        moved: Option<Fid>,
    ) -> Result<Outcome> {
        tracing::debug!(change = m.change.kind(), cell = %m.cell, uid = m.uid, "executing");
        if let Change::StoreData { fid, data } = &m.change {
            let st = self
                .store_data(&node_of(m, *fid), who, data, from_piece)
                .await?;
            return Ok(Outcome {
                status: Some(st),
                ..Outcome::none()
            });
        }
        let call = m.change.request()?;
        let prep = self.prepare(m, moved);
        let reply = self.valid.send(&prep.target, who, call).await;
        if let Change::StoreAcl { fid, .. } = &m.change {
            // Whatever happened, rights learned in this volume may be
            // stale: they are fetched again at next use.
            self.valid.rights.break_volume(fid.volume);
        }
        let reply = reply.map_err(|e| match &m.change {
            // The fileserver says EEXIST for a non-empty directory, removed
            // or renamed over; Linux file systems say ENOTEMPTY (OpenAFS's
            // Linux client maps it too).
            Change::RemoveDir { .. } | Change::Rename { .. } if e.errno() == libc::EEXIST => {
                Error::NotEmpty
            }
            _ => e,
        })?;
        self.apply(who, m, &prep, reply)
    }

    /// What the cache says before the call: the clock, the break counter,
    /// the statuses of the objects the reply will update, and the entries a
    /// change relies on. Statuses of objects whose link count the change
    /// alters are dropped (fetched again at next use).
    fn prepare(&self, m: &Mutation, known_moved: Option<Fid>) -> Prepared {
        let target_fid = match &m.change {
            Change::StoreStatus { fid, .. } | Change::StoreAcl { fid, .. } => *fid,
            Change::StoreData { fid, .. } => *fid,
            other => other.dirs()[0],
        };
        let target = node_of(m, target_fid);
        let mut old = Vec::new();
        for fid in m.change.dirs().into_iter().chain([target_fid]) {
            let st = self.valid.statuses.known(&node_of(m, fid).key());
            old.push((fid, st));
        }
        let mut moved = None;
        let mut victims = Vec::new();
        match &m.change {
            Change::RemoveFile { name, .. } | Change::RemoveDir { name, .. } => {
                victims.extend(self.dirs.cached_entry(&target, name));
            }
            Change::Rename {
                from_name,
                to_dir,
                to_name,
                ..
            } => {
                moved = match known_moved {
                    Some(f) => Some(DirEntryRecord {
                        name: from_name.clone(),
                        vnode: f.vnode,
                        unique: f.unique,
                    }),
                    None => self.dirs.cached_entry(&target, from_name),
                };
                victims.extend(self.dirs.cached_entry(&node_of(m, *to_dir), to_name));
            }
            Change::Link { existing, .. } => {
                let st = self.valid.statuses.known(&node_of(m, *existing).key());
                old.push((*existing, st));
            }
            _ => {}
        }
        for e in victims {
            let key = target
                .with_fid(Fid::new(target.fid.volume, e.vnode, e.unique))
                .key();
            self.valid.statuses.break_fid(&key);
        }
        Prepared {
            start: now_secs(),
            epoch: self.valid.statuses.epoch(),
            target,
            old,
            moved,
        }
    }

    /// Applies the server's reply to record `m` to the cache.
    fn apply(&self, who: &Identity, m: &Mutation, p: &Prepared, reply: FsReply) -> Result<Outcome> {
        let (start, epoch) = (p.start, p.epoch);
        let dir_change = |dir: Fid, st: &FetchStatus| {
            let node = node_of(m, dir);
            self.dirs
                .apply_change(&node, who, st, p.old(dir), start, epoch, |entries| {
                    m.change.edit_dir(dir, entries, None, p.moved.as_ref())
                })
        };
        let created = |fid: Fid, st: &FetchStatus, dir_st: &FetchStatus, cb: &CallBack| {
            let dir = p.target.clone();
            let node = dir.with_fid(fid);
            let mut batch = Batch::clean();
            if matches!(m.change, Change::MakeDir { .. }) {
                // A directory just made holds `.` and `..`: known without
                // fetching it (and so usable offline at once).
                batch.push(Op::PutDir(
                    node.key(),
                    crate::dirs::empty_listing(fid, dir.fid, st.data_version),
                ));
            }
            let rec = self
                .valid
                .record_reply(&node.key(), who, st, cb, start, epoch, batch)?;
            self.dirs
                .apply_change(&dir, who, dir_st, p.old(dir.fid), start, epoch, |entries| {
                    m.change.edit_dir(dir.fid, entries, Some(fid), None)
                })?;
            Ok::<_, Error>(Outcome {
                created: Some((node, rec)),
                ..Outcome::none()
            })
        };
        match (&m.change, reply) {
            (_, FsReply::CreateFile(r)) | (_, FsReply::MakeDir(r)) => {
                created(r.fid, &r.status, &r.dir_status, &r.callback)
            }
            // Symlink replies carry no callback: the status is revalidated
            // at next use.
            (_, FsReply::Symlink(r)) => {
                created(r.fid, &r.status, &r.dir_status, &CallBack::default())
            }
            (Change::Link { dir, existing, .. }, FsReply::Link(r)) => {
                let target = node_of(m, *existing);
                self.valid.apply_own(
                    &target,
                    who,
                    &r.status,
                    p.old(*existing),
                    start,
                    epoch,
                    Batch::clean(),
                )?;
                dir_change(*dir, &r.dir_status)?;
                Ok(Outcome::none())
            }
            (Change::RemoveFile { dir, .. }, FsReply::RemoveFile(r))
            | (Change::RemoveDir { dir, .. }, FsReply::RemoveDir(r)) => {
                dir_change(*dir, &r.status)?;
                Ok(Outcome::none())
            }
            (
                Change::Rename {
                    from_dir, to_dir, ..
                },
                FsReply::Rename(r),
            ) => {
                if from_dir == to_dir {
                    dir_change(*from_dir, &r.new_dir_status)?;
                } else {
                    dir_change(*from_dir, &r.old_dir_status)?;
                    dir_change(*to_dir, &r.new_dir_status)?;
                    // A moved directory's ".." changed.
                    if let Some(e) = &p.moved {
                        let key = node_of(m, Fid::new(from_dir.volume, e.vnode, e.unique)).key();
                        self.valid.statuses.break_fid(&key);
                    }
                }
                Ok(Outcome::none())
            }
            (Change::StoreStatus { fid, .. }, FsReply::StoreStatus(r)) => {
                let st = self.valid.apply_own(
                    &node_of(m, *fid),
                    who,
                    &r.status,
                    p.old(*fid),
                    start,
                    epoch,
                    Batch::clean(),
                )?;
                Ok(Outcome {
                    status: Some(st),
                    ..Outcome::none()
                })
            }
            (Change::StoreAcl { .. }, FsReply::StoreAcl(_)) => Ok(Outcome::none()),
            (change, reply) => Err(Error::Protocol(format!(
                "reply {reply:?} to a {} change",
                change.kind()
            ))),
        }
    }

    /// The bytes one StoreData64 of a store sends: its dirty chunks from
    /// the cache, each zero-padded to its length.
    pub(crate) fn piece_bytes(
        &self,
        key: &FidKey,
        change: &DataChange,
        piece: &crate::openfile::StorePiece,
    ) -> Result<Vec<u8>> {
        let mut data = Vec::with_capacity(piece.len() as usize);
        for &(idx, len) in &piece.chunks {
            let chunk = self
                .store
                .get_chunk_range(key, change.local_dv, idx, 0, len as usize)?
                .ok_or_else(|| {
                    Error::Protocol(format!("unstored chunk {idx} of {key:?} left the cache"))
                })?;
            let at = data.len();
            data.extend_from_slice(&chunk);
            data.resize(at + len as usize, 0);
        }
        Ok(data)
    }

    /// The StoreData64 calls a logged store takes, in order.
    pub(crate) fn plan(&self, change: &DataChange) -> Vec<crate::openfile::StorePiece> {
        OpenFile::from_change(change).store_plan(self.chunk_size, STORE_PIECE)
    }

    /// The clock, break counter and last known status before a call.
    fn begin(&self, key: &FidKey) -> (u64, u64, Option<StatusRecord>) {
        (
            now_secs(),
            self.valid.statuses.epoch(),
            self.valid.statuses.known(key),
        )
    }

    /// Stores a file's changes: its dirty chunks in runs, one StoreData64
    /// per run of at most [`STORE_PIECE`] bytes, with the new length. The
    /// stored chunks then become the cached data of the new data version,
    /// and so do the unchanged old chunks when the version moved by our
    /// calls alone; otherwise the rest is fetched again.
    ///
    /// The calls for one file go one after another: the fileserver holds
    /// the vnode's write lock for a whole StoreData64 (GetVolumePackage
    /// with WRITE_LOCK in viced's common_StoreData64), so a second call on
    /// the same file would only wait there. Different files store in
    /// parallel: every close is its own task on its own Rx call.
    async fn store_data(
        &self,
        node: &NodeRef,
        who: &Identity,
        change: &DataChange,
        from_piece: usize,
    ) -> Result<StatusRecord> {
        let key = node.key();
        let (start, epoch, old) = self.begin(&key);
        let cs = self.chunk_size;
        let f = OpenFile::from_change(change);
        let plan = f.store_plan(cs, STORE_PIECE);
        let mut last = None;
        for piece in plan.iter().skip(from_piece) {
            let data = self.piece_bytes(&key, change, piece)?;
            let status = afs_proto::types::StoreStatus {
                mask: afs_proto::types::store_mask::SET_MODTIME,
                client_modtime: now_secs() as u32,
                owner: 0,
                group: 0,
                unix_mode_bits: 0,
                seg_size: 0,
            };
            let call = rpcs::StoreData64 {
                fid: node.fid,
                status,
                pos: piece.pos,
                length: data.len() as u64,
                file_length: piece.file_length,
            };
            tracing::debug!(fid = ?node.fid, pos = piece.pos, len = data.len(), "StoreData64");
            let reply = self.valid.call_data(node, who, &call, &data).await?;
            Stats::add(&self.stats.bytes_stored, data.len() as u64);
            last = Some(reply.status);
        }
        let st = match last {
            Some(st) => st,
            // Every piece was on the server already (settled after a
            // crash): its status says where it is.
            None => {
                self.valid
                    .call(node, who, &rpcs::FetchStatus { fid: node.fid })
                    .await?
                    .status
            }
        };
        let ours_alone = st.data_version == f.base_dv + plan.len() as u64;
        let mut batch = Batch::clean();
        for &index in &f.dirty {
            let length = f.chunk_len(index, cs);
            if ours_alone && length > 0 {
                // A dirty chunk may end early (zeros follow, as sent); a
                // clean one holds exactly its part of the file.
                batch.push(Op::TruncateChunk {
                    fid: key.clone(),
                    data_version: change.local_dv,
                    index,
                    length,
                });
                batch.push(Op::MoveChunk {
                    fid: key.clone(),
                    index,
                    from_dv: change.local_dv,
                    to_dv: st.data_version,
                });
            } else {
                batch.push(Op::DeleteChunk {
                    fid: key.clone(),
                    data_version: change.local_dv,
                    index,
                });
            }
        }
        if ours_alone {
            for index in f.reusable_base_chunks(cs) {
                batch.push(Op::MoveChunk {
                    fid: key.clone(),
                    index,
                    from_dv: f.base_dv,
                    to_dv: st.data_version,
                });
            }
        }
        self.valid
            .apply_own(node, who, &st, old.as_ref(), start, epoch, batch)
    }

    /// Where an object is, for messages and conflicts: its path below the
    /// mount as the kernel last looked it up (`/.CELL/dir/file`), else
    /// `VOLUME:/dir/file` as far as the cached listings tell.
    pub(crate) fn path_of(&self, m: &Mutation, fid: Fid) -> String {
        let vol = self.valid.volume_name(&m.cell, fid.volume);
        let mut parts: Vec<String> = Vec::new();
        // A name the record itself gives.
        let (mut cur, leaf) = match &m.change {
            Change::CreateFile { dir, name, .. }
            | Change::MakeDir { dir, name, .. }
            | Change::Symlink { dir, name, .. }
            | Change::Link { dir, name, .. }
            | Change::RemoveFile { dir, name }
            | Change::RemoveDir { dir, name } => (*dir, Some(name.clone())),
            Change::Rename {
                to_dir, to_name, ..
            } => (*to_dir, Some(to_name.clone())),
            _ => (fid, None),
        };
        // Where the kernel last named it, when it did: the path users see.
        if let Some(p) = self.valid.path_in_mount(&node_of(m, cur).key()) {
            return match leaf {
                Some(l) => format!("/{p}/{}", String::from_utf8_lossy(&l)),
                None => format!("/{p}"),
            };
        }
        if let Some(l) = leaf {
            parts.push(String::from_utf8_lossy(&l).into_owned());
        }
        for _ in 0..64 {
            if cur.vnode == 1 {
                break;
            }
            let key = node_of(m, cur).key();
            let st = self
                .valid
                .statuses
                .known(&key)
                .or_else(|| self.store.get_status(&key).ok().flatten());
            let Some(st) = st else { break };
            let parent = Fid::new(cur.volume, st.parent_vnode, st.parent_unique);
            let Ok(Some(l)) = self.dirs.held(&node_of(m, parent)) else {
                break;
            };
            match l.entries.iter().find(|e| {
                e.vnode == cur.vnode && e.unique == cur.unique && e.name != b"." && e.name != b".."
            }) {
                Some(e) => parts.push(String::from_utf8_lossy(&e.name).into_owned()),
                None => break,
            }
            cur = parent;
        }
        parts.reverse();
        format!("{vol}:/{}", parts.join("/"))
    }
}
