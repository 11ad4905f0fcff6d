//! rxkad CHALLENGE / RESPONSE body decoders must never panic, and a
//! decoded RESPONSE must re-encode to the bytes it came from (minus any
//! trailing bytes after the ticket).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = rx::rxkad::decode_challenge(data) {
        if c.version != 0 {
            let again = rx::rxkad::decode_challenge(&c.encode()).unwrap();
            assert_eq!(again, c);
        }
    }
    if let Ok(r) = rx::rxkad::decode_response(data) {
        let enc = r.encode();
        assert_eq!(&enc[..], &data[..enc.len()]);
        // Decrypting with any key must not panic either.
        let mut key = [0u8; 8];
        key.copy_from_slice(&data[8..16]);
        let s = r.decrypt(&key);
        let _ = r.checksum_ok(&s);
    }
});
