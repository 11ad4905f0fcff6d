//! Harness for the integration tests against the real test cell brought up
//! by `cargo xtask cell up`: the cell's environment, a third-party writer
//! (afscptool on OpenAFS's libafscp), and afsd-rs mounts started in the
//! cell's client network namespace.
//!
//! The tests need root, the cell and the afsd-rs binary; `cargo xtask test`
//! provides all three through `AFSD_TESTCELL_ENV` and `AFSD_BIN`.

use std::collections::HashMap;
use std::ffi::CString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The test cell's settings, from the env file `cargo xtask cell up` wrote.
pub struct Cell {
    pub vars: HashMap<String, String>,
    pub env_file: PathBuf,
}

impl Cell {
    /// Reads `$AFSD_TESTCELL_ENV`. Panics with the remedy when it is unset:
    /// these tests are meant to run under `cargo xtask test`.
    pub fn from_env() -> Cell {
        let path = std::env::var("AFSD_TESTCELL_ENV").unwrap_or_else(|_| {
            panic!(
                "AFSD_TESTCELL_ENV is not set: run the integration tests with `cargo xtask test`"
            )
        });
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
        let mut vars = HashMap::new();
        for line in text.lines() {
            let line = line.trim();
            let line = line.strip_prefix("export ").unwrap_or(line);
            if line.starts_with('#') {
                continue;
            }
            if let Some((k, v)) = line.split_once('=') {
                let v = v.trim().trim_matches('\'').trim_matches('"');
                vars.insert(k.trim().to_string(), v.to_string());
            }
        }
        Cell {
            vars,
            env_file: PathBuf::from(path),
        }
    }

    pub fn var(&self, k: &str) -> &str {
        self.vars
            .get(k)
            .unwrap_or_else(|| panic!("{k} missing from {}", self.env_file.display()))
    }

    pub fn cell(&self) -> &str {
        self.var("CELL")
    }

    /// Runs a command in the client namespace with the cell's view of
    /// /etc/openafs (labexec), as admin (the admin ccache).
    pub fn client_exec(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        self.exec_in(self.var("CLIENT_NETNS"), args, stdin)
    }

    /// Runs a command in the server namespace (for `vos ... -localauth`).
    pub fn server_exec(&self, args: &[&str]) -> Output {
        self.exec_in(self.var("SERVER_NETNS"), args, None)
    }

    fn exec_in(&self, netns: &str, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut cmd = Command::new("bash");
        cmd.arg("-c")
            .arg("set -a; . \"$0\"; set +a; export KRB5CCNAME=\"${ADMIN_CCACHE}\"; exec \"$LABEXEC\" \"$@\"")
            .arg(&self.env_file)
            .arg(netns)
            .args(args)
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawning labexec");
        if let Some(data) = stdin {
            let mut sin = child.stdin.take().expect("stdin");
            sin.write_all(data)
                .expect("writing to the third-party tool");
        }
        child.wait_with_output().expect("waiting for labexec")
    }

    /// The third-party writer (afscptool, authenticated as admin).
    pub fn third_party(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let tool = self.var("THIRD_PARTY").to_string();
        let mut v: Vec<&str> = vec![&tool, "-k"];
        v.extend_from_slice(args);
        let out = self.client_exec(&v, stdin);
        assert!(
            out.status.success(),
            "third-party {:?} failed: {}",
            args,
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Writes a file through the third-party tool (`/afs/.CELL/...` paths).
    pub fn put(&self, path: &str, data: &[u8]) {
        self.third_party(&["put", path], Some(data));
    }

    /// The RW path of the cell root as afscptool names it.
    pub fn rw(&self, rel: &str) -> String {
        format!("/afs/.{}/{}", self.cell(), rel)
    }

    /// `vos release VOLUME -localauth` on the server.
    pub fn vos_release(&self, volume: &str) {
        let out = self.server_exec(&["vos", "release", volume, "-localauth"]);
        assert!(
            out.status.success(),
            "vos release {volume}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Cuts or restores the veth link on the server side.
    pub fn link(&self, up: bool) {
        let st = Command::new("ip")
            .args([
                "-n",
                self.var("SERVER_NETNS"),
                "link",
                "set",
                self.var("SERVER_IF"),
            ])
            .arg(if up { "up" } else { "down" })
            .status()
            .expect("ip link");
        assert!(st.success());
    }
}

static MOUNT_SEQ: AtomicU32 = AtomicU32::new(0);

/// A running `afsd-rs mount --foreground` in the client namespace.
pub struct Mount {
    pub dir: PathBuf,
    pub cache_dir: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
}

pub fn afsd_bin() -> String {
    std::env::var("AFSD_BIN")
        .unwrap_or_else(|_| panic!("AFSD_BIN is not set: run with `cargo xtask test`"))
}

/// A fresh scratch directory under the test target dir.
pub fn scratch(name: &str) -> PathBuf {
    let base = std::env::var("AFSD_TEST_SCRATCH").unwrap_or_else(|_| "/tmp/afsd-tests".to_string());
    let n = MOUNT_SEQ.fetch_add(1, Ordering::SeqCst);
    let p = PathBuf::from(base).join(format!("{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).expect("scratch dir");
    p
}

impl Mount {
    /// Mounts with a new cache directory.
    pub fn new(cell: &Cell, extra: &[&str]) -> Mount {
        let base = scratch("mount");
        Mount::with_cache(cell, &base.join("cache"), extra)
    }

    /// Mounts on an existing (or new) cache directory, waiting until the
    /// cell root answers.
    pub fn with_cache(cell: &Cell, cache_dir: &Path, extra: &[&str]) -> Mount {
        Mount::with_cache_probe(cell, cache_dir, extra, cell.cell())
    }

    /// Mounts on an existing cache directory, waiting until `probe` (a
    /// directory relative to the mount point, e.g. `.CELL/shared/x`) lists:
    /// for a restart while the cell cannot be reached, where only what the
    /// cache holds answers.
    pub fn with_cache_probe(cell: &Cell, cache_dir: &Path, extra: &[&str], probe: &str) -> Mount {
        let base = scratch("mnt");
        let dir = base.join("afs");
        std::fs::create_dir_all(&dir).unwrap();
        let log = base.join("afsd.log");
        let logf = std::fs::File::create(&log).unwrap();
        let netns = format!("--net=/run/netns/{}", cell.var("CLIENT_NETNS"));
        let child = Command::new("nsenter")
            .arg(&netns)
            .arg(afsd_bin())
            .args([
                "mount",
                "--foreground",
                "--conf-dir",
                cell.var("AFS_CONF_DIR"),
                "--cache-dir",
            ])
            .arg(cache_dir)
            .arg("--control-socket")
            .arg(cache_dir.parent().unwrap_or(cache_dir).join("control.sock"))
            .args(extra)
            .arg(&dir)
            .env("AFSD_LOG", "info,client=debug")
            .stdout(logf.try_clone().unwrap())
            .stderr(logf)
            .spawn()
            .expect("starting afsd-rs");
        let mut m = Mount {
            dir,
            cache_dir: cache_dir.to_path_buf(),
            log,
            child: Some(child),
        };
        let probe = m.dir.join(probe);
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            if is_mountpoint(&m.dir) && std::fs::read_dir(&probe).is_ok() {
                break;
            }
            if let Some(c) = m.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    panic!("afsd-rs exited ({st}) before mounting:\n{}", m.log_text());
                }
            }
            assert!(
                Instant::now() < deadline,
                "afsd-rs did not mount (or {} did not list) within 40 s:\n{}",
                probe.display(),
                m.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        m
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The daemon's counters (`afsd-rs stats`), as name -> value: `rpc
    /// NAME N` as `NAME`, `rpc_error NAME N` as `rpc_error.NAME`, the Rx
    /// counters as `rx.NAME`, and every other `name N` line as `name`.
    /// Panics when `afsd-rs stats` fails or prints a line it cannot read.
    pub fn stats(&self) -> HashMap<String, u64> {
        parse_stats(&self.stats_text())
    }

    /// One counter; panics (with the whole stats text) when the daemon does
    /// not print it. The daemon lists every RPC it knows, 0 included, so an
    /// absent name is a typo or a counter that is gone, never a zero.
    pub fn stat(&self, name: &str) -> u64 {
        let text = self.stats_text();
        let m = parse_stats(&text);
        *m.get(name)
            .unwrap_or_else(|| panic!("no counter {name:?} in `afsd-rs stats`:\n{text}"))
    }

    /// Calls that failed of RPC `name` (`rpc_error NAME N`).
    pub fn rpc_errors(&self, name: &str) -> u64 {
        self.stat(&format!("rpc_error.{name}"))
    }

    /// Every RPC call made so far, of any opcode.
    pub fn total_rpcs(&self) -> u64 {
        let text = self.stats_text();
        let calls: Vec<u64> = text
            .lines()
            .filter(|l| l.starts_with("rpc "))
            .map(|l| parse_stats(l).into_values().sum())
            .collect();
        assert!(
            !calls.is_empty(),
            "no rpc lines in `afsd-rs stats`:\n{text}"
        );
        calls.iter().sum()
    }

    /// Stops the daemon with SIGTERM (clean unmount) and waits for it.
    pub fn stop(mut self) {
        self.shutdown();
    }

    /// Kills the daemon with SIGKILL, as a crash would.
    pub fn kill(mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // The dead daemon's mount answers ENOTCONN, which `mountpoint`
        // does not count as a mount point: detach it regardless.
        let _ = Command::new("umount")
            .arg("-l")
            .arg(&self.dir)
            .stderr(Stdio::null())
            .status();
    }

    fn shutdown(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: plain kill(2) on our child's pid.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                if Instant::now() > deadline {
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        lazy_umount(&self.dir);
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn lazy_umount(dir: &Path) {
    if is_mountpoint(dir) {
        let _ = Command::new("umount").arg("-l").arg(dir).status();
    }
}

/// True when `dir` is a mount point (its device differs from its parent's).
pub fn is_mountpoint(dir: &Path) -> bool {
    let out = Command::new("mountpoint").arg("-q").arg(dir).status();
    matches!(out, Ok(s) if s.success())
}

/// Reads an extended attribute.
pub fn getxattr(path: &Path, name: &str) -> std::io::Result<Vec<u8>> {
    let p = CString::new(path.as_os_str().as_bytes())?;
    let n = CString::new(name)?;
    let mut buf = vec![0u8; 4096];
    // SAFETY: valid C strings and a buffer of the stated size.
    let r = unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    buf.truncate(r as usize);
    Ok(buf)
}

/// A process's resident memory, in KiB (its VmRSS).
pub fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

/// Deterministic pseudo-random bytes (a different stream per seed).
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    use rand::{RngCore, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut v = vec![0u8; len];
    rng.fill_bytes(&mut v);
    v
}

/// Polls `f` every 100 ms until it returns true or `limit` passes.
pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Parses the text of `afsd-rs stats` (see [`Mount::stats`]); panics on a
/// line it does not understand, so that a changed format cannot make every
/// counter read as missing.
pub fn parse_stats(text: &str) -> HashMap<String, u64> {
    let num = |v: &str, line: &str| -> u64 {
        v.parse()
            .unwrap_or_else(|_| panic!("bad number {v:?} in stats line {line:?}"))
    };
    let mut m = HashMap::new();
    for line in text.lines() {
        if let Some(rx) = line.strip_prefix("rx ") {
            // `Stats { packets_sent: 1, ... }` (Debug of rx::Stats)
            let body = rx
                .trim()
                .strip_prefix("Stats {")
                .and_then(|b| b.strip_suffix('}'))
                .unwrap_or_else(|| panic!("bad rx stats line {line:?}"));
            for field in body.split(',').map(str::trim).filter(|f| !f.is_empty()) {
                let (k, v) = field
                    .split_once(": ")
                    .unwrap_or_else(|| panic!("bad rx field {field:?} in {line:?}"));
                m.insert(format!("rx.{k}"), num(v, line));
            }
            continue;
        }
        let parts: Vec<&str> = line.split_whitespace().collect();
        match parts.as_slice() {
            ["rpc", name, v] => {
                m.insert(name.to_string(), num(v, line));
            }
            ["rpc_error", name, v] => {
                m.insert(format!("rpc_error.{name}"), num(v, line));
            }
            [name, v] => {
                m.insert(name.to_string(), num(v, line));
            }
            [] => {}
            _ => panic!("unreadable stats line {line:?}"),
        }
    }
    m
}

impl Mount {
    /// The raw stats text; panics when `afsd-rs stats` fails.
    pub fn stats_text(&self) -> String {
        let out = Command::new(afsd_bin())
            .arg("stats")
            .arg(&self.dir)
            .output()
            .expect("running afsd-rs stats");
        assert!(
            out.status.success(),
            "afsd-rs stats {} failed ({}): {}",
            self.dir.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("afsd-rs stats printed non-UTF-8")
    }
}

/// Local uids the authentication tests act as (no passwd entries needed).
pub const ALICE_UID: u32 = 61000;
pub const BOB_UID: u32 = 61001;

impl Cell {
    /// `kinit` in the client namespace into a FILE ccache owned by `uid`.
    pub fn kinit(
        &self,
        user: &str,
        password: &str,
        ccache: &Path,
        uid: u32,
        lifetime: Option<&str>,
    ) {
        let _ = std::fs::remove_file(ccache);
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", self.var("CLIENT_NETNS")))
            .arg("kinit");
        if let Some(l) = lifetime {
            cmd.args(["-l", l]);
        }
        let mut child = cmd
            .arg(user)
            .env("KRB5_CONFIG", self.var("KRB5_CONFIG"))
            .env("KRB5CCNAME", format!("FILE:{}", ccache.display()))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kinit");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{password}\n").as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "kinit {user}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::os::unix::fs::chown(ccache, Some(uid), Some(uid)).unwrap();
    }

    /// Runs `afsd-rs ARGS` as `uid` in the client namespace, with the
    /// cell's krb5.conf, `ccache` and the mount's control socket.
    pub fn afsd_as(&self, uid: u32, m: &Mount, ccache: &Path, args: &[&str]) -> Output {
        Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.var("CLIENT_NETNS")))
            .args([
                "setpriv",
                &format!("--reuid={uid}"),
                &format!("--regid={uid}"),
                "--clear-groups",
            ])
            .arg(afsd_bin())
            .args(args)
            .env("KRB5_CONFIG", self.var("KRB5_CONFIG"))
            .env("KRB5CCNAME", format!("FILE:{}", ccache.display()))
            .env("AFSD_CONTROL", m.control_socket())
            .output()
            .expect("afsd-rs as user")
    }

    /// `afsd-rs aklog` as `uid`; asserts success.
    pub fn aklog_as(&self, uid: u32, m: &Mount, ccache: &Path) {
        let out = self.afsd_as(
            uid,
            m,
            ccache,
            &["aklog", "--conf-dir", self.var("AFS_CONF_DIR")],
        );
        assert!(
            out.status.success(),
            "aklog as {uid}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Runs a command as `uid` (outside any namespace: file access through the
/// mount) and returns its output.
pub fn run_as(uid: u32, args: &[&str]) -> Output {
    Command::new("setpriv")
        .args([
            &format!("--reuid={uid}"),
            &format!("--regid={uid}"),
            "--clear-groups",
        ])
        .args(args)
        .output()
        .expect("setpriv")
}

/// Reads a file as `uid`: Ok(bytes) or the errno.
pub fn read_as(uid: u32, path: &Path) -> Result<Vec<u8>, String> {
    let out = run_as(uid, &["cat", path.to_str().unwrap()]);
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

impl Mount {
    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .map(|c| c.id())
            .expect("a running daemon")
    }

    pub fn control_socket(&self) -> PathBuf {
        self.cache_dir
            .parent()
            .unwrap_or(&self.cache_dir)
            .join("control.sock")
    }

    /// A counter from the Rx line of the stats (`responses_sent`, ...);
    /// panics when the line or the counter is missing.
    pub fn rx_stat(&self, name: &str) -> u64 {
        self.stat(&format!("rx.{name}"))
    }
}

/// The proptest runner of the reftests: 24 cases, or `AFSD_REFTEST_CASES`
/// for longer searches outside CI; few shrink steps, as each one runs
/// against the real cell.
pub fn reftest_runner() -> proptest::test_runner::TestRunner {
    let cases = std::env::var("AFSD_REFTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24);
    proptest::test_runner::TestRunner::new(proptest::test_runner::Config {
        cases,
        max_shrink_iters: 64,
        ..proptest::test_runner::Config::default()
    })
}

/// A network cut (`Cell::link(false)`) that restores the link when dropped,
/// so that a failing test never leaves the cell unreachable for the next.
pub struct LinkCut<'a> {
    cell: &'a Cell,
    restored: bool,
}

impl Cell {
    /// Cuts the veth link on the server side until the guard is restored
    /// or dropped. Calls then time out (after the mount's dead time).
    pub fn cut(&self) -> LinkCut<'_> {
        self.link(false);
        LinkCut {
            cell: self,
            restored: false,
        }
    }

    /// The AFS id (PTS) of `user`, from `pts examine USER -localauth`.
    pub fn pts_id(&self, user: &str) -> i64 {
        let out = self.server_exec(&["pts", "examine", user, "-localauth"]);
        let text = String::from_utf8_lossy(&out.stdout);
        // "Name: alice, id: 2, owner: system:administrators, ..."
        text.split(',')
            .find_map(|f| f.trim().strip_prefix("id: "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| {
                panic!(
                    "no id in `pts examine {user}`: {text}{}",
                    String::from_utf8_lossy(&out.stderr)
                )
            })
    }
}

impl LinkCut<'_> {
    /// Brings the link back up now.
    pub fn restore(mut self) {
        self.cell.link(true);
        self.restored = true;
    }
}

impl Drop for LinkCut<'_> {
    fn drop(&mut self) {
        if !self.restored {
            self.cell.link(true);
        }
    }
}

/// One volume of `afsd-rs status --json`.
#[derive(Clone, Debug)]
pub struct VolumeStatus {
    pub cell: String,
    pub volume: u64,
    pub name: String,
    /// connected, disconnected, reintegrating or paused
    pub mode: String,
    pub manual: bool,
    pub pending_ops: u64,
    pub pending_bytes: u64,
    pub conflicts: u64,
    /// (uid, principal, reason) of the users replay waits for.
    pub waiting_for: Vec<(u32, String, String)>,
    /// The whole object, for messages.
    pub raw: serde_json::Value,
}

/// One entry of `afsd-rs conflicts --json`.
#[derive(Clone, Debug)]
pub struct Conflict {
    /// As `afsd-rs conflict cat` takes it.
    pub id: String,
    /// update/update, update/remove, remove/update, name/name, refused,
    /// dependent
    pub kind: String,
    pub path: String,
    pub uid: u32,
    pub change: String,
    pub raw: serde_json::Value,
}

fn json_str(v: &serde_json::Value, k: &str) -> String {
    match v.get(k) {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

fn json_u64(v: &serde_json::Value, k: &str) -> u64 {
    v.get(k)
        .and_then(|x| x.as_u64())
        .unwrap_or_else(|| panic!("no number {k:?} in {v}"))
}

impl Mount {
    /// `afsd-rs ARGS` as root, talking to this mount's daemon (its control
    /// socket through `AFSD_CONTROL`, as `tokens`/`flush` find it).
    pub fn afsd(&self, args: &[&str]) -> Output {
        Command::new(afsd_bin())
            .args(args)
            .env("AFSD_CONTROL", self.control_socket())
            .output()
            .expect("running afsd-rs")
    }

    /// `afsd-rs ARGS` as root; panics (with the daemon's log tail) unless
    /// it succeeds. Returns stdout.
    pub fn afsd_ok(&self, args: &[&str]) -> String {
        let out = self.afsd(args);
        assert!(
            out.status.success(),
            "afsd-rs {} failed ({}): {}{}\ndaemon log tail:\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log_tail(40)
        );
        String::from_utf8(out.stdout).expect("afsd-rs printed non-UTF-8")
    }

    /// The last `n` lines of the daemon's log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// `afsd-rs offline PATH...`: the volumes of these paths send nothing.
    pub fn offline(&self, paths: &[&Path]) {
        let mut args = vec!["offline".to_string()];
        args.extend(paths.iter().map(|p| p.display().to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.afsd_ok(&args);
    }

    /// `afsd-rs online PATH...` (no path: every volume): replay starts.
    pub fn online(&self, paths: &[&Path]) {
        let mut args = vec!["online".to_string()];
        args.extend(paths.iter().map(|p| p.display().to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.afsd_ok(&args);
    }

    /// `afsd-rs status --json`, parsed.
    pub fn status(&self) -> Vec<VolumeStatus> {
        let text = self.afsd_ok(&["status", "--json"]);
        parse_status(&text)
    }

    /// The status of the volume named `name` (e.g. `root.cell`), if listed.
    pub fn volume_status(&self, name: &str) -> Option<VolumeStatus> {
        self.status().into_iter().find(|v| v.name == name)
    }

    /// Polls `status --json` until every volume is connected with nothing
    /// pending, for at most `limit`. Err: the last status and the log tail.
    pub fn wait_replayed(&self, limit: Duration) -> Result<(), String> {
        let mut last = Vec::new();
        let done = wait_until(limit, || {
            last = self.status();
            last.iter()
                .all(|v| v.mode == "connected" && v.pending_ops == 0)
        });
        if done {
            Ok(())
        } else {
            Err(format!(
                "not replayed within {limit:?}; last status:\n{}\ndaemon log tail:\n{}",
                last.iter()
                    .map(|v| v.raw.to_string())
                    .collect::<Vec<_>>()
                    .join("\n"),
                self.log_tail(60)
            ))
        }
    }

    /// `afsd-rs conflicts --json` as root (every user's), parsed.
    pub fn conflicts(&self) -> Vec<Conflict> {
        let text = self.afsd_ok(&["conflicts", "--json"]);
        parse_conflicts(&text)
    }

    /// `afsd-rs conflict cat --local ID` (or `--base`): that version's bytes.
    pub fn conflict_cat(&self, which: &str, id: &str) -> Vec<u8> {
        let flag = format!("--{which}");
        let out = self.afsd(&["conflict", "cat", &flag, id]);
        assert!(
            out.status.success(),
            "afsd-rs conflict cat {flag} {id} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }
}

/// Parses `afsd-rs status --json` (a JSON array of volumes).
pub fn parse_status(text: &str) -> Vec<VolumeStatus> {
    let v: serde_json::Value = serde_json::from_str(text)
        .unwrap_or_else(|e| panic!("status --json is not JSON ({e}): {text}"));
    let arr = v
        .as_array()
        .unwrap_or_else(|| panic!("status --json is not an array: {text}"));
    arr.iter()
        .map(|o| VolumeStatus {
            cell: json_str(o, "cell"),
            volume: json_u64(o, "volume"),
            name: json_str(o, "name"),
            // `connected` (serde may spell the variant `Connected`)
            mode: json_str(o, "mode").to_ascii_lowercase(),
            manual: o.get("manual").and_then(|b| b.as_bool()).unwrap_or(false),
            pending_ops: json_u64(o, "pending_ops"),
            pending_bytes: json_u64(o, "pending_bytes"),
            conflicts: json_u64(o, "conflicts"),
            waiting_for: o
                .get("waiting_for")
                .and_then(|w| w.as_array())
                .map(|w| {
                    w.iter()
                        .map(|e| {
                            (
                                json_u64(e, "uid") as u32,
                                json_str(e, "principal"),
                                json_str(e, "reason"),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default(),
            raw: o.clone(),
        })
        .collect()
}

/// Parses `afsd-rs conflicts --json` (a JSON array of conflicts).
pub fn parse_conflicts(text: &str) -> Vec<Conflict> {
    let v: serde_json::Value = serde_json::from_str(text)
        .unwrap_or_else(|e| panic!("conflicts --json is not JSON ({e}): {text}"));
    let arr = v
        .as_array()
        .unwrap_or_else(|| panic!("conflicts --json is not an array: {text}"));
    arr.iter()
        .map(|o| Conflict {
            id: json_str(o, "id"),
            kind: json_str(o, "kind"),
            path: json_str(o, "path"),
            uid: json_u64(o, "uid") as u32,
            change: json_str(o, "change"),
            raw: o.clone(),
        })
        .collect()
}

/// close(2) of the file with its result (a drop would discard it): AFS
/// stores at close, and offline a 0 here means the change is logged.
pub fn close_file(f: std::fs::File) -> std::io::Result<()> {
    use std::os::fd::IntoRawFd;
    let fd = f.into_raw_fd();
    // SAFETY: we own fd (into_raw_fd) and close it once.
    if unsafe { libc::close(fd) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
