//! Mounting and listing `/afs` contact no cell but the local one: with
//! Debian's public CellServDB (202 cells) configured, the mount-time check
//! asks ThisCell only, nothing at all without ThisCell, and the root listing
//! comes from the configuration alone.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};

use afs_proto::types::Uuid;
use cache::MemoryStore;
use client::memserver::{MemCell, MemFileServer};
use client::{
    AfsClient, BoxFuture, CallbackSink, Cell, CellDb, ClientConfig, FileServer, FsCall, FsReply,
    Identity, Stats, VolType, VolumeInfo, VolumeTarget, ROOT_INO,
};

const DEBIAN: &[u8] = include_bytes!("data/CellServDB.debian");

/// The in-memory cell behind a seam that records every cell asked anything.
struct Recording {
    mem: Arc<MemFileServer>,
    asked: Mutex<Vec<String>>,
}

impl Recording {
    fn note(&self, cell: &str) {
        self.asked.lock().unwrap().push(cell.to_string());
    }
    fn asked(&self) -> Vec<String> {
        let mut v = self.asked.lock().unwrap().clone();
        v.dedup();
        v
    }
}

impl FileServer for Recording {
    fn attach(&self, sink: Weak<dyn CallbackSink>, uuid: Uuid) {
        self.mem.attach(sink, uuid)
    }
    fn locate<'a>(
        &'a self,
        cell: &'a Cell,
        name: &'a str,
    ) -> BoxFuture<'a, client::Result<Arc<VolumeInfo>>> {
        self.note(&cell.name);
        self.mem.locate(cell, name)
    }
    fn volume_by_id(&self, cell: &str, id: u32) -> Option<(Arc<VolumeInfo>, VolType)> {
        self.mem.volume_by_id(cell, id)
    }
    fn seed(&self, info: VolumeInfo) {
        self.mem.seed(info)
    }
    fn call<'a>(
        &'a self,
        target: &'a VolumeTarget,
        who: &'a Identity,
        call: FsCall,
    ) -> BoxFuture<'a, client::Result<FsReply>> {
        self.note(&target.cell);
        self.mem.call(target, who, call)
    }
    fn volumes_at(&self, server: SocketAddr) -> Vec<(String, u32)> {
        self.mem.volumes_at(server)
    }
    fn known_servers(&self) -> Vec<SocketAddr> {
        self.mem.known_servers()
    }
    fn probe(&self, server: SocketAddr) -> BoxFuture<'_, bool> {
        self.mem.probe(server)
    }
    fn give_up_callbacks(&self) -> BoxFuture<'_, ()> {
        self.mem.give_up_callbacks()
    }
    fn transport_stats(&self) -> String {
        self.mem.transport_stats()
    }
    fn local_addr(&self) -> SocketAddr {
        self.mem.local_addr()
    }
}

/// A client over Debian's cells plus the in-memory `mem.test`.
fn client(this_cell: Option<&str>) -> (AfsClient, Arc<Recording>, usize) {
    let mem = MemCell::new("mem.test");
    let mut cells = client::parse_cellservdb(DEBIAN).cells;
    cells.insert(100, mem.cell());
    let n = cells.len();
    let rec = Arc::new(Recording {
        mem: mem.connect(),
        asked: Mutex::new(Vec::new()),
    });
    let config = ClientConfig::new("/nonexistent".into(), "/nonexistent".into());
    let db = CellDb {
        this_cell: this_cell.map(str::to_string),
        cells,
    };
    let (c, _inval) = AfsClient::start_with(
        config,
        db,
        Arc::new(MemoryStore::new()),
        rec.clone(),
        Arc::new(Stats::default()),
    )
    .unwrap();
    (c, rec, n)
}

#[tokio::test]
async fn the_mount_check_asks_this_cell_only() {
    let (c, rec, _) = client(Some("mem.test"));
    assert_eq!(c.this_cell().as_deref(), Some("mem.test"));
    assert_eq!(
        c.check_this_cell().await.unwrap().as_deref(),
        Some("mem.test")
    );
    assert_eq!(rec.asked(), ["mem.test"]);
}

#[tokio::test]
async fn without_this_cell_the_mount_check_asks_nobody() {
    let (c, rec, _) = client(None);
    assert_eq!(c.this_cell(), None);
    assert_eq!(c.check_this_cell().await.unwrap(), None);
    assert_eq!(rec.asked(), Vec::<String>::new());
}

#[tokio::test]
async fn listing_the_root_asks_nobody() {
    for this_cell in [None, Some("mem.test")] {
        let (c, rec, n) = client(this_cell);
        let names = c.readdir(0, ROOT_INO).await.unwrap();
        // ".", "..", ".afsd" (the conflict tree), and every cell twice.
        assert_eq!(names.len(), 3 + 2 * n);
        assert!(names.iter().any(|e| e.name == b".afsd"));
        assert!(names.iter().any(|e| e.name == b".grand.central.org"));
        let plus = c.readdirplus(0, ROOT_INO, 0, usize::MAX).await.unwrap();
        assert_eq!(plus.len(), names.len());
        assert!(plus.iter().all(|(_, attr)| attr.is_none()));
        c.getattr(0, ROOT_INO).await.unwrap();
        assert_eq!(rec.asked(), Vec::<String>::new());
    }
}
