//! An in-memory AFS cell: a fileserver and a VLDB behind the
//! [`FileServer`] seam, so that the cache manager can be tested in plain
//! `cargo test`, deterministically, with faults injected.
//!
//! It keeps the AFS semantics the cache manager relies on: fids with
//! uniquifiers (directories odd vnodes, files even), data versions that rise
//! by one per change of a file's data or a directory's entries, callbacks
//! promised on every status handed out and broken (synchronously, to every
//! other client holding one) on change, ACLs evaluated per caller
//! (system:anyuser, system:authuser, users, negative entries), quotas
//! (EDQUOT), and the fileserver's error codes (EEXIST, ENOENT, ENOTDIR,
//! EISDIR, EEXIST for a non-empty directory, EXDEV across volumes, EAGAIN
//! for a lock held elsewhere). Tests can make calls time out, fail with a
//! code or wait, and change files as a third party.
//!
//! Not modelled: RO replicas, multiple fileservers, lock expiry.

mod ops;
mod state;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use afs_proto::types::Uuid;

use crate::fileserver::{BoxFuture, CallbackSink, FileServer, FsCall, FsReply, VolumeTarget};
use crate::identity::Identity;
use crate::volume::VolumeInfo;
use crate::{Cell, Error, Result, VolType};

use state::State;
pub use state::{rights, Entry, ANYUSER, AUTHUSER};

/// The address the in-memory fileserver pretends to have.
pub const SERVER_ADDR: &str = "127.0.0.1:7000";

/// What the next calls of a client meet.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// Every call times out at once (a cut network).
    pub down: bool,
    /// The next calls fail with these abort codes, one per call.
    pub refuse: Vec<i32>,
    /// Every call waits this long before it is served.
    pub delay: Option<Duration>,
    /// Every call is overtaken by a callback break (of a volume nobody
    /// uses): the reply arrives after a break, as it may on a busy cell.
    pub racing_breaks: bool,
    /// Every call is served, then its reply is lost (times out): the
    /// client cannot tell whether its change was made.
    pub lose_replies: bool,
}

/// One in-memory cell, shared by its clients.
pub struct MemCell {
    name: String,
    state: Mutex<State>,
    clients: Mutex<Vec<ClientSlot>>,
}

struct ClientSlot {
    sink: Option<Weak<dyn CallbackSink>>,
    faults: Faults,
}

impl MemCell {
    /// A cell with an empty `root.cell` volume whose root directory grants
    /// system:anyuser `rl` and system:administrators everything.
    pub fn new(name: &str) -> Arc<MemCell> {
        Arc::new(MemCell {
            name: name.to_ascii_lowercase(),
            state: Mutex::new(State::new()),
            clients: Mutex::new(Vec::new()),
        })
    }

    /// The cell as CellServDB would list it (the VL address is never used).
    pub fn cell(&self) -> Cell {
        Cell {
            name: self.name.clone(),
            db_servers: vec![std::net::Ipv4Addr::LOCALHOST],
        }
    }

    /// A fileserver connection for one more client.
    pub fn connect(self: &Arc<Self>) -> Arc<MemFileServer> {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        clients.push(ClientSlot {
            sink: None,
            faults: Faults::default(),
        });
        Arc::new(MemFileServer {
            cell: self.clone(),
            client: clients.len() - 1,
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the server's state as a third party (a client that is
    /// not one of ours, as administrator), then breaks the callbacks it
    /// requires.
    pub fn third_party<T>(&self, f: impl FnOnce(&mut ThirdParty<'_>) -> T) -> T {
        let (out, breaks) = {
            let mut st = self.state();
            let mut tp = ThirdParty {
                st: &mut st,
                broken: Vec::new(),
            };
            let out = f(&mut tp);
            let mut broken = std::mem::take(&mut tp.broken);
            broken.append(&mut st.changed);
            (out, st.take_breaks(usize::MAX, broken))
        };
        self.deliver(breaks);
        out
    }

    /// Sets a client's faults.
    pub fn set_faults(&self, client: usize, faults: Faults) {
        if let Some(c) = self
            .clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(client)
        {
            c.faults = faults;
        }
    }

    /// Calls served, by RPC name, for every client.
    pub fn calls(&self, name: &str) -> u64 {
        self.state().calls.get(name).copied().unwrap_or(0)
    }

    /// Registers a user name for ACL text (`alice` → 2).
    pub fn add_user(&self, name: &str, id: i32) {
        self.state().users.insert(name.to_string(), id);
    }

    /// Makes an empty volume mounted (`#name.`) at `path` in root.cell,
    /// with a quota in KiB (0: none).
    pub fn add_volume(&self, path: &str, name: &str, quota_kb: u64) -> u32 {
        self.third_party(|tp| tp.add_volume(path, name, quota_kb))
    }

    fn deliver(&self, breaks: Vec<(usize, Vec<afs_proto::types::Fid>)>) {
        let from: SocketAddr = SERVER_ADDR.parse().expect("constant address");
        for (client, fids) in breaks {
            let sink = self
                .clients
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(client)
                .and_then(|c| c.sink.clone());
            if let Some(s) = sink.and_then(|w| w.upgrade()) {
                s.break_fids(from, &fids);
            }
        }
    }

    fn faults(&self, client: usize) -> Faults {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        match clients.get_mut(client) {
            Some(c) => {
                let f = c.faults.clone();
                if !c.faults.refuse.is_empty() && !c.faults.down {
                    c.faults.refuse.remove(0);
                }
                f
            }
            None => Faults::default(),
        }
    }
}

/// Direct access to the server's files for tests, as administrator.
pub struct ThirdParty<'a> {
    st: &'a mut State,
    broken: Vec<afs_proto::types::Fid>,
}

impl ThirdParty<'_> {
    /// Writes a whole file at `path` (made when absent).
    pub fn write(&mut self, path: &str, data: &[u8]) {
        let fid = self.st.make_path_file(path);
        self.st.set_data(fid, data.to_vec());
        self.broken.push(fid);
    }

    /// The contents of the file at `path`.
    pub fn read(&mut self, path: &str) -> Option<Vec<u8>> {
        let fid = self.st.resolve(path)?;
        self.st.data_of(fid)
    }

    /// Makes a directory at `path` (and its parents).
    pub fn mkdir(&mut self, path: &str) {
        let (dir, _) = self.st.make_dirs(path);
        self.broken.push(dir);
    }

    /// Removes the file, symlink or empty directory at `path`.
    pub fn remove(&mut self, path: &str) -> bool {
        match self.st.remove_path(path) {
            Some((dir, victim)) => {
                self.broken.push(dir);
                self.broken.push(victim);
                true
            }
            None => false,
        }
    }

    /// Every name under `path`, recursively, with file contents (None for
    /// directories; symlinks as `-> target`).
    pub fn tree(&mut self, path: &str) -> Vec<(String, Entry)> {
        self.st.tree(path)
    }

    /// Sets the ACL of the directory at `path`.
    pub fn set_acl(&mut self, path: &str, plus: &[(i32, u32)], minus: &[(i32, u32)]) {
        if let Some(fid) = self.st.resolve(path) {
            self.st.set_acl(fid, plus, minus);
            self.broken.push(fid);
        }
    }

    /// The data version of the object at `path`.
    pub fn data_version(&mut self, path: &str) -> Option<u64> {
        let fid = self.st.resolve(path)?;
        self.st.dv(fid)
    }

    /// (mode, owner, link count) of the object at `path`.
    pub fn status(&mut self, path: &str) -> Option<(u32, u32, u32)> {
        let fid = self.st.resolve(path)?;
        self.st.vnode(fid).map(|v| (v.mode, v.owner, v.links))
    }

    fn add_volume(&mut self, path: &str, name: &str, quota_kb: u64) -> u32 {
        let id = self.st.add_volume(name, quota_kb);
        let (parent, leaf) = self.st.make_dirs_parent(path);
        let mp = format!("#{name}.");
        let fid = self.st.make_symlink(parent, leaf, mp.as_bytes(), 0o644);
        self.broken.push(parent);
        self.broken.push(fid);
        id
    }
}

/// One client's connection to a [`MemCell`].
pub struct MemFileServer {
    cell: Arc<MemCell>,
    client: usize,
}

impl MemFileServer {
    /// The client's number, for [`MemCell::set_faults`].
    pub fn client(&self) -> usize {
        self.client
    }

    async fn serve(&self, who: &Identity, call: FsCall) -> Result<FsReply> {
        let name = call.name();
        let faults = self.cell.faults(self.client);
        if let Some(d) = faults.delay {
            tokio::time::sleep(d).await;
        }
        if faults.racing_breaks {
            self.cell.deliver(vec![(
                self.client,
                vec![afs_proto::types::Fid::new(u32::MAX - 1, 0, 0)],
            )]);
        }
        if faults.down {
            return Err(Error::TimedOut(format!("{name} to {SERVER_ADDR}")));
        }
        if let Some(&code) = faults.refuse.first() {
            return Err(ops::abort(name, code));
        }
        let (reply, breaks) = {
            let mut st = self.cell.state();
            *st.calls.entry(name).or_default() += 1;
            let caller = state::Caller {
                client: self.client,
                vice_id: who.vice_id,
            };
            let reply = ops::serve(&mut st, &caller, call);
            let changed = std::mem::take(&mut st.changed);
            (reply, st.take_breaks(self.client, changed))
        };
        self.cell.deliver(breaks);
        if faults.lose_replies {
            return Err(Error::TimedOut(format!(
                "{name} to {SERVER_ADDR} (reply lost)"
            )));
        }
        reply
    }
}

impl FileServer for MemFileServer {
    fn attach(&self, sink: Weak<dyn CallbackSink>, _uuid: Uuid) {
        if let Some(c) = self
            .cell
            .clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(self.client)
        {
            c.sink = Some(sink);
        }
    }

    fn locate<'a>(
        &'a self,
        cell: &'a Cell,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Arc<VolumeInfo>>> {
        Box::pin(async move {
            if self.cell.faults(self.client).down {
                return Err(Error::TimedOut(format!("GetEntryByNameU for {name}")));
            }
            let id = self
                .cell
                .state()
                .volume_id(name)
                .ok_or_else(|| Error::NoSuchVolume(format!("{name} in cell {}", cell.name)))?;
            Ok(Arc::new(self.info(id, name)))
        })
    }

    fn seed(&self, _info: VolumeInfo) {
        // The in-memory cell always knows its volumes.
    }

    fn volume_by_id(&self, cell: &str, id: u32) -> Option<(Arc<VolumeInfo>, VolType)> {
        if cell != self.cell.name {
            return None;
        }
        let name = self.cell.state().volume_name(id)?;
        Some((Arc::new(self.info(id, &name)), VolType::Rw))
    }

    fn call<'a>(
        &'a self,
        target: &'a VolumeTarget,
        who: &'a Identity,
        call: FsCall,
    ) -> BoxFuture<'a, Result<FsReply>> {
        Box::pin(async move {
            if target.cell != self.cell.name {
                return Err(Error::UnknownCell(target.cell.clone()));
            }
            self.serve(who, call).await
        })
    }

    fn volumes_at(&self, _server: SocketAddr) -> Vec<(String, u32)> {
        let ids: Vec<u32> = self.cell.state().volumes.keys().copied().collect();
        ids.into_iter()
            .map(|id| (self.cell.name.clone(), id))
            .collect()
    }

    fn known_servers(&self) -> Vec<SocketAddr> {
        vec![SERVER_ADDR.parse().expect("constant address")]
    }

    fn probe(&self, _server: SocketAddr) -> BoxFuture<'_, bool> {
        Box::pin(async move { !self.cell.faults(self.client).down })
    }

    fn give_up_callbacks(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.cell.state().give_up(self.client);
        })
    }

    fn transport_stats(&self) -> String {
        "in-memory".into()
    }

    fn local_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 7001 + self.client as u16))
    }
}

impl MemFileServer {
    fn info(&self, id: u32, name: &str) -> VolumeInfo {
        VolumeInfo {
            cell: self.cell.cell(),
            name: name.to_string(),
            rw_id: id,
            ro_id: 0,
            bk_id: 0,
            rw_servers: self.known_servers(),
            ro_servers: Vec::new(),
            fetched: Instant::now(),
        }
    }
}

/// Counters of one cell's calls, for tests that count RPCs.
pub type CallCounts = HashMap<&'static str, u64>;
