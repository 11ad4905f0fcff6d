//! The entry points of disconnected operation: volume modes by hand
//! (`afsd-rs offline`, `online`), `status`, `sync`, and the conflicts.

use serde::{Deserialize, Serialize};

use crate::client::AfsClient;
use crate::conflicts::{ConflictInfo, ConflictSide};
use crate::connectivity::Mode;
use crate::{Error, Result};

/// A user whose changes replay waits for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waiting {
    pub uid: u32,
    /// The principal of the expired token, when there is one.
    pub principal: Option<String>,
    /// Why, and what to do about it.
    pub reason: String,
}

/// What `afsd-rs status` shows of one volume.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeStatus {
    pub cell: String,
    pub volume: u32,
    /// The volume's name, when the client located it.
    pub name: String,
    pub mode: Mode,
    /// Put offline by hand (only `online` ends it).
    pub manual: bool,
    /// Unix seconds the mode began.
    pub since: u64,
    /// Changes logged and not yet on the server.
    pub pending_ops: u64,
    /// File bytes they will send.
    pub pending_bytes: u64,
    pub conflicts: u64,
    pub waiting_for: Vec<Waiting>,
    /// Why the volume is in its mode.
    pub reason: String,
}

/// Which volumes a command is about.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Targets {
    /// Every volume the client has used.
    All,
    /// Every volume of a cell the client has used.
    Cell(String),
    /// Volume instances, by (cell, volume id); the other instances of the
    /// same volume (RW, RO, backup) come along.
    Volumes(Vec<(String, u32)>),
}

impl AfsClient {
    /// The volumes a command names, with their sibling instances.
    fn targets(&self, t: &Targets) -> Vec<(String, u32)> {
        let inner = &self.inner;
        let mut known: Vec<(String, u32)> =
            inner.valid.conn.all().into_iter().map(|(k, _)| k).collect();
        for v in inner.exec.journal.volumes() {
            if !known.contains(&v) {
                known.push(v);
            }
        }
        let mut out: Vec<(String, u32)> = match t {
            Targets::All => known,
            Targets::Cell(c) => {
                let c = c.to_ascii_lowercase();
                known.into_iter().filter(|(cell, _)| *cell == c).collect()
            }
            Targets::Volumes(v) => v
                .iter()
                .map(|(c, id)| (c.to_ascii_lowercase(), *id))
                .collect(),
        };
        let siblings: Vec<(String, u32)> = out
            .iter()
            .filter_map(|(c, id)| inner.fs.volume_by_id(c, *id).map(|(i, _)| (c.clone(), i)))
            .flat_map(|(c, i)| {
                [i.rw_id, i.ro_id, i.bk_id]
                    .into_iter()
                    .filter(|id| *id != 0)
                    .map(move |id| (c.clone(), id))
            })
            .collect();
        out.extend(siblings);
        out.sort();
        out.dedup();
        out
    }

    /// `afsd-rs offline`: nothing is sent to these volumes until
    /// [`AfsClient::go_online`]; changes are logged.
    pub fn go_offline(&self, t: &Targets) -> Result<Vec<VolumeStatus>> {
        let vols = self.targets(t);
        if vols.is_empty() {
            return Err(Error::Invalid(
                "no volume to put offline (the client has used none there yet)".into(),
            ));
        }
        for (cell, vol) in &vols {
            self.inner.valid.conn.set_offline(cell, *vol);
        }
        self.inner.store.persist()?;
        Ok(self
            .volume_status()
            .into_iter()
            .filter(|s| vols.contains(&(s.cell.clone(), s.volume)))
            .collect())
    }

    /// `afsd-rs online`: the volumes take changes again and their logs
    /// replay (in the background). A dry run lists what would be sent.
    pub async fn go_online(&self, t: &Targets, dry_run: bool) -> Result<String> {
        let vols = self.targets(t);
        let mut out = String::new();
        for (cell, vol) in &vols {
            let recs = self.inner.exec.journal.records(cell, *vol);
            let name = self.volume_name(cell, *vol);
            if dry_run {
                out.push_str(&format!(
                    "{cell} {name}: {} changes would be replayed\n",
                    recs.len()
                ));
                for r in &recs {
                    out.push_str(&format!(
                        "  #{} {} uid {} {}\n",
                        r.seq,
                        r.m.change.kind(),
                        r.m.uid,
                        self.path_of(r, first_fid(r))
                    ));
                }
                continue;
            }
            let was = self.inner.valid.conn.mode(cell, *vol);
            if was == Mode::Disconnected {
                self.come_back(cell, *vol, "put online by hand");
            }
            out.push_str(&format!(
                "{cell} {name}: online, {} changes to replay\n",
                recs.len()
            ));
        }
        if !dry_run {
            self.inner.valid.conn.wake.notify_one();
        }
        Ok(out)
    }

    /// `afsd-rs sync`: replays the volumes' logs now and reports what is
    /// left. Volumes put offline by hand are left alone.
    pub async fn sync(&self, t: &Targets) -> Result<String> {
        let vols = self.targets(t);
        let mut out = String::new();
        for (cell, vol) in &vols {
            let name = self.volume_name(cell, *vol);
            let m = self.inner.valid.conn.get(cell, *vol);
            if m.as_ref()
                .is_some_and(|m| m.mode == Mode::Disconnected && m.manual)
            {
                out.push_str(&format!(
                    "{cell} {name}: offline by hand; run `afsd-rs online` first\n"
                ));
                continue;
            }
            if m.as_ref().is_some_and(|m| m.mode == Mode::Disconnected) {
                self.reconnect_pass().await;
            } else if self.inner.exec.journal.has_log(cell, *vol) {
                self.inner
                    .valid
                    .conn
                    .set(cell, *vol, Mode::Reintegrating, "sync");
                self.replay_volume(cell, *vol).await;
            }
            let (ops, bytes) = self.inner.exec.journal.totals(cell, *vol);
            let mode = self.inner.valid.conn.mode(cell, *vol);
            if ops > 0 || mode != Mode::Connected {
                out.push_str(&format!(
                    "{cell} {name}: {mode}, {ops} changes ({bytes} bytes) left\n"
                ));
            }
        }
        if out.is_empty() {
            out.push_str("everything is on the server\n");
        }
        Ok(out)
    }

    fn volume_name(&self, cell: &str, vol: u32) -> String {
        self.inner.valid.volume_name(cell, vol)
    }

    /// `afsd-rs status`: every volume used, with its mode and log.
    pub fn volume_status(&self) -> Vec<VolumeStatus> {
        let inner = &self.inner;
        let mut vols = inner.valid.conn.all();
        for (cell, vol) in inner.exec.journal.volumes() {
            if !vols.iter().any(|(k, _)| k.0 == cell && k.1 == vol) {
                if let Some(m) = inner.valid.conn.get(&cell, vol) {
                    vols.push(((cell, vol), m));
                }
            }
        }
        let open_conflicts = self.conflicts(None);
        vols.into_iter()
            .map(|((cell, volume), m)| {
                let (pending_ops, pending_bytes) = inner.exec.journal.totals(&cell, volume);
                VolumeStatus {
                    name: self.volume_name(&cell, volume),
                    conflicts: open_conflicts
                        .iter()
                        .filter(|c| c.volume == volume && c.cell == cell)
                        .count() as u64,
                    cell,
                    volume,
                    mode: m.mode,
                    manual: m.manual,
                    since: m.since,
                    pending_ops,
                    pending_bytes,
                    waiting_for: m.waiting,
                    reason: m.reason,
                }
            })
            .collect()
    }

    /// The daemon's event stream (`afsd-rs events`, the agent).
    pub fn events(&self) -> &crate::events::EventBus {
        &self.inner.valid.conn.events
    }

    /// The conflicts of `uid` (None: everyone's, for root).
    pub fn conflicts(&self, uid: Option<u32>) -> Vec<ConflictInfo> {
        let mut v: Vec<ConflictInfo> = self
            .inner
            .conflicts
            .all()
            .iter()
            .filter(|c| !self.is_resolved(c.id))
            .map(|c| c.info())
            .filter(|c| uid.is_none_or(|u| c.uid == u))
            .collect();
        v.sort_by_key(|c| c.id);
        v
    }

    /// The bytes of a conflict's kept version, for its owner (or root).
    pub fn conflict_data(&self, uid: u32, id: u64, side: ConflictSide) -> Result<Vec<u8>> {
        let c = self.conflict_of(uid, id)?;
        self.inner
            .conflicts
            .data(&c, side, self.inner.config.chunk_size)
    }
}

fn first_fid(r: &crate::journal::LogRecord) -> afs_proto::types::Fid {
    r.fids()
        .first()
        .copied()
        .unwrap_or(afs_proto::types::Fid::new(r.m.volume, 1, 1))
}
