//! [`AfsClient`], the cache manager's facade, and how its components are
//! put together.
//!
//! ```text
//!   AfsClient (namespace.rs, files.rs, changes.rs, admin.rs: entry points)
//!      │ every entry point: nodes → validate (who, status, rights) → one component
//!      ├── nodes      inode numbers of fids, kernel invalidations
//!      ├── validate   tokens, statuses with live callbacks, rights per identity;
//!      │              the callback sink
//!      ├── dirs       listings per data version, edited after our changes
//!      ├── data       server data: chunks, read-ahead, shared fetches
//!      ├── writes     open handles, unstored changes per (fid, uid)
//!      ├── executor   Mutation records → requests → replies applied
//!      ├── locks      whole-file locks at the fileserver
//!      └── FileServer (fileserver.rs): rxserver.rs (Rx, real cells) or
//!                     memserver (in memory, tests)
//! ```
//!
//! Every component owns its state; they share the store, the stats and the
//! fileserver seam.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use afs_proto::types::{Fid, Uuid};
use cache::{Batch, FidKey, Op, RocksStore, Store};

use crate::conflicts::Conflicts;
use crate::connectivity::Connectivity;
use crate::data::FileData;
use crate::dirs::Dirs;
use crate::executor::Executor;
use crate::fileserver::{CallbackSink, FileServer};
use crate::identity::{TokenInfo, Tokens};
use crate::invalidations::{Closer, InvalidationReceiver, Queue};
use crate::journal::Journal;
use crate::locks::Locks;
use crate::nodes::Nodes;
use crate::rxserver::RxFileServer;
use crate::validate::Validator;
use crate::writes::{OpenFiles, LOWEST_LOCAL_DV};
use crate::{CellDb, ClientConfig, Error, Result, Stats};

pub(crate) struct Inner {
    pub(crate) config: ClientConfig,
    pub(crate) cells: CellDb,
    pub(crate) fs: Arc<dyn FileServer>,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) stats: Arc<Stats>,
    pub(crate) uuid: Uuid,
    pub(crate) nodes: Arc<Nodes>,
    pub(crate) valid: Arc<Validator>,
    pub(crate) dirs: Arc<Dirs>,
    pub(crate) data: Arc<FileData>,
    pub(crate) exec: Arc<Executor>,
    pub(crate) open: OpenFiles,
    /// Opened files of `/afs/.afsd/conflicts`.
    pub(crate) tree: crate::conflict_tree::TreeHandles,
    pub(crate) locks: Locks,
    pub(crate) conflicts: Conflicts,
    /// The miss policy: waits and misses (miss/).
    pub(crate) miss: crate::miss::Miss,
    /// One replay at a time (the background task, `sync`).
    pub(crate) replay_lock: tokio::sync::Mutex<()>,
    /// The cache size limit in force (`setcachesize` changes it).
    cache_bytes: AtomicU64,
    /// Ends the FUSE side's invalidation stream with the client.
    inval: Closer,
}

/// The cache manager. Cheap to clone; all clones share one state.
#[derive(Clone)]
pub struct AfsClient {
    pub(crate) inner: Arc<Inner>,
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
    /// Reads the cell configuration, opens the cache and binds the Rx
    /// endpoint that serves both our calls and the callback service. The
    /// receiver yields nodes whose kernel caches must be invalidated.
    pub async fn start(config: ClientConfig) -> Result<(AfsClient, InvalidationReceiver)> {
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
    ) -> Result<(AfsClient, InvalidationReceiver)> {
        let stats = Arc::new(Stats::default());
        let fs = RxFileServer::bind(config.dead_time, config.vldb_ttl, stats.clone())?;
        Self::start_with(config, cells, store, fs, stats)
    }

    /// Puts the components together over a given fileserver seam (the Rx
    /// one, or an in-memory fileserver in tests).
    pub fn start_with(
        config: ClientConfig,
        cells: CellDb,
        store: Arc<dyn Store>,
        fs: Arc<dyn FileServer>,
        stats: Arc<Stats>,
    ) -> Result<(AfsClient, InvalidationReceiver)> {
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
        let journal = Arc::new(Journal::load(store.clone())?);
        let conflicts = Conflicts::load(store.clone())?;
        // Unstored writes of a run that died before their close returned
        // were never acknowledged, unless the change log names them
        // (offline writes are logged as they happen).
        let logged_stores: Vec<crate::journal::LogRecord> =
            journal.find(|r| matches!(r.m.change, crate::mutation::Change::StoreData { .. }));
        let dirty = store.usage().dirty_bytes;
        if dirty > 0 {
            let keep = logged_stores
                .iter()
                .filter_map(|r| match &r.m.change {
                    crate::mutation::Change::StoreData { fid, data } => Some((
                        FidKey::new(&r.m.cell, fid.volume, fid.vnode, fid.unique),
                        data.local_dv,
                    )),
                    _ => None,
                })
                .collect();
            let mut b = Batch::new();
            b.push(Op::DiscardDirty {
                data_version: LOWEST_LOCAL_DV,
                keep,
            });
            store.apply(b)?;
            let dropped = dirty.saturating_sub(store.usage().dirty_bytes);
            if dropped > 0 {
                tracing::warn!(
                    bytes = dropped,
                    "dropped writes of an earlier run whose close never returned"
                );
            }
        }
        // Writes still open when the daemon died are changes now: their
        // data is what the cache held (recovered, unclosed).
        let unclosed: Vec<_> = logged_stores
            .iter()
            .filter(|r| r.state == crate::journal::RecState::Open)
            .map(|r| {
                let mut r = r.clone();
                r.state = crate::journal::RecState::Pending;
                r
            })
            .collect();
        if !unclosed.is_empty() {
            tracing::warn!(
                files = unclosed.len(),
                "files being written offline when the daemon stopped: their writes are kept as changes"
            );
            journal.commit(Vec::new(), unclosed, Vec::new(), true)?;
        }
        // Pins first: what they hold must not be evicted below.
        let pins = Arc::new(crate::pins::PinSet::load(store.clone())?);
        // A smaller limit than last time takes effect now, not at the next fetch.
        store.evict()?;
        let queue = Arc::new(Queue::default());
        let inval_rx = InvalidationReceiver::new(queue.clone());
        let nodes = Arc::new(Nodes::new(queue.clone()));
        let cell_names = cells.cells.iter().map(|c| c.name.clone()).collect();
        let conn = Arc::new(Connectivity::default());
        for (cell, vol) in journal.volumes() {
            conn.set(
                &cell,
                vol,
                crate::Mode::Disconnected,
                "changes of an earlier run to replay",
            );
        }
        let valid = Arc::new(Validator::new(
            fs.clone(),
            store.clone(),
            stats.clone(),
            nodes.clone(),
            cell_names,
            Tokens::new(config.rxkad_level, stored_tokens),
            conn,
            journal.pending.clone(),
            pins.clone(),
        ));
        let dirs = Arc::new(Dirs::new(store.clone(), stats.clone(), valid.clone()));
        let data = Arc::new(FileData::new(
            store.clone(),
            stats.clone(),
            valid.clone(),
            config.chunk_size,
            config.readahead_chunks,
        ));
        let exec = Arc::new(Executor::new(
            store.clone(),
            stats.clone(),
            valid.clone(),
            dirs.clone(),
            journal.clone(),
            config.chunk_size,
        ));
        let open = OpenFiles::new(store.clone(), valid.clone(), data.clone(), exec.clone());
        // The write states of logged stores come back from the log.
        for r in journal.find(|r| matches!(r.m.change, crate::mutation::Change::StoreData { .. })) {
            if let crate::mutation::Change::StoreData { fid, data } = &r.m.change {
                let node = crate::inode::NodeRef {
                    cell: r.m.cell.clone(),
                    fid: *fid,
                    vol_type: crate::VolType::Rw,
                };
                open.restore(&node, r.m.uid, data);
            }
        }
        let locks = Locks::new(valid.clone());
        let sink: Arc<dyn CallbackSink> = valid.clone();
        fs.attach(Arc::downgrade(&sink), uuid);
        let miss = crate::miss::Miss::new(config.miss.clone(), store.as_ref());
        let inner = Arc::new(Inner {
            config,
            cells,
            fs,
            store,
            stats,
            uuid,
            nodes,
            valid,
            dirs,
            data,
            exec,
            open,
            tree: Default::default(),
            locks,
            conflicts,
            miss,
            replay_lock: tokio::sync::Mutex::new(()),
            cache_bytes: AtomicU64::new(cache_bytes),
            inval: Closer(queue),
        });
        tokio::spawn(crate::replay::reconnect_loop(Arc::downgrade(&inner)));
        tokio::spawn(crate::pinning::refresh_loop(Arc::downgrade(&inner)));
        tokio::spawn(crate::miss::keep_misses(Arc::downgrade(&inner)));
        tokio::spawn(crate::tokenwatch::watch_loop(Arc::downgrade(&inner)));
        tracing::info!(uuid = %uuid, "cache manager started");
        let client = AfsClient { inner };
        // Local versions discarded by keep-remote past their retention go.
        match client.purge_resolved(0, None, client.inner.config.conflict_retention) {
            Ok(0) => {}
            Ok(n) => tracing::info!(conflicts = n, "purged local versions past their retention"),
            Err(e) => tracing::warn!("purging resolved conflicts: {e}"),
        }
        Ok((client, inval_rx))
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
        self.lookup(0, crate::ROOT_INO, &name).await.map(|_| ())
    }

    /// True when this cache used `cell` before (it kept where its volumes
    /// are): the cell can be served offline.
    pub fn knows_cell(&self, cell: &str) -> bool {
        let mut prefix = cell.to_ascii_lowercase().into_bytes();
        prefix.push(0);
        self.inner
            .store
            .records(crate::journal::SPACE_VOLUME)
            .map(|r| r.iter().any(|(k, _)| k.starts_with(&prefix)))
            .unwrap_or(false)
    }

    /// The address of the socket our calls leave from and the callback
    /// service listens on.
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.inner.fs.local_addr()
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
        let tokens = &self.inner.valid.tokens;
        tokens.clear_warning(token.uid, &cell);
        tracing::info!(uid = token.uid, cell = %cell, principal = %token.principal, "token set");
        tokens.insert(token);
        // Replay waiting for this user resumes.
        self.inner.valid.conn.wake.notify_one();
        Ok(())
    }

    /// `uid`'s tokens, expired ones included and marked.
    pub fn tokens(&self, uid: u32) -> Vec<TokenInfo> {
        self.inner.valid.tokens.list(uid)
    }

    /// Drops `uid`'s tokens (one cell, or all). Returns the cells dropped.
    pub fn unlog(&self, uid: u32, cell: Option<&str>) -> Result<Vec<String>> {
        let cells = self.inner.valid.tokens.remove(uid, cell);
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

    /// Transport counters, for the stats output.
    pub fn rx_stats(&self) -> String {
        self.inner.fs.transport_stats()
    }

    /// The stats text: RPC counts, cache hits and misses, bytes fetched,
    /// inodes known.
    pub fn render_stats(&self) -> String {
        let mut s = self.inner.stats.render();
        s.push_str(&format!("inodes {}\n", self.inner.nodes.len()));
        let u = self.inner.store.usage();
        s.push_str(&format!(
            "store.bytes {}\nstore.dirty_bytes {}\nstore.pinned_bytes {}\n",
            u.bytes, u.dirty_bytes, u.pinned_bytes
        ));
        s.push_str(&format!(
            "invalidations_pending {}\n",
            self.inner.inval.0.len()
        ));
        s.push_str(&format!("rx {}\n", self.rx_stats()));
        s
    }

    /// A clean unmount: files unlinked while open are removed (their
    /// descriptors went with the mount), and every fileserver used is told
    /// to drop our callbacks.
    pub async fn shutdown(&self) {
        for h in self.inner.open.take_hidden() {
            if let Err(e) = self.remove_hidden(&h).await {
                tracing::warn!(name = %String::from_utf8_lossy(&h.name), "removing a file unlinked while open: {e}");
            }
        }
        self.inner.fs.give_up_callbacks().await;
        self.inner.miss.keep(self.inner.store.as_ref());
    }

    /// Probes every fileserver this client knows of (those it used, and
    /// those marked down) and returns the ones that did not answer.
    pub async fn check_servers(&self) -> Vec<std::net::SocketAddr> {
        let servers = self.inner.fs.known_servers();
        let mut probes = tokio::task::JoinSet::new();
        for s in servers {
            let me = self.clone();
            probes.spawn(async move {
                let up = me.inner.fs.probe(s).await;
                tracing::debug!(server = %s, up, "checkservers probe");
                (s, up)
            });
        }
        let mut down = Vec::new();
        while let Some(r) = probes.join_next().await {
            if let Ok((s, false)) = r {
                down.push(s);
            }
        }
        down.sort();
        down
    }

    /// Usage and limits of the persistent cache.
    pub fn cache_stats(&self) -> CacheStats {
        let bytes = self.inner.cache_bytes.load(Ordering::SeqCst);
        CacheStats {
            usage: self.inner.store.usage(),
            limits: cache::Limits {
                max_bytes: bytes,
                max_entries: self.inner.config.cache_entries,
                disk_bytes: bytes,
            },
            disk_bytes: self.inner.store.disk_usage(),
        }
    }

    /// Changes the cache size limit (bytes; 0: unlimited) and evicts to it.
    pub fn set_cache_size(&self, bytes: u64) -> Result<cache::EvictReport> {
        let u = self.inner.store.usage();
        let held = u.dirty_bytes + u.pinned_bytes;
        if bytes != 0 && bytes < held {
            return Err(Error::NoSpace(format!(
                "the cache holds {held} bytes it may not evict ({} pinned, {} not yet stored); nothing was changed",
                u.pinned_bytes, u.dirty_bytes
            )));
        }
        self.inner.cache_bytes.store(bytes, Ordering::SeqCst);
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
        if self.inner.exec.journal.pending.contains(&key) {
            return Err(Error::Busy(
                "it has changes not yet on the server (see afsd-rs status); nothing was flushed"
                    .into(),
            ));
        }
        if self.inner.valid.pins.contains(&key) {
            return Err(Error::Busy(
                "it is pinned (see afsd-rs pins; afsd-rs unpin first); nothing was flushed".into(),
            ));
        }
        self.inner.store.flush_fid(&key)?;
        self.inner.forget_cached(|k| *k == key);
        Ok(())
    }

    /// As `flush_fid`, for every file of a volume (`afsd-rs flushvolume`).
    pub fn flush_volume(&self, cell: &str, volume: u32) -> Result<()> {
        if self.inner.exec.journal.has_log(cell, volume) {
            return Err(Error::Busy(
                "the volume has changes not yet on the server (see afsd-rs status); nothing was flushed"
                    .into(),
            ));
        }
        if self.inner.valid.pins.in_volume(cell, volume) {
            return Err(Error::Busy(
                "the volume holds pinned objects (see afsd-rs pins; afsd-rs unpin first); nothing was flushed"
                    .into(),
            ));
        }
        self.inner.store.flush_volume(cell, volume)?;
        self.inner
            .forget_cached(|k| k.volume == volume && k.cell == cell);
        Ok(())
    }
}

impl Inner {
    /// Drops in-memory state of the matching fids and tells the kernel.
    fn forget_cached(&self, matches: impl Fn(&FidKey) -> bool) {
        self.dirs.forget(&matches);
        self.data.forget(&matches);
        for (ino, node) in self.nodes.matching(&matches) {
            self.valid.forget(&node.key());
            self.nodes.invalidate_ino(ino);
        }
    }
}
