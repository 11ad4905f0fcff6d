//! Rx wire format: the 28-byte header, packet types, flags, and whole-packet
//! decoding.
//!
//! Layout follows OpenAFS `rxi_EncodePacketHeader` / `rxi_DecodePacketHeader`
//! (src/rx/rx_packet.c): five big-endian 32-bit words (epoch, cid, callNumber,
//! seq, serial), four single bytes (type, flags, userStatus, securityIndex) and
//! then **cksum (u16) before serviceId (u16)**. The C `struct rx_header` lists
//! these two the other way round; the wire order is what counts.

use crate::ack::{AckError, AckPacket};
use thiserror::Error;

/// Size of the Rx header on the wire.
pub const HEADER_LEN: usize = 28;

/// Payload bytes carried by each jumbogram sub-packet except the last
/// (`RX_JUMBOBUFFERSIZE`, src/rx/rx_packet.h).
pub const JUMBO_BUFFER_SIZE: usize = 1412;
/// Size of the small header between jumbogram sub-packets
/// (`RX_JUMBOHEADERSIZE`: flags u8, spare u8, cksum u16).
pub const JUMBO_HEADER_SIZE: usize = 4;

/// Header flag bits (src/rx/rx_packet.h).
pub mod flags {
    /// Set on every packet sent by the side that created the connection.
    pub const CLIENT_INITIATED: u8 = 1;
    /// The sender wants an ACK for this packet right away.
    pub const REQUEST_ACK: u8 = 2;
    /// Last DATA packet of this direction of the call.
    pub const LAST_PACKET: u8 = 4;
    /// More packets follow (informational).
    pub const MORE_PACKETS: u8 = 8;
    /// On DATA: this datagram is a jumbogram (another sub-packet follows).
    pub const JUMBO_PACKET: u8 = 32;
    /// On ACK: the sender of the ACK does slow start, so the peer need not
    /// request an ACK on every other packet (rx.c `rxi_SendAck`).
    pub const SLOW_START_OK: u8 = 32;
}

/// Rx packet types (`RX_PACKET_TYPE_*`, src/rx/rx_packet.h).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PacketType {
    /// Call payload.
    Data = 1,
    /// Acknowledgement, also used for pings.
    Ack = 2,
    /// The server's channel is still busy with a previous call.
    Busy = 3,
    /// Call or connection abort, body is a 4-byte error code.
    Abort = 4,
    /// Acknowledge everything (obsolete).
    AckAll = 5,
    /// Security challenge (rxkad).
    Challenge = 6,
    /// Security response (rxkad).
    Response = 7,
    /// rxdebug request.
    Debug = 8,
    /// Parameter exchange (unused by OpenAFS).
    Params = 9,
    /// Version query / NAT keepalive.
    Version = 13,
}

impl PacketType {
    /// Map a wire byte to a known packet type.
    pub fn from_u8(v: u8) -> Option<PacketType> {
        Some(match v {
            1 => PacketType::Data,
            2 => PacketType::Ack,
            3 => PacketType::Busy,
            4 => PacketType::Abort,
            5 => PacketType::AckAll,
            6 => PacketType::Challenge,
            7 => PacketType::Response,
            8 => PacketType::Debug,
            9 => PacketType::Params,
            13 => PacketType::Version,
            _ => return None,
        })
    }
}

/// Errors from decoding untrusted bytes.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum PacketError {
    /// Fewer than [`HEADER_LEN`] bytes.
    #[error("packet too short for an Rx header ({0} bytes)")]
    TooShort(usize),
    /// Type byte is not a known Rx packet type.
    #[error("unknown Rx packet type {0}")]
    UnknownType(u8),
    /// ACK body malformed.
    #[error("bad ACK body: {0}")]
    Ack(#[from] AckError),
    /// ABORT body shorter than 4 bytes.
    #[error("ABORT body too short ({0} bytes)")]
    ShortAbort(usize),
}

/// The decoded Rx header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Header {
    /// Connection epoch (client start time, usually with the high bit set).
    pub epoch: u32,
    /// Connection id; low two bits are the channel.
    pub cid: u32,
    /// Call number on that channel, starting at 1.
    pub call_number: u32,
    /// Packet sequence number within one direction of the call, from 1.
    pub seq: u32,
    /// Per-connection transmission serial; every transmission gets a new one.
    pub serial: u32,
    /// Raw packet type byte.
    pub packet_type: u8,
    /// Flag bits, see [`flags`].
    pub flags: u8,
    /// Application status byte (unused by AFS).
    pub user_status: u8,
    /// Security class index (0 null, 2 rxkad).
    pub security_index: u8,
    /// Header checksum (rxkad), on the wire before `service_id`.
    pub checksum: u16,
    /// Service id (1 fileserver / callback, 52 VL, ...).
    pub service_id: u16,
}

impl Header {
    /// Channel number (cid & 3), see rx.h `RX_CHANNELMASK`.
    pub fn channel(&self) -> u8 {
        (self.cid & 3) as u8
    }

    /// Connection id without the channel bits.
    pub fn conn_id(&self) -> u32 {
        self.cid & !3
    }

    /// Known packet type, if any.
    pub fn ptype(&self) -> Option<PacketType> {
        PacketType::from_u8(self.packet_type)
    }

    /// Whether the given flag bit(s) are all set.
    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag == flag
    }

    /// Append the 28-byte wire form to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.epoch.to_be_bytes());
        out.extend_from_slice(&self.cid.to_be_bytes());
        out.extend_from_slice(&self.call_number.to_be_bytes());
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.serial.to_be_bytes());
        out.push(self.packet_type);
        out.push(self.flags);
        out.push(self.user_status);
        out.push(self.security_index);
        out.extend_from_slice(&self.checksum.to_be_bytes());
        out.extend_from_slice(&self.service_id.to_be_bytes());
    }

    /// Decode the first 28 bytes of `data`.
    pub fn decode(data: &[u8]) -> Result<Header, PacketError> {
        let h = data
            .get(..HEADER_LEN)
            .ok_or(PacketError::TooShort(data.len()))?;
        let w = |i: usize| u32::from_be_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
        Ok(Header {
            epoch: w(0),
            cid: w(4),
            call_number: w(8),
            seq: w(12),
            serial: w(16),
            packet_type: h[20],
            flags: h[21],
            user_status: h[22],
            security_index: h[23],
            checksum: u16::from_be_bytes([h[24], h[25]]),
            service_id: u16::from_be_bytes([h[26], h[27]]),
        })
    }
}

/// A decoded packet body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    /// DATA payload (for a jumbogram: the whole rest of the datagram; use
    /// [`split_jumbo`]).
    Data(Vec<u8>),
    /// ACK body.
    Ack(AckPacket),
    /// ABORT with its error code (rx.c `rxi_SendCallAbort`: 4-byte BE).
    Abort(i32),
    /// BUSY: no body.
    Busy,
    /// VERSION: the (possibly empty) version string bytes.
    Version(Vec<u8>),
    /// Any other type (CHALLENGE, RESPONSE, DEBUG, PARAMS, ACKALL): raw body.
    Other(Vec<u8>),
}

/// A decoded packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet {
    /// The header.
    pub header: Header,
    /// The type-specific body.
    pub body: Body,
}

impl Packet {
    /// Encode header and body.
    pub fn encode(&self) -> Vec<u8> {
        let body_len = match &self.body {
            Body::Data(d) | Body::Version(d) | Body::Other(d) => d.len(),
            _ => 64,
        };
        // Sized for the body up front: a DATA packet is copied once, not
        // copied again when the buffer grows.
        let mut out = Vec::with_capacity(HEADER_LEN + body_len);
        self.header.encode(&mut out);
        match &self.body {
            Body::Data(d) | Body::Version(d) | Body::Other(d) => out.extend_from_slice(d),
            Body::Ack(a) => a.encode(&mut out),
            Body::Abort(code) => out.extend_from_slice(&code.to_be_bytes()),
            Body::Busy => {}
        }
        out
    }
}

/// Decode one datagram. Never panics; malformed input gives `Err`.
pub fn decode_packet(data: &[u8]) -> Result<Packet, PacketError> {
    let header = Header::decode(data)?;
    let rest = &data[HEADER_LEN..];
    let ptype = header
        .ptype()
        .ok_or(PacketError::UnknownType(header.packet_type))?;
    let body = match ptype {
        PacketType::Data => Body::Data(rest.to_vec()),
        PacketType::Ack => Body::Ack(AckPacket::decode(rest)?),
        PacketType::Abort => {
            let b = rest.get(..4).ok_or(PacketError::ShortAbort(rest.len()))?;
            Body::Abort(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        }
        PacketType::Busy => Body::Busy,
        PacketType::Version => Body::Version(rest.to_vec()),
        _ => Body::Other(rest.to_vec()),
    };
    Ok(Packet { header, body })
}

/// Split a DATA packet that may be a jumbogram into its sub-packets.
///
/// Each sub-packet except the last carries exactly [`JUMBO_BUFFER_SIZE`]
/// bytes followed by a 4-byte header {flags, spare, cksum} for the next one,
/// whose seq and serial are one higher (rx_packet.c `rxi_SplitJumboPacket`).
/// A truncated jumbogram yields the sub-packets that are complete.
pub fn split_jumbo(header: Header, payload: &[u8]) -> Vec<(Header, Vec<u8>)> {
    let mut out = Vec::new();
    let mut h = header;
    let mut rest = payload;
    let mut guard = 0;
    while h.has(flags::JUMBO_PACKET) && guard < 64 {
        guard += 1;
        if rest.len() < JUMBO_BUFFER_SIZE + JUMBO_HEADER_SIZE {
            // Malformed: treat what is left as a plain last sub-packet.
            break;
        }
        let (mine, tail) = rest.split_at(JUMBO_BUFFER_SIZE);
        let mut sub = h;
        sub.flags &= !flags::JUMBO_PACKET;
        out.push((sub, mine.to_vec()));
        let jh = &tail[..JUMBO_HEADER_SIZE];
        h.flags = jh[0];
        h.checksum = u16::from_be_bytes([jh[2], jh[3]]);
        h.seq = h.seq.wrapping_add(1);
        h.serial = h.serial.wrapping_add(1);
        rest = &tail[JUMBO_HEADER_SIZE..];
    }
    h.flags &= !flags::JUMBO_PACKET;
    out.push((h, rest.to_vec()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ack::{reason, AckTrailer};

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn header_round_trip_and_field_order() {
        let h = Header {
            epoch: 0x0102_0304,
            cid: 0x0506_0709,
            call_number: 3,
            seq: 4,
            serial: 5,
            packet_type: 1,
            flags: 0x25,
            user_status: 7,
            security_index: 2,
            checksum: 0xabcd,
            service_id: 0x0034,
        };
        let mut b = Vec::new();
        h.encode(&mut b);
        assert_eq!(b.len(), HEADER_LEN);
        // cksum precedes serviceId on the wire.
        assert_eq!(&b[24..28], &[0xab, 0xcd, 0x00, 0x34]);
        assert_eq!(Header::decode(&b).unwrap(), h);
        assert_eq!(h.channel(), 1);
        assert_eq!(h.conn_id(), 0x0506_0708);
    }

    #[test]
    fn ack_round_trip() {
        let a = AckPacket {
            buffer_space: 32,
            max_skew: 1,
            first_packet: 7,
            previous_packet: 9,
            serial: 11,
            reason: reason::OUT_OF_SEQUENCE,
            acks: vec![0, 1, 1],
            trailer: AckTrailer {
                max_mtu: Some(5692),
                if_mtu: Some(1444),
                rwind: Some(64),
                max_dgram_packets: Some(1),
            },
        };
        let p = Packet {
            header: Header {
                packet_type: PacketType::Ack as u8,
                ..Default::default()
            },
            body: Body::Ack(a),
        };
        let b = p.encode();
        assert_eq!(b.len(), HEADER_LEN + 18 + 3 + 3 + 16);
        assert_eq!(decode_packet(&b).unwrap(), p);
    }

    /// callback-break.pcap frame 10: the client's FetchStatus request.
    #[test]
    fn real_data_packet_from_capture() {
        let b = hex("bb1e41d3d9694fdc000000010000000100000001010500000000000100000084200000030000000100000001");
        let p = decode_packet(&b).unwrap();
        let h = p.header;
        assert_eq!(h.epoch, 0xbb1e41d3);
        assert_eq!(h.cid, 0xd9694fdc);
        assert_eq!((h.call_number, h.seq, h.serial), (1, 1, 1));
        assert_eq!(h.ptype(), Some(PacketType::Data));
        assert_eq!(h.flags, flags::CLIENT_INITIATED | flags::LAST_PACKET);
        assert_eq!((h.security_index, h.checksum, h.service_id), (0, 0, 1));
        match p.body {
            // opcode 132 = FetchStatus
            Body::Data(ref d) => assert_eq!(&d[..4], &[0, 0, 0, 0x84]),
            other => panic!("{other:?}"),
        }
        assert_eq!(p.encode(), b);
    }

    /// callback-break.pcap frames 11 and 12: the fileserver's PING (with a
    /// stale nonzero cksum) and libafscp's PING_RESPONSE.
    #[test]
    fn real_ping_and_ping_response_from_capture() {
        let ping = hex("bb1e41d3d9694fdc000000010000000000000001022200006e2e000100000000000000010000000100000000060101000000000005a4000005a40000001000000001");
        let p = decode_packet(&ping).unwrap();
        assert_eq!(p.header.flags, flags::REQUEST_ACK | flags::SLOW_START_OK);
        assert_eq!(p.header.checksum, 0x6e2e);
        assert_eq!(p.header.service_id, 1);
        let Body::Ack(a) = &p.body else { panic!() };
        assert_eq!(a.reason, reason::PING);
        assert_eq!(a.first_packet, 1);
        assert_eq!(a.acks, vec![1]);
        assert_eq!(a.trailer.max_mtu, Some(1444));
        assert_eq!(a.trailer.if_mtu, Some(1444));
        assert_eq!(a.trailer.rwind, Some(16));
        assert_eq!(a.trailer.max_dgram_packets, Some(1));
        assert_eq!(p.encode(), ping);

        let resp = hex("bb1e41d3d9694fdc00000001000000000000000202210000000000010000000000000001000000000000000107000000000000163c000005a40000001000000004");
        let p = decode_packet(&resp).unwrap();
        let Body::Ack(a) = &p.body else { panic!() };
        assert_eq!(a.reason, reason::PING_RESPONSE);
        assert_eq!(a.serial, 1, "echoes the ping's serial");
        assert!(a.acks.is_empty());
        assert_eq!(a.trailer.max_mtu, Some(5692));
        assert_eq!(a.trailer.max_dgram_packets, Some(4));
        assert_eq!(p.encode(), resp);
    }

    /// callback-break.pcap frame 23: ACK reason REQUESTED, one soft ACK.
    #[test]
    fn real_requested_ack_from_capture() {
        let b = hex("bb1e41d3d9694fdc0000000200000000000000050221000000000001000000000000000100000001000000030101010000000000163c000005a40000002000000004");
        let p = decode_packet(&b).unwrap();
        let Body::Ack(a) = &p.body else { panic!() };
        assert_eq!(a.reason, reason::REQUESTED);
        assert_eq!(a.serial, 3);
        assert_eq!(a.first_packet, 1);
        assert_eq!(a.acks, vec![1]);
        assert_eq!(a.trailer.rwind, Some(32));
    }

    #[test]
    fn truncated_inputs_are_errors() {
        assert!(matches!(
            decode_packet(&[0; 27]),
            Err(PacketError::TooShort(27))
        ));
        let mut b = vec![0u8; 28];
        b[20] = 2; // ACK with empty body
        assert!(decode_packet(&b).is_err());
        b.extend_from_slice(&[0; 17]);
        b.push(200); // nAcks = 200, none present
        assert!(decode_packet(&b).is_err());
        b[20] = 4; // ABORT with body present
        assert!(decode_packet(&b).is_ok());
        b[20] = 99;
        assert!(matches!(
            decode_packet(&b),
            Err(PacketError::UnknownType(99))
        ));
    }

    #[test]
    fn jumbo_split() {
        let h = Header {
            seq: 5,
            serial: 10,
            packet_type: 1,
            flags: flags::JUMBO_PACKET | flags::CLIENT_INITIATED,
            ..Default::default()
        };
        let mut payload = vec![1u8; JUMBO_BUFFER_SIZE];
        payload.extend_from_slice(&[flags::LAST_PACKET | flags::CLIENT_INITIATED, 0, 0, 0]);
        payload.extend_from_slice(&[2u8; 100]);
        let subs = split_jumbo(h, &payload);
        assert_eq!(subs.len(), 2);
        assert_eq!(subs[0].0.seq, 5);
        assert_eq!(subs[0].1.len(), JUMBO_BUFFER_SIZE);
        assert_eq!(subs[1].0.seq, 6);
        assert_eq!(subs[1].0.serial, 11);
        assert!(subs[1].0.has(flags::LAST_PACKET));
        assert_eq!(subs[1].1, vec![2u8; 100]);
    }

    proptest::proptest! {
        #[test]
        fn decode_never_panics(data in proptest::collection::vec(proptest::num::u8::ANY, 0..200), t in 0u8..16) {
            let mut d = data;
            if d.len() > 20 { d[20] = t; }
            let _ = decode_packet(&d);
            if let Ok(p) = decode_packet(&d) {
                if let Body::Data(pl) = &p.body { let _ = split_jumbo(p.header, pl); }
            }
        }
    }
}
