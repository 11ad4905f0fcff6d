//! Protection service (`src/ptserver/ptint.xg`): user/group names and
//! ids. Rx service 73 on UDP 7002.
//!
//! A `prname` is `char[PR_MAXNAMELEN]` (64), which rxgen marshals as a
//! fixed `xdr_vector` of `xdr_char`: 64 words of 4 bytes each per name,
//! NUL-padded, with no length word.

use crate::rpc::Rpc;
use crate::xdr::{self, XdrWriter};
use crate::Result;

/// UDP port of the ptserver.
pub const PT_PORT: u16 = 7002;
/// Rx service id of the PR interface.
pub const PT_SERVICE_ID: u16 = 73;
/// `PR_MAXNAMELEN`.
pub const PR_MAXNAMELEN: usize = 64;
/// Our bound on list lengths (`OPENAFS_MAXPRLIST` is 500000; a reply is
/// also bounded by its size).
pub const PR_MAXLIST: usize = 5000;
/// Id returned for unknown names (`ANONYMOUSID`).
pub const ANONYMOUSID: i32 = 32766;

/// `PR_NameToID` (504): names to ids; unknown names map to [`ANONYMOUSID`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameToId {
    /// Names (longer than 63 bytes are cut).
    pub names: Vec<String>,
}

impl Rpc for NameToId {
    const SERVICE_ID: u16 = PT_SERVICE_ID;
    const OPCODE: u32 = 504;
    const NAME: &'static str = "PR_NameToID";
    type Reply = Vec<i32>;

    fn encode_args(&self, w: &mut XdrWriter) {
        w.put_u32(self.names.len() as u32);
        for n in &self.names {
            let b = n.as_bytes();
            w.put_char_vector(&b[..b.len().min(PR_MAXNAMELEN - 1)], PR_MAXNAMELEN);
        }
    }

    fn decode_reply(data: &[u8]) -> Result<Vec<i32>> {
        xdr::decode_all(data, xdr::array(PR_MAXLIST, xdr::i32))
    }
}

/// `PR_IDToName` (505): ids to names; unknown ids come back as the decimal id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdToName {
    /// Ids.
    pub ids: Vec<i32>,
}

impl Rpc for IdToName {
    const SERVICE_ID: u16 = PT_SERVICE_ID;
    const OPCODE: u32 = 505;
    const NAME: &'static str = "PR_IDToName";
    type Reply = Vec<String>;

    fn encode_args(&self, w: &mut XdrWriter) {
        w.put_u32(self.ids.len() as u32);
        for id in &self.ids {
            w.put_i32(*id);
        }
    }

    fn decode_reply(data: &[u8]) -> Result<Vec<String>> {
        xdr::decode_all(data, |i| {
            let (i, count) = xdr::u32(i)?;
            let count = count as usize;
            if count > PR_MAXLIST || count > i.len() / (4 * PR_MAXNAMELEN) {
                return Err(nom::Err::Error(nom::error::Error::new(
                    i,
                    nom::error::ErrorKind::TooLarge,
                )));
            }
            let mut out = Vec::with_capacity(count);
            let mut rest = i;
            for _ in 0..count {
                let (r, name) = xdr::char_vector(PR_MAXNAMELEN)(rest)?;
                rest = r;
                out.push(xdr::bytes_to_string(&name));
            }
            Ok((rest, out))
        })
    }
}
