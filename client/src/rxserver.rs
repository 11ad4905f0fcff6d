//! [`FileServer`] over Rx: the real cells.
//!
//! Owns server choice and reachability: the VLDB answers ([`VolumeDb`]),
//! the rotation through a volume's sites until one answers, relocation when
//! a volume moved (VNOVOL/VMOVED: ask the VLDB again, once), the servers
//! marked down after a timeout (in [`RpcClient`]), and the list of
//! fileservers used (for GiveUpAllCallBacks and `checkservers`). The
//! callback service the fileservers call shares the Rx endpoint and hands
//! breaks to the cache manager's [`CallbackSink`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use afs_proto::fs as rpcs;
use afs_proto::types::Uuid;
use rx::RxEndpoint;

use crate::fileserver::{BoxFuture, CallbackSink, FileServer, FsCall, FsReply, VolumeTarget};
use crate::identity::Identity;
use crate::rpc::RpcClient;
use crate::volume::{VolumeDb, VolumeInfo};
use crate::{Cell, Error, Result, Stats, VolType};

/// How long a call waits out a busy volume (VBUSY, VRESTARTING) before
/// the error reaches the caller, and the pause between tries.
const BUSY_WAIT: Duration = Duration::from_secs(300);
const BUSY_PAUSE: Duration = Duration::from_secs(1);

/// How long `checkservers` waits for a probe answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// The Rx fileserver client of every cell.
pub struct RxFileServer {
    rpc: RpcClient,
    volumes: VolumeDb,
    vldb_ttl: Duration,
    servers_used: Arc<Mutex<Vec<SocketAddr>>>,
    /// Incoming callback calls, until [`FileServer::attach`] takes them.
    incoming: Mutex<Option<tokio::sync::mpsc::Receiver<rx::IncomingCall>>>,
}

impl RxFileServer {
    /// Binds the Rx endpoint our calls and the callback service share.
    pub fn bind(
        dead_time: Duration,
        vldb_ttl: Duration,
        stats: Arc<Stats>,
    ) -> Result<Arc<RxFileServer>> {
        let rx_config = rx::Config {
            dead_time,
            served_services: vec![afs_proto::cb::CB_SERVICE_ID],
            ..rx::Config::default()
        };
        let bind: SocketAddr = "0.0.0.0:0"
            .parse()
            .map_err(|_| Error::Config("bind address".into()))?;
        let (endpoint, incoming) = RxEndpoint::bind(bind, rx_config)?;
        Ok(Arc::new(RxFileServer {
            rpc: RpcClient {
                endpoint,
                stats,
                down: Mutex::new(HashMap::new()),
            },
            volumes: VolumeDb::default(),
            vldb_ttl,
            servers_used: Arc::new(Mutex::new(Vec::new())),
            incoming: Mutex::new(Some(incoming)),
        }))
    }

    /// Accepts callback calls from `addr` before this client has called
    /// it (for programs that drive the callback service directly, such as
    /// its tests); otherwise only fileservers called are heard.
    pub fn trust(&self, addr: SocketAddr) {
        let mut used = self.servers_used.lock().unwrap_or_else(|e| e.into_inner());
        if !used.contains(&addr) {
            used.push(addr);
        }
    }

    async fn call_sites(
        &self,
        servers: &[SocketAddr],
        who: &Identity,
        call: &FsCall,
    ) -> Result<FsReply> {
        if servers.is_empty() {
            return Err(Error::NoSuchVolume("volume has no sites".into()));
        }
        let mut last = None;
        for s in servers {
            // Trusted before the call leaves: a fileserver meeting a new
            // client calls it back (TellMeAboutYourself) before answering.
            self.trust(*s);
            match call.send_rx(&self.rpc, *s, who).await {
                Ok(r) => return Ok(r),
                Err(e) if e.should_fail_over() => {
                    tracing::warn!(server = %s, "{e}; trying the next site");
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or(Error::NotFound))
    }

    /// Calls the fileservers of a volume in turn until one answers. When
    /// the volume has moved (VNOVOL, VMOVED from every site), its location
    /// is asked anew from the VLDB and the call tried once more.
    async fn call_volume(
        &self,
        target: &VolumeTarget,
        who: &Identity,
        call: FsCall,
    ) -> Result<FsReply> {
        let mut relocated = false;
        let mut busy_since: Option<std::time::Instant> = None;
        loop {
            let (vol, t) = self
                .volumes
                .by_id(&target.cell, target.volume)
                .ok_or_else(|| {
                    Error::NoSuchVolume(format!("{} in cell {}", target.volume, target.cell))
                })?;
            match self.call_sites(vol.servers(t), who, &call).await {
                Err(Error::Server { code, .. })
                    if !relocated
                        && (code == afs_proto::errors::VNOVOL
                            || code == afs_proto::errors::VMOVED) =>
                {
                    relocated = true;
                    tracing::info!(volume = %vol.name, code, "volume moved; asking the VLDB again");
                    let cell = vol.cell.clone();
                    self.volumes.forget(&target.cell, &vol.name);
                    self.volumes
                        .locate(&self.rpc, &cell, &vol.name, self.vldb_ttl)
                        .await?;
                }
                // Busy (a vos move or release, a salvage) or restarting:
                // the call was not carried out; as OpenAFS's cache manager
                // does, wait and ask again rather than fail the caller.
                Err(e @ Error::Server { code, .. })
                    if code == afs_proto::errors::VBUSY
                        || code == afs_proto::errors::VRESTARTING =>
                {
                    let since = *busy_since.get_or_insert_with(std::time::Instant::now);
                    if since.elapsed() >= BUSY_WAIT {
                        return Err(e);
                    }
                    tracing::info!(volume = %vol.name, code, "volume busy; waiting");
                    tokio::time::sleep(BUSY_PAUSE).await;
                }
                other => return other,
            }
        }
    }
}

impl FileServer for RxFileServer {
    fn attach(&self, sink: Weak<dyn CallbackSink>, uuid: Uuid) {
        let incoming = self
            .incoming
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(calls) = incoming {
            // Only fileservers we called may call back (by address: a
            // multihomed server may answer from another port).
            let used = self.servers_used.clone();
            let trusted = move |ip: std::net::IpAddr| {
                used.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .iter()
                    .any(|s| s.ip() == ip)
            };
            tokio::spawn(crate::callback::serve(sink, uuid, calls, trusted));
        }
    }

    fn volumes_at(&self, server: SocketAddr) -> Vec<(String, u32)> {
        self.volumes.at_server(server.ip())
    }

    fn locate<'a>(
        &'a self,
        cell: &'a Cell,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Arc<VolumeInfo>>> {
        Box::pin(self.volumes.locate(&self.rpc, cell, name, self.vldb_ttl))
    }

    fn volume_by_id(&self, cell: &str, id: u32) -> Option<(Arc<VolumeInfo>, VolType)> {
        self.volumes.by_id(cell, id)
    }

    fn seed(&self, info: VolumeInfo) {
        self.volumes.insert(Arc::new(info));
    }

    fn call<'a>(
        &'a self,
        target: &'a VolumeTarget,
        who: &'a Identity,
        call: FsCall,
    ) -> BoxFuture<'a, Result<FsReply>> {
        Box::pin(self.call_volume(target, who, call))
    }

    fn known_servers(&self) -> Vec<SocketAddr> {
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
        // The sites not called yet (another replica) are servers too.
        for s in self.volumes.all_servers() {
            if !v.contains(&s) {
                v.push(s);
            }
        }
        v
    }

    fn probe(&self, server: SocketAddr) -> BoxFuture<'_, bool> {
        Box::pin(async move {
            let r =
                tokio::time::timeout(PROBE_TIMEOUT, self.rpc.call(server, &rpcs::GetCapabilities))
                    .await;
            // Any answer, an abort included, proves the server is up.
            matches!(r, Ok(Ok(_)) | Ok(Err(Error::Server { .. })))
        })
    }

    fn give_up_callbacks(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let servers = self
                .servers_used
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            for s in servers {
                let r = tokio::time::timeout(
                    Duration::from_secs(3),
                    self.rpc.call(s, &rpcs::GiveUpAllCallBacks),
                )
                .await;
                tracing::debug!(server = %s, ok = matches!(r, Ok(Ok(_))), "GiveUpAllCallBacks");
            }
        })
    }

    fn transport_stats(&self) -> String {
        format!("{:?}", self.rpc.endpoint.stats())
    }

    fn local_addr(&self) -> SocketAddr {
        self.rpc.endpoint.local_addr()
    }
}
