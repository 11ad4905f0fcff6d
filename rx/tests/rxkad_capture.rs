//! rxkad against real OpenAFS 1.8.9 traffic (tests/data/*.bin are UDP
//! payloads copied from the rxkad-crypt / rxkad-clear captures; the keys
//! are the throwaway rxkad keys derived for those sessions).

use rx::packet::{decode_packet, Body, Header, PacketType};
use rx::rxkad::{build_response, decode_challenge, decode_response, RxkadConn, RxkadLevel};
use rx::ClientSecurity;

/// rxkad key of rxkad-crypt.pcap (tkt_DeriveDesKey of the afs/ session key).
const CRYPT_KEY: [u8; 8] = [0xb3, 0x32, 0x13, 0x9b, 0x75, 0xa8, 0x54, 0x38];
/// rxkad key of rxkad-clear.pcap.
const CLEAR_KEY: [u8; 8] = [0x94, 0x0e, 0x4a, 0x5e, 0xef, 0x6d, 0x19, 0xf4];

fn load(name: &str) -> (Header, Vec<u8>) {
    let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    let raw = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let p = decode_packet(&raw).unwrap();
    let body = match p.body {
        Body::Data(d) | Body::Other(d) => d,
        b => panic!("unexpected body {b:?}"),
    };
    (p.header, body)
}

fn be32(b: &[u8], i: usize) -> u32 {
    u32::from_be_bytes(b[i..i + 4].try_into().unwrap())
}

fn conn(level: RxkadLevel, key: &[u8; 8], h: &Header) -> RxkadConn {
    RxkadConn::new(level, key, h.epoch, h.cid)
}

const CRYPT_DATA: &[&str] = &[
    "rxkad-crypt-f14-req1.bin",
    "rxkad-crypt-f23-reply1.bin",
    "rxkad-crypt-f26-reply2a.bin",
    "rxkad-crypt-f28-reply2b.bin",
];
const CLEAR_DATA: &[&str] = &["rxkad-clear-f14-req1.bin", "rxkad-clear-f23-reply1.bin"];

#[test]
fn header_checksums_of_captured_packets() {
    for (files, level, key) in [
        (CRYPT_DATA, RxkadLevel::Crypt, CRYPT_KEY),
        (CLEAR_DATA, RxkadLevel::Clear, CLEAR_KEY),
    ] {
        for f in files {
            let (h, _) = load(f);
            assert_eq!(h.security_index, 2, "{f}");
            assert_ne!(h.checksum, 0, "{f}");
            let c = conn(level, &key, &h);
            assert_eq!(c.header_checksum(&h), h.checksum, "{f}");
            // The checksum depends on the key, the sequence number and the
            // call number.
            let other = conn(level, &[1, 2, 3, 4, 5, 6, 7, 8], &h);
            assert_ne!(other.header_checksum(&h), h.checksum, "{f}");
            let mut h2 = h;
            h2.seq += 1;
            assert_ne!(c.header_checksum(&h2), h.checksum, "{f}");
            h2 = h;
            h2.call_number += 1;
            assert_ne!(c.header_checksum(&h2), h.checksum, "{f}");
        }
    }
}

#[test]
fn decrypt_captured_crypt_request_and_replies() {
    // FetchStatus (132) of 536870915.1.1.
    let (h, mut p) = load("rxkad-crypt-f14-req1.bin");
    assert_eq!(p.len(), 24);
    assert_ne!(be32(&p, 0), 132, "wire payload must be encrypted");
    let mut c = conn(RxkadLevel::Crypt, &CRYPT_KEY, &h);
    c.open(&h, &mut p).unwrap();
    assert_eq!(p.len(), 16);
    assert_eq!(
        [be32(&p, 0), be32(&p, 4), be32(&p, 8), be32(&p, 12)],
        [132, 536870915, 1, 1]
    );

    // Its reply: 120 bytes (AFSFetchStatus + callback + volsync).
    let (h, mut p) = load("rxkad-crypt-f23-reply1.bin");
    c.open(&h, &mut p).unwrap();
    assert_eq!(p.len(), 120);
    // AFSFetchStatus starts with InterfaceVersion 1, FileType 2 (directory).
    assert_eq!((be32(&p, 0), be32(&p, 4)), (1, 2));

    // A two-packet FetchData reply: 1400 + 772 bytes.
    let mut whole = Vec::new();
    for f in ["rxkad-crypt-f26-reply2a.bin", "rxkad-crypt-f28-reply2b.bin"] {
        let (h, mut p) = load(f);
        c.open(&h, &mut p).unwrap();
        whole.extend_from_slice(&p);
    }
    assert_eq!(whole.len(), 1400 + 772);
    // FetchData reply: byte count, then that many bytes of directory data.
    let n = be32(&whole, 0) as usize;
    assert_eq!(n, 2048, "root directory blob");
    assert!(4 + n <= whole.len());

    // Wrong key: rejected, not garbage.
    let (h, mut p) = load("rxkad-crypt-f23-reply1.bin");
    let mut bad = conn(RxkadLevel::Crypt, &CLEAR_KEY, &h);
    assert!(bad.open(&h, &mut p).is_err());
}

#[test]
fn our_seal_reproduces_captured_crypt_packet() {
    // Sealing the decrypted request again gives the captured bytes
    // (deterministic: IV = key, zero padding).
    let (h, wire) = load("rxkad-crypt-f14-req1.bin");
    let mut c = conn(RxkadLevel::Crypt, &CRYPT_KEY, &h);
    let mut p = wire.clone();
    c.open(&h, &mut p).unwrap();
    let mut h2 = h;
    h2.checksum = 0;
    c.seal(&mut h2, &mut p);
    assert_eq!(p, wire);
    assert_eq!(h2.checksum, h.checksum);
}

#[test]
fn our_seal_reproduces_captured_crypt_replies() {
    // The fileserver's sealed replies, up to a full DATA packet (1400
    // bytes of data, 176 blocks: whole 8-block lane groups when
    // decrypting), opened and sealed again: byte for byte what OpenAFS
    // sent, so both directions of our PCBC agree with OpenAFS's over whole
    // packets.
    let (h, _) = load("rxkad-crypt-f14-req1.bin");
    let mut c = conn(RxkadLevel::Crypt, &CRYPT_KEY, &h);
    for f in &CRYPT_DATA[1..] {
        let (h, wire) = load(f);
        let mut p = wire.clone();
        c.open(&h, &mut p).unwrap();
        assert_eq!((p.len() + 8).next_multiple_of(8), wire.len(), "{f}");
        let mut h2 = h;
        h2.checksum = 0;
        let padded = (p.len() + 8) % 8 != 0;
        c.seal(&mut h2, &mut p);
        assert_eq!(h2.checksum, h.checksum, "{f}");
        if padded {
            // OpenAFS pads with whatever its buffer held and we pad with
            // zeros: only the last block, which holds padding, differs.
            let n = wire.len() - 8;
            assert_eq!(p[..n], wire[..n], "{f}");
        } else {
            assert_eq!(p, wire, "{f}");
        }
    }
}

#[test]
fn tampered_packets_are_rejected() {
    for f in CRYPT_DATA {
        let (h, wire) = load(f);
        let mut c = conn(RxkadLevel::Crypt, &CRYPT_KEY, &h);
        // Flipped checksum.
        let mut h2 = h;
        h2.checksum ^= 0x0100;
        assert!(c.open(&h2, &mut wire.clone()).is_err(), "{f}");
        // Packet moved to another seq: checksum and seal both break; with
        // the checksum fixed up the seal still catches it.
        let mut h3 = h;
        h3.seq += 1;
        h3.checksum = c.header_checksum(&h3);
        assert!(c.open(&h3, &mut wire.clone()).is_err(), "{f}");
        // Flipped first ciphertext byte: the sealed word breaks.
        let mut p = wire.clone();
        p[0] ^= 0x80;
        assert!(c.open(&h, &mut p).is_err(), "{f}");
        // Truncated to a non-multiple of 8.
        let mut p = wire.clone();
        p.pop();
        assert!(c.open(&h, &mut p).is_err(), "{f}");
    }
}

#[test]
fn clear_level_packets_pass_through() {
    let (h, wire) = load("rxkad-clear-f14-req1.bin");
    let mut c = conn(RxkadLevel::Clear, &CLEAR_KEY, &h);
    let mut p = wire.clone();
    c.open(&h, &mut p).unwrap();
    assert_eq!(p, wire);
    assert_eq!(be32(&p, 0), 132);
    let mut h2 = h;
    h2.checksum ^= 1;
    assert!(c.open(&h2, &mut wire.clone()).is_err());
}

fn check_response(level: RxkadLevel, key: [u8; 8], prefix: &str) {
    let (ch, cbody) = load(&format!("{prefix}-f15-challenge.bin"));
    assert_eq!(ch.ptype(), Some(PacketType::Challenge));
    let challenge = decode_challenge(&cbody).unwrap();
    assert_eq!((challenge.version, challenge.min_level), (2, 0));

    let (rh, rbody) = load(&format!("{prefix}-f16-response.bin"));
    assert_eq!(rh.ptype(), Some(PacketType::Response));
    assert_eq!((rh.call_number, rh.seq, rh.security_index), (0, 0, 2));
    let resp = decode_response(&rbody).unwrap();
    assert_eq!((resp.version, resp.spare, resp.kvno), (2, 0, 256));
    assert_eq!(resp.ticket.len(), 434);
    let s = resp.decrypt(&key);
    assert_eq!((s.epoch, s.cid), (rh.epoch, rh.cid & !3));
    assert_eq!(s.security_index, 2);
    assert_eq!(s.call_numbers, [1, 0, 0, 0]);
    assert_eq!(s.inc_nonce, challenge.nonce.wrapping_add(1));
    assert_eq!(s.level, level as u32);
    assert!(resp.checksum_ok(&s), "response checksum");
    // A wrong key does not give a consistent response.
    let bad = resp.decrypt(&[1; 8]);
    assert!(!resp.checksum_ok(&bad) || bad.epoch != rh.epoch);

    // Our RESPONSE for the same challenge, epoch, cid and call numbers is
    // byte-for-byte the captured one, both from the primitive and from the
    // per-connection security object the endpoint uses.
    let ours = build_response(
        &key,
        level,
        256,
        &resp.ticket,
        rh.epoch,
        rh.cid,
        [1, 0, 0, 0],
        &challenge,
    );
    assert_eq!(ours.encode(), rbody);
    let sec = ClientSecurity::Rxkad {
        level,
        session_key: key,
        kvno: 256,
        ticket: resp.ticket.clone(),
    };
    let mut obj = sec.new_security(rh.epoch, rh.cid);
    assert_eq!(obj.index(), 2);
    let body = obj.challenge_response(&ch, &cbody, &[1, 0, 0, 0]).unwrap();
    assert_eq!(body, rbody);
}

#[test]
fn captured_crypt_response_decrypts_and_is_reproduced() {
    check_response(RxkadLevel::Crypt, CRYPT_KEY, "rxkad-crypt");
}

#[test]
fn captured_clear_response_decrypts_and_is_reproduced() {
    check_response(RxkadLevel::Clear, CLEAR_KEY, "rxkad-clear");
}

#[test]
fn challenge_above_our_level_is_refused() {
    let (ch, _) = load("rxkad-crypt-f15-challenge.bin");
    let sec = ClientSecurity::Rxkad {
        level: RxkadLevel::Clear,
        session_key: CLEAR_KEY,
        kvno: 256,
        ticket: vec![1, 2, 3],
    };
    let mut obj = sec.new_security(ch.epoch, ch.cid);
    let body = rx::rxkad::Challenge {
        version: 2,
        nonce: 5,
        min_level: 2,
    }
    .encode();
    let e = obj.challenge_response(&ch, &body, &[0; 4]).unwrap_err();
    assert!(e.0.contains("level"), "{}", e.0);
}
