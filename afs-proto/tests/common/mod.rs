//! Test helper: reads the small libpcap files in `tests/data/` (copied
//! from the OpenAFS 1.8.9 captures by `tests/data/extract.py`) and
//! reassembles Rx calls.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;

/// The 28-byte Rx header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RxHeader {
    pub epoch: u32,
    pub cid: u32,
    pub call: u32,
    pub seq: u32,
    pub serial: u32,
    pub ptype: u8,
    pub flags: u8,
    pub security_index: u8,
    pub service_id: u16,
}

/// One UDP datagram carrying Rx.
#[derive(Debug, Clone)]
pub struct Packet {
    pub src_port: u16,
    pub dst_port: u16,
    pub rx: RxHeader,
    pub payload: Vec<u8>,
}

/// Rx packet type DATA.
pub const RX_PACKET_TYPE_DATA: u8 = 1;
/// Rx header flag: packet sent by the call's client.
pub const RX_CLIENT_INITIATED: u8 = 1;

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Reads a little- or big-endian libpcap file of Ethernet/IPv4/UDP frames
/// and yields the Rx packets (non-UDP frames, e.g. ICMP, are skipped).
pub fn read_pcap(name: &str) -> Vec<Packet> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name);
    let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let le = match &data[..4] {
        [0xd4, 0xc3, 0xb2, 0xa1] => true,
        [0xa1, 0xb2, 0xc3, 0xd4] => false,
        m => panic!("not a pcap file: magic {m:02x?}"),
    };
    let rd32 = |b: &[u8]| {
        let a = [b[0], b[1], b[2], b[3]];
        if le {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        }
    };
    let mut out = Vec::new();
    let mut off = 24;
    while off + 16 <= data.len() {
        let incl = rd32(&data[off + 8..]) as usize;
        let frame = &data[off + 16..off + 16 + incl];
        off += 16 + incl;
        if frame.len() < 14 + 20 || be16(&frame[12..]) != 0x0800 {
            continue;
        }
        let ip = &frame[14..];
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        if ip[9] != 17 {
            continue;
        }
        let udp = &ip[ihl..];
        let udp_len = usize::from(be16(&udp[4..]));
        let rx = &udp[8..udp_len];
        if rx.len() < 28 {
            continue;
        }
        out.push(Packet {
            src_port: be16(udp),
            dst_port: be16(&udp[2..]),
            rx: RxHeader {
                epoch: be32(rx),
                cid: be32(&rx[4..]),
                call: be32(&rx[8..]),
                seq: be32(&rx[12..]),
                serial: be32(&rx[16..]),
                ptype: rx[20],
                flags: rx[21],
                security_index: rx[23],
                service_id: be16(&rx[26..]),
            },
            payload: rx[28..].to_vec(),
        });
    }
    out
}

/// A reassembled Rx call: request and reply streams (DATA payloads in
/// sequence order, duplicates dropped).
#[derive(Debug, Clone)]
pub struct Call {
    pub epoch: u32,
    pub cid: u32,
    pub call: u32,
    pub service_id: u16,
    /// UDP port of the call's server side.
    pub server_port: u16,
    pub request: Vec<u8>,
    pub reply: Vec<u8>,
    /// Number of reply DATA packets.
    pub reply_packets: usize,
}

impl Call {
    /// First request word.
    pub fn opcode(&self) -> u32 {
        be32(&self.request)
    }

    /// Request without the opcode.
    pub fn args(&self) -> &[u8] {
        &self.request[4..]
    }
}

/// All calls in a pcap, in order of first appearance.
pub fn calls(name: &str) -> Vec<Call> {
    type Key = (u32, u32, u32);
    let mut order: Vec<Key> = Vec::new();
    type Stream = BTreeMap<u32, Vec<u8>>;
    let mut parts: BTreeMap<Key, (u16, u16, Stream, Stream)> = BTreeMap::new();
    for p in read_pcap(name) {
        if p.rx.ptype != RX_PACKET_TYPE_DATA {
            continue;
        }
        // The connection id's low 2 bits are the channel; calls are keyed
        // by the full cid (which includes the channel) and call number.
        let key = (p.rx.epoch, p.rx.cid, p.rx.call);
        let e = parts.entry(key).or_insert_with(|| {
            order.push(key);
            (p.rx.service_id, 0, BTreeMap::new(), BTreeMap::new())
        });
        if p.rx.flags & RX_CLIENT_INITIATED != 0 {
            e.1 = p.dst_port;
            e.2.insert(p.rx.seq, p.payload);
        } else {
            e.1 = p.src_port;
            e.3.insert(p.rx.seq, p.payload);
        }
    }
    order
        .into_iter()
        .map(|k| {
            let (service_id, server_port, req, rep) = parts.remove(&k).unwrap();
            Call {
                epoch: k.0,
                cid: k.1,
                call: k.2,
                service_id,
                server_port,
                reply_packets: rep.len(),
                request: req.into_values().flatten().collect(),
                reply: rep.into_values().flatten().collect(),
            }
        })
        .collect()
}

/// Calls with the given server port and opcode.
pub fn find(calls: &[Call], server_port: Option<u16>, opcode: u32) -> Vec<Call> {
    calls
        .iter()
        .filter(|c| c.request.len() >= 4 && c.opcode() == opcode)
        .filter(|c| server_port.is_none_or(|p| c.server_port == p))
        .cloned()
        .collect()
}
