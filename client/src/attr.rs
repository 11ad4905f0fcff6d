//! What the cache manager answers with: attributes, listing entries, statfs
//! figures and kernel invalidations, and how they derive from AFS statuses.

use std::time::Duration;

use cache::StatusRecord;

use afs_proto::types::FileType;

/// Inode number of `/afs`.
pub const ROOT_INO: u64 = 1;

/// Kind of a node as the kernel should see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeKind {
    File,
    Dir,
    Symlink,
}

/// Attributes of a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub kind: NodeKind,
    pub size: u64,
    pub mode: u32,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: u64,
    pub data_version: u64,
    /// How long the kernel may answer lookups of this name and reads of
    /// these attributes itself, for any local user: long only where every
    /// user may see them anyway (see `Inner::kernel_ttl`), else zero.
    pub ttl: Duration,
}

/// One readdir entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntryOut {
    pub name: Vec<u8>,
    pub ino: u64,
    pub kind: NodeKind,
    /// Where a listing resumes after this entry (the FUSE offset). A hash
    /// of the name, so that it stays put while other entries come and go:
    /// a program deleting entries as it lists them still meets every one.
    pub cookie: u64,
}

/// statfs answer, in 1 KiB blocks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatFs {
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
}

/// What the kernel must drop: the pages and attributes of inode `ino`,
/// or, with `name`, the name `name` it cached in directory `ino`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalidation {
    pub ino: u64,
    pub name: Option<Vec<u8>>,
}

/// How long the kernel may keep what needs no rights: the mount's root
/// (the cells), which every user lists alike.
pub const SHORT_TTL: Duration = Duration::from_secs(1);

/// The longest the kernel keeps a name or attributes that anyone may see
/// (a callback break invalidates them sooner).
pub const LONG_TTL: Duration = Duration::from_secs(600);

/// The readdir cookie of a name: "." is 1, ".." 2, any other name an
/// FNV-1a hash folded above them and below `i64::MAX` (FUSE offsets are
/// signed). Listings are sorted by it.
pub(crate) fn dir_cookie(name: &[u8]) -> u64 {
    match name {
        b"." => 1,
        b".." => 2,
        _ => {
            let mut h: u64 = 0xcbf2_9ce4_8422_2325;
            for &b in name {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
            3 + h % (i64::MAX as u64 - 3)
        }
    }
}

pub(crate) fn root_attr() -> Attr {
    Attr {
        ino: ROOT_INO,
        kind: NodeKind::Dir,
        size: 2048,
        mode: 0o755,
        nlink: 2,
        uid: 0,
        gid: 0,
        mtime: 0,
        data_version: 0,
        ttl: SHORT_TTL,
    }
}

/// AFS mount points are symlinks whose mode has no execute bits (afscptool
/// and `fs mkmount` create them 0644; real symlinks are 0755).
pub(crate) fn is_mount_point(st: &StatusRecord) -> bool {
    st.file_type == FileType::Symlink.as_u32() && st.mode & 0o111 == 0
}

pub(crate) fn kind_of(st: &StatusRecord) -> NodeKind {
    match FileType::from_u32(st.file_type) {
        FileType::Directory => NodeKind::Dir,
        FileType::Symlink => NodeKind::Symlink,
        _ => NodeKind::File,
    }
}

pub(crate) fn attr_of(ino: u64, st: &StatusRecord) -> Attr {
    Attr {
        ino,
        kind: kind_of(st),
        size: st.length,
        mode: st.mode & 0o7777,
        nlink: st.link_count.max(1),
        uid: st.owner,
        gid: st.group,
        mtime: st.client_modtime as u64,
        data_version: st.data_version,
        ttl: Duration::ZERO,
    }
}

#[cfg(test)]
mod tests {
    use super::dir_cookie;

    #[test]
    fn cookies_put_dots_first_and_stay_in_range() {
        assert_eq!(dir_cookie(b"."), 1);
        assert_eq!(dir_cookie(b".."), 2);
        let mut seen = std::collections::HashSet::new();
        for i in 0..20_000 {
            let c = dir_cookie(format!("entry-{i:05}").as_bytes());
            assert!(c > 2 && c < i64::MAX as u64);
            assert!(seen.insert(c), "collision at {i}");
        }
        // A name's cookie depends on the name alone.
        assert_eq!(dir_cookie(b"hello.txt"), dir_cookie(b"hello.txt"));
    }
}
