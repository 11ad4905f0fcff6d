//! FUSE inode numbers to AFS fids. The mapping is stable for the life of the
//! mount: a fid always gets the same number back.

use std::collections::HashMap;

use afs_proto::types::Fid;
use cache::FidKey;

use crate::VolType;

/// What an inode number names: a fid in a cell, and which instance (RW, RO,
/// backup) of its volume the fid's volume id is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct NodeRef {
    pub cell: String,
    pub fid: Fid,
    pub vol_type: VolType,
}

impl NodeRef {
    pub(crate) fn key(&self) -> FidKey {
        FidKey::new(&self.cell, self.fid.volume, self.fid.vnode, self.fid.unique)
    }
    pub(crate) fn with_fid(&self, fid: Fid) -> NodeRef {
        NodeRef {
            cell: self.cell.clone(),
            fid,
            vol_type: self.vol_type,
        }
    }
}

/// The table. Inode 1 is the synthetic `/afs` root and is not in it.
pub(crate) struct Inodes {
    next: u64,
    by_ino: HashMap<u64, NodeRef>,
    by_key: HashMap<FidKey, u64>,
}

impl Inodes {
    pub(crate) fn new() -> Self {
        Inodes {
            next: 2,
            by_ino: HashMap::new(),
            by_key: HashMap::new(),
        }
    }

    pub(crate) fn intern(&mut self, node: NodeRef) -> u64 {
        let key = node.key();
        if let Some(ino) = self.by_key.get(&key) {
            return *ino;
        }
        let ino = self.next;
        self.next += 1;
        self.by_key.insert(key, ino);
        self.by_ino.insert(ino, node);
        ino
    }

    pub(crate) fn get(&self, ino: u64) -> Option<NodeRef> {
        self.by_ino.get(&ino).cloned()
    }

    pub(crate) fn ino_of(&self, key: &FidKey) -> Option<u64> {
        self.by_key.get(key).copied()
    }

    /// Inodes of every known fid in a volume (whole-volume callback breaks).
    pub(crate) fn inos_of_volume(&self, cell: Option<&str>, volume: u32) -> Vec<u64> {
        self.by_key
            .iter()
            .filter(|(k, _)| k.volume == volume && cell.is_none_or(|c| k.cell == c))
            .map(|(_, i)| *i)
            .collect()
    }

    pub(crate) fn all(&self) -> Vec<u64> {
        self.by_ino.keys().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_fid_same_inode() {
        let mut t = Inodes::new();
        let a = NodeRef {
            cell: "c".into(),
            fid: Fid::new(1, 1, 1),
            vol_type: VolType::Rw,
        };
        let b = a.with_fid(Fid::new(1, 2, 3));
        let ia = t.intern(a.clone());
        let ib = t.intern(b.clone());
        assert_ne!(ia, ib);
        assert_ne!(ia, 1);
        assert_eq!(t.intern(a.clone()), ia);
        assert_eq!(t.get(ib), Some(b));
        assert_eq!(t.ino_of(&a.key()), Some(ia));
        let mut v = t.inos_of_volume(Some("c"), 1);
        v.sort();
        assert_eq!(v, vec![ia, ib]);
        assert!(t.inos_of_volume(Some("d"), 1).is_empty());
    }
}
