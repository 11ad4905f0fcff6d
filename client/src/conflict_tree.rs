//! `/afs/.afsd/conflicts/ID/{base,local,server,info.json}`: a read-only
//! tree in which programs find a conflict's versions as plain files. Each
//! user sees only their own conflicts (root sees all): the directory of a
//! conflict is listed, looked up and read only by its owner.
//!
//! Its inodes come from a range no other inode uses (bits 63..59 =
//! `00010`; the client numbers fids from 2 upwards and cells from the top
//! of the space down). A file's bytes are read once, at open, and served
//! from that copy until release.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::attr::{Attr, DirEntryOut, NodeKind, ROOT_INO};
use crate::conflicts::ConflictSide;
use crate::{AfsClient, Error, Result};

/// The name of the tree in `/afs`.
pub const AFSD_DIR: &[u8] = b".afsd";
const RANGE: u64 = 1 << 60;
const AFSD_INO: u64 = RANGE | 1;
const CONFLICTS_INO: u64 = RANGE | 2;
const ENTRY: u64 = 1 << 58;
/// Handles of opened tree files: beside the client's, in a range of their
/// own.
const FH_RANGE: u64 = 1 << 62;

const FILES: [(&str, u64); 4] = [("base", 1), ("local", 2), ("server", 3), ("info.json", 4)];

/// The inode of `/afs/.afsd`.
pub(crate) fn tree_root_ino() -> u64 {
    AFSD_INO
}

/// Whether `ino` is one of the tree's.
pub fn is_tree_ino(ino: u64) -> bool {
    ino >> 59 == RANGE >> 59
}

/// Whether `fh` is a handle of a tree file.
pub fn is_tree_fh(fh: u64) -> bool {
    fh & FH_RANGE != 0 && fh >> 63 == 0
}

fn entry_ino(id: u64, side: u64) -> u64 {
    RANGE | ENTRY | (id << 3) | side
}

/// What a tree inode names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Node {
    Afsd,
    Conflicts,
    Dir(u64),
    File(u64, u64),
}

fn node_of(ino: u64) -> Option<Node> {
    if !is_tree_ino(ino) {
        return None;
    }
    match ino {
        AFSD_INO => Some(Node::Afsd),
        CONFLICTS_INO => Some(Node::Conflicts),
        _ if ino & ENTRY != 0 => {
            let rest = ino & (ENTRY - 1);
            let (id, side) = (rest >> 3, rest & 7);
            match side {
                0 => Some(Node::Dir(id)),
                1..=4 => Some(Node::File(id, side)),
                _ => None,
            }
        }
        _ => None,
    }
}

/// Snapshots of opened tree files.
#[derive(Default)]
pub(crate) struct TreeHandles {
    next: AtomicU64,
    open: Mutex<HashMap<u64, Arc<Vec<u8>>>>,
}

fn dir_attr(ino: u64, uid: u32) -> Attr {
    Attr {
        ino,
        kind: NodeKind::Dir,
        size: 512,
        mode: 0o555,
        nlink: 2,
        uid,
        gid: 0,
        mtime: 0,
        data_version: 0,
        // Each user sees only their own conflicts: never kept by the kernel.
        ttl: std::time::Duration::ZERO,
    }
}

impl AfsClient {
    /// The owner of conflict `id` when `uid` may see it (its owner, root).
    fn visible_conflict(&self, uid: u32, id: u64) -> Result<crate::ConflictInfo> {
        self.conflicts((uid != 0).then_some(uid))
            .into_iter()
            .find(|c| c.id == id)
            .ok_or(Error::NotFound)
    }

    /// The bytes of a tree file.
    async fn tree_data(&self, uid: u32, id: u64, side: u64) -> Result<Vec<u8>> {
        let c = self.visible_conflict(uid, id)?;
        match side {
            1 => self
                .conflict_data(uid, id, ConflictSide::Base)
                .map_err(|_| Error::NotFound),
            2 => self
                .conflict_data(uid, id, ConflictSide::Local)
                .map_err(|_| Error::NotFound),
            3 => self
                .conflict_server_data(uid, id)
                .await
                .map_err(|e| match e.errno() {
                    libc::ENOENT | libc::ESTALE => Error::NotFound,
                    _ => e,
                }),
            _ => {
                let states = self.conflict_states(uid, id).await.ok();
                let mut text = serde_json::to_string_pretty(&serde_json::json!({
                    "conflict": c,
                    "states": states,
                }))
                .unwrap_or_default();
                text.push('\n');
                Ok(text.into_bytes())
            }
        }
    }

    /// getattr of a tree inode.
    pub(crate) async fn tree_getattr(&self, uid: u32, ino: u64) -> Result<Attr> {
        match node_of(ino).ok_or(Error::NotFound)? {
            Node::Afsd | Node::Conflicts => Ok(dir_attr(ino, 0)),
            Node::Dir(id) => {
                let c = self.visible_conflict(uid, id)?;
                Ok(Attr {
                    mode: 0o500,
                    ..dir_attr(ino, c.uid)
                })
            }
            Node::File(id, side) => {
                let c = self.visible_conflict(uid, id)?;
                let data = self.tree_data(uid, id, side).await?;
                Ok(Attr {
                    ino,
                    kind: NodeKind::File,
                    size: data.len() as u64,
                    mode: 0o400,
                    nlink: 1,
                    uid: c.uid,
                    gid: 0,
                    mtime: c.detected,
                    data_version: 0,
                    ttl: std::time::Duration::ZERO,
                })
            }
        }
    }

    /// lookup in `/afs` of `.afsd`, or in the tree.
    pub(crate) async fn tree_lookup(&self, uid: u32, parent: u64, name: &[u8]) -> Result<Attr> {
        let child = match (parent, node_of(parent)) {
            (ROOT_INO, _) if name == AFSD_DIR => AFSD_INO,
            (_, Some(Node::Afsd)) if name == b"conflicts" => CONFLICTS_INO,
            (_, Some(Node::Conflicts)) => {
                let id: u64 = std::str::from_utf8(name)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .filter(|id| *id < (1 << 55))
                    .ok_or(Error::NotFound)?;
                entry_ino(id, 0)
            }
            (_, Some(Node::Dir(id))) => {
                let side = FILES
                    .iter()
                    .find(|(n, _)| n.as_bytes() == name)
                    .map(|(_, s)| *s)
                    .ok_or(Error::NotFound)?;
                entry_ino(id, side)
            }
            _ => return Err(Error::NotFound),
        };
        self.tree_getattr(uid, child).await
    }

    /// readdir of a tree directory.
    pub(crate) async fn tree_readdir(&self, uid: u32, ino: u64) -> Result<Vec<DirEntryOut>> {
        let dot = |name: &str, ino: u64| DirEntryOut {
            name: name.as_bytes().to_vec(),
            ino,
            kind: NodeKind::Dir,
            cookie: crate::attr::dir_cookie(name.as_bytes()),
        };
        let mut out = match node_of(ino).ok_or(Error::NotFound)? {
            Node::Afsd => vec![
                dot(".", ino),
                dot("..", ROOT_INO),
                dot("conflicts", CONFLICTS_INO),
            ],
            Node::Conflicts => {
                let mut v = vec![dot(".", ino), dot("..", AFSD_INO)];
                for c in self.conflicts((uid != 0).then_some(uid)) {
                    v.push(dot(&c.id.to_string(), entry_ino(c.id, 0)));
                }
                v
            }
            Node::Dir(id) => {
                self.visible_conflict(uid, id)?;
                let mut v = vec![dot(".", ino), dot("..", CONFLICTS_INO)];
                for (name, side) in FILES {
                    if self.tree_data(uid, id, side).await.is_ok() {
                        v.push(DirEntryOut {
                            kind: NodeKind::File,
                            ..dot(name, entry_ino(id, side))
                        });
                    }
                }
                v
            }
            Node::File(..) => return Err(Error::NotDir),
        };
        out.sort_by(|a, b| (a.cookie, &a.name).cmp(&(b.cookie, &b.name)));
        Ok(out)
    }

    /// open of a tree file: read-only, its bytes read now.
    pub(crate) async fn tree_open(&self, uid: u32, ino: u64, flags: i32) -> Result<u64> {
        if flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_TRUNC != 0 {
            return Err(Error::ReadOnly);
        }
        let Some(Node::File(id, side)) = node_of(ino) else {
            return Err(Error::IsDir);
        };
        let data = self.tree_data(uid, id, side).await?;
        let h = &self.inner.tree;
        let fh = FH_RANGE | h.next.fetch_add(1, Ordering::Relaxed);
        h.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(fh, Arc::new(data));
        Ok(fh)
    }

    pub(crate) fn tree_read(&self, fh: u64, offset: u64, size: u32) -> Result<Vec<u8>> {
        let data = self
            .inner
            .tree
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&fh)
            .cloned()
            .ok_or(Error::BadHandle)?;
        let from = (offset as usize).min(data.len());
        let to = from.saturating_add(size as usize).min(data.len());
        Ok(data[from..to].to_vec())
    }

    pub(crate) fn tree_release(&self, fh: u64) {
        self.inner
            .tree
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&fh);
    }

    /// opendir and access of a tree inode: read and search only, and a
    /// conflict's directory only by its owner.
    pub(crate) async fn tree_access(&self, uid: u32, ino: u64, mask: i32) -> Result<()> {
        if mask & libc::W_OK != 0 {
            return Err(Error::ReadOnly);
        }
        self.tree_getattr(uid, ino).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_inodes_are_apart_from_every_other() {
        assert!(is_tree_ino(AFSD_INO) && is_tree_ino(CONFLICTS_INO));
        assert!(is_tree_ino(entry_ino((1 << 55) - 1, 4)));
        assert!(!is_tree_ino(ROOT_INO) && !is_tree_ino(2) && !is_tree_ino(1 << 40));
        // Cells are numbered down from the top.
        assert!(!is_tree_ino(u64::MAX) && !is_tree_ino(u64::MAX - 1000));
        assert_eq!(node_of(entry_ino(7, 0)), Some(Node::Dir(7)));
        assert_eq!(node_of(entry_ino(7, 3)), Some(Node::File(7, 3)));
        assert_eq!(node_of(entry_ino(7, 6)), None);
        assert!(is_tree_fh(FH_RANGE | 5) && !is_tree_fh(5));
    }
}
