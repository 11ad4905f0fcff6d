//! Volume Location service (`src/vlserver/vldbint.xg`): maps volume names
//! and ids to the fileservers holding them. Rx service 52 on UDP 7003.

use std::net::Ipv4Addr;

use crate::rpc::Rpc;
use crate::types::Uuid;
use crate::xdr::{self, XResult, XdrWriter};
use crate::Result;

/// UDP port of the vlserver.
pub const VL_PORT: u16 = 7003;
/// Rx service id of the VL interface.
pub const VL_SERVICE_ID: u16 = 52;

/// `VL_MAXNAMELEN`: volume names are at most 64 chars plus NUL.
pub const VL_MAXNAMELEN: usize = 65;
/// `NMAXNSERVERS`: server slots in a `uvldbentry`.
pub const NMAXNSERVERS: usize = 13;
/// `MAXTYPES`: RW, RO, BK volume ids.
pub const MAXTYPES: usize = 3;
/// Bound of `bulkaddrs<500>`.
pub const MAX_BULKADDRS: usize = 500;

/// Per-site flags (`serverFlags`, vldbint.xg).
pub const VLSF_NEWREPSITE: u32 = 0x01;
/// Site holds the RO clone.
pub const VLSF_ROVOL: u32 = 0x02;
/// Site holds the RW volume.
pub const VLSF_RWVOL: u32 = 0x04;
/// Site holds the backup clone.
pub const VLSF_BACKVOL: u32 = 0x08;
/// The `serverNumber` slot holds a fileserver UUID, not an address:
/// resolve it with [`GetAddrsU`].
pub const VLSF_UUID: u32 = 0x10;
/// Site must not be used (being released).
pub const VLSF_DONTUSE: u32 = 0x20;
/// Site is a RW replica.
pub const VLSF_RWREPLICA: u32 = 0x40;

/// Entry flags (`flags`, vlserver.h): a RW volume exists.
pub const VLF_RWEXISTS: u32 = 0x1000;
/// A RO clone exists.
pub const VLF_ROEXISTS: u32 = 0x2000;
/// A backup clone exists.
pub const VLF_BACKEXISTS: u32 = 0x4000;

/// `ListAddrByAttributes.Mask` bits.
pub const VLADDR_IPADDR: u32 = 0x1;
/// Look up by server index.
pub const VLADDR_INDEX: u32 = 0x2;
/// Look up by server UUID.
pub const VLADDR_UUID: u32 = 0x4;

/// VL error codes (`vl_errors.et`, table base 363520).
pub mod codes {
    /// Volume id entry exists.
    pub const VL_IDEXIST: i32 = 363520;
    /// I/O error on the VLDB.
    pub const VL_IO: i32 = 363521;
    /// Volume name exists.
    pub const VL_NAMEEXIST: i32 = 363522;
    /// Internal creation failure.
    pub const VL_CREATEFAIL: i32 = 363523;
    /// No such entry: the volume does not exist.
    pub const VL_NOENT: i32 = 363524;
    /// VLDB empty.
    pub const VL_EMPTY: i32 = 363525;
    /// Entry deleted.
    pub const VL_ENTDELETED: i32 = 363526;
    /// Illegal volume name.
    pub const VL_BADNAME: i32 = 363527;
    /// Index out of range.
    pub const VL_BADINDEX: i32 = 363528;
    /// Bad volume type.
    pub const VL_BADVOLTYPE: i32 = 363529;
    /// Bad server number.
    pub const VL_BADSERVER: i32 = 363530;
    /// Bad partition.
    pub const VL_BADPARTITION: i32 = 363531;
    /// Entry locked.
    pub const VL_ENTRYLOCKED: i32 = 363541;
    /// No permission.
    pub const VL_PERM: i32 = 363546;
    /// Out of memory.
    pub const VL_NOMEM: i32 = 363547;
    /// Bad VLDB version.
    pub const VL_BADVERSION: i32 = 363548;
    /// Index out of range.
    pub const VL_INDEXERANGE: i32 = 363549;
    /// Servers have the same address.
    pub const VL_MULTIPADDR: i32 = 363550;
    /// Illegal attribute mask.
    pub const VL_BADMASK: i32 = 363551;
    /// Database inconsistent.
    pub const VL_DBBAD: i32 = 363552;
}
pub use codes::*;

/// Where a volume site lives: a fileserver UUID (slot flagged
/// [`VLSF_UUID`]) or a plain IPv4 address (old-style entries, address in
/// `time_low`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VlServerAddr {
    /// Multihomed fileserver, resolve with [`GetAddrsU`].
    Uuid(Uuid),
    /// Single address.
    Ipv4(Ipv4Addr),
}

/// One volume site of a [`UVldbEntry`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VlServer {
    /// The server.
    pub addr: VlServerAddr,
    /// `serverUnique` (uniquifier of the server's address entry).
    pub unique: i32,
    /// Partition number (0 = /vicepa).
    pub partition: u32,
    /// `VLSF_*` flags.
    pub flags: u32,
}

/// `uvldbentry` (vldbint.xg), trimmed to the valid server slots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UVldbEntry {
    /// Volume name (RW name).
    pub name: String,
    /// `nServers` as sent (may exceed `servers.len()` if > 13).
    pub n_servers: u32,
    /// The first `min(nServers, 13)` sites.
    pub servers: Vec<VlServer>,
    /// `volumeId[MAXTYPES]`: RW, RO, BK ids.
    pub volume_ids: [u32; 3],
    /// `cloneId`.
    pub clone_id: u32,
    /// Entry flags (`VLF_*`).
    pub flags: u32,
}

impl UVldbEntry {
    /// Sites holding the RW volume.
    pub fn rw_sites(&self) -> impl Iterator<Item = &VlServer> {
        self.servers
            .iter()
            .filter(|s| s.flags & VLSF_RWVOL != 0 && s.flags & VLSF_DONTUSE == 0)
    }

    /// Sites holding an RO clone (excluding sites being released).
    pub fn ro_sites(&self) -> impl Iterator<Item = &VlServer> {
        self.servers
            .iter()
            .filter(|s| s.flags & VLSF_ROVOL != 0 && s.flags & VLSF_DONTUSE == 0)
    }

    /// Sites holding the backup clone.
    pub fn backup_sites(&self) -> impl Iterator<Item = &VlServer> {
        self.servers
            .iter()
            .filter(|s| s.flags & VLSF_BACKVOL != 0 && s.flags & VLSF_DONTUSE == 0)
    }

    /// RW volume id.
    pub fn rw_id(&self) -> u32 {
        self.volume_ids[0]
    }

    /// RO volume id.
    pub fn ro_id(&self) -> u32 {
        self.volume_ids[1]
    }

    /// Backup volume id.
    pub fn backup_id(&self) -> u32 {
        self.volume_ids[2]
    }

    /// XDR-decodes a `uvldbentry` (1048 bytes).
    pub fn decode(i: &[u8]) -> XResult<'_, UVldbEntry> {
        let (i, name) = xdr::char_vector(VL_MAXNAMELEN)(i)?;
        let (i, n_servers) = xdr::u32(i)?;
        let (i, uuids) = xdr::fixed_array(NMAXNSERVERS, Uuid::decode)(i)?;
        let (i, uniques) = xdr::u32_array::<NMAXNSERVERS>(i)?;
        let (i, parts) = xdr::u32_array::<NMAXNSERVERS>(i)?;
        let (i, sflags) = xdr::u32_array::<NMAXNSERVERS>(i)?;
        let (i, volume_ids) = xdr::u32_array::<MAXTYPES>(i)?;
        let (i, clone_id) = xdr::u32(i)?;
        let (i, flags) = xdr::u32(i)?;
        let (i, _spares) = xdr::u32_array::<9>(i)?;
        let n = (n_servers as usize).min(NMAXNSERVERS);
        let servers = (0..n)
            .map(|k| VlServer {
                addr: if sflags[k] & VLSF_UUID != 0 {
                    VlServerAddr::Uuid(uuids[k])
                } else {
                    VlServerAddr::Ipv4(Ipv4Addr::from(uuids[k].time_low))
                },
                unique: uniques[k] as i32,
                partition: parts[k],
                flags: sflags[k],
            })
            .collect();
        Ok((
            i,
            UVldbEntry {
                name: xdr::bytes_to_string(&name),
                n_servers,
                servers,
                volume_ids,
                clone_id,
                flags,
            },
        ))
    }

    /// XDR-encodes (for tests and fake servers).
    pub fn encode(&self, w: &mut XdrWriter) {
        w.put_char_vector(self.name.as_bytes(), VL_MAXNAMELEN - 1);
        w.put_u32(0);
        w.put_u32(self.n_servers);
        let slot = |k: usize| self.servers.get(k);
        for k in 0..NMAXNSERVERS {
            match slot(k).map(|s| s.addr) {
                Some(VlServerAddr::Uuid(u)) => u.encode(w),
                Some(VlServerAddr::Ipv4(a)) => Uuid {
                    time_low: u32::from(a),
                    ..Uuid::default()
                }
                .encode(w),
                None => Uuid::default().encode(w),
            }
        }
        for k in 0..NMAXNSERVERS {
            w.put_i32(slot(k).map_or(0, |s| s.unique));
        }
        for k in 0..NMAXNSERVERS {
            w.put_u32(slot(k).map_or(0, |s| s.partition));
        }
        for k in 0..NMAXNSERVERS {
            w.put_u32(slot(k).map_or(0, |s| s.flags));
        }
        for v in self.volume_ids {
            w.put_u32(v);
        }
        w.put_u32(self.clone_id);
        w.put_u32(self.flags);
        for _ in 0..9 {
            w.put_u32(0);
        }
    }
}

/// `VL_GetEntryByNameU` (527): look up a volume by name or decimal id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetEntryByNameU {
    /// Volume name (`string volumename<VL_MAXNAMELEN>`).
    pub name: String,
}

impl Rpc for GetEntryByNameU {
    const SERVICE_ID: u16 = VL_SERVICE_ID;
    const OPCODE: u32 = 527;
    const NAME: &'static str = "VL_GetEntryByNameU";
    type Reply = UVldbEntry;

    fn encode_args(&self, w: &mut XdrWriter) {
        w.put_string(&self.name);
    }

    fn decode_reply(data: &[u8]) -> Result<UVldbEntry> {
        xdr::decode_all(data, UVldbEntry::decode)
    }
}

/// Reply of [`GetAddrsU`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddrsReply {
    /// `uuidp1`: the server's UUID.
    pub uuid: Uuid,
    /// `uniquifier`: changes when the server's address list changes.
    pub uniquifier: i32,
    /// The addresses (`blkaddrs`, truncated to `nentries` if smaller).
    pub addrs: Vec<Ipv4Addr>,
}

/// `VL_GetAddrsU` (533) with `Mask = VLADDR_UUID`: every address of a
/// (multihomed) fileserver identified by UUID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetAddrsU {
    /// Fileserver UUID from a [`VLSF_UUID`] slot.
    pub uuid: Uuid,
}

impl Rpc for GetAddrsU {
    const SERVICE_ID: u16 = VL_SERVICE_ID;
    const OPCODE: u32 = 533;
    const NAME: &'static str = "VL_GetAddrsU";
    type Reply = AddrsReply;

    fn encode_args(&self, w: &mut XdrWriter) {
        // ListAddrByAttributes { Mask, ipaddr, index, spare1, uuid }
        w.put_u32(VLADDR_UUID);
        w.put_u32(0);
        w.put_u32(0);
        w.put_u32(0);
        self.uuid.encode(w);
    }

    fn decode_reply(data: &[u8]) -> Result<AddrsReply> {
        xdr::decode_all(data, |i| {
            let (i, uuid) = Uuid::decode(i)?;
            let (i, uniquifier) = xdr::i32(i)?;
            let (i, nentries) = xdr::u32(i)?;
            let (i, mut addrs) = xdr::array(MAX_BULKADDRS, xdr::u32)(i)?;
            addrs.truncate(nentries as usize);
            Ok((
                i,
                AddrsReply {
                    uuid,
                    uniquifier,
                    addrs: addrs.into_iter().map(Ipv4Addr::from).collect(),
                },
            ))
        })
    }
}

/// `VL_ProbeServer` (514): liveness check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProbeServer;

impl Rpc for ProbeServer {
    const SERVICE_ID: u16 = VL_SERVICE_ID;
    const OPCODE: u32 = 514;
    const NAME: &'static str = "VL_ProbeServer";
    type Reply = ();

    fn encode_args(&self, _w: &mut XdrWriter) {}

    fn decode_reply(data: &[u8]) -> Result<()> {
        crate::rpc::decode_empty(data)
    }
}
