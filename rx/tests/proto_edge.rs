//! Edge cases: BUSY, duplicates of answered calls, VERSION, CHALLENGE,
//! ACK contents, and a property test over random loss patterns.

mod sim;

use rx::ack::reason;
use rx::packet::{decode_packet, flags, Body, Header, Packet, PacketType};
use rx::proto::{CallError, CallId, Config, ConnKey, Endpoint, Event};
use sim::*;
use std::time::{Duration, Instant};

const FS: u16 = 7000;
const CM: u16 = 7001;

fn key() -> ConnKey {
    ConnKey {
        peer: addr(FS),
        service_id: 1,
        identity: 0,
        security: Default::default(),
    }
}

fn drain(ep: &mut Endpoint) -> Vec<Packet> {
    let mut v = Vec::new();
    while let Some(t) = ep.poll_transmit() {
        v.push(decode_packet(&t.payload).unwrap());
    }
    v
}

fn reply_header(req: &Header, ptype: PacketType) -> Header {
    Header {
        packet_type: ptype as u8,
        flags: 0,
        seq: 0,
        serial: 1000 + req.serial,
        ..*req
    }
}

#[test]
fn busy_moves_call_to_another_channel_then_gives_up() {
    let now = Instant::now();
    let mut ep = Endpoint::new(Config::default());
    let id = ep.start_call(now, key(), b"hello".to_vec());
    let mut channels = Vec::new();
    for _ in 0..4 {
        let pkts = drain(&mut ep);
        let data = pkts
            .iter()
            .find(|p| p.header.ptype() == Some(PacketType::Data))
            .expect("a DATA packet");
        channels.push((data.header.cid, data.header.call_number));
        let busy = Packet {
            header: reply_header(&data.header, PacketType::Busy),
            body: Body::Busy,
        };
        ep.handle_datagram(now, addr(FS), &busy.encode());
    }
    // Each retry used a channel not used before.
    let mut cids: Vec<u32> = channels.iter().map(|c| c.0).collect();
    cids.dedup();
    assert_eq!(cids.len(), 4, "{channels:?}");
    assert_eq!(
        ep.poll_event(),
        Some(Event::CallDone {
            id,
            result: Err(CallError::Busy)
        })
    );
    assert_eq!(ep.stats().busy_received, 4);
}

#[test]
fn server_busy_on_reused_channel_is_retried_elsewhere() {
    let mut net = Net::new(21);
    let server = net.add(FS, config(0x8000_1111, &[1]), Responder::Manual);
    let client = net.add(CM, config(0x8000_2222, &[]), Responder::Manual);
    let now = net.now;
    let first = net.nodes[client].ep.start_call(now, key(), b"one".to_vec());
    assert!(
        net.run_until(Duration::from_secs(5), |n| n.nodes[server].incoming.len()
            == 1)
    );
    // The client gives up on call 1 but its ABORT is lost, so the server
    // is still working on it when call 2 arrives on the same channel.
    net.blackhole.insert(addr(FS));
    net.nodes[client].ep.cancel_call(first);
    net.run_for(Duration::from_millis(10));
    net.blackhole.clear();
    let now = net.now;
    let second = net.nodes[client].ep.start_call(now, key(), b"two".to_vec());
    let loc = net.nodes[client].ep.call_location(second).unwrap();
    assert_eq!(loc.1, 0, "call 2 reuses channel 0");
    assert!(
        net.run_until(Duration::from_secs(5), |n| n.nodes[server].incoming.len()
            == 2)
    );
    assert!(net.nodes[client].ep.stats().busy_received >= 1);
    assert_ne!(net.nodes[client].ep.call_location(second).unwrap(), loc);
    let (sid, req) = net.nodes[server].incoming[1].clone();
    assert_eq!(req, b"two");
    let now = net.now;
    net.nodes[server].ep.reply(sid, now, b"2".to_vec());
    assert!(net.run_until(Duration::from_secs(5), |n| n.nodes[client]
        .done
        .contains_key(&second)));
    assert_eq!(net.nodes[client].done[&second].1, Ok(b"2".to_vec()));
}

#[test]
fn duplicate_request_after_reply_retransmits_reply_without_new_incoming() {
    let mut net = Net::new(22);
    let server = net.add(
        FS,
        config(0x8000_1111, &[1]),
        Responder::Reply(echo_reversed),
    );
    let client = net.add(CM, config(0x8000_2222, &[]), Responder::Manual);
    let now = net.now;
    let id = net.nodes[client].ep.start_call(now, key(), b"abc".to_vec());
    assert!(net.run_until(Duration::from_secs(5), |n| n.nodes[client]
        .done
        .contains_key(&id)));
    net.run_for(Duration::from_secs(1));
    let req = net
        .wire
        .iter()
        .find(|(_, from, _, b)| {
            *from == addr(CM) && decode_packet(b).unwrap().header.ptype() == Some(PacketType::Data)
        })
        .unwrap()
        .3
        .clone();
    let before = net.wire.len();
    let now = net.now;
    net.nodes[server].ep.handle_datagram(now, addr(CM), &req);
    net.run_for(Duration::from_secs(1));
    let replayed: Vec<Packet> = net.wire[before..]
        .iter()
        .filter(|(_, from, _, _)| *from == addr(FS))
        .map(|w| decode_packet(&w.3).unwrap())
        .collect();
    assert!(
        replayed.iter().any(
            |p| p.body == Body::Data(echo_reversed(b"abc")) && p.header.has(flags::LAST_PACKET)
        ),
        "reply retransmitted: {replayed:?}"
    );
    assert_eq!(net.nodes[server].incoming.len(), 1);
    assert_eq!(net.nodes[client].done.len(), 1);
    // The client re-ACKs the retransmitted reply.
    assert!(net.wire[before..]
        .iter()
        .any(|(_, from, _, b)| *from == addr(CM)
            && matches!(decode_packet(b).unwrap().body, Body::Ack(ref a) if a.first_packet == 2)));
}

#[test]
fn version_request_is_answered_and_ping_gets_response() {
    let now = Instant::now();
    let mut ep = Endpoint::new(config(0x8000_0001, &[1]));
    let req = Packet {
        header: Header {
            packet_type: PacketType::Version as u8,
            flags: flags::CLIENT_INITIATED,
            ..Default::default()
        },
        body: Body::Version(vec![0]),
    };
    ep.handle_datagram(now, addr(9999), &req.encode());
    let out = ep.poll_transmit().unwrap();
    assert_eq!(out.dest, addr(9999));
    let p = decode_packet(&out.payload).unwrap();
    assert!(!p.header.has(flags::CLIENT_INITIATED));
    let Body::Version(v) = p.body else { panic!() };
    assert_eq!(v.len(), 65);
    assert!(v.starts_with(b"afsd-rs 0.1\0"));
    // A reply to our own keepalive (no CLIENT_INITIATED) is not answered.
    let mut resp = req.clone();
    resp.header.flags = 0;
    ep.handle_datagram(now, addr(9999), &resp.encode());
    assert!(ep.poll_transmit().is_none());

    // A PING on a server connection with a call in progress.
    let data = Packet {
        header: Header {
            epoch: 0x8000_7777,
            cid: 0x1000,
            call_number: 1,
            seq: 1,
            serial: 1,
            packet_type: PacketType::Data as u8,
            flags: flags::CLIENT_INITIATED,
            service_id: 1,
            ..Default::default()
        },
        body: Body::Data(vec![1, 2, 3]),
    };
    ep.handle_datagram(now, addr(9999), &data.encode());
    let ping = Packet {
        header: Header {
            seq: 0,
            serial: 2,
            packet_type: PacketType::Ack as u8,
            flags: flags::CLIENT_INITIATED | flags::REQUEST_ACK,
            ..data.header
        },
        body: Body::Ack(rx::ack::AckPacket {
            first_packet: 1,
            reason: reason::PING,
            ..Default::default()
        }),
    };
    ep.handle_datagram(now, addr(9999), &ping.encode());
    let acks: Vec<_> = drain(&mut ep)
        .into_iter()
        .filter_map(|p| match p.body {
            Body::Ack(a) => Some((p.header, a)),
            _ => None,
        })
        .collect();
    let (h, a) = acks
        .iter()
        .find(|(_, a)| a.reason == reason::PING_RESPONSE)
        .expect("PING_RESPONSE");
    assert_eq!(a.serial, 2);
    assert_eq!(
        a.first_packet, 2,
        "packet 1 received, request not complete yet"
    );
    assert!(!h.has(flags::CLIENT_INITIATED));
    assert!(h.has(flags::SLOW_START_OK));
    assert!(a.trailer.rwind.unwrap() >= 32);
    assert_eq!(a.trailer.max_dgram_packets, Some(1));
}

#[test]
fn acks_carry_trailer_and_every_second_packet_is_acked() {
    let mut net = Net::new(23);
    net.add(
        FS,
        config(0x8000_1111, &[1]),
        Responder::Reply(|_| vec![7; 20 * 1412]),
    );
    let client = net.add(CM, config(0x8000_2222, &[]), Responder::Manual);
    let now = net.now;
    let id = net.nodes[client]
        .ep
        .start_call(now, key(), vec![1; 20 * 1412]);
    assert!(net.run_until(Duration::from_secs(5), |n| n.nodes[client]
        .done
        .contains_key(&id)));
    let mut data = 0;
    let mut acks = 0;
    for (_, from, _, b) in &net.wire {
        let p = decode_packet(b).unwrap();
        if *from == addr(FS) {
            match p.body {
                Body::Data(_) => data += 1,
                Body::Ack(a) => {
                    acks += 1;
                    assert!(p.header.has(flags::SLOW_START_OK));
                    assert_eq!(a.trailer.rwind, Some(64));
                    assert_eq!(a.trailer.if_mtu, Some(1440));
                }
                _ => {}
            }
        }
    }
    assert_eq!(data, 20);
    // Receiver ACKs roughly every second packet (plus REQUEST_ACKs).
    assert!(
        (10..=20).contains(&acks),
        "{acks} ACKs for 20 request packets"
    );
}

#[test]
fn challenge_on_null_connection_fails_call_with_protocol_error() {
    let now = Instant::now();
    let mut ep = Endpoint::new(Config::default());
    let id = ep.start_call(now, key(), b"x".to_vec());
    let data = drain(&mut ep).remove(0);
    let ch = Packet {
        header: reply_header(&data.header, PacketType::Challenge),
        body: Body::Other(vec![0, 0, 0, 2, 1, 2, 3, 4, 0, 0, 0, 1, 0, 0, 0, 0]),
    };
    ep.handle_datagram(now, addr(FS), &ch.encode());
    match ep.poll_event() {
        Some(Event::CallDone {
            id: got,
            result: Err(CallError::Protocol(_)),
        }) => assert_eq!(got, id),
        other => panic!("{other:?}"),
    }
}

#[test]
fn garbage_datagrams_are_counted_not_fatal() {
    let now = Instant::now();
    let mut ep = Endpoint::new(config(1, &[1]));
    for n in 0..64usize {
        let junk: Vec<u8> = (0..n).map(|i| (i * 37 + n) as u8).collect();
        ep.handle_datagram(now, addr(1), &junk);
    }
    assert!(ep.stats().decode_errors > 0);
    let _ = ep.poll_timeout();
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 24, ..Default::default() })]
    #[test]
    fn random_loss_patterns_deliver_exactly(
        seed in 0u64..1_000_000,
        loss in 0.0f64..0.3,
        dup in 0.0f64..0.2,
        req_len in 0usize..40_000,
        ncalls in 1usize..6,
    ) {
        let mut net = Net::new(seed);
        let server = net.add(FS, config(0x8000_1111, &[1]), Responder::Reply(echo_reversed));
        let client = net.add(CM, config(0x8000_2222, &[]), Responder::Manual);
        net.loss = loss;
        net.dup = dup;
        net.jitter = Duration::from_millis(30);
        let now = net.now;
        let calls: Vec<(CallId, Vec<u8>)> = (0..ncalls)
            .map(|i| {
                let req = payload(req_len / (i + 1), seed + i as u64);
                (net.nodes[client].ep.start_call(now, key(), req.clone()), req)
            })
            .collect();
        let done = net.run_until(Duration::from_secs(300), |n| n.nodes[client].done.len() == ncalls);
        proptest::prop_assert!(done, "not done after {:?}", net.elapsed());
        for (id, req) in &calls {
            proptest::prop_assert_eq!(&net.nodes[client].done[id].1, &Ok(echo_reversed(req)));
        }
        proptest::prop_assert_eq!(net.nodes[server].incoming.len(), ncalls);
    }
}
