//! The inode table behind a lock, and the channel that tells the kernel
//! to drop what it cached of a node.

use std::sync::Mutex;

use std::sync::Arc;

use cache::FidKey;

use crate::inode::{Inodes, NodeRef};
use crate::invalidations::Queue;
use crate::{Error, Result};

/// Inode numbers of fids, and kernel invalidations.
pub(crate) struct Nodes {
    table: Mutex<Inodes>,
    inval: Arc<Queue>,
}

impl Nodes {
    pub(crate) fn new(inval: Arc<Queue>) -> Self {
        Nodes {
            table: Mutex::new(Inodes::new()),
            inval,
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
        self.lock().remove(ino)
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
    }
}
