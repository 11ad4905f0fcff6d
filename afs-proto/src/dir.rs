//! The AFS directory blob format (`src/dir/dir.h`, `src/dir/dir.c`).
//!
//! A directory's contents, as fetched with FetchData, is a sequence of
//! 2 KiB pages, each holding 64 slots ("blobs") of 32 bytes. Slot 0 of
//! every page is a page header (`pgcount`, `tag` = 1234, `freecount`, a
//! 64-bit allocation bitmap). Page 0 additionally holds the directory
//! header in slots 1..=12: `alloMap[128]` (free slots per page) and
//! `hashTable[128]`, the heads of 128 hash chains (big-endian u16 slot
//! numbers, 0 = end). An entry is `flag`, `length`, `next` (u16 slot of
//! the next entry in its chain), the vnode and uniquifier (u32 each), then
//! the NUL-terminated name starting at byte 12 and running on through as
//! many following slots of the same page as needed.

use crate::{Error, Result};

/// Page size.
pub const PAGE_SIZE: usize = 2048;
/// Slot size.
pub const ENTRY_SIZE: usize = 32;
/// Slots per page (`EPP`).
pub const EPP: usize = PAGE_SIZE / ENTRY_SIZE;
/// Hash chains (`NHASHENT`).
pub const NHASHENT: usize = 128;
/// Pages covered by `alloMap` (`MAXPAGES`); [`build_dir`] stays within it.
pub const MAXPAGES: usize = 128;
/// Slots of page 0 taken by the directory header (`DHE`), after the page
/// header.
pub const DHE: usize = 12;
/// Page header `tag` value.
pub const DIR_TAG: u16 = 1234;
/// Entry flag: first slot of an entry (`FFIRST`).
pub const FFIRST: u8 = 1;
/// Longest name [`build_dir`] accepts (`AFSNAMEMAX` - 1).
pub const MAX_NAME_LEN: usize = 255;

const ALLOMAP_OFF: usize = 32;
const HASH_OFF: usize = ALLOMAP_OFF + MAXPAGES;
const HEADER_END: usize = HASH_OFF + 2 * NHASHENT;
const NAME_OFF: usize = 12;

/// One directory entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DirEntry {
    /// Name bytes, without the NUL (AFS names are byte strings).
    pub name: Vec<u8>,
    /// Vnode number (the volume is the directory's).
    pub vnode: u32,
    /// Uniquifier.
    pub unique: u32,
}

/// OpenAFS `DirHash()`: the hash chain (0..128) a name belongs to.
pub fn dir_hash(name: &[u8]) -> usize {
    let mut hval: u32 = 0;
    for &c in name.iter().take_while(|&&c| c != 0) {
        hval = hval.wrapping_mul(173).wrapping_add(u32::from(c));
    }
    let tval = (hval & (NHASHENT as u32 - 1)) as usize;
    if tval == 0 {
        0
    } else if hval >= 1 << 31 {
        NHASHENT - tval
    } else {
        tval
    }
}

fn be16(b: &[u8], off: usize) -> u16 {
    u16::from_be_bytes([b[off], b[off + 1]])
}

fn be32(b: &[u8], off: usize) -> u32 {
    u32::from_be_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

/// Parses a directory blob into its entries, each exactly once, in hash
/// chain order (chain 0 first), including "." and "..".
///
/// Corrupt input never panics or loops: each slot is visited at most once
/// (a chain that revisits a slot or points out of range is cut there),
/// entries pointing into a header slot or whose name runs past the end of
/// the page are skipped. A blob shorter than the directory header or
/// without the `1234` tag is an error.
pub fn parse_dir(blob: &[u8]) -> Result<Vec<DirEntry>> {
    if blob.len() < HEADER_END {
        return Err(Error::Decode(format!(
            "directory blob of {} bytes is shorter than its header",
            blob.len()
        )));
    }
    let tag = be16(blob, 2);
    if tag != DIR_TAG {
        return Err(Error::Decode(format!("bad directory page tag {tag}")));
    }
    // Slot numbers are u16, so at most 65536 slots are addressable.
    let nslots = (blob.len() / ENTRY_SIZE).min(1 << 16);
    let mut visited = vec![false; nslots];
    let mut out = Vec::new();
    for h in 0..NHASHENT {
        let mut slot = usize::from(be16(blob, HASH_OFF + 2 * h));
        while slot != 0 {
            if slot >= nslots || visited[slot] {
                break;
            }
            visited[slot] = true;
            let in_page = slot % EPP;
            if in_page == 0 || slot <= DHE {
                // A page header or the directory header: corrupt chain.
                break;
            }
            let off = slot * ENTRY_SIZE;
            let next = usize::from(be16(blob, off + 2));
            let page_end = ((slot / EPP + 1) * PAGE_SIZE).min(blob.len());
            let name_area = &blob[off + NAME_OFF..page_end];
            if let Some(len) = name_area.iter().position(|&b| b == 0) {
                if len > 0 {
                    out.push(DirEntry {
                        name: name_area[..len].to_vec(),
                        vnode: be32(blob, off + 4),
                        unique: be32(blob, off + 8),
                    });
                }
            }
            slot = next;
        }
    }
    Ok(out)
}

/// Slots needed for a name (`afs_dir_NameBlobs`).
fn name_blobs(len: usize) -> usize {
    1 + (len + 1 + 15) / 32
}

fn new_page(dir: &mut Vec<u8>) {
    let start = dir.len();
    dir.resize(start + PAGE_SIZE, 0);
    dir[start + 2..start + 4].copy_from_slice(&DIR_TAG.to_be_bytes());
    dir[start + 4] = (EPP - 1) as u8;
    dir[start + 5] = 0x01;
}

/// Builds a directory blob holding `entries`, laid out as OpenAFS's
/// `afs_dir_MakeDir` + `afs_dir_Create` would (first-fit slot allocation,
/// new entries at the head of their hash chain). "." and ".." are not
/// added implicitly: pass them in `entries` if wanted.
///
/// Errors: an empty name, a name containing NUL or longer than
/// [`MAX_NAME_LEN`], a duplicate name ([`Error::Invalid`]), or more entries
/// than fit in [`MAXPAGES`] pages ([`Error::TooLong`]).
pub fn build_dir(entries: &[DirEntry]) -> Result<Vec<u8>> {
    let mut dir = Vec::with_capacity(PAGE_SIZE);
    new_page(&mut dir);
    // Directory header: page 0 has 1 + DHE slots in use.
    dir[0..2].copy_from_slice(&1u16.to_be_bytes());
    dir[4] = (EPP - DHE - 1) as u8;
    dir[5] = 0xff;
    dir[6] = 0x1f;
    dir[ALLOMAP_OFF] = (EPP - DHE - 1) as u8;
    for p in 1..MAXPAGES {
        dir[ALLOMAP_OFF + p] = EPP as u8;
    }
    let mut seen = std::collections::HashSet::new();
    for e in entries {
        if e.name.is_empty() || e.name.contains(&0) {
            return Err(Error::Invalid(
                "directory entry name is empty or has a NUL".into(),
            ));
        }
        if e.name.len() > MAX_NAME_LEN {
            return Err(Error::TooLong);
        }
        if !seen.insert(e.name.as_slice()) {
            return Err(Error::Invalid(format!(
                "duplicate directory entry {}",
                String::from_utf8_lossy(&e.name)
            )));
        }
        let n = name_blobs(e.name.len());
        let slot = find_blobs(&mut dir, n).ok_or(Error::TooLong)?;
        let off = slot * ENTRY_SIZE;
        let h = dir_hash(&e.name);
        let head = [dir[HASH_OFF + 2 * h], dir[HASH_OFF + 2 * h + 1]];
        dir[off] = FFIRST;
        dir[off + 1] = 0;
        dir[off + 2..off + 4].copy_from_slice(&head);
        dir[off + 4..off + 8].copy_from_slice(&e.vnode.to_be_bytes());
        dir[off + 8..off + 12].copy_from_slice(&e.unique.to_be_bytes());
        dir[off + NAME_OFF..off + NAME_OFF + e.name.len()].copy_from_slice(&e.name);
        dir[off + NAME_OFF + e.name.len()] = 0;
        dir[HASH_OFF + 2 * h..HASH_OFF + 2 * h + 2].copy_from_slice(&(slot as u16).to_be_bytes());
    }
    Ok(dir)
}

/// OpenAFS `FindBlobs`: first page with `n` consecutive free slots; marks
/// them used and returns the first slot number.
fn find_blobs(dir: &mut Vec<u8>, n: usize) -> Option<usize> {
    for page in 0..MAXPAGES {
        if usize::from(dir[ALLOMAP_OFF + page]) < n {
            continue;
        }
        if page * PAGE_SIZE >= dir.len() {
            new_page(dir);
            dir[ALLOMAP_OFF + page] = (EPP - 1) as u8;
            dir[0..2].copy_from_slice(&(page as u16 + 1).to_be_bytes());
        }
        let base = page * PAGE_SIZE;
        let used = |d: &[u8], s: usize| (d[base + 5 + s / 8] >> (s % 8)) & 1 == 1;
        let start = (0..=EPP - n).find(|&j| (j..j + n).all(|s| !used(dir, s)));
        if let Some(j) = start {
            dir[ALLOMAP_OFF + page] -= n as u8;
            for s in j..j + n {
                dir[base + 5 + s / 8] |= 1 << (s % 8);
            }
            return Some(page * EPP + j);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(name: &str, vnode: u32) -> DirEntry {
        DirEntry {
            name: name.as_bytes().to_vec(),
            vnode,
            unique: vnode + 1,
        }
    }

    #[test]
    fn hash_known_values() {
        assert_eq!(dir_hash(b""), 0);
        assert_eq!(dir_hash(b"."), 46);
        // ".." = 46*173+46 = 8004; 8004 & 127 = 68.
        assert_eq!(dir_hash(b".."), 68);
    }

    #[test]
    fn build_then_parse() {
        let mut entries = vec![e(".", 1), e("..", 1), e("hello.txt", 2)];
        let long = "x".repeat(200);
        entries.push(e(&long, 9));
        let blob = build_dir(&entries).unwrap();
        assert_eq!(blob.len(), PAGE_SIZE);
        let mut got = parse_dir(&blob).unwrap();
        got.sort();
        entries.sort();
        assert_eq!(got, entries);
    }

    #[test]
    fn cyclic_chain_terminates() {
        let mut blob = build_dir(&[e("a", 5)]).unwrap();
        let h = dir_hash(b"a");
        let slot = usize::from(be16(&blob, HASH_OFF + 2 * h));
        // Point the entry at itself.
        blob[slot * 32 + 2..slot * 32 + 4].copy_from_slice(&(slot as u16).to_be_bytes());
        assert_eq!(parse_dir(&blob).unwrap().len(), 1);
    }

    #[test]
    fn rejects_bad_input() {
        assert!(parse_dir(&[0u8; 100]).is_err());
        assert!(parse_dir(&[0u8; 2048]).is_err());
        assert!(build_dir(&[e("a", 1), e("a", 2)]).is_err());
        assert!(build_dir(&[DirEntry {
            name: b"a\0b".to_vec(),
            vnode: 1,
            unique: 1
        }])
        .is_err());
    }
}
