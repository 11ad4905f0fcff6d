//! "Keep both" over the in-memory cell: a conflict's local version becomes
//! `STEM (conflict ID local).EXT` beside the server's, as the conflict's
//! uid, through the ordinary create and write path (so offline it is
//! logged and replayed); the conflict is then gone. Only its owner (or
//! root) may do it.

mod common;

use client::Targets;
use common::{down, errno, rt, setup, until_synced, StoreKind};

#[test]
fn keep_both_copies_the_local_version_beside_the_servers() {
    rt().block_on(async {
        let (cell, cs) = setup(1, StoreKind::Memory, 64);
        let c = &cs[0];
        c.mkdir(0, "k").await.unwrap();
        c.write_file(0, "k/uu.txt", b"base").await.unwrap();
        c.write_file(0, "k/ur", b"base").await.unwrap();
        c.tree(0, "k").await.unwrap();
        down(&cell, c, true);
        // More than one chunk of local data.
        let mine: Vec<u8> = (0..200u8).collect();
        c.write_file(0, "k/uu.txt", &mine).await.unwrap();
        c.write_file(0, "k/ur", b"mine ur").await.unwrap();
        cell.third_party(|tp| {
            tp.write("k/uu.txt", b"theirs uu");
            tp.remove("k/ur");
        });
        down(&cell, c, false);
        until_synced(c).await;
        let conflicts = c.afs.conflicts(None);
        let id_of = |kind: &str| conflicts.iter().find(|x| x.kind == kind).unwrap().id;
        let (uu, ur) = (id_of("update/update"), id_of("update/remove"));

        // Another user may not.
        assert_eq!(errno(c.afs.keep_both(1000, uu).await), Err(libc::EACCES));
        assert!(c.afs.conflicts(None).iter().any(|x| x.id == uu));

        // Connected: stored at once.
        let name = c.afs.keep_both(0, uu).await.unwrap();
        assert_eq!(name, format!("uu (conflict {uu} local).txt"));
        let on_server = |p: String| cell.third_party(move |tp| tp.read(&p));
        assert_eq!(on_server(format!("k/{name}")), Some(mine.clone()));
        assert_eq!(on_server("k/uu.txt".into()), Some(b"theirs uu".to_vec()));
        assert!(!c.afs.conflicts(None).iter().any(|x| x.id == uu));

        // Offline: logged, resolved at once, replayed later.
        down(&cell, c, true);
        c.afs.go_offline(&Targets::All).unwrap();
        let name = c.afs.keep_both(0, ur).await.unwrap();
        assert_eq!(name, format!("ur (conflict {ur} local)"));
        assert!(c.afs.conflicts(None).is_empty());
        assert_eq!(
            c.read_file(0, &format!("k/{name}")).await.unwrap(),
            b"mine ur"
        );
        assert_eq!(on_server(format!("k/{name}")), None);
        down(&cell, c, false);
        c.afs.go_online(&Targets::All, false).await.unwrap();
        until_synced(c).await;
        assert_eq!(on_server(format!("k/{name}")), Some(b"mine ur".to_vec()));
        assert!(c.afs.conflicts(None).is_empty());

        // A conflict that is no more.
        assert!(c.afs.keep_both(0, uu).await.is_err());
    });
}
