//! Volume location (VL GetEntryByNameU + GetAddrsU), mount points, and the
//! choice between a volume's RW, RO and backup instances.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Mutex;
use std::time::Instant;

use afs_proto::types::Uuid;
use afs_proto::vl::{self, GetAddrsU, GetEntryByNameU, UVldbEntry, VlServerAddr};

use crate::rpc::RpcClient;
use crate::{Cell, Error, Result};

/// Which instance of a volume a fid belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VolType {
    Rw,
    Ro,
    Backup,
}

/// `#` mount points follow the parent's replication; `%` always go to RW.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MountKind {
    Regular,
    ReadWrite,
}

/// A parsed mount point: `#[cell:]volume.` or `%[cell:]volume.`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountPoint {
    pub kind: MountKind,
    pub cell: Option<String>,
    pub volume: String,
}

impl MountPoint {
    /// Parses a mount point's contents. The trailing `.` is required, as in
    /// OpenAFS (afs_vnop_lookup.c `EvalMountPoint`).
    pub fn parse(contents: &[u8]) -> Option<MountPoint> {
        let text = std::str::from_utf8(contents).ok()?;
        let text = text.trim_end_matches('\0');
        let kind = match text.as_bytes().first()? {
            b'#' => MountKind::Regular,
            b'%' => MountKind::ReadWrite,
            _ => return None,
        };
        let body = text[1..].strip_suffix('.')?;
        let (cell, volume) = match body.split_once(':') {
            Some((c, v)) => (Some(c.to_ascii_lowercase()), v),
            None => (None, body),
        };
        if volume.is_empty() || volume.len() > 64 {
            return None;
        }
        Some(MountPoint {
            kind,
            cell,
            volume: volume.to_string(),
        })
    }
}

/// What the VLDB says of a volume, with fileserver addresses resolved.
#[derive(Clone, Debug)]
pub struct VolumeInfo {
    /// The cell the volume lives in (relocation asks its VL servers).
    pub cell: Cell,
    pub name: String,
    pub rw_id: u32,
    pub ro_id: u32,
    pub bk_id: u32,
    pub rw_servers: Vec<SocketAddr>,
    pub ro_servers: Vec<SocketAddr>,
    pub fetched: Instant,
}

impl VolumeInfo {
    /// The volume instance a mount point of `kind` leads to, as OpenAFS
    /// chooses it: a `.readonly`/`.backup` suffix decides; `%` means RW; `#`
    /// means the RO clone when the mount point was reached through a RO
    /// volume and a RO site exists, else RW.
    pub fn choose(&self, requested: VolType, kind: MountKind, parent_ro: bool) -> (u32, VolType) {
        match requested {
            VolType::Backup if self.bk_id != 0 => return (self.bk_id, VolType::Backup),
            VolType::Ro if self.ro_id != 0 && !self.ro_servers.is_empty() => {
                return (self.ro_id, VolType::Ro)
            }
            _ => {}
        }
        if kind == MountKind::Regular && parent_ro && self.ro_id != 0 && !self.ro_servers.is_empty()
        {
            (self.ro_id, VolType::Ro)
        } else {
            (self.rw_id, VolType::Rw)
        }
    }

    pub fn servers(&self, t: VolType) -> &[SocketAddr] {
        match t {
            VolType::Ro => &self.ro_servers,
            // Backup volumes live with their RW volume.
            VolType::Rw | VolType::Backup => &self.rw_servers,
        }
    }
}

/// What the cache keeps of a VLDB answer, so that a client started
/// without a network still finds the volumes it used.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct VolumeRecord {
    pub name: String,
    pub rw_id: u32,
    pub ro_id: u32,
    pub bk_id: u32,
    pub rw_servers: Vec<SocketAddr>,
    pub ro_servers: Vec<SocketAddr>,
}

impl VolumeRecord {
    pub(crate) fn of(info: &VolumeInfo) -> Self {
        VolumeRecord {
            name: info.name.clone(),
            rw_id: info.rw_id,
            ro_id: info.ro_id,
            bk_id: info.bk_id,
            rw_servers: info.rw_servers.clone(),
            ro_servers: info.ro_servers.clone(),
        }
    }

    pub(crate) fn info(self, cell: Cell) -> VolumeInfo {
        VolumeInfo {
            cell,
            name: self.name,
            rw_id: self.rw_id,
            ro_id: self.ro_id,
            bk_id: self.bk_id,
            rw_servers: self.rw_servers,
            ro_servers: self.ro_servers,
            fetched: Instant::now(),
        }
    }
}

/// Splits `root.cell.readonly` into (`root.cell`, Ro).
pub(crate) fn split_volume_suffix(name: &str) -> (&str, VolType) {
    if let Some(base) = name.strip_suffix(".readonly") {
        (base, VolType::Ro)
    } else if let Some(base) = name.strip_suffix(".backup") {
        (base, VolType::Backup)
    } else {
        (name, VolType::Rw)
    }
}

/// A located volume and which of its instances a volume id names.
type VolumeById = (std::sync::Arc<VolumeInfo>, VolType);

/// Cache of VLDB answers, per cell.
#[derive(Default)]
pub(crate) struct VolumeDb {
    by_name: Mutex<HashMap<(String, String), std::sync::Arc<VolumeInfo>>>,
    /// (cell, volume id) -> the volume and which instance the id names.
    by_id: Mutex<HashMap<(String, u32), VolumeById>>,
    uuids: Mutex<HashMap<Uuid, Vec<Ipv4Addr>>>,
}

impl VolumeDb {
    /// Locates a volume by its base name, asking the cell's VL servers in
    /// turn until one answers.
    pub(crate) async fn locate(
        &self,
        rpc: &RpcClient,
        cell: &Cell,
        name: &str,
        ttl: std::time::Duration,
    ) -> Result<std::sync::Arc<VolumeInfo>> {
        let key = (cell.name.clone(), name.to_string());
        if let Some(v) = self.lock_by_name().get(&key) {
            if v.fetched.elapsed() < ttl {
                return Ok(v.clone());
            }
        }
        if cell.db_servers.is_empty() {
            return Err(Error::Config(format!(
                "cell {} has no database servers",
                cell.name
            )));
        }
        let mut last_err = None;
        let mut entry = None;
        let mut vl_peer = None;
        for ip in &cell.db_servers {
            let peer = SocketAddr::new((*ip).into(), vl::VL_PORT);
            match rpc
                .call(
                    peer,
                    &GetEntryByNameU {
                        name: name.to_string(),
                    },
                )
                .await
            {
                Ok(e) => {
                    entry = Some(e);
                    vl_peer = Some(peer);
                    break;
                }
                Err(Error::Server { code, .. }) if code == vl::VL_NOENT => {
                    return Err(Error::NoSuchVolume(format!("{name} in cell {}", cell.name)))
                }
                Err(e) => last_err = Some(e),
            }
        }
        let (entry, vl_peer) = match (entry, vl_peer) {
            (Some(e), Some(p)) => (e, p),
            _ => {
                return Err(last_err
                    .unwrap_or_else(|| Error::Config(format!("no VL server for {}", cell.name))))
            }
        };
        let info = std::sync::Arc::new(self.resolve(rpc, vl_peer, cell, &entry).await?);
        self.insert(info.clone());
        Ok(info)
    }

    /// Records what is known of a volume (a VLDB answer, or the last one
    /// kept in the cache when the VL servers cannot be reached).
    pub(crate) fn insert(&self, info: std::sync::Arc<VolumeInfo>) {
        let cell = info.cell.name.clone();
        self.lock_by_name()
            .insert((cell.clone(), info.name.clone()), info.clone());
        let mut by_id = self.by_id.lock().unwrap_or_else(|e| e.into_inner());
        for (id, t) in [
            (info.rw_id, VolType::Rw),
            (info.ro_id, VolType::Ro),
            (info.bk_id, VolType::Backup),
        ] {
            if id != 0 {
                by_id.insert((cell.clone(), id), (info.clone(), t));
            }
        }
    }

    /// The volume a fid's volume id belongs to, if it was located before.
    pub(crate) fn by_id(
        &self,
        cell: &str,
        id: u32,
    ) -> Option<(std::sync::Arc<VolumeInfo>, VolType)> {
        self.by_id
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(cell.to_string(), id))
            .cloned()
    }

    /// The volume instances (cell, volume id) located on a fileserver.
    pub(crate) fn at_server(&self, ip: std::net::IpAddr) -> Vec<(String, u32)> {
        self.by_id
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(_, (info, t))| info.servers(*t).iter().any(|s| s.ip() == ip))
            .map(|((cell, id), _)| (cell.clone(), *id))
            .collect()
    }

    /// Every fileserver site of every volume located: the servers this
    /// client may call, whether it has yet or not (for `checkservers`).
    pub(crate) fn all_servers(&self) -> Vec<std::net::SocketAddr> {
        let mut v: Vec<std::net::SocketAddr> = Vec::new();
        for (info, t) in self
            .by_id
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
        {
            for s in info.servers(*t) {
                if !v.contains(s) {
                    v.push(*s);
                }
            }
        }
        v
    }

    /// Drops what the VLDB said of a volume, so the next lookup asks again.
    pub(crate) fn forget(&self, cell: &str, name: &str) {
        self.lock_by_name()
            .remove(&(cell.to_string(), name.to_string()));
    }

    fn lock_by_name(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<(String, String), std::sync::Arc<VolumeInfo>>> {
        self.by_name.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn resolve(
        &self,
        rpc: &RpcClient,
        vl_peer: SocketAddr,
        cell: &Cell,
        e: &UVldbEntry,
    ) -> Result<VolumeInfo> {
        let mut rw = Vec::new();
        let mut ro = Vec::new();
        for site in e.rw_sites() {
            for ip in self.site_addrs(rpc, vl_peer, site.addr).await? {
                push_unique(&mut rw, SocketAddr::new(ip.into(), afs_proto::fs::FS_PORT));
            }
        }
        for site in e.ro_sites() {
            for ip in self.site_addrs(rpc, vl_peer, site.addr).await? {
                push_unique(&mut ro, SocketAddr::new(ip.into(), afs_proto::fs::FS_PORT));
            }
        }
        Ok(VolumeInfo {
            cell: cell.clone(),
            name: e.name.clone(),
            rw_id: e.rw_id(),
            ro_id: if ro.is_empty() { 0 } else { e.ro_id() },
            bk_id: e.backup_id(),
            rw_servers: rw,
            ro_servers: ro,
            fetched: Instant::now(),
        })
    }

    /// Addresses of one site. UUID slots are resolved with GetAddrsU, which
    /// lists every address of a multihomed fileserver.
    async fn site_addrs(
        &self,
        rpc: &RpcClient,
        vl_peer: SocketAddr,
        addr: VlServerAddr,
    ) -> Result<Vec<Ipv4Addr>> {
        match addr {
            VlServerAddr::Ipv4(ip) => Ok(vec![ip]),
            VlServerAddr::Uuid(uuid) => {
                if let Some(a) = self
                    .uuids
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(&uuid)
                {
                    return Ok(a.clone());
                }
                let reply = rpc.call(vl_peer, &GetAddrsU { uuid }).await?;
                self.uuids
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(uuid, reply.addrs.clone());
                Ok(reply.addrs)
            }
        }
    }
}

fn push_unique(v: &mut Vec<SocketAddr>, a: SocketAddr) {
    if !v.contains(&a) {
        v.push(a);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mount_points() {
        assert_eq!(
            MountPoint::parse(b"#root.cell."),
            Some(MountPoint {
                kind: MountKind::Regular,
                cell: None,
                volume: "root.cell".into()
            })
        );
        assert_eq!(
            MountPoint::parse(b"%Other.Org:user.bob."),
            Some(MountPoint {
                kind: MountKind::ReadWrite,
                cell: Some("other.org".into()),
                volume: "user.bob".into()
            })
        );
        assert_eq!(
            MountPoint::parse(b"#root.cell"),
            None,
            "trailing dot required"
        );
        assert_eq!(MountPoint::parse(b"hello.txt"), None);
        assert_eq!(MountPoint::parse(b"#."), None);
        assert_eq!(MountPoint::parse(&[0xff, 0xfe]), None);
    }

    fn info(ro: bool) -> VolumeInfo {
        let a: SocketAddr = "198.18.0.1:7000".parse().unwrap();
        VolumeInfo {
            cell: Cell {
                name: "c".into(),
                db_servers: vec![],
            },
            name: "root.cell".into(),
            rw_id: 10,
            ro_id: if ro { 11 } else { 0 },
            bk_id: 12,
            rw_servers: vec![a],
            ro_servers: if ro { vec![a] } else { vec![] },
            fetched: Instant::now(),
        }
    }

    #[test]
    fn chooses_volume_like_openafs() {
        let v = info(true);
        assert_eq!(
            v.choose(VolType::Rw, MountKind::Regular, true),
            (11, VolType::Ro)
        );
        assert_eq!(
            v.choose(VolType::Rw, MountKind::Regular, false),
            (10, VolType::Rw)
        );
        assert_eq!(
            v.choose(VolType::Rw, MountKind::ReadWrite, true),
            (10, VolType::Rw)
        );
        assert_eq!(
            v.choose(VolType::Backup, MountKind::Regular, true),
            (12, VolType::Backup)
        );
        assert_eq!(
            v.choose(VolType::Ro, MountKind::Regular, false),
            (11, VolType::Ro)
        );
        let v = info(false);
        assert_eq!(
            v.choose(VolType::Rw, MountKind::Regular, true),
            (10, VolType::Rw)
        );
        assert_eq!(split_volume_suffix("a.readonly"), ("a", VolType::Ro));
        assert_eq!(split_volume_suffix("a.backup"), ("a", VolType::Backup));
        assert_eq!(split_volume_suffix("a"), ("a", VolType::Rw));
    }
}
