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
///
/// Each entry counts the kernel's references to it (FUSE's "nlookup"): one
/// per entry we answer with (lookup, create, mkdir, symlink, link, and the
/// entries of readdirplus). The kernel gives them back with FORGET once it
/// drops the inode; at zero the entry goes, so the table follows what the
/// kernel holds instead of every file ever seen.
pub(crate) struct Inodes {
    next: u64,
    by_ino: HashMap<u64, Entry>,
    by_key: HashMap<FidKey, u64>,
    /// Inode numbers of fids the kernel forgot, kept (a bounded number,
    /// the oldest dropped first) so that the next lookup of the same fid
    /// gives the same number: a file keeps its st_ino while the daemon
    /// runs, even when the kernel dropped it between two looks (git, tar
    /// and find compare inode numbers). Numbers are never reused, so a
    /// retired one is free for its own fid only.
    retired: HashMap<FidKey, u64>,
    retired_order: std::collections::VecDeque<FidKey>,
}

/// How many forgotten fids keep their inode numbers.
const RETIRED_MAX: usize = 100_000;

struct Entry {
    node: NodeRef,
    refs: u64,
    /// The parent inode and name the kernel last looked it up by.
    name: Option<(u64, Vec<u8>)>,
}

impl Inodes {
    pub(crate) fn new() -> Self {
        Inodes {
            next: 2,
            by_ino: HashMap::new(),
            by_key: HashMap::new(),
            retired: HashMap::new(),
            retired_order: std::collections::VecDeque::new(),
        }
    }

    /// The inode of a fid, made when absent; no kernel reference taken.
    pub(crate) fn intern(&mut self, node: NodeRef) -> u64 {
        let key = node.key();
        if let Some(ino) = self.by_key.get(&key) {
            return *ino;
        }
        let ino = match self.retired.remove(&key) {
            Some(ino) => ino,
            None => {
                self.next += 1;
                self.next - 1
            }
        };
        self.by_key.insert(key, ino);
        self.by_ino.insert(
            ino,
            Entry {
                node,
                refs: 0,
                name: None,
            },
        );
        ino
    }

    /// [`Inodes::intern`] for an answer that gives the kernel the inode:
    /// one more reference, taken in the same step so that a FORGET racing
    /// with the answer cannot drop the entry in between.
    pub(crate) fn intern_ref(&mut self, node: NodeRef) -> u64 {
        let ino = self.intern(node);
        if let Some(e) = self.by_ino.get_mut(&ino) {
            e.refs += 1;
        }
        ino
    }

    /// Gives back `n` kernel references. Returns true when none is left
    /// and the entry may go (see [`Inodes::remove`]).
    pub(crate) fn unref(&mut self, ino: u64, n: u64) -> bool {
        match self.by_ino.get_mut(&ino) {
            Some(e) => {
                e.refs = e.refs.saturating_sub(n);
                e.refs == 0
            }
            None => false,
        }
    }

    /// Drops an entry the kernel holds no reference to.
    pub(crate) fn remove(&mut self, ino: u64) {
        if let Some(e) = self.by_ino.get(&ino) {
            if e.refs == 0 {
                let key = e.node.key();
                self.by_ino.remove(&ino);
                if self.by_key.get(&key) == Some(&ino) {
                    self.by_key.remove(&key);
                    self.retire(key, ino);
                }
            }
        }
    }

    fn retire(&mut self, key: FidKey, ino: u64) {
        if self.retired.insert(key.clone(), ino).is_none() {
            self.retired_order.push_back(key);
        }
        while self.retired_order.len() > RETIRED_MAX {
            if let Some(old) = self.retired_order.pop_front() {
                self.retired.remove(&old);
            }
        }
    }

    /// A node changes fid (an object made offline got its server fid) and
    /// keeps its inode number.
    pub(crate) fn rekey(&mut self, old: &FidKey, node: NodeRef) {
        let Some(ino) = self.by_key.remove(old) else {
            // Forgotten by the kernel meanwhile: the number waits for the
            // new fid.
            if let Some(ino) = self.retired.remove(old) {
                self.retire(node.key(), ino);
            }
            return;
        };
        self.by_key.insert(node.key(), ino);
        if let Some(e) = self.by_ino.get_mut(&ino) {
            e.node = node;
        }
    }

    /// Notes the name an inode was looked up (or made) by.
    pub(crate) fn named(&mut self, ino: u64, parent: u64, name: &[u8]) {
        if let Some(e) = self.by_ino.get_mut(&ino) {
            e.name = Some((parent, name.to_vec()));
        }
    }

    /// The path of an inode below the mount, as its names were last
    /// looked up (None when a link of the chain is unknown).
    pub(crate) fn path(&self, ino: u64) -> Option<String> {
        let mut parts = Vec::new();
        let mut cur = ino;
        for _ in 0..256 {
            if cur == crate::attr::ROOT_INO {
                parts.reverse();
                return Some(parts.join("/"));
            }
            let (parent, name) = self.by_ino.get(&cur)?.name.clone()?;
            parts.push(String::from_utf8_lossy(&name).into_owned());
            cur = parent;
        }
        None
    }

    pub(crate) fn get(&self, ino: u64) -> Option<NodeRef> {
        self.by_ino.get(&ino).map(|e| e.node.clone())
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

    pub(crate) fn len(&self) -> usize {
        self.by_ino.len()
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

    #[test]
    fn a_forgotten_fid_keeps_its_number_and_a_rekeyed_one_too() {
        let mut t = Inodes::new();
        let a = NodeRef {
            cell: "c".into(),
            fid: Fid::new(1, 1, 1),
            vol_type: VolType::Rw,
        };
        let ia = t.intern_ref(a.clone());
        let ib = t.intern(a.with_fid(Fid::new(1, 2, 2)));
        assert!(t.unref(ia, 1));
        t.remove(ia);
        assert_eq!(t.get(ia), None);
        // Looked up again: the same number, not a new one.
        assert_eq!(t.intern(a.clone()), ia);
        let ic = t.intern(a.with_fid(Fid::new(1, 3, 3)));
        assert!(ic != ia && ic != ib);
        // Forgotten, then given its server fid: the number follows.
        t.remove(ia);
        let server = a.with_fid(Fid::new(1, 9, 9));
        t.rekey(&a.key(), server.clone());
        assert_eq!(t.intern(server), ia);
        assert_ne!(t.intern(a), ia, "the old fid has no claim on it now");
    }

    #[test]
    fn entries_live_while_the_kernel_holds_them() {
        let mut t = Inodes::new();
        let a = NodeRef {
            cell: "c".into(),
            fid: Fid::new(1, 1, 1),
            vol_type: VolType::Rw,
        };
        let ia = t.intern_ref(a.clone());
        assert_eq!(t.intern_ref(a.clone()), ia);
        assert!(!t.unref(ia, 1), "one reference left");
        assert!(t.unref(ia, 1));
        // A reference taken again before the removal keeps the entry.
        t.intern_ref(a.clone());
        t.remove(ia);
        assert_eq!(t.get(ia), Some(a.clone()));
        assert!(t.unref(ia, 5), "more given back than taken: none left");
        t.remove(ia);
        assert_eq!(t.get(ia), None);
        assert_eq!(t.len(), 0);
        // The fid comes back under its old number (see `retired`).
        assert_eq!(t.intern_ref(a), ia);
        assert!(!t.unref(999, 1), "unknown inodes are ignored");
    }
}
