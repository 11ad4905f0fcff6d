//! The daemon's side of `afsd-rs events [--follow]` and of `afsd-rs agent`:
//! the caller's recent events, then, when following, each new one as it
//! happens, one JSON line each, until the caller goes away.
//!
//! Which events a caller sees is decided here from the peer uid the
//! control socket took from SO_PEERCRED ([`client::events::Event::visible_to`]):
//! a user sees their own events and the public ones (a volume's mode),
//! root sees all. The request cannot name another uid.
//!
//! A follower holds its connection for as long as it likes, so followers
//! are bounded apart from the control socket's connection limit: at most
//! [`MAX_FOLLOWERS`] at once, and [`MAX_FOLLOWERS_PER_UID`] per user, so
//! that neither one user nor all of them together can take every control
//! connection and lock `aklog` out. The request line's read timeout does
//! not apply to the stream; each line must be taken by the follower within
//! the write timeout, or the follower is dropped (a stuck reader cannot
//! hold memory: the broadcast channel drops what a slow one misses).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use client::events::Event;
use client::AfsClient;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::control::Response;

/// Followers at once, every user together.
pub const MAX_FOLLOWERS: usize = 32;
/// Followers at once of one uid (an agent, plus a few terminals).
pub const MAX_FOLLOWERS_PER_UID: usize = 4;

/// `afsd-rs events`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventsRequest {
    /// Keep the connection and send each new event.
    pub follow: bool,
}

/// Names this daemon run: its pid and the time it first served a
/// follower, so a follower that connects again can tell a restarted
/// daemon (whose event numbers start again) from the same one.
fn run_id() -> &'static str {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        format!("{}-{}", std::process::id(), t.as_nanos())
    })
}

/// Followers per uid.
static FOLLOWERS: Mutex<Option<HashMap<u32, usize>>> = Mutex::new(None);

/// A follower's place, given back when dropped.
struct Slot(u32);

impl Slot {
    fn take(uid: u32) -> Result<Slot, String> {
        let mut g = FOLLOWERS.lock().unwrap_or_else(|e| e.into_inner());
        let map = g.get_or_insert_with(HashMap::new);
        let total: usize = map.values().sum();
        let mine = map.get(&uid).copied().unwrap_or(0);
        if total >= MAX_FOLLOWERS {
            return Err(format!(
                "too many event followers ({MAX_FOLLOWERS}); try again later"
            ));
        }
        if mine >= MAX_FOLLOWERS_PER_UID {
            return Err(format!(
                "uid {uid} already follows events {MAX_FOLLOWERS_PER_UID} times"
            ));
        }
        map.insert(uid, mine + 1);
        Ok(Slot(uid))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut g = FOLLOWERS.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(map) = g.as_mut() {
            if let Some(n) = map.get_mut(&self.0) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&self.0);
                }
            }
        }
    }
}

async fn send<W: AsyncWrite + Unpin>(
    wr: &mut W,
    resp: &Response,
    timeout: Duration,
) -> std::io::Result<()> {
    let mut out = serde_json::to_string(resp).unwrap_or_else(|_| "{\"Error\":\"encoding\"}".into());
    out.push('\n');
    tokio::time::timeout(timeout, wr.write_all(out.as_bytes()))
        .await
        .map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "an event follower did not take its line in time",
            )
        })?
}

/// Answers an events request on a connection: `Response::Events` with the
/// caller's recent events; following, `Response::Following` with them and
/// the daemon run's name, then one `Response::Event` line per new event,
/// until the caller closes its end.
pub async fn serve<R, W>(
    uid: u32,
    req: EventsRequest,
    client: &AfsClient,
    mut rd: R,
    mut wr: W,
    write_timeout: Duration,
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let bus = client.events();
    if !req.follow {
        return send(&mut wr, &Response::Events(bus.recent(uid)), write_timeout).await;
    }
    let _slot = match Slot::take(uid) {
        Ok(s) => s,
        Err(e) => return send(&mut wr, &Response::Error(e), write_timeout).await,
    };
    // Subscribe before taking the ring, so nothing falls between; an
    // event in both is sent once (by seq).
    let mut live = bus.subscribe();
    let recent = bus.recent(uid);
    let mut last = recent.last().map(|e| e.seq).unwrap_or(0);
    let first = Response::Following {
        daemon: run_id().to_string(),
        events: recent,
    };
    send(&mut wr, &first, write_timeout).await?;
    let mut buf = [0u8; 256];
    loop {
        tokio::select! {
            r = rd.read(&mut buf) => match r {
                // The follower went away (or sent more than a request).
                Ok(0) | Err(_) => return Ok(()),
                Ok(_) => {}
            },
            ev = live.recv() => match ev {
                Ok(ev) => {
                    if ev.seq <= last || !ev.visible_to(uid) {
                        continue;
                    }
                    last = ev.seq;
                    send(&mut wr, &Response::Event(ev), write_timeout).await?;
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::debug!(uid, lost = n, "an event follower fell behind");
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return Ok(()),
            },
        }
    }
}

/// Follows the daemon's events for the calling user: calls `recent` with
/// the daemon run's name and the events it kept, once it has answered,
/// then `each` with every new one, until the daemon goes away or `each`
/// says stop (returns false).
pub fn follow(
    socket: &std::path::Path,
    recent: impl FnOnce(&str, Vec<Event>),
    mut each: impl FnMut(&Event) -> bool,
) -> Result<(), String> {
    use std::io::{BufRead, Write};
    let mut recent = Some(recent);
    let mut s = std::os::unix::net::UnixStream::connect(socket).map_err(|e| {
        format!(
            "cannot reach the afsd-rs daemon at {}: {e} (is /afs mounted? set --socket or AFSD_CONTROL)",
            socket.display()
        )
    })?;
    let req = crate::control::Request::Events(EventsRequest { follow: true });
    let mut line = serde_json::to_string(&req).map_err(|e| e.to_string())?;
    line.push('\n');
    s.write_all(line.as_bytes()).map_err(|e| e.to_string())?;
    let rd = std::io::BufReader::new(s);
    for line in rd.lines() {
        let line = line.map_err(|e| format!("reading events: {e}"))?;
        match serde_json::from_str::<Response>(&line) {
            Ok(Response::Following { daemon, events }) => match recent.take() {
                Some(f) => f(&daemon, events),
                None => return Err("the daemon sent its recent events twice".into()),
            },
            Ok(Response::Event(ev)) => {
                if !each(&ev) {
                    return Ok(());
                }
            }
            Ok(Response::Error(e)) => return Err(e),
            Ok(other) => return Err(format!("unexpected answer {other:?}")),
            Err(e) => return Err(format!("bad answer from the daemon: {e}")),
        }
    }
    Err("the daemon closed the event stream".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::tests::{ask, daemon};
    use crate::control::{Limits, Request};
    use client::events::EventKind;
    use tokio::io::AsyncBufReadExt;

    fn expired(cell: &str) -> EventKind {
        EventKind::TokenExpired {
            cell: cell.into(),
            end: 1,
        }
    }

    #[tokio::test]
    async fn recent_events_are_the_callers_own_and_public_ones() {
        let (path, client, _cell) = daemon(Limits::default());
        let me = unsafe { libc::getuid() };
        let other = me.wrapping_add(1);
        client.events().emit(Some(other), expired("theirs"));
        client.events().emit(Some(me), expired("mine"));
        client.events().emit(
            None,
            EventKind::VolumeOnline {
                cell: "c".into(),
                volume: 1,
            },
        );
        let got = match ask(&path, &Request::Events(EventsRequest { follow: false })).await {
            Response::Events(v) => v,
            other => panic!("{other:?}"),
        };
        let names: Vec<String> = got
            .iter()
            .map(|e| serde_json::to_string(&e.kind).unwrap())
            .collect();
        if me == 0 {
            // Root sees every event.
            assert_eq!(got.len(), 3, "{names:?}");
        } else {
            assert_eq!(got.len(), 2, "{names:?}");
            assert!(!names.iter().any(|n| n.contains("theirs")), "{names:?}");
        }
        assert!(names.iter().any(|n| n.contains("mine")), "{names:?}");
    }

    #[tokio::test]
    async fn a_follower_outlives_the_read_timeout_and_gets_new_events() {
        let (path, client, _cell) = daemon(Limits {
            read_timeout: Duration::from_millis(100),
            max_connections: 8,
        });
        let me = unsafe { libc::getuid() };
        client.events().emit(Some(me), expired("before"));
        let mut s = tokio::net::UnixStream::connect(&path).await.unwrap();
        s.write_all(b"{\"Events\":{\"follow\":true}}\n")
            .await
            .unwrap();
        let (r, _w) = s.into_split();
        let mut lines = tokio::io::BufReader::new(r).lines();
        let first = lines.next_line().await.unwrap().unwrap();
        assert!(first.contains("before"), "{first}");
        // Longer than the read timeout: the stream stays.
        tokio::time::sleep(Duration::from_millis(400)).await;
        client.events().emit(Some(me), expired("after"));
        let next = tokio::time::timeout(Duration::from_secs(5), lines.next_line())
            .await
            .expect("an event line")
            .unwrap()
            .unwrap();
        match serde_json::from_str::<Response>(&next).unwrap() {
            Response::Event(ev) => assert!(
                matches!(ev.kind, EventKind::TokenExpired { ref cell, .. } if cell == "after")
            ),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn followers_per_uid_are_bounded_and_come_back() {
        let (path, _client, _cell) = daemon(Limits::default());
        let req = "{\"Events\":{\"follow\":true}}\n";
        let mut held = Vec::new();
        let mut refused = None;
        // Other tests of this process may hold slots too: at most
        // MAX_FOLLOWERS_PER_UID + a few are taken before the refusal.
        for _ in 0..(MAX_FOLLOWERS_PER_UID + 8) {
            let mut s = tokio::net::UnixStream::connect(&path).await.unwrap();
            s.write_all(req.as_bytes()).await.unwrap();
            let (r, w) = s.into_split();
            let mut lines = tokio::io::BufReader::new(r).lines();
            let first = lines.next_line().await.unwrap().unwrap();
            if first.contains("Error") {
                refused = Some(first);
                break;
            }
            held.push((lines, w));
        }
        let refused = refused.expect("a follower over the limit is refused");
        assert!(refused.contains("follows events"), "{refused}");
        assert!(held.len() <= MAX_FOLLOWERS_PER_UID);
        // Closing one gives its place back.
        held.pop();
        let mut ok = false;
        for _ in 0..100 {
            let mut s = tokio::net::UnixStream::connect(&path).await.unwrap();
            s.write_all(req.as_bytes()).await.unwrap();
            let mut lines = tokio::io::BufReader::new(s).lines();
            if !lines.next_line().await.unwrap().unwrap().contains("Error") {
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(ok);
    }
}
