//! Rx, the AFS remote procedure call transport, in pure Rust.
//!
//! * [`packet`] / [`ack`]: wire format (header, ACK body), panic-free
//!   decoding of untrusted bytes.
//! * [`proto`]: the sans-IO state machine ([`proto::Endpoint`]): feed it
//!   datagrams and the current time, drain transmits and events.
//! * [`security`] / [`rxkad`] / [`fcrypt`]: security classes; rxkad
//!   (index 2) client side at levels clear, auth and crypt, chosen per call
//!   through [`ConnKey::security`](crate::ConnKey).
//! * `driver`: a thin tokio layer (`RxEndpoint`) owning one UDP socket,
//!   behind the `tokio` feature (on by default), so that the core builds
//!   without an async runtime.
//!
//! Wire rules follow OpenAFS 1.8 (src/rx/rx.c, rx_packet.c, rx.h).

#![warn(missing_docs)]

pub mod ack;
mod call;
mod conn;
#[cfg(feature = "tokio")]
pub mod driver;
mod endpoint;
pub mod error;
pub mod fcrypt;
pub mod packet;
pub mod rtt;
pub mod rxkad;
pub mod security;

/// The sans-IO core.
pub mod proto {
    pub use crate::endpoint::{
        random_epoch, CallId, Config, ConnKey, Endpoint, Event, StateSize, Stats, Transmit,
    };
    pub use crate::error::CallError;
}

#[cfg(feature = "tokio")]
pub use driver::{IncomingCall, RxEndpoint};
pub use endpoint::{CallId, Config, ConnKey, Event, Stats, Transmit};
pub use error::{CallError, Error};
pub use packet::{decode_packet, PacketError};
pub use rxkad::{ClientSecurity, RxkadLevel};
