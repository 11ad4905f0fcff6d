//! File server interface (`src/fsint/afsint.xg`): Rx service 1 on UDP 7000.
//!
//! "Split" calls (FetchData, FetchData64, StoreData, StoreData64) stream raw
//! file bytes between the XDR arguments and the XDR results:
//! * fetch: the server first writes the data length (FetchData: one 32-bit
//!   word; FetchData64: two words, high then low, see
//!   `FetchData_RXStyle()` in `src/viced/afsfileprocs.c`), then exactly that
//!   many raw, **unpadded** bytes, then the OUT arguments;
//! * store: the client writes the arguments, then `Length` raw bytes; the
//!   reply holds only the OUT arguments.

use crate::rpc::Rpc;
use crate::types::{self, CallBack, FetchStatus as AfsFetchStatus, Fid, VolSync};
use crate::xdr::{self, XResult, XdrWriter};
use crate::{Error, Result};

/// UDP port of the fileserver.
pub const FS_PORT: u16 = 7000;
/// Rx service id of the RXAFS interface.
pub const FS_SERVICE_ID: u16 = 1;
/// `AFSCBMAX`: most FIDs in one bulk/callback call (common.xg).
pub const AFSCBMAX: usize = 50;
/// `AFSNAMEMAX`: longest file name.
pub const AFSNAMEMAX: usize = 256;
/// `AFSPATHMAX`: longest symlink target.
pub const AFSPATHMAX: usize = 1024;
/// `AFSOPAQUEMAX`: longest ACL / message.
pub const AFSOPAQUEMAX: usize = 1024;
/// `AFSCAPABILITIESMAX`: longest capability vector.
pub const AFSCAPABILITIESMAX: usize = 196;

/// Fileserver capability bit (`VICED_CAPABILITY_*`, afsint.xg): error
/// translation.
pub const VICED_CAPABILITY_ERRORTRANS: u32 = 0x0001;
/// Server supports 64-bit file sizes.
pub const VICED_CAPABILITY_64BITFILES: u32 = 0x0002;
/// Lock requests need only write (not lock) rights in the ACL.
pub const VICED_CAPABILITY_WRITELOCKACL: u32 = 0x0004;
/// Server returns sanitized ACLs.
pub const VICED_CAPABILITY_SANEACLS: u32 = 0x0008;

/// `ViceLockType` for [`SetLock`].
pub const LOCK_READ: u32 = 0;
/// Exclusive (write) lock.
pub const LOCK_WRITE: u32 = 1;

fn status_volsync(i: &[u8]) -> XResult<'_, StatusReply> {
    let (i, status) = AfsFetchStatus::decode(i)?;
    let (i, volsync) = VolSync::decode(i)?;
    Ok((i, StatusReply { status, volsync }))
}

/// Reply carrying one status and the volume sync info.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusReply {
    /// Status of the object (or of the directory for Remove*).
    pub status: AfsFetchStatus,
    /// Volume sync.
    pub volsync: VolSync,
}

/// Reply of [`FetchStatus`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchStatusReply {
    /// The file's status.
    pub status: AfsFetchStatus,
    /// Callback promise (`expiration_time` relative).
    pub callback: CallBack,
    /// Volume sync.
    pub volsync: VolSync,
}

impl FetchStatusReply {
    fn decode(i: &[u8]) -> XResult<'_, FetchStatusReply> {
        let (i, status) = AfsFetchStatus::decode(i)?;
        let (i, callback) = CallBack::decode(i)?;
        let (i, volsync) = VolSync::decode(i)?;
        Ok((
            i,
            FetchStatusReply {
                status,
                callback,
                volsync,
            },
        ))
    }
}

/// `RXAFS_FetchStatus` (132): a file's status plus a callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchStatus {
    /// The file.
    pub fid: Fid,
}

impl Rpc for FetchStatus {
    const SERVICE_ID: u16 = FS_SERVICE_ID;
    const OPCODE: u32 = 132;
    const NAME: &'static str = "RXAFS_FetchStatus";
    type Reply = FetchStatusReply;

    fn encode_args(&self, w: &mut XdrWriter) {
        self.fid.encode(w);
    }

    fn decode_reply(data: &[u8]) -> Result<FetchStatusReply> {
        xdr::decode_all(data, FetchStatusReply::decode)
    }
}

/// Reply of [`FetchData`] / [`FetchData64`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchDataReply {
    /// The file bytes (may be shorter than requested at end of file).
    pub data: Vec<u8>,
    /// Status after the read.
    pub status: AfsFetchStatus,
    /// Callback promise (`expiration_time` relative).
    pub callback: CallBack,
    /// Volume sync.
    pub volsync: VolSync,
}

fn fetch_data_body(i: &[u8], len: u64) -> XResult<'_, FetchDataReply> {
    // The length is bounded by the bytes actually present.
    if len > i.len() as u64 {
        return Err(nom::Err::Error(nom::error::Error::new(
            i,
            nom::error::ErrorKind::Eof,
        )));
    }
    let (data, i) = i.split_at(len as usize);
    let (i, r) = FetchStatusReply::decode(i)?;
    Ok((
        i,
        FetchDataReply {
            data: data.to_vec(),
            status: r.status,
            callback: r.callback,
            volsync: r.volsync,
        },
    ))
}

/// `RXAFS_FetchData` (130): 32-bit read (used by libafscp/afsio).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchData {
    /// The file.
    pub fid: Fid,
    /// Offset.
    pub pos: i32,
    /// Bytes wanted.
    pub length: i32,
}

impl Rpc for FetchData {
    const SERVICE_ID: u16 = FS_SERVICE_ID;
    const OPCODE: u32 = 130;
    const NAME: &'static str = "RXAFS_FetchData";
    type Reply = FetchDataReply;

    fn encode_args(&self, w: &mut XdrWriter) {
        self.fid.encode(w);
        w.put_i32(self.pos);
        w.put_i32(self.length);
    }

    /// The reply stream: a 32-bit length, the raw bytes, then status,
    /// callback and volsync.
    fn decode_reply(data: &[u8]) -> Result<FetchDataReply> {
        xdr::decode_all(data, |i| {
            let (i, len) = xdr::u32(i)?;
            fetch_data_body(i, u64::from(len))
        })
    }
}

/// `RXAFS_FetchData64` (65537): the read used by afsd-rs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchData64 {
    /// The file.
    pub fid: Fid,
    /// Offset (`afs_int64`).
    pub pos: u64,
    /// Bytes wanted (`afs_int64`).
    pub length: u64,
}

impl Rpc for FetchData64 {
    const SERVICE_ID: u16 = FS_SERVICE_ID;
    const OPCODE: u32 = 65537;
    const NAME: &'static str = "RXAFS_FetchData64";
    type Reply = FetchDataReply;

    fn encode_args(&self, w: &mut XdrWriter) {
        self.fid.encode(w);
        w.put_u64(self.pos);
        w.put_u64(self.length);
    }

    /// The reply stream: a 64-bit length (high word, low word), the raw
    /// unpadded bytes, then status, callback and volsync.
    fn decode_reply(data: &[u8]) -> Result<FetchDataReply> {
        xdr::decode_all(data, |i| {
            let (i, len) = xdr::u64(i)?;
            fetch_data_body(i, len)
        })
    }
}

/// One entry of an [`InlineBulkStatus`] reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkEntry {
    /// Status; `status.error_code != 0` means this FID failed (e.g.
    /// VNOVNODE) and the other fields are meaningless.
    pub status: AfsFetchStatus,
    /// Callback promise for this FID.
    pub callback: CallBack,
}

/// Reply of [`InlineBulkStatus`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkStatusReply {
    /// One entry per requested FID, in request order.
    pub entries: Vec<BulkEntry>,
    /// Volume sync.
    pub volsync: VolSync,
}

/// `RXAFS_InlineBulkStatus` (65536): status of up to 50 FIDs, with errors
/// reported per entry instead of aborting the whole call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InlineBulkStatus {
    /// FIDs (`AFSCBFids<AFSCBMAX>`). Build with [`InlineBulkStatus::new`],
    /// which enforces the 50-FID limit; a server rejects longer arrays.
    pub fids: Vec<Fid>,
}

impl InlineBulkStatus {
    /// Checks the `AFSCBMAX` (50) limit.
    pub fn new(fids: Vec<Fid>) -> Result<Self> {
        if fids.len() > AFSCBMAX {
            return Err(Error::TooLong);
        }
        Ok(Self { fids })
    }
}

fn encode_fids(w: &mut XdrWriter, fids: &[Fid]) {
    w.put_u32(fids.len() as u32);
    for f in fids {
        f.encode(w);
    }
}

fn decode_bulk(i: &[u8]) -> XResult<'_, BulkStatusReply> {
    let (i, stats) = xdr::array(AFSCBMAX, AfsFetchStatus::decode)(i)?;
    let (i, cbs) = xdr::array(AFSCBMAX, CallBack::decode)(i)?;
    let (i, volsync) = VolSync::decode(i)?;
    if stats.len() != cbs.len() {
        return Err(nom::Err::Error(nom::error::Error::new(
            i,
            nom::error::ErrorKind::Verify,
        )));
    }
    let entries = stats
        .into_iter()
        .zip(cbs)
        .map(|(status, callback)| BulkEntry { status, callback })
        .collect();
    Ok((i, BulkStatusReply { entries, volsync }))
}

impl Rpc for InlineBulkStatus {
    const SERVICE_ID: u16 = FS_SERVICE_ID;
    const OPCODE: u32 = 65536;
    const NAME: &'static str = "RXAFS_InlineBulkStatus";
    type Reply = BulkStatusReply;

    fn encode_args(&self, w: &mut XdrWriter) {
        debug_assert!(self.fids.len() <= AFSCBMAX, "use InlineBulkStatus::new");
        encode_fids(w, &self.fids);
    }

    fn decode_reply(data: &[u8]) -> Result<BulkStatusReply> {
        xdr::decode_all(data, decode_bulk)
    }
}

/// `AFSFetchVolumeStatus` plus the three strings of a GetVolumeStatus reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeStatus {
    /// Volume id.
    pub vid: i32,
    /// Parent (RW) volume id.
    pub parent_id: i32,
    /// Online flag.
    pub online: bool,
    /// In-service flag.
    pub in_service: bool,
    /// Blessed flag.
    pub blessed: bool,
    /// Needs salvage flag.
    pub needs_salvage: bool,
    /// Volume type (0 ReadOnly, 1 ReadWrite).
    pub vol_type: i32,
    /// Minimum quota (KiB).
    pub min_quota: i32,
    /// Maximum quota (KiB, 0 = unlimited).
    pub max_quota: i32,
    /// Blocks in use (KiB).
    pub blocks_in_use: i32,
    /// Free blocks on the partition (KiB).
    pub part_blocks_avail: i32,
    /// Partition size (KiB).
    pub part_max_blocks: i32,
    /// Volume name.
    pub name: String,
    /// Offline message.
    pub offline_msg: String,
    /// Message of the day.
    pub motd: String,
}

/// `RXAFS_GetVolumeStatus` (149): quota and usage, for statfs().
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GetVolumeStatus {
    /// Volume id.
    pub volume: u32,
}

impl Rpc for GetVolumeStatus {
    const SERVICE_ID: u16 = FS_SERVICE_ID;
    const OPCODE: u32 = 149;
    const NAME: &'static str = "RXAFS_GetVolumeStatus";
    type Reply = VolumeStatus;

    fn encode_args(&self, w: &mut XdrWriter) {
        w.put_u32(self.volume);
    }

    fn decode_reply(data: &[u8]) -> Result<VolumeStatus> {
        xdr::decode_all(data, |i| {
            let (i, v) = xdr::u32_array::<12>(i)?;
            let (i, name) = xdr::string(AFSNAMEMAX)(i)?;
            let (i, offline_msg) = xdr::string(AFSOPAQUEMAX)(i)?;
            let (i, motd) = xdr::string(AFSOPAQUEMAX)(i)?;
            Ok((
                i,
                VolumeStatus {
                    vid: v[0] as i32,
                    parent_id: v[1] as i32,
                    online: v[2] as u8 != 0,
                    in_service: v[3] as u8 != 0,
                    blessed: v[4] as u8 != 0,
                    needs_salvage: v[5] as u8 != 0,
                    vol_type: v[6] as i32,
                    min_quota: v[7] as i32,
                    max_quota: v[8] as i32,
                    blocks_in_use: v[9] as i32,
                    part_blocks_avail: v[10] as i32,
                    part_max_blocks: v[11] as i32,
                    name,
                    offline_msg,
                    motd,
                },
            ))
        })
    }
}

/// `RXAFS_GiveUpAllCallBacks` (65539): drop every callback this client
/// holds on the server (at shutdown).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GiveUpAllCallBacks;

impl Rpc for GiveUpAllCallBacks {
    const SERVICE_ID: u16 = FS_SERVICE_ID;
    const OPCODE: u32 = 65539;
    const NAME: &'static str = "RXAFS_GiveUpAllCallBacks";
    type Reply = ();

    fn encode_args(&self, _w: &mut XdrWriter) {}

    fn decode_reply(data: &[u8]) -> Result<()> {
        crate::rpc::decode_empty(data)
    }
}

/// `RXAFS_GiveUpCallBacks` (147): drop callbacks on specific FIDs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GiveUpCallBacks {
    /// FIDs (at most 50).
    pub fids: Vec<Fid>,
    /// Matching callbacks (OpenAFS clients send an empty array).
    pub callbacks: Vec<CallBack>,
}

impl Rpc for GiveUpCallBacks {
    const SERVICE_ID: u16 = FS_SERVICE_ID;
    const OPCODE: u32 = 147;
    const NAME: &'static str = "RXAFS_GiveUpCallBacks";
    type Reply = ();

    fn encode_args(&self, w: &mut XdrWriter) {
        encode_fids(w, &self.fids);
        w.put_u32(self.callbacks.len() as u32);
        for c in &self.callbacks {
            c.encode(w);
        }
    }

    fn decode_reply(data: &[u8]) -> Result<()> {
        crate::rpc::decode_empty(data)
    }
}

/// `RXAFS_GetCapabilities` (65540): the server's `VICED_CAPABILITY_*`
/// words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GetCapabilities;

impl Rpc for GetCapabilities {
    const SERVICE_ID: u16 = FS_SERVICE_ID;
    const OPCODE: u32 = 65540;
    const NAME: &'static str = "RXAFS_GetCapabilities";
    type Reply = Vec<u32>;

    fn encode_args(&self, _w: &mut XdrWriter) {}

    fn decode_reply(data: &[u8]) -> Result<Vec<u32>> {
        xdr::decode_all(data, xdr::array(AFSCAPABILITIESMAX, xdr::u32))
    }
}

/// Reply of [`FetchAcl`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchAclReply {
    /// ACL text (`"npos\nnneg\nname rights\n..."`), NUL stripped.
    pub acl: String,
    /// Status of the directory.
    pub status: AfsFetchStatus,
    /// Volume sync.
    pub volsync: VolSync,
}

/// `RXAFS_FetchACL` (131).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchAcl {
    /// Directory.
    pub fid: Fid,
}

impl Rpc for FetchAcl {
    const SERVICE_ID: u16 = FS_SERVICE_ID;
    const OPCODE: u32 = 131;
    const NAME: &'static str = "RXAFS_FetchACL";
    type Reply = FetchAclReply;

    fn encode_args(&self, w: &mut XdrWriter) {
        self.fid.encode(w);
    }

    fn decode_reply(data: &[u8]) -> Result<FetchAclReply> {
        xdr::decode_all(data, |i| {
            let (i, acl) = xdr::string(AFSOPAQUEMAX)(i)?;
            let (i, r) = status_volsync(i)?;
            Ok((
                i,
                FetchAclReply {
                    acl,
                    status: r.status,
                    volsync: r.volsync,
                },
            ))
        })
    }
}

/// `RXAFS_StoreACL` (134). The ACL text is sent with a trailing NUL, as
/// the OpenAFS cache manager does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreAcl {
    /// Directory.
    pub fid: Fid,
    /// ACL text.
    pub acl: String,
}

impl Rpc for StoreAcl {
    const SERVICE_ID: u16 = FS_SERVICE_ID;
    const OPCODE: u32 = 134;
    const NAME: &'static str = "RXAFS_StoreACL";
    type Reply = StatusReply;

    fn encode_args(&self, w: &mut XdrWriter) {
        self.fid.encode(w);
        let mut b = self.acl.as_bytes().to_vec();
        b.push(0);
        w.put_opaque(&b);
    }

    fn decode_reply(data: &[u8]) -> Result<StatusReply> {
        xdr::decode_all(data, status_volsync)
    }
}

/// `RXAFS_StoreStatus` (135): chmod/chown/utimes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreStatus {
    /// The file.
    pub fid: Fid,
    /// Attributes to set.
    pub status: types::StoreStatus,
}

impl Rpc for StoreStatus {
    const SERVICE_ID: u16 = FS_SERVICE_ID;
    const OPCODE: u32 = 135;
    const NAME: &'static str = "RXAFS_StoreStatus";
    type Reply = StatusReply;

    fn encode_args(&self, w: &mut XdrWriter) {
        self.fid.encode(w);
        self.status.encode(w);
    }

    fn decode_reply(data: &[u8]) -> Result<StatusReply> {
        xdr::decode_all(data, status_volsync)
    }
}

/// `RXAFS_StoreData64` (65538), a split call: after these arguments the
/// client streams exactly `length` raw bytes; the reply holds only the new
/// status and volsync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreData64 {
    /// The file.
    pub fid: Fid,
    /// Attributes to set at the same time (mask 0 for none).
    pub status: types::StoreStatus,
    /// Offset of the data.
    pub pos: u64,
    /// Number of bytes that follow the arguments.
    pub length: u64,
    /// New file length (truncates/extends).
    pub file_length: u64,
}

impl Rpc for StoreData64 {
    const SERVICE_ID: u16 = FS_SERVICE_ID;
    const OPCODE: u32 = 65538;
    const NAME: &'static str = "RXAFS_StoreData64";
    type Reply = StatusReply;

    fn encode_args(&self, w: &mut XdrWriter) {
        self.fid.encode(w);
        self.status.encode(w);
        w.put_u64(self.pos);
        w.put_u64(self.length);
        w.put_u64(self.file_length);
    }

    fn decode_reply(data: &[u8]) -> Result<StatusReply> {
        xdr::decode_all(data, status_volsync)
    }
}

/// Reply of [`CreateFile`] and [`MakeDir`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateReply {
    /// The new object.
    pub fid: Fid,
    /// Its status.
    pub status: AfsFetchStatus,
    /// The parent directory's new status.
    pub dir_status: AfsFetchStatus,
    /// Callback on the new object.
    pub callback: CallBack,
    /// Volume sync.
    pub volsync: VolSync,
}

fn decode_create(i: &[u8]) -> XResult<'_, CreateReply> {
    let (i, fid) = Fid::decode(i)?;
    let (i, status) = AfsFetchStatus::decode(i)?;
    let (i, dir_status) = AfsFetchStatus::decode(i)?;
    let (i, callback) = CallBack::decode(i)?;
    let (i, volsync) = VolSync::decode(i)?;
    Ok((
        i,
        CreateReply {
            fid,
            status,
            dir_status,
            callback,
            volsync,
        },
    ))
}

/// `RXAFS_CreateFile` (137).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateFile {
    /// Parent directory.
    pub dir: Fid,
    /// New name.
    pub name: String,
    /// Initial attributes.
    pub status: types::StoreStatus,
}

impl Rpc for CreateFile {
    const SERVICE_ID: u16 = FS_SERVICE_ID;
    const OPCODE: u32 = 137;
    const NAME: &'static str = "RXAFS_CreateFile";
    type Reply = CreateReply;

    fn encode_args(&self, w: &mut XdrWriter) {
        self.dir.encode(w);
        w.put_string(&self.name);
        self.status.encode(w);
    }

    fn decode_reply(data: &[u8]) -> Result<CreateReply> {
        xdr::decode_all(data, decode_create)
    }
}

/// `RXAFS_MakeDir` (141).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MakeDir {
    /// Parent directory.
    pub dir: Fid,
    /// New name.
    pub name: String,
    /// Initial attributes.
    pub status: types::StoreStatus,
}

impl Rpc for MakeDir {
    const SERVICE_ID: u16 = FS_SERVICE_ID;
    const OPCODE: u32 = 141;
    const NAME: &'static str = "RXAFS_MakeDir";
    type Reply = CreateReply;

    fn encode_args(&self, w: &mut XdrWriter) {
        self.dir.encode(w);
        w.put_string(&self.name);
        self.status.encode(w);
    }

    fn decode_reply(data: &[u8]) -> Result<CreateReply> {
        xdr::decode_all(data, decode_create)
    }
}

/// `RXAFS_RemoveFile` (136); the reply status is the directory's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoveFile {
    /// Parent directory.
    pub dir: Fid,
    /// Name to remove.
    pub name: String,
}

impl Rpc for RemoveFile {
    const SERVICE_ID: u16 = FS_SERVICE_ID;
    const OPCODE: u32 = 136;
    const NAME: &'static str = "RXAFS_RemoveFile";
    type Reply = StatusReply;

    fn encode_args(&self, w: &mut XdrWriter) {
        self.dir.encode(w);
        w.put_string(&self.name);
    }

    fn decode_reply(data: &[u8]) -> Result<StatusReply> {
        xdr::decode_all(data, status_volsync)
    }
}

/// `RXAFS_RemoveDir` (142); the reply status is the parent directory's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoveDir {
    /// Parent directory.
    pub dir: Fid,
    /// Name to remove.
    pub name: String,
}

impl Rpc for RemoveDir {
    const SERVICE_ID: u16 = FS_SERVICE_ID;
    const OPCODE: u32 = 142;
    const NAME: &'static str = "RXAFS_RemoveDir";
    type Reply = StatusReply;

    fn encode_args(&self, w: &mut XdrWriter) {
        self.dir.encode(w);
        w.put_string(&self.name);
    }

    fn decode_reply(data: &[u8]) -> Result<StatusReply> {
        xdr::decode_all(data, status_volsync)
    }
}

/// Reply of [`Rename`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenameReply {
    /// Old directory's status.
    pub old_dir_status: AfsFetchStatus,
    /// New directory's status.
    pub new_dir_status: AfsFetchStatus,
    /// Volume sync.
    pub volsync: VolSync,
}

/// `RXAFS_Rename` (138), within one volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rename {
    /// Source directory.
    pub old_dir: Fid,
    /// Source name.
    pub old_name: String,
    /// Target directory.
    pub new_dir: Fid,
    /// Target name.
    pub new_name: String,
}

impl Rpc for Rename {
    const SERVICE_ID: u16 = FS_SERVICE_ID;
    const OPCODE: u32 = 138;
    const NAME: &'static str = "RXAFS_Rename";
    type Reply = RenameReply;

    fn encode_args(&self, w: &mut XdrWriter) {
        self.old_dir.encode(w);
        w.put_string(&self.old_name);
        self.new_dir.encode(w);
        w.put_string(&self.new_name);
    }

    fn decode_reply(data: &[u8]) -> Result<RenameReply> {
        xdr::decode_all(data, |i| {
            let (i, old_dir_status) = AfsFetchStatus::decode(i)?;
            let (i, new_dir_status) = AfsFetchStatus::decode(i)?;
            let (i, volsync) = VolSync::decode(i)?;
            Ok((
                i,
                RenameReply {
                    old_dir_status,
                    new_dir_status,
                    volsync,
                },
            ))
        })
    }
}

/// Reply of [`Symlink`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SymlinkReply {
    /// The new link.
    pub fid: Fid,
    /// Its status.
    pub status: AfsFetchStatus,
    /// The directory's status.
    pub dir_status: AfsFetchStatus,
    /// Volume sync.
    pub volsync: VolSync,
}

/// `RXAFS_Symlink` (139). Mount points are symlinks whose target starts
/// with `#` or `%` and ends with `.`, created with mode 0644.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Symlink {
    /// Parent directory.
    pub dir: Fid,
    /// Link name.
    pub name: String,
    /// Target (`string LinkContents<AFSPATHMAX>`).
    pub target: String,
    /// Initial attributes.
    pub status: types::StoreStatus,
}

impl Rpc for Symlink {
    const SERVICE_ID: u16 = FS_SERVICE_ID;
    const OPCODE: u32 = 139;
    const NAME: &'static str = "RXAFS_Symlink";
    type Reply = SymlinkReply;

    fn encode_args(&self, w: &mut XdrWriter) {
        self.dir.encode(w);
        w.put_string(&self.name);
        w.put_string(&self.target);
        self.status.encode(w);
    }

    fn decode_reply(data: &[u8]) -> Result<SymlinkReply> {
        xdr::decode_all(data, |i| {
            let (i, fid) = Fid::decode(i)?;
            let (i, status) = AfsFetchStatus::decode(i)?;
            let (i, dir_status) = AfsFetchStatus::decode(i)?;
            let (i, volsync) = VolSync::decode(i)?;
            Ok((
                i,
                SymlinkReply {
                    fid,
                    status,
                    dir_status,
                    volsync,
                },
            ))
        })
    }
}

/// Reply of [`Link`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkReply {
    /// The linked file's status.
    pub status: AfsFetchStatus,
    /// The directory's status.
    pub dir_status: AfsFetchStatus,
    /// Volume sync.
    pub volsync: VolSync,
}

/// `RXAFS_Link` (140): hard link (same directory only in AFS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Directory.
    pub dir: Fid,
    /// New name.
    pub name: String,
    /// Existing file.
    pub existing: Fid,
}

impl Rpc for Link {
    const SERVICE_ID: u16 = FS_SERVICE_ID;
    const OPCODE: u32 = 140;
    const NAME: &'static str = "RXAFS_Link";
    type Reply = LinkReply;

    fn encode_args(&self, w: &mut XdrWriter) {
        self.dir.encode(w);
        w.put_string(&self.name);
        self.existing.encode(w);
    }

    fn decode_reply(data: &[u8]) -> Result<LinkReply> {
        xdr::decode_all(data, |i| {
            let (i, status) = AfsFetchStatus::decode(i)?;
            let (i, dir_status) = AfsFetchStatus::decode(i)?;
            let (i, volsync) = VolSync::decode(i)?;
            Ok((
                i,
                LinkReply {
                    status,
                    dir_status,
                    volsync,
                },
            ))
        })
    }
}

/// `RXAFS_SetLock` (156): whole-file lock, expires after 300 s unless
/// renewed with [`ExtendLock`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetLock {
    /// The file.
    pub fid: Fid,
    /// [`LOCK_READ`] or [`LOCK_WRITE`].
    pub lock_type: u32,
}

impl Rpc for SetLock {
    const SERVICE_ID: u16 = FS_SERVICE_ID;
    const OPCODE: u32 = 156;
    const NAME: &'static str = "RXAFS_SetLock";
    type Reply = VolSync;

    fn encode_args(&self, w: &mut XdrWriter) {
        self.fid.encode(w);
        w.put_u32(self.lock_type);
    }

    fn decode_reply(data: &[u8]) -> Result<VolSync> {
        xdr::decode_all(data, VolSync::decode)
    }
}

/// `RXAFS_ExtendLock` (157).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtendLock {
    /// The file.
    pub fid: Fid,
}

impl Rpc for ExtendLock {
    const SERVICE_ID: u16 = FS_SERVICE_ID;
    const OPCODE: u32 = 157;
    const NAME: &'static str = "RXAFS_ExtendLock";
    type Reply = VolSync;

    fn encode_args(&self, w: &mut XdrWriter) {
        self.fid.encode(w);
    }

    fn decode_reply(data: &[u8]) -> Result<VolSync> {
        xdr::decode_all(data, VolSync::decode)
    }
}

/// `RXAFS_ReleaseLock` (158).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReleaseLock {
    /// The file.
    pub fid: Fid,
}

impl Rpc for ReleaseLock {
    const SERVICE_ID: u16 = FS_SERVICE_ID;
    const OPCODE: u32 = 158;
    const NAME: &'static str = "RXAFS_ReleaseLock";
    type Reply = VolSync;

    fn encode_args(&self, w: &mut XdrWriter) {
        self.fid.encode(w);
    }

    fn decode_reply(data: &[u8]) -> Result<VolSync> {
        xdr::decode_all(data, VolSync::decode)
    }
}
