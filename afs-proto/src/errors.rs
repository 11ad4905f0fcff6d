//! Rx abort codes seen by an AFS client, their names, and their mapping to
//! errno values.
//!
//! Sources: volume errors from `src/util/errors.h`, the "uae" (unified AFS
//! error) table from `src/afs/unified_afs.et` (base 49733376, order =
//! Linux errno order), Rx codes from `src/rx/rx.h`, rxgen codes from
//! `src/rxgen/rpc_main.c`, rxkad codes from `src/rxkad/rxkad_errs.et`. A
//! fileserver on Linux may also abort with plain errno values (< 100).

/// errno numbers (Linux values) returned by [`abort_to_errno`].
pub mod errno {
    #![allow(missing_docs)]
    pub const EPERM: i32 = 1;
    pub const ENOENT: i32 = 2;
    pub const EIO: i32 = 5;
    pub const ENXIO: i32 = 6;
    pub const EAGAIN: i32 = 11;
    pub const ENOMEM: i32 = 12;
    pub const EACCES: i32 = 13;
    pub const EBUSY: i32 = 16;
    pub const EEXIST: i32 = 17;
    pub const EXDEV: i32 = 18;
    pub const ENOTDIR: i32 = 20;
    pub const EISDIR: i32 = 21;
    pub const EINVAL: i32 = 22;
    pub const EFBIG: i32 = 27;
    pub const ENOSPC: i32 = 28;
    pub const EROFS: i32 = 30;
    pub const EMLINK: i32 = 31;
    pub const ENAMETOOLONG: i32 = 36;
    pub const ENOLCK: i32 = 37;
    pub const ENOSYS: i32 = 38;
    pub const ENOTEMPTY: i32 = 39;
    pub const ELOOP: i32 = 40;
    pub const EPROTO: i32 = 71;
    pub const EOPNOTSUPP: i32 = 95;
    pub const ENOTCONN: i32 = 107;
    pub const ETIMEDOUT: i32 = 110;
    pub const ECONNREFUSED: i32 = 111;
    pub const ESTALE: i32 = 116;
    pub const EREMOTEIO: i32 = 121;
    pub const EDQUOT: i32 = 122;
    pub const ENOMEDIUM: i32 = 123;
    pub const EKEYEXPIRED: i32 = 127;
    pub const EKEYREJECTED: i32 = 129;
}

use errno::*;

/// Volume needs salvage.
pub const VSALVAGE: i32 = 101;
/// Bad vnode number (file deleted): stale FID.
pub const VNOVNODE: i32 = 102;
/// Volume not attached / does not exist here.
pub const VNOVOL: i32 = 103;
/// Volume already exists.
pub const VVOLEXISTS: i32 = 104;
/// Volume not in service.
pub const VNOSERVICE: i32 = 105;
/// Volume offline.
pub const VOFFLINE: i32 = 106;
/// Volume already online.
pub const VONLINE: i32 = 107;
/// Partition full.
pub const VDISKFULL: i32 = 108;
/// Volume quota exceeded.
pub const VOVERQUOTA: i32 = 109;
/// Volume temporarily busy; retry.
pub const VBUSY: i32 = 110;
/// Volume moved; re-query the VLDB.
pub const VMOVED: i32 = 111;
/// Vnode temporarily inaccessible.
pub const VIO: i32 = 112;
/// Volume being salvaged (DAFS).
pub const VSALVAGING: i32 = 113;
/// Volume restricted.
pub const VRESTRICTED: i32 = 120;
/// Fileserver restarting; retry later.
pub const VRESTARTING: i32 = -100;
/// Write to a read-only volume (`VREADONLY` is `EROFS`).
pub const VREADONLY: i32 = EROFS;

/// Base of the "uae" error table.
pub const UAE_BASE: i32 = 49733376;
/// Operation not permitted.
pub const UAEPERM: i32 = UAE_BASE;
/// No such file or directory.
pub const UAENOENT: i32 = UAE_BASE + 1;
/// I/O error.
pub const UAEIO: i32 = UAE_BASE + 4;
/// Try again.
pub const UAEAGAIN: i32 = UAE_BASE + 10;
/// Out of memory.
pub const UAENOMEM: i32 = UAE_BASE + 11;
/// Permission denied.
pub const UAEACCES: i32 = UAE_BASE + 12;
/// Busy.
pub const UAEBUSY: i32 = UAE_BASE + 15;
/// File exists.
pub const UAEEXIST: i32 = UAE_BASE + 16;
/// Cross-device link.
pub const UAEXDEV: i32 = UAE_BASE + 17;
/// Not a directory.
pub const UAENOTDIR: i32 = UAE_BASE + 19;
/// Is a directory.
pub const UAEISDIR: i32 = UAE_BASE + 20;
/// Invalid argument.
pub const UAEINVAL: i32 = UAE_BASE + 21;
/// File too large.
pub const UAEFBIG: i32 = UAE_BASE + 26;
/// No space left.
pub const UAENOSPC: i32 = UAE_BASE + 27;
/// Read-only file system.
pub const UAEROFS: i32 = UAE_BASE + 29;
/// Too many links.
pub const UAEMLINK: i32 = UAE_BASE + 30;
/// Name too long.
pub const UAENAMETOOLONG: i32 = UAE_BASE + 35;
/// No locks available.
pub const UAENOLCK: i32 = UAE_BASE + 36;
/// Not implemented.
pub const UAENOSYS: i32 = UAE_BASE + 37;
/// Directory not empty.
pub const UAENOTEMPTY: i32 = UAE_BASE + 38;
/// Too many symlinks.
pub const UAELOOP: i32 = UAE_BASE + 39;
/// Would block.
pub const UAEWOULDBLOCK: i32 = UAE_BASE + 40;
/// Not supported.
pub const UAEOPNOTSUPP: i32 = UAE_BASE + 93;
/// Timed out.
pub const UAETIMEDOUT: i32 = UAE_BASE + 108;
/// Stale file handle.
pub const UAESTALE: i32 = UAE_BASE + 114;
/// Quota exceeded.
pub const UAEDQUOT: i32 = UAE_BASE + 120;
/// No medium.
pub const UAENOMEDIUM: i32 = UAE_BASE + 121;
/// Not supported.
pub const UAENOTSUP: i32 = UAE_BASE + 125;

/// Peer unreachable / call dead.
pub const RX_CALL_DEAD: i32 = -1;
/// Invalid operation.
pub const RX_INVALID_OPERATION: i32 = -2;
/// Call timed out.
pub const RX_CALL_TIMEOUT: i32 = -3;
/// Unexpected end of data.
pub const RX_EOF: i32 = -4;
/// Protocol error.
pub const RX_PROTOCOL_ERROR: i32 = -5;
/// User abort.
pub const RX_USER_ABORT: i32 = -6;
/// Address in use.
pub const RX_ADDRINUSE: i32 = -7;
/// Debug error.
pub const RX_DEBUG_ERROR: i32 = -8;
/// Call idle too long.
pub const RX_CALL_IDLE: i32 = -9;
/// Call channel busy.
pub const RX_CALL_BUSY: i32 = -10;
/// Client failed to marshal.
pub const RXGEN_CC_MARSHAL: i32 = -450;
/// Client failed to unmarshal.
pub const RXGEN_CC_UNMARSHAL: i32 = -451;
/// Server failed to marshal.
pub const RXGEN_SS_MARSHAL: i32 = -452;
/// Server failed to unmarshal (bad arguments).
pub const RXGEN_SS_UNMARSHAL: i32 = -453;
/// Decode error.
pub const RXGEN_DECODE: i32 = -454;
/// Unknown opcode.
pub const RXGEN_OPCODE: i32 = -455;
/// Server XDR free error.
pub const RXGEN_SS_XDRFREE: i32 = -456;
/// Client XDR free error.
pub const RXGEN_CC_XDRFREE: i32 = -457;

/// Base of the rxkad table (`RXKADINCONSISTENCY`).
pub const RXKAD_BASE: i32 = 19270400;
/// Security object inconsistent.
pub const RXKADINCONSISTENCY: i32 = RXKAD_BASE;
/// Packet too short.
pub const RXKADPACKETSHORT: i32 = RXKAD_BASE + 1;
/// Security level not allowed.
pub const RXKADLEVELFAIL: i32 = RXKAD_BASE + 2;
/// Ticket length bad.
pub const RXKADTICKETLEN: i32 = RXKAD_BASE + 3;
/// Packet out of sequence.
pub const RXKADOUTOFSEQUENCE: i32 = RXKAD_BASE + 4;
/// Not authenticated.
pub const RXKADNOAUTH: i32 = RXKAD_BASE + 5;
/// Bad key.
pub const RXKADBADKEY: i32 = RXKAD_BASE + 6;
/// Bad ticket.
pub const RXKADBADTICKET: i32 = RXKAD_BASE + 7;
/// Server does not know the key version.
pub const RXKADUNKNOWNKEY: i32 = RXKAD_BASE + 8;
/// Ticket expired.
pub const RXKADEXPIRED: i32 = RXKAD_BASE + 9;
/// Sealed data inconsistent.
pub const RXKADSEALEDINCON: i32 = RXKAD_BASE + 10;
/// Data length bad.
pub const RXKADDATALEN: i32 = RXKAD_BASE + 11;
/// Illegal security level.
pub const RXKADILLEGALLEVEL: i32 = RXKAD_BASE + 12;

const NAMES: &[(i32, &str)] = &[
    (VSALVAGE, "VSALVAGE: volume needs salvage"),
    (VNOVNODE, "VNOVNODE: no such vnode (stale file)"),
    (VNOVOL, "VNOVOL: volume not on this server"),
    (VVOLEXISTS, "VVOLEXISTS: volume exists"),
    (VNOSERVICE, "VNOSERVICE: volume not in service"),
    (VOFFLINE, "VOFFLINE: volume offline"),
    (VONLINE, "VONLINE: volume already online"),
    (VDISKFULL, "VDISKFULL: partition full"),
    (VOVERQUOTA, "VOVERQUOTA: volume quota exceeded"),
    (VBUSY, "VBUSY: volume busy"),
    (VMOVED, "VMOVED: volume moved"),
    (VIO, "VIO: vnode temporarily inaccessible"),
    (VSALVAGING, "VSALVAGING: volume being salvaged"),
    (VRESTRICTED, "VRESTRICTED: volume restricted"),
    (VRESTARTING, "VRESTARTING: fileserver restarting"),
    (RX_CALL_DEAD, "RX_CALL_DEAD: server unreachable"),
    (RX_INVALID_OPERATION, "RX_INVALID_OPERATION"),
    (RX_CALL_TIMEOUT, "RX_CALL_TIMEOUT: call timed out"),
    (RX_EOF, "RX_EOF: unexpected end of data"),
    (RX_PROTOCOL_ERROR, "RX_PROTOCOL_ERROR"),
    (RX_USER_ABORT, "RX_USER_ABORT"),
    (RX_ADDRINUSE, "RX_ADDRINUSE"),
    (RX_DEBUG_ERROR, "RX_DEBUG_ERROR"),
    (RX_CALL_IDLE, "RX_CALL_IDLE: call idle"),
    (RX_CALL_BUSY, "RX_CALL_BUSY: call channel busy"),
    (RXGEN_CC_MARSHAL, "RXGEN_CC_MARSHAL"),
    (RXGEN_CC_UNMARSHAL, "RXGEN_CC_UNMARSHAL"),
    (RXGEN_SS_MARSHAL, "RXGEN_SS_MARSHAL"),
    (
        RXGEN_SS_UNMARSHAL,
        "RXGEN_SS_UNMARSHAL: server could not decode arguments",
    ),
    (RXGEN_DECODE, "RXGEN_DECODE"),
    (RXGEN_OPCODE, "RXGEN_OPCODE: unknown RPC opcode"),
    (RXGEN_SS_XDRFREE, "RXGEN_SS_XDRFREE"),
    (RXGEN_CC_XDRFREE, "RXGEN_CC_XDRFREE"),
    (
        RXKADINCONSISTENCY,
        "RXKADINCONSISTENCY: rxkad inconsistency",
    ),
    (RXKADPACKETSHORT, "RXKADPACKETSHORT: packet too short"),
    (RXKADLEVELFAIL, "RXKADLEVELFAIL: security level too low"),
    (RXKADTICKETLEN, "RXKADTICKETLEN: bad ticket length"),
    (
        RXKADOUTOFSEQUENCE,
        "RXKADOUTOFSEQUENCE: packet out of sequence",
    ),
    (RXKADNOAUTH, "RXKADNOAUTH: not authenticated"),
    (RXKADBADKEY, "RXKADBADKEY: bad key"),
    (RXKADBADTICKET, "RXKADBADTICKET: bad ticket"),
    (RXKADUNKNOWNKEY, "RXKADUNKNOWNKEY: unknown key version"),
    (RXKADEXPIRED, "RXKADEXPIRED: ticket expired"),
    (
        RXKADSEALEDINCON,
        "RXKADSEALEDINCON: sealed data inconsistent",
    ),
    (RXKADDATALEN, "RXKADDATALEN: bad data length"),
    (
        RXKADILLEGALLEVEL,
        "RXKADILLEGALLEVEL: illegal security level",
    ),
    (UAEPERM, "UAEPERM: operation not permitted"),
    (UAENOENT, "UAENOENT: no such file or directory"),
    (UAEIO, "UAEIO: I/O error"),
    (UAEAGAIN, "UAEAGAIN: try again"),
    (UAENOMEM, "UAENOMEM: out of memory"),
    (UAEACCES, "UAEACCES: permission denied"),
    (UAEBUSY, "UAEBUSY: busy"),
    (UAEEXIST, "UAEEXIST: file exists"),
    (UAEXDEV, "UAEXDEV: cross-device link"),
    (UAENOTDIR, "UAENOTDIR: not a directory"),
    (UAEISDIR, "UAEISDIR: is a directory"),
    (UAEINVAL, "UAEINVAL: invalid argument"),
    (UAEFBIG, "UAEFBIG: file too large"),
    (UAENOSPC, "UAENOSPC: no space left on device"),
    (UAEROFS, "UAEROFS: read-only file system"),
    (UAEMLINK, "UAEMLINK: too many links"),
    (UAENAMETOOLONG, "UAENAMETOOLONG: file name too long"),
    (UAENOLCK, "UAENOLCK: no locks available"),
    (UAENOSYS, "UAENOSYS: not implemented"),
    (UAENOTEMPTY, "UAENOTEMPTY: directory not empty"),
    (UAELOOP, "UAELOOP: too many symbolic links"),
    (UAEWOULDBLOCK, "UAEWOULDBLOCK: would block"),
    (UAEOPNOTSUPP, "UAEOPNOTSUPP: operation not supported"),
    (UAETIMEDOUT, "UAETIMEDOUT: timed out"),
    (UAESTALE, "UAESTALE: stale file handle"),
    (UAEDQUOT, "UAEDQUOT: quota exceeded"),
    (UAENOMEDIUM, "UAENOMEDIUM: no medium"),
    (UAENOTSUP, "UAENOTSUP: not supported"),
    (crate::vl::VL_NOENT, "VL_NOENT: no such volume"),
    (crate::vl::VL_BADNAME, "VL_BADNAME: illegal volume name"),
    (crate::vl::VL_PERM, "VL_PERM: no permission"),
    (crate::vl::VL_BADVOLTYPE, "VL_BADVOLTYPE: bad volume type"),
    (crate::vl::VL_IO, "VL_IO: VLDB I/O error"),
];

/// A readable name for an abort code, if it is a known AFS/Rx code.
pub fn abort_name(code: i32) -> Option<&'static str> {
    NAMES.iter().find(|(c, _)| *c == code).map(|(_, n)| *n)
}

/// True for errors that concern the volume at this site rather than the
/// file: the client should re-query the VLDB and/or try another site
/// (VBUSY/VRESTARTING: after a delay). VIO and VNOVNODE are not
/// volume errors.
pub fn is_volume_error(code: i32) -> bool {
    matches!(
        code,
        VSALVAGE | VNOVOL | VNOSERVICE | VOFFLINE | VBUSY | VMOVED | VSALVAGING | VRESTARTING
    )
}

/// Maps an abort code to a positive errno for the filesystem layer.
///
/// Plain small codes (1..=100) are errno values from the (Linux)
/// fileserver and pass through; UAE codes map to the matching errno; volume, Rx and rxkad codes
/// map like Linux kafs does. Anything else is `EIO`.
pub fn abort_to_errno(code: i32) -> i32 {
    match code {
        1..=100 => code,
        VSALVAGE | VNOSERVICE | VSALVAGING | VIO => EIO,
        VNOVNODE => ESTALE,
        VNOVOL => ENOMEDIUM,
        VVOLEXISTS | VONLINE => EEXIST,
        VOFFLINE | VRESTRICTED => ENOENT,
        VDISKFULL => ENOSPC,
        VOVERQUOTA => EDQUOT,
        VBUSY | VRESTARTING => EBUSY,
        VMOVED => ENXIO,
        RX_CALL_DEAD | RX_CALL_TIMEOUT | RX_CALL_IDLE => ETIMEDOUT,
        RX_CALL_BUSY => EBUSY,
        RX_EOF | RX_PROTOCOL_ERROR | RXGEN_CC_MARSHAL | RXGEN_CC_UNMARSHAL | RXGEN_SS_MARSHAL
        | RXGEN_SS_UNMARSHAL | RXGEN_DECODE => EPROTO,
        RXGEN_OPCODE => EOPNOTSUPP,
        RXKADEXPIRED => EKEYEXPIRED,
        RXKADUNKNOWNKEY | RXKADBADKEY | RXKADBADTICKET => EKEYREJECTED,
        RXKADNOAUTH | RXKADLEVELFAIL => EACCES,
        c if c > RXKAD_BASE && c < RXKAD_BASE + 13 => EPROTO,
        UAEWOULDBLOCK => EAGAIN,
        UAEOPNOTSUPP | UAENOTSUP => EOPNOTSUPP,
        UAETIMEDOUT => ETIMEDOUT,
        UAESTALE => ESTALE,
        UAEDQUOT => EDQUOT,
        UAENOMEDIUM => ENOMEDIUM,
        // The first 40 uae entries are in Linux errno order (EPERM..ELOOP);
        // later ones diverge, so only the constants above are mapped.
        c if (UAEPERM..=UAELOOP).contains(&c) => c - UAE_BASE + 1,
        c if (crate::vl::VL_IDEXIST..=crate::vl::VL_DBBAD).contains(&c) => match c {
            crate::vl::VL_NOENT => ENOENT,
            crate::vl::VL_PERM => EACCES,
            _ => EIO,
        },
        _ => EIO,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uae_follow_errno_order() {
        assert_eq!(abort_to_errno(UAEACCES), EACCES);
        assert_eq!(abort_to_errno(UAENOTEMPTY), ENOTEMPTY);
        assert_eq!(abort_to_errno(UAEDQUOT), EDQUOT);
        assert_eq!(abort_to_errno(UAESTALE), ESTALE);
        assert_eq!(abort_to_errno(UAENOMEDIUM), ENOMEDIUM);
        assert_eq!(abort_to_errno(UAEWOULDBLOCK), EAGAIN);
    }

    #[test]
    fn volume_errors() {
        for c in [VNOVOL, VMOVED, VOFFLINE, VBUSY, VSALVAGE, VRESTARTING] {
            assert!(is_volume_error(c), "{c}");
            assert!(abort_name(c).is_some());
        }
        assert!(!is_volume_error(VNOVNODE));
        assert!(!is_volume_error(EACCES));
        assert_eq!(abort_to_errno(VOVERQUOTA), EDQUOT);
        assert_eq!(abort_to_errno(EACCES), EACCES);
        assert_eq!(abort_to_errno(RXGEN_OPCODE), EOPNOTSUPP);
        assert_eq!(abort_to_errno(crate::vl::VL_NOENT), ENOENT);
        assert_eq!(abort_to_errno(123456789), EIO);
        assert_eq!(abort_name(123456789), None);
    }
}
