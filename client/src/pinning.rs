//! Pinning a working set: `afsd-rs pin`, `unpin`, `pins`, `pin --check`,
//! and the background refresher that keeps pinned objects current.
//!
//! A pin walks first, as the user who pins (their rights decide what is
//! walked and read): directory listings, then statuses in InlineBulkStatus
//! calls of 50 fids, summing the lengths. Past the pin reserve it refuses
//! with ENOSPC and the numbers, and pins nothing. Otherwise the members are
//! pinned in the store (never evicted from then on), recorded durably, and
//! their data fetched, with progress reported to the caller.
//!
//! A callback break on a pinned object queues it (`validate.rs`); so does a
//! volume coming back. The refresher fetches the new version as the pin's
//! owner; the older data stays (the validator does not drop it for pinned
//! fids) until the newer is complete, then goes in one batch. A directory
//! of a `--future` pin is walked again, and what appeared is pinned too.

use std::collections::HashSet;
use std::sync::{Arc, Weak};
use std::time::Duration;

use afs_proto::types::{Fid, FileType};
use cache::{Batch, FidKey, Op};
use serde::{Deserialize, Serialize};

use crate::attr::is_mount_point;
use crate::client::Inner;
use crate::connectivity::is_network;
use crate::events::EventKind;
use crate::identity::Identity;
use crate::inode::NodeRef;
use crate::pins::{Member, MemberKind, PinRecord};
use crate::status::now_secs;
use crate::validate::{PRSFS_LOOKUP, PRSFS_READ};
use crate::{AfsClient, Error, Result};

/// Files fetched at once by a pin (each also reads ahead).
const PARALLEL_FILES: usize = 4;
/// How often the refresher retries what it could not fetch.
const RETRY_EVERY: Duration = Duration::from_secs(20);

/// How far a pin's fetch has come.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinProgress {
    pub files_done: u64,
    pub files: u64,
    pub bytes_done: u64,
    pub bytes: u64,
}

/// What `afsd-rs pins` shows of one pin.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinInfo {
    pub id: u64,
    pub uid: u32,
    pub path: String,
    pub recursive: bool,
    pub future: bool,
    pub added: u64,
    /// Files, symlinks and mount points held.
    pub files: u64,
    pub dirs: u64,
    /// Their bytes, as the server last said.
    pub bytes: u64,
    /// Of those, the bytes in the cache now.
    pub cached: u64,
    /// The bytes not in the cache (offline reads of them would miss).
    pub missing: u64,
    /// Objects that could not be walked or read (no rights): not held.
    pub refused: Vec<String>,
}

/// What `afsd-rs pin` asks for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinRequest {
    pub cell: String,
    /// The fid of the path (the caller looked it up: its inode is known).
    pub fid: (u32, u32, u32),
    /// The path as the user named it, absolute.
    pub path: String,
    /// `-r`: the whole tree.
    pub recursive: bool,
    /// `--future`: what appears in the tree later too.
    pub future: bool,
}

/// One object under a path that offline use would miss.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinCheck {
    pub path: String,
    pub why: String,
}

/// An object a walk found.
struct Found {
    key: FidKey,
    node: NodeRef,
    member: Member,
    path: String,
}

#[derive(Default)]
struct Walk {
    found: Vec<Found>,
    refused: Vec<String>,
}

impl Walk {
    fn data_bytes(&self, skip: &impl Fn(&FidKey) -> bool) -> (u64, u64) {
        self.found
            .iter()
            .filter(|f| f.member.kind.has_data() && !skip(&f.key))
            .fold((0, 0), |(n, b), f| (n + 1, b + f.member.length))
    }
}

fn member_kind(st: &cache::StatusRecord) -> MemberKind {
    if is_mount_point(st) {
        MemberKind::MountPoint
    } else {
        match FileType::from_u32(st.file_type) {
            FileType::Directory => MemberKind::Dir,
            FileType::Symlink => MemberKind::Symlink,
            _ => MemberKind::File,
        }
    }
}

fn child_path(dir: &str, name: &[u8]) -> String {
    format!(
        "{}/{}",
        dir.trim_end_matches('/'),
        String::from_utf8_lossy(name)
    )
}

impl Inner {
    /// The pin reserve in bytes (0: unlimited).
    fn pin_reserve(&self) -> u64 {
        self.config
            .pin_reserve
            .unwrap_or(self.config.cache_bytes / 2)
    }

    /// Walks `root` as `who`: the root itself, and under a directory its
    /// entries, all the way down when `recursive`. Mount points are held
    /// (their text) but not crossed: another volume is another pin.
    async fn walk(
        &self,
        root: &NodeRef,
        who: &Identity,
        path: &str,
        recursive: bool,
    ) -> Result<Walk> {
        let mut w = Walk::default();
        let st = self.valid.valid_status(root, who).await?;
        let read_only = root.vol_type != crate::VolType::Rw;
        let kind = member_kind(&st);
        w.found.push(Found {
            key: root.key(),
            node: root.clone(),
            member: Member {
                kind,
                length: if kind.has_data() { st.length } else { 0 },
                read_only,
            },
            path: path.to_string(),
        });
        if kind != MemberKind::Dir {
            return Ok(w);
        }
        let mut queue = vec![(root.clone(), path.to_string())];
        let mut seen: HashSet<FidKey> = HashSet::from([root.key()]);
        while let Some((dir_node, dir_path)) = queue.pop() {
            if self.valid.require(&dir_node, who, PRSFS_LOOKUP).is_err() {
                w.refused.push(dir_path);
                continue;
            }
            let dir = match self.dirs.dir(&dir_node, who).await {
                Ok(d) => d,
                Err(e) if is_network(&e) => return Err(e),
                Err(e) => {
                    tracing::debug!(path = %dir_path, "pin walk: {e}");
                    w.refused.push(dir_path);
                    continue;
                }
            };
            // Statuses 50 at a time, before they are asked one by one.
            for from in (0..dir.entries.len()).step_by(afs_proto::fs::AFSCBMAX) {
                self.valid
                    .bulk_prefetch(&dir_node, &dir.entries, from, who)
                    .await;
            }
            for e in &dir.entries {
                if e.name == b"." || e.name == b".." {
                    continue;
                }
                let child = dir_node.with_fid(Fid::new(dir_node.fid.volume, e.vnode, e.unique));
                if !seen.insert(child.key()) {
                    continue;
                }
                let cpath = child_path(&dir_path, &e.name);
                let st = match self.valid.valid_status(&child, who).await {
                    Ok(st) => st,
                    Err(e) if is_network(&e) => return Err(e),
                    Err(e) => {
                        tracing::debug!(path = %cpath, "pin walk: {e}");
                        w.refused.push(cpath);
                        continue;
                    }
                };
                let kind = member_kind(&st);
                if kind == MemberKind::Dir && recursive {
                    queue.push((child.clone(), cpath.clone()));
                }
                w.found.push(Found {
                    key: child.key(),
                    node: child,
                    member: Member {
                        kind,
                        length: if kind.has_data() { st.length } else { 0 },
                        read_only,
                    },
                    path: cpath,
                });
            }
        }
        Ok(w)
    }

    /// Fetches every chunk of the object's current version as `who`.
    /// Returns the bytes now cached of it.
    async fn fetch_all(&self, node: &NodeRef, who: &Identity) -> Result<u64> {
        self.valid.require(node, who, PRSFS_READ)?;
        let st = self.valid.valid_status(node, who).await?;
        if self.store.cached_bytes(&node.key(), st.data_version) >= st.length {
            // Already whole (a refresh after a reconnection that found
            // nothing changed): nothing to read.
            return Ok(st.length);
        }
        let cs = self.data.chunk_size();
        let mut off = 0;
        while off < st.length {
            self.data.read(node, off, cs, who).await?;
            off += cs;
        }
        Ok(st.length)
    }

    /// Fetches the data of the found objects, a few files at a time,
    /// reporting each file done. Returns paths that could not be read.
    async fn fetch_found(
        self: &Arc<Self>,
        found: Vec<(NodeRef, String, u64)>,
        who_of: impl Fn(&NodeRef) -> Identity,
        progress: &(dyn Fn(PinProgress) + Send + Sync),
        mut p: PinProgress,
    ) -> Result<Vec<String>> {
        let mut refused = Vec::new();
        let mut tasks = tokio::task::JoinSet::new();
        let mut todo = found.into_iter();
        loop {
            while tasks.len() < PARALLEL_FILES {
                let Some((node, path, len)) = todo.next() else {
                    break;
                };
                let me = self.clone();
                let who = who_of(&node);
                tasks.spawn(async move {
                    let r = me.fetch_all(&node, &who).await;
                    (path, len, r)
                });
            }
            let Some(done) = tasks.join_next().await else {
                break;
            };
            let Ok((path, len, r)) = done else { continue };
            match r {
                Ok(_) => {}
                Err(e) if is_network(&e) => return Err(e),
                Err(e) => {
                    tracing::debug!(%path, "pin fetch: {e}");
                    refused.push(path);
                }
            }
            p.files_done += 1;
            p.bytes_done += len;
            progress(p);
        }
        Ok(refused)
    }

    /// Fetches a queued pinned object again (its callback broke, or its
    /// volume came back).
    async fn refresh(self: &Arc<Self>, key: &FidKey) -> Result<()> {
        let holders = self.valid.pins.holders(key);
        let Some((pin, member)) = holders.first().cloned() else {
            return Ok(());
        };
        let node = member.node(key);
        if self.valid.conn.blocks(&node.cell, node.fid.volume) {
            return Err(Error::Offline(format!("volume {}", node.fid.volume)));
        }
        let who = self.valid.who(pin.uid, &node);
        let st = self.valid.valid_status(&node, &who).await?;
        if member.kind.has_data() {
            let grow = st.length.saturating_sub(member.length);
            let reserve = self.pin_reserve();
            if grow > 0 && reserve > 0 && self.valid.pins.reserved() + grow > reserve {
                let available = reserve.saturating_sub(self.valid.pins.reserved());
                self.valid.conn.events.emit(
                    Some(pin.uid),
                    EventKind::PinOverReserve {
                        path: pin.path.clone(),
                        needed: grow,
                        available,
                    },
                );
                tracing::warn!(
                    pin = pin.id,
                    ?key,
                    "a pinned file grew past the pin reserve; its older version is kept"
                );
                return Ok(());
            }
            self.fetch_all(&node, &who).await?;
            // The newer version is complete: the older goes.
            let mut b = Batch::new();
            b.push(Op::DeleteCleanChunks {
                fid: key.clone(),
                keep: Some(st.data_version),
            });
            self.store.apply(b)?;
            for (p, _) in &holders {
                self.valid.pins.set_length(p.id, key, st.length)?;
            }
            tracing::debug!(?key, dv = st.data_version, "pinned file fetched again");
            return Ok(());
        }
        // A directory: its listing is fetched again; a `--future` pin
        // takes what appeared.
        self.dirs.dir(&node, &who).await?;
        for (p, _) in holders.iter().filter(|(p, _)| p.future) {
            let who = self.valid.who(p.uid, &node);
            let dir_path = self.nodes.path_of(key).unwrap_or_else(|| p.path.clone());
            let w = self.walk(&node, &who, &dir_path, p.recursive).await?;
            let have: HashSet<FidKey> = self
                .valid
                .pins
                .members(p.id)
                .into_iter()
                .map(|(k, _)| k)
                .collect();
            let new: Vec<Found> = w
                .found
                .into_iter()
                .filter(|f| !have.contains(&f.key))
                .collect();
            if new.is_empty() {
                continue;
            }
            let bytes: u64 = new.iter().map(|f| f.member.length).sum();
            let reserve = self.pin_reserve();
            let reserved = self.valid.pins.reserved();
            if reserve > 0 && reserved + bytes > reserve {
                self.valid.conn.events.emit(
                    Some(p.uid),
                    EventKind::PinOverReserve {
                        path: p.path.clone(),
                        needed: bytes,
                        available: reserve.saturating_sub(reserved),
                    },
                );
                continue;
            }
            let members: Vec<(FidKey, Member)> = new
                .iter()
                .map(|f| (f.key.clone(), f.member.clone()))
                .collect();
            self.valid.pins.add(p, &members)?;
            tracing::info!(pin = p.id, new = new.len(), "new objects in a --future pin");
            let data: Vec<(NodeRef, String, u64)> = new
                .into_iter()
                .filter(|f| f.member.kind.has_data())
                .map(|f| (f.node, f.path, f.member.length))
                .collect();
            let uid = p.uid;
            let me = self.clone();
            self.fetch_found(
                data,
                move |n| me.valid.who(uid, n),
                &|_| {},
                PinProgress::default(),
            )
            .await?;
        }
        Ok(())
    }
}

impl AfsClient {
    /// Pins what `req` names for `uid`. `progress` hears of each file
    /// fetched. Refuses with [`Error::NoSpace`] when the pin would pass the
    /// reserve, pinning nothing.
    pub async fn pin(
        &self,
        uid: u32,
        req: &PinRequest,
        progress: &(dyn Fn(PinProgress) + Send + Sync),
    ) -> Result<PinInfo> {
        let inner = &self.inner;
        let (cell, path, recursive, future) =
            (&req.cell, req.path.as_str(), req.recursive, req.future);
        let fid = Fid::new(req.fid.0, req.fid.1, req.fid.2);
        let node = self.known_node(cell, fid)?;
        let who = inner.valid.who(uid, &node);
        let w = inner.walk(&node, &who, path, recursive).await?;
        let pins = &inner.valid.pins;
        let already = |k: &FidKey| pins.contains(k);
        let (files, bytes) = w.data_bytes(&already);
        let reserve = inner.pin_reserve();
        let reserved = pins.reserved();
        if reserve > 0 && reserved + bytes > reserve {
            let available = reserve.saturating_sub(reserved);
            inner.valid.conn.events.emit(
                Some(uid),
                EventKind::PinOverReserve {
                    path: path.to_string(),
                    needed: bytes,
                    available,
                },
            );
            return Err(Error::NoSpace(format!(
                "pinning {path} needs {} in {files} files, but only {} of the pin reserve of {} is left ({} pinned already); nothing was pinned",
                human(bytes),
                human(available),
                human(reserve),
                human(reserved),
            )));
        }
        let pin = PinRecord {
            id: pins.next_id(),
            uid,
            cell: node.cell.clone(),
            root: (fid.volume, fid.vnode, fid.unique),
            read_only: node.vol_type != crate::VolType::Rw,
            path: path.to_string(),
            recursive,
            future,
            added: now_secs(),
        };
        let members: Vec<(FidKey, Member)> = w
            .found
            .iter()
            .map(|f| (f.key.clone(), f.member.clone()))
            .collect();
        pins.add(&pin, &members)?;
        let data: Vec<(NodeRef, String, u64)> = w
            .found
            .into_iter()
            .filter(|f| f.member.kind.has_data())
            .map(|f| (f.node, f.path, f.member.length))
            .collect();
        let total = PinProgress {
            files: data.len() as u64,
            bytes: data.iter().map(|d| d.2).sum(),
            ..PinProgress::default()
        };
        progress(total);
        let me = inner.clone();
        let mut refused = w.refused;
        refused.extend(
            inner
                .fetch_found(data, move |n| me.valid.who(uid, n), progress, total)
                .await?,
        );
        let mut info = self.pin_info(&pin);
        info.refused = refused;
        inner.valid.conn.events.emit(
            Some(uid),
            EventKind::PinDone {
                id: pin.id,
                path: path.to_string(),
                files: info.files,
                bytes: info.bytes,
            },
        );
        Ok(info)
    }

    /// The node of a fid the kernel knows (the caller looked its path up).
    fn known_node(&self, cell: &str, fid: Fid) -> Result<NodeRef> {
        let key = FidKey::new(
            &cell.to_ascii_lowercase(),
            fid.volume,
            fid.vnode,
            fid.unique,
        );
        self.inner
            .nodes
            .matching(|k| *k == key)
            .into_iter()
            .next()
            .map(|(_, n)| n)
            .ok_or(Error::NotFound)
    }

    fn pin_info(&self, pin: &PinRecord) -> PinInfo {
        let inner = &self.inner;
        let mut info = PinInfo {
            id: pin.id,
            uid: pin.uid,
            path: pin.path.clone(),
            recursive: pin.recursive,
            future: pin.future,
            added: pin.added,
            files: 0,
            dirs: 0,
            bytes: 0,
            cached: 0,
            missing: 0,
            refused: Vec::new(),
        };
        for (key, m) in inner.valid.pins.members(pin.id) {
            if !m.kind.has_data() {
                info.dirs += 1;
                continue;
            }
            info.files += 1;
            let st = inner
                .valid
                .statuses
                .known(&key)
                .or_else(|| inner.store.get_status(&key).ok().flatten());
            match st {
                Some(st) => {
                    info.bytes += st.length;
                    info.cached += inner
                        .store
                        .cached_bytes(&key, st.data_version)
                        .min(st.length);
                }
                None => info.bytes += m.length,
            }
        }
        info.missing = info.bytes.saturating_sub(info.cached);
        info
    }

    /// The pins `uid` made (root: everyone's).
    pub fn pins(&self, uid: u32) -> Vec<PinInfo> {
        self.inner
            .valid
            .pins
            .all()
            .iter()
            .filter(|p| uid == 0 || p.uid == uid)
            .map(|p| self.pin_info(p))
            .collect()
    }

    /// Removes `uid`'s pins of `path` (the object `fid` of `cell`), and with
    /// `recursive` those of paths under it. Root removes anyone's.
    pub fn unpin(
        &self,
        uid: u32,
        cell: &str,
        fid: Option<Fid>,
        path: &str,
        recursive: bool,
    ) -> Result<Vec<PinInfo>> {
        let pins = &self.inner.valid.pins;
        let cell = cell.to_ascii_lowercase();
        let under = format!("{}/", path.trim_end_matches('/'));
        let mut gone = Vec::new();
        for p in pins.all() {
            if uid != 0 && p.uid != uid {
                continue;
            }
            let same = fid
                .is_some_and(|f| p.cell == cell && p.root == (f.volume, f.vnode, f.unique))
                || p.path == path;
            if same || (recursive && p.path.starts_with(&under)) {
                let info = self.pin_info(&p);
                pins.remove(p.id)?;
                gone.push(info);
            }
        }
        if gone.is_empty() {
            return Err(Error::NotFound);
        }
        Ok(gone)
    }

    /// What offline use of `path` (the object `fid` of `cell`) would miss,
    /// judged from the cache alone as `uid`: objects whose status, listing
    /// or data is not cached, and directories whose rights for this user
    /// are not known.
    pub fn pin_check(&self, uid: u32, cell: &str, fid: Fid, path: &str) -> Result<Vec<PinCheck>> {
        let inner = &self.inner;
        let root = self.known_node(cell, fid)?;
        let mut out = Vec::new();
        let mut queue = vec![(root, path.to_string())];
        let mut seen = HashSet::new();
        while let Some((node, p)) = queue.pop() {
            if !seen.insert(node.key()) {
                continue;
            }
            let key = node.key();
            let Some(st) = inner.store.get_status(&key)? else {
                out.push(PinCheck {
                    path: p,
                    why: "its status is not cached".into(),
                });
                continue;
            };
            let who = inner.valid.who(uid, &node);
            match member_kind(&st) {
                MemberKind::Dir => {
                    let rights = inner.valid.rights_of(&node, &who).unwrap_or(0);
                    if rights & PRSFS_LOOKUP == 0 {
                        out.push(PinCheck {
                            path: p,
                            why: "your rights on it are not known".into(),
                        });
                        continue;
                    }
                    match inner.store.get_dir(&key)? {
                        Some(d) if d.data_version == st.data_version => {
                            for e in &d.entries {
                                if e.name == b"." || e.name == b".." {
                                    continue;
                                }
                                let child =
                                    node.with_fid(Fid::new(node.fid.volume, e.vnode, e.unique));
                                queue.push((child, child_path(&p, &e.name)));
                            }
                        }
                        _ => out.push(PinCheck {
                            path: p,
                            why: "its listing is not cached".into(),
                        }),
                    }
                }
                _ => {
                    let have = inner.store.cached_bytes(&key, st.data_version);
                    if have < st.length {
                        out.push(PinCheck {
                            path: p,
                            why: format!("{} of {} bytes cached", have, st.length),
                        });
                    }
                }
            }
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }
}

/// Bytes for people: 1.5 MiB.
pub fn human(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// The refresher: fetches queued pinned objects again, as their pins'
/// owners; what cannot be fetched now (its volume away) waits for the next
/// wake or [`RETRY_EVERY`].
pub(crate) async fn refresh_loop(weak: Weak<Inner>) {
    loop {
        // Only the signal is held while waiting: a client dropped meanwhile
        // closes its store.
        let Some(wake) = weak.upgrade().map(|i| i.valid.pins.wake.clone()) else {
            return;
        };
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(RETRY_EVERY) => {}
        }
        // Breaks come in bursts (a volume, a directory and its entries).
        tokio::time::sleep(Duration::from_millis(300)).await;
        let Some(inner) = weak.upgrade() else {
            return;
        };
        let mut later = Vec::new();
        for key in inner.valid.pins.take_queue() {
            match inner.refresh(&key).await {
                Ok(()) => {}
                Err(e) if is_network(&e) => later.push(key),
                Err(e) => tracing::debug!(?key, "refreshing a pinned object: {e}"),
            }
        }
        inner.valid.pins.requeue(later);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(3 << 20), "3.0 MiB");
        assert_eq!(human(1536), "1.5 KiB");
    }
}
