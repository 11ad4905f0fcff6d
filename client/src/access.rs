//! The rights rules of the OpenAFS cache manager (afs_AccessOK and
//! afs_access in src/afs/VNOPS/afs_vnop_access.c), as pure functions.
//!
//! A directory's rights are its ACL's, as the fileserver reports them in
//! CallerAccess. A file's come from its directory's ACL, with `a` when the
//! caller owns it (the fileserver adds it), `r` and `w` thrown in for an
//! owner with `i` (insert-only directories), and then cut by the OWNER's
//! mode bits, for every caller: a file whose owner bits are `---` is
//! neither read nor written through AFS by anyone, its owner included.

use afs_proto::types::FileType;
use cache::StatusRecord;

pub(crate) const READ: u32 = 1;
pub(crate) const WRITE: u32 = 2;
pub(crate) const INSERT: u32 = 4;
pub(crate) const LOOKUP: u32 = 8;
pub(crate) const DELETE: u32 = 16;
pub(crate) const LOCK: u32 = 32;
pub(crate) const ADMINISTER: u32 = 64;

/// Rights removed by the owner's mode bits (`rwx` → index 0..7).
const FILE_MODE_MAP: [u32; 8] = [
    READ | WRITE, // ---
    READ | WRITE, // --x
    READ,         // -w-
    READ,         // -wx
    WRITE,        // r--
    WRITE,        // r-x
    0,            // rw-
    0,            // rwx
];

fn is_dir(st: &StatusRecord) -> bool {
    st.file_type == FileType::Directory.as_u32()
}

/// The rights `caller_access` gives on the object of `st`; with
/// `mode_bits`, a file's are cut by its owner's mode bits.
pub(crate) fn effective(st: &StatusRecord, caller_access: u32, mode_bits: bool) -> u32 {
    if is_dir(st) {
        return caller_access;
    }
    let mut bits = caller_access;
    if bits & (ADMINISTER | INSERT) == (ADMINISTER | INSERT) {
        bits |= READ | WRITE;
    }
    if mode_bits {
        bits &= !FILE_MODE_MAP[((st.mode >> 6) & 7) as usize];
    }
    bits
}

/// Whether `caller_access` allows every right of `needed`.
pub(crate) fn allows(st: &StatusRecord, caller_access: u32, needed: u32) -> bool {
    effective(st, caller_access, true) & needed == needed
}

/// Whether the fileserver would give this caller the status at all
/// (viced's CHK_FETCHSTATUS): `l` for directories and symlinks; for files
/// `r`, or ownership (`a`) with `i`. A status cached for one user is shown
/// to another only under the same rule.
pub(crate) fn may_fetch_status(st: &StatusRecord, caller_access: u32) -> bool {
    if st.file_type == FileType::File.as_u32() {
        caller_access & READ != 0 || caller_access & (ADMINISTER | INSERT) == ADMINISTER | INSERT
    } else {
        caller_access & LOOKUP != 0
    }
}

/// access(2): `mask` of R_OK, W_OK and X_OK, as afs_access decides it.
/// `read_only`: the object is in a read-only volume (W_OK is EROFS there,
/// decided by the caller).
pub(crate) fn access_ok(st: &StatusRecord, caller_access: u32, mask: i32) -> bool {
    let ok = |r| allows(st, caller_access, r);
    let mut good = true;
    if is_dir(st) {
        if mask & libc::X_OK != 0 {
            good = ok(LOOKUP);
        }
        if good && mask & libc::W_OK != 0 {
            good = ok(INSERT) || ok(DELETE);
        }
        if good && mask & libc::R_OK != 0 {
            good = ok(LOOKUP);
        }
    } else {
        if mask & libc::X_OK != 0 {
            good = ok(READ) && st.mode & 0o100 != 0;
        }
        if good && mask & libc::W_OK != 0 {
            good = ok(WRITE);
        }
        if good && mask & libc::R_OK != 0 {
            good = ok(READ);
        }
    }
    good
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(file_type: FileType, mode: u32) -> StatusRecord {
        StatusRecord {
            file_type: file_type.as_u32(),
            length: 0,
            data_version: 1,
            mode,
            owner: 2,
            group: 0,
            link_count: 1,
            author: 2,
            client_modtime: 0,
            server_modtime: 0,
            parent_vnode: 1,
            parent_unique: 1,
            anonymous_access: 0,
            callback_expires: 0,
            fetched_at: 0,
        }
    }

    #[test]
    fn owner_mode_bits_bind_everyone() {
        let all = READ | WRITE | INSERT | LOOKUP | DELETE | LOCK;
        let f = st(FileType::File, 0o077);
        assert!(!allows(&f, all, READ), "owner bits --- deny read");
        assert!(!allows(&f, all, WRITE));
        let f = st(FileType::File, 0o444);
        assert!(allows(&f, all, READ));
        assert!(!allows(&f, all, WRITE), "r-- denies write");
        let f = st(FileType::File, 0o644);
        assert!(allows(&f, READ | LOOKUP, READ));
        assert!(!allows(&f, READ | LOOKUP, WRITE), "the ACL decides");
    }

    #[test]
    fn insert_and_administer_give_read_and_write_on_files() {
        // An owner (a) in an insert-only directory (i, l).
        let f = st(FileType::File, 0o600);
        assert!(allows(&f, INSERT | LOOKUP | ADMINISTER, READ | WRITE));
        assert!(!allows(&f, INSERT | LOOKUP, READ), "not the owner");
        // Directories: the ACL alone, whatever the mode.
        let d = st(FileType::Directory, 0o000);
        assert!(allows(&d, LOOKUP | INSERT, LOOKUP | INSERT));
        assert!(!allows(&d, LOOKUP, DELETE));
    }

    #[test]
    fn access_follows_afs_access() {
        let d = st(FileType::Directory, 0o755);
        assert!(access_ok(&d, LOOKUP, libc::R_OK | libc::X_OK));
        assert!(!access_ok(&d, LOOKUP, libc::W_OK));
        assert!(access_ok(&d, LOOKUP | DELETE, libc::W_OK));
        let f = st(FileType::File, 0o644);
        assert!(access_ok(&f, READ | LOOKUP, libc::R_OK));
        assert!(!access_ok(&f, READ | LOOKUP, libc::X_OK), "no x bit");
        assert!(!access_ok(&f, READ | LOOKUP, libc::W_OK));
        let x = st(FileType::File, 0o755);
        assert!(access_ok(&x, READ, libc::X_OK));
        assert!(access_ok(
            &x,
            READ | WRITE,
            libc::R_OK | libc::W_OK | libc::X_OK
        ));
    }
}
