//! Status and rights validation: the one place every entry point asks
//! "is what we hold of this object current, and may this identity do this?"
//!
//! Owns the tokens (who a uid is in a cell), the statuses whose callbacks
//! hold ([`StatusTable`]) and the rights learned per identity
//! ([`RightsTable`]). A status reply from any call is recorded here
//! ([`Validator::apply_status`]), with the rights it grants; a callback
//! break arrives here and invalidates both, and the kernel's copy.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use afs_proto::fs as rpcs;
use afs_proto::types::{CallBack, FetchStatus, Fid, FileType};
use cache::{Batch, DirEntryRecord, FidKey, Op, StatusRecord, Store};

use crate::connectivity::Connectivity;
use crate::fileserver::{CallbackSink, FileServer, FsRpc, VolumeTarget};
use crate::identity::{Identity, RightsTable, Tokens, ANONYMOUS};
use crate::inode::NodeRef;
use crate::journal::{fid_record_key, Pending, SPACE_RIGHTS};
use crate::nodes::Nodes;
use crate::status::{now_secs, StatusTable};
use crate::{Error, Result, Stats};

/// What a caller wants to do, as AFS rights bits (prs_fs.h).
pub(crate) use crate::access::{
    ADMINISTER as PRSFS_ADMINISTER, DELETE as PRSFS_DELETE, INSERT as PRSFS_INSERT,
    LOCK as PRSFS_LOCK, LOOKUP as PRSFS_LOOKUP, READ as PRSFS_READ, WRITE as PRSFS_WRITE,
};

/// How long rights from a reply that raced a callback break are used.
const RACED_RIGHTS_SECS: u64 = 2;

/// Statuses, rights and tokens.
pub(crate) struct Validator {
    fs: Arc<dyn FileServer>,
    store: Arc<dyn Store>,
    stats: Arc<Stats>,
    nodes: Arc<Nodes>,
    cells: Vec<String>,
    pub(crate) statuses: StatusTable,
    pub(crate) rights: RightsTable,
    pub(crate) tokens: Tokens,
    /// Which volumes are reachable: nothing is sent to a disconnected one.
    pub(crate) conn: Arc<Connectivity>,
    /// Objects with unreplayed offline changes: served from local state.
    pub(crate) pending: Arc<Pending>,
    /// Last known rights per AFS identity, as persisted for offline use.
    last_rights: Mutex<HashMap<(Option<i32>, FidKey), u32>>,
    /// Pinned objects: a break queues them to be fetched again, and their
    /// older data stays until the newer is complete.
    pub(crate) pins: Arc<crate::pins::PinSet>,
}

/// The key of a persisted right: the identity's anchor, then the fid.
fn rights_key(anchor: Option<i32>, key: &FidKey) -> Vec<u8> {
    let mut k = match anchor {
        Some(id) => {
            let mut v = vec![1];
            v.extend_from_slice(&id.to_be_bytes());
            v
        }
        None => vec![0, 0, 0, 0, 0],
    };
    k.extend_from_slice(&fid_record_key(key));
    k
}

pub(crate) fn record_of(st: &FetchStatus, cb: &CallBack, request_start: u64) -> StatusRecord {
    // ExpirationTime in FS replies is relative to the time of the call
    // (afs_fetchstore.c adds the request start time).
    let callback_expires = if cb.expiration_time == 0 {
        0
    } else {
        request_start + cb.expiration_time as u64
    };
    StatusRecord {
        file_type: st.file_type.as_u32(),
        length: st.length,
        data_version: st.data_version,
        mode: st.unix_mode_bits,
        owner: st.owner,
        group: st.group,
        link_count: st.link_count,
        author: st.author,
        client_modtime: st.client_modtime,
        server_modtime: st.server_modtime,
        parent_vnode: st.parent_vnode,
        parent_unique: st.parent_unique,
        anonymous_access: st.anonymous_access,
        callback_expires,
        fetched_at: request_start,
    }
}

/// The target of calls about a node: its volume.
pub(crate) fn target(node: &NodeRef) -> VolumeTarget {
    VolumeTarget {
        cell: node.cell.clone(),
        volume: node.fid.volume,
    }
}

impl Validator {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        fs: Arc<dyn FileServer>,
        store: Arc<dyn Store>,
        stats: Arc<Stats>,
        nodes: Arc<Nodes>,
        cells: Vec<String>,
        tokens: Tokens,
        conn: Arc<Connectivity>,
        pending: Arc<Pending>,
        pins: Arc<crate::pins::PinSet>,
    ) -> Self {
        Validator {
            fs,
            store,
            stats,
            nodes,
            cells,
            statuses: StatusTable::default(),
            rights: RightsTable::default(),
            tokens,
            conn,
            pending,
            last_rights: Mutex::new(HashMap::new()),
            pins,
        }
    }

    /// True when the node is served from what the cache holds, without
    /// asking its fileserver: its volume is disconnected, or it has changes
    /// not yet replayed (its local state is the truth until they are).
    pub(crate) fn is_local(&self, node: &NodeRef) -> bool {
        self.conn.blocks(&node.cell, node.fid.volume) || self.pending.contains(&node.key())
    }

    /// `who`'s rights on a node: those learned under a live callback, or,
    /// for a node served locally, the last ones known for the caller's AFS
    /// identity (kept across restarts, and after its token expired).
    pub(crate) fn rights_of(&self, node: &NodeRef, who: &Identity) -> Option<u32> {
        let key = node.key();
        let local = self.is_local(node);
        // Offline, a user whose token expired acts as its AFS identity
        // (never sent anywhere), not as anonymous.
        let anchored = local && who.id == ANONYMOUS && who.anchor.is_some();
        if !anchored {
            if let Some(r) = self.rights.get(who.id, &key) {
                return Some(r);
            }
        }
        if !local {
            return None;
        }
        if let Some(r) = self.last_rights(who.anchor, &key) {
            return Some(r);
        }
        // An object made offline has its directory's rights (AFS rights
        // come from the directory's ACL).
        if crate::journal::is_local(node.fid) {
            let st = self.statuses.known(&key)?;
            let parent =
                node.with_fid(Fid::new(node.fid.volume, st.parent_vnode, st.parent_unique));
            if parent.fid != node.fid {
                return self.rights_of(&parent, who);
            }
        }
        None
    }

    /// The last rights persisted for an AFS identity (None: anonymous).
    fn last_rights(&self, anchor: Option<i32>, key: &FidKey) -> Option<u32> {
        let k = (anchor, key.clone());
        if let Some(r) = self
            .last_rights
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&k)
        {
            return Some(*r);
        }
        let v = self
            .store
            .get_record(SPACE_RIGHTS, &rights_key(anchor, key))
            .ok()
            .flatten()?;
        let r = u32::from_be_bytes(v.get(..4)?.try_into().ok()?);
        self.last_rights
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(k, r);
        Some(r)
    }

    /// An object made offline takes its directory's rights (AFS rights
    /// come from the directory's ACL): for the maker, and for anonymous.
    pub(crate) fn inherit_rights(
        &self,
        parent: &NodeRef,
        child: &NodeRef,
        who: &Identity,
        ops: &mut Vec<Op>,
    ) {
        let key = child.key();
        let mut keep = vec![(who.anchor, self.rights_of(parent, who))];
        if who.anchor.is_some() {
            keep.push((None, self.last_rights(None, &parent.key())));
        }
        let mut mem = self.last_rights.lock().unwrap_or_else(|e| e.into_inner());
        for (anchor, rights) in keep {
            let Some(rights) = rights else { continue };
            mem.insert((anchor, key.clone()), rights);
            ops.push(Op::PutRecord {
                space: SPACE_RIGHTS,
                key: rights_key(anchor, &key),
                value: rights.to_be_bytes().to_vec(),
            });
        }
    }

    /// The rights a reply granted, kept for offline use (in `batch`).
    fn keep_rights(&self, key: &FidKey, who: &Identity, st: &FetchStatus, batch: &mut Batch) {
        let mut keep = vec![(None, st.anonymous_access)];
        if who.vice_id.is_some() {
            keep.push((who.vice_id, st.caller_access));
        }
        let mut mem = self.last_rights.lock().unwrap_or_else(|e| e.into_inner());
        for (anchor, rights) in keep {
            let k = (anchor, key.clone());
            if mem.get(&k) == Some(&rights) {
                continue;
            }
            mem.insert(k, rights);
            batch.push(Op::PutRecord {
                space: SPACE_RIGHTS,
                key: rights_key(anchor, key),
                value: rights.to_be_bytes().to_vec(),
            });
        }
    }

    /// A status served from the cache, without a callback (see
    /// [`Validator::is_local`]).
    fn local_status(&self, node: &NodeRef, who: &Identity) -> Result<StatusRecord> {
        let key = node.key();
        let st = match self.statuses.known(&key) {
            Some(st) => st,
            None => self.store.get_status(&key)?.ok_or_else(|| {
                Error::Offline(format!(
                    "{} volume {}: not in the cache",
                    node.cell, node.fid.volume
                ))
            })?,
        };
        match self.rights_of(node, who) {
            Some(r) if r != 0 && crate::access::may_fetch_status(&st, r) => {}
            _ => {
                self.tokens.warn_expired(who, &node.cell);
                return Err(Error::Access);
            }
        }
        Stats::add(&self.stats.stale_served, 1);
        if self.statuses.known(&key).is_none() {
            self.statuses.set(key, st.clone(), self.statuses.epoch());
        }
        Ok(st)
    }

    /// What every call checks first and notes after: nothing goes to a
    /// disconnected volume, and a call that finds no server takes the
    /// volume offline.
    fn before_call(&self, node: &NodeRef) -> Result<()> {
        self.conn.seen(&node.cell, node.fid.volume);
        if self.conn.blocks(&node.cell, node.fid.volume) {
            return Err(Error::Offline(format!(
                "{} volume {} is disconnected",
                node.cell, node.fid.volume
            )));
        }
        Ok(())
    }

    fn after_call<T>(&self, node: &NodeRef, who: &Identity, r: &Result<T>) {
        match r {
            Err(e) if e.errno() == libc::EACCES => self.tokens.warn_expired(who, &node.cell),
            // What was fetched until the volume went offline must survive
            // a crash while offline: it is all there is to work with.
            Err(e)
                if crate::connectivity::is_network(e)
                    && self
                        .conn
                        .went_down(&node.cell, node.fid.volume, &e.to_string()) =>
            {
                if let Err(e) = self.store.persist() {
                    tracing::warn!("cache: making fetched data durable: {e}");
                }
            }
            _ => {}
        }
    }

    /// The path of an object below the mount, as the kernel named it.
    pub(crate) fn path_in_mount(&self, key: &FidKey) -> Option<String> {
        self.nodes.path_of(key)
    }

    /// A volume's name, when the client located it (its id otherwise).
    pub(crate) fn volume_name(&self, cell: &str, volume: u32) -> String {
        self.fs
            .volume_by_id(cell, volume)
            .map(|(i, t)| match t {
                crate::VolType::Rw => i.name.clone(),
                crate::VolType::Ro => format!("{}.readonly", i.name),
                crate::VolType::Backup => format!("{}.backup", i.name),
            })
            .unwrap_or_else(|| volume.to_string())
    }

    /// The identity `uid` has in the cell of `node`.
    pub(crate) fn who(&self, uid: u32, node: &NodeRef) -> Identity {
        self.tokens.identity(uid, &node.cell)
    }

    /// Sends one FS RPC about `node` as `who`. A refusal to a user whose
    /// token expired says so in the log.
    pub(crate) async fn call<R: FsRpc>(
        &self,
        node: &NodeRef,
        who: &Identity,
        rpc: &R,
    ) -> Result<R::Reply> {
        self.call_data(node, who, rpc, &[]).await
    }

    /// As [`Validator::call`], with raw bytes after the arguments.
    pub(crate) async fn call_data<R: FsRpc>(
        &self,
        node: &NodeRef,
        who: &Identity,
        rpc: &R,
        data: &[u8],
    ) -> Result<R::Reply> {
        self.before_call(node)?;
        let r = crate::fileserver::fs_call(&*self.fs, &target(node), who, rpc, data).await;
        self.after_call(node, who, &r);
        r
    }

    /// Sends a prepared request about `node` as `who` (the executor's path:
    /// requests built from records).
    pub(crate) async fn send(
        &self,
        node: &NodeRef,
        who: &Identity,
        call: crate::FsCall,
    ) -> Result<crate::FsReply> {
        self.before_call(node)?;
        let r = self.fs.call(&target(node), who, call).await;
        self.after_call(node, who, &r);
        r
    }

    /// True when both the status and `who`'s rights on it are current.
    pub(crate) fn has_valid(&self, node: &NodeRef, who: &Identity) -> bool {
        let key = node.key();
        self.statuses.valid(&key).is_some() && self.rights.get(who.id, &key).is_some()
    }

    /// Checks `who`'s rights (learned by the last valid_status) against
    /// `needed`, by the cache manager's rules (a file's owner mode bits
    /// included, see [`crate::access`]). A denial to a user whose token
    /// expired says so in the log.
    pub(crate) fn require(&self, node: &NodeRef, who: &Identity, needed: u32) -> Result<()> {
        let key = node.key();
        let have = self.rights_of(node, who).unwrap_or(0);
        let ok = match self.statuses.known(&key) {
            Some(st) => crate::access::allows(&st, have, needed),
            None => false,
        };
        self.verdict(node, who, ok)
    }

    /// Checks that `who` has at least one right of `any`, with no mode
    /// bits (chmod and utimes: `w` or ownership; locks).
    pub(crate) fn require_any(&self, node: &NodeRef, who: &Identity, any: u32) -> Result<()> {
        let key = node.key();
        let have = self.rights_of(node, who).unwrap_or(0);
        let ok = match self.statuses.known(&key) {
            Some(st) => crate::access::effective(&st, have, false) & any != 0,
            None => false,
        };
        self.verdict(node, who, ok)
    }

    /// access(2) for `who`: R_OK, W_OK and X_OK as OpenAFS's afs_access.
    pub(crate) async fn access(&self, node: &NodeRef, who: &Identity, mask: i32) -> Result<()> {
        let st = self.valid_status(node, who).await?;
        if mask & libc::W_OK != 0 && node.vol_type != crate::VolType::Rw {
            return Err(Error::ReadOnly);
        }
        let have = self.rights_of(node, who).unwrap_or(0);
        self.verdict(node, who, crate::access::access_ok(&st, have, mask))
    }

    fn verdict(&self, node: &NodeRef, who: &Identity, ok: bool) -> Result<()> {
        if ok {
            Ok(())
        } else {
            self.tokens.warn_expired(who, &node.cell);
            Err(Error::Access)
        }
    }

    /// The check every entry point makes: a current status, and `needed`
    /// rights for `who` on it.
    pub(crate) async fn check(
        &self,
        node: &NodeRef,
        who: &Identity,
        needed: u32,
    ) -> Result<StatusRecord> {
        let st = self.valid_status(node, who).await?;
        self.require(node, who, needed)?;
        Ok(st)
    }

    /// Records the rights a status reply grants: the caller's, and the
    /// anonymous ones, which hold for any caller without a token.
    pub(crate) fn learn_rights(
        &self,
        key: &FidKey,
        who: &Identity,
        st: &FetchStatus,
        rec: &StatusRecord,
        epoch: u64,
    ) {
        // A reply that raced a callback break is not promised beyond now;
        // its rights still hold for a moment, so that the break (of any
        // fid) never turns this caller's access into EACCES. The status
        // itself is fetched again at next use.
        let until = if self.statuses.epoch() == epoch {
            rec.callback_expires
        } else {
            now_secs() + RACED_RIGHTS_SECS
        };
        self.rights.set(who.id, key, st.caller_access, until);
        self.rights.set(ANONYMOUS, key, st.anonymous_access, until);
    }

    /// Records a status reply for `who` (with `batch`, see
    /// [`Validator::apply_status`]) and the rights it grants: what every
    /// fetch does with a reply.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn record_reply(
        &self,
        key: &FidKey,
        who: &Identity,
        st: &FetchStatus,
        cb: &CallBack,
        start: u64,
        epoch: u64,
        batch: Batch,
    ) -> Result<StatusRecord> {
        let mut batch = batch;
        self.keep_rights(key, who, st, &mut batch);
        let rec = self.apply_status(key, st, cb, start, epoch, batch)?;
        self.learn_rights(key, who, st, &rec, epoch);
        Ok(rec)
    }

    /// FetchData64 of `[pos, pos + length)` as `who`, counted in the
    /// stats; with the clock and the break counter read before the call,
    /// for [`Validator::record_reply`].
    pub(crate) async fn fetch_data(
        &self,
        node: &NodeRef,
        who: &Identity,
        pos: u64,
        length: u64,
    ) -> Result<(rpcs::FetchDataReply, u64, u64)> {
        let epoch = self.statuses.epoch();
        let start = now_secs();
        let fid = node.fid;
        let reply = self
            .call(node, who, &rpcs::FetchData64 { fid, pos, length })
            .await?;
        Stats::add(&self.stats.bytes_fetched, reply.data.len() as u64);
        Ok((reply, start, epoch))
    }

    /// The node's status with a callback that holds now; fetched from the
    /// fileserver when the callback expired or was broken.
    pub(crate) async fn valid_status(
        &self,
        node: &NodeRef,
        who: &Identity,
    ) -> Result<StatusRecord> {
        if self.is_local(node) {
            return self.local_status(node, who);
        }
        let key = node.key();
        match (self.statuses.valid(&key), self.rights.get(who.id, &key)) {
            // No rights at all: a recorded denial is a denial, whether the
            // status is current (another user fetched it) or not (do not
            // ask again yet).
            (_, Some(0)) => {
                self.tokens.warn_expired(who, &node.cell);
                return Err(Error::Access);
            }
            (Some(st), Some(rights)) => {
                if !crate::access::may_fetch_status(&st, rights) {
                    self.tokens.warn_expired(who, &node.cell);
                    return Err(Error::Access);
                }
                Stats::add(&self.stats.status_hits, 1);
                return Ok(st);
            }
            _ => {}
        }
        Stats::add(&self.stats.status_misses, 1);
        let epoch = self.statuses.epoch();
        let start = now_secs();
        let reply = match self
            .call(node, who, &rpcs::FetchStatus { fid: node.fid })
            .await
        {
            Ok(r) => r,
            Err(e) if e.errno() == libc::EACCES => {
                self.rights.deny(who.id, &key);
                return Err(Error::Access);
            }
            // The fileserver cannot be reached: the volume went offline
            // with this call, and the cache answers.
            Err(e) if crate::connectivity::is_network(&e) && self.is_local(node) => {
                return self.local_status(node, who);
            }
            Err(e) => return Err(e),
        };
        self.record_reply(
            &key,
            who,
            &reply.status,
            &reply.callback,
            start,
            epoch,
            Batch::clean(),
        )
    }

    /// Records a status from the server, together with `batch`. When the
    /// data version moved, the cached data of older versions is dropped and
    /// the kernel told to forget its pages.
    pub(crate) fn apply_status(
        &self,
        key: &FidKey,
        st: &FetchStatus,
        cb: &CallBack,
        start: u64,
        epoch: u64,
        mut batch: Batch,
    ) -> Result<StatusRecord> {
        let rec = record_of(st, cb, start);
        if self.pending.contains(key) {
            // Changed offline and not yet replayed: the local status and
            // listing stay what the object shows; the rest of the batch
            // (data of server versions) is kept.
            batch.ops.retain(|op| {
                !matches!(op, Op::PutStatus(k, _) | Op::PutDir(k, _) | Op::DeleteDir(k) if k == key)
            });
            self.store.apply(batch)?;
            // The server's status, for the caller: replay needs it.
            return Ok(rec);
        }
        if let Some(valid) = self.statuses.valid(key) {
            if valid.data_version > rec.data_version {
                // A reply that left the server before a newer one we already
                // hold (a slow read-ahead): keep the newer status. The batch
                // (chunks keyed by their own data version) is still stored.
                self.store.apply(batch)?;
                return Ok(rec);
            }
        }
        let old = match self.statuses.known(key) {
            Some(s) => Some(s),
            None => self.store.get_status(key)?,
        };
        let moved = old
            .as_ref()
            .is_some_and(|o| o.data_version != rec.data_version);
        // Chunks and listings of other versions go; the batch's own (of this
        // version, or moved to it by a store) stay, and unstored data too.
        let mut ops = vec![Op::PutStatus(key.clone(), rec.clone())];
        if moved {
            ops.push(Op::DeleteDir(key.clone()));
        }
        ops.append(&mut batch.ops);
        // A pinned file keeps its older version until the refresher has
        // the newer one complete (it drops the older then).
        if moved && !self.pins.contains(key) {
            ops.push(Op::DeleteCleanChunks {
                fid: key.clone(),
                keep: Some(rec.data_version),
            });
        }
        self.store.apply(Batch { ops, ..batch })?;
        if moved {
            self.nodes.invalidate(key);
        }
        self.statuses.set(key.clone(), rec.clone(), epoch);
        Ok(rec)
    }

    /// Records a status the server returned for our own change. The
    /// callback we held stays valid (a fileserver never breaks the callback
    /// of the client that made the change); a directory edit, if any, rides
    /// in `batch`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn apply_own(
        &self,
        node: &NodeRef,
        who: &Identity,
        st: &FetchStatus,
        old: Option<&StatusRecord>,
        start: u64,
        epoch: u64,
        batch: Batch,
    ) -> Result<StatusRecord> {
        let key = node.key();
        let remaining = old
            .filter(|o| o.callback_expires > start)
            .map(|o| (o.callback_expires - start) as u32)
            .unwrap_or(0);
        let cb = CallBack {
            version: 1,
            expiration_time: remaining,
            callback_type: 1,
        };
        self.record_reply(&key, who, st, &cb, start, epoch, batch)
    }

    /// Fetches the statuses of up to 50 entries of a directory in one
    /// InlineBulkStatus call, starting at entry `from`: a lookup is usually
    /// followed by lookups of its neighbours (`ls -l`).
    pub(crate) async fn bulk_prefetch(
        &self,
        dir_node: &NodeRef,
        entries: &[DirEntryRecord],
        from: usize,
        who: &Identity,
    ) {
        let n = entries.len();
        let mut fids = Vec::new();
        for j in 0..n {
            let e = &entries[(from + j) % n];
            if e.name == b"." || e.name == b".." {
                continue;
            }
            let fid = Fid::new(dir_node.fid.volume, e.vnode, e.unique);
            if !self.has_valid(&dir_node.with_fid(fid), who) {
                fids.push(fid);
            }
            if fids.len() == afs_proto::fs::AFSCBMAX {
                break;
            }
        }
        if fids.len() < 2 {
            return;
        }
        let Ok(call) = rpcs::InlineBulkStatus::new(fids.clone()) else {
            return;
        };
        let epoch = self.statuses.epoch();
        let start = now_secs();
        match self.call(dir_node, who, &call).await {
            Ok(reply) => {
                for (fid, e) in fids.iter().zip(reply.entries.iter()) {
                    if e.status.error_code != 0 {
                        continue;
                    }
                    let key = dir_node.with_fid(*fid).key();
                    let r = self.record_reply(
                        &key,
                        who,
                        &e.status,
                        &e.callback,
                        start,
                        epoch,
                        Batch::clean(),
                    );
                    if let Err(err) = r {
                        tracing::warn!("storing bulk status: {err}");
                    }
                }
            }
            Err(e) => tracing::debug!("InlineBulkStatus failed, falling back to FetchStatus: {e}"),
        }
    }

    /// Forgets the status and rights of one fid (a file that changed under
    /// us, a flush).
    pub(crate) fn forget(&self, key: &FidKey) {
        self.statuses.break_fid(key);
        self.rights.break_fid(key);
    }

    /// A regular file's current status, for a caller with `needed` rights.
    pub(crate) async fn file(
        &self,
        node: &NodeRef,
        who: &Identity,
        needed: u32,
    ) -> Result<StatusRecord> {
        let st = self.check(node, who, needed).await?;
        if st.file_type == FileType::Directory.as_u32() {
            return Err(Error::IsDir);
        }
        Ok(st)
    }
}

impl CallbackSink for Validator {
    fn break_fids(&self, from: SocketAddr, fids: &[Fid]) {
        for &fid in fids {
            Stats::add(&self.stats.callback_breaks, 1);
            tracing::debug!(%from, ?fid, "callback broken");
            // Fids in breaks carry no cell: a fileserver belongs to one cell
            // and volume ids are unique within it; across cells a spurious
            // extra invalidation is harmless.
            if fid.vnode == 0 {
                self.statuses.break_volume(None, fid.volume);
                self.rights.break_volume(fid.volume);
                self.nodes.invalidate_volume(None, fid.volume);
                self.pins.queue_volume(None, fid.volume);
            } else {
                for cell in &self.cells {
                    let key = FidKey::new(cell, fid.volume, fid.vnode, fid.unique);
                    self.statuses.break_fid(&key);
                    self.nodes.invalidate(&key);
                    self.pins.queue(&key);
                }
            }
        }
    }

    /// InitCallBackState: what came from that fileserver alone is no
    /// longer promised (its volumes, as located).
    fn break_all(&self, from: SocketAddr) {
        let volumes = self.fs.volumes_at(from);
        tracing::info!(%from, volumes = volumes.len(), "fileserver reset its callback state");
        Stats::add(&self.stats.callback_breaks, 1);
        for (cell, volume) in volumes {
            self.statuses.break_volume(Some(&cell), volume);
            self.rights.break_volume(volume);
            self.nodes.invalidate_volume(Some(&cell), volume);
            self.pins.queue_volume(Some(&cell), volume);
        }
    }
}
