//! `may_flush`: the control socket's flush acts only on fids the caller can
//! look up.

mod common;

use afs_proto::types::Fid;
use client::memserver::rights;
use common::{setup, StoreKind, CELL};

const ALICE: u32 = 1000;
const ALICE_ID: i32 = 2;
const MALLORY: u32 = 1001;

fn token(uid: u32, vice_id: i32) -> cache::TokenRecord {
    cache::TokenRecord {
        uid,
        cell: CELL.into(),
        vice_id,
        principal: "alice@MEM.TEST".into(),
        kvno: 256,
        ticket: vec![0x61; 32],
        session_key: [7; 8],
        start: 0,
        end: u64::MAX / 2,
    }
}

/// The fid of an inode, from the `afs.fid` xattr the CLI reads.
async fn fid(c: &client::AfsClient, ino: u64) -> Fid {
    // Read as alice, who may look everything up in these tests.
    let text = c.getxattr(ALICE, ino, "afs.fid").await.unwrap().unwrap();
    let text = String::from_utf8(text).unwrap();
    let v: Vec<u32> = text
        .split(':')
        .map(|p| u32::from_str_radix(p, 16).unwrap())
        .collect();
    Fid::new(v[0], v[1], v[2])
}

#[tokio::test]
async fn only_a_caller_with_the_lookup_right_may_flush() {
    let (cell, clients) = setup(1, StoreKind::Memory, 64);
    let c = &clients[0];
    cell.third_party(|tp| {
        tp.write("secret/plan", b"x");
        // Only alice may look into secret/.
        tp.set_acl("secret", &[(ALICE_ID, rights::ALL)], &[]);
    });
    c.afs.set_token(token(ALICE, ALICE_ID)).unwrap();

    let root = c.resolve(ALICE, "").await.unwrap();
    let dir = c.resolve(ALICE, "secret").await.unwrap();
    let file = c.resolve(ALICE, "secret/plan").await.unwrap();
    let (root, dir, file) = (
        fid(&c.afs, root).await,
        fid(&c.afs, dir).await,
        fid(&c.afs, file).await,
    );

    for f in [root, dir, file] {
        c.afs.may_flush(ALICE, CELL, f).await.unwrap();
    }
    // The root grants everyone everything; secret/ only alice.
    c.afs.may_flush(MALLORY, CELL, root).await.unwrap();
    for f in [dir, file] {
        let e = c.afs.may_flush(MALLORY, CELL, f).await.unwrap_err();
        assert_eq!(e.errno(), libc::EACCES, "{e}");
    }
    // The cell name is matched as CellServDB names are.
    c.afs
        .may_flush(ALICE, &CELL.to_ascii_uppercase(), file)
        .await
        .unwrap();
    // Root administers the cache.
    c.afs.may_flush(0, CELL, file).await.unwrap();
}

#[tokio::test]
async fn an_unknown_fid_is_refused() {
    let (cell, clients) = setup(1, StoreKind::Memory, 64);
    let c = &clients[0];
    cell.third_party(|tp| tp.write("f", b"x"));
    let root = c.resolve(ALICE, "").await.unwrap();
    let root = fid(&c.afs, root).await;
    // Never looked up: not known to the client, for anyone, root included.
    let unknown = Fid::new(root.volume, 1000, 1);
    for uid in [0, ALICE] {
        let e = c.afs.may_flush(uid, CELL, unknown).await.unwrap_err();
        assert_eq!(e.errno(), libc::EACCES);
        let e = c.afs.may_flush(uid, "other.cell", root).await.unwrap_err();
        assert_eq!(e.errno(), libc::EACCES);
    }
}
