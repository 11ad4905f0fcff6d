//! `cargo xtask demo`: run the afsd-rs FUSE daemon against the test cell,
//! and the daemon's start and stop that `cargo xtask bench` uses too.
//!
//! The daemon's CLI (written elsewhere) is assumed to be exactly
//!   afsd-rs mount [--conf-dir DIR] [--cache-dir DIR] [--foreground] [--dead-time SECS]
//!                 [--control-socket PATH] [--rxkad-level clear|auth|crypt] MOUNTPOINT
//!   afsd-rs aklog --conf-dir DIR   (socket from $AFSD_CONTROL)
//!   afsd-rs stats MOUNTPOINT
//! It is started with --foreground as our child under
//! `nsenter --net=/run/netns/$CLIENT_NETNS` (network namespace only, so the
//! mount is visible host-wide and `umount` works from the host).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::cell::{self, Cell, CellOpts};
use crate::util::{self, capture, run, secs, wait_timeout, Res};

pub struct Daemon {
    child: Child,
    pub mountpoint: PathBuf,
    pub log: PathBuf,
}

/// Unmount `m` (lazily if a plain umount fails).
pub fn umount(m: &Path) -> Res<()> {
    if !util::is_mount_point(m) {
        return Ok(());
    }
    let plain = capture(Command::new("umount").arg(m), Duration::from_secs(30))?;
    if !plain.ok() {
        eprintln!(
            "umount {} failed ({}); trying umount -l",
            m.display(),
            plain.why()
        );
        let lazy = capture(
            Command::new("umount").arg("-l").arg(m),
            Duration::from_secs(30),
        )?;
        if !lazy.ok() {
            return Err(format!("cannot unmount {}: {}", m.display(), lazy.why()));
        }
    }
    if util::is_mount_point(m) {
        return Err(format!(
            "{} is still a mount point after umount",
            m.display()
        ));
    }
    Ok(())
}

/// Make `m` an empty, unmounted directory to mount on.
/// Waits until MOUNTPOINT/CELL lists, through a FUSE client (`what`,
/// running as `child`, logging to `log`): Err with the log's tail if the
/// client exits first or `limit` passes.
pub fn wait_listable(
    what: &str,
    child: &mut Child,
    mountpoint: &Path,
    log: &Path,
    cell: &str,
    limit: Duration,
) -> Res<()> {
    let t = Instant::now();
    let probe = mountpoint.join(cell);
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            return Err(format!(
                "{what} exited ({}) before {} became listable; last lines of {}:\n{}",
                util::describe_status(&st),
                probe.display(),
                log.display(),
                util::tail(log, 20)
            ));
        }
        if util::is_mount_point(mountpoint) {
            let p = probe.clone();
            let r = with_timeout(Duration::from_secs(10), move || {
                fs::read_dir(&p).map(|d| d.count())
            });
            if let Some(Ok(n)) = r {
                println!(
                    "{} is listable ({n} entries) after {}",
                    probe.display(),
                    secs(t.elapsed())
                );
                return Ok(());
            }
        }
        if t.elapsed() > limit {
            return Err(format!(
                "{} not listable after {}; last lines of {}:\n{}",
                probe.display(),
                secs(limit),
                log.display(),
                util::tail(log, 20)
            ));
        }
        thread::sleep(Duration::from_millis(250));
    }
}

pub fn prepare_mountpoint(m: &Path) -> Res<()> {
    if util::is_mount_point(m) {
        println!("{} is a mount point: unmounting it first", m.display());
        umount(m)?;
    }
    fs::create_dir_all(m).map_err(|e| format!("cannot create {}: {e}", m.display()))
}

/// Run `f` in a thread; None if it does not finish within `t` (the thread
/// is left behind, e.g. stuck in a FUSE request).
pub(crate) fn with_timeout<T: Send + 'static>(
    t: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(t).ok()
}

impl Daemon {
    /// Start `bin mount --foreground ...` in the client netns, output to `log`.
    /// `detach`: own session (setsid), so it outlives xtask (demo).
    pub fn start(
        bin: &Path,
        c: &Cell,
        mountpoint: &Path,
        cache_dir: &Path,
        extra: &[String],
        log: &Path,
        detach: bool,
    ) -> Res<Daemon> {
        if !bin.exists() {
            return Err(format!("{} not built", bin.display()));
        }
        if let Some(d) = log.parent() {
            fs::create_dir_all(d).map_err(|e| format!("cannot create {}: {e}", d.display()))?;
        }
        let logf =
            fs::File::create(log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        let logf2 = logf
            .try_clone()
            .map_err(|e| format!("cannot dup log file: {e}"))?;
        let mut cmd = if detach {
            let mut c = Command::new("setsid");
            c.arg("nsenter");
            c
        } else {
            Command::new("nsenter")
        };
        cmd.arg(format!("--net=/run/netns/{}", c.client_netns))
            .arg(bin)
            .arg("mount")
            .arg("--conf-dir")
            .arg(c.afs_conf_dir())
            .arg("--cache-dir")
            .arg(cache_dir)
            .arg("--foreground")
            .args(extra)
            .arg(mountpoint)
            .env("KRB5_CONFIG", c.krb5_config())
            .current_dir(util::workspace_root())
            .stdin(Stdio::null())
            .stdout(logf)
            .stderr(logf2);
        println!(
            "starting: {}  (log: {})",
            util::show_cmd(&cmd),
            log.display()
        );
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", util::show_cmd(&cmd)))?;
        Ok(Daemon {
            child,
            mountpoint: mountpoint.to_path_buf(),
            log: log.to_path_buf(),
        })
    }

    /// Wait until MOUNTPOINT/CELL is listable.
    pub fn wait_ready(&mut self, cell: &str, limit: Duration) -> Res<()> {
        wait_listable(
            "afsd-rs",
            &mut self.child,
            &self.mountpoint,
            &self.log,
            cell,
            limit,
        )
    }

    /// Unmount and wait for the daemon to exit (kill it after 10 s).
    pub fn stop(mut self) -> Res<()> {
        let r = umount(&self.mountpoint);
        if wait_timeout(&mut self.child, Duration::from_secs(10)).is_none() {
            eprintln!(
                "afsd-rs (pid {}) did not exit after the unmount: killed",
                self.child.id()
            );
        }
        r
    }

    /// Leave it running (demo).
    pub fn detach(self) -> u32 {
        self.child.id()
    }

    /// Kill after a failed start, unmounting if needed.
    pub fn abort(self) {
        let _ = self.stop();
    }
}

/// Print `$ CMD`, run it with `sh -c`, report failure, never abort.
fn show(cmd: &str, note: &str, expect_fail: bool, limit: Duration) {
    println!();
    if !note.is_empty() {
        println!("# {note}");
    }
    println!("$ {cmd}");
    let _ = std::io::stdout().flush();
    let child = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(Stdio::null())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            println!("  [could not run: {e}]");
            return;
        }
    };
    let t = Instant::now();
    match wait_timeout(&mut child, limit) {
        None => println!("  [timed out after {}, killed]", secs(limit)),
        Some(st) if st.success() && expect_fail => {
            println!("  [unexpected: it worked ({})]", secs(t.elapsed()))
        }
        Some(st) if st.success() => {}
        Some(st) if expect_fail => println!(
            "  [failed as expected: {} after {}]",
            util::describe_status(&st),
            secs(t.elapsed())
        ),
        Some(st) => println!(
            "  [FAILED: {} after {}; continuing]",
            util::describe_status(&st),
            secs(t.elapsed())
        ),
    }
}

/// `afsd-rs status --json`: (volumes, volumes not yet connected with
/// nothing pending).
fn offline_status(bin: &Path, socket: Option<&Path>) -> Res<(usize, usize)> {
    let mut cmd = Command::new(bin);
    cmd.args(["status", "--json"]);
    if let Some(s) = socket {
        cmd.env("AFSD_CONTROL", s);
    }
    let out = capture(&mut cmd, Duration::from_secs(30))?;
    if !out.ok() {
        return Err(format!("afsd-rs status --json failed: {}", out.why()));
    }
    Ok(unsettled_volumes(&out.stdout))
}

/// (volumes, volumes not connected or with changes pending) of the JSON of
/// `afsd-rs status --json`, read without a JSON crate: each volume has a
/// `"mode"` followed by its `"pending_ops"`.
fn unsettled_volumes(json: &str) -> (usize, usize) {
    let text: String = json.chars().filter(|c| !c.is_whitespace()).collect();
    let (mut total, mut unsettled) = (0, 0);
    for part in text.split("\"mode\":\"").skip(1) {
        total += 1;
        let mode = part.split('"').next().unwrap_or("");
        let pending: Option<u64> = part.split_once("\"pending_ops\":").and_then(|(_, r)| {
            r.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
                .parse()
                .ok()
        });
        if !mode.eq_ignore_ascii_case("connected") || pending != Some(0) {
            unsettled += 1;
        }
    }
    (total, unsettled)
}

/// Polls `afsd-rs status --json` (`socket`, else the default control
/// socket) until every volume is connected with nothing pending; the time
/// it took.
pub(crate) fn wait_replayed(bin: &Path, socket: Option<&Path>, limit: Duration) -> Res<Duration> {
    let t = Instant::now();
    loop {
        let r = offline_status(bin, socket);
        if let Ok((_, 0)) = r {
            return Ok(t.elapsed());
        }
        if t.elapsed() > limit {
            return Err(match r {
                Ok((n, k)) => format!("{k} of {n} volumes not replayed after {}", secs(limit)),
                Err(e) => e,
            });
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Like [`show`], for the third-party tool (afscptool, as the cell's
/// admin) in the client namespace; its output passes through.
fn show_third_party(c: &Cell, args: &[&str], note: &str, limit: Duration) {
    println!();
    if !note.is_empty() {
        println!("# {note}");
    }
    println!("$ afscptool -k {}", args.join(" "));
    let _ = std::io::stdout().flush();
    let mut cmd = third_party(c, true, args);
    cmd.stdin(Stdio::null());
    match cmd.spawn() {
        Err(e) => println!("  [could not run: {e}]"),
        Ok(mut child) => match wait_timeout(&mut child, limit) {
            None => println!("  [timed out after {}, killed]", secs(limit)),
            Some(st) if st.success() => {}
            Some(st) => println!("  [FAILED: {}; continuing]", util::describe_status(&st)),
        },
    }
}

/// The daemon binary: $AFSD_BIN if set (no build), else build it with cargo.
pub(crate) fn afsd_bin(release: bool) -> Res<PathBuf> {
    if let Some(b) = std::env::var_os("AFSD_BIN").filter(|b| !b.is_empty()) {
        let b = util::absolute(Path::new(&b));
        println!("using AFSD_BIN={} (not building)", b.display());
        return Ok(b);
    }
    let args: &[&str] = if release {
        &["build", "--release", "-p", "afsd-rs"]
    } else {
        &["build", "-p", "afsd-rs"]
    };
    println!("==> cargo {}", args.join(" "));
    run(util::cargo().args(args))?;
    Ok(util::target_dir()
        .join(if release { "release" } else { "debug" })
        .join("afsd-rs"))
}

pub struct DemoOpts {
    pub dead_time: u32,
    pub mountpoint: PathBuf,
    pub cell: CellOpts,
}

pub fn demo(o: &DemoOpts) -> Res<()> {
    util::require_root("demo")?;
    let t0 = Instant::now();
    cell::install_deps(&["attr"])?;
    let bin = afsd_bin(false)?;
    let c = cell::up(&o.cell)?;
    let afs = o.mountpoint.clone();
    prepare_mountpoint(&afs)?;
    let cache = util::target_dir().join("demo-cache");
    let _ = fs::remove_dir_all(&cache); // fresh cache: the offline part needs uncached files
    fs::create_dir_all(&cache).map_err(|e| format!("cannot create {}: {e}", cache.display()))?;
    let log = util::target_dir().join("demo-afsd-rs.log");
    let mut d = Daemon::start(
        &bin,
        &c,
        &afs,
        &cache,
        &["--dead-time".into(), o.dead_time.to_string()],
        &log,
        true,
    )?;
    if let Err(e) = d.wait_ready(&c.cell, Duration::from_secs(30)) {
        d.abort();
        return Err(format!("demo: the mount did not come up: {e}"));
    }
    let pid = d.detach();

    let cl = &c.cell;
    let m = afs.display();
    let b = bin.display();
    let quick = Duration::from_secs(30);
    // What an earlier tour made offline goes first (quietly), so that the
    // offline part makes it again in directories this fresh cache knows.
    let shared = afs.join(format!(".{cl}/shared"));
    let _ = fs::remove_dir_all(shared.join("demo-dir"));
    let _ = fs::remove_file(shared.join("demo-offline.txt"));
    println!("\n======== tour of {m} (afsd-rs pid {pid}, cell {cl}) ========");
    show(&format!("ls {m}"), "the cells", false, quick);
    show(
        &format!("ls -l {m}/{cl}"),
        "root.cell (its RO clone)",
        false,
        quick,
    );
    show(&format!("cat {m}/{cl}/hello.txt"), "", false, quick);
    show(
        &format!("readlink {m}/{cl}/hello-link"),
        "a symlink",
        false,
        quick,
    );
    show(
        &format!("ls -l {m}/.{cl}/vol"),
        "the RW path, through the mount point #vol.test.",
        false,
        quick,
    );
    show(
        &format!("getfattr -n afs.fid {m}/{cl}/hello.txt"),
        "volume.vnode.unique of a file",
        false,
        quick,
    );
    println!("\n======== writing ========");
    show(
        &format!("echo 'written through afsd-rs' > {m}/.{cl}/shared/demo-note.txt"),
        "close returns once the fileserver has the data",
        false,
        quick,
    );
    show(
        &format!("cat {m}/.{cl}/shared/demo-note.txt"),
        "",
        false,
        quick,
    );
    show(
        &format!("{b} listquota {m}/.{cl}/shared"),
        "fs-style commands",
        false,
        quick,
    );
    show(
        &format!("{b} cache stats"),
        "the persistent cache: chunks, unstored (dirty) bytes, size on disk",
        false,
        quick,
    );
    show(&format!("{b} stats {m}"), "daemon statistics", false, quick);
    println!("\n======== pinning a working set ========");
    show(
        &format!("{b} pin -r {m}/.{cl}/vol"),
        "fetch and hold a tree for offline use: never evicted, fetched again when it changes",
        false,
        quick,
    );
    show(&format!("{b} pins"), "", false, quick);

    let offline = Duration::from_secs(u64::from(o.dead_time) * 4 + 30);
    println!("\n======== going offline ========");
    show(
        &format!("ip -n {} link set {} down", c.server_netns, c.server_if),
        "cut the link on the server side (packets are silently dropped)",
        false,
        quick,
    );
    show(
        &format!("cat {m}/{cl}/hello.txt"),
        "read before: served from the cache",
        false,
        offline,
    );
    show(
        &format!("cat {m}/{cl}/random.bin > /dev/null"),
        &format!(
            "never read, so not in the cache: a clear error (after the dead time, {} s); \
             the fileserver's volumes are now disconnected",
            o.dead_time
        ),
        true,
        offline,
    );
    show(
        &format!("cat {m}/.{cl}/vol/inside.txt"),
        "pinned: served offline, though nobody read it before",
        false,
        offline,
    );
    show(
        &format!("{b} pin --check {m}/.{cl}/vol"),
        "what offline work there would miss",
        false,
        quick,
    );
    show(
        &format!("echo 'changed offline' >> {m}/.{cl}/shared/demo-note.txt"),
        "changes offline succeed: made in the cache and kept in a persistent change log",
        false,
        offline,
    );
    show(
        &format!(
            "echo 'made offline' > {m}/.{cl}/shared/demo-offline.txt && \
             mkdir -p {m}/.{cl}/shared/demo-dir && \
             echo inside > {m}/.{cl}/shared/demo-dir/made-offline.txt"
        ),
        "",
        false,
        offline,
    );
    show(
        &format!("cat {m}/.{cl}/shared/demo-note.txt"),
        "the local view",
        false,
        quick,
    );
    show(
        &format!("{b} status"),
        "per volume: mode, since when, changes pending, conflicts",
        false,
        quick,
    );
    show(
        &format!("ip -n {} link set {} up", c.server_netns, c.server_if),
        "restore the link: no command needed, the client probes the server and replays the log",
        false,
        quick,
    );
    println!();
    println!(
        "# waiting until every volume is connected with nothing pending (afsd-rs status --json)"
    );
    match wait_replayed(&bin, None, offline * 2) {
        Ok(d) => println!("  [replayed after {}]", secs(d)),
        Err(e) => println!("  [{e}; continuing]"),
    }
    show(&format!("{b} status"), "connected again", false, quick);
    println!("\n======== the changes on the server ========");
    let afs = format!("/afs/.{cl}/shared");
    show_third_party(
        &c,
        &["cat", &format!("{afs}/demo-note.txt")],
        "OpenAFS's own client code (afscptool on libafscp) reads the server directly",
        quick,
    );
    show_third_party(&c, &["cat", &format!("{afs}/demo-offline.txt")], "", quick);
    show_third_party(
        &c,
        &["cat", &format!("{afs}/demo-dir/made-offline.txt")],
        "",
        quick,
    );
    show(
        &format!("cat {m}/{cl}/random.bin | wc -c"),
        "and reads that need the server work again",
        false,
        offline,
    );
    println!(
        "\n{m} stays mounted (afsd-rs pid {pid}, log {}) and the cell stays up ({}).",
        log.display(),
        secs(t0.elapsed())
    );
    println!("To stop:  umount {m}; cargo xtask cell down");
    Ok(())
}

/// The third-party tool in the client netns; `admin`: `-k` with the
/// admin's ccache, else anonymous.
pub(crate) fn third_party(c: &Cell, admin: bool, args: &[&str]) -> Command {
    let mut a = vec![c.third_party.display().to_string()];
    if admin {
        a.push("-k".into());
    }
    a.extend(args.iter().map(|s| s.to_string()));
    let mut cmd = c.labexec(&c.client_netns, a);
    if admin {
        cmd.env("KRB5CCNAME", format!("FILE:{}", c.admin_ccache().display()));
    }
    cmd
}

#[cfg(test)]
mod tests {
    use super::unsettled_volumes;

    #[test]
    fn status_json_volumes_settled_or_not() {
        assert_eq!(unsettled_volumes("[]"), (0, 0));
        let one = r#"[{"cell":"test.lab","volume":536870915,"name":"root.cell","mode":"connected",
            "manual":false,"since":1,"pending_ops":0,"pending_bytes":0,"conflicts":0,
            "waiting_for":[],"reason":""}]"#;
        assert_eq!(unsettled_volumes(one), (1, 0));
        let two = r#"[{"mode": "Reintegrating", "pending_ops": 10, "waiting_for": [{"uid": 1, "reason": "x"}, {"uid": 2, "reason": "\"mode\":\"connected\""}]},
                      {"mode": "connected", "pending_ops": 0}, {"mode":"connected","pending_ops":3}]"#;
        assert_eq!(unsettled_volumes(two), (3, 2));
    }
}
