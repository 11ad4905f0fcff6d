//! Two fileservers: replicas and moves, against the real cell. `vol.rep`
//! and `vol.two` have read-only sites on both servers (see cell-up.sh):
//! a fileserver stopped in the middle of a read leaves the read to the
//! other site without an error, `afsd-rs checkservers` names it while it is
//! down and not once it is back; `vos move` of a volume being read and
//! written (VBUSY, then VMOVED) reaches no user as an error.

use std::fs;
use std::io::{Read, Write};
use std::path::Path;
use std::thread;
use std::time::Duration;

use afsd_tests::{random_bytes, wait_until, Cell, Mount};

/// Failures are noticed after this dead time (the default is longer).
const FAST: &[&str] = &["--dead-time", "4"];

fn bos(cell: &Cell, args: &[&str]) {
    let mut v = vec!["bos"];
    v.extend_from_slice(args);
    v.push("-localauth");
    let out = cell.server_exec(&v);
    assert!(
        out.status.success(),
        "bos {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Reads a file 1 MiB at a time, pausing between pieces (so that a fault
/// meets it half way).
fn paced_read(p: &Path) -> std::io::Result<Vec<u8>> {
    let mut f = fs::File::open(p)?;
    let mut v = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(v);
        }
        v.extend_from_slice(&buf[..n]);
        thread::sleep(Duration::from_millis(60));
    }
}

/// The file every read must give: big.bin as the third party reads it.
fn big(cell: &Cell) -> Vec<u8> {
    let tool = cell.var("THIRD_PARTY").to_string();
    let out = cell.client_exec(&[&tool, "-k", "cat", &cell.rw("rep-rw/big.bin")], None);
    assert!(out.status.success() && out.stdout.len() == 24 << 20);
    out.stdout
}

#[test]
fn reads_fail_over_between_replicas_and_the_stopped_server_comes_back() {
    let cell = Cell::from_env();
    let want = big(&cell);
    let servers = [
        cell.var("SERVER_IP").to_string(),
        cell.var("SERVER2_IP").to_string(),
    ];
    for stopped in &servers {
        // A fresh mount each time: the read is cold, from whichever site.
        let m = Mount::new(&cell, FAST);
        let path = m.path(&format!("{}/rep/big.bin", cell.cell()));
        assert_eq!(
            fs::read_to_string(m.path(&format!("{}/rep/rep.txt", cell.cell()))).unwrap(),
            "hello from vol.rep\n"
        );
        let reader = {
            let path = path.clone();
            thread::spawn(move || paced_read(&path))
        };
        thread::sleep(Duration::from_millis(300));
        assert!(!reader.is_finished(), "the read ended before the fault");
        bos(&cell, &["shutdown", stopped, "dafs", "-wait"]);
        let got = reader.join().unwrap();
        let ok = matches!(&got, Ok(d) if *d == want);
        // Down: checkservers names it (after a probe times out).
        let out = m.afsd(&["checkservers"]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        bos(&cell, &["start", stopped, "dafs"]);
        assert!(
            ok,
            "the read with {stopped} stopped: {:?}",
            got.map(|d| d.len())
        );
        assert!(
            !out.status.success() && text.contains(stopped.as_str()),
            "checkservers with {stopped} stopped: {text}"
        );
        // Back: checkservers says all are running again.
        assert!(
            wait_until(Duration::from_secs(90), || m
                .afsd(&["checkservers"])
                .status
                .success()),
            "{stopped} never came back in checkservers"
        );
        m.stop();
    }
}

#[test]
fn a_volume_moved_while_read_and_written_reaches_no_one_as_an_error() {
    let cell = Cell::from_env();
    let name = format!("vol.mv{}", std::process::id() % 100_000);
    let (s1, s2) = (
        cell.var("SERVER_IP").to_string(),
        cell.var("SERVER2_IP").to_string(),
    );
    let out = cell.server_exec(&[
        "vos",
        "create",
        &s1,
        "a",
        &name,
        "-maxquota",
        "0",
        "-localauth",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mnt = format!("shared/{name}");
    cell.third_party(&["mkmount", &cell.rw(&mnt), &name, "-rw"], None);
    cell.third_party(
        &[
            "setacl",
            &format!("@{name}"),
            "system:administrators",
            "all",
            "system:anyuser",
            "write",
        ],
        None,
    );
    let src = random_bytes(16 << 20, 41);
    cell.put(&cell.rw(&format!("{mnt}/src.bin")), &src);

    let m = Mount::new(&cell, FAST);
    let dir = m.path(&format!(".{}/{mnt}", cell.cell()));
    assert_eq!(fs::read(dir.join("src.bin")).unwrap().len(), src.len());
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Readers and writers until the move is done.
    let reader = {
        let (dir, stop, src) = (dir.clone(), stop.clone(), src.clone());
        thread::spawn(move || -> Result<usize, String> {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let got = paced_read(&dir.join("src.bin")).map_err(|e| format!("read: {e}"))?;
                if got != src {
                    return Err(format!("read {} bytes, wrong", got.len()));
                }
                n += 1;
            }
            Ok(n)
        })
    };
    let writer = {
        let (dir, stop) = (dir.clone(), stop.clone());
        thread::spawn(move || -> Result<usize, String> {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let data = random_bytes(2 << 20, 100 + n as u64);
                let p = dir.join(format!("w{n}.bin"));
                let mut f = fs::File::create(&p).map_err(|e| format!("create {n}: {e}"))?;
                for piece in data.chunks(256 << 10) {
                    f.write_all(piece).map_err(|e| format!("write {n}: {e}"))?;
                    thread::sleep(Duration::from_millis(20));
                }
                afsd_tests::close_file(f).map_err(|e| format!("close {n}: {e}"))?;
                n += 1;
            }
            Ok(n)
        })
    };
    thread::sleep(Duration::from_millis(500));
    let out = cell.server_exec(&["vos", "move", &name, &s1, "a", &s2, "a", "-localauth"]);
    assert!(
        out.status.success(),
        "vos move: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    thread::sleep(Duration::from_secs(2));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let reads = reader.join().unwrap();
    let writes = writer.join().unwrap();
    assert!(
        reads.is_ok() && writes.is_ok(),
        "during vos move: reads {reads:?}, writes {writes:?}\n{}",
        m.log_tail(30)
    );
    let writes = writes.unwrap();
    // Every file written is whole on the server, at its new site.
    m.wait_replayed(Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("{e}"));
    let tool = cell.var("THIRD_PARTY").to_string();
    for n in 0..writes {
        let out = cell.client_exec(
            &[&tool, "-k", "cat", &cell.rw(&format!("{mnt}/w{n}.bin"))],
            None,
        );
        assert!(
            out.status.success() && out.stdout == random_bytes(2 << 20, 100 + n as u64),
            "w{n}.bin on the server"
        );
    }
    let vldb = cell.server_exec(&["vos", "listvldb", &name, "-noresolve", "-localauth"]);
    assert!(String::from_utf8_lossy(&vldb.stdout).contains(&s2));
    m.stop();
    let _ = cell.server_exec(&["vos", "remove", &s2, "a", &name, "-localauth"]);
}
