//! Feeds arbitrary bytes into every RPC reply decoder of afs-proto.
#![no_main]

use afs_proto::{cb, fs, pt, vl, Rpc};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = vl::GetEntryByNameU::decode_reply(data);
    let _ = vl::GetAddrsU::decode_reply(data);
    let _ = vl::ProbeServer::decode_reply(data);
    let _ = fs::FetchStatus::decode_reply(data);
    let _ = fs::FetchData::decode_reply(data);
    let _ = fs::FetchData64::decode_reply(data);
    let _ = fs::InlineBulkStatus::decode_reply(data);
    let _ = fs::GetVolumeStatus::decode_reply(data);
    let _ = fs::GetCapabilities::decode_reply(data);
    let _ = fs::GiveUpAllCallBacks::decode_reply(data);
    let _ = fs::GiveUpCallBacks::decode_reply(data);
    let _ = fs::FetchAcl::decode_reply(data);
    let _ = fs::StoreAcl::decode_reply(data);
    let _ = fs::StoreStatus::decode_reply(data);
    let _ = fs::StoreData64::decode_reply(data);
    let _ = fs::CreateFile::decode_reply(data);
    let _ = fs::MakeDir::decode_reply(data);
    let _ = fs::RemoveFile::decode_reply(data);
    let _ = fs::RemoveDir::decode_reply(data);
    let _ = fs::Rename::decode_reply(data);
    let _ = fs::Symlink::decode_reply(data);
    let _ = fs::Link::decode_reply(data);
    let _ = fs::SetLock::decode_reply(data);
    let _ = fs::ExtendLock::decode_reply(data);
    let _ = fs::ReleaseLock::decode_reply(data);
    let _ = pt::NameToId::decode_reply(data);
    let _ = pt::IdToName::decode_reply(data);
    let _ = cb::decode_tell_me_about_yourself_reply(data);
});
