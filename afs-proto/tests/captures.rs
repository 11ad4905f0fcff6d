//! Decoding of real OpenAFS 1.8.9 traffic (see `tests/data/extract.py`).

mod common;

use std::net::Ipv4Addr;

use afs_proto::cb::CbRequest;
use afs_proto::dir::parse_dir;
use afs_proto::fs::{self, FS_PORT};
use afs_proto::types::{Fid, FileType};
use afs_proto::vl::{self, VlServerAddr, VL_PORT};
use afs_proto::xdr;
use afs_proto::{encode_request, Rpc};
use common::{calls, find};

const SERVER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const ROOT_AFS: u32 = 536870912;
const ROOT_CELL: u32 = 536870915;
const HELLO: Fid = Fid::new(ROOT_CELL, 2, 3);

fn request_name(args: &[u8]) -> String {
    xdr::string(65)(args).unwrap().1
}

#[test]
fn vl_get_entry_by_name_u_reply() {
    let all = calls("anon-read-first.pcap");
    let lookups = find(&all, Some(VL_PORT), vl::GetEntryByNameU::OPCODE);
    assert!(lookups.len() >= 2);
    let mut seen = Vec::new();
    for c in &lookups {
        let name = request_name(c.args());
        // Our encoder produces the same request bytes as afsio.
        assert_eq!(
            encode_request(&vl::GetEntryByNameU { name: name.clone() }),
            c.request
        );
        let e = vl::GetEntryByNameU::decode_reply(&c.reply).unwrap();
        eprintln!("{name}: {e:?}");
        assert_eq!(e.name, name);
        let want = match name.as_str() {
            "root.afs" => ROOT_AFS,
            "root.cell" => ROOT_CELL,
            other => panic!("unexpected volume {other}"),
        };
        assert_eq!(e.rw_id(), want);
        assert_eq!(e.servers.len(), 1);
        assert_eq!(e.rw_sites().count(), 1);
        assert_eq!(e.ro_sites().count(), 0, "the lab has no RO clones");
        assert_ne!(e.flags & vl::VLF_RWEXISTS, 0);
        assert!(matches!(e.servers[0].addr, VlServerAddr::Uuid(_)));
        seen.push(name);
    }
    assert!(seen.iter().any(|n| n == "root.cell"));
}

#[test]
fn vl_get_addrs_u_reply() {
    let all = calls("anon-read-first.pcap");
    let entry = find(&all, Some(VL_PORT), vl::GetEntryByNameU::OPCODE)[0].clone();
    let e = vl::GetEntryByNameU::decode_reply(&entry.reply).unwrap();
    let VlServerAddr::Uuid(uuid) = e.servers[0].addr else {
        panic!("expected a UUID slot")
    };
    let c = &find(&all, Some(VL_PORT), vl::GetAddrsU::OPCODE)[0];
    assert_eq!(encode_request(&vl::GetAddrsU { uuid }), c.request);
    let r = vl::GetAddrsU::decode_reply(&c.reply).unwrap();
    eprintln!("{uuid} {r:?}");
    assert_eq!(r.uuid, uuid);
    assert_eq!(r.addrs, vec![SERVER]);
}

#[test]
fn fs_fetch_status_reply() {
    let all = calls("anon-read-first.pcap");
    let fss = find(&all, Some(FS_PORT), fs::FetchStatus::OPCODE);
    assert!(!fss.is_empty());
    let mut hello_seen = false;
    for c in &fss {
        let fid = Fid::decode(c.args()).unwrap().1;
        assert_eq!(encode_request(&fs::FetchStatus { fid }), c.request);
        let r = fs::FetchStatus::decode_reply(&c.reply).unwrap();
        eprintln!("{fid}: {r:?}");
        assert_eq!(r.status.interface_version, 1);
        assert_eq!(r.status.error_code, 0);
        assert!(r.callback.expiration_time > 0);
        assert!(r.volsync.creation_date > 0);
        if fid == HELLO {
            hello_seen = true;
            assert_eq!(r.status.file_type, FileType::File);
            assert_eq!(r.status.length, 24);
            assert_eq!(r.status.parent_vnode, 1);
            assert_eq!(r.status.parent_unique, 1);
            assert_eq!(r.status.link_count, 1);
        }
        if fid.vnode == 1 {
            assert_eq!(r.status.file_type, FileType::Directory);
        }
    }
    assert!(hello_seen);
}

#[test]
fn fs_fetch_data_reply_hello() {
    let all = calls("anon-read-first.pcap");
    let fds = find(&all, Some(FS_PORT), fs::FetchData::OPCODE);
    let c = fds
        .iter()
        .find(|c| Fid::decode(c.args()).unwrap().1 == HELLO)
        .expect("FetchData of hello.txt");
    let r = fs::FetchData::decode_reply(&c.reply).unwrap();
    assert_eq!(r.data, b"hello from the lab cell\n");
    assert_eq!(r.status.length, 24);
    assert_eq!(r.status.file_type, FileType::File);
    // Same call re-encoded.
    let args = &c.args()[12..];
    let pos = xdr::i32(args).unwrap().1;
    let length = xdr::i32(&args[4..]).unwrap().1;
    assert_eq!(
        encode_request(&fs::FetchData {
            fid: HELLO,
            pos,
            length
        }),
        c.request
    );
    // A truncated reply is an error, never a panic.
    for cut in 0..c.reply.len() {
        assert!(fs::FetchData::decode_reply(&c.reply[..cut]).is_err());
    }
}

#[test]
fn fetch_data64_reply_layout() {
    // FetchData64 differs from FetchData only in its 64-bit length prefix:
    // rebuild one from the captured FetchData reply.
    let all = calls("anon-read-first.pcap");
    let c = find(&all, Some(FS_PORT), fs::FetchData::OPCODE)
        .into_iter()
        .find(|c| Fid::decode(c.args()).unwrap().1 == HELLO)
        .unwrap();
    let mut reply64 = vec![0, 0, 0, 0];
    reply64.extend_from_slice(&c.reply);
    let r = fs::FetchData64::decode_reply(&reply64).unwrap();
    assert_eq!(r.data, b"hello from the lab cell\n");
    assert_eq!(r, fs::FetchData::decode_reply(&c.reply).unwrap());
}

#[test]
fn root_dirs_parse() {
    let all = calls("anon-read-first.pcap");
    let mut dirs = 0;
    for c in find(&all, Some(FS_PORT), fs::FetchData::OPCODE) {
        let fid = Fid::decode(c.args()).unwrap().1;
        let r = fs::FetchData::decode_reply(&c.reply).unwrap();
        if r.status.file_type != FileType::Directory {
            continue;
        }
        dirs += 1;
        let entries = parse_dir(&r.data).unwrap();
        eprintln!(
            "{fid}: {:?}",
            entries
                .iter()
                .map(|e| String::from_utf8_lossy(&e.name))
                .collect::<Vec<_>>()
        );
        let dot = entries.iter().find(|e| e.name == b".").unwrap();
        assert_eq!((dot.vnode, dot.unique), (fid.vnode, fid.unique));
        assert!(entries.iter().any(|e| e.name == b".."));
        if fid.volume == ROOT_CELL && fid.vnode == 1 {
            let h = entries.iter().find(|e| e.name == b"hello.txt").unwrap();
            assert_eq!((h.vnode, h.unique), (HELLO.vnode, HELLO.unique));
        }
    }
    assert_eq!(dirs, 2, "root.afs and root.cell root directories");
}

#[test]
fn dir200_blob_from_anon_dir() {
    let all = calls("anon-dir.pcap");
    let c = find(&all, Some(FS_PORT), fs::FetchData::OPCODE)
        .into_iter()
        .max_by_key(|c| c.reply.len())
        .unwrap();
    assert_eq!(c.reply_packets, 11);
    let r = fs::FetchData::decode_reply(&c.reply).unwrap();
    assert_eq!(r.data.len(), 14336);
    assert_eq!(r.status.length, 14336);
    assert_eq!(r.status.file_type, FileType::Directory);
    let entries = parse_dir(&r.data).unwrap();
    assert_eq!(entries.len(), 202);
    let mut names: Vec<String> = entries
        .iter()
        .map(|e| String::from_utf8(e.name.clone()).unwrap())
        .collect();
    names.sort();
    let mut want: Vec<String> = (1..=200)
        .map(|i| format!("file-{i:03}-with-a-longer-name.txt"))
        .collect();
    want.push(".".into());
    want.push("..".into());
    want.sort();
    assert_eq!(names, want);
    let fid = Fid::decode(c.args()).unwrap().1;
    let dot = entries.iter().find(|e| e.name == b".").unwrap();
    assert_eq!((dot.vnode, dot.unique), (fid.vnode, fid.unique));
    // The server created ".", "..", then file-001..file-200 in order; our
    // builder (same DirHash, same first-fit allocation, chain-head insert)
    // must reproduce the server's blob byte for byte.
    let by_name = |n: &str| {
        entries
            .iter()
            .find(|e| e.name == n.as_bytes())
            .unwrap()
            .clone()
    };
    let mut in_order = vec![by_name("."), by_name("..")];
    in_order.extend((1..=200).map(|i| by_name(&format!("file-{i:03}-with-a-longer-name.txt"))));
    let rebuilt = afs_proto::dir::build_dir(&in_order).unwrap();
    assert_eq!(rebuilt.len(), r.data.len());
    let diff: Vec<usize> = (0..rebuilt.len())
        .filter(|&i| rebuilt[i] != r.data[i])
        .collect();
    assert!(
        diff.is_empty(),
        "{} bytes differ, first at {:?}",
        diff.len(),
        diff.first()
    );
}

#[test]
fn cb_tell_me_about_yourself_and_init_callback_state3() {
    for file in [
        "anon-read-first.pcap",
        "anon-dir.pcap",
        "callback-break-cb.pcap",
    ] {
        let all = calls(file);
        let tmay = find(&all, None, 65538)
            .into_iter()
            .find(|c| c.server_port != FS_PORT)
            .unwrap();
        assert_eq!(
            CbRequest::decode(&tmay.request).unwrap(),
            CbRequest::TellMeAboutYourself
        );
        // The client's reply decodes and re-encodes bit-exactly.
        let (ia, caps) = afs_proto::cb::decode_tell_me_about_yourself_reply(&tmay.reply).unwrap();
        eprintln!("{file}: {ia:?} {caps:?}");
        assert_eq!(
            afs_proto::cb::encode_tell_me_about_yourself_reply(&ia, &caps),
            tmay.reply
        );
        assert_eq!(caps, vec![afs_proto::cb::CLIENT_CAPABILITY_ERRORTRANS]);
        assert!(ia.number_of_interfaces >= 1);
        let icbs3 = find(&all, None, 213)[0].clone();
        match CbRequest::decode(&icbs3.request).unwrap() {
            CbRequest::InitCallBackState3 { server_uuid } => {
                assert!(!server_uuid.is_nil());
                assert_eq!(
                    CbRequest::InitCallBackState3 { server_uuid }.encode(),
                    icbs3.request
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(icbs3.reply.is_empty());
    }
}

#[test]
fn cb_callback_break_request() {
    let all = calls("callback-break-cb.pcap");
    let c = find(&all, None, 204)[0].clone();
    let req = CbRequest::decode(&c.request).unwrap();
    eprintln!("{req:?}");
    match &req {
        CbRequest::CallBack { fids, callbacks } => {
            assert_eq!(fids, &vec![Fid::new(ROOT_CELL, 414, 212)]);
            assert!(callbacks.len() <= fids.len());
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(req.encode(), c.request);
    assert!(c.reply.is_empty());
}

/// Re-encodes a captured request from its decoded arguments.
fn name_args(args: &[u8]) -> (Fid, String, &[u8]) {
    let (rest, dir) = Fid::decode(args).unwrap();
    let (rest, name) = xdr::string(256)(rest).unwrap();
    (dir, name, rest)
}

fn store_status(b: &[u8]) -> (afs_proto::types::StoreStatus, &[u8]) {
    let (rest, s) = afs_proto::types::StoreStatus::decode(b).unwrap();
    (s, rest)
}

#[test]
fn fs_write_ops_from_anon_write() {
    let all = calls("anon-write-ops.pcap");
    // CreateFile (137)
    let c = &find(&all, Some(FS_PORT), fs::CreateFile::OPCODE)[0];
    let (dir, name, rest) = name_args(c.args());
    let (status, _) = store_status(rest);
    assert_eq!(name, "w200k.bin");
    let req = fs::CreateFile { dir, name, status };
    assert_eq!(encode_request(&req), c.request);
    let r = fs::CreateFile::decode_reply(&c.reply).unwrap();
    eprintln!("{r:?}");
    assert_eq!(r.fid.volume, ROOT_CELL);
    assert_eq!(r.status.file_type, FileType::File);
    assert_eq!(r.status.length, 0);
    assert_eq!(r.dir_status.file_type, FileType::Directory);
    assert_eq!(
        (r.status.parent_vnode, r.status.parent_unique),
        (dir.vnode, dir.unique)
    );
    let new_fid = r.fid;

    // StoreData64 (65538): only the first request packet was kept, so
    // compare the argument prefix; then the reply.
    let c = &find(&all, Some(FS_PORT), fs::StoreData64::OPCODE)[0];
    let req = fs::StoreData64 {
        fid: new_fid,
        status: store_status(&c.args()[12..]).0,
        pos: 0,
        length: 204800,
        file_length: 204800,
    };
    let enc = encode_request(&req);
    assert_eq!(&c.request[..enc.len()], &enc[..]);
    let r = fs::StoreData64::decode_reply(&c.reply).unwrap();
    assert_eq!(r.status.length, 204800);
    assert_eq!(r.status.file_type, FileType::File);

    // MakeDir (141)
    let c = &find(&all, Some(FS_PORT), fs::MakeDir::OPCODE)[0];
    let (dir, name, rest) = name_args(c.args());
    assert_eq!(name, "newdir");
    let status = store_status(rest).0;
    assert_eq!(
        encode_request(&fs::MakeDir { dir, name, status }),
        c.request
    );
    let r = fs::MakeDir::decode_reply(&c.reply).unwrap();
    assert_eq!(r.status.file_type, FileType::Directory);
    assert_eq!(r.status.length, 2048);

    // Symlink (139)
    let c = &find(&all, Some(FS_PORT), fs::Symlink::OPCODE)[0];
    let (dir, name, rest) = name_args(c.args());
    let (rest, target) = xdr::string(1024)(rest).unwrap();
    assert_eq!((name.as_str(), target.as_str()), ("newlink", "w200k.bin"));
    let status = store_status(rest).0;
    let req = fs::Symlink {
        dir,
        name,
        target,
        status,
    };
    assert_eq!(encode_request(&req), c.request);
    let r = fs::Symlink::decode_reply(&c.reply).unwrap();
    assert_eq!(r.status.file_type, FileType::Symlink);
    assert_eq!(r.status.length, 9);

    // RemoveFile (136) and RemoveDir (142): reply is the directory's status.
    for (op, want) in [
        (fs::RemoveFile::OPCODE, "newlink"),
        (fs::RemoveDir::OPCODE, "newdir"),
    ] {
        let c = &find(&all, Some(FS_PORT), op)[0];
        let (dir, name, _) = name_args(c.args());
        assert_eq!(name, want);
        let (enc, r) = if op == fs::RemoveFile::OPCODE {
            (
                encode_request(&fs::RemoveFile { dir, name }),
                fs::RemoveFile::decode_reply(&c.reply).unwrap(),
            )
        } else {
            (
                encode_request(&fs::RemoveDir { dir, name }),
                fs::RemoveDir::decode_reply(&c.reply).unwrap(),
            )
        };
        assert_eq!(enc, c.request);
        assert_eq!(r.status.file_type, FileType::Directory);
    }
}

#[test]
fn trailing_bytes_are_tolerated() {
    let all = calls("anon-read-first.pcap");
    let c = &find(&all, Some(FS_PORT), fs::FetchStatus::OPCODE)[0];
    let mut padded = c.reply.clone();
    padded.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef, 1, 2, 3]);
    assert_eq!(
        fs::FetchStatus::decode_reply(&padded).unwrap(),
        fs::FetchStatus::decode_reply(&c.reply).unwrap()
    );
}
