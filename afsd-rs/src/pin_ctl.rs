//! The daemon's side of `afsd-rs pin`, `unpin`, `pins` and `pin --check`.
//!
//! A pin may take minutes, so it is answered in lines: progress as files
//! are fetched, then the outcome. Every other request has one line. As for
//! every control request, the caller's uid comes from the socket's peer
//! credentials: a pin is made, walked and fetched as that user (their
//! rights decide what it holds), `pins` lists their own (root: all), and a
//! user removes only their own pins.

use std::time::Duration;

use client::{AfsClient, PinCheck, PinInfo, PinProgress, PinRequest};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

/// The pin requests.
#[derive(Debug, Serialize, Deserialize)]
pub enum PinCtl {
    Pin(PinRequest),
    Unpin {
        cell: String,
        /// The fid of PATH when it still exists.
        fid: Option<(u32, u32, u32)>,
        path: String,
        recursive: bool,
    },
    Pins,
    Check {
        cell: String,
        fid: (u32, u32, u32),
        path: String,
    },
}

/// One line of an answer.
#[derive(Debug, Serialize, Deserialize)]
pub enum PinLine {
    /// More is to come.
    Progress(PinProgress),
    Pinned(PinInfo),
    Pins(Vec<PinInfo>),
    Unpinned(Vec<PinInfo>),
    Check(Vec<PinCheck>),
    Error {
        errno: i32,
        message: String,
    },
}

/// Progress lines are sent at most this often.
const PROGRESS_EVERY: Duration = Duration::from_millis(200);

fn error(e: client::Error) -> PinLine {
    PinLine::Error {
        errno: e.errno(),
        message: e.to_string(),
    }
}

fn fid((a, b, c): (u32, u32, u32)) -> afs_proto::types::Fid {
    afs_proto::types::Fid::new(a, b, c)
}

/// Answers one request of `uid` on `wr`.
pub async fn serve(
    uid: u32,
    req: PinCtl,
    client: &AfsClient,
    mut wr: tokio::net::unix::OwnedWriteHalf,
    timeout: Duration,
) -> std::io::Result<()> {
    let last = match req {
        PinCtl::Pin(req) => {
            let (tx, mut rx) = tokio::sync::watch::channel(PinProgress::default());
            let report = move |p| {
                let _ = tx.send(p);
            };
            let work = client.pin(uid, &req, &report);
            tokio::pin!(work);
            let mut tick = tokio::time::interval(PROGRESS_EVERY);
            let mut sent = PinProgress::default();
            loop {
                tokio::select! {
                    r = &mut work => break match r {
                        Ok(info) => PinLine::Pinned(info),
                        Err(e) => error(e),
                    },
                    _ = tick.tick() => {
                        let p = *rx.borrow_and_update();
                        if p != sent {
                            sent = p;
                            // A caller that went away ends only its view:
                            // the pin goes on.
                            let _ = write_line(&mut wr, &PinLine::Progress(p), timeout).await;
                        }
                    }
                }
            }
        }
        PinCtl::Unpin {
            cell,
            fid: f,
            path,
            recursive,
        } => match client.unpin(uid, &cell, f.map(fid), &path, recursive) {
            Ok(v) => PinLine::Unpinned(v),
            Err(client::Error::NotFound) => PinLine::Error {
                errno: libc::ENOENT,
                message: format!("{path} is not pinned by you"),
            },
            Err(e) => error(e),
        },
        PinCtl::Pins => PinLine::Pins(client.pins(uid)),
        PinCtl::Check { cell, fid: f, path } => match client.pin_check(uid, &cell, fid(f), &path) {
            Ok(v) => PinLine::Check(v),
            Err(e) => error(e),
        },
    };
    write_line(&mut wr, &last, timeout).await
}

async fn write_line(
    wr: &mut tokio::net::unix::OwnedWriteHalf,
    line: &PinLine,
    timeout: Duration,
) -> std::io::Result<()> {
    let mut out = serde_json::to_string(line)
        .unwrap_or_else(|_| "{\"Error\":{\"errno\":5,\"message\":\"encoding\"}}".into());
    out.push('\n');
    tokio::time::timeout(timeout, wr.write_all(out.as_bytes()))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "answer not taken"))?
}
