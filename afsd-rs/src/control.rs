//! The control socket: how `afsd-rs aklog`, `tokens` and `unlog` talk to the
//! running daemon.
//!
//! One JSON request line, one JSON response line. The daemon takes the
//! caller's uid from the socket's peer credentials (SO_PEERCRED), never from
//! the request, so a user can only set, list or drop their own tokens.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use client::AfsClient;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

/// Where the daemon listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/afsd-rs/control.sock";

/// Largest request accepted (a Kerberos ticket is at most a few KiB).
const MAX_REQUEST: usize = 64 * 1024;

#[derive(Debug, Serialize, Deserialize)]
pub enum Request {
    SetToken {
        cell: String,
        vice_id: i32,
        principal: String,
        kvno: u32,
        ticket: Vec<u8>,
        session_key: [u8; 8],
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
    FlushVolume {
        cell: String,
        volume: u32,
    },
    /// Probe the fileservers the daemon knows (`checkservers`).
    CheckServers,
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
    },
    /// Addresses of the fileservers that did not answer a probe.
    Servers {
        down: Vec<String>,
    },
    Error(String),
}

/// Serves the control socket at `path` until the runtime stops.
pub fn serve(path: &Path, client: AfsClient) -> std::io::Result<()> {
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
    tokio::spawn(async move {
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!("control socket: {e}");
                    continue;
                }
            };
            let client = client.clone();
            tokio::spawn(async move {
                if let Err(e) = handle(stream, client).await {
                    tracing::debug!("control connection: {e}");
                }
            });
        }
    });
    Ok(())
}

async fn handle(stream: tokio::net::UnixStream, client: AfsClient) -> std::io::Result<()> {
    let uid = stream.peer_cred()?.uid();
    let (rd, mut wr) = stream.into_split();
    let mut line = String::new();
    let mut rd = tokio::io::BufReader::new(rd).take(MAX_REQUEST as u64);
    rd.read_line(&mut line).await?;
    let resp = match serde_json::from_str::<Request>(&line) {
        // The one request that waits on the network.
        Ok(Request::CheckServers) => Response::Servers {
            down: client
                .check_servers()
                .await
                .iter()
                .map(|s| s.ip().to_string())
                .collect(),
        },
        Ok(req) => execute(uid, req, &client),
        Err(e) => Response::Error(format!("bad request: {e}")),
    };
    let mut out =
        serde_json::to_string(&resp).unwrap_or_else(|_| "{\"Error\":\"encoding\"}".into());
    out.push('\n');
    wr.write_all(out.as_bytes()).await
}

fn execute(uid: u32, req: Request, client: &AfsClient) -> Response {
    match req {
        Request::SetToken {
            cell,
            vice_id,
            principal,
            kvno,
            ticket,
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
                ticket,
                session_key,
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
        Request::Flush { cell, fid } => {
            let fid = afs_proto::types::Fid::new(fid.0, fid.1, fid.2);
            match client.flush_fid(&cell, fid) {
                Ok(()) => Response::Ok(String::new()),
                Err(e) => Response::Error(e.to_string()),
            }
        }
        Request::FlushVolume { cell, volume } => match client.flush_volume(&cell, volume) {
            Ok(()) => Response::Ok(String::new()),
            Err(e) => Response::Error(e.to_string()),
        },
        Request::CheckServers => Response::Error("checkservers is answered by handle".into()),
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
    let mut line = serde_json::to_string(req).map_err(|e| e.to_string())?;
    line.push('\n');
    s.write_all(line.as_bytes()).map_err(|e| e.to_string())?;
    let mut resp = String::new();
    BufReader::new(s)
        .read_line(&mut resp)
        .map_err(|e| e.to_string())?;
    serde_json::from_str(&resp).map_err(|e| format!("bad answer from the daemon: {e}"))
}
