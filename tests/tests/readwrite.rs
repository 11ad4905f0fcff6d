//! Read-write /afs against the real cell: POSIX operations through the
//! mount, each checked with exact results and errnos, and with what a
//! third-party client sees on the server.

use std::fs;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use std::time::Duration;

use afsd_tests::{random_bytes, wait_until, Cell, Mount};

/// A scratch directory under the anonymously writable `shared/`.
fn workdir(cell: &Cell, m: &Mount, tag: &str) -> (std::path::PathBuf, String) {
    let name = format!("{tag}-{}", std::process::id());
    let p = m.path(&format!(".{}/shared/{name}", cell.cell()));
    fs::create_dir(&p).unwrap();
    (p, format!("shared/{name}"))
}

fn server_cat(cell: &Cell, rel: &str) -> Vec<u8> {
    cell.third_party(&["cat", &cell.rw(rel)], None).stdout
}

fn errno(e: std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

/// A field of the third-party tool's `stat` line (`length`, `mtime`, ...).
fn server_stat(cell: &Cell, rel: &str, field: &str) -> u64 {
    let out = cell.third_party(&["stat", &cell.rw(rel)], None).stdout;
    let text = String::from_utf8_lossy(&out);
    let mut words = text.split_whitespace();
    words
        .by_ref()
        .find(|w| *w == field)
        .and_then(|_| words.next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in {text:?}"))
}

/// close(2) of the file, with its result (a drop would discard it).
fn close(f: fs::File) -> std::io::Result<()> {
    use std::os::fd::IntoRawFd;
    let fd = f.into_raw_fd();
    // SAFETY: we own fd (into_raw_fd) and close it once.
    if unsafe { libc::close(fd) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[test]
fn create_write_close_is_stored_on_the_server() {
    let cell = Cell::from_env();
    let m = Mount::new(&cell, &[]);
    let (dir, rel) = workdir(&cell, &m, "cw");
    let data = random_bytes(3 << 20, 9);
    let mut f = fs::File::create(dir.join("a.bin")).unwrap();
    f.write_all(&data).unwrap();
    drop(f); // close: stored before it returns
    assert!(
        server_cat(&cell, &format!("{rel}/a.bin")) == data,
        "server has other bytes"
    );
    assert!(fs::read(dir.join("a.bin")).unwrap() == data);
    assert_eq!(fs::metadata(dir.join("a.bin")).unwrap().len(), 3 << 20);
    // Our own store left the data cached: reading it back fetched nothing.
    let fetched = m.stat("RXAFS_FetchData64");
    assert!(fs::read(dir.join("a.bin")).unwrap() == data);
    assert_eq!(m.stat("RXAFS_FetchData64"), fetched);
    // Overwrite in the middle, then append.
    let mut f = fs::OpenOptions::new()
        .write(true)
        .open(dir.join("a.bin"))
        .unwrap();
    use std::io::{Seek, SeekFrom};
    f.seek(SeekFrom::Start(10)).unwrap();
    f.write_all(b"HELLO").unwrap();
    f.sync_all().unwrap(); // fsync stores too
    let mut want = data.clone();
    want[10..15].copy_from_slice(b"HELLO");
    assert!(server_cat(&cell, &format!("{rel}/a.bin")) == want);
    drop(f);
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(dir.join("a.bin"))
        .unwrap();
    f.write_all(b"tail").unwrap();
    drop(f);
    want.extend_from_slice(b"tail");
    assert!(fs::read(dir.join("a.bin")).unwrap() == want);
    assert!(server_cat(&cell, &format!("{rel}/a.bin")) == want);
    // An empty file.
    fs::File::create(dir.join("empty")).unwrap();
    assert_eq!(fs::metadata(dir.join("empty")).unwrap().len(), 0);
    assert!(server_cat(&cell, &format!("{rel}/empty")).is_empty());
}

#[test]
fn directories_renames_links_and_removal() {
    let cell = Cell::from_env();
    let m = Mount::new(&cell, &[]);
    let (dir, rel) = workdir(&cell, &m, "ns");
    fs::create_dir(dir.join("sub")).unwrap();
    assert!(fs::metadata(dir.join("sub")).unwrap().is_dir());
    assert_eq!(
        errno(fs::create_dir(dir.join("sub")).unwrap_err()),
        libc::EEXIST
    );
    fs::write(dir.join("f"), b"one").unwrap();
    // Rename within a directory, then across directories of the volume.
    fs::rename(dir.join("f"), dir.join("g")).unwrap();
    assert_eq!(
        fs::metadata(dir.join("f")).unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(fs::read(dir.join("g")).unwrap(), b"one");
    fs::rename(dir.join("g"), dir.join("sub/h")).unwrap();
    assert_eq!(fs::read(dir.join("sub/h")).unwrap(), b"one");
    assert_eq!(server_cat(&cell, &format!("{rel}/sub/h")), b"one");
    // Rename over an existing file replaces it.
    fs::write(dir.join("sub/i"), b"two").unwrap();
    fs::rename(dir.join("sub/i"), dir.join("sub/h")).unwrap();
    assert_eq!(fs::read(dir.join("sub/h")).unwrap(), b"two");
    let mut names: Vec<String> = fs::read_dir(dir.join("sub"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, vec!["h"]);
    // A non-empty directory cannot go.
    assert_eq!(
        errno(fs::remove_dir(dir.join("sub")).unwrap_err()),
        libc::ENOTEMPTY
    );
    // Symlink.
    std::os::unix::fs::symlink("sub/h", dir.join("ln")).unwrap();
    assert_eq!(
        fs::read_link(dir.join("ln")).unwrap().to_str(),
        Some("sub/h")
    );
    assert_eq!(fs::read(dir.join("ln")).unwrap(), b"two");
    // A hard link in the same directory (AFS allows no other).
    fs::hard_link(dir.join("sub/h"), dir.join("sub/h2")).unwrap();
    assert_eq!(fs::read(dir.join("sub/h2")).unwrap(), b"two");
    assert_eq!(fs::metadata(dir.join("sub/h")).unwrap().nlink(), 2);
    // Removal.
    fs::remove_file(dir.join("sub/h")).unwrap();
    fs::remove_file(dir.join("sub/h2")).unwrap();
    fs::remove_file(dir.join("ln")).unwrap();
    assert_eq!(
        errno(fs::remove_file(dir.join("nope")).unwrap_err()),
        libc::ENOENT
    );
    fs::remove_dir(dir.join("sub")).unwrap();
    assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);
    let server = cell.third_party(&["ls", &cell.rw(&rel)], None);
    let listed = String::from_utf8_lossy(&server.stdout)
        .lines()
        .filter(|l| !l.ends_with("\t.") && !l.ends_with("\t.."))
        .count();
    assert_eq!(listed, 0, "server still lists entries");
}

#[test]
fn chmod_utimes_truncate() {
    let cell = Cell::from_env();
    let m = Mount::new(&cell, &[]);
    let (dir, rel) = workdir(&cell, &m, "attr");
    fs::write(dir.join("t"), b"0123456789").unwrap();
    fs::set_permissions(dir.join("t"), fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(fs::metadata(dir.join("t")).unwrap().mode() & 0o777, 0o600);
    let st = String::from_utf8_lossy(
        &cell
            .third_party(&["stat", &cell.rw(&format!("{rel}/t"))], None)
            .stdout,
    )
    .to_string();
    assert!(st.contains("mode 600"), "{st}");
    // utimes, seen by the server too
    let out = std::process::Command::new("touch")
        .args(["-m", "-d", "2001-02-03 04:05:06 UTC"])
        .arg(dir.join("t"))
        .status()
        .unwrap();
    assert!(out.success());
    assert_eq!(fs::metadata(dir.join("t")).unwrap().mtime(), 981173106);
    assert_eq!(server_stat(&cell, &format!("{rel}/t"), "mtime"), 981173106);
    // truncate down and up
    fs::OpenOptions::new()
        .write(true)
        .open(dir.join("t"))
        .unwrap()
        .set_len(4)
        .unwrap();
    assert_eq!(fs::read(dir.join("t")).unwrap(), b"0123");
    assert_eq!(server_cat(&cell, &format!("{rel}/t")), b"0123");
    fs::OpenOptions::new()
        .write(true)
        .open(dir.join("t"))
        .unwrap()
        .set_len(6)
        .unwrap();
    assert_eq!(fs::read(dir.join("t")).unwrap(), b"0123\0\0");
    assert_eq!(server_stat(&cell, &format!("{rel}/t"), "length"), 6);
    assert_eq!(server_cat(&cell, &format!("{rel}/t")), b"0123\0\0");
    // O_TRUNC
    fs::write(dir.join("t"), b"x").unwrap();
    assert_eq!(server_cat(&cell, &format!("{rel}/t")), b"x");
}

#[test]
fn errnos_exdev_erofs_eacces() {
    let cell = Cell::from_env();
    let m = Mount::new(&cell, &[]);
    let c = cell.cell();
    let (dir, _) = workdir(&cell, &m, "err");
    fs::write(dir.join("x"), b"x").unwrap();
    // Across volumes: EXDEV (mv then copies).
    let err = fs::rename(dir.join("x"), m.path(&format!(".{c}/vol-rw/x"))).unwrap_err();
    assert_eq!(errno(err), libc::EXDEV);
    // The RO clone: EROFS.
    assert_eq!(
        errno(fs::write(m.path(&format!("{c}/new.txt")), b"x").unwrap_err()),
        libc::EROFS
    );
    assert_eq!(
        errno(fs::create_dir(m.path(&format!("{c}/newdir"))).unwrap_err()),
        libc::EROFS
    );
    // An ACL without insert for anonymous (root.cell root: system:anyuser rl).
    assert_eq!(
        errno(fs::write(m.path(&format!(".{c}/denied.txt")), b"x").unwrap_err()),
        libc::EACCES
    );
    assert_eq!(
        errno(fs::remove_file(m.path(&format!(".{c}/hello.txt"))).unwrap_err()),
        libc::EACCES
    );
}

/// Over quota: close itself reports EDQUOT, as fsync does, and the server
/// keeps no partial file beyond what it accepted.
#[test]
fn over_quota_is_edquot() {
    let cell = Cell::from_env();
    let m = Mount::new(&cell, &[]);
    let rel = format!("small/big-{}", std::process::id());
    let p = m.path(&format!(".{}/{rel}", cell.cell()));
    // close with no fsync before it
    let mut f = fs::File::create(&p).unwrap();
    f.write_all(&random_bytes(4 << 20, 3)).unwrap();
    assert_eq!(errno(close(f).unwrap_err()), libc::EDQUOT, "close");
    assert_eq!(server_stat(&cell, &rel, "length"), 0);
    // The refused changes were dropped (a lasting refusal): the file reads
    // as the server has it.
    assert_eq!(fs::read(&p).unwrap().len(), 0, "refused data still shown");
    // fsync fails, and so does the close after it: the refusal is
    // reported to every later close of the file.
    let mut f = fs::OpenOptions::new().write(true).open(&p).unwrap();
    f.write_all(&random_bytes(4 << 20, 4)).unwrap();
    assert_eq!(errno(f.sync_all().unwrap_err()), libc::EDQUOT, "fsync");
    assert_eq!(
        errno(close(f).unwrap_err()),
        libc::EDQUOT,
        "close after fsync"
    );
    assert_eq!(server_stat(&cell, &rel, "length"), 0);
    assert!(server_cat(&cell, &rel).is_empty());
    let _ = fs::remove_file(&p);
}

/// flock and fcntl locks go to the fileserver: a lock held through one
/// client is refused to another client until released.
#[test]
fn locks_are_held_at_the_fileserver() {
    let cell = Cell::from_env();
    let a = Mount::new(&cell, &[]);
    let b = Mount::new(&cell, &[]);
    let name = format!("shared/lock-{}", std::process::id());
    fs::write(a.path(&format!(".{}/{name}", cell.cell())), b"x").unwrap();
    let pa = a.path(&format!(".{}/{name}", cell.cell()));
    let pb = b.path(&format!(".{}/{name}", cell.cell()));
    let fa = fs::File::open(&pa).unwrap();
    // SAFETY: flock on an open descriptor.
    assert_eq!(
        unsafe {
            libc::flock(
                std::os::fd::AsRawFd::as_raw_fd(&fa),
                libc::LOCK_EX | libc::LOCK_NB,
            )
        },
        0
    );
    assert!(a.stat("RXAFS_SetLock") >= 1);
    let fb = fs::File::open(&pb).unwrap();
    let r = unsafe {
        libc::flock(
            std::os::fd::AsRawFd::as_raw_fd(&fb),
            libc::LOCK_EX | libc::LOCK_NB,
        )
    };
    assert_eq!(r, -1);
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::EWOULDBLOCK)
    );
    // Shared locks on the other client are refused too while a holds it.
    let r = unsafe {
        libc::flock(
            std::os::fd::AsRawFd::as_raw_fd(&fb),
            libc::LOCK_SH | libc::LOCK_NB,
        )
    };
    assert_eq!(r, -1);
    // Released on a: b gets it.
    assert_eq!(
        unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&fa), libc::LOCK_UN) },
        0
    );
    assert!(a.stat("RXAFS_ReleaseLock") >= 1);
    assert_eq!(
        unsafe {
            libc::flock(
                std::os::fd::AsRawFd::as_raw_fd(&fb),
                libc::LOCK_EX | libc::LOCK_NB,
            )
        },
        0
    );
    drop(fb); // close releases

    // fcntl: a write lock on a once b closed, then b's non-blocking attempt
    // is refused by the fileserver (b's SetLock fails) until a releases.
    let lock = |f: &fs::File, typ: i32| -> std::io::Result<()> {
        let fl = libc::flock {
            l_type: typ as i16,
            l_whence: 0,
            l_start: 0,
            l_len: 0,
            l_pid: 0,
        };
        // SAFETY: F_SETLK on an open descriptor with a valid struct flock.
        let r = unsafe { libc::fcntl(std::os::fd::AsRawFd::as_raw_fd(f), libc::F_SETLK, &fl) };
        if r == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    };
    let fa = fs::OpenOptions::new().write(true).open(&pa).unwrap();
    let mut last = None;
    let ok = afsd_tests::wait_until(std::time::Duration::from_secs(5), || {
        last = lock(&fa, libc::F_WRLCK).err();
        last.is_none()
    });
    assert!(ok, "fcntl lock refused after release: {last:?}");
    // Counters read before b opens the file: no process is started while
    // b holds it open.
    let (calls, errors) = (b.stat("RXAFS_SetLock"), b.rpc_errors("RXAFS_SetLock"));
    let fb = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&pb)
        .unwrap();
    let e = lock(&fb, libc::F_WRLCK).unwrap_err();
    assert_eq!(errno(e), libc::EAGAIN, "b's write lock while a holds it");
    let e = lock(&fb, libc::F_RDLCK).unwrap_err();
    assert_eq!(errno(e), libc::EAGAIN, "b's read lock while a holds it");
    drop(fb);
    assert_eq!(
        b.stat("RXAFS_SetLock") - calls,
        2,
        "b's attempts did not reach the fileserver:\n{}",
        b.stats_text()
    );
    assert_eq!(
        b.rpc_errors("RXAFS_SetLock") - errors,
        2,
        "the fileserver did not refuse b:\n{}",
        b.stats_text()
    );
    // a releases: b gets it.
    lock(&fa, libc::F_UNLCK).unwrap();
    let fb = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&pb)
        .unwrap();
    let ok = afsd_tests::wait_until(std::time::Duration::from_secs(5), || {
        last = lock(&fb, libc::F_WRLCK).err();
        last.is_none()
    });
    assert!(ok, "b's fcntl lock refused after a released: {last:?}");
}

/// Writes change chunks in the cache and close stores only those: a
/// 100-byte change in a 5 MiB file sends one 1 MiB chunk; a write past the
/// end leaves zeros between; a file cut and then extended reads as zeros
/// after the cut, on the server too.
#[test]
fn partial_sparse_and_cut_then_extended_writes() {
    use std::os::unix::fs::FileExt;
    const MIB: u64 = 1 << 20;
    let cell = Cell::from_env();
    let m = Mount::new(&cell, &[]);
    let (dir, rel) = workdir(&cell, &m, "partial");
    let orig = random_bytes(5 * MIB as usize, 31);
    cell.put(&cell.rw(&format!("{rel}/big")), &orig);
    let path = dir.join("big");
    let mut want = orig.clone();

    // A change inside chunk 2.
    let at = 2 * MIB + MIB / 2 + 10;
    let before = m.stat("bytes_stored");
    let f = fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all_at(&[0xab; 100], at).unwrap();
    drop(f);
    want[at as usize..at as usize + 100].fill(0xab);
    assert_eq!(
        m.stat("bytes_stored") - before,
        MIB,
        "a 100-byte change must store its one chunk, not the file"
    );
    assert!(server_cat(&cell, &format!("{rel}/big")) == want);

    // Past the end: 7 MiB + 5, leaving a hole.
    let before = m.stat("bytes_stored");
    let f = fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all_at(b"0123456789", 7 * MIB + 5).unwrap();
    drop(f);
    want.resize(7 * MIB as usize + 5, 0);
    want.extend_from_slice(b"0123456789");
    assert_eq!(m.stat("bytes_stored") - before, 15, "only the last chunk");
    assert!(server_cat(&cell, &format!("{rel}/big")) == want);
    assert!(fs::read(&path).unwrap() == want);

    // Cut inside chunk 1, then extend by writing at 3 MiB: bytes between
    // must be zeros, not the old data the server still had there.
    let f = fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(MIB + 3).unwrap();
    f.write_all_at(b"tail", 3 * MIB).unwrap();
    assert_eq!(f.metadata().unwrap().len(), 3 * MIB + 4);
    drop(f);
    want.truncate(MIB as usize + 3);
    want.resize(3 * MIB as usize, 0);
    want.extend_from_slice(b"tail");
    let got = server_cat(&cell, &format!("{rel}/big"));
    assert_eq!(got.len(), want.len());
    assert_eq!(
        got.iter().zip(&want).position(|(a, b)| a != b),
        None,
        "server bytes differ"
    );
    assert!(fs::read(&path).unwrap() == want);
}

/// A close during a link cut returns 0: the change is logged (the store
/// met the dead time, so it is settled by looking at the server when the
/// link is back) and reaches the server by itself. Writes made offline
/// outlive the daemon: a restart keeps them and replays them.
#[test]
fn a_close_during_a_cut_is_logged_and_reaches_the_server() {
    use std::os::unix::fs::FileExt;
    let cell = Cell::from_env();
    let m = Mount::new(&cell, &["--dead-time", "6"]);
    let (dir, rel) = workdir(&cell, &m, "failstore");
    let path = dir.join("f.txt");
    fs::write(&path, b"version one\n").unwrap();
    struct Restore<'a>(&'a Cell);
    impl Drop for Restore<'_> {
        fn drop(&mut self) {
            self.0.link(true);
        }
    }
    cell.link(false);
    let restore = Restore(&cell);
    let f = fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all_at(b"VERSION TWO\n", 0).unwrap();
    f.sync_all().expect("fsync during a cut is logged");
    drop(f);
    assert_eq!(fs::read(&path).unwrap(), b"VERSION TWO\n");
    drop(restore);
    let arrived = wait_until(Duration::from_secs(60), || {
        server_cat(&cell, &format!("{rel}/f.txt")) == b"VERSION TWO\n"
    });
    assert!(
        arrived,
        "the logged store never reached the server:\n{}",
        m.log_text()
    );

    // Offline again: a write closed by the unmount is logged, kept by a
    // restart (still offline), and replayed when the link is back.
    cell.link(false);
    let restore = Restore(&cell);
    let f = fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all_at(b"three", 0).unwrap();
    f.sync_all().expect("fsync during a cut is logged");
    drop(f);
    let cache = m.cache_dir.clone();
    m.stop();
    let m = Mount::with_cache(&cell, &cache, &["--dead-time", "6"]);
    assert_eq!(
        fs::read(m.path(&format!(".{}/{rel}/f.txt", cell.cell()))).unwrap(),
        b"threeON TWO\n"
    );
    drop(restore);
    let arrived = wait_until(Duration::from_secs(60), || {
        server_cat(&cell, &format!("{rel}/f.txt")) == b"threeON TWO\n"
    });
    assert!(
        arrived,
        "the change of the earlier run never arrived:\n{}",
        m.log_text()
    );
}

/// Deleting entries while listing them (as `os.scandir` + `unlink`, or
/// `find -delete` on some systems, do) meets every entry: where a listing
/// resumes does not move when earlier entries go.
#[test]
fn deleting_while_listing_meets_every_entry() {
    let cell = Cell::from_env();
    let m = Mount::new(&cell, &[]);
    let (dir, rel) = workdir(&cell, &m, "dellist");
    cell.third_party(&["touchmany", &cell.rw(&rel), "600", "e-"], None);
    let mut seen = 0;
    for e in fs::read_dir(&dir).unwrap() {
        fs::remove_file(e.unwrap().path()).unwrap();
        seen += 1;
    }
    assert_eq!(seen, 600, "entries met while deleting");
    assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);
    fs::remove_dir(&dir).unwrap();
}
