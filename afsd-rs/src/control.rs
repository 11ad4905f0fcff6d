//! The control socket: how `afsd-rs aklog`, `tokens` and `unlog` talk to the
//! running daemon.
//!
//! One JSON request line, one JSON response line. The daemon takes the
//! caller's uid from the socket's peer credentials (SO_PEERCRED), never from
//! the request, so a user can only set, list or drop their own tokens, and
//! flushes only what they can look up.
//!
//! Any local user can connect, so the daemon bounds what connections cost:
//! a request must arrive within [`Limits::read_timeout`], at most
//! [`Limits::max_connections`] are served at once (more are refused at
//! once), and failing accepts (EMFILE) back off instead of spinning.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use client::AfsClient;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use zeroize::{Zeroize, Zeroizing};

/// Where the daemon listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/afsd-rs/control.sock";

/// Largest request accepted (a Kerberos ticket is at most a few KiB).
const MAX_REQUEST: usize = 64 * 1024;

/// What one connection may cost the daemon.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// The request line must arrive within this (and the answer be taken).
    pub read_timeout: Duration,
    /// Connections served at once; one more is refused at once.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            read_timeout: Duration::from_secs(10),
            max_connections: 64,
        }
    }
}

/// The answer to a connection over [`Limits::max_connections`].
const BUSY: &[u8] = b"{\"Error\":\"the daemon is busy: too many control connections\"}\n";

/// A secret in a request: sent as its plain value, printed as
/// `<redacted>`, zeroed when dropped.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret<T: Zeroize>(pub T);

impl<T: Zeroize> std::fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl<T: Zeroize> Drop for Secret<T> {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub enum Request {
    SetToken {
        cell: String,
        vice_id: i32,
        principal: String,
        kvno: u32,
        ticket: Secret<Vec<u8>>,
        session_key: Secret<[u8; 8]>,
        start: u64,
        end: u64,
    },
    Tokens,
    Unlog {
        cell: Option<String>,
    },
    CacheStats,
    /// Root only, as `fs setcachesize`.
    SetCacheSize {
        bytes: u64,
    },
    Flush {
        cell: String,
        fid: (u32, u32, u32),
    },
    /// Flushes the volume of `fid` (a fid the caller can look up).
    FlushVolume {
        cell: String,
        fid: (u32, u32, u32),
    },
    /// Probe the fileservers the daemon knows (`checkservers`).
    CheckServers,
    /// offline, online, status, sync, conflicts, conflict cat.
    Disconnected(crate::offline_ctl::DisconnectedRequest),
    /// pin, unpin, pins, pin --check.
    Pins(crate::pin_ctl::PinCtl),
    /// waiting, waiting --release, misses.
    Miss(crate::miss_ctl::MissRequest),
    /// The caller's events; following, a stream of them (events_ctl.rs).
    Events(crate::events_ctl::EventsRequest),
    /// Copy a conflict's local version beside the original, resolving it
    /// (the agent's "Keep both"; keep_both.rs).
    KeepBoth {
        id: u64,
    },
}

#[derive(Debug, Serialize, Deserialize)]
pub struct TokenLine {
    pub cell: String,
    pub principal: String,
    pub vice_id: i32,
    pub end: u64,
    pub expired: bool,
}

#[derive(Debug, Serialize, Deserialize)]
pub enum Response {
    Ok(String),
    Tokens {
        uid: u32,
        tokens: Vec<TokenLine>,
    },
    CacheStats {
        bytes: u64,
        entries: u64,
        dirty_bytes: u64,
        max_bytes: u64,
        max_entries: u64,
        /// The cache directory on disk, records included.
        disk_bytes: u64,
        /// Data pins hold (never evicted).
        #[serde(default)]
        pinned_bytes: u64,
    },
    /// Addresses of the fileservers that did not answer a probe.
    Servers {
        down: Vec<String>,
    },
    /// Volumes and their modes (`status`, `offline`).
    Volumes(Vec<client::VolumeStatus>),
    Conflicts(Vec<client::ConflictInfo>),
    /// A conflict's base, local and server states.
    States(client::ConflictStates),
    /// A conflict's kept bytes, as hex on the wire.
    Data(#[serde(with = "crate::offline_ctl::hex_bytes")] Vec<u8>),
    /// Processes waiting for a disconnected volume.
    Waiting(Vec<client::WaitingInfo>),
    Misses(Vec<client::MissInfo>),
    Error(String),
    /// The caller's recent events, oldest first.
    Events(Vec<client::events::Event>),
    /// The first line of a followed stream: which daemon run this is (a
    /// restarted daemon numbers its events from 1 again) and the caller's
    /// recent events.
    Following {
        daemon: String,
        events: Vec<client::events::Event>,
    },
    /// One new event of a followed stream.
    Event(client::events::Event),
}

/// Serves the control socket at `path` until the runtime stops.
pub fn serve(path: &Path, client: AfsClient) -> std::io::Result<()> {
    serve_with(path, client, Limits::default())
}

/// As [`serve`], with given limits.
pub fn serve_with(path: &Path, client: AfsClient, limits: Limits) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        if !dir.exists() {
            std::fs::create_dir_all(dir)?;
            // Our umask is 077; users must be able to reach the socket.
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
        }
    }
    // A socket left by a daemon that died: replace it.
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("{} is in use by another daemon", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    let listener = tokio::net::UnixListener::bind(path)?;
    // Every user may connect; the peer credentials decide what they may do.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
    tokio::spawn(accept_loop(listener, client, limits));
    Ok(())
}

/// How long to wait after a failed accept: 100 ms, doubling to 2 s, back
/// to 100 ms after an accept succeeds.
#[derive(Debug)]
struct Backoff {
    next: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(2);

    fn new() -> Self {
        Backoff { next: Self::FIRST }
    }

    fn fail(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        d
    }

    fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

async fn accept_loop(listener: tokio::net::UnixListener, client: AfsClient, limits: Limits) {
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let mut backoff = Backoff::new();
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => {
                backoff.reset();
                s
            }
            Err(e) => {
                // EMFILE, ENFILE, ENOBUFS: accepting again at once would
                // fail again at once.
                let wait = backoff.fail();
                tracing::warn!("control socket: accept failed: {e}; next try in {wait:?}");
                tokio::time::sleep(wait).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::debug!(
                limit = limits.max_connections,
                "control socket: too many connections; one refused"
            );
            // A fresh socket's buffer takes the line without waiting.
            let _ = stream.try_write(BUSY);
            continue;
        };
        let client = client.clone();
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = handle(stream, client, limits.read_timeout).await {
                tracing::debug!("control connection: {e}");
            }
        });
    }
}

fn timed_out(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::TimedOut, what.to_string())
}

async fn handle(
    stream: tokio::net::UnixStream,
    client: AfsClient,
    timeout: Duration,
) -> std::io::Result<()> {
    let uid = stream.peer_cred()?.uid();
    let (rd, mut wr) = stream.into_split();
    // The line may carry a ticket and its key.
    let mut line = Zeroizing::new(String::new());
    let mut rd = tokio::io::BufReader::new(rd).take(MAX_REQUEST as u64);
    tokio::time::timeout(timeout, rd.read_line(&mut line))
        .await
        .map_err(|_| timed_out("no request within the read timeout"))??;
    let req = serde_json::from_str::<Request>(&line);
    drop(line);
    let req = match req {
        // Answered in several lines (progress, then the outcome).
        Ok(Request::Pins(p)) => return crate::pin_ctl::serve(uid, p, &client, wr, timeout).await,
        other => other,
    };
    if let Ok(Request::Events(req)) = req {
        return crate::events_ctl::serve(uid, req, &client, rd, wr, timeout).await;
    }
    let resp = match req {
        // The requests that may wait on the network.
        Ok(Request::CheckServers) => Response::Servers {
            down: client
                .check_servers()
                .await
                .iter()
                .map(|s| s.ip().to_string())
                .collect(),
        },
        Ok(Request::Flush { cell, fid }) => {
            let fid = afs_proto::types::Fid::new(fid.0, fid.1, fid.2);
            match client.may_flush(uid, &cell, fid).await {
                Ok(()) => answer(client.flush_fid(&cell.to_ascii_lowercase(), fid)),
                Err(e) => Response::Error(e.to_string()),
            }
        }
        Ok(Request::FlushVolume { cell, fid }) => {
            let fid = afs_proto::types::Fid::new(fid.0, fid.1, fid.2);
            match client.may_flush(uid, &cell, fid).await {
                Ok(()) => answer(client.flush_volume(&cell.to_ascii_lowercase(), fid.volume)),
                Err(e) => Response::Error(e.to_string()),
            }
        }
        Ok(Request::Disconnected(req)) => crate::offline_ctl::execute(uid, req, &client).await,
        Ok(Request::KeepBoth { id }) => crate::keep_both::execute(uid, id, &client).await,
        Ok(req) => execute(uid, req, &client),
        Err(e) => Response::Error(format!("bad request: {e}")),
    };
    let mut out =
        serde_json::to_string(&resp).unwrap_or_else(|_| "{\"Error\":\"encoding\"}".into());
    out.push('\n');
    tokio::time::timeout(timeout, wr.write_all(out.as_bytes()))
        .await
        .map_err(|_| timed_out("the answer was not taken within the timeout"))?
}

fn answer(r: client::Result<()>) -> Response {
    match r {
        Ok(()) => Response::Ok(String::new()),
        Err(e) => Response::Error(e.to_string()),
    }
}

fn execute(uid: u32, req: Request, client: &AfsClient) -> Response {
    match req {
        Request::SetToken {
            cell,
            vice_id,
            principal,
            kvno,
            mut ticket,
            session_key,
            start,
            end,
        } => {
            let rec = cache::TokenRecord {
                uid,
                cell: cell.clone(),
                vice_id,
                principal,
                kvno,
                ticket: std::mem::take(&mut ticket.0),
                session_key: session_key.0,
                start,
                end,
            };
            match client.set_token(rec) {
                Ok(()) => Response::Ok(format!("token for {cell} set for uid {uid}")),
                Err(e) => Response::Error(e.to_string()),
            }
        }
        Request::Tokens => Response::Tokens {
            uid,
            tokens: client
                .tokens(uid)
                .into_iter()
                .map(|t| TokenLine {
                    cell: t.cell,
                    principal: t.principal,
                    vice_id: t.vice_id,
                    end: t.end,
                    expired: t.expired,
                })
                .collect(),
        },
        Request::CacheStats => {
            let s = client.cache_stats();
            Response::CacheStats {
                bytes: s.usage.bytes,
                entries: s.usage.entries,
                dirty_bytes: s.usage.dirty_bytes,
                max_bytes: s.limits.max_bytes,
                max_entries: s.limits.max_entries,
                disk_bytes: s.disk_bytes,
                pinned_bytes: s.usage.pinned_bytes,
            }
        }
        Request::SetCacheSize { .. } if uid != 0 => {
            Response::Error("only root may change the cache size".into())
        }
        Request::SetCacheSize { bytes } => match client.set_cache_size(bytes) {
            Ok(r) => Response::Ok(format!(
                "cache size set to {bytes} bytes ({} chunks evicted)",
                r.chunks
            )),
            Err(e) => Response::Error(e.to_string()),
        },
        Request::CheckServers
        | Request::Flush { .. }
        | Request::FlushVolume { .. }
        | Request::Disconnected(_)
        | Request::Pins(_)
        | Request::Events(_)
        | Request::KeepBoth { .. } => Response::Error("answered by handle".into()),
        Request::Miss(req) => crate::miss_ctl::execute(uid, req, client),
        Request::Unlog { cell } => match client.unlog(uid, cell.as_deref()) {
            Ok(cells) if cells.is_empty() => Response::Ok("no tokens to discard".into()),
            Ok(cells) => Response::Ok(format!("discarded tokens for {}", cells.join(", "))),
            Err(e) => Response::Error(e.to_string()),
        },
    }
}

/// Sends one request to the daemon and returns its answer.
pub fn call(path: &Path, req: &Request) -> Result<Response, String> {
    let mut s = std::os::unix::net::UnixStream::connect(path).map_err(|e| {
        format!(
            "cannot reach the afsd-rs daemon at {}: {e} (is /afs mounted? set --socket or AFSD_CONTROL)",
            path.display()
        )
    })?;
    // The line may carry a ticket and its key.
    let mut line = Zeroizing::new(serde_json::to_string(req).map_err(|e| e.to_string())?);
    line.push('\n');
    s.write_all(line.as_bytes()).map_err(|e| e.to_string())?;
    let mut resp = String::new();
    BufReader::new(s)
        .read_line(&mut resp)
        .map_err(|e| e.to_string())?;
    serde_json::from_str(&resp).map_err(|e| format!("bad answer from the daemon: {e}"))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    use std::sync::atomic::{AtomicU32, Ordering};

    use client::memserver::MemCell;
    use client::{CellDb, ClientConfig, Stats};
    use tokio::io::AsyncBufReadExt;

    const TICKET: [u8; 5] = [0x61, 0x82, 0xc3, 0xd4, 0xe5];
    const KEY: [u8; 8] = [0xb7, 0xa9, 0xf1, 0x13, 0x2c, 0x4d, 0x5e, 0x6f];

    fn set_token() -> Request {
        Request::SetToken {
            cell: "test.lab".into(),
            vice_id: 2,
            principal: "alice@TEST.LAB".into(),
            kvno: 256,
            ticket: Secret(TICKET.to_vec()),
            session_key: Secret(KEY),
            start: 1_700_000_000,
            end: 1_700_036_000,
        }
    }

    #[test]
    fn set_token_debug_hides_ticket_and_key() {
        let req = set_token();
        for s in [format!("{req:?}"), format!("{req:#?}")] {
            for b in TICKET.iter().chain(KEY.iter()) {
                let (dec, hex) = (format!("{b}"), format!("{b:x}"));
                assert!(!s.contains(&dec) && !s.contains(&hex), "{b} in {s}");
            }
            for shown in ["test.lab", "alice@TEST.LAB", "1700000000", "1700036000"] {
                assert!(s.contains(shown), "{shown} not in {s}");
            }
        }
        // On the wire the secrets are plain values, as before.
        let json = serde_json::to_string(&req).unwrap();
        assert!(json.contains("\"ticket\":[97,130,195,212,229]"), "{json}");
        match serde_json::from_str::<Request>(&json).unwrap() {
            Request::SetToken {
                ticket,
                session_key,
                ..
            } => {
                assert_eq!(ticket.0, TICKET);
                assert_eq!(session_key.0, KEY);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn accept_failures_back_off_to_two_seconds() {
        let mut b = Backoff::new();
        let ms: Vec<u128> = (0..7).map(|_| b.fail().as_millis()).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1600, 2000, 2000]);
        b.reset();
        assert_eq!(b.fail(), Duration::from_millis(100));
    }

    /// A daemon over an in-memory cell, serving a fresh socket.
    pub(crate) fn daemon(limits: Limits) -> (std::path::PathBuf, AfsClient, Arc<MemCell>) {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "afsd-rs-control-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let cell = MemCell::new("mem.test");
        let cells = CellDb {
            this_cell: Some("mem.test".into()),
            cells: vec![cell.cell()],
        };
        let (client, inval) = AfsClient::start_with(
            ClientConfig::new(dir.clone(), dir.clone()),
            cells,
            Arc::new(cache::MemoryStore::new()),
            cell.connect(),
            Arc::new(Stats::default()),
        )
        .unwrap();
        std::mem::forget(inval);
        let path = dir.join("control.sock");
        serve_with(&path, client.clone(), limits).unwrap();
        (path, client, cell)
    }

    pub(crate) async fn ask(path: &Path, req: &Request) -> Response {
        let mut line = serde_json::to_string(req).unwrap();
        line.push('\n');
        ask_raw(path, &line).await
    }

    /// Sends `line` as the request.
    pub(crate) async fn ask_raw(path: &Path, line: &str) -> Response {
        let mut s = tokio::net::UnixStream::connect(path).await.unwrap();
        // A refused connection may be closed before the request is sent.
        let _ = s.write_all(line.as_bytes()).await;
        let mut resp = String::new();
        let _ = tokio::io::BufReader::new(s).read_line(&mut resp).await;
        serde_json::from_str(&resp).unwrap_or_else(|_| Response::Error(format!("closed: {resp}")))
    }

    /// Reads until the daemon closes the connection; what it said.
    async fn until_closed(mut s: tokio::net::UnixStream) -> String {
        let mut out = String::new();
        let read = s.read_to_string(&mut out);
        tokio::time::timeout(Duration::from_secs(30), read)
            .await
            .expect("the daemon closed the connection")
            .unwrap();
        out
    }

    #[tokio::test]
    async fn a_silent_connection_is_closed() {
        let (path, _c, _cell) = daemon(Limits {
            read_timeout: Duration::from_millis(50),
            max_connections: 4,
        });
        let s = tokio::net::UnixStream::connect(&path).await.unwrap();
        assert_eq!(until_closed(s).await, "");
        // The daemon still serves.
        assert!(matches!(
            ask(&path, &Request::Tokens).await,
            Response::Tokens { .. }
        ));
    }

    #[tokio::test]
    async fn connections_over_the_limit_are_refused_at_once() {
        let (path, _c, _cell) = daemon(Limits {
            read_timeout: Duration::from_secs(600),
            max_connections: 2,
        });
        // Two silent connections hold both slots (answered in turn: the
        // daemon has taken each before the next one is made).
        let mut held = Vec::new();
        for _ in 0..2 {
            let s = tokio::net::UnixStream::connect(&path).await.unwrap();
            held.push(s);
        }
        // The refusal comes without waiting for the 600 s read timeout.
        let mut refused = 0;
        for _ in 0..3 {
            let s = tokio::net::UnixStream::connect(&path).await.unwrap();
            let said = until_closed(s).await;
            if said.contains("too many control connections") {
                refused += 1;
            }
        }
        assert_eq!(refused, 3);
        drop(held);
        // Slots come back when connections end.
        let mut ok = false;
        for _ in 0..100 {
            if let Response::Tokens { .. } = ask(&path, &Request::Tokens).await {
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(ok);
    }

    #[tokio::test]
    async fn flush_of_a_fid_never_looked_up_is_refused() {
        let (path, _c, _cell) = daemon(Limits::default());
        for req in [
            Request::Flush {
                cell: "mem.test".into(),
                fid: (536870912, 1, 1),
            },
            Request::FlushVolume {
                cell: "mem.test".into(),
                fid: (536870912, 1, 1),
            },
        ] {
            match ask(&path, &req).await {
                Response::Error(e) => assert!(e.to_lowercase().contains("denied"), "{e}"),
                other => panic!("{other:?}"),
            }
        }
    }
}
