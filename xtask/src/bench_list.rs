//! Listing rows of `cargo xtask bench`: `ls -l` of a 10,000-entry
//! directory and `find -ls` of a 10,000-file tree (100 directories of 100
//! empty files), cold and warm, through afsd-rs, afsd.fuse and bindfs of a
//! local copy.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::afsd::{prepare_mountpoint, third_party, umount};
use crate::bench::{fresh_mount, timed_run, BenchOpts};
use crate::bench_peer::FusePeer;
use crate::cell::Cell;
use crate::util::{capture, run, secs, Res};

/// Entries of the `ls -l` directory.
pub const LS_ENTRIES: usize = 10_000;
/// Directories of the `find -ls` tree, and files in each.
const FIND_DIRS: usize = 100;
const FIND_FILES: usize = 100;
/// Names of the two, in root.cell's RW volume and in the local copy.
pub const LS_DIR: &str = "ls10k";
pub const FIND_DIR: &str = "find10k";

/// (RPC name, calls) of LS_RPCS.
pub type RpcCounts = Vec<(&'static str, u64)>;

/// RPCs counted for the cold `ls -l`.
const LS_RPCS: [&str; 3] = [
    "RXAFS_InlineBulkStatus",
    "RXAFS_FetchStatus",
    "RXAFS_FetchData64",
];

/// Seconds of one run of the listings.
pub struct ListTimes {
    pub ls_cold: f64,
    pub ls_warm: f64,
    pub find_cold: f64,
    pub find_warm: f64,
}

/// Every run of one client.
#[derive(Default)]
pub struct ListRuns {
    pub ls_cold: Vec<f64>,
    pub ls_warm: Vec<f64>,
    pub find_cold: Vec<f64>,
    pub find_warm: Vec<f64>,
}

impl ListRuns {
    pub fn push(&mut self, t: ListTimes, who: &str, run: u32) {
        println!(
            "run {run}: {who}: ls -l cold {:.3} s, warm {:.3} s; find -ls cold {:.3} s, warm {:.3} s",
            t.ls_cold, t.ls_warm, t.find_cold, t.find_warm
        );
        self.ls_cold.push(t.ls_cold);
        self.ls_warm.push(t.ls_warm);
        self.find_cold.push(t.find_cold);
        self.find_warm.push(t.find_warm);
    }
}

/// Name of entry `i` as `touchmany DIR COUNT e` makes it.
fn entry(i: usize) -> String {
    format!("e{i:05}")
}

fn find_subdir(i: usize) -> String {
    format!("d{i:02}")
}

/// Entries of `afscptool ls DIR` whose name starts with `prefix`.
fn tp_count(c: &Cell, afs_dir: &str, prefix: char) -> Res<Option<usize>> {
    let ls = capture(
        &mut third_party(c, true, &["ls", afs_dir]),
        Duration::from_secs(600),
    )?;
    if !ls.ok() {
        return Ok(None);
    }
    Ok(Some(
        ls.stdout
            .lines()
            .filter(|l| l.split('\t').nth(1).is_some_and(|n| n.starts_with(prefix)))
            .count(),
    ))
}

fn tp(c: &Cell, args: &[&str]) -> Res<()> {
    run(&mut third_party(c, true, args)).map_err(|e| format!("{}: {e}", args.join(" ")))
}

/// Make `/afs/.CELL/ls10k` and `/afs/.CELL/find10k` with the third-party
/// tool unless they exist whole.
pub fn ensure_afs_dirs(c: &Cell) -> Res<()> {
    let t = Instant::now();
    let ls = format!("/afs/.{}/{LS_DIR}", c.cell);
    match tp_count(c, &ls, 'e')? {
        Some(LS_ENTRIES) => println!("reusing {ls} ({LS_ENTRIES} entries)"),
        Some(n) => {
            return Err(format!(
                "{ls} exists with {n} entries, not {LS_ENTRIES}: remove it \
                 (afscptool -k rm/rmdir) and run again"
            ))
        }
        None => {
            tp(c, &["mkdir", &ls])?;
            tp(c, &["touchmany", &ls, &LS_ENTRIES.to_string(), "e"])?;
            println!("created {ls} in {}", secs(t.elapsed()));
        }
    }
    // `touchtree` makes and fills dNN in order: the last one whole = all whole
    let find = format!("/afs/.{}/{FIND_DIR}", c.cell);
    let last = format!("{find}/{}", find_subdir(FIND_DIRS - 1));
    if tp_count(c, &last, 'e')? == Some(FIND_FILES) {
        println!("reusing {find}");
        return Ok(());
    }
    if let Some(n) = tp_count(c, &find, 'd')? {
        return Err(format!(
            "{find} exists with {n} directories but not whole: remove it \
             (afscptool -k rm/rmdir) and run again"
        ));
    }
    tp(c, &["mkdir", &find])?;
    tp(
        c,
        &[
            "touchtree",
            &find,
            &FIND_DIRS.to_string(),
            &FIND_FILES.to_string(),
        ],
    )?;
    println!("created {find} in {}", secs(t.elapsed()));
    Ok(())
}

/// The local copy of both under `src`: empty files, the same names.
pub fn make_local_dirs(src: &Path) -> Res<()> {
    let ls = src.join(LS_DIR);
    let find = src.join(FIND_DIR);
    if count_entries(&ls).ok() == Some(LS_ENTRIES)
        && count_tree(&find).ok() == Some(FIND_DIRS * FIND_FILES)
    {
        return Ok(());
    }
    let _ = fs::remove_dir_all(src);
    let mk = |d: &Path, n: usize| -> Res<()> {
        fs::create_dir_all(d).map_err(|e| format!("cannot create {}: {e}", d.display()))?;
        for i in 0..n {
            let f = d.join(entry(i));
            fs::File::create(&f).map_err(|e| format!("create {}: {e}", f.display()))?;
        }
        Ok(())
    };
    mk(&ls, LS_ENTRIES)?;
    for i in 0..FIND_DIRS {
        mk(&find.join(find_subdir(i)), FIND_FILES)?;
    }
    Ok(())
}

fn count_entries(d: &Path) -> Res<usize> {
    Ok(fs::read_dir(d)
        .map_err(|e| format!("readdir {}: {e}", d.display()))?
        .count())
}

/// Files (not directories) under `d`.
fn count_tree(d: &Path) -> Res<usize> {
    let mut n = 0;
    for e in fs::read_dir(d).map_err(|e| format!("readdir {}: {e}", d.display()))? {
        let e = e.map_err(|e| format!("readdir {}: {e}", d.display()))?;
        let ft = e
            .file_type()
            .map_err(|err| format!("stat {}: {err}", e.path().display()))?;
        n += if ft.is_dir() {
            count_tree(&e.path())?
        } else {
            1
        };
    }
    Ok(n)
}

fn timed(args: &[&str], d: &Path, what: &str) -> Res<f64> {
    let mut cmd = Command::new(args[0]);
    cmd.args(&args[1..]).arg(d).stdin(Stdio::null());
    if args[0] == "find" {
        cmd.arg("-ls");
    }
    timed_run(cmd, what, Duration::from_secs(600))
}

/// `ls -l ROOT/ls10k`, again, then `find ROOT/find10k -ls`, again; checks
/// the counts.  `after_cold_ls` runs right after the first `ls -l`.
fn list_times(
    root: &Path,
    who: &str,
    after_cold_ls: &mut dyn FnMut() -> Res<()>,
) -> Res<ListTimes> {
    let (ls, find) = (root.join(LS_DIR), root.join(FIND_DIR));
    let ls_cold = timed(&["ls", "-l"], &ls, &format!("ls -l through {who} (cold)"))?;
    after_cold_ls()?;
    let ls_warm = timed(&["ls", "-l"], &ls, &format!("ls -l through {who} (warm)"))?;
    let find_cold = timed(&["find"], &find, &format!("find -ls through {who} (cold)"))?;
    let find_warm = timed(&["find"], &find, &format!("find -ls through {who} (warm)"))?;
    let n = count_entries(&ls)?;
    let m = count_tree(&find)?;
    if n != LS_ENTRIES || m != FIND_DIRS * FIND_FILES {
        return Err(format!(
            "{who}: {n} entries in {}, {m} files under {}: expected {LS_ENTRIES} and {}",
            ls.display(),
            find.display(),
            FIND_DIRS * FIND_FILES
        ));
    }
    Ok(ListTimes {
        ls_cold,
        ls_warm,
        find_cold,
        find_warm,
    })
}

/// The `rpc NAME N` counters of `afsd-rs stats MOUNTPOINT`.
fn rpc_stats(bin: &Path, mountpoint: &Path) -> Res<Vec<(String, u64)>> {
    let out = capture(
        Command::new(bin).arg("stats").arg(mountpoint),
        Duration::from_secs(30),
    )?;
    if !out.ok() {
        return Err(format!("afsd-rs stats failed: {}", out.why()));
    }
    Ok(out
        .stdout
        .lines()
        .filter_map(|l| {
            let mut w = l.strip_prefix("rpc ")?.split_whitespace();
            Some((w.next()?.to_string(), w.next()?.parse().ok()?))
        })
        .collect())
}

fn rpc_count(v: &[(String, u64)], name: &str) -> u64 {
    v.iter().find(|(k, _)| k == name).map_or(0, |(_, n)| *n)
}

/// One afsd-rs run on a fresh mount: the listings, RPCs of the cold `ls -l`.
pub fn afsd_run(bin: &Path, c: &Cell, o: &BenchOpts, dir: &Path) -> Res<(ListTimes, RpcCounts)> {
    let d = fresh_mount(bin, c, o, dir, "afsd-rs-ls.log")?;
    let root = o.mountpoint.join(format!(".{}", c.cell));
    let r = (|| -> Res<(ListTimes, RpcCounts)> {
        let before = rpc_stats(bin, &o.mountpoint)?;
        let mut rpcs = Vec::new();
        let t = list_times(&root, "afsd-rs", &mut || {
            let after = rpc_stats(bin, &o.mountpoint)?;
            rpcs = LS_RPCS
                .iter()
                .map(|k| (*k, rpc_count(&after, k) - rpc_count(&before, k)))
                .collect();
            Ok(())
        })?;
        Ok((t, rpcs))
    })();
    let stopped = d.stop();
    let r = r?;
    stopped?;
    Ok(r)
}

/// One afsd.fuse run on a fresh mount with an empty cache.
pub fn fuse_run(c: &Cell, o: &BenchOpts, dir: &Path) -> Res<ListTimes> {
    let p = FusePeer::start(c, dir, o.size_mib)?;
    let r = list_times(
        &p.mountpoint.join(format!(".{}", c.cell)),
        "afsd.fuse",
        &mut || Ok(()),
    );
    let stopped = p.stop();
    let r = r?;
    stopped?;
    Ok(r)
}

/// One bindfs run over `src` on `mnt`: kernel caches dropped before the
/// mount.
pub fn bindfs_run(src: &Path, mnt: &Path) -> Res<ListTimes> {
    prepare_mountpoint(mnt)?;
    crate::bench::drop_caches();
    run(Command::new("bindfs").arg(src).arg(mnt))?;
    let r = list_times(mnt, "bindfs", &mut || Ok(()));
    let u = capture(
        Command::new("fusermount3").arg("-u").arg(mnt),
        Duration::from_secs(30),
    )?;
    if !u.ok() {
        umount(mnt)?;
    }
    r
}
