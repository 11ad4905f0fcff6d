//! The daemon's side of the miss policy's commands: `waiting`,
//! `waiting --release` and `misses`, as one [`control::Request::Miss`]
//! request each.
//!
//! The caller's uid comes from the socket's peer credentials: a user sees
//! and releases only their own waiting processes and sees only their own
//! misses; root sees and releases all.
//!
//! [`control::Request::Miss`]: crate::control::Request::Miss

use client::AfsClient;
use serde::{Deserialize, Serialize};

use crate::control::Response;

/// The requests of the miss policy.
#[derive(Debug, Serialize, Deserialize)]
pub enum MissRequest {
    /// The processes waiting for a disconnected volume.
    Waiting,
    /// Fail the waits of process `pid` now (None: all the caller may).
    Release { pid: Option<u32> },
    /// The misses kept.
    Misses,
}

/// Answers one request of `uid`.
pub fn execute(uid: u32, req: MissRequest, client: &AfsClient) -> Response {
    let whose = (uid != 0).then_some(uid);
    match req {
        MissRequest::Waiting => Response::Waiting(client.waiting(whose)),
        MissRequest::Misses => Response::Misses(client.misses(whose)),
        MissRequest::Release { pid } => match client.release_waiting(uid, pid) {
            Ok(pids) if pids.is_empty() => Response::Ok("no process was waiting".into()),
            Ok(pids) => Response::Ok(format!(
                "released {} (their reads fail with ETIMEDOUT)",
                pids.iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(" ")
            )),
            Err(client::Error::Access) => Response::Error(format!(
                "process {} is another user's: only root may release it",
                pid.unwrap_or_default()
            )),
            Err(e) => Response::Error(e.to_string()),
        },
    }
}
