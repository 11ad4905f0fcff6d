//! The one record every change to AFS becomes.
//!
//! A [`Mutation`] is self-contained and serialisable: the cell and volume,
//! the acting identity, the base state it was decided against (the statuses
//! and data versions seen, and the name bindings it relies on), and the
//! operation with all its arguments. Online, the executor
//! ([`crate::executor`]) sends it and applies the server's reply to the
//! cache; offline (the next milestone) the same record is applied to the
//! cache locally and appended to the change log in the same store batch,
//! and replayed later. That is why a record names objects by fid and name,
//! never by inode, and carries what conflict detection compares with.
//!
//! Each operation has three parts, kept apart:
//! - the request to the server: [`crate::executor`] builds the RPC from the
//!   record alone;
//! - the local edit of the cache: [`Change::edit_dir`] says what the change
//!   does to a directory listing, with or without a server;
//! - applying the server's reply: statuses and listings in
//!   [`crate::executor`].

use std::collections::BTreeSet;

use afs_proto::types::{store_mask, Fid, StoreStatus};
use cache::DirEntryRecord;
use serde::{Deserialize, Serialize};

/// A change to AFS, with everything needed to send, log or replay it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mutation {
    pub cell: String,
    pub volume: u32,
    /// The local user who made the change: its token sends it.
    pub uid: u32,
    /// The AFS id the change was made as (None: anonymous). A user whose
    /// token expired acts offline as the token's AFS id (its anchor):
    /// replay waits for a valid token of that id rather than send the
    /// change anonymously.
    pub vice_id: Option<i32>,
    /// What the change was decided against.
    pub base: Vec<BaseState>,
    pub change: Change,
}

/// The state of one object as the client saw it when it decided on a
/// change: what replay and conflict detection compare the server with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseState {
    pub fid: Fid,
    pub data_version: u64,
    pub length: u64,
    /// For directory changes: the names the change relies on and what they
    /// were bound to (None: absent).
    pub bindings: Vec<(Vec<u8>, Option<Fid>)>,
}

/// The operation of a [`Mutation`], with all its arguments.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
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
    /// chmod, chown, utimes.
    StoreStatus {
        fid: Fid,
        attrs: SetAttrs,
    },
    /// New contents of a file: the dirty chunks (held in the cache under
    /// `local_dv`) and the new length; truncation is a StoreData with a
    /// shorter length.
    StoreData {
        fid: Fid,
        data: DataChange,
    },
    StoreAcl {
        fid: Fid,
        acl: String,
    },
}

/// What a store of file data sends: enough to rebuild every StoreData64
/// call from the record and the cache.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataChange {
    /// The length the file has now.
    pub length: u64,
    /// Bytes of the old contents still in force outside dirty chunks.
    pub base_len: u64,
    /// The file's length on the server when the changes began.
    pub server_len: u64,
    /// The data version the old contents are.
    pub base_dv: u64,
    /// The data version the dirty chunks are kept under in the cache.
    pub local_dv: u64,
    /// Chunks changed locally.
    pub chunks: BTreeSet<u64>,
}

/// Attribute changes of a setattr.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetAttrs {
    pub mode: Option<u32>,
    pub mtime: Option<u32>,
    pub size: Option<u64>,
    pub owner: Option<u32>,
    pub group: Option<u32>,
}

impl SetAttrs {
    /// The AFSStoreStatus for the mode, owner, group and mtime parts (size
    /// goes through StoreData).
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
        if let Some(o) = self.owner {
            s.mask |= store_mask::SET_OWNER;
            s.owner = o;
        }
        if let Some(g) = self.group {
            s.mask |= store_mask::SET_GROUP;
            s.group = g;
        }
        s
    }

    /// Whether anything but the size changes.
    pub(crate) fn has_status(&self) -> bool {
        self.mode.is_some() || self.mtime.is_some() || self.owner.is_some() || self.group.is_some()
    }
}

impl Change {
    /// The directories whose listings the change edits.
    pub fn dirs(&self) -> Vec<Fid> {
        match self {
            Change::CreateFile { dir, .. }
            | Change::MakeDir { dir, .. }
            | Change::Symlink { dir, .. }
            | Change::Link { dir, .. }
            | Change::RemoveFile { dir, .. }
            | Change::RemoveDir { dir, .. } => vec![*dir],
            Change::Rename {
                from_dir, to_dir, ..
            } if from_dir == to_dir => vec![*from_dir],
            Change::Rename {
                from_dir, to_dir, ..
            } => vec![*from_dir, *to_dir],
            Change::StoreStatus { .. } | Change::StoreData { .. } | Change::StoreAcl { .. } => {
                vec![]
            }
        }
    }

    /// The local edit of directory `dir`'s listing: what the change does to
    /// it, with `created` the fid of the object a create made (the server's
    /// online, a local one offline) and `moved` the entry a rename moves
    /// (looked up in the source directory). False: the edit cannot be made
    /// from what is known (the listing must be fetched again).
    pub fn edit_dir(
        &self,
        dir: Fid,
        entries: &mut Vec<DirEntryRecord>,
        created: Option<Fid>,
        moved: Option<&DirEntryRecord>,
    ) -> bool {
        let add = |entries: &mut Vec<DirEntryRecord>, name: &[u8], fid: Fid| {
            entries.retain(|e| e.name != name);
            entries.push(DirEntryRecord {
                name: name.to_vec(),
                vnode: fid.vnode,
                unique: fid.unique,
            });
        };
        match self {
            Change::CreateFile { name, .. }
            | Change::MakeDir { name, .. }
            | Change::Symlink { name, .. } => match created {
                Some(fid) => {
                    add(entries, name, fid);
                    true
                }
                None => false,
            },
            Change::Link { name, existing, .. } => {
                add(entries, name, *existing);
                true
            }
            Change::RemoveFile { name, .. } | Change::RemoveDir { name, .. } => {
                entries.retain(|e| &e.name != name);
                true
            }
            Change::Rename {
                from_dir,
                from_name,
                to_dir,
                to_name,
            } => {
                let Some(m) = moved else { return false };
                if dir == *from_dir {
                    // Only while the name still binds the object moved: a
                    // later change (replayed after this one) may have
                    // bound it to another.
                    entries.retain(|e| {
                        !(&e.name == from_name && e.vnode == m.vnode && e.unique == m.unique)
                    });
                }
                if dir == *to_dir {
                    add(entries, to_name, Fid::new(dir.volume, m.vnode, m.unique));
                }
                true
            }
            Change::StoreStatus { .. } | Change::StoreData { .. } | Change::StoreAcl { .. } => {
                false
            }
        }
    }

    /// The request to the server, built from the record alone (replay
    /// sends exactly this). StoreData's requests also need the chunks from
    /// the cache: the executor builds those.
    pub fn request(&self) -> crate::Result<crate::FsCall> {
        use crate::FsCall;
        use afs_proto::fs as rpcs;
        Ok(match self {
            Change::CreateFile { dir, name, mode } => FsCall::CreateFile(rpcs::CreateFile {
                dir: *dir,
                name: name_str(name)?,
                status: create_status(*mode),
            }),
            Change::MakeDir { dir, name, mode } => FsCall::MakeDir(rpcs::MakeDir {
                dir: *dir,
                name: name_str(name)?,
                status: create_status(*mode),
            }),
            Change::Symlink { dir, name, target } => FsCall::Symlink(rpcs::Symlink {
                dir: *dir,
                name: name_str(name)?,
                target: String::from_utf8(target.clone())
                    .map_err(|_| crate::Error::Invalid("symlink target must be UTF-8".into()))?,
                status: create_status(0o755),
            }),
            Change::Link {
                dir,
                name,
                existing,
            } => FsCall::Link(rpcs::Link {
                dir: *dir,
                name: name_str(name)?,
                existing: *existing,
            }),
            Change::RemoveFile { dir, name } => FsCall::RemoveFile(rpcs::RemoveFile {
                dir: *dir,
                name: name_str(name)?,
            }),
            Change::RemoveDir { dir, name } => FsCall::RemoveDir(rpcs::RemoveDir {
                dir: *dir,
                name: name_str(name)?,
            }),
            Change::Rename {
                from_dir,
                from_name,
                to_dir,
                to_name,
            } => FsCall::Rename(rpcs::Rename {
                old_dir: *from_dir,
                old_name: name_str(from_name)?,
                new_dir: *to_dir,
                new_name: name_str(to_name)?,
            }),
            Change::StoreStatus { fid, attrs } => FsCall::StoreStatus(rpcs::StoreStatus {
                fid: *fid,
                status: attrs.store_status(),
            }),
            Change::StoreAcl { fid, acl } => FsCall::StoreAcl(rpcs::StoreAcl {
                fid: *fid,
                acl: acl.clone(),
            }),
            Change::StoreData { .. } => {
                return Err(crate::Error::Invalid(
                    "StoreData requests are built with the cached chunks".into(),
                ))
            }
        })
    }

    /// A short name for logs and counters.
    pub fn kind(&self) -> &'static str {
        match self {
            Change::CreateFile { .. } => "create",
            Change::MakeDir { .. } => "mkdir",
            Change::Symlink { .. } => "symlink",
            Change::Link { .. } => "link",
            Change::RemoveFile { .. } => "unlink",
            Change::RemoveDir { .. } => "rmdir",
            Change::Rename { .. } => "rename",
            Change::StoreStatus { .. } => "setattr",
            Change::StoreData { .. } => "store",
            Change::StoreAcl { .. } => "setacl",
        }
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
            ..SetAttrs::default()
        }
        .store_status();
        assert_eq!(s.mask, store_mask::SET_MODE);
        assert_eq!(s.unix_mode_bits, 0o640);
        let s = SetAttrs {
            mtime: Some(7),
            size: Some(1),
            ..SetAttrs::default()
        }
        .store_status();
        assert_eq!(s.mask, store_mask::SET_MODTIME);
        assert_eq!(s.client_modtime, 7);
        assert_eq!(SetAttrs::default().store_status().mask, 0);
        assert!(!SetAttrs {
            size: Some(3),
            ..SetAttrs::default()
        }
        .has_status());
    }

    #[test]
    fn names_are_checked() {
        assert!(name_str(b"ok.txt").is_ok());
        for bad in [&b""[..], b"a/b", b"a\0b", &[0xff, 0xfe]] {
            assert!(name_str(bad).is_err(), "{bad:?}");
        }
        assert!(name_str(&[b'a'; 256]).is_err());
    }

    #[test]
    fn records_round_trip_through_bincode() {
        let m = Mutation {
            cell: "test.lab".into(),
            volume: 7,
            uid: 1000,
            vice_id: Some(2),
            base: vec![BaseState {
                fid: Fid::new(7, 1, 1),
                data_version: 3,
                length: 2048,
                bindings: vec![(b"a".to_vec(), None)],
            }],
            change: Change::StoreData {
                fid: Fid::new(7, 4, 9),
                data: DataChange {
                    length: 10,
                    base_len: 5,
                    server_len: 5,
                    base_dv: 1,
                    local_dv: u64::MAX,
                    chunks: [0].into_iter().collect(),
                },
            },
        };
        let b = bincode::serialize(&m).unwrap();
        assert_eq!(bincode::deserialize::<Mutation>(&b).unwrap(), m);
    }

    #[test]
    fn requests_come_from_the_record_alone() {
        let d = Fid::new(7, 1, 1);
        let r = Change::Rename {
            from_dir: d,
            from_name: b"a".to_vec(),
            to_dir: Fid::new(7, 3, 2),
            to_name: b"b".to_vec(),
        }
        .request()
        .unwrap();
        match r {
            crate::FsCall::Rename(x) => {
                assert_eq!((x.old_dir, x.new_dir), (d, Fid::new(7, 3, 2)));
                assert_eq!((x.old_name.as_str(), x.new_name.as_str()), ("a", "b"));
            }
            other => panic!("{other:?}"),
        }
        let bad = Change::RemoveFile {
            dir: d,
            name: b"x/y".to_vec(),
        };
        assert!(bad.request().is_err());
    }

    #[test]
    fn local_edits_of_listings() {
        let d = Fid::new(7, 1, 1);
        let e = |n: &str, v| DirEntryRecord {
            name: n.as_bytes().to_vec(),
            vnode: v,
            unique: 1,
        };
        let mut entries = vec![e("a", 2), e("b", 4)];
        let c = Change::CreateFile {
            dir: d,
            name: b"c".to_vec(),
            mode: 0o644,
        };
        assert!(!c.edit_dir(d, &mut entries, None, None), "needs the fid");
        assert!(c.edit_dir(d, &mut entries, Some(Fid::new(7, 6, 1)), None));
        assert_eq!(entries.len(), 3);
        let r = Change::Rename {
            from_dir: d,
            from_name: b"a".to_vec(),
            to_dir: d,
            to_name: b"b".to_vec(),
        };
        let moved = e("a", 2);
        assert!(r.edit_dir(d, &mut entries, None, Some(&moved)));
        let names: Vec<_> = entries.iter().map(|x| (x.name.clone(), x.vnode)).collect();
        assert_eq!(names, vec![(b"c".to_vec(), 6), (b"b".to_vec(), 2)]);
        let rm = Change::RemoveFile {
            dir: d,
            name: b"b".to_vec(),
        };
        assert!(rm.edit_dir(d, &mut entries, None, None));
        assert_eq!(entries.len(), 1);
    }
}
