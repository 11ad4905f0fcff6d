//! `cargo xtask bench`: afsd-rs against its peers on the test cell, each
//! figure a ratio to a peer measured in the same run (OpenAFS's `afsio`,
//! `afscptool` and `afsd.fuse`, a local file, bindfs), ending with one
//! Markdown table (bench_summary.rs).  Listings: bench_list.rs; afsd.fuse:
//! bench_peer.rs; small operations: bench_ops.rs; mounting and stopping
//! the daemon: afsd.rs.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::afsd::{afsd_bin, prepare_mountpoint, third_party, with_timeout, Daemon};
use crate::bench_list::{self, ListRuns, RpcCounts};
use crate::bench_ops::{ops_run, OpsTimes};
use crate::bench_peer::FusePeer;
use crate::bench_summary::{self, Row, Target};
use crate::cell::{self, Cell, CellOpts};
use crate::util::{self, capture, run, secs, wait_timeout, Res};

pub struct BenchOpts {
    pub size_mib: u64,
    pub runs: u32,
    pub mountpoint: PathBuf,
    pub keep_cell: bool,
    pub cell: CellOpts,
}

/// Read `path` in 1 MiB blocks; (bytes, seconds).  Errors after `limit`.
fn timed_read(path: &Path, limit: Duration) -> Res<(u64, f64)> {
    let p = path.to_path_buf();
    let r = with_timeout(limit, move || -> Result<(u64, f64), String> {
        let t = Instant::now();
        let mut f = fs::File::open(&p).map_err(|e| format!("open {}: {e}", p.display()))?;
        let mut buf = vec![0u8; 1 << 20];
        let mut n = 0u64;
        loop {
            match f.read(&mut buf) {
                Ok(0) => break,
                Ok(k) => n += k as u64,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("read {} at {n}: {e}", p.display())),
            }
        }
        Ok((n, t.elapsed().as_secs_f64()))
    });
    r.unwrap_or_else(|| {
        Err(format!(
            "reading {} took over {}",
            path.display(),
            secs(limit)
        ))
    })
}

fn afsio_read(c: &Cell, afs_path: &str, limit: Duration) -> Res<(u64, f64)> {
    let cmd = c.labexec(&c.client_netns, ["afsio", "read", "-file", afs_path]);
    timed_stdout(cmd, "afsio read", limit)
}

/// Run `cmd`, counting the bytes of its stdout; (bytes, seconds).  Fails
/// on a non-zero exit, on any stderr output (afsio always exits 0), or
/// after `limit`.
fn timed_stdout(mut cmd: Command, what: &str, limit: Duration) -> Res<(u64, f64)> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let t = Instant::now();
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", util::show_cmd(&cmd)))?;
    let mut out = child.stdout.take().ok_or("no stdout pipe")?;
    let mut err = child.stderr.take().ok_or("no stderr pipe")?;
    let counter = thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 20];
        let mut n = 0u64;
        while let Ok(k) = out.read(&mut buf) {
            if k == 0 {
                break;
            }
            n += k as u64;
        }
        n
    });
    let errs = thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let st = wait_timeout(&mut child, limit);
    let secs_taken = t.elapsed().as_secs_f64();
    let n = counter.join().unwrap_or(0);
    let e = errs.join().unwrap_or_default();
    match st {
        None => Err(format!("{what} took over {}", secs(limit))),
        Some(s) if !s.success() => Err(format!(
            "{what} failed ({}): {e}",
            util::describe_status(&s)
        )),
        // afsio's exit status is always 0: judge by the byte count and stderr
        Some(_) => Ok((n, secs_taken)).and_then(|r| {
            if e.trim().is_empty() {
                Ok(r)
            } else {
                Err(format!("{what}: {}", e.trim()))
            }
        }),
    }
}

fn write_random(path: &Path, bytes: u64) -> Res<()> {
    if fs::metadata(path)
        .map(|m| m.len() == bytes)
        .unwrap_or(false)
    {
        println!("reusing {} ({bytes} bytes)", path.display());
        return Ok(());
    }
    let mut src = fs::File::open("/dev/urandom").map_err(|e| format!("/dev/urandom: {e}"))?;
    let tmp = path.with_extension("tmp");
    let mut dst = fs::File::create(&tmp).map_err(|e| format!("create {}: {e}", tmp.display()))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        let k = left.min(buf.len() as u64) as usize;
        src.read_exact(&mut buf[..k])
            .and_then(|_| dst.write_all(&buf[..k]))
            .map_err(|e| format!("writing {}: {e}", tmp.display()))?;
        left -= k as u64;
    }
    drop(dst);
    fs::rename(&tmp, path).map_err(|e| format!("rename to {}: {e}", path.display()))
}

/// Local uid the rxkad part of the benchmark reads as (tests' ALICE_UID;
/// no passwd entry needed).
const BENCH_UID: u32 = 61000;

/// rxkad levels of the second table; the first is the reference.
const LEVELS: [&str; 3] = ["clear", "auth", "crypt"];

/// `setpriv` arguments to run as `uid` (gid `uid`, no groups).
fn setpriv_args(uid: u32) -> [String; 4] {
    [
        "setpriv".into(),
        format!("--reuid={uid}"),
        format!("--regid={uid}"),
        "--clear-groups".into(),
    ]
}

/// `kinit user` in the client netns into the FILE ccache `cc`, then chown
/// it to `uid` (as tests/src/lib.rs `Cell::kinit`).
fn kinit_as(c: &Cell, user: &str, pw: &str, cc: &Path, uid: u32) -> Res<()> {
    let _ = fs::remove_file(cc);
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net=/run/netns/{}", c.client_netns))
        .arg("kinit")
        .arg(user)
        .env("KRB5_CONFIG", c.krb5_config())
        .env("KRB5CCNAME", format!("FILE:{}", cc.display()))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", util::show_cmd(&cmd)))?;
    if let Some(mut i) = child.stdin.take() {
        i.write_all(format!("{pw}\n").as_bytes())
            .map_err(|e| format!("kinit {user}: writing the password: {e}"))?;
    }
    let st = wait_timeout(&mut child, Duration::from_secs(60));
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    match st {
        None => return Err(format!("kinit {user} timed out")),
        Some(s) if !s.success() => {
            return Err(format!(
                "kinit {user} failed ({}): {}",
                util::describe_status(&s),
                err.trim()
            ))
        }
        Some(_) => {}
    }
    std::os::unix::fs::chown(cc, Some(uid), Some(uid))
        .map_err(|e| format!("chown {} to {uid}: {e}", cc.display()))
}

/// `afsd-rs aklog` as `uid` in the client netns, giving the token to the
/// daemon behind `socket` (as tests/src/lib.rs `Cell::aklog_as`).
fn aklog_as(c: &Cell, bin: &Path, uid: u32, cc: &Path, socket: &Path) -> Res<()> {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net=/run/netns/{}", c.client_netns))
        .args(setpriv_args(uid))
        .arg(bin)
        .arg("aklog")
        .arg("--conf-dir")
        .arg(c.afs_conf_dir())
        .env("KRB5_CONFIG", c.krb5_config())
        .env("KRB5CCNAME", format!("FILE:{}", cc.display()))
        .env("AFSD_CONTROL", socket);
    let out = capture(&mut cmd, Duration::from_secs(60))?;
    if out.ok() {
        Ok(())
    } else {
        Err(format!("aklog as uid {uid} failed: {}", out.why()))
    }
}

/// A counter of the `rx` line of `afsd-rs stats MOUNTPOINT`.
fn rx_stat(bin: &Path, mountpoint: &Path, name: &str) -> Res<u64> {
    let out = capture(
        Command::new(bin).arg("stats").arg(mountpoint),
        Duration::from_secs(30),
    )?;
    if !out.ok() {
        return Err(format!("afsd-rs stats failed: {}", out.why()));
    }
    let key = format!("{name}: ");
    out.stdout
        .lines()
        .find(|l| l.starts_with("rx "))
        .and_then(|l| l.find(&key).map(|p| &l[p + key.len()..]))
        .and_then(|v| {
            v.chars()
                .take_while(|c| c.is_ascii_digit())
                .collect::<String>()
                .parse()
                .ok()
        })
        .ok_or_else(|| format!("no rx {name} in afsd-rs stats:\n{}", out.stdout))
}

/// One cold read of `rel` as `uid`, on a fresh mount (empty cache) at
/// rxkad `level` holding `uid`'s token; seconds.
#[allow(clippy::too_many_arguments)]
fn cold_read_as(
    bin: &Path,
    c: &Cell,
    o: &BenchOpts,
    dir: &Path,
    level: &str,
    cc: &Path,
    rel: &str,
    bytes: u64,
    limit: Duration,
) -> Res<f64> {
    prepare_mountpoint(&o.mountpoint)?;
    let cache = dir.join("cache");
    let socket = dir.join("control.sock");
    let _ = fs::remove_dir_all(&cache);
    let _ = fs::remove_file(&socket);
    fs::create_dir_all(&cache).map_err(|e| format!("cannot create {}: {e}", cache.display()))?;
    let mut d = Daemon::start(
        bin,
        c,
        &o.mountpoint,
        &cache,
        &[
            "--control-socket".into(),
            socket.display().to_string(),
            "--rxkad-level".into(),
            level.into(),
        ],
        &dir.join(format!("afsd-rs-{level}.log")),
        false,
    )?;
    if let Err(e) = d.wait_ready(&c.cell, Duration::from_secs(30)) {
        d.abort();
        return Err(e);
    }
    let r = (|| -> Res<f64> {
        aklog_as(c, bin, BENCH_UID, cc, &socket)?;
        // through the mount, visible host-wide: no netns needed
        let [sp, ids @ ..] = setpriv_args(BENCH_UID);
        let mut cat = Command::new(sp);
        cat.args(ids).arg("cat").arg(o.mountpoint.join(rel));
        let (n, s) = timed_stdout(cat, &format!("cat as uid {BENCH_UID} ({level})"), limit)?;
        if n != bytes {
            return Err(format!("{level}: read {n} bytes, expected {bytes}"));
        }
        // the token must have been used: one rxkad RESPONSE at least
        if rx_stat(bin, &o.mountpoint, "responses_sent")? == 0 {
            return Err(format!(
                "{level}: no rxkad RESPONSE sent: the read did not use the token"
            ));
        }
        Ok(s)
    })();
    let stopped = d.stop();
    let s = r?;
    stopped?;
    Ok(s)
}

/// Every run's seconds of one client's reads: cold (fresh mount, empty
/// cache), warm (again, same mount) and warm after drop_caches.
#[derive(Default)]
struct ReadRuns {
    cold: Vec<f64>,
    warm: Vec<f64>,
    dropped: Vec<f64>,
}

impl ReadRuns {
    fn push(&mut self, (c, w, d): (f64, f64, f64), who: &str, run: u32) {
        println!("run {run}: {who}: cold {c:.3} s, warm {w:.3} s, after drop_caches {d:.3} s");
        self.cold.push(c);
        self.warm.push(w);
        self.dropped.push(d);
    }
}

/// `echo 3 > /proc/sys/vm/drop_caches` (says so if it cannot).
pub(crate) fn drop_caches() {
    if let Err(e) = fs::write("/proc/sys/vm/drop_caches", "3\n") {
        println!("cannot drop the kernel caches ({e}): figures after it are cache-warm");
    }
}

/// Read `f`, again, and again after drop_caches; checks each size.
fn read_set(f: &Path, bytes: u64, limit: Duration, who: &str) -> Res<(f64, f64, f64)> {
    let mut t = [0.0; 3];
    for (i, what) in ["cold", "warm", "after drop_caches"].iter().enumerate() {
        if i == 2 {
            drop_caches();
        }
        let (n, s) = timed_read(f, limit)?;
        if n != bytes {
            return Err(format!("{who} {what}: read {n} bytes, expected {bytes}"));
        }
        t[i] = s;
    }
    Ok((t[0], t[1], t[2]))
}

pub fn bench(o: &BenchOpts) -> Res<()> {
    util::require_root("bench")?;
    if o.runs == 0 || o.size_mib == 0 {
        return Err("bench: --runs and --size-mib must be at least 1".into());
    }
    cell::install_deps(&[])?; // bindfs, openafs-fuse (xtask/packages.txt)
    let bin = afsd_bin(true)?;
    let was_up = cell::running(&o.cell).is_ok();
    let c = cell::up(&o.cell)?;
    let dir = util::target_dir().join("bench");
    fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let bytes = o.size_mib << 20;
    let local = dir.join("bench.bin");
    write_random(&local, bytes)?;

    // third-party write into the RW root.cell, as admin, rxkad clear (crypt
    // would run at ~3 MB/s in userspace fcrypt)
    let rw_path = format!("/afs/.{}/bench.bin", c.cell);
    let t = Instant::now();
    let input = fs::File::open(&local).map_err(|e| format!("open {}: {e}", local.display()))?;
    let mut put = third_party(&c, true, &["-clear", "put", &rw_path]);
    put.stdin(input);
    run(&mut put).map_err(|e| format!("writing {rw_path} with afscptool failed: {e}"))?;
    println!(
        "put {rw_path} ({} MiB) in {}",
        o.size_mib,
        secs(t.elapsed())
    );

    let limit = Duration::from_secs(600);
    let rel = format!(".{}/bench.bin", c.cell);
    let (mut afsd, mut fuse, mut localr) = (
        ReadRuns::default(),
        ReadRuns::default(),
        ReadRuns::default(),
    );
    let mut afsio = Vec::new();
    let mut levels: Vec<(&str, Vec<f64>)> = LEVELS.iter().map(|l| (*l, Vec::new())).collect();
    let (mut wr_afsd, mut wr_tp) = (Vec::new(), Vec::new());
    let (mut l_afsd, mut l_fuse, mut l_bind) = (
        ListRuns::default(),
        ListRuns::default(),
        ListRuns::default(),
    );
    let mut ls_rpcs: RpcCounts = Vec::new();
    let mut ops: Option<OpsTimes> = None;
    let result = (|| -> Res<()> {
        for i in 1..=o.runs {
            let d = fresh_mount(&bin, &c, o, &dir, "afsd-rs.log")?;
            let r = read_set(&o.mountpoint.join(&rel), bytes, limit, "afsd-rs");
            let stopped = d.stop();
            afsd.push(r?, "afsd-rs", i);
            stopped?;
        }
        for i in 1..=o.runs {
            let p = FusePeer::start(&c, &dir, o.size_mib)?;
            let r = read_set(&p.mountpoint.join(&rel), bytes, limit, "afsd.fuse");
            let stopped = p.stop();
            fuse.push(r?, "afsd.fuse", i);
            stopped?;
        }
        for i in 1..=o.runs {
            let (n, s) = afsio_read(&c, &rw_path, limit)?;
            if n != bytes {
                return Err(format!("afsio: read {n} bytes, expected {bytes}"));
            }
            println!("run {i}: afsio {s:.3} s");
            afsio.push(s);
        }
        for i in 1..=o.runs {
            let (n, w) = timed_read(&local, limit)?;
            drop_caches();
            let (n2, d) = timed_read(&local, limit)?;
            if n != bytes || n2 != bytes {
                return Err(format!("local: read {n} and {n2} bytes, expected {bytes}"));
            }
            println!("run {i}: local file: again {w:.3} s, after drop_caches {d:.3} s");
            localr.warm.push(w);
            localr.dropped.push(d);
        }
        // the same file as user1 with a token, at each rxkad level
        let rdir = dir.join("rxkad");
        fs::create_dir_all(&rdir).map_err(|e| format!("cannot create {}: {e}", rdir.display()))?;
        let cc = rdir.join(format!("{}.cc", c.user1));
        kinit_as(&c, &c.user1, &c.user1_pw, &cc, BENCH_UID)?;
        println!("kinit {} into {} (uid {BENCH_UID})", c.user1, cc.display());
        for (level, times) in &mut levels {
            for i in 1..=o.runs {
                let s = cold_read_as(&bin, &c, o, &rdir, level, &cc, &rel, bytes, limit)?;
                println!(
                    "run {i}: afsd-rs cold as {} at rxkad {level}: {s:.3} s",
                    c.user1
                );
                times.push(s);
            }
        }
        // write: afsd-rs (dd, stored at close) vs the third-party put
        for i in 1..=o.runs {
            let (s1, s2) = write_run(&bin, &c, o, &dir, &local)?;
            println!("run {i}: write afsd-rs {s1:.3} s, third-party put {s2:.3} s");
            wr_afsd.push(s1);
            wr_tp.push(s2);
        }
        // ls -l and find -ls: afsd-rs, afsd.fuse, bindfs of a local copy
        bench_list::ensure_afs_dirs(&c)?;
        for i in 1..=o.runs {
            let (t, rpcs) = bench_list::afsd_run(&bin, &c, o, &dir)?;
            l_afsd.push(t, "afsd-rs", i);
            ls_rpcs = rpcs;
        }
        for i in 1..=o.runs {
            l_fuse.push(bench_list::fuse_run(&c, o, &dir)?, "afsd.fuse", i);
        }
        let src = dir.join("list-local");
        bench_list::make_local_dirs(&src)?;
        for i in 1..=o.runs {
            l_bind.push(
                bench_list::bindfs_run(&src, &dir.join("list-bindfs"))?,
                "bindfs",
                i,
            );
        }
        // small operations offline then replay, against the same online
        ops = Some(ops_run(&bin, &c, o, &dir)?);
        Ok(())
    })();
    for f in ["w.bin", "w2.bin"] {
        third_party_rm(&c, &format!("/afs/.{}/shared/{f}", c.cell));
    }
    // the file only lives in the RW volume (not released): remove it again
    third_party_rm(&c, &rw_path);
    if !was_up && !o.keep_cell {
        cell::down(&o.cell)?;
    }
    if let Err(e) = &result {
        println!("\nbench stopped early ({e}): rows not measured show n/a");
    }

    let mib = o.size_mib;
    let warm_local = Target::at_least(0.8, ">= 0.8x local");
    let faster = Target::above(1.0, "faster than afsd.fuse");
    let le_bindfs = Target::at_least(1.0, "<= 1.0x bindfs, every run").in_every_run();
    let le_fuse = Target::at_least(1.0, "no slower than afsd.fuse");
    let mut rows = vec![
        Row::new(
            format!("read {mib} MiB cold"),
            &afsd.cold,
            "afsio",
            &afsio,
            Some(Target::at_least(3.0, ">= 3x afsio")),
        ),
        Row::new(
            format!("read {mib} MiB cold"),
            &afsd.cold,
            "afsd.fuse",
            &fuse.cold,
            None,
        ),
        Row::new(
            "read warm (again)",
            &afsd.warm,
            "local file",
            &localr.warm,
            Some(warm_local),
        ),
        Row::new(
            "read warm (again)",
            &afsd.warm,
            "afsd.fuse",
            &fuse.warm,
            Some(faster),
        ),
        Row::new(
            "read warm after drop_caches",
            &afsd.dropped,
            "local file",
            &localr.dropped,
            Some(warm_local),
        ),
        Row::new(
            "read warm after drop_caches",
            &afsd.dropped,
            "afsd.fuse",
            &fuse.dropped,
            Some(faster),
        ),
    ];
    for (level, times) in &levels[1..] {
        let t = (*level == "crypt").then_some(Target::at_least(0.5, "crypt <= 2x clear's time"));
        rows.push(Row::new(
            format!("read cold at rxkad {level}"),
            times,
            "afsd-rs at clear",
            &levels[0].1,
            t,
        ));
    }
    rows.push(Row::new(
        format!("write {mib} MiB (dd + close)"),
        &wr_afsd,
        "afscptool put",
        &wr_tp,
        None,
    ));
    let list = |name: &str, a: &[f64], b: &[f64], f: &[f64], t: [Option<Target>; 2]| {
        [
            Row::new(name, a, "bindfs", b, t[0]),
            Row::new(name, a, "afsd.fuse", f, t[1]),
        ]
    };
    rows.extend(list(
        "ls -l 10,000 entries cold",
        &l_afsd.ls_cold,
        &l_bind.ls_cold,
        &l_fuse.ls_cold,
        [None, None],
    ));
    rows.extend(list(
        "ls -l 10,000 entries warm",
        &l_afsd.ls_warm,
        &l_bind.ls_warm,
        &l_fuse.ls_warm,
        [Some(le_bindfs), Some(le_fuse)],
    ));
    rows.extend(list(
        "find -ls 10,000 files cold",
        &l_afsd.find_cold,
        &l_bind.find_cold,
        &l_fuse.find_cold,
        [None, None],
    ));
    rows.extend(list(
        "find -ls 10,000 files warm",
        &l_afsd.find_warm,
        &l_bind.find_warm,
        &l_fuse.find_warm,
        [Some(le_bindfs), Some(le_fuse)],
    ));
    if let Some(t) = &ops {
        let n = t.files * 4;
        rows.push(Row::new(
            format!("{n} small ops offline (logged)"),
            &[t.offline],
            "online",
            &[t.online],
            None,
        ));
        rows.push(Row::new(
            "replay after online",
            &[t.replay],
            "online",
            &[t.online],
            None,
        ));
        rows.push(Row::new(
            "offline + replay",
            &[t.offline + t.replay],
            "online",
            &[t.online],
            None,
        ));
    }
    let mut md = notes(&c.cell, o, &ls_rpcs);
    md.push_str(&bench_summary::table(&rows, o.runs));
    println!();
    print!("{md}");
    let out = dir.join("read.md");
    fs::write(&out, &md).map_err(|e| format!("cannot write {}: {e}", out.display()))?;
    println!("\nwritten to {}", out.display());
    result
}

/// What each row measures, before the table.
fn notes(cell: &str, o: &BenchOpts, rpcs: &RpcCounts) -> String {
    let mut s = format!(
        "# cargo xtask bench: afsd-rs against peers in the same run\n\n\
         - read: `/afs/.{cell}/bench.bin` ({} MiB random, RW root.cell) in 1 MiB reads; \
         cold = fresh mount, empty cache; warm = again on the same mount; after drop_caches = \
         after `echo 3 > /proc/sys/vm/drop_caches`, same mount. afsd.fuse (OpenAFS) the same on \
         its own mount: `afsd.fuse -confdir D -cachedir C -mountdir M -f` in the client netns, \
         empty disk cache of {} KiB (`cacheinfo`), defaults otherwise. afsio = `afsio read` \
         (OpenAFS libafscp); local file = the same bytes on the local disk, read again (page \
         cache) and after drop_caches.\n\
         - rxkad: `cat` as uid {BENCH_UID} holding the user's token (`afsd-rs aklog`), fresh \
         mount with `--rxkad-level`, empty cache.\n\
         - write: `dd bs=1M` into `/afs/.{cell}/shared/` on a fresh mount, close included, \
         against `afscptool put` from stdin; both anonymous.\n\
         - ls -l / find -ls: `ls -l {}` ({} empty files, `afscptool touchmany`) and \
         `find {} -ls` (100 directories of 100 empty files, `afscptool touchtree`), output to /dev/null; each client \
         on a fresh mount: ls cold, ls again, find cold, find again. bindfs = a passthrough \
         FUSE mount of a local copy, kernel caches dropped before mounting. RPCs of afsd-rs's \
         cold `ls -l` (last run):",
        o.size_mib,
        crate::bench_peer::cache_kib(o.size_mib),
        bench_list::LS_DIR,
        bench_list::LS_ENTRIES,
        bench_list::FIND_DIR
    );
    for (k, n) in rpcs {
        s.push_str(&format!(" {k} {n},"));
    }
    s.pop();
    s.push_str(
        ".\n- small ops: files created with 100 bytes, chmodded and renamed (4 operations \
         each) in a fresh directory of `shared/`, online, then offline after `afsd-rs offline \
         DIR` (logged), then the replay after `afsd-rs online DIR`; one run.\n\n",
    );
    s
}

/// Start the daemon on a fresh mount (empty cache dir `dir/cache`) and
/// wait until it is usable.
pub(crate) fn fresh_mount(
    bin: &Path,
    c: &Cell,
    o: &BenchOpts,
    dir: &Path,
    log: &str,
) -> Res<Daemon> {
    prepare_mountpoint(&o.mountpoint)?;
    let cache = dir.join("cache");
    let _ = fs::remove_dir_all(&cache);
    fs::create_dir_all(&cache).map_err(|e| format!("cannot create {}: {e}", cache.display()))?;
    let mut d = Daemon::start(bin, c, &o.mountpoint, &cache, &[], &dir.join(log), false)?;
    if let Err(e) = d.wait_ready(&c.cell, Duration::from_secs(30)) {
        d.abort();
        return Err(e);
    }
    Ok(d)
}

/// Run `cmd` (stdout discarded, stdin as set by the caller or /dev/null);
/// seconds.  Fails on a non-zero exit or after `limit`.
pub(crate) fn timed_run(mut cmd: Command, what: &str, limit: Duration) -> Res<f64> {
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    let t = Instant::now();
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", util::show_cmd(&cmd)))?;
    let mut err = child.stderr.take().ok_or("no stderr pipe")?;
    let errs = thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let st = wait_timeout(&mut child, limit);
    let s = t.elapsed().as_secs_f64();
    match st {
        None => Err(format!("{what} took over {}", secs(limit))),
        Some(st) if !st.success() => Err(format!(
            "{what} failed ({}): {}",
            util::describe_status(&st),
            errs.join().unwrap_or_default().trim()
        )),
        Some(_) => Ok(s),
    }
}

/// `third_party rm PATH` as admin, ignoring failures (cleanup).
fn third_party_rm(c: &Cell, path: &str) {
    let _ = capture(
        &mut third_party(c, true, &["rm", path]),
        Duration::from_secs(60),
    );
}

/// Write times of one run: afsd-rs (dd through the mount, incl. close)
/// and the third-party `put`; seconds.
fn write_run(bin: &Path, c: &Cell, o: &BenchOpts, dir: &Path, src: &Path) -> Res<(f64, f64)> {
    let limit = Duration::from_secs(600);
    let bytes = o.size_mib << 20;
    let w1 = format!("/afs/.{}/shared/w.bin", c.cell);
    let w2 = format!("/afs/.{}/shared/w2.bin", c.cell);
    third_party_rm(c, &w1);
    third_party_rm(c, &w2);
    let d = fresh_mount(bin, c, o, dir, "afsd-rs-write.log")?;
    let target = o.mountpoint.join(format!(".{}/shared/w.bin", c.cell));
    let r = (|| -> Res<f64> {
        let mut dd = Command::new("dd");
        dd.arg(format!("if={}", src.display()))
            .arg(format!("of={}", target.display()))
            .arg("bs=1M")
            .stdin(Stdio::null());
        let s = timed_run(dd, "dd through afsd-rs", limit)?;
        let n = fs::metadata(&target)
            .map_err(|e| format!("stat {}: {e}", target.display()))?
            .len();
        if n != bytes {
            return Err(format!("afsd-rs write: {n} bytes stored, expected {bytes}"));
        }
        Ok(s)
    })();
    let stopped = d.stop();
    let s1 = r?;
    stopped?;
    let input = fs::File::open(src).map_err(|e| format!("open {}: {e}", src.display()))?;
    let mut put = third_party(c, false, &["put", &w2]);
    put.stdin(input);
    let s2 = timed_run(put, "third-party put (anonymous)", limit)?;
    let st = capture(&mut third_party(c, false, &["stat", &w2]), limit)?;
    if !st.ok() || !st.stdout.contains(&format!(" length {bytes} ")) {
        return Err(format!(
            "third-party put: {w2} not {bytes} bytes long: {}",
            st.stdout.trim()
        ));
    }
    Ok((s1, s2))
}
