//! Reintegration: the change log replayed to the fileservers, per volume,
//! in the order the changes were made, each as the user who made it.
//!
//! One background task ([`reconnect_loop`]) probes the fileservers of
//! volumes that went offline by themselves, brings them back when one
//! answers (every callback from the time away is void), and replays their
//! logs. For each record:
//! 1. **Identity**: the record's uid must hold a valid token for the same
//!    AFS id it was made as; otherwise its records (and the ones that
//!    depend on them) wait, the volume shows Paused, and `afsd-rs aklog`
//!    resumes them. An expired token is never sent.
//! 2. **Settle** a record left in flight (sent, no answer recorded: a
//!    crash or a timeout) by looking at the server, never by sending it
//!    again blindly: a name present and ours, a data version moved by
//!    exactly our pieces. Nothing is applied twice.
//! 3. **Check** the server against the record's base: the data version
//!    of a file we store, the binding of every name we remove or rename.
//!    A mismatch, or a refusal by the server, makes a conflict
//!    (`conflicts.rs`): the change is kept, never forced.
//! 4. **Mark in flight** (through the store's log), **send**, then
//!    **finish** in one batch: the record goes, an object made offline
//!    takes its server fid (and keeps its inode number).

use std::collections::HashSet;
use std::sync::Weak;
use std::time::Duration;

use afs_proto::fs as rpcs;
use afs_proto::types::Fid;
use cache::Op;

use crate::client::{AfsClient, Inner};

mod check;
mod conflict;
use crate::conflicts::ConflictKind;
use crate::connectivity::{is_network, Mode};
use crate::identity::Identity;
use crate::inode::NodeRef;
use crate::journal::{is_local, LogRecord, RecState};
use crate::mutation::Change;
use crate::status::now_secs;
use crate::writes::LOWEST_LOCAL_DV;
use crate::{Error, Result, Stats, VolType};

/// How often disconnected volumes are probed, and paused replays retried.
pub(crate) const PASS_EVERY: Duration = Duration::from_secs(3);

/// The reconnect and replay task; ends with the client.
pub(crate) async fn reconnect_loop(weak: Weak<Inner>) {
    loop {
        let conn = match weak.upgrade() {
            Some(inner) => inner.valid.conn.clone(),
            None => return,
        };
        if let Some(inner) = weak.upgrade() {
            AfsClient { inner }.reconnect_pass().await;
        }
        let _ = tokio::time::timeout(PASS_EVERY, conn.wake.notified()).await;
    }
}

/// What looking at the server said of a record left in flight.
pub(super) enum Settled {
    /// It was applied (a create: the object it made).
    Applied(Option<Fid>),
    /// It was not: send it.
    Resend,
    /// A store whose first pieces are on the server: send from this one;
    /// the version the file had before our first piece, as the pieces
    /// on it count (a piece cut short, sent again, does not count).
    ResumeAt(usize, u64),
    Conflict(ConflictKind, String, Option<u64>),
}

/// What the checks before a send found.
pub(super) enum Checked {
    Go {
        pre: Vec<(Fid, u64)>,
    },
    /// Nothing to do: the server already is as the record wants.
    AlreadyDone,
    Conflict(ConflictKind, String, Option<u64>),
    /// A rename over a file whose name the server now gives another file
    /// (both sides replaced it, as programs that save through a temporary
    /// file and a rename do): an update/update conflict on the name.
    Replaced {
        server: Fid,
        server_dv: u64,
    },
}

pub(super) fn gone(e: &Error) -> bool {
    matches!(e.errno(), libc::ENOENT | libc::ESTALE)
}

/// Refusals that make a conflict rather than a retry.
fn refusal(e: &Error) -> bool {
    matches!(
        e.errno(),
        libc::EACCES
            | libc::EPERM
            | libc::EDQUOT
            | libc::ENOSPC
            | libc::EROFS
            | libc::ENOTEMPTY
            | libc::EEXIST
            | libc::EINVAL
            | libc::ENOENT
            | libc::ESTALE
            | libc::EISDIR
            | libc::ENOTDIR
            | libc::EFBIG
            | libc::EXDEV
    )
}

impl AfsClient {
    /// One pass: probe what went offline by itself, bring back what
    /// answers, replay what has a log.
    pub(crate) async fn reconnect_pass(&self) {
        let inner = &self.inner;
        let conn = &inner.valid.conn;
        for (cell, vol) in inner.exec.journal.volumes() {
            if conn.mode(&cell, vol) == Mode::Connected {
                conn.set(&cell, vol, Mode::Reintegrating, "changes to replay");
            }
        }
        let mut probes = tokio::task::JoinSet::new();
        let mut replay = Vec::new();
        for ((cell, vol), m) in conn.all() {
            match m.mode {
                Mode::Disconnected if !m.manual => {
                    let me = self.clone();
                    probes.spawn(async move {
                        let up = me.probe_volume(&cell, vol).await;
                        (cell, vol, up)
                    });
                }
                Mode::Reintegrating | Mode::Paused => replay.push((cell, vol)),
                _ => {}
            }
        }
        while let Some(r) = probes.join_next().await {
            if let Ok((cell, vol, true)) = r {
                self.come_back(&cell, vol, "the fileserver answers again");
                replay.push((cell, vol));
            }
        }
        for (cell, vol) in replay {
            self.replay_volume(&cell, vol).await;
        }
    }

    /// True when a fileserver of the volume answers.
    async fn probe_volume(&self, cell: &str, vol: u32) -> bool {
        let fs = &self.inner.fs;
        let servers = match fs.volume_by_id(cell, vol) {
            Some((info, t)) => info.servers(t).to_vec(),
            None => fs.known_servers(),
        };
        for s in servers {
            if fs.probe(s).await {
                return true;
            }
        }
        false
    }

    /// A volume is reachable again: what was promised while away is void,
    /// and its log (if any) replays.
    pub(crate) fn come_back(&self, cell: &str, vol: u32, why: &str) {
        let inner = &self.inner;
        inner.valid.statuses.break_volume(Some(cell), vol);
        inner.valid.rights.break_volume(vol);
        inner.nodes.invalidate_volume(Some(cell), vol);
        // What changed while away is fetched again for the pins.
        inner.valid.pins.queue_volume(Some(cell), vol);
        let mode = if inner.exec.journal.has_log(cell, vol) {
            Mode::Reintegrating
        } else {
            Mode::Connected
        };
        inner.valid.conn.set(cell, vol, mode, why);
    }

    /// Replays a volume's log as far as it can go now.
    pub(crate) async fn replay_volume(&self, cell: &str, vol: u32) {
        let inner = &self.inner;
        let conn = &inner.valid.conn;
        let _one = inner.replay_lock.lock().await;
        if conn.blocks(cell, vol) {
            return;
        }
        let mut blocked: HashSet<Fid> = HashSet::new();
        let mut waiting: Vec<(u32, Option<String>, String)> = Vec::new();
        let mut open = false;
        let mut replayed: std::collections::BTreeMap<u32, u64> = Default::default();
        for listed in inner.exec.journal.records(cell, vol) {
            // Earlier records may have rewritten this one (fids remapped).
            let Some(rec) = inner.exec.journal.get(cell, vol, listed.seq) else {
                continue;
            };
            let fids = rec.fids();
            if rec.state == RecState::Open || fids.iter().any(|f| blocked.contains(f)) {
                open |= rec.state == RecState::Open;
                blocked.extend(fids);
                continue;
            }
            let who = inner.valid.tokens.identity(rec.m.uid, cell);
            if who.vice_id != rec.m.vice_id {
                if !waiting.iter().any(|w| w.0 == rec.m.uid) {
                    let why = match &who.expired {
                        Some(p) => format!("the token of {p} has expired"),
                        None if who.vice_id.is_none() => "no token".to_string(),
                        None => "a token for another AFS identity".to_string(),
                    };
                    waiting.push((rec.m.uid, who.expired.clone(), why));
                }
                blocked.extend(fids);
                continue;
            }
            match self.replay_one(&rec, &who).await {
                Ok(()) => *replayed.entry(rec.m.uid).or_default() += 1,
                Err(e) if is_network(&e) => {
                    conn.went_down(cell, vol, &e.to_string());
                    return;
                }
                Err(e) => {
                    // The token may have expired during the call.
                    let now = inner.valid.tokens.identity(rec.m.uid, cell);
                    if now.vice_id != rec.m.vice_id {
                        blocked.extend(fids);
                        waiting.push((rec.m.uid, now.expired.clone(), e.to_string()));
                        continue;
                    }
                    tracing::warn!(seq = rec.seq, change = rec.m.change.kind(), "replay: {e}");
                    if let Err(e2) =
                        self.conflict(&rec, ConflictKind::Refused, &e.to_string(), None)
                    {
                        tracing::error!(seq = rec.seq, "keeping a conflict failed: {e2}");
                        blocked.extend(fids);
                    }
                }
            }
        }
        // The server's state of what became a conflict, cached now.
        let fetch = std::mem::take(
            &mut *inner
                .conflicts
                .to_fetch
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        for (c, fid, uid) in fetch {
            let node = NodeRef {
                cell: c,
                fid,
                vol_type: crate::VolType::Rw,
            };
            let who = inner.valid.who(uid, &node);
            if let Err(e) = inner.valid.valid_status(&node, &who).await {
                tracing::debug!(?fid, "status of a conflict's object: {e}");
            }
        }
        for (uid, n) in replayed {
            conn.events.emit(
                Some(uid),
                crate::events::EventKind::Reintegrated {
                    cell: cell.to_string(),
                    volume: vol,
                    replayed: n,
                },
            );
        }
        conn.set_waiting(
            cell,
            vol,
            waiting
                .iter()
                .map(|(uid, p, why)| crate::Waiting {
                    uid: *uid,
                    principal: p.clone(),
                    reason: format!("{why}: run `kinit` and `afsd-rs aklog` as uid {uid}"),
                })
                .collect(),
        );
        if !waiting.is_empty() {
            let uids: Vec<String> = waiting.iter().map(|w| w.0.to_string()).collect();
            tracing::warn!(
                cell,
                volume = vol,
                "replay waits for uid {}: run `kinit` and `afsd-rs aklog` as that user",
                uids.join(", ")
            );
            conn.set(
                cell,
                vol,
                Mode::Paused,
                &format!("waiting for uid {}", uids.join(", ")),
            );
        } else if !inner.exec.journal.has_log(cell, vol) {
            conn.set(cell, vol, Mode::Connected, "change log replayed");
        } else if open {
            conn.set(
                cell,
                vol,
                Mode::Reintegrating,
                "waiting for files still open for writing",
            );
        }
    }

    pub(super) fn node(&self, rec: &LogRecord, fid: Fid) -> NodeRef {
        NodeRef {
            cell: rec.m.cell.clone(),
            fid,
            vol_type: VolType::Rw,
        }
    }

    /// Replays one record (see the module comment).
    async fn replay_one(&self, rec: &LogRecord, who: &Identity) -> Result<()> {
        let inner = &self.inner;
        let mut resume: Option<(usize, Vec<(Fid, u64)>)> = None;
        if let RecState::InFlight { pre } = &rec.state {
            match self.settle(rec, who, pre).await? {
                Settled::Applied(created) => {
                    tracing::info!(
                        seq = rec.seq,
                        change = rec.m.change.kind(),
                        "in-flight change found applied on the server"
                    );
                    return self.finish(rec, created, who).await;
                }
                Settled::Resend => {
                    tracing::info!(
                        seq = rec.seq,
                        change = rec.m.change.kind(),
                        "in-flight change not on the server: sending it"
                    );
                }
                Settled::ResumeAt(k, pre_dv) => {
                    let Change::StoreData { fid, .. } = &rec.m.change else {
                        return Err(Error::Protocol("a resumed change that is no store".into()));
                    };
                    if self.superseded(rec, *fid, who).await? {
                        return self.finish(rec, None, who).await;
                    }
                    tracing::info!(
                        seq = rec.seq,
                        piece = k,
                        "in-flight store partly on the server: resuming"
                    );
                    resume = Some((k, vec![(*fid, pre_dv)]));
                }
                Settled::Conflict(kind, why, server) => {
                    return self.conflict(rec, kind, &why, server);
                }
            }
        }
        let from_piece = resume.as_ref().map_or(0, |r| r.0);
        let pre = if let Some((_, pre)) = resume {
            // Settled by looking: no check against the base again (our
            // own pieces moved the version).
            pre
        } else {
            match self.check(rec, who).await? {
                Checked::Go { pre } => pre,
                Checked::AlreadyDone => return self.finish(rec, None, who).await,
                Checked::Conflict(kind, why, server) => {
                    return self.conflict(rec, kind, &why, server)
                }
                Checked::Replaced { server, server_dv } => {
                    return self.replaced(rec, who, server, server_dv).await
                }
            }
        };
        let mut flying = rec.clone();
        flying.state = RecState::InFlight { pre };
        inner
            .exec
            .journal
            .commit(Vec::new(), vec![flying], Vec::new(), false)?;
        let sent = match &rec.m.change {
            Change::StoreData { fid, data } => inner
                .open
                .replay_store(&self.node(rec, *fid), who, data, from_piece)
                .await
                .map(|st| {
                    if let Some(st) = st {
                        self.moved_by_us(rec, *fid, data.base_dv, st.data_version);
                    }
                    None
                }),
            _ => inner
                .exec
                .send(who, &rec.m, 0, rec.moved)
                .await
                .map(|out| out.created.map(|(n, _)| n.fid)),
        };
        match sent {
            Ok(created) => self.finish(rec, created, who).await,
            Err(e) if is_network(&e) => Err(e),
            Err(e)
                if e.errno() == libc::EEXIST && matches!(rec.m.change, Change::MakeDir { .. }) =>
            {
                match self.adoptable(rec, who).await? {
                    Some(server) => {
                        tracing::info!(
                            fid = ?server,
                            "a directory made offline exists on the server: what was made in it goes there"
                        );
                        self.finish(rec, Some(server), who).await
                    }
                    None => self.conflict(
                        rec,
                        ConflictKind::NameName,
                        "the name exists on the server",
                        None,
                    ),
                }
            }
            Err(e)
                if e.errno() == libc::EEXIST
                    && matches!(
                        rec.m.change,
                        Change::CreateFile { .. }
                            | Change::MakeDir { .. }
                            | Change::Symlink { .. }
                            | Change::Link { .. }
                    ) =>
            {
                self.conflict(
                    rec,
                    ConflictKind::NameName,
                    "the name exists on the server",
                    None,
                )
            }
            Err(e) if refusal(&e) => self.conflict(
                rec,
                ConflictKind::Refused,
                &format!("the fileserver refused it: {e}"),
                None,
            ),
            Err(e) => Err(e),
        }
    }

    /// A directory made offline whose name the server holds as a
    /// directory too: the two makes meant the same thing (think of
    /// `.git/objects/ab/` made by two clients, or `build/`), so the server's
    /// directory is adopted and what was made in ours goes into it, each
    /// name checked as usual (a name made on both sides is still a
    /// conflict). Anything else under the name is a name/name conflict.
    async fn adoptable(&self, rec: &LogRecord, who: &Identity) -> Result<Option<Fid>> {
        let Change::MakeDir { dir, name, .. } = &rec.m.change else {
            return Ok(None);
        };
        let Some(there) = self.server_entry(rec, who, *dir, name).await? else {
            return Ok(None);
        };
        Ok(self
            .server_status(rec, who, there)
            .await?
            .filter(|st| st.file_type == afs_proto::types::FileType::Directory)
            .map(|_| there))
    }

    /// A store settled by looking whose writer logged a newer store of the
    /// file since: the newer one holds every change and goes instead,
    /// against the version on the server now.
    async fn superseded(&self, rec: &LogRecord, fid: Fid, who: &Identity) -> Result<bool> {
        let journal = &self.inner.exec.journal;
        let later: Vec<LogRecord> = journal
            .records_of(&rec.m.cell, fid)
            .into_iter()
            .filter(|r| {
                r.seq > rec.seq
                    && r.m.uid == rec.m.uid
                    && matches!(&r.m.change, Change::StoreData { fid: f, .. } if *f == fid)
            })
            .collect();
        if later.is_empty() {
            return Ok(false);
        }
        let Some(st) = self.server_status(rec, who, fid).await? else {
            return Ok(false);
        };
        let mut puts = Vec::new();
        for mut r in later {
            if let Change::StoreData { data, .. } = &mut r.m.change {
                data.base_dv = st.data_version;
                data.server_len = st.length;
            }
            for b in &mut r.m.base {
                if b.fid == fid {
                    b.data_version = st.data_version;
                }
            }
            puts.push(r);
        }
        journal.commit(Vec::new(), puts, Vec::new(), false)?;
        self.inner.open.rebase_to(
            &self.node(rec, fid).key(),
            rec.m.uid,
            st.data_version,
            st.length,
        );
        Ok(true)
    }

    /// Our own replayed store moved a file from version `old` to `new`:
    /// later records that expected `old` (another user's store of it, a
    /// remove of it) expect `new`, and so do write states based on `old`.
    fn moved_by_us(&self, rec: &LogRecord, fid: Fid, old: u64, new: u64) {
        let inner = &self.inner;
        let journal = &inner.exec.journal;
        let mut puts = Vec::new();
        for mut r in journal
            .records_of(&rec.m.cell, fid)
            .into_iter()
            .filter(|r| r.seq != rec.seq)
        {
            let mut changed = false;
            if let Change::StoreData { fid: f, data } = &mut r.m.change {
                if *f == fid && data.base_dv == old {
                    data.base_dv = new;
                    changed = true;
                }
            }
            for b in &mut r.m.base {
                if b.fid == fid && b.data_version == old {
                    b.data_version = new;
                    changed = true;
                }
            }
            if let Some((v, dv)) = &mut r.victim {
                if *v == fid && *dv == old {
                    *dv = new;
                    changed = true;
                }
            }
            if changed {
                puts.push(r);
            }
        }
        if !puts.is_empty() {
            if let Err(e) = journal.commit(Vec::new(), puts, Vec::new(), false) {
                tracing::warn!("change log: {e}");
            }
        }
        inner.open.rebase_from(&self.node(rec, fid).key(), old, new);
    }

    /// A record is on the server: it leaves the log, and an object it
    /// made takes its server fid everywhere, in one batch.
    async fn finish(&self, rec: &LogRecord, created: Option<Fid>, who: &Identity) -> Result<()> {
        let inner = &self.inner;
        let journal = &inner.exec.journal;
        let mut ops = Vec::new();
        let mut puts = Vec::new();
        let remap = match (rec.created, created) {
            (Some(local), Some(server)) if local != server => Some((local, server)),
            _ => None,
        };
        if let Some((local, server)) = remap {
            let lk = self.node(rec, local).key();
            let sk = self.node(rec, server).key();
            let server_dv = match inner.valid.statuses.known(&sk) {
                Some(s) => s.data_version,
                // Settled after a restart: the create's reply was lost.
                None => self
                    .server_status(rec, who, server)
                    .await?
                    .map_or(0, |s| s.data_version),
            };
            for mut r in journal
                .records_of(&rec.m.cell, local)
                .into_iter()
                .filter(|r| r.seq != rec.seq)
            {
                r.rekey(local, server);
                // What was decided against the local object (version 0)
                // holds against the version its create made.
                if let Change::StoreData { fid, data } = &mut r.m.change {
                    if *fid == server && data.base_dv == 0 {
                        data.base_dv = server_dv;
                    }
                }
                for b in &mut r.m.base {
                    if b.fid == server && b.data_version == 0 {
                        b.data_version = server_dv;
                    }
                }
                if let Some((v, dv)) = &mut r.victim {
                    if *v == server && *dv == 0 {
                        *dv = server_dv;
                    }
                }
                puts.push(r);
            }
            // Unstored data moves with the file; what else the cache held
            // of the local object goes (the server's is fetched).
            for (dv, idx, _) in inner.store.dirty_chunks(&lk) {
                if dv >= LOWEST_LOCAL_DV {
                    ops.push(Op::MoveChunkTo {
                        from: lk.clone(),
                        from_dv: dv,
                        index: idx,
                        to: sk.clone(),
                        to_dv: dv,
                        dirty: true,
                    });
                }
            }
            ops.push(Op::DeleteChunks(lk.clone()));
            ops.push(Op::DeleteStatus(lk.clone()));
            ops.push(Op::DeleteDir(lk.clone()));
            // A directory made offline keeps its local listing while its
            // own changes wait.
            let still = !puts.is_empty();
            if let Some(mut l) = inner.dirs.held(&self.node(rec, local))? {
                if still {
                    for e in &mut l.entries {
                        if e.vnode == local.vnode && e.unique == local.unique {
                            e.vnode = server.vnode;
                            e.unique = server.unique;
                        }
                    }
                    l.data_version = server_dv;
                    ops.push(Op::PutDir(sk.clone(), l.clone()));
                    inner.dirs.set_held(sk.clone(), l);
                }
            }
            // The directory's listing names the server fid now.
            if let Some(dir) = rec.m.change.dirs().first() {
                let dnode = self.node(rec, *dir);
                if let Some(mut l) = inner.dirs.held(&dnode)? {
                    for e in &mut l.entries {
                        if e.vnode == local.vnode && e.unique == local.unique {
                            e.vnode = server.vnode;
                            e.unique = server.unique;
                        }
                    }
                    ops.push(Op::PutDir(dnode.key(), l.clone()));
                    inner.dirs.set_held(dnode.key(), l);
                }
            }
            inner.nodes.rekey(&lk, self.node(rec, server));
            inner.open.rekey(&lk, &sk);
            inner.open.rebase_from(&sk, 0, server_dv);
            inner.valid.forget(&lk);
        }
        journal.commit(ops, puts, vec![rec.clone()], false)?;
        // Objects whose last change is on the server show the server's
        // state from now on: fetched now (the cache must hold it should
        // the network go again), else at next use.
        let mut fids = rec.fids();
        fids.extend(created);
        for f in fids {
            let key = self.node(rec, f).key();
            if journal.pending.contains(&key) || is_local(f) {
                continue;
            }
            inner.valid.statuses.break_fid(&key);
            inner.nodes.invalidate(&key);
            let node = self.node(rec, f);
            let start = now_secs();
            let epoch = inner.valid.statuses.epoch();
            match inner
                .valid
                .call(&node, who, &rpcs::FetchStatus { fid: f })
                .await
            {
                Ok(r) => {
                    if let Err(e) = inner.valid.record_reply(
                        &key,
                        who,
                        &r.status,
                        &r.callback,
                        start,
                        epoch,
                        cache::Batch::clean(),
                    ) {
                        tracing::warn!("recording a replayed object's status: {e}");
                    }
                }
                // Gone (removed by this change): nothing to show.
                Err(e) if gone(&e) => {
                    let mut b = cache::Batch::new();
                    b.push(Op::DeleteStatus(key.clone()));
                    b.push(Op::DeleteDir(key.clone()));
                    inner.store.apply(b)?;
                    inner.valid.forget(&key);
                }
                Err(e) => tracing::debug!("status of a replayed object: {e}"),
            }
        }
        Stats::add(&inner.stats.replayed, 1);
        tracing::debug!(seq = rec.seq, change = rec.m.change.kind(), "replayed");
        Ok(())
    }

    /// Where an object is: as logged, or as the cache tells now.
    pub(crate) fn path_of(&self, rec: &LogRecord, fid: Fid) -> String {
        if !rec.path.is_empty() {
            return rec.path.clone();
        }
        self.inner.exec.path_of(&rec.m, fid)
    }
}
