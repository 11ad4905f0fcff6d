//! Every UDP datagram goes through the Rx packet decoder first.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = rx::packet::decode_packet(data);
});
