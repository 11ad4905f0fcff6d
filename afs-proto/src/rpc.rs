//! The [`Rpc`] trait tying an RPC's arguments to its opcode and reply type.

use crate::xdr::XdrWriter;
use crate::Result;

/// One rxgen-defined remote procedure.
///
/// The request stream of an Rx call is the opcode (a 32-bit word) followed
/// by the XDR-encoded IN arguments; the reply stream holds the OUT
/// arguments. For "split" calls (FetchData, StoreData) raw file data is
/// streamed between the two; see the individual RPCs.
pub trait Rpc {
    /// Rx service id of the server implementing the call (1 FS, 52 VL, 73 PT).
    const SERVICE_ID: u16;
    /// rxgen opcode (`proc ... = N` in the .xg file).
    const OPCODE: u32;
    /// Name of the procedure, for logs and error messages.
    const NAME: &'static str;
    /// Decoded OUT arguments.
    type Reply;
    /// Encodes the IN arguments (without the opcode).
    fn encode_args(&self, w: &mut XdrWriter);
    /// Decodes the reply stream. Trailing bytes are ignored; truncated or
    /// malformed data is an error. Never panics.
    fn decode_reply(data: &[u8]) -> Result<Self::Reply>;
}

/// Encodes a complete request payload: the opcode, then the arguments.
pub fn encode_request<R: Rpc>(r: &R) -> Vec<u8> {
    let mut w = XdrWriter::new();
    w.put_u32(R::OPCODE);
    r.encode_args(&mut w);
    w.into_inner()
}

/// Implements a reply-less RPC decoder body (`()`), used by several modules.
pub(crate) fn decode_empty(_data: &[u8]) -> Result<()> {
    Ok(())
}
