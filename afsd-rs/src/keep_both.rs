//! "Keep both" for a conflict (the agent's action): the daemon copies the
//! conflict's local version beside the original, as the conflict's uid,
//! and resolves the conflict (client/src/keepboth.rs does the work).

use std::path::Path;

use client::AfsClient;

use crate::control::{self, Request, Response};

/// The daemon's side: `uid` (the peer) must own conflict `id` or be root.
pub async fn execute(uid: u32, id: u64, client: &AfsClient) -> Response {
    match client.keep_both(uid, id).await {
        Ok(name) => Response::Ok(format!(
            "conflict {id}: your version is kept beside the server's as {name:?}"
        )),
        Err(e) => Response::Error(format!("conflict {id}: keep both: {e}")),
    }
}

/// Asks the daemon to keep both versions of conflict `id`; true when done.
pub fn ask(socket: &Path, id: u64) -> bool {
    match control::call(socket, &Request::KeepBoth { id }) {
        Ok(Response::Ok(msg)) => {
            eprintln!("afsd-rs agent: {msg}");
            true
        }
        Ok(Response::Error(e)) => {
            eprintln!("afsd-rs agent: {e}");
            false
        }
        Ok(other) => {
            eprintln!("afsd-rs agent: keep both: unexpected answer {other:?}");
            false
        }
        Err(e) => {
            eprintln!("afsd-rs agent: keep both: {e}");
            false
        }
    }
}
