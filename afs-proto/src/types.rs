//! Structures shared by the FS, CB and VL interfaces (`src/fsint/common.xg`,
//! `src/fsint/afsint.xg`).

use std::fmt;
use std::net::Ipv4Addr;

use crate::xdr::{self, XResult, XdrWriter};

/// `AFSFid`: identifies a file across the cell (common.xg).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct Fid {
    /// Volume id.
    pub volume: u32,
    /// Vnode number inside the volume (0 in a CallBack means "whole volume").
    pub vnode: u32,
    /// Uniquifier, distinguishes reuses of a vnode slot.
    pub unique: u32,
}

impl Fid {
    /// Builds a FID.
    pub const fn new(volume: u32, vnode: u32, unique: u32) -> Self {
        Self {
            volume,
            vnode,
            unique,
        }
    }

    /// XDR-encodes the three words.
    pub fn encode(&self, w: &mut XdrWriter) {
        w.put_u32(self.volume);
        w.put_u32(self.vnode);
        w.put_u32(self.unique);
    }

    /// XDR-decodes the three words.
    pub fn decode(i: &[u8]) -> XResult<'_, Fid> {
        let (i, volume) = xdr::u32(i)?;
        let (i, vnode) = xdr::u32(i)?;
        let (i, unique) = xdr::u32(i)?;
        Ok((i, Fid::new(volume, vnode, unique)))
    }
}

impl fmt::Display for Fid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.volume, self.vnode, self.unique)
    }
}

/// `AFSFetchStatus.FileType` (afsint.xg: `File 1, Directory 2, SymbolicLink 3`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileType {
    /// Regular file (1).
    File,
    /// Directory (2).
    Directory,
    /// Symbolic link or mount point (3).
    Symlink,
    /// Any other value (0 = "Invalid" or a vnode the server could not stat).
    Unknown(u32),
}

impl FileType {
    /// Maps the wire value.
    pub fn from_u32(v: u32) -> Self {
        match v {
            1 => FileType::File,
            2 => FileType::Directory,
            3 => FileType::Symlink,
            o => FileType::Unknown(o),
        }
    }

    /// The wire value.
    pub fn as_u32(self) -> u32 {
        match self {
            FileType::File => 1,
            FileType::Directory => 2,
            FileType::Symlink => 3,
            FileType::Unknown(o) => o,
        }
    }
}

/// `AFSFetchStatus` (afsint.xg), 21 words. 64-bit length and data version
/// are reassembled from `Length`/`Length_hi` and
/// `DataVersion`/`dataVersionHigh`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchStatus {
    /// `InterfaceVersion` (1 for current servers).
    pub interface_version: u32,
    /// `FileType`.
    pub file_type: FileType,
    /// `LinkCount`.
    pub link_count: u32,
    /// File length: `Length_hi << 32 | Length`.
    pub length: u64,
    /// Data version: `dataVersionHigh << 32 | DataVersion`. Changes on every
    /// data store; the cache keys file contents on it.
    pub data_version: u64,
    /// `Author`: last writer's PTS id.
    pub author: u32,
    /// `Owner`: owner PTS id.
    pub owner: u32,
    /// `CallerAccess`: PRSFS_* rights of the calling user.
    pub caller_access: u32,
    /// `AnonymousAccess`: rights of system:anyuser.
    pub anonymous_access: u32,
    /// `UnixModeBits` (permission bits only, no file type).
    pub unix_mode_bits: u32,
    /// `ParentVnode`.
    pub parent_vnode: u32,
    /// `ParentUnique`.
    pub parent_unique: u32,
    /// `ResidencyMask` (unused by OpenAFS).
    pub residency_mask: u32,
    /// `ClientModTime`: mtime as set by the client (Unix seconds).
    pub client_modtime: u32,
    /// `ServerModTime`: time of the last change on the server (Unix seconds).
    pub server_modtime: u32,
    /// `Group`.
    pub group: u32,
    /// `SyncCounter` (unused).
    pub sync_counter: u32,
    /// `lockCount`: -1 (0xffffffff) exclusive, n > 0 readers, 0 unlocked.
    pub lock_count: u32,
    /// `errorCode`: per-entry error in InlineBulkStatus replies, else 0.
    pub error_code: u32,
}

impl FetchStatus {
    /// Encoded size in bytes.
    pub const WIRE_SIZE: usize = 21 * 4;

    /// XDR-decodes an `AFSFetchStatus`.
    pub fn decode(i: &[u8]) -> XResult<'_, FetchStatus> {
        let (i, w) = xdr::u32_array::<21>(i)?;
        Ok((
            i,
            FetchStatus {
                interface_version: w[0],
                file_type: FileType::from_u32(w[1]),
                link_count: w[2],
                length: (u64::from(w[19]) << 32) | u64::from(w[3]),
                data_version: (u64::from(w[17]) << 32) | u64::from(w[4]),
                author: w[5],
                owner: w[6],
                caller_access: w[7],
                anonymous_access: w[8],
                unix_mode_bits: w[9],
                parent_vnode: w[10],
                parent_unique: w[11],
                residency_mask: w[12],
                client_modtime: w[13],
                server_modtime: w[14],
                group: w[15],
                sync_counter: w[16],
                lock_count: w[18],
                error_code: w[20],
            },
        ))
    }

    /// XDR-encodes an `AFSFetchStatus` (for tests and a fake server).
    pub fn encode(&self, w: &mut XdrWriter) {
        for v in [
            self.interface_version,
            self.file_type.as_u32(),
            self.link_count,
            self.length as u32,
            self.data_version as u32,
            self.author,
            self.owner,
            self.caller_access,
            self.anonymous_access,
            self.unix_mode_bits,
            self.parent_vnode,
            self.parent_unique,
            self.residency_mask,
            self.client_modtime,
            self.server_modtime,
            self.group,
            self.sync_counter,
            (self.data_version >> 32) as u32,
            self.lock_count,
            (self.length >> 32) as u32,
            self.error_code,
        ] {
            w.put_u32(v);
        }
    }
}

/// Callback types (`CallBackType`, afsint.xg).
pub mod callback_type {
    /// Exclusive callback.
    pub const EXCLUSIVE: u32 = 1;
    /// Shared callback (the usual one).
    pub const SHARED: u32 = 2;
    /// Callback dropped: the server will not notify changes.
    pub const DROPPED: u32 = 3;
}

/// `AFSCallBack` (common.xg): the server's promise to notify changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CallBack {
    /// `CallBackVersion`.
    pub version: u32,
    /// `ExpirationTime`. In FS replies this is **relative**: seconds from
    /// the time the reply was received (add it to the local time at which the
    /// call started to be safe), not an absolute Unix time.
    pub expiration_time: u32,
    /// `CallBackType`, see [`callback_type`].
    pub callback_type: u32,
}

impl CallBack {
    /// XDR-decodes an `AFSCallBack`.
    pub fn decode(i: &[u8]) -> XResult<'_, CallBack> {
        let (i, [version, expiration_time, callback_type]) = xdr::u32_array::<3>(i)?;
        Ok((
            i,
            CallBack {
                version,
                expiration_time,
                callback_type,
            },
        ))
    }

    /// XDR-encodes an `AFSCallBack`.
    pub fn encode(&self, w: &mut XdrWriter) {
        w.put_u32(self.version);
        w.put_u32(self.expiration_time);
        w.put_u32(self.callback_type);
    }
}

/// `AFSVolSync` (afsint.xg): six words; `spare1` is the volume creation
/// date, which changes when a RO volume is re-released.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VolSync {
    /// `spare1`: volume creation time.
    pub creation_date: u32,
    /// `spare2`..`spare6` (spare2 is the volume update date on recent
    /// servers).
    pub spare: [u32; 5],
}

impl VolSync {
    /// XDR-decodes an `AFSVolSync`.
    pub fn decode(i: &[u8]) -> XResult<'_, VolSync> {
        let (i, w) = xdr::u32_array::<6>(i)?;
        Ok((
            i,
            VolSync {
                creation_date: w[0],
                spare: [w[1], w[2], w[3], w[4], w[5]],
            },
        ))
    }

    /// XDR-encodes an `AFSVolSync`.
    pub fn encode(&self, w: &mut XdrWriter) {
        w.put_u32(self.creation_date);
        for v in self.spare {
            w.put_u32(v);
        }
    }
}

/// `AFSStoreStatus` mask bits (afsint.xg).
pub mod store_mask {
    /// Set `ClientModTime`.
    pub const SET_MODTIME: u32 = 1;
    /// Set `Owner`.
    pub const SET_OWNER: u32 = 2;
    /// Set `Group`.
    pub const SET_GROUP: u32 = 4;
    /// Set `UnixModeBits`.
    pub const SET_MODE: u32 = 8;
    /// Set `SegSize` (unused).
    pub const SET_SEGSIZE: u32 = 16;
    /// Ask the server to fsync.
    pub const FSYNC: u32 = 1024;
}

/// `AFSStoreStatus` (afsint.xg): attributes to change; only the fields
/// whose bit is set in `mask` (see [`store_mask`]) are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoreStatus {
    /// Which fields are valid.
    pub mask: u32,
    /// New mtime.
    pub client_modtime: u32,
    /// New owner.
    pub owner: u32,
    /// New group.
    pub group: u32,
    /// New permission bits.
    pub unix_mode_bits: u32,
    /// `SegSize` (unused).
    pub seg_size: u32,
}

impl StoreStatus {
    /// XDR-encodes.
    pub fn encode(&self, w: &mut XdrWriter) {
        for v in [
            self.mask,
            self.client_modtime,
            self.owner,
            self.group,
            self.unix_mode_bits,
            self.seg_size,
        ] {
            w.put_u32(v);
        }
    }

    /// XDR-decodes.
    pub fn decode(i: &[u8]) -> XResult<'_, StoreStatus> {
        let (i, w) = xdr::u32_array::<6>(i)?;
        Ok((
            i,
            StoreStatus {
                mask: w[0],
                client_modtime: w[1],
                owner: w[2],
                group: w[3],
                unix_mode_bits: w[4],
                seg_size: w[5],
            },
        ))
    }
}

/// `afsUUID` (common.xg). On the wire it is 11 XDR words: time_low,
/// time_mid, time_hi_and_version, clock_seq_hi_and_reserved,
/// clock_seq_low and six node bytes, each byte/short widened to a word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Uuid {
    /// `time_low`.
    pub time_low: u32,
    /// `time_mid`.
    pub time_mid: u16,
    /// `time_hi_and_version`.
    pub time_hi_and_version: u16,
    /// `clock_seq_hi_and_reserved`.
    pub clock_seq_hi_and_reserved: u8,
    /// `clock_seq_low`.
    pub clock_seq_low: u8,
    /// `node`.
    pub node: [u8; 6],
}

impl Uuid {
    /// Encoded size in bytes (11 words).
    pub const WIRE_SIZE: usize = 44;

    /// Builds a UUID from its 16-byte RFC 4122 big-endian form.
    pub fn from_bytes(b: [u8; 16]) -> Self {
        Uuid {
            time_low: u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            time_mid: u16::from_be_bytes([b[4], b[5]]),
            time_hi_and_version: u16::from_be_bytes([b[6], b[7]]),
            clock_seq_hi_and_reserved: b[8],
            clock_seq_low: b[9],
            node: [b[10], b[11], b[12], b[13], b[14], b[15]],
        }
    }

    /// The 16-byte RFC 4122 form.
    pub fn to_bytes(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[0..4].copy_from_slice(&self.time_low.to_be_bytes());
        b[4..6].copy_from_slice(&self.time_mid.to_be_bytes());
        b[6..8].copy_from_slice(&self.time_hi_and_version.to_be_bytes());
        b[8] = self.clock_seq_hi_and_reserved;
        b[9] = self.clock_seq_low;
        b[10..16].copy_from_slice(&self.node);
        b
    }

    /// A version-4 (random) UUID from 16 random bytes supplied by the
    /// caller (this crate has no RNG dependency).
    pub fn random(mut rng_bytes: [u8; 16]) -> Self {
        rng_bytes[6] = (rng_bytes[6] & 0x0f) | 0x40;
        rng_bytes[8] = (rng_bytes[8] & 0x3f) | 0x80;
        Self::from_bytes(rng_bytes)
    }

    /// True for the all-zero UUID.
    pub fn is_nil(&self) -> bool {
        *self == Uuid::default()
    }

    /// XDR-encodes the 11 words. The byte fields are C `char` in OpenAFS
    /// and `xdr_char` sign-extends them (0x8b goes out as 0xffffff8b, as
    /// seen in the 1.8.9 captures); we do the same so our bytes match.
    pub fn encode(&self, w: &mut XdrWriter) {
        w.put_u32(self.time_low);
        w.put_u32(u32::from(self.time_mid));
        w.put_u32(u32::from(self.time_hi_and_version));
        w.put_i32(i32::from(self.clock_seq_hi_and_reserved as i8));
        w.put_i32(i32::from(self.clock_seq_low as i8));
        for b in self.node {
            w.put_i32(i32::from(b as i8));
        }
    }

    /// XDR-decodes the 11 words (upper bits of the widened fields are
    /// ignored, as `xdr_u_short`/`xdr_char` do).
    pub fn decode(i: &[u8]) -> XResult<'_, Uuid> {
        let (i, w) = xdr::u32_array::<11>(i)?;
        Ok((
            i,
            Uuid {
                time_low: w[0],
                time_mid: w[1] as u16,
                time_hi_and_version: w[2] as u16,
                clock_seq_hi_and_reserved: w[3] as u8,
                clock_seq_low: w[4] as u8,
                node: [
                    w[5] as u8,
                    w[6] as u8,
                    w[7] as u8,
                    w[8] as u8,
                    w[9] as u8,
                    w[10] as u8,
                ],
            },
        ))
    }
}

impl fmt::Display for Uuid {
    /// OpenAFS `afsUUID_to_string` layout (as printed by `vos listaddrs
    /// -printuuid`): `%08x-%04x-%04x-%02x-%02x-%02x%02x%02x%02x%02x%02x`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:08x}-{:04x}-{:04x}-{:02x}-{:02x}-",
            self.time_low,
            self.time_mid,
            self.time_hi_and_version,
            self.clock_seq_hi_and_reserved,
            self.clock_seq_low
        )?;
        for b in self.node {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// `AFS_MAX_INTERFACE_ADDR` (common.xg).
pub const MAX_INTERFACE_ADDR: usize = 32;

/// `interfaceAddr` (common.xg): the client's identity and addresses, sent
/// to the fileserver in WhoAreYou / TellMeAboutYourself replies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceAddr {
    /// `numberOfInterfaces`: how many of the 32 slots are valid.
    pub number_of_interfaces: u32,
    /// The client's UUID (stable per client instance: hosts are keyed by it).
    pub uuid: Uuid,
    /// `addr_in` (network order on the wire).
    pub addr_in: [Ipv4Addr; MAX_INTERFACE_ADDR],
    /// `subnetmask`.
    pub subnetmask: [Ipv4Addr; MAX_INTERFACE_ADDR],
    /// `mtu`.
    pub mtu: [u32; MAX_INTERFACE_ADDR],
}

impl InterfaceAddr {
    /// Encoded size in bytes.
    pub const WIRE_SIZE: usize = 4 + Uuid::WIRE_SIZE + 3 * 4 * MAX_INTERFACE_ADDR;

    /// Builds an `InterfaceAddr` listing `addrs` (at most 32 are kept) with
    /// the given masks/MTUs paired by index.
    pub fn new(uuid: Uuid, addrs: &[(Ipv4Addr, Ipv4Addr, u32)]) -> Self {
        let mut ia = InterfaceAddr {
            number_of_interfaces: 0,
            uuid,
            addr_in: [Ipv4Addr::UNSPECIFIED; MAX_INTERFACE_ADDR],
            subnetmask: [Ipv4Addr::UNSPECIFIED; MAX_INTERFACE_ADDR],
            mtu: [0; MAX_INTERFACE_ADDR],
        };
        for (i, (a, m, mtu)) in addrs.iter().take(MAX_INTERFACE_ADDR).enumerate() {
            ia.addr_in[i] = *a;
            ia.subnetmask[i] = *m;
            ia.mtu[i] = *mtu;
            ia.number_of_interfaces = i as u32 + 1;
        }
        ia
    }

    /// The valid addresses.
    pub fn addrs(&self) -> &[Ipv4Addr] {
        let n = (self.number_of_interfaces as usize).min(MAX_INTERFACE_ADDR);
        &self.addr_in[..n]
    }

    /// XDR-encodes.
    pub fn encode(&self, w: &mut XdrWriter) {
        w.put_u32(self.number_of_interfaces);
        self.uuid.encode(w);
        for a in self.addr_in {
            w.put_u32(u32::from(a));
        }
        for m in self.subnetmask {
            w.put_u32(u32::from(m));
        }
        for m in self.mtu {
            w.put_u32(m);
        }
    }

    /// XDR-decodes.
    pub fn decode(i: &[u8]) -> XResult<'_, InterfaceAddr> {
        let (i, n) = xdr::u32(i)?;
        let (i, uuid) = Uuid::decode(i)?;
        let (i, a) = xdr::u32_array::<MAX_INTERFACE_ADDR>(i)?;
        let (i, m) = xdr::u32_array::<MAX_INTERFACE_ADDR>(i)?;
        let (i, mtu) = xdr::u32_array::<MAX_INTERFACE_ADDR>(i)?;
        Ok((
            i,
            InterfaceAddr {
                number_of_interfaces: n,
                uuid,
                addr_in: a.map(Ipv4Addr::from),
                subnetmask: m.map(Ipv4Addr::from),
                mtu,
            },
        ))
    }
}
