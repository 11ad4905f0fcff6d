//! The built-in `sqlite` resolver: `afsd-rs merge-sqlite BASE LOCAL SERVER`,
//! a merge driver (see `client/src/resolver.rs`) that the daemon registers
//! as `resolver.sqlite` unless its config file names another.
//!
//! A database changed on both sides is merged row by row from the base,
//! with SQLite's session extension: the changes base→local and
//! base→server are changesets, keyed by each table's primary key, and the
//! local one is applied to a copy of the server's database. It refuses,
//! leaving LOCAL as it was, whenever a row-level merge could silently lose
//! or invent data: a schema changed on either side, a table without a
//! primary key (its rows have no identity across versions), a row changed
//! on both sides differently, or a change the server's version cannot take
//! (a UNIQUE clash, a foreign key left dangling). The daemon then falls
//! back to stash-both, and the reason printed here reaches the user.
//!
//! Exit status: 0 merged (LOCAL holds the merge), 1 refused (the reason on
//! stderr, LOCAL untouched), 2 failed (an input is not a sound SQLite
//! database, or an I/O error; nothing changes).
//!
//! The inputs are plain files the daemon copied out of its cache (a `-wal`
//! or `-journal` beside the original is not among them), so the work is
//! done on copies in a private temporary directory, never on the inputs,
//! and the result replaces LOCAL by a rename: a crash leaves LOCAL whole.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use rusqlite::fallible_streaming_iterator::FallibleStreamingIterator;
use rusqlite::hooks::Action;
use rusqlite::session::{Changeset, ChangesetItem, ConflictAction, ConflictType, Session};
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, OpenFlags, ToSql};

/// What a merge came to (a failure is the `Err` of [`merge`]).
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// LOCAL now holds the server's database with your row changes.
    Merged {
        /// Your row changes applied.
        applied: usize,
        /// Of those, made on both sides alike (nothing to apply).
        alike: usize,
    },
    /// Not merged, LOCAL untouched: why, for the user.
    Refused(String),
}

/// `afsd-rs merge-sqlite BASE LOCAL SERVER`.
pub fn run(base: &Path, local: &Path, server: &Path) -> ExitCode {
    match merge(base, local, server) {
        Ok(Verdict::Merged { applied, alike }) => {
            println!(
                "merged: {applied} row change(s) of yours on the server's version \
                 ({alike} made alike on both sides)"
            );
            ExitCode::SUCCESS
        }
        Ok(Verdict::Refused(why)) => {
            eprintln!("{why}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("merge-sqlite: {e}");
            ExitCode::from(2)
        }
    }
}

/// The command the daemon runs for `--merge=sqlite`: this very executable,
/// so the resolver always matches the daemon that calls it.
pub fn command(exe: &Path) -> String {
    let exe = exe.display().to_string().replace('\'', r"'\''");
    format!("'{exe}' merge-sqlite %O %A %B")
}

/// Merges LOCAL's changes since BASE into SERVER's database, writing the
/// result over LOCAL; refuses (LOCAL untouched) when rows cannot be merged.
pub fn merge(base: &Path, local: &Path, server: &Path) -> Result<Verdict, String> {
    let size = |p: &Path, side: &str| {
        std::fs::metadata(p)
            .map(|m| m.len())
            .map_err(|e| format!("the {side} version {}: {e}", p.display()))
    };
    let base_len = size(base, "base")?;
    size(local, "local")?;
    size(server, "server")?;
    if base_len == 0 {
        // The daemon passes an empty base when it never cached one.
        return Ok(Verdict::Refused(
            "there is no base version (it was never cached), so rows cannot be matched \
             against it"
                .into(),
        ));
    }
    let work = tempfile::Builder::new()
        .prefix("afsd-merge-sqlite-")
        .tempdir()
        .map_err(|e| format!("a temporary directory: {e}"))?;
    let copy = |from: &Path, name: &str, side: &str| -> Result<PathBuf, String> {
        let to = work.path().join(name);
        std::fs::copy(from, &to)
            .map_err(|e| format!("copying the {side} version {}: {e}", from.display()))?;
        Ok(to)
    };
    let paths = Paths {
        merged: copy(server, "merged.db", "server")?,
        base: copy(base, "base.db", "base")?,
        local: copy(local, "local.db", "local")?,
    };
    let verdict = merge_copies(&paths)?;
    if matches!(verdict, Verdict::Merged { .. }) {
        publish(&paths.merged, local)?;
    }
    Ok(verdict)
}

/// The working copies: the server's (merged in place), the base, yours.
struct Paths {
    merged: PathBuf,
    base: PathBuf,
    local: PathBuf,
}

/// One side's name in messages, by the schema it is attached as.
fn side(db: &str) -> &'static str {
    match db {
        "base" => "base",
        "local" => "local",
        _ => "server",
    }
}

/// A column value, kept exactly (SQLite text need not be UTF-8).
#[derive(Clone, Debug, PartialEq)]
enum Cell {
    Null,
    Int(i64),
    Real(f64),
    Text(Vec<u8>),
    Blob(Vec<u8>),
}

impl From<ValueRef<'_>> for Cell {
    fn from(v: ValueRef<'_>) -> Cell {
        match v {
            ValueRef::Null => Cell::Null,
            ValueRef::Integer(i) => Cell::Int(i),
            ValueRef::Real(r) => Cell::Real(r),
            ValueRef::Text(t) => Cell::Text(t.to_vec()),
            ValueRef::Blob(b) => Cell::Blob(b.to_vec()),
        }
    }
}

impl ToSql for Cell {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            Cell::Null => ValueRef::Null,
            Cell::Int(i) => ValueRef::Integer(*i),
            Cell::Real(r) => ValueRef::Real(*r),
            Cell::Text(t) => ValueRef::Text(t),
            Cell::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

impl std::fmt::Display for Cell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cell::Null => f.write_str("NULL"),
            Cell::Int(i) => write!(f, "{i}"),
            Cell::Real(r) => write!(f, "{r}"),
            Cell::Text(t) => {
                let s = String::from_utf8_lossy(t);
                let short: String = s.chars().take(40).collect();
                let more = if short.len() < s.len() { "..." } else { "" };
                write!(f, "'{}{more}'", short.replace('\'', "''"))
            }
            Cell::Blob(b) => {
                f.write_str("x'")?;
                for byte in b.iter().take(16) {
                    write!(f, "{byte:02x}")?;
                }
                f.write_str(if b.len() > 16 { "...'" } else { "'" })
            }
        }
    }
}

/// An identifier, quoted for SQL.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A row's identity in messages: `id=3`, or `(a=1, b='x')`.
fn show_key(columns: &[String], key: &[Cell]) -> String {
    let parts: Vec<String> = columns
        .iter()
        .zip(key)
        .map(|(c, v)| format!("{c}={v}"))
        .collect();
    match parts.as_slice() {
        [one] => one.clone(),
        _ => format!("({})", parts.join(", ")),
    }
}

fn verb(a: Action) -> &'static str {
    match a {
        Action::SQLITE_INSERT => "inserted",
        Action::SQLITE_UPDATE => "updated",
        Action::SQLITE_DELETE => "deleted",
        _ => "changed",
    }
}

/// One row change of a changeset: its table, what was done, the primary
/// key's values.
struct Change {
    table: String,
    action: Action,
    key: Vec<Cell>,
}

impl Change {
    /// Reads the change an iterator or conflict handler is at.
    fn of(item: &ChangesetItem) -> rusqlite::Result<Change> {
        let op = item.op()?;
        let (table, action) = (op.table_name().to_string(), op.code());
        let mut key = Vec::new();
        for (i, in_pk) in item.pk()?.iter().enumerate() {
            if *in_pk != 0 {
                key.push(Cell::from(match action {
                    Action::SQLITE_INSERT => item.new_value(i)?,
                    _ => item.old_value(i)?,
                }));
            }
        }
        Ok(Change { table, action, key })
    }

    /// Identifies the row across changesets.
    fn id(&self) -> (String, String) {
        (self.table.clone(), format!("{:?}", self.key))
    }
}

/// A changeset's changes by row (see [`Change::id`]).
type Changes = BTreeMap<(String, String), Change>;

/// Every change of `cs`, by row.
fn changes(cs: &Changeset) -> rusqlite::Result<Changes> {
    let mut out = BTreeMap::new();
    let mut it = cs.iter()?;
    while let Some(item) = it.next()? {
        let c = Change::of(item)?;
        out.insert(c.id(), c);
    }
    Ok(out)
}

/// The changes that turn `base`'s tables into `db`'s.
fn changeset(conn: &Connection, db: &str, tables: &[String]) -> rusqlite::Result<Changeset> {
    let mut s = Session::new_with_name(conn, db)?;
    for t in tables {
        s.diff("base", t.as_str())?;
    }
    s.changeset()
}

/// Tables, indexes, triggers and views by (type, name): their SQL.
type Schema = BTreeMap<(String, String), String>;

/// The schema of `db`. SQLite's own tables and indexes (`sqlite_sequence`,
/// `sqlite_stat1`, automatic indexes) follow from the rest and are left out.
fn schema(conn: &Connection, db: &str) -> rusqlite::Result<Schema> {
    let mut st = conn.prepare(&format!(
        "SELECT type, name, coalesce(sql, '') FROM {db}.sqlite_master \
         WHERE name NOT LIKE 'sqlite\\_%' ESCAPE '\\'"
    ))?;
    let rows = st.query_map([], |r| Ok(((r.get(0)?, r.get(1)?), r.get(2)?)))?;
    rows.collect()
}

/// How `theirs` differs from `base`, for a refusal.
fn schema_change(base: &Schema, theirs: &Schema) -> Option<String> {
    let names: BTreeSet<&(String, String)> = base.keys().chain(theirs.keys()).collect();
    names.into_iter().find_map(|k| {
        let (kind, name) = k;
        match (base.get(k), theirs.get(k)) {
            (Some(_), None) => Some(format!("{kind} {name} was dropped")),
            (None, Some(_)) => Some(format!("{kind} {name} was added")),
            (Some(a), Some(b)) if a != b => Some(format!("{kind} {name} was altered")),
            _ => None,
        }
    })
}

/// The primary key's columns of `table`, in key order.
fn primary_key(conn: &Connection, table: &str) -> rusqlite::Result<Vec<String>> {
    let mut st =
        conn.prepare("SELECT name FROM pragma_table_info(?1, 'main') WHERE pk > 0 ORDER BY pk")?;
    let rows = st.query_map([table], |r| r.get(0))?;
    rows.collect()
}

/// The whole row of `table` in `db` with primary key `key`, if any.
fn row(
    conn: &Connection,
    db: &str,
    table: &str,
    pk: &[String],
    key: &[Cell],
) -> rusqlite::Result<Option<Vec<Cell>>> {
    let cond: Vec<String> = pk
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{} IS ?{}", ident(c), i + 1))
        .collect();
    let mut st = conn.prepare(&format!(
        "SELECT * FROM {db}.{} WHERE {}",
        ident(table),
        cond.join(" AND ")
    ))?;
    let n = st.column_count();
    let mut rows = st.query(rusqlite::params_from_iter(key))?;
    match rows.next()? {
        Some(r) => Ok(Some(
            (0..n)
                .map(|i| r.get_ref(i).map(Cell::from))
                .collect::<rusqlite::Result<_>>()?,
        )),
        None => Ok(None),
    }
}

/// Rows of `db` whose foreign keys point at nothing: (table, rowid, parent).
fn dangling(conn: &Connection, db: &str) -> rusqlite::Result<BTreeSet<(String, String, String)>> {
    let mut st = conn.prepare(&format!("PRAGMA {db}.foreign_key_check"))?;
    let rows = st.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            Cell::from(r.get_ref(1)?).to_string(),
            r.get::<_, String>(2)?,
        ))
    })?;
    rows.collect()
}

/// An input that SQLite cannot read, or finds damaged, fails the merge.
fn check_sound(conn: &Connection, db: &str) -> Result<(), String> {
    let side = side(db);
    match conn.query_row(&format!("PRAGMA {db}.quick_check(1)"), [], |r| {
        r.get::<_, String>(0)
    }) {
        Ok(s) if s == "ok" => Ok(()),
        Ok(s) => Err(format!(
            "the {side} version is a damaged SQLite database: {s}"
        )),
        Err(e) => Err(format!(
            "the {side} version cannot be read as an SQLite database: {e}"
        )),
    }
}

/// What each step's SQLite error means, for the message.
fn sql(what: &'static str) -> impl Fn(rusqlite::Error) -> String {
    move |e| format!("{what}: {e}")
}

/// The working copies opened as one connection: the server's as `main`
/// (merged in place), the base and yours attached as `base` and `local`.
fn open(paths: &Paths) -> Result<Connection, String> {
    let conn = Connection::open_with_flags(
        &paths.merged,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| format!("the server version cannot be opened: {e}"))?;
    // Foreign key actions (ON DELETE CASCADE...) would act twice: what they
    // did on your side is among your changes already. Dangling keys are
    // looked for after the merge instead.
    conn.execute_batch("PRAGMA foreign_keys = OFF")
        .map_err(sql("turning foreign key actions off"))?;
    check_sound(&conn, "main")?;
    for (path, db) in [(&paths.base, "base"), (&paths.local, "local")] {
        let p = path
            .to_str()
            .ok_or_else(|| format!("{}: not a UTF-8 path", path.display()))?;
        conn.execute(&format!("ATTACH DATABASE ?1 AS {db}"), [p])
            .map_err(|e| {
                format!(
                    "the {} version cannot be read as an SQLite database: {e}",
                    side(db)
                )
            })?;
        check_sound(&conn, db)?;
    }
    Ok(conn)
}

/// Why the sides' schemas rule out a row-level merge, if they do.
fn schema_refusal(conn: &Connection, base: &Schema) -> Result<Option<String>, String> {
    for db in ["local", "main"] {
        let theirs = schema(conn, db).map_err(sql("reading a schema"))?;
        if let Some(what) = schema_change(base, &theirs) {
            return Ok(Some(format!(
                "the schema changed on the {} side ({what}); rows are merged only \
                 between versions of one schema",
                side(db)
            )));
        }
    }
    let version = |db: &str| -> Result<i64, String> {
        conn.query_row(&format!("PRAGMA {db}.user_version"), [], |r| r.get(0))
            .map_err(sql("reading user_version"))
    };
    let was = version("base")?;
    for db in ["local", "main"] {
        let v = version(db)?;
        if v != was {
            return Ok(Some(format!(
                "the schema changed on the {} side (user_version {v}, was {was})",
                side(db)
            )));
        }
    }
    Ok(None)
}

/// Each table's primary key into `keys`; or why some table's rows cannot
/// be matched across versions.
fn keyed_tables(
    conn: &Connection,
    base: &Schema,
    keys: &mut BTreeMap<String, Vec<String>>,
) -> Result<Option<String>, String> {
    for ((kind, name), text) in base {
        if kind != "table" {
            continue;
        }
        if text
            .trim_start()
            .to_ascii_uppercase()
            .starts_with("CREATE VIRTUAL")
        {
            return Ok(Some(format!(
                "table {name} is a virtual table; its contents cannot be merged row by row"
            )));
        }
        let pk = primary_key(conn, name).map_err(sql("reading a primary key"))?;
        if pk.is_empty() {
            return Ok(Some(format!(
                "table {name} has no PRIMARY KEY, so its rows cannot be matched across versions"
            )));
        }
        // The session extension skips rows with a NULL in the key (which
        // SQLite allows outside INTEGER PRIMARY KEY): they would be lost.
        let nulls: Vec<String> = pk.iter().map(|c| format!("{} IS NULL", ident(c))).collect();
        for db in ["base", "local", "main"] {
            let any: bool = conn
                .query_row(
                    &format!(
                        "SELECT EXISTS (SELECT 1 FROM {db}.{} WHERE {})",
                        ident(name),
                        nulls.join(" OR ")
                    ),
                    [],
                    |r| r.get(0),
                )
                .map_err(sql("looking for NULL keys"))?;
            if any {
                return Ok(Some(format!(
                    "table {name} has a row with a NULL primary key in the {} version; \
                     such rows cannot be matched",
                    side(db)
                )));
            }
        }
        keys.insert(name.clone(), pk);
    }
    Ok(None)
}

/// Rows changed on both sides alike into `alike` (nothing to apply); or
/// the rows changed on both sides differently, refused.
fn both_sides(
    conn: &Connection,
    mine: &Changes,
    theirs: &Changes,
    keys: &BTreeMap<String, Vec<String>>,
    alike: &mut BTreeSet<(String, String)>,
) -> Result<Option<String>, String> {
    let mut clashes = Vec::new();
    for (id, c) in mine {
        let Some(t) = theirs.get(id) else { continue };
        let pk = &keys[&c.table];
        let read = |db| row(conn, db, &c.table, pk, &c.key).map_err(sql("reading a row"));
        if read("local")? == read("main")? {
            alike.insert(id.clone());
        } else {
            clashes.push(format!(
                "row {} of table {} changed on both sides ({} in yours, {} on the server)",
                show_key(pk, &c.key),
                c.table,
                verb(c.action),
                verb(t.action)
            ));
        }
    }
    Ok(clashes.first().map(|first| match clashes.len() - 1 {
        0 => first.clone(),
        n => format!("{first}; and {n} more row(s)"),
    }))
}

/// The conflict handler of the apply: skips what both sides did alike,
/// and otherwise stops, leaving the reason in `why`.
fn on_conflict(
    why: Arc<Mutex<Option<String>>>,
    alike: BTreeSet<(String, String)>,
    keys: BTreeMap<String, Vec<String>>,
) -> impl Fn(ConflictType, &ChangesetItem) -> ConflictAction + Send + 'static {
    move |kind, item| {
        // A foreign key conflict is about the whole changeset, not a row.
        let reason = if kind == ConflictType::SQLITE_CHANGESET_FOREIGN_KEY {
            "your changes break a foreign key on the server's version".to_string()
        } else {
            match Change::of(item) {
                Ok(c) if alike.contains(&c.id()) => return ConflictAction::SQLITE_CHANGESET_OMIT,
                Ok(c) => {
                    let problem = match kind {
                        ConflictType::SQLITE_CHANGESET_DATA => {
                            "the row differs there from the base"
                        }
                        ConflictType::SQLITE_CHANGESET_NOTFOUND => "the row is not there",
                        ConflictType::SQLITE_CHANGESET_CONFLICT => "the row is there already",
                        ConflictType::SQLITE_CHANGESET_CONSTRAINT => {
                            "it breaks a constraint there (UNIQUE, NOT NULL or CHECK)"
                        }
                        _ => "SQLite reports a conflict",
                    };
                    let pk = keys.get(&c.table).map(Vec::as_slice).unwrap_or(&[]);
                    format!(
                        "row {} of table {} ({} in yours) cannot go onto the server's version: \
                         {problem}",
                        show_key(pk, &c.key),
                        c.table,
                        verb(c.action)
                    )
                }
                Err(e) => format!("a change of yours cannot be read: {e}"),
            }
        };
        *why.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason);
        ConflictAction::SQLITE_CHANGESET_ABORT
    }
}

/// Applies your changes to `main` (the server's version) and commits; or
/// why they cannot go there, nothing committed. Triggers are set aside
/// meanwhile: what they did on your side is among your changes already.
fn apply_mine(
    conn: &Connection,
    mine: &Changeset,
    base: &Schema,
    alike: BTreeSet<(String, String)>,
    keys: BTreeMap<String, Vec<String>>,
    dangling_before: &BTreeSet<(String, String, String)>,
) -> Result<Option<String>, String> {
    let triggers: Vec<(&String, &String)> = base
        .iter()
        .filter(|((kind, _), _)| kind == "trigger")
        .map(|((_, name), text)| (name, text))
        .collect();
    let tx = conn.unchecked_transaction().map_err(sql("starting"))?;
    for (name, _) in &triggers {
        tx.execute_batch(&format!("DROP TRIGGER main.{}", ident(name)))
            .map_err(sql("setting triggers aside"))?;
    }
    let why = Arc::new(Mutex::new(None));
    let handler = on_conflict(why.clone(), alike, keys);
    if let Err(e) = tx.apply(mine, None::<fn(&str) -> bool>, handler) {
        let reason = why.lock().unwrap_or_else(|p| p.into_inner()).take();
        return match reason {
            Some(r) => Ok(Some(r)),
            None => Err(format!("applying your changes: {e}")),
        };
    }
    for (_, text) in &triggers {
        tx.execute_batch(text)
            .map_err(sql("putting triggers back"))?;
    }
    let after = dangling(&tx, "main").map_err(sql("checking foreign keys"))?;
    if let Some((table, rowid, parent)) = after.difference(dangling_before).next() {
        return Ok(Some(format!(
            "the merge would leave a row of table {table} (rowid {rowid}) pointing at a \
             missing row of {parent} (a foreign key)"
        )));
    }
    tx.commit().map_err(sql("committing the merge"))?;
    Ok(None)
}

/// The merge itself, on the working copies; on `Merged`, `paths.merged`
/// holds the result, whole (no log beside it).
fn merge_copies(paths: &Paths) -> Result<Verdict, String> {
    let conn = open(paths)?;
    let base = schema(&conn, "base").map_err(sql("reading the base schema"))?;
    if let Some(why) = schema_refusal(&conn, &base)? {
        return Ok(Verdict::Refused(why));
    }
    let mut keys = BTreeMap::new();
    if let Some(why) = keyed_tables(&conn, &base, &mut keys)? {
        return Ok(Verdict::Refused(why));
    }
    let tables: Vec<String> = keys.keys().cloned().collect();
    let mine_cs = changeset(&conn, "local", &tables).map_err(sql("diffing yours"))?;
    let theirs_cs = changeset(&conn, "main", &tables).map_err(sql("diffing the server's"))?;
    let mine = changes(&mine_cs).map_err(sql("reading your changes"))?;
    let theirs = changes(&theirs_cs).map_err(sql("reading the server's changes"))?;
    let mut alike = BTreeSet::new();
    if let Some(why) = both_sides(&conn, &mine, &theirs, &keys, &mut alike)? {
        return Ok(Verdict::Refused(why));
    }
    let mut dangling_before = dangling(&conn, "local").map_err(sql("checking foreign keys"))?;
    dangling_before.extend(dangling(&conn, "main").map_err(sql("checking foreign keys"))?);
    // Only `main` from here on: unqualified names (in triggers put back)
    // can mean nothing else.
    for db in ["base", "local"] {
        conn.execute_batch(&format!("DETACH DATABASE {db}"))
            .map_err(sql("detaching"))?;
    }
    let verdict = Verdict::Merged {
        applied: mine.len(),
        alike: alike.len(),
    };
    if let Some(why) = apply_mine(&conn, &mine_cs, &base, alike, keys, &dangling_before)? {
        return Ok(Verdict::Refused(why));
    }
    conn.close()
        .map_err(|(_, e)| format!("closing the merge: {e}"))?;
    // A WAL database folds its log back in when its last connection closes.
    let mut wal = paths.merged.clone().into_os_string();
    wal.push("-wal");
    if std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0) {
        return Err("the merged database's write-ahead log was not folded back in".into());
    }
    Ok(verdict)
}

/// Replaces `local` with `merged` atomically (a temporary file beside it,
/// synced, then renamed), keeping `local`'s mode.
fn publish(merged: &Path, local: &Path) -> Result<(), String> {
    let io = |what: &str, e: std::io::Error| {
        format!("writing the merge to {}: {what}: {e}", local.display())
    };
    let dir = match local.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mode = std::fs::metadata(local)
        .map_err(|e| io("its mode", e))?
        .permissions();
    let mut tmp = tempfile::Builder::new()
        .prefix(".merge-sqlite-")
        .tempfile_in(dir)
        .map_err(|e| io("a temporary file", e))?;
    let mut from = std::fs::File::open(merged).map_err(|e| io("reading it", e))?;
    std::io::copy(&mut from, tmp.as_file_mut()).map_err(|e| io("copying", e))?;
    tmp.as_file()
        .set_permissions(mode)
        .map_err(|e| io("its mode", e))?;
    tmp.as_file().sync_all().map_err(|e| io("syncing", e))?;
    tmp.persist(local)
        .map_err(|e| io("renaming it into place", e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests;
