//! Tests of the bounded cache: accounting, eviction, flushes, and the
//! equivalence of the two stores.

use std::collections::BTreeMap;

use proptest::prelude::*;

use crate::{Batch, FidKey, Limits, MemoryStore, Op, RocksStore, StatusRecord, Store, Usage};

fn fid(volume: u32, vnode: u32) -> FidKey {
    FidKey::new("test.lab", volume, vnode, 1)
}

fn put(store: &dyn Store, f: &FidKey, dv: u64, index: u64, len: usize) {
    let mut b = Batch::clean();
    b.push(Op::PutChunk {
        fid: f.clone(),
        data_version: dv,
        index,
        data: vec![index as u8; len],
    });
    store.apply(b).unwrap();
}

fn put_dirty(store: &dyn Store, f: &FidKey, dv: u64, index: u64, len: usize) {
    let mut b = Batch::new();
    b.push(Op::PutDirtyChunk {
        fid: f.clone(),
        data_version: dv,
        index,
        data: vec![0xd0 | index as u8; len],
    });
    store.apply(b).unwrap();
}

fn mark_clean(store: &dyn Store, f: &FidKey, dv: u64, index: u64) {
    let mut b = Batch::new();
    b.push(Op::MarkClean {
        fid: f.clone(),
        data_version: dv,
        index,
    });
    store.apply(b).unwrap();
}

fn has(store: &dyn Store, f: &FidKey, dv: u64, index: u64) -> bool {
    store.get_chunk(f, dv, index).unwrap().is_some()
}

fn status() -> StatusRecord {
    StatusRecord {
        file_type: 1,
        length: 10,
        data_version: 1,
        mode: 0o644,
        owner: 1,
        group: 0,
        link_count: 1,
        author: 1,
        client_modtime: 5,
        server_modtime: 6,
        parent_vnode: 1,
        parent_unique: 1,
        anonymous_access: 0,
        callback_expires: 0,
        fetched_at: 0,
    }
}

fn usage(bytes: u64, entries: u64, dirty_bytes: u64, dirty_entries: u64) -> Usage {
    Usage {
        bytes,
        entries,
        dirty_bytes,
        dirty_entries,
    }
}

/// Runs one test body against a MemoryStore and a RocksStore.
fn on_both(body: impl Fn(&dyn Store)) {
    body(&MemoryStore::new());
    let tmp = tempfile::tempdir().unwrap();
    body(&RocksStore::open(tmp.path()).unwrap());
}

fn accounting_body(store: &dyn Store) {
    let a = fid(7, 1);
    let b = fid(7, 2);
    assert_eq!(store.usage(), Usage::default());
    put(store, &a, 1, 0, 100);
    put(store, &a, 1, 1, 50);
    put_dirty(store, &b, 3, 0, 10);
    assert_eq!(store.usage(), usage(160, 3, 10, 1));
    // Overwriting a chunk replaces its size, it does not add an entry.
    put(store, &a, 1, 1, 70);
    assert_eq!(store.usage(), usage(180, 3, 10, 1));
    // A clean put over a dirty chunk makes it clean.
    put(store, &b, 3, 0, 20);
    assert_eq!(store.usage(), usage(190, 3, 0, 0));
    put_dirty(store, &b, 3, 0, 10);
    assert_eq!(store.usage(), usage(180, 3, 10, 1));
    let mut batch = Batch::clean();
    batch.push(Op::DeleteChunks(a.clone()));
    store.apply(batch).unwrap();
    assert_eq!(store.usage(), usage(10, 1, 10, 1));
    // MarkClean of a missing chunk changes nothing.
    mark_clean(store, &a, 1, 0);
    assert_eq!(store.usage(), usage(10, 1, 10, 1));
    mark_clean(store, &b, 3, 0);
    assert_eq!(store.usage(), usage(10, 1, 0, 0));
}

#[test]
fn accounting_put_delete() {
    on_both(accounting_body);
}

#[test]
fn warm_restart_keeps_everything_and_totals() {
    let tmp = tempfile::tempdir().unwrap();
    let a = fid(7, 1);
    let (before, lru_victim) = {
        let store = RocksStore::open(tmp.path()).unwrap();
        for i in 0..4 {
            put(&store, &a, 1, i, 1000 + i as usize);
        }
        put_dirty(&store, &a, 2, 0, 5);
        let mut b = Batch::clean();
        b.push(Op::DeleteChunks(fid(7, 9)));
        store.apply(b).unwrap();
        // Chunk 0 is the oldest put; touching it makes chunk 1 the LRU one.
        store.touch(&a, 1, 0);
        (store.usage(), (1u64, 1u64))
    };
    assert_eq!(before, usage(4011, 5, 5, 1));
    let store = RocksStore::open(tmp.path()).unwrap();
    assert_eq!(store.usage(), before, "totals survive a restart");
    store.check_invariants();
    for i in 0..4 {
        assert_eq!(
            store.get_chunk(&a, 1, i).unwrap().map(|d| d.len()),
            Some(1000 + i as usize)
        );
    }
    assert!(has(&store, &a, 2, 0));
    // The touch was persisted at close: the LRU order survives too.
    store.set_limits(Limits {
        max_bytes: 0,
        max_entries: 4,
        ..Limits::default()
    });
    let report = store.evict().unwrap();
    assert_eq!((report.chunks, report.bytes), (1, 1001));
    assert!(!report.over_limit);
    assert!(!has(&store, &a, lru_victim.0, lru_victim.1));
    assert!(has(&store, &a, 1, 0));
    drop(store);
    let store = RocksStore::open(tmp.path()).unwrap();
    assert_eq!(store.usage(), usage(3010, 4, 5, 1), "eviction persisted");
}

fn lru_body(store: &dyn Store) {
    let f = fid(1, 1);
    for i in 0..6 {
        put(store, &f, 1, i, 100);
    }
    // Touch 0, 1 and 2: 3, 4, 5 are now the least recently used.
    store.touch(&f, 1, 0);
    store.touch(&f, 1, 1);
    store.touch(&f, 1, 2);
    // Touching an absent chunk is harmless.
    store.touch(&f, 9, 9);
    store.set_limits(Limits {
        max_bytes: 400,
        max_entries: 0,
        ..Limits::default()
    });
    // Not yet evicted: limits act at the next growth or evict().
    assert_eq!(store.usage().bytes, 600);
    let r = store.evict().unwrap();
    assert_eq!((r.chunks, r.bytes, r.over_limit), (2, 200, false));
    assert!(!has(store, &f, 1, 3) && !has(store, &f, 1, 4));
    assert!(has(store, &f, 1, 5));
    // A new put pushes usage over the limit: apply evicts by itself, the
    // least recently used first (5, then 0).
    put(store, &f, 1, 6, 100);
    assert_eq!(store.usage().bytes, 400);
    assert!(!has(store, &f, 1, 5));
    store.touch(&f, 1, 0);
    put(store, &f, 1, 7, 200);
    assert_eq!(store.usage(), usage(400, 3, 0, 0));
    for (i, kept) in [(0, true), (1, false), (2, false), (6, true), (7, true)] {
        assert_eq!(has(store, &f, 1, i), kept, "chunk {i}");
    }
    // Nothing to do when within the limits.
    assert_eq!(store.evict().unwrap(), crate::EvictReport::default());
}

#[test]
fn lru_order_touched_survive() {
    on_both(lru_body);
}

fn dirty_body(store: &dyn Store) {
    let f = fid(1, 1);
    store.set_limits(Limits {
        max_bytes: 250,
        max_entries: 0,
        ..Limits::default()
    });
    put_dirty(store, &f, 1, 0, 100);
    put_dirty(store, &f, 1, 1, 100);
    put_dirty(store, &f, 1, 2, 100);
    // Above the limit, but everything is dirty.
    assert_eq!(store.usage(), usage(300, 3, 300, 3));
    let r = store.evict().unwrap();
    assert_eq!((r.chunks, r.bytes, r.over_limit), (0, 0, true));
    // A clean chunk goes at once, even though it is the newest.
    put(store, &f, 2, 0, 10);
    assert!(!has(store, &f, 2, 0));
    assert_eq!(store.usage(), usage(300, 3, 300, 3));
    // Once stored to the server, the chunk can go.
    mark_clean(store, &f, 1, 1);
    assert_eq!(store.usage(), usage(300, 3, 200, 2));
    let r = store.evict().unwrap();
    assert_eq!((r.chunks, r.bytes, r.over_limit), (1, 100, false));
    assert!(has(store, &f, 1, 0) && !has(store, &f, 1, 1) && has(store, &f, 1, 2));
    assert_eq!(store.usage(), usage(200, 2, 200, 2));
}

#[test]
fn dirty_chunks_never_evicted_until_marked_clean() {
    on_both(dirty_body);
}

fn entry_limit_body(store: &dyn Store) {
    store.set_limits(Limits {
        max_bytes: 0,
        max_entries: 3,
        ..Limits::default()
    });
    for v in 0..10 {
        put(store, &fid(1, v), 1, 0, 1);
        assert!(store.usage().entries <= 3);
    }
    assert_eq!(store.usage(), usage(3, 3, 0, 0));
    for v in 0..7 {
        assert!(!has(store, &fid(1, v), 1, 0));
    }
    for v in 7..10 {
        assert!(has(store, &fid(1, v), 1, 0));
    }
    // Both limits at once: whichever is tighter rules.
    store.set_limits(Limits {
        max_bytes: 1,
        max_entries: 3,
        ..Limits::default()
    });
    assert_eq!(store.evict().unwrap().chunks, 2);
    assert_eq!(store.usage(), usage(1, 1, 0, 0));
}

#[test]
fn entry_limit() {
    on_both(entry_limit_body);
}

fn flush_body(store: &dyn Store) {
    let a = fid(5, 1);
    let b = fid(5, 2);
    let other_vol = fid(6, 1);
    let other_cell = FidKey::new("test.la", 5, 3, 1);
    let dir = crate::DirRecord {
        data_version: 1,
        entries: vec![],
    };
    let mut batch = Batch::new();
    for f in [&a, &b, &other_vol, &other_cell] {
        batch.push(Op::PutStatus(f.clone(), status()));
        batch.push(Op::PutDir(f.clone(), dir.clone()));
    }
    store.apply(batch).unwrap();
    for f in [&a, &b, &other_vol, &other_cell] {
        put(store, f, 1, 0, 10);
        put(store, f, 1, 1, 10);
    }
    put_dirty(store, &a, 2, 0, 7);
    put_dirty(store, &b, 2, 0, 7);

    store.flush_fid(&a).unwrap();
    assert!(store.get_status(&a).unwrap().is_none());
    assert!(store.get_dir(&a).unwrap().is_none());
    assert!(!has(store, &a, 1, 0) && !has(store, &a, 1, 1));
    assert!(has(store, &a, 2, 0), "dirty data survives a flush");
    assert!(store.get_status(&b).unwrap().is_some());
    assert!(has(store, &b, 1, 0));
    assert_eq!(store.usage(), usage(74, 8, 14, 2));

    store.flush_volume("test.lab", 5).unwrap();
    assert!(store.get_status(&b).unwrap().is_none());
    assert!(store.get_dir(&b).unwrap().is_none());
    assert!(!has(store, &b, 1, 0) && !has(store, &b, 1, 1));
    assert!(has(store, &a, 2, 0) && has(store, &b, 2, 0));
    // Another volume and a cell whose name is a prefix are untouched.
    for f in [&other_vol, &other_cell] {
        assert!(store.get_status(f).unwrap().is_some());
        assert!(store.get_dir(f).unwrap().is_some());
        assert!(has(store, f, 1, 0) && has(store, f, 1, 1));
    }
    assert_eq!(store.usage(), usage(54, 6, 14, 2));
}

#[test]
fn flush_fid_and_volume_keep_dirty_data() {
    on_both(flush_body);
}

/// The cache directory never outgrows its disk bound: a 32 MiB cache fed
/// 100 MiB of 1 MiB clean chunks, measured in allocated blocks after every
/// put, records and all.
#[test]
fn whole_cache_directory_stays_within_the_disk_bound() {
    const MIB: u64 = 1 << 20;
    let tmp = tempfile::tempdir().unwrap();
    let store = RocksStore::open(tmp.path()).unwrap();
    store.set_limits(Limits {
        disk_bytes: 32 * MIB,
        ..Limits::default()
    });
    let mut max_disk = 0;
    for i in 0..100u32 {
        let mut b = Batch::clean();
        b.push(Op::PutStatus(fid(1 + i % 3, i), status()));
        b.push(Op::PutChunk {
            fid: fid(1 + i % 3, i),
            data_version: 1,
            index: 0,
            data: vec![i as u8; MIB as usize],
        });
        store.apply(b).unwrap();
        let disk = store.disk_size();
        assert!(
            disk <= 32 * MIB,
            "cache directory at {disk} bytes after put {i}"
        );
        assert!(store.disk_usage() <= 32 * MIB);
        max_disk = max_disk.max(disk);
    }
    let kept = store.usage().entries;
    eprintln!(
        "usage {:?}; directory at most {:.1} MiB",
        store.usage(),
        max_disk as f64 / MIB as f64
    );
    // The records take some room; the chunks take the rest.
    assert!((24..32).contains(&kept), "{kept} chunks kept");
    drop(store);
    let store = RocksStore::open(tmp.path()).unwrap();
    assert_eq!(store.usage().entries, kept);
    let live = (0..100u32)
        .filter(|&i| store.get_chunk(&fid(1 + i % 3, i), 1, 0).unwrap().is_some())
        .count() as u64;
    assert_eq!(live, kept, "the live chunks survive the restart");
    assert!(store.disk_size() <= 32 * MIB);
}

/// A crash between a chunk file and its record leaves either a file without
/// a record or a record without a file; the next open drops both.
#[test]
fn open_reconciles_files_and_records() {
    let tmp = tempfile::tempdir().unwrap();
    let f = fid(3, 3);
    {
        let store = RocksStore::open(tmp.path()).unwrap();
        put(&store, &f, 1, 0, 100);
        put(&store, &f, 1, 1, 100);
        put_dirty(&store, &f, crate::LOCAL_DATA_VERSION, 0, 50);
    }
    let chunks = tmp.path().join("chunks");
    let mut names: Vec<_> = walkdir(&chunks);
    names.sort();
    assert_eq!(names.len(), 3);
    // Lose one file; add a stranger that looks like a chunk of fid 3.3.
    std::fs::remove_file(&names[0]).unwrap();
    let stranger = names[1].with_file_name(format!(
        "{}00",
        names[1].file_name().unwrap().to_str().unwrap()
    ));
    std::fs::write(&stranger, b"junk").unwrap();
    let store = RocksStore::open(tmp.path()).unwrap();
    store.check_invariants();
    assert_eq!(store.usage().entries, 2);
    assert!(!stranger.exists(), "a file without a record is removed");
    assert_eq!(walkdir(&chunks).len(), 2);
    // A clean chunk whose file lost its tail (power cut) is not served.
    drop(store);
    let left = walkdir(&chunks);
    for p in &left {
        let f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
        f.set_len(10).unwrap();
    }
    let store = RocksStore::open(tmp.path()).unwrap();
    store.check_invariants();
    // The dirty one (50 bytes) keeps its shorter file; the clean one goes.
    assert_eq!(store.usage().entries, 1);
    assert_eq!(store.usage().dirty_entries, 1);
}

fn walkdir(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.path().is_dir() {
            out.extend(walkdir(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

fn write_body(store: &dyn Store) {
    let f = fid(2, 2);
    let local = crate::LOCAL_DATA_VERSION;
    let w = |offset: u64, data: &[u8]| {
        let mut b = Batch::clean();
        b.push(Op::WriteChunk {
            fid: f.clone(),
            data_version: local,
            index: 0,
            offset,
            data: data.to_vec(),
        });
        store.apply(b).unwrap();
    };
    w(0, b"hello");
    w(8, b"world");
    assert_eq!(
        store.get_chunk(&f, local, 0).unwrap().unwrap(),
        b"hello\0\0\0world".to_vec()
    );
    assert_eq!(store.usage(), usage(13, 1, 13, 1));
    assert_eq!(store.dirty_chunks(&f), vec![(local, 0, 13)]);
    assert_eq!(
        store
            .get_chunk_range(&f, local, 0, 6, 100)
            .unwrap()
            .unwrap(),
        b"\0\0world".to_vec()
    );
    let mut b = Batch::clean();
    b.push(Op::TruncateChunk {
        fid: f.clone(),
        data_version: local,
        index: 0,
        length: 4,
    });
    store.apply(b).unwrap();
    assert_eq!(store.usage(), usage(4, 1, 4, 1));
    // Clean data of other versions goes with DeleteCleanChunks; dirty stays.
    put(store, &f, 3, 0, 10);
    let mut b = Batch::clean();
    b.push(Op::DeleteCleanChunks {
        fid: f.clone(),
        keep: Some(4),
    });
    store.apply(b).unwrap();
    assert!(!has(store, &f, 3, 0));
    assert_eq!(store.usage(), usage(4, 1, 4, 1));
    // Stored as version 7: the chunk moves there, clean.
    let mut b = Batch::clean();
    b.push(Op::MoveChunk {
        fid: f.clone(),
        index: 0,
        from_dv: local,
        to_dv: 7,
    });
    store.apply(b).unwrap();
    assert_eq!(
        store.get_chunk(&f, 7, 0).unwrap().unwrap(),
        b"hell".to_vec()
    );
    assert!(!has(store, &f, local, 0));
    assert_eq!(store.usage(), usage(4, 1, 0, 0));
    assert!(store.dirty_chunks(&f).is_empty());
    // Leftover unstored chunks of a crashed run go in one op; others stay.
    put_dirty(store, &f, local, 1, 3);
    put_dirty(store, &fid(9, 9), local, 0, 2);
    put_dirty(store, &f, 5, 0, 1);
    let mut b = Batch::clean();
    b.push(Op::DiscardDirty {
        data_version: local,
    });
    store.apply(b).unwrap();
    assert_eq!(store.usage(), usage(5, 2, 1, 1));
    assert_eq!(store.dirty_chunks(&f), vec![(5, 0, 1)]);
}

#[test]
fn writes_in_place_truncate_and_move() {
    on_both(write_body);
}

// ---- random op sequences on both stores ----

#[derive(Clone, Debug)]
enum TOp {
    Put {
        f: u32,
        dv: u64,
        i: u64,
        len: usize,
        dirty: bool,
    },
    MarkClean {
        f: u32,
        dv: u64,
        i: u64,
    },
    Delete(u32),
    DeleteClean(u32),
    Write {
        f: u32,
        dv: u64,
        i: u64,
        offset: u64,
        len: usize,
    },
    Truncate {
        f: u32,
        dv: u64,
        i: u64,
        len: u64,
    },
    Move {
        f: u32,
        i: u64,
        from: u64,
        to: u64,
    },
    Touch {
        f: u32,
        dv: u64,
        i: u64,
    },
    Limits(u64, u64),
    Evict,
    FlushFid(u32),
    FlushVolume(u32),
    Reopen,
}

const FIDS: u32 = 4;
const DVS: u64 = 2;
const IDXS: u64 = 3;

/// Fids 0 and 1 are in volume 10, 2 and 3 in volume 11.
fn tfid(f: u32) -> FidKey {
    fid(10 + f / 2, f)
}

fn top() -> impl Strategy<Value = TOp> {
    let f = 0..FIDS;
    prop_oneof![
        6 => (f.clone(), 0..DVS, 0..IDXS, 0usize..40, any::<bool>())
            .prop_map(|(f, dv, i, len, dirty)| TOp::Put { f, dv, i, len, dirty }),
        2 => (f.clone(), 0..DVS, 0..IDXS).prop_map(|(f, dv, i)| TOp::MarkClean { f, dv, i }),
        1 => f.clone().prop_map(TOp::Delete),
        1 => f.clone().prop_map(TOp::DeleteClean),
        3 => (f.clone(), 0..DVS, 0..IDXS, 0u64..30, 0usize..20)
            .prop_map(|(f, dv, i, offset, len)| TOp::Write { f, dv, i, offset, len }),
        1 => (f.clone(), 0..DVS, 0..IDXS, 0u64..30)
            .prop_map(|(f, dv, i, len)| TOp::Truncate { f, dv, i, len }),
        2 => (f.clone(), 0..IDXS, 0..DVS, 0..DVS)
            .prop_map(|(f, i, from, to)| TOp::Move { f, i, from, to }),
        3 => (f.clone(), 0..DVS, 0..IDXS).prop_map(|(f, dv, i)| TOp::Touch { f, dv, i }),
        1 => (0u64..150, 0u64..8).prop_map(|(b, e)| TOp::Limits(b, e)),
        1 => Just(TOp::Evict),
        1 => f.clone().prop_map(TOp::FlushFid),
        1 => (10u32..12).prop_map(TOp::FlushVolume),
        1 => Just(TOp::Reopen),
    ]
}

fn run(store: &dyn Store, op: &TOp) -> Option<crate::EvictReport> {
    match *op {
        TOp::Put {
            f,
            dv,
            i,
            len,
            dirty,
        } => {
            let data = vec![(f as u8) ^ (i as u8); len];
            let (fid, mut b) = (tfid(f), Batch::clean());
            if dirty {
                b = Batch::new();
                b.push(Op::PutDirtyChunk {
                    fid,
                    data_version: dv,
                    index: i,
                    data,
                });
            } else {
                b.push(Op::PutChunk {
                    fid,
                    data_version: dv,
                    index: i,
                    data,
                });
            }
            store.apply(b).unwrap();
        }
        TOp::MarkClean { f, dv, i } => mark_clean(store, &tfid(f), dv, i),
        TOp::Delete(f) => {
            let mut b = Batch::clean();
            b.push(Op::DeleteChunks(tfid(f)));
            store.apply(b).unwrap();
        }
        TOp::DeleteClean(f) => {
            let mut b = Batch::clean();
            b.push(Op::DeleteCleanChunks {
                fid: tfid(f),
                keep: Some(1),
            });
            store.apply(b).unwrap();
        }
        TOp::Write {
            f,
            dv,
            i,
            offset,
            len,
        } => {
            let mut b = Batch::clean();
            b.push(Op::WriteChunk {
                fid: tfid(f),
                data_version: dv,
                index: i,
                offset,
                data: vec![0x80 | offset as u8; len],
            });
            store.apply(b).unwrap();
        }
        TOp::Truncate { f, dv, i, len } => {
            let mut b = Batch::clean();
            b.push(Op::TruncateChunk {
                fid: tfid(f),
                data_version: dv,
                index: i,
                length: len,
            });
            store.apply(b).unwrap();
        }
        TOp::Move { f, i, from, to } => {
            let mut b = Batch::clean();
            b.push(Op::MoveChunk {
                fid: tfid(f),
                index: i,
                from_dv: from,
                to_dv: to,
            });
            store.apply(b).unwrap();
        }
        TOp::Touch { f, dv, i } => store.touch(&tfid(f), dv, i),
        TOp::Limits(b, e) => store.set_limits(Limits {
            max_bytes: b,
            max_entries: e,
            ..Limits::default()
        }),
        TOp::Evict => return Some(store.evict().unwrap()),
        TOp::FlushFid(f) => store.flush_fid(&tfid(f)).unwrap(),
        TOp::FlushVolume(v) => store.flush_volume("test.lab", v).unwrap(),
        TOp::Reopen => {}
    }
    None
}

/// Every chunk of the domain, as the store holds it.
fn contents(store: &dyn Store) -> BTreeMap<(u32, u64, u64), Vec<u8>> {
    let mut out = BTreeMap::new();
    for f in 0..FIDS {
        for dv in 0..DVS {
            for i in 0..IDXS {
                if let Some(d) = store.get_chunk(&tfid(f), dv, i).unwrap() {
                    out.insert((f, dv, i), d);
                }
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn random_ops_usage_matches_contents_on_both_stores(
        ops in proptest::collection::vec(top(), 1..40)
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let mem = MemoryStore::new();
        let mut rocks = Some(RocksStore::open(tmp.path()).unwrap());
        let mut limits = Limits::default();
        // Which chunks are dirty, by the ops alone (eviction never touches them).
        let mut dirty: BTreeMap<(u32, u64, u64), usize> = BTreeMap::new();
        for op in &ops {
            match *op {
                TOp::Put { f, dv, i, len, dirty: d } => {
                    if d { dirty.insert((f, dv, i), len); } else { dirty.remove(&(f, dv, i)); }
                }
                TOp::MarkClean { f, dv, i } => { dirty.remove(&(f, dv, i)); }
                TOp::Delete(f) => dirty.retain(|k, _| k.0 != f),
                TOp::Write { f, dv, i, offset, len } => {
                    let before = contents(&mem).get(&(f, dv, i)).map_or(0, |d| d.len());
                    dirty.insert((f, dv, i), before.max(offset as usize + len));
                }
                TOp::Truncate { f, dv, i, len } => { dirty.insert((f, dv, i), len as usize); }
                TOp::Move { f, i, from, to }
                    if from == to || contents(&mem).contains_key(&(f, from, i)) =>
                {
                    dirty.remove(&(f, from, i));
                    dirty.remove(&(f, to, i));
                }
                TOp::Limits(b, e) => limits = Limits { max_bytes: b, max_entries: e, ..Limits::default() },
                TOp::Reopen => {
                    drop(rocks.take());
                    rocks = Some(RocksStore::open(tmp.path()).unwrap());
                    rocks.as_ref().unwrap().set_limits(limits);
                }
                _ => {}
            }
            let r = rocks.as_ref().unwrap();
            let rm = run(&mem, op);
            let rr = run(r, op);
            prop_assert_eq!(rm, rr, "eviction reports differ after {:?}", op);
            mem.check_invariants();
            r.check_invariants();

            let held = contents(&mem);
            prop_assert_eq!(&held, &contents(r), "contents differ after {:?}", op);
            let sum = Usage {
                bytes: held.values().map(|d| d.len() as u64).sum(),
                entries: held.len() as u64,
                dirty_bytes: dirty.values().map(|&l| l as u64).sum(),
                dirty_entries: dirty.len() as u64,
            };
            prop_assert_eq!(mem.usage(), sum, "memory usage after {:?}", op);
            prop_assert_eq!(r.usage(), sum, "rocks usage after {:?}", op);
            for k in dirty.keys() {
                prop_assert!(held.contains_key(k), "dirty chunk {:?} lost", k);
            }
            if matches!(op, TOp::Evict | TOp::Put { .. }) {
                let u = sum;
                let within = (limits.max_bytes == 0 || u.bytes <= limits.max_bytes)
                    && (limits.max_entries == 0 || u.entries <= limits.max_entries);
                prop_assert!(within || u.entries == u.dirty_entries,
                    "over the limits with clean data left: {:?} {:?}", u, limits);
            }
        }
        // A final restart keeps everything.
        let before = rocks.as_ref().unwrap().usage();
        let held = contents(rocks.as_ref().unwrap());
        drop(rocks.take());
        let r = RocksStore::open(tmp.path()).unwrap();
        prop_assert_eq!(r.usage(), before);
        prop_assert_eq!(contents(&r), held);
    }
}
