//! Test harness: cache managers over an in-memory cell, and path-level
//! helpers that go through the same entry points the FUSE adapter calls.

#![allow(dead_code)]

use std::sync::Arc;

use cache::{MemoryStore, RocksStore, Store};
use client::memserver::{rights, MemCell, MemFileServer, ANYUSER};
use client::{AfsClient, CellDb, ClientConfig, InvalidationReceiver, NodeKind, Stats, ROOT_INO};

pub const CELL: &str = "mem.test";

/// Which store a client keeps its cache in.
#[derive(Clone, Copy, Debug)]
pub enum StoreKind {
    Memory,
    Rocks,
}

/// One cache manager on the cell.
pub struct Client {
    pub afs: AfsClient,
    pub fs: Arc<MemFileServer>,
    inval: tokio::sync::Mutex<InvalidationReceiver>,
    _dir: Option<tempfile::TempDir>,
}

/// A cell whose root.cell grants everyone everything, and `n` clients.
/// A single-threaded runtime, with logs to the test's output
/// (`RUST_LOG=client=debug`).
#[allow(dead_code)]
pub fn rt() -> tokio::runtime::Runtime {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Makes the in-memory fileserver unreachable for `c` (or reachable).
#[allow(dead_code)]
pub fn down(cell: &MemCell, c: &Client, down: bool) {
    cell.set_faults(
        c.fs.client(),
        client::memserver::Faults {
            down,
            ..client::memserver::Faults::default()
        },
    );
}

/// Replays until every volume is connected with an empty log.
#[allow(dead_code)]
pub async fn until_synced(c: &Client) {
    for _ in 0..100 {
        c.afs.sync(&client::Targets::All).await.unwrap();
        if c.afs
            .volume_status()
            .iter()
            .all(|v| v.mode == client::Mode::Connected && v.pending_ops == 0)
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("not synced: {:?}", c.afs.volume_status());
}

/// Asserts that replay left no conflict.
#[allow(dead_code)]
pub fn assert_no_conflicts(c: &Client) {
    let v = c.afs.conflicts(None);
    assert!(v.is_empty(), "{v:?}");
}

pub fn setup(n: usize, kind: StoreKind, chunk_size: u64) -> (Arc<MemCell>, Vec<Client>) {
    let cell = MemCell::new(CELL);
    cell.third_party(|tp| tp.set_acl("", &[(ANYUSER, rights::ALL)], &[]));
    let clients = (0..n).map(|_| client(&cell, kind, chunk_size)).collect();
    (cell, clients)
}

pub fn client(cell: &Arc<MemCell>, kind: StoreKind, chunk_size: u64) -> Client {
    let (store, dir): (Arc<dyn Store>, _) = match kind {
        StoreKind::Memory => (Arc::new(MemoryStore::new()), None),
        StoreKind::Rocks => {
            let d = tempfile::tempdir().expect("temp dir");
            (
                Arc::new(RocksStore::open(d.path()).expect("rocks store")),
                Some(d),
            )
        }
    };
    let mut config = ClientConfig::new("/nonexistent".into(), "/nonexistent".into());
    config.chunk_size = chunk_size;
    config.readahead_chunks = 2;
    let mut c = client_with(cell, store, config, Arc::new(Stats::default()));
    c._dir = dir;
    c
}

/// A client with a given store, settings and counters (a daemon restarted
/// on its cache, a small cache).
pub fn client_with(
    cell: &Arc<MemCell>,
    store: Arc<dyn Store>,
    config: ClientConfig,
    stats: Arc<Stats>,
) -> Client {
    let cells = CellDb {
        this_cell: Some(CELL.into()),
        cells: vec![cell.cell()],
    };
    let fs = cell.connect();
    let (afs, inval) =
        AfsClient::start_with(config, cells, store, fs.clone(), stats).expect("client starts");
    Client::from_parts(afs, fs, inval)
}

impl Client {
    /// A client made elsewhere (over a store of the test's choosing).
    pub fn from_parts(afs: AfsClient, fs: Arc<MemFileServer>, inval: InvalidationReceiver) -> Self {
        Client {
            afs,
            fs,
            inval: tokio::sync::Mutex::new(inval),
            _dir: None,
        }
    }
}

/// A valid token of `uid` for AFS id `vice_id`, for an hour.
pub fn token(uid: u32, vice_id: i32) -> cache::TokenRecord {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    cache::TokenRecord {
        uid,
        cell: CELL.into(),
        vice_id,
        principal: format!("user{vice_id}@MEM.TEST"),
        kvno: 256,
        ticket: vec![1, 2, 3],
        session_key: [7; 8],
        start: now,
        end: now + 3600,
    }
}

/// The errno of a client error.
pub fn errno<T>(r: client::Result<T>) -> Result<T, i32> {
    r.map_err(|e| e.errno())
}

fn parts(path: &str) -> Vec<&str> {
    path.split('/').filter(|c| !c.is_empty()).collect()
}

impl Client {
    /// The kernel invalidations waiting, taken (as the FUSE side would).
    #[allow(dead_code)]
    pub async fn take_invalidations(&self) -> Vec<client::Invalidation> {
        let mut rx = self.inval.lock().await;
        let mut all = Vec::new();
        while let Ok(Some(b)) =
            tokio::time::timeout(std::time::Duration::from_millis(5), rx.next_batch()).await
        {
            all.extend(b);
        }
        all
    }

    /// Takes the kernel invalidations waiting (as the FUSE side would).
    #[allow(dead_code)]
    pub async fn drain_invalidations(&self) {
        let mut rx = self.inval.lock().await;
        while let Ok(Some(_)) =
            tokio::time::timeout(std::time::Duration::from_millis(5), rx.next_batch()).await
        {
        }
    }

    /// The inode of `/afs/.CELL/path`.
    pub async fn resolve(&self, uid: u32, path: &str) -> Result<u64, i32> {
        let mut ino = errno(
            self.afs
                .lookup(uid, ROOT_INO, format!(".{CELL}").as_bytes())
                .await,
        )?
        .ino;
        for c in parts(path) {
            ino = errno(self.afs.lookup(uid, ino, c.as_bytes()).await)?.ino;
        }
        Ok(ino)
    }

    /// The parent's inode and the leaf name.
    pub async fn parent(&self, uid: u32, path: &str) -> Result<(u64, Vec<u8>), i32> {
        let p = parts(path);
        let (leaf, dirs) = p.split_last().ok_or(libc::EINVAL)?;
        let ino = self.resolve(uid, &dirs.join("/")).await?;
        // As the kernel's path walk: a parent must be a directory.
        if errno(self.afs.getattr(uid, ino).await)?.kind != NodeKind::Dir {
            return Err(libc::ENOTDIR);
        }
        Ok((ino, leaf.as_bytes().to_vec()))
    }

    /// Writes a whole file (created when absent) as `uid`: open, write in
    /// pieces, close.
    pub async fn write_file(&self, uid: u32, path: &str, data: &[u8]) -> Result<(), i32> {
        let (dir, name) = self.parent(uid, path).await?;
        let fh = match errno(self.afs.lookup(uid, dir, &name).await) {
            Ok(a) => errno(
                self.afs
                    .open(uid, a.ino, libc::O_WRONLY | libc::O_TRUNC)
                    .await,
            )?,
            Err(libc::ENOENT) => {
                errno(
                    self.afs
                        .create(uid, dir, &name, 0o644, libc::O_WRONLY)
                        .await,
                )?
                .1
            }
            Err(e) => return Err(e),
        };
        let mut off = 0;
        for piece in data.chunks(37) {
            let n = match errno(self.afs.write(fh, off, piece).await) {
                Ok(n) => n,
                Err(e) => {
                    // As a program does: the descriptor is closed anyway.
                    let _ = self.afs.flush(fh).await;
                    let _ = self.afs.release(fh, None).await;
                    return Err(e);
                }
            };
            assert_eq!(n as usize, piece.len());
            off += piece.len() as u64;
        }
        let r = errno(self.afs.flush(fh).await);
        errno(self.afs.release(fh, None).await)?;
        r
    }

    /// Reads a whole file as `uid`.
    pub async fn read_file(&self, uid: u32, path: &str) -> Result<Vec<u8>, i32> {
        let ino = self.resolve(uid, path).await?;
        let fh = errno(self.afs.open(uid, ino, libc::O_RDONLY).await)?;
        let mut out = Vec::new();
        loop {
            let d = errno(self.afs.read(uid, fh, out.len() as u64, 50).await)?;
            if d.is_empty() {
                break;
            }
            out.extend(d);
        }
        errno(self.afs.release(fh, None).await)?;
        Ok(out)
    }

    pub async fn mkdir(&self, uid: u32, path: &str) -> Result<(), i32> {
        let (dir, name) = self.parent(uid, path).await?;
        errno(self.afs.mkdir(uid, dir, &name, 0o755).await).map(|_| ())
    }

    pub async fn unlink(&self, uid: u32, path: &str) -> Result<(), i32> {
        let (dir, name) = self.parent(uid, path).await?;
        errno(self.afs.unlink(uid, dir, &name).await)
    }

    pub async fn rmdir(&self, uid: u32, path: &str) -> Result<(), i32> {
        let (dir, name) = self.parent(uid, path).await?;
        errno(self.afs.rmdir(uid, dir, &name).await)
    }

    pub async fn rename(&self, uid: u32, from: &str, to: &str) -> Result<(), i32> {
        let (fdir, fname) = self.parent(uid, from).await?;
        let (tdir, tname) = self.parent(uid, to).await?;
        errno(self.afs.rename(uid, fdir, &fname, tdir, &tname).await)
    }

    /// Every name under `path` as this client lists it, with file contents
    /// (None for directories), sorted.
    pub async fn tree(&self, uid: u32, path: &str) -> Result<Vec<(String, Option<Vec<u8>>)>, i32> {
        let mut out = Vec::new();
        let mut todo = vec![(
            path.trim_matches('/').to_string(),
            self.resolve(uid, path).await?,
        )];
        while let Some((p, ino)) = todo.pop() {
            for e in errno(self.afs.readdir(uid, ino).await)? {
                if e.name == b"." || e.name == b".." {
                    continue;
                }
                let name = String::from_utf8_lossy(&e.name).into_owned();
                let full = if p.is_empty() {
                    name
                } else {
                    format!("{p}/{name}")
                };
                let a = errno(self.afs.lookup(uid, ino, &e.name).await)?;
                if a.kind == NodeKind::Dir {
                    out.push((full.clone(), None));
                    todo.push((full, a.ino));
                } else {
                    let data = self.read_file(uid, &full).await?;
                    out.push((full, Some(data)));
                }
            }
        }
        out.sort();
        Ok(out)
    }
}
