//! What the agent shows for an event: the notification's text and its
//! actions. Kept apart from D-Bus so it is tested without a bus.

use client::events::{Event, EventKind};

/// Action keys, as sent in `Notify` and returned by `ActionInvoked`.
pub const SHOW_CONFLICT: &str = "show-conflict";
pub const KEEP_BOTH: &str = "keep-both";
pub const RENEW: &str = "renew";
pub const RELEASE: &str = "release";

/// One notification to post.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    pub summary: String,
    pub body: String,
    /// (key, label) pairs.
    pub actions: Vec<(&'static str, String)>,
    /// Notifications of one group replace each other (a token's warnings,
    /// then its expiry, then paused replay, are one story).
    pub group: Option<String>,
    /// freedesktop urgency: 1 normal, 2 critical (stays until dismissed).
    pub urgency: u8,
}

/// The notice for an event, or None for events the desktop need not show
/// (volumes going offline and back, replay done, pin done, misses: they
/// are in `afsd-rs events` and the journal).
pub fn notice(ev: &Event) -> Option<Notice> {
    let renew = || vec![(RENEW, "Renew tickets".to_string())];
    let n = match &ev.kind {
        EventKind::Conflict {
            id,
            kind,
            path,
            reason,
        } => Notice {
            summary: format!("AFS conflict {id}: {}", short(path)),
            body: format!(
                "{kind} on {path}: {reason}. The server's version is at the path; yours is kept \
                 (afsd-rs conflicts)."
            ),
            actions: vec![
                (SHOW_CONFLICT, "Show conflict".to_string()),
                (KEEP_BOTH, "Keep both".to_string()),
            ],
            group: None,
            urgency: 2,
        },
        EventKind::TokenExpiring { cell, minutes, .. } => Notice {
            summary: format!("AFS token for {cell} expires in {minutes} min"),
            body: format!(
                "After that you are anonymous in {cell}, and changes made offline wait for a new \
                 token. Renew: kinit && afsd-rs aklog."
            ),
            actions: renew(),
            group: Some(format!("auth:{cell}")),
            urgency: 1,
        },
        EventKind::TokenExpired { cell, .. } => Notice {
            summary: format!("AFS token for {cell} has expired"),
            body: format!(
                "You are anonymous in {cell}; what you cached stays yours. Renew: kinit && \
                 afsd-rs aklog."
            ),
            actions: renew(),
            group: Some(format!("auth:{cell}")),
            urgency: 2,
        },
        EventKind::ReplayPaused {
            cell,
            volume,
            reason,
        } => Notice {
            summary: format!("AFS: your offline changes in {cell} wait for a token"),
            body: format!(
                "Replay to volume {volume} is paused: {reason}. It resumes by itself after kinit \
                 && afsd-rs aklog."
            ),
            actions: renew(),
            group: Some(format!("auth:{cell}")),
            urgency: 2,
        },
        EventKind::Waiting { pid, command, path } => Notice {
            summary: format!("AFS: {command} ({pid}) waits for a file"),
            body: format!("{path} is not cached and its volume is offline."),
            actions: vec![(RELEASE, "Fail waiting process".to_string())],
            group: Some(format!("waiting:{pid}")),
            urgency: 1,
        },
        EventKind::PinOverReserve {
            path,
            needed,
            available,
        } => Notice {
            summary: format!("AFS pin does not fit: {}", short(path)),
            body: format!(
                "{path} needs {needed} bytes; the pin reserve has {available}. Raise \
                 pin-reserve or unpin something."
            ),
            actions: vec![],
            group: None,
            urgency: 1,
        },
        EventKind::VolumeOffline { .. }
        | EventKind::VolumeOnline { .. }
        | EventKind::Reintegrated { .. }
        | EventKind::PinDone { .. }
        | EventKind::Miss { .. } => return None,
    };
    Some(n)
}

/// The last component of a path (the whole path when it has none).
fn short(path: &str) -> &str {
    path.rsplit('/').find(|s| !s.is_empty()).unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: EventKind) -> Event {
        Event {
            seq: 1,
            time: 0,
            uid: Some(1000),
            kind,
        }
    }

    #[test]
    fn each_kind_that_needs_someone_gets_its_actions() {
        let c = notice(&ev(EventKind::Conflict {
            id: 9,
            kind: "update/update".into(),
            path: "/afs/test.lab/u/report.txt".into(),
            reason: "changed on the server".into(),
        }))
        .unwrap();
        assert_eq!(c.summary, "AFS conflict 9: report.txt");
        let keys: Vec<_> = c.actions.iter().map(|a| a.0).collect();
        assert_eq!(keys, [SHOW_CONFLICT, KEEP_BOTH]);
        for k in [
            EventKind::TokenExpiring {
                cell: "test.lab".into(),
                end: 5,
                minutes: 10,
            },
            EventKind::TokenExpired {
                cell: "test.lab".into(),
                end: 5,
            },
            EventKind::ReplayPaused {
                cell: "test.lab".into(),
                volume: 7,
                reason: "expired".into(),
            },
        ] {
            let n = notice(&ev(k)).unwrap();
            assert_eq!(n.actions[0].0, RENEW);
            assert_eq!(n.group.as_deref(), Some("auth:test.lab"));
        }
        let w = notice(&ev(EventKind::Waiting {
            pid: 42,
            command: "cat".into(),
            path: "/afs/x".into(),
        }))
        .unwrap();
        assert_eq!(w.actions[0].0, RELEASE);
        assert!(notice(&ev(EventKind::VolumeOnline {
            cell: "c".into(),
            volume: 1
        }))
        .is_none());
    }
}
