//! Directory blobs come from the fileserver: parsing must never panic or
//! loop, and can yield at most one entry per 32-byte slot.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(entries) = afs_proto::dir::parse_dir(data) {
        assert!(entries.len() <= data.len() / 32);
    }
});
