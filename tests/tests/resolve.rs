//! Conflicts resolved against the real cell: update/update conflicts made
//! offline against the third-party tool's changes show their three states
//! (xattrs, `conflict show`, `conflict cat --server`, `conflict diff`), and
//! each resolution ends with exactly the bytes and names expected on the
//! server (read with the third-party tool) and in the mount, and
//! `afsd-rs conflicts` empty.

use std::fs;
use std::path::Path;
use std::time::Duration;

use afsd_tests::{getxattr, wait_until, Cell, Conflict, Mount};

/// Mount options: not a short dead time (see tests/offline.rs).
const DEAD: &[&str] = &["--dead-time", "20"];

fn server_cat(cell: &Cell, rel: &str) -> Option<Vec<u8>> {
    let tool = cell.var("THIRD_PARTY").to_string();
    let out = cell.client_exec(&[&tool, "-k", "cat", &cell.rw(rel)], None);
    out.status.success().then_some(out.stdout)
}

fn xattr(p: &Path, name: &str) -> String {
    String::from_utf8(
        getxattr(p, name).unwrap_or_else(|e| panic!("{name} of {}: {e}", p.display())),
    )
    .unwrap()
}

fn id_of(cs: &[Conflict], name: &str) -> String {
    cs.iter()
        .find(|c| c.path.ends_with(&format!("/{name}")) && c.kind == "update/update")
        .unwrap_or_else(|| panic!("no update/update conflict on {name}: {cs:?}"))
        .id
        .clone()
}

#[test]
fn three_states_and_every_resolution_against_the_server() {
    let cell = Cell::from_env();
    let m = Mount::new(&cell, DEAD);
    let rel = format!("shared/resolve-{}", std::process::id());
    let root = m.path(&format!(".{}/{rel}", cell.cell()));
    fs::create_dir(&root).unwrap();
    fs::create_dir(root.join("objs")).unwrap();
    let base_text = "one\ntwo\nthree\nfour\nfive\n";
    let files: Vec<(String, String, String, String)> = vec![
        ("kl.txt", "base kl\n", "local kl\n", "server kl\n"),
        ("kr.txt", "base kr\n", "local kr\n", "server kr\n"),
        ("sl.txt", "base sl\n", "local sl\n", "server sl\n"),
        ("sb.txt", "base sb\n", "local sb\n", "server sb\n"),
        (
            "mg.txt",
            base_text,
            "ONE\ntwo\nthree\nfour\nfive\n",
            "one\ntwo\nthree\nfour\nFIVE\n",
        ),
        (
            "ov.txt",
            base_text,
            "one\nMINE\nthree\nfour\nfive\n",
            "one\nTHEIRS\nthree\nfour\nfive\n",
        ),
        ("objs/a.o", "base a\n", "local a\n", "server a\n"),
        ("objs/b.o", "base b\n", "local b\n", "server b\n"),
    ]
    .into_iter()
    .map(|(a, b, c, d)| (a.into(), b.into(), c.into(), d.into()))
    .collect();
    for (name, base, _, _) in &files {
        fs::write(root.join(name), base).unwrap();
        assert_eq!(&fs::read_to_string(root.join(name)).unwrap(), base);
    }
    m.offline(&[&root]);
    for (name, _, local, _) in &files {
        fs::write(root.join(name), local).unwrap();
    }
    // Offline: the base and local states of a pending change.
    let base = xattr(&root.join("kl.txt"), "afsd.base");
    let local = xattr(&root.join("kl.txt"), "afsd.local");
    assert!(
        base.contains(" len=8 ") && local.contains(" len=9 "),
        "{base}{local}"
    );
    assert!(xattr(&root.join("kl.txt"), "afsd.server").starts_with("unknown"));
    for (name, _, _, server) in &files {
        cell.put(&cell.rw(&format!("{rel}/{name}")), server.as_bytes());
    }
    m.online(&[&root]);
    m.wait_replayed(Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("{e}"));
    let cs = m.conflicts();
    assert_eq!(cs.len(), files.len(), "{cs:?}");

    // The three states of one: xattrs, show, cat, diff.
    let kl = id_of(&cs, "kl.txt");
    let conflict = xattr(&root.join("kl.txt"), "afsd.conflict");
    assert!(
        conflict.starts_with("kind=update/update") && conflict.contains(&format!(" id={kl} ")),
        "{conflict}"
    );
    assert!(xattr(&root.join("kl.txt"), "afsd.base").contains(" len=8 "));
    assert!(xattr(&root.join("kl.txt"), "afsd.local").contains(" len=9 "));
    assert!(xattr(&root.join("kl.txt"), "afsd.server").contains(" len=10 "));
    let show = m.afsd_ok(&["conflict", "show", &kl]);
    assert!(show.contains("base") && show.contains("server"), "{show}");
    let length = show.lines().find(|l| l.starts_with("length")).unwrap_or("");
    assert_eq!(
        length.split_whitespace().collect::<Vec<_>>(),
        vec!["length", "8", "9", "10"],
        "{show}"
    );
    let by_path = m.afsd_ok(&["conflict", "show", root.join("kl.txt").to_str().unwrap()]);
    assert_eq!(by_path, show);
    for (side, want) in [
        ("--base", "base kl\n"),
        ("--local", "local kl\n"),
        ("--server", "server kl\n"),
    ] {
        let out = m.afsd(&["conflict", "cat", side, &kl]);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            want,
            "conflict cat {side}"
        );
    }
    // The same versions as plain files, for programs; only the owner's.
    let tree = m.path(".afsd/conflicts");
    let mut ids: Vec<String> = fs::read_dir(&tree)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    ids.sort();
    let mut want: Vec<String> = cs.iter().map(|c| c.id.clone()).collect();
    want.sort();
    assert_eq!(ids, want);
    for (f, w) in [
        ("base", "base kl\n"),
        ("local", "local kl\n"),
        ("server", "server kl\n"),
    ] {
        assert_eq!(
            fs::read_to_string(tree.join(&kl).join(f)).unwrap(),
            w,
            "{f}"
        );
    }
    let info = fs::read_to_string(tree.join(&kl).join("info.json")).unwrap();
    assert!(info.contains("\"update/update\""), "{info}");
    assert!(
        fs::write(tree.join(&kl).join("local"), "x").is_err(),
        "read-only"
    );
    let alice = afsd_tests::run_as(afsd_tests::ALICE_UID, &["ls", "-A", tree.to_str().unwrap()]);
    assert!(
        alice.status.success() && alice.stdout.is_empty(),
        "alice sees none of root's conflicts: {:?}",
        alice
    );
    let diff = m.afsd_ok(&["conflict", "diff", &kl, "base..server"]);
    assert!(
        diff.contains("-base kl") && diff.contains("+server kl"),
        "{diff}"
    );

    // Each resolution.
    let resolve = |how: &str, id: &str| m.afsd_ok(&["resolve", how, id]);
    resolve("--keep-local", &kl);
    resolve("--keep-remote", &id_of(&cs, "kr.txt"));
    let sl = id_of(&cs, "sl.txt");
    resolve("--stash-local", &sl);
    let sb = id_of(&cs, "sb.txt");
    resolve("--stash-both", &sb);
    let (mg, ov) = (id_of(&cs, "mg.txt"), id_of(&cs, "ov.txt"));
    resolve("--merge=text", &mg);
    resolve("--merge", &ov);
    m.afsd_ok(&[
        "resolve",
        "-r",
        "--keep-remote",
        root.join("objs").to_str().unwrap(),
    ]);
    assert!(m.conflicts().is_empty(), "{:?}", m.conflicts());

    let expect = [
        ("kl.txt".to_string(), Some("local kl\n")),
        ("kr.txt".to_string(), Some("server kr\n")),
        ("sl.txt".to_string(), Some("server sl\n")),
        (format!("sl (conflict {sl} local).txt"), Some("local sl\n")),
        ("sb.txt".to_string(), None),
        (
            format!("sb (conflict {sb} server).txt"),
            Some("server sb\n"),
        ),
        (format!("sb (conflict {sb} local).txt"), Some("local sb\n")),
        ("mg.txt".to_string(), Some("ONE\ntwo\nthree\nfour\nFIVE\n")),
        (
            format!("ov (conflict {ov} server).txt"),
            Some("one\nTHEIRS\nthree\nfour\nfive\n"),
        ),
        ("objs/a.o".to_string(), Some("server a\n")),
        ("objs/b.o".to_string(), Some("server b\n")),
    ];
    for (name, want) in &expect {
        let on_server = server_cat(&cell, &format!("{rel}/{name}"));
        assert_eq!(
            on_server.as_deref().map(String::from_utf8_lossy).as_deref(),
            *want,
            "{name} on the server"
        );
        // Made by the daemon, not through the kernel: a name or page the
        // kernel cached may last its 1 s TTL.
        let here = || match want {
            Some(w) => fs::read_to_string(root.join(name)).ok().as_deref() == Some(*w),
            None => !root.join(name).exists(),
        };
        assert!(
            wait_until(Duration::from_secs(5), here),
            "{name} here: {:?}",
            fs::read_to_string(root.join(name))
        );
    }
    let marked = fs::read_to_string(root.join(format!("ov (conflict {ov} local).txt"))).unwrap();
    assert!(
        marked.contains("<<<<<<<") && marked.contains("MINE") && marked.contains("THEIRS"),
        "{marked}"
    );
    // keep-remote kept the local versions until the purge.
    m.afsd_ok(&["resolve", "--purge"]);
    m.stop();
}

/// The data version `afsd.state` shows (`... dv=N`).
fn dv(p: &Path) -> u64 {
    let s = xattr(p, "afsd.state");
    s.split_whitespace()
        .find_map(|f| f.strip_prefix("dv=")?.parse().ok())
        .unwrap_or_else(|| panic!("no dv in {s:?}"))
}

#[test]
fn a_thousand_build_products_resolved_by_one_rule() {
    const N: usize = 1000;
    let cell = Cell::from_env();
    let m = Mount::new(&cell, DEAD);
    // The other client, changing the server while this one is offline.
    let other = Mount::new(&cell, DEAD);
    let rel = format!("shared/rules-{}", std::process::id());
    let root = m.path(&format!(".{}/{rel}", cell.cell()));
    let theirs = other.path(&format!(".{}/{rel}", cell.cell()));
    fs::create_dir_all(root.join("build")).unwrap();
    fs::write(root.join("notes.txt"), "base\n").unwrap();
    for i in 0..N {
        fs::write(root.join(format!("build/f{i}.o")), format!("base {i}\n")).unwrap();
    }
    assert_eq!(fs::read_dir(root.join("build")).unwrap().count(), N);
    m.offline(&[&root]);
    for i in 0..N {
        fs::write(root.join(format!("build/f{i}.o")), format!("local {i}\n")).unwrap();
    }
    fs::write(root.join("notes.txt"), "local notes\n").unwrap();
    for i in 0..N {
        fs::write(
            theirs.join(format!("build/f{i}.o")),
            format!("server {i}\n"),
        )
        .unwrap();
    }
    fs::write(theirs.join("notes.txt"), "server notes\n").unwrap();
    m.online(&[&root]);
    m.wait_replayed(Duration::from_secs(600))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(m.conflicts().len(), N + 1);
    let dvs: Vec<u64> = (0..N)
        .map(|i| dv(&theirs.join(format!("build/f{i}.o"))))
        .collect();

    let rules = afsd_tests::scratch("rules").join("resolve.toml");
    fs::write(
        &rules,
        "[[rule]]\nglob = \"*.o\"\nkind = \"update/update\"\naction = \"keep-remote\"\n",
    )
    .unwrap();
    let rules = rules.to_str().unwrap();
    let dir = root.to_str().unwrap();
    let dry = m.afsd_ok(&["resolve", "--rules", rules, "--dry-run", dir]);
    let decided = dry
        .lines()
        .filter(|l| l.contains(".o -> keep-remote (rule 1"))
        .count();
    assert_eq!(
        decided,
        N,
        "every .o decided by the rule:\n{}",
        &dry[..dry.len().min(2000)]
    );
    assert!(
        dry.lines()
            .any(|l| l.contains("notes.txt -> leave (no rule matches)")),
        "{dry}"
    );
    assert!(
        dry.contains(&format!(
            "{} conflicts: {N} keep-remote, 1 leave (dry run: nothing changed)",
            N + 1
        )),
        "{}",
        dry.lines().last().unwrap_or("")
    );
    // The dry run changed nothing.
    assert_eq!(m.conflicts().len(), N + 1);
    let after: Vec<u64> = (0..N)
        .map(|i| dv(&theirs.join(format!("build/f{i}.o"))))
        .collect();
    assert_eq!(after, dvs, "server data versions unchanged by the dry run");

    m.afsd_ok(&["resolve", "--rules", rules, "--apply", dir]);
    let left = m.conflicts();
    assert_eq!(left.len(), 1, "only notes.txt is left: {left:?}");
    assert!(left[0].path.ends_with("notes.txt"));
    for i in [0, N / 2, N - 1] {
        assert_eq!(
            fs::read_to_string(root.join(format!("build/f{i}.o"))).unwrap(),
            format!("server {i}\n")
        );
    }
    m.afsd_ok(&["resolve", "--purge"]);
    other.stop();
    m.stop();
}

/// An SQLite database as bytes: `sql` run on a fresh file.
fn sqlite_db(sql: &str) -> Vec<u8> {
    let dir = afsd_tests::scratch("sqlite");
    let p = dir.join("db");
    let c = rusqlite::Connection::open(&p).unwrap();
    c.execute_batch(sql).unwrap();
    c.close().unwrap();
    let bytes = fs::read(&p).unwrap();
    let _ = fs::remove_dir_all(&dir);
    bytes
}

/// The rows of table `notes` in database bytes `db`, by id.
fn notes(db: &[u8]) -> Vec<(i64, String)> {
    let dir = afsd_tests::scratch("sqlite-read");
    let p = dir.join("db");
    fs::write(&p, db).unwrap();
    let c = rusqlite::Connection::open(&p).unwrap();
    let rows = c
        .prepare("SELECT id, body FROM notes ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<rusqlite::Result<Vec<_>>>()
        .unwrap();
    drop(c);
    let _ = fs::remove_dir_all(&dir);
    rows
}

#[test]
fn sqlite_databases_merge_row_by_row_or_keep_both() {
    const BASE: &str = "CREATE TABLE notes(id INTEGER PRIMARY KEY, body TEXT NOT NULL);
        INSERT INTO notes VALUES (1, 'one'), (2, 'two'), (3, 'three');";
    let cell = Cell::from_env();
    let m = Mount::new(&cell, DEAD);
    let rel = format!("shared/sqlite-{}", std::process::id());
    let root = m.path(&format!(".{}/{rel}", cell.cell()));
    fs::create_dir(&root).unwrap();
    let base = sqlite_db(BASE);
    // union.db: different rows inserted and updated on each side;
    // clash.db: row 2 updated on both.
    let union_local = sqlite_db(&format!(
        "{BASE} INSERT INTO notes VALUES (10, 'written offline');
         UPDATE notes SET body = 'one, edited offline' WHERE id = 1;"
    ));
    let union_server = sqlite_db(&format!(
        "{BASE} INSERT INTO notes VALUES (20, 'written by the third party');
         UPDATE notes SET body = 'three, edited on the server' WHERE id = 3;"
    ));
    let clash_local = sqlite_db(&format!(
        "{BASE} UPDATE notes SET body = 'two, mine' WHERE id = 2;"
    ));
    let clash_server = sqlite_db(&format!(
        "{BASE} UPDATE notes SET body = 'two, theirs' WHERE id = 2;"
    ));
    for name in ["union.db", "clash.db"] {
        fs::write(root.join(name), &base).unwrap();
        assert_eq!(fs::read(root.join(name)).unwrap(), base);
    }
    m.offline(&[&root]);
    fs::write(root.join("union.db"), &union_local).unwrap();
    fs::write(root.join("clash.db"), &clash_local).unwrap();
    cell.put(&cell.rw(&format!("{rel}/union.db")), &union_server);
    cell.put(&cell.rw(&format!("{rel}/clash.db")), &clash_server);
    m.online(&[&root]);
    m.wait_replayed(Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("{e}"));
    let cs = m.conflicts();
    assert_eq!(cs.len(), 2, "{cs:?}");
    // Resolved below by path (union.db) and by id (clash.db).
    id_of(&cs, "union.db");
    let clash = id_of(&cs, "clash.db");

    // The union: both sides' inserts and updates.
    let out = m.afsd_ok(&[
        "resolve",
        "--merge=sqlite",
        root.join("union.db").to_str().unwrap(),
    ]);
    assert!(out.contains("sqlite merged it into union.db"), "{out}");
    let merged = server_cat(&cell, &format!("{rel}/union.db")).expect("union.db on the server");
    let want: Vec<(i64, String)> = [
        (1, "one, edited offline"),
        (2, "two"),
        (3, "three, edited on the server"),
        (10, "written offline"),
        (20, "written by the third party"),
    ]
    .iter()
    .map(|(i, b)| (*i, b.to_string()))
    .collect();
    assert_eq!(notes(&merged), want);

    // Row 2 changed on both sides: refused with the reason, both kept.
    let out = m.afsd_ok(&["resolve", "--merge=sqlite", &clash]);
    let (theirs, mine) = (
        format!("clash (conflict {clash} server).db"),
        format!("clash (conflict {clash} local).db"),
    );
    assert!(
        out.contains(
            "sqlite refused: row id=2 of table notes changed on both sides \
             (updated in yours, updated on the server)"
        ) && out.contains(&format!(
            "kept both: {theirs} (the server's), {mine} (yours)"
        )),
        "{out}"
    );
    assert!(m.conflicts().is_empty(), "{:?}", m.conflicts());
    assert_eq!(server_cat(&cell, &format!("{rel}/clash.db")), None);
    assert_eq!(
        server_cat(&cell, &format!("{rel}/{theirs}")).as_deref(),
        Some(clash_server.as_slice()),
        "the server's copy"
    );
    assert_eq!(
        server_cat(&cell, &format!("{rel}/{mine}")).as_deref(),
        Some(clash_local.as_slice()),
        "yours, untouched"
    );
    // And the same through the mount.
    let here = || {
        fs::read(root.join(&mine)).ok().as_deref() == Some(clash_local.as_slice())
            && fs::read(root.join(&theirs)).ok().as_deref() == Some(clash_server.as_slice())
            && !root.join("clash.db").exists()
            && fs::read(root.join("union.db")).ok().as_deref() == Some(merged.as_slice())
    };
    assert!(wait_until(Duration::from_secs(5), here), "the mount's view");
    m.stop();
}
