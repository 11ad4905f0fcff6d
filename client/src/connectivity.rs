//! Whether each volume is reachable: the mode of every volume instance the
//! client has used, per (cell, volume id).
//!
//! ```text
//!   Connected ──(call timed out / network unreachable, or `offline`)──▶ Disconnected
//!   Disconnected ──(probe answers, or `online`)──▶ Reintegrating
//!   Reintegrating ──(change log of the volume empty)──▶ Connected
//!   Reintegrating ──(the next record's user has no valid token)──▶ Paused
//!   Paused ──(`aklog` of that user)──▶ Reintegrating
//!   Reintegrating/Paused ──(call timed out)──▶ Disconnected
//! ```
//!
//! A volume put offline by hand (`afsd-rs offline`) stays so until
//! `afsd-rs online`: probes do not bring it back. Nothing is ever sent to
//! a disconnected volume: [`Connectivity::blocks`] is asked before every
//! call, so that a cut network costs one dead time, not one per request.
//! Modes live in memory; the change log, which is persistent, says after a
//! restart which volumes have work to replay.

use std::collections::HashMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::status::now_secs;

/// The mode of a volume.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Calls go to the fileserver; changes are made there at once.
    Connected,
    /// Nothing is sent; cached data is served (stale if need be) and
    /// changes are logged.
    Disconnected,
    /// The fileserver answers again and the change log is being replayed;
    /// new changes join the log's tail.
    Reintegrating,
    /// Replay waits for a user's token (see [`crate::VolumeStatus`]).
    Paused,
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::Connected => "connected",
            Mode::Disconnected => "disconnected",
            Mode::Reintegrating => "reintegrating",
            Mode::Paused => "paused",
        })
    }
}

/// The state of one volume instance.
#[derive(Clone, Debug)]
pub(crate) struct VolMode {
    pub mode: Mode,
    /// Put offline by hand: only `online` ends it.
    pub manual: bool,
    /// Unix seconds the mode began.
    pub since: u64,
    /// Why (the error that took it down, the user replay waits for).
    pub reason: String,
    /// The users whose records replay waits for (no valid token).
    pub waiting: Vec<crate::Waiting>,
}

impl VolMode {
    fn new(mode: Mode, manual: bool, reason: String) -> Self {
        VolMode {
            mode,
            manual,
            since: now_secs(),
            reason,
            waiting: Vec::new(),
        }
    }
}

pub(crate) type VolKey = (String, u32);

/// The modes of the volumes, and a signal for the reintegration task.
#[derive(Default)]
pub(crate) struct Connectivity {
    vols: Mutex<HashMap<VolKey, VolMode>>,
    /// Wakes the reconnect/replay task: a mode changed, a token arrived,
    /// a change was logged.
    pub(crate) wake: tokio::sync::Notify,
    /// Where mode changes are told.
    pub(crate) events: std::sync::Arc<crate::events::EventBus>,
    /// Counts mode changes: requests waiting for a volume (the miss
    /// policy) try again at each.
    pub(crate) changes: tokio::sync::watch::Sender<u64>,
}

impl Connectivity {
    fn changed(&self) {
        self.changes.send_modify(|n| *n += 1);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<VolKey, VolMode>> {
        self.vols.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The mode of a volume (Connected when never seen).
    pub(crate) fn mode(&self, cell: &str, volume: u32) -> Mode {
        self.lock()
            .get(&(cell.to_string(), volume))
            .map_or(Mode::Connected, |v| v.mode)
    }

    pub(crate) fn get(&self, cell: &str, volume: u32) -> Option<VolMode> {
        self.lock().get(&(cell.to_string(), volume)).cloned()
    }

    /// True when nothing may be sent to the volume now. Replay itself
    /// sends while Reintegrating, through its own path.
    pub(crate) fn blocks(&self, cell: &str, volume: u32) -> bool {
        self.mode(cell, volume) == Mode::Disconnected
    }

    /// Every volume with a mode other than Connected, and the ones known.
    pub(crate) fn all(&self) -> Vec<(VolKey, VolMode)> {
        let mut v: Vec<_> = self
            .lock()
            .iter()
            .map(|(k, m)| (k.clone(), m.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Records that a volume was used (so `status` lists it).
    pub(crate) fn seen(&self, cell: &str, volume: u32) {
        let mut vols = self.lock();
        if vols.keys().any(|(c, v)| *v == volume && c == cell) {
            return;
        }
        vols.entry((cell.to_string(), volume))
            .or_insert_with(|| VolMode::new(Mode::Connected, false, String::new()));
    }

    /// A call to the volume failed for want of a network or a server:
    /// the volume goes disconnected by itself. Returns true when this
    /// changed its mode.
    pub(crate) fn went_down(&self, cell: &str, volume: u32, reason: &str) -> bool {
        let changed = {
            let mut vols = self.lock();
            let e = vols
                .entry((cell.to_string(), volume))
                .or_insert_with(|| VolMode::new(Mode::Connected, false, String::new()));
            if e.mode == Mode::Disconnected {
                false
            } else {
                *e = VolMode::new(Mode::Disconnected, false, reason.to_string());
                true
            }
        };
        if changed {
            self.changed();
            tracing::warn!(cell, volume, reason, "volume disconnected");
            self.events.emit(
                None,
                crate::events::EventKind::VolumeOffline {
                    cell: cell.to_string(),
                    volume,
                    reason: reason.to_string(),
                },
            );
            self.wake.notify_one();
        }
        changed
    }

    /// `afsd-rs offline`: nothing goes to the volume until `online`.
    pub(crate) fn set_offline(&self, cell: &str, volume: u32) {
        self.lock().insert(
            (cell.to_string(), volume),
            VolMode::new(Mode::Disconnected, true, "put offline by hand".into()),
        );
        self.changed();
        tracing::info!(cell, volume, "volume put offline by hand");
        self.events.emit(
            None,
            crate::events::EventKind::VolumeOffline {
                cell: cell.to_string(),
                volume,
                reason: "put offline by hand".into(),
            },
        );
        self.wake.notify_one();
    }

    /// The users replay waits for.
    pub(crate) fn set_waiting(&self, cell: &str, volume: u32, waiting: Vec<crate::Waiting>) {
        let mut vols = self.lock();
        let Some(e) = vols.get_mut(&(cell.to_string(), volume)) else {
            return;
        };
        let new: Vec<crate::Waiting> = waiting
            .iter()
            .filter(|w| !e.waiting.iter().any(|o| o.uid == w.uid))
            .cloned()
            .collect();
        e.waiting = waiting;
        drop(vols);
        for w in new {
            self.events.emit(
                Some(w.uid),
                crate::events::EventKind::ReplayPaused {
                    cell: cell.to_string(),
                    volume,
                    reason: w.reason.clone(),
                },
            );
        }
    }

    /// Sets a mode (probe answered, replay began, paused or ended).
    pub(crate) fn set(&self, cell: &str, volume: u32, mode: Mode, reason: &str) {
        let mut vols = self.lock();
        let e = vols
            .entry((cell.to_string(), volume))
            .or_insert_with(|| VolMode::new(mode, false, String::new()));
        if e.mode != mode || e.reason != reason {
            let was = e.mode;
            let manual = e.manual && mode == Mode::Disconnected;
            let waiting = std::mem::take(&mut e.waiting);
            *e = VolMode::new(mode, manual, reason.to_string());
            e.waiting = waiting;
            drop(vols);
            self.changed();
            tracing::info!(cell, volume, mode = %mode, reason, "volume mode");
            if mode == Mode::Connected && was != Mode::Connected {
                self.events.emit(
                    None,
                    crate::events::EventKind::VolumeOnline {
                        cell: cell.to_string(),
                        volume,
                    },
                );
            }
            self.wake.notify_one();
        }
    }
}

/// Errors that mean the fileserver cannot be reached (as opposed to a
/// refusal, which is an answer).
pub(crate) fn is_network(e: &crate::Error) -> bool {
    matches!(
        e,
        crate::Error::TimedOut(_) | crate::Error::Unreachable(_) | crate::Error::Offline(_)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_move_as_drawn() {
        let c = Connectivity::default();
        assert_eq!(c.mode("c", 1), Mode::Connected);
        assert!(!c.blocks("c", 1));
        assert!(c.went_down("c", 1, "timed out"));
        assert!(!c.went_down("c", 1, "timed out"), "only the first counts");
        assert!(c.blocks("c", 1));
        assert!(!c.get("c", 1).unwrap().manual);
        c.set("c", 1, Mode::Reintegrating, "");
        assert!(!c.blocks("c", 1));
        c.set_offline("c", 2);
        assert!(c.get("c", 2).unwrap().manual);
        assert_eq!(c.all().len(), 2);
    }
}
