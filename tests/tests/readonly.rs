//! Read-only /afs against the real test cell: content written by a
//! third-party client (afscptool on OpenAFS's libafscp) read back through an
//! afsd-rs FUSE mount.

use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt;
use std::process::Command;
use std::time::{Duration, Instant};

use afsd_tests::{afsd_bin, getxattr, random_bytes, scratch, wait_until, Cell, Mount};

/// Files of every interesting size are byte-identical through /afs, and a
/// second read fetches nothing.
#[test]
fn files_of_many_sizes_read_back_identical() {
    let cell = Cell::from_env();
    let dirname = format!("sizes-{}", std::process::id());
    cell.third_party(&["mkdir", &cell.rw(&dirname)], None);
    let sizes: [usize; 7] = [0, 1, 4095, 4096, 65537, 10 << 20, 200 << 20];
    for (i, n) in sizes.iter().enumerate() {
        cell.put(
            &cell.rw(&format!("{dirname}/f{n}")),
            &random_bytes(*n, i as u64),
        );
    }
    let m = Mount::new(&cell, &[]);
    let dir = m.path(&format!(".{}/{dirname}", cell.cell()));
    for (i, n) in sizes.iter().enumerate() {
        let got = std::fs::read(dir.join(format!("f{n}"))).unwrap();
        assert_eq!(got.len(), *n, "length of f{n}");
        assert!(got == random_bytes(*n, i as u64), "contents of f{n} differ");
        assert_eq!(
            std::fs::metadata(dir.join(format!("f{n}"))).unwrap().len(),
            *n as u64
        );
    }
    let before = m.stat("RXAFS_FetchData64");
    assert!(before > 0);
    for n in sizes {
        let got = std::fs::read(dir.join(format!("f{n}"))).unwrap();
        assert_eq!(got.len(), n);
    }
    assert_eq!(
        m.stat("RXAFS_FetchData64"),
        before,
        "second read must not fetch"
    );
    assert!(m.stat("cache.chunk_hits") > 0);
}

/// A 2,000-entry directory lists exactly the names the server has.
#[test]
fn large_directory_lists_exactly_the_servers_names() {
    let cell = Cell::from_env();
    let dirname = format!("big-{}", std::process::id());
    let d = cell.rw(&dirname);
    cell.third_party(&["mkdir", &d], None);
    cell.third_party(&["touchmany", &d, "2000", "entry-"], None);
    let server = cell.third_party(&["ls", &d], None);
    let mut server_names: Vec<String> = String::from_utf8_lossy(&server.stdout)
        .lines()
        .filter_map(|l| l.split_once('\t').map(|(_, n)| n.to_string()))
        .filter(|n| n != "." && n != "..")
        .collect();
    server_names.sort();
    assert_eq!(server_names.len(), 2000);
    let m = Mount::new(&cell, &[]);
    let mut names: Vec<String> = std::fs::read_dir(m.path(&format!(".{}/{dirname}", cell.cell())))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, server_names);
    // Every entry stats (bulk status through InlineBulkStatus).
    for n in names.iter().take(200) {
        let md = std::fs::metadata(m.path(&format!(".{}/{dirname}/{n}", cell.cell()))).unwrap();
        assert!(md.is_file());
    }
    assert!(m.stat("RXAFS_InlineBulkStatus") >= 1);

    // The daemon's inode table follows the kernel's: once the kernel drops
    // its inodes (FORGET), they go from the table too, and the names still
    // work afterwards under new inode numbers.
    let listed = || -> usize {
        let out = std::process::Command::new("ls")
            .arg("-l")
            .arg(m.path(&format!(".{}/{dirname}", cell.cell())))
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains("entry-"))
            .count()
    };
    assert_eq!(listed(), 2000);
    let held = m.stat("inodes");
    assert!(held >= 2000, "{held} inodes after ls -l of 2000 entries");
    let dropped = afsd_tests::wait_until(std::time::Duration::from_secs(10), || {
        std::fs::write("/proc/sys/vm/drop_caches", "2").unwrap();
        m.stat("inodes") < 100
    });
    assert!(dropped, "{} inodes still held", m.stat("inodes"));
    assert_eq!(listed(), 2000);
    let md =
        std::fs::metadata(m.path(&format!(".{}/{dirname}/{}", cell.cell(), names[7]))).unwrap();
    assert!(md.is_file());
}

/// Symlinks read as symlinks; `#` and `%` mount points lead to the volume's
/// root; xattrs name fid, cell and volume as Linux kAFS does.
#[test]
fn symlinks_mount_points_and_xattrs() {
    let cell = Cell::from_env();
    let m = Mount::new(&cell, &[]);
    let c = cell.cell();
    let link = m.path(&format!(".{c}/hello-link"));
    assert_eq!(
        std::fs::read_link(&link).unwrap().to_str(),
        Some("hello.txt")
    );
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(
        std::fs::read_to_string(&link).unwrap(),
        std::fs::read_to_string(m.path(&format!(".{c}/hello.txt"))).unwrap()
    );

    // In a listing, mount points are directories and symlinks symlinks.
    for e in std::fs::read_dir(m.path(&format!(".{c}"))).unwrap() {
        let e = e.unwrap();
        let t = e.file_type().unwrap();
        match e.file_name().to_str().unwrap() {
            "vol" | "vol-rw" => assert!(t.is_dir(), "{:?}", e.file_name()),
            "hello-link" => assert!(t.is_symlink()),
            "hello.txt" => assert!(t.is_file()),
            _ => {}
        }
    }
    let regular = m.path(&format!(".{c}/vol"));
    let rw = m.path(&format!(".{c}/vol-rw"));
    assert!(std::fs::metadata(&regular).unwrap().is_dir());
    assert!(std::fs::metadata(&rw).unwrap().is_dir());
    // Both kinds lead to vol.test (RW only, so `#` leads to it too), at its
    // root vnode (1.1): not to root.cell, whose root is 1.1 as well.
    assert_eq!(
        String::from_utf8_lossy(&getxattr(&regular, "afs.volume").unwrap()),
        "vol.test"
    );
    assert_eq!(
        String::from_utf8_lossy(&getxattr(&rw, "afs.volume").unwrap()),
        "vol.test"
    );
    let fid = String::from_utf8(getxattr(&regular, "afs.fid").unwrap()).unwrap();
    assert!(fid.ends_with(":1:1"), "{fid}");
    assert_eq!(
        fid.as_bytes(),
        getxattr(&rw, "afs.fid").unwrap(),
        "# and % lead to different roots"
    );
    let cell_root =
        String::from_utf8(getxattr(&m.path(&format!(".{c}")), "afs.fid").unwrap()).unwrap();
    assert_ne!(
        fid.split(':').next(),
        cell_root.split(':').next(),
        "the # mount point stayed in root.cell ({cell_root})"
    );
    // Through the RO clone of root.cell too (vol.test has no RO site).
    assert_eq!(
        String::from_utf8_lossy(&getxattr(&m.path(&format!("{c}/vol")), "afs.volume").unwrap()),
        "vol.test"
    );
    assert_eq!(getxattr(&regular, "afs.cell").unwrap(), c.as_bytes());
    // The volume's content is the server's.
    let server = cell.third_party(&["ls", &cell.rw("vol")], None);
    let mut want: Vec<String> = String::from_utf8_lossy(&server.stdout)
        .lines()
        .filter_map(|l| l.split_once('\t').map(|(_, n)| n.to_string()))
        .filter(|n| n != "." && n != "..")
        .collect();
    want.sort();
    let mut got: Vec<String> = std::fs::read_dir(&rw)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    got.sort();
    assert_eq!(got, want);

    // afs.fid matches what the fileserver says of hello.txt.
    let st = cell.third_party(&["stat", &cell.rw("hello.txt")], None);
    let text = String::from_utf8_lossy(&st.stdout).to_string();
    let fid = text.split_whitespace().nth(1).unwrap().to_string(); // "vol.vnode.unique"
    let parts: Vec<u32> = fid.split('.').map(|p| p.parse().unwrap()).collect();
    let want = format!("{:x}:{:x}:{:x}", parts[0], parts[1], parts[2]);
    let got = getxattr(&m.path(&format!(".{c}/hello.txt")), "afs.fid").unwrap();
    assert_eq!(String::from_utf8(got).unwrap(), want);
    // Unknown xattrs are ENODATA, not EIO.
    let err = getxattr(&m.path(&format!(".{c}/hello.txt")), "afs.nonsense").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENODATA));
}

/// `/afs/.CELL` is the RW volume, `/afs/CELL` the RO clone, which shows new
/// content only after `vos release`.
#[test]
fn rw_path_and_ro_clone_after_release() {
    let cell = Cell::from_env();
    let c = cell.cell();
    let m = Mount::new(&cell, &[]);
    assert_eq!(
        getxattr(&m.path(&format!(".{c}")), "afs.volume").unwrap(),
        b"root.cell"
    );
    assert_eq!(
        getxattr(&m.path(c), "afs.volume").unwrap(),
        b"root.cell.readonly"
    );
    let name = format!("release-{}.txt", std::process::id());
    cell.put(&cell.rw(&name), b"released\n");
    assert_eq!(
        std::fs::read(m.path(&format!(".{c}/{name}"))).unwrap(),
        b"released\n"
    );
    assert_eq!(
        std::fs::metadata(m.path(&format!("{c}/{name}")))
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound,
        "the RO clone must not show an unreleased file"
    );
    cell.vos_release("root.cell");
    let seen = wait_until(Duration::from_secs(10), || {
        std::fs::read(m.path(&format!("{c}/{name}")))
            .ok()
            .as_deref()
            == Some(b"released\n")
    });
    assert!(seen, "released file not visible in the RO clone");
}

/// A third-party change to a cached file is seen within 5 s, by callback.
#[test]
fn third_party_change_seen_through_callback() {
    let cell = Cell::from_env();
    let c = cell.cell();
    let name = format!("cb-{}.txt", std::process::id());
    cell.put(&cell.rw(&name), b"version one\n");
    let m = Mount::new(&cell, &[]);
    let p = m.path(&format!(".{c}/{name}"));
    assert_eq!(std::fs::read(&p).unwrap(), b"version one\n");
    assert_eq!(std::fs::read(&p).unwrap(), b"version one\n");
    let breaks = m.stat("callback_breaks");
    cell.put(&cell.rw(&name), b"version two, longer\n");
    let seen = wait_until(Duration::from_secs(5), || {
        std::fs::read(&p).ok().as_deref() == Some(b"version two, longer\n")
    });
    assert!(seen, "change not seen within 5 s:\n{}", m.log_text());
    assert!(
        m.stat("callback_breaks") > breaks,
        "the change must arrive as a callback break"
    );
    assert_eq!(std::fs::metadata(&p).unwrap().len(), 20);
}

/// Restarting the daemon on the same cache serves unchanged files without
/// FetchData (statuses are revalidated, data is not refetched).
#[test]
fn restart_on_same_cache_serves_without_fetchdata() {
    let cell = Cell::from_env();
    let c = cell.cell();
    let name = format!("restart-{}.bin", std::process::id());
    let data = random_bytes(3 << 20, 77);
    cell.put(&cell.rw(&name), &data);
    let cache = scratch("restart").join("cache");
    let m = Mount::with_cache(&cell, &cache, &[]);
    assert!(std::fs::read(m.path(&format!(".{c}/{name}"))).unwrap() == data);
    assert!(m.stat("RXAFS_FetchData64") > 0);
    m.stop();
    let m = Mount::with_cache(&cell, &cache, &[]);
    let fetches = m.stat("RXAFS_FetchData64");
    assert!(std::fs::read(m.path(&format!(".{c}/{name}"))).unwrap() == data);
    assert_eq!(
        m.stat("RXAFS_FetchData64"),
        fetches,
        "restart must serve cached data:\n{}",
        m.stats_text()
    );
    assert!(
        m.stat("RXAFS_FetchStatus") + m.stat("RXAFS_InlineBulkStatus") > 0,
        "statuses must be revalidated"
    );
    // A file changed while the daemon was down is fetched anew.
    m.stop();
    cell.put(&cell.rw(&name), b"changed while down\n");
    let m = Mount::with_cache(&cell, &cache, &[]);
    assert_eq!(
        std::fs::read(m.path(&format!(".{c}/{name}"))).unwrap(),
        b"changed while down\n"
    );
}

/// With the link cut, reading an uncached file fails with ETIMEDOUT after
/// the dead time instead of hanging, and takes the volume offline: the next
/// miss is ENETDOWN at once; cached data still reads; after the link is
/// restored, the volume comes back by itself and reads work again.
#[test]
fn link_cut_fails_cleanly_and_recovers() {
    let cell = Cell::from_env();
    let c = cell.cell();
    let cached = format!("cut-cached-{}.txt", std::process::id());
    let uncached = format!("cut-uncached-{}.txt", std::process::id());
    let uncached2 = format!("cut-uncached2-{}.txt", std::process::id());
    cell.put(&cell.rw(&cached), b"cached\n");
    cell.put(&cell.rw(&uncached), b"uncached\n");
    cell.put(&cell.rw(&uncached2), b"uncached2\n");
    let m = Mount::new(&cell, &["--dead-time", "6"]);
    assert_eq!(
        std::fs::read(m.path(&format!(".{c}/{cached}"))).unwrap(),
        b"cached\n"
    );
    // Learn the directory and the other file's status, but not its data.
    assert_eq!(
        std::fs::metadata(m.path(&format!(".{c}/{uncached}")))
            .unwrap()
            .len(),
        9
    );
    struct Restore<'a>(&'a Cell);
    impl Drop for Restore<'_> {
        fn drop(&mut self) {
            self.0.link(true);
        }
    }
    cell.link(false);
    let _restore = Restore(&cell);
    let t = Instant::now();
    let err = std::fs::read(m.path(&format!(".{c}/{uncached}"))).unwrap_err();
    let took = t.elapsed();
    // ETIMEDOUT from the call that met the dead time, or ENETDOWN when
    // another request of the read (the kernel's) met it first and took
    // the volume offline.
    assert!(
        matches!(err.raw_os_error(), Some(libc::ETIMEDOUT | libc::ENETDOWN)),
        "{err}"
    );
    // Bounds of the protocol's timer, not performance figures: the call
    // waits out the whole dead time (6 s) before it gives up, and gives up
    // rather than hang.
    assert!(
        took >= Duration::from_secs(6),
        "failed after {took:?}, before the 6 s dead time"
    );
    assert!(took < Duration::from_secs(30), "read hung for {took:?}");
    // The volume is now offline: the next miss fails at once with
    // ENETDOWN, without sending any RPC at all.
    let sent = m.total_rpcs();
    let t = Instant::now();
    let err = std::fs::read(m.path(&format!(".{c}/{uncached2}"))).unwrap_err();
    let took = t.elapsed();
    assert_eq!(err.raw_os_error(), Some(libc::ENETDOWN), "{err}");
    assert!(
        took < Duration::from_secs(3),
        "the second miss took {took:?}: it waited on the down server"
    );
    assert_eq!(
        m.total_rpcs(),
        sent,
        "nothing may be sent to an offline volume:\n{}",
        m.stats_text()
    );
    // Cached data still reads while the callback holds.
    assert_eq!(
        std::fs::read(m.path(&format!(".{c}/{cached}"))).unwrap(),
        b"cached\n"
    );
    cell.link(true);
    let ok = wait_until(Duration::from_secs(20), || {
        std::fs::read(m.path(&format!(".{c}/{uncached}")))
            .ok()
            .as_deref()
            == Some(b"uncached\n")
    });
    assert!(
        ok,
        "reads did not recover after the link came back:\n{}",
        m.log_text()
    );
}

/// The RO clone and the synthetic root refuse changes with EROFS; nothing
/// reaches the server.
#[test]
fn read_only_places_refuse_changes() {
    let cell = Cell::from_env();
    let c = cell.cell();
    let m = Mount::new(&cell, &[]);
    let before = m.stats();
    let e = std::fs::write(m.path(&format!("{c}/new.txt")), b"x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS));
    let e = std::fs::create_dir(m.path(&format!("{c}/newdir"))).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS));
    let e = std::fs::remove_file(m.path(&format!("{c}/hello.txt"))).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS));
    let e = std::fs::OpenOptions::new()
        .append(true)
        .open(m.path(&format!("{c}/hello.txt")))
        .unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS));
    let e = std::fs::create_dir(m.path("newcell")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS));
    let after = m.stats();
    for op in [
        "RXAFS_CreateFile",
        "RXAFS_MakeDir",
        "RXAFS_RemoveFile",
        "RXAFS_StoreData64",
    ] {
        assert_eq!(before.get(op), Some(&0), "{op} was sent");
        assert_eq!(after.get(op), Some(&0), "{op} was sent");
    }
    // The mount root lists the cell both ways.
    let names: Vec<String> = std::fs::read_dir(&m.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.contains(&c.to_string()) && names.contains(&format!(".{c}")),
        "{names:?}"
    );
    assert_eq!(
        std::fs::metadata(m.path("no.such.cell"))
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );
    let md = std::fs::metadata(m.path(&format!(".{c}/hello.txt"))).unwrap();
    assert!(md.mode() & 0o777 != 0);
}

/// Bad arguments, an unknown cell and an unreachable VL server give a clear
/// message and a failure status, never a panic.
#[test]
fn bad_configuration_is_reported_clearly() {
    let cell = Cell::from_env();
    let run = |args: &[&str]| {
        let netns = format!("--net=/run/netns/{}", cell.var("CLIENT_NETNS"));
        let out = Command::new("nsenter")
            .arg(&netns)
            .arg(afsd_bin())
            .args(args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
        err
    };
    let base = scratch("badconf");
    let mnt = base.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let err = run(&["mount", "--foreground", "/nonexistent/afs"]);
    assert!(err.contains("/nonexistent/afs"), "{err}");
    let err = run(&[
        "mount",
        "--foreground",
        "--dead-time",
        "zero",
        mnt.to_str().unwrap(),
    ]);
    assert!(err.contains("dead-time"), "{err}");

    let conf = base.join("conf-unknown");
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::write(
        conf.join("CellServDB"),
        format!(">{}\n{}\n", cell.cell(), cell.var("SERVER_IP")),
    )
    .unwrap();
    std::fs::write(conf.join("ThisCell"), "no.such.cell\n").unwrap();
    let cache = base.join("cache1");
    let err = run(&[
        "mount",
        "--foreground",
        "--conf-dir",
        conf.to_str().unwrap(),
        "--cache-dir",
        cache.to_str().unwrap(),
        mnt.to_str().unwrap(),
    ]);
    assert!(err.contains("no.such.cell"), "{err}");

    // A VL server address inside the lab subnet where nothing listens.
    let conf = base.join("conf-unreachable");
    std::fs::create_dir_all(&conf).unwrap();
    let ip = cell
        .var("SERVER_IP")
        .rsplit_once('.')
        .map(|(a, _)| format!("{a}.77"))
        .unwrap();
    std::fs::write(conf.join("CellServDB"), format!(">dead.lab\n{ip}\n")).unwrap();
    std::fs::write(conf.join("ThisCell"), "dead.lab\n").unwrap();
    let cache = base.join("cache2");
    let t = Instant::now();
    let err = run(&[
        "mount",
        "--foreground",
        "--dead-time",
        "3",
        "--conf-dir",
        conf.to_str().unwrap(),
        "--cache-dir",
        cache.to_str().unwrap(),
        mnt.to_str().unwrap(),
    ]);
    assert!(err.contains("dead.lab"), "{err}");
    assert!(t.elapsed() < Duration::from_secs(60));
    assert!(!afsd_tests::is_mountpoint(&mnt));
}
