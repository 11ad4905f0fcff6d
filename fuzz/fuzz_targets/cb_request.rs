//! Incoming callback-service requests come from the network: decode must
//! never panic, and whatever decodes must re-encode to a decodable request.
#![no_main]

use afs_proto::cb::CbRequest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = CbRequest::decode(data) {
        let again = CbRequest::decode(&req.encode()).expect("re-encoded request decodes");
        assert_eq!(again, req);
    }
});
