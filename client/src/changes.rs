//! The entry points that change the name space and attributes: create,
//! mkdir, symlink, link, unlink, rmdir, rename, setattr and setacl. Each
//! builds one [`Mutation`] record, with the base state it was decided
//! against, and hands it to the executor.

use afs_proto::types::Fid;
use cache::FidKey;

use crate::attr::{Attr, ROOT_INO};
use crate::client::{AfsClient, Inner};
use crate::identity::Identity;
use crate::inode::NodeRef;
use crate::mutation::{BaseState, Change, Mutation, SetAttrs};
use crate::validate::{PRSFS_ADMINISTER, PRSFS_DELETE, PRSFS_INSERT, PRSFS_WRITE};
use crate::{Error, Result, VolType};

impl AfsClient {
    /// Creates an empty file (without opening it).
    pub async fn create_file(&self, uid: u32, parent: u64, name: &[u8], mode: u32) -> Result<Attr> {
        let n = name.to_vec();
        self.create_object(uid, parent, name, |dir| Change::CreateFile {
            dir,
            name: n,
            mode,
        })
        .await
    }

    pub async fn mkdir(&self, uid: u32, parent: u64, name: &[u8], mode: u32) -> Result<Attr> {
        let n = name.to_vec();
        self.create_object(uid, parent, name, |dir| Change::MakeDir {
            dir,
            name: n,
            mode,
        })
        .await
    }

    pub async fn symlink(&self, uid: u32, parent: u64, name: &[u8], target: &[u8]) -> Result<Attr> {
        let (n, target) = (name.to_vec(), target.to_vec());
        self.create_object(uid, parent, name, |dir| Change::Symlink {
            dir,
            name: n,
            target,
        })
        .await
    }

    /// Runs a creating change in directory `parent` and returns the new
    /// object's attributes.
    async fn create_object(
        &self,
        uid: u32,
        parent: u64,
        name: &[u8],
        make: impl FnOnce(Fid) -> Change,
    ) -> Result<Attr> {
        let name = name.to_vec();
        let inner = &self.inner;
        let (pnode, who) = inner.writable_dir(uid, parent).await?;
        inner.valid.require(&pnode, &who, PRSFS_INSERT)?;
        let change = make(pnode.fid);
        let m = inner.record(&pnode, &who, change);
        let out = inner.run(&who, &m).await?;
        let (node, st) = out
            .created
            .ok_or_else(|| Error::Protocol("the change created nothing".into()))?;
        let ino = inner.nodes.intern_ref(node.clone());
        inner.nodes.named(ino, parent, &name);
        Ok(inner.attr(ino, &node, uid, &st))
    }

    /// A hard link to file `ino` in `newparent` (same volume only).
    pub async fn link(&self, uid: u32, ino: u64, newparent: u64, newname: &[u8]) -> Result<Attr> {
        let inner = &self.inner;
        let target = inner.nodes.node(ino)?;
        let (pnode, who) = inner.writable_dir(uid, newparent).await?;
        if target.fid.volume != pnode.fid.volume || target.cell != pnode.cell {
            return Err(Error::CrossVolume);
        }
        inner.valid.require(&pnode, &who, PRSFS_INSERT)?;
        let m = inner.record(
            &pnode,
            &who,
            Change::Link {
                dir: pnode.fid,
                name: newname.to_vec(),
                existing: target.fid,
            },
        );
        inner.run(&who, &m).await?;
        let attr = self.getattr(uid, ino).await?;
        // The answer gives the kernel the inode under one more name.
        inner.nodes.intern_ref(target);
        Ok(attr)
    }

    pub async fn unlink(&self, uid: u32, parent: u64, name: &[u8]) -> Result<()> {
        let inner = &self.inner;
        let (pnode, who) = inner.writable_dir(uid, parent).await?;
        inner.valid.require(&pnode, &who, PRSFS_DELETE)?;
        // A file still open stays usable through its descriptors: as
        // OpenAFS's afs_remove does, it is renamed to a hidden name and
        // removed at its last close.
        if let Some(e) = inner.dirs.cached_entry(&pnode, name) {
            let victim = pnode.with_fid(Fid::new(pnode.fid.volume, e.vnode, e.unique));
            if inner.open.is_open(&victim.key()) && !inner.open.is_hidden(&victim.key()) {
                let hidden = format!(".__afs{:04X}{:04X}", e.vnode & 0xffff, e.unique & 0xffff);
                let m = inner.record(
                    &pnode,
                    &who,
                    Change::Rename {
                        from_dir: pnode.fid,
                        from_name: name.to_vec(),
                        to_dir: pnode.fid,
                        to_name: hidden.clone().into_bytes(),
                    },
                );
                inner.run(&who, &m).await?;
                let h = crate::writes::Hidden {
                    dir: pnode.clone(),
                    name: hidden.into_bytes(),
                    uid,
                };
                if !inner.open.hide(victim.key(), h.clone()) {
                    // Its last descriptor closed meanwhile.
                    self.remove_hidden(&h).await?;
                }
                return Ok(());
            }
        }
        let m = inner.record(
            &pnode,
            &who,
            Change::RemoveFile {
                dir: pnode.fid,
                name: name.to_vec(),
            },
        );
        inner.run(&who, &m).await.map(|_| ())
    }

    pub async fn rmdir(&self, uid: u32, parent: u64, name: &[u8]) -> Result<()> {
        let inner = &self.inner;
        let (pnode, who) = inner.writable_dir(uid, parent).await?;
        inner.valid.require(&pnode, &who, PRSFS_DELETE)?;
        let m = inner.record(
            &pnode,
            &who,
            Change::RemoveDir {
                dir: pnode.fid,
                name: name.to_vec(),
            },
        );
        inner.run(&who, &m).await.map(|_| ())
    }

    /// Rename within a volume; across volumes the answer is EXDEV, as on
    /// any Unix file system, so `mv` falls back to copying.
    pub async fn rename(
        &self,
        uid: u32,
        parent: u64,
        name: &[u8],
        newparent: u64,
        newname: &[u8],
    ) -> Result<()> {
        let inner = &self.inner;
        let (from, who) = inner.writable_dir(uid, parent).await?;
        let (to, _) = inner.writable_dir(uid, newparent).await?;
        if from.fid.volume != to.fid.volume || from.cell != to.cell {
            return Err(Error::CrossVolume);
        }
        inner.valid.require(&from, &who, PRSFS_DELETE)?;
        inner.valid.require(&to, &who, PRSFS_INSERT)?;
        let change = Change::Rename {
            from_dir: from.fid,
            from_name: name.to_vec(),
            to_dir: to.fid,
            to_name: newname.to_vec(),
        };
        let moved = inner.dirs.cached_entry(&from, name);
        let mut m = inner.record(&from, &who, change);
        if from.fid != to.fid {
            m.base.push(inner.dir_base(&to, &[newname]));
        }
        inner.run(&who, &m).await?;
        if let Some(e) = moved {
            let key = from
                .with_fid(Fid::new(from.fid.volume, e.vnode, e.unique))
                .key();
            if let Some((ino, _)) = inner.nodes.matching(|k| *k == key).into_iter().next() {
                inner.nodes.named(ino, newparent, newname);
            }
        }
        Ok(())
    }

    /// chmod, chown, utimes and truncate.
    pub async fn setattr(&self, uid: u32, ino: u64, attrs: SetAttrs) -> Result<Attr> {
        let inner = &self.inner;
        let node = inner.writable_node(ino)?;
        let who = inner.valid.who(uid, &node);
        let st = inner.valid.valid_status(&node, &who).await?;
        // Checked before anything changes: a size needs `w` and the owner's
        // write bit (as afs_setattr), unless the caller holds the file open
        // for writing; chmod and utimes need `w` or ownership (`a`).
        if attrs.size.is_some() && !inner.open.is_writing(&node.key(), uid) {
            inner.valid.require(&node, &who, PRSFS_WRITE)?;
        }
        if attrs.has_status() {
            inner
                .valid
                .require_any(&node, &who, PRSFS_WRITE | PRSFS_ADMINISTER)?;
        }
        if let Some(size) = attrs.size {
            // Through the write state, as a write would: cut in the cache,
            // then stored (at once when no descriptor writes it).
            inner.open.truncate(&node, &who, size).await?;
        }
        if attrs.has_status() {
            let st = inner.valid.valid_status(&node, &who).await.unwrap_or(st);
            let change = Change::StoreStatus {
                fid: node.fid,
                attrs,
            };
            let m = inner.object_record(&node, &who, Some(&st), change);
            inner.run(&who, &m).await?;
        }
        // getattr shows a file's local length while it is being written.
        self.getattr(uid, ino).await
    }

    /// Stores a new ACL (StoreACL) given in the fileserver's text form.
    /// The rights learned on the volume are dropped: they are fetched again
    /// at next use.
    pub async fn set_acl(&self, uid: u32, ino: u64, text: &[u8]) -> Result<()> {
        let inner = &self.inner;
        let node = inner.writable_node(ino)?;
        let text = std::str::from_utf8(text)
            .map_err(|_| Error::Invalid("ACL text must be UTF-8".into()))?
            .trim_end_matches('\0');
        if crate::Acl::parse(text).is_none() {
            return Err(Error::Invalid(format!("malformed ACL text {text:?}")));
        }
        let who = inner.valid.who(uid, &node);
        inner.valid.valid_status(&node, &who).await?;
        inner.valid.require(&node, &who, PRSFS_ADMINISTER)?;
        let known = inner.valid.statuses.known(&node.key());
        let change = Change::StoreAcl {
            fid: node.fid,
            acl: text.to_string(),
        };
        let m = inner.object_record(&node, &who, known.as_ref(), change);
        inner.run(&who, &m).await?;
        tracing::info!(uid, fid = ?node.fid, cell = %node.cell, "ACL stored");
        Ok(())
    }
}

impl AfsClient {
    /// Removes a file unlinked while open, at its last close, as the user
    /// who unlinked it.
    pub(crate) async fn remove_hidden(&self, h: &crate::writes::Hidden) -> Result<()> {
        let inner = &self.inner;
        let who = inner.valid.who(h.uid, &h.dir);
        let m = inner.record(
            &h.dir,
            &who,
            Change::RemoveFile {
                dir: h.dir.fid,
                name: h.name.clone(),
            },
        );
        inner.run(&who, &m).await.map(|_| ())
    }
}

impl Inner {
    /// Runs a change through the executor (sent, or logged offline); the
    /// write states of objects whose offline changes cancelled out go.
    pub(crate) async fn run(
        &self,
        who: &Identity,
        m: &Mutation,
    ) -> Result<crate::executor::Outcome> {
        let out = self.exec.execute(who, m).await?;
        for k in &out.cancelled {
            self.open.forget(k);
        }
        // A name that went may be kept long by the kernel: drop it there
        // (the kernel drops its own on the calls it made; this is for
        // changes made inside the daemon, such as resolutions).
        let gone = match &m.change {
            Change::RemoveFile { dir, name } | Change::RemoveDir { dir, name } => {
                vec![(*dir, name)]
            }
            Change::Rename {
                from_dir,
                from_name,
                to_dir,
                to_name,
            } => vec![(*from_dir, from_name), (*to_dir, to_name)],
            _ => Vec::new(),
        };
        for (dir, name) in gone {
            let key = FidKey::new(&m.cell, dir.volume, dir.vnode, dir.unique);
            self.nodes.drop_long_entry(&key, name);
        }
        Ok(out)
    }

    /// The directory a change happens in: RW, and current.
    pub(crate) async fn writable_dir(&self, uid: u32, parent: u64) -> Result<(NodeRef, Identity)> {
        if parent == ROOT_INO {
            return Err(Error::ReadOnly);
        }
        let pnode = self.nodes.node(parent)?;
        if pnode.vol_type != VolType::Rw {
            return Err(Error::ReadOnly);
        }
        let who = self.valid.who(uid, &pnode);
        self.dirs.dir(&pnode, &who).await?;
        Ok((pnode, who))
    }

    /// A node that may change: not `/afs`, in a RW volume.
    fn writable_node(&self, ino: u64) -> Result<NodeRef> {
        if ino == ROOT_INO {
            return Err(Error::ReadOnly);
        }
        let node = self.nodes.node(ino)?;
        if node.vol_type != VolType::Rw {
            return Err(Error::ReadOnly);
        }
        Ok(node)
    }

    /// A record of a change to one object, decided against status `st`.
    pub(crate) fn object_record(
        &self,
        node: &NodeRef,
        who: &Identity,
        st: Option<&cache::StatusRecord>,
        change: Change,
    ) -> Mutation {
        Mutation {
            cell: node.cell.clone(),
            volume: node.fid.volume,
            uid: who.uid,
            vice_id: who.vice_id.or(who.anchor),
            base: st
                .map(|st| BaseState {
                    fid: node.fid,
                    data_version: st.data_version,
                    length: st.length,
                    bindings: Vec::new(),
                })
                .into_iter()
                .collect(),
            change,
        }
    }

    /// The base state of directory `dir` with the bindings of `names`.
    fn dir_base(&self, dir: &NodeRef, names: &[&[u8]]) -> BaseState {
        let st = self.valid.statuses.known(&dir.key());
        BaseState {
            fid: dir.fid,
            data_version: st.as_ref().map_or(0, |s| s.data_version),
            length: st.as_ref().map_or(0, |s| s.length),
            bindings: names
                .iter()
                .map(|n| {
                    let bound = self
                        .dirs
                        .cached_entry(dir, n)
                        .map(|e| Fid::new(dir.fid.volume, e.vnode, e.unique));
                    (n.to_vec(), bound)
                })
                .collect(),
        }
    }

    /// A record of a change in directory `dir`, as `who`, with the
    /// directory's base state and the bindings of the names it touches.
    pub(crate) fn record(&self, dir: &NodeRef, who: &Identity, change: Change) -> Mutation {
        let names: Vec<&[u8]> = match &change {
            Change::CreateFile { name, .. }
            | Change::MakeDir { name, .. }
            | Change::Symlink { name, .. }
            | Change::Link { name, .. }
            | Change::RemoveFile { name, .. }
            | Change::RemoveDir { name, .. } => vec![name],
            Change::Rename {
                from_name,
                to_name,
                from_dir,
                to_dir,
            } if from_dir == to_dir => vec![from_name, to_name],
            Change::Rename { from_name, .. } => vec![from_name],
            _ => vec![],
        };
        let base = vec![self.dir_base(dir, &names)];
        Mutation {
            cell: dir.cell.clone(),
            volume: dir.fid.volume,
            uid: who.uid,
            vice_id: who.vice_id.or(who.anchor),
            base,
            change,
        }
    }
}
