//! The three states of an object changed offline: its **base** (as it was
//! before the first offline change), its **local** state (as this client
//! shows it), and the **server**'s. They are what a user needs to decide a
//! conflict, and what `afsd.base`, `afsd.local`, `afsd.server` and
//! `afsd.conflict` show on a path, and `afsd-rs conflict show` beside each
//! other.
//!
//! For an object with changes not yet replayed, the base is the change
//! log's captured base, the local state is the cache's, and the server's
//! is asked (FetchStatus, not applied: the local state stays in force) when
//! the volume is connected. For a conflict, the base and local states are
//! captured when the conflict is made (record space [`SPACE_STATES`],
//! keyed by the conflict's id), and the server's is the path's: after a
//! conflict the path shows the server's version.

use afs_proto::fs as rpcs;
use cache::{FidKey, Op, StatusRecord};
use serde::{Deserialize, Serialize};

use crate::client::AfsClient;
use crate::conflicts::ConflictRecord;
use crate::{Error, Result};

/// Record space of the states captured with each conflict.
pub(crate) const SPACE_STATES: u8 = b'y';

/// One state of an object, as the xattrs and `conflict show` give it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectState {
    pub data_version: u64,
    pub length: u64,
    /// Unix seconds (the client's modification time).
    pub mtime: u64,
    pub mode: u32,
    pub owner: u32,
}

impl ObjectState {
    pub(crate) fn of(st: &StatusRecord) -> Self {
        ObjectState {
            data_version: st.data_version,
            length: st.length,
            mtime: u64::from(st.client_modtime),
            mode: st.mode & 0o7777,
            owner: st.owner,
        }
    }
}

impl std::fmt::Display for ObjectState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "dv={} len={} mtime={} mode={:04o} owner={}",
            self.data_version, self.length, self.mtime, self.mode, self.owner
        )
    }
}

/// The base and local states kept with a conflict.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct KeptStates {
    pub base: Option<ObjectState>,
    pub local: Option<ObjectState>,
}

/// The three states of a conflict, for `afsd-rs conflict show`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConflictStates {
    pub base: Option<ObjectState>,
    pub local: Option<ObjectState>,
    /// None when the server's object is gone (update/remove) or its
    /// volume cannot be reached and the cache holds no status.
    pub server: Option<ObjectState>,
}

/// Which of the three.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Which {
    Base,
    Local,
    Server,
}

/// The op that keeps a conflict's base and local states.
pub(crate) fn keep_op(id: u64, kept: &KeptStates) -> Op {
    Op::PutRecord {
        space: SPACE_STATES,
        key: id.to_be_bytes().to_vec(),
        value: serde_json::to_vec(kept).unwrap_or_default(),
    }
}

impl AfsClient {
    fn kept_states(&self, id: u64) -> KeptStates {
        self.inner
            .store
            .get_record(SPACE_STATES, &id.to_be_bytes())
            .ok()
            .flatten()
            .and_then(|v| serde_json::from_slice(&v).ok())
            .unwrap_or_default()
    }

    /// A conflict of `uid` (root: anyone's).
    pub(crate) fn conflict_of(&self, uid: u32, id: u64) -> Result<ConflictRecord> {
        let c = self
            .inner
            .conflicts
            .get(id)
            .ok_or_else(|| Error::Invalid(format!("no conflict {id}")))?;
        if uid != 0 && c.records[0].m.uid != uid {
            return Err(Error::Access);
        }
        Ok(c)
    }

    /// The three states of conflict `id`, as `uid` may see them.
    pub async fn conflict_states(&self, uid: u32, id: u64) -> Result<ConflictStates> {
        let c = self.conflict_of(uid, id)?;
        let kept = self.kept_states(id);
        let node = crate::inode::NodeRef {
            cell: c.records[0].m.cell.clone(),
            fid: c.fid,
            vol_type: crate::VolType::Rw,
        };
        let who = self.inner.valid.who(uid, &node);
        let server = match self.inner.valid.valid_status(&node, &who).await {
            Ok(st) => Some(ObjectState::of(&st)),
            Err(e) if matches!(e.errno(), libc::ENOENT | libc::ESTALE) => None,
            Err(e) if crate::connectivity::is_network(&e) => None,
            Err(e) => return Err(e),
        };
        Ok(ConflictStates {
            base: kept.base,
            local: kept.local,
            server,
        })
    }

    /// The server's bytes of a conflict's object now (what the path shows),
    /// read as `uid`.
    pub async fn conflict_server_data(&self, uid: u32, id: u64) -> Result<Vec<u8>> {
        let c = self.conflict_of(uid, id)?;
        let node = crate::inode::NodeRef {
            cell: c.records[0].m.cell.clone(),
            fid: c.fid,
            vol_type: crate::VolType::Rw,
        };
        let who = self.inner.valid.who(uid, &node);
        let st = self.inner.valid.valid_status(&node, &who).await?;
        self.inner
            .valid
            .require(&node, &who, crate::validate::PRSFS_READ)?;
        self.inner.data.read(&node, 0, st.length, &who).await
    }

    /// `afsd.base`, `afsd.local`, `afsd.server` of a node, for `uid`; None
    /// for the base of an object with nothing pending nor in conflict.
    pub(crate) async fn state_xattr(
        &self,
        uid: u32,
        ino: u64,
        which: Which,
    ) -> Result<Option<Vec<u8>>> {
        let inner = &self.inner;
        let node = inner.nodes.node(ino)?;
        let who = inner.valid.who(uid, &node);
        let shown = inner.valid.valid_status(&node, &who).await?;
        let key = node.key();
        let line = |s: Option<ObjectState>, why: &str| -> Option<Vec<u8>> {
            Some(
                match s {
                    Some(s) => format!("{s}\n"),
                    None => format!("unknown: {why}\n"),
                }
                .into_bytes(),
            )
        };
        if inner.exec.journal.pending.contains(&key) {
            return Ok(match which {
                Which::Base => line(
                    inner
                        .exec
                        .journal
                        .base(&key)
                        .map(|b| ObjectState::of(&b.status)),
                    "made offline",
                ),
                Which::Local => {
                    // Unstored writes of this user show in its length.
                    let mut s = ObjectState::of(&shown);
                    if let Some(len) = inner.open.length(&key, uid) {
                        s.length = len;
                    }
                    line(Some(s), "")
                }
                Which::Server => {
                    if crate::journal::is_local(node.fid) {
                        line(None, "made offline, not yet on the server")
                    } else if inner.valid.conn.blocks(&node.cell, node.fid.volume) {
                        line(None, "its volume is offline")
                    } else {
                        let r = inner
                            .valid
                            .call(&node, &who, &rpcs::FetchStatus { fid: node.fid })
                            .await;
                        match r {
                            Ok(r) => {
                                let rec = crate::validate::record_of(&r.status, &r.callback, 0);
                                line(Some(ObjectState::of(&rec)), "")
                            }
                            Err(e) => line(None, &e.to_string()),
                        }
                    }
                }
            });
        }
        let conflict = self.conflict_at(uid, &key);
        Ok(match (which, conflict) {
            (Which::Base, Some(c)) => line(self.kept_states(c.id).base, "not cached"),
            (Which::Local, Some(c)) => line(self.kept_states(c.id).local, "not kept"),
            (Which::Base, None) => None,
            (Which::Local | Which::Server, _) => line(Some(ObjectState::of(&shown)), ""),
        })
    }

    /// The newest conflict of `uid` (root: anyone's) about `key`.
    fn conflict_at(&self, uid: u32, key: &FidKey) -> Option<ConflictRecord> {
        self.inner
            .conflicts
            .all()
            .into_iter()
            .filter(|c| {
                c.fid.volume == key.volume
                    && c.fid.vnode == key.vnode
                    && c.fid.unique == key.unique
                    && c.records[0].m.cell == key.cell
                    && (uid == 0 || c.records[0].m.uid == uid)
            })
            .max_by_key(|c| c.id)
    }

    /// `afsd.conflict` of a node: `kind= id= base= local= server=` (data
    /// versions), None when it is in no conflict of `uid`'s.
    pub(crate) async fn conflict_xattr(&self, uid: u32, ino: u64) -> Result<Option<Vec<u8>>> {
        let inner = &self.inner;
        let node = inner.nodes.node(ino)?;
        let who = inner.valid.who(uid, &node);
        let shown = inner.valid.valid_status(&node, &who).await?;
        let Some(c) = self.conflict_at(uid, &node.key()) else {
            return Ok(None);
        };
        let kept = self.kept_states(c.id);
        let dv = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
        Ok(Some(
            format!(
                "kind={} id={} base={} local={} server={}\n",
                c.kind.as_str(),
                c.id,
                dv(kept.base.map(|b| b.data_version).or(c.base_dv)),
                dv(kept.local.map(|l| l.data_version)),
                shown.data_version
            )
            .into_bytes(),
        ))
    }
}

/// Stores the states of a new conflict in the batch being built.
/// `local_len`: the length of the local data kept, when the change had
/// data (the status alone does not show unstored writes).
pub(crate) fn capture(
    id: u64,
    base: Option<&StatusRecord>,
    local: Option<&StatusRecord>,
    local_len: Option<u64>,
) -> Op {
    let mut local = local.map(ObjectState::of);
    if let (Some(l), Some(len)) = (local.as_mut(), local_len) {
        l.length = len;
    }
    keep_op(
        id,
        &KeptStates {
            base: base.map(ObjectState::of),
            local,
        },
    )
}
