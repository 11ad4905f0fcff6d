//! The executor of [`Mutation`] records: the single path every change
//! takes. It builds the request from the record alone, sends it as the
//! record's identity, and applies the server's reply to the cache: the new
//! status of every object touched and, when a directory's data version
//! moved by exactly our change, the listing edited in place with the
//! record's own local edit ([`Change::edit_dir`]).

use std::sync::Arc;

use afs_proto::fs as rpcs;
use afs_proto::types::{CallBack, Fid};
use cache::{Batch, FidKey, Op, StatusRecord, Store};

use crate::dirs::Dirs;
use crate::identity::Identity;
use crate::inode::NodeRef;
use crate::mutation::{create_status, name_str, Change, DataChange, Mutation};
use crate::openfile::OpenFile;
use crate::status::now_secs;
use crate::validate::Validator;
use crate::{Error, Result, Stats, VolType};

/// Most bytes sent in one StoreData64 call (the call is held in memory).
const STORE_PIECE: u64 = 8 << 20;

/// What executing a record produced.
pub(crate) struct Outcome {
    /// The object a create made, with its status.
    pub created: Option<(NodeRef, StatusRecord)>,
    /// The file's new status after a store.
    pub status: Option<StatusRecord>,
}

impl Outcome {
    fn none() -> Self {
        Outcome {
            created: None,
            status: None,
        }
    }
}

/// Runs mutations against the fileserver and applies their results.
pub(crate) struct Executor {
    store: Arc<dyn Store>,
    stats: Arc<Stats>,
    valid: Arc<Validator>,
    dirs: Arc<Dirs>,
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
        chunk_size: u64,
    ) -> Self {
        Executor {
            store,
            stats,
            valid,
            dirs,
            chunk_size,
        }
    }

    /// Sends `m` as `who` and applies the reply. `who` must be the record's
    /// identity (the caller resolved `m.uid`'s token).
    pub(crate) async fn execute(&self, who: &Identity, m: &Mutation) -> Result<Outcome> {
        tracing::debug!(change = m.change.kind(), cell = %m.cell, uid = m.uid, "executing");
        match &m.change {
            Change::CreateFile { dir, .. }
            | Change::MakeDir { dir, .. }
            | Change::Symlink { dir, .. } => self.create(who, m, &node_of(m, *dir)).await,
            Change::Link { dir, existing, .. } => {
                self.link(who, m, &node_of(m, *dir), *existing).await
            }
            Change::RemoveFile { dir, name } | Change::RemoveDir { dir, name } => {
                self.remove(who, m, &node_of(m, *dir), name).await
            }
            Change::Rename {
                from_dir, to_dir, ..
            } => {
                self.rename(who, m, &node_of(m, *from_dir), &node_of(m, *to_dir))
                    .await
            }
            Change::StoreStatus { fid, attrs } => {
                let node = node_of(m, *fid);
                let (start, epoch, old) = self.begin(&node.key());
                let reply = self
                    .valid
                    .call(
                        &node,
                        who,
                        &rpcs::StoreStatus {
                            fid: *fid,
                            status: attrs.store_status(),
                        },
                    )
                    .await?;
                let st = self.valid.apply_own(
                    &node,
                    who,
                    &reply.status,
                    old.as_ref(),
                    start,
                    epoch,
                    Batch::clean(),
                )?;
                Ok(Outcome {
                    created: None,
                    status: Some(st),
                })
            }
            Change::StoreAcl { fid, acl } => {
                let node = node_of(m, *fid);
                let r = self
                    .valid
                    .call(
                        &node,
                        who,
                        &rpcs::StoreAcl {
                            fid: *fid,
                            acl: acl.clone(),
                        },
                    )
                    .await;
                // Whatever happened, rights learned in this volume may be
                // stale: they are fetched again at next use.
                self.valid.rights.break_volume(fid.volume);
                r?;
                Ok(Outcome::none())
            }
            Change::StoreData { fid, data } => {
                let node = node_of(m, *fid);
                let st = self.store_data(&node, who, data).await?;
                Ok(Outcome {
                    created: None,
                    status: Some(st),
                })
            }
        }
    }

    /// The clock, break counter and last known status before a call.
    fn begin(&self, key: &FidKey) -> (u64, u64, Option<StatusRecord>) {
        (
            now_secs(),
            self.valid.statuses.epoch(),
            self.valid.statuses.known(key),
        )
    }

    async fn create(&self, who: &Identity, m: &Mutation, dir: &NodeRef) -> Result<Outcome> {
        let (start, epoch, old) = self.begin(&dir.key());
        let (fid, st, dir_st, cb) = match &m.change {
            Change::CreateFile { name, mode, .. } => {
                let r = self
                    .valid
                    .call(
                        dir,
                        who,
                        &rpcs::CreateFile {
                            dir: dir.fid,
                            name: name_str(name)?,
                            status: create_status(*mode),
                        },
                    )
                    .await?;
                (r.fid, r.status, r.dir_status, r.callback)
            }
            Change::MakeDir { name, mode, .. } => {
                let r = self
                    .valid
                    .call(
                        dir,
                        who,
                        &rpcs::MakeDir {
                            dir: dir.fid,
                            name: name_str(name)?,
                            status: create_status(*mode),
                        },
                    )
                    .await?;
                (r.fid, r.status, r.dir_status, r.callback)
            }
            Change::Symlink { name, target, .. } => {
                let t = String::from_utf8(target.clone())
                    .map_err(|_| Error::Invalid("symlink target must be UTF-8".into()))?;
                let r = self
                    .valid
                    .call(
                        dir,
                        who,
                        &rpcs::Symlink {
                            dir: dir.fid,
                            name: name_str(name)?,
                            target: t,
                            status: create_status(0o755),
                        },
                    )
                    .await?;
                // Symlink replies carry no callback: the status is
                // revalidated at next use.
                (r.fid, r.status, r.dir_status, CallBack::default())
            }
            _ => return Err(Error::Invalid("not a creating change".into())),
        };
        let node = dir.with_fid(fid);
        let rec = self
            .valid
            .apply_status(&node.key(), &st, &cb, start, epoch, Batch::clean())?;
        self.valid.learn_rights(&node.key(), who, &st, &rec, epoch);
        self.dirs
            .apply_change(dir, who, &dir_st, old.as_ref(), start, epoch, |entries| {
                m.change.edit_dir(dir.fid, entries, Some(fid), None)
            })?;
        Ok(Outcome {
            created: Some((node, rec)),
            status: None,
        })
    }

    async fn link(
        &self,
        who: &Identity,
        m: &Mutation,
        dir: &NodeRef,
        existing: Fid,
    ) -> Result<Outcome> {
        let Change::Link { name, .. } = &m.change else {
            return Err(Error::Invalid("not a link".into()));
        };
        let (start, epoch, old) = self.begin(&dir.key());
        let reply = self
            .valid
            .call(
                dir,
                who,
                &rpcs::Link {
                    dir: dir.fid,
                    name: name_str(name)?,
                    existing,
                },
            )
            .await?;
        let target = dir.with_fid(existing);
        let told = self.valid.statuses.known(&target.key());
        self.valid.apply_own(
            &target,
            who,
            &reply.status,
            told.as_ref(),
            start,
            epoch,
            Batch::clean(),
        )?;
        self.dirs.apply_change(
            dir,
            who,
            &reply.dir_status,
            old.as_ref(),
            start,
            epoch,
            |entries| m.change.edit_dir(dir.fid, entries, None, None),
        )?;
        Ok(Outcome::none())
    }

    async fn remove(
        &self,
        who: &Identity,
        m: &Mutation,
        dir: &NodeRef,
        name: &[u8],
    ) -> Result<Outcome> {
        let (start, epoch, old) = self.begin(&dir.key());
        let n = name_str(name)?;
        // The removed object's link count changes: forget its status.
        if let Some(e) = self.dirs.cached_entry(dir, name) {
            self.valid.statuses.break_fid(
                &dir.with_fid(Fid::new(dir.fid.volume, e.vnode, e.unique))
                    .key(),
            );
        }
        let reply = match &m.change {
            Change::RemoveDir { .. } => {
                self.valid
                    .call(
                        dir,
                        who,
                        &rpcs::RemoveDir {
                            dir: dir.fid,
                            name: n,
                        },
                    )
                    .await
                    .map_err(|e| {
                        // The fileserver says EEXIST for a non-empty
                        // directory; POSIX says ENOTEMPTY (OpenAFS's Linux
                        // client maps it too).
                        if e.errno() == libc::EEXIST {
                            Error::NotEmpty
                        } else {
                            e
                        }
                    })?
            }
            _ => {
                self.valid
                    .call(
                        dir,
                        who,
                        &rpcs::RemoveFile {
                            dir: dir.fid,
                            name: n,
                        },
                    )
                    .await?
            }
        };
        self.dirs.apply_change(
            dir,
            who,
            &reply.status,
            old.as_ref(),
            start,
            epoch,
            |entries| m.change.edit_dir(dir.fid, entries, None, None),
        )?;
        Ok(Outcome::none())
    }

    async fn rename(
        &self,
        who: &Identity,
        m: &Mutation,
        from: &NodeRef,
        to: &NodeRef,
    ) -> Result<Outcome> {
        let Change::Rename {
            from_name, to_name, ..
        } = &m.change
        else {
            return Err(Error::Invalid("not a rename".into()));
        };
        let (start, epoch, old_from) = self.begin(&from.key());
        let old_to = self.valid.statuses.known(&to.key());
        let moved = self.dirs.cached_entry(from, from_name);
        // An object renamed over goes away or loses a link.
        if let Some(e) = self.dirs.cached_entry(to, to_name) {
            self.valid.statuses.break_fid(
                &to.with_fid(Fid::new(to.fid.volume, e.vnode, e.unique))
                    .key(),
            );
        }
        let reply = self
            .valid
            .call(
                from,
                who,
                &rpcs::Rename {
                    old_dir: from.fid,
                    old_name: name_str(from_name)?,
                    new_dir: to.fid,
                    new_name: name_str(to_name)?,
                },
            )
            .await?;
        if from.fid == to.fid {
            self.dirs.apply_change(
                from,
                who,
                &reply.new_dir_status,
                old_from.as_ref(),
                start,
                epoch,
                |entries| m.change.edit_dir(from.fid, entries, None, moved.as_ref()),
            )?;
            return Ok(Outcome::none());
        }
        self.dirs.apply_change(
            from,
            who,
            &reply.old_dir_status,
            old_from.as_ref(),
            start,
            epoch,
            |entries| m.change.edit_dir(from.fid, entries, None, moved.as_ref()),
        )?;
        self.dirs.apply_change(
            to,
            who,
            &reply.new_dir_status,
            old_to.as_ref(),
            start,
            epoch,
            |entries| m.change.edit_dir(to.fid, entries, None, moved.as_ref()),
        )?;
        // A moved directory's ".." changed.
        if let Some(e) = moved {
            let key = from
                .with_fid(Fid::new(from.fid.volume, e.vnode, e.unique))
                .key();
            self.valid.statuses.break_fid(&key);
        }
        Ok(Outcome::none())
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
    ) -> Result<StatusRecord> {
        let key = node.key();
        let (start, epoch, old) = self.begin(&key);
        let cs = self.chunk_size;
        let f = OpenFile::from_change(change);
        let plan = f.store_plan(cs, STORE_PIECE);
        let mut last = None;
        for piece in &plan {
            let mut data = Vec::with_capacity(piece.len() as usize);
            for &(idx, len) in &piece.chunks {
                let chunk = self
                    .store
                    .get_chunk_range(&key, change.local_dv, idx, 0, len as usize)?
                    .ok_or_else(|| {
                        Error::Protocol(format!("unstored chunk {idx} of {key:?} left the cache"))
                    })?;
                let at = data.len();
                data.extend_from_slice(&chunk);
                data.resize(at + len as usize, 0);
            }
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
            let reply = self.valid.call_data(node, who, &call, &data).await?;
            Stats::add(&self.stats.bytes_stored, data.len() as u64);
            last = Some(reply.status);
        }
        let st = last.ok_or_else(|| Error::Protocol("no StoreData64 reply".into()))?;
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
}
