//! Pins over the in-memory fileserver: a pinned tree survives a flood of
//! other reads past the cache size and is read whole offline with no miss;
//! a pin past the reserve pins nothing; a third party's change to a pinned
//! file is fetched without being read; `--future` takes new files.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use afs_proto::types::Fid;
use cache::{MemoryStore, Store};
use client::memserver::{rights, MemCell, ANYUSER};
use client::{ClientConfig, Stats, Targets};
use common::{errno, rt, Client, CELL};

const CHUNK: u64 = 4096;
const CACHE: u64 = 256 * 1024;

/// A client whose cache holds 256 KiB (pin reserve: half of it).
fn small_client(cell: &Arc<MemCell>) -> (Client, Arc<Stats>) {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let mut config = ClientConfig::new("/nonexistent".into(), "/nonexistent".into());
    config.chunk_size = CHUNK;
    config.readahead_chunks = 2;
    config.cache_bytes = CACHE;
    let stats = Arc::new(Stats::default());
    (
        common::client_with(cell, store, config, stats.clone()),
        stats,
    )
}

fn data(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| seed.wrapping_add((i % 251) as u8))
        .collect()
}

async fn fid_of(c: &Client, path: &str) -> Fid {
    let ino = c.resolve(0, path).await.unwrap();
    let text = c.afs.getxattr(0, ino, "afs.fid").await.unwrap().unwrap();
    let text = String::from_utf8(text).unwrap();
    let n: Vec<u32> = text
        .split(':')
        .map(|p| u32::from_str_radix(p, 16).unwrap())
        .collect();
    Fid::new(n[0], n[1], n[2])
}

async fn pin(c: &Client, path: &str, future: bool) -> client::Result<client::PinInfo> {
    let fid = fid_of(c, path).await;
    c.afs.pin(0, &req(fid, path, future), &|_| {}).await
}

fn req(fid: Fid, path: &str, future: bool) -> client::PinRequest {
    client::PinRequest {
        cell: CELL.into(),
        fid: (fid.volume, fid.vnode, fid.unique),
        path: format!("/afs/{CELL}/{path}"),
        recursive: true,
        future,
    }
}

/// A tree of 3 directories, 12 files, 72 KiB in all.
fn make_tree(cell: &MemCell) -> (Vec<(String, Vec<u8>)>, u64) {
    let mut files = Vec::new();
    cell.third_party(|tp| {
        tp.set_acl("", &[(ANYUSER, rights::ALL)], &[]);
        tp.mkdir("work");
        for d in ["a", "b"] {
            tp.mkdir(&format!("work/{d}"));
        }
        for i in 0..12u8 {
            let dir = ["work", "work/a", "work/b"][i as usize % 3];
            let path = format!("{dir}/f{i}");
            let body = data(i, 2048 + 4096 * (i as usize % 3));
            tp.write(&path, &body);
            files.push((path, body));
        }
        for j in 0..40u8 {
            tp.write(&format!("flood{j}"), &data(100 + j, 24 * 1024));
        }
    });
    let total = files.iter().map(|(_, b)| b.len() as u64).sum();
    (files, total)
}

#[test]
fn a_pinned_tree_outlives_a_flood_and_reads_offline_without_a_miss() {
    rt().block_on(async {
        let cell = MemCell::new(CELL);
        let (files, total) = make_tree(&cell);
        let (c, stats) = small_client(&cell);
        let seen = std::sync::Mutex::new(Vec::new());
        let fid = fid_of(&c, "work").await;
        // Before the pin, offline work would miss every file's data and
        // the subdirectories' listings.
        let misses = c.afs.pin_check(0, CELL, fid, "/w").unwrap();
        assert!(
            misses
                .iter()
                .any(|m| m.path == "/w/a" && m.why.contains("status") || m.why.contains("listing")),
            "{misses:?}"
        );
        assert!(!misses.is_empty());
        let info = c
            .afs
            .pin(0, &req(fid, "work", false), &|p| {
                seen.lock().unwrap().push(p)
            })
            .await
            .unwrap();
        assert_eq!(info.bytes, total, "the walk's total is exact");
        assert_eq!(info.files, 12);
        assert_eq!(info.dirs, 3);
        assert_eq!(info.cached, total);
        let seen = seen.into_inner().unwrap();
        assert_eq!(seen.last().unwrap().files_done, 12);
        assert_eq!(seen.last().unwrap().bytes_done, total);
        // Three times the cache in other files.
        for j in 0..40u8 {
            let body = c.read_file(0, &format!("flood{j}")).await.unwrap();
            assert_eq!(body.len(), 24 * 1024);
        }
        let usage = c.afs.cache_stats().usage;
        assert!(usage.bytes <= CACHE, "the cache stays bounded: {usage:?}");
        assert_eq!(usage.pinned_bytes, total);
        assert_eq!(c.afs.pins(0)[0].cached, total, "nothing pinned was evicted");
        // Offline: every pinned file reads, and nothing misses.
        c.afs.go_offline(&Targets::All).unwrap();
        let misses = stats.chunk_misses.load(Ordering::Relaxed);
        for (path, body) in &files {
            assert_eq!(&c.read_file(0, path).await.unwrap(), body, "{path}");
        }
        assert_eq!(stats.chunk_misses.load(Ordering::Relaxed), misses);
        assert!(c.afs.pin_check(0, CELL, fid, "/w").unwrap().is_empty());
        // And what was not pinned (the flood's first files) is gone.
        assert_eq!(errno(c.afs.flush_fid(CELL, fid)).unwrap_err(), libc::EBUSY);
    });
}

#[test]
fn a_pin_past_the_reserve_pins_nothing() {
    rt().block_on(async {
        let cell = MemCell::new(CELL);
        make_tree(&cell);
        cell.third_party(|tp| {
            tp.mkdir("big");
            tp.write("big/one", &data(1, 100 * 1024));
            tp.write("big/two", &data(2, 100 * 1024));
        });
        let (c, _) = small_client(&cell);
        let err = pin(&c, "big", false).await.unwrap_err();
        assert_eq!(err.errno(), libc::ENOSPC);
        let msg = err.to_string();
        assert!(
            msg.contains("200.0 KiB") && msg.contains("128.0 KiB"),
            "{msg}"
        );
        assert!(c.afs.pins(0).is_empty());
        assert_eq!(c.afs.cache_stats().usage.pinned_bytes, 0);
        // The events say so, to the user who asked.
        let ev = c.afs.events().recent(0);
        assert!(ev.iter().any(|e| e.kind.name() == "pin-over-reserve"));
        // A pin that fits goes in; then unpin frees it.
        pin(&c, "work", false).await.unwrap();
        let fid = fid_of(&c, "work").await;
        let gone = c
            .afs
            .unpin(0, CELL, Some(fid), "/afs/test.mem/work", false)
            .unwrap();
        assert_eq!(gone.len(), 1);
        assert_eq!(c.afs.cache_stats().usage.pinned_bytes, 0);
    });
}

#[test]
fn a_third_party_change_to_a_pinned_file_is_fetched_unread() {
    rt().block_on(async {
        let cell = MemCell::new(CELL);
        make_tree(&cell);
        let (c, stats) = small_client(&cell);
        pin(&c, "work", true).await.unwrap();
        let new = data(77, 9000);
        cell.third_party(|tp| {
            tp.write("work/f0", &new);
            tp.write("work/a/late", b"appeared later");
        });
        // The refresher fetches both without anyone reading.
        let mut fetched = false;
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let p = &c.afs.pins(0)[0];
            if p.missing == 0 && p.files == 13 {
                fetched = true;
                break;
            }
        }
        assert!(fetched, "{:?}", c.afs.pins(0));
        c.afs.go_offline(&Targets::All).unwrap();
        let misses = stats.chunk_misses.load(Ordering::Relaxed);
        assert_eq!(c.read_file(0, "work/f0").await.unwrap(), new);
        assert_eq!(
            c.read_file(0, "work/a/late").await.unwrap(),
            b"appeared later"
        );
        assert_eq!(stats.chunk_misses.load(Ordering::Relaxed), misses);
    });
}

#[test]
fn pins_survive_a_restart() {
    rt().block_on(async {
        let cell = MemCell::new(CELL);
        let (_, total) = make_tree(&cell);
        let dir = tempfile::tempdir().unwrap();
        let start = || {
            let store: Arc<dyn Store> = Arc::new(cache::RocksStore::open(dir.path()).unwrap());
            let mut config = ClientConfig::new("/nonexistent".into(), "/nonexistent".into());
            config.chunk_size = CHUNK;
            config.cache_bytes = 4 * CACHE;
            common::client_with(&cell, store, config, Arc::new(Stats::default()))
        };
        let c = start();
        pin(&c, "work", false).await.unwrap();
        drop(c);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let c = start();
        let pins = c.afs.pins(0);
        assert_eq!(pins.len(), 1);
        assert_eq!((pins[0].bytes, pins[0].cached), (total, total));
        assert_eq!(c.afs.cache_stats().usage.pinned_bytes, total);
        // Pinned data survives a smaller cache too.
        c.afs.set_cache_size(total + 64 * 1024).unwrap();
        assert_eq!(c.afs.pins(0)[0].cached, total);
        assert_eq!(
            errno(c.afs.set_cache_size(total / 2)).unwrap_err(),
            libc::ENOSPC,
            "a cache smaller than what pins hold is refused"
        );
    });
}
