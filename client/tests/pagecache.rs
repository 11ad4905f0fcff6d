//! When the kernel may keep a file's cached pages across opens
//! (FOPEN_KEEP_CACHE): only for opens that read, while nobody holds
//! changes to the file not yet stored or replayed.

mod common;

use client::Targets;
use common::{errno, rt, setup, StoreKind};

#[test]
fn pages_are_kept_only_while_nobody_holds_changes() {
    rt().block_on(async {
        let (_cell, cs) = setup(1, StoreKind::Memory, 64);
        let c = &cs[0];
        c.write_file(0, "f", b"stored").await.unwrap();
        let ino = c.resolve(0, "f").await.unwrap();
        // Our own store moved the version: the kernel's pages are dropped
        // first.
        let mut kept = false;
        for _ in 0..50 {
            let fh = errno(c.afs.open(0, ino, libc::O_RDONLY).await).unwrap();
            kept = c.afs.keep_page_cache(ino, libc::O_RDONLY);
            errno(c.afs.release(fh, None).await).unwrap();
            if kept {
                break;
            }
            // Nobody takes the invalidations in this test: drain them.
            c.drain_invalidations().await;
        }
        assert!(kept, "a stored file read by anyone keeps its pages");
        assert!(
            !c.afs.keep_page_cache(ino, libc::O_RDWR),
            "never for a writer"
        );
        assert!(!c.afs.keep_page_cache(ino, libc::O_RDONLY | libc::O_TRUNC));
        // Another user writes and has not closed: their bytes may be in the
        // page cache, which is everyone's.
        let fh = errno(c.afs.open(1000, ino, libc::O_WRONLY).await).unwrap();
        errno(c.afs.write(fh, 0, b"UNSTORED").await).unwrap();
        assert!(!c.afs.keep_page_cache(ino, libc::O_RDONLY));
        errno(c.afs.release(fh, None).await).unwrap();
        c.drain_invalidations().await;
        assert!(
            c.afs.keep_page_cache(ino, libc::O_RDONLY),
            "stored: kept again"
        );
        // Offline changes wait in the log: theirs alone until replayed.
        c.afs.go_offline(&Targets::All).unwrap();
        c.write_file(1000, "f", b"offline").await.unwrap();
        c.drain_invalidations().await;
        assert!(!c.afs.keep_page_cache(ino, libc::O_RDONLY));
    });
}
