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
use afs_proto::types::{FetchStatus, Fid, FileType};
use cache::{FidKey, Op};

use crate::client::{AfsClient, Inner};
use crate::conflicts::{ConflictKind, ConflictRecord};
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
enum Settled {
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
enum Checked {
    Go {
        pre: Vec<(Fid, u64)>,
    },
    /// Nothing to do: the server already is as the record wants.
    AlreadyDone,
    Conflict(ConflictKind, String, Option<u64>),
}

fn gone(e: &Error) -> bool {
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
                Ok(()) => {}
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

    fn node(&self, rec: &LogRecord, fid: Fid) -> NodeRef {
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
                .send(who, &rec.m, 0)
                .await
                .map(|out| out.created.map(|(n, _)| n.fid)),
        };
        match sent {
            Ok(created) => self.finish(rec, created, who).await,
            Err(e) if is_network(&e) => Err(e),
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

    /// The server's status of an object, None when it is gone.
    async fn server_status(
        &self,
        rec: &LogRecord,
        who: &Identity,
        fid: Fid,
    ) -> Result<Option<FetchStatus>> {
        match self
            .inner
            .valid
            .call(&self.node(rec, fid), who, &rpcs::FetchStatus { fid })
            .await
        {
            Ok(r) => Ok(Some(r.status)),
            Err(e) if gone(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// What a name is bound to on the server now.
    async fn server_entry(
        &self,
        rec: &LogRecord,
        who: &Identity,
        dir: Fid,
        name: &[u8],
    ) -> Result<Option<Fid>> {
        let node = self.node(rec, dir);
        let st = self
            .inner
            .valid
            .call(&node, who, &rpcs::FetchStatus { fid: dir })
            .await?;
        let reply = self
            .inner
            .valid
            .call(
                &node,
                who,
                &rpcs::FetchData64 {
                    fid: dir,
                    pos: 0,
                    length: st.status.length,
                },
            )
            .await?;
        let entries = afs_proto::dir::parse_dir(&reply.data)
            .map_err(|e| Error::Protocol(format!("directory {dir:?}: {e}")))?;
        Ok(entries
            .into_iter()
            .find(|e| e.name == name)
            .map(|e| Fid::new(dir.volume, e.vnode, e.unique)))
    }

    /// Compares the server with what the record was decided against.
    async fn check(&self, rec: &LogRecord, who: &Identity) -> Result<Checked> {
        let dependent = |what: &str| {
            Ok(Checked::Conflict(
                ConflictKind::Dependent,
                format!("{what} was never made on the server"),
                None,
            ))
        };
        match &rec.m.change {
            Change::CreateFile { dir, .. }
            | Change::MakeDir { dir, .. }
            | Change::Symlink { dir, .. } => {
                if is_local(*dir) {
                    return dependent("its directory");
                }
                // "Name absent" is checked by the server itself (EEXIST).
                Ok(Checked::Go { pre: Vec::new() })
            }
            Change::Link { dir, existing, .. } => {
                if is_local(*dir) || is_local(*existing) {
                    return dependent("its directory or file");
                }
                Ok(Checked::Go { pre: Vec::new() })
            }
            Change::RemoveFile { dir, name } | Change::RemoveDir { dir, name } => {
                let Some((victim, base_dv)) = rec.victim else {
                    return Ok(Checked::Go { pre: Vec::new() });
                };
                if is_local(*dir) || is_local(victim) {
                    return dependent("the object removed");
                }
                match self.server_entry(rec, who, *dir, name).await? {
                    None => return Ok(Checked::AlreadyDone),
                    Some(f) if f != victim => {
                        return Ok(Checked::Conflict(
                            ConflictKind::NameName,
                            "the name now names another object on the server".into(),
                            None,
                        ))
                    }
                    Some(_) => {}
                }
                if matches!(rec.m.change, Change::RemoveFile { .. }) {
                    match self.server_status(rec, who, victim).await? {
                        None => return Ok(Checked::AlreadyDone),
                        Some(st) if st.data_version != base_dv => {
                            return Ok(Checked::Conflict(
                                ConflictKind::RemoveUpdate,
                                "the file was changed on the server; it is kept there".into(),
                                Some(st.data_version),
                            ))
                        }
                        Some(_) => {}
                    }
                }
                Ok(Checked::Go { pre: Vec::new() })
            }
            Change::Rename {
                from_dir,
                from_name,
                to_dir,
                to_name,
            } => {
                if is_local(*from_dir) || is_local(*to_dir) || rec.moved.is_some_and(is_local) {
                    return dependent("an object renamed");
                }
                let here = self.server_entry(rec, who, *from_dir, from_name).await?;
                if here != rec.moved {
                    return Ok(Checked::Conflict(
                        ConflictKind::NameName,
                        "the name renamed is bound to something else on the server".into(),
                        None,
                    ));
                }
                let there = self.server_entry(rec, who, *to_dir, to_name).await?;
                match (there, rec.victim) {
                    (None, _) => {}
                    (Some(f), Some((v, base_dv))) if f == v => {
                        if let Some(st) = self.server_status(rec, who, v).await? {
                            if st.data_version != base_dv && st.file_type != FileType::Directory {
                                return Ok(Checked::Conflict(
                                    ConflictKind::RemoveUpdate,
                                    "the file renamed over was changed on the server".into(),
                                    Some(st.data_version),
                                ));
                            }
                        }
                    }
                    (Some(_), _) => {
                        return Ok(Checked::Conflict(
                            ConflictKind::NameName,
                            "the new name is taken on the server".into(),
                            None,
                        ))
                    }
                }
                Ok(Checked::Go { pre: Vec::new() })
            }
            Change::StoreStatus { fid, attrs } => {
                if is_local(*fid) {
                    return dependent("the object");
                }
                let Some(st) = self.server_status(rec, who, *fid).await? else {
                    return Ok(Checked::Conflict(
                        ConflictKind::UpdateRemove,
                        "the object was removed on the server".into(),
                        None,
                    ));
                };
                let key = self.node(rec, *fid).key();
                if let Some(base) = self.inner.exec.journal.base(&key) {
                    let moved = |ours: Option<u32>, server: u32, base: u32| {
                        ours.is_some_and(|o| server != base && server != o)
                    };
                    if moved(
                        attrs.mode,
                        st.unix_mode_bits & 0o7777,
                        base.status.mode & 0o7777,
                    ) || moved(attrs.owner, st.owner, base.status.owner)
                        || moved(attrs.group, st.group, base.status.group)
                    {
                        return Ok(Checked::Conflict(
                            ConflictKind::Attr,
                            "the same attribute was changed on the server".into(),
                            Some(st.data_version),
                        ));
                    }
                }
                Ok(Checked::Go {
                    pre: vec![(*fid, st.data_version)],
                })
            }
            Change::StoreData { fid, data } => {
                if is_local(*fid) {
                    return dependent("the file");
                }
                let Some(st) = self.server_status(rec, who, *fid).await? else {
                    return Ok(Checked::Conflict(
                        ConflictKind::UpdateRemove,
                        "the file was removed on the server".into(),
                        None,
                    ));
                };
                if st.data_version != data.base_dv {
                    return Ok(Checked::Conflict(
                        ConflictKind::UpdateUpdate,
                        "the file was changed on the server too".into(),
                        Some(st.data_version),
                    ));
                }
                Ok(Checked::Go {
                    pre: vec![(*fid, st.data_version)],
                })
            }
            Change::StoreAcl { .. } => Ok(Checked::Go { pre: Vec::new() }),
        }
    }

    /// Looks at the server to tell whether a record sent without a
    /// recorded answer was applied.
    async fn settle(&self, rec: &LogRecord, who: &Identity, pre: &[(Fid, u64)]) -> Result<Settled> {
        let ours = |st: &FetchStatus| st.owner == who.vice_id.map_or(32766, |v| v as u32);
        match &rec.m.change {
            Change::CreateFile { dir, name, .. }
            | Change::MakeDir { dir, name, .. }
            | Change::Symlink { dir, name, .. } => {
                if is_local(*dir) {
                    return Ok(Settled::Resend);
                }
                match self.server_entry(rec, who, *dir, name).await? {
                    None => Ok(Settled::Resend),
                    Some(f) => match self.server_status(rec, who, f).await? {
                        Some(st) if ours(&st) => Ok(Settled::Applied(Some(f))),
                        _ => Ok(Settled::Conflict(
                            ConflictKind::NameName,
                            "the name exists on the server, made by someone else".into(),
                            None,
                        )),
                    },
                }
            }
            Change::Link {
                dir,
                name,
                existing,
            } => match self.server_entry(rec, who, *dir, name).await? {
                None => Ok(Settled::Resend),
                Some(f) if f == *existing => Ok(Settled::Applied(None)),
                Some(_) => Ok(Settled::Conflict(
                    ConflictKind::NameName,
                    "the name exists on the server".into(),
                    None,
                )),
            },
            Change::RemoveFile { dir, name } | Change::RemoveDir { dir, name } => {
                match self.server_entry(rec, who, *dir, name).await? {
                    None => Ok(Settled::Applied(None)),
                    Some(_) => Ok(Settled::Resend),
                }
            }
            Change::Rename {
                from_dir,
                from_name,
                to_dir,
                to_name,
            } => {
                let there = self.server_entry(rec, who, *to_dir, to_name).await?;
                if there.is_some() && there == rec.moved {
                    return Ok(Settled::Applied(None));
                }
                let here = self.server_entry(rec, who, *from_dir, from_name).await?;
                if here.is_some() && here == rec.moved {
                    Ok(Settled::Resend)
                } else {
                    Ok(Settled::Conflict(
                        ConflictKind::NameName,
                        "the object renamed is neither at its old nor its new name".into(),
                        None,
                    ))
                }
            }
            Change::StoreStatus { .. } | Change::StoreAcl { .. } => Ok(Settled::Resend),
            Change::StoreData { fid, data } => {
                let Some(&(_, pre_dv)) = pre.iter().find(|(f, _)| f == fid) else {
                    // Sent while online: the base is what it was sent against.
                    return self.settle_store(rec, who, *fid, data.base_dv, data).await;
                };
                self.settle_store(rec, who, *fid, pre_dv, data).await
            }
        }
    }

    async fn settle_store(
        &self,
        rec: &LogRecord,
        who: &Identity,
        fid: Fid,
        pre_dv: u64,
        data: &crate::mutation::DataChange,
    ) -> Result<Settled> {
        let plan = self.inner.exec.plan(data);
        let pieces = plan.len();
        let Some(st) = self.server_status(rec, who, fid).await? else {
            return Ok(Settled::Conflict(
                ConflictKind::UpdateRemove,
                "the file was removed on the server".into(),
                None,
            ));
        };
        if st.data_version < pre_dv || st.data_version - pre_dv > pieces as u64 {
            return Ok(Settled::Conflict(
                ConflictKind::UpdateUpdate,
                "the file changed on the server while our store was in flight".into(),
                Some(st.data_version),
            ));
        }
        let moved = (st.data_version - pre_dv) as usize;
        if moved == 0 {
            return Ok(Settled::ResumeAt(0, pre_dv));
        }
        // Pieces go in order, one version each; but a piece cut short (the
        // daemon killed, the link cut mid-transfer) still moves the version
        // on an OpenAFS fileserver (the vnode changed), with only part of
        // its bytes. The last piece counted is on the server only if its
        // bytes and the length are ours; else it is sent again (its bytes
        // are the same: the content ends right, the version moves once
        // more).
        let last = &plan[moved - 1];
        let key = self.node(rec, fid).key();
        let ours = match self.inner.exec.piece_bytes(&key, data, last) {
            Ok(b) => b,
            // Our chunks already became the new version's: the store
            // finished and only its answer was not recorded.
            Err(_) if moved == pieces && st.length == data.length => {
                return Ok(Settled::ResumeAt(moved, pre_dv));
            }
            Err(e) => return Err(e),
        };
        let reply = self
            .inner
            .valid
            .call(
                &self.node(rec, fid),
                who,
                &rpcs::FetchData64 {
                    fid,
                    pos: last.pos,
                    length: ours.len() as u64,
                },
            )
            .await?;
        // The piece's bytes are there (a fileserver leaves a file written
        // in several pieces at the end of the data so far, not at the
        // final length each piece names).
        let there = if ours.is_empty() {
            // A piece that only sets the length (a cut).
            st.length == last.file_length
        } else {
            reply.data == ours && st.length >= last.pos + ours.len() as u64
        };
        if there {
            return Ok(Settled::ResumeAt(moved, pre_dv));
        }
        // A piece cut short wrote a prefix of ours (a fileserver writes a
        // piece from its start); anything else is another writer's.
        let head = ours.len().min(1024);
        if head > 0 && reply.data.len() >= head && reply.data[..head] == ours[..head] {
            tracing::info!(
                seq = rec.seq,
                piece = moved - 1,
                "a store piece cut short on the server: sending it again"
            );
            return Ok(Settled::ResumeAt(moved - 1, pre_dv + 1));
        }
        Ok(Settled::Conflict(
            ConflictKind::UpdateUpdate,
            "the file changed on the server while our store was in flight".into(),
            Some(st.data_version),
        ))
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

    /// Moves a record, and the later ones that depend on it, out of the
    /// log into a conflict that keeps their data (see `conflicts.rs`).
    fn conflict(
        &self,
        rec: &LogRecord,
        kind: ConflictKind,
        why: &str,
        server_dv: Option<u64>,
    ) -> Result<()> {
        let inner = &self.inner;
        let journal = &inner.exec.journal;
        let _g = inner
            .exec
            .log_lock
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        // Records that cannot happen without this one: those naming what
        // it made.
        let mut moved = vec![rec.clone()];
        if let Some(local) = rec.created {
            moved.extend(
                journal
                    .records_of(&rec.m.cell, local)
                    .into_iter()
                    .filter(|r| r.seq != rec.seq),
            );
        }
        let fid = match &rec.m.change {
            Change::StoreData { fid, .. }
            | Change::StoreStatus { fid, .. }
            | Change::StoreAcl { fid, .. } => *fid,
            Change::Link { existing, .. } => *existing,
            _ => rec
                .created
                .or(rec.victim.map(|v| v.0))
                .or(rec.moved)
                .unwrap_or(rec.m.change.dirs()[0]),
        };
        let path = self.path_of(rec, fid);
        let key = self.node(rec, fid).key();
        let base = journal.base(&key);
        let local_dv = match &rec.m.change {
            Change::StoreData { .. } => Some(crate::writes::local_dv(rec.m.uid)),
            _ => None,
        };
        let mut c = ConflictRecord {
            id: inner.conflicts.next_id(),
            kind,
            reason: why.to_string(),
            path: path.clone(),
            fid,
            base_dv: base.as_ref().map(|b| b.status.data_version),
            local_dv,
            server_dv,
            local_len: None,
            base_len: None,
            detected: now_secs(),
            records: moved.clone(),
        };
        // The base data goes with the conflict when nothing else needs it.
        let others: Vec<LogRecord> = journal
            .records_of(&rec.m.cell, fid)
            .into_iter()
            .filter(|r| !moved.iter().any(|m| m.seq == r.seq))
            .collect();
        let base_dv = if others.is_empty() { c.base_dv } else { None };
        let mut ops = inner.conflicts.keep_ops(&mut c, base_dv);
        // The path shows the server's version: local views of objects no
        // other record needs go; an entry made here leaves its listing.
        let mut views: Vec<FidKey> = Vec::new();
        for r in &moved {
            for f in r.fids() {
                let still: Vec<LogRecord> = journal
                    .records_of(&r.m.cell, f)
                    .into_iter()
                    .filter(|o| !moved.iter().any(|m| m.seq == o.seq))
                    .collect();
                let k = self.node(r, f).key();
                if still.is_empty() {
                    ops.push(Op::DeleteStatus(k.clone()));
                    ops.push(Op::DeleteDir(k.clone()));
                    if is_local(f) {
                        ops.push(Op::DeleteChunks(k.clone()));
                    }
                    views.push(k);
                } else if let Some(made) = r.created {
                    if let Some(mut l) = inner.dirs.held(&self.node(r, f))? {
                        let before = l.entries.len();
                        l.entries
                            .retain(|e| !(e.vnode == made.vnode && e.unique == made.unique));
                        if l.entries.len() != before {
                            ops.push(Op::PutDir(k.clone(), l.clone()));
                            inner.dirs.set_held(k, l);
                        }
                    }
                }
            }
        }
        journal.commit(ops, Vec::new(), moved.clone(), true)?;
        for k in &views {
            inner.valid.forget(k);
            inner.dirs.forget(|x| x == k);
            inner.data.forget(|x| x == k);
            inner.nodes.invalidate(k);
        }
        for r in &moved {
            if let Change::StoreData { fid, .. } = &r.m.change {
                inner.open.forget_uid(&self.node(r, *fid).key(), r.m.uid);
            }
        }
        Stats::add(&inner.stats.conflicts, 1);
        tracing::warn!(
            id = c.id,
            kind = kind.as_str(),
            path = %path,
            uid = rec.m.uid,
            "conflict: {why}; the local version is kept (afsd-rs conflicts)"
        );
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
