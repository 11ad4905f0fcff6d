//! The entry points of open files: open, read, write, flush (close), fsync,
//! release, and locks. One call per kernel request: the client decides
//! what an open means (EISDIR, read or write), reads a file through the
//! opener's unstored changes when it has any, and a release unlocks,
//! stores and closes in one step.

use afs_proto::types::FileType;

use crate::attr::{Attr, NodeKind, ROOT_INO};
use crate::client::AfsClient;
use crate::conflict_tree::{is_tree_fh, is_tree_ino};
use crate::validate::{PRSFS_LOCK, PRSFS_LOOKUP, PRSFS_READ, PRSFS_WRITE};
use crate::writes::Handle;
use crate::{Error, Result, VolType};

impl AfsClient {
    /// open(2) of a file: `flags` as the kernel gives them. The status is
    /// revalidated so that an open always sees the current data version
    /// (AFS open-to-close consistency), and the caller's right to read or
    /// write is checked, whatever the cache holds. Returns the handle the
    /// kernel gives back at read, write, flush and release.
    pub async fn open(&self, uid: u32, ino: u64, flags: i32) -> Result<u64> {
        if ino == ROOT_INO {
            return Err(Error::IsDir);
        }
        if is_tree_ino(ino) {
            return self.tree_open(uid, ino, flags).await;
        }
        let inner = &self.inner;
        let node = inner.nodes.node(ino)?;
        let who = inner.valid.who(uid, &node);
        let st = inner.valid.valid_status(&node, &who).await?;
        if st.file_type == FileType::Directory.as_u32() {
            return Err(Error::IsDir);
        }
        let write = flags & libc::O_ACCMODE != libc::O_RDONLY;
        // Checked before anything changes, as OpenAFS's afs_open does: the
        // ACL and the owner's mode bits.
        if flags & libc::O_ACCMODE != libc::O_WRONLY {
            inner.valid.require(&node, &who, PRSFS_READ)?;
        }
        if write {
            if node.vol_type != VolType::Rw {
                return Err(Error::ReadOnly);
            }
            inner.valid.require(&node, &who, PRSFS_WRITE)?;
            inner
                .open
                .open_write(&node, &who, flags & libc::O_TRUNC != 0)
                .await?;
        }
        Ok(inner.open.add_handle(Handle {
            node,
            ino,
            uid,
            write,
        }))
    }

    /// Whether the kernel may keep the pages it cached of `ino` across
    /// this open (FOPEN_KEEP_CACHE). They hold the server's data of the
    /// version shown: every change of data version, callback break and
    /// flush drops them (the client's invalidations), so they stay true
    /// while nobody writes the file here. Never for an open that writes,
    /// nor while anyone holds unstored or unreplayed changes to the file:
    /// those are their writer's alone, and the page cache is every user's.
    /// The open itself checked this caller's rights.
    pub fn keep_page_cache(&self, ino: u64, flags: i32) -> bool {
        if flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_TRUNC != 0 {
            return false;
        }
        let Ok(node) = self.inner.nodes.node(ino) else {
            return false;
        };
        let key = node.key();
        !self.inner.open.changing(&key)
            && !self.inner.exec.journal.pending.contains(&key)
            && !self.inner.nodes.invalidation_pending(ino)
    }

    /// opendir(3): listing needs the lookup right; checked here so that a
    /// directory cached for one user is not listed to another.
    /// Checks that `uid` may list the directory. Ok(true) when the kernel
    /// may keep the listing across opens, for every user: anyone
    /// (system:anyuser) may list it, its callback holds (a break drops the
    /// kernel's copy) and nothing of it waits for replay.
    pub async fn opendir(&self, uid: u32, ino: u64) -> Result<bool> {
        if ino == ROOT_INO {
            return Ok(false);
        }
        if is_tree_ino(ino) {
            return self
                .tree_access(uid, ino, libc::R_OK | libc::X_OK)
                .await
                .map(|()| false);
        }
        let inner = &self.inner;
        let node = inner.nodes.node(ino)?;
        let who = inner.valid.who(uid, &node);
        let st = inner.valid.check(&node, &who, PRSFS_LOOKUP).await?;
        if st.file_type != FileType::Directory.as_u32() {
            return Err(Error::NotDir);
        }
        let key = node.key();
        Ok(st.anonymous_access & PRSFS_LOOKUP != 0
            && inner.valid.statuses.valid(&key).is_some()
            && !inner.exec.journal.pending.contains(&key))
    }

    /// Creates a file and opens it (FUSE create): its attributes and handle.
    pub async fn create(
        &self,
        uid: u32,
        parent: u64,
        name: &[u8],
        mode: u32,
        flags: i32,
    ) -> Result<(Attr, u64)> {
        let attr = self.create_file(uid, parent, name, mode).await?;
        let inner = &self.inner;
        let node = inner.nodes.node(attr.ino)?;
        let who = inner.valid.who(uid, &node);
        let write = flags & libc::O_ACCMODE != libc::O_RDONLY;
        if write {
            // The creator may write what it made, whatever the mode says
            // (POSIX create semantics).
            inner.open.open_write(&node, &who, true).await?;
        }
        let fh = inner.open.add_handle(Handle {
            node,
            ino: attr.ino,
            uid,
            write,
        });
        Ok((attr, fh))
    }

    /// Reads through handle `fh`: the opener's unstored changes if any,
    /// else the server's data.
    pub async fn read(&self, uid: u32, fh: u64, offset: u64, size: u32) -> Result<Vec<u8>> {
        if is_tree_fh(fh) {
            return self.tree_read(fh, offset, size);
        }
        let inner = &self.inner;
        let h = inner.open.handle(fh)?;
        let who = inner.valid.who(h.uid, &h.node);
        // The opener's right to read was checked at open (a file made
        // read-protected by its creator still reads through the descriptor
        // that made it; the data path still refuses a recorded denial);
        // anyone else reading through it needs their own.
        let reader = if uid == h.uid {
            who.clone()
        } else {
            let reader = inner.valid.who(uid, &h.node);
            inner.valid.file(&h.node, &reader, PRSFS_READ).await?;
            reader
        };
        if let Some(r) = inner.open.read(&h.node, &who, offset, size).await {
            return r;
        }
        inner.data.read(&h.node, offset, size as u64, &reader).await
    }

    /// Writes through handle `fh` into the cached chunks of the file.
    pub async fn write(&self, fh: u64, offset: u64, data: &[u8]) -> Result<u32> {
        let inner = &self.inner;
        let h = inner.open.handle(fh)?;
        if !h.write {
            return Err(Error::BadHandle);
        }
        let who = inner.valid.who(h.uid, &h.node);
        inner.open.write(&h.node, &who, offset, data).await
    }

    /// close(2) of a descriptor (FUSE flush) and fsync: stores the opener's
    /// changes; when this returns Ok the fileserver has the data.
    pub async fn flush(&self, fh: u64) -> Result<()> {
        if is_tree_fh(fh) {
            return Ok(());
        }
        let h = self.inner.open.handle(fh)?;
        self.inner.open.flush(&h.node, h.uid).await
    }

    /// The last close of a file description: its lock owner's lock ends,
    /// changes still unstored are stored, and the handle goes.
    pub async fn release(&self, fh: u64, lock_owner: Option<u64>) -> Result<()> {
        if is_tree_fh(fh) {
            self.tree_release(fh);
            return Ok(());
        }
        let inner = &self.inner;
        let h = inner.open.handle(fh)?;
        if let Some(owner) = lock_owner {
            let who = inner.valid.who(h.uid, &h.node);
            if let Err(e) = inner.locks.unlock(&h.node, &who, owner).await {
                tracing::warn!(ino = h.ino, "releasing a lock at close: {e}");
            }
        }
        // flush normally stored everything already; this catches a writer
        // whose data is still unstored.
        let r = if h.write {
            inner.open.flush(&h.node, h.uid).await
        } else {
            Ok(())
        };
        inner.open.release(&h.node, h.uid, h.write).await;
        // The last close of a file unlinked while open removes it now.
        if let Some(hidden) = inner.open.close_handle(fh) {
            if let Err(e) = self.remove_hidden(&hidden).await {
                tracing::warn!(fid = ?h.node.fid, "removing a file unlinked while open: {e}");
            }
        }
        r
    }

    /// flock/fcntl: `typ` is F_RDLCK, F_WRLCK or F_UNLCK for the whole
    /// file (AFS has no byte ranges). With `wait` a refused lock is
    /// retried until granted, or until process `pid` is interrupted (EINTR).
    pub async fn setlk(
        &self,
        uid: u32,
        ino: u64,
        owner: u64,
        typ: i32,
        wait: bool,
        pid: u32,
    ) -> Result<()> {
        let inner = &self.inner;
        let node = inner.nodes.node(ino)?;
        let who = inner.valid.who(uid, &node);
        if typ == libc::F_UNLCK {
            return inner.locks.unlock(&node, &who, owner).await;
        }
        let st = inner.valid.valid_status(&node, &who).await?;
        if crate::attr::kind_of(&st) != NodeKind::File {
            return Err(Error::Invalid("locks are for files".into()));
        }
        // A read lock needs `k` or `w`, a write lock `w` (viced's rule).
        let any = if typ == libc::F_WRLCK {
            PRSFS_WRITE
        } else {
            PRSFS_LOCK | PRSFS_WRITE
        };
        inner.valid.require_any(&node, &who, any)?;
        inner
            .locks
            .lock(
                &node,
                &who,
                owner,
                typ == libc::F_WRLCK,
                wait.then_some(pid),
            )
            .await
    }

    /// access(2), as OpenAFS's afs_access answers it: EACCES, or EROFS for
    /// W_OK in a read-only volume.
    pub async fn access(&self, uid: u32, ino: u64, mask: i32) -> Result<()> {
        if is_tree_ino(ino) {
            return self.tree_access(uid, ino, mask).await;
        }
        if ino == ROOT_INO {
            return if mask & libc::W_OK != 0 {
                Err(Error::ReadOnly)
            } else {
                Ok(())
            };
        }
        let inner = &self.inner;
        let node = inner.nodes.node(ino)?;
        let who = inner.valid.who(uid, &node);
        inner.valid.access(&node, &who, mask).await
    }

    /// F_GETLK: whether `owner` could take the lock, as far as this client
    /// knows.
    pub fn getlk(&self, ino: u64, owner: u64, typ: i32) -> i32 {
        match self.inner.nodes.node(ino) {
            Ok(node) => self.inner.locks.conflicting(&node, owner, typ),
            Err(_) => libc::F_UNLCK,
        }
    }
}
