//! Simulated-network tests of the sans-IO endpoint.

mod sim;

use rx::ack::reason;
use rx::packet::{decode_packet, Body, PacketType};
use rx::proto::{CallError, CallId, ConnKey};
use sim::*;
use std::time::Duration;

const FS: u16 = 7000;
const CM: u16 = 7001;

fn key(service_id: u16) -> ConnKey {
    ConnKey {
        peer: addr(FS),
        service_id,
        identity: 0,
        security: Default::default(),
    }
}

fn setup(seed: u64) -> (Net, usize, usize) {
    let mut net = Net::new(seed);
    let server = net.add(
        FS,
        config(0x8000_1111, &[1]),
        Responder::Reply(echo_reversed),
    );
    let client = net.add(CM, config(0x8000_2222, &[]), Responder::Manual);
    (net, server, client)
}

fn result(net: &Net, node: usize, id: CallId) -> Option<Result<Vec<u8>, CallError>> {
    net.nodes[node].done.get(&id).map(|(_, r)| r.clone())
}

fn round_trip(seed: u64, loss: f64, dup: f64, sizes: &[usize]) {
    let (mut net, server, client) = setup(seed);
    net.loss = loss;
    net.dup = dup;
    net.jitter = Duration::from_millis(20);
    let now = net.now;
    let reqs: Vec<(CallId, Vec<u8>)> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            let req = payload(n, seed * 1000 + i as u64);
            (
                net.nodes[client].ep.start_call(now, key(1), req.clone()),
                req,
            )
        })
        .collect();
    let n = reqs.len();
    let ok = net.run_until(Duration::from_secs(600), |net| {
        net.nodes[client].done.len() == n
    });
    assert!(
        ok,
        "calls did not finish (loss {loss}, seed {seed}) after {:?}",
        net.elapsed()
    );
    for (id, req) in &reqs {
        assert_eq!(
            result(&net, client, *id),
            Some(Ok(echo_reversed(req))),
            "loss {loss} seed {seed} size {}",
            req.len()
        );
    }
    let retrans =
        net.nodes[client].ep.stats().retransmits + net.nodes[server].ep.stats().retransmits;
    eprintln!(
        "loss {loss}: {:?} simulated, {retrans} retransmits",
        net.elapsed()
    );
    if loss > 0.0 {
        assert!(
            retrans > 0,
            "loss was simulated, so something must be resent"
        );
    }
    // Exactly one Incoming per call, despite duplicates and retransmits.
    assert_eq!(net.nodes[server].incoming.len(), n);
    let mut got: Vec<Vec<u8>> = net.nodes[server]
        .incoming
        .iter()
        .map(|x| x.1.clone())
        .collect();
    let mut want: Vec<Vec<u8>> = reqs.iter().map(|x| x.1.clone()).collect();
    got.sort();
    want.sort();
    assert_eq!(got, want);
    // Let the final ACKs settle; nothing must be left hanging.
    net.run_for(Duration::from_secs(5));
    assert_eq!(net.nodes[server].incoming.len(), n);
}

#[test]
fn small_round_trip_no_loss() {
    round_trip(1, 0.0, 0.0, &[0, 1, 100]);
}

#[test]
fn large_round_trip_no_loss() {
    round_trip(2, 0.0, 0.0, &[300 * 1024]);
}

#[test]
fn large_round_trip_10_percent_loss_dup_reorder() {
    round_trip(3, 0.10, 0.05, &[300 * 1024, 10, 5000]);
}

#[test]
fn large_round_trip_30_percent_loss_dup_reorder() {
    round_trip(4, 0.30, 0.10, &[300 * 1024, 3000]);
}

#[test]
fn no_loss_is_fast_and_retransmit_free() {
    let (mut net, _server, client) = setup(5);
    let now = net.now;
    let id = net.nodes[client]
        .ep
        .start_call(now, key(1), payload(300 * 1024, 9));
    assert!(net.run_until(Duration::from_secs(60), |n| n.nodes[client]
        .done
        .contains_key(&id)));
    // 213 packets each way, window up to 32, 10 ms RTT: well under 1 s.
    assert!(
        net.elapsed() < Duration::from_secs(1),
        "took {:?}",
        net.elapsed()
    );
    assert_eq!(net.nodes[client].ep.stats().retransmits, 0);
    assert_eq!(net.nodes[0].ep.stats().retransmits, 0);
    let s = net.nodes[client].ep.stats();
    assert_eq!(s.calls_started, 1);
    assert_eq!(s.calls_completed, 1);
    assert!(s.acks_sent > 0 && s.data_bytes_sent >= 300 * 1024);
}

#[test]
fn dead_peer_times_out_at_dead_time() {
    let (mut net, _server, client) = setup(6);
    net.blackhole.insert(addr(FS));
    let start = net.now;
    let id = net.nodes[client]
        .ep
        .start_call(start, key(1), payload(5000, 1));
    assert!(net.run_until(Duration::from_secs(120), |n| n.nodes[client]
        .done
        .contains_key(&id)));
    let (t, r) = net.nodes[client].done[&id].clone();
    assert_eq!(r, Err(CallError::Timeout));
    let took = t - start;
    assert!(
        took >= Duration::from_secs(50),
        "failed too early: {took:?}"
    );
    assert!(took <= Duration::from_secs(52), "failed too late: {took:?}");
}

#[test]
fn slow_server_is_kept_alive_by_pings() {
    let mut net = Net::new(7);
    let server = net.add(FS, config(0x8000_1111, &[1]), Responder::Manual);
    let client = net.add(CM, config(0x8000_2222, &[]), Responder::Manual);
    let now = net.now;
    let id = net.nodes[client]
        .ep
        .start_call(now, key(1), b"slow".to_vec());
    assert!(
        net.run_until(Duration::from_secs(5), |n| n.nodes[server].incoming.len()
            == 1)
    );
    // The server "computes" for 80 s, longer than the 50 s dead time.
    net.run_for(Duration::from_secs(80));
    assert!(
        net.nodes[client].done.is_empty(),
        "call died although the server answers pings"
    );
    let sid = net.nodes[server].incoming[0].0;
    let now = net.now;
    net.nodes[server].ep.reply(sid, now, b"finally".to_vec());
    assert!(net.run_until(Duration::from_secs(5), |n| n.nodes[client]
        .done
        .contains_key(&id)));
    assert_eq!(result(&net, client, id), Some(Ok(b"finally".to_vec())));
    // The wire shows PINGs from the client answered by PING_RESPONSEs
    // echoing the ping serial.
    let mut pings = Vec::new();
    let mut responses = Vec::new();
    for (_, from, _, bytes) in &net.wire {
        let p = decode_packet(bytes).unwrap();
        if let Body::Ack(a) = p.body {
            if a.reason == reason::PING && *from == addr(CM) {
                pings.push(p.header.serial);
            }
            if a.reason == reason::PING_RESPONSE && *from == addr(FS) {
                responses.push(a.serial);
            }
        }
    }
    assert!(pings.len() >= 8, "pings: {pings:?}");
    assert_eq!(pings, responses);
    assert!(net.nodes[client].ep.stats().pings_sent >= 8);
}

#[test]
fn hard_dead_time_limits_total_call_time() {
    let mut net = Net::new(8);
    let _server = net.add(FS, config(0x8000_1111, &[1]), Responder::Manual);
    let mut cfg = config(0x8000_2222, &[]);
    cfg.hard_dead_time = Duration::from_secs(20);
    let client = net.add(CM, cfg, Responder::Manual);
    let start = net.now;
    let id = net.nodes[client]
        .ep
        .start_call(start, key(1), b"x".to_vec());
    assert!(net.run_until(Duration::from_secs(60), |n| n.nodes[client]
        .done
        .contains_key(&id)));
    let (t, r) = net.nodes[client].done[&id].clone();
    assert_eq!(r, Err(CallError::Timeout));
    assert!(t - start >= Duration::from_secs(20) && t - start < Duration::from_secs(21));
}

#[test]
fn server_abort_reaches_client() {
    let mut net = Net::new(9);
    net.add(FS, config(0x8000_1111, &[1]), Responder::Abort(-455));
    let client = net.add(CM, config(0x8000_2222, &[]), Responder::Manual);
    let now = net.now;
    let id = net.nodes[client]
        .ep
        .start_call(now, key(1), payload(4000, 3));
    assert!(net.run_until(Duration::from_secs(10), |n| n.nodes[client]
        .done
        .contains_key(&id)));
    assert_eq!(
        result(&net, client, id),
        Some(Err(CallError::Aborted(-455)))
    );
}

#[test]
fn client_cancel_reaches_server() {
    let mut net = Net::new(10);
    let server = net.add(FS, config(0x8000_1111, &[1]), Responder::Manual);
    let client = net.add(CM, config(0x8000_2222, &[]), Responder::Manual);
    let now = net.now;
    let id = net.nodes[client]
        .ep
        .start_call(now, key(1), b"req".to_vec());
    assert!(
        net.run_until(Duration::from_secs(5), |n| n.nodes[server].incoming.len()
            == 1)
    );
    net.nodes[client].ep.cancel_call(id);
    net.run_for(Duration::from_secs(1));
    let aborts = net
        .wire
        .iter()
        .filter(|(_, from, _, b)| {
            *from == addr(CM) && decode_packet(b).unwrap().header.ptype() == Some(PacketType::Abort)
        })
        .count();
    assert_eq!(aborts, 1);
    // The server forgot the call: its reply goes nowhere.
    let sid = net.nodes[server].incoming[0].0;
    let before = net.nodes[server].ep.stats().data_packets_sent;
    let now = net.now;
    net.nodes[server].ep.reply(sid, now, b"late".to_vec());
    assert_eq!(net.nodes[server].ep.stats().data_packets_sent, before);
    assert!(
        net.nodes[client].done.is_empty(),
        "cancelled calls report nothing"
    );
}

#[test]
fn client_abort_call_reports_aborted() {
    let mut net = Net::new(10);
    let _server = net.add(FS, config(0x8000_1111, &[1]), Responder::Manual);
    let client = net.add(CM, config(0x8000_2222, &[]), Responder::Manual);
    let now = net.now;
    let id = net.nodes[client]
        .ep
        .start_call(now, key(1), b"req".to_vec());
    net.run_for(Duration::from_millis(50));
    let now = net.now;
    net.nodes[client].ep.abort_call(id, now, -7);
    net.run_for(Duration::from_millis(50));
    assert_eq!(result(&net, client, id), Some(Err(CallError::Aborted(-7))));
}

#[test]
fn unknown_service_is_refused() {
    let (mut net, server, client) = setup(11);
    let now = net.now;
    let id = net.nodes[client]
        .ep
        .start_call(now, key(52), b"vl".to_vec());
    assert!(net.run_until(Duration::from_secs(10), |n| n.nodes[client]
        .done
        .contains_key(&id)));
    // rx.c rxi_ReceivePacket: RX_INVALID_OPERATION.
    assert_eq!(result(&net, client, id), Some(Err(CallError::Aborted(-2))));
    assert!(net.nodes[server].incoming.is_empty());
}

#[test]
fn four_channels_then_extra_connections() {
    let mut net = Net::new(12);
    let server = net.add(FS, config(0x8000_1111, &[1]), Responder::Manual);
    let client = net.add(CM, config(0x8000_2222, &[]), Responder::Manual);
    let now = net.now;
    let ids: Vec<CallId> = (0..10)
        .map(|i| {
            net.nodes[client]
                .ep
                .start_call(now, key(1), vec![i as u8; 10 + i * 2000])
        })
        .collect();
    let locs: Vec<(u32, u8)> = ids
        .iter()
        .map(|id| net.nodes[client].ep.call_location(*id).unwrap())
        .collect();
    let mut distinct = locs.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        10,
        "every call has its own channel: {locs:?}"
    );
    assert!(
        locs[..4].iter().all(|l| l.0 == locs[0].0),
        "first 4 share a connection"
    );
    assert_eq!(
        locs[..4].iter().map(|l| l.1).collect::<Vec<_>>(),
        vec![0, 1, 2, 3]
    );
    assert_ne!(locs[4].0, locs[0].0);
    assert_eq!(locs[4].0, locs[0].0 + 4, "cid +4 per new connection");
    let cids: std::collections::BTreeSet<u32> = locs.iter().map(|l| l.0).collect();
    assert_eq!(cids.len(), 3);
    // All 10 reach the server concurrently before anyone answers.
    assert!(
        net.run_until(Duration::from_secs(10), |n| n.nodes[server].incoming.len()
            == 10)
    );
    let now = net.now;
    let inc = net.nodes[server].incoming.clone();
    for (sid, req) in inc {
        net.nodes[server].ep.reply(sid, now, echo_reversed(&req));
    }
    assert!(
        net.run_until(Duration::from_secs(10), |n| n.nodes[client].done.len()
            == 10)
    );
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(
            result(&net, client, *id),
            Some(Ok(echo_reversed(&vec![i as u8; 10 + i * 2000])))
        );
    }
}

#[test]
fn connection_reuse_and_call_numbers() {
    let (mut net, _server, client) = setup(13);
    let mut cids = Vec::new();
    for i in 0..3u8 {
        let now = net.now;
        let id = net.nodes[client].ep.start_call(now, key(1), vec![i]);
        cids.push(net.nodes[client].ep.call_location(id).unwrap());
        assert!(net.run_until(Duration::from_secs(5), |n| n.nodes[client]
            .done
            .contains_key(&id)));
    }
    assert!(cids.iter().all(|c| *c == cids[0]), "{cids:?}");
    assert_eq!(net.nodes[client].ep.connection_count(), 1);
    // Call numbers 1, 2, 3 on channel 0; serials strictly increase.
    let mut calls = Vec::new();
    let mut last_serial = 0;
    for (_, from, _, b) in &net.wire {
        let p = decode_packet(b).unwrap();
        if *from == addr(CM) && p.header.ptype() != Some(PacketType::Version) {
            assert!(p.header.serial > last_serial);
            last_serial = p.header.serial;
            if p.header.ptype() == Some(PacketType::Data) {
                calls.push(p.header.call_number);
                assert_eq!(p.header.epoch, 0x8000_2222);
                assert!(p.header.has(rx::packet::flags::CLIENT_INITIATED));
            }
        }
    }
    assert_eq!(calls, vec![1, 2, 3]);
    // A different identity gets its own connection.
    let now = net.now;
    let other = ConnKey {
        identity: 7,
        security: Default::default(),
        ..key(1)
    };
    let id = net.nodes[client].ep.start_call(now, other, vec![9]);
    assert_ne!(net.nodes[client].ep.call_location(id).unwrap().0, cids[0].0);
}

#[test]
fn idle_connections_are_collected_and_nat_keepalive_sent() {
    let (mut net, server, client) = setup(14);
    let now = net.now;
    let id = net.nodes[client].ep.start_call(now, key(1), vec![1]);
    assert!(net.run_until(Duration::from_secs(5), |n| n.nodes[client]
        .done
        .contains_key(&id)));
    net.run_for(Duration::from_secs(61));
    let versions = net
        .wire
        .iter()
        .filter(|(_, from, to, b)| {
            *from == addr(CM)
                && *to == addr(FS)
                && decode_packet(b).unwrap().header.ptype() == Some(PacketType::Version)
        })
        .count();
    assert_eq!(versions, 3, "one VERSION keepalive every 20 s");
    // Keepalives are not answered (no CLIENT_INITIATED flag).
    assert!(!net.wire.iter().any(|(_, from, _, b)| *from == addr(FS)
        && decode_packet(b).unwrap().header.ptype() == Some(PacketType::Version)));
    assert_eq!(net.nodes[client].ep.connection_count(), 1);
    // The server forgets its side after server_idle_timeout (60 s).
    assert_eq!(net.nodes[server].ep.connection_count(), 0);
    assert_eq!(net.nodes[server].ep.stats().server_conns_expired, 1);
    net.run_for(Duration::from_secs(300));
    assert_eq!(net.nodes[client].ep.connection_count(), 0);
    assert_eq!(net.nodes[server].ep.connection_count(), 0);
    assert_eq!(net.nodes[client].ep.poll_timeout(), None, "no timers left");
}
