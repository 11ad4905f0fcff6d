//! Resolutions over the in-memory cell: each of keep-local, keep-remote,
//! stash-local, stash-both and the text merge ends with exactly the bytes
//! and names expected on the server and here, and the conflict gone; a
//! server that moved again refuses keep-local; keep-remote keeps the local
//! version until purged.

mod common;

use client::{Resolution, Targets};
use common::{down, errno, rt, setup, until_synced, Client};

/// A file's name, base, local and server contents.
type Sides<'a> = (&'a str, &'a [u8], &'a [u8], &'a [u8]);

/// Update/update conflicts on `names` under `r/`: base, local and server
/// contents given per file. Returns the conflict id of each name.
async fn conflicts_on(
    cell: &client::memserver::MemCell,
    c: &Client,
    files: &[Sides<'_>],
) -> Vec<u64> {
    c.mkdir(0, "r").await.unwrap();
    for (name, base, _, _) in files {
        c.write_file(0, &format!("r/{name}"), base).await.unwrap();
        c.read_file(0, &format!("r/{name}")).await.unwrap();
    }
    down(cell, c, true);
    for (name, _, mine, _) in files {
        c.write_file(0, &format!("r/{name}"), mine).await.unwrap();
    }
    cell.third_party(|tp| {
        for (name, _, _, theirs) in files {
            tp.write(&format!("r/{name}"), theirs);
        }
    });
    down(cell, c, false);
    until_synced(c).await;
    let all = c.afs.conflicts(None);
    files
        .iter()
        .map(|(name, ..)| {
            all.iter()
                .find(|x| x.path.ends_with(&format!("r/{name}")))
                .unwrap_or_else(|| panic!("no conflict on {name}: {all:?}"))
                .id
        })
        .collect()
}

fn server(cell: &client::memserver::MemCell, path: &str) -> Option<Vec<u8>> {
    cell.third_party(|tp| tp.read(path))
}

#[test]
fn each_resolution_leaves_exactly_what_it_says() {
    rt().block_on(async {
        let (cell, cs) = setup(1, common::StoreKind::Memory, 64);
        let c = &cs[0];
        let ids = conflicts_on(
            &cell,
            c,
            &[
                ("kl.txt", b"base kl", b"mine kl", b"theirs kl"),
                ("kr.txt", b"base kr", b"mine kr", b"theirs kr"),
                ("sl.txt", b"base sl", b"mine sl", b"theirs sl"),
                ("sb.txt", b"base sb", b"mine sb", b"theirs sb"),
            ],
        )
        .await;
        let (kl, kr, sl, sb) = (ids[0], ids[1], ids[2], ids[3]);
        // Not another user's to resolve.
        assert_eq!(
            errno(c.afs.resolve(1000, kl, &Resolution::KeepLocal).await).unwrap_err(),
            libc::EACCES
        );
        c.afs.resolve(0, kl, &Resolution::KeepLocal).await.unwrap();
        assert_eq!(server(&cell, "r/kl.txt").unwrap(), b"mine kl");
        assert_eq!(c.read_file(0, "r/kl.txt").await.unwrap(), b"mine kl");

        c.afs.resolve(0, kr, &Resolution::KeepRemote).await.unwrap();
        assert_eq!(server(&cell, "r/kr.txt").unwrap(), b"theirs kr");
        assert_eq!(c.read_file(0, "r/kr.txt").await.unwrap(), b"theirs kr");
        // Kept until purged.
        assert_eq!(
            c.afs
                .conflict_data(0, kr, client::ConflictSide::Local)
                .unwrap(),
            b"mine kr"
        );

        let r = c.afs.resolve(0, sl, &Resolution::StashLocal).await.unwrap();
        assert_eq!(r.made, vec![format!("sl (conflict {sl} local).txt")]);
        assert_eq!(server(&cell, "r/sl.txt").unwrap(), b"theirs sl");
        assert_eq!(
            server(&cell, &format!("r/sl (conflict {sl} local).txt")).unwrap(),
            b"mine sl"
        );

        c.afs.resolve(0, sb, &Resolution::StashBoth).await.unwrap();
        assert_eq!(server(&cell, "r/sb.txt"), None, "the original name goes");
        assert_eq!(
            server(&cell, &format!("r/sb (conflict {sb} server).txt")).unwrap(),
            b"theirs sb"
        );
        assert_eq!(
            server(&cell, &format!("r/sb (conflict {sb} local).txt")).unwrap(),
            b"mine sb"
        );
        assert!(
            c.afs.conflicts(None).is_empty(),
            "{:?}",
            c.afs.conflicts(None)
        );
        assert!(c.afs.volume_status().iter().all(|v| v.conflicts == 0));
        // The purge drops what keep-remote kept.
        assert_eq!(c.afs.purge_resolved(0, Some(kr), 0).unwrap(), 1);
        assert!(c
            .afs
            .conflict_data(0, kr, client::ConflictSide::Local)
            .is_err());
    });
}

#[test]
fn keep_local_never_overwrites_a_server_that_moved_again() {
    rt().block_on(async {
        let (cell, cs) = setup(1, common::StoreKind::Memory, 64);
        let c = &cs[0];
        let ids = conflicts_on(&cell, c, &[("m.txt", b"base", b"mine", b"theirs")]).await;
        cell.third_party(|tp| tp.write("r/m.txt", b"theirs, again"));
        let e = c
            .afs
            .resolve(0, ids[0], &Resolution::KeepLocal)
            .await
            .unwrap_err();
        assert_eq!(e.errno(), libc::EBUSY, "{e}");
        assert_eq!(server(&cell, "r/m.txt").unwrap(), b"theirs, again");
        assert_eq!(c.afs.conflicts(None).len(), 1, "the conflict stays");
    });
}

#[test]
fn offline_a_resolution_is_logged_and_replayed() {
    rt().block_on(async {
        let (cell, cs) = setup(1, common::StoreKind::Memory, 64);
        let c = &cs[0];
        let ids = conflicts_on(&cell, c, &[("o.txt", b"base", b"mine", b"theirs")]).await;
        c.afs.go_offline(&Targets::All).unwrap();
        c.afs
            .resolve(0, ids[0], &Resolution::KeepLocal)
            .await
            .unwrap();
        assert_eq!(server(&cell, "r/o.txt").unwrap(), b"theirs", "not yet");
        c.afs.go_online(&Targets::All, false).await.unwrap();
        until_synced(c).await;
        assert_eq!(server(&cell, "r/o.txt").unwrap(), b"mine");
        assert!(c.afs.conflicts(None).is_empty());
    });
}

#[test]
fn text_merges_clean_edits_and_stashes_overlapping_ones() {
    rt().block_on(async {
        let (cell, cs) = setup(1, common::StoreKind::Memory, 64);
        let c = &cs[0];
        let base = b"one\ntwo\nthree\nfour\nfive\n";
        let ids = conflicts_on(
            &cell,
            c,
            &[
                (
                    "clean.txt",
                    base,
                    b"ONE\ntwo\nthree\nfour\nfive\n",
                    b"one\ntwo\nthree\nfour\nFIVE\n",
                ),
                (
                    "overlap.txt",
                    base,
                    b"one\nMINE\nthree\nfour\nfive\n",
                    b"one\nTHEIRS\nthree\nfour\nfive\n",
                ),
            ],
        )
        .await;
        let text = Resolution::Merge("text".into());
        c.afs.resolve(0, ids[0], &text).await.unwrap();
        assert_eq!(
            server(&cell, "r/clean.txt").unwrap(),
            b"ONE\ntwo\nthree\nfour\nFIVE\n"
        );
        let r = c.afs.resolve(0, ids[1], &text).await.unwrap();
        assert_eq!(r.made.len(), 2, "{r:?}");
        let mine = server(&cell, &format!("r/overlap (conflict {} local).txt", ids[1])).unwrap();
        let mine = String::from_utf8(mine).unwrap();
        assert!(
            mine.contains("<<<<<<<") && mine.contains("MINE") && mine.contains("THEIRS"),
            "{mine}"
        );
        assert_eq!(
            server(
                &cell,
                &format!("r/overlap (conflict {} server).txt", ids[1])
            )
            .unwrap(),
            b"one\nTHEIRS\nthree\nfour\nfive\n"
        );
        assert!(c.afs.conflicts(None).is_empty());
        assert!(c.afs.resolve(0, 999, &text).await.is_err());
    });
}

#[test]
fn an_external_resolver_merges_or_leaves_markers() {
    rt().block_on(async {
        let cell = client::memserver::MemCell::new(common::CELL);
        cell.third_party(|tp| {
            tp.set_acl(
                "",
                &[(client::memserver::ANYUSER, client::memserver::rights::ALL)],
                &[],
            )
        });
        let mut config = client::ClientConfig::new("/nonexistent".into(), "/nonexistent".into());
        config.chunk_size = 64;
        // Appends the server's lines to ours; "picky" gives up with markers.
        config
            .resolvers
            .insert("append".into(), "cat %B >> %A".into());
        config
            .resolvers
            .insert("picky".into(), "echo '>>>>>>> %K' >> %A; exit 1".into());
        // "refuser" leaves %A alone and says why, as the sqlite one does.
        config.resolvers.insert(
            "refuser".into(),
            "echo 'row 3 changed on both sides' >&2; exit 1".into(),
        );
        let c = common::client_with(
            &cell,
            std::sync::Arc::new(cache::MemoryStore::new()),
            config,
            std::sync::Arc::new(client::Stats::default()),
        );
        let ids = conflicts_on(
            &cell,
            &c,
            &[
                ("a.txt", b"base\n", b"mine\n", b"theirs\n"),
                ("p.txt", b"base\n", b"mine\n", b"theirs\n"),
                ("q.txt", b"base\n", b"mine\n", b"theirs\n"),
            ],
        )
        .await;
        c.afs
            .resolve(0, ids[0], &Resolution::Merge("append".into()))
            .await
            .unwrap();
        assert_eq!(server(&cell, "r/a.txt").unwrap(), b"mine\ntheirs\n");
        let r = c
            .afs
            .resolve(0, ids[1], &Resolution::Merge("picky".into()))
            .await
            .unwrap();
        assert_eq!(r.made.len(), 2);
        assert_eq!(
            server(&cell, &format!("r/p (conflict {} local).txt", ids[1])).unwrap(),
            b"mine\n>>>>>>> update/update\n"
        );
        assert!(r.outcome.contains("picky left conflicts"), "{}", r.outcome);
        let r = c
            .afs
            .resolve(0, ids[2], &Resolution::Merge("refuser".into()))
            .await
            .unwrap();
        let (theirs, mine) = (
            format!("q (conflict {} server).txt", ids[2]),
            format!("q (conflict {} local).txt", ids[2]),
        );
        assert_eq!(
            r.outcome,
            format!(
                "refuser refused: row 3 changed on both sides; kept both: {theirs} (the server's), {mine} (yours)"
            )
        );
        assert_eq!(server(&cell, &format!("r/{mine}")).unwrap(), b"mine\n");
        assert_eq!(server(&cell, &format!("r/{theirs}")).unwrap(), b"theirs\n");
        assert!(server(&cell, "r/q.txt").is_none());
        let e = c
            .afs
            .resolve(0, ids[1], &Resolution::Merge("nope".into()))
            .await
            .unwrap_err();
        assert!(
            e.to_string().contains("no conflict") || e.to_string().contains("no resolver"),
            "{e}"
        );
    });
}

async fn read_all(c: &Client, uid: u32, ino: u64) -> Result<Vec<u8>, i32> {
    let fh = errno(c.afs.open(uid, ino, libc::O_RDONLY).await)?;
    let mut out = Vec::new();
    loop {
        let b = errno(c.afs.read(uid, fh, out.len() as u64, 4096).await)?;
        if b.is_empty() {
            break;
        }
        out.extend(b);
    }
    errno(c.afs.release(fh, None).await)?;
    Ok(out)
}

#[test]
fn the_conflict_tree_shows_each_user_their_own() {
    rt().block_on(async {
        let (cell, cs) = setup(1, common::StoreKind::Memory, 64);
        let c = &cs[0];
        let ids = conflicts_on(&cell, c, &[("t.txt", b"base t", b"mine t", b"theirs t")]).await;
        let id = ids[0].to_string();
        let root = client::ROOT_INO;
        let afsd = errno(c.afs.lookup(0, root, b".afsd").await).unwrap().ino;
        let tree = errno(c.afs.lookup(0, afsd, b"conflicts").await)
            .unwrap()
            .ino;
        let names = |v: Vec<client::DirEntryOut>| -> Vec<String> {
            v.into_iter()
                .map(|e| String::from_utf8(e.name).unwrap())
                .filter(|n| n != "." && n != "..")
                .collect()
        };
        assert!(names(c.afs.readdir(0, root).await.unwrap()).contains(&".afsd".to_string()));
        assert_eq!(
            names(c.afs.readdir(0, tree).await.unwrap()),
            vec![id.clone()]
        );
        let dir = errno(c.afs.lookup(0, tree, id.as_bytes()).await)
            .unwrap()
            .ino;
        let mut files = names(c.afs.readdir(0, dir).await.unwrap());
        files.sort();
        assert_eq!(files, ["base", "info.json", "local", "server"]);
        let file = |name: &'static str| async move {
            errno(c.afs.lookup(0, dir, name.as_bytes()).await).unwrap()
        };
        for (name, want) in [
            ("base", &b"base t"[..]),
            ("local", b"mine t"),
            ("server", b"theirs t"),
        ] {
            let a = file(name).await;
            assert_eq!(a.size, want.len() as u64, "{name}");
            assert_eq!(read_all(c, 0, a.ino).await.unwrap(), want, "{name}");
        }
        let info = read_all(c, 0, file("info.json").await.ino).await.unwrap();
        let info: serde_json::Value = serde_json::from_slice(&info).unwrap();
        assert_eq!(info["conflict"]["kind"], "update/update");
        assert_eq!(info["states"]["server"]["length"], 8);
        // Read-only.
        let local = file("local").await.ino;
        assert_eq!(
            errno(c.afs.open(0, local, libc::O_WRONLY).await).unwrap_err(),
            libc::EROFS
        );
        // Another user sees none of it.
        assert!(names(c.afs.readdir(1000, tree).await.unwrap()).is_empty());
        assert_eq!(
            errno(c.afs.lookup(1000, tree, id.as_bytes()).await).unwrap_err(),
            libc::ENOENT
        );
        assert_eq!(
            errno(c.afs.open(1000, local, libc::O_RDONLY).await).unwrap_err(),
            libc::ENOENT
        );
        // Resolved: gone from the tree.
        c.afs
            .resolve(0, ids[0], &Resolution::KeepRemote)
            .await
            .unwrap();
        assert!(names(c.afs.readdir(0, tree).await.unwrap()).is_empty());
    });
}
