//! A replayed record that no longer fits the server becomes a conflict
//! (see `conflicts.rs`): it leaves the log with what depends on it, its
//! data kept, and the path shows the server's version.

use afs_proto::types::Fid;
use cache::{FidKey, Op};

use crate::client::AfsClient;
use crate::conflicts::{ConflictKind, ConflictRecord, KEPT_BASE, KEPT_LOCAL};
use crate::journal::{is_local, LogRecord};
use crate::mutation::Change;
use crate::status::now_secs;
use crate::{Result, Stats};

impl AfsClient {
    /// A rename over a file whose name the server now gives another file:
    /// both sides replaced the file (a save through a temporary file and a
    /// rename, as git, editors and office programs do). It becomes an
    /// update/update conflict on the name, as if the file had been
    /// written in place: the server's file stays at the name, the file we
    /// renamed there is kept as the local side (the cache holds it whole,
    /// see `whole_file_cached`), and the name it came from, ours, leaves
    /// the server: nothing of the conflicting change stays half-applied
    /// there (no `index.lock` left behind). The conflict is recorded
    /// before that remove is sent, so a crash between them loses nothing;
    /// a remove that fails leaves the temporary name for the user.
    pub(super) async fn replaced(
        &self,
        rec: &LogRecord,
        who: &crate::identity::Identity,
        server: Fid,
        server_dv: u64,
    ) -> Result<()> {
        let inner = &self.inner;
        let (
            Some(moved),
            Some((victim, _)),
            Change::Rename {
                from_dir,
                from_name,
                ..
            },
        ) = (rec.moved, rec.victim, &rec.m.change)
        else {
            return self.conflict(rec, ConflictKind::NameName, "the new name is taken", None);
        };
        let mnode = self.node(rec, moved);
        let mkey = mnode.key();
        let vkey = self.node(rec, victim).key();
        // The file we renamed there, as the server has it (our replayed
        // writes; the cache's view of it is the local one).
        let read = async {
            let Some(st) = self.server_status(rec, who, moved).await? else {
                return Ok(None);
            };
            let (reply, _, _) = inner.valid.fetch_data(&mnode, who, 0, st.length).await?;
            let mut local = inner
                .valid
                .statuses
                .known(&mkey)
                .or_else(|| inner.store.get_status(&mkey).ok().flatten())
                .ok_or_else(|| crate::Error::Protocol("no status of the renamed file".into()))?;
            local.data_version = st.data_version;
            local.client_modtime = st.client_modtime;
            local.length = reply.data.len() as u64;
            Ok::<_, crate::Error>(Some((local, reply.data.to_vec())))
        };
        let (mst, data) = match read.await {
            Ok(Some(x)) => x,
            Err(e) if crate::connectivity::is_network(&e) => return Err(e),
            _ => {
                return self.conflict(
                    rec,
                    ConflictKind::NameName,
                    "the new name is taken on the server",
                    None,
                )
            }
        };
        let journal = &inner.exec.journal;
        {
            let _g = inner
                .exec
                .log_lock
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let base = journal.base(&vkey);
            let mut c = ConflictRecord {
                id: inner.conflicts.next_id(),
                kind: ConflictKind::UpdateUpdate,
                reason: "the file was replaced on the server too".into(),
                path: self.path_of(rec, victim),
                fid: server,
                base_dv: base.as_ref().map(|b| b.status.data_version),
                local_dv: Some(mst.data_version),
                server_dv: Some(server_dv),
                local_len: Some(mst.length),
                base_len: None,
                detected: now_secs(),
                records: vec![rec.clone()],
            };
            let kept = c.kept_key();
            let cs = inner.config.chunk_size.max(1);
            let mut ops = Vec::new();
            for (index, piece) in data.chunks(cs as usize).enumerate() {
                ops.push(Op::PutDirtyChunk {
                    fid: kept.clone(),
                    data_version: KEPT_LOCAL,
                    index: index as u64,
                    data: piece.to_vec(),
                });
            }
            // The base: what the name held before our first change, when
            // the cache still has it whole.
            if let Some(b) = &base {
                let bdv = b.status.data_version;
                if inner.store.cached_bytes(&vkey, bdv) == b.status.length {
                    for index in 0..b.status.length.div_ceil(cs) {
                        ops.push(Op::MoveChunkTo {
                            from: vkey.clone(),
                            from_dv: bdv,
                            index,
                            to: kept.clone(),
                            to_dv: KEPT_BASE,
                            dirty: true,
                        });
                    }
                    c.base_len = Some(b.status.length);
                }
            }
            ops.extend(inner.conflicts.keep_ops(&mut c, None));
            ops.push(crate::states::capture(
                c.id,
                base.as_ref().map(|b| &b.status),
                Some(&mst),
                c.local_len,
            ));
            ops.push(Op::DeleteStatus(mkey.clone()));
            journal.commit(ops, Vec::new(), vec![rec.clone()], true)?;
            for k in [&mkey, &vkey] {
                inner.valid.forget(k);
                inner.data.forget(|x| x == k);
                inner.nodes.invalidate(k);
            }
            for d in rec.m.change.dirs() {
                let k = self.node(rec, d).key();
                inner.valid.forget(&k);
                inner.dirs.forget(|x| *x == k);
                inner.nodes.invalidate(&k);
            }
            self.announce(rec, Some(server), &c);
        }
        // Our temporary name goes from the server (it is gone here too).
        let mut rm = rec.m.clone();
        rm.change = Change::RemoveFile {
            dir: *from_dir,
            name: from_name.clone(),
        };
        if let Err(e) = inner.exec.send(who, &rm, 0, None).await {
            if !super::gone(&e) {
                tracing::warn!(
                    name = %String::from_utf8_lossy(from_name),
                    "removing our renamed file's old name after a conflict: {e}; it stays on the server"
                );
            }
        }
        Ok(())
    }

    /// Moves a record, and the later ones that depend on it, out of the
    /// log into a conflict that keeps their data (see `conflicts.rs`).
    pub(super) fn conflict(
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
        // The base and local states, for `conflict show` and the xattrs.
        let mut local_st = inner
            .valid
            .statuses
            .known(&key)
            .or_else(|| inner.store.get_status(&key).ok().flatten());
        // Its modification time is that of our last change to it (a store
        // is sent with its record's time; a setattr may name one).
        if let Some(st) = local_st.as_mut() {
            for r in &moved {
                match &r.m.change {
                    Change::StoreData { fid: f, .. } if *f == fid => {
                        st.client_modtime = r.time as u32;
                    }
                    Change::StoreStatus { fid: f, attrs } if *f == fid => {
                        if let Some(t) = attrs.mtime {
                            st.client_modtime = t;
                        }
                    }
                    _ => {}
                }
            }
        }
        ops.push(crate::states::capture(
            c.id,
            base.as_ref().map(|b| &b.status),
            local_st.as_ref(),
            c.local_len,
        ));
        // The path shows the server's version: local views of objects no
        // other record needs go; an entry made here leaves its listing.
        let mut views: Vec<FidKey> = Vec::new();
        let mut relisted: Vec<FidKey> = Vec::new();
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
                            inner.dirs.set_held(k.clone(), l);
                            // The kernel may keep the name long.
                            relisted.push(k);
                        }
                    }
                }
            }
        }
        journal.commit(ops, Vec::new(), moved.clone(), true)?;
        for k in &relisted {
            inner.nodes.invalidate(k);
        }
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
        self.announce(rec, (!is_local(fid)).then_some(fid), &c);
        Ok(())
    }

    /// A conflict made: the server's version of `fid` is fetched (the
    /// path shows it), counted, logged and told to its owner.
    fn announce(&self, rec: &LogRecord, fetch: Option<Fid>, c: &ConflictRecord) {
        let inner = &self.inner;
        if let Some(fid) = fetch {
            inner
                .conflicts
                .to_fetch
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((rec.m.cell.clone(), fid, rec.m.uid));
        }
        Stats::add(&inner.stats.conflicts, 1);
        tracing::warn!(
            id = c.id,
            kind = c.kind.as_str(),
            path = %c.path,
            uid = rec.m.uid,
            "conflict: {}; the local version is kept (afsd-rs conflicts)",
            c.reason
        );
        inner.valid.conn.events.emit(
            Some(rec.m.uid),
            crate::events::EventKind::Conflict {
                id: c.id,
                kind: c.kind.as_str().to_string(),
                path: c.path.clone(),
                reason: c.reason.clone(),
            },
        );
    }
}
