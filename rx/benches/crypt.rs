//! Throughput of the per-packet security work, in process: fcrypt PCBC over
//! one 1412-byte packet, and the whole DATA path (seal + encode on send,
//! decode + open on receive) at rxnull and at rxkad clear, auth and crypt.
//!
//! A cold read through the mount decrypts every DATA packet the
//! fileserver sends, so `open` at crypt against `open` at clear is the
//! figure that bounds the crypt/clear ratio of `cargo xtask bench`.
//!
//! Run with `cargo bench -p rx --bench crypt`; it prints MB/s of user
//! payload (1 MB = 10^6 bytes), the best of several timed rounds.

use rx::fcrypt::Fcrypt;
use rx::packet::{decode_packet, Body, Header, Packet, PacketType};
use rx::rxkad::{RxkadConn, RxkadLevel};
use rx::security::{Null, Security};
use std::hint::black_box;
use std::time::{Duration, Instant};

/// An Rx DATA payload as OpenAFS sends it without jumbograms.
const WIRE: usize = 1412;
const ROUNDS: usize = 7;
const ROUND_TIME: Duration = Duration::from_millis(200);

/// Best throughput in MB/s of `f`, which handles `bytes` bytes per call.
fn mbps(bytes: usize, mut f: impl FnMut()) -> f64 {
    // Calibrate how many calls fill one round.
    let mut n = 1usize;
    loop {
        let t = Instant::now();
        for _ in 0..n {
            f();
        }
        if t.elapsed() >= ROUND_TIME / 4 {
            break;
        }
        n *= 2;
    }
    let mut best = f64::MAX;
    for _ in 0..ROUNDS {
        let t = Instant::now();
        for _ in 0..n {
            f();
        }
        best = best.min(t.elapsed().as_secs_f64());
    }
    (bytes * n) as f64 / best / 1e6
}

fn data_header(seq: u32) -> Header {
    Header {
        epoch: 0x8000_1234,
        cid: 0x0001_0004,
        call_number: 7,
        seq,
        serial: seq,
        packet_type: PacketType::Data as u8,
        security_index: 2,
        service_id: 1,
        ..Default::default()
    }
}

const KEY: [u8; 8] = [0xb3, 0x32, 0x13, 0x9b, 0x75, 0xa8, 0x54, 0x38];

fn security(level: Option<RxkadLevel>) -> Box<dyn Security> {
    match level {
        None => Box::new(Null),
        Some(l) => {
            let h = data_header(1);
            Box::new(RxkadSide(RxkadConn::new(l, &KEY, h.epoch, h.cid)))
        }
    }
}

/// The per-packet half of an rxkad security object (no challenges here).
#[derive(Debug)]
struct RxkadSide(RxkadConn);

impl Security for RxkadSide {
    fn index(&self) -> u8 {
        2
    }
    fn secure_outgoing(&mut self, header: &mut Header, payload: &mut Vec<u8>) {
        self.0.seal(header, payload);
    }
    fn verify_incoming(
        &mut self,
        header: &Header,
        payload: &mut Vec<u8>,
    ) -> Result<(), rx::security::SecurityError> {
        self.0.open(header, payload)
    }
    fn respond_to_challenge(
        &mut self,
        _: &Header,
        _: &[u8],
    ) -> Result<Vec<u8>, rx::security::SecurityError> {
        unreachable!("no challenges in the benchmark")
    }
    fn max_payload(&self, max_wire: usize) -> usize {
        self.0.max_payload(max_wire)
    }
}

fn main() {
    let mut buf = vec![0u8; WIRE];
    for (i, b) in buf.iter_mut().enumerate() {
        *b = (i * 31 + 7) as u8;
    }
    let c = Fcrypt::new(&KEY);
    println!("fcrypt, one {WIRE}-byte packet         MB/s");
    let enc = mbps(WIRE, || c.pcbc_encrypt(black_box(&mut buf), &KEY));
    println!("  pcbc_encrypt                      {enc:8.1}");
    let dec = mbps(WIRE, || c.pcbc_decrypt(black_box(&mut buf), &KEY));
    println!("  pcbc_decrypt                      {dec:8.1}");

    println!();
    println!("DATA path, user MB/s     send (seal+encode)  receive (decode+open)");
    let levels = [
        ("rxnull", None),
        ("rxkad clear", Some(RxkadLevel::Clear)),
        ("rxkad auth", Some(RxkadLevel::Auth)),
        ("rxkad crypt", Some(RxkadLevel::Crypt)),
    ];
    let mut recv_clear = 0.0;
    for (name, level) in levels {
        let mut tx = security(level);
        let mut rx = security(level);
        let user_len = tx.max_payload(WIRE);
        let user: Vec<u8> = buf[..user_len].to_vec();
        let mut seq = 1u32;
        let send = mbps(user_len, || {
            let mut h = data_header(seq);
            seq = seq.wrapping_add(1);
            // As the endpoint builds it: a copy of the call's data with
            // room for the seal.
            let mut p = Vec::with_capacity(user.len() + rx::rxkad::SEAL_ROOM);
            p.extend_from_slice(&user);
            tx.secure_outgoing(&mut h, &mut p);
            black_box(
                Packet {
                    header: h,
                    body: Body::Data(p),
                }
                .encode(),
            );
        });
        // One sealed datagram, opened again and again (the check does not
        // depend on having seen earlier packets).
        let mut h = data_header(1);
        let mut p = user.clone();
        tx.secure_outgoing(&mut h, &mut p);
        let wire = Packet {
            header: h,
            body: Body::Data(p),
        }
        .encode();
        let recv = mbps(user_len, || {
            let pkt = decode_packet(black_box(&wire)).expect("decodes");
            let Body::Data(mut p) = pkt.body else {
                unreachable!("a DATA packet")
            };
            rx.verify_incoming(&pkt.header, &mut p).expect("opens");
            assert_eq!(p.len(), user_len);
            black_box(p);
        });
        if level == Some(RxkadLevel::Clear) {
            recv_clear = recv;
        }
        let ratio = if recv_clear > 0.0 {
            format!("  (time {:.2}x clear)", recv_clear / recv)
        } else {
            String::new()
        };
        println!("  {name:<12} ({user_len:4} B)  {send:10.1}  {recv:18.1}{ratio}");
    }
}
