//! Security classes: the seam where rxkad (index 2) will plug in.
//!
//! OpenAFS calls the security object at three points (src/rx/rx.c,
//! `RXS_PreparePacket`, `RXS_CheckPacket`, `RXS_GetChallenge`/
//! `RXS_GetResponse`): before sending a DATA packet (may encrypt the payload
//! and set the header checksum), after receiving one (may verify/decrypt),
//! and when a server CHALLENGE arrives on a client connection. Classes:
//! [`Null`] here and [`crate::rxkad::RxkadClient`].

use crate::packet::Header;

/// Why a security class rejected a packet or challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityError(pub String);

/// A per-connection security class.
pub trait Security: Send + std::fmt::Debug {
    /// Rx security index written into every header (0 null, 2 rxkad).
    fn index(&self) -> u8;
    /// Protect an outgoing DATA packet: may rewrite the payload and set
    /// `header.checksum`.
    fn secure_outgoing(&mut self, header: &mut Header, payload: &mut Vec<u8>);
    /// Check (and possibly decrypt) an incoming DATA payload.
    fn verify_incoming(
        &mut self,
        header: &Header,
        payload: &mut Vec<u8>,
    ) -> Result<(), SecurityError>;
    /// Answer a CHALLENGE body with a RESPONSE body, or refuse.
    fn respond_to_challenge(
        &mut self,
        header: &Header,
        challenge: &[u8],
    ) -> Result<Vec<u8>, SecurityError>;
    /// Answer a CHALLENGE knowing the connection's call number on each
    /// channel (rxkad v2 responses carry them). Defaults to
    /// [`Security::respond_to_challenge`].
    fn challenge_response(
        &mut self,
        header: &Header,
        challenge: &[u8],
        call_numbers: &[u32; 4],
    ) -> Result<Vec<u8>, SecurityError> {
        let _ = call_numbers;
        self.respond_to_challenge(header, challenge)
    }
    /// Largest user payload per DATA packet when the wire allows
    /// `max_wire` payload bytes (security headers and padding shrink it).
    fn max_payload(&self, max_wire: usize) -> usize {
        max_wire
    }
    /// The rxkad level the connection runs at; `None` for rxnull.
    fn rxkad_level(&self) -> Option<crate::rxkad::RxkadLevel> {
        None
    }
}

/// rxnull: no protection, checksum 0, challenges are refused.
#[derive(Debug, Default, Clone, Copy)]
pub struct Null;

impl Security for Null {
    fn index(&self) -> u8 {
        0
    }
    fn secure_outgoing(&mut self, header: &mut Header, _payload: &mut Vec<u8>) {
        header.checksum = 0;
    }
    fn verify_incoming(
        &mut self,
        _header: &Header,
        _payload: &mut Vec<u8>,
    ) -> Result<(), SecurityError> {
        Ok(())
    }
    fn respond_to_challenge(
        &mut self,
        _header: &Header,
        _challenge: &[u8],
    ) -> Result<Vec<u8>, SecurityError> {
        Err(SecurityError(
            "server sent a security CHALLENGE on an rxnull connection".into(),
        ))
    }
}
