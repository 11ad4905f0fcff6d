//! Disconnected operation against the real cell: offline changes, the
//! persistent change log across `kill -9`, replay (reintegration) across
//! `kill -9`, every conflict kind with a third party changing the server
//! meanwhile, and two users whose records replay each with their own token.
//!
//! Offline is either a network cut (`Cell::cut`, the veth down on the server
//! side: calls time out after the mount's dead time, the volume goes
//! disconnected by itself and comes back by itself) or `afsd-rs offline
//! PATH` (manual: the network stays up, so the third-party tool can change
//! the server meanwhile). The mounts use a short dead time.
//!
//! The random tests print their seed; `AFSD_OFFLINE_SEED=N` repeats a run,
//! `AFSD_OFFLINE_TRIALS=N` changes the number of kills during offline writes
//! (default 20), `AFSD_REPLAY_KILLS=N` the number during replay (default 20:
//! each costs some 15 s, the fileserver holding the file for the dead call).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use afsd_tests::{
    close_file, random_bytes, read_as, run_as, scratch, wait_until, Cell, Conflict, Mount,
    ALICE_UID, BOB_UID,
};
use rand::{Rng, SeedableRng};

/// Mount options of the tests that cut the network: a cut is noticed
/// after 3 s.
const DEAD_CUT: &[&str] = &["--dead-time", "3"];

/// Restarts while the network is cut: a daemon that starts offline waits
/// out the dead time for the VL server and for the fileserver first.
const DEAD_RESTART: &[&str] = &["--dead-time", "1"];

/// Mount options of the others. Not shorter: a fileserver that meets a new
/// client at the address of one killed with -9 first probes the dead one
/// (`CB: ProbeUuid ... failed` in its FileLog) and answers the new one only
/// after that, several seconds later; with a 3 s dead time the new client
/// would take that for a cut.
const DEAD: &[&str] = &["--dead-time", "20"];

/// Longest wait for a replay to finish.
const REPLAY_LIMIT: Duration = Duration::from_secs(120);

/// A fresh directory `shared/TAG-PID` made through the mount (online):
/// its path in the mount and its path relative to the cell root.
fn workdir(cell: &Cell, m: &Mount, tag: &str) -> (PathBuf, String) {
    let rel = format!("shared/{tag}-{}", std::process::id());
    let p = m.path(&format!(".{}/{rel}", cell.cell()));
    fs::create_dir(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
    (p, rel)
}

/// The same directory in another mount.
fn in_mount(cell: &Cell, m: &Mount, rel: &str) -> PathBuf {
    m.path(&format!(".{}/{rel}", cell.cell()))
}

fn server_cat(cell: &Cell, rel: &str) -> Vec<u8> {
    cell.third_party(&["cat", &cell.rw(rel)], None).stdout
}

/// `name -> fid` of a directory on the server (third-party `ls`), without
/// `.` and `..`.
fn server_ls(cell: &Cell, rel: &str) -> BTreeMap<String, String> {
    let out = cell.third_party(&["ls", &cell.rw(rel)], None).stdout;
    String::from_utf8_lossy(&out)
        .lines()
        .filter_map(|l| {
            let (fid, name) = l.split_once('\t')?;
            (name != "." && name != "..").then(|| (name.to_string(), fid.to_string()))
        })
        .collect()
}

/// The fields of the third-party tool's `stat` line: `fid V.N.U type T mode
/// M length L dv D owner O mtime T linkcount N ...`. It follows symlinks.
fn server_stat(cell: &Cell, rel: &str) -> BTreeMap<String, String> {
    let out = cell.third_party(&["stat", &cell.rw(rel)], None).stdout;
    let text = String::from_utf8_lossy(&out).to_string();
    let words: Vec<&str> = text.split_whitespace().collect();
    words
        .chunks(2)
        .filter(|c| c.len() == 2)
        .map(|c| (c[0].to_string(), c[1].to_string()))
        .collect()
}

fn stat_num(st: &BTreeMap<String, String>, k: &str) -> u64 {
    st.get(k)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no number {k} in {st:?}"))
}

/// The seed of a random test: `AFSD_OFFLINE_SEED`, else from the clock and
/// the pid. Printed, so that a failure can be repeated.
fn seed(test: &str) -> u64 {
    let s = std::env::var("AFSD_OFFLINE_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap();
            t.as_nanos() as u64 ^ (u64::from(std::process::id()) << 32)
        });
    println!("{test}: seed {s} (AFSD_OFFLINE_SEED={s} repeats it)");
    s
}

fn trials(default: usize) -> usize {
    std::env::var("AFSD_OFFLINE_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A counter's growth between two `stats()` snapshots.
fn delta(
    after: &std::collections::HashMap<String, u64>,
    before: &std::collections::HashMap<String, u64>,
    k: &str,
) -> u64 {
    let a = *after
        .get(k)
        .unwrap_or_else(|| panic!("no counter {k} in the stats"));
    a - before.get(k).copied().unwrap_or(0)
}

// ---------------------------------------------------------------- trees

#[derive(Clone, Debug, PartialEq, Eq)]
enum Node {
    /// contents, mode bits, link count
    File(Vec<u8>, u32, u64),
    /// mode bits
    Dir(u32),
    /// the path (relative to the tree's root) the symlink leads to
    SymlinkTo(String),
}

type Tree = BTreeMap<String, Node>;

/// `base/target` with `.` and `..` folded, relative to the tree's root.
fn resolve_rel(base: &str, target: &str) -> String {
    let mut parts: Vec<&str> = if base.is_empty() {
        Vec::new()
    } else {
        base.split('/').collect()
    };
    for p in target.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

fn parent_rel(p: &str) -> &str {
    p.rsplit_once('/').map_or("", |(d, _)| d)
}

/// The tree under `root` as a mount shows it (lstat, readlink, read).
fn mount_tree(root: &Path) -> Tree {
    fn walk(root: &Path, rel: &str, out: &mut Tree) {
        let dir = if rel.is_empty() {
            root.to_path_buf()
        } else {
            root.join(rel)
        };
        for e in fs::read_dir(&dir).unwrap_or_else(|e| panic!("readdir {}: {e}", dir.display())) {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            let p = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let path = root.join(&p);
            let md = fs::symlink_metadata(&path)
                .unwrap_or_else(|e| panic!("lstat {}: {e}", path.display()));
            if md.is_dir() {
                out.insert(p.clone(), Node::Dir(md.mode() & 0o7777));
                walk(root, &p, out);
            } else if md.file_type().is_symlink() {
                let t = fs::read_link(&path).unwrap();
                let to = resolve_rel(parent_rel(&p), &t.to_string_lossy());
                out.insert(p, Node::SymlinkTo(to));
            } else {
                let data =
                    fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
                out.insert(p, Node::File(data, md.mode() & 0o7777, md.nlink()));
            }
        }
    }
    let mut out = Tree::new();
    walk(root, "", &mut out);
    out
}

/// The tree under `rel` as the third-party tool reads it from the server:
/// names and fids with `ls`, type, mode and link count with `stat`, bytes
/// with `cat`. Its `stat` follows a symlink, so an entry whose `stat` fid
/// differs from its `ls` fid is a symlink, to the entry with that fid.
fn server_tree(cell: &Cell, rel: &str) -> Tree {
    struct Entry {
        ls_fid: String,
        stat_fid: String,
        st: BTreeMap<String, String>,
    }
    fn walk(cell: &Cell, base: &str, rel: &str, out: &mut BTreeMap<String, Entry>) {
        let dir = if rel.is_empty() {
            base.to_string()
        } else {
            format!("{base}/{rel}")
        };
        for (name, fid) in server_ls(cell, &dir) {
            let p = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            let st = server_stat(cell, &format!("{dir}/{name}"));
            // "fid VOLUME.VNODE.UNIQUE" against ls's "VNODE.UNIQUE"
            let stat_fid = st
                .get("fid")
                .and_then(|f| f.split_once('.'))
                .map(|(_, vu)| vu.to_string())
                .unwrap_or_default();
            let is_dir = stat_fid == fid && st.get("type").map(String::as_str) == Some("2");
            out.insert(
                p.clone(),
                Entry {
                    ls_fid: fid,
                    stat_fid,
                    st,
                },
            );
            if is_dir {
                walk(cell, base, &p, out);
            }
        }
    }
    let mut entries = BTreeMap::new();
    walk(cell, rel, "", &mut entries);
    let by_fid: BTreeMap<&str, &str> = entries
        .iter()
        .filter(|(_, e)| e.ls_fid == e.stat_fid)
        .map(|(p, e)| (e.ls_fid.as_str(), p.as_str()))
        .collect();
    let mut out = Tree::new();
    for (p, e) in &entries {
        let mode = u32::from_str_radix(e.st.get("mode").map_or("", String::as_str), 8)
            .unwrap_or_else(|_| panic!("no mode in {:?}", e.st));
        let node = if e.ls_fid != e.stat_fid {
            let to = by_fid
                .get(e.stat_fid.as_str())
                .map_or_else(|| format!("<outside: {}>", e.stat_fid), |t| t.to_string());
            Node::SymlinkTo(to)
        } else if e.st.get("type").map(String::as_str) == Some("2") {
            Node::Dir(mode)
        } else {
            let data = server_cat(cell, &format!("{rel}/{p}"));
            Node::File(data, mode, stat_num(&e.st, "linkcount"))
        };
        out.insert(p.clone(), node);
    }
    out
}

/// Differences of two trees, one line each (empty: equal).
fn tree_diff(want: &Tree, got: &Tree) -> String {
    let show = |n: Option<&Node>| match n {
        None => "absent".to_string(),
        Some(Node::File(d, m, l)) => format!(
            "file {} bytes {:?}.. mode {m:o} links {l}",
            d.len(),
            String::from_utf8_lossy(&d[..d.len().min(24)])
        ),
        Some(other) => format!("{other:?}"),
    };
    let keys: BTreeSet<&String> = want.keys().chain(got.keys()).collect();
    keys.into_iter()
        .filter(|k| want.get(*k) != got.get(*k))
        .map(|k| {
            format!(
                "  {k}: want {}, got {}\n",
                show(want.get(k)),
                show(got.get(k))
            )
        })
        .collect()
}

// ---------------------------------------------------------------- T1

/// A stretch of offline work under a network cut: a tree made, files
/// written (one closed twice), renamed (a file and a directory), a symlink,
/// a hard link, chmods, a removal, and a file and a directory made and
/// removed again. The volume goes disconnected by itself and, once the link
/// is back, connected by itself with an empty log. Then the server as the
/// third-party tool and a second afsd-rs mount see it equals the reference
/// model and the local view; compaction sent no RPC for the temporary
/// file and directory, and two closes of one file sent one store.
#[test]
fn offline_tree_then_reconnect() {
    let cell = Cell::from_env();
    let m = Mount::new(&cell, DEAD_CUT);
    let (root, rel) = workdir(&cell, &m, "offline-tree");
    let original = b"0123456789 original text\n".to_vec();
    fs::write(root.join("keep.txt"), b"kept\n").unwrap();
    fs::write(root.join("edit.txt"), &original).unwrap();
    fs::write(root.join("gone.txt"), b"to be removed\n").unwrap();
    fs::create_dir(root.join("olddir")).unwrap();
    fs::write(root.join("olddir/inner.txt"), b"inner\n").unwrap();
    // Everything read once: cached, with its rights.
    let online = mount_tree(&root);
    assert_eq!(online.len(), 5, "{online:?}");
    // A short dead time can take the fileserver's pause for a cut (see
    // DEAD): then these changes were logged; let them reach the server,
    // and read everything again.
    if let Err(e) = m.wait_replayed(REPLAY_LIMIT) {
        panic!("before the cut: {e}");
    }
    assert_eq!(mount_tree(&root), online);
    let edit_dv0 = stat_num(&server_stat(&cell, &format!("{rel}/edit.txt")), "dv");
    let s0 = m.stats();

    let cut = cell.cut();
    // The first change meets the dead time (its store is in flight when
    // the volume goes disconnected); it must succeed all the same, and be
    // settled at reconnection without a conflict. edit.txt: overwritten in
    // place (no truncation), one store.
    let f = fs::OpenOptions::new()
        .write(true)
        .open(root.join("edit.txt"))
        .unwrap();
    f.write_all_at(b"EDITED", 0).unwrap();
    close_file(f).expect("close of edit.txt offline (the change that meets the dead time)");
    let mut edited = original.clone();
    edited[..6].copy_from_slice(b"EDITED");
    fs::create_dir_all(root.join("a/b/c")).expect("mkdir -p offline");
    fs::write(root.join("a/b/c/deep.txt"), b"deep\n").unwrap();
    let f1 = random_bytes(200_000, 1);
    fs::write(root.join("a/f1"), &f1).unwrap();
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(root.join("a/f1"))
        .unwrap();
    f.write_all(b"second close\n").unwrap();
    close_file(f).expect("second close of a/f1 offline");
    let mut f1_all = f1.clone();
    f1_all.extend_from_slice(b"second close\n");
    // A file and a directory tree that live and die offline: nothing sent.
    fs::write(root.join("tmp.txt"), b"temporary").unwrap();
    fs::create_dir(root.join("tmpdir")).unwrap();
    fs::write(root.join("tmpdir/x"), b"x").unwrap();
    fs::remove_file(root.join("tmp.txt")).unwrap();
    fs::remove_file(root.join("tmpdir/x")).unwrap();
    fs::remove_dir(root.join("tmpdir")).unwrap();
    fs::rename(root.join("a/f1"), root.join("a/b/f1-renamed")).unwrap();
    fs::rename(root.join("olddir"), root.join("newdir")).unwrap();
    std::os::unix::fs::symlink("b/c/deep.txt", root.join("a/link")).unwrap();
    fs::hard_link(root.join("a/b/f1-renamed"), root.join("a/b/hard")).unwrap();
    fs::set_permissions(
        root.join("a/b/f1-renamed"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    fs::set_permissions(root.join("a/b"), fs::Permissions::from_mode(0o750)).unwrap();
    fs::remove_file(root.join("gone.txt")).unwrap();

    // The reference model (modes of the objects not chmodded: as made).
    let local = mount_tree(&root);
    let mode_of = |p: &str| match local.get(p) {
        Some(Node::File(_, m, _)) | Some(Node::Dir(m)) => *m,
        other => panic!("{p}: {other:?} in the local view"),
    };
    let mut model = Tree::new();
    model.insert(
        "keep.txt".into(),
        Node::File(b"kept\n".to_vec(), mode_of("keep.txt"), 1),
    );
    model.insert(
        "edit.txt".into(),
        Node::File(edited.clone(), mode_of("edit.txt"), 1),
    );
    model.insert("newdir".into(), Node::Dir(mode_of("newdir")));
    model.insert(
        "newdir/inner.txt".into(),
        Node::File(b"inner\n".to_vec(), mode_of("newdir/inner.txt"), 1),
    );
    model.insert("a".into(), Node::Dir(mode_of("a")));
    model.insert("a/b".into(), Node::Dir(0o750));
    model.insert("a/b/c".into(), Node::Dir(mode_of("a/b/c")));
    model.insert(
        "a/b/c/deep.txt".into(),
        Node::File(b"deep\n".to_vec(), mode_of("a/b/c/deep.txt"), 1),
    );
    model.insert(
        "a/b/f1-renamed".into(),
        Node::File(f1_all.clone(), 0o600, 2),
    );
    model.insert("a/b/hard".into(), Node::File(f1_all.clone(), 0o600, 2));
    model.insert("a/link".into(), Node::SymlinkTo("a/b/c/deep.txt".into()));
    let d = tree_diff(&model, &local);
    assert!(
        d.is_empty(),
        "the local view offline differs from the model:\n{d}"
    );
    let ino_deep = fs::metadata(root.join("a/b/c/deep.txt")).unwrap().ino();
    let ino_f1 = fs::metadata(root.join("a/b/f1-renamed")).unwrap().ino();

    let vol = m
        .volume_status("root.cell")
        .unwrap_or_else(|| panic!("no root.cell in `status --json`: {:?}", m.status()));
    assert_eq!(vol.mode, "disconnected", "root.cell offline: {}", vol.raw);
    assert!(
        !vol.manual,
        "a cut is not a manual disconnection: {}",
        vol.raw
    );
    assert!(vol.pending_ops > 0, "nothing logged: {}", vol.raw);
    println!("offline: {}", vol.raw);
    let s1 = m.stats();
    // Nothing but the change that met the dead time went out while cut.
    for rpc in [
        "RXAFS_CreateFile",
        "RXAFS_MakeDir",
        "RXAFS_Rename",
        "RXAFS_Link",
    ] {
        assert_eq!(delta(&s1, &s0, rpc), 0, "{rpc} sent while the link was cut");
    }
    assert!(delta(&s1, &s0, "RXAFS_StoreData64") <= 1);

    // Back: no `online`, the client notices and replays by itself.
    cut.restore();
    if let Err(e) = m.wait_replayed(REPLAY_LIMIT) {
        panic!("after the link came back: {e}");
    }
    let s2 = m.stats();
    let conflicts = m.conflicts();
    assert!(
        conflicts.is_empty(),
        "conflicts with nobody else writing (the first, in-flight store included): {conflicts:?}"
    );

    // Compaction: creates sent == files that survive (deep.txt, f1); the
    // tmp file and tmpdir sent nothing; two closes of f1 sent one store.
    let sent = |rpc: &str| delta(&s2, &s1, rpc);
    assert_eq!(
        sent("RXAFS_CreateFile"),
        2,
        "CreateFile calls of the replay (deep.txt and f1 survive; tmp.txt and tmpdir/x must be compacted away)"
    );
    assert_eq!(
        sent("RXAFS_MakeDir"),
        3,
        "MakeDir calls (a, a/b, a/b/c; tmpdir compacted away)"
    );
    assert_eq!(
        sent("RXAFS_RemoveDir"),
        0,
        "RemoveDir calls (tmpdir never reached the server)"
    );
    assert_eq!(
        sent("RXAFS_RemoveFile"),
        1,
        "RemoveFile calls (gone.txt only)"
    );
    // edit.txt's store was on its way when the link went: the fileserver
    // may have it already (only the answer lost), then replay settles it
    // without sending it again. Either way it is stored once.
    let edit_dv = stat_num(&server_stat(&cell, &format!("{rel}/edit.txt")), "dv");
    assert_eq!(
        edit_dv,
        edit_dv0 + 1,
        "edit.txt's data version: the offline edit must be stored exactly once"
    );
    assert!(
        (2..=3).contains(&sent("RXAFS_StoreData64")),
        "StoreData64 calls of the replay: {} (deep.txt, f1 once for its two closes, and edit.txt \
         unless its store in flight at the cut had arrived)",
        sent("RXAFS_StoreData64")
    );
    assert_eq!(sent("RXAFS_Symlink"), 1);
    assert_eq!(sent("RXAFS_Link"), 1);
    assert!(
        (1..=2).contains(&sent("RXAFS_Rename")),
        "Rename calls: {}",
        sent("RXAFS_Rename")
    );

    // The same objects (inode numbers) after the local fids were replaced.
    assert_eq!(
        fs::metadata(root.join("a/b/c/deep.txt")).unwrap().ino(),
        ino_deep
    );
    assert_eq!(
        fs::metadata(root.join("a/b/f1-renamed")).unwrap().ino(),
        ino_f1
    );
    // The three views after the replay, all reported at once.
    let mut wrong = String::new();
    let d = tree_diff(&local, &mount_tree(&root));
    if !d.is_empty() {
        // For a moment, or for good?
        let healed = wait_until(Duration::from_secs(10), || {
            tree_diff(&local, &mount_tree(&root)).is_empty()
        });
        wrong.push_str(&format!(
            "this mount's view changed with the replay ({}):\n{d}",
            if healed {
                "right again within 10 s"
            } else {
                "still wrong 10 s later"
            }
        ));
    }
    let d = tree_diff(&local, &server_tree(&cell, &rel));
    if !d.is_empty() {
        wrong.push_str(&format!(
            "the server (third-party tool) differs from the local view:\n{d}"
        ));
    }
    let other = Mount::new(&cell, DEAD);
    let d = tree_diff(&local, &mount_tree(&in_mount(&cell, &other, &rel)));
    if !d.is_empty() {
        wrong.push_str(&format!(
            "a second afsd-rs mount differs from the local view:\n{d}"
        ));
    }
    assert!(
        wrong.is_empty(),
        "after the replay (want: the offline view):\n{wrong}"
    );
}

/// A directory made online and never listed is known to be empty: offline,
/// files can be made in it, and they reach the server.
#[test]
fn offline_in_a_directory_made_online() {
    let cell = Cell::from_env();
    let m = Mount::new(&cell, DEAD_CUT);
    let (root, rel) = workdir(&cell, &m, "offline-fresh");
    if let Err(e) = m.wait_replayed(REPLAY_LIMIT) {
        panic!("before the cut: {e}");
    }
    fs::create_dir(root.join("fresh")).unwrap();
    if let Err(e) = m.wait_replayed(REPLAY_LIMIT) {
        panic!("before the cut: {e}");
    }
    let cut = cell.cut();
    fs::write(root.join("fresh/new.txt"), b"made offline\n").unwrap_or_else(|e| {
        panic!("a file made offline in a directory made online and never listed: {e}")
    });
    let names: Vec<String> = fs::read_dir(root.join("fresh"))
        .unwrap_or_else(|e| panic!("listing fresh/ offline: {e}"))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["new.txt"]);
    cut.restore();
    if let Err(e) = m.wait_replayed(REPLAY_LIMIT) {
        panic!("after the link came back: {e}");
    }
    assert_eq!(
        server_cat(&cell, &format!("{rel}/fresh/new.txt")),
        b"made offline\n"
    );
    assert!(m.conflicts().is_empty(), "conflicts: {:?}", m.conflicts());
}

// ---------------------------------------------------------------- T2

/// What a test knows of a file: its contents (a write whose close
/// returned 0), its absence (an unlink that returned 0), or nothing (a
/// change cut short by the kill).
#[derive(Clone, Debug, PartialEq)]
enum Known {
    Data(Vec<u8>),
    Absent,
    Unknown,
}

type Model = Arc<Mutex<BTreeMap<String, Known>>>;

/// Writes, overwrites (some with an fsync halfway) and removes files of a
/// pool of names until an error (the daemon is gone) or `stop`.
fn offline_writer(dir: PathBuf, seed: u64, model: Model, stop: Arc<AtomicBool>) -> u32 {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut done = 0;
    while !stop.load(Ordering::Relaxed) {
        let name = format!("f{:02}", rng.gen_range(0..24));
        let path = dir.join(&name);
        let roll = rng.gen_range(0..10);
        let exists = matches!(model.lock().unwrap().get(&name), Some(Known::Data(_)));
        model.lock().unwrap().insert(name.clone(), Known::Unknown);
        if roll == 0 && exists {
            match fs::remove_file(&path) {
                Ok(()) => {
                    model.lock().unwrap().insert(name, Known::Absent);
                    done += 1;
                    continue;
                }
                Err(_) => return done,
            }
        }
        let len = match rng.gen_range(0..6) {
            0 => 0,
            1 | 2 => rng.gen_range(1..5000),
            3 => rng.gen_range(5000..300_000),
            4 => (1 << 20) + rng.gen_range(0..5000),
            _ => rng.gen_range(2 << 20..3 << 20),
        };
        let data = random_bytes(len, rng.gen());
        let r = (|| -> std::io::Result<()> {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path)?;
            let half = len / 2;
            f.write_all(&data[..half])?;
            if roll < 3 {
                f.sync_all()?;
            }
            f.write_all(&data[half..])?;
            close_file(f)
        })();
        match r {
            Ok(()) => {
                model.lock().unwrap().insert(name, Known::Data(data));
                done += 1;
            }
            Err(_) => return done,
        }
    }
    done
}

/// Checks every file whose close (or unlink) returned 0 through `dir`.
fn check_known(dir: &Path, model: &BTreeMap<String, Known>, when: &str, m: &Mount) {
    for (name, k) in model {
        let p = dir.join(name);
        match k {
            Known::Data(d) => {
                let got = fs::read(&p).unwrap_or_else(|e| {
                    panic!(
                        "{when}: {name} (closed with 0, {} bytes) unreadable: {e}\nlog:\n{}",
                        d.len(),
                        m.log_tail(40)
                    )
                });
                assert!(
                    got == *d,
                    "{when}: {name}: {} bytes, the close that returned 0 wrote {}\nlog:\n{}",
                    got.len(),
                    d.len(),
                    m.log_tail(40)
                );
            }
            Known::Absent => assert!(
                fs::symlink_metadata(&p).is_err(),
                "{when}: {name} was removed (unlink returned 0) but is there"
            ),
            Known::Unknown => {
                // Cut short by the kill: may or may not be there, but
                // whatever is there reads.
                if p.exists() {
                    fs::read(&p).unwrap_or_else(|e| {
                        panic!("{when}: {name} (write cut short) exists but reads {e}")
                    });
                }
            }
        }
    }
}

/// `kill -9` at random moments of a stream of offline writes: after a
/// restart on the same cache, still cut off, every file whose close
/// returned 0 has its contents and every unlink that returned 0 holds;
/// after the link comes back the server has the same, with no conflict.
#[test]
fn kill9_during_offline_writes() {
    let cell = Cell::from_env();
    let seed = seed("kill9_during_offline_writes");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut m = Mount::new(&cell, DEAD_CUT);
    let cache = m.cache_dir.clone();
    let (_, rel) = workdir(&cell, &m, "kill-offline");
    let model: Model = Arc::new(Mutex::new(BTreeMap::new()));
    // A short dead time can take the fileserver's pause for a cut (see
    // DEAD): the mkdir was then logged; let it reach the server.
    if let Err(e) = m.wait_replayed(REPLAY_LIMIT) {
        panic!("before the cut: {e}");
    }
    // Listed, so that its (empty) listing is cached (after a replay the
    // objects replayed are fetched again).
    assert_eq!(fs::read_dir(in_mount(&cell, &m, &rel)).unwrap().count(), 0);
    let cut = cell.cut();
    // First the client notices the cut (the first change waits out the dead
    // time and is logged): the kills below land while it is offline.
    let first = in_mount(&cell, &m, &rel).join("first.txt");
    let f = fs::File::create(&first).expect("the first change offline");
    (&f).write_all(b"the first change, during the dead time\n")
        .unwrap();
    close_file(f).expect("close of the first change offline");
    model.lock().unwrap().insert(
        "first.txt".into(),
        Known::Data(b"the first change, during the dead time\n".to_vec()),
    );
    let vol = m.volume_status("root.cell").expect("root.cell in status");
    assert_eq!(
        vol.mode, "disconnected",
        "after a change met the cut: {}",
        vol.raw
    );
    let n = trials(20);
    let mut writes = 0;
    let mut no_root = Vec::new();
    for trial in 0..n {
        let dir = in_mount(&cell, &m, &rel);
        let stop = Arc::new(AtomicBool::new(false));
        let (mm, st) = (model.clone(), stop.clone());
        let wseed = rng.gen();
        let writer = std::thread::spawn(move || offline_writer(dir, wseed, mm, st));
        let wait = Duration::from_millis(rng.gen_range(30..1500));
        std::thread::sleep(wait);
        m.kill();
        stop.store(true, Ordering::Relaxed);
        let done = writer.join().expect("the writer panicked");
        writes += done;
        m = Mount::with_cache_probe(
            &cell,
            &cache,
            DEAD_RESTART,
            &format!(".{}/{rel}", cell.cell()),
        );
        // The cell root (root.cell's RO clone, listed by every earlier
        // mount) must be served from the cache too.
        if fs::read_dir(m.path(cell.cell())).is_err() {
            no_root.push(trial);
        }
        let snapshot = model.lock().unwrap().clone();
        let dir = in_mount(&cell, &m, &rel);
        check_known(
            &dir,
            &snapshot,
            &format!("trial {trial} (kill after {wait:?}), offline"),
            &m,
        );
        let pending = m
            .volume_status("root.cell")
            .map_or("?".to_string(), |v| format!("{} {}", v.mode, v.pending_ops));
        println!(
            "trial {trial}: kill after {wait:?}, {done} changes returned 0; root.cell: {pending}"
        );
    }
    let snapshot = model.lock().unwrap().clone();
    let count = |k: fn(&Known) -> bool| snapshot.values().filter(|v| k(v)).count();
    println!(
        "{n} trials, {writes} changes returned 0; files: {} known, {} removed, {} cut short",
        count(|k| matches!(k, Known::Data(_))),
        count(|k| *k == Known::Absent),
        count(|k| *k == Known::Unknown)
    );

    // The replay, by a daemon started on the same cache once the network
    // is back (a daemon with a 1 s dead time would take the fileserver's
    // pauses for cuts, see DEAD).
    m.stop();
    cut.restore();
    let m = Mount::with_cache(&cell, &cache, DEAD);
    if let Err(e) = m.wait_replayed(REPLAY_LIMIT) {
        panic!("replay after {n} restarts: {e}");
    }
    let conflicts = m.conflicts();
    assert!(
        conflicts.is_empty(),
        "conflicts with nobody else writing: {conflicts:?}"
    );
    let dir = in_mount(&cell, &m, &rel);
    check_known(&dir, &snapshot, "after replay, through the mount", &m);
    let on_server = server_ls(&cell, &rel);
    for (name, k) in &snapshot {
        match k {
            Known::Data(d) => {
                assert!(
                    on_server.contains_key(name),
                    "{name} never reached the server"
                );
                let got = server_cat(&cell, &format!("{rel}/{name}"));
                assert!(
                    got == *d,
                    "{name} on the server: {} bytes, the close that returned 0 wrote {}",
                    got.len(),
                    d.len()
                );
            }
            Known::Absent => assert!(
                !on_server.contains_key(name),
                "{name} removed offline is on the server"
            ),
            Known::Unknown => {
                // Whatever was recovered locally is what the server has.
                let local = fs::read(dir.join(name)).ok();
                let server = on_server
                    .contains_key(name)
                    .then(|| server_cat(&cell, &format!("{rel}/{name}")));
                assert!(
                    local == server,
                    "{name} (cut short): the mount has {:?} bytes, the server {:?}",
                    local.map(|d| d.len()),
                    server.map(|d| d.len())
                );
            }
        }
    }
    for name in on_server.keys() {
        assert!(
            snapshot.contains_key(name),
            "the server has {name}, never written"
        );
    }
    assert!(
        no_root.is_empty(),
        "after the restarts of trials {no_root:?} (offline, after kill -9), {} did not list: \
         the cell root was cached before the cut",
        m.path(cell.cell()).display()
    );
}

// ---------------------------------------------------------------- T3

const REPLAY_FILES: usize = 200;
const BIG: usize = 20 << 20;

/// Polls the daemon's counters until `f` says so, the volume has nothing
/// left to replay, or 60 s pass. True when `f` said so.
fn poll_stats(
    m: &Mount,
    mut f: impl FnMut(&std::collections::HashMap<String, u64>) -> bool,
) -> bool {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut polls = 0u32;
    loop {
        if f(&m.stats()) {
            return true;
        }
        polls += 1;
        // Now and then: is there still something to wait for?
        if polls.is_multiple_of(20) && m.status().iter().all(|v| v.pending_ops == 0) {
            return false;
        }
        if Instant::now() > deadline {
            return false;
        }
    }
}

/// The 1 MiB chunks where `a` and `b` differ (by index).
fn differing_mibs(a: &[u8], b: &[u8]) -> Vec<usize> {
    let n = a.len().max(b.len()).div_ceil(1 << 20);
    (0..n)
        .filter(|i| {
            let r = |v: &[u8]| {
                let from = (i << 20).min(v.len());
                let to = ((i + 1) << 20).min(v.len());
                v[from..to].to_vec()
            };
            r(a) != r(b)
        })
        .collect()
}

/// Right after a kill: does the server hold a piece of big.bin cut short
/// (a length that is neither the old one nor the end of a piece)? The
/// third-party `stat` waits until the fileserver has given up the dead
/// client's call.
fn piece_cut_short(cell: &Cell, rel: &str) -> bool {
    let st = server_stat(cell, &format!("{rel}/big.bin"));
    let len = stat_num(&st, "length");
    let short = !(len == 11 || len.is_multiple_of(8 << 20) || len == BIG as u64);
    println!(
        "  after the kill: big.bin length {len} dv {}{}",
        stat_num(&st, "dv"),
        if short { " (a piece cut short)" } else { "" }
    );
    short
}

/// After the restart: resume replay (if the manual offline mode survived
/// the restart, `online` lifts it; if not, it must be harmless) and say
/// what is left.
fn resume(m: &Mount) -> u64 {
    let out = m.afsd(&["online"]);
    if !out.status.success() {
        println!(
            "  `afsd-rs online` after the restart: {} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    m.status().iter().map(|v| v.pending_ops).sum()
}

/// `kill -9` during replay, at random points: once while the 200 creates go
/// out, once while the 20 MiB store's pieces do. After each restart replay
/// resumes; at the end every file is there once with its contents, there
/// is no conflict, the log is empty, and the big file's data version rose
/// by exactly its three pieces (no piece stored twice).
#[test]
fn kill9_during_replay() {
    let cell = Cell::from_env();
    let seed = seed("kill9_during_replay");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut m = Mount::new(&cell, DEAD);
    let cache = m.cache_dir.clone();
    let other = Mount::new(&cell, DEAD);
    let (_, base) = workdir(&cell, &m, "kill-replay");
    // Two kills a round. Each restart waits for the fileserver to give up
    // the dead client's call (it holds the file meanwhile), some 15 s: 20
    // kills by default (AFSD_REPLAY_KILLS).
    let kills_wanted: usize = std::env::var("AFSD_REPLAY_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let rounds = kills_wanted.div_ceil(2);
    let (mut kills, mut effective) = (0, 0);
    for round in 0..rounds {
        let rel = format!("{base}/r{round}");
        let dir = in_mount(&cell, &m, &rel);
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join("big.bin"), b"small start").unwrap();
        assert_eq!(fs::read(dir.join("big.bin")).unwrap(), b"small start");
        let dv0 = stat_num(&server_stat(&cell, &format!("{rel}/big.bin")), "dv");

        m.offline(&[&dir]);
        let content =
            |i: usize| format!("round {round} file {i} {}\n", "x".repeat(i % 50)).into_bytes();
        for i in 0..REPLAY_FILES {
            fs::write(dir.join(format!("f{i:03}")), content(i))
                .unwrap_or_else(|e| panic!("round {round}: offline create f{i:03}: {e}"));
        }
        // 20 MiB over the 11 bytes, no truncation: three pieces (8+8+4 MiB).
        let big = random_bytes(BIG, seed ^ round as u64);
        let f = fs::OpenOptions::new()
            .write(true)
            .open(dir.join("big.bin"))
            .unwrap();
        f.write_all_at(&big, 0).unwrap();
        close_file(f).expect("close of big.bin offline");
        let logged: u64 = m.status().iter().map(|v| v.pending_ops).sum();

        // Kill 1: after a random number of creates went out.
        let s = m.stats();
        let creates0 = s["RXAFS_CreateFile"];
        let target = rng.gen_range(1..=REPLAY_FILES as u64);
        m.online(&[&dir]);
        let hit = poll_stats(&m, |s| s["RXAFS_CreateFile"] - creates0 >= target);
        m.kill();
        kills += 1;
        let mut cut_short = usize::from(piece_cut_short(&cell, &rel));
        m = Mount::with_cache(&cell, &cache, DEAD);
        let left1 = resume(&m);
        effective += usize::from(left1 > 0);

        // Kill 2: after a random number of bytes of big.bin were stored.
        let threshold = rng.gen_range(1..=16u64 << 20);
        let hit2 = poll_stats(&m, |s| s["bytes_stored"] >= threshold);
        m.kill();
        kills += 1;
        cut_short += usize::from(piece_cut_short(&cell, &rel));
        m = Mount::with_cache(&cell, &cache, DEAD);
        let left2 = resume(&m);
        effective += usize::from(left2 > 0);
        println!(
            "round {round}: {logged} records; kill at {target} creates ({}), {left1} left; \
             kill at {threshold} bytes stored ({}), {left2} left",
            if hit { "reached" } else { "replay ended first" },
            if hit2 {
                "reached"
            } else {
                "replay ended first"
            },
        );

        if let Err(e) = m.wait_replayed(REPLAY_LIMIT) {
            panic!("round {round}: {e}");
        }
        let conflicts = m.conflicts();
        assert!(
            conflicts.is_empty(),
            "round {round}: conflicts: {conflicts:?}"
        );
        // Every name exactly once, nothing more (no "conflicted copy").
        let names: BTreeSet<String> = server_ls(&cell, &rel).into_keys().collect();
        let mut want: BTreeSet<String> = (0..REPLAY_FILES).map(|i| format!("f{i:03}")).collect();
        want.insert("big.bin".into());
        assert_eq!(names, want, "round {round}: the server's listing");
        let st = server_stat(&cell, &format!("{rel}/big.bin"));
        assert_eq!(
            stat_num(&st, "length"),
            BIG as u64,
            "round {round}: big.bin {st:?}"
        );
        // Each piece adds one version. The fileserver also counts a piece
        // cut short by a kill (it keeps what arrived and adds a version),
        // which must then go again: one more version for each piece found
        // cut short after a kill. Anything more is a piece stored twice.
        let dv = stat_num(&st, "dv");
        let want = dv0 + 3 + cut_short as u64;
        println!(
            "round {round}: big.bin's data version {dv0} -> {dv}, {cut_short} pieces cut short"
        );
        assert_eq!(
            dv, want,
            "round {round}: big.bin's data version went from {dv0} to {dv}: three pieces add 3, \
             and the {cut_short} pieces the kills cut short one more each; more means a piece \
             was stored twice"
        );
        let on_server = server_cat(&cell, &format!("{rel}/big.bin"));
        assert!(
            on_server == big,
            "round {round}: big.bin's bytes on the server differ: {} bytes, MiB chunks differing: {:?}",
            on_server.len(),
            differing_mibs(&on_server, &big)
        );
        let odir = in_mount(&cell, &other, &rel);
        for i in 0..REPLAY_FILES {
            let got = fs::read(odir.join(format!("f{i:03}")))
                .unwrap_or_else(|e| panic!("round {round}: f{i:03} in a second mount: {e}"));
            assert_eq!(got, content(i), "round {round}: f{i:03} in a second mount");
        }
        let left: u64 = m.status().iter().map(|v| v.pending_ops).sum();
        assert_eq!(left, 0, "round {round}: the log is not empty");
    }
    println!("{kills} kills during replay, {effective} of them left work to resume");
}

// ---------------------------------------------------------------- T4

fn find<'a>(cs: &'a [Conflict], suffix: &str, kind: &str) -> &'a Conflict {
    cs.iter()
        .find(|c| c.path.ends_with(suffix) && c.kind == kind)
        .unwrap_or_else(|| {
            panic!(
                "no {kind} conflict on {suffix}; conflicts:\n{}",
                cs.iter()
                    .map(|c| c.raw.to_string())
                    .collect::<Vec<_>>()
                    .join("\n")
            )
        })
}

/// Every conflict kind, with the third-party tool changing the server while
/// this client is offline (`afsd-rs offline`): update/update (both write a
/// file), update/remove (they remove, we write), remove/update (we remove,
/// they write), name/name (both create a name), and a refusal (we create in
/// a directory whose ACL they closed). Nothing is lost: the path shows the
/// server's version, `conflicts` lists each with its kind and uid, and
/// `conflict cat --local` gives our bytes.
#[test]
fn conflict_kinds_lose_nothing() {
    let cell = Cell::from_env();
    let m = Mount::new(&cell, DEAD);
    let (root, rel) = workdir(&cell, &m, "conflicts");
    let tag = rel.rsplit('/').next().unwrap().to_string();
    for (name, data) in [
        ("uu.txt", "base-uu\n"),
        ("ur.txt", "base-ur\n"),
        ("ru.txt", "base-ru\n"),
    ] {
        fs::write(root.join(name), data).unwrap();
        assert_eq!(fs::read(root.join(name)).unwrap(), data.as_bytes());
    }
    fs::create_dir(root.join("ro")).unwrap();
    assert_eq!(fs::read_dir(root.join("ro")).unwrap().count(), 0);
    let base_uu = stat_num(&server_stat(&cell, &format!("{rel}/uu.txt")), "dv");

    m.offline(&[&root]);
    let vol = m.volume_status("root.cell").expect("root.cell in status");
    assert_eq!(vol.mode, "disconnected", "{}", vol.raw);
    assert!(vol.manual, "`afsd-rs offline` is manual: {}", vol.raw);
    fs::write(root.join("uu.txt"), b"local-uu\n").unwrap();
    fs::write(root.join("ur.txt"), b"local-ur\n").unwrap();
    fs::remove_file(root.join("ru.txt")).unwrap();
    fs::write(root.join("nn.txt"), b"local-nn\n").unwrap();
    fs::write(root.join("ro/new.txt"), b"local-ro\n").unwrap();

    cell.put(&cell.rw(&format!("{rel}/uu.txt")), b"server-uu\n");
    cell.third_party(&["rm", &cell.rw(&format!("{rel}/ur.txt"))], None);
    cell.put(&cell.rw(&format!("{rel}/ru.txt")), b"server-ru\n");
    cell.put(&cell.rw(&format!("{rel}/nn.txt")), b"server-nn\n");
    cell.third_party(
        &[
            "setacl",
            &cell.rw(&format!("{rel}/ro")),
            "system:administrators",
            "all",
            "system:anyuser",
            "rl",
        ],
        None,
    );

    m.online(&[&root]);
    if let Err(e) = m.wait_replayed(REPLAY_LIMIT) {
        panic!("{e}");
    }
    // A fresh mount: every conflict it lists is this test's.
    let cs: Vec<Conflict> = m.conflicts();
    println!(
        "conflicts:\n{}",
        cs.iter()
            .map(|c| c.raw.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    );
    let vol = m.volume_status("root.cell").expect("root.cell in status");
    assert!(
        vol.conflicts >= 5,
        "status counts {} conflicts: {}",
        vol.conflicts,
        vol.raw
    );

    let kinds = [
        ("/uu.txt", "update/update", Some("local-uu\n")),
        ("/ur.txt", "update/remove", Some("local-ur\n")),
        ("/ru.txt", "remove/update", None),
        ("/nn.txt", "name/name", Some("local-nn\n")),
        ("/new.txt", "refused", Some("local-ro\n")),
    ];
    for (suffix, kind, local) in kinds {
        let c = find(&cs, suffix, kind);
        assert_eq!(c.uid, 0, "{suffix}: made by root: {}", c.raw);
        if let Some(bytes) = local {
            assert_eq!(
                String::from_utf8_lossy(&m.conflict_cat("local", &c.id)),
                bytes,
                "{suffix}: `conflict cat --local {}`",
                c.id
            );
        }
    }
    // The three data versions of update/update.
    let uu = find(&cs, "/uu.txt", "update/update");
    let num = |k: &str| uu.raw.get(k).and_then(|v| v.as_u64());
    assert_eq!(num("base_dv"), Some(base_uu), "base_dv: {}", uu.raw);
    assert_eq!(num("server_dv"), Some(base_uu + 1), "server_dv: {}", uu.raw);
    assert_eq!(
        String::from_utf8_lossy(&m.conflict_cat("base", &uu.id)),
        "base-uu\n",
        "`conflict cat --base` of update/update"
    );

    // The paths show the server's versions, through the mount and on the
    // server.
    for (name, want) in [
        ("uu.txt", "server-uu\n"),
        ("ru.txt", "server-ru\n"),
        ("nn.txt", "server-nn\n"),
    ] {
        assert_eq!(
            String::from_utf8_lossy(&fs::read(root.join(name)).unwrap()),
            want,
            "{name} through the mount"
        );
        assert_eq!(
            String::from_utf8_lossy(&server_cat(&cell, &format!("{rel}/{name}"))),
            want,
            "{name} on the server"
        );
    }
    assert!(
        !server_ls(&cell, &format!("{rel}/ro")).contains_key("new.txt"),
        "the refused create reached the server"
    );
    assert!(
        !root.join("ro/new.txt").exists(),
        "ro/new.txt: the path must show the server's version (none)"
    );
    let pending: u64 = m.status().iter().map(|v| v.pending_ops).sum();
    assert_eq!(pending, 0, "conflicts must leave the log");
    // Each conflict names where the file is: its directory too.
    for (suffix, kind, _) in kinds {
        let c = find(&cs, suffix, kind);
        let want = if kind == "refused" {
            format!("{tag}/ro{suffix}")
        } else {
            format!("{tag}{suffix}")
        };
        assert!(
            c.path.ends_with(&want),
            "the {kind} conflict's path {:?} does not name the file's directory (want .../{want})",
            c.path
        );
    }
}

// ---------------------------------------------------------------- T5

fn sh_as(uid: u32, script: &str) {
    let out = run_as(uid, &["sh", "-c", script]);
    assert!(
        out.status.success(),
        "uid {uid}: {script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// alice and bob change files offline; bob's token is gone (`unlog`) when
/// the volume comes back. alice's changes reach the server as alice (owner
/// alice), replay pauses on bob only, `status` says it waits for bob, and
/// after bob's `aklog` his changes replay by themselves, as bob.
#[test]
fn two_uids_offline() {
    let cell = Cell::from_env();
    let m = Mount::new(&cell, DEAD);
    let kdir = scratch("krb5-offline");
    let alice_cc = kdir.join("alice.cc");
    let bob_cc = kdir.join("bob.cc");
    cell.kinit(
        cell.var("USER1"),
        cell.var("USER1_PW"),
        &alice_cc,
        ALICE_UID,
        None,
    );
    cell.kinit(
        cell.var("USER2"),
        cell.var("USER2_PW"),
        &bob_cc,
        BOB_UID,
        None,
    );
    cell.aklog_as(ALICE_UID, &m, &alice_cc);
    cell.aklog_as(BOB_UID, &m, &bob_cc);
    let alice_id = cell.pts_id(cell.var("USER1"));
    let bob_id = cell.pts_id(cell.var("USER2"));

    let rel = format!("shared/offline-uids-{}", std::process::id());
    cell.third_party(&["mkdir", &cell.rw(&rel)], None);
    cell.third_party(
        &[
            "setacl",
            &cell.rw(&rel),
            "system:administrators",
            "all",
            "system:anyuser",
            "rl",
            cell.var("USER1"),
            "all",
            cell.var("USER2"),
            "all",
        ],
        None,
    );
    cell.put(&cell.rw(&format!("{rel}/bob-edit.txt")), b"before bob\n");
    let dir = in_mount(&cell, &m, &rel);
    let d = dir.display().to_string();
    // Both read first: their rights are known when the network goes.
    for uid in [ALICE_UID, BOB_UID] {
        sh_as(
            uid,
            &format!("ls {d} >/dev/null && cat {d}/bob-edit.txt >/dev/null"),
        );
    }

    m.offline(&[&dir]);
    sh_as(
        ALICE_UID,
        &format!("echo alice one > {d}/alice1.txt && mkdir {d}/alice-dir"),
    );
    sh_as(
        BOB_UID,
        &format!("echo bob one > {d}/bob1.txt && echo bob was here > {d}/bob-edit.txt"),
    );
    // alice again, after bob's records: independent of them.
    sh_as(
        ALICE_UID,
        &format!("echo alice two > {d}/alice-dir/alice2.txt"),
    );
    let out = cell.afsd_as(BOB_UID, &m, &bob_cc, &["unlog"]);
    assert!(
        out.status.success(),
        "unlog as bob: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    m.online(&[&dir]);
    let mut last = None;
    let paused = wait_until(Duration::from_secs(60), || {
        let v = m.volume_status("root.cell");
        let ok = v
            .as_ref()
            .is_some_and(|v| v.mode == "paused" && v.waiting_for.iter().any(|w| w.0 == BOB_UID));
        last = v;
        ok && server_ls(&cell, &rel).contains_key("alice-dir")
            && server_ls(&cell, &format!("{rel}/alice-dir")).contains_key("alice2.txt")
    });
    assert!(
        paused,
        "replay did not pause on bob alone with alice's changes on the server; status {:?}\nserver: {:?}\nlog:\n{}",
        last.map(|v| v.raw),
        server_ls(&cell, &rel),
        m.log_tail(40)
    );
    let owner = |p: &str| stat_num(&server_stat(&cell, &format!("{rel}/{p}")), "owner") as i64;
    assert_eq!(
        server_cat(&cell, &format!("{rel}/alice1.txt")),
        b"alice one\n"
    );
    assert_eq!(
        server_cat(&cell, &format!("{rel}/alice-dir/alice2.txt")),
        b"alice two\n"
    );
    for p in ["alice1.txt", "alice-dir", "alice-dir/alice2.txt"] {
        assert_eq!(owner(p), alice_id, "{p}: owner on the server");
    }
    // bob's changes wait: not on the server, not lost.
    let names = server_ls(&cell, &rel);
    assert!(
        !names.contains_key("bob1.txt"),
        "bob's create replayed without his token"
    );
    assert_eq!(
        server_cat(&cell, &format!("{rel}/bob-edit.txt")),
        b"before bob\n"
    );
    let v = m.volume_status("root.cell").unwrap();
    assert!(v.pending_ops > 0, "bob's records are gone: {}", v.raw);

    // bob's token is back: his records replay by themselves, as bob.
    cell.aklog_as(BOB_UID, &m, &bob_cc);
    if let Err(e) = m.wait_replayed(REPLAY_LIMIT) {
        panic!("after bob's aklog: {e}");
    }
    assert_eq!(server_cat(&cell, &format!("{rel}/bob1.txt")), b"bob one\n");
    assert_eq!(
        server_cat(&cell, &format!("{rel}/bob-edit.txt")),
        b"bob was here\n"
    );
    assert_eq!(owner("bob1.txt"), bob_id, "bob1.txt: owner on the server");
    assert_eq!(owner("alice1.txt"), alice_id);
    assert!(m.conflicts().is_empty(), "conflicts: {:?}", m.conflicts());
    // And this mount, which replayed them, shows what the server has.
    for (uid, p, want) in [
        (ALICE_UID, "alice1.txt", "alice one\n"),
        (ALICE_UID, "alice-dir/alice2.txt", "alice two\n"),
        (BOB_UID, "bob1.txt", "bob one\n"),
        (BOB_UID, "bob-edit.txt", "bob was here\n"),
    ] {
        let got = read_as(uid, &dir.join(p)).map(|b| String::from_utf8_lossy(&b).into_owned());
        assert_eq!(
            got.as_deref(),
            Ok(want),
            "{p} read by uid {uid} through the mount that replayed it"
        );
    }
}
