//! OpenAFS `fs`-style administration, as extended attributes read and
//! written with the caller's uid (so its token, and therefore its rights,
//! apply as for any other access):
//!
//! | name | on | value |
//! |---|---|---|
//! | `afs.acl` | any node | the ACL in the fileserver's text form (`"N\nM\nname rights\n..."`, numeric rights); writing it stores a new ACL (StoreACL) |
//! | `afsd.volstatus` | any node | the node's fid and its volume's status (GetVolumeStatus), `key value` lines |
//! | `afsd.whereis` | any node | the addresses of the fileservers of the node's volume instance |
//! | `afsd.state` | any node | `clean` or `logged(N)` (N changes not yet on the server), `stale-since=T` while its volume is offline, and `dv=` the data version shown |
//! | `afsd.base`, `afsd.local`, `afsd.server` | any node | `dv= len= mtime= mode= owner=` of the object before its first offline change, as shown here, and on the server (asked when connected); `afsd.base` only for an object with changes pending or in a conflict |
//! | `afsd.conflict` | a node in a conflict of the caller | `kind= id= base= local= server=` (data versions) |
//! | `afsd.mountpoint.NAME` | a directory | the contents (`#vol.`) of its entry NAME when that is a mount point; EINVAL when not |
//!
//! Lookup crosses mount points, so a mount point is asked about through
//! its parent directory (`afsd.mountpoint.NAME`), as OpenAFS's
//! `VIOC_AFS_STAT_MT_PT` does. Only `afs.acl` is listed by listxattr (as
//! Linux kAFS lists it); the `afsd.*` names are queries.

use afs_proto::fs as rpcs;

use crate::attr::{is_mount_point, ROOT_INO};
use crate::client::AfsClient;
use crate::states::Which;
use crate::{Error, Result};

/// Disconnected operation's view of a node: `clean`, `logged(N)` (N
/// changes not yet on the server), `stale-since=T` (served from the cache
/// while its volume is offline).
pub const XATTR_STATE: &str = "afsd.state";

/// The three states of an object changed offline or in conflict (see
/// `states.rs`): `dv= len= mtime= mode= owner=`.
pub const XATTR_BASE: &str = "afsd.base";
pub const XATTR_LOCAL: &str = "afsd.local";
pub const XATTR_SERVER: &str = "afsd.server";
/// `kind= id= base= local= server=` of an object in conflict.
pub const XATTR_CONFLICT: &str = "afsd.conflict";

/// The ACL xattr (the name Linux kAFS uses).
pub const XATTR_ACL: &str = "afs.acl";
/// Volume status of a node's volume.
pub const XATTR_VOLSTATUS: &str = "afsd.volstatus";
/// Fileserver addresses of a node's volume.
pub const XATTR_WHEREIS: &str = "afsd.whereis";
/// Prefix of the per-entry mount point query on a directory.
pub const XATTR_MOUNTPOINT_PREFIX: &str = "afsd.mountpoint.";

/// An ACL as the fileserver exchanges it in text.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Acl {
    /// Positive entries: (name, rights bits).
    pub plus: Vec<(String, u32)>,
    /// Negative entries.
    pub minus: Vec<(String, u32)>,
}

impl Acl {
    /// Parses `"N\nM\nname rights\n..."` (rights in decimal).
    pub fn parse(text: &str) -> Option<Acl> {
        let text = text.trim_end_matches('\0');
        let mut lines = text.lines();
        // The first line may carry a DFS suffix (" dfs:N cell"): not ours.
        let nplus: usize = lines.next()?.split_whitespace().next()?.parse().ok()?;
        let nminus: usize = lines.next()?.trim().parse().ok()?;
        let mut entry = || -> Option<(String, u32)> {
            let line = lines.next()?;
            let (name, rights) = line.trim_end().rsplit_once(char::is_whitespace)?;
            let rights: i64 = rights.parse().ok()?;
            let name = name.trim();
            if name.is_empty() {
                return None;
            }
            Some((name.to_string(), rights as u32))
        };
        let mut acl = Acl::default();
        for _ in 0..nplus {
            acl.plus.push(entry()?);
        }
        for _ in 0..nminus {
            acl.minus.push(entry()?);
        }
        Some(acl)
    }

    /// The text form, as `fs setacl` sends it (without the NUL).
    pub fn to_text(&self) -> String {
        let mut s = format!("{}\n{}\n", self.plus.len(), self.minus.len());
        for (n, r) in self.plus.iter().chain(self.minus.iter()) {
            s.push_str(&format!("{n} {}\n", *r as i32));
        }
        s
    }
}

/// Rights bits as `fs` prints them: `rlidwka`, then `ABCDEFGH` for the
/// eight user-defined bits.
pub fn rights_string(rights: u32) -> String {
    const LETTERS: [(u32, char); 7] = [
        (1, 'r'),
        (8, 'l'),
        (4, 'i'),
        (16, 'd'),
        (2, 'w'),
        (32, 'k'),
        (64, 'a'),
    ];
    let mut s: String = LETTERS
        .iter()
        .filter(|(b, _)| rights & b != 0)
        .map(|(_, c)| *c)
        .collect();
    for (i, c) in ('A'..='H').enumerate() {
        if rights & (0x0100_0000 << i) != 0 {
            s.push(c);
        }
    }
    s
}

/// Parses rights as `fs setacl` takes them: letters `rlidwkaABCDEFGH` or
/// the words `read`, `write`, `mail`, `all`, `none`. `Err(c)`: the illegal
/// character.
pub fn parse_rights(s: &str) -> std::result::Result<u32, char> {
    match s {
        "read" => return Ok(1 | 8),
        "write" => return Ok(1 | 8 | 4 | 16 | 2 | 32),
        "mail" => return Ok(4 | 32 | 8),
        "all" => return Ok(127),
        "none" => return Ok(0),
        _ => {}
    }
    let mut r = 0;
    for c in s.chars() {
        r |= match c {
            'r' => 1,
            'w' => 2,
            'i' => 4,
            'l' => 8,
            'd' => 16,
            'k' => 32,
            'a' => 64,
            'A'..='H' => 0x0100_0000 << (c as u32 - 'A' as u32),
            _ => return Err(c),
        };
    }
    Ok(r)
}

impl AfsClient {
    /// getxattr as `uid`: the administration names above, then the
    /// read-only `afs.fid`, `afs.cell`, `afs.volume` and `afsd.stats`.
    pub async fn getxattr_as(&self, uid: u32, ino: u64, name: &str) -> Result<Option<Vec<u8>>> {
        if crate::conflict_tree::is_tree_ino(ino) {
            return Ok(None);
        }
        match name {
            XATTR_ACL if ino != ROOT_INO => self.get_acl(uid, ino).await.map(Some),
            XATTR_VOLSTATUS if ino != ROOT_INO => self.volume_status_text(uid, ino).await.map(Some),
            XATTR_WHEREIS if ino != ROOT_INO => self.whereis_text(ino).map(Some),
            XATTR_STATE if ino != ROOT_INO => self.state_text(uid, ino).await.map(Some),
            XATTR_BASE if ino != ROOT_INO => self.state_xattr(uid, ino, Which::Base).await,
            XATTR_LOCAL if ino != ROOT_INO => self.state_xattr(uid, ino, Which::Local).await,
            XATTR_SERVER if ino != ROOT_INO => self.state_xattr(uid, ino, Which::Server).await,
            XATTR_CONFLICT if ino != ROOT_INO => self.conflict_xattr(uid, ino).await,
            _ => match name.strip_prefix(XATTR_MOUNTPOINT_PREFIX) {
                Some(entry) => self.mount_point_of(uid, ino, entry).await.map(Some),
                None => self.getxattr(uid, ino, name).await,
            },
        }
    }

    /// listxattr: `afs.acl` besides the read-only names.
    pub async fn listxattr_all(&self, uid: u32, ino: u64) -> Result<Vec<&'static str>> {
        if crate::conflict_tree::is_tree_ino(ino) {
            return Ok(Vec::new());
        }
        let mut v = self.listxattr(uid, ino).await?;
        if ino != ROOT_INO {
            v.insert(0, XATTR_ACL);
        }
        Ok(v)
    }

    /// The `afsd.state` text of a node, for a caller who may see it.
    async fn state_text(&self, uid: u32, ino: u64) -> Result<Vec<u8>> {
        let inner = &self.inner;
        let node = inner.nodes.node(ino)?;
        let who = inner.valid.who(uid, &node);
        let st = inner.valid.valid_status(&node, &who).await?;
        let logged = inner.exec.journal.records_of(&node.cell, node.fid).len();
        let mut s = if logged > 0 {
            format!("logged({logged})")
        } else {
            "clean".to_string()
        };
        if let Some(m) = inner.valid.conn.get(&node.cell, node.fid.volume) {
            if m.mode == crate::Mode::Disconnected {
                s.push_str(&format!(" stale-since={}", st.fetched_at.min(m.since)));
            }
        }
        s.push_str(&format!(" dv={}\n", st.data_version));
        Ok(s.into_bytes())
    }

    /// The ACL text of a node (FetchACL; for a file, the fileserver answers
    /// with its directory's ACL).
    pub async fn get_acl(&self, uid: u32, ino: u64) -> Result<Vec<u8>> {
        let inner = &self.inner;
        let node = inner.nodes.node(ino)?;
        let who = inner.valid.who(uid, &node);
        let reply = inner
            .valid
            .call(&node, &who, &rpcs::FetchAcl { fid: node.fid })
            .await?;
        Ok(reply.acl.trim_end_matches('\0').as_bytes().to_vec())
    }

    /// `fid V.N.U`, then the GetVolumeStatus answer as `key value` lines.
    async fn volume_status_text(&self, uid: u32, ino: u64) -> Result<Vec<u8>> {
        let (node, vs) = self.inner.volume_status(uid, ino).await?;
        let one_line = |s: &str| s.replace(['\n', '\r'], " ");
        Ok(format!(
            "fid {}.{}.{}\nvid {}\nname {}\nmax_quota {}\nblocks_in_use {}\n\
             part_blocks_avail {}\npart_max_blocks {}\noffline_msg {}\nmotd {}\n",
            node.fid.volume,
            node.fid.vnode,
            node.fid.unique,
            vs.vid as u32,
            vs.name,
            vs.max_quota,
            vs.blocks_in_use,
            vs.part_blocks_avail,
            vs.part_max_blocks,
            one_line(&vs.offline_msg),
            one_line(&vs.motd),
        )
        .into_bytes())
    }

    /// The fileserver addresses of the node's volume instance, space
    /// separated.
    fn whereis_text(&self, ino: u64) -> Result<Vec<u8>> {
        let inner = &self.inner;
        let node = inner.nodes.node(ino)?;
        let (vol, t) = inner
            .fs
            .volume_by_id(&node.cell, node.fid.volume)
            .ok_or_else(|| {
                Error::NoSuchVolume(format!("{} in cell {}", node.fid.volume, node.cell))
            })?;
        let hosts: Vec<String> = vol.servers(t).iter().map(|s| s.ip().to_string()).collect();
        Ok(hosts.join(" ").into_bytes())
    }

    /// The contents of mount point `name` in directory `ino`; EINVAL when
    /// the entry is not a mount point. In `/afs` the cell entries are the
    /// mount points of their root.cell, as in OpenAFS's dynroot.
    async fn mount_point_of(&self, uid: u32, ino: u64, name: &str) -> Result<Vec<u8>> {
        let inner = &self.inner;
        if ino == ROOT_INO {
            let (kind, cell) = match name.strip_prefix('.') {
                Some(c) => ('%', c),
                None => ('#', name),
            };
            let cell = inner.cells.get(cell).ok_or(Error::NotFound)?.name.clone();
            return Ok(format!("{kind}{cell}:root.cell.").into_bytes());
        }
        if name.is_empty() || name.contains('/') {
            return Err(Error::Invalid("bad entry name".into()));
        }
        let dir = inner.nodes.node(ino)?;
        let who = inner.valid.who(uid, &dir);
        let fid = inner
            .dirs
            .entry(&dir, &who, name.as_bytes())
            .await?
            .ok_or(Error::NotFound)?;
        let child = dir.with_fid(fid);
        let st = inner.valid.valid_status(&child, &who).await?;
        if !is_mount_point(&st) {
            return Err(Error::Invalid(format!("{name} is not a mount point")));
        }
        let contents = inner
            .data
            .read(&child, 0, st.length.min(1024), &who)
            .await?;
        let text = String::from_utf8_lossy(&contents);
        Ok(text.trim_end_matches(['\0', '\n']).as_bytes().to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acl_text_round_trip() {
        let t = "2\n1\nsystem:administrators 127\nsystem:anyuser 9\nalice 2\n";
        let a = Acl::parse(t).unwrap();
        assert_eq!(a.plus[1], ("system:anyuser".to_string(), 9));
        assert_eq!(a.minus, vec![("alice".to_string(), 2)]);
        assert_eq!(a.to_text(), t);
        assert!(Acl::parse("2\n0\nonly-one 1\n").is_none());
    }

    #[test]
    fn rights_letters() {
        assert_eq!(rights_string(127), "rlidwka");
        assert_eq!(rights_string(9), "rl");
        assert_eq!(rights_string(63 | 0x0100_0000), "rlidwkA");
        assert_eq!(parse_rights("write"), Ok(63));
        assert_eq!(parse_rights("rl"), Ok(9));
        assert_eq!(parse_rights("none"), Ok(0));
        assert_eq!(parse_rights("rx"), Err('x'));
    }
}
