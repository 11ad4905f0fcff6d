//! Typed RPC calls over the shared Rx endpoint, counted per opcode.

use std::net::SocketAddr;
use std::sync::Arc;

use afs_proto::Rpc;
use rx::{CallError, ConnKey, RxEndpoint};

use crate::{Error, Result, Stats};

/// The identity of anonymous (rxnull) calls. Per-user identities get their
/// own connections by using other values.
pub(crate) const ANONYMOUS: u64 = 0;

/// Makes typed calls and counts them.
pub(crate) struct RpcClient {
    pub(crate) endpoint: Arc<RxEndpoint>,
    pub(crate) stats: Arc<Stats>,
}

impl RpcClient {
    /// Sends `rpc` to `peer` and decodes its reply. Aborts from the server
    /// become [`Error::Server`] with the server's code.
    pub(crate) async fn call<R: Rpc>(&self, peer: SocketAddr, rpc: &R) -> Result<R::Reply> {
        let name = R::NAME;
        self.stats.rpc(name);
        let key = ConnKey {
            peer,
            service_id: R::SERVICE_ID,
            identity: ANONYMOUS,
        };
        let request = afs_proto::encode_request(rpc);
        let reply = match self.endpoint.call(key, request).await {
            Ok(r) => r,
            Err(e) => {
                self.stats.rpc_error(name);
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
