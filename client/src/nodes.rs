//! The inode table behind a lock, and the channel that tells the kernel
//! to drop what it cached of a node.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use std::sync::Arc;

use cache::FidKey;

use crate::inode::{Inodes, NodeRef};
use crate::invalidations::Queue;
use crate::{Error, Result};

/// Most names the kernel may keep long at once (see [`Nodes::long_entry`]);
/// past it, names are not kept.
const MAX_LONG_ENTRIES: usize = 1 << 20;

/// Inode numbers of fids, and kernel invalidations.
pub(crate) struct Nodes {
    table: Mutex<Inodes>,
    inval: Arc<Queue>,
    /// Names handed to the kernel with a long TTL, per directory inode:
    /// dropped from the kernel when the directory is invalidated.
    long: Mutex<LongEntries>,
}

#[derive(Default)]
struct LongEntries {
    by_dir: HashMap<u64, HashSet<Vec<u8>>>,
    count: usize,
}

impl Nodes {
    pub(crate) fn new(inval: Arc<Queue>) -> Self {
        Nodes {
            table: Mutex::new(Inodes::new()),
            inval,
            long: Mutex::new(LongEntries::default()),
        }
    }

    /// Records that the kernel may keep the name `name` in directory
    /// `parent` long; false when the table is full (then it must not).
    pub(crate) fn long_entry(&self, parent: u64, name: &[u8]) -> bool {
        let mut l = self.long.lock().unwrap_or_else(|e| e.into_inner());
        if l.by_dir.get(&parent).is_some_and(|s| s.contains(name)) {
            return true;
        }
        if l.count >= MAX_LONG_ENTRIES {
            return false;
        }
        l.count += 1;
        l.by_dir.entry(parent).or_default().insert(name.to_vec());
        true
    }

    /// Queues the invalidation of the name `name` in directory `dir`, if
    /// it was kept long.
    pub(crate) fn drop_long_entry(&self, dir: &FidKey, name: &[u8]) {
        let Some(ino) = self.lock().ino_of(dir) else {
            return;
        };
        let mut l = self.long.lock().unwrap_or_else(|e| e.into_inner());
        let had = l.by_dir.get_mut(&ino).is_some_and(|s| s.remove(name));
        if had {
            l.count -= 1;
            drop(l);
            self.inval.push_entry(ino, name.to_vec());
        }
    }

    /// Queues the invalidation of every name kept long in directory `ino`.
    fn drop_long_entries(&self, ino: u64) {
        let names = {
            let mut l = self.long.lock().unwrap_or_else(|e| e.into_inner());
            let names = l.by_dir.remove(&ino).unwrap_or_default();
            l.count -= names.len();
            names
        };
        for n in names {
            self.inval.push_entry(ino, n);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inodes> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn node(&self, ino: u64) -> Result<NodeRef> {
        self.lock().get(ino).ok_or(Error::NotFound)
    }

    /// The inode of a node, made when absent; no kernel reference taken.
    pub(crate) fn intern(&self, node: NodeRef) -> u64 {
        self.lock().intern(node)
    }

    /// [`Nodes::intern`] with a kernel reference (see [`Inodes`]).
    pub(crate) fn intern_ref(&self, node: NodeRef) -> u64 {
        self.lock().intern_ref(node)
    }

    /// Gives back `n` kernel references; true when none is left.
    pub(crate) fn unref(&self, ino: u64, n: u64) -> bool {
        self.lock().unref(ino, n)
    }

    /// Drops an entry the kernel holds no reference to.
    pub(crate) fn remove(&self, ino: u64) {
        self.lock().remove(ino);
        // The kernel dropped the directory, and its names with it.
        let mut l = self.long.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(names) = l.by_dir.remove(&ino) {
            l.count -= names.len();
        }
    }

    /// See [`Inodes::rekey`].
    pub(crate) fn rekey(&self, old: &FidKey, node: NodeRef) {
        self.lock().rekey(old, node)
    }

    /// See [`Inodes::named`].
    pub(crate) fn named(&self, ino: u64, parent: u64, name: &[u8]) {
        self.lock().named(ino, parent, name)
    }

    /// The path below the mount of the object `key`, if the kernel
    /// looked all of it up.
    pub(crate) fn path_of(&self, key: &FidKey) -> Option<String> {
        let t = self.lock();
        t.path(t.ino_of(key)?)
    }

    /// The path below the mount of inode `ino`, if the kernel looked all
    /// of it up ("" for the mount's root).
    pub(crate) fn path_of_ino(&self, ino: u64) -> Option<String> {
        self.lock().path(ino)
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    /// Tells the kernel to drop what it cached of the fid, if it has it.
    pub(crate) fn invalidate(&self, key: &FidKey) {
        let ino = self.lock().ino_of(key);
        if let Some(ino) = ino {
            self.inval.push(ino);
            self.drop_long_entries(ino);
        }
    }

    /// Whether the kernel's caches of `ino` wait to be dropped.
    pub(crate) fn invalidation_pending(&self, ino: u64) -> bool {
        self.inval.contains(ino)
    }

    /// As [`Nodes::invalidate`] for every known fid of a volume (any cell
    /// when `cell` is None: callback breaks carry no cell).
    pub(crate) fn invalidate_volume(&self, cell: Option<&str>, volume: u32) {
        let inos = self.lock().inos_of_volume(cell, volume);
        for ino in inos {
            self.inval.push(ino);
            self.drop_long_entries(ino);
        }
    }

    /// The nodes matching `f`, with their inode numbers.
    pub(crate) fn matching(&self, f: impl Fn(&FidKey) -> bool) -> Vec<(u64, NodeRef)> {
        let t = self.lock();
        t.all()
            .into_iter()
            .filter_map(|i| t.get(i).map(|n| (i, n)))
            .filter(|(_, n)| f(&n.key()))
            .collect()
    }

    /// Invalidates inode `ino`.
    pub(crate) fn invalidate_ino(&self, ino: u64) {
        self.inval.push(ino);
        self.drop_long_entries(ino);
    }
}
