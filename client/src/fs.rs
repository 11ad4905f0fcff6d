//! File-system semantics of `/afs`: what lookup, getattr, readdir, read,
//! readlink, statfs and the xattrs mean for AFS objects.
//!
//! The root (`/afs`) is synthetic, like OpenAFS's dynroot: it lists each
//! configured cell twice, `CELL` (root.cell, the RO clone when one exists)
//! and `.CELL` (root.cell RW). Below it every node is a fid. Mount points are
//! followed at lookup, so the kernel sees a mount point as the root directory
//! of the volume it names.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use afs_proto::fs as rpcs;
use afs_proto::types::{CallBack, FetchStatus, Fid, FileType, Uuid};
use cache::{
    Batch, DirEntryRecord, DirRecord, FidKey, Op, RocksStore, StatusRecord, Store,
    LOCAL_DATA_VERSION,
};
use rx::RxEndpoint;
use tokio::sync::{mpsc, OnceCell};

use crate::identity::{
    Identity, RightsTable, TokenInfo, Tokens, ANONYMOUS, PRSFS_LOOKUP, PRSFS_READ,
};
use crate::inode::{Inodes, NodeRef};
use crate::mutation::{create_status, name_str, Mutation, SetAttrs};
use crate::openfile::{spans, OpenFile};
use crate::rpc::RpcClient;
use crate::status::{now_secs, StatusTable};
use crate::volume::{split_volume_suffix, VolumeDb};
use crate::{CellDb, ClientConfig, Error, MountKind, MountPoint, Result, Stats, VolType};

/// Inode number of `/afs`.
pub const ROOT_INO: u64 = 1;

/// How many DV-moved retries a read makes before giving up.
const MAX_RETRIES: usize = 5;
/// Chunks kept decoded in memory for sequential readers.
const MEM_CHUNKS: usize = 16;

/// Kind of a node as the kernel should see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeKind {
    File,
    Dir,
    Symlink,
}

/// Attributes of a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub kind: NodeKind,
    pub size: u64,
    pub mode: u32,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: u64,
    pub data_version: u64,
}

/// One readdir entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntryOut {
    pub name: Vec<u8>,
    pub ino: u64,
    pub kind: NodeKind,
    /// Where a listing resumes after this entry (the FUSE offset). A hash
    /// of the name, so that it stays put while other entries come and go:
    /// a program deleting entries as it lists them still meets every one.
    pub cookie: u64,
}

/// The readdir cookie of a name: "." is 1, ".." 2, any other name an
/// FNV-1a hash folded above them and below `i64::MAX` (FUSE offsets are
/// signed). Listings are sorted by it.
fn dir_cookie(name: &[u8]) -> u64 {
    match name {
        b"." => 1,
        b".." => 2,
        _ => {
            let mut h: u64 = 0xcbf2_9ce4_8422_2325;
            for &b in name {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
            3 + h % (i64::MAX as u64 - 3)
        }
    }
}

/// statfs answer, in 1 KiB blocks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatFs {
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
}

/// A node whose kernel-cached pages and attributes must be dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Invalidation {
    pub ino: u64,
}

/// A parsed directory with a name index, for one data version.
struct ParsedDir {
    data_version: u64,
    entries: Vec<DirEntryRecord>,
    index: HashMap<Vec<u8>, usize>,
}

impl ParsedDir {
    fn new(rec: DirRecord) -> Self {
        let index = rec
            .entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.name.clone(), i))
            .collect();
        ParsedDir {
            data_version: rec.data_version,
            entries: rec.entries,
            index,
        }
    }
}

type ChunkKey = (FidKey, u64, u64);
/// A chunk fetch shared by every reader waiting for it. `None` means the
/// file's data version moved while fetching.
type ChunkFetch = Arc<OnceCell<std::result::Result<Option<Arc<Vec<u8>>>, (i32, String)>>>;

pub(crate) struct Inner {
    config: ClientConfig,
    cells: CellDb,
    rpc: RpcClient,
    store: Arc<dyn Store>,
    stats: Arc<Stats>,
    volumes: VolumeDb,
    inodes: Mutex<Inodes>,
    statuses: StatusTable,
    dirs: Mutex<HashMap<FidKey, Arc<ParsedDir>>>,
    mem_chunks: Mutex<VecDeque<(ChunkKey, Arc<Vec<u8>>)>>,
    inflight: Mutex<HashMap<ChunkKey, ChunkFetch>>,
    servers_used: Mutex<Vec<SocketAddr>>,
    inval: mpsc::UnboundedSender<Invalidation>,
    pub(crate) uuid: Uuid,
    tokens: Tokens,
    rights: RightsTable,
    /// Files being written: what changed (in the cache), stored at close.
    dirty: Mutex<HashMap<u64, Arc<tokio::sync::Mutex<OpenFile>>>>,
    /// Their lengths as the user sees them, for every attribute answer
    /// (the server's length is the stored one).
    open_lengths: Mutex<HashMap<u64, u64>>,
    /// The cache size limit in force (`setcachesize` changes it).
    cache_bytes: std::sync::atomic::AtomicU64,
    /// Whole-file locks this client holds on fileservers.
    locks: Mutex<HashMap<u64, HeldLock>>,
}

/// A lock held at the fileserver for local lock owners. AFS locks are
/// whole-file and belong to the client, so local owners share one.
struct HeldLock {
    write: bool,
    owners: std::collections::HashSet<u64>,
    renewer: tokio::task::JoinHandle<()>,
}

/// The cache manager. Cheap to clone; all clones share one state.
#[derive(Clone)]
pub struct AfsClient {
    inner: Arc<Inner>,
}

impl AfsClient {
    /// Reads the cell configuration, opens the cache and binds the Rx
    /// endpoint that serves both our calls and the callback service. The
    /// receiver yields nodes whose kernel caches must be invalidated.
    pub async fn start(
        config: ClientConfig,
    ) -> Result<(AfsClient, mpsc::UnboundedReceiver<Invalidation>)> {
        let cells = CellDb::load(&config.conf_dir)?;
        if cells.cells.is_empty() {
            return Err(Error::Config(format!(
                "{} lists no cells",
                config.conf_dir.join("CellServDB").display()
            )));
        }
        let store: Arc<dyn Store> = Arc::new(RocksStore::open(&config.cache_dir)?);
        Self::start_with_store(config, cells, store).await
    }

    /// As [`AfsClient::start`], with a given store and cell list.
    pub async fn start_with_store(
        config: ClientConfig,
        cells: CellDb,
        store: Arc<dyn Store>,
    ) -> Result<(AfsClient, mpsc::UnboundedReceiver<Invalidation>)> {
        let uuid = match store.get_meta("uuid")? {
            Some(b) if b.len() == 16 => {
                let mut a = [0u8; 16];
                a.copy_from_slice(&b);
                Uuid::from_bytes(a)
            }
            _ => {
                let mut a: [u8; 16] = rand::random();
                a[6] = (a[6] & 0x0f) | 0x40; // version 4
                a[8] = (a[8] & 0x3f) | 0x80; // RFC 4122 variant
                let mut b = Batch::new();
                b.push(Op::PutMeta("uuid".into(), a.to_vec()));
                store.apply(b)?;
                Uuid::from_bytes(a)
            }
        };
        let stored_tokens = store.tokens()?;
        let cache_bytes = config.cache_bytes;
        store.set_limits(cache::Limits {
            max_entries: config.cache_entries,
            disk_bytes: config.cache_bytes,
            ..cache::Limits::default()
        });
        // A smaller limit than last time takes effect now, not at the next fetch.
        // Unstored writes of a run that died before their close returned
        // were never acknowledged; without a change log (disconnected
        // operation brings one) nothing says what they belong to.
        let dirty = store.usage().dirty_bytes;
        if dirty > 0 {
            let mut b = Batch::new();
            b.push(Op::DiscardDirty {
                data_version: LOCAL_DATA_VERSION,
            });
            store.apply(b)?;
            tracing::warn!(
                bytes = dirty - store.usage().dirty_bytes,
                "dropped writes of an earlier run whose close never returned"
            );
        }
        store.evict()?;
        let rx_level = config.rxkad_level;
        let rx_config = rx::Config {
            dead_time: config.dead_time,
            served_services: vec![afs_proto::cb::CB_SERVICE_ID],
            ..rx::Config::default()
        };
        let bind: SocketAddr = "0.0.0.0:0"
            .parse()
            .map_err(|_| Error::Config("bind address".into()))?;
        let (endpoint, incoming) = RxEndpoint::bind(bind, rx_config)?;
        let stats = Arc::new(Stats::default());
        let (inval, inval_rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            config,
            cells,
            rpc: RpcClient {
                endpoint,
                stats: stats.clone(),
                down: Mutex::new(HashMap::new()),
            },
            store,
            stats,
            volumes: VolumeDb::default(),
            inodes: Mutex::new(Inodes::new()),
            statuses: StatusTable::default(),
            dirs: Mutex::new(HashMap::new()),
            mem_chunks: Mutex::new(VecDeque::new()),
            inflight: Mutex::new(HashMap::new()),
            servers_used: Mutex::new(Vec::new()),
            inval,
            uuid,
            tokens: Tokens::new(rx_level, stored_tokens),
            rights: RightsTable::default(),
            dirty: Mutex::new(HashMap::new()),
            open_lengths: Mutex::new(HashMap::new()),
            cache_bytes: std::sync::atomic::AtomicU64::new(cache_bytes),
            locks: Mutex::new(HashMap::new()),
        });
        tokio::spawn(crate::callback::serve(Arc::downgrade(&inner), incoming));
        tracing::info!(uuid = %uuid, "cache manager started");
        Ok((AfsClient { inner }, inval_rx))
    }

    /// The configured cells, local cell first.
    pub fn cells(&self) -> Vec<String> {
        let db = &self.inner.cells;
        let mut names: Vec<String> = Vec::new();
        if let Some(tc) = &db.this_cell {
            names.push(tc.to_ascii_lowercase());
        }
        for c in &db.cells {
            if !names.contains(&c.name) {
                names.push(c.name.clone());
            }
        }
        names
    }

    /// Locates root.cell of `cell` and fetches its root status: proves the
    /// cell's VL server and a fileserver answer. Used at mount time so that
    /// a misconfiguration is reported at once.
    pub async fn check_cell(&self, cell: &str) -> Result<()> {
        let name = cell.as_bytes().to_vec();
        self.lookup(0, ROOT_INO, &name).await.map(|_| ())
    }

    /// The address of the Rx socket our calls leave from and the callback
    /// service listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.rpc.endpoint.local_addr()
    }

    /// The client's UUID, stable for the life of its cache.
    pub fn uuid(&self) -> Uuid {
        self.inner.uuid
    }

    /// Sets `uid`'s token for a cell (from `afsd-rs aklog` over the control
    /// socket, whose peer credentials named the uid). Kept in the cache's
    /// store, so it survives restarts.
    pub fn set_token(&self, token: cache::TokenRecord) -> Result<()> {
        let cell = token.cell.to_ascii_lowercase();
        if self.inner.cells.get(&cell).is_none() {
            return Err(Error::UnknownCell(cell));
        }
        let token = cache::TokenRecord {
            cell: cell.clone(),
            ..token
        };
        let mut b = Batch::new();
        b.push(Op::PutToken(token.clone()));
        self.inner.store.apply(b)?;
        self.inner.tokens.clear_warning(token.uid, &cell);
        tracing::info!(uid = token.uid, cell = %cell, principal = %token.principal, "token set");
        self.inner.tokens.insert(token);
        Ok(())
    }

    /// `uid`'s tokens, expired ones included and marked.
    pub fn tokens(&self, uid: u32) -> Vec<TokenInfo> {
        self.inner.tokens.list(uid)
    }

    /// Drops `uid`'s tokens (one cell, or all). Returns the cells dropped.
    pub fn unlog(&self, uid: u32, cell: Option<&str>) -> Result<Vec<String>> {
        let cells = self.inner.tokens.remove(uid, cell);
        let mut b = Batch::new();
        for c in &cells {
            b.push(Op::DeleteToken {
                uid,
                cell: c.clone(),
            });
        }
        self.inner.store.apply(b)?;
        Ok(cells)
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.inner.stats
    }

    /// Rx endpoint counters, for the stats output.
    pub fn rx_stats(&self) -> String {
        format!("{:?}", self.inner.rpc.endpoint.stats())
    }

    /// Tells every fileserver we used to drop our callbacks (clean unmount).
    pub async fn shutdown(&self) {
        let servers = self
            .inner
            .servers_used
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for s in servers {
            let r = tokio::time::timeout(
                std::time::Duration::from_secs(3),
                self.inner.rpc.call(s, &rpcs::GiveUpAllCallBacks),
            )
            .await;
            tracing::debug!(server = %s, ok = matches!(r, Ok(Ok(_))), "GiveUpAllCallBacks");
        }
    }

    pub async fn getattr(&self, uid: u32, ino: u64) -> Result<Attr> {
        if ino == ROOT_INO {
            return Ok(root_attr());
        }
        let node = self.inner.node(ino)?;
        let who = self.inner.who(uid, &node);
        let st = self.inner.valid_status(&node, &who).await?;
        Ok(self.inner.attr(ino, &st))
    }

    pub async fn lookup(&self, uid: u32, parent: u64, name: &[u8]) -> Result<Attr> {
        if name.is_empty() || name.len() > 255 || name.contains(&b'/') {
            return Err(Error::NotFound);
        }
        let inner = &self.inner;
        if parent == ROOT_INO {
            let node = inner.cell_root(name).await?;
            let who = inner.who(uid, &node);
            return inner.attr_of_node(node, &who).await;
        }
        let pnode = inner.node(parent)?;
        let who = inner.who(uid, &pnode);
        let dir = inner.dir(&pnode, &who).await?;
        inner.require(&pnode, &who, PRSFS_LOOKUP)?;
        if name == b"." {
            return self.getattr(uid, parent).await;
        }
        let Some(&i) = dir.index.get(name) else {
            return Err(Error::NotFound);
        };
        let e = &dir.entries[i];
        let child = pnode.with_fid(Fid::new(pnode.fid.volume, e.vnode, e.unique));
        if name != b".." && !inner.has_valid(&child, &who) {
            inner.bulk_prefetch(&pnode, &dir, i, &who).await;
        }
        let st = inner.valid_status(&child, &who).await?;
        if is_mount_point(&st) {
            let target = inner.resolve_mount_point(&child, &st, &who).await?;
            let who = inner.who(uid, &target);
            return inner.attr_of_node(target, &who).await;
        }
        let ino = inner.intern_ref(child);
        Ok(inner.attr(ino, &st))
    }

    pub async fn readdir(&self, uid: u32, ino: u64) -> Result<Vec<DirEntryOut>> {
        let inner = &self.inner;
        if ino == ROOT_INO {
            let mut out = vec![
                DirEntryOut {
                    name: b".".to_vec(),
                    ino: ROOT_INO,
                    kind: NodeKind::Dir,
                    cookie: dir_cookie(b"."),
                },
                DirEntryOut {
                    name: b"..".to_vec(),
                    ino: ROOT_INO,
                    kind: NodeKind::Dir,
                    cookie: dir_cookie(b".."),
                },
            ];
            for (i, c) in self.cells().into_iter().enumerate() {
                let base = u64::MAX - 2 * i as u64;
                out.push(DirEntryOut {
                    name: c.clone().into_bytes(),
                    ino: base,
                    kind: NodeKind::Dir,
                    cookie: dir_cookie(c.as_bytes()),
                });
                let dot = format!(".{c}");
                out.push(DirEntryOut {
                    cookie: dir_cookie(dot.as_bytes()),
                    name: dot.into_bytes(),
                    ino: base - 1,
                    kind: NodeKind::Dir,
                });
            }
            out.sort_by(|a, b| (a.cookie, &a.name).cmp(&(b.cookie, &b.name)));
            return Ok(out);
        }
        let node = inner.node(ino)?;
        let who = inner.who(uid, &node);
        let dir = inner.dir(&node, &who).await?;
        inner.require(&node, &who, PRSFS_LOOKUP)?;
        let mut out = Vec::with_capacity(dir.entries.len());
        for e in &dir.entries {
            let child = node.with_fid(Fid::new(node.fid.volume, e.vnode, e.unique));
            let kind = match inner.statuses.known(&child.key()) {
                Some(st) if is_mount_point(&st) => NodeKind::Dir,
                Some(st) => kind_of(&st),
                // AFS gives directories odd vnode numbers and files even ones.
                None if e.vnode % 2 == 1 => NodeKind::Dir,
                None => NodeKind::File,
            };
            let cino = if e.name == b"." {
                ino
            } else {
                inner.intern(child)
            };
            out.push(DirEntryOut {
                name: e.name.clone(),
                ino: cino,
                kind,
                cookie: dir_cookie(&e.name),
            });
        }
        out.sort_by(|a, b| (a.cookie, &a.name).cmp(&(b.cookie, &b.name)));
        Ok(out)
    }

    /// Entries with their attributes (FUSE readdirplus): one call lists a
    /// directory for `ls -l`. Statuses come in InlineBulkStatus batches of
    /// 50 through lookup's prefetch; mount points show their volume's root.
    /// Entries whose status cannot be had (deleted meanwhile, no access) are
    /// listed without attributes.
    pub async fn readdirplus(
        &self,
        uid: u32,
        ino: u64,
        after: u64,
        max: usize,
    ) -> Result<Vec<(DirEntryOut, Option<Attr>)>> {
        let entries = self.readdir(uid, ino).await?;
        let mut out = Vec::with_capacity(max.min(entries.len()));
        for e in entries.into_iter().filter(|e| e.cookie > after).take(max) {
            // The root lists cells: looking each up would ask every cell's
            // VL server just to list /afs.
            let attr = if ino == ROOT_INO || e.name == b"." || e.name == b".." {
                None
            } else {
                match self.lookup(uid, ino, &e.name).await {
                    Ok(a) => Some(a),
                    Err(err) => {
                        // Listed all the same: the kernel holds the inode.
                        if let Ok(n) = self.inner.node(e.ino) {
                            self.inner.intern_ref(n);
                        }
                        tracing::debug!(name = %String::from_utf8_lossy(&e.name), "readdirplus lookup: {err}");
                        // The last status we had is better than none.
                        let node = self.inner.node(e.ino).ok();
                        node.and_then(|n| self.inner.statuses.known(&n.key()))
                            .filter(|st| !is_mount_point(st))
                            .map(|st| self.inner.attr(e.ino, &st))
                    }
                }
            };
            out.push((e, attr));
        }
        Ok(out)
    }

    pub async fn read(&self, uid: u32, ino: u64, offset: u64, size: u32) -> Result<Vec<u8>> {
        if ino == ROOT_INO {
            return Err(Error::IsDir);
        }
        let node = self.inner.node(ino)?;
        let who = self.inner.who(uid, &node);
        self.inner.valid_status(&node, &who).await?;
        self.inner.require(&node, &who, PRSFS_READ)?;
        self.inner.read(&node, offset, size as u64, &who).await
    }

    pub async fn readlink(&self, uid: u32, ino: u64) -> Result<Vec<u8>> {
        if ino == ROOT_INO {
            return Err(Error::NotSymlink);
        }
        let node = self.inner.node(ino)?;
        let who = self.inner.who(uid, &node);
        let st = self.inner.valid_status(&node, &who).await?;
        if st.file_type != FileType::Symlink.as_u32() {
            return Err(Error::NotSymlink);
        }
        self.inner.read(&node, 0, st.length.min(4096), &who).await
    }

    /// Called at open: the status is revalidated so that an open always
    /// sees the current data version (AFS open-to-close consistency), and
    /// the caller's right to read is checked, whatever the cache holds.
    pub async fn open(&self, uid: u32, ino: u64) -> Result<Attr> {
        let attr = self.getattr(uid, ino).await?;
        if ino != ROOT_INO {
            let node = self.inner.node(ino)?;
            let who = self.inner.who(uid, &node);
            let needed = if attr.kind == NodeKind::Dir {
                PRSFS_LOOKUP
            } else {
                PRSFS_READ
            };
            self.inner.require(&node, &who, needed)?;
        }
        Ok(attr)
    }

    pub async fn statfs(&self, uid: u32, ino: u64) -> Result<StatFs> {
        let generic = StatFs {
            blocks: 1 << 30,
            bfree: 1 << 30,
            bavail: 1 << 30,
            files: 1 << 24,
            ffree: 1 << 24,
        };
        if ino == ROOT_INO {
            return Ok(generic);
        }
        let node = self.inner.node(ino)?;
        let who = self.inner.who(uid, &node);
        let vs = self
            .inner
            .fs_call(
                &node,
                &who,
                &rpcs::GetVolumeStatus {
                    volume: node.fid.volume,
                },
            )
            .await?;
        let part_total = vs.part_max_blocks.max(0) as u64;
        let part_free = vs.part_blocks_avail.max(0) as u64;
        let used = vs.blocks_in_use.max(0) as u64;
        let (total, free) = if vs.max_quota > 0 {
            let q = vs.max_quota as u64;
            (q, q.saturating_sub(used).min(part_free))
        } else {
            (part_total, part_free)
        };
        Ok(StatFs {
            blocks: total,
            bfree: free,
            bavail: free,
            ..generic
        })
    }

    /// The read-only xattrs Linux kAFS offers: `afs.fid`, `afs.cell`,
    /// `afs.volume`; and `afsd.stats` on the root for the stats command.
    pub async fn getxattr(&self, ino: u64, name: &str) -> Result<Option<Vec<u8>>> {
        if ino == ROOT_INO {
            return Ok(match name {
                "afsd.stats" => Some(self.render_stats().into_bytes()),
                _ => None,
            });
        }
        let node = self.inner.node(ino)?;
        Ok(match name {
            "afs.fid" => Some(
                format!(
                    "{:x}:{:x}:{:x}",
                    node.fid.volume, node.fid.vnode, node.fid.unique
                )
                .into_bytes(),
            ),
            "afs.cell" => Some(node.cell.clone().into_bytes()),
            "afs.volume" => {
                let name = match self.inner.volumes.by_id(&node.cell, node.fid.volume) {
                    Some((v, VolType::Ro)) => format!("{}.readonly", v.name),
                    Some((v, VolType::Backup)) => format!("{}.backup", v.name),
                    Some((v, VolType::Rw)) => v.name.clone(),
                    None => node.fid.volume.to_string(),
                };
                Some(name.into_bytes())
            }
            _ => None,
        })
    }

    pub fn listxattr(&self, ino: u64) -> Vec<&'static str> {
        if ino == ROOT_INO {
            vec!["afsd.stats"]
        } else {
            vec!["afs.cell", "afs.fid", "afs.volume"]
        }
    }

    /// The stats text: RPC counts, cache hits and misses, bytes fetched,
    /// inodes known.
    pub fn render_stats(&self) -> String {
        let mut s = self.inner.stats.render();
        let inodes = self
            .inner
            .inodes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len();
        s.push_str(&format!("inodes {inodes}\n"));
        s.push_str(&format!("rx {}\n", self.rx_stats()));
        s
    }

    /// The kernel dropped `n` references to `ino` (FUSE FORGET): at none
    /// left, the inode is forgotten here too.
    pub fn forget(&self, ino: u64, n: u64) {
        if ino == ROOT_INO {
            return;
        }
        let none_left = self
            .inner
            .inodes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .unref(ino, n);
        if none_left {
            self.inner.forget_ino(ino);
        }
    }

    /// Gives back the reference of a readdirplus entry that did not fit in
    /// the kernel's buffer: every entry but "." and ".." of a directory
    /// other than `/afs` carries one.
    pub fn unref(&self, ino: u64) {
        self.forget(ino, 1);
    }
}

fn root_attr() -> Attr {
    Attr {
        ino: ROOT_INO,
        kind: NodeKind::Dir,
        size: 2048,
        mode: 0o755,
        nlink: 2,
        uid: 0,
        gid: 0,
        mtime: 0,
        data_version: 0,
    }
}

/// AFS mount points are symlinks whose mode has no execute bits (afscptool
/// and `fs mkmount` create them 0644; real symlinks are 0755).
fn is_mount_point(st: &StatusRecord) -> bool {
    st.file_type == FileType::Symlink.as_u32() && st.mode & 0o111 == 0
}

fn kind_of(st: &StatusRecord) -> NodeKind {
    match FileType::from_u32(st.file_type) {
        FileType::Directory => NodeKind::Dir,
        FileType::Symlink => NodeKind::Symlink,
        _ => NodeKind::File,
    }
}

fn attr_of(ino: u64, st: &StatusRecord) -> Attr {
    Attr {
        ino,
        kind: kind_of(st),
        size: st.length,
        mode: st.mode & 0o7777,
        nlink: st.link_count.max(1),
        uid: st.owner,
        gid: st.group,
        mtime: st.client_modtime as u64,
        data_version: st.data_version,
    }
}

fn record_of(st: &FetchStatus, cb: &CallBack, request_start: u64) -> StatusRecord {
    // ExpirationTime in FS replies is relative to the time of the call
    // (afs_fetchstore.c adds the request start time).
    let callback_expires = if cb.expiration_time == 0 {
        0
    } else {
        request_start + cb.expiration_time as u64
    };
    StatusRecord {
        file_type: st.file_type.as_u32(),
        length: st.length,
        data_version: st.data_version,
        mode: st.unix_mode_bits,
        owner: st.owner,
        group: st.group,
        link_count: st.link_count,
        author: st.author,
        client_modtime: st.client_modtime,
        server_modtime: st.server_modtime,
        parent_vnode: st.parent_vnode,
        parent_unique: st.parent_unique,
        anonymous_access: st.anonymous_access,
        callback_expires,
        fetched_at: request_start,
    }
}

impl Inner {
    fn node(&self, ino: u64) -> Result<NodeRef> {
        self.inodes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(ino)
            .ok_or(Error::NotFound)
    }

    fn intern(&self, node: NodeRef) -> u64 {
        self.inodes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .intern(node)
    }

    /// [`Inner::intern`] with a kernel reference (see [`Inodes`]).
    fn intern_ref(&self, node: NodeRef) -> u64 {
        self.inodes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .intern_ref(node)
    }

    /// Drops an inode the kernel forgot, unless a file is open for writing
    /// on it (its state is found by inode number).
    fn forget_ino(&self, ino: u64) {
        if self
            .dirty
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&ino)
        {
            return;
        }
        self.inodes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(ino);
    }

    /// The identity `uid` has in the cell of `node`.
    fn who(&self, uid: u32, node: &NodeRef) -> Identity {
        self.tokens.identity(uid, &node.cell)
    }

    /// True when both the status and `who`'s rights on it are current.
    fn has_valid(&self, node: &NodeRef, who: &Identity) -> bool {
        let key = node.key();
        self.statuses.valid(&key).is_some() && self.rights.get(who.id, &key).is_some()
    }

    /// Checks `who`'s rights (learned by the last valid_status) against
    /// `needed`. A denial to a user whose token expired says so in the log.
    fn require(&self, node: &NodeRef, who: &Identity, needed: u32) -> Result<()> {
        let have = self.rights.get(who.id, &node.key()).unwrap_or(0);
        if have & needed == needed {
            Ok(())
        } else {
            self.tokens.warn_expired(who, &node.cell);
            Err(Error::Access)
        }
    }

    /// Records the rights a status reply grants: the caller's, and the
    /// anonymous ones, which hold for any caller without a token.
    fn learn_rights(
        &self,
        key: &FidKey,
        who: &Identity,
        st: &FetchStatus,
        rec: &StatusRecord,
        epoch: u64,
    ) {
        if self.statuses.epoch() != epoch {
            return;
        }
        self.rights
            .set(who.id, key, st.caller_access, rec.callback_expires);
        self.rights
            .set(ANONYMOUS, key, st.anonymous_access, rec.callback_expires);
    }

    /// A lookup's answer for `node`: its attributes, and a kernel reference.
    async fn attr_of_node(&self, node: NodeRef, who: &Identity) -> Result<Attr> {
        let st = self.valid_status(&node, who).await?;
        let ino = self.intern_ref(node);
        Ok(self.attr(ino, &st))
    }

    /// `/afs/CELL` and `/afs/.CELL`.
    async fn cell_root(&self, name: &[u8]) -> Result<NodeRef> {
        let name = std::str::from_utf8(name).map_err(|_| Error::NotFound)?;
        let (rw, cell_name) = match name.strip_prefix('.') {
            Some(c) => (true, c),
            None => (false, name),
        };
        let cell = self
            .cells
            .get(cell_name)
            .ok_or_else(|| Error::UnknownCell(cell_name.to_string()))?
            .clone();
        let info = self
            .volumes
            .locate(&self.rpc, &cell, "root.cell", self.config.vldb_ttl)
            .await?;
        let kind = if rw {
            MountKind::ReadWrite
        } else {
            MountKind::Regular
        };
        let (id, t) = info.choose(VolType::Rw, kind, true);
        Ok(NodeRef {
            cell: cell.name.clone(),
            fid: Fid::new(id, 1, 1),
            vol_type: t,
        })
    }

    async fn resolve_mount_point(
        self: &Arc<Self>,
        mp: &NodeRef,
        st: &StatusRecord,
        who: &Identity,
    ) -> Result<NodeRef> {
        let contents = self.read(mp, 0, st.length.min(1024), who).await?;
        let parsed = MountPoint::parse(&contents).ok_or_else(|| {
            Error::Protocol(format!(
                "bad mount point contents {:?}",
                String::from_utf8_lossy(&contents)
            ))
        })?;
        let cell_name = parsed.cell.clone().unwrap_or_else(|| mp.cell.clone());
        let cell = self
            .cells
            .get(&cell_name)
            .ok_or_else(|| Error::UnknownCell(cell_name.clone()))?
            .clone();
        let (base, requested) = split_volume_suffix(&parsed.volume);
        let info = self
            .volumes
            .locate(&self.rpc, &cell, base, self.config.vldb_ttl)
            .await?;
        let parent_ro = mp.vol_type != VolType::Rw;
        let (id, t) = info.choose(requested, parsed.kind, parent_ro);
        Ok(NodeRef {
            cell: cell.name.clone(),
            fid: Fid::new(id, 1, 1),
            vol_type: t,
        })
    }

    /// Calls the fileservers of a node's volume in turn until one answers.
    /// When the volume has moved (VNOVOL, VMOVED from every site), its
    /// location is asked anew from the VLDB and the call tried once more.
    async fn fs_call<R: afs_proto::Rpc>(
        &self,
        node: &NodeRef,
        who: &Identity,
        rpc: &R,
    ) -> Result<R::Reply> {
        self.fs_call_data(node, who, rpc, &[]).await
    }

    /// As `fs_call`, with raw bytes after the arguments (StoreData64).
    async fn fs_call_data<R: afs_proto::Rpc>(
        &self,
        node: &NodeRef,
        who: &Identity,
        rpc: &R,
        data: &[u8],
    ) -> Result<R::Reply> {
        let mut relocated = false;
        loop {
            let (vol, t) = self
                .volumes
                .by_id(&node.cell, node.fid.volume)
                .ok_or_else(|| {
                    Error::NoSuchVolume(format!("{} in cell {}", node.fid.volume, node.cell))
                })?;
            let result = self.call_sites(vol.servers(t), who, rpc, data).await;
            if matches!(&result, Err(e) if e.errno() == libc::EACCES) {
                self.tokens.warn_expired(who, &node.cell);
            }
            match result {
                Err(Error::Server { code, .. })
                    if !relocated
                        && (code == afs_proto::errors::VNOVOL
                            || code == afs_proto::errors::VMOVED) =>
                {
                    relocated = true;
                    tracing::info!(volume = %vol.name, code, "volume moved; asking the VLDB again");
                    let cell = self
                        .cells
                        .get(&node.cell)
                        .ok_or_else(|| Error::UnknownCell(node.cell.clone()))?
                        .clone();
                    self.volumes.forget(&node.cell, &vol.name);
                    self.volumes
                        .locate(&self.rpc, &cell, &vol.name, self.config.vldb_ttl)
                        .await?;
                }
                other => return other,
            }
        }
    }

    async fn call_sites<R: afs_proto::Rpc>(
        &self,
        servers: &[SocketAddr],
        who: &Identity,
        rpc: &R,
        data: &[u8],
    ) -> Result<R::Reply> {
        if servers.is_empty() {
            return Err(Error::NoSuchVolume("volume has no sites".into()));
        }
        let mut last = None;
        for s in servers {
            match self.rpc.call_with_data(*s, who, rpc, data).await {
                Ok(r) => {
                    let mut used = self.servers_used.lock().unwrap_or_else(|e| e.into_inner());
                    if !used.contains(s) {
                        used.push(*s);
                    }
                    return Ok(r);
                }
                Err(e) if e.should_fail_over() => {
                    tracing::warn!(server = %s, "{e}; trying the next site");
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or(Error::NotFound))
    }

    /// The node's status with a callback that holds now; fetched from the
    /// fileserver when the callback expired or was broken.
    async fn valid_status(&self, node: &NodeRef, who: &Identity) -> Result<StatusRecord> {
        let key = node.key();
        match (self.statuses.valid(&key), self.rights.get(who.id, &key)) {
            (Some(st), Some(_)) => {
                Stats::add(&self.stats.status_hits, 1);
                return Ok(st);
            }
            // A recent denial without a callback: do not ask again yet.
            (_, Some(0)) => {
                self.tokens.warn_expired(who, &node.cell);
                return Err(Error::Access);
            }
            _ => {}
        }
        Stats::add(&self.stats.status_misses, 1);
        let epoch = self.statuses.epoch();
        let start = now_secs();
        let reply = match self
            .fs_call(node, who, &rpcs::FetchStatus { fid: node.fid })
            .await
        {
            Ok(r) => r,
            Err(e) if e.errno() == libc::EACCES => {
                self.rights.deny(who.id, &key);
                self.tokens.warn_expired(who, &node.cell);
                return Err(Error::Access);
            }
            Err(e) => return Err(e),
        };
        let rec = self.apply_status(
            &key,
            &reply.status,
            &reply.callback,
            start,
            epoch,
            Batch::clean(),
        )?;
        self.learn_rights(&key, who, &reply.status, &rec, epoch);
        Ok(rec)
    }

    /// Records a status from the server, together with `batch`. When the
    /// data version moved, the cached data of older versions is dropped and
    /// the kernel told to forget its pages.
    fn apply_status(
        &self,
        key: &FidKey,
        st: &FetchStatus,
        cb: &CallBack,
        start: u64,
        epoch: u64,
        mut batch: Batch,
    ) -> Result<StatusRecord> {
        let rec = record_of(st, cb, start);
        if let Some(valid) = self.statuses.valid(key) {
            if valid.data_version > rec.data_version {
                // A reply that left the server before a newer one we already
                // hold (a slow read-ahead): keep the newer status. The batch
                // (chunks keyed by their own data version) is still stored.
                self.store.apply(batch)?;
                return Ok(rec);
            }
        }
        let old = match self.statuses.known(key) {
            Some(s) => Some(s),
            None => self.store.get_status(key)?,
        };
        let moved = old
            .as_ref()
            .is_some_and(|o| o.data_version != rec.data_version);
        // Chunks and listings of other versions go; the batch's own (of this
        // version, or moved to it by a store) stay, and unstored data too.
        let mut ops = vec![Op::PutStatus(key.clone(), rec.clone())];
        if moved {
            ops.push(Op::DeleteDir(key.clone()));
        }
        ops.append(&mut batch.ops);
        if moved {
            ops.push(Op::DeleteCleanChunks {
                fid: key.clone(),
                keep: Some(rec.data_version),
            });
        }
        self.store.apply(Batch {
            ops,
            durable: batch.durable,
        })?;
        if moved {
            self.dirs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(key);
            self.mem_chunks
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|(k, _)| &k.0 != key);
            if let Some(ino) = self
                .inodes
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .ino_of(key)
            {
                let _ = self.inval.send(Invalidation { ino });
            }
        }
        self.statuses.set(key.clone(), rec.clone(), epoch);
        Ok(rec)
    }

    /// Fetches the statuses of up to 50 entries of a directory in one
    /// InlineBulkStatus call, starting at entry `from`: a lookup is usually
    /// followed by lookups of its neighbours (`ls -l`).
    async fn bulk_prefetch(
        &self,
        dir_node: &NodeRef,
        dir: &ParsedDir,
        from: usize,
        who: &Identity,
    ) {
        let n = dir.entries.len();
        let mut fids = Vec::new();
        for j in 0..n {
            let e = &dir.entries[(from + j) % n];
            if e.name == b"." || e.name == b".." {
                continue;
            }
            let fid = Fid::new(dir_node.fid.volume, e.vnode, e.unique);
            if !self.has_valid(&dir_node.with_fid(fid), who) {
                fids.push(fid);
            }
            if fids.len() == afs_proto::fs::AFSCBMAX {
                break;
            }
        }
        if fids.len() < 2 {
            return;
        }
        let Ok(call) = rpcs::InlineBulkStatus::new(fids.clone()) else {
            return;
        };
        let epoch = self.statuses.epoch();
        let start = now_secs();
        match self.fs_call(dir_node, who, &call).await {
            Ok(reply) => {
                for (fid, e) in fids.iter().zip(reply.entries.iter()) {
                    if e.status.error_code != 0 {
                        continue;
                    }
                    let key = dir_node.with_fid(*fid).key();
                    match self.apply_status(
                        &key,
                        &e.status,
                        &e.callback,
                        start,
                        epoch,
                        Batch::clean(),
                    ) {
                        Ok(rec) => self.learn_rights(&key, who, &e.status, &rec, epoch),
                        Err(err) => tracing::warn!("storing bulk status: {err}"),
                    }
                }
            }
            Err(e) => tracing::debug!("InlineBulkStatus failed, falling back to FetchStatus: {e}"),
        }
    }

    /// The parsed directory for the current data version.
    async fn dir(&self, node: &NodeRef, who: &Identity) -> Result<Arc<ParsedDir>> {
        let key = node.key();
        for _ in 0..MAX_RETRIES {
            let st = self.valid_status(node, who).await?;
            if st.file_type != FileType::Directory.as_u32() {
                return Err(Error::NotDir);
            }
            // Listing or searching needs the lookup right, cached or not.
            self.require(node, who, PRSFS_LOOKUP)?;
            if let Some(d) = self
                .dirs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&key)
            {
                if d.data_version == st.data_version {
                    Stats::add(&self.stats.dir_hits, 1);
                    return Ok(d.clone());
                }
            }
            if let Some(rec) = self.store.get_dir(&key)? {
                if rec.data_version == st.data_version {
                    Stats::add(&self.stats.dir_hits, 1);
                    let d = Arc::new(ParsedDir::new(rec));
                    self.dirs
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(key.clone(), d.clone());
                    return Ok(d);
                }
            }
            Stats::add(&self.stats.dir_misses, 1);
            let epoch = self.statuses.epoch();
            let start = now_secs();
            let reply = self
                .fs_call(
                    node,
                    who,
                    &rpcs::FetchData64 {
                        fid: node.fid,
                        pos: 0,
                        length: st.length,
                    },
                )
                .await?;
            Stats::add(&self.stats.bytes_fetched, reply.data.len() as u64);
            if reply.data.len() as u64 != reply.status.length {
                // The directory changed size between our status and the
                // fetch: the blob is cut short. Record the new status and
                // fetch again rather than cache a partial listing.
                self.apply_status(
                    &key,
                    &reply.status,
                    &reply.callback,
                    start,
                    epoch,
                    Batch::clean(),
                )?;
                continue;
            }
            let entries = afs_proto::dir::parse_dir(&reply.data)
                .map_err(|e| Error::Protocol(format!("directory {:?}: {e}", key)))?;
            let rec = DirRecord {
                data_version: reply.status.data_version,
                entries: entries
                    .into_iter()
                    .map(|e| DirEntryRecord {
                        name: e.name,
                        vnode: e.vnode,
                        unique: e.unique,
                    })
                    .collect(),
            };
            let mut batch = Batch::clean();
            batch.push(Op::PutDir(key.clone(), rec.clone()));
            let new =
                self.apply_status(&key, &reply.status, &reply.callback, start, epoch, batch)?;
            self.learn_rights(&key, who, &reply.status, &new, epoch);
            if new.data_version == rec.data_version {
                let d = Arc::new(ParsedDir::new(rec));
                self.dirs
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(key.clone(), d.clone());
                return Ok(d);
            }
        }
        Err(Error::Protocol(format!("directory {key:?} keeps changing")))
    }

    /// Reads `[offset, offset+size)` of the node's current data version.
    async fn read(
        self: &Arc<Self>,
        node: &NodeRef,
        offset: u64,
        size: u64,
        who: &Identity,
    ) -> Result<Vec<u8>> {
        let key = node.key();
        let cs = self.config.chunk_size;
        'attempt: for _ in 0..MAX_RETRIES {
            let st = self.valid_status(node, who).await?;
            if st.file_type == FileType::Directory.as_u32() {
                return Err(Error::IsDir);
            }
            if offset >= st.length || size == 0 {
                return Ok(Vec::new());
            }
            let end = st.length.min(offset.saturating_add(size));
            let first = offset / cs;
            let last = (end - 1) / cs;
            let mut out = Vec::with_capacity((end - offset) as usize);
            for idx in first..=last {
                let Some(chunk) = self.chunk(node, st.data_version, idx, who).await? else {
                    continue 'attempt;
                };
                let cstart = idx * cs;
                let want_len = cs.min(st.length - cstart);
                if (chunk.len() as u64) < want_len {
                    // Shorter than the status says: the file changed under us.
                    self.statuses.break_fid(&key);
                    self.rights.break_fid(&key);
                    continue 'attempt;
                }
                let from = offset.max(cstart) - cstart;
                let to = end.min(cstart + cs) - cstart;
                out.extend_from_slice(&chunk[from as usize..to as usize]);
            }
            self.readahead(node, st.data_version, st.length, last + 1, who);
            return Ok(out);
        }
        Err(Error::Protocol(format!(
            "{key:?} keeps changing while being read"
        )))
    }

    fn readahead(
        self: &Arc<Self>,
        node: &NodeRef,
        dv: u64,
        length: u64,
        from: u64,
        who: &Identity,
    ) {
        let cs = self.config.chunk_size;
        let chunks = length.div_ceil(cs);
        for idx in from..chunks.min(from + self.config.readahead_chunks) {
            let k = (node.key(), dv, idx);
            if self.mem_chunk(&k).is_some()
                || self
                    .inflight
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .contains_key(&k)
            {
                continue;
            }
            let me = self.clone();
            let node = node.clone();
            let who = who.clone();
            tokio::spawn(async move {
                if let Err(e) = me.chunk(&node, dv, idx, &who).await {
                    tracing::debug!("read-ahead of chunk {idx}: {e}");
                }
            });
        }
    }

    fn mem_chunk(&self, k: &ChunkKey) -> Option<Arc<Vec<u8>>> {
        let m = self.mem_chunks.lock().unwrap_or_else(|e| e.into_inner());
        m.iter()
            .rev()
            .find(|(kk, _)| kk == k)
            .map(|(_, v)| v.clone())
    }

    fn remember_chunk(&self, k: ChunkKey, v: Arc<Vec<u8>>) {
        let mut m = self.mem_chunks.lock().unwrap_or_else(|e| e.into_inner());
        m.retain(|(kk, _)| kk != &k);
        m.push_back((k, v));
        while m.len() > MEM_CHUNKS {
            m.pop_front();
        }
    }

    /// One chunk of data version `dv`: from memory, the store, or the
    /// fileserver. Concurrent requests for the same chunk share one fetch.
    /// `None`: the data version moved; the caller starts over.
    async fn chunk(
        self: &Arc<Self>,
        node: &NodeRef,
        dv: u64,
        idx: u64,
        who: &Identity,
    ) -> Result<Option<Arc<Vec<u8>>>> {
        let k: ChunkKey = (node.key(), dv, idx);
        if let Some(c) = self.mem_chunk(&k) {
            Stats::add(&self.stats.chunk_hits, 1);
            self.store.touch(&k.0, dv, idx);
            return Ok(Some(c));
        }
        if let Some(c) = self.store.get_chunk(&k.0, dv, idx)? {
            Stats::add(&self.stats.chunk_hits, 1);
            self.store.touch(&k.0, dv, idx);
            let c = Arc::new(c);
            self.remember_chunk(k, c.clone());
            return Ok(Some(c));
        }
        let cell = self
            .inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(k.clone())
            .or_default()
            .clone();
        let res = cell
            .get_or_init(|| async {
                Stats::add(&self.stats.chunk_misses, 1);
                self.fetch_chunk(node, dv, idx, who)
                    .await
                    .map_err(|e| (e.errno(), e.to_string()))
            })
            .await
            .clone();
        self.inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&k);
        res.map_err(|(errno, msg)| Error::Shared { errno, msg })
    }

    async fn fetch_chunk(
        &self,
        node: &NodeRef,
        dv: u64,
        idx: u64,
        who: &Identity,
    ) -> Result<Option<Arc<Vec<u8>>>> {
        let key = node.key();
        let cs = self.config.chunk_size;
        let epoch = self.statuses.epoch();
        let start = now_secs();
        let reply = self
            .fs_call(
                node,
                who,
                &rpcs::FetchData64 {
                    fid: node.fid,
                    pos: idx * cs,
                    length: cs,
                },
            )
            .await?;
        Stats::add(&self.stats.bytes_fetched, reply.data.len() as u64);
        let got_dv = reply.status.data_version;
        let data = Arc::new(reply.data);
        let mut batch = Batch::clean();
        batch.push(Op::PutChunk {
            fid: key.clone(),
            data_version: got_dv,
            index: idx,
            data: data.to_vec(),
        });
        let rec = self.apply_status(&key, &reply.status, &reply.callback, start, epoch, batch)?;
        self.learn_rights(&key, who, &reply.status, &rec, epoch);
        self.remember_chunk((key, got_dv, idx), data.clone());
        Ok((got_dv == dv).then_some(data))
    }

    pub(crate) fn break_callback(&self, from: SocketAddr, fid: Fid) {
        Stats::add(&self.stats.callback_breaks, 1);
        tracing::debug!(%from, ?fid, "callback broken");
        // Fids in breaks carry no cell: a fileserver belongs to one cell and
        // volume ids are unique within it; across cells a spurious extra
        // invalidation is harmless.
        let inos = {
            let inodes = self.inodes.lock().unwrap_or_else(|e| e.into_inner());
            if fid.vnode == 0 {
                self.statuses.break_volume(None, fid.volume);
                self.rights.break_volume(fid.volume);
                inodes.inos_of_volume(None, fid.volume)
            } else {
                let mut v = Vec::new();
                for cell in self.cells.cells.iter() {
                    let key = FidKey::new(&cell.name, fid.volume, fid.vnode, fid.unique);
                    self.statuses.break_fid(&key);
                    v.extend(inodes.ino_of(&key));
                }
                v
            }
        };
        for ino in inos {
            let _ = self.inval.send(Invalidation { ino });
        }
    }

    pub(crate) fn break_all_callbacks(&self, from: SocketAddr) {
        tracing::info!(%from, "fileserver reset its callback state");
        Stats::add(&self.stats.callback_breaks, 1);
        self.statuses.break_all();
        self.rights.break_all();
        let inos = self.inodes.lock().unwrap_or_else(|e| e.into_inner()).all();
        for ino in inos {
            let _ = self.inval.send(Invalidation { ino });
        }
    }
}

/// Most bytes sent in one StoreData64 call (the call is held in memory).
const STORE_PIECE: u64 = 8 << 20;

/// The outcome of a mutation that creates an object.
struct Created {
    node: NodeRef,
    status: StatusRecord,
}

impl AfsClient {
    /// Creates an empty file (FUSE create).
    pub async fn create(&self, uid: u32, parent: u64, name: &[u8], mode: u32) -> Result<Attr> {
        let name = name.to_vec();
        self.create_object(uid, parent, |dir| Mutation::CreateFile { dir, name, mode })
            .await
    }

    pub async fn mkdir(&self, uid: u32, parent: u64, name: &[u8], mode: u32) -> Result<Attr> {
        let name = name.to_vec();
        self.create_object(uid, parent, |dir| Mutation::MakeDir { dir, name, mode })
            .await
    }

    pub async fn symlink(&self, uid: u32, parent: u64, name: &[u8], target: &[u8]) -> Result<Attr> {
        let (name, target) = (name.to_vec(), target.to_vec());
        self.create_object(uid, parent, |dir| Mutation::Symlink { dir, name, target })
            .await
    }

    /// Runs a creating mutation in directory `parent` and returns the new
    /// object's attributes.
    async fn create_object(
        &self,
        uid: u32,
        parent: u64,
        make: impl FnOnce(Fid) -> Mutation,
    ) -> Result<Attr> {
        let (pnode, who) = self.inner.writable_dir(uid, parent).await?;
        let m = make(pnode.fid);
        let c = self
            .inner
            .created(self.inner.mutate(&pnode, None, &who, m, None).await?)?;
        let ino = self.inner.intern_ref(c.node);
        Ok(self.inner.attr(ino, &c.status))
    }

    /// A hard link to file `ino` in `newparent` (same volume only).
    pub async fn link(&self, uid: u32, ino: u64, newparent: u64, newname: &[u8]) -> Result<Attr> {
        let target = self.inner.node(ino)?;
        let (pnode, who) = self.inner.writable_dir(uid, newparent).await?;
        if target.fid.volume != pnode.fid.volume || target.cell != pnode.cell {
            return Err(Error::CrossVolume);
        }
        let m = Mutation::Link {
            dir: pnode.fid,
            name: newname.to_vec(),
            existing: target.fid,
        };
        self.inner.mutate(&pnode, None, &who, m, None).await?;
        let attr = self.getattr(uid, ino).await?;
        // The answer gives the kernel the inode under one more name.
        self.inner.intern_ref(target);
        Ok(attr)
    }

    pub async fn unlink(&self, uid: u32, parent: u64, name: &[u8]) -> Result<()> {
        let (pnode, who) = self.inner.writable_dir(uid, parent).await?;
        let m = Mutation::RemoveFile {
            dir: pnode.fid,
            name: name.to_vec(),
        };
        self.inner
            .mutate(&pnode, None, &who, m, None)
            .await
            .map(|_| ())
    }

    pub async fn rmdir(&self, uid: u32, parent: u64, name: &[u8]) -> Result<()> {
        let (pnode, who) = self.inner.writable_dir(uid, parent).await?;
        let m = Mutation::RemoveDir {
            dir: pnode.fid,
            name: name.to_vec(),
        };
        self.inner
            .mutate(&pnode, None, &who, m, None)
            .await
            .map(|_| ())
            .map_err(|e| {
                // The fileserver says EEXIST for a non-empty directory; POSIX
                // says ENOTEMPTY (OpenAFS's Linux client maps it too).
                if e.errno() == libc::EEXIST {
                    Error::NotEmpty
                } else {
                    e
                }
            })
    }

    /// Rename within a volume; across volumes the answer is EXDEV, as on
    /// any Unix file system, so `mv` falls back to copying.
    pub async fn rename(
        &self,
        uid: u32,
        parent: u64,
        name: &[u8],
        newparent: u64,
        newname: &[u8],
    ) -> Result<()> {
        let (from, who) = self.inner.writable_dir(uid, parent).await?;
        let (to, _) = self.inner.writable_dir(uid, newparent).await?;
        if from.fid.volume != to.fid.volume || from.cell != to.cell {
            return Err(Error::CrossVolume);
        }
        let m = Mutation::Rename {
            from_dir: from.fid,
            from_name: name.to_vec(),
            to_dir: to.fid,
            to_name: newname.to_vec(),
        };
        self.inner
            .mutate(&from, Some(&to), &who, m, None)
            .await
            .map(|_| ())
    }

    /// chmod, utimes and truncate.
    pub async fn setattr(&self, uid: u32, ino: u64, attrs: SetAttrs) -> Result<Attr> {
        if ino == ROOT_INO {
            return Err(Error::ReadOnly);
        }
        let node = self.inner.node(ino)?;
        if node.vol_type != VolType::Rw {
            return Err(Error::ReadOnly);
        }
        let who = self.inner.who(uid, &node);
        if let Some(size) = attrs.size {
            // Through the open-file state, as a write would: cut in the
            // cache, then stored (at once when no one has it open).
            let st = self.inner.valid_status(&node, &who).await?;
            if st.file_type != FileType::File.as_u32() {
                return Err(Error::IsDir);
            }
            let mut f = self.inner.lock_open(ino, &st).await;
            self.inner.truncate_open(&node, &who, &mut f, size).await?;
            f.writer_uid = Some(uid);
            self.inner.note_length(ino, f.length);
            if f.writers == 0 {
                self.inner.store_open(&node, &who, &mut f).await?;
                let cell = tokio::sync::OwnedMutexGuard::mutex(&f).clone();
                self.inner.close_if_done(ino, &cell, &f);
            }
        }
        if attrs.mode.is_some() || attrs.mtime.is_some() {
            let m = Mutation::StoreStatus {
                fid: node.fid,
                attrs,
            };
            self.inner.mutate(&node, None, &who, m, None).await?;
        }
        // getattr shows an open file's local length (Inner::attr).
        self.getattr(uid, ino).await
    }

    /// Opens `ino` for writing (`truncate`: O_TRUNC). Writes change chunks
    /// in the cache; close stores them.
    pub async fn open_write(&self, uid: u32, ino: u64, truncate: bool) -> Result<()> {
        let (node, who, mut f) = self.writable_file(uid, ino).await?;
        if truncate && f.length > 0 {
            self.inner.truncate_open(&node, &who, &mut f, 0).await?;
        } else if truncate {
            f.modified = true;
        }
        if truncate {
            f.writer_uid = Some(uid);
        }
        // Counted once the open cannot fail any more: a failed open gets
        // no release.
        f.writers += 1;
        self.inner.note_length(ino, f.length);
        Ok(())
    }

    /// The node, identity and open-file state of a file being written.
    async fn writable_file(&self, uid: u32, ino: u64) -> Result<(NodeRef, Identity, OpenGuard)> {
        let node = self.inner.node(ino)?;
        if node.vol_type != VolType::Rw {
            return Err(Error::ReadOnly);
        }
        let who = self.inner.who(uid, &node);
        // Checked on every write: the user's rights, and a current status.
        let st = self.inner.valid_status(&node, &who).await?;
        if st.file_type != FileType::File.as_u32() {
            return Err(Error::IsDir);
        }
        let f = self.inner.lock_open(ino, &st).await;
        Ok((node, who, f))
    }

    /// Writes into the cached chunks of the file: a chunk written for the
    /// first time is first copied from the old contents (unless the write
    /// covers them all), then changed in place.
    pub async fn write(&self, uid: u32, ino: u64, offset: u64, data: &[u8]) -> Result<u32> {
        let (node, who, mut f) = self.writable_file(uid, ino).await?;
        let cs = self.inner.config.chunk_size;
        let key = node.key();
        let end = offset
            .checked_add(data.len() as u64)
            .ok_or(Error::Invalid("write past the largest offset".into()))?;
        let mut ops = Vec::new();
        let mut new_dirty = Vec::new();
        for (idx, off, range) in spans(offset, data.len() as u64, cs) {
            if !f.dirty.contains(&idx) {
                let base = if f.write_covers_base(idx, cs, offset, end) {
                    Vec::new()
                } else {
                    self.inner.base_bytes(&node, &who, &f, idx).await?
                };
                ops.push(Op::PutDirtyChunk {
                    fid: key.clone(),
                    data_version: LOCAL_DATA_VERSION,
                    index: idx,
                    data: base,
                });
                new_dirty.push(idx);
            }
            ops.push(Op::WriteChunk {
                fid: key.clone(),
                data_version: LOCAL_DATA_VERSION,
                index: idx,
                offset: off,
                data: data[range].to_vec(),
            });
        }
        self.inner.store.apply(unlogged(ops))?;
        f.dirty.extend(new_dirty);
        f.length = f.length.max(end);
        f.modified = true;
        f.writer_uid = Some(uid);
        self.inner.note_length(ino, f.length);
        Ok(data.len() as u32)
    }

    /// Stores the file's changes if any (close and fsync): when this
    /// returns Ok the fileserver has the data.
    pub async fn flush(&self, uid: u32, ino: u64) -> Result<()> {
        let Some(f) = self.inner.dirty_of(ino) else {
            return Ok(());
        };
        let mut f = f.lock().await;
        if !f.modified {
            return Ok(());
        }
        let node = self.inner.node(ino)?;
        // The changes are stored as the user who made them, whoever closes.
        let who = self.inner.who(f.writer_uid.unwrap_or(uid), &node);
        self.inner.store_open(&node, &who, &mut f).await
    }

    /// The close of a descriptor. The write state goes with the last
    /// writer, unless a store failed: then the changes stay, in the cache,
    /// and the next close or fsync stores them.
    pub async fn release(&self, ino: u64, write: bool) {
        let Some(cell) = self.inner.dirty_of(ino) else {
            return;
        };
        let mut f = cell.lock().await;
        if write {
            f.writers = f.writers.saturating_sub(1);
        }
        if f.writers == 0 && f.modified {
            tracing::warn!(
                ino,
                length = f.length,
                "closed with changes not stored; they stay in the cache"
            );
        }
        self.inner.close_if_done(ino, &cell, &f);
    }

    /// Reads a file open for writing as it is now (None: not open so).
    pub async fn read_dirty(
        &self,
        uid: u32,
        ino: u64,
        offset: u64,
        size: u32,
    ) -> Option<Result<Vec<u8>>> {
        let f = self.inner.dirty_of(ino)?;
        let f = f.lock().await;
        Some(self.inner.read_open(uid, ino, &f, offset, size).await)
    }
}

/// The lock on a file's write state, held across the awaits of a change.
type OpenGuard = tokio::sync::OwnedMutexGuard<OpenFile>;

/// A batch of unstored writes. Not logged: close stores to the fileserver
/// before returning, so what a crash loses here was never acknowledged.
/// (Disconnected operation will log them, with the change log.)
fn unlogged(ops: Vec<Op>) -> Batch {
    Batch {
        ops,
        durable: false,
    }
}

impl Inner {
    /// The open-file state of `ino`, made when absent.
    fn open_file(&self, ino: u64, st: &StatusRecord) -> Arc<tokio::sync::Mutex<OpenFile>> {
        let mut map = self.dirty.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = map.get(&ino) {
            return f.clone();
        }
        let f = Arc::new(tokio::sync::Mutex::new(OpenFile::new(
            st.length,
            st.data_version,
        )));
        map.insert(ino, f.clone());
        f
    }

    /// The open-file state of `ino`, locked, and still the one in force:
    /// a state dropped by [`Inner::close_if_done`] while we waited for its
    /// lock is not written to; a fresh one is taken instead.
    async fn lock_open(&self, ino: u64, st: &StatusRecord) -> OpenGuard {
        loop {
            let f = self.open_file(ino, st);
            let g = f.clone().lock_owned().await;
            let live = self
                .dirty
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&ino)
                .is_some_and(|cur| Arc::ptr_eq(cur, &f));
            if live {
                return g;
            }
        }
    }

    /// Forgets the open-file state once no one writes and all is stored.
    /// Called with the state locked (`f`), so the decision holds.
    fn close_if_done(&self, ino: u64, cell: &Arc<tokio::sync::Mutex<OpenFile>>, f: &OpenFile) {
        if f.writers == 0 && !f.modified {
            let mut map = self.dirty.lock().unwrap_or_else(|e| e.into_inner());
            if !map.get(&ino).is_some_and(|cur| Arc::ptr_eq(cur, cell)) {
                return; // already gone, and maybe replaced
            }
            map.remove(&ino);
            self.open_lengths
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&ino);
            // Kept past a FORGET for the open state; the kernel may have
            // let go of it meanwhile.
            self.inodes
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(ino);
        }
    }

    /// Records the length of an open file as the user sees it.
    fn note_length(&self, ino: u64, length: u64) {
        self.open_lengths
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(ino, length);
    }

    /// Attributes from a status, with the length of a file being written.
    fn attr(&self, ino: u64, st: &StatusRecord) -> Attr {
        let mut a = attr_of(ino, st);
        if let Some(&len) = self
            .open_lengths
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&ino)
        {
            a.size = len;
        }
        a
    }

    /// The old contents of chunk `idx` still in force (clipped at
    /// `base_len`), as the file holds them now.
    async fn base_bytes(
        self: &Arc<Self>,
        node: &NodeRef,
        who: &Identity,
        f: &OpenFile,
        idx: u64,
    ) -> Result<Vec<u8>> {
        match f.base_span(idx, self.config.chunk_size) {
            Some((from, to)) => self.read(node, from, to - from, who).await,
            None => Ok(Vec::new()),
        }
    }

    /// Cuts or extends an open file to `size`, in the cache. The chunk
    /// holding the new last byte is made dirty when the old contents do
    /// not reach it, so that the store sends it.
    async fn truncate_open(
        self: &Arc<Self>,
        node: &NodeRef,
        who: &Identity,
        state: &mut OpenFile,
        size: u64,
    ) -> Result<()> {
        let cs = self.config.chunk_size;
        let key = node.key();
        // Worked out on a copy: the state changes only once the cache has.
        let mut next = state.clone();
        let f = &mut next;
        let (dropped, cut) = f.truncate(size, cs);
        let mut ops: Vec<Op> = dropped
            .into_iter()
            .map(|index| Op::DeleteChunk {
                fid: key.clone(),
                data_version: LOCAL_DATA_VERSION,
                index,
            })
            .collect();
        if let Some((index, length)) = cut {
            ops.push(Op::TruncateChunk {
                fid: key.clone(),
                data_version: LOCAL_DATA_VERSION,
                index,
                length,
            });
        }
        if let Some(last) = f.needs_last_chunk(cs) {
            let base = self.base_bytes(node, who, f, last).await?;
            ops.push(Op::PutDirtyChunk {
                fid: key.clone(),
                data_version: LOCAL_DATA_VERSION,
                index: last,
                data: base,
            });
            ops.push(Op::TruncateChunk {
                fid: key.clone(),
                data_version: LOCAL_DATA_VERSION,
                index: last,
                length: f.chunk_len(last, cs),
            });
            f.dirty.insert(last);
        }
        self.store.apply(unlogged(ops))?;
        *state = next;
        Ok(())
    }

    /// Stores an open file's changes through the mutation path and makes
    /// the stored state its new base.
    async fn store_open(&self, node: &NodeRef, who: &Identity, f: &mut OpenFile) -> Result<()> {
        let m = Mutation::StoreData {
            fid: node.fid,
            length: f.length,
        };
        self.mutate(node, None, who, m, Some(f)).await?;
        let dv = self
            .statuses
            .known(&node.key())
            .map(|s| s.data_version)
            .unwrap_or(f.base_dv);
        f.stored(dv);
        Ok(())
    }

    /// Reads an open file as it is now: dirty chunks from the cache, the
    /// rest from the old contents, zeros past them.
    async fn read_open(
        self: &Arc<Self>,
        uid: u32,
        ino: u64,
        f: &OpenFile,
        offset: u64,
        size: u32,
    ) -> Result<Vec<u8>> {
        let node = self.node(ino)?;
        let who = self.who(uid, &node);
        // Reading needs the read right, as on any open file.
        self.valid_status(&node, &who).await?;
        self.require(&node, &who, PRSFS_READ)?;
        let cs = self.config.chunk_size;
        let end = f.length.min(offset.saturating_add(size as u64));
        if offset >= end {
            return Ok(Vec::new());
        }
        let key = node.key();
        let mut out = Vec::with_capacity((end - offset) as usize);
        for (idx, off, range) in spans(offset, end - offset, cs) {
            let want = range.len();
            let start = out.len();
            if f.dirty.contains(&idx) {
                if let Some(d) =
                    self.store
                        .get_chunk_range(&key, LOCAL_DATA_VERSION, idx, off, want)?
                {
                    out.extend_from_slice(&d);
                }
            } else {
                let from = idx * cs + off;
                let to = (from + want as u64).min(f.base_len);
                if from < to {
                    out.extend(self.read(&node, from, to - from, &who).await?);
                }
            }
            out.resize(start + want, 0);
        }
        Ok(out)
    }
}

impl Inner {
    /// The single path every change takes: one typed [`Mutation`] in, the
    /// server's answer applied to the cache. `node` is the directory for
    /// name changes and the file for StoreStatus/StoreData; `other` is the
    /// target directory of a rename; `file` what StoreData stores.
    /// The offline change log of the next milestone records these same
    /// values instead of sending them.
    async fn mutate(
        &self,
        node: &NodeRef,
        other: Option<&NodeRef>,
        who: &Identity,
        m: Mutation,
        file: Option<&OpenFile>,
    ) -> Result<Option<Created>> {
        match m {
            Mutation::CreateFile { .. } | Mutation::MakeDir { .. } | Mutation::Symlink { .. } => {
                self.execute_create(node, who, m).await.map(Some)
            }
            Mutation::RemoveFile { .. } | Mutation::RemoveDir { .. } | Mutation::Link { .. } => {
                self.execute(node, who, m).await.map(|_| None)
            }
            Mutation::Rename { .. } => self
                .execute_rename(node, other.unwrap_or(node), who, m)
                .await
                .map(|_| None),
            Mutation::StoreStatus { fid, attrs } => {
                let start = now_secs();
                let epoch = self.statuses.epoch();
                let old = self.statuses.known(&node.key());
                let reply = self
                    .fs_call(
                        node,
                        who,
                        &rpcs::StoreStatus {
                            fid,
                            status: attrs.store_status(),
                        },
                    )
                    .await?;
                self.apply_own(
                    node,
                    who,
                    &reply.status,
                    old.as_ref(),
                    start,
                    epoch,
                    Batch::clean(),
                )?;
                Ok(None)
            }
            Mutation::StoreData { .. } => {
                let f = file.ok_or(Error::Invalid("StoreData without a file".into()))?;
                self.store_data(node, who, f).await.map(|_| None)
            }
        }
    }

    fn created(&self, c: Option<Created>) -> Result<Created> {
        c.ok_or_else(|| Error::Protocol("the mutation created nothing".into()))
    }

    fn dirty_of(&self, ino: u64) -> Option<Arc<tokio::sync::Mutex<OpenFile>>> {
        self.dirty
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&ino)
            .cloned()
    }

    /// The directory a change happens in: RW, and current.
    async fn writable_dir(&self, uid: u32, parent: u64) -> Result<(NodeRef, Identity)> {
        if parent == ROOT_INO {
            return Err(Error::ReadOnly);
        }
        let pnode = self.node(parent)?;
        if pnode.vol_type != VolType::Rw {
            return Err(Error::ReadOnly);
        }
        let who = self.who(uid, &pnode);
        self.dir(&pnode, &who).await?;
        Ok((pnode, who))
    }

    /// Records a status the server returned for our own change. The
    /// callback we held stays valid (a fileserver never breaks the callback
    /// of the client that made the change); the directory edit, if any,
    /// rides in `batch`.
    #[allow(clippy::too_many_arguments)]
    fn apply_own(
        &self,
        node: &NodeRef,
        who: &Identity,
        st: &FetchStatus,
        old: Option<&StatusRecord>,
        start: u64,
        epoch: u64,
        batch: Batch,
    ) -> Result<StatusRecord> {
        let key = node.key();
        let remaining = old
            .filter(|o| o.callback_expires > start)
            .map(|o| (o.callback_expires - start) as u32)
            .unwrap_or(0);
        let cb = CallBack {
            version: 1,
            expiration_time: remaining,
            callback_type: 1,
        };
        let rec = self.apply_status(&key, st, &cb, start, epoch, batch)?;
        self.learn_rights(&key, who, st, &rec, epoch);
        Ok(rec)
    }

    /// Applies a directory's new status after our change. When its data
    /// version moved by exactly one (our change alone), the cached listing
    /// is edited in place; otherwise it is dropped and fetched at next use.
    #[allow(clippy::too_many_arguments)]
    fn apply_dir_change(
        &self,
        dir: &NodeRef,
        who: &Identity,
        new_status: &FetchStatus,
        old: Option<&StatusRecord>,
        start: u64,
        epoch: u64,
        edit: impl FnOnce(&mut Vec<DirEntryRecord>) -> bool,
    ) -> Result<()> {
        let key = dir.key();
        let cached = self
            .dirs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .cloned();
        let mut batch = Batch::clean();
        let mut new_dir = None;
        if let (Some(o), Some(d)) = (old, cached) {
            if d.data_version == o.data_version && new_status.data_version == o.data_version + 1 {
                let mut entries = d.entries.clone();
                if edit(&mut entries) {
                    let rec = DirRecord {
                        data_version: new_status.data_version,
                        entries,
                    };
                    batch.push(Op::PutDir(key.clone(), rec.clone()));
                    new_dir = Some(rec);
                }
            }
        }
        self.apply_own(dir, who, new_status, old, start, epoch, batch)?;
        if let Some(rec) = new_dir {
            self.dirs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(key, Arc::new(ParsedDir::new(rec)));
        }
        Ok(())
    }

    /// Executes a creating mutation and applies its results.
    async fn execute_create(&self, dir: &NodeRef, who: &Identity, m: Mutation) -> Result<Created> {
        let start = now_secs();
        let epoch = self.statuses.epoch();
        let old = self.statuses.known(&dir.key());
        let (name, fid, st, dir_st, cb) = match &m {
            Mutation::CreateFile { name, mode, .. } | Mutation::MakeDir { name, mode, .. } => {
                let n = name_str(name)?;
                let status = create_status(*mode);
                let r = if matches!(m, Mutation::CreateFile { .. }) {
                    self.fs_call(
                        dir,
                        who,
                        &rpcs::CreateFile {
                            dir: dir.fid,
                            name: n,
                            status,
                        },
                    )
                    .await?
                } else {
                    self.fs_call(
                        dir,
                        who,
                        &rpcs::MakeDir {
                            dir: dir.fid,
                            name: n,
                            status,
                        },
                    )
                    .await?
                };
                (name.clone(), r.fid, r.status, r.dir_status, r.callback)
            }
            Mutation::Symlink { name, target, .. } => {
                let n = name_str(name)?;
                let t = String::from_utf8(target.clone())
                    .map_err(|_| Error::Invalid("symlink target must be UTF-8".into()))?;
                let r = self
                    .fs_call(
                        dir,
                        who,
                        &rpcs::Symlink {
                            dir: dir.fid,
                            name: n,
                            target: t,
                            status: create_status(0o755),
                        },
                    )
                    .await?;
                let cb = CallBack {
                    version: 1,
                    expiration_time: 0,
                    callback_type: 0,
                };
                (name.clone(), r.fid, r.status, r.dir_status, cb)
            }
            _ => return Err(Error::Invalid("not a creating mutation".into())),
        };
        tracing::debug!(?m, ?fid, "executed");
        let node = dir.with_fid(fid);
        let rec = self.apply_status(&node.key(), &st, &cb, start, epoch, Batch::clean())?;
        self.learn_rights(&node.key(), who, &st, &rec, epoch);
        self.apply_dir_change(dir, who, &dir_st, old.as_ref(), start, epoch, |entries| {
            entries.push(DirEntryRecord {
                name,
                vnode: fid.vnode,
                unique: fid.unique,
            });
            true
        })?;
        Ok(Created { node, status: rec })
    }

    /// Executes a mutation that changes one directory.
    async fn execute(&self, dir: &NodeRef, who: &Identity, m: Mutation) -> Result<()> {
        let start = now_secs();
        let epoch = self.statuses.epoch();
        let old = self.statuses.known(&dir.key());
        tracing::debug!(?m, "executing");
        let (name, is_dir) = match m {
            Mutation::RemoveFile { name, .. } => (name, false),
            Mutation::RemoveDir { name, .. } => (name, true),
            Mutation::Link { name, existing, .. } => {
                let n = name_str(&name)?;
                let reply = self
                    .fs_call(
                        dir,
                        who,
                        &rpcs::Link {
                            dir: dir.fid,
                            name: n,
                            existing,
                        },
                    )
                    .await?;
                let target = dir.with_fid(existing);
                let told = self.statuses.known(&target.key());
                self.apply_own(
                    &target,
                    who,
                    &reply.status,
                    told.as_ref(),
                    start,
                    epoch,
                    Batch::clean(),
                )?;
                return self.apply_dir_change(
                    dir,
                    who,
                    &reply.dir_status,
                    old.as_ref(),
                    start,
                    epoch,
                    |entries| {
                        entries.push(DirEntryRecord {
                            name,
                            vnode: existing.vnode,
                            unique: existing.unique,
                        });
                        true
                    },
                );
            }
            other => {
                return Err(Error::Invalid(format!(
                    "{other:?} is not a directory mutation"
                )))
            }
        };
        let n = name_str(&name)?;
        // The removed object's link count changes: forget its status.
        let victim = self
            .dirs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&dir.key())
            .and_then(|d| {
                d.index
                    .get(&name)
                    .map(|&i| (d.entries[i].vnode, d.entries[i].unique))
            });
        if let Some((vnode, unique)) = victim {
            self.statuses
                .break_fid(&dir.with_fid(Fid::new(dir.fid.volume, vnode, unique)).key());
        }
        let reply = if is_dir {
            self.fs_call(
                dir,
                who,
                &rpcs::RemoveDir {
                    dir: dir.fid,
                    name: n,
                },
            )
            .await?
        } else {
            self.fs_call(
                dir,
                who,
                &rpcs::RemoveFile {
                    dir: dir.fid,
                    name: n,
                },
            )
            .await?
        };
        self.apply_dir_change(
            dir,
            who,
            &reply.status,
            old.as_ref(),
            start,
            epoch,
            |entries| {
                entries.retain(|e| e.name != name);
                true
            },
        )
    }

    async fn execute_rename(
        &self,
        from: &NodeRef,
        to: &NodeRef,
        who: &Identity,
        m: Mutation,
    ) -> Result<()> {
        let Mutation::Rename {
            from_name, to_name, ..
        } = m
        else {
            return Err(Error::Invalid("not a rename".into()));
        };
        let start = now_secs();
        let epoch = self.statuses.epoch();
        let old_from = self.statuses.known(&from.key());
        let old_to = self.statuses.known(&to.key());
        let moved = self
            .dirs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&from.key())
            .and_then(|d| d.index.get(&from_name).map(|&i| d.entries[i].clone()));
        let reply = self
            .fs_call(
                from,
                who,
                &rpcs::Rename {
                    old_dir: from.fid,
                    old_name: name_str(&from_name)?,
                    new_dir: to.fid,
                    new_name: name_str(&to_name)?,
                },
            )
            .await?;
        if from.fid == to.fid {
            let found = moved.is_some();
            return self.apply_dir_change(
                from,
                who,
                &reply.new_dir_status,
                old_from.as_ref(),
                start,
                epoch,
                |entries| {
                    if !found {
                        return false;
                    }
                    entries.retain(|e| e.name != to_name);
                    for x in entries.iter_mut() {
                        if x.name == from_name {
                            x.name = to_name.clone();
                        }
                    }
                    true
                },
            );
        }
        self.apply_dir_change(
            from,
            who,
            &reply.old_dir_status,
            old_from.as_ref(),
            start,
            epoch,
            |entries| {
                entries.retain(|e| e.name != from_name);
                true
            },
        )?;
        self.apply_dir_change(
            to,
            who,
            &reply.new_dir_status,
            old_to.as_ref(),
            start,
            epoch,
            |entries| {
                entries.retain(|e| e.name != to_name);
                match moved {
                    Some(mut e) => {
                        e.name = to_name.clone();
                        entries.push(e);
                        true
                    }
                    // Without the entry we cannot edit: fetch the listing again.
                    None => false,
                }
            },
        )
    }

    /// Stores an open file's changes: its dirty chunks in runs, one
    /// StoreData64 per run of at most [`STORE_PIECE`] bytes, with the new
    /// length. The stored chunks then become the cached data of the new
    /// data version, and so do the unchanged old chunks when the version
    /// moved by our calls alone; otherwise the rest is fetched again.
    ///
    /// The calls for one file go one after another: the fileserver holds
    /// the vnode's write lock for a whole StoreData64 (GetVolumePackage
    /// with WRITE_LOCK in viced's common_StoreData64), so a second call on
    /// the same file would only wait there. Different files store in
    /// parallel: every close is its own task on its own Rx call.
    async fn store_data(&self, node: &NodeRef, who: &Identity, f: &OpenFile) -> Result<()> {
        let start = now_secs();
        let epoch = self.statuses.epoch();
        let old = self.statuses.known(&node.key());
        let key = node.key();
        let cs = self.config.chunk_size;
        let plan = f.store_plan(cs, STORE_PIECE);
        let mut last = None;
        for piece in &plan {
            let mut data = Vec::with_capacity(piece.len() as usize);
            for &(idx, len) in &piece.chunks {
                let chunk = self
                    .store
                    .get_chunk_range(&key, LOCAL_DATA_VERSION, idx, 0, len as usize)?
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
            let reply = self.fs_call_data(node, who, &call, &data).await?;
            Stats::add(&self.stats.bytes_stored, data.len() as u64);
            last = Some(reply.status);
        }
        let st = last.ok_or_else(|| Error::Protocol("no StoreData64 reply".into()))?;
        tracing::debug!(mutation = ?Mutation::StoreData { fid: node.fid, length: f.length }, calls = plan.len(), "executed");
        let ours_alone = st.data_version == f.base_dv + plan.len() as u64;
        let mut batch = Batch::clean();
        for &index in &f.dirty {
            let length = f.chunk_len(index, cs);
            if ours_alone && length > 0 {
                // A dirty chunk may end early (zeros follow, as sent); a
                // clean one holds exactly its part of the file.
                batch.push(Op::TruncateChunk {
                    fid: key.clone(),
                    data_version: LOCAL_DATA_VERSION,
                    index,
                    length,
                });
                batch.push(Op::MoveChunk {
                    fid: key.clone(),
                    index,
                    from_dv: LOCAL_DATA_VERSION,
                    to_dv: st.data_version,
                });
            } else {
                batch.push(Op::DeleteChunk {
                    fid: key.clone(),
                    data_version: LOCAL_DATA_VERSION,
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
        self.apply_own(node, who, &st, old.as_ref(), start, epoch, batch)?;
        Ok(())
    }
}

/// What `afsd-rs cache stats` shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheStats {
    pub usage: cache::Usage,
    pub limits: cache::Limits,
    /// What the cache directory occupies on disk, records included.
    pub disk_bytes: u64,
}

impl AfsClient {
    /// Usage and limits of the persistent cache.
    pub fn cache_stats(&self) -> CacheStats {
        CacheStats {
            usage: self.inner.store.usage(),
            limits: cache::Limits {
                max_bytes: self.inner.config_cache_bytes(),
                max_entries: self.inner.config.cache_entries,
                disk_bytes: self.inner.config_cache_bytes(),
            },
            disk_bytes: self.inner.store.disk_usage(),
        }
    }

    /// Changes the cache size limit (bytes; 0: unlimited) and evicts to it.
    pub fn set_cache_size(&self, bytes: u64) -> Result<cache::EvictReport> {
        self.inner
            .cache_bytes
            .store(bytes, std::sync::atomic::Ordering::SeqCst);
        self.inner.store.set_limits(cache::Limits {
            max_entries: self.inner.config.cache_entries,
            disk_bytes: bytes,
            ..cache::Limits::default()
        });
        Ok(self.inner.store.evict()?)
    }

    /// Forgets everything cached about one file or directory (`afsd-rs
    /// flush`): the next access fetches it again.
    pub fn flush_fid(&self, cell: &str, fid: Fid) -> Result<()> {
        let key = FidKey::new(cell, fid.volume, fid.vnode, fid.unique);
        self.inner.store.flush_fid(&key)?;
        self.inner.forget_cached(|k| *k == key);
        Ok(())
    }

    /// As `flush_fid`, for every file of a volume (`afsd-rs flushvolume`).
    pub fn flush_volume(&self, cell: &str, volume: u32) -> Result<()> {
        self.inner.store.flush_volume(cell, volume)?;
        self.inner
            .forget_cached(|k| k.volume == volume && k.cell == cell);
        Ok(())
    }
}

impl Inner {
    fn config_cache_bytes(&self) -> u64 {
        self.cache_bytes.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Drops in-memory state of the matching fids and tells the kernel.
    fn forget_cached(&self, matches: impl Fn(&FidKey) -> bool) {
        self.dirs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|k, _| !matches(k));
        self.mem_chunks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(k, _)| !matches(&k.0));
        let inos: Vec<u64> = {
            let inodes = self.inodes.lock().unwrap_or_else(|e| e.into_inner());
            inodes
                .all()
                .into_iter()
                .filter(|i| inodes.get(*i).is_some_and(|n| matches(&n.key())))
                .collect()
        };
        for ino in inos {
            if let Some(n) = self
                .inodes
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(ino)
            {
                self.statuses.break_fid(&n.key());
                self.rights.break_fid(&n.key());
            }
            let _ = self.inval.send(Invalidation { ino });
        }
    }
}

// Accessors for the `fs`-style administration in admin.rs (kept apart so
// that module needs no private fields).
impl AfsClient {
    pub(crate) fn admin_inner(&self) -> &Arc<Inner> {
        &self.inner
    }
}

impl Inner {
    pub(crate) fn admin_node(&self, ino: u64) -> Result<NodeRef> {
        self.node(ino)
    }

    pub(crate) fn admin_who(&self, uid: u32, node: &NodeRef) -> Identity {
        self.who(uid, node)
    }

    pub(crate) async fn admin_fs_call<R: afs_proto::Rpc>(
        &self,
        node: &NodeRef,
        who: &Identity,
        rpc: &R,
    ) -> Result<R::Reply> {
        self.fs_call(node, who, rpc).await
    }

    pub(crate) async fn admin_valid_status(
        &self,
        node: &NodeRef,
        who: &Identity,
    ) -> Result<StatusRecord> {
        self.valid_status(node, who).await
    }

    /// The fid of entry `name` of directory `dir` (lookup right required).
    pub(crate) async fn admin_dir_entry(
        &self,
        dir: &NodeRef,
        who: &Identity,
        name: &[u8],
    ) -> Result<Option<Fid>> {
        let d = self.dir(dir, who).await?;
        self.require(dir, who, PRSFS_LOOKUP)?;
        Ok(d.index.get(name).map(|&i| {
            let e = &d.entries[i];
            Fid::new(dir.fid.volume, e.vnode, e.unique)
        }))
    }

    pub(crate) async fn admin_read(
        self: &Arc<Self>,
        node: &NodeRef,
        len: u64,
        who: &Identity,
    ) -> Result<Vec<u8>> {
        self.read(node, 0, len, who).await
    }

    pub(crate) fn admin_volumes(&self) -> &VolumeDb {
        &self.volumes
    }

    pub(crate) fn admin_rights(&self) -> &RightsTable {
        &self.rights
    }

    pub(crate) fn admin_rpc(&self) -> &RpcClient {
        &self.rpc
    }

    pub(crate) fn admin_cells(&self) -> &CellDb {
        &self.cells
    }

    /// Fileservers we talked to, and those marked down.
    pub(crate) fn admin_known_servers(&self) -> Vec<SocketAddr> {
        let mut v = self
            .servers_used
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for s in self
            .rpc
            .down
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
        {
            if !v.contains(s) {
                v.push(*s);
            }
        }
        v
    }
}

/// Fileserver locks expire after 5 minutes (afsint.xg); renew well before.
const LOCK_RENEW: std::time::Duration = std::time::Duration::from_secs(120);

impl AfsClient {
    /// flock/fcntl: `typ` is F_RDLCK, F_WRLCK or F_UNLCK for the whole
    /// file (AFS has no byte ranges). Conflicts between local owners are
    /// settled here; between clients, by the fileserver (SetLock). With
    /// `wait` a refused lock is retried until granted.
    pub async fn setlk(&self, uid: u32, ino: u64, owner: u64, typ: i32, wait: bool) -> Result<()> {
        let node = self.inner.node(ino)?;
        let who = self.inner.who(uid, &node);
        if typ == libc::F_UNLCK {
            let release = {
                let mut locks = self.inner.locks.lock().unwrap_or_else(|e| e.into_inner());
                match locks.get_mut(&ino) {
                    Some(l) => {
                        l.owners.remove(&owner);
                        if l.owners.is_empty() {
                            if let Some(l) = locks.remove(&ino) {
                                l.renewer.abort();
                            }
                            true
                        } else {
                            false
                        }
                    }
                    None => false,
                }
            };
            if release {
                self.inner
                    .fs_call(&node, &who, &rpcs::ReleaseLock { fid: node.fid })
                    .await?;
            }
            return Ok(());
        }
        let write = typ == libc::F_WRLCK;
        loop {
            // Local owners first. 0: granted, 1: conflict, 2: go to the server.
            let decision = {
                let mut locks = self.inner.locks.lock().unwrap_or_else(|e| e.into_inner());
                match locks.get_mut(&ino) {
                    Some(l) => {
                        let others = l.owners.iter().any(|o| *o != owner);
                        // Readers share; a writer needs to be alone (and
                        // to hold the server's write lock already).
                        let grant = if write {
                            !others && l.write
                        } else {
                            !others || !l.write
                        };
                        if grant {
                            l.owners.insert(owner);
                            0
                        } else if others {
                            1
                        } else {
                            2
                        }
                    }
                    None => 2,
                }
            };
            match decision {
                0 => return Ok(()),
                1 if !wait => return Err(Error::WouldBlock),
                1 => {
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    continue;
                }
                _ => {}
            }
            // Only we hold it, read, and want write: give it back and ask
            // the server for a write lock.
            let upgrade = self
                .inner
                .locks
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&ino);
            if let Some(l) = upgrade {
                l.renewer.abort();
                self.inner
                    .fs_call(&node, &who, &rpcs::ReleaseLock { fid: node.fid })
                    .await?;
            }
            let lock_type = if write {
                afs_proto::fs::LOCK_WRITE
            } else {
                afs_proto::fs::LOCK_READ
            };
            match self
                .inner
                .fs_call(
                    &node,
                    &who,
                    &rpcs::SetLock {
                        fid: node.fid,
                        lock_type,
                    },
                )
                .await
            {
                Ok(_) => {
                    let me = self.clone();
                    let (n, w) = (node.clone(), who.clone());
                    let renewer = tokio::spawn(async move {
                        loop {
                            tokio::time::sleep(LOCK_RENEW).await;
                            if let Err(e) = me
                                .inner
                                .fs_call(&n, &w, &rpcs::ExtendLock { fid: n.fid })
                                .await
                            {
                                tracing::warn!(fid = ?n.fid, "renewing a lock: {e}");
                            }
                        }
                    });
                    let mut owners = std::collections::HashSet::new();
                    owners.insert(owner);
                    self.inner
                        .locks
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(
                            ino,
                            HeldLock {
                                write,
                                owners,
                                renewer,
                            },
                        );
                    return Ok(());
                }
                Err(e) if e.errno() == libc::EAGAIN || e.errno() == libc::EWOULDBLOCK => {
                    if !wait {
                        return Err(Error::WouldBlock);
                    }
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// F_GETLK: whether `owner` could take the lock, as far as this client
    /// knows (the fileserver has no query without taking the lock).
    pub fn getlk(&self, ino: u64, owner: u64, typ: i32) -> i32 {
        let locks = self.inner.locks.lock().unwrap_or_else(|e| e.into_inner());
        match locks.get(&ino) {
            Some(l)
                if l.owners.iter().any(|o| *o != owner) && (l.write || typ == libc::F_WRLCK) =>
            {
                if l.write {
                    libc::F_WRLCK
                } else {
                    libc::F_RDLCK
                }
            }
            _ => libc::F_UNLCK,
        }
    }
}

#[cfg(test)]
mod cookie_tests {
    use super::dir_cookie;

    #[test]
    fn cookies_put_dots_first_and_stay_in_range() {
        assert_eq!(dir_cookie(b"."), 1);
        assert_eq!(dir_cookie(b".."), 2);
        let mut seen = std::collections::HashSet::new();
        for i in 0..20_000 {
            let c = dir_cookie(format!("entry-{i:05}").as_bytes());
            assert!(c > 2 && c < i64::MAX as u64);
            assert!(seen.insert(c), "collision at {i}");
        }
        // A name's cookie depends on the name alone.
        assert_eq!(dir_cookie(b"hello.txt"), dir_cookie(b"hello.txt"));
    }
}
