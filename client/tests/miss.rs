//! The miss policy over the in-memory fileserver: a read of data never
//! cached, its volume offline, fails at once or waits (until the volume is
//! back, the bound, `waiting --release`, or its process is killed), as the
//! process's environment chooses. The processes are real children
//! (`sleep`), since the policy reads `/proc/PID`.

mod common;

use std::process::{Child, Command};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use std::sync::Arc;

use cache::{MemoryStore, Store};
use client::memserver::MemCell;
use client::{AfsClient, Caller, CellDb, ClientConfig, MissAt, Stats, Targets};
use common::{errno, rt, setup, Client, StoreKind, CELL};

/// A process that only sleeps, with `AFSD_MISS` set as given. Returned
/// once its environment shows in `/proc` (`spawn` returns while the child
/// may still be inside `execve`).
fn process(afsd_miss: &str) -> Child {
    let mut child = Command::new("sleep")
        .arg("60")
        .env("AFSD_MISS", afsd_miss)
        .spawn()
        .expect("sleep");
    let environ = format!("/proc/{}/environ", child.id());
    for _ in 0..500 {
        if std::fs::read(&environ).is_ok_and(|e| !e.is_empty()) {
            return child;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("{environ} stayed empty");
}

/// Reads through `fh` as process `pid`, under the miss policy.
fn read_as(afs: &AfsClient, pid: u32, fh: u64) -> tokio::task::JoinHandle<Result<Vec<u8>, i32>> {
    let a = afs.clone();
    tokio::spawn(async move {
        let caller = Caller { uid: 0, pid };
        errno(
            a.guarded(caller, MissAt::Handle(fh), || a.read(0, fh, 0, 100))
                .await,
        )
    })
}

async fn until_waiting(afs: &AfsClient, pid: u32) {
    for _ in 0..200 {
        if afs.waiting(None).iter().any(|w| w.pid == pid) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{pid} never waited: {:?}", afs.waiting(None));
}

#[test]
fn error_at_once_or_wait_until_the_volume_is_back() {
    rt().block_on(async {
        let (cell, cs) = setup(1, StoreKind::Memory, 64);
        let c = &cs[0];
        cell.third_party(|tp| tp.write("r/unseen.txt", b"never read"));
        let ino = c.resolve(0, "r/unseen.txt").await.unwrap();
        c.afs.go_offline(&Targets::All).unwrap();
        let fh = errno(c.afs.open(0, ino, libc::O_RDONLY).await).unwrap();

        let mut quick = process("error");
        let t = Instant::now();
        let r = read_as(&c.afs, quick.id(), fh).await.unwrap();
        assert_eq!(r, Err(libc::ENETDOWN));
        assert!(
            t.elapsed() < Duration::from_millis(100),
            "{:?}",
            t.elapsed()
        );
        assert!(c.afs.waiting(None).is_empty());

        let mut patient = process("wait:60");
        let pid = patient.id();
        let reader = read_as(&c.afs, pid, fh);
        until_waiting(&c.afs, pid).await;
        let w = &c.afs.waiting(Some(0))[0];
        assert_eq!(w.command, "sleep");
        assert_eq!(w.path, format!("/afs/.{CELL}/r/unseen.txt"));
        assert!(c.afs.waiting(Some(1000)).is_empty(), "another user's");
        assert!(!reader.is_finished());
        c.afs.go_online(&Targets::All, false).await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(10), reader)
            .await
            .expect("the wait ends once the volume is back")
            .unwrap();
        assert_eq!(got.unwrap(), b"never read");
        assert!(c.afs.waiting(None).is_empty());

        let misses = c.afs.misses(None);
        assert_eq!(misses.len(), 1, "{misses:?}");
        assert_eq!(misses[0].count, 2);
        assert_eq!(misses[0].path, format!("/afs/.{CELL}/r/unseen.txt"));
        assert!(c.afs.misses(Some(1000)).is_empty());
        assert_eq!(c.afs.stats().misses.load(Ordering::Relaxed), 2);
        let kinds: Vec<&str> = c
            .afs
            .events()
            .recent(0)
            .iter()
            .map(|e| e.kind.name())
            .filter(|n| *n == "miss" || *n == "waiting")
            .collect();
        assert_eq!(kinds, ["miss", "miss", "waiting"]);
        for p in [&mut quick, &mut patient] {
            let _ = p.kill();
            let _ = p.wait();
        }
    });
}

#[test]
fn release_kill_and_the_bound_end_a_wait() {
    rt().block_on(async {
        let (cell, cs) = setup(1, StoreKind::Memory, 64);
        let c = &cs[0];
        cell.third_party(|tp| tp.write("r/unseen.txt", b"never read"));
        let ino = c.resolve(0, "r/unseen.txt").await.unwrap();
        c.afs.go_offline(&Targets::All).unwrap();
        let fh = errno(c.afs.open(0, ino, libc::O_RDONLY).await).unwrap();

        let mut released = process("wait");
        let mut killed = process("wait");
        let mut bounded = process("wait:1");
        let r1 = read_as(&c.afs, released.id(), fh);
        let r2 = read_as(&c.afs, killed.id(), fh);
        let t = Instant::now();
        let r3 = read_as(&c.afs, bounded.id(), fh);
        until_waiting(&c.afs, released.id()).await;
        until_waiting(&c.afs, killed.id()).await;
        until_waiting(&c.afs, bounded.id()).await;

        // Only root, or the waiter's own user, may release it.
        assert!(c.afs.release_waiting(1000, Some(released.id())).is_err());
        assert_eq!(
            c.afs.release_waiting(0, Some(released.id())).unwrap(),
            vec![released.id()]
        );
        let r = tokio::time::timeout(Duration::from_secs(2), r1).await;
        assert_eq!(r.expect("released at once").unwrap(), Err(libc::ETIMEDOUT));
        // The kernel follows a failed read-ahead with a read of its own:
        // the released process must not wait again.
        let r = tokio::time::timeout(Duration::from_secs(1), read_as(&c.afs, released.id(), fh));
        assert_eq!(
            r.await.expect("no second wait").unwrap(),
            Err(libc::ETIMEDOUT)
        );

        killed.kill().unwrap();
        let r = tokio::time::timeout(Duration::from_secs(2), r2).await;
        assert_eq!(r.expect("a killed waiter ends").unwrap(), Err(libc::EINTR));

        let r = tokio::time::timeout(Duration::from_secs(5), r3).await;
        assert_eq!(r.expect("the bound").unwrap(), Err(libc::ETIMEDOUT));
        assert!(t.elapsed() >= Duration::from_secs(1), "{:?}", t.elapsed());
        assert!(c.afs.waiting(None).is_empty());
        for p in [&mut released, &mut killed, &mut bounded] {
            let _ = p.kill();
            let _ = p.wait();
        }
    });
}

#[test]
fn a_lookup_in_a_directory_never_listed_waits_for_its_volume() {
    rt().block_on(async {
        let (cell, cs) = setup(1, StoreKind::Memory, 64);
        let c = &cs[0];
        cell.third_party(|tp| tp.write("d/inside.txt", b"inside"));
        // d's status is cached, its listing is not.
        let d = c.resolve(0, "d").await.unwrap();
        c.afs.go_offline(&Targets::All).unwrap();
        let mut p = process("wait:30");
        let (a, pid) = (c.afs.clone(), p.id());
        let lookup = tokio::spawn(async move {
            let at = MissAt::Child(d, b"inside.txt");
            errno(
                a.guarded(Caller { uid: 0, pid }, at, || a.lookup(0, d, b"inside.txt"))
                    .await,
            )
        });
        until_waiting(&c.afs, pid).await;
        assert_eq!(
            c.afs.waiting(None)[0].path,
            format!("/afs/.{CELL}/d/inside.txt")
        );
        c.afs.go_online(&Targets::All, false).await.unwrap();
        let attr = tokio::time::timeout(Duration::from_secs(10), lookup)
            .await
            .expect("the lookup ends once the volume is back")
            .unwrap()
            .unwrap();
        assert_eq!(attr.size, 6);
        let _ = p.kill();
        let _ = p.wait();
    });
}

/// A client over a given store, as a daemon restarted on its cache.
fn client_on(cell: &Arc<MemCell>, store: Arc<dyn Store>) -> Client {
    let config = ClientConfig::new("/nonexistent".into(), "/nonexistent".into());
    let cells = CellDb {
        this_cell: Some(CELL.into()),
        cells: vec![cell.cell()],
    };
    let fs = cell.connect();
    let (afs, inval) =
        AfsClient::start_with(config, cells, store, fs.clone(), Arc::new(Stats::default()))
            .unwrap();
    Client::from_parts(afs, fs, inval)
}

#[test]
fn misses_outlive_a_restart() {
    rt().block_on(async {
        let (cell, _) = setup(0, StoreKind::Memory, 64);
        cell.third_party(|tp| tp.write("r/unseen.txt", b"never read"));
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let c = client_on(&cell, store.clone());
        let ino = c.resolve(1000, "r/unseen.txt").await.unwrap();
        c.afs.go_offline(&Targets::All).unwrap();
        let fh = errno(c.afs.open(1000, ino, libc::O_RDONLY).await).unwrap();
        let mut p = process("error");
        let caller = Caller {
            uid: 1000,
            pid: p.id(),
        };
        let r = c
            .afs
            .guarded(caller, MissAt::Handle(fh), || c.afs.read(1000, fh, 0, 10))
            .await;
        assert_eq!(errno(r), Err(libc::ENETDOWN));
        let _ = p.kill();
        let _ = p.wait();
        c.afs.shutdown().await;
        drop(c);
        let again = client_on(&cell, store);
        let kept = again.afs.misses(Some(1000));
        assert_eq!(kept.len(), 1, "{kept:?}");
        assert_eq!(kept[0].path, format!("/afs/.{CELL}/r/unseen.txt"));
    });
}
