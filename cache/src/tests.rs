//! Tests of the bounded cache: accounting, eviction, flushes, and the
//! equivalence of the two stores.

use std::collections::{BTreeMap, BTreeSet};

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
        pinned_bytes: 0,
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
        keep: Vec::new(),
    });
    store.apply(b).unwrap();
    assert_eq!(store.usage(), usage(5, 2, 1, 1));
    assert_eq!(store.dirty_chunks(&f), vec![(5, 0, 1)]);
}

#[test]
fn writes_in_place_truncate_and_move() {
    on_both(write_body);
}

fn ops_in_one_batch_body(store: &dyn Store) {
    let f = fid(4, 1);
    let g = fid(4, 2);
    for i in 0..3 {
        put(store, &f, 1, i, 100);
    }
    put(store, &g, 1, 0, 100);
    store.set_limits(Limits {
        max_entries: 3,
        ..Limits::default()
    });
    // One batch: a use of the oldest chunk, a flush of g, and a new chunk
    // that takes usage over the limit; chunk 1 is then the LRU one.
    let mut b = Batch::clean();
    b.push(Op::Touch {
        fid: f.clone(),
        data_version: 1,
        index: 0,
    })
    .push(Op::FlushFid(g.clone()))
    .push(Op::PutChunk {
        fid: f.clone(),
        data_version: 1,
        index: 3,
        data: vec![3; 100],
    });
    store.apply(b).unwrap();
    assert!(!has(store, &g, 1, 0), "flushed in the batch");
    assert!(!has(store, &f, 1, 1), "evicted after the batch");
    for i in [0, 2, 3] {
        assert!(has(store, &f, 1, i), "chunk {i}");
    }
    assert_eq!(store.usage(), usage(300, 3, 0, 0));
    // A volume flush in a durable batch with a status: both land.
    let mut b = Batch::new();
    b.push(Op::FlushVolume {
        cell: "test.lab".into(),
        volume: 4,
    })
    .push(Op::PutStatus(g.clone(), status()));
    store.apply(b).unwrap();
    assert_eq!(store.usage(), Usage::default());
    assert!(store.get_status(&g).unwrap().is_some());
    // A chunk flushed and fetched again in one batch is there after it.
    put(store, &g, 1, 0, 10);
    let mut b = Batch::clean();
    b.push(Op::FlushFid(g.clone())).push(Op::PutChunk {
        fid: g.clone(),
        data_version: 1,
        index: 0,
        data: vec![7; 5],
    });
    store.apply(b).unwrap();
    assert_eq!(store.get_chunk(&g, 1, 0).unwrap(), Some(vec![7; 5]));
}

#[test]
fn touch_and_flush_ops_share_a_batch_with_other_changes() {
    on_both(ops_in_one_batch_body);
}

// ---- random op sequences on both stores, against a model ----

/// The ops a batch can carry (see [`TOp::Batch`]) and those it cannot.
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
    /// Alone, through [`Store::touch`]; in a batch, as [`Op::Touch`].
    Touch {
        f: u32,
        dv: u64,
        i: u64,
    },
    /// Alone, through [`Store::flush_fid`]; in a batch, as [`Op::FlushFid`].
    FlushFid(u32),
    /// Alone, through [`Store::flush_volume`]; in a batch, as
    /// [`Op::FlushVolume`].
    FlushVolume(u32),
    /// Several of the above in one [`Batch`].
    Batch(Vec<TOp>),
    Limits(u64, u64),
    Evict,
    Reopen,
    /// [`Store::set_pinned`] (not batchable: pins are in memory).
    Pin(u32, bool),
}

const FIDS: u32 = 4;
const DVS: u64 = 2;
const IDXS: u64 = 3;

/// Fids 0 and 1 are in volume 10, 2 and 3 in volume 11.
fn tfid(f: u32) -> FidKey {
    fid(10 + f / 2, f)
}

fn leaf() -> impl Strategy<Value = TOp> {
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
        4 => (f.clone(), 0..DVS, 0..IDXS).prop_map(|(f, dv, i)| TOp::Touch { f, dv, i }),
        1 => f.clone().prop_map(TOp::FlushFid),
        1 => (10u32..12).prop_map(TOp::FlushVolume),
    ]
}

fn top() -> impl Strategy<Value = TOp> {
    prop_oneof![
        22 => leaf(),
        5 => proptest::collection::vec(leaf(), 1..6).prop_map(TOp::Batch),
        1 => (0u64..150, 0u64..8).prop_map(|(b, e)| TOp::Limits(b, e)),
        1 => Just(TOp::Evict),
        1 => Just(TOp::Reopen),
        2 => (0..FIDS, any::<bool>()).prop_map(|(f, on)| TOp::Pin(f, on)),
    ]
}

/// The store ops of a batchable op, and whether they need a durable batch.
fn ops_of(op: &TOp) -> (Vec<Op>, bool) {
    let one = |op| vec![op];
    match *op {
        TOp::Put {
            f,
            dv,
            i,
            len,
            dirty,
        } => {
            let (fid, data) = (tfid(f), vec![(f as u8) ^ (i as u8); len]);
            let op = if dirty {
                Op::PutDirtyChunk {
                    fid,
                    data_version: dv,
                    index: i,
                    data,
                }
            } else {
                Op::PutChunk {
                    fid,
                    data_version: dv,
                    index: i,
                    data,
                }
            };
            (one(op), dirty)
        }
        TOp::MarkClean { f, dv, i } => (
            one(Op::MarkClean {
                fid: tfid(f),
                data_version: dv,
                index: i,
            }),
            true,
        ),
        TOp::Delete(f) => (one(Op::DeleteChunks(tfid(f))), false),
        TOp::DeleteClean(f) => (
            one(Op::DeleteCleanChunks {
                fid: tfid(f),
                keep: Some(1),
            }),
            false,
        ),
        TOp::Write {
            f,
            dv,
            i,
            offset,
            len,
        } => (
            one(Op::WriteChunk {
                fid: tfid(f),
                data_version: dv,
                index: i,
                offset,
                data: vec![0x80 | offset as u8; len],
            }),
            false,
        ),
        TOp::Truncate { f, dv, i, len } => (
            one(Op::TruncateChunk {
                fid: tfid(f),
                data_version: dv,
                index: i,
                length: len,
            }),
            false,
        ),
        TOp::Move { f, i, from, to } => (
            one(Op::MoveChunk {
                fid: tfid(f),
                index: i,
                from_dv: from,
                to_dv: to,
            }),
            false,
        ),
        TOp::Touch { f, dv, i } => (
            one(Op::Touch {
                fid: tfid(f),
                data_version: dv,
                index: i,
            }),
            false,
        ),
        TOp::FlushFid(f) => (one(Op::FlushFid(tfid(f))), true),
        TOp::FlushVolume(v) => (
            one(Op::FlushVolume {
                cell: "test.lab".into(),
                volume: v,
            }),
            true,
        ),
        TOp::Batch(ref ops) => {
            let (mut all, mut durable) = (Vec::new(), false);
            for op in ops {
                let (o, d) = ops_of(op);
                all.extend(o);
                durable |= d;
            }
            (all, durable)
        }
        TOp::Limits(..) | TOp::Evict | TOp::Reopen | TOp::Pin(..) => (Vec::new(), false),
    }
}

fn run(store: &dyn Store, op: &TOp) -> Option<crate::EvictReport> {
    match *op {
        TOp::Touch { f, dv, i } => store.touch(&tfid(f), dv, i),
        TOp::FlushFid(f) => store.flush_fid(&tfid(f)).unwrap(),
        TOp::FlushVolume(v) => store.flush_volume("test.lab", v).unwrap(),
        TOp::Limits(b, e) => store.set_limits(Limits {
            max_bytes: b,
            max_entries: e,
            ..Limits::default()
        }),
        TOp::Evict => return Some(store.evict().unwrap()),
        TOp::Reopen => {}
        TOp::Pin(f, on) => store.set_pinned(&tfid(f), on),
        _ => {
            let (ops, durable) = ops_of(op);
            store.apply(Batch::of(ops, durable)).unwrap();
        }
    }
    None
}

type ChunkId = (u32, u64, u64);

/// What the cache should hold: each chunk's bytes, dirtiness and last use.
#[derive(Default)]
struct Model {
    chunks: BTreeMap<ChunkId, (Vec<u8>, bool, u64)>,
    clock: u64,
    limits: Limits,
    pinned: BTreeSet<u32>,
}

impl Model {
    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    fn set(&mut self, k: ChunkId, data: Vec<u8>, dirty: bool) {
        let t = self.tick();
        self.chunks.insert(k, (data, dirty, t));
    }

    /// Drops the clean chunks `doomed` says so of, but pinned ones (a
    /// flush keeps them).
    fn drop_clean(&mut self, doomed: impl Fn(&ChunkId) -> bool) {
        let pinned = self.pinned.clone();
        self.chunks
            .retain(|k, c| c.1 || pinned.contains(&k.0) || !doomed(k));
    }

    /// Applies one op; returns whether it added file data (may evict).
    fn step(&mut self, op: &TOp) -> bool {
        match *op {
            TOp::Put {
                f,
                dv,
                i,
                len,
                dirty,
            } => self.set((f, dv, i), vec![(f as u8) ^ (i as u8); len], dirty),
            TOp::MarkClean { f, dv, i } => {
                if let Some(c) = self.chunks.get_mut(&(f, dv, i)) {
                    c.1 = false;
                }
                return false;
            }
            TOp::Delete(f) => {
                self.chunks.retain(|k, _| k.0 != f);
                return false;
            }
            TOp::DeleteClean(f) => {
                // Pinned or not: the version moved.
                self.chunks.retain(|k, c| c.1 || !(k.0 == f && k.1 != 1));
                return false;
            }
            TOp::Write {
                f,
                dv,
                i,
                offset,
                len,
            } => {
                let mut d = self.chunks.remove(&(f, dv, i)).map_or(vec![], |c| c.0);
                let end = offset as usize + len;
                d.resize(d.len().max(end), 0);
                d[offset as usize..end].fill(0x80 | offset as u8);
                self.set((f, dv, i), d, true);
            }
            TOp::Truncate { f, dv, i, len } => {
                let mut d = self.chunks.remove(&(f, dv, i)).map_or(vec![], |c| c.0);
                d.resize(len as usize, 0);
                self.set((f, dv, i), d, true);
            }
            TOp::Move { f, i, from, to } => {
                if from == to {
                    if let Some(c) = self.chunks.get_mut(&(f, from, i)) {
                        c.1 = false;
                    }
                } else if let Some((d, _, _)) = self.chunks.remove(&(f, from, i)) {
                    self.set((f, to, i), d, false);
                }
                return false;
            }
            TOp::Touch { f, dv, i } => {
                if self.chunks.contains_key(&(f, dv, i)) {
                    let t = self.tick();
                    if let Some(c) = self.chunks.get_mut(&(f, dv, i)) {
                        c.2 = t;
                    }
                }
                return false;
            }
            TOp::FlushFid(f) => {
                self.drop_clean(|k| k.0 == f);
                return false;
            }
            TOp::Pin(f, on) => {
                if on {
                    self.pinned.insert(f);
                } else {
                    self.pinned.remove(&f);
                }
                return false;
            }
            TOp::FlushVolume(v) => {
                self.drop_clean(|k| tfid(k.0).volume == v);
                return false;
            }
            TOp::Batch(ref ops) => {
                let mut grew = false;
                for op in ops {
                    grew |= self.step(op);
                }
                return grew;
            }
            TOp::Limits(b, e) => {
                self.limits = Limits {
                    max_bytes: b,
                    max_entries: e,
                    ..Limits::default()
                };
                return false;
            }
            TOp::Evict | TOp::Reopen => return false,
        }
        true
    }

    fn usage(&self) -> Usage {
        let mut u = Usage::default();
        for (k, (d, dirty, _)) in &self.chunks {
            u.bytes += d.len() as u64;
            u.entries += 1;
            if self.pinned.contains(&k.0) {
                u.pinned_bytes += d.len() as u64;
            }
            if *dirty {
                u.dirty_bytes += d.len() as u64;
                u.dirty_entries += 1;
            }
        }
        u
    }

    fn over(&self) -> bool {
        let (u, l) = (self.usage(), self.limits);
        (l.max_bytes > 0 && u.bytes > l.max_bytes)
            || (l.max_entries > 0 && u.entries > l.max_entries)
    }

    /// Least recently used clean chunks first, until within the limits.
    fn evict(&mut self) -> crate::EvictReport {
        let mut r = crate::EvictReport::default();
        while self.over() {
            let lru = self
                .chunks
                .iter()
                .filter(|(k, c)| !c.1 && !self.pinned.contains(&k.0))
                .min_by_key(|(_, c)| c.2)
                .map(|(k, _)| *k);
            let Some(k) = lru else { break };
            let (d, _, _) = self.chunks.remove(&k).unwrap();
            r.chunks += 1;
            r.bytes += d.len() as u64;
        }
        r.over_limit = self.over();
        r
    }

    fn contents(&self) -> BTreeMap<ChunkId, Vec<u8>> {
        self.chunks.iter().map(|(k, c)| (*k, c.0.clone())).collect()
    }
}

/// Every chunk of the domain, as the store holds it.
fn contents(store: &dyn Store) -> BTreeMap<ChunkId, Vec<u8>> {
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
    fn random_ops_match_the_model_on_both_stores(
        ops in proptest::collection::vec(top(), 1..40)
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let mem = MemoryStore::new();
        let mut rocks = Some(RocksStore::open(tmp.path()).unwrap());
        let mut model = Model::default();
        for op in &ops {
            if let TOp::Reopen = op {
                drop(rocks.take());
                rocks = Some(RocksStore::open(tmp.path()).unwrap());
                rocks.as_ref().unwrap().set_limits(model.limits);
                // Pins are the client's to set again at start.
                for f in &model.pinned {
                    rocks.as_ref().unwrap().set_pinned(&tfid(*f), true);
                }
            }
            let r = rocks.as_ref().unwrap();
            let rm = run(&mem, op);
            let rr = run(r, op);
            let grew = model.step(op);
            let expected = match op {
                TOp::Evict => Some(model.evict()),
                _ if grew => {
                    model.evict();
                    None
                }
                _ => None,
            };
            prop_assert_eq!(rm, expected, "memory eviction after {:?}", op);
            prop_assert_eq!(rr, expected, "rocks eviction after {:?}", op);
            mem.check_invariants();
            r.check_invariants();

            let want = model.contents();
            prop_assert_eq!(&contents(&mem), &want, "memory contents after {:?}", op);
            prop_assert_eq!(&contents(r), &want, "rocks contents after {:?}", op);
            prop_assert_eq!(mem.usage(), model.usage(), "memory usage after {:?}", op);
            prop_assert_eq!(r.usage(), model.usage(), "rocks usage after {:?}", op);
            for f in 0..FIDS {
                let mut dirty: Vec<_> = model
                    .chunks
                    .iter()
                    .filter(|(k, c)| k.0 == f && c.1)
                    .map(|(k, c)| (k.1, k.2, c.0.len() as u64))
                    .collect();
                dirty.sort();
                prop_assert_eq!(&mem.dirty_chunks(&tfid(f)), &dirty);
                prop_assert_eq!(&r.dirty_chunks(&tfid(f)), &dirty);
            }
        }
        // A final restart keeps everything, and the order of last uses.
        drop(rocks.take());
        let r = RocksStore::open(tmp.path()).unwrap();
        for f in &model.pinned {
            r.set_pinned(&tfid(*f), true);
        }
        prop_assert_eq!(r.usage(), model.usage());
        prop_assert_eq!(contents(&r), model.contents());
        model.limits = Limits { max_entries: 1, ..Limits::default() };
        r.set_limits(model.limits);
        prop_assert_eq!(r.evict().unwrap(), model.evict());
        prop_assert_eq!(contents(&r), model.contents());
    }
}

/// The ops of disconnected operation: held base data, chunks moved to
/// another fid, a discard that keeps what the log names, records.
fn offline_ops_body(store: &dyn Store) {
    let f = fid(6, 1);
    let g = fid(6, 2);
    let local = u64::MAX - 1000;
    put(store, &f, 3, 0, 10);
    put(store, &f, 3, 1, 10);
    put(store, &f, 4, 0, 10);
    // Hold makes the chunks of one version dirty: never evicted, and a
    // flush keeps them; Release gives them back to eviction.
    let mut b = Batch::synced();
    b.push(Op::Hold {
        fid: f.clone(),
        data_version: 3,
    });
    store.apply(b).unwrap();
    assert_eq!(store.usage(), usage(30, 3, 20, 2));
    store.flush_fid(&f).unwrap();
    assert!(has(store, &f, 3, 0) && has(store, &f, 3, 1));
    assert!(!has(store, &f, 4, 0));
    let mut b = Batch::new();
    b.push(Op::Release {
        fid: f.clone(),
        data_version: 3,
    });
    store.apply(b).unwrap();
    assert_eq!(store.usage(), usage(20, 2, 0, 0));
    // A chunk moves to another fid and version, dirty, with its data.
    put_dirty(store, &f, local, 0, 7);
    let mut b = Batch::synced();
    b.push(Op::SyncChunks {
        fid: f.clone(),
        data_version: local,
    });
    b.push(Op::MoveChunkTo {
        from: f.clone(),
        from_dv: local,
        index: 0,
        to: g.clone(),
        to_dv: 0,
        dirty: true,
    });
    store.apply(b).unwrap();
    assert!(!has(store, &f, local, 0));
    assert_eq!(store.get_chunk(&g, 0, 0).unwrap(), Some(vec![0xd0; 7]));
    assert_eq!(store.dirty_chunks(&g), vec![(0, 0, 7)]);
    // A discard of unstored chunks keeps those the log names.
    put_dirty(store, &f, local, 1, 3);
    put_dirty(store, &g, local, 1, 4);
    let mut b = Batch::new();
    b.push(Op::DiscardDirty {
        data_version: u64::MAX - u32::MAX as u64,
        keep: vec![(g.clone(), local)],
    });
    store.apply(b).unwrap();
    assert!(!has(store, &f, local, 1));
    assert!(has(store, &g, local, 1));
    // Records of a space come back in key order, and only theirs.
    let mut b = Batch::synced();
    for (space, key) in [(b'l', b"b"), (b'l', b"a"), (b'x', b"a")] {
        b.push(Op::PutRecord {
            space,
            key: key.to_vec(),
            value: vec![space, key[0]],
        });
    }
    store.apply(b).unwrap();
    let l = store.records(b'l').unwrap();
    assert_eq!(
        l,
        vec![
            (b"a".to_vec(), vec![b'l', b'a']),
            (b"b".to_vec(), vec![b'l', b'b'])
        ]
    );
    assert_eq!(
        store.get_record(b'x', b"a").unwrap(),
        Some(vec![b'x', b'a'])
    );
    let mut b = Batch::new();
    b.push(Op::DeleteRecord {
        space: b'l',
        key: b"a".to_vec(),
    });
    store.apply(b).unwrap();
    assert_eq!(store.records(b'l').unwrap().len(), 1);
    store.persist().unwrap();
}

#[test]
fn holds_moves_discards_and_records() {
    on_both(offline_ops_body);
}
