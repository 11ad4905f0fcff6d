//! Wire formats of the AFS RPC services used by afsd-rs.
//!
//! This crate holds pure encoders/decoders only: no sockets, no Rx. Every
//! RPC is a struct implementing [`Rpc`], whose arguments are XDR-encoded
//! after the opcode and whose reply bytes (the Rx call's result stream) are
//! decoded by [`Rpc::decode_reply`]. Definitions follow the OpenAFS rxgen
//! interface files (`src/fsint/afsint.xg`, `src/fsint/common.xg`,
//! `src/fsint/afscbint.xg`, `src/vlserver/vldbint.xg`,
//! `src/ptserver/ptint.xg`) and the directory format of `src/dir/dir.h`.
//!
//! All decoders are written for hostile input: they never panic, bound
//! every allocation by the input length and a protocol maximum, and are
//! lenient about trailing bytes after a complete reply.

pub mod cb;
pub mod dir;
pub mod error;
pub mod errors;
pub mod fs;
pub mod pt;
pub mod rpc;
pub mod types;
pub mod vl;
pub mod xdr;

pub use error::{Error, Result};
pub use rpc::{encode_request, Rpc};
