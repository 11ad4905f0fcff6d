//! Callback (cache manager) service the client serves (`src/fsint/afscbint.xg`).
//!
//! The fileserver calls these RPCs on the client's own Rx endpoint (the
//! source address:port of its FS connection), service id 1, rxnull. The
//! 1.8.9 fileserver uses CallBack, InitCallBackState, InitCallBackState3,
//! Probe, ProbeUuid and TellMeAboutYourself, falling back to WhoAreYou if
//! TellMeAboutYourself aborts with [`RXGEN_OPCODE`].

use crate::types::{CallBack, Fid, InterfaceAddr, Uuid};
use crate::xdr::{self, XdrWriter};
use crate::Result;

/// Rx service id of the callback service.
pub const CB_SERVICE_ID: u16 = 1;
/// Standard cache manager port (the fileserver retries callbacks here).
pub const CB_PORT: u16 = 7001;
/// Abort code for an unknown opcode (rxgen's `RXGEN_OPCODE`).
pub const RXGEN_OPCODE: i32 = -455;
/// Abort code to send for a ProbeUuid whose UUID is not ours: OpenAFS's
/// cache manager (`SRXAFSCB_ProbeUuid`, afs_callback.c) returns 1, which
/// makes the fileserver treat us as a different client.
pub const PROBE_UUID_MISMATCH: i32 = 1;
/// `CLIENT_CAPABILITY_ERRORTRANS` (common.xg): we understand UAE codes.
pub const CLIENT_CAPABILITY_ERRORTRANS: u32 = 0x0001;
/// `AFSCBMAX`: most FIDs in a CallBack request.
pub const AFSCBMAX: usize = 50;

/// Opcodes of the callback interface.
pub mod opcode {
    /// `RXAFSCB_CallBack`.
    pub const CALLBACK: u32 = 204;
    /// `RXAFSCB_InitCallBackState`.
    pub const INIT_CALLBACK_STATE: u32 = 205;
    /// `RXAFSCB_Probe`.
    pub const PROBE: u32 = 206;
    /// `RXAFSCB_WhoAreYou`.
    pub const WHO_ARE_YOU: u32 = 212;
    /// `RXAFSCB_InitCallBackState3`.
    pub const INIT_CALLBACK_STATE3: u32 = 213;
    /// `RXAFSCB_ProbeUuid`.
    pub const PROBE_UUID: u32 = 214;
    /// `RXAFSCB_TellMeAboutYourself`.
    pub const TELL_ME_ABOUT_YOURSELF: u32 = 65538;
}

/// A decoded incoming callback-service request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CbRequest {
    /// 204: the listed FIDs changed; drop their callbacks. A FID with
    /// vnode 0 means the whole volume. `callbacks` may be shorter than
    /// `fids` (servers often send none).
    CallBack {
        /// Broken FIDs.
        fids: Vec<Fid>,
        /// Matching callbacks, if any.
        callbacks: Vec<CallBack>,
    },
    /// 205: the server lost its state: drop every callback from it.
    InitCallBackState,
    /// 213: same, from the server with this UUID.
    InitCallBackState3 {
        /// The fileserver's UUID.
        server_uuid: Uuid,
    },
    /// 206: liveness probe; reply empty.
    Probe,
    /// 214: "are you still the client with this UUID?"; reply empty if yes,
    /// else abort with [`PROBE_UUID_MISMATCH`].
    ProbeUuid {
        /// UUID the server believes we have.
        client_uuid: Uuid,
    },
    /// 212: reply with [`encode_who_are_you_reply`].
    WhoAreYou,
    /// 65538: reply with [`encode_tell_me_about_yourself_reply`].
    TellMeAboutYourself,
    /// Any other opcode: abort with [`RXGEN_OPCODE`].
    Unknown(u32),
}

impl CbRequest {
    /// Decodes a request payload (opcode first). Trailing bytes are
    /// ignored; truncated arguments are an error.
    pub fn decode(request: &[u8]) -> Result<CbRequest> {
        xdr::decode_all(request, |i| {
            let (i, op) = xdr::u32(i)?;
            match op {
                opcode::CALLBACK => {
                    let (i, fids) = xdr::array(AFSCBMAX, Fid::decode)(i)?;
                    let (i, callbacks) = xdr::array(AFSCBMAX, CallBack::decode)(i)?;
                    Ok((i, CbRequest::CallBack { fids, callbacks }))
                }
                opcode::INIT_CALLBACK_STATE => Ok((i, CbRequest::InitCallBackState)),
                opcode::PROBE => Ok((i, CbRequest::Probe)),
                opcode::WHO_ARE_YOU => Ok((i, CbRequest::WhoAreYou)),
                opcode::INIT_CALLBACK_STATE3 => {
                    let (i, server_uuid) = Uuid::decode(i)?;
                    Ok((i, CbRequest::InitCallBackState3 { server_uuid }))
                }
                opcode::PROBE_UUID => {
                    let (i, client_uuid) = Uuid::decode(i)?;
                    Ok((i, CbRequest::ProbeUuid { client_uuid }))
                }
                opcode::TELL_ME_ABOUT_YOURSELF => Ok((i, CbRequest::TellMeAboutYourself)),
                other => Ok((i, CbRequest::Unknown(other))),
            }
        })
    }

    /// Encodes the request (for tests and fake fileservers).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = XdrWriter::new();
        match self {
            CbRequest::CallBack { fids, callbacks } => {
                w.put_u32(opcode::CALLBACK);
                w.put_u32(fids.len() as u32);
                for f in fids {
                    f.encode(&mut w);
                }
                w.put_u32(callbacks.len() as u32);
                for c in callbacks {
                    c.encode(&mut w);
                }
            }
            CbRequest::InitCallBackState => w.put_u32(opcode::INIT_CALLBACK_STATE),
            CbRequest::InitCallBackState3 { server_uuid } => {
                w.put_u32(opcode::INIT_CALLBACK_STATE3);
                server_uuid.encode(&mut w);
            }
            CbRequest::Probe => w.put_u32(opcode::PROBE),
            CbRequest::ProbeUuid { client_uuid } => {
                w.put_u32(opcode::PROBE_UUID);
                client_uuid.encode(&mut w);
            }
            CbRequest::WhoAreYou => w.put_u32(opcode::WHO_ARE_YOU),
            CbRequest::TellMeAboutYourself => w.put_u32(opcode::TELL_ME_ABOUT_YOURSELF),
            CbRequest::Unknown(op) => w.put_u32(*op),
        }
        w.into_inner()
    }
}

/// Reply body of WhoAreYou (212): the `interfaceAddr`.
pub fn encode_who_are_you_reply(addr: &InterfaceAddr) -> Vec<u8> {
    let mut w = XdrWriter::new();
    addr.encode(&mut w);
    w.into_inner()
}

/// Reply body of TellMeAboutYourself (65538): the `interfaceAddr`, then
/// `Capabilities` (`afs_uint32<AFSCAPABILITIESMAX>`), normally
/// `[CLIENT_CAPABILITY_ERRORTRANS]`.
pub fn encode_tell_me_about_yourself_reply(addr: &InterfaceAddr, capabilities: &[u32]) -> Vec<u8> {
    let mut w = XdrWriter::new();
    addr.encode(&mut w);
    w.put_u32(capabilities.len() as u32);
    for c in capabilities {
        w.put_u32(*c);
    }
    w.into_inner()
}

/// Reply body of CallBack, InitCallBackState(3), Probe and a matching
/// ProbeUuid: empty.
pub fn encode_empty_reply() -> Vec<u8> {
    Vec::new()
}

/// Decodes a TellMeAboutYourself reply (for tests and fake fileservers).
pub fn decode_tell_me_about_yourself_reply(data: &[u8]) -> Result<(InterfaceAddr, Vec<u32>)> {
    xdr::decode_all(data, |i| {
        let (i, a) = InterfaceAddr::decode(i)?;
        let (i, caps) = xdr::array(crate::fs::AFSCAPABILITIESMAX, xdr::u32)(i)?;
        Ok((i, (a, caps)))
    })
}
