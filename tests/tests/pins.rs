//! Pins against the real cell: `afsd-rs pin -r` reports the tree's exact
//! bytes, holds it through a flood of other reads at three times the cache
//! size, and serves it whole with the network cut and no miss; a pin past
//! the reserve fails with ENOSPC and pins nothing; a third party's change
//! to a pinned file is fetched without anyone reading it, and served
//! offline afterwards.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use afsd_tests::{random_bytes, wait_until, Cell, Mount};

/// A cut is noticed after 3 s; the cache holds 24 MiB (pin reserve: half).
const OPTS: &[&str] = &["--dead-time", "3", "--cache-size", "24M"];
const CACHE: u64 = 24 << 20;

/// Makes `shared/TAG-PID` on the server with the third-party tool, with
/// files of known sizes in three levels; returns (rel, [(rel path, data)]).
fn server_tree(cell: &Cell, tag: &str, files: usize) -> (String, Vec<(String, Vec<u8>)>) {
    let rel = format!("shared/{tag}-{}", std::process::id());
    for d in ["", "/a", "/a/b", "/c"] {
        cell.third_party(&["mkdir", &cell.rw(&format!("{rel}{d}"))], None);
    }
    let mut out = Vec::new();
    for i in 0..files {
        let dir = ["", "/a", "/a/b", "/c"][i % 4];
        let path = format!("{rel}{dir}/f{i}.dat");
        let data = random_bytes(7_000 + (i * 37_813) % 300_000, i as u64);
        cell.put(&cell.rw(&path), &data);
        out.push((path, data));
    }
    (rel, out)
}

fn pins_json(m: &Mount) -> Vec<serde_json::Value> {
    let text = m.afsd_ok(&["pins", "--json"]);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("pins --json: {e}: {text}"))
}

fn num(v: &serde_json::Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or_else(|| panic!("no {k} in {v}"))
}

fn read_all(m: &Mount, cell: &Cell, files: &[(String, Vec<u8>)]) {
    for (rel, data) in files {
        let p = m.path(&format!(".{}/{rel}", cell.cell()));
        let got = fs::read(&p)
            .unwrap_or_else(|e| panic!("reading {} offline: {e}\n{}", p.display(), m.log_tail(30)));
        assert!(got == *data, "{} differs offline", p.display());
    }
}

fn ls_lr(dir: &Path) {
    let out = Command::new("ls").arg("-lR").arg(dir).output().unwrap();
    assert!(
        out.status.success(),
        "ls -lR {} offline: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_pinned_tree_outlives_a_flood_and_a_cut_and_the_reserve_holds() {
    let cell = Cell::from_env();
    let m = Mount::new(&cell, OPTS);
    let (rel, files) = server_tree(&cell, "pins", 40);
    let total: u64 = files.iter().map(|(_, d)| d.len() as u64).sum();
    let root = m.path(&format!(".{}/{rel}", cell.cell()));
    let out = m.afsd_ok(&["pin", "-r", root.to_str().unwrap()]);
    assert!(
        out.contains(&format!("({total} bytes)")) && out.contains("40 files, 4 directories"),
        "pin -r must report the tree's exact size {total}: {out}"
    );
    let pins = pins_json(&m);
    assert_eq!(pins.len(), 1, "{pins:?}");
    assert_eq!(num(&pins[0], "bytes"), total);
    assert_eq!(num(&pins[0], "cached"), total);

    // Past the reserve (12 MiB, less what is pinned): ENOSPC, the numbers,
    // and nothing pinned.
    let flood_rel = format!("{rel}-flood");
    cell.third_party(&["mkdir", &cell.rw(&flood_rel)], None);
    let flood_files = 9;
    for i in 0..flood_files {
        cell.put(
            &cell.rw(&format!("{flood_rel}/big{i}")),
            &random_bytes(8 << 20, 1000 + i as u64),
        );
    }
    let flood = m.path(&format!(".{}/{flood_rel}", cell.cell()));
    let refused = m.afsd(&["pin", "-r", flood.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success(),
        "a pin past the reserve must fail"
    );
    assert!(
        err.contains("ENOSPC") && err.contains("72.0 MiB") && err.contains("left"),
        "the refusal names ENOSPC and the numbers: {err}"
    );
    assert_eq!(pins_json(&m).len(), 1, "the refused pin pinned nothing");

    // Three times the cache in other reads.
    for i in 0..flood_files {
        let n = fs::read(flood.join(format!("big{i}"))).unwrap().len();
        assert_eq!(n, 8 << 20);
    }
    let pins = pins_json(&m);
    assert_eq!(num(&pins[0], "cached"), total, "nothing pinned was evicted");
    assert_eq!(num(&pins[0], "missing"), 0);
    let bytes = m.stat("store.bytes");
    assert!(bytes <= CACHE, "the cache stays bounded: {bytes}");

    // The network goes; the volume is offline. Everything pinned lists and
    // reads, with no miss.
    let cut = cell.cut();
    m.offline(&[&root]);
    let (chunks, dirs) = (m.stat("cache.chunk_misses"), m.stat("cache.dir_misses"));
    ls_lr(&root);
    read_all(&m, &cell, &files);
    assert_eq!(m.stat("cache.chunk_misses"), chunks, "no data miss offline");
    assert_eq!(m.stat("cache.dir_misses"), dirs, "no listing miss offline");
    assert_eq!(m.stat("offline.misses"), 0, "the miss policy saw no miss");
    let check = m.afsd_ok(&["pin", "--check", root.to_str().unwrap()]);
    assert!(check.contains("would miss nothing"), "{check}");
    cut.restore();
    m.online(&[&root]);
    m.afsd_ok(&["unpin", "-r", root.to_str().unwrap()]);
    assert!(pins_json(&m).is_empty());
    m.stop();
}

#[test]
fn a_third_party_change_to_a_pinned_file_is_fetched_unread() {
    let cell = Cell::from_env();
    let m = Mount::new(&cell, OPTS);
    let (rel, mut files) = server_tree(&cell, "pins-cb", 6);
    let root = m.path(&format!(".{}/{rel}", cell.cell()));
    m.afsd_ok(&["pin", "-r", "--future", root.to_str().unwrap()]);
    let misses = m.stat("cache.chunk_misses");
    // Another client changes a pinned file and adds one to the tree.
    let changed = random_bytes(123_457, 99);
    cell.put(&cell.rw(&files[1].0), &changed);
    files[1].1 = changed;
    let late = (format!("{rel}/a/late.dat"), random_bytes(54_321, 98));
    cell.put(&cell.rw(&late.0), &late.1);
    files.push(late);
    let total: u64 = files.iter().map(|(_, d)| d.len() as u64).sum();
    let fetched = wait_until(Duration::from_secs(60), || {
        let p = pins_json(&m);
        num(&p[0], "bytes") == total && num(&p[0], "missing") == 0 && num(&p[0], "files") == 7
    });
    assert!(
        fetched,
        "the new version and the new file are fetched in the background: {:?}\n{}",
        pins_json(&m),
        m.log_tail(30)
    );
    assert!(
        m.stat("cache.chunk_misses") > misses,
        "fetched by the daemon, not by a reader"
    );
    let cut = cell.cut();
    m.offline(&[&root]);
    let before = m.stat("cache.chunk_misses");
    read_all(&m, &cell, &files);
    assert_eq!(m.stat("cache.chunk_misses"), before, "no miss offline");
    cut.restore();
    m.online(&[&root]);
    m.stop();
}
