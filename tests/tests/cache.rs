//! The bounded persistent cache against the real cell: its size limit, the
//! cache commands, flush.

use std::path::Path;
use std::process::Command;

use afsd_tests::{afsd_bin, random_bytes, scratch, Cell, Mount};

fn dir_size(p: &Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(p).unwrap() {
        let e = e.unwrap();
        let md = e.metadata().unwrap();
        total += if md.is_dir() {
            dir_size(&e.path())
        } else {
            md.len()
        };
    }
    total
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

/// Reading three times the cache size keeps the cache within its limit, and
/// every byte read is right.
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
    for i in 0..4u64 {
        let got = std::fs::read(m.path(&format!(".{}/{dir}/f{i}", cell.cell()))).unwrap();
        assert!(got == random_bytes(24 << 20, 100 + i), "f{i} differs");
    }
    let bytes: u64 = cache_stat(&m, "bytes").parse().unwrap();
    assert!(bytes <= 32 << 20, "cache holds {bytes} bytes");
    // On disk: the store's own overhead and compaction slack on top.
    let disk = dir_size(&m.cache_dir);
    assert!(
        disk <= (32 << 20) * 2 + (16 << 20),
        "cache dir is {disk} bytes"
    );
    // Evicted data is fetched again, correctly.
    let got = std::fs::read(m.path(&format!(".{}/{dir}/f0", cell.cell()))).unwrap();
    assert!(got == random_bytes(24 << 20, 100));
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
