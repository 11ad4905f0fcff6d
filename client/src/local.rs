//! Changes made to the cache alone and logged, for a volume that cannot
//! take them now (disconnected, or still replaying older changes).
//!
//! Each change is the same [`Mutation`] record the executor sends online.
//! Here its effect is made on the cache instead: the listings edited with
//! the record's own [`Change::edit_dir`], statuses changed, objects made
//! under local fids ([`crate::journal::LOCAL_FILE_VNODE`]), and the record
//! appended to the change log, all in one batch synced to disk. The first
//! offline change to an object captures its base (status, listing, held
//! data) in the same batch.
//!
//! Compaction happens here, in the batch that would add the last record:
//! - a store of a file replaces the writer's earlier unsent store of it
//!   (the new record describes all the file's unstored chunks);
//! - a chmod/chown/utimes merges into the object's previous one when no
//!   store came between (a store clears setuid on the server);
//! - removing a file made offline (its last name) cancels every record
//!   of it, its create included, and logs nothing; removing a directory
//!   made offline, once its contents went so, does the same.
//!
//! A record the server may already have (sent, no answer) is never
//! cancelled: it is settled by looking at the server at replay.

use std::collections::HashMap;

use afs_proto::types::{Fid, FileType};
use cache::{DirEntryRecord, DirRecord, FidKey, Op, StatusRecord};

use crate::executor::{Executor, Outcome};
use crate::identity::Identity;
use crate::inode::NodeRef;
use crate::journal::{is_local, BaseRecord, LogRecord, RecState};
use crate::mutation::{Change, Mutation};
use crate::status::now_secs;
use crate::{Error, Result, Stats, VolType};

/// AFS's id of anonymous (system:anyuser's member), as owner of what an
/// unauthenticated user makes.
const ANONYMOUS_ID: u32 = 32766;

/// The cache edits of one offline change, gathered before they are
/// written in one batch.
struct Edit<'a> {
    ex: &'a Executor,
    cell: String,
    ops: Vec<Op>,
    statuses: HashMap<FidKey, StatusRecord>,
    dirs: HashMap<FidKey, DirRecord>,
}

impl<'a> Edit<'a> {
    fn new(ex: &'a Executor, cell: &str) -> Self {
        Edit {
            ex,
            cell: cell.to_string(),
            ops: Vec::new(),
            statuses: HashMap::new(),
            dirs: HashMap::new(),
        }
    }

    fn node(&self, fid: Fid) -> NodeRef {
        NodeRef {
            cell: self.cell.clone(),
            fid,
            vol_type: VolType::Rw,
        }
    }

    fn key(&self, fid: Fid) -> FidKey {
        FidKey::new(&self.cell, fid.volume, fid.vnode, fid.unique)
    }

    /// The status as this edit sees it.
    fn status(&self, fid: Fid) -> Result<StatusRecord> {
        let key = self.key(fid);
        if let Some(st) = self.statuses.get(&key) {
            return Ok(st.clone());
        }
        match self.ex.valid.statuses.known(&key) {
            Some(st) => Ok(st),
            None => self
                .ex
                .store
                .get_status(&key)?
                .ok_or_else(|| Error::Offline("the object is not in the cache".into())),
        }
    }

    /// The listing as this edit sees it.
    fn listing(&self, fid: Fid) -> Result<DirRecord> {
        let key = self.key(fid);
        if let Some(d) = self.dirs.get(&key) {
            return Ok(d.clone());
        }
        self.ex
            .dirs
            .held(&self.node(fid))?
            .ok_or_else(|| Error::Offline("the directory is not in the cache".into()))
    }

    /// A directory with entries besides `.` and `..`.
    fn has_entries(&self, dir: Fid) -> Result<bool> {
        Ok(self
            .listing(dir)?
            .entries
            .iter()
            .any(|x| x.name != b"." && x.name != b".."))
    }

    fn entry(&self, dir: Fid, name: &[u8]) -> Result<Option<Fid>> {
        Ok(self
            .listing(dir)?
            .entries
            .iter()
            .find(|e| e.name == name)
            .map(|e| Fid::new(dir.volume, e.vnode, e.unique)))
    }

    /// Captures the base of `fid` before its first change.
    fn base(&mut self, fid: Fid) -> Result<()> {
        let key = self.key(fid);
        if is_local(fid) || self.ex.journal.has_base(&key) || self.statuses.contains_key(&key) {
            return Ok(());
        }
        let status = self.status(fid)?;
        let dir = if status.file_type == FileType::Directory.as_u32() {
            self.ex.dirs.held(&self.node(fid))?
        } else {
            None
        };
        self.ex
            .journal
            .base_ops(&key, BaseRecord { status, dir }, &mut self.ops);
        Ok(())
    }

    fn set_status(&mut self, fid: Fid, mut st: StatusRecord) -> Result<()> {
        self.base(fid)?;
        // A local state is no server's promise: once its changes are
        // replayed it is fetched again.
        st.callback_expires = 0;
        let key = self.key(fid);
        self.ops.push(Op::PutStatus(key.clone(), st.clone()));
        self.statuses.insert(key, st);
        Ok(())
    }

    fn set_listing(&mut self, fid: Fid, rec: DirRecord) -> Result<()> {
        self.base(fid)?;
        if !self.statuses.contains_key(&self.key(fid)) {
            // Captured with the listing: keep the status in this edit too.
            let st = self.status(fid)?;
            self.statuses.insert(self.key(fid), st);
        }
        let key = self.key(fid);
        self.ops.push(Op::PutDir(key.clone(), rec.clone()));
        self.dirs.insert(key, rec);
        Ok(())
    }

    /// Edits a listing with the record's own local edit.
    fn edit_dir(
        &mut self,
        change: &Change,
        dir: Fid,
        created: Option<Fid>,
        moved: Option<&DirEntryRecord>,
    ) -> Result<()> {
        let mut rec = self.listing(dir)?;
        if !change.edit_dir(dir, &mut rec.entries, created, moved) {
            return Err(Error::Offline(
                "the directory cannot be edited offline".into(),
            ));
        }
        self.set_listing(dir, rec)
    }

    fn link_count(&mut self, fid: Fid, delta: i32) -> Result<StatusRecord> {
        let mut st = self.status(fid)?;
        st.link_count = (st.link_count as i64 + delta as i64).max(0) as u32;
        self.set_status(fid, st.clone())?;
        Ok(st)
    }

    /// After the batch is written: the in-memory views follow.
    fn publish(self) {
        let epoch = self.ex.valid.statuses.epoch();
        for (k, st) in self.statuses {
            self.ex.valid.statuses.set(k, st, epoch);
        }
        for (k, d) in self.dirs {
            self.ex.dirs.set_held(k, d);
        }
    }
}

/// The status of an object made offline.
fn new_status(
    file_type: FileType,
    mode: u32,
    owner: u32,
    parent: Fid,
    length: u64,
) -> StatusRecord {
    let now = now_secs();
    StatusRecord {
        file_type: file_type.as_u32(),
        length,
        data_version: 0,
        mode: mode & 0o7777,
        owner,
        group: 0,
        link_count: if file_type == FileType::Directory {
            2
        } else {
            1
        },
        author: owner,
        client_modtime: now as u32,
        server_modtime: now as u32,
        parent_vnode: parent.vnode,
        parent_unique: parent.unique,
        anonymous_access: 0,
        callback_expires: 0,
        fetched_at: now,
    }
}

impl Executor {
    /// True when a change to the record's volume must be logged rather
    /// than sent: the volume is not connected, or older changes to it are
    /// still in the log (changes reach the server in the order made).
    pub(crate) fn must_log(&self, cell: &str, volume: u32) -> bool {
        self.valid.conn.mode(cell, volume) != crate::Mode::Connected
            || self.journal.has_log(cell, volume)
    }

    /// Makes change `m` on the cache alone and logs it (in `state`), with
    /// `extra` ops in the same batch; synced to disk when `sync` (what a
    /// user is told succeeded). See the module comment.
    pub(crate) fn log_change(
        &self,
        who: &Identity,
        m: &Mutation,
        state: RecState,
        extra: Vec<Op>,
        sync: bool,
    ) -> Result<Outcome> {
        // One change at a time decides on the log's contents.
        let _g = self.log_lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut e = Edit::new(self, &m.cell);
        let mut rec = self.journal.new_record(m.clone(), state);
        let mut cancel: Vec<LogRecord> = Vec::new();
        let mut log_it = true;
        let mut out = Outcome::none();
        let owner = who
            .vice_id
            .or(who.anchor)
            .map_or(ANONYMOUS_ID, |v| v as u32);
        match &m.change {
            Change::CreateFile { dir, name, mode } | Change::MakeDir { dir, name, mode } => {
                if e.entry(*dir, name)?.is_some() {
                    return Err(Error::Exists);
                }
                let is_dir = matches!(m.change, Change::MakeDir { .. });
                let fid = self.journal.new_fid(dir.volume, is_dir, &mut e.ops);
                let ft = if is_dir {
                    FileType::Directory
                } else {
                    FileType::File
                };
                let st = new_status(ft, *mode, owner, *dir, if is_dir { 2048 } else { 0 });
                e.set_status(fid, st.clone())?;
                if is_dir {
                    e.set_listing(fid, crate::dirs::empty_listing(fid, *dir, 0))?;
                    e.link_count(*dir, 1)?;
                }
                e.edit_dir(&m.change, *dir, Some(fid), None)?;
                self.valid
                    .inherit_rights(&e.node(*dir), &e.node(fid), who, &mut e.ops);
                rec.created = Some(fid);
                out.created = Some((e.node(fid), st));
            }
            Change::Symlink { dir, name, target } => {
                if e.entry(*dir, name)?.is_some() {
                    return Err(Error::Exists);
                }
                let fid = self.journal.new_fid(dir.volume, false, &mut e.ops);
                let st = new_status(FileType::Symlink, 0o755, owner, *dir, target.len() as u64);
                e.set_status(fid, st.clone())?;
                e.ops.push(Op::PutDirtyChunk {
                    fid: e.key(fid),
                    data_version: 0,
                    index: 0,
                    data: target.clone(),
                });
                e.edit_dir(&m.change, *dir, Some(fid), None)?;
                self.valid
                    .inherit_rights(&e.node(*dir), &e.node(fid), who, &mut e.ops);
                rec.created = Some(fid);
                out.created = Some((e.node(fid), st));
            }
            Change::Link {
                dir,
                name,
                existing,
            } => {
                if e.entry(*dir, name)?.is_some() {
                    return Err(Error::Exists);
                }
                e.edit_dir(&m.change, *dir, None, None)?;
                e.link_count(*existing, 1)?;
            }
            Change::RemoveFile { dir, name } | Change::RemoveDir { dir, name } => {
                let victim = e.entry(*dir, name)?.ok_or(Error::NotFound)?;
                let vst = e.status(victim)?;
                let is_dir = vst.file_type == FileType::Directory.as_u32();
                let rmdir = matches!(m.change, Change::RemoveDir { .. });
                if rmdir && !is_dir {
                    return Err(Error::NotDir);
                }
                if !rmdir && is_dir {
                    return Err(Error::IsDir);
                }
                if is_dir && e.has_entries(victim)? {
                    return Err(Error::NotEmpty);
                }
                rec.victim = Some((victim, self.base_dv(&e.key(victim), &vst)));
                e.edit_dir(&m.change, *dir, None, None)?;
                if is_dir {
                    e.link_count(*dir, -1)?;
                }
                let left = if is_dir {
                    0
                } else {
                    vst.link_count.saturating_sub(1)
                };
                if left == 0 && is_local(victim) {
                    if let Some(all) = self.cancellable(&m.cell, victim) {
                        // Made offline, gone offline: nothing to send.
                        cancel = all;
                        log_it = false;
                        e.ops.push(Op::DeleteChunks(e.key(victim)));
                        e.ops.push(Op::DeleteStatus(e.key(victim)));
                        e.ops.push(Op::DeleteDir(e.key(victim)));
                        out.cancelled.push(e.key(victim));
                    }
                }
                if log_it || left > 0 {
                    e.link_count(victim, -1)?;
                }
            }
            Change::Rename {
                from_dir,
                from_name,
                to_dir,
                to_name,
            } => {
                let moved_fid = e.entry(*from_dir, from_name)?.ok_or(Error::NotFound)?;
                let moved = DirEntryRecord {
                    name: from_name.clone(),
                    vnode: moved_fid.vnode,
                    unique: moved_fid.unique,
                };
                let mst = e.status(moved_fid)?;
                let moved_is_dir = mst.file_type == FileType::Directory.as_u32();
                if moved_is_dir && to_dir != from_dir {
                    // Not into its own subtree; checked first, as the kernel
                    // and the fileserver do (EINVAL before ENOTDIR).
                    let mut cur = *to_dir;
                    for _ in 0..256 {
                        if cur == moved_fid {
                            return Err(Error::Invalid(
                                "a directory cannot move into itself".into(),
                            ));
                        }
                        match e.entry(cur, b"..") {
                            Ok(Some(up)) if up != cur => cur = up,
                            _ => break,
                        }
                    }
                }
                if let Some(over) = e.entry(*to_dir, to_name)? {
                    if over == moved_fid {
                        return Ok(out); // a rename onto itself changes nothing
                    }
                    let ost = e.status(over)?;
                    let over_dir = ost.file_type == FileType::Directory.as_u32();
                    if over_dir && !moved_is_dir {
                        return Err(Error::IsDir);
                    }
                    if !over_dir && moved_is_dir {
                        return Err(Error::NotDir);
                    }
                    if over_dir && e.has_entries(over)? {
                        return Err(Error::NotEmpty);
                    }
                    rec.victim = Some((over, self.base_dv(&e.key(over), &ost)));
                    e.link_count(over, -1)?;
                }
                rec.moved = Some(moved_fid);
                e.edit_dir(&m.change, *from_dir, None, Some(&moved))?;
                if to_dir != from_dir {
                    e.edit_dir(&m.change, *to_dir, None, Some(&moved))?;
                    if moved_is_dir {
                        // Its ".." now names the new parent.
                        let mut l = e.listing(moved_fid)?;
                        for x in &mut l.entries {
                            if x.name == b".." {
                                x.vnode = to_dir.vnode;
                                x.unique = to_dir.unique;
                            }
                        }
                        e.set_listing(moved_fid, l)?;
                        e.link_count(*from_dir, -1)?;
                        e.link_count(*to_dir, 1)?;
                    }
                    let mut st = e.status(moved_fid)?;
                    st.parent_vnode = to_dir.vnode;
                    st.parent_unique = to_dir.unique;
                    e.set_status(moved_fid, st)?;
                }
            }
            Change::StoreStatus { fid, attrs } => {
                let mut st = e.status(*fid)?;
                if let Some(mode) = attrs.mode {
                    st.mode = mode & 0o7777;
                }
                if let Some(t) = attrs.mtime {
                    st.client_modtime = t;
                }
                if let Some(o) = attrs.owner {
                    st.owner = o;
                }
                if let Some(g) = attrs.group {
                    st.group = g;
                }
                e.set_status(*fid, st)?;
                // Merged into the previous chmod/utimes of the object when
                // no other change to it came between.
                if let Some(prev) = self.last_record_of(&m.cell, *fid) {
                    if let (RecState::Pending, Change::StoreStatus { attrs: earlier, .. }) =
                        (&prev.state, &prev.m.change)
                    {
                        if prev.m.uid == m.uid {
                            let merged = crate::mutation::SetAttrs {
                                mode: attrs.mode.or(earlier.mode),
                                mtime: attrs.mtime.or(earlier.mtime),
                                size: None,
                                owner: attrs.owner.or(earlier.owner),
                                group: attrs.group.or(earlier.group),
                            };
                            rec.m.change = Change::StoreStatus {
                                fid: *fid,
                                attrs: merged,
                            };
                            rec.m.base = prev.m.base.clone();
                            cancel.push(prev);
                        }
                    }
                }
            }
            Change::StoreData { fid, data } => {
                e.base(*fid)?;
                // The new record names every unstored chunk of this
                // writer: its earlier unsent stores of the file go.
                for prev in self
                    .journal
                    .records_of(&m.cell, *fid)
                    .into_iter()
                    .filter(|r| {
                        r.m.uid == m.uid
                            && matches!(&r.m.change, Change::StoreData { fid: f, .. } if f == fid)
                    })
                {
                    if !matches!(prev.state, RecState::InFlight { .. }) {
                        // Keep the oldest base: what replay compares with.
                        rec.m.base = prev.m.base.clone();
                        cancel.push(prev);
                    }
                }
                e.ops.push(Op::SyncChunks {
                    fid: e.key(*fid),
                    data_version: data.local_dv,
                });
            }
            Change::StoreAcl { .. } => {
                return Err(Error::Offline(
                    "access control lists cannot be changed while the volume is offline".into(),
                ));
            }
        }
        let cancelled = cancel.len() as u64;
        if self.valid.conn.mode(&m.cell, m.volume) != crate::Mode::Disconnected {
            // Connected or replaying: replay picks this up soon.
            self.valid.conn.wake.notify_one();
        }
        if log_it && rec.path.is_empty() && rec.state != RecState::Open {
            let main = rec
                .fids()
                .into_iter()
                .find(|f| !m.change.dirs().contains(f))
                .unwrap_or_else(|| m.change.dirs()[0]);
            rec.path = self.path_of(m, main);
        }
        e.ops.extend(extra);
        let puts = if log_it { vec![rec] } else { Vec::new() };
        self.journal.commit(e.ops.clone(), puts, cancel, sync)?;
        if log_it {
            Stats::add(&self.stats.logged, 1);
        }
        Stats::add(&self.stats.compacted, cancelled + u64::from(!log_it));
        e.publish();
        self.valid.conn.seen(&m.cell, m.volume);
        out.logged = true;
        Ok(out)
    }

    /// Every record of an object made offline, if all of them can be
    /// dropped together with it: its create, its stores and attribute
    /// changes, renames of it alone; none sent yet. None otherwise.
    fn cancellable(&self, cell: &str, fid: Fid) -> Option<Vec<LogRecord>> {
        let recs = self.journal.records_of(cell, fid);
        let mut created = false;
        for r in &recs {
            if r.state != RecState::Pending && r.state != RecState::Open {
                return None;
            }
            let ok = match &r.m.change {
                Change::CreateFile { .. } | Change::MakeDir { .. } | Change::Symlink { .. } => {
                    created |= r.created == Some(fid);
                    r.created == Some(fid)
                }
                Change::StoreData { fid: f, .. } | Change::StoreStatus { fid: f, .. } => *f == fid,
                Change::Rename { .. } => r.moved == Some(fid) && r.victim.is_none(),
                _ => false,
            };
            if !ok {
                return None;
            }
        }
        created.then_some(recs)
    }

    /// The data version an object had on the server before its offline
    /// changes (what replay compares with).
    fn base_dv(&self, key: &FidKey, st: &StatusRecord) -> u64 {
        self.journal
            .base(key)
            .map_or(st.data_version, |b| b.status.data_version)
    }

    /// The latest record that names `fid`.
    fn last_record_of(&self, cell: &str, fid: Fid) -> Option<LogRecord> {
        self.journal
            .records_of(cell, fid)
            .into_iter()
            .max_by_key(|r| r.seq)
    }
}
