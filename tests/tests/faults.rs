//! Faults injected against the real cell: the fileserver restarted (`bos
//! restart`) while files are read and written, and packets lost on the
//! way both ways. Nothing read may be wrong, nothing acknowledged may be
//! lost, and nothing on the server may be torn: a read gives the right
//! bytes or a clean errno, a close that returned 0 ends with the whole file
//! on the server, and a close that failed leaves no part of it there.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

use afsd_tests::{random_bytes, Cell, Mount};

fn server_cat(cell: &Cell, rel: &str) -> Option<Vec<u8>> {
    let tool = cell.var("THIRD_PARTY").to_string();
    let out = cell.client_exec(&[&tool, "-k", "cat", &cell.rw(rel)], None);
    out.status.success().then_some(out.stdout)
}

/// A pause between 1 MiB pieces, so that reads and writes last long
/// enough to meet the fault.
const PACE: Duration = Duration::from_millis(40);

fn errno(e: std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(-1)
}

/// Reads a whole file, 1 MiB at a time: its bytes, or the errno it failed
/// with.
fn read_all(p: &Path) -> Result<Vec<u8>, i32> {
    let mut f = fs::File::open(p).map_err(errno)?;
    let mut v = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(errno)?;
        if n == 0 {
            return Ok(v);
        }
        v.extend_from_slice(&buf[..n]);
        thread::sleep(PACE);
    }
}

/// Writes a whole file, 1 MiB at a time, and closes it: Ok when close
/// returned 0.
fn write_all(p: &Path, data: &[u8]) -> Result<(), i32> {
    let mut f = fs::File::create(p).map_err(errno)?;
    for piece in data.chunks(1 << 20) {
        f.write_all(piece).map_err(errno)?;
        thread::sleep(PACE);
    }
    afsd_tests::close_file(f).map_err(errno)
}

/// The errnos a fault may end a call with (never EINVAL, EBADF, ...).
const CLEAN: &[i32] = &[libc::EIO, libc::ENETDOWN, libc::ETIMEDOUT, libc::EAGAIN];

struct Work {
    read: Result<Vec<u8>, i32>,
    wrote: Result<(), i32>,
}

/// Reads `src` and writes `dst` (in threads) while `fault` runs; both
/// must still be at work when it starts, or the test proves nothing.
fn under_fault(src: PathBuf, dst: PathBuf, out: Vec<u8>, fault: impl FnOnce()) -> Work {
    let reader = thread::spawn(move || read_all(&src));
    let writer = thread::spawn(move || write_all(&dst, &out));
    thread::sleep(Duration::from_millis(300));
    assert!(
        !reader.is_finished() && !writer.is_finished(),
        "the reads and writes ended before the fault: make them longer"
    );
    fault();
    Work {
        read: reader.join().unwrap(),
        wrote: writer.join().unwrap(),
    }
}

fn check(cell: &Cell, m: &Mount, rel: &str, w: &Work, want_read: &[u8], written: &[u8]) {
    match &w.read {
        Ok(got) => assert!(got == want_read, "a read under the fault gave wrong bytes"),
        Err(e) => assert!(
            CLEAN.contains(e),
            "a read under the fault failed with errno {e}"
        ),
    }
    m.wait_replayed(Duration::from_secs(180))
        .unwrap_or_else(|e| panic!("{e}"));
    let on_server = server_cat(cell, rel);
    match &w.wrote {
        Ok(()) => assert!(
            on_server.as_deref() == Some(written),
            "close returned 0 but the server has {:?} bytes, not the {} written",
            on_server.as_ref().map(Vec::len),
            written.len()
        ),
        Err(e) => {
            assert!(
                CLEAN.contains(e),
                "a write under the fault failed with errno {e}"
            );
            assert!(
                on_server
                    .as_ref()
                    .is_none_or(|d| d.is_empty() || d == written),
                "a failed close left a torn file of {:?} bytes on the server",
                on_server.as_ref().map(Vec::len)
            );
        }
    }
}

#[test]
fn a_fileserver_restart_during_reads_and_writes_loses_nothing() {
    let cell = Cell::from_env();
    let m = Mount::new(&cell, &[]);
    let rel = format!("shared/fault-restart-{}", std::process::id());
    let dir = m.path(&format!(".{}/{rel}", cell.cell()));
    fs::create_dir(&dir).unwrap();
    let src = random_bytes(64 << 20, 11);
    cell.put(&cell.rw(&format!("{rel}/src.bin")), &src);
    let out = random_bytes(48 << 20, 12);
    let server = cell.var("SERVER_IP").to_string();
    let w = under_fault(
        dir.join("src.bin"),
        dir.join("out.bin"),
        out.clone(),
        || {
            let r = cell.server_exec(&["bos", "restart", &server, "dafs", "-localauth"]);
            assert!(
                r.status.success(),
                "bos restart: {}",
                String::from_utf8_lossy(&r.stderr)
            );
        },
    );
    eprintln!(
        "under a fileserver restart: read {:?}, close {:?}",
        w.read.as_ref().map(Vec::len),
        w.wrote
    );
    check(&cell, &m, &format!("{rel}/out.bin"), &w, &src, &out);
    // Afterwards everything reads back whole.
    assert_eq!(read_all(&dir.join("src.bin")).unwrap(), src);
    m.stop();
}

/// nft rules in the server's namespace dropping `percent`% of the Rx
/// packets each way; removed when dropped.
struct Loss<'a>(&'a Cell);

impl<'a> Loss<'a> {
    fn start(cell: &'a Cell, percent: u32) -> Loss<'a> {
        let script = format!(
            "nft add table inet afsdloss && \
             nft add chain inet afsdloss in '{{ type filter hook input priority 0; }}' && \
             nft add chain inet afsdloss out '{{ type filter hook output priority 0; }}' && \
             nft add rule inet afsdloss in udp dport 7000 numgen random mod 100 lt {percent} drop && \
             nft add rule inet afsdloss out udp sport 7000 numgen random mod 100 lt {percent} drop"
        );
        let r = cell.server_exec(&["sh", "-c", &script]);
        assert!(
            r.status.success(),
            "nft: {}",
            String::from_utf8_lossy(&r.stderr)
        );
        Loss(cell)
    }
}

impl Drop for Loss<'_> {
    fn drop(&mut self) {
        let _ = self
            .0
            .server_exec(&["nft", "delete", "table", "inet", "afsdloss"]);
    }
}

#[test]
fn lost_packets_both_ways_are_retransmitted_not_seen() {
    let cell = Cell::from_env();
    let m = Mount::new(&cell, &[]);
    let rel = format!("shared/fault-loss-{}", std::process::id());
    let dir = m.path(&format!(".{}/{rel}", cell.cell()));
    fs::create_dir(&dir).unwrap();
    let src = random_bytes(24 << 20, 21);
    cell.put(&cell.rw(&format!("{rel}/src.bin")), &src);
    let out = random_bytes(16 << 20, 22);
    let loss = Loss::start(&cell, 5);
    let w = under_fault(dir.join("src.bin"), dir.join("out.bin"), out.clone(), || {});
    drop(loss);
    // Loss is no outage: both succeed.
    assert!(
        w.read.as_deref() == Ok(&src[..]),
        "read: {:?}",
        w.read.as_ref().map(Vec::len)
    );
    assert_eq!(w.wrote, Ok(()));
    check(&cell, &m, &format!("{rel}/out.bin"), &w, &src, &out);
    m.stop();
}

#[test]
fn a_link_cut_mid_fetch_and_mid_store_loses_nothing() {
    let cell = Cell::from_env();
    let m = Mount::new(&cell, &["--dead-time", "3"]);
    let rel = format!("shared/fault-cut-{}", std::process::id());
    let dir = m.path(&format!(".{}/{rel}", cell.cell()));
    fs::create_dir(&dir).unwrap();
    let src = random_bytes(64 << 20, 31);
    cell.put(&cell.rw(&format!("{rel}/src.bin")), &src);
    let out = random_bytes(48 << 20, 32);
    let w = under_fault(
        dir.join("src.bin"),
        dir.join("out.bin"),
        out.clone(),
        || {
            let cut = cell.cut();
            thread::sleep(Duration::from_secs(6));
            cut.restore();
        },
    );
    eprintln!(
        "under a link cut: read {:?}, close {:?}",
        w.read.as_ref().map(Vec::len),
        w.wrote
    );
    check(&cell, &m, &format!("{rel}/out.bin"), &w, &src, &out);
    assert_eq!(read_all(&dir.join("src.bin")).unwrap(), src);
    m.stop();
}
