//! A replayed record that no longer fits the server becomes a conflict
//! (see `conflicts.rs`): it leaves the log with what depends on it, its
//! data kept, and the path shows the server's version.

use cache::{FidKey, Op};

use crate::client::AfsClient;
use crate::conflicts::{ConflictKind, ConflictRecord};
use crate::journal::{is_local, LogRecord};
use crate::mutation::Change;
use crate::status::now_secs;
use crate::{Result, Stats};

impl AfsClient {
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
        let local_st = inner
            .valid
            .statuses
            .known(&key)
            .or_else(|| inner.store.get_status(&key).ok().flatten());
        ops.push(crate::states::capture(
            c.id,
            base.as_ref().map(|b| &b.status),
            local_st.as_ref(),
            c.local_len,
        ));
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
        if !is_local(fid) {
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
            kind = kind.as_str(),
            path = %path,
            uid = rec.m.uid,
            "conflict: {why}; the local version is kept (afsd-rs conflicts)"
        );
        inner.valid.conn.events.emit(
            Some(rec.m.uid),
            crate::events::EventKind::Conflict {
                id: c.id,
                kind: kind.as_str().to_string(),
                path: path.to_string(),
                reason: why.to_string(),
            },
        );
        Ok(())
    }
}
