//! What the daemon tells people: one stream of events (a volume went
//! offline or came back, a conflict, replay waiting for a token, a token
//! about to expire, a pin done, a process waiting for a file).
//!
//! Every event is logged through `tracing` with structured fields (the
//! daemon's journald layer turns them into journal fields), kept in a
//! bounded ring so that `afsd-rs events` can show recent ones, and sent to
//! live subscribers (`afsd-rs events --follow`, `afsd-rs agent`). An event
//! names the uid it concerns; one with no uid (a volume's mode) concerns
//! everyone. The control socket shows each user only their own events and
//! the public ones: it knows the peer's uid, the request does not say it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::status::now_secs;

/// Events kept for `afsd-rs events` without `--follow`.
pub const RING: usize = 1024;

/// What happened.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum EventKind {
    /// A volume went disconnected (by itself, or `afsd-rs offline`).
    VolumeOffline {
        cell: String,
        volume: u32,
        reason: String,
    },
    /// A volume is connected again, its change log replayed.
    VolumeOnline { cell: String, volume: u32 },
    /// A user's changes to a volume were replayed.
    Reintegrated {
        cell: String,
        volume: u32,
        replayed: u64,
    },
    /// An offline change met a server that changed too, or was refused.
    Conflict {
        id: u64,
        kind: String,
        path: String,
        reason: String,
    },
    /// Replay of this user's changes waits for a valid token.
    ReplayPaused {
        cell: String,
        volume: u32,
        reason: String,
    },
    /// The user's token for a cell ends within `minutes`.
    TokenExpiring {
        cell: String,
        end: u64,
        minutes: u64,
    },
    /// The user's token for a cell has ended.
    TokenExpired { cell: String, end: u64 },
    /// A pin has all its data in the cache.
    PinDone {
        id: u64,
        path: String,
        files: u64,
        bytes: u64,
    },
    /// A pin (or a pinned file that grew) does not fit the pin reserve.
    PinOverReserve {
        path: String,
        needed: u64,
        available: u64,
    },
    /// A process waits for data that is not cached, its volume offline.
    Waiting {
        pid: u32,
        command: String,
        path: String,
    },
    /// A read of data that is not cached, its volume offline.
    Miss {
        pid: u32,
        command: String,
        path: String,
    },
}

impl EventKind {
    /// The kebab-case name, as in `AFSD_EVENT=` journal fields.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::VolumeOffline { .. } => "volume-offline",
            EventKind::VolumeOnline { .. } => "volume-online",
            EventKind::Reintegrated { .. } => "reintegrated",
            EventKind::Conflict { .. } => "conflict",
            EventKind::ReplayPaused { .. } => "replay-paused",
            EventKind::TokenExpiring { .. } => "token-expiring",
            EventKind::TokenExpired { .. } => "token-expired",
            EventKind::PinDone { .. } => "pin-done",
            EventKind::PinOverReserve { .. } => "pin-over-reserve",
            EventKind::Waiting { .. } => "waiting",
            EventKind::Miss { .. } => "miss",
        }
    }
}

/// One event as kept and sent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Increases by one per event of this daemon run.
    pub seq: u64,
    /// Unix seconds.
    pub time: u64,
    /// The user the event concerns; None: every user (a volume's mode).
    pub uid: Option<u32>,
    #[serde(flatten)]
    pub kind: EventKind,
}

impl Event {
    /// Whether `uid` may see this event: their own, or a public one.
    /// Root sees every event.
    pub fn visible_to(&self, uid: u32) -> bool {
        uid == 0 || self.uid.is_none() || self.uid == Some(uid)
    }
}

/// The daemon's events: a ring of recent ones and live subscribers.
pub struct EventBus {
    seq: AtomicU64,
    ring: Mutex<VecDeque<Event>>,
    live: tokio::sync::broadcast::Sender<Event>,
}

impl Default for EventBus {
    fn default() -> Self {
        EventBus {
            seq: AtomicU64::new(1),
            ring: Mutex::new(VecDeque::with_capacity(RING)),
            live: tokio::sync::broadcast::channel(RING).0,
        }
    }
}

impl EventBus {
    /// Records an event: logs it, keeps it, and sends it to subscribers.
    pub fn emit(&self, uid: Option<u32>, kind: EventKind) -> Event {
        let ev = Event {
            seq: self.seq.fetch_add(1, Ordering::Relaxed),
            time: now_secs(),
            uid,
            kind,
        };
        let detail = serde_json::to_string(&ev.kind).unwrap_or_default();
        tracing::info!(
            target: "afsd_event",
            afsd_event = ev.kind.name(),
            afsd_uid = ev.uid.map(i64::from).unwrap_or(-1),
            afsd_detail = %detail,
            "event {}",
            ev.kind.name()
        );
        {
            let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
            if ring.len() == RING {
                ring.pop_front();
            }
            ring.push_back(ev.clone());
        }
        // No subscriber is not an error.
        let _ = self.live.send(ev.clone());
        ev
    }

    /// The kept events `uid` may see, oldest first.
    pub fn recent(&self, uid: u32) -> Vec<Event> {
        self.ring
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|e| e.visible_to(uid))
            .cloned()
            .collect()
    }

    /// Live events from now on (every uid's: filter with
    /// [`Event::visible_to`]). A subscriber that falls more than
    /// [`RING`] events behind loses the oldest (`RecvError::Lagged`).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Event> {
        self.live.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_user_sees_their_own_and_public_events() {
        let bus = EventBus::default();
        let mut rx = bus.subscribe();
        bus.emit(
            Some(1000),
            EventKind::TokenExpired {
                cell: "c".into(),
                end: 1,
            },
        );
        bus.emit(
            None,
            EventKind::VolumeOnline {
                cell: "c".into(),
                volume: 7,
            },
        );
        let mine: Vec<_> = bus.recent(1000).into_iter().map(|e| e.seq).collect();
        let theirs: Vec<_> = bus.recent(1001).into_iter().map(|e| e.seq).collect();
        assert_eq!(mine, vec![1, 2]);
        assert_eq!(theirs, vec![2]);
        assert_eq!(bus.recent(0).len(), 2);
        assert_eq!(rx.try_recv().unwrap().seq, 1);
        let line = serde_json::to_string(&rx.try_recv().unwrap()).unwrap();
        assert!(line.contains("\"event\":\"volume-online\""), "{line}");
    }

    #[test]
    fn the_ring_is_bounded() {
        let bus = EventBus::default();
        for i in 0..(RING as u32 + 10) {
            bus.emit(
                Some(i),
                EventKind::Miss {
                    pid: i,
                    command: "x".into(),
                    path: "/p".into(),
                },
            );
        }
        let all = bus.recent(0);
        assert_eq!(all.len(), RING);
        assert_eq!(all[0].seq, 11);
    }
}
