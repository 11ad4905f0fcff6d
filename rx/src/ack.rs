//! ACK packet body (src/rx/rx.h `struct rx_ackPacket`; built in rx.c
//! `rxi_SendAck`, parsed in rx.c `rxi_ReceiveAckPacket`).
//!
//! Body: bufferSpace u16, maxSkew u16, firstPacket u32, previousPacket u32,
//! serial u32, reason u8, nAcks u8, acks[nAcks] (0 = NACK, 1 = ACK), three
//! pad bytes, then the trailer added in AFS 3.3-3.5: maxMTU, ifMTU, rwind,
//! maxDgramPackets (all u32). OpenAFS reads each trailer word only if the
//! packet is long enough, so each is optional here too.

use thiserror::Error;

/// Fixed part of the ACK body before the acks array.
pub const ACK_FIXED_LEN: usize = 18;

/// ACK reasons (rx.h `RX_ACK_*`).
pub mod reason {
    /// The peer set REQUEST_ACK.
    pub const REQUESTED: u8 = 1;
    /// Duplicate packet received.
    pub const DUPLICATE: u8 = 2;
    /// Packet out of sequence.
    pub const OUT_OF_SEQUENCE: u8 = 3;
    /// Packet beyond the receive window; dropped.
    pub const EXCEEDS_WINDOW: u8 = 4;
    /// No buffer space.
    pub const NOSPACE: u8 = 5;
    /// Keepalive; the peer must answer with PING_RESPONSE.
    pub const PING: u8 = 6;
    /// Answer to a PING.
    pub const PING_RESPONSE: u8 = 7;
    /// Delayed ACK.
    pub const DELAY: u8 = 8;
    /// Idle ACK.
    pub const IDLE: u8 = 9;
}

/// ACK entry values.
pub const ACK_TYPE_NACK: u8 = 0;
/// The packet was received (soft ACK, may still be discarded).
pub const ACK_TYPE_ACK: u8 = 1;

/// ACK body decoding errors.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum AckError {
    /// Shorter than the fixed 18 bytes.
    #[error("ACK body too short ({0} bytes)")]
    TooShort(usize),
    /// nAcks claims more entries than the packet holds.
    #[error("ACK claims {claimed} entries but only {present} bytes present")]
    Truncated {
        /// nAcks from the packet.
        claimed: usize,
        /// Bytes actually available.
        present: usize,
    },
}

/// The ACK trailer (all fields optional on receive).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct AckTrailer {
    /// Largest packet the sender of the ACK accepts (`rxi_AdjustMaxMTU`).
    pub max_mtu: Option<u32>,
    /// Interface MTU of the ACK sender.
    pub if_mtu: Option<u32>,
    /// Receive window of the ACK sender, in packets.
    pub rwind: Option<u32>,
    /// Max packets per jumbogram the ACK sender accepts.
    pub max_dgram_packets: Option<u32>,
}

/// A decoded ACK body.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct AckPacket {
    /// Receive buffer space (packets).
    pub buffer_space: u16,
    /// Max skew (informational).
    pub max_skew: u16,
    /// First packet not yet received in sequence: everything below is
    /// hard-acknowledged.
    pub first_packet: u32,
    /// Seq of the previously received packet.
    pub previous_packet: u32,
    /// Serial of the packet that provoked this ACK (used for RTT).
    pub serial: u32,
    /// Why the ACK was sent, see [`reason`].
    pub reason: u8,
    /// Soft ACK state of packets first_packet, first_packet+1, ...
    pub acks: Vec<u8>,
    /// Trailer.
    pub trailer: AckTrailer,
}

impl AckPacket {
    /// Append the body (including 3 pad bytes and the trailer words that are
    /// `Some`, stopping at the first `None`).
    pub fn encode(&self, out: &mut Vec<u8>) {
        let n = self.acks.len().min(255);
        out.extend_from_slice(&self.buffer_space.to_be_bytes());
        out.extend_from_slice(&self.max_skew.to_be_bytes());
        out.extend_from_slice(&self.first_packet.to_be_bytes());
        out.extend_from_slice(&self.previous_packet.to_be_bytes());
        out.extend_from_slice(&self.serial.to_be_bytes());
        out.push(self.reason);
        out.push(n as u8);
        out.extend_from_slice(&self.acks[..n]);
        out.extend_from_slice(&[0, 0, 0]);
        let t = &self.trailer;
        for w in [t.max_mtu, t.if_mtu, t.rwind, t.max_dgram_packets] {
            match w {
                Some(v) => out.extend_from_slice(&v.to_be_bytes()),
                None => break,
            }
        }
    }

    /// Decode an ACK body (the bytes after the Rx header).
    pub fn decode(b: &[u8]) -> Result<AckPacket, AckError> {
        if b.len() < ACK_FIXED_LEN {
            return Err(AckError::TooShort(b.len()));
        }
        let w = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let n = b[17] as usize;
        let acks = b
            .get(ACK_FIXED_LEN..ACK_FIXED_LEN + n)
            .ok_or(AckError::Truncated {
                claimed: n,
                present: b.len() - ACK_FIXED_LEN,
            })?
            .to_vec();
        // Trailer starts after the acks and 3 pad bytes (rx.h rx_AckDataSize).
        let t0 = ACK_FIXED_LEN + n + 3;
        let word = |k: usize| -> Option<u32> {
            let s = b.get(t0 + 4 * k..t0 + 4 * k + 4)?;
            Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
        };
        Ok(AckPacket {
            buffer_space: u16::from_be_bytes([b[0], b[1]]),
            max_skew: u16::from_be_bytes([b[2], b[3]]),
            first_packet: w(4),
            previous_packet: w(8),
            serial: w(12),
            reason: b[16],
            acks,
            trailer: AckTrailer {
                max_mtu: word(0),
                if_mtu: word(1),
                rwind: word(2),
                max_dgram_packets: word(3),
            },
        })
    }
}
