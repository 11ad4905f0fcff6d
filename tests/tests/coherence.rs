//! Durability and coherence of writes: close means the server has it; two
//! clients see each other's closed writes through callbacks; a 1 GiB file
//! written through /afs is what a third-party client reads.

use std::io::Write;
use std::os::fd::IntoRawFd;
use std::process::{Command, Stdio};
use std::time::Duration;

use afsd_tests::{random_bytes, wait_until, Cell, Mount};

/// After close() returned 0, kill -9 of the daemon at once loses nothing:
/// close stores to the fileserver before it returns, not in the background.
#[test]
fn kill_dash_nine_after_close_loses_nothing() {
    let cell = Cell::from_env();
    let m = Mount::new(&cell, &[]);
    let name = format!("durable-{}.bin", std::process::id());
    let data = random_bytes(5 << 20, 42);
    let p = m.path(&format!(".{}/shared/{name}", cell.cell()));
    // Another file is written but not closed when the daemon dies: its
    // data was never acknowledged, and the restart drops it from the cache.
    let unclosed = format!("unclosed-{}.bin", std::process::id());
    let mut u =
        std::fs::File::create(m.path(&format!(".{}/shared/{unclosed}", cell.cell()))).unwrap();
    u.write_all(&random_bytes(3 << 20, 43)).unwrap();
    let mut f = std::fs::File::create(&p).unwrap();
    f.write_all(&data).unwrap();
    // close(2) itself, with its result: a drop would discard it.
    let fd = f.into_raw_fd();
    // SAFETY: we own fd (into_raw_fd) and close it once.
    let r = unsafe { libc::close(fd) };
    assert_eq!(r, 0, "close: {}", std::io::Error::last_os_error());
    // kill -9 at once: nothing may be left for the daemon to do.
    let cache = m.cache_dir.clone();
    m.kill();
    drop(u);
    let got = cell
        .third_party(&["cat", &cell.rw(&format!("shared/{name}"))], None)
        .stdout;
    assert!(
        got == data,
        "the server does not have what close acknowledged"
    );
    // A restarted daemon on the same cache serves it too.
    let m = Mount::with_cache(&cell, &cache, &[]);
    assert!(std::fs::read(m.path(&format!(".{}/shared/{name}", cell.cell()))).unwrap() == data);
    // Unlogged, its chunk records died with the daemon: the restart drops
    // the orphaned chunk files (or, had the records survived, the dirty
    // chunks themselves). Either way nothing unstored is left.
    let out = std::process::Command::new(afsd_tests::afsd_bin())
        .args(["cache", "stats"])
        .env("AFSD_CONTROL", m.control_socket())
        .output()
        .unwrap();
    let stats = String::from_utf8_lossy(&out.stdout);
    assert!(stats.lines().any(|l| l == "dirty_bytes 0"), "{stats}");
    // The server has the file CreateFile made, empty; so does the mount.
    let got = cell
        .third_party(&["cat", &cell.rw(&format!("shared/{unclosed}"))], None)
        .stdout;
    assert!(got.is_empty(), "{} bytes on the server", got.len());
    let local = std::fs::read(m.path(&format!(".{}/shared/{unclosed}", cell.cell()))).unwrap();
    assert!(local.is_empty());
}

/// Two afsd-rs instances with separate caches (and UUIDs): a write and
/// close on one is read on the other within 5 s.
#[test]
fn two_clients_see_each_others_closed_writes() {
    let cell = Cell::from_env();
    let a = Mount::new(&cell, &[]);
    let b = Mount::new(&cell, &[]);
    let name = format!("two-{}.txt", std::process::id());
    let pa = a.path(&format!(".{}/shared/{name}", cell.cell()));
    let pb = b.path(&format!(".{}/shared/{name}", cell.cell()));
    std::fs::write(&pa, b"from a, version 1\n").unwrap();
    assert!(wait_until(Duration::from_secs(5), || std::fs::read(&pb)
        .ok()
        .as_deref()
        == Some(b"from a, version 1\n")));
    // b caches it; a changes it; b sees the change through a callback break.
    assert_eq!(std::fs::read(&pb).unwrap(), b"from a, version 1\n");
    std::fs::write(&pa, b"from a, version 2, longer\n").unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || std::fs::read(&pb)
            .ok()
            .as_deref()
            == Some(b"from a, version 2, longer\n")),
        "b did not see a's write:\n{}",
        b.log_text()
    );
    // And the other way round.
    std::fs::write(&pb, b"from b\n").unwrap();
    assert!(wait_until(Duration::from_secs(5), || std::fs::read(&pa)
        .ok()
        .as_deref()
        == Some(b"from b\n")));
    std::fs::remove_file(&pa).unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || !pb.exists()),
        "b still sees the removed file"
    );
}

/// A 1 GiB file written through /afs is read back byte-identical by the
/// third-party tool.
#[test]
fn one_gib_file_round_trips_through_the_third_party_tool() {
    let cell = Cell::from_env();
    let m = Mount::new(&cell, &[]);
    let name = format!("gib-{}.bin", std::process::id());
    let p = m.path(&format!(".{}/shared/{name}", cell.cell()));
    let data = random_bytes(1 << 30, 1234);
    let mut f = std::fs::File::create(&p).unwrap();
    for piece in data.chunks(1 << 20) {
        f.write_all(piece).unwrap();
    }
    drop(f);
    // The third-party tool streams the file; compare digests, not 1 GiB of
    // captured output.
    let out = Command::new("bash")
        .arg("-c")
        .arg("set -a; . \"$0\"; set +a; export KRB5CCNAME=$ADMIN_CCACHE; \"$LABEXEC\" \"$CLIENT_NETNS\" \"$THIRD_PARTY\" -k cat \"$1\" | sha256sum")
        .arg(&cell.env_file)
        .arg(cell.rw(&format!("shared/{name}")))
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    let theirs = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string();
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&data).unwrap();
    let ours = String::from_utf8_lossy(&child.wait_with_output().unwrap().stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    assert_eq!(theirs, ours, "the server's copy differs");
    assert_eq!(std::fs::metadata(&p).unwrap().len(), 1 << 30);
    std::fs::remove_file(&p).unwrap();
}
