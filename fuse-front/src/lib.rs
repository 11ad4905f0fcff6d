//! The FUSE adapter of afsd-rs: translates kernel requests into calls on the
//! cache manager ([`client::AfsClient`]) and its answers into replies.
//!
//! fuser dispatches requests on one thread; each request is moved onto the
//! tokio runtime so that slow fileserver calls never block other requests.
//! Callback breaks reach the kernel through the session's notifier
//! (`FUSE_NOTIFY_INVAL_INODE`), dropping cached pages and attributes.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use client::{AfsClient, Attr, Caller, InvalidationReceiver, MissAt, NodeKind};
use fuser::{
    FileAttr, FileType, Filesystem, KernelConfig, MountOption, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyLock, ReplyOpen, ReplyStatfs,
    ReplyWrite, ReplyXattr, Request, TimeOrNow,
};
use tokio::runtime::Handle;

/// Errors of the FUSE adapter.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("mounting {path}: {source}")]
    Mount {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// The `fuser::Filesystem` for `/afs`.
pub struct AfsFs {
    client: AfsClient,
    rt: Handle,
}

impl AfsFs {
    pub fn new(client: AfsClient, rt: Handle) -> Self {
        AfsFs { client, rt }
    }
}

fn file_type(k: NodeKind) -> FileType {
    match k {
        NodeKind::File => FileType::RegularFile,
        NodeKind::Dir => FileType::Directory,
        NodeKind::Symlink => FileType::Symlink,
    }
}

fn file_attr(a: &Attr) -> FileAttr {
    let mtime = UNIX_EPOCH + Duration::from_secs(a.mtime);
    FileAttr {
        ino: a.ino,
        size: a.size,
        blocks: a.size.div_ceil(512),
        atime: mtime,
        mtime,
        ctime: mtime,
        crtime: mtime,
        kind: file_type(a.kind),
        perm: (a.mode & 0o7777) as u16,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

/// Replies to an xattr request per the size protocol: size 0 asks for the
/// length, otherwise the value must fit.
fn reply_xattr(reply: ReplyXattr, size: u32, value: &[u8]) {
    if size == 0 {
        reply.size(value.len() as u32);
    } else if value.len() > size as usize {
        reply.error(libc::ERANGE);
    } else {
        reply.data(value);
    }
}

impl Filesystem for AfsFs {
    fn init(&mut self, _req: &Request<'_>, config: &mut KernelConfig) -> Result<(), libc::c_int> {
        let _ = config.set_max_readahead(1 << 20);
        // READDIRPLUS: `ls -l` gets names and attributes in one request.
        let _ = config.add_capabilities(
            fuser::consts::FUSE_DO_READDIRPLUS
                | fuser::consts::FUSE_READDIRPLUS_AUTO
                // fcntl and flock locks come to us, and go to the fileserver.
                | fuser::consts::FUSE_POSIX_LOCKS
                | fuser::consts::FUSE_FLOCK_LOCKS,
        );
        Ok(())
    }

    fn lookup(&mut self, req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEntry) {
        let c = self.client.clone();
        let uid = req.uid();
        let caller = caller(req);
        let name = name.as_bytes().to_vec();
        self.rt.spawn(async move {
            let at = MissAt::Child(parent, &name);
            match c.guarded(caller, at, || c.lookup(uid, parent, &name)).await {
                Ok(a) => reply.entry(&a.ttl, &file_attr(&a), 0),
                Err(e) => {
                    tracing::debug!(parent, name = %String::from_utf8_lossy(&name), "lookup: {e}");
                    reply.error(e.errno())
                }
            }
        });
    }

    /// The kernel dropped an inode (memory pressure, unlink, drop_caches):
    /// the client forgets it too, so its tables follow what the kernel holds.
    fn forget(&mut self, _req: &Request<'_>, ino: u64, nlookup: u64) {
        self.client.forget(ino, nlookup);
    }

    fn getattr(&mut self, req: &Request<'_>, ino: u64, _fh: Option<u64>, reply: ReplyAttr) {
        let c = self.client.clone();
        let uid = req.uid();
        let caller = caller(req);
        self.rt.spawn(async move {
            match c
                .guarded(caller, MissAt::Node(ino), || c.getattr(uid, ino))
                .await
            {
                Ok(a) => reply.attr(&a.ttl, &file_attr(&a)),
                Err(e) => {
                    tracing::debug!(ino, "getattr: {e}");
                    reply.error(e.errno())
                }
            }
        });
    }

    fn readlink(&mut self, req: &Request<'_>, ino: u64, reply: ReplyData) {
        let c = self.client.clone();
        let uid = req.uid();
        let caller = caller(req);
        self.answer(
            reply,
            async move {
                c.guarded(caller, MissAt::Node(ino), || c.readlink(uid, ino))
                    .await
            },
            |reply, d| reply.data(&d),
        );
    }

    fn open(&mut self, req: &Request<'_>, ino: u64, flags: i32, reply: ReplyOpen) {
        let uid = req.uid();
        let c = self.client.clone();
        let caller = caller(req);
        self.rt.spawn(async move {
            let open = || c.open(uid, ino, flags);
            match c.guarded(caller, MissAt::Node(ino), open).await {
                Ok(fh) => {
                    let keep = if c.keep_page_cache(ino, flags) {
                        fuser::consts::FOPEN_KEEP_CACHE
                    } else {
                        0
                    };
                    reply.opened(fh, keep)
                }
                Err(e) => {
                    tracing::info!(ino, "open: {e}");
                    reply.error(e.errno())
                }
            }
        });
    }

    fn read(
        &mut self,
        req: &Request<'_>,
        ino: u64,
        fh: u64,
        offset: i64,
        size: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyData,
    ) {
        if offset < 0 {
            reply.error(libc::EINVAL);
            return;
        }
        let c = self.client.clone();
        let uid = req.uid();
        let caller = caller(req);
        self.rt.spawn(async move {
            let read = || c.read(uid, fh, offset as u64, size);
            match c.guarded(caller, MissAt::Handle(fh), read).await {
                Ok(d) => reply.data(&d),
                Err(e) => {
                    tracing::info!(ino, offset, "read: {e}");
                    reply.error(e.errno())
                }
            }
        });
    }

    /// close(2): AFS stores the whole file at close, and close returns
    /// only once the fileserver has it.
    fn flush(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        fh: u64,
        _lock_owner: u64,
        reply: ReplyEmpty,
    ) {
        let c = self.client.clone();
        self.rt.spawn(async move {
            match c.flush(fh).await {
                Ok(()) => reply.ok(),
                Err(e) => {
                    tracing::warn!(ino, "storing at close: {e}");
                    reply.error(e.errno())
                }
            }
        });
    }

    fn fsync(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let c = self.client.clone();
        self.answer(reply, async move { c.flush(fh).await }, |reply, ()| {
            reply.ok()
        });
    }

    /// The last close of a file description: unlock, store, close, in the
    /// client.
    #[allow(clippy::too_many_arguments)]
    fn release(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        _flags: i32,
        lock_owner: Option<u64>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let c = self.client.clone();
        self.answer(
            reply,
            async move { c.release(fh, lock_owner).await },
            |reply, ()| reply.ok(),
        );
    }

    fn opendir(&mut self, req: &Request<'_>, ino: u64, _flags: i32, reply: ReplyOpen) {
        // Listing needs the lookup right; checked here so that a directory
        // cached for one user is not listed to another.
        let c = self.client.clone();
        let uid = req.uid();
        let caller = caller(req);
        self.answer(
            reply,
            async move {
                c.guarded(caller, MissAt::Node(ino), || c.opendir(uid, ino))
                    .await
            },
            // A listing anyone may see, under a callback: the kernel keeps
            // it (a break or a change invalidates the directory's inode).
            |reply, keep| {
                let flags = if keep {
                    fuser::consts::FOPEN_KEEP_CACHE | fuser::consts::FOPEN_CACHE_DIR
                } else {
                    0
                };
                reply.opened(0, flags)
            },
        );
    }

    fn readdir(
        &mut self,
        req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        mut reply: ReplyDirectory,
    ) {
        let c = self.client.clone();
        let uid = req.uid();
        let caller = caller(req);
        self.rt.spawn(async move {
            match c
                .guarded(caller, MissAt::Node(ino), || c.readdir(uid, ino))
                .await
            {
                Ok(entries) => {
                    let after = offset.max(0) as u64;
                    for e in entries.iter().filter(|e| e.cookie > after) {
                        if reply.add(
                            e.ino,
                            e.cookie as i64,
                            file_type(e.kind),
                            OsStr::from_bytes(&e.name),
                        ) {
                            break;
                        }
                    }
                    reply.ok();
                }
                Err(e) => {
                    tracing::info!(ino, "readdir: {e}");
                    reply.error(e.errno())
                }
            }
        });
    }

    fn readdirplus(
        &mut self,
        req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let c = self.client.clone();
        let uid = req.uid();
        let caller = caller(req);
        self.rt.spawn(async move {
            let after = offset.max(0) as u64;
            // A reply buffer holds a few dozen entries; look up no more than that.
            let list = || c.readdirplus(uid, ino, after, 128);
            match c.guarded(caller, MissAt::Node(ino), list).await {
                Ok(entries) => {
                    let mut taken = entries.len();
                    for (i, (e, attr)) in entries.iter().enumerate() {
                        let next = e.cookie as i64;
                        let name = OsStr::from_bytes(&e.name);
                        let full = match attr {
                            Some(a) => reply.add(a.ino, next, name, &a.ttl, &file_attr(a), 0),
                            // No attributes (the cells in /afs, "." and ".."): the
                            // kernel skips "." and ".."; for the rest the zero
                            // TTL makes it ask again at first use. (Node id 0
                            // would hide the name from the listing.)
                            None => {
                                let a = Attr {
                                    ino: e.ino,
                                    kind: e.kind,
                                    size: 0,
                                    mode: 0,
                                    nlink: 1,
                                    uid: 0,
                                    gid: 0,
                                    mtime: 0,
                                    data_version: 0,
                                    ttl: Duration::ZERO,
                                };
                                reply.add(e.ino, next, name, &a.ttl, &file_attr(&a), 0)
                            }
                        };
                        if full {
                            taken = i;
                            break;
                        }
                    }
                    // Entries the buffer did not take carry references the
                    // kernel never got.
                    if ino != client::ROOT_INO {
                        for (e, attr) in &entries[taken..] {
                            if e.name != b"." && e.name != b".." {
                                c.unref(attr.as_ref().map_or(e.ino, |a| a.ino));
                            }
                        }
                    }
                    reply.ok();
                }
                Err(e) => {
                    tracing::info!(ino, "readdirplus: {e}");
                    reply.error(e.errno())
                }
            }
        });
    }

    fn statfs(&mut self, req: &Request<'_>, ino: u64, reply: ReplyStatfs) {
        let c = self.client.clone();
        let uid = req.uid();
        self.rt.spawn(async move {
            match c.statfs(uid, ino).await {
                Ok(s) => reply.statfs(
                    s.blocks, s.bfree, s.bavail, s.files, s.ffree, 1024, 255, 1024,
                ),
                Err(e) => reply.error(e.errno()),
            }
        });
    }

    fn getxattr(
        &mut self,
        req: &Request<'_>,
        ino: u64,
        name: &OsStr,
        size: u32,
        reply: ReplyXattr,
    ) {
        let c = self.client.clone();
        let uid = req.uid();
        let name = name.to_string_lossy().into_owned();
        self.rt.spawn(async move {
            match c.getxattr_as(uid, ino, &name).await {
                Ok(Some(v)) => reply_xattr(reply, size, &v),
                Ok(None) => reply.error(libc::ENODATA),
                Err(e) => reply.error(e.errno()),
            }
        });
    }

    fn listxattr(&mut self, req: &Request<'_>, ino: u64, size: u32, reply: ReplyXattr) {
        let c = self.client.clone();
        let uid = req.uid();
        self.answer(
            reply,
            async move { c.listxattr_all(uid, ino).await },
            move |reply, names| {
                let mut buf = Vec::new();
                for n in names {
                    buf.extend_from_slice(n.as_bytes());
                    buf.push(0);
                }
                reply_xattr(reply, size, &buf);
            },
        );
    }

    /// access(2): answered by the client with OpenAFS's rules (the kernel
    /// asks because the mount does not use default_permissions).
    fn access(&mut self, req: &Request<'_>, ino: u64, mask: i32, reply: ReplyEmpty) {
        let c = self.client.clone();
        let uid = req.uid();
        self.answer(
            reply,
            async move { c.access(uid, ino, mask).await },
            |reply, ()| reply.ok(),
        );
    }

    // Mutations: each becomes one client call, the client's single
    // mutation path.

    fn setattr(
        &mut self,
        req: &Request<'_>,
        ino: u64,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<u64>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<u32>,
        reply: ReplyAttr,
    ) {
        let c = self.client.clone();
        let uid = req.uid();
        let secs = |t: SystemTime| {
            t.duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs() as u32)
                .unwrap_or(0)
        };
        let mtime = mtime.map(|t| match t {
            TimeOrNow::SpecificTime(t) => secs(t),
            TimeOrNow::Now => secs(SystemTime::now()),
        });
        let attrs = client::SetAttrs {
            mode,
            mtime,
            size,
            ..client::SetAttrs::default()
        };
        self.answer(
            reply,
            async move { c.setattr(uid, ino, attrs).await },
            |reply, a| reply.attr(&a.ttl, &file_attr(&a)),
        );
    }

    fn mknod(
        &mut self,
        _req: &Request<'_>,
        _p: u64,
        _n: &OsStr,
        _m: u32,
        _u: u32,
        _r: u32,
        reply: ReplyEntry,
    ) {
        // AFS has no device nodes or FIFOs.
        reply.error(libc::EPERM);
    }

    fn mkdir(
        &mut self,
        req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let c = self.client.clone();
        let uid = req.uid();
        let name = name.as_bytes().to_vec();
        self.answer(
            reply,
            async move { c.mkdir(uid, parent, &name, mode & !umask).await },
            |reply, a| reply.entry(&a.ttl, &file_attr(&a), 0),
        );
    }

    fn unlink(&mut self, req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        let c = self.client.clone();
        let uid = req.uid();
        let name = name.as_bytes().to_vec();
        self.answer(
            reply,
            async move { c.unlink(uid, parent, &name).await },
            |reply, ()| reply.ok(),
        );
    }

    fn rmdir(&mut self, req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        let c = self.client.clone();
        let uid = req.uid();
        let name = name.as_bytes().to_vec();
        self.answer(
            reply,
            async move { c.rmdir(uid, parent, &name).await },
            |reply, ()| reply.ok(),
        );
    }

    fn symlink(
        &mut self,
        req: &Request<'_>,
        parent: u64,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let c = self.client.clone();
        let uid = req.uid();
        let name = link_name.as_bytes().to_vec();
        let target = target.as_os_str().as_bytes().to_vec();
        self.answer(
            reply,
            async move { c.symlink(uid, parent, &name, &target).await },
            |reply, a| reply.entry(&a.ttl, &file_attr(&a), 0),
        );
    }

    fn rename(
        &mut self,
        req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
        reply: ReplyEmpty,
    ) {
        if flags != 0 {
            // RENAME_NOREPLACE and RENAME_EXCHANGE have no AFS equivalent.
            reply.error(libc::EINVAL);
            return;
        }
        let c = self.client.clone();
        let uid = req.uid();
        let name = name.as_bytes().to_vec();
        let newname = newname.as_bytes().to_vec();
        self.answer(
            reply,
            async move { c.rename(uid, parent, &name, newparent, &newname).await },
            |reply, ()| reply.ok(),
        );
    }

    fn link(
        &mut self,
        req: &Request<'_>,
        ino: u64,
        newparent: u64,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let c = self.client.clone();
        let uid = req.uid();
        let name = newname.as_bytes().to_vec();
        self.answer(
            reply,
            async move { c.link(uid, ino, newparent, &name).await },
            |reply, a| reply.entry(&a.ttl, &file_attr(&a), 0),
        );
    }

    fn write(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        offset: i64,
        data: &[u8],
        _write_flags: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyWrite,
    ) {
        if offset < 0 {
            reply.error(libc::EINVAL);
            return;
        }
        let c = self.client.clone();
        let data = data.to_vec();
        self.answer(
            reply,
            async move { c.write(fh, offset as u64, &data).await },
            |reply, n| reply.written(n),
        );
    }

    fn create(
        &mut self,
        req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let c = self.client.clone();
        let uid = req.uid();
        let name = name.as_bytes().to_vec();
        self.answer(
            reply,
            async move { c.create(uid, parent, &name, mode & !umask, flags).await },
            |reply, (a, fh)| reply.created(&a.ttl, &file_attr(&a), 0, fh, 0),
        );
    }

    /// Only `afs.acl` can be set: it stores the directory's ACL as the
    /// caller (StoreACL).
    fn getlk(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        lock_owner: u64,
        _start: u64,
        _end: u64,
        typ: i32,
        pid: u32,
        reply: ReplyLock,
    ) {
        let t = self.client.getlk(ino, lock_owner, typ);
        // AFS locks cover the whole file.
        reply.locked(0, u64::MAX, t, if t == libc::F_UNLCK { 0 } else { pid });
    }

    fn setlk(
        &mut self,
        req: &Request<'_>,
        ino: u64,
        _fh: u64,
        lock_owner: u64,
        _start: u64,
        _end: u64,
        typ: i32,
        _pid: u32,
        sleep: bool,
        reply: ReplyEmpty,
    ) {
        let c = self.client.clone();
        let uid = req.uid();
        let pid = req.pid();
        self.answer(
            reply,
            async move { c.setlk(uid, ino, lock_owner, typ, sleep, pid).await },
            |reply, ()| reply.ok(),
        );
    }

    fn setxattr(
        &mut self,
        req: &Request<'_>,
        ino: u64,
        name: &OsStr,
        value: &[u8],
        _f: i32,
        _p: u32,
        reply: ReplyEmpty,
    ) {
        if name.as_bytes() != client::XATTR_ACL.as_bytes() {
            reply.error(libc::ENOTSUP);
            return;
        }
        let c = self.client.clone();
        let uid = req.uid();
        let value = value.to_vec();
        self.answer(
            reply,
            async move { c.set_acl(uid, ino, &value).await },
            |reply, ()| reply.ok(),
        );
    }

    fn removexattr(&mut self, _req: &Request<'_>, _i: u64, _n: &OsStr, reply: ReplyEmpty) {
        reply.error(libc::ENOTSUP);
    }
}

/// Who made a request, for the miss policy (which reads `/proc/PID`).
fn caller(req: &Request<'_>) -> Caller {
    Caller {
        uid: req.uid(),
        pid: req.pid(),
    }
}

/// Replies that can carry an errno.
trait ErrorReply: Send + 'static {
    fn fail(self, errno: i32);
}

macro_rules! error_reply {
    ($($t:ty),*) => {
        $(impl ErrorReply for $t {
            fn fail(self, errno: i32) {
                self.error(errno)
            }
        })*
    };
}

error_reply!(
    ReplyEntry,
    ReplyAttr,
    ReplyData,
    ReplyEmpty,
    ReplyOpen,
    ReplyWrite,
    ReplyCreate,
    ReplyStatfs,
    ReplyXattr
);

impl AfsFs {
    /// Runs a client call on the runtime and answers the kernel: `ok`
    /// builds the reply from the result, an error becomes its errno.
    fn answer<R: ErrorReply, T: Send + 'static>(
        &self,
        reply: R,
        op: impl std::future::Future<Output = client::Result<T>> + Send + 'static,
        ok: impl FnOnce(R, T) + Send + 'static,
    ) {
        self.rt.spawn(async move {
            match op.await {
                Ok(v) => ok(reply, v),
                Err(e) => reply.fail(e.errno()),
            }
        });
    }
}

/// A mounted `/afs`. Dropping it unmounts.
pub struct Mounted {
    session: fuser::BackgroundSession,
}

impl Mounted {
    /// True once the kernel side went away (someone ran `umount`).
    pub fn is_finished(&self) -> bool {
        self.session.guard.is_finished()
    }

    /// Unmounts. The session thread ends when the kernel closes the device.
    pub fn unmount(self) {
        drop(self.session);
    }
}

/// Mounts `client` at `mountpoint` and forwards invalidations to the kernel.
pub fn mount(
    client: AfsClient,
    rt: Handle,
    mountpoint: &Path,
    mut invalidations: InvalidationReceiver,
) -> Result<Mounted, Error> {
    let options = vec![
        MountOption::FSName("afsd-rs".into()),
        MountOption::Subtype("afs".into()),
        MountOption::AllowOther,
        MountOption::NoDev,
        MountOption::NoSuid,
    ];
    let fs = AfsFs::new(client, rt.clone());
    let session = fuser::Session::new(fs, mountpoint, &options).map_err(|source| Error::Mount {
        path: mountpoint.display().to_string(),
        source,
    })?;
    let notifier = session.notifier();
    let session = session.spawn().map_err(|source| Error::Mount {
        path: mountpoint.display().to_string(),
        source,
    })?;
    rt.spawn(async move {
        while let Some(batch) = invalidations.next_batch().await {
            let notifier = notifier.clone();
            // The notification write can wait on kernel locks: keep it off
            // the runtime's worker threads.
            let _ = tokio::task::spawn_blocking(move || {
                for inv in batch {
                    // ENOENT: the kernel does not hold it, nothing to drop.
                    let sent = match &inv.name {
                        None => notifier.inval_inode(inv.ino, 0, 0),
                        Some(name) => notifier.inval_entry(inv.ino, OsStr::from_bytes(name)),
                    };
                    if let Err(e) = sent {
                        if e.raw_os_error() != Some(libc::ENOENT) {
                            tracing::debug!(ino = inv.ino, "invalidation: {e}");
                        }
                    }
                }
            })
            .await;
        }
    });
    Ok(Mounted { session })
}
