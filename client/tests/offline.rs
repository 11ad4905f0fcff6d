//! Disconnected operation over the in-memory fileserver: work done while
//! the fileserver cannot be reached is made in the cache, logged, and
//! replayed when it answers again; conflicts keep both versions; a restart
//! keeps the log; changes whose answer was lost are settled by looking,
//! never applied twice.

mod common;

use std::sync::Arc;

use cache::{MemoryStore, Store};
use client::memserver::{rights, Entry, Faults, MemCell, ANYUSER};
use client::{ClientConfig, ConflictSide, Mode, SetAttrs, Stats, Targets};
use common::{
    assert_no_conflicts, down, errno, rt, setup, token, until_synced, Client, StoreKind, CELL,
};

fn pending(c: &Client) -> u64 {
    c.afs.volume_status().iter().map(|v| v.pending_ops).sum()
}

fn file(data: &[u8]) -> Entry {
    Entry::File(data.to_vec())
}

#[test]
fn offline_work_reaches_the_server_and_what_cancels_out_is_never_sent() {
    rt().block_on(async {
        let (cell, cs) = setup(2, StoreKind::Memory, 64);
        let (c, other) = (&cs[0], &cs[1]);
        c.mkdir(0, "w").await.unwrap();
        c.write_file(0, "w/keep.txt", b"old contents")
            .await
            .unwrap();
        c.write_file(0, "w/gone.txt", b"to be removed")
            .await
            .unwrap();
        c.tree(0, "w").await.unwrap();
        let calls = |n: &str| cell.calls(n);
        let (creates, mkdirs, stores) = (
            calls("RXAFS_CreateFile"),
            calls("RXAFS_MakeDir"),
            calls("RXAFS_StoreData64"),
        );

        down(&cell, c, true);
        c.mkdir(0, "w/d").await.unwrap();
        c.write_file(0, "w/d/a.txt", b"alpha").await.unwrap();
        c.write_file(0, "w/d/b.txt", b"beta").await.unwrap();
        c.rename(0, "w/d/b.txt", "w/d/c.txt").await.unwrap();
        let d = c.resolve(0, "w/d").await.unwrap();
        errno(c.afs.symlink(0, d, b"ln", b"a.txt").await).unwrap();
        let a = c.resolve(0, "w/d/a.txt").await.unwrap();
        let w = c.resolve(0, "w").await.unwrap();
        let a_ino_before = a;
        errno(c.afs.link(0, a, w, b"hard.txt").await).unwrap();
        let keep = c.resolve(0, "w/keep.txt").await.unwrap();
        errno(
            c.afs
                .setattr(
                    0,
                    keep,
                    SetAttrs {
                        mode: Some(0o600),
                        ..SetAttrs::default()
                    },
                )
                .await,
        )
        .unwrap();
        c.write_file(0, "w/keep.txt", b"new").await.unwrap();
        c.write_file(0, "w/keep.txt", b"newer contents")
            .await
            .unwrap();
        c.unlink(0, "w/gone.txt").await.unwrap();
        // Made and removed offline: nothing of these may be sent.
        c.write_file(0, "w/tmp.txt", b"scratch").await.unwrap();
        c.unlink(0, "w/tmp.txt").await.unwrap();
        c.mkdir(0, "w/t").await.unwrap();
        c.write_file(0, "w/t/x", b"x").await.unwrap();
        c.unlink(0, "w/t/x").await.unwrap();
        c.rmdir(0, "w/t").await.unwrap();

        let expected: Vec<(String, Option<Vec<u8>>)> = vec![
            ("w/d".into(), None),
            ("w/d/a.txt".into(), Some(b"alpha".to_vec())),
            ("w/d/c.txt".into(), Some(b"beta".to_vec())),
            ("w/d/ln".into(), Some(b"alpha".to_vec())),
            ("w/hard.txt".into(), Some(b"alpha".to_vec())),
            ("w/keep.txt".into(), Some(b"newer contents".to_vec())),
        ];
        // Offline, the client shows its own work (the symlink is checked
        // with readlink).
        let local: Vec<_> = c
            .tree(0, "w")
            .await
            .unwrap()
            .into_iter()
            .filter(|(n, _)| n != "w/d/ln")
            .collect();
        let mut want_local: Vec<_> = expected
            .iter()
            .filter(|(n, _)| n != "w/d/ln")
            .cloned()
            .map(|(n, d)| (n.trim_start_matches("w/").to_string(), d))
            .collect();
        want_local.sort();
        let mut local: Vec<_> = local
            .into_iter()
            .map(|(n, d)| (n.trim_start_matches("w/").to_string(), d))
            .collect();
        local.sort();
        assert_eq!(local, want_local);
        let ln = c.resolve(0, "w/d/ln").await.unwrap();
        assert_eq!(errno(c.afs.readlink(0, ln).await).unwrap(), b"a.txt");
        let st = c.afs.volume_status();
        assert!(
            st.iter()
                .any(|v| v.mode == Mode::Disconnected && v.pending_ops > 0),
            "{st:?}"
        );
        // Nothing reached the server.
        assert_eq!(
            cell.third_party(|tp| tp.read("w/keep.txt")),
            Some(b"old contents".to_vec())
        );

        down(&cell, c, false);
        until_synced(c).await;
        assert_no_conflicts(c);
        let server = cell.third_party(|tp| tp.tree("w"));
        let want: Vec<(String, Entry)> = vec![
            ("d".into(), Entry::Dir),
            ("d/a.txt".into(), file(b"alpha")),
            ("d/c.txt".into(), file(b"beta")),
            ("d/ln".into(), Entry::Symlink(b"a.txt".to_vec())),
            ("hard.txt".into(), file(b"alpha")),
            ("keep.txt".into(), file(b"newer contents")),
        ];
        let mut server: Vec<(String, Entry)> = server
            .into_iter()
            .map(|(n, e)| (n.trim_start_matches("w/").to_string(), e))
            .collect();
        server.sort_by(|x, y| x.0.cmp(&y.0));
        assert_eq!(server, want);
        let (mode, _, _) = cell.third_party(|tp| tp.status("w/keep.txt")).unwrap();
        assert_eq!(mode & 0o7777, 0o600);
        let (_, _, links) = cell.third_party(|tp| tp.status("w/d/a.txt")).unwrap();
        assert_eq!(links, 2);
        // Compaction: a.txt and b.txt were created, not tmp.txt nor x;
        // one directory; one store per file, keep.txt's two closes as one
        // (a store of a file cut to 0 and written again is two calls: the
        // cut, then the data).
        assert_eq!(calls("RXAFS_CreateFile") - creates, 2);
        assert_eq!(calls("RXAFS_MakeDir") - mkdirs, 1);
        assert_eq!(calls("RXAFS_StoreData64") - stores, 4);
        // The inode of a file made offline survives its new fid.
        assert_eq!(c.resolve(0, "w/d/a.txt").await.unwrap(), a_ino_before);
        assert_eq!(c.read_file(0, "w/d/a.txt").await.unwrap(), b"alpha");
        // A second client sees what the first made.
        let mut seen = other.tree(0, "w").await.unwrap();
        seen.retain(|(n, _)| n != "w/d/ln");
        let mut want: Vec<_> = expected
            .into_iter()
            .filter(|(n, _)| n != "w/d/ln")
            .collect();
        want.sort();
        assert_eq!(seen, want);
    });
}

#[test]
fn cached_data_is_served_offline_and_what_was_never_cached_is_enetdown() {
    rt().block_on(async {
        let (cell, cs) = setup(1, StoreKind::Memory, 64);
        let c = &cs[0];
        cell.third_party(|tp| {
            tp.write("r/seen.txt", b"cached before the cut");
            tp.write("r/unseen.txt", b"never read");
        });
        assert_eq!(
            c.read_file(0, "r/seen.txt").await.unwrap(),
            b"cached before the cut"
        );
        c.resolve(0, "r/unseen.txt").await.unwrap();
        c.afs.go_offline(&Targets::All).unwrap();
        let before = cell.calls("RXAFS_FetchStatus") + cell.calls("RXAFS_FetchData64");
        assert_eq!(
            c.read_file(0, "r/seen.txt").await.unwrap(),
            b"cached before the cut"
        );
        assert_eq!(c.read_file(0, "r/unseen.txt").await, Err(libc::ENETDOWN));
        assert_eq!(
            cell.calls("RXAFS_FetchStatus") + cell.calls("RXAFS_FetchData64"),
            before,
            "nothing is sent to a volume put offline"
        );
        assert!(
            c.afs
                .stats()
                .stale_served
                .load(std::sync::atomic::Ordering::Relaxed)
                > 0
        );
        // Offline by hand stays offline: a sync does not bring it back.
        c.afs.sync(&Targets::All).await.unwrap();
        assert!(c
            .afs
            .volume_status()
            .iter()
            .all(|v| v.mode == Mode::Disconnected && v.manual));
        c.afs.go_online(&Targets::All, false).await.unwrap();
        until_synced(c).await;
        assert_eq!(c.read_file(0, "r/unseen.txt").await.unwrap(), b"never read");
    });
}

/// A client over a given store, as a daemon restarted on its cache.
fn client_on(cell: &Arc<MemCell>, store: Arc<dyn Store>) -> Client {
    let mut config = ClientConfig::new("/nonexistent".into(), "/nonexistent".into());
    config.chunk_size = 64;
    common::client_with(cell, store, config, Arc::new(Stats::default()))
}

#[test]
fn the_log_and_unclosed_writes_outlive_the_daemon() {
    rt().block_on(async {
        let cell = MemCell::new(CELL);
        cell.third_party(|tp| {
            tp.set_acl("", &[(ANYUSER, rights::ALL)], &[]);
            tp.mkdir("p");
        });
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let c = client_on(&cell, store.clone());
        c.tree(0, "p").await.unwrap();
        down(&cell, &c, true);
        c.write_file(0, "p/closed.txt", b"closed before the crash")
            .await
            .unwrap();
        // A file still open for writing when the daemon dies.
        let p = c.resolve(0, "p").await.unwrap();
        let (_, fh) = errno(c.afs.create(0, p, b"open.txt", 0o644, libc::O_WRONLY).await).unwrap();
        errno(c.afs.write(fh, 0, b"written, never closed").await).unwrap();
        drop(c); // no close, no shutdown

        let c = client_on(&cell, store.clone());
        down(&cell, &c, true);
        assert_eq!(
            c.read_file(0, "p/closed.txt").await.unwrap(),
            b"closed before the crash"
        );
        assert_eq!(
            c.read_file(0, "p/open.txt").await.unwrap(),
            b"written, never closed"
        );
        down(&cell, &c, false);
        until_synced(&c).await;
        assert_eq!(
            cell.third_party(|tp| tp.read("p/closed.txt")),
            Some(b"closed before the crash".to_vec())
        );
        assert_eq!(
            cell.third_party(|tp| tp.read("p/open.txt")),
            Some(b"written, never closed".to_vec())
        );
        assert_eq!(cell.calls("RXAFS_CreateFile"), 2);
    });
}

#[test]
fn changes_whose_answer_was_lost_are_settled_not_sent_twice() {
    rt().block_on(async {
        let (cell, cs) = setup(1, StoreKind::Memory, 64);
        let c = &cs[0];
        c.mkdir(0, "s").await.unwrap();
        c.write_file(0, "s/old.txt", b"version one").await.unwrap();
        c.tree(0, "s").await.unwrap();
        let dv = cell.third_party(|tp| tp.data_version("s/old.txt")).unwrap();
        cell.set_faults(
            c.fs.client(),
            Faults {
                lose_replies: true,
                ..Faults::default()
            },
        );
        // The store is made on the server; its answer never comes.
        c.write_file(0, "s/old.txt", b"version two").await.unwrap();
        // So is the create (the volume is offline after the first loss:
        // this one is logged and sent at replay).
        c.write_file(0, "s/new.txt", b"made while in doubt")
            .await
            .unwrap();
        let stores = cell.calls("RXAFS_StoreData64");
        let creates = cell.calls("RXAFS_CreateFile");
        cell.set_faults(c.fs.client(), Faults::default());
        until_synced(c).await;
        assert_no_conflicts(c);
        // The store is two pieces (the cut to 0, then the data): the first
        // made it before its answer was lost, the second is sent at
        // replay; each moved the version once.
        assert_eq!(
            cell.third_party(|tp| tp.data_version("s/old.txt")),
            Some(dv + 2),
            "each piece was applied once"
        );
        assert_eq!(
            cell.calls("RXAFS_StoreData64") - stores,
            2,
            "old.txt's second piece, new.txt's store"
        );
        assert_eq!(cell.calls("RXAFS_CreateFile") - creates, 1);
        assert_eq!(
            cell.third_party(|tp| tp.read("s/old.txt")),
            Some(b"version two".to_vec())
        );
        assert_eq!(
            cell.third_party(|tp| tp.read("s/new.txt")),
            Some(b"made while in doubt".to_vec())
        );
        assert_eq!(c.read_file(0, "s/old.txt").await.unwrap(), b"version two");
    });
}

#[test]
fn a_create_whose_answer_was_lost_is_adopted_not_made_twice() {
    rt().block_on(async {
        let (cell, cs) = setup(1, StoreKind::Memory, 64);
        let c = &cs[0];
        c.mkdir(0, "q").await.unwrap();
        c.tree(0, "q").await.unwrap();
        cell.set_faults(
            c.fs.client(),
            Faults {
                lose_replies: true,
                ..Faults::default()
            },
        );
        let q = c.resolve(0, "q").await.unwrap();
        errno(c.afs.mkdir(0, q, b"made", 0o755).await).unwrap();
        cell.set_faults(c.fs.client(), Faults::default());
        until_synced(c).await;
        assert_no_conflicts(c);
        assert_eq!(cell.calls("RXAFS_MakeDir"), 2, "q, then made once");
        assert_eq!(cell.third_party(|tp| tp.tree("q")).len(), 1);
    });
}

#[test]
fn every_conflict_keeps_both_versions() {
    rt().block_on(async {
        let (cell, cs) = setup(1, StoreKind::Memory, 64);
        let c = &cs[0];
        c.mkdir(0, "k").await.unwrap();
        for f in ["uu", "ur", "ru"] {
            c.write_file(0, &format!("k/{f}.txt"), b"base")
                .await
                .unwrap();
        }
        c.mkdir(0, "k/locked").await.unwrap();
        c.tree(0, "k").await.unwrap();
        down(&cell, c, true);
        // update/update, update/remove, remove/update, name/name, refused.
        c.write_file(0, "k/uu.txt", b"mine uu").await.unwrap();
        c.write_file(0, "k/ur.txt", b"mine ur").await.unwrap();
        c.unlink(0, "k/ru.txt").await.unwrap();
        c.write_file(0, "k/nn.txt", b"mine nn").await.unwrap();
        c.write_file(0, "k/locked/z.txt", b"mine z").await.unwrap();
        cell.third_party(|tp| {
            tp.write("k/uu.txt", b"theirs uu");
            tp.remove("k/ur.txt");
            tp.write("k/ru.txt", b"theirs ru");
            tp.write("k/nn.txt", b"theirs nn");
            tp.set_acl("k/locked", &[(ANYUSER, rights::READ | rights::LOOKUP)], &[]);
        });
        down(&cell, c, false);
        until_synced(c).await;
        let conflicts = c.afs.conflicts(None);
        let kinds: Vec<&str> = conflicts.iter().map(|x| x.kind.as_str()).collect();
        for k in [
            "update/update",
            "update/remove",
            "remove/update",
            "name/name",
            "refused",
        ] {
            assert!(kinds.contains(&k), "{k} missing from {conflicts:?}");
        }
        // The path shows the server's version...
        assert_eq!(c.read_file(0, "k/uu.txt").await.unwrap(), b"theirs uu");
        assert_eq!(c.read_file(0, "k/ur.txt").await, Err(libc::ENOENT));
        assert_eq!(c.read_file(0, "k/ru.txt").await.unwrap(), b"theirs ru");
        assert_eq!(c.read_file(0, "k/nn.txt").await.unwrap(), b"theirs nn");
        assert_eq!(c.read_file(0, "k/locked/z.txt").await, Err(libc::ENOENT));
        // ...and ours is kept.
        let local = |kind: &str| {
            let x = conflicts.iter().find(|x| x.kind == kind).unwrap();
            c.afs.conflict_data(0, x.id, ConflictSide::Local).unwrap()
        };
        assert_eq!(local("update/update"), b"mine uu");
        assert_eq!(local("update/remove"), b"mine ur");
        assert_eq!(local("name/name"), b"mine nn");
        assert_eq!(local("refused"), b"mine z");
        let uu = conflicts
            .iter()
            .find(|x| x.kind == "update/update")
            .unwrap();
        assert!(uu.path.ends_with("k/uu.txt"), "{}", uu.path);
        assert_eq!(uu.server_dv, Some(uu.base_dv.unwrap() + 1));
        // Another user may not read them.
        assert!(c
            .afs
            .conflict_data(1000, uu.id, ConflictSide::Local)
            .is_err());
    });
}

#[test]
fn each_change_replays_as_its_user_and_a_missing_token_pauses_only_that_user() {
    rt().block_on(async {
        let (cell, cs) = setup(1, StoreKind::Memory, 64);
        let c = &cs[0];
        cell.add_user("alice", 2);
        cell.add_user("bob", 3);
        c.afs.set_token(token(1000, 2)).unwrap();
        c.afs.set_token(token(1001, 3)).unwrap();
        c.mkdir(0, "u").await.unwrap();
        c.tree(1000, "u").await.unwrap();
        c.tree(1001, "u").await.unwrap();
        down(&cell, c, true);
        c.write_file(1000, "u/alice.txt", b"from alice")
            .await
            .unwrap();
        c.write_file(1001, "u/bob.txt", b"from bob").await.unwrap();
        // bob's unstored data is his alone until replayed.
        assert_eq!(c.read_file(1000, "u/bob.txt").await.unwrap(), b"");
        c.afs.unlog(1001, None).unwrap();
        down(&cell, c, false);
        for _ in 0..50 {
            c.afs.sync(&Targets::All).await.unwrap();
            if cell.third_party(|tp| tp.read("u/alice.txt")).is_some() {
                break;
            }
        }
        assert_eq!(
            cell.third_party(|tp| tp.read("u/alice.txt")),
            Some(b"from alice".to_vec())
        );
        assert_eq!(
            cell.third_party(|tp| tp.status("u/alice.txt")).unwrap().1,
            2
        );
        assert_eq!(cell.third_party(|tp| tp.read("u/bob.txt")), None);
        let st = c.afs.volume_status();
        let v = st
            .iter()
            .find(|v| v.pending_ops > 0)
            .expect("bob's changes wait");
        assert_eq!(v.mode, Mode::Paused);
        assert_eq!(v.waiting_for.len(), 1);
        assert_eq!(v.waiting_for[0].uid, 1001);
        assert!(
            v.waiting_for[0].reason.contains("aklog"),
            "{:?}",
            v.waiting_for
        );
        c.afs.set_token(token(1001, 3)).unwrap();
        until_synced(c).await;
        assert_eq!(
            cell.third_party(|tp| tp.read("u/bob.txt")),
            Some(b"from bob".to_vec())
        );
        assert_eq!(cell.third_party(|tp| tp.status("u/bob.txt")).unwrap().1, 3);
        assert_eq!(pending(c), 0);
    });
}

#[test]
fn closes_during_two_cuts_each_reach_the_server_once() {
    rt().block_on(async {
        let (cell, cs) = setup(1, StoreKind::Memory, 64);
        let c = &cs[0];
        cell.third_party(|tp| tp.write("f", b""));
        let ino = c.resolve(0, "f").await.unwrap();
        let fh = errno(c.afs.open(0, ino, libc::O_RDWR).await).unwrap();
        for (i, byte) in [b"".as_slice(), b"x".as_slice()].iter().enumerate() {
            errno(c.afs.write(fh, 0, byte).await).unwrap();
            down(&cell, c, true);
            assert_eq!(errno(c.afs.flush(fh).await), Ok(()), "close {i} is logged");
            down(&cell, c, false);
            until_synced(c).await;
            assert!(
                c.afs.conflicts(None).is_empty(),
                "{i}: {:?}",
                c.afs.conflicts(None)
            );
        }
        assert_eq!(cell.third_party(|tp| tp.read("f")), Some(b"x".to_vec()));
    });
}

#[test]
fn a_full_cache_offline_refuses_writes_and_keeps_what_is_logged() {
    rt().block_on(async {
        let (cell, cs) = setup(1, StoreKind::Rocks, 4096);
        let c = &cs[0];
        c.mkdir(0, "full").await.unwrap();
        c.tree(0, "full").await.unwrap();
        c.afs.set_cache_size(64 << 10).unwrap();
        c.afs.go_offline(&Targets::All).unwrap();
        c.write_file(0, "full/kept.txt", &[7u8; 16 << 10])
            .await
            .unwrap();
        let big = vec![1u8; 256 << 10];
        assert_eq!(
            c.write_file(0, "full/big.bin", &big).await,
            Err(libc::ENOSPC),
            "past the cache's size an offline write fails"
        );
        // What was logged is intact, and flushing it is refused.
        assert_eq!(
            c.read_file(0, "full/kept.txt").await.unwrap(),
            vec![7u8; 16 << 10]
        );
        let fid = |ino: u64| async move {
            let v = errno(c.afs.getxattr_as(0, ino, "afs.fid").await)
                .unwrap()
                .unwrap();
            String::from_utf8(v).unwrap()
        };
        let kept = c.resolve(0, "full/kept.txt").await.unwrap();
        let state = errno(c.afs.getxattr_as(0, kept, "afsd.state").await)
            .unwrap()
            .unwrap();
        let state = String::from_utf8(state).unwrap();
        assert!(state.contains("logged("), "{state}");
        assert!(state.contains("stale-since="), "{state}");
        let text = fid(kept).await;
        let parts: Vec<u32> = text
            .trim()
            .split(':')
            .map(|x| u32::from_str_radix(x, 16).unwrap())
            .collect();
        let f = afs_proto::types::Fid::new(parts[0], parts[1], parts[2]);
        assert_eq!(
            c.afs.flush_fid(CELL, f).map_err(|e| e.errno()),
            Err(libc::EBUSY)
        );
        assert_eq!(
            c.afs.flush_volume(CELL, f.volume).map_err(|e| e.errno()),
            Err(libc::EBUSY)
        );
        c.afs.go_online(&Targets::All, false).await.unwrap();
        until_synced(c).await;
        assert_eq!(
            cell.third_party(|tp| tp.read("full/kept.txt")),
            Some(vec![7u8; 16 << 10])
        );
        // What the writes before the refusal put in the file reached the
        // server at its close; nothing past them.
        let got = cell.third_party(|tp| tp.read("full/big.bin")).unwrap();
        assert!(
            got.len() < big.len() && got.iter().all(|b| *b == 1),
            "{}",
            got.len()
        );
    });
}

#[test]
fn an_expired_token_anchors_rights_offline_and_is_never_sent() {
    rt().block_on(async {
        let cell = MemCell::new(CELL);
        cell.add_user("alice", 2);
        cell.third_party(|tp| {
            tp.set_acl("", &[(ANYUSER, rights::READ | rights::LOOKUP)], &[]);
            tp.mkdir("home");
            tp.set_acl("home", &[(2, rights::ALL)], &[]);
            tp.write("home/notes.txt", b"alice's notes");
        });
        let c = client_on(&cell, Arc::new(MemoryStore::new()));
        c.afs.set_token(token(1000, 2)).unwrap();
        assert_eq!(
            c.read_file(1000, "home/notes.txt").await.unwrap(),
            b"alice's notes"
        );
        // Anonymous may not even look inside.
        assert_eq!(c.read_file(1001, "home/notes.txt").await, Err(libc::EACCES));
        c.afs.go_offline(&Targets::All).unwrap();
        // The token expires while offline.
        let mut old = token(1000, 2);
        old.end = old.start - 1;
        old.start -= 7200;
        c.afs.set_token(old).unwrap();
        assert_eq!(
            c.read_file(1000, "home/notes.txt").await.unwrap(),
            b"alice's notes"
        );
        c.write_file(1000, "home/notes.txt", b"edited offline")
            .await
            .unwrap();
        // Her rights are hers: another uid still has none.
        assert_eq!(c.read_file(1001, "home/notes.txt").await, Err(libc::EACCES));
        c.afs.go_online(&Targets::All, false).await.unwrap();
        for _ in 0..20 {
            c.afs.sync(&Targets::All).await.unwrap();
        }
        // Not sent anonymously: it waits for alice.
        assert_eq!(
            cell.third_party(|tp| tp.read("home/notes.txt")),
            Some(b"alice's notes".to_vec())
        );
        assert_no_conflicts(&c);
        let st = c.afs.volume_status();
        assert!(
            st.iter().any(|v| v.mode == Mode::Paused
                && v.waiting_for
                    .iter()
                    .any(|w| w.uid == 1000 && w.principal.as_deref() == Some("user2@MEM.TEST"))),
            "{st:?}"
        );
        c.afs.set_token(token(1000, 2)).unwrap();
        until_synced(&c).await;
        assert_eq!(
            cell.third_party(|tp| tp.read("home/notes.txt")),
            Some(b"edited offline".to_vec())
        );
    });
}

#[test]
fn a_second_offline_stretch_builds_on_what_the_first_replayed() {
    rt().block_on(async {
        let (cell, cs) = setup(1, StoreKind::Memory, 64);
        let c = &cs[0];
        c.mkdir(0, "p").await.unwrap();
        c.write_file(0, "p/f", b"version one\n").await.unwrap();
        let write_at = |data: &'static [u8]| async move {
            let ino = c.resolve(0, "p/f").await.unwrap();
            let fh = errno(c.afs.open(0, ino, libc::O_WRONLY).await).unwrap();
            errno(c.afs.write(fh, 0, data).await).unwrap();
            errno(c.afs.flush(fh).await).unwrap();
            errno(c.afs.release(fh, None).await).unwrap();
        };
        c.afs.go_offline(&Targets::All).unwrap();
        write_at(b"VERSION TWO\n").await;
        c.afs.go_online(&Targets::All, false).await.unwrap();
        until_synced(c).await;
        c.afs.go_offline(&Targets::All).unwrap();
        write_at(b"three").await;
        assert_eq!(c.read_file(0, "p/f").await.unwrap(), b"threeON TWO\n");
        c.afs.go_online(&Targets::All, false).await.unwrap();
        until_synced(c).await;
        assert_no_conflicts(c);
        assert_eq!(
            cell.third_party(|tp| tp.read("p/f")),
            Some(b"threeON TWO\n".to_vec())
        );
    });
}

#[test]
fn a_name_freed_by_an_offline_rename_takes_a_new_file() {
    rt().block_on(async {
        let (cell, cs) = setup(1, StoreKind::Memory, 64);
        let c = &cs[0];
        c.mkdir(0, "a").await.unwrap();
        c.afs.go_offline(&Targets::All).unwrap();
        c.mkdir(0, "d1").await.unwrap();
        c.rename(0, "a", "d1/x").await.unwrap();
        c.write_file(0, "a", b"").await.unwrap();
        c.afs.go_online(&Targets::All, false).await.unwrap();
        until_synced(c).await;
        assert_no_conflicts(c);
        let want = vec![
            ("a".to_string(), Some(Vec::new())),
            ("d1".to_string(), None),
            ("d1/x".to_string(), None),
        ];
        let server: Vec<(String, bool)> = cell
            .third_party(|tp| tp.tree(""))
            .into_iter()
            .map(|(p, e)| (p, matches!(e, Entry::Dir)))
            .collect();
        assert_eq!(
            server,
            vec![
                ("a".into(), false),
                ("d1".into(), true),
                ("d1/x".into(), true)
            ]
        );
        assert_eq!(c.tree(0, "").await, Ok(want));
    });
}

#[test]
fn a_directory_made_on_both_sides_takes_what_each_made_in_it() {
    rt().block_on(async {
        let (cell, cs) = setup(1, StoreKind::Memory, 64);
        let c = &cs[0];
        c.mkdir(0, "objects").await.unwrap();
        c.tree(0, "objects").await.unwrap();
        down(&cell, c, true);
        // As two git clients writing loose objects into the same fan-out
        // directory: the directory is one, its names are checked one by one.
        c.mkdir(0, "objects/ab").await.unwrap();
        c.write_file(0, "objects/ab/mine", b"ours").await.unwrap();
        c.write_file(0, "objects/ab/both", b"ours both")
            .await
            .unwrap();
        c.mkdir(0, "objects/ab/sub").await.unwrap();
        c.write_file(0, "objects/ab/sub/deep", b"deep")
            .await
            .unwrap();
        c.write_file(0, "objects/cd", b"a file here").await.unwrap();
        cell.third_party(|tp| {
            tp.mkdir("objects/ab");
            tp.write("objects/ab/theirs", b"theirs");
            tp.write("objects/ab/both", b"theirs both");
            tp.mkdir("objects/cd");
        });
        down(&cell, c, false);
        until_synced(c).await;
        let conflicts = c.afs.conflicts(None);
        // The file made in both, and the file whose name is a directory on
        // the server: nothing else.
        let mut got: Vec<(String, String)> = conflicts
            .iter()
            .map(|x| {
                let leaf = x.path.rsplit('/').next().unwrap().to_string();
                (leaf, x.kind.clone())
            })
            .collect();
        got.sort();
        assert_eq!(
            got,
            vec![
                ("both".to_string(), "name/name".to_string()),
                ("cd".to_string(), "name/name".to_string())
            ],
            "{conflicts:?}"
        );
        let read = |p: &'static str| cell.third_party(move |tp| tp.read(p));
        assert_eq!(read("objects/ab/mine"), Some(b"ours".to_vec()));
        assert_eq!(read("objects/ab/theirs"), Some(b"theirs".to_vec()));
        assert_eq!(read("objects/ab/both"), Some(b"theirs both".to_vec()));
        assert_eq!(read("objects/ab/sub/deep"), Some(b"deep".to_vec()));
        assert_eq!(
            c.read_file(0, "objects/ab/theirs").await.unwrap(),
            b"theirs"
        );
        assert_eq!(c.read_file(0, "objects/ab/mine").await.unwrap(), b"ours");
        assert_eq!(
            c.read_file(0, "objects/ab/sub/deep").await.unwrap(),
            b"deep"
        );
    });
}

#[test]
fn a_file_saved_by_rename_on_both_sides_is_an_update_conflict_with_nothing_left_over() {
    rt().block_on(async {
        let (cell, cs) = setup(1, StoreKind::Memory, 64);
        let c = &cs[0];
        c.mkdir(0, "s").await.unwrap();
        c.write_file(0, "s/doc", b"base").await.unwrap();
        c.tree(0, "s").await.unwrap();
        assert_eq!(c.read_file(0, "s/doc").await.unwrap(), b"base");
        down(&cell, c, true);
        // Saved twice the careful way: a temporary file renamed over it.
        for text in [&b"mine one"[..], b"mine two"] {
            c.write_file(0, "s/doc.tmp", text).await.unwrap();
            c.rename(0, "s/doc.tmp", "s/doc").await.unwrap();
        }
        cell.third_party(|tp| {
            // The other side did the same: a new file under the name.
            tp.remove("s/doc");
            tp.write("s/doc", b"theirs");
        });
        down(&cell, c, false);
        until_synced(c).await;
        let conflicts = c.afs.conflicts(None);
        assert_eq!(conflicts.len(), 2, "{conflicts:?}");
        for x in &conflicts {
            assert_eq!(x.kind, "update/update", "{x:?}");
            assert!(x.path.ends_with("/s/doc"), "{x:?}");
        }
        let local: Vec<Vec<u8>> = conflicts
            .iter()
            .map(|x| c.afs.conflict_data(0, x.id, ConflictSide::Local).unwrap())
            .collect();
        assert_eq!(local, vec![b"mine one".to_vec(), b"mine two".to_vec()]);
        assert_eq!(
            c.afs
                .conflict_data(0, conflicts[0].id, ConflictSide::Base)
                .unwrap(),
            b"base"
        );
        // The server keeps its file; our temporary name is not left there.
        let names: Vec<String> = cell
            .third_party(|tp| tp.tree("s"))
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        assert_eq!(names, vec!["doc".to_string()]);
        assert_eq!(
            cell.third_party(|tp| tp.read("s/doc")),
            Some(b"theirs".to_vec())
        );
        assert_eq!(c.read_file(0, "s/doc").await.unwrap(), b"theirs");
        assert_eq!(c.read_file(0, "s/doc.tmp").await, Err(libc::ENOENT));
        // keep-local of the newer one puts it in place.
        let id = conflicts[1].id;
        c.afs
            .resolve(0, id, &client::Resolution::KeepLocal)
            .await
            .unwrap();
        assert_eq!(
            cell.third_party(|tp| tp.read("s/doc")),
            Some(b"mine two".to_vec())
        );
    });
}

#[test]
fn a_name_removed_and_made_again_offline_shows_throughout_replay() {
    rt().block_on(async {
        let (cell, cs) = setup(1, StoreKind::Memory, 64);
        let c = &cs[0];
        c.write_file(0, "a", b"old").await.unwrap();
        c.afs.go_offline(&Targets::All).unwrap();
        c.unlink(0, "a").await.unwrap();
        c.write_file(0, "a", b"new").await.unwrap();
        c.afs.go_online(&Targets::All, false).await.unwrap();
        until_synced(c).await;
        assert_no_conflicts(c);
        assert_eq!(cell.third_party(|tp| tp.read("a")), Some(b"new".to_vec()));
        assert_eq!(c.read_file(0, "a").await.unwrap(), b"new");
    });
}

async fn xattr(c: &Client, path: &str, name: &str) -> Option<String> {
    let ino = c.resolve(0, path).await.unwrap();
    c.afs
        .getxattr_as(0, ino, name)
        .await
        .unwrap()
        .map(|v| String::from_utf8(v).unwrap())
}

#[test]
fn the_three_states_show_on_a_pending_object_and_a_conflict() {
    rt().block_on(async {
        let (cell, cs) = setup(1, StoreKind::Memory, 64);
        let c = &cs[0];
        c.write_file(0, "s.txt", b"base text").await.unwrap();
        assert_eq!(
            xattr(c, "s.txt", "afsd.base").await,
            None,
            "nothing pending"
        );
        let clean = xattr(c, "s.txt", "afsd.local").await.unwrap();
        let dv0: u64 = clean
            .strip_prefix("dv=")
            .and_then(|r| r.split_whitespace().next()?.parse().ok())
            .unwrap();
        assert!(clean.starts_with(&format!("dv={dv0} len=9 ")), "{clean}");
        c.afs.go_offline(&Targets::All).unwrap();
        c.write_file(0, "s.txt", b"my longer text").await.unwrap();
        let base = xattr(c, "s.txt", "afsd.base").await.unwrap();
        let local = xattr(c, "s.txt", "afsd.local").await.unwrap();
        let server = xattr(c, "s.txt", "afsd.server").await.unwrap();
        assert!(base.starts_with(&format!("dv={dv0} len=9 ")), "{base}");
        assert!(local.contains(" len=14 "), "{local}");
        assert_eq!(server, "unknown: its volume is offline\n");
        cell.third_party(|tp| tp.write("s.txt", b"their text!"));
        c.afs.go_online(&Targets::All, false).await.unwrap();
        until_synced(c).await;
        let conflict = xattr(c, "s.txt", "afsd.conflict").await.unwrap();
        let id: u64 = conflict
            .split_whitespace()
            .find_map(|f| f.strip_prefix("id=")?.parse().ok())
            .unwrap();
        assert!(
            conflict.starts_with("kind=update/update")
                && conflict.contains(&format!(" base={dv0} ")),
            "{conflict}"
        );
        let st = c.afs.conflict_states(0, id).await.unwrap();
        assert_eq!(st.base.as_ref().unwrap().length, 9);
        assert_eq!(st.local.as_ref().unwrap().length, 14);
        assert_eq!(st.server.as_ref().unwrap().length, 11);
        assert_eq!(st.server.as_ref().unwrap().data_version, dv0 + 1);
        assert!(xattr(c, "s.txt", "afsd.base")
            .await
            .unwrap()
            .contains(" len=9 "));
        assert!(xattr(c, "s.txt", "afsd.local")
            .await
            .unwrap()
            .contains(" len=14 "));
        let server = xattr(c, "s.txt", "afsd.server").await.unwrap();
        assert!(
            server.starts_with(&format!("dv={} len=11 ", dv0 + 1)),
            "{server}"
        );
        assert_eq!(
            c.afs.conflict_server_data(0, id).await.unwrap(),
            b"their text!"
        );
        assert_eq!(
            c.afs.conflict_data(0, id, ConflictSide::Base).unwrap(),
            b"base text"
        );
        assert!(
            c.afs.conflict_states(1000, id).await.is_err(),
            "not another user's"
        );
    });
}
