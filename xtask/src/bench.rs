//! `cargo xtask bench`: afsd-rs against its peers on the test cell, each
//! figure a ratio to a peer measured in the same run (OpenAFS's `afsio`
//! and `afscptool`, a local file, bindfs), written as Markdown tables.
//! Mounting and stopping the daemon is `afsd.rs`'s.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::afsd::{
    afsd_bin, prepare_mountpoint, third_party, umount, wait_replayed, with_timeout, Daemon,
};
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

fn best(v: &[f64]) -> f64 {
    v.iter().cloned().fold(f64::INFINITY, f64::min)
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

pub fn bench(o: &BenchOpts) -> Res<()> {
    util::require_root("bench")?;
    if o.runs == 0 || o.size_mib == 0 {
        return Err("bench: --runs and --size-mib must be at least 1".into());
    }
    cell::install_deps(&[])?; // bindfs (xtask/packages.txt)
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
    let mut put = c.labexec(
        &c.client_netns,
        [
            c.third_party.display().to_string(),
            "-k".into(),
            "-clear".into(),
            "put".into(),
            rw_path.clone(),
        ],
    );
    put.env("KRB5CCNAME", format!("FILE:{}", c.admin_ccache().display()))
        .stdin(input);
    run(&mut put).map_err(|e| format!("writing {rw_path} with afscptool failed: {e}"))?;
    println!(
        "put {rw_path} ({} MiB) in {}",
        o.size_mib,
        secs(t.elapsed())
    );

    let limit = Duration::from_secs(600);
    let rel = format!(".{}/bench.bin", c.cell);
    let mut cold = Vec::new();
    let mut warm = Vec::new();
    let mut afsio = Vec::new();
    let mut localr = Vec::new();
    let mut levels: Vec<(&str, Vec<f64>)> = LEVELS.iter().map(|l| (*l, Vec::new())).collect();
    let (mut wr_afsd, mut wr_tp) = (Vec::new(), Vec::new());
    let (mut ls_cold, mut ls_warm, mut bf_cold, mut bf_warm) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut ls_rpcs: RpcCounts = Vec::new();
    let mut ops: Option<OpsTimes> = None;
    let ls_afs = format!("/afs/.{}/ls10k", c.cell);
    let check = |what: &str, n: u64| -> Res<()> {
        if n == bytes {
            Ok(())
        } else {
            Err(format!("{what}: read {n} bytes, expected {bytes}"))
        }
    };
    let result = (|| -> Res<()> {
        for i in 1..=o.runs {
            let d = fresh_mount(&bin, &c, o, &dir, "afsd-rs.log")?;
            let f = o.mountpoint.join(&rel);
            let r = timed_read(&f, limit).and_then(|(n, s)| {
                check("afsd-rs cold", n)?;
                let (n2, s2) = timed_read(&f, limit)?;
                check("afsd-rs warm", n2)?;
                Ok((s, s2))
            });
            let stopped = d.stop();
            let (s, s2) = r?;
            stopped?;
            println!("run {i}: afsd-rs cold {s:.3} s, warm {s2:.3} s");
            cold.push(s);
            warm.push(s2);
        }
        for i in 1..=o.runs {
            let (n, s) = afsio_read(&c, &rw_path, limit)?;
            check("afsio", n)?;
            println!("run {i}: afsio {s:.3} s");
            afsio.push(s);
        }
        for i in 1..=o.runs {
            let (n, s) = timed_read(&local, limit)?;
            check("local", n)?;
            println!("run {i}: local {s:.3} s");
            localr.push(s);
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
        // ls -l of a 10,000-entry directory: afsd-rs vs bindfs of a local copy
        ensure_ls_dir(&c, &ls_afs)?;
        for i in 1..=o.runs {
            let (s1, s2, rpcs) = ls_afsd_run(&bin, &c, o, &dir)?;
            println!("run {i}: ls -l afsd-rs cold {s1:.3} s, warm {s2:.3} s, cold RPCs {rpcs:?}");
            ls_cold.push(s1);
            ls_warm.push(s2);
            ls_rpcs = rpcs;
        }
        // small operations offline then replay, against the same online
        ops = Some(ops_run(&bin, &c, o, &dir)?);
        let src = dir.join("ls10k-local");
        make_local_ls_dir(&src)?;
        let mnt = dir.join("ls10k-bindfs");
        for i in 1..=o.runs {
            let (s1, s2) = ls_bindfs_run(&src, &mnt)?;
            println!("run {i}: ls -l bindfs cold {s1:.3} s, warm {s2:.3} s");
            bf_cold.push(s1);
            bf_warm.push(s2);
        }
        Ok(())
    })();
    for f in ["w.bin", "w2.bin"] {
        third_party_rm(&c, &format!("/afs/.{}/shared/{f}", c.cell));
    }
    // the file only lives in the RW volume (not released): remove it again
    let _ = capture(
        c.labexec(
            &c.client_netns,
            [
                c.third_party.display().to_string(),
                "-k".into(),
                "rm".into(),
                rw_path.clone(),
            ],
        )
        .env("KRB5CCNAME", format!("FILE:{}", c.admin_ccache().display())),
        Duration::from_secs(60),
    );
    if !was_up && !o.keep_cell {
        cell::down(&o.cell)?;
    }
    result?;

    let mib = o.size_mib as f64;
    let (tc, ta, tw, tl) = (best(&cold), best(&afsio), best(&warm), best(&localr));
    let rows = [
        (
            "afsd-rs cold (fresh mount, empty cache)",
            tc,
            format!("{:.2}x afsio", ta / tc),
        ),
        ("afsio read (OpenAFS libafscp)", ta, String::new()),
        (
            "afsd-rs warm (second read, same mount)",
            tw,
            format!("{:.2}x local", tl / tw),
        ),
        ("local file (page cache)", tl, String::new()),
    ];
    let mut md = format!(
        "# Sequential read, {} MiB random file\n\n\
         File `/afs/.{}/bench.bin` (RW root.cell) over the veth of the test cell; \
         best of {} runs each; cold = new mount with an empty cache dir each run.\n\
         ratio = throughput relative to the reference (1.00x = as fast, <1 slower).\n\n\
         | case | seconds | MiB/s | ratio |\n|---|---:|---:|---:|\n",
        o.size_mib, c.cell, o.runs
    );
    for (name, s, ratio) in &rows {
        md.push_str(&format!("| {name} | {s:.3} | {:.1} | {ratio} |\n", mib / s));
    }
    let tclear = best(&levels[0].1);
    md.push_str(&format!(
        "\n# Cold read through /afs: rxkad crypt vs clear\n\n\
         The same file read with `cat` as uid {BENCH_UID} holding {}'s token \
         (`afsd-rs aklog`), on a fresh mount with `--rxkad-level LEVEL` and an \
         empty cache dir each run; best of {} runs each.\n\
         ratio = time relative to clear (1.00x = as fast, >1 slower).\n\n\
         | level | seconds | MiB/s | ratio |\n|---|---:|---:|---:|\n",
        c.user1, o.runs
    ));
    for (level, times) in &levels {
        let s = best(times);
        let ratio = if *level == LEVELS[0] {
            String::new()
        } else {
            format!("{:.2}x clear", s / tclear)
        };
        md.push_str(&format!(
            "| {level} | {s:.3} | {:.1} | {ratio} |\n",
            mib / s
        ));
    }
    let (w1, w2) = (best(&wr_afsd), best(&wr_tp));
    md.push_str(&format!(
        "\n# Write {} MiB\n\n\
         The same random file written anonymously (root, no token) into \
         `/afs/.{}/shared/`: through afsd-rs with `dd bs=1M` on a fresh mount \
         (stored at close, which is included), and with the third-party tool \
         (`afscptool put`, OpenAFS libafscp) from stdin; best of {} runs each.\n\
         ratio = throughput relative to the third-party writer (1.00x = as fast, <1 slower).\n\n\
         | case | seconds | MiB/s | ratio |\n|---|---:|---:|---:|\n\
         | afsd-rs (dd + close, fresh mount) | {w1:.3} | {:.1} | {:.2}x third-party |\n\
         | third-party put (afscptool) | {w2:.3} | {:.1} |  |\n",
        o.size_mib,
        c.cell,
        o.runs,
        mib / w1,
        w2 / w1,
        mib / w2
    ));
    let (lc, lw, bc, bw) = (
        best(&ls_cold),
        best(&ls_warm),
        best(&bf_cold),
        best(&bf_warm),
    );
    md.push_str(&format!(
        "\n# ls -l of a {LS_ENTRIES}-entry directory\n\n\
         `ls -l {} > /dev/null` (made with `afscptool touchmany`): afsd-rs cold = \
         fresh mount with an empty cache dir, warm = again on the same mount; \
         bindfs = a passthrough FUSE mount of a local directory with the same \
         {LS_ENTRIES} empty files, cold = right after mounting (kernel caches \
         dropped), warm = again; best of {} runs each.\n\
         ratio = time relative to bindfs (1.00x = as fast, >1 slower).\n\n\
         | case | seconds | ratio |\n|---|---:|---:|\n\
         | afsd-rs cold | {lc:.3} | {:.2}x bindfs cold |\n\
         | bindfs cold | {bc:.3} |  |\n\
         | afsd-rs warm | {lw:.3} | {:.2}x bindfs warm |\n\
         | bindfs warm | {bw:.3} |  |\n\n\
         RPCs of the afsd-rs cold `ls -l` (from `afsd-rs stats`, last run):",
        o.mountpoint
            .join(ls_afs.trim_start_matches("/afs/"))
            .display(),
        o.runs,
        lc / bc,
        lw / bw
    ));
    for (k, n) in &ls_rpcs {
        md.push_str(&format!(" {k} {n},"));
    }
    md.pop();
    md.push_str(".\n");
    if let Some(t) = &ops {
        md.push_str(&t.table(&c.cell));
    }
    println!();
    print!("{md}");
    let out = dir.join("read.md");
    fs::write(&out, &md).map_err(|e| format!("cannot write {}: {e}", out.display()))?;
    println!("\nwritten to {}", out.display());
    Ok(())
}

/// Start the daemon on a fresh mount (empty cache dir `dir/cache`) and
/// wait until it is usable.
fn fresh_mount(bin: &Path, c: &Cell, o: &BenchOpts, dir: &Path, log: &str) -> Res<Daemon> {
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
fn timed_run(mut cmd: Command, what: &str, limit: Duration) -> Res<f64> {
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

/// (RPC name, calls) of LS_RPCS.
type RpcCounts = Vec<(&'static str, u64)>;

/// RPCs counted for the cold `ls -l`.
const LS_RPCS: [&str; 3] = [
    "RXAFS_InlineBulkStatus",
    "RXAFS_FetchStatus",
    "RXAFS_FetchData64",
];

/// Entries of the `ls -l` directory.
const LS_ENTRIES: usize = 10_000;

/// Name of entry `i` as `touchmany DIR COUNT e` makes it.
fn ls_entry(i: usize) -> String {
    format!("e{i:05}")
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

/// Make `/afs/.CELL/ls10k` with the third-party tool unless it exists with
/// all its entries.
fn ensure_ls_dir(c: &Cell, afs_dir: &str) -> Res<()> {
    let limit = Duration::from_secs(1200);
    let ls = capture(&mut third_party(c, true, &["ls", afs_dir]), limit)?;
    if ls.ok() {
        let n = ls
            .stdout
            .lines()
            .filter(|l| l.split('\t').nth(1).is_some_and(|n| n.starts_with('e')))
            .count();
        if n == LS_ENTRIES {
            println!("reusing {afs_dir} ({n} entries)");
            return Ok(());
        }
        return Err(format!(
            "{afs_dir} exists with {n} entries, not {LS_ENTRIES}: remove it \
             (afscptool -k rm/rmdir) and run again"
        ));
    }
    let t = Instant::now();
    run(&mut third_party(c, true, &["mkdir", afs_dir]))
        .map_err(|e| format!("mkdir {afs_dir}: {e}"))?;
    run(&mut third_party(
        c,
        true,
        &["touchmany", afs_dir, &LS_ENTRIES.to_string(), "e"],
    ))
    .map_err(|e| format!("touchmany {afs_dir}: {e}"))?;
    println!(
        "created {afs_dir} with {LS_ENTRIES} entries in {}",
        secs(t.elapsed())
    );
    Ok(())
}

fn ls_l(d: &Path, what: &str) -> Res<f64> {
    let mut ls = Command::new("ls");
    ls.arg("-l").arg(d).stdin(Stdio::null());
    timed_run(ls, what, Duration::from_secs(600))
}

fn count_entries(d: &Path) -> Res<usize> {
    Ok(fs::read_dir(d)
        .map_err(|e| format!("readdir {}: {e}", d.display()))?
        .count())
}

/// One afsd-rs run: cold and warm `ls -l` seconds, RPCs of the cold one.
fn ls_afsd_run(bin: &Path, c: &Cell, o: &BenchOpts, dir: &Path) -> Res<(f64, f64, RpcCounts)> {
    let d = fresh_mount(bin, c, o, dir, "afsd-rs-ls.log")?;
    let p = o.mountpoint.join(format!(".{}/ls10k", c.cell));
    let r = (|| {
        let before = rpc_stats(bin, &o.mountpoint)?;
        let cold = ls_l(&p, "ls -l through afsd-rs (cold)")?;
        let after = rpc_stats(bin, &o.mountpoint)?;
        let warm = ls_l(&p, "ls -l through afsd-rs (warm)")?;
        let n = count_entries(&p)?;
        if n != LS_ENTRIES {
            return Err(format!(
                "{}: {n} entries, expected {LS_ENTRIES}",
                p.display()
            ));
        }
        let rpcs = LS_RPCS
            .iter()
            .map(|k| (*k, rpc_count(&after, k) - rpc_count(&before, k)))
            .collect();
        Ok((cold, warm, rpcs))
    })();
    let stopped = d.stop();
    let r = r?;
    stopped?;
    Ok(r)
}

/// One bindfs run over `src` on `mnt`: cold (caches dropped before the
/// mount) and warm `ls -l` seconds.
fn ls_bindfs_run(src: &Path, mnt: &Path) -> Res<(f64, f64)> {
    prepare_mountpoint(mnt)?;
    if let Err(e) = fs::write("/proc/sys/vm/drop_caches", "3\n") {
        println!("cannot drop the kernel caches ({e}): bindfs cold is page-cache warm");
    }
    run(Command::new("bindfs").arg(src).arg(mnt))?;
    let r = (|| {
        let cold = ls_l(mnt, "ls -l through bindfs (cold)")?;
        let warm = ls_l(mnt, "ls -l through bindfs (warm)")?;
        let n = count_entries(mnt)?;
        if n != LS_ENTRIES {
            return Err(format!(
                "{}: {n} entries, expected {LS_ENTRIES}",
                mnt.display()
            ));
        }
        Ok((cold, warm))
    })();
    let u = capture(
        Command::new("fusermount3").arg("-u").arg(mnt),
        Duration::from_secs(30),
    )?;
    if !u.ok() {
        umount(mnt)?;
    }
    r
}

/// The local copy of the directory: LS_ENTRIES empty files, same names.
fn make_local_ls_dir(src: &Path) -> Res<()> {
    if count_entries(src).ok() == Some(LS_ENTRIES) {
        return Ok(());
    }
    let _ = fs::remove_dir_all(src);
    fs::create_dir_all(src).map_err(|e| format!("cannot create {}: {e}", src.display()))?;
    for i in 0..LS_ENTRIES {
        let f = src.join(ls_entry(i));
        fs::File::create(&f).map_err(|e| format!("create {}: {e}", f.display()))?;
    }
    Ok(())
}

/// Small operations of the offline benchmark: `AFSD_BENCH_OFFLINE_OPS`
/// (default 10,000), four per file.
fn bench_ops() -> Res<usize> {
    match std::env::var("AFSD_BENCH_OFFLINE_OPS") {
        Err(_) => Ok(10_000),
        Ok(v) => match v.trim().parse::<usize>() {
            Ok(n) if n >= 4 => Ok(n),
            _ => Err(format!(
                "AFSD_BENCH_OFFLINE_OPS={v:?}: expected a number of operations, at least 4"
            )),
        },
    }
}

/// Seconds of one run of the small-operations benchmark.
struct OpsTimes {
    files: usize,
    online: f64,
    offline: f64,
    replay: f64,
}

impl OpsTimes {
    fn table(&self, cell: &str) -> String {
        let (n, on, off, rep) = (self.files * 4, self.online, self.offline, self.replay);
        format!(
            "\n# {n} small operations offline, then replay\n\n\
             {} files, each created with 100 bytes and closed, chmodded and \
             renamed (4 operations each: CreateFile, StoreData64, StoreStatus, \
             Rename), anonymously in a fresh directory of `/afs/.{cell}/shared/`, \
             on a fresh mount: online (each change at the fileserver before it \
             returns), and offline after `afsd-rs offline DIR` (each change in \
             the cache and the change log, durable before it returns), then \
             `afsd-rs online DIR` until `afsd-rs status` shows the volume \
             connected with nothing pending; one run each.\n\
             ratio = time relative to online (1.00x = as long, <1 faster).\n\n\
             | case | seconds | ops/s | ratio |\n|---|---:|---:|---:|\n\
             | online | {on:.3} | {:.0} |  |\n\
             | offline (local, logged) | {off:.3} | {:.0} | {:.2}x online |\n\
             | replay after `online` | {rep:.3} | {:.0} | {:.2}x online |\n\
             | offline + replay | {:.3} | {:.0} | {:.2}x online |\n",
            self.files,
            n as f64 / on,
            n as f64 / off,
            off / on,
            n as f64 / rep,
            rep / on,
            off + rep,
            n as f64 / (off + rep),
            (off + rep) / on
        )
    }
}

/// The operations of the small-operations benchmark on `files` files in
/// `d`; seconds.
fn small_ops(d: &Path, files: usize) -> Res<f64> {
    use std::os::unix::fs::PermissionsExt;
    let data = [b'x'; 100];
    let t = Instant::now();
    for i in 0..files {
        let f = d.join(format!("f{i:05}"));
        fs::write(&f, data).map_err(|e| format!("write {}: {e}", f.display()))?;
        fs::set_permissions(&f, fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("chmod {}: {e}", f.display()))?;
        let g = d.join(format!("g{i:05}"));
        fs::rename(&f, &g).map_err(|e| format!("rename {}: {e}", f.display()))?;
    }
    Ok(t.elapsed().as_secs_f64())
}

/// One run of the small-operations benchmark: online, then offline and
/// replay, each in a fresh directory on a fresh mount with its own control
/// socket. The directories are removed afterwards.
fn ops_run(bin: &Path, c: &Cell, o: &BenchOpts, dir: &Path) -> Res<OpsTimes> {
    let files = bench_ops()? / 4;
    let limit = Duration::from_secs(3600);
    prepare_mountpoint(&o.mountpoint)?;
    let cache = dir.join("cache");
    let _ = fs::remove_dir_all(&cache);
    fs::create_dir_all(&cache).map_err(|e| format!("cannot create {}: {e}", cache.display()))?;
    let socket = dir.join("ops-control.sock");
    let extra = ["--control-socket".to_string(), socket.display().to_string()];
    let mut d = Daemon::start(
        bin,
        c,
        &o.mountpoint,
        &cache,
        &extra,
        &dir.join("afsd-rs-ops.log"),
        false,
    )?;
    if let Err(e) = d.wait_ready(&c.cell, Duration::from_secs(30)) {
        d.abort();
        return Err(e);
    }
    let shared = o.mountpoint.join(format!(".{}/shared", c.cell));
    let on_dir = shared.join(format!("bench-ops-online-{}", std::process::id()));
    let off_dir = shared.join(format!("bench-ops-offline-{}", std::process::id()));
    let cli = |args: &[&str]| -> Res<()> {
        let out = capture(
            Command::new(bin).args(args).env("AFSD_CONTROL", &socket),
            Duration::from_secs(60),
        )?;
        if out.ok() {
            Ok(())
        } else {
            Err(format!("afsd-rs {} failed: {}", args.join(" "), out.why()))
        }
    };
    let r = (|| -> Res<OpsTimes> {
        for p in [&on_dir, &off_dir] {
            fs::create_dir(p).map_err(|e| format!("mkdir {}: {e}", p.display()))?;
            count_entries(p)?;
        }
        let online = small_ops(&on_dir, files)?;
        println!("{} small operations online: {online:.3} s", files * 4);
        let off = off_dir.display().to_string();
        cli(&["offline", &off])?;
        let offline = small_ops(&off_dir, files)?;
        println!("{} small operations offline: {offline:.3} s", files * 4);
        let t = Instant::now();
        cli(&["online", &off])?;
        wait_replayed(bin, Some(&socket), limit)?;
        let replay = t.elapsed().as_secs_f64();
        println!("replay: {replay:.3} s");
        let ls = capture(
            &mut third_party(
                c,
                true,
                &[
                    "ls",
                    &format!(
                        "/afs/.{}/shared/{}",
                        c.cell,
                        off_dir.file_name().unwrap_or_default().to_string_lossy()
                    ),
                ],
            ),
            limit,
        )?;
        let n = ls.stdout.lines().filter(|l| l.contains("\tg")).count();
        if n != files {
            return Err(format!(
                "after the replay the server lists {n} files, expected {files}"
            ));
        }
        Ok(OpsTimes {
            files,
            online,
            offline,
            replay,
        })
    })();
    for p in [&on_dir, &off_dir] {
        if let Err(e) = fs::remove_dir_all(p) {
            println!("cannot remove {}: {e}", p.display());
        }
    }
    let stopped = d.stop();
    let r = r?;
    stopped?;
    Ok(r)
}
