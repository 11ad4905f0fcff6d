//! A client endpoint with rxkad (clear, auth, crypt) against a tiny
//! rxkad server written here from the crate's primitives: it issues a
//! CHALLENGE, checks the RESPONSE, opens the request packets and answers
//! with sealed packets.

use rx::ack::{reason, AckPacket};
use rx::packet::{decode_packet, flags, Body, Header, Packet, PacketType};
use rx::proto::{CallError, CallId, Config, ConnKey, Endpoint, Event};
use rx::rxkad::{decode_response, Challenge, RxkadConn, RxkadLevel};
use rx::ClientSecurity;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const MAX_WIRE: usize = 1412;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 1], port))
}

fn token(level: RxkadLevel, key: [u8; 8]) -> ClientSecurity {
    // The "ticket" names the key so the test server can find it.
    let mut ticket = b"ticket:".to_vec();
    ticket.extend_from_slice(&key);
    ClientSecurity::Rxkad {
        level,
        session_key: key,
        kvno: 256,
        ticket,
    }
}

fn key(sec: ClientSecurity) -> ConnKey {
    ConnKey {
        peer: addr(7000),
        service_id: 1,
        identity: 0,
        security: sec,
    }
}

fn payload(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn reply_for(req: &[u8]) -> Vec<u8> {
    // A reply of a different size than the request, derived from it.
    let mut r: Vec<u8> = req.iter().rev().map(|b| b ^ 0x5a).collect();
    r.extend_from_slice(&req[..req.len().min(777)]);
    r
}

struct SConn {
    nonce: u32,
    challenged: bool,
    auth: Option<RxkadConn>,
    held: Vec<(Header, Vec<u8>)>,
    /// Per (channel, call number): seq -> opened payload, last seq, replied.
    #[allow(clippy::type_complexity)]
    calls: BTreeMap<(u32, u32), (BTreeMap<u32, Vec<u8>>, Option<u32>, bool)>,
}

/// Minimal rxkad fileserver stand-in.
struct Server {
    min_level: u32,
    conns: HashMap<(u32, u32), SConn>,
    serial: u32,
    responses_ok: u32,
    bad_packets: u32,
    max_wire_seen: usize,
    /// Send each reply's first packet once corrupted before the good copy.
    corrupt_first_reply_packet: bool,
}

impl Server {
    fn new(min_level: u32) -> Self {
        Server {
            min_level,
            conns: HashMap::new(),
            serial: 1000,
            responses_ok: 0,
            bad_packets: 0,
            max_wire_seen: 0,
            corrupt_first_reply_packet: false,
        }
    }

    fn hdr(&mut self, h: &Header, ptype: PacketType, call: u32, seq: u32, fl: u8) -> Header {
        self.serial += 1;
        Header {
            epoch: h.epoch,
            cid: h.cid,
            call_number: call,
            seq,
            serial: self.serial,
            packet_type: ptype as u8,
            flags: fl,
            user_status: 0,
            security_index: 2,
            checksum: 0,
            service_id: h.service_id,
        }
    }

    fn handle(&mut self, dgram: &[u8]) -> Vec<Vec<u8>> {
        let p = decode_packet(dgram).unwrap();
        let h = p.header;
        if h.ptype() == Some(PacketType::Version) {
            return Vec::new(); // NAT keepalive
        }
        assert!(h.has(flags::CLIENT_INITIATED));
        assert_eq!(h.security_index, 2, "rxkad connection uses index 2");
        let mut out = Vec::new();
        let id = (h.epoch, h.cid & !3);
        let nonce = 0x1234_0000 ^ h.cid;
        let c = self.conns.entry(id).or_insert(SConn {
            nonce,
            challenged: false,
            auth: None,
            held: Vec::new(),
            calls: BTreeMap::new(),
        });
        match p.body {
            Body::Data(d) => {
                assert!(d.len() <= MAX_WIRE, "DATA payload {} too big", d.len());
                self.max_wire_seen = self.max_wire_seen.max(d.len());
                if c.auth.is_none() {
                    c.held.push((h, d));
                    if !c.challenged {
                        c.challenged = true;
                        let body = Challenge {
                            version: 2,
                            nonce: c.nonce,
                            min_level: self.min_level,
                        }
                        .encode();
                        let mut ch = self.hdr(&h, PacketType::Challenge, 0, 0, 0);
                        ch.cid = h.cid & !3;
                        out.push(Packet {
                            header: ch,
                            body: Body::Other(body),
                        });
                    }
                } else {
                    self.data(id, h, d, &mut out);
                }
            }
            Body::Other(b) if h.ptype() == Some(PacketType::Response) => {
                assert_eq!((h.call_number, h.seq), (0, 0));
                let r = decode_response(&b).unwrap();
                assert_eq!(r.kvno, 256);
                let key: [u8; 8] = r.ticket[7..15].try_into().unwrap();
                let s = r.decrypt(&key);
                assert!(r.checksum_ok(&s), "response checksum");
                assert_eq!((s.epoch, s.cid, s.security_index), (h.epoch, h.cid & !3, 2));
                assert_eq!(s.inc_nonce, c.nonce.wrapping_add(1));
                assert!(s.level >= self.min_level);
                let level = RxkadLevel::from_u32(s.level).unwrap();
                c.auth = Some(RxkadConn::new(level, &key, h.epoch, h.cid));
                self.responses_ok += 1;
                let held = std::mem::take(&mut c.held);
                for (hh, d) in held {
                    self.data(id, hh, d, &mut out);
                }
            }
            _ => {} // ACKs etc.: this server never retransmits
        }
        out.into_iter().map(|p| p.encode()).collect()
    }

    fn data(&mut self, id: (u32, u32), h: Header, mut d: Vec<u8>, out: &mut Vec<Packet>) {
        let c = self.conns.get_mut(&id).unwrap();
        let auth = c.auth.as_mut().unwrap();
        if auth.level() == RxkadLevel::Crypt {
            assert_eq!(d.len() % 8, 0, "crypt payloads are padded to 8");
        }
        if auth.open(&h, &mut d).is_err() {
            self.bad_packets += 1;
            return;
        }
        let auth = auth.clone();
        let entry = c.calls.entry((h.cid & 3, h.call_number)).or_default();
        entry.0.insert(h.seq, d);
        if h.has(flags::LAST_PACKET) {
            entry.1 = Some(h.seq);
        }
        let next = (1..).find(|s| !entry.0.contains_key(s)).unwrap();
        let complete = entry.1.is_some_and(|l| next > l);
        let replied = entry.2;
        // ACK what we have.
        let ack = AckPacket {
            buffer_space: 64,
            first_packet: next,
            previous_packet: h.seq,
            serial: h.serial,
            reason: reason::REQUESTED,
            ..Default::default()
        };
        let ah = self.hdr(&h, PacketType::Ack, h.call_number, 0, 0);
        out.push(Packet {
            header: ah,
            body: Body::Ack(ack),
        });
        if !complete || replied {
            return;
        }
        let c = self.conns.get_mut(&id).unwrap();
        let entry = c.calls.get_mut(&(h.cid & 3, h.call_number)).unwrap();
        entry.2 = true;
        let req: Vec<u8> = entry.0.values().flatten().copied().collect();
        let reply = reply_for(&req);
        let chunks: Vec<&[u8]> = reply.chunks(auth.max_payload(MAX_WIRE)).collect();
        let n = chunks.len() as u32;
        for (i, chunk) in chunks.iter().enumerate() {
            let seq = i as u32 + 1;
            let fl = if seq == n { flags::LAST_PACKET } else { 0 };
            let mut rh = self.hdr(&h, PacketType::Data, h.call_number, seq, fl);
            let mut body = chunk.to_vec();
            auth.seal(&mut rh, &mut body);
            assert!(body.len() <= MAX_WIRE);
            if seq == 1 && self.corrupt_first_reply_packet {
                // rxkad protects the header (checksum) and the first 8-byte
                // block (sealed word); later payload bytes carry no MAC.
                let mut bad = body.clone();
                bad[2] ^= 0x01;
                if auth.level() == RxkadLevel::Clear {
                    // Clear level protects only the header: break that.
                    rh.checksum ^= 0x0101;
                }
                out.push(Packet {
                    header: rh,
                    body: Body::Data(bad),
                });
                if auth.level() == RxkadLevel::Clear {
                    rh.checksum ^= 0x0101;
                }
            }
            out.push(Packet {
                header: rh,
                body: Body::Data(body),
            });
        }
    }
}

struct Sim {
    now: Instant,
    client: Endpoint,
    server: Server,
    done: BTreeMap<CallId, Result<Vec<u8>, CallError>>,
    client_sent: Vec<Header>,
}

impl Sim {
    fn new(min_level: u32) -> Sim {
        let cfg = Config {
            epoch: 0x8000_4242,
            ..Config::default()
        };
        Sim {
            now: Instant::now(),
            client: Endpoint::new(cfg),
            server: Server::new(min_level),
            done: BTreeMap::new(),
            client_sent: Vec::new(),
        }
    }

    fn run(&mut self, want: usize) {
        let deadline = self.now + Duration::from_secs(120);
        while self.done.len() < want && self.now < deadline {
            let mut progressed = false;
            while let Some(t) = self.client.poll_transmit() {
                progressed = true;
                let h = Header::decode(&t.payload).unwrap();
                self.client_sent.push(h);
                for d in self.server.handle(&t.payload) {
                    self.client.handle_datagram(self.now, addr(7000), &d);
                }
            }
            while let Some(ev) = self.client.poll_event() {
                if let Event::CallDone { id, result } = ev {
                    self.done.insert(id, result);
                }
            }
            if !progressed {
                self.now = self
                    .client
                    .poll_timeout()
                    .unwrap_or(self.now + Duration::from_millis(100))
                    .max(self.now + Duration::from_millis(1));
                self.client.handle_timeout(self.now);
            }
        }
    }
}

fn check_reply(got: Option<&Result<Vec<u8>, CallError>>, req: &[u8], what: &str) {
    match got {
        Some(Ok(r)) => assert!(
            *r == reply_for(req),
            "{what}: wrong reply of {} bytes for a {}-byte request",
            r.len(),
            req.len()
        ),
        Some(Err(e)) => panic!("{what}: call failed for a {}-byte request: {e}", req.len()),
        None => panic!("{what}: call did not finish"),
    }
}

fn round_trip(level: RxkadLevel, sizes: &[usize]) -> Sim {
    // User bytes per DATA packet with a 1412-byte wire payload: crypt
    // loses the 8-byte header and padding, auth its 4-byte header.
    let per = match level {
        RxkadLevel::Crypt => 1400,
        RxkadLevel::Auth => 1408,
        RxkadLevel::Clear => 1412,
    };
    let mut sim = Sim::new(0);
    let k = key(token(
        level,
        [0x13, 0x57, 0x9b, 0xdf, 0x02, 0x46, 0x8a, 0xce],
    ));
    let reqs: Vec<(CallId, Vec<u8>)> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            let req = payload(n, i as u8);
            (sim.client.start_call(sim.now, k.clone(), req.clone()), req)
        })
        .collect();
    sim.run(reqs.len());
    eprintln!(
        "{level:?}: client {:?}, server responses {} bad {}",
        sim.client.stats(),
        sim.server.responses_ok,
        sim.server.bad_packets
    );
    for (id, req) in &reqs {
        check_reply(sim.done.get(id), req, &format!("{level:?}"));
    }
    // 4 calls per connection, one RESPONSE per connection.
    let conns = sizes.len().div_ceil(4);
    assert_eq!(sim.client.connection_count(), conns);
    assert_eq!(sim.server.responses_ok as usize, conns);
    assert_eq!(sim.client.stats().responses_sent as usize, conns);
    assert_eq!(sim.server.bad_packets, 0);
    assert_eq!(sim.client.stats().security_drops, 0);
    assert_eq!(sim.client.stats().calls_completed as usize, sizes.len());
    let st = sim.client.stats();
    assert_eq!(st.retransmits, 0);
    // Every reply packet was accepted at the connection's level, none at
    // another.
    let by_level = [
        (RxkadLevel::Clear, st.data_accepted_rxkad_clear),
        (RxkadLevel::Auth, st.data_accepted_rxkad_auth),
        (RxkadLevel::Crypt, st.data_accepted_rxkad_crypt),
    ];
    for (l, n) in by_level {
        if l == level {
            assert!(n >= sizes.len() as u64, "{level:?}: {n} accepted");
        } else {
            assert_eq!(n, 0, "{l:?} packets on a {level:?} connection");
        }
    }
    assert_eq!(st.data_accepted_rxnull, 0);
    let expected: usize = sizes.iter().map(|n| n.div_ceil(per)).sum();
    assert_eq!(
        st.data_packets_sent as usize, expected,
        "{level:?} packet split"
    );
    for h in &sim.client_sent {
        assert_eq!(h.security_index, 2);
        if h.ptype() == Some(PacketType::Data) {
            assert_ne!(h.checksum, 0, "DATA carries the rxkad header checksum");
        }
    }
    sim
}

const SIZES: &[usize] = &[1, 7, 8, 1395, 1396, 1400, 1401, 3 * 1400 + 5, 30_000];

#[test]
fn crypt_round_trip_multi_packet() {
    let sim = round_trip(RxkadLevel::Crypt, SIZES);
    // Full packets use the whole 1412-byte budget: 8 + 1400 = 1408.
    assert_eq!(sim.server.max_wire_seen, 1408);
}

#[test]
fn auth_round_trip_multi_packet() {
    round_trip(RxkadLevel::Auth, SIZES);
}

#[test]
fn clear_round_trip_multi_packet() {
    round_trip(RxkadLevel::Clear, SIZES);
}

#[test]
fn corrupted_reply_packets_are_dropped_and_counted() {
    for level in [RxkadLevel::Clear, RxkadLevel::Auth, RxkadLevel::Crypt] {
        let mut sim = Sim::new(0);
        sim.server.corrupt_first_reply_packet = true;
        let k = key(token(level, [9, 8, 7, 6, 5, 4, 3, 2]));
        let req = payload(5000, 3);
        let id = sim.client.start_call(sim.now, k, req.clone());
        sim.run(1);
        check_reply(sim.done.get(&id), &req, &format!("{level:?}"));
        assert_eq!(sim.client.stats().security_drops, 1, "{level:?}");
    }
}

#[test]
fn server_demanding_higher_level_fails_the_call() {
    let mut sim = Sim::new(2);
    let k = key(token(RxkadLevel::Auth, [1, 1, 2, 2, 3, 3, 4, 4]));
    let id = sim.client.start_call(sim.now, k, payload(100, 1));
    sim.run(1);
    match sim.done.get(&id) {
        Some(Err(CallError::Protocol(m))) => assert!(m.contains("level"), "{m}"),
        other => panic!("expected a protocol error, got {other:?}"),
    }
    assert_eq!(sim.server.responses_ok, 0);
}

#[test]
fn different_tokens_use_different_connections() {
    let mut sim = Sim::new(0);
    let a = key(token(RxkadLevel::Crypt, [1; 8]));
    let b = key(token(RxkadLevel::Crypt, [2; 8]));
    let c = key(token(RxkadLevel::Clear, [1; 8]));
    let null = key(ClientSecurity::Null);
    assert_ne!(a, b);
    let ids: Vec<CallId> = [&a, &b, &c, &a]
        .iter()
        .map(|k| {
            sim.client
                .start_call(sim.now, (*k).clone(), payload(3000, 5))
        })
        .collect();
    sim.run(ids.len());
    for id in &ids {
        check_reply(sim.done.get(id), &payload(3000, 5), "tokens");
    }
    // a, b and c each got a connection (a's two calls share one).
    assert_eq!(sim.client.connection_count(), 3);
    assert_eq!(sim.server.responses_ok, 3);
    // A Null key's DATA goes out with security index 0 and no checksum.
    let mut ep = Endpoint::new(Config::default());
    ep.start_call(sim.now, null, vec![1, 2, 3]);
    let t = ep.poll_transmit().unwrap();
    let h = Header::decode(&t.payload).unwrap();
    assert_eq!((h.security_index, h.checksum), (0, 0));
}
