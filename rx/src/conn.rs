//! Connections and their four channels (rx.h `RX_MAXCALLS`, channel =
//! cid & 3).

use crate::call::Call;
use crate::endpoint::ConnKey;
use crate::packet::{flags, Header, PacketType};
use crate::rtt::RttEstimator;
use crate::security::Security;
use std::net::SocketAddr;
use std::time::Instant;

/// Calls per connection.
pub const CHANNELS: usize = 4;

/// Which side created the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// We created it (our cid, our epoch).
    Client,
    /// The peer created it (we serve a service).
    Server,
}

/// Connection-wide state shared by its channels.
#[derive(Debug)]
pub(crate) struct ConnMeta {
    pub role: Role,
    pub peer: SocketAddr,
    pub epoch: u32,
    /// cid with the channel bits clear.
    pub cid: u32,
    pub service_id: u16,
    pub key: Option<ConnKey>,
    next_serial: u32,
    pub security: Box<dyn Security>,
    pub last_active: Instant,
    /// The peer's ACKs carry SLOW_START_OK.
    pub peer_slow_start_ok: bool,
    /// Peer's advertised receive window.
    pub twind: u32,
    pub rtt: RttEstimator,
}

impl ConnMeta {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        role: Role,
        peer: SocketAddr,
        epoch: u32,
        cid: u32,
        service_id: u16,
        key: Option<ConnKey>,
        security: Box<dyn Security>,
        now: Instant,
        twind: u32,
    ) -> Self {
        ConnMeta {
            role,
            peer,
            epoch,
            cid: cid & !3,
            service_id,
            key,
            next_serial: 1,
            security,
            last_active: now,
            peer_slow_start_ok: false,
            twind,
            rtt: RttEstimator::default(),
        }
    }

    /// A header for a packet on `channel`, with a fresh serial number
    /// (serials are per connection and increase for every transmission,
    /// rx.c `rxi_SendPacket`).
    pub fn header(
        &mut self,
        channel: u8,
        call_number: u32,
        seq: u32,
        ptype: PacketType,
        fl: u8,
    ) -> Header {
        let serial = self.next_serial;
        self.next_serial = self.next_serial.wrapping_add(1).max(1);
        let mut f = fl;
        if self.role == Role::Client {
            f |= flags::CLIENT_INITIATED;
        }
        Header {
            epoch: self.epoch,
            cid: self.cid | (channel as u32 & 3),
            call_number,
            seq,
            serial,
            packet_type: ptype as u8,
            flags: f,
            user_status: 0,
            security_index: self.security.index(),
            checksum: 0,
            service_id: self.service_id,
        }
    }
}

/// One of the four call slots of a connection.
#[derive(Debug, Default)]
pub(crate) struct Channel {
    pub call: Option<Call>,
    /// Number of the current (or last) call on this channel.
    pub call_number: u32,
    /// Client: do not start calls here before this time (after BUSY).
    pub avoid_until: Option<Instant>,
    /// Client: (call number, next expected reply seq) of the last completed
    /// call, to re-ACK a retransmitted reply.
    pub done: Option<(u32, u32)>,
}

/// A connection.
#[derive(Debug)]
pub(crate) struct Conn {
    pub meta: ConnMeta,
    pub channels: [Channel; CHANNELS],
}

impl Conn {
    pub fn new(meta: ConnMeta) -> Self {
        Conn {
            meta,
            channels: Default::default(),
        }
    }

    /// Any call still doing work.
    pub fn has_active_calls(&self) -> bool {
        self.channels
            .iter()
            .any(|c| c.call.as_ref().is_some_and(|c| c.is_active()))
    }
}
