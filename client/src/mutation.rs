//! The one path every change to AFS takes.
//!
//! Each user-visible change (create, mkdir, symlink, link, remove, rmdir,
//! rename, store status, store data) is a typed [`Mutation`]. Online, the
//! executor sends it to the fileserver and applies the server's answer to
//! the cache: the new status of every object touched and, when a directory's
//! data version moved by exactly our change, the directory edited in place
//! instead of being fetched again. Offline (the next milestone) the same
//! mutations are applied locally and appended to the change log in the same
//! store batch.

use afs_proto::types::{store_mask, Fid, StoreStatus};

/// A change to AFS, named by fids and names so that it can be logged and
/// replayed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mutation {
    CreateFile {
        dir: Fid,
        name: Vec<u8>,
        mode: u32,
    },
    MakeDir {
        dir: Fid,
        name: Vec<u8>,
        mode: u32,
    },
    Symlink {
        dir: Fid,
        name: Vec<u8>,
        target: Vec<u8>,
    },
    Link {
        dir: Fid,
        name: Vec<u8>,
        existing: Fid,
    },
    RemoveFile {
        dir: Fid,
        name: Vec<u8>,
    },
    RemoveDir {
        dir: Fid,
        name: Vec<u8>,
    },
    Rename {
        from_dir: Fid,
        from_name: Vec<u8>,
        to_dir: Fid,
        to_name: Vec<u8>,
    },
    StoreStatus {
        fid: Fid,
        attrs: SetAttrs,
    },
    /// The whole new contents of a file (AFS stores whole files at close).
    StoreData {
        fid: Fid,
        length: u64,
    },
}

/// Attribute changes of a setattr.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SetAttrs {
    pub mode: Option<u32>,
    pub mtime: Option<u32>,
    pub size: Option<u64>,
}

impl SetAttrs {
    /// The AFSStoreStatus for the mode and mtime parts (size goes through
    /// StoreData).
    pub(crate) fn store_status(&self) -> StoreStatus {
        let mut s = StoreStatus {
            mask: 0,
            client_modtime: 0,
            owner: 0,
            group: 0,
            unix_mode_bits: 0,
            seg_size: 0,
        };
        if let Some(m) = self.mode {
            s.mask |= store_mask::SET_MODE;
            s.unix_mode_bits = m & 0o7777;
        }
        if let Some(t) = self.mtime {
            s.mask |= store_mask::SET_MODTIME;
            s.client_modtime = t;
        }
        s
    }
}

/// A new-object StoreStatus: mode and the client's clock as mtime, as the
/// OpenAFS cache manager sends with CreateFile and MakeDir.
pub(crate) fn create_status(mode: u32) -> StoreStatus {
    StoreStatus {
        mask: store_mask::SET_MODE | store_mask::SET_MODTIME,
        client_modtime: crate::status::now_secs() as u32,
        owner: 0,
        group: 0,
        unix_mode_bits: mode & 0o7777,
        seg_size: 0,
    }
}

/// AFS names are byte strings; the RPC layer carries them as UTF-8 text.
pub(crate) fn name_str(name: &[u8]) -> crate::Result<String> {
    if name.is_empty() || name.len() > 255 || name.contains(&b'/') || name.contains(&0) {
        return Err(crate::Error::Invalid("bad file name".into()));
    }
    String::from_utf8(name.to_vec())
        .map_err(|_| crate::Error::Invalid("file names must be UTF-8".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setattrs_become_store_status_masks() {
        let s = SetAttrs {
            mode: Some(0o100640),
            mtime: None,
            size: None,
        }
        .store_status();
        assert_eq!(s.mask, store_mask::SET_MODE);
        assert_eq!(s.unix_mode_bits, 0o640);
        let s = SetAttrs {
            mode: None,
            mtime: Some(7),
            size: Some(1),
        }
        .store_status();
        assert_eq!(s.mask, store_mask::SET_MODTIME);
        assert_eq!(s.client_modtime, 7);
        assert_eq!(SetAttrs::default().store_status().mask, 0);
    }

    #[test]
    fn names_are_checked() {
        assert!(name_str(b"ok.txt").is_ok());
        for bad in [&b""[..], b"a/b", b"a\0b", &[0xff, 0xfe]] {
            assert!(name_str(bad).is_err(), "{bad:?}");
        }
        assert!(name_str(&[b'a'; 256]).is_err());
    }
}
