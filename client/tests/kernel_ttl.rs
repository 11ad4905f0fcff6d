//! What the kernel may keep: a name and attributes that every local user
//! may see (system:anyuser may look up in the directory) are kept as long
//! as the callback holds, and dropped from the kernel when the directory
//! or the object changes; anything else is never kept, so every lookup
//! and stat of it comes to the client, which judges the caller's rights.

mod common;

use std::sync::Arc;
use std::time::Duration;

use client::memserver::{rights, MemCell, ANYUSER};
use client::Invalidation;
use common::{client, errno, rt, token, Client, StoreKind, CELL};

const ALICE: u32 = 1000;
const ALICE_ID: i32 = 2;
const NOBODY: u32 = 65534;

/// `pub` lets anyone look up and read; `priv` only alice.
fn cell() -> (Arc<MemCell>, Client) {
    let cell = MemCell::new(CELL);
    cell.add_user("alice", ALICE_ID);
    cell.third_party(|tp| {
        tp.set_acl("", &[(ANYUSER, rights::READ | rights::LOOKUP)], &[]);
        tp.mkdir("pub");
        tp.set_acl(
            "pub",
            &[
                (ANYUSER, rights::READ | rights::LOOKUP),
                (ALICE_ID, rights::ALL),
            ],
            &[],
        );
        tp.write("pub/f", b"public");
        tp.mkdir("pub/d");
        tp.mkdir("priv");
        tp.set_acl("priv", &[(ALICE_ID, rights::ALL)], &[]);
        tp.write("priv/g", b"private");
    });
    let c = client(&cell, StoreKind::Memory, 64);
    c.afs.set_token(token(ALICE, ALICE_ID)).unwrap();
    (cell, c)
}

#[test]
fn only_what_anyone_may_see_is_kept_by_the_kernel() {
    rt().block_on(async {
        let (_cell, c) = cell();
        let pub_dir = c.resolve(ALICE, "pub").await.unwrap();
        let priv_dir = c.resolve(ALICE, "priv").await.unwrap();
        let f = errno(c.afs.lookup(ALICE, pub_dir, b"f").await).unwrap();
        assert!(f.ttl > Duration::from_secs(60), "{:?}", f.ttl);
        let d = errno(c.afs.lookup(ALICE, pub_dir, b"d").await).unwrap();
        assert!(d.ttl > Duration::from_secs(60), "a directory: {:?}", d.ttl);
        let a = errno(c.afs.getattr(ALICE, f.ino).await).unwrap();
        assert_eq!(a.ttl, f.ttl);
        // The owner of a private directory gets nothing kept: the next user
        // to stat the name must come to the client.
        let g = errno(c.afs.lookup(ALICE, priv_dir, b"g").await).unwrap();
        assert_eq!(g.ttl, Duration::ZERO);
        assert_eq!(
            errno(c.afs.getattr(ALICE, g.ino).await).unwrap().ttl,
            Duration::ZERO
        );
        // The private directory itself is named in a public one: anyone
        // may stat it, so that much is kept.
        assert!(errno(c.afs.getattr(ALICE, priv_dir).await).unwrap().ttl > Duration::from_secs(60));
        assert_eq!(
            errno(c.afs.lookup(NOBODY, priv_dir, b"g").await).err(),
            Some(libc::EACCES)
        );
        // A file being written is never kept (its writer sees its length).
        let fh = errno(c.afs.open(ALICE, f.ino, libc::O_WRONLY).await).unwrap();
        errno(c.afs.write(fh, 0, b"longer contents").await).unwrap();
        assert_eq!(
            errno(c.afs.getattr(ALICE, f.ino).await).unwrap().ttl,
            Duration::ZERO
        );
        errno(c.afs.release(fh, None).await).unwrap();
    });
}

#[test]
fn names_kept_long_are_dropped_when_their_directory_changes() {
    rt().block_on(async {
        let (cell, c) = cell();
        let pub_dir = c.resolve(ALICE, "pub").await.unwrap();
        errno(c.afs.lookup(ALICE, pub_dir, b"f").await).unwrap();
        errno(c.afs.lookup(ALICE, pub_dir, b"d").await).unwrap();
        c.take_invalidations().await;
        // Another client removes a name: the directory's callback breaks.
        cell.third_party(|tp| assert!(tp.remove("pub/f")));
        let got = c.take_invalidations().await;
        let entry = |name: &[u8]| Invalidation {
            ino: pub_dir,
            name: Some(name.to_vec()),
        };
        assert!(got.contains(&entry(b"f")), "{got:?}");
        assert!(got.contains(&entry(b"d")), "{got:?}");
        assert!(
            got.contains(&Invalidation {
                ino: pub_dir,
                name: None
            }),
            "{got:?}"
        );
        assert_eq!(
            errno(c.afs.lookup(ALICE, pub_dir, b"f").await).err(),
            Some(libc::ENOENT)
        );
        // A name removed by the daemon itself (a resolution, say) goes too.
        errno(c.afs.lookup(ALICE, pub_dir, b"d").await).unwrap();
        c.take_invalidations().await;
        errno(c.afs.rmdir(ALICE, pub_dir, b"d").await).unwrap();
        let got = c.take_invalidations().await;
        assert!(got.contains(&entry(b"d")), "{got:?}");
    });
}
