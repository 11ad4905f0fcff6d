//! Rx under hostile traffic, in the sans-IO style: spoofed replies, floods
//! of server connections, oversized requests, idle server connections and
//! unguessable epochs.

use rx::packet::{decode_packet, flags, Body, Header, Packet, PacketType};
use rx::proto::{Config, ConnKey, Endpoint, Event};
use rx::rxkad::Challenge;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

const CB: u16 = 1;

fn fs() -> SocketAddr {
    SocketAddr::from(([198, 18, 0, 10], 7000))
}

fn drain(ep: &mut Endpoint) -> Vec<Packet> {
    let mut v = Vec::new();
    while let Some(t) = ep.poll_transmit() {
        v.push(decode_packet(&t.payload).unwrap());
    }
    v
}

fn served() -> Config {
    Config {
        served_services: vec![CB],
        ..Config::default()
    }
}

/// A DATA packet of a call the peer makes to us.
fn request(cid: u32, call: u32, seq: u32, last: bool, payload: Vec<u8>) -> Vec<u8> {
    Packet {
        header: Header {
            epoch: 0x8000_1234,
            cid,
            call_number: call,
            seq,
            serial: seq,
            packet_type: PacketType::Data as u8,
            flags: flags::CLIENT_INITIATED | if last { flags::LAST_PACKET } else { 0 },
            service_id: CB,
            ..Header::default()
        },
        body: Body::Data(payload),
    }
    .encode()
}

#[test]
fn spoofed_reply_abort_and_challenge_from_another_address_are_ignored() {
    let now = Instant::now();
    let mut ep = Endpoint::new(Config::default());
    let key = ConnKey {
        peer: fs(),
        service_id: 1,
        identity: 0,
        security: Default::default(),
    };
    let id = ep.start_call(now, key, b"request".to_vec());
    let req = drain(&mut ep)
        .into_iter()
        .find(|p| p.header.ptype() == Some(PacketType::Data))
        .unwrap()
        .header;
    let answer = |ptype: PacketType, body: Body, fl: u8| {
        Packet {
            header: Header {
                packet_type: ptype as u8,
                flags: fl,
                seq: if ptype == PacketType::Data { 1 } else { 0 },
                serial: 77,
                ..req
            },
            body,
        }
        .encode()
    };
    let forged_reply = answer(
        PacketType::Data,
        Body::Data(b"evil".to_vec()),
        flags::LAST_PACKET,
    );
    let forged_abort = answer(PacketType::Abort, Body::Abort(-1), 0);
    let challenge = Challenge {
        version: 2,
        nonce: 5,
        min_level: 0,
    };
    let forged_challenge = answer(PacketType::Challenge, Body::Other(challenge.encode()), 0);
    let forged_busy = answer(PacketType::Busy, Body::Busy, 0);
    // Same IP, other port; other IP, same port.
    let spoofers = [
        SocketAddr::from(([198, 18, 0, 10], 7001)),
        SocketAddr::from(([198, 18, 0, 66], 7000)),
    ];
    for from in spoofers {
        for p in [
            &forged_abort,
            &forged_challenge,
            &forged_busy,
            &forged_reply,
        ] {
            ep.handle_datagram(now, from, p);
        }
    }
    assert!(ep.poll_event().is_none(), "nothing reached the call");
    assert!(
        drain(&mut ep).is_empty(),
        "no RESPONSE, ACK or retry went out"
    );
    let s = ep.stats();
    assert_eq!(s.wrong_peer_drops, 8);
    assert_eq!(
        (s.responses_sent, s.busy_received, s.calls_failed),
        (0, 0, 0)
    );
    // The real reply from the real peer completes the call.
    let real = answer(
        PacketType::Data,
        Body::Data(b"real".to_vec()),
        flags::LAST_PACKET,
    );
    ep.handle_datagram(now, fs(), &real);
    assert_eq!(
        ep.poll_event(),
        Some(Event::CallDone {
            id,
            result: Ok(b"real".to_vec())
        })
    );
}

#[test]
fn a_flood_of_server_connections_stays_within_the_caps() {
    let mut now = Instant::now();
    let mut ep = Endpoint::new(Config {
        max_server_conns: 100,
        max_server_conns_per_peer: 8,
        ..served()
    });
    // 500 fake peers (5 ports each on 100 addresses), each opening 20
    // connections with a request left incomplete (no LAST packet), so that
    // none of them can be evicted as idle.
    let mut refused_expected = 0u64;
    let mut max_size = ep.state_size();
    for ip in 0..100u32 {
        for port in 0..5u16 {
            let from = SocketAddr::from((Ipv4Addr::from(0xc612_0000 + ip), 7000 + port));
            for c in 0..20u32 {
                let before = ep.server_connection_count();
                ep.handle_datagram(
                    now,
                    from,
                    &request((c + 1) << 2, 1, 1, false, vec![7; 1000]),
                );
                if ep.server_connection_count() == before {
                    refused_expected += 1;
                }
                let s = ep.state_size();
                assert!(s.server_conns <= 100 && s.peers <= 100, "{s:?}");
                max_size.buffered_bytes = max_size.buffered_bytes.max(s.buffered_bytes);
                max_size.calls = max_size.calls.max(s.calls);
            }
            drain(&mut ep);
        }
        now += Duration::from_millis(1);
    }
    ep.check_invariants();
    let s = ep.state_size();
    assert_eq!(s.server_conns, 100);
    // 8 per address for the first 12 addresses (and 4 of the 13th).
    assert_eq!(s.peers, 13);
    assert!(max_size.calls <= 100, "{max_size:?}");
    assert!(max_size.buffered_bytes <= 100 * 1000, "{max_size:?}");
    let st = ep.stats();
    assert_eq!(st.server_conns_refused, refused_expected);
    assert_eq!(st.server_conns_refused, 100 * 5 * 20 - 100);
    assert_eq!(st.server_conns_evicted, 0);
    // Once the partial requests die (dead time) and the connections go
    // idle, a real fileserver gets in again: the longest-idle connection
    // makes room.
    now += Duration::from_secs(51);
    ep.handle_timeout(now);
    drain(&mut ep);
    let real = SocketAddr::from(([198, 18, 1, 1], 7000));
    ep.handle_datagram(now, real, &request(4, 1, 1, true, vec![0, 0, 0, 206]));
    assert!(matches!(ep.poll_event(), Some(Event::Incoming { peer, .. }) if peer == real));
    assert_eq!(ep.stats().server_conns_evicted, 1);
    assert_eq!(ep.server_connection_count(), 100);
    ep.check_invariants();
}

#[test]
fn an_oversized_request_is_refused() {
    let now = Instant::now();
    let mut ep = Endpoint::new(Config {
        max_request_bytes: vec![(CB, 4096)],
        ..served()
    });
    // Out of order first: buffered packets count towards the cap too.
    let peer = fs();
    for seq in [3, 2] {
        ep.handle_datagram(now, peer, &request(4, 1, seq, false, vec![1; 1400]));
    }
    assert_eq!(ep.stats().oversized_requests, 0);
    assert_eq!(ep.state_size().buffered_bytes, 2800);
    ep.handle_datagram(now, peer, &request(4, 1, 4, true, vec![1; 1400]));
    let pkts = drain(&mut ep);
    assert!(
        pkts.iter()
            .any(|p| p.header.ptype() == Some(PacketType::Abort)
                && p.body == Body::Abort(rx::error::codes::RX_MSGSIZE)),
        "{pkts:?}"
    );
    assert_eq!(ep.stats().oversized_requests, 1);
    assert_eq!(ep.state_size().buffered_bytes, 0, "buffers freed");
    ep.handle_datagram(now, peer, &request(4, 1, 1, false, vec![1; 1400]));
    assert!(
        ep.poll_event().is_none(),
        "no Incoming for the aborted call"
    );
    // A request within the cap on the next call works.
    ep.handle_datagram(now, peer, &request(4, 2, 1, true, vec![0, 0, 0, 206]));
    assert!(
        matches!(ep.poll_event(), Some(Event::Incoming { request, .. }) if request == [0, 0, 0, 206])
    );
    // The default config caps the callback service at 64 KiB.
    assert_eq!(Config::default().max_request_bytes, vec![(CB, 64 << 10)]);
}

#[test]
fn an_idle_server_connection_is_forgotten_after_the_timeout() {
    let start = Instant::now();
    let mut ep = Endpoint::new(served());
    ep.handle_datagram(start, fs(), &request(4, 1, 1, true, vec![0, 0, 0, 206]));
    let Some(Event::Incoming { id, .. }) = ep.poll_event() else {
        panic!("no incoming call")
    };
    ep.reply(id, start, Vec::new());
    drain(&mut ep);
    // The caller ACKs the reply: the call is done.
    let ack = Packet {
        header: Header {
            epoch: 0x8000_1234,
            cid: 4,
            call_number: 1,
            serial: 9,
            packet_type: PacketType::Ack as u8,
            flags: flags::CLIENT_INITIATED,
            service_id: CB,
            ..Header::default()
        },
        body: Body::Ack(rx::ack::AckPacket {
            first_packet: 2,
            reason: rx::ack::reason::REQUESTED,
            ..Default::default()
        }),
    };
    ep.handle_datagram(start, fs(), &ack.encode());
    assert_eq!(ep.server_connection_count(), 1);
    let due = ep.poll_timeout().expect("an idle timer");
    assert_eq!(due, start + Duration::from_secs(60));
    ep.handle_timeout(start + Duration::from_secs(59));
    assert_eq!(ep.server_connection_count(), 1);
    ep.handle_timeout(due);
    assert_eq!(ep.server_connection_count(), 0);
    assert_eq!(ep.state_size(), Default::default());
    assert_eq!(ep.stats().server_conns_expired, 1);
    assert_eq!(ep.poll_timeout(), None);
}

#[test]
fn epochs_are_random_with_the_high_bit_set() {
    let a = Endpoint::new(Config::default()).config().epoch;
    let b = Endpoint::new(Config::default()).config().epoch;
    assert_ne!(a, b);
    assert_ne!(a & 0x8000_0000, 0);
    assert_ne!(b & 0x8000_0000, 0);
    assert_ne!(rx::proto::random_epoch() & 0x8000_0000, 0);
    // An explicit epoch is kept.
    assert_eq!(
        Endpoint::new(Config {
            epoch: 0x8000_0007,
            ..Config::default()
        })
        .config()
        .epoch,
        0x8000_0007
    );
    // Connection ids differ between endpoints too.
    let key = ConnKey {
        peer: fs(),
        service_id: 1,
        identity: 0,
        security: Default::default(),
    };
    let now = Instant::now();
    let cid = |ep: &mut Endpoint| {
        let id = ep.start_call(now, key.clone(), vec![1]);
        ep.call_location(id).unwrap().0
    };
    let (x, y) = (
        cid(&mut Endpoint::new(Config::default())),
        cid(&mut Endpoint::new(Config::default())),
    );
    assert_ne!(x, y);
}
