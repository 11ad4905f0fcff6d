//! Records stored in the cache. Plain data, serialised with bincode.

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::{Error, Result};

/// The status of a vnode as last learned from its fileserver.
///
/// `data_version` names the contents the chunks of this fid belong to;
/// `callback_expires` is the absolute unix time (seconds) until which the
/// fileserver promised to tell us of changes, 0 when no callback is held.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusRecord {
    pub file_type: u32,
    pub length: u64,
    pub data_version: u64,
    pub mode: u32,
    pub owner: u32,
    pub group: u32,
    pub link_count: u32,
    pub author: u32,
    pub client_modtime: u32,
    pub server_modtime: u32,
    pub parent_vnode: u32,
    pub parent_unique: u32,
    pub anonymous_access: u32,
    pub callback_expires: u64,
    pub fetched_at: u64,
}

/// One directory entry as the fileserver's directory blob holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirEntryRecord {
    pub name: Vec<u8>,
    pub vnode: u32,
    pub unique: u32,
}

/// A parsed directory, valid for exactly one data version of the directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirRecord {
    pub data_version: u64,
    pub entries: Vec<DirEntryRecord>,
}

/// An AFS token of one local user for one cell, as `afsd-rs aklog` made it.
///
/// Kept after it expires: an expired token is never sent to a server, but it
/// names the identity whose cached rights anchor offline use later.
///
/// Its Debug output leaves out the ticket and the session key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub uid: u32,
    pub cell: String,
    /// The AFS id (PT NameToID), 0 when unknown (`aklog -noprdb`).
    pub vice_id: i32,
    pub principal: String,
    pub kvno: u32,
    pub ticket: Vec<u8>,
    pub session_key: [u8; 8],
    pub start: u64,
    pub end: u64,
}

impl std::fmt::Debug for TokenRecord {
    // The ticket and its session key are what a token is: never print them.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenRecord")
            .field("uid", &self.uid)
            .field("cell", &self.cell)
            .field("vice_id", &self.vice_id)
            .field("principal", &self.principal)
            .field("kvno", &self.kvno)
            .field(
                "ticket",
                &format_args!("<redacted, {} bytes>", self.ticket.len()),
            )
            .field("session_key", &format_args!("<redacted>"))
            .field("start", &self.start)
            .field("end", &self.end)
            .finish()
    }
}

/// The one encoding of every record value, shared by both stores and the
/// accounting, so that a memory store holds the very bytes RocksDB would.
pub(crate) fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    // Serialising plain structs of integers and byte vectors cannot fail.
    bincode::serialize(v).unwrap_or_default()
}

pub(crate) fn decode<T: DeserializeOwned>(key: &[u8], v: &[u8]) -> Result<T> {
    bincode::deserialize(v).map_err(|e| Error::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        msg: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_debug_hides_ticket_and_key() {
        let t = TokenRecord {
            uid: 1000,
            cell: "test.lab".into(),
            vice_id: 2,
            principal: "alice@TEST.LAB".into(),
            kvno: 256,
            ticket: vec![0xc3, 0xd4, 0xe5, 0x61],
            session_key: [0xb7; 8],
            start: 1_700_000_000,
            end: 1_700_036_000,
        };
        for s in [format!("{t:?}"), format!("{t:#?}")] {
            // The bytes as Debug would print them, decimal or hex.
            for secret in ["195", "212", "229", "183", "c3", "b7", "[97"] {
                assert!(!s.contains(secret), "{secret} in {s}");
            }
            for shown in [
                "1000",
                "test.lab",
                "alice@TEST.LAB",
                "1700000000",
                "1700036000",
            ] {
                assert!(s.contains(shown), "{shown} not in {s}");
            }
            assert!(s.contains("<redacted, 4 bytes>"), "{s}");
        }
    }
}
