//! The bounded persistent cache against the real cell: its size limit, the
//! cache commands, flush.

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use afsd_tests::{afsd_bin, random_bytes, scratch, Cell, Mount};

/// What `du` says: allocated blocks of every file and directory. Entries
/// that go while it walks (evicted chunks, RocksDB's compacted files) count
/// as gone.
fn dir_size(p: &Path) -> u64 {
    let gone = |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotFound;
    let mut total = match std::fs::symlink_metadata(p) {
        Ok(md) => md.blocks() * 512,
        Err(e) if gone(&e) => return 0,
        Err(e) => panic!("{}: {e}", p.display()),
    };
    let entries = match std::fs::read_dir(p) {
        Ok(r) => r,
        Err(e) if gone(&e) => return 0,
        Err(e) => panic!("{}: {e}", p.display()),
    };
    for e in entries {
        let e = match e {
            Ok(e) => e,
            Err(e) if gone(&e) => continue,
            Err(e) => panic!("{}: {e}", p.display()),
        };
        let md = match e.metadata() {
            Ok(md) => md,
            Err(err) if gone(&err) => continue,
            Err(err) => panic!("{}: {err}", e.path().display()),
        };
        total += if md.is_dir() {
            dir_size(&e.path())
        } else {
            md.blocks() * 512
        };
    }
    total
}

/// Samples `dir_size(dir)` every 10 ms on a thread until stopped; gives the
/// largest size seen and the number of samples.
struct Sampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<(u64, u32)>,
}

impl Sampler {
    fn start(dir: &Path) -> Sampler {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (flag, dir) = (stop.clone(), dir.to_path_buf());
        let thread = std::thread::spawn(move || {
            let (mut max, mut n) = (0, 0);
            while !flag.load(Ordering::Relaxed) {
                max = max.max(dir_size(&dir));
                n += 1;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            (max, n)
        });
        Sampler { stop, thread }
    }

    fn finish(self) -> (u64, u32) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().expect("the sampler panicked")
    }
}

fn cache_cmd(m: &Mount, args: &[&str]) -> std::process::Output {
    Command::new(afsd_bin())
        .args(args)
        .env("AFSD_CONTROL", m.control_socket())
        .output()
        .unwrap()
}

fn cache_stat(m: &Mount, key: &str) -> String {
    let out = cache_cmd(m, &["cache", "stats"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key} ")).map(str::to_string))
        .unwrap_or_else(|| panic!("no {key} in {text}"))
}

/// A cache statistic straight from the control socket. The writer test
/// must not start a process while it holds a file open: the exec closes the
/// inherited descriptor, and every close stores the file (AFS semantics).
fn cache_stat_nofork(m: &Mount, key: &str) -> u64 {
    use std::io::{BufRead, BufReader};
    let mut s = std::os::unix::net::UnixStream::connect(m.control_socket()).unwrap();
    s.write_all(b"\"CacheStats\"\n").unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    let at = line
        .find(&format!("\"{key}\":"))
        .unwrap_or_else(|| panic!("no {key} in {line}"));
    line[at + key.len() + 3..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect::<String>()
        .parse()
        .unwrap()
}

/// Reading three times the cache size keeps the whole cache directory
/// within its limit, as `du` measures it, every byte read is right, and a
/// writer's unstored data held in the cache meanwhile is neither evicted
/// nor lost: it is stored at close.
#[test]
fn reading_three_times_the_cache_size_stays_bounded() {
    let cell = Cell::from_env();
    let dir = format!("bounded-{}", std::process::id());
    cell.third_party(&["mkdir", &cell.rw(&dir)], None);
    for i in 0..4u64 {
        cell.put(
            &cell.rw(&format!("{dir}/f{i}")),
            &random_bytes(24 << 20, 100 + i),
        );
    }
    let m = Mount::new(&cell, &["--cache-size", "32M"]);
    assert_eq!(cache_stat(&m, "max_bytes"), (32u64 << 20).to_string());
    // A writer keeps 8 MiB unstored, in the cache, while the reads go on.
    let wname = format!("shared/written-{}", std::process::id());
    let written = m.path(&format!(".{}/{wname}", cell.cell()));
    let wdata = random_bytes(8 << 20, 7);
    let mut w = std::fs::File::create(&written).unwrap();
    w.write_all(&wdata).unwrap();
    assert_eq!(cache_stat_nofork(&m, "dirty_bytes"), 8 << 20);
    // The size of the cache directory all along the reads (every 10 ms),
    // and exactly after each file.
    let sampler = Sampler::start(&m.cache_dir);
    let mut max_at_rest = 0;
    for i in 0..4u64 {
        let got = std::fs::read(m.path(&format!(".{}/{dir}/f{i}", cell.cell()))).unwrap();
        assert!(got == random_bytes(24 << 20, 100 + i), "f{i} differs");
        max_at_rest = max_at_rest.max(dir_size(&m.cache_dir));
    }
    let (max_disk, samples) = sampler.finish();
    assert!(samples >= 10, "only {samples} samples of the cache size");
    let bytes = cache_stat_nofork(&m, "bytes");
    assert!(bytes <= 32 << 20, "cache holds {bytes} bytes");
    let disk = dir_size(&m.cache_dir);
    eprintln!(
        "cache directory: {disk} bytes now, at most {max_at_rest} after a file, \
         at most {max_disk} in {samples} samples during the reads"
    );
    assert!(
        max_at_rest <= 32 << 20,
        "cache dir held {max_at_rest} bytes after a read, above its 32 MiB limit"
    );
    // During the reads, one chunk of slack for the sampler: a walk of a
    // directory that changes under it can count an evicted chunk and the
    // chunk written in its place both (the cache itself evicts before it
    // writes).
    assert!(
        max_disk <= (32 << 20) + (1 << 20),
        "cache dir reached {max_disk} bytes during the reads, over a chunk above its 32 MiB limit"
    );
    let reported = cache_stat_nofork(&m, "disk_bytes");
    assert!(reported <= 32 << 20, "cache stats says {reported} bytes");
    assert_eq!(
        cache_stat_nofork(&m, "dirty_bytes"),
        8 << 20,
        "unstored data was evicted"
    );
    // Evicted data is fetched again, correctly; the writer's data too.
    let got = std::fs::read(m.path(&format!(".{}/{dir}/f0", cell.cell()))).unwrap();
    assert!(got == random_bytes(24 << 20, 100));
    let back = std::fs::read(&written).unwrap();
    assert_eq!(back.len(), wdata.len(), "length of the file being written");
    let first_bad = back.iter().zip(&wdata).position(|(a, b)| a != b);
    assert_eq!(first_bad, None, "the file being written reads wrong");
    drop(w);
    assert_eq!(cache_stat(&m, "dirty_bytes"), "0");
    let stored = cell.third_party(&["cat", &cell.rw(&wname)], None).stdout;
    assert!(stored == wdata, "the stored file differs");
}

/// flush makes the next read fetch again; setcachesize is root's; the
/// config file sets the limit.
#[test]
fn flush_setcachesize_and_config_file() {
    let cell = Cell::from_env();
    let conf = scratch("conf").join("afsd-rs.conf");
    std::fs::write(&conf, "# test\ncache-size = 16M\ncache-entries = 1000\n").unwrap();
    let m = Mount::new(&cell, &["--config", conf.to_str().unwrap()]);
    assert_eq!(cache_stat(&m, "max_bytes"), (16u64 << 20).to_string());
    assert_eq!(cache_stat(&m, "max_entries"), "1000");
    let p = m.path(&format!(".{}/random.bin", cell.cell()));
    std::fs::read(&p).unwrap();
    let fetched = m.stat("RXAFS_FetchData64");
    std::fs::read(&p).unwrap();
    assert_eq!(m.stat("RXAFS_FetchData64"), fetched);
    let out = cache_cmd(&m, &["flush", p.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(&p).unwrap();
    assert!(
        m.stat("RXAFS_FetchData64") > fetched,
        "flush did not drop the data"
    );
    let out = cache_cmd(&m, &["flushvolume", p.to_str().unwrap()]);
    assert!(out.status.success());

    let out = Command::new("setpriv")
        .args(["--reuid=61001", "--regid=61001", "--clear-groups"])
        .arg(afsd_bin())
        .args(["setcachesize", "8M"])
        .env("AFSD_CONTROL", m.control_socket())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("only root"));
    let out = cache_cmd(&m, &["setcachesize", "8M"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(cache_stat(&m, "max_bytes"), (8u64 << 20).to_string());
    let out = cache_cmd(&m, &["setcachesize", "12Q"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("suffix"));
}
