//! Unit tests of the sqlite resolver: each reason to refuse, and the
//! merges it must make.

use super::*;

/// A database at `dir/name` made by `sql`.
fn db(dir: &Path, name: &str, sql: &str) -> PathBuf {
    let p = dir.join(name);
    let c = Connection::open(&p).unwrap();
    c.execute_batch(sql).unwrap();
    c.close().unwrap();
    p
}

const BASE: &str = "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);
    INSERT INTO t VALUES (1, 'one'), (2, 'two'), (3, 'three');";

/// Base, local and server databases: BASE then each side's SQL.
fn sides(mine: &str, theirs: &str) -> (tempfile::TempDir, PathBuf, PathBuf, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let b = db(d.path(), "base.db", BASE);
    let l = db(d.path(), "local.db", &format!("{BASE}{mine}"));
    let s = db(d.path(), "server.db", &format!("{BASE}{theirs}"));
    (d, b, l, s)
}

fn rows(p: &Path) -> Vec<(i64, String)> {
    let c = Connection::open(p).unwrap();
    let mut st = c.prepare("SELECT id, v FROM t ORDER BY id").unwrap();
    let r = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
    r.collect::<rusqlite::Result<_>>().unwrap()
}

fn refused(v: Verdict) -> String {
    match v {
        Verdict::Refused(why) => why,
        other => panic!("not refused: {other:?}"),
    }
}

#[test]
fn inserts_and_updates_on_different_rows_merge_to_the_union() {
    let (_d, b, l, s) = sides(
        "INSERT INTO t VALUES (10, 'mine'); UPDATE t SET v = 'ONE' WHERE id = 1;",
        "INSERT INTO t VALUES (20, 'theirs'); UPDATE t SET v = 'THREE' WHERE id = 3;",
    );
    let v = merge(&b, &l, &s).unwrap();
    assert_eq!(
        v,
        Verdict::Merged {
            applied: 2,
            alike: 0
        }
    );
    let want = [
        (1, "ONE"),
        (2, "two"),
        (3, "THREE"),
        (10, "mine"),
        (20, "theirs"),
    ];
    let want: Vec<(i64, String)> = want.iter().map(|(i, v)| (*i, v.to_string())).collect();
    assert_eq!(rows(&l), want);
    // The server's input is never written.
    assert_eq!(rows(&s).len(), 4);
}

#[test]
fn a_row_changed_on_both_sides_is_refused_and_local_left_alone() {
    let (_d, b, l, s) = sides(
        "UPDATE t SET v = 'mine' WHERE id = 2; INSERT INTO t VALUES (10, 'x');",
        "UPDATE t SET v = 'theirs' WHERE id = 2;",
    );
    let before = std::fs::read(&l).unwrap();
    let why = refused(merge(&b, &l, &s).unwrap());
    assert!(
        why.contains(
            "row id=2 of table t changed on both sides (updated in yours, updated on the server)"
        ),
        "{why}"
    );
    assert_eq!(std::fs::read(&l).unwrap(), before);
    // An update against a delete too.
    let (_d, b, l, s) = sides(
        "UPDATE t SET v = 'mine' WHERE id = 2;",
        "DELETE FROM t WHERE id = 2;",
    );
    let why = refused(merge(&b, &l, &s).unwrap());
    assert!(
        why.contains("updated in yours, deleted on the server"),
        "{why}"
    );
}

#[test]
fn the_same_change_on_both_sides_merges() {
    let (_d, b, l, s) = sides(
        "UPDATE t SET v = 'same' WHERE id = 2; INSERT INTO t VALUES (7, 'both');
         DELETE FROM t WHERE id = 3; INSERT INTO t VALUES (8, 'mine');",
        "UPDATE t SET v = 'same' WHERE id = 2; INSERT INTO t VALUES (7, 'both');
         DELETE FROM t WHERE id = 3;",
    );
    assert_eq!(
        merge(&b, &l, &s).unwrap(),
        Verdict::Merged {
            applied: 4,
            alike: 3
        }
    );
    let got: Vec<i64> = rows(&l).into_iter().map(|r| r.0).collect();
    assert_eq!(got, vec![1, 2, 7, 8]);
}

#[test]
fn deletes_on_one_side_are_applied() {
    let (_d, b, l, s) = sides(
        "DELETE FROM t WHERE id = 1;",
        "INSERT INTO t VALUES (4, 'four');",
    );
    assert!(matches!(merge(&b, &l, &s).unwrap(), Verdict::Merged { .. }));
    let got: Vec<i64> = rows(&l).into_iter().map(|r| r.0).collect();
    assert_eq!(got, vec![2, 3, 4]);
}

#[test]
fn a_schema_change_is_refused() {
    let (_d, b, l, s) = sides(
        "",
        "ALTER TABLE t ADD COLUMN w INTEGER; INSERT INTO t VALUES (5, 'five', 1);",
    );
    let why = refused(merge(&b, &l, &s).unwrap());
    assert!(
        why.contains("the schema changed on the server side (table t was altered)"),
        "{why}"
    );
    let (_d, b, l, s) = sides("CREATE INDEX tv ON t(v);", "");
    let why = refused(merge(&b, &l, &s).unwrap());
    assert!(why.contains("local side (index tv was added)"), "{why}");
    let (_d, b, l, s) = sides("PRAGMA user_version = 2;", "");
    let why = refused(merge(&b, &l, &s).unwrap());
    assert!(why.contains("user_version 2, was 0"), "{why}");
}

#[test]
fn a_table_without_a_primary_key_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let base = "CREATE TABLE log(at INTEGER, what TEXT); INSERT INTO log VALUES (1, 'a');";
    let b = db(d.path(), "b.db", base);
    let l = db(
        d.path(),
        "l.db",
        &format!("{base} INSERT INTO log VALUES (2, 'b');"),
    );
    let s = db(
        d.path(),
        "s.db",
        &format!("{base} INSERT INTO log VALUES (3, 'c');"),
    );
    let why = refused(merge(&b, &l, &s).unwrap());
    assert!(why.contains("table log has no PRIMARY KEY"), "{why}");
}

#[test]
fn a_null_primary_key_is_refused_rather_than_lost() {
    let d = tempfile::tempdir().unwrap();
    let base = "CREATE TABLE k(name TEXT PRIMARY KEY, v);";
    let b = db(d.path(), "b.db", base);
    let l = db(
        d.path(),
        "l.db",
        &format!("{base} INSERT INTO k VALUES (NULL, 1);"),
    );
    let s = db(d.path(), "s.db", base);
    let why = refused(merge(&b, &l, &s).unwrap());
    assert!(
        why.contains("NULL primary key in the local version"),
        "{why}"
    );
}

#[test]
fn a_unique_clash_is_refused_with_the_row() {
    let d = tempfile::tempdir().unwrap();
    let base = "CREATE TABLE u(id INTEGER PRIMARY KEY, email TEXT UNIQUE);";
    let b = db(d.path(), "b.db", base);
    let l = db(
        d.path(),
        "l.db",
        &format!("{base} INSERT INTO u VALUES (1, 'a@x');"),
    );
    let s = db(
        d.path(),
        "s.db",
        &format!("{base} INSERT INTO u VALUES (2, 'a@x');"),
    );
    let why = refused(merge(&b, &l, &s).unwrap());
    assert!(
        why.contains("row id=1 of table u (inserted in yours)") && why.contains("UNIQUE"),
        "{why}"
    );
}

#[test]
fn triggers_do_not_fire_twice_and_stay() {
    let d = tempfile::tempdir().unwrap();
    let base = "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);
        CREATE TABLE n(id INTEGER PRIMARY KEY, c INTEGER);
        INSERT INTO n VALUES (1, 0);
        CREATE TRIGGER count AFTER INSERT ON t BEGIN
            INSERT INTO n VALUES (NEW.id + 100, 1);
        END;";
    let b = db(d.path(), "b.db", base);
    let l = db(
        d.path(),
        "l.db",
        &format!("{base} INSERT INTO t VALUES (1, 'a');"),
    );
    let s = db(
        d.path(),
        "s.db",
        &format!("{base} INSERT INTO t VALUES (2, 'b');"),
    );
    assert!(matches!(merge(&b, &l, &s).unwrap(), Verdict::Merged { .. }));
    let c = Connection::open(&l).unwrap();
    let n: i64 = c
        .query_row("SELECT count(*) FROM n", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 3, "one row of n per insert, none twice");
    c.execute("INSERT INTO t VALUES (3, 'c')", []).unwrap();
    let fired: i64 = c
        .query_row("SELECT count(*) FROM n WHERE id = 103", [], |r| r.get(0))
        .unwrap();
    assert_eq!(fired, 1, "the trigger is back");
}

#[test]
fn a_dangling_foreign_key_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let base = "CREATE TABLE p(id INTEGER PRIMARY KEY);
        CREATE TABLE c(id INTEGER PRIMARY KEY, p INTEGER REFERENCES p(id));
        INSERT INTO p VALUES (1);";
    let b = db(d.path(), "b.db", base);
    let l = db(
        d.path(),
        "l.db",
        &format!("{base} INSERT INTO c VALUES (5, 1);"),
    );
    let s = db(
        d.path(),
        "s.db",
        &format!("{base} DELETE FROM p WHERE id = 1;"),
    );
    let why = refused(merge(&b, &l, &s).unwrap());
    assert!(
        why.contains("row of table c (rowid 5)") && why.contains("foreign key"),
        "{why}"
    );
    // A cascade on your side is among your changes: it merges.
    let base = "CREATE TABLE p(id INTEGER PRIMARY KEY);
        CREATE TABLE c(id INTEGER PRIMARY KEY,
                       p INTEGER REFERENCES p(id) ON DELETE CASCADE);
        INSERT INTO p VALUES (1), (2); INSERT INTO c VALUES (5, 1), (6, 2);";
    let b = db(d.path(), "b2.db", base);
    let l = db(
        d.path(),
        "l2.db",
        &format!("{base} DELETE FROM p WHERE id = 1;"),
    );
    let s = db(
        d.path(),
        "s2.db",
        &format!("{base} INSERT INTO c VALUES (7, 2);"),
    );
    assert_eq!(
        merge(&b, &l, &s).unwrap(),
        Verdict::Merged {
            applied: 2,
            alike: 0
        }
    );
    let c = Connection::open(&l).unwrap();
    let left: Vec<i64> = c
        .prepare("SELECT id FROM c ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    assert_eq!(left, vec![6, 7]);
}

#[test]
fn a_wal_database_merges_to_a_whole_file() {
    let wal = "PRAGMA journal_mode = WAL;";
    let (_d, b, l, s) = sides(
        &format!("{wal} INSERT INTO t VALUES (10, 'mine');"),
        &format!("{wal} INSERT INTO t VALUES (20, 'theirs');"),
    );
    assert!(matches!(merge(&b, &l, &s).unwrap(), Verdict::Merged { .. }));
    // Read from a copy with no -wal beside it, as the daemon would.
    let d2 = tempfile::tempdir().unwrap();
    let copy = d2.path().join("copy.db");
    std::fs::copy(&l, &copy).unwrap();
    let got: Vec<i64> = rows(&copy).into_iter().map(|r| r.0).collect();
    assert_eq!(got, vec![1, 2, 3, 10, 20]);
}

#[test]
fn inputs_that_are_not_databases_fail_or_are_refused_cleanly() {
    let (d, b, l, s) = sides("", "");
    let junk = d.path().join("junk.db");
    std::fs::write(
        &junk,
        b"this is not a database, just some text\n".repeat(200),
    )
    .unwrap();
    let e = merge(&b, &l, &junk).unwrap_err();
    assert!(
        e.contains("the server version cannot be read as an SQLite database"),
        "{e}"
    );
    let e = merge(&b, &junk, &s).unwrap_err();
    assert!(e.contains("the local version"), "{e}");
    let e = merge(&b, &l, &d.path().join("absent.db")).unwrap_err();
    assert!(e.contains("the server version"), "{e}");
    // No base (never cached): refused, so the daemon keeps both.
    let empty = d.path().join("empty.db");
    std::fs::write(&empty, b"").unwrap();
    let why = refused(merge(&empty, &l, &s).unwrap());
    assert!(why.contains("no base version"), "{why}");
}

#[test]
fn the_command_quotes_the_executable() {
    assert_eq!(
        command(Path::new("/opt/it's/afsd-rs")),
        r"'/opt/it'\''s/afsd-rs' merge-sqlite %O %A %B"
    );
}
