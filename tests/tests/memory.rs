//! Bounded memory against the real cell: streaming a file four times the
//! cache's size through the mount keeps the daemon's resident memory
//! small; what it holds is the cache's business (on disk), not the heap's.

use std::process::Command;
use std::time::{Duration, Instant};

use afsd_tests::{rss_kib, Cell, Mount};

/// The most the daemon may hold while streaming (the bound).
const MAX_RSS_KIB: u64 = 200 * 1024;

#[test]
fn streaming_a_large_file_keeps_the_daemon_small() {
    let cell = Cell::from_env();
    let rel = format!("shared/stream-{}.bin", std::process::id());
    const SIZE: u64 = 1 << 30;
    // Made on the server by the third party, from a stream.
    let tool = cell.var("THIRD_PARTY").to_string();
    let out = cell.client_exec(
        &[
            "sh",
            "-c",
            &format!(
                "head -c {SIZE} /dev/zero | '{tool}' -k put '{}'",
                cell.rw(&rel)
            ),
        ],
        None,
    );
    assert!(
        out.status.success(),
        "put: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = Mount::new(&cell, &["--cache-size", "256M"]);
    let path = m.path(&format!(".{}/{rel}", cell.cell()));
    let pid = m.pid();
    let before = rss_kib(pid);
    let mut reader = Command::new("sh")
        .arg("-c")
        .arg(format!("cat '{}' | wc -c", path.display()))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut peak = before;
    let start = Instant::now();
    while reader.try_wait().unwrap().is_none() {
        peak = peak.max(rss_kib(pid));
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "streaming 1 GiB took over 10 minutes"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = reader.wait_with_output().unwrap();
    let n: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert_eq!(n, SIZE, "bytes streamed");
    eprintln!(
        "streaming {SIZE} bytes through a 256 MiB cache: daemon RSS {} KiB before, {peak} KiB at most",
        before
    );
    assert!(
        peak < MAX_RSS_KIB,
        "the daemon grew to {peak} KiB streaming 1 GiB (bound {MAX_RSS_KIB} KiB)"
    );
    m.stop();
    let _ = cell.client_exec(&[&tool, "-k", "rm", &cell.rw(&rel)], None);
}
