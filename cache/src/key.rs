//! Key layout. Every key starts with a one-byte record kind so that each kind
//! occupies its own contiguous range (prefix scans and range deletes).

use std::fmt;

/// Identity of a cached file: cell plus the AFS fid (volume, vnode, uniquifier).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FidKey {
    pub cell: String,
    pub volume: u32,
    pub vnode: u32,
    pub unique: u32,
}

impl FidKey {
    pub fn new(cell: &str, volume: u32, vnode: u32, unique: u32) -> Self {
        FidKey {
            cell: cell.to_string(),
            volume,
            vnode,
            unique,
        }
    }

    /// Encoded as kind, cell length, cell bytes, then the three words big-endian,
    /// so all chunks of one fid sort together and in (dv, index) order.
    pub(crate) fn encode(&self, kind: u8, out: &mut Vec<u8>) {
        out.push(kind);
        let cell = self.cell.as_bytes();
        out.push(cell.len().min(255) as u8);
        out.extend_from_slice(&cell[..cell.len().min(255)]);
        out.extend_from_slice(&self.volume.to_be_bytes());
        out.extend_from_slice(&self.vnode.to_be_bytes());
        out.extend_from_slice(&self.unique.to_be_bytes());
    }
}

impl fmt::Debug for FidKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}.{}.{}",
            self.cell, self.volume, self.vnode, self.unique
        )
    }
}

pub(crate) const KIND_STATUS: u8 = b's';
pub(crate) const KIND_CHUNK: u8 = b'c';
pub(crate) const KIND_DIR: u8 = b'd';
pub(crate) const KIND_META: u8 = b'm';
pub(crate) const KIND_TOKEN: u8 = b't';
/// Usage index of a chunk: same suffix as its chunk key, value a
/// [`crate::usage::ChunkMeta`]. Always written in the batch that writes the chunk.
pub(crate) const KIND_USAGE: u8 = b'u';
/// The client's own records ([`crate::Op::PutRecord`]): kind, space, key.
pub(crate) const KIND_RECORD: u8 = b'o';

pub(crate) fn record_prefix(space: u8) -> Vec<u8> {
    vec![KIND_RECORD, space]
}

pub(crate) fn record_key(space: u8, key: &[u8]) -> Vec<u8> {
    let mut k = record_prefix(space);
    k.extend_from_slice(key);
    k
}

/// Every key of `kind` belonging to one volume of one cell. The fid encoding is
/// kind, cell length, cell, volume (big-endian), ... so this is a prefix and a
/// volume is one contiguous range.
pub(crate) fn volume_prefix(kind: u8, cell: &str, volume: u32) -> Vec<u8> {
    let mut k = Vec::with_capacity(16 + cell.len());
    k.push(kind);
    let cell = cell.as_bytes();
    let n = cell.len().min(255);
    k.push(n as u8);
    k.extend_from_slice(&cell[..n]);
    k.extend_from_slice(&volume.to_be_bytes());
    k
}

/// The usage-index key of a chunk key: same suffix, other kind.
pub(crate) fn usage_key_of(chunk_key: &[u8]) -> Vec<u8> {
    let mut k = chunk_key.to_vec();
    k[0] = KIND_USAGE;
    k
}

/// The chunk key of a usage-index key.
pub(crate) fn chunk_key_of(usage_key: &[u8]) -> Vec<u8> {
    let mut k = usage_key.to_vec();
    k[0] = KIND_CHUNK;
    k
}

pub(crate) fn all_usage_prefix() -> Vec<u8> {
    vec![KIND_USAGE]
}

pub(crate) fn status_key(fid: &FidKey) -> Vec<u8> {
    let mut k = Vec::with_capacity(32);
    fid.encode(KIND_STATUS, &mut k);
    k
}

pub(crate) fn dir_key(fid: &FidKey) -> Vec<u8> {
    let mut k = Vec::with_capacity(32);
    fid.encode(KIND_DIR, &mut k);
    k
}

pub(crate) fn chunk_prefix(fid: &FidKey) -> Vec<u8> {
    let mut k = Vec::with_capacity(48);
    fid.encode(KIND_CHUNK, &mut k);
    k
}

pub(crate) fn chunk_key(fid: &FidKey, dv: u64, index: u64) -> Vec<u8> {
    let mut k = chunk_prefix(fid);
    k.extend_from_slice(&dv.to_be_bytes());
    k.extend_from_slice(&index.to_be_bytes());
    k
}

/// The fid, data version and index of a chunk key: what an op names a
/// chunk by, when the store itself picks chunks (eviction). None for a key
/// no fid encodes to, as when a cell name cut at 255 bytes split a
/// character.
pub(crate) fn parse_chunk_key(key: &[u8]) -> Option<(FidKey, u64, u64)> {
    if key.first() != Some(&KIND_CHUNK) {
        return None;
    }
    let n = *key.get(1)? as usize;
    let cell = std::str::from_utf8(key.get(2..2 + n)?).ok()?;
    let rest = key.get(2 + n..)?;
    if rest.len() != 28 {
        return None;
    }
    let word = |at: usize| u32::from_be_bytes(rest[at..at + 4].try_into().unwrap_or_default());
    let long = |at: usize| u64::from_be_bytes(rest[at..at + 8].try_into().unwrap_or_default());
    let fid = FidKey::new(cell, word(0), word(4), word(8));
    Some((fid, long(12), long(20)))
}

pub(crate) fn meta_key(name: &str) -> Vec<u8> {
    let mut k = vec![KIND_META];
    k.extend_from_slice(name.as_bytes());
    k
}

/// The smallest key greater than every key starting with `prefix`.
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0xff; prefix.len() + 1]
}

/// Tokens sort by uid, then cell.
pub(crate) fn token_prefix(uid: u32) -> Vec<u8> {
    let mut k = vec![KIND_TOKEN];
    k.extend_from_slice(&uid.to_be_bytes());
    k
}

pub(crate) fn token_key(uid: u32, cell: &str) -> Vec<u8> {
    let mut k = token_prefix(uid);
    k.extend_from_slice(cell.as_bytes());
    k
}

pub(crate) fn all_tokens_prefix() -> Vec<u8> {
    vec![KIND_TOKEN]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_keys_parse_back() {
        let fid = FidKey::new("test.lab", 536870915, 0x1234, 7);
        let key = chunk_key(&fid, u64::MAX, 3);
        assert_eq!(parse_chunk_key(&key), Some((fid.clone(), u64::MAX, 3)));
        assert_eq!(parse_chunk_key(&status_key(&fid)), None);
        assert_eq!(parse_chunk_key(&key[..key.len() - 1]), None);
        // A cell cut inside a character encodes no fid.
        let long = format!("{}é", "a".repeat(254));
        assert_eq!(
            parse_chunk_key(&chunk_key(&FidKey::new(&long, 1, 2, 3), 1, 0)),
            None
        );
    }
}
