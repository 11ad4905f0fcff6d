//! The sans-IO Rx endpoint serving the callback service, fed arbitrary
//! packet sequences from a few peers (plus timer runs and one client call
//! of its own, so that spoofed replies have something to hit). Incoming
//! calls are answered the way client/src/callback.rs does. Nothing may
//! panic, the endpoint's indexes must stay consistent and its state within
//! the configured caps.
#![no_main]

use afs_proto::cb::{self, CbRequest};
use afs_proto::types::{InterfaceAddr, Uuid};
use libfuzzer_sys::fuzz_target;
use rx::proto::{CallId, Config, ConnKey, Endpoint, Event};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

const MAX_CONNS: usize = 8;
const PER_PEER: usize = 3;
const MAX_REQUEST: usize = 64 << 10;
const EPOCHS: [u32; 3] = [0x8000_0001, 0x8000_0002, 0x1234_5678];

/// Byte reader that yields zeros once the input is used up.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    fn bytes(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Peers 0..4 are fileservers on 198.18.0.x:7000; 4..8 share one address
/// with different ports (the per-peer cap is per IP address).
fn peer(i: u8) -> SocketAddr {
    let i = i % 8;
    if i < 4 {
        SocketAddr::from((Ipv4Addr::new(198, 18, 0, 10 + i), 7000))
    } else {
        SocketAddr::from((Ipv4Addr::new(198, 18, 0, 20), 7000 + i as u16))
    }
}

fn interface_addr(uuid: Uuid) -> InterfaceAddr {
    InterfaceAddr {
        number_of_interfaces: 1,
        uuid,
        addr_in: [Ipv4Addr::new(198, 18, 0, 1); afs_proto::types::MAX_INTERFACE_ADDR],
        subnetmask: [Ipv4Addr::new(255, 255, 255, 0); afs_proto::types::MAX_INTERFACE_ADDR],
        mtu: [1500; afs_proto::types::MAX_INTERFACE_ADDR],
    }
}

/// What client/src/callback.rs answers.
fn answer(ep: &mut Endpoint, now: Instant, id: CallId, service_id: u16, request: &[u8]) {
    let uuid = Uuid::default();
    if service_id != cb::CB_SERVICE_ID {
        ep.abort_call(id, now, cb::RXGEN_OPCODE);
        return;
    }
    let req = match CbRequest::decode(request) {
        Ok(r) => r,
        Err(_) => {
            ep.abort_call(id, now, -453);
            return;
        }
    };
    match req {
        CbRequest::CallBack { .. }
        | CbRequest::InitCallBackState
        | CbRequest::InitCallBackState3 { .. }
        | CbRequest::Probe => ep.reply(id, now, cb::encode_empty_reply()),
        CbRequest::ProbeUuid { client_uuid } => {
            if client_uuid == uuid {
                ep.reply(id, now, cb::encode_empty_reply())
            } else {
                ep.abort_call(id, now, cb::PROBE_UUID_MISMATCH)
            }
        }
        CbRequest::WhoAreYou => {
            ep.reply(id, now, cb::encode_who_are_you_reply(&interface_addr(uuid)))
        }
        CbRequest::TellMeAboutYourself => ep.reply(
            id,
            now,
            cb::encode_tell_me_about_yourself_reply(
                &interface_addr(uuid),
                &[cb::CLIENT_CAPABILITY_ERRORTRANS],
            ),
        ),
        CbRequest::Unknown(_) => ep.abort_call(id, now, cb::RXGEN_OPCODE),
    }
}

fuzz_target!(|data: &[u8]| {
    let mut inp = Input(data);
    let config = Config {
        epoch: 0x8000_00aa,
        served_services: vec![cb::CB_SERVICE_ID],
        max_server_conns: MAX_CONNS,
        max_server_conns_per_peer: PER_PEER,
        max_request_bytes: vec![(cb::CB_SERVICE_ID, MAX_REQUEST)],
        ..Config::default()
    };
    let mut ep = Endpoint::new(config);
    let start = Instant::now();
    let mut now = start;
    let mut pending: Vec<(CallId, u16, Vec<u8>)> = Vec::new();
    let mut client_cid = None;
    let mut steps = 0;
    while !inp.is_empty() && steps < 256 {
        steps += 1;
        match inp.u8() % 8 {
            // A structured packet: header fields chosen by the input.
            0..=3 => {
                let from = peer(inp.u8());
                let sel = inp.u8();
                let epoch = match sel % 4 {
                    3 => inp.u32(),
                    n => EPOCHS[n as usize],
                };
                let cid = match (sel >> 2) % 4 {
                    // Our own client connection, for spoofed replies.
                    0 => client_cid.unwrap_or(0) | (inp.u8() as u32 & 3),
                    1 => inp.u32(),
                    _ => inp.u8() as u32,
                };
                let call_number = inp.u8() as u32;
                let seq = inp.u8() as u32;
                let serial = inp.u16() as u32;
                let ptype = inp.u8() % 14;
                let flags = inp.u8();
                let sec = if sel & 0x40 != 0 { inp.u8() } else { 0 };
                let service = if sel & 0x80 != 0 {
                    inp.u16()
                } else {
                    cb::CB_SERVICE_ID
                };
                let len = inp.u16() as usize % 1500;
                let mut d = Vec::with_capacity(28 + len);
                for w in [epoch, cid, call_number, seq, serial] {
                    d.extend_from_slice(&w.to_be_bytes());
                }
                d.extend_from_slice(&[ptype, flags, 0, sec, 0, 0]);
                d.extend_from_slice(&service.to_be_bytes());
                d.extend_from_slice(inp.bytes(len));
                ep.handle_datagram(now, from, &d);
            }
            // Raw bytes.
            4 => {
                let from = peer(inp.u8());
                let len = inp.u16() as usize % 2048;
                let d = inp.bytes(len).to_vec();
                ep.handle_datagram(now, from, &d);
            }
            // Time passes; run the timers.
            5 => {
                let step = inp.u16() as u64;
                now += Duration::from_millis(step * 16);
                ep.handle_timeout(now);
            }
            // The application answers what arrived (some of it).
            6 => {
                let n = inp.u8() as usize % 4 + 1;
                for (id, service, req) in pending.drain(..n.min(pending.len())) {
                    answer(&mut ep, now, id, service, &req);
                }
            }
            // A call of our own to one of the peers.
            _ => {
                let to = peer(inp.u8());
                let key = ConnKey {
                    peer: to,
                    service_id: 1,
                    identity: 0,
                    security: Default::default(),
                };
                let id = ep.start_call(now, key, vec![0, 0, 0, 206]);
                if let Some((cid, _)) = ep.call_location(id) {
                    client_cid = Some(cid);
                }
            }
        }
        while ep.poll_transmit().is_some() {}
        while let Some(ev) = ep.poll_event() {
            if let Event::Incoming {
                id,
                service_id,
                request,
                ..
            } = ev
            {
                assert!(request.len() <= MAX_REQUEST, "request over the cap");
                pending.push((id, service_id, request));
            }
        }
        ep.check_invariants();
        let size = ep.state_size();
        assert!(size.server_conns <= MAX_CONNS);
        assert!(size.peers <= MAX_CONNS);
        assert!(size.calls <= (size.conns) * 4);
        // Server calls hold at most MAX_REQUEST; client calls at most a
        // receive window of packets.
        assert!(size.buffered_bytes <= size.calls * MAX_REQUEST.max(255 * 2048));
    }
    // Everything left is answered; then, long after, nothing remains of
    // the server side.
    for (id, service, req) in pending.drain(..) {
        answer(&mut ep, now, id, service, &req);
    }
    for _ in 0..8 {
        now += Duration::from_secs(60);
        ep.handle_timeout(now);
        while ep.poll_transmit().is_some() {}
        while ep.poll_event().is_some() {}
    }
    ep.check_invariants();
    assert_eq!(
        ep.server_connection_count(),
        0,
        "idle server connections forgotten"
    );
});
