//! Property tests: round trips, and hostile input never panics.

use afs_proto::cb::CbRequest;
use afs_proto::dir::{build_dir, parse_dir, DirEntry};
use afs_proto::types::{CallBack, FetchStatus, Fid, FileType, InterfaceAddr, Uuid};
use afs_proto::vl::{UVldbEntry, VlServer, VlServerAddr};
use afs_proto::xdr::{self, XdrWriter};
use afs_proto::{cb, fs, pt, vl, Rpc};
use proptest::prelude::*;
use std::net::Ipv4Addr;

fn uuid() -> impl Strategy<Value = Uuid> {
    any::<[u8; 16]>().prop_map(Uuid::from_bytes)
}

fn fid() -> impl Strategy<Value = Fid> {
    (any::<u32>(), any::<u32>(), any::<u32>()).prop_map(|(a, b, c)| Fid::new(a, b, c))
}

fn fetch_status() -> impl Strategy<Value = FetchStatus> {
    (any::<[u32; 17]>(), 0u32..6, any::<u64>(), any::<u64>()).prop_map(|(w, t, length, dv)| {
        FetchStatus {
            interface_version: w[0],
            file_type: FileType::from_u32(t),
            link_count: w[1],
            length,
            data_version: dv,
            author: w[2],
            owner: w[3],
            caller_access: w[4],
            anonymous_access: w[5],
            unix_mode_bits: w[6],
            parent_vnode: w[7],
            parent_unique: w[8],
            residency_mask: w[9],
            client_modtime: w[10],
            server_modtime: w[11],
            group: w[12],
            sync_counter: w[13],
            lock_count: w[14],
            error_code: w[15],
        }
    })
}

fn decode_everything(data: &[u8]) {
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
    let _ = CbRequest::decode(data);
    let _ = parse_dir(data);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn xdr_scalars_round_trip(a in any::<u32>(), b in any::<i32>(), c in any::<u64>()) {
        let mut w = XdrWriter::new();
        w.put_u32(a);
        w.put_i32(b);
        w.put_u64(c);
        let buf = w.into_inner();
        prop_assert_eq!(buf.len(), 16);
        let (r, x) = xdr::u32(&buf).unwrap();
        let (r, y) = xdr::i32(r).unwrap();
        let (r, z) = xdr::u64(r).unwrap();
        prop_assert!(r.is_empty());
        prop_assert_eq!((x, y, z), (a, b, c));
    }

    #[test]
    fn xdr_opaque_and_string_round_trip(data in proptest::collection::vec(any::<u8>(), 0..300),
                                        s in "[^\u{0}]{0,100}") {
        let mut w = XdrWriter::new();
        w.put_opaque(&data);
        w.put_string(&s);
        w.put_u32(7);
        let buf = w.into_inner();
        prop_assert_eq!(buf.len() % 4, 0);
        let (r, d) = xdr::opaque(300)(&buf).unwrap();
        let (r, t) = xdr::string(400)(r).unwrap();
        let (r, tail) = xdr::u32(r).unwrap();
        prop_assert!(r.is_empty());
        prop_assert_eq!(d, data);
        prop_assert_eq!(t, s);
        prop_assert_eq!(tail, 7);
    }

    #[test]
    fn xdr_array_round_trip(v in proptest::collection::vec(any::<u32>(), 0..60)) {
        let mut w = XdrWriter::new();
        w.put_u32(v.len() as u32);
        for x in &v { w.put_u32(*x); }
        let buf = w.into_inner();
        prop_assert_eq!(xdr::array(60, xdr::u32)(&buf).unwrap().1, v.clone());
        prop_assert_eq!(xdr::array(v.len().saturating_sub(1), xdr::u32)(&buf).is_err(), !v.is_empty());
    }

    #[test]
    fn fetch_status_round_trip(s in fetch_status(), cb in any::<[u32; 3]>()) {
        let mut w = XdrWriter::new();
        s.encode(&mut w);
        CallBack { version: cb[0], expiration_time: cb[1], callback_type: cb[2] }.encode(&mut w);
        afs_proto::types::VolSync::default().encode(&mut w);
        let r = fs::FetchStatus::decode_reply(&w.into_inner()).unwrap();
        prop_assert_eq!(r.status, s);
        prop_assert_eq!(r.callback.expiration_time, cb[1]);
    }

    #[test]
    fn fetch_data64_round_trip(data in proptest::collection::vec(any::<u8>(), 0..100), s in fetch_status()) {
        let mut w = XdrWriter::new();
        w.put_u64(data.len() as u64);
        w.put_raw(&data);
        s.encode(&mut w);
        CallBack::default().encode(&mut w);
        afs_proto::types::VolSync::default().encode(&mut w);
        let r = fs::FetchData64::decode_reply(&w.into_inner()).unwrap();
        prop_assert_eq!(r.data, data);
        prop_assert_eq!(r.status, s);
    }

    #[test]
    fn uuid_round_trip(u in uuid()) {
        prop_assert_eq!(Uuid::from_bytes(u.to_bytes()), u);
        let mut w = XdrWriter::new();
        u.encode(&mut w);
        let b = w.into_inner();
        prop_assert_eq!(b.len(), Uuid::WIRE_SIZE);
        prop_assert_eq!(Uuid::decode(&b).unwrap().1, u);
        prop_assert_eq!(u.to_string().len(), 36 + 1);
    }

    #[test]
    fn uvldb_entry_round_trip(name in "[a-z.]{1,64}", ids in any::<[u32; 3]>(),
                              sites in proptest::collection::vec((uuid(), any::<u32>(), any::<bool>(), 0u32..0x40), 0..=13)) {
        let servers: Vec<VlServer> = sites.iter().map(|(u, ip, is_uuid, flags)| VlServer {
            addr: if *is_uuid { VlServerAddr::Uuid(*u) } else { VlServerAddr::Ipv4(Ipv4Addr::from(*ip)) },
            unique: 0,
            partition: *ip % 26,
            flags: (flags & !vl::VLSF_UUID) | if *is_uuid { vl::VLSF_UUID } else { 0 },
        }).collect();
        let e = UVldbEntry { name, n_servers: servers.len() as u32, servers, volume_ids: ids, clone_id: 0, flags: vl::VLF_RWEXISTS };
        let mut w = XdrWriter::new();
        e.encode(&mut w);
        let b = w.into_inner();
        prop_assert_eq!(b.len(), 1048);
        prop_assert_eq!(vl::GetEntryByNameU::decode_reply(&b).unwrap(), e);
    }

    #[test]
    fn cb_request_round_trip(fids in proptest::collection::vec(fid(), 0..=50), u in uuid(), op in 0u32..70000) {
        let reqs = [
            CbRequest::CallBack { fids: fids.clone(), callbacks: vec![] },
            CbRequest::InitCallBackState,
            CbRequest::InitCallBackState3 { server_uuid: u },
            CbRequest::Probe,
            CbRequest::ProbeUuid { client_uuid: u },
            CbRequest::WhoAreYou,
            CbRequest::TellMeAboutYourself,
        ];
        for r in reqs {
            prop_assert_eq!(CbRequest::decode(&r.encode()).unwrap(), r);
        }
        let known = [204, 205, 206, 212, 213, 214, 65538];
        if !known.contains(&op) {
            prop_assert_eq!(CbRequest::decode(&op.to_be_bytes()).unwrap(), CbRequest::Unknown(op));
        }
    }

    #[test]
    fn interface_addr_round_trip(u in uuid(), addrs in proptest::collection::vec((any::<u32>(), any::<u32>(), any::<u32>()), 0..=32)) {
        let list: Vec<_> = addrs.iter().map(|(a, m, t)| (Ipv4Addr::from(*a), Ipv4Addr::from(*m), *t)).collect();
        let ia = InterfaceAddr::new(u, &list);
        prop_assert_eq!(ia.addrs().len(), list.len());
        let b = cb::encode_tell_me_about_yourself_reply(&ia, &[cb::CLIENT_CAPABILITY_ERRORTRANS]);
        let (ia2, caps) = cb::decode_tell_me_about_yourself_reply(&b).unwrap();
        prop_assert_eq!(ia2, ia.clone());
        prop_assert_eq!(caps, vec![1]);
        prop_assert_eq!(InterfaceAddr::decode(&cb::encode_who_are_you_reply(&ia)).unwrap().1, ia);
    }

    #[test]
    fn dir_round_trip(names in proptest::collection::btree_set(proptest::collection::vec(1u8..=255, 1..=255), 0..400),
                      seed in any::<u32>()) {
        let mut entries: Vec<DirEntry> = names.into_iter().enumerate().map(|(i, name)| DirEntry {
            name, vnode: seed.wrapping_add(i as u32), unique: i as u32,
        }).collect();
        match build_dir(&entries) {
            Ok(blob) => {
                prop_assert_eq!(blob.len() % 2048, 0);
                let mut got = parse_dir(&blob).unwrap();
                got.sort();
                entries.sort();
                prop_assert_eq!(got, entries);
            }
            // Only when more than 128 pages would be needed.
            Err(e) => prop_assert_eq!(e, afs_proto::Error::TooLong),
        }
    }

    #[test]
    fn dir_hash_in_range(name in proptest::collection::vec(any::<u8>(), 0..300)) {
        prop_assert!(afs_proto::dir::dir_hash(&name) < 128);
    }

    #[test]
    fn hostile_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
        decode_everything(&data);
    }

    #[test]
    fn hostile_words_never_panic(words in proptest::collection::vec(prop_oneof![Just(0u32), Just(1), Just(50), Just(0xffff_ffff), Just(0x8000_0000), any::<u32>()], 0..400)) {
        let data: Vec<u8> = words.iter().flat_map(|w| w.to_be_bytes()).collect();
        decode_everything(&data);
    }

    #[test]
    fn corrupted_dir_never_panics(names in proptest::collection::btree_set("[a-z]{1,40}", 1..150),
                                  flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..64)) {
        let entries: Vec<DirEntry> = names.into_iter().map(|n| DirEntry { name: n.into_bytes(), vnode: 1, unique: 1 }).collect();
        let mut blob = build_dir(&entries).unwrap();
        for (i, b) in flips {
            let k = i.index(blob.len());
            blob[k] = b;
        }
        if let Ok(got) = parse_dir(&blob) {
            prop_assert!(got.len() <= blob.len() / 32);
        }
    }
}

#[test]
fn inline_bulk_status_limit() {
    let fids = vec![Fid::new(1, 1, 1); 51];
    assert_eq!(
        fs::InlineBulkStatus::new(fids).unwrap_err(),
        afs_proto::Error::TooLong
    );
    let ok = fs::InlineBulkStatus::new(vec![Fid::new(1, 2, 3); 50]).unwrap();
    assert_eq!(afs_proto::encode_request(&ok).len(), 4 + 4 + 50 * 12);
}

#[test]
fn inline_bulk_status_per_entry_errors() {
    let mut w = XdrWriter::new();
    let st = |err| FetchStatus {
        interface_version: 1,
        file_type: FileType::File,
        link_count: 1,
        length: 5,
        data_version: 1,
        author: 0,
        owner: 0,
        caller_access: 0,
        anonymous_access: 0,
        unix_mode_bits: 0o644,
        parent_vnode: 1,
        parent_unique: 1,
        residency_mask: 0,
        client_modtime: 0,
        server_modtime: 0,
        group: 0,
        sync_counter: 0,
        lock_count: 0,
        error_code: err,
    };
    w.put_u32(2);
    st(0).encode(&mut w);
    st(afs_proto::errors::VNOVNODE as u32).encode(&mut w);
    w.put_u32(2);
    CallBack::default().encode(&mut w);
    CallBack::default().encode(&mut w);
    afs_proto::types::VolSync::default().encode(&mut w);
    let r = fs::InlineBulkStatus::decode_reply(&w.into_inner()).unwrap();
    assert_eq!(r.entries.len(), 2);
    assert_eq!(r.entries[1].status.error_code, 102);
}

#[test]
fn get_volume_status_reply() {
    let mut w = XdrWriter::new();
    for v in [
        536870915u32,
        536870915,
        1,
        1,
        1,
        0,
        1,
        0,
        5000,
        1234,
        99999,
        200000,
    ] {
        w.put_u32(v);
    }
    w.put_string("root.cell");
    w.put_string("");
    w.put_string("hi");
    let r = fs::GetVolumeStatus::decode_reply(&w.into_inner()).unwrap();
    assert_eq!(r.name, "root.cell");
    assert!(r.online && r.in_service && r.blessed && !r.needs_salvage);
    assert_eq!(
        (r.max_quota, r.blocks_in_use, r.part_max_blocks),
        (5000, 1234, 200000)
    );
    assert_eq!(r.motd, "hi");
}

#[test]
fn pt_name_to_id_and_back() {
    let req = afs_proto::encode_request(&pt::NameToId {
        names: vec!["alice".into(), "admin".into()],
    });
    // opcode, count, 2 x 64 words
    assert_eq!(req.len(), 4 + 4 + 2 * 256);
    assert_eq!(&req[8..12], &[0, 0, 0, b'a']);
    assert_eq!(
        pt::NameToId::decode_reply(&[0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 1]).unwrap(),
        vec![2, 1]
    );
    let mut w = XdrWriter::new();
    w.put_u32(2);
    w.put_char_vector(b"alice", 64);
    w.put_char_vector(b"system:anyuser", 64);
    assert_eq!(
        pt::IdToName::decode_reply(&w.into_inner()).unwrap(),
        vec!["alice".to_string(), "system:anyuser".to_string()]
    );
}

#[test]
fn uuid_display_and_random() {
    let u = Uuid::random([0xab; 16]);
    assert_eq!(u.to_bytes()[6] >> 4, 4);
    assert_eq!(u.to_bytes()[8] & 0xc0, 0x80);
    assert_eq!(
        Uuid::from_bytes([0x11; 16]).to_string(),
        "11111111-1111-1111-11-11-111111111111"
    );
}
