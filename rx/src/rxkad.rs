//! rxkad (security index 2), client side: CHALLENGE/RESPONSE and per-packet
//! protection at levels clear, auth and crypt.
//!
//! Wire rules follow OpenAFS 1.8 src/rxkad (rxkad_client.c `GetResponse`,
//! rxkad_common.c `ComputeSum`/`PreparePacket`/`CheckPacket`,
//! private_data.h) and were checked against captured OpenAFS traffic:
//!
//! * preSeq = last 8 bytes of PCBC({epoch, cid & !3, 0, 2}, iv = key).
//! * Header checksum: ECB({callNumber, (cid & 3) << 30 | seq & 0x3fffffff}
//!   XOR preSeq), bits 16..32 of the second word; 0 becomes 1.
//! * Sealed word `((seq ^ callNumber) & 0xffff) << 16 | len` starts the
//!   payload at auth (4-byte security header, at least 8 bytes on the wire,
//!   the first 8 ECB-encrypted) and crypt (8-byte header {word, 0}, padded
//!   to 8 bytes, everything PCBC-encrypted with iv = key per packet).
//! * RESPONSE (v2): {2, 0, PCBC{epoch, cid, cksum, 2, callNumbers[4],
//!   nonce + 1, level}, kvno, ticketLen} + ticket, where cksum folds the 56
//!   fixed bytes (cksum field zero) as `c = b + c * 0x10204081` from
//!   1000003.

use crate::fcrypt::Fcrypt;
use crate::packet::Header;
use crate::security::{Security, SecurityError};
use thiserror::Error;
use zeroize::Zeroize;

/// Rx security index of rxkad.
pub const SECURITY_INDEX: u8 = 2;
/// `RXKAD_CHALLENGE_PROTOCOL_VERSION`.
pub const CHALLENGE_VERSION: u32 = 2;
/// Largest ticket OpenAFS accepts (`MAXKTCTICKETLEN`).
pub const MAX_TICKET_LEN: usize = 12000;
/// Size of the encrypted part of a v2 RESPONSE.
pub const RESPONSE_ENCRYPTED_LEN: usize = 40;
/// Size of a v2 RESPONSE without the ticket.
pub const RESPONSE_FIXED_LEN: usize = 56;
/// Most bytes [`RxkadConn::seal`] adds to a payload (crypt: an 8-byte
/// security header and up to 7 bytes of padding). A payload buffer with
/// this much spare capacity is sealed without reallocation.
pub const SEAL_ROOM: usize = 15;

/// rxkad protection level (rxkad.h `rxkad_clear` ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u32)]
pub enum RxkadLevel {
    /// Header checksum only.
    Clear = 0,
    /// Checksum plus an encrypted sealed length word.
    Auth = 1,
    /// Whole payload encrypted.
    Crypt = 2,
}

impl RxkadLevel {
    /// From the wire value.
    pub fn from_u32(v: u32) -> Option<RxkadLevel> {
        match v {
            0 => Some(RxkadLevel::Clear),
            1 => Some(RxkadLevel::Auth),
            2 => Some(RxkadLevel::Crypt),
            _ => None,
        }
    }
}

/// The security a client connection uses; part of [`crate::ConnKey`], so
/// different tokens never share connections.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum ClientSecurity {
    /// rxnull (index 0).
    #[default]
    Null,
    /// rxkad (index 2) with a token.
    Rxkad {
        /// Protection level.
        level: RxkadLevel,
        /// The 8-byte rxkad session key (for krb5 tickets: the derived key).
        session_key: [u8; 8],
        /// Ticket key version (256 for a raw krb5 ticket).
        kvno: u32,
        /// The ticket, sent in every RESPONSE.
        ticket: Vec<u8>,
    },
}

impl std::fmt::Debug for ClientSecurity {
    /// The session key is not printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientSecurity::Null => f.write_str("Null"),
            ClientSecurity::Rxkad {
                level,
                kvno,
                ticket,
                ..
            } => f
                .debug_struct("Rxkad")
                .field("level", level)
                .field("session_key", &"<redacted>")
                .field("kvno", kvno)
                .field("ticket_len", &ticket.len())
                .finish(),
        }
    }
}

impl Drop for ClientSecurity {
    /// The session key and the ticket are wiped from memory.
    fn drop(&mut self) {
        if let ClientSecurity::Rxkad {
            session_key,
            ticket,
            ..
        } = self
        {
            session_key.zeroize();
            ticket.zeroize();
        }
    }
}

impl ClientSecurity {
    /// Rx security index on the wire (0 or 2).
    pub fn security_index(&self) -> u8 {
        match self {
            ClientSecurity::Null => 0,
            ClientSecurity::Rxkad { .. } => SECURITY_INDEX,
        }
    }

    /// The per-connection security object for a connection we create.
    pub fn new_security(&self, epoch: u32, cid: u32) -> Box<dyn Security> {
        match self {
            ClientSecurity::Null => Box::new(crate::security::Null),
            ClientSecurity::Rxkad {
                level,
                session_key,
                kvno,
                ticket,
            } => Box::new(RxkadClient::new(
                *level,
                session_key,
                *kvno,
                ticket.clone(),
                epoch,
                cid,
            )),
        }
    }
}

/// Why a CHALLENGE or RESPONSE body could not be decoded.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum RxkadError {
    /// Body shorter than its fixed part.
    #[error("rxkad packet too short ({0} bytes)")]
    Short(usize),
    /// Unsupported version.
    #[error("unsupported rxkad version {0}")]
    Version(u32),
    /// Ticket length field out of range or beyond the packet.
    #[error("bad ticket length {0}")]
    TicketLen(u32),
}

/// A decoded CHALLENGE body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Challenge {
    /// 2 for a v2 challenge, 0 for the old 8-byte form.
    pub version: u32,
    /// The challenge id (nonce).
    pub nonce: u32,
    /// Minimum level the server accepts.
    pub min_level: u32,
}

impl Challenge {
    /// Encode as a v2 challenge {version, nonce, level, 0}.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(16);
        for w in [self.version, self.nonce, self.min_level, 0] {
            v.extend_from_slice(&w.to_be_bytes());
        }
        v
    }
}

fn be32(b: &[u8], i: usize) -> u32 {
    u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

/// Decode a CHALLENGE body like rxkad_client.c: more than 8 bytes means
/// v2 (then at least 16 are needed), exactly 8 the old {nonce, level}.
/// Never panics.
pub fn decode_challenge(body: &[u8]) -> Result<Challenge, RxkadError> {
    if body.len() > 8 {
        if body.len() < 16 {
            return Err(RxkadError::Short(body.len()));
        }
        Ok(Challenge {
            version: be32(body, 0),
            nonce: be32(body, 4),
            min_level: be32(body, 8),
        })
    } else if body.len() == 8 {
        Ok(Challenge {
            version: 0,
            nonce: be32(body, 0),
            min_level: be32(body, 4),
        })
    } else {
        Err(RxkadError::Short(body.len()))
    }
}

/// A v2 RESPONSE body as it is on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Protocol version (2).
    pub version: u32,
    /// Spare word (0).
    pub spare: u32,
    /// The PCBC-encrypted part; see [`ResponseSecret`].
    pub encrypted: [u8; RESPONSE_ENCRYPTED_LEN],
    /// Ticket key version.
    pub kvno: u32,
    /// The ticket.
    pub ticket: Vec<u8>,
}

/// Decode a v2 RESPONSE body. Never panics.
pub fn decode_response(body: &[u8]) -> Result<Response, RxkadError> {
    if body.len() < RESPONSE_FIXED_LEN {
        return Err(RxkadError::Short(body.len()));
    }
    let version = be32(body, 0);
    if version != CHALLENGE_VERSION {
        return Err(RxkadError::Version(version));
    }
    let mut encrypted = [0u8; RESPONSE_ENCRYPTED_LEN];
    encrypted.copy_from_slice(&body[8..48]);
    let kvno = be32(body, 48);
    let tlen = be32(body, 52);
    let rest = &body[RESPONSE_FIXED_LEN..];
    if tlen as usize > MAX_TICKET_LEN || tlen as usize > rest.len() {
        return Err(RxkadError::TicketLen(tlen));
    }
    Ok(Response {
        version,
        spare: be32(body, 4),
        encrypted,
        kvno,
        ticket: rest[..tlen as usize].to_vec(),
    })
}

impl Response {
    /// Wire form.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(RESPONSE_FIXED_LEN + self.ticket.len());
        v.extend_from_slice(&self.version.to_be_bytes());
        v.extend_from_slice(&self.spare.to_be_bytes());
        v.extend_from_slice(&self.encrypted);
        v.extend_from_slice(&self.kvno.to_be_bytes());
        v.extend_from_slice(&(self.ticket.len() as u32).to_be_bytes());
        v.extend_from_slice(&self.ticket);
        v
    }

    /// Decrypt the encrypted part with the session key (what a server does
    /// after it got the key out of the ticket).
    pub fn decrypt(&self, session_key: &[u8; 8]) -> ResponseSecret {
        let mut e = self.encrypted;
        Fcrypt::new(session_key).pcbc_decrypt(&mut e, session_key);
        let w = |i: usize| be32(&e, i * 4);
        ResponseSecret {
            epoch: w(0),
            cid: w(1),
            cksum: w(2),
            security_index: w(3),
            call_numbers: [w(4), w(5), w(6), w(7)],
            inc_nonce: w(8),
            level: w(9),
        }
    }

    /// Whether the checksum inside `secret` matches this response.
    pub fn checksum_ok(&self, secret: &ResponseSecret) -> bool {
        response_checksum(
            self.version,
            self.spare,
            secret,
            self.kvno,
            self.ticket.len() as u32,
        ) == secret.cksum
    }
}

/// The encrypted part of a v2 RESPONSE, decrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseSecret {
    /// Connection epoch.
    pub epoch: u32,
    /// Connection id (channel bits clear).
    pub cid: u32,
    /// Checksum of the response (see [`response_checksum`]).
    pub cksum: u32,
    /// Security index (2).
    pub security_index: u32,
    /// The client's call number on each channel.
    pub call_numbers: [u32; 4],
    /// The challenge nonce plus one.
    pub inc_nonce: u32,
    /// The client's level.
    pub level: u32,
}

impl ResponseSecret {
    fn encode(&self) -> [u8; RESPONSE_ENCRYPTED_LEN] {
        let mut e = [0u8; RESPONSE_ENCRYPTED_LEN];
        let words = [
            self.epoch,
            self.cid,
            self.cksum,
            self.security_index,
            self.call_numbers[0],
            self.call_numbers[1],
            self.call_numbers[2],
            self.call_numbers[3],
            self.inc_nonce,
            self.level,
        ];
        for (i, w) in words.iter().enumerate() {
            e[i * 4..i * 4 + 4].copy_from_slice(&w.to_be_bytes());
        }
        e
    }
}

/// rxkad_common.c `rxkad_CksumChallengeResponse`: fold the 56 fixed bytes
/// of the plaintext response (cksum field taken as zero).
pub fn response_checksum(
    version: u32,
    spare: u32,
    secret: &ResponseSecret,
    kvno: u32,
    ticket_len: u32,
) -> u32 {
    let mut s = *secret;
    s.cksum = 0;
    let mut bytes = Vec::with_capacity(RESPONSE_FIXED_LEN);
    bytes.extend_from_slice(&version.to_be_bytes());
    bytes.extend_from_slice(&spare.to_be_bytes());
    bytes.extend_from_slice(&s.encode());
    bytes.extend_from_slice(&kvno.to_be_bytes());
    bytes.extend_from_slice(&ticket_len.to_be_bytes());
    bytes.iter().fold(1_000_003u32, |c, &b| {
        (b as u32).wrapping_add(c.wrapping_mul(0x1020_4081))
    })
}

/// Build the v2 RESPONSE for `challenge` (rxkad_client.c `GetResponse`).
#[allow(clippy::too_many_arguments)]
pub fn build_response(
    session_key: &[u8; 8],
    level: RxkadLevel,
    kvno: u32,
    ticket: &[u8],
    epoch: u32,
    cid: u32,
    call_numbers: [u32; 4],
    challenge: &Challenge,
) -> Response {
    let mut secret = ResponseSecret {
        epoch,
        cid: cid & !3,
        cksum: 0,
        security_index: SECURITY_INDEX as u32,
        call_numbers,
        inc_nonce: challenge.nonce.wrapping_add(1),
        level: level as u32,
    };
    secret.cksum = response_checksum(CHALLENGE_VERSION, 0, &secret, kvno, ticket.len() as u32);
    let mut encrypted = secret.encode();
    Fcrypt::new(session_key).pcbc_encrypt(&mut encrypted, session_key);
    Response {
        version: CHALLENGE_VERSION,
        spare: 0,
        encrypted,
        kvno,
        ticket: ticket.to_vec(),
    }
}

/// Per-connection packet protection, the same for both directions (the
/// server side of the test suite uses it too).
#[derive(Clone)]
pub struct RxkadConn {
    level: RxkadLevel,
    cipher: Fcrypt,
    iv: [u8; 8],
    pre_seq: [u8; 8],
}

impl std::fmt::Debug for RxkadConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RxkadConn")
            .field("level", &self.level)
            .field("session_key", &"<redacted>")
            .finish()
    }
}

impl Drop for RxkadConn {
    /// The key (kept as the IV) and the key-derived preSeq are wiped; the
    /// key schedule wipes itself.
    fn drop(&mut self) {
        self.iv.zeroize();
        self.pre_seq.zeroize();
    }
}

impl RxkadConn {
    /// Protection for the connection (epoch, cid) with this session key.
    pub fn new(level: RxkadLevel, session_key: &[u8; 8], epoch: u32, cid: u32) -> Self {
        let cipher = Fcrypt::new(session_key);
        let mut ep = [0u8; 16];
        ep[..4].copy_from_slice(&epoch.to_be_bytes());
        ep[4..8].copy_from_slice(&(cid & !3).to_be_bytes());
        ep[12..16].copy_from_slice(&(SECURITY_INDEX as u32).to_be_bytes());
        cipher.pcbc_encrypt(&mut ep, session_key);
        let mut pre_seq = [0u8; 8];
        pre_seq.copy_from_slice(&ep[8..16]);
        RxkadConn {
            level,
            cipher,
            iv: *session_key,
            pre_seq,
        }
    }

    /// The level.
    pub fn level(&self) -> RxkadLevel {
        self.level
    }

    /// Bytes of rxkad security header before the user data.
    pub fn header_len(&self) -> usize {
        match self.level {
            RxkadLevel::Clear => 0,
            RxkadLevel::Auth => 4,
            RxkadLevel::Crypt => 8,
        }
    }

    /// Largest user payload that fits in `max_wire` payload bytes.
    pub fn max_payload(&self, max_wire: usize) -> usize {
        match self.level {
            RxkadLevel::Clear => max_wire,
            RxkadLevel::Auth => max_wire.saturating_sub(4).max(1),
            RxkadLevel::Crypt => (max_wire & !7).saturating_sub(8).max(1),
        }
    }

    /// rxkad_common.c `ComputeSum`: the 16-bit header checksum.
    pub fn header_checksum(&self, h: &Header) -> u16 {
        let mut w = [0u8; 8];
        w[..4].copy_from_slice(&h.call_number.to_be_bytes());
        let t = ((h.cid & 3) << 30) | (h.seq & 0x3fff_ffff);
        w[4..].copy_from_slice(&t.to_be_bytes());
        for (a, b) in w.iter_mut().zip(self.pre_seq.iter()) {
            *a ^= b;
        }
        self.cipher.encrypt_block(&mut w);
        let t = u16::from_be_bytes([w[4], w[5]]);
        if t == 0 {
            1
        } else {
            t
        }
    }

    fn sealed_word(h: &Header, len: usize) -> u32 {
        (((h.seq ^ h.call_number) & 0xffff) << 16) | (len as u32 & 0xffff)
    }

    /// Protect an outgoing DATA packet: set the checksum, and at auth and
    /// crypt prepend the security header and encrypt. Works in place: the
    /// payload grows by the header (and padding) and is encrypted where it
    /// is, so a buffer with [`SEAL_ROOM`] spare capacity is never
    /// reallocated.
    pub fn seal(&self, h: &mut Header, payload: &mut Vec<u8>) {
        h.checksum = self.header_checksum(h);
        let len = payload.len();
        let word = Self::sealed_word(h, len).to_be_bytes();
        match self.level {
            RxkadLevel::Clear => {}
            RxkadLevel::Auth => {
                payload.resize((len + 4).max(8), 0);
                payload.copy_within(..len, 4);
                payload[..4].copy_from_slice(&word);
                // At least 8 bytes after the resize.
                if let Some(first) = payload.first_chunk_mut::<8>() {
                    self.cipher.encrypt_block(first);
                }
            }
            RxkadLevel::Crypt => {
                payload.resize((len + 8).next_multiple_of(8), 0);
                payload.copy_within(..len, 8);
                payload[..4].copy_from_slice(&word);
                payload[4..8].fill(0);
                self.cipher.pcbc_encrypt(payload, &self.iv);
            }
        }
    }

    /// Check an incoming DATA packet and strip the protection. The header
    /// checksum is always checked: OpenAFS 1.8 peers always set it
    /// (`ComputeSum` never yields 0), so we do not fall back to OpenAFS's
    /// "check only after a nonzero one was seen" rule, which would let a
    /// forged first packet with checksum 0 through at level clear.
    pub fn open(&mut self, h: &Header, payload: &mut Vec<u8>) -> Result<(), SecurityError> {
        if self.header_checksum(h) != h.checksum {
            return Err(SecurityError("rxkad header checksum mismatch".into()));
        }
        let hdr = match self.level {
            RxkadLevel::Clear => return Ok(()),
            RxkadLevel::Auth => {
                let Some(first) = payload.first_chunk_mut::<8>() else {
                    return Err(SecurityError("rxkad auth packet too short".into()));
                };
                self.cipher.decrypt_block(first);
                4
            }
            RxkadLevel::Crypt => {
                if payload.len() < 8 || !payload.len().is_multiple_of(8) {
                    return Err(SecurityError(format!(
                        "rxkad crypt packet length {} is not a multiple of 8",
                        payload.len()
                    )));
                }
                self.cipher.pcbc_decrypt(payload, &self.iv);
                8
            }
        };
        let word = be32(payload, 0);
        if word >> 16 != (h.seq ^ h.call_number) & 0xffff {
            return Err(SecurityError("rxkad sealed word mismatch".into()));
        }
        let len = (word & 0xffff) as usize;
        if hdr + len > payload.len() {
            return Err(SecurityError("rxkad sealed length beyond packet".into()));
        }
        payload.truncate(hdr + len);
        payload.drain(..hdr);
        Ok(())
    }
}

/// The client-side rxkad security object of one connection. Its Debug
/// form shows neither the session key nor the ticket, and both are wiped
/// when it is dropped.
pub struct RxkadClient {
    conn: RxkadConn,
    session_key: [u8; 8],
    kvno: u32,
    ticket: Vec<u8>,
    epoch: u32,
    cid: u32,
}

impl std::fmt::Debug for RxkadClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RxkadClient")
            .field("level", &self.conn.level())
            .field("session_key", &"<redacted>")
            .field("kvno", &self.kvno)
            .field(
                "ticket",
                &format_args!("<redacted, {} bytes>", self.ticket.len()),
            )
            .field("epoch", &self.epoch)
            .field("cid", &self.cid)
            .finish()
    }
}

impl Drop for RxkadClient {
    fn drop(&mut self) {
        self.session_key.zeroize();
        self.ticket.zeroize();
    }
}

impl RxkadClient {
    /// Security for the client connection (epoch, cid).
    pub fn new(
        level: RxkadLevel,
        session_key: &[u8; 8],
        kvno: u32,
        ticket: Vec<u8>,
        epoch: u32,
        cid: u32,
    ) -> Self {
        RxkadClient {
            conn: RxkadConn::new(level, session_key, epoch, cid),
            session_key: *session_key,
            kvno,
            ticket,
            epoch,
            cid: cid & !3,
        }
    }
}

impl Security for RxkadClient {
    fn index(&self) -> u8 {
        SECURITY_INDEX
    }

    fn secure_outgoing(&mut self, header: &mut Header, payload: &mut Vec<u8>) {
        self.conn.seal(header, payload);
    }

    fn verify_incoming(
        &mut self,
        header: &Header,
        payload: &mut Vec<u8>,
    ) -> Result<(), SecurityError> {
        self.conn.open(header, payload)
    }

    fn respond_to_challenge(
        &mut self,
        header: &Header,
        challenge: &[u8],
    ) -> Result<Vec<u8>, SecurityError> {
        self.challenge_response(header, challenge, &[0; 4])
    }

    fn challenge_response(
        &mut self,
        _header: &Header,
        challenge: &[u8],
        call_numbers: &[u32; 4],
    ) -> Result<Vec<u8>, SecurityError> {
        let c = decode_challenge(challenge)
            .map_err(|e| SecurityError(format!("bad rxkad CHALLENGE: {e}")))?;
        if c.version != CHALLENGE_VERSION {
            return Err(SecurityError(format!(
                "unsupported rxkad CHALLENGE version {} (only version 2)",
                c.version
            )));
        }
        let ours = self.conn.level();
        if c.min_level > ours as u32 {
            return Err(SecurityError(format!(
                "server requires rxkad level {} but the connection uses {:?} ({})",
                c.min_level, ours, ours as u32
            )));
        }
        Ok(build_response(
            &self.session_key,
            ours,
            self.kvno,
            &self.ticket,
            self.epoch,
            self.cid,
            *call_numbers,
            &c,
        )
        .encode())
    }

    fn max_payload(&self, max_wire: usize) -> usize {
        self.conn.max_payload(max_wire)
    }

    fn rxkad_level(&self) -> Option<RxkadLevel> {
        Some(self.conn.level())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn level(i: u8) -> RxkadLevel {
        RxkadLevel::from_u32(i as u32 % 3).unwrap()
    }

    #[test]
    fn challenge_forms() {
        let v2 = Challenge {
            version: 2,
            nonce: 0xff3f_c2cf,
            min_level: 1,
        };
        assert_eq!(decode_challenge(&v2.encode()), Ok(v2));
        let old = decode_challenge(&[0, 0, 0, 9, 0, 0, 0, 2]).unwrap();
        assert_eq!((old.version, old.nonce, old.min_level), (0, 9, 2));
        assert!(decode_challenge(&[0; 12]).is_err());
        assert!(decode_challenge(&[0; 7]).is_err());
    }

    #[test]
    fn response_limits() {
        let r = build_response(
            &[7; 8],
            RxkadLevel::Crypt,
            256,
            &[1, 2, 3],
            1,
            5,
            [1, 2, 3, 4],
            &Challenge {
                version: 2,
                nonce: u32::MAX,
                min_level: 0,
            },
        );
        let mut wire = r.encode();
        assert_eq!(decode_response(&wire), Ok(r.clone()));
        let s = r.decrypt(&[7; 8]);
        assert_eq!((s.cid, s.inc_nonce, s.level), (4, 0, 2));
        assert!(r.checksum_ok(&s));
        wire[55] = 4; // ticket length beyond the packet
        assert_eq!(decode_response(&wire), Err(RxkadError::TicketLen(4)));
        wire[3] = 1;
        assert_eq!(decode_response(&wire), Err(RxkadError::Version(1)));
        assert_eq!(decode_response(&wire[..55]), Err(RxkadError::Short(55)));
    }

    #[test]
    fn debug_hides_the_session_key() {
        let s = ClientSecurity::Rxkad {
            level: RxkadLevel::Crypt,
            session_key: [0xab; 8],
            kvno: 1,
            ticket: vec![0; 3],
        };
        let d = format!("{s:?}");
        assert!(
            !d.contains("171") && !d.to_lowercase().contains("ab, "),
            "{d}"
        );
        assert_eq!(s.security_index(), 2);
        assert_eq!(ClientSecurity::default().security_index(), 0);
    }

    #[test]
    fn debug_of_connection_security_hides_key_and_ticket() {
        let key = [0xab; 8];
        let ticket = vec![0xcd; 5];
        let client = RxkadClient::new(RxkadLevel::Auth, &key, 7, ticket.clone(), 1, 4);
        let boxed = ClientSecurity::Rxkad {
            level: RxkadLevel::Auth,
            session_key: key,
            kvno: 7,
            ticket,
        }
        .new_security(1, 4);
        for d in [
            format!("{client:?}"),
            format!("{boxed:?}"),
            format!("{:?}", RxkadConn::new(RxkadLevel::Crypt, &key, 1, 4)),
        ] {
            assert!(d.contains("session_key: \"<redacted>\""), "{d}");
            for secret in ["171", "205", "ab,", "cd,", "0xab", "0xcd"] {
                assert!(!d.to_lowercase().contains(secret), "{d}");
            }
        }
    }

    #[test]
    fn sealed_packets_known_answers() {
        // Wire length, header checksum and a fold of the sealed bytes at
        // auth and crypt for payload lengths around the 8-byte block and
        // the security header; from the copy-into-a-new-buffer seal this
        // one replaced.
        let key = [0x13, 0x57, 0x9b, 0xdf, 0x02, 0x46, 0x8a, 0xce];
        let fold = |b: &[u8]| {
            b.iter().fold(1_000_003u32, |c, &x| {
                (x as u32).wrapping_add(c.wrapping_mul(0x1020_4081))
            })
        };
        let cases: [(RxkadLevel, usize, usize, u32); 11] = [
            (RxkadLevel::Auth, 0, 8, 0xe8fe2bb3),
            (RxkadLevel::Auth, 3, 8, 0x1720d9d5),
            (RxkadLevel::Auth, 4, 8, 0x664c2888),
            (RxkadLevel::Auth, 5, 9, 0xfd89afa5),
            (RxkadLevel::Auth, 13, 17, 0xcc4e6db5),
            (RxkadLevel::Auth, 1408, 1412, 0xc2fd893f),
            (RxkadLevel::Crypt, 0, 8, 0xf9ffc5e2),
            (RxkadLevel::Crypt, 1, 16, 0x25c975dc),
            (RxkadLevel::Crypt, 8, 16, 0x96bb45e4),
            (RxkadLevel::Crypt, 13, 24, 0xc857f846),
            (RxkadLevel::Crypt, 1400, 1408, 0xd56b4567),
        ];
        for (lvl, n, wire_len, want) in cases {
            let conn = RxkadConn::new(lvl, &key, 0x8000_1234, 0x0001_0006);
            let mut rx = conn.clone();
            let mut h = Header {
                epoch: 0x8000_1234,
                cid: 0x0001_0006,
                call_number: 9,
                seq: 3,
                security_index: 2,
                ..Default::default()
            };
            let plain: Vec<u8> = (0..n).map(|i| (i * 7 + (i >> 8) * 13 + 1) as u8).collect();
            let mut p = plain.clone();
            conn.seal(&mut h, &mut p);
            assert_eq!(
                (p.len(), h.checksum, fold(&p)),
                (wire_len, 0x9c9f, want),
                "{lvl:?} {n}"
            );
            rx.open(&h, &mut p).unwrap();
            assert_eq!(p, plain, "{lvl:?} {n}");
        }
    }

    #[test]
    fn seal_with_room_keeps_the_buffer() {
        // What the endpoint hands over (the payload plus SEAL_ROOM spare
        // capacity) is sealed where it is, at every level and length.
        for lvl in [RxkadLevel::Clear, RxkadLevel::Auth, RxkadLevel::Crypt] {
            let conn = RxkadConn::new(lvl, &[5; 8], 1, 4);
            for n in 0..=1412 {
                let mut p = Vec::with_capacity(n + SEAL_ROOM);
                p.resize(n, 0xa5);
                let (ptr, cap) = (p.as_ptr(), p.capacity());
                let mut h = Header {
                    call_number: 1,
                    seq: 1,
                    ..Default::default()
                };
                conn.seal(&mut h, &mut p);
                assert_eq!((p.as_ptr(), p.capacity()), (ptr, cap), "{lvl:?} {n}");
            }
        }
    }

    proptest! {
        #[test]
        fn decoders_never_panic(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_challenge(&data);
            if let Ok(r) = decode_response(&data) {
                let enc = r.encode();
                prop_assert_eq!(&enc[..], &data[..enc.len()]);
            }
        }

        #[test]
        fn seal_open_round_trip(
            lv in 0u8..3,
            key: [u8; 8],
            epoch: u32,
            cid: u32,
            call in 1u32..1000,
            seq in 1u32..100_000,
            data in proptest::collection::vec(any::<u8>(), 0..1500),
        ) {
            let lvl = level(lv);
            let tx = RxkadConn::new(lvl, &key, epoch, cid);
            let mut rx = RxkadConn::new(lvl, &key, epoch, cid & !3);
            let mut h = Header { epoch, cid, call_number: call, seq, security_index: 2, ..Default::default() };
            let mut p = data.clone();
            tx.seal(&mut h, &mut p);
            prop_assert_ne!(h.checksum, 0);
            prop_assert_eq!(p.len(), match lvl {
                RxkadLevel::Clear => data.len(),
                RxkadLevel::Auth => (data.len() + 4).max(8),
                RxkadLevel::Crypt => (data.len() + 8).div_ceil(8) * 8,
            });
            // Anything max_payload admits fits the wire budget.
            if data.len() <= tx.max_payload(1412) {
                prop_assert!(p.len() <= 1412);
            }
            let wire = p.clone();
            rx.open(&h, &mut p).unwrap();
            prop_assert_eq!(&p, &data);
            // Replayed under another call number: rejected.
            let mut h2 = h;
            h2.call_number += 1;
            prop_assert!(rx.open(&h2, &mut wire.clone()).is_err());
        }
    }
}
