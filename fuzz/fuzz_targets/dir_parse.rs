//! Directory blobs come from the fileserver: parsing must never panic or
//! loop, and can yield at most one entry per 32-byte slot.
//!
//! An input whose first byte is even is not taken as a blob: it names a
//! well-formed directory (the next byte: how many entries) built with
//! `build_dir`, then corrupted at the positions the rest of the input names.
//! Random bytes rarely pass the page header checks; this reaches the hash
//! chains, continuation slots and later pages behind them.
#![no_main]

use afs_proto::dir::{build_dir, parse_dir, DirEntry};
use libfuzzer_sys::fuzz_target;

fn built_then_corrupted(input: &[u8]) -> Vec<u8> {
    let (n, rest) = match input.split_first() {
        Some((&n, rest)) => (n as usize, rest),
        None => (0, &[][..]),
    };
    let entries: Vec<DirEntry> = (0..n)
        .map(|i| DirEntry {
            name: format!("e{i}-{}", "x".repeat(i * 7 % 40)).into_bytes(),
            vnode: 2 * i as u32 + 1,
            unique: i as u32,
        })
        .collect();
    let mut blob = build_dir(&entries).unwrap_or_default();
    for flip in rest.chunks_exact(3) {
        if blob.is_empty() {
            break;
        }
        let pos = usize::from(u16::from_be_bytes([flip[0], flip[1]])) * 7 % blob.len();
        blob[pos] ^= flip[2];
    }
    blob
}

fuzz_target!(|data: &[u8]| {
    let blob = match data.split_first() {
        Some((&mode, rest)) if mode & 1 == 0 => built_then_corrupted(rest),
        _ => data.to_vec(),
    };
    if let Ok(entries) = parse_dir(&blob) {
        assert!(entries.len() <= blob.len() / 32);
    }
});
