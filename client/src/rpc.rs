//! Typed RPC calls over the shared Rx endpoint, counted per opcode.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use afs_proto::Rpc;
use rx::{CallError, ConnKey, RxEndpoint};

use crate::{Error, Result, Stats};

/// After a call to a server timed out, further calls to it fail at once for
/// this long instead of each waiting out the dead time again (OpenAFS marks
/// such a server down until a probe succeeds).
const DOWN_HOLD: Duration = Duration::from_secs(5);

/// Makes typed calls and counts them.
pub(crate) struct RpcClient {
    pub(crate) endpoint: Arc<RxEndpoint>,
    pub(crate) stats: Arc<Stats>,
    /// Servers whose last call timed out, and when.
    pub(crate) down: Mutex<HashMap<SocketAddr, Instant>>,
}

impl RpcClient {
    /// Sends `rpc` to `peer` and decodes its reply. Aborts from the server
    /// become [`Error::Server`] with the server's code.
    pub(crate) async fn call<R: Rpc>(&self, peer: SocketAddr, rpc: &R) -> Result<R::Reply> {
        self.call_as(peer, &crate::identity::Identity::anonymous(0), rpc)
            .await
    }

    /// As [`RpcClient::call`], on the connections of identity `who` (its
    /// token decides the security class).
    pub(crate) async fn call_as<R: Rpc>(
        &self,
        peer: SocketAddr,
        who: &crate::identity::Identity,
        rpc: &R,
    ) -> Result<R::Reply> {
        self.call_with_data(peer, who, rpc, &[]).await
    }

    /// A split call whose raw bytes follow the arguments (StoreData64).
    pub(crate) async fn call_with_data<R: Rpc>(
        &self,
        peer: SocketAddr,
        who: &crate::identity::Identity,
        rpc: &R,
        data: &[u8],
    ) -> Result<R::Reply> {
        let name = R::NAME;
        if let Some(since) = self
            .down
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&peer)
        {
            if since.elapsed() < DOWN_HOLD {
                self.stats.rpc_error(name);
                return Err(Error::TimedOut(format!("{name} to {peer} (server down)")));
            }
        }
        self.stats.rpc(name);
        let key = ConnKey {
            peer,
            service_id: R::SERVICE_ID,
            identity: who.id,
            security: who.security.clone(),
        };
        let mut request = afs_proto::encode_request(rpc);
        request.extend_from_slice(data);
        let reply = match self.endpoint.call(key, request).await {
            Ok(r) => {
                self.down
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&peer);
                r
            }
            Err(e) => {
                self.stats.rpc_error(name);
                if matches!(e, CallError::Timeout) {
                    tracing::warn!(server = %peer, "server not responding; marked down");
                    self.down
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(peer, Instant::now());
                }
                return Err(map_call_error(e, name, peer));
            }
        };
        R::decode_reply(&reply).map_err(|e| {
            self.stats.rpc_error(name);
            Error::Protocol(format!("{name} reply from {peer}: {e}"))
        })
    }
}

fn map_call_error(e: CallError, name: &str, peer: SocketAddr) -> Error {
    match e {
        // rxkad refused the token (expired, bad ticket, wrong key): to the
        // user this is a permission problem, not an I/O error.
        CallError::Aborted(code)
            if (afs_proto::errors::RXKAD_BASE..afs_proto::errors::RXKAD_BASE + 20)
                .contains(&code) =>
        {
            tracing::warn!("{name} to {peer}: the server refused the token (rxkad error {code})");
            Error::Access
        }
        CallError::Aborted(code) => Error::Server {
            what: format!("{name} to {peer}"),
            code,
            name: afs_proto::errors::abort_name(code).unwrap_or("unknown error"),
        },
        CallError::Timeout | CallError::Busy => Error::TimedOut(format!("{name} to {peer}")),
        CallError::Io(msg) => Error::Unreachable(format!("{name} to {peer} ({msg})")),
        CallError::Shutdown => Error::Protocol("client is shutting down".into()),
        CallError::Protocol(msg) => Error::Protocol(format!("{name} to {peer}: {msg}")),
    }
}
