//! Replay's look at the server: the checks of a record against its base
//! before it is sent, and the settling of a record left in flight.

use afs_proto::fs as rpcs;
use afs_proto::types::{FetchStatus, Fid, FileType};

use super::{gone, Checked, Settled};
use crate::client::AfsClient;
use crate::conflicts::ConflictKind;
use crate::identity::Identity;
use crate::journal::{is_local, LogRecord};
use crate::mutation::Change;
use crate::{Error, Result};

impl AfsClient {
    /// The server's status of an object, None when it is gone.
    pub(super) async fn server_status(
        &self,
        rec: &LogRecord,
        who: &Identity,
        fid: Fid,
    ) -> Result<Option<FetchStatus>> {
        match self
            .inner
            .valid
            .call(&self.node(rec, fid), who, &rpcs::FetchStatus { fid })
            .await
        {
            Ok(r) => Ok(Some(r.status)),
            Err(e) if gone(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// What a name is bound to on the server now.
    pub(super) async fn server_entry(
        &self,
        rec: &LogRecord,
        who: &Identity,
        dir: Fid,
        name: &[u8],
    ) -> Result<Option<Fid>> {
        let node = self.node(rec, dir);
        let st = self
            .inner
            .valid
            .call(&node, who, &rpcs::FetchStatus { fid: dir })
            .await?;
        let reply = self
            .inner
            .valid
            .call(
                &node,
                who,
                &rpcs::FetchData64 {
                    fid: dir,
                    pos: 0,
                    length: st.status.length,
                },
            )
            .await?;
        let entries = afs_proto::dir::parse_dir(&reply.data)
            .map_err(|e| Error::Protocol(format!("directory {dir:?}: {e}")))?;
        Ok(entries
            .into_iter()
            .find(|e| e.name == name)
            .map(|e| Fid::new(dir.volume, e.vnode, e.unique)))
    }

    /// Whether a rename moves a regular file (as the cache knows it).
    pub(super) fn moves_a_file(&self, rec: &LogRecord) -> bool {
        let Some(moved) = rec.moved else {
            return false;
        };
        let key = self.node(rec, moved).key();
        let inner = &self.inner;
        inner
            .valid
            .statuses
            .known(&key)
            .or_else(|| inner.store.get_status(&key).ok().flatten())
            .is_some_and(|st| st.file_type == FileType::File.as_u32())
    }

    /// Compares the server with what the record was decided against.
    pub(super) async fn check(&self, rec: &LogRecord, who: &Identity) -> Result<Checked> {
        let dependent = |what: &str| {
            Ok(Checked::Conflict(
                ConflictKind::Dependent,
                format!("{what} was never made on the server"),
                None,
            ))
        };
        match &rec.m.change {
            Change::CreateFile { dir, .. }
            | Change::MakeDir { dir, .. }
            | Change::Symlink { dir, .. } => {
                if is_local(*dir) {
                    return dependent("its directory");
                }
                // "Name absent" is checked by the server itself (EEXIST).
                Ok(Checked::Go { pre: Vec::new() })
            }
            Change::Link { dir, existing, .. } => {
                if is_local(*dir) || is_local(*existing) {
                    return dependent("its directory or file");
                }
                Ok(Checked::Go { pre: Vec::new() })
            }
            Change::RemoveFile { dir, name } | Change::RemoveDir { dir, name } => {
                let Some((victim, base_dv)) = rec.victim else {
                    return Ok(Checked::Go { pre: Vec::new() });
                };
                if is_local(*dir) || is_local(victim) {
                    return dependent("the object removed");
                }
                match self.server_entry(rec, who, *dir, name).await? {
                    None => return Ok(Checked::AlreadyDone),
                    Some(f) if f != victim => {
                        return Ok(Checked::Conflict(
                            ConflictKind::NameName,
                            "the name now names another object on the server".into(),
                            None,
                        ))
                    }
                    Some(_) => {}
                }
                if matches!(rec.m.change, Change::RemoveFile { .. }) {
                    match self.server_status(rec, who, victim).await? {
                        None => return Ok(Checked::AlreadyDone),
                        Some(st) if st.data_version != base_dv => {
                            return Ok(Checked::Conflict(
                                ConflictKind::RemoveUpdate,
                                "the file was changed on the server; it is kept there".into(),
                                Some(st.data_version),
                            ))
                        }
                        Some(_) => {}
                    }
                }
                Ok(Checked::Go { pre: Vec::new() })
            }
            Change::Rename {
                from_dir,
                from_name,
                to_dir,
                to_name,
            } => {
                if is_local(*from_dir) || is_local(*to_dir) || rec.moved.is_some_and(is_local) {
                    return dependent("an object renamed");
                }
                let here = self.server_entry(rec, who, *from_dir, from_name).await?;
                if here != rec.moved {
                    return Ok(Checked::Conflict(
                        ConflictKind::NameName,
                        "the name renamed is bound to something else on the server".into(),
                        None,
                    ));
                }
                let there = self.server_entry(rec, who, *to_dir, to_name).await?;
                match (there, rec.victim) {
                    (None, _) => {}
                    (Some(f), Some((v, base_dv))) if f == v => {
                        if let Some(st) = self.server_status(rec, who, v).await? {
                            if st.data_version != base_dv && st.file_type != FileType::Directory {
                                return Ok(Checked::Conflict(
                                    ConflictKind::RemoveUpdate,
                                    "the file renamed over was changed on the server".into(),
                                    Some(st.data_version),
                                ));
                            }
                        }
                    }
                    (Some(f), Some(_)) if self.moves_a_file(rec) => {
                        if let Some(st) = self.server_status(rec, who, f).await? {
                            if st.file_type == FileType::File {
                                return Ok(Checked::Replaced {
                                    server: f,
                                    server_dv: st.data_version,
                                });
                            }
                        }
                        return Ok(Checked::Conflict(
                            ConflictKind::NameName,
                            "the new name is taken on the server".into(),
                            None,
                        ));
                    }
                    (Some(_), _) => {
                        return Ok(Checked::Conflict(
                            ConflictKind::NameName,
                            "the new name is taken on the server".into(),
                            None,
                        ))
                    }
                }
                Ok(Checked::Go { pre: Vec::new() })
            }
            Change::StoreStatus { fid, attrs } => {
                if is_local(*fid) {
                    return dependent("the object");
                }
                let Some(st) = self.server_status(rec, who, *fid).await? else {
                    return Ok(Checked::Conflict(
                        ConflictKind::UpdateRemove,
                        "the object was removed on the server".into(),
                        None,
                    ));
                };
                let key = self.node(rec, *fid).key();
                if let Some(base) = self.inner.exec.journal.base(&key) {
                    let moved = |ours: Option<u32>, server: u32, base: u32| {
                        ours.is_some_and(|o| server != base && server != o)
                    };
                    if moved(
                        attrs.mode,
                        st.unix_mode_bits & 0o7777,
                        base.status.mode & 0o7777,
                    ) || moved(attrs.owner, st.owner, base.status.owner)
                        || moved(attrs.group, st.group, base.status.group)
                    {
                        return Ok(Checked::Conflict(
                            ConflictKind::Attr,
                            "the same attribute was changed on the server".into(),
                            Some(st.data_version),
                        ));
                    }
                }
                Ok(Checked::Go {
                    pre: vec![(*fid, st.data_version)],
                })
            }
            Change::StoreData { fid, data } => {
                if is_local(*fid) {
                    return dependent("the file");
                }
                let Some(st) = self.server_status(rec, who, *fid).await? else {
                    return Ok(Checked::Conflict(
                        ConflictKind::UpdateRemove,
                        "the file was removed on the server".into(),
                        None,
                    ));
                };
                if st.data_version != data.base_dv {
                    return Ok(Checked::Conflict(
                        ConflictKind::UpdateUpdate,
                        "the file was changed on the server too".into(),
                        Some(st.data_version),
                    ));
                }
                Ok(Checked::Go {
                    pre: vec![(*fid, st.data_version)],
                })
            }
            Change::StoreAcl { .. } => Ok(Checked::Go { pre: Vec::new() }),
        }
    }

    /// Looks at the server to tell whether a record sent without a
    /// recorded answer was applied.
    pub(super) async fn settle(
        &self,
        rec: &LogRecord,
        who: &Identity,
        pre: &[(Fid, u64)],
    ) -> Result<Settled> {
        let ours = |st: &FetchStatus| st.owner == who.vice_id.map_or(32766, |v| v as u32);
        match &rec.m.change {
            Change::CreateFile { dir, name, .. }
            | Change::MakeDir { dir, name, .. }
            | Change::Symlink { dir, name, .. } => {
                if is_local(*dir) {
                    return Ok(Settled::Resend);
                }
                match self.server_entry(rec, who, *dir, name).await? {
                    None => Ok(Settled::Resend),
                    Some(f) => match self.server_status(rec, who, f).await? {
                        Some(st) if ours(&st) => Ok(Settled::Applied(Some(f))),
                        // Made by someone else, but a directory is one
                        // whoever made it (see Replay::adoptable).
                        Some(st)
                            if matches!(rec.m.change, Change::MakeDir { .. })
                                && st.file_type == FileType::Directory =>
                        {
                            Ok(Settled::Applied(Some(f)))
                        }
                        _ => Ok(Settled::Conflict(
                            ConflictKind::NameName,
                            "the name exists on the server, made by someone else".into(),
                            None,
                        )),
                    },
                }
            }
            Change::Link {
                dir,
                name,
                existing,
            } => match self.server_entry(rec, who, *dir, name).await? {
                None => Ok(Settled::Resend),
                Some(f) if f == *existing => Ok(Settled::Applied(None)),
                Some(_) => Ok(Settled::Conflict(
                    ConflictKind::NameName,
                    "the name exists on the server".into(),
                    None,
                )),
            },
            Change::RemoveFile { dir, name } | Change::RemoveDir { dir, name } => {
                match self.server_entry(rec, who, *dir, name).await? {
                    None => Ok(Settled::Applied(None)),
                    Some(_) => Ok(Settled::Resend),
                }
            }
            Change::Rename {
                from_dir,
                from_name,
                to_dir,
                to_name,
            } => {
                let there = self.server_entry(rec, who, *to_dir, to_name).await?;
                if there.is_some() && there == rec.moved {
                    return Ok(Settled::Applied(None));
                }
                let here = self.server_entry(rec, who, *from_dir, from_name).await?;
                if here.is_some() && here == rec.moved {
                    Ok(Settled::Resend)
                } else {
                    Ok(Settled::Conflict(
                        ConflictKind::NameName,
                        "the object renamed is neither at its old nor its new name".into(),
                        None,
                    ))
                }
            }
            Change::StoreStatus { .. } | Change::StoreAcl { .. } => Ok(Settled::Resend),
            Change::StoreData { fid, data } => {
                let Some(&(_, pre_dv)) = pre.iter().find(|(f, _)| f == fid) else {
                    // Sent while online: the base is what it was sent against.
                    return self.settle_store(rec, who, *fid, data.base_dv, data).await;
                };
                self.settle_store(rec, who, *fid, pre_dv, data).await
            }
        }
    }

    async fn settle_store(
        &self,
        rec: &LogRecord,
        who: &Identity,
        fid: Fid,
        pre_dv: u64,
        data: &crate::mutation::DataChange,
    ) -> Result<Settled> {
        let plan = self.inner.exec.plan(data);
        let pieces = plan.len();
        let Some(st) = self.server_status(rec, who, fid).await? else {
            return Ok(Settled::Conflict(
                ConflictKind::UpdateRemove,
                "the file was removed on the server".into(),
                None,
            ));
        };
        if st.data_version < pre_dv || st.data_version - pre_dv > pieces as u64 {
            return Ok(Settled::Conflict(
                ConflictKind::UpdateUpdate,
                "the file changed on the server while our store was in flight".into(),
                Some(st.data_version),
            ));
        }
        let moved = (st.data_version - pre_dv) as usize;
        if moved == 0 {
            return Ok(Settled::ResumeAt(0, pre_dv));
        }
        // Pieces go in order, one version each; but a piece cut short (the
        // daemon killed, the link cut mid-transfer) still moves the version
        // on an OpenAFS fileserver (the vnode changed), with only part of
        // its bytes. The last piece counted is on the server only if its
        // bytes and the length are ours; else it is sent again (its bytes
        // are the same: the content ends right, the version moves once
        // more).
        let last = &plan[moved - 1];
        let key = self.node(rec, fid).key();
        let ours = match self.inner.exec.piece_bytes(&key, data, last) {
            Ok(b) => b,
            // Our chunks already became the new version's: the store
            // finished and only its answer was not recorded.
            Err(_) if moved == pieces && st.length == data.length => {
                return Ok(Settled::ResumeAt(moved, pre_dv));
            }
            Err(e) => return Err(e),
        };
        let reply = self
            .inner
            .valid
            .call(
                &self.node(rec, fid),
                who,
                &rpcs::FetchData64 {
                    fid,
                    pos: last.pos,
                    length: ours.len() as u64,
                },
            )
            .await?;
        // The piece's bytes are there (a fileserver leaves a file written
        // in several pieces at the end of the data so far, not at the
        // final length each piece names).
        let there = if ours.is_empty() {
            // A piece that only sets the length (a cut).
            st.length == last.file_length
        } else {
            reply.data == ours && st.length >= last.pos + ours.len() as u64
        };
        if there {
            return Ok(Settled::ResumeAt(moved, pre_dv));
        }
        // A piece cut short wrote a prefix of ours (a fileserver writes a
        // piece from its start); anything else is another writer's.
        let head = ours.len().min(1024);
        if head > 0 && reply.data.len() >= head && reply.data[..head] == ours[..head] {
            tracing::info!(
                seq = rec.seq,
                piece = moved - 1,
                "a store piece cut short on the server: sending it again"
            );
            return Ok(Settled::ResumeAt(moved - 1, pre_dv + 1));
        }
        Ok(Settled::Conflict(
            ConflictKind::UpdateUpdate,
            "the file changed on the server while our store was in flight".into(),
            Some(st.data_version),
        ))
    }
}
