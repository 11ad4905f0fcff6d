//! The entry points that read the name space: lookup, getattr, readdir,
//! readdirplus, readlink, statfs, the read-only xattrs, and the synthetic
//! `/afs` root.
//!
//! The root (`/afs`) is synthetic, like OpenAFS's dynroot: it lists each
//! configured cell twice, `CELL` (root.cell, the RO clone when one exists)
//! and `.CELL` (root.cell RW). Below it every node is a fid. Mount points are
//! followed at lookup, so the kernel sees a mount point as the root directory
//! of the volume it names.

use std::time::Duration;

use afs_proto::fs as rpcs;
use afs_proto::types::{Fid, FileType};
use cache::StatusRecord;

use crate::attr::{
    attr_of, dir_cookie, is_mount_point, kind_of, root_attr, Attr, DirEntryOut, NodeKind, StatFs,
    ROOT_INO,
};
use crate::client::{AfsClient, Inner};
use crate::conflict_tree::{is_tree_ino, AFSD_DIR};
use crate::identity::Identity;
use crate::inode::NodeRef;
use crate::volume::split_volume_suffix;
use crate::{Error, MountKind, MountPoint, Result, VolType};

impl AfsClient {
    pub async fn getattr(&self, uid: u32, ino: u64) -> Result<Attr> {
        if ino == ROOT_INO {
            return Ok(root_attr());
        }
        if is_tree_ino(ino) {
            return self.tree_getattr(uid, ino).await;
        }
        let inner = &self.inner;
        let node = inner.nodes.node(ino)?;
        let who = inner.valid.who(uid, &node);
        let st = inner.valid.valid_status(&node, &who).await?;
        Ok(inner.attr(ino, &node, uid, &st))
    }

    pub async fn lookup(&self, uid: u32, parent: u64, name: &[u8]) -> Result<Attr> {
        let mut attr = self.lookup_node(uid, parent, name).await?;
        if name != b"." && name != b".." {
            // Where the kernel names it: for paths in messages.
            self.inner.nodes.named(attr.ino, parent, name);
            attr.ttl = self.entry_ttl(parent, name, attr.ttl);
        }
        Ok(attr)
    }

    /// How long the kernel may keep the name `name` in `parent` (and the
    /// attributes that came with it): as long as the attributes allow, if
    /// anyone may look up in `parent`, and only once the name is recorded
    /// for invalidation when `parent` changes. The cells in `/afs` are the
    /// same for everyone: briefly.
    fn entry_ttl(&self, parent: u64, name: &[u8], attr_ttl: Duration) -> Duration {
        use crate::validate::PRSFS_LOOKUP;
        let inner = &self.inner;
        if parent == ROOT_INO {
            return attr_ttl.min(crate::attr::SHORT_TTL);
        }
        if attr_ttl.is_zero() {
            return attr_ttl;
        }
        let anyone = inner
            .nodes
            .node(parent)
            .ok()
            .and_then(|p| inner.valid.statuses.known(&p.key()))
            .is_some_and(|p| p.anonymous_access & PRSFS_LOOKUP != 0);
        if anyone && inner.nodes.long_entry(parent, name) {
            attr_ttl
        } else {
            Duration::ZERO
        }
    }

    async fn lookup_node(&self, uid: u32, parent: u64, name: &[u8]) -> Result<Attr> {
        if name.is_empty() || name.len() > 255 || name.contains(&b'/') {
            return Err(Error::NotFound);
        }
        let inner = &self.inner;
        if is_tree_ino(parent) || (parent == ROOT_INO && name == AFSD_DIR) {
            return self.tree_lookup(uid, parent, name).await;
        }
        if parent == ROOT_INO {
            let node = inner.cell_root(name).await?;
            let who = inner.valid.who(uid, &node);
            return inner.attr_of_node(node, &who).await;
        }
        let pnode = inner.nodes.node(parent)?;
        let who = inner.valid.who(uid, &pnode);
        let dir = inner.dirs.dir(&pnode, &who).await?;
        if name == b"." {
            return self.getattr(uid, parent).await;
        }
        let Some(i) = dir.position(name) else {
            return Err(Error::NotFound);
        };
        let e = &dir.entries[i];
        let child = pnode.with_fid(Fid::new(pnode.fid.volume, e.vnode, e.unique));
        if name != b".." && !inner.valid.has_valid(&child, &who) {
            inner
                .valid
                .bulk_prefetch(&pnode, &dir.entries, i, &who)
                .await;
        }
        let st = inner.valid.valid_status(&child, &who).await?;
        if is_mount_point(&st) {
            let target = inner.resolve_mount_point(&child, &st, &who).await?;
            let who = inner.valid.who(uid, &target);
            return inner.attr_of_node(target, &who).await;
        }
        let ino = inner.nodes.intern_ref(child.clone());
        Ok(inner.attr(ino, &child, uid, &st))
    }

    pub async fn readdir(&self, uid: u32, ino: u64) -> Result<Vec<DirEntryOut>> {
        let inner = &self.inner;
        if ino == ROOT_INO {
            return Ok(self.root_entries());
        }
        if is_tree_ino(ino) {
            return self.tree_readdir(uid, ino).await;
        }
        let node = inner.nodes.node(ino)?;
        let who = inner.valid.who(uid, &node);
        let dir = inner.dirs.dir(&node, &who).await?;
        let mut out = Vec::with_capacity(dir.entries.len());
        for e in &dir.entries {
            let child = node.with_fid(Fid::new(node.fid.volume, e.vnode, e.unique));
            let kind = match inner.valid.statuses.known(&child.key()) {
                Some(st) if is_mount_point(&st) => NodeKind::Dir,
                Some(st) => kind_of(&st),
                // AFS gives directories odd vnode numbers and files even ones.
                None if e.vnode % 2 == 1 => NodeKind::Dir,
                None => NodeKind::File,
            };
            let cino = if e.name == b"." {
                ino
            } else {
                inner.nodes.intern(child)
            };
            out.push(DirEntryOut {
                name: e.name.clone(),
                ino: cino,
                kind,
                cookie: dir_cookie(&e.name),
            });
        }
        out.sort_by(|a, b| (a.cookie, &a.name).cmp(&(b.cookie, &b.name)));
        Ok(out)
    }

    /// `/afs`: every cell twice, `CELL` and `.CELL`.
    fn root_entries(&self) -> Vec<DirEntryOut> {
        let dot = |name: &[u8]| DirEntryOut {
            name: name.to_vec(),
            ino: ROOT_INO,
            kind: NodeKind::Dir,
            cookie: dir_cookie(name),
        };
        let mut out = vec![dot(b"."), dot(b"..")];
        out.push(DirEntryOut {
            ino: crate::conflict_tree::tree_root_ino(),
            ..dot(AFSD_DIR)
        });
        for (i, c) in self.cells().into_iter().enumerate() {
            let base = u64::MAX - 2 * i as u64;
            out.push(DirEntryOut {
                name: c.clone().into_bytes(),
                ino: base,
                kind: NodeKind::Dir,
                cookie: dir_cookie(c.as_bytes()),
            });
            let dotted = format!(".{c}");
            out.push(DirEntryOut {
                cookie: dir_cookie(dotted.as_bytes()),
                name: dotted.into_bytes(),
                ino: base - 1,
                kind: NodeKind::Dir,
            });
        }
        out.sort_by(|a, b| (a.cookie, &a.name).cmp(&(b.cookie, &b.name)));
        out
    }

    /// Entries with their attributes (FUSE readdirplus): one call lists a
    /// directory for `ls -l`. Statuses come in InlineBulkStatus batches of
    /// 50 through lookup's prefetch; mount points show their volume's root.
    /// Entries whose status cannot be had (deleted meanwhile, no access) are
    /// listed without attributes.
    pub async fn readdirplus(
        &self,
        uid: u32,
        ino: u64,
        after: u64,
        max: usize,
    ) -> Result<Vec<(DirEntryOut, Option<Attr>)>> {
        let entries = self.readdir(uid, ino).await?;
        let inner = &self.inner;
        let mut out = Vec::with_capacity(max.min(entries.len()));
        for e in entries.into_iter().filter(|e| e.cookie > after).take(max) {
            // The root lists cells: looking each up would ask every cell's
            // VL server just to list /afs.
            let attr = if ino == ROOT_INO || e.name == b"." || e.name == b".." {
                None
            } else {
                match self.lookup(uid, ino, &e.name).await {
                    Ok(a) => Some(a),
                    Err(err) => {
                        tracing::debug!(name = %String::from_utf8_lossy(&e.name), "readdirplus lookup: {err}");
                        // Listed all the same: the kernel holds the inode.
                        match inner.nodes.node(e.ino) {
                            Ok(n) => {
                                inner.nodes.intern_ref(n.clone());
                                // The last status we had is better than none.
                                inner
                                    .valid
                                    .statuses
                                    .known(&n.key())
                                    .filter(|st| !is_mount_point(st))
                                    .map(|st| inner.attr(e.ino, &n, uid, &st))
                            }
                            Err(_) => None,
                        }
                    }
                }
            };
            out.push((e, attr));
        }
        Ok(out)
    }

    pub async fn readlink(&self, uid: u32, ino: u64) -> Result<Vec<u8>> {
        if ino == ROOT_INO {
            return Err(Error::NotSymlink);
        }
        let inner = &self.inner;
        let node = inner.nodes.node(ino)?;
        let who = inner.valid.who(uid, &node);
        let st = inner.valid.valid_status(&node, &who).await?;
        if st.file_type != FileType::Symlink.as_u32() {
            return Err(Error::NotSymlink);
        }
        inner
            .valid
            .require(&node, &who, crate::validate::PRSFS_READ)?;
        inner.data.read(&node, 0, st.length.min(4096), &who).await
    }

    pub async fn statfs(&self, uid: u32, ino: u64) -> Result<StatFs> {
        let generic = StatFs {
            blocks: 1 << 30,
            bfree: 1 << 30,
            bavail: 1 << 30,
            files: 1 << 24,
            ffree: 1 << 24,
        };
        if ino == ROOT_INO {
            return Ok(generic);
        }
        let (_, vs) = self.inner.volume_status(uid, ino).await?;
        let part_total = vs.part_max_blocks.max(0) as u64;
        let part_free = vs.part_blocks_avail.max(0) as u64;
        let used = vs.blocks_in_use.max(0) as u64;
        let (total, free) = if vs.max_quota > 0 {
            let q = vs.max_quota as u64;
            (q, q.saturating_sub(used).min(part_free))
        } else {
            (part_total, part_free)
        };
        Ok(StatFs {
            blocks: total,
            bfree: free,
            bavail: free,
            ..generic
        })
    }

    /// The read-only xattrs Linux kAFS offers: `afs.fid`, `afs.cell`,
    /// `afs.volume`; and `afsd.stats` on the root for the stats command.
    /// They need the caller's own established rights on the node, as any
    /// other look at it.
    pub async fn getxattr(&self, uid: u32, ino: u64, name: &str) -> Result<Option<Vec<u8>>> {
        if ino == ROOT_INO {
            return Ok(match name {
                "afsd.stats" => Some(self.render_stats().into_bytes()),
                _ => None,
            });
        }
        let node = self.inner.nodes.node(ino)?;
        let who = self.inner.valid.who(uid, &node);
        self.inner.valid.valid_status(&node, &who).await?;
        Ok(match name {
            "afs.fid" => Some(
                format!(
                    "{:x}:{:x}:{:x}",
                    node.fid.volume, node.fid.vnode, node.fid.unique
                )
                .into_bytes(),
            ),
            "afs.cell" => Some(node.cell.clone().into_bytes()),
            "afs.volume" => {
                let name = match self.inner.fs.volume_by_id(&node.cell, node.fid.volume) {
                    Some((v, VolType::Ro)) => format!("{}.readonly", v.name),
                    Some((v, VolType::Backup)) => format!("{}.backup", v.name),
                    Some((v, VolType::Rw)) => v.name.clone(),
                    None => node.fid.volume.to_string(),
                };
                Some(name.into_bytes())
            }
            _ => None,
        })
    }

    /// The names listxattr gives (after the same check as getxattr).
    pub async fn listxattr(&self, uid: u32, ino: u64) -> Result<Vec<&'static str>> {
        if ino == ROOT_INO {
            return Ok(vec!["afsd.stats"]);
        }
        let node = self.inner.nodes.node(ino)?;
        let who = self.inner.valid.who(uid, &node);
        self.inner.valid.valid_status(&node, &who).await?;
        Ok(vec!["afs.cell", "afs.fid", "afs.volume"])
    }

    /// The kernel dropped `n` references to `ino` (FUSE FORGET): at none
    /// left, the inode is forgotten here too. Open descriptors name their
    /// node themselves, so nothing else holds on to the number.
    pub fn forget(&self, ino: u64, n: u64) {
        if ino == ROOT_INO {
            return;
        }
        if self.inner.nodes.unref(ino, n) {
            self.inner.nodes.remove(ino);
        }
    }

    /// Gives back the reference of a readdirplus entry that did not fit in
    /// the kernel's buffer: every entry but "." and ".." of a directory
    /// other than `/afs` carries one.
    pub fn unref(&self, ino: u64) {
        self.forget(ino, 1);
    }
}

impl Inner {
    /// Attributes from a status, with the length `uid` sees of a file it
    /// is writing.
    pub(crate) fn attr(&self, ino: u64, node: &NodeRef, uid: u32, st: &StatusRecord) -> Attr {
        let mut a = attr_of(ino, st);
        let key = node.key();
        if let Some(len) = self.open.length(&key, uid) {
            a.size = len;
        }
        // Unlinked while open: no name left, as fstat shows it.
        if self.open.is_hidden(&key) {
            a.nlink = 0;
        }
        a.ttl = self.kernel_ttl(node, uid, st);
        a
    }

    /// How long the kernel may answer for this node itself. A name or
    /// attributes the kernel keeps are shown to every local user, so they
    /// are kept only where every user may see them anyway: the directory
    /// holding the object lets anyone (system:anyuser) look up, which AFS
    /// requires for a name and a status alike. Then the kernel keeps them
    /// while the callback holds (capped): a callback break invalidates the
    /// inode and every name of the directory handed out long (see
    /// `Nodes::long_entry`). Elsewhere, zero: every lookup and stat comes
    /// to the daemon, which judges the caller's own rights. A file being
    /// written here is never kept (each writer sees its own length).
    pub(crate) fn kernel_ttl(&self, node: &NodeRef, uid: u32, st: &StatusRecord) -> Duration {
        use crate::validate::PRSFS_LOOKUP;
        if self.open.length(&node.key(), uid).is_some() {
            return Duration::ZERO;
        }
        let anyone = if st.file_type == FileType::Directory.as_u32() {
            // A directory's own status gives its own ACL; its name is in
            // its parent's (a volume's root names itself).
            let parent =
                node.with_fid(Fid::new(node.fid.volume, st.parent_vnode, st.parent_unique));
            if st.parent_vnode == 0 || parent.fid == node.fid {
                st.anonymous_access
            } else {
                match self.valid.statuses.known(&parent.key()) {
                    Some(p) => p.anonymous_access,
                    None => 0,
                }
            }
        } else {
            // A file's anonymous rights are its directory's.
            st.anonymous_access
        };
        if anyone & PRSFS_LOOKUP == 0 {
            return Duration::ZERO;
        }
        let left = st
            .callback_expires
            .saturating_sub(crate::status::now_secs());
        Duration::from_secs(left).min(crate::attr::LONG_TTL)
    }

    /// GetVolumeStatus of the volume of `ino`, as `uid` (statfs and the
    /// `afsd.volstatus` query).
    pub(crate) async fn volume_status(
        &self,
        uid: u32,
        ino: u64,
    ) -> Result<(NodeRef, rpcs::VolumeStatus)> {
        let node = self.nodes.node(ino)?;
        let who = self.valid.who(uid, &node);
        let volume = node.fid.volume;
        let vs = self
            .valid
            .call(&node, &who, &rpcs::GetVolumeStatus { volume })
            .await?;
        Ok((node, vs))
    }

    /// A lookup's answer for `node`: its attributes, and a kernel reference.
    pub(crate) async fn attr_of_node(&self, node: NodeRef, who: &Identity) -> Result<Attr> {
        let st = self.valid.valid_status(&node, who).await?;
        let ino = self.nodes.intern_ref(node.clone());
        Ok(self.attr(ino, &node, who.uid, &st))
    }

    /// Locates a volume; when the VL servers cannot be reached, the last
    /// answer kept in the cache stands in (offline, the volumes used
    /// before are still found).
    pub(crate) async fn locate(
        &self,
        cell: &crate::Cell,
        name: &str,
    ) -> Result<std::sync::Arc<crate::VolumeInfo>> {
        use crate::journal::SPACE_VOLUME;
        use crate::volume::VolumeRecord;
        let mut key = cell.name.as_bytes().to_vec();
        key.push(0);
        key.extend_from_slice(name.as_bytes());
        match self.fs.locate(cell, name).await {
            Ok(info) => {
                let rec = VolumeRecord::of(&info);
                let kept = self
                    .store
                    .get_record(SPACE_VOLUME, &key)?
                    .and_then(|v| bincode::deserialize::<VolumeRecord>(&v).ok());
                if kept.as_ref() != Some(&rec) {
                    let mut b = cache::Batch::new();
                    b.push(cache::Op::PutRecord {
                        space: SPACE_VOLUME,
                        key,
                        value: bincode::serialize(&rec).unwrap_or_default(),
                    });
                    self.store.apply(b)?;
                }
                Ok(info)
            }
            Err(e) if crate::connectivity::is_network(&e) => {
                let Some(rec) = self
                    .store
                    .get_record(SPACE_VOLUME, &key)?
                    .and_then(|v| bincode::deserialize::<VolumeRecord>(&v).ok())
                else {
                    return Err(e);
                };
                tracing::info!(cell = %cell.name, volume = name, "VL servers unreachable: using the volume's location kept in the cache");
                let info = std::sync::Arc::new(rec.info(cell.clone()));
                self.fs.seed((*info).clone());
                Ok(info)
            }
            Err(e) => Err(e),
        }
    }

    /// `/afs/CELL` and `/afs/.CELL`.
    async fn cell_root(&self, name: &[u8]) -> Result<NodeRef> {
        let name = std::str::from_utf8(name).map_err(|_| Error::NotFound)?;
        let (rw, cell_name) = match name.strip_prefix('.') {
            Some(c) => (true, c),
            None => (false, name),
        };
        let cell = self
            .cells
            .get(cell_name)
            .ok_or_else(|| Error::UnknownCell(cell_name.to_string()))?
            .clone();
        let info = self.locate(&cell, "root.cell").await?;
        let kind = if rw {
            MountKind::ReadWrite
        } else {
            MountKind::Regular
        };
        let (id, t) = info.choose(VolType::Rw, kind, true);
        Ok(NodeRef {
            cell: cell.name.clone(),
            fid: Fid::new(id, 1, 1),
            vol_type: t,
        })
    }

    /// The root of the volume a mount point names.
    pub(crate) async fn resolve_mount_point(
        &self,
        mp: &NodeRef,
        st: &StatusRecord,
        who: &Identity,
    ) -> Result<NodeRef> {
        let contents = self.data.read(mp, 0, st.length.min(1024), who).await?;
        let parsed = MountPoint::parse(&contents).ok_or_else(|| {
            Error::Protocol(format!(
                "bad mount point contents {:?}",
                String::from_utf8_lossy(&contents)
            ))
        })?;
        let cell_name = parsed.cell.clone().unwrap_or_else(|| mp.cell.clone());
        let cell = self
            .cells
            .get(&cell_name)
            .ok_or_else(|| Error::UnknownCell(cell_name.clone()))?
            .clone();
        let (base, requested) = split_volume_suffix(&parsed.volume);
        let info = self.locate(&cell, base).await?;
        let parent_ro = mp.vol_type != VolType::Rw;
        let (id, t) = info.choose(requested, parsed.kind, parent_ro);
        Ok(NodeRef {
            cell: cell.name.clone(),
            fid: Fid::new(id, 1, 1),
            vol_type: t,
        })
    }
}
