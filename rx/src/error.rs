//! Error types.

use crate::packet::PacketError;
use thiserror::Error;

/// Why a call failed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CallError {
    /// The peer sent ABORT with this code (rx.h `RX_*` or an RPC error).
    #[error("call aborted with code {0}")]
    Aborted(i32),
    /// Nothing heard from the peer for the dead time, or the hard dead time
    /// passed.
    #[error("call timed out")]
    Timeout,
    /// The server kept answering BUSY.
    #[error("server busy")]
    Busy,
    /// Socket error.
    #[error("I/O error: {0}")]
    Io(String),
    /// The endpoint was shut down.
    #[error("endpoint shut down")]
    Shutdown,
    /// The peer violated the protocol or needs something we cannot do.
    #[error("protocol error: {0}")]
    Protocol(String),
}

/// Crate-wide error.
#[derive(Debug, Error)]
pub enum Error {
    /// Socket error.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// Malformed packet.
    #[error(transparent)]
    Packet(#[from] PacketError),
    /// Failed call.
    #[error(transparent)]
    Call(#[from] CallError),
}

/// Rx error codes carried in ABORT packets (src/rx/rx.h).
pub mod codes {
    /// Peer dead.
    pub const RX_CALL_DEAD: i32 = -1;
    /// Unknown service or invalid operation (rx.c `rxi_ReceivePacket` sends
    /// it for an unknown service).
    pub const RX_INVALID_OPERATION: i32 = -2;
    /// Call timed out.
    pub const RX_CALL_TIMEOUT: i32 = -3;
    /// Unexpected end of data.
    pub const RX_EOF: i32 = -4;
    /// Protocol error.
    pub const RX_PROTOCOL_ERROR: i32 = -5;
    /// Cancelled by the user.
    pub const RX_USER_ABORT: i32 = -6;
    /// Message too big.
    pub const RX_MSGSIZE: i32 = -8;
    /// rxgen: unknown opcode.
    pub const RXGEN_OPCODE: i32 = -455;
}
