//! The miss policy against the real cell: a file never cached, read while
//! the network is cut (`Cell::cut`: the volume goes disconnected by itself
//! and comes back by itself when a probe answers).
//!
//! The readers are `timed_read` (this package's helper: it reads a file as
//! `cat` does and reports the errno and how long the failing call took),
//! and copies of it named after the programs the rules name, since the
//! daemon tells processes apart by `/proc/PID/comm` and their environment.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use afsd_tests::{scratch, wait_until, Cell, Mount, ALICE_UID};

/// A cut is noticed after 3 s.
const DEAD_CUT: &str = "3";

/// Longest wait for the volume to come back once the link is restored
/// (probes every 3 s).
const BACK: Duration = Duration::from_secs(60);

const TIMED_READ: &str = env!("CARGO_BIN_EXE_timed_read");

/// A copy of `timed_read` run under the program name `name`.
fn program(name: &str) -> PathBuf {
    let p = scratch("miss-bin").join(name);
    fs::copy(TIMED_READ, &p).expect("copying timed_read");
    p
}

/// Starts `prog FILE`, with `AFSD_MISS` set when given.
fn start(prog: &Path, file: &Path, afsd_miss: Option<&str>) -> Child {
    let mut c = Command::new(prog);
    c.arg(file)
        .env_remove("AFSD_MISS")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(v) = afsd_miss {
        c.env("AFSD_MISS", v);
    }
    c.spawn().expect("starting a reader")
}

/// The errno and the duration of the failing call, from a reader's output.
fn failure(out: &Output) -> (i32, Duration) {
    assert!(
        !out.status.success(),
        "the read succeeded: {:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    let words: Vec<&str> = err.split_whitespace().collect();
    match words[..] {
        ["errno", n, "elapsed_us", us] => (
            n.parse().unwrap(),
            Duration::from_micros(us.parse().unwrap()),
        ),
        _ => panic!("unexpected reader output: {err}"),
    }
}

/// Waits at most `limit` for a reader to end.
fn finish(mut child: Child, limit: Duration) -> Output {
    let ended = wait_until(limit, || child.try_wait().unwrap().is_some());
    if !ended {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    assert!(ended, "the reader did not end within {limit:?}");
    out
}

/// `afsd-rs waiting --json` as root: (pid, uid, command, path).
fn waiting(m: &Mount) -> Vec<(u32, u32, String, String)> {
    let text = m.afsd_ok(&["waiting", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&text).expect("waiting --json");
    v.as_array()
        .expect("an array")
        .iter()
        .map(|w| {
            (
                w["pid"].as_u64().unwrap() as u32,
                w["uid"].as_u64().unwrap() as u32,
                w["command"].as_str().unwrap().to_string(),
                w["path"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn until_waiting(m: &Mount, pid: u32) -> (u32, u32, String, String) {
    let mut seen = Vec::new();
    if wait_until(Duration::from_secs(10), || {
        seen = waiting(m);
        seen.iter().any(|w| w.0 == pid)
    }) {
        return seen.into_iter().find(|w| w.0 == pid).unwrap();
    }
    panic!(
        "{pid} is not listed as waiting: {seen:?}\n{}",
        m.log_tail(30)
    );
}

/// A mount with `config` as its config file, and a directory of files
/// written by the third party and never read through it (their statuses
/// are listed, their data is not cached).
fn setup(cell: &Cell, tag: &str, config: &str, files: &[&str]) -> (Mount, PathBuf) {
    let conf = scratch("miss-conf").join("afsd-rs.conf");
    fs::write(&conf, config).unwrap();
    let m = Mount::new(
        cell,
        &["--dead-time", DEAD_CUT, "--config", conf.to_str().unwrap()],
    );
    let rel = format!("shared/{tag}-{}", std::process::id());
    let dir = m.path(&format!(".{}/{rel}", cell.cell()));
    fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    if let Err(e) = m.wait_replayed(Duration::from_secs(60)) {
        panic!("before the cut: {e}");
    }
    for f in files.iter().chain(&["trigger.txt"]) {
        cell.put(
            &cell.rw(&format!("{rel}/{f}")),
            format!("{f} data\n").as_bytes(),
        );
    }
    let listed = fs::read_dir(&dir).unwrap().count();
    assert_eq!(listed, files.len() + 1);
    for f in files {
        fs::metadata(dir.join(f)).unwrap();
    }
    (m, dir)
}

/// After the cut, a first read meets the dead time and takes the volume
/// offline.
fn notice_the_cut(m: &Mount, dir: &Path) {
    let out = finish(
        start(
            Path::new(TIMED_READ),
            &dir.join("trigger.txt"),
            Some("error"),
        ),
        Duration::from_secs(30),
    );
    failure(&out);
    let offline = wait_until(Duration::from_secs(10), || {
        m.status().iter().any(|v| v.mode == "disconnected")
    });
    assert!(offline, "no volume went offline: {:?}", m.status());
}

/// `AFSD_MISS=error` fails at once with ENETDOWN; `AFSD_MISS=wait` is
/// listed by `afsd-rs waiting` and reads the file once the link is back;
/// `afsd-rs misses` and the stats count both.
#[test]
fn error_at_once_and_wait_until_the_link_returns() {
    let cell = Cell::from_env();
    let (m, dir) = setup(&cell, "miss-wait", "", &["now.txt", "later.txt"]);
    let cut = cell.cut();
    notice_the_cut(&m, &dir);

    let out = finish(
        start(Path::new(TIMED_READ), &dir.join("now.txt"), Some("error")),
        Duration::from_secs(10),
    );
    let (errno, took) = failure(&out);
    assert_eq!(errno, libc::ENETDOWN, "{}", m.log_tail(20));
    assert!(
        took < Duration::from_millis(100),
        "ENETDOWN took {took:?}, not at once"
    );

    let reader = start(Path::new(TIMED_READ), &dir.join("later.txt"), Some("wait"));
    let pid = reader.id();
    let (_, uid, command, path) = until_waiting(&m, pid);
    assert_eq!((uid, command.as_str()), (0, "timed_read"));
    assert_eq!(Path::new(&path), dir.join("later.txt"));
    let table = m.afsd_ok(&["waiting"]);
    assert!(table.contains(&pid.to_string()), "{table}");

    let misses = m.afsd_ok(&["misses", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&misses).unwrap();
    let paths: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["path"].as_str().unwrap())
        .collect();
    for f in ["now.txt", "later.txt"] {
        let want = dir.join(f);
        assert!(
            paths.iter().any(|p| Path::new(p) == want),
            "{f} not in misses: {misses}"
        );
    }
    let text = m.afsd_ok(&["misses"]);
    assert!(
        text.contains(&format!("afsd-rs pin -r {}", dir.display())),
        "{text}"
    );
    assert!(m.stat("offline.misses") >= 2);

    cut.restore();
    let out = finish(reader, BACK);
    assert!(
        out.status.success(),
        "the waiting read failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        m.log_tail(30)
    );
    assert_eq!(out.stdout, b"later.txt data\n");
    assert!(waiting(&m).is_empty());
}

/// A `miss-rule` for a program name makes it wait (without `AFSD_MISS`);
/// an indexer waits for nothing, rule and environment notwithstanding;
/// `waiting --release PID` and `kill -9` each end a wait, and another user
/// neither sees nor releases root's waits, nor sees root's misses.
#[test]
fn rules_indexers_release_and_kill() {
    let cell = Cell::from_env();
    let config = "# the miss policy\n\
                  miss-rule = wait comm=waitcat,tracker-miner-fs-3\n\
                  miss-wait-timeout = 100\n";
    let files = ["indexed.txt", "plain.txt", "released.txt", "killed.txt"];
    let (m, dir) = setup(&cell, "miss-rules", config, &files);
    let waitcat = program("waitcat");
    let tracker = program("tracker-miner-fs-3");
    let _cut = cell.cut();
    notice_the_cut(&m, &dir);

    let out = finish(
        start(&tracker, &dir.join("indexed.txt"), Some("wait")),
        Duration::from_secs(10),
    );
    assert_eq!(failure(&out).0, libc::ENETDOWN, "an indexer must not wait");
    let out = finish(
        start(Path::new(TIMED_READ), &dir.join("plain.txt"), None),
        Duration::from_secs(10),
    );
    assert_eq!(failure(&out).0, libc::ENETDOWN, "no rule: error");

    let released = start(&waitcat, &dir.join("released.txt"), None);
    let pid = released.id();
    let (_, _, command, _) = until_waiting(&m, pid);
    assert_eq!(command, "waitcat");
    let nobody = Path::new("/nonexistent-ccache");
    let theirs = cell.afsd_as(ALICE_UID, &m, nobody, &["waiting", "--json"]);
    assert_eq!(
        String::from_utf8_lossy(&theirs.stdout).trim(),
        "[]",
        "{}",
        String::from_utf8_lossy(&theirs.stderr)
    );
    let out = cell.afsd_as(
        ALICE_UID,
        &m,
        nobody,
        &["waiting", "--release", &pid.to_string()],
    );
    assert!(!out.status.success(), "alice released root's wait");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("only root may release it"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs = cell.afsd_as(ALICE_UID, &m, nobody, &["misses", "--json"]);
    assert_eq!(String::from_utf8_lossy(&theirs.stdout).trim(), "[]");
    let said = m.afsd_ok(&["waiting", "--release", &pid.to_string()]);
    assert!(said.contains(&pid.to_string()), "{said}");
    let out = finish(released, Duration::from_secs(5));
    assert_eq!(failure(&out).0, libc::ETIMEDOUT);

    let mut killed = start(&waitcat, &dir.join("killed.txt"), None);
    let pid = killed.id();
    until_waiting(&m, pid);
    killed.kill().unwrap();
    let t = Instant::now();
    let reaped = wait_until(Duration::from_secs(5), || {
        killed.try_wait().unwrap().is_some()
    });
    assert!(reaped, "a waiter killed with -9 stayed stuck");
    assert!(t.elapsed() < Duration::from_secs(5));
    let gone = wait_until(Duration::from_secs(2), || {
        !waiting(&m).iter().any(|w| w.0 == pid)
    });
    assert!(gone, "still listed: {:?}", waiting(&m));
    assert!(waiting(&m).is_empty());
}
