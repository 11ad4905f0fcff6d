//! Rights judged by the client, over the in-memory fileserver: refusals
//! come at once, before anything changes locally, and a store the server
//! refuses drops the changes for everyone.

mod common;

use std::sync::Arc;

use client::memserver::{rights, MemCell, ANYUSER};
use common::{client, errno, rt, token, Client, StoreKind, CELL};

const ALICE: u32 = 1000;
const ALICE_ID: i32 = 2;
const NOBODY: u32 = 65534;

/// A cell where `shared` grants system:anyuser `rl` and alice everything,
/// with `shared/hello.txt` owned by alice.
fn cell_with_alice() -> (Arc<MemCell>, Client) {
    let cell = MemCell::new(CELL);
    cell.add_user("alice", ALICE_ID);
    cell.third_party(|tp| {
        tp.set_acl("", &[(ANYUSER, rights::READ | rights::LOOKUP)], &[]);
        tp.mkdir("shared");
        tp.set_acl(
            "shared",
            &[
                (ANYUSER, rights::READ | rights::LOOKUP),
                (ALICE_ID, rights::ALL),
            ],
            &[],
        );
    });
    let c = client(&cell, StoreKind::Memory, 64);
    c.afs.set_token(token(ALICE, ALICE_ID)).unwrap();
    (cell, c)
}

#[test]
fn every_change_is_refused_at_once_where_the_acl_says_so() {
    rt().block_on(async {
        let (cell, c) = cell_with_alice();
        c.write_file(ALICE, "shared/hello.txt", b"hello\n")
            .await
            .unwrap();
        c.mkdir(ALICE, "shared/sub").await.unwrap();
        let calls_before = cell.calls("RXAFS_StoreData64");
        let eacces = Err(libc::EACCES);
        assert_eq!(
            c.write_file(NOBODY, "shared/hello.txt", b"evil").await,
            eacces
        );
        assert_eq!(
            c.write_file(NOBODY, "shared/new.txt", b"evil").await,
            eacces
        );
        assert_eq!(c.mkdir(NOBODY, "shared/d").await, eacces);
        assert_eq!(c.unlink(NOBODY, "shared/hello.txt").await, eacces);
        assert_eq!(c.rmdir(NOBODY, "shared/sub").await, eacces);
        assert_eq!(
            c.rename(NOBODY, "shared/hello.txt", "shared/x").await,
            eacces
        );
        let ino = c.resolve(NOBODY, "shared/hello.txt").await.unwrap();
        let trunc = client::SetAttrs {
            size: Some(0),
            ..Default::default()
        };
        assert_eq!(
            errno(c.afs.setattr(NOBODY, ino, trunc).await).map(|_| ()),
            eacces
        );
        let chmod = client::SetAttrs {
            mode: Some(0o666),
            ..Default::default()
        };
        assert_eq!(
            errno(c.afs.setattr(NOBODY, ino, chmod).await).map(|_| ()),
            eacces
        );
        assert_eq!(errno(c.afs.access(NOBODY, ino, libc::W_OK).await), eacces);
        assert_eq!(errno(c.afs.access(NOBODY, ino, libc::R_OK).await), Ok(()));
        let dir = c.resolve(NOBODY, "shared").await.unwrap();
        assert_eq!(
            errno(
                c.afs
                    .set_acl(NOBODY, dir, b"1\n0\nsystem:anyuser 127\n")
                    .await
            ),
            eacces
        );
        assert_eq!(
            errno(c.afs.setlk(NOBODY, ino, 1, libc::F_WRLCK, false, 0).await),
            eacces
        );
        // Nothing reached the server, and everyone reads the original.
        assert_eq!(cell.calls("RXAFS_StoreData64"), calls_before);
        assert_eq!(
            cell.third_party(|tp| tp.read("shared/hello.txt")),
            Some(b"hello\n".to_vec())
        );
        for uid in [0, NOBODY, ALICE] {
            assert_eq!(
                c.read_file(uid, "shared/hello.txt").await,
                Ok(b"hello\n".to_vec())
            );
        }
        let names: Vec<String> = c
            .tree(0, "shared")
            .await
            .unwrap()
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        assert_eq!(names, vec!["shared/hello.txt", "shared/sub"]);
    });
}

#[test]
fn owner_mode_bits_bind_everyone_including_the_owner() {
    rt().block_on(async {
        let (_cell, c) = cell_with_alice();
        c.write_file(ALICE, "shared/locked.txt", b"data")
            .await
            .unwrap();
        let ino = c.resolve(ALICE, "shared/locked.txt").await.unwrap();
        let chmod = client::SetAttrs {
            mode: Some(0o077),
            ..Default::default()
        };
        c.afs.setattr(ALICE, ino, chmod).await.unwrap();
        for uid in [ALICE, NOBODY] {
            for flags in [libc::O_RDONLY, libc::O_RDWR, libc::O_WRONLY] {
                assert_eq!(
                    errno(c.afs.open(uid, ino, flags).await).map(|_| ()),
                    Err(libc::EACCES),
                    "uid {uid} flags {flags}"
                );
            }
        }
        // The owner may still change the mode back (`a` on her file).
        let chmod = client::SetAttrs {
            mode: Some(0o644),
            ..Default::default()
        };
        c.afs.setattr(ALICE, ino, chmod).await.unwrap();
        assert_eq!(
            c.read_file(ALICE, "shared/locked.txt").await,
            Ok(b"data".to_vec())
        );
    });
}

#[test]
fn a_refused_store_fails_close_and_its_data_vanishes() {
    rt().block_on(async {
        let (cell, c) = cell_with_alice();
        c.write_file(ALICE, "shared/f", b"original").await.unwrap();
        let ino = c.resolve(ALICE, "shared/f").await.unwrap();
        let fh = c.afs.open(ALICE, ino, libc::O_WRONLY).await.unwrap();
        c.afs.write(fh, 0, b"changed!").await.unwrap();
        // The administrator takes alice's write right away meanwhile.
        cell.third_party(|tp| {
            tp.set_acl(
                "shared",
                &[
                    (ANYUSER, rights::READ | rights::LOOKUP),
                    (ALICE_ID, rights::READ | rights::LOOKUP),
                ],
                &[],
            )
        });
        assert_eq!(errno(c.afs.flush(fh).await), Err(libc::EACCES));
        // Reported again at the next close, and nothing is left unstored.
        assert_eq!(errno(c.afs.flush(fh).await), Err(libc::EACCES));
        let _ = c.afs.release(fh, None).await;
        assert_eq!(c.afs.cache_stats().usage.dirty_bytes, 0);
        assert_eq!(
            cell.third_party(|tp| tp.read("shared/f")),
            Some(b"original".to_vec())
        );
        for uid in [ALICE, NOBODY, 0] {
            assert_eq!(c.read_file(uid, "shared/f").await, Ok(b"original".to_vec()));
        }
    });
}

#[test]
fn unstored_changes_are_the_writers_alone() {
    rt().block_on(async {
        let (_cell, c) = cell_with_alice();
        c.write_file(ALICE, "shared/f", b"server").await.unwrap();
        let ino = c.resolve(ALICE, "shared/f").await.unwrap();
        let fh = c.afs.open(ALICE, ino, libc::O_RDWR).await.unwrap();
        c.afs.write(fh, 0, b"ALICE!!!").await.unwrap();
        // Alice sees her change; another uid sees the server's file.
        assert_eq!(c.afs.read(ALICE, fh, 0, 100).await.unwrap(), b"ALICE!!!");
        assert_eq!(
            c.read_file(NOBODY, "shared/f").await,
            Ok(b"server".to_vec())
        );
        assert_eq!(c.afs.getattr(NOBODY, ino).await.unwrap().size, 6);
        assert_eq!(c.afs.getattr(ALICE, ino).await.unwrap().size, 8);
        c.afs.flush(fh).await.unwrap();
        c.afs.release(fh, None).await.unwrap();
        assert_eq!(
            c.read_file(NOBODY, "shared/f").await,
            Ok(b"ALICE!!!".to_vec())
        );
    });
}

#[test]
fn a_uid_without_rights_sees_nothing_of_what_alice_read() {
    rt().block_on(async {
        let cell = MemCell::new(CELL);
        cell.third_party(|tp| {
            tp.set_acl("", &[(ANYUSER, rights::READ | rights::LOOKUP)], &[]);
            tp.mkdir("private");
            tp.write("private/secret.txt", b"alice's secret");
            tp.set_acl("private", &[(ALICE_ID, rights::ALL)], &[]);
        });
        let c = client(&cell, StoreKind::Memory, 64);
        c.afs.set_token(token(ALICE, ALICE_ID)).unwrap();
        assert_eq!(
            c.read_file(ALICE, "private/secret.txt").await,
            Ok(b"alice's secret".to_vec())
        );
        let dir = c.resolve(ALICE, "private").await.unwrap();
        let file = c.resolve(ALICE, "private/secret.txt").await.unwrap();
        for uid in [NOBODY, 0] {
            let eacces = Err(libc::EACCES);
            assert_eq!(errno(c.afs.getattr(uid, file).await).map(|_| ()), eacces);
            assert_eq!(errno(c.afs.readdir(uid, dir).await).map(|_| ()), eacces);
            assert_eq!(
                errno(c.afs.lookup(uid, dir, b"secret.txt").await).map(|_| ()),
                eacces
            );
            assert_eq!(
                errno(c.afs.getxattr_as(uid, file, "afs.fid").await).map(|_| ()),
                eacces
            );
            assert_eq!(
                errno(c.afs.listxattr_all(uid, file).await).map(|_| ()),
                eacces
            );
            assert_eq!(errno(c.afs.access(uid, file, libc::F_OK).await), eacces);
            assert_eq!(
                errno(c.afs.open(uid, file, libc::O_RDONLY).await).map(|_| ()),
                eacces
            );
        }
    });
}

#[test]
fn a_file_unlinked_while_open_stays_usable_until_its_last_close() {
    rt().block_on(async {
        let (cell, c) = cell_with_alice();
        c.write_file(ALICE, "shared/tmp", b"0123456789")
            .await
            .unwrap();
        let ino = c.resolve(ALICE, "shared/tmp").await.unwrap();
        let fh = c.afs.open(ALICE, ino, libc::O_RDWR).await.unwrap();
        c.unlink(ALICE, "shared/tmp").await.unwrap();
        // Gone by name, for everyone.
        assert_eq!(c.resolve(ALICE, "shared/tmp").await, Err(libc::ENOENT));
        // The descriptor still reads and writes; fstat shows no link.
        assert_eq!(c.afs.getattr(ALICE, ino).await.unwrap().nlink, 0);
        assert_eq!(c.afs.read(ALICE, fh, 2, 3).await.unwrap(), b"234");
        c.afs.write(fh, 10, b"ab").await.unwrap();
        c.afs.flush(fh).await.unwrap();
        assert_eq!(c.afs.read(ALICE, fh, 8, 10).await.unwrap(), b"89ab");
        // Hidden on the server meanwhile, and removed at the last close.
        let names = |cell: &MemCell| -> Vec<String> {
            cell.third_party(|tp| tp.tree("shared"))
                .into_iter()
                .map(|(p, _)| p)
                .collect()
        };
        assert!(names(&cell).iter().any(|n| n.starts_with(".__afs")));
        c.afs.release(fh, None).await.unwrap();
        assert!(names(&cell).is_empty(), "{:?}", names(&cell));
    });
}

/// A callback break that arrives while a status is being fetched (of any
/// fid: breaks are counted globally) never turns the caller's access into
/// EACCES.
#[test]
fn a_break_racing_a_fetch_never_denies() {
    rt().block_on(async {
        let (cell, c) = cell_with_alice();
        cell.third_party(|tp| tp.write("shared/f", b"data"));
        cell.set_faults(
            c.fs.client(),
            client::memserver::Faults {
                racing_breaks: true,
                ..Default::default()
            },
        );
        // Every reply now comes after a break; a new token holder has no
        // rights learned yet, so each must come from such a reply.
        c.afs.set_token(token(1001, 3)).unwrap();
        for uid in [1001, ALICE, NOBODY] {
            assert_eq!(
                c.read_file(uid, "shared/f").await,
                Ok(b"data".to_vec()),
                "uid {uid}"
            );
        }
    });
}
