//! The small-operations row of `cargo xtask bench`: 10,000 small
//! operations online, then offline (`afsd-rs offline DIR`) and the replay
//! after `afsd-rs online DIR`.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::afsd::{prepare_mountpoint, third_party, wait_replayed, Daemon};
use crate::bench::BenchOpts;
use crate::cell::Cell;
use crate::util::{capture, Res};

/// Small operations of the offline benchmark: `AFSD_BENCH_OFFLINE_OPS`
/// (default 10,000), four per file.
pub fn bench_ops() -> Res<usize> {
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
pub struct OpsTimes {
    pub files: usize,
    pub online: f64,
    pub offline: f64,
    pub replay: f64,
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
pub fn ops_run(bin: &Path, c: &Cell, o: &BenchOpts, dir: &Path) -> Res<OpsTimes> {
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
            fs::read_dir(p).map_err(|e| format!("readdir {}: {e}", p.display()))?;
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
