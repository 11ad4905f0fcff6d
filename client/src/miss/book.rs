//! The miss policy's books: the processes waiting now (`afsd-rs waiting`,
//! `--release`) and the misses seen (`afsd-rs misses`).
//!
//! The waits live in memory. The misses are bounded, the least recently
//! missed dropped first, so a tree walk offline cannot grow the daemon;
//! they are written to the cache's store now and then (see
//! [`super::keep_misses`]) and at a clean stop, so a restart keeps them
//! (a `kill -9` may lose the last few seconds: they are a hint).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::status::now_secs;
use crate::{Error, Result};

/// Distinct (uid, path) misses kept.
pub const MISSES_KEPT: usize = 1024;

/// How long a task whose wait ended without its volume (the bound, or a
/// release) is not made to wait again. The kernel follows a failed
/// read-ahead with a read of its own for the same page: without this,
/// that second request would wait a second time.
pub const ENDED_WINDOW: Duration = Duration::from_secs(10);

/// A process waiting for data of a disconnected volume.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitingInfo {
    /// The process (thread group) id.
    pub pid: u32,
    /// The thread that made the request (the pid, for most programs).
    pub tid: u32,
    pub uid: u32,
    pub command: String,
    pub path: String,
    /// Unix seconds the wait began.
    pub since: u64,
    /// Unix seconds it ends by itself (ETIMEDOUT).
    pub until: u64,
}

/// A miss: data that was not cached, read while its volume was offline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MissInfo {
    pub path: String,
    pub uid: u32,
    /// The program of the latest miss.
    pub command: String,
    /// Unix seconds of the first and the latest miss.
    pub first: u64,
    pub last: u64,
    pub count: u64,
}

/// How a wait ended early: `afsd-rs waiting --release`.
pub(crate) type Release = Arc<tokio::sync::Notify>;

#[derive(Default)]
pub(crate) struct Book {
    next: AtomicU64,
    waiting: Mutex<HashMap<u64, (WaitingInfo, Release)>>,
    misses: Mutex<HashMap<(u32, String), MissInfo>>,
    /// Tasks whose wait ended without their volume: when, and why.
    ended: Mutex<HashMap<u32, (Instant, String)>>,
    /// Misses changed since they were last written to the store.
    dirty: AtomicBool,
}

/// Removes its waiter from the book when the wait ends, however it ends
/// (the FUSE request's task may also be dropped).
pub(crate) struct WaitGuard<'a> {
    book: &'a Book,
    id: u64,
    pub(crate) release: Release,
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        self.book.lock_waiting().remove(&self.id);
    }
}

impl Book {
    fn lock_waiting(&self) -> std::sync::MutexGuard<'_, HashMap<u64, (WaitingInfo, Release)>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Notes a miss.
    pub(crate) fn missed(&self, uid: u32, path: &str, command: &str) {
        let now = now_secs();
        self.dirty.store(true, Ordering::Relaxed);
        let mut m = self.misses.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = m.get_mut(&(uid, path.to_string())) {
            e.count += 1;
            e.last = now;
            e.command = command.to_string();
            return;
        }
        if m.len() >= MISSES_KEPT {
            if let Some(oldest) = m.iter().min_by_key(|(_, v)| v.last).map(|(k, _)| k.clone()) {
                m.remove(&oldest);
            }
        }
        m.insert(
            (uid, path.to_string()),
            MissInfo {
                path: path.to_string(),
                uid,
                command: command.to_string(),
                first: now,
                last: now,
                count: 1,
            },
        );
    }

    /// Misses kept by an earlier run (the most recent [`MISSES_KEPT`]).
    pub(crate) fn load(&self, kept: Vec<MissInfo>) {
        let mut m = self.misses.lock().unwrap_or_else(|e| e.into_inner());
        let mut kept = kept;
        kept.sort_by_key(|k| std::cmp::Reverse(k.last));
        for k in kept.into_iter().take(MISSES_KEPT) {
            m.entry((k.uid, k.path.clone())).or_insert(k);
        }
    }

    /// Every miss, when they changed since the last call.
    pub(crate) fn changed(&self) -> Option<Vec<MissInfo>> {
        self.dirty
            .swap(false, Ordering::Relaxed)
            .then(|| self.misses(None))
    }

    /// The misses of `uid` (None: everyone's), most recent first.
    pub(crate) fn misses(&self, uid: Option<u32>) -> Vec<MissInfo> {
        let mut v: Vec<MissInfo> = self
            .misses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|m| uid.is_none_or(|u| m.uid == u))
            .cloned()
            .collect();
        v.sort_by(|a, b| b.last.cmp(&a.last).then_with(|| a.path.cmp(&b.path)));
        v
    }

    /// A wait begins; it is listed until the guard drops.
    pub(crate) fn wait(&self, info: WaitingInfo) -> WaitGuard<'_> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let release: Release = Arc::default();
        self.lock_waiting().insert(id, (info, release.clone()));
        WaitGuard {
            book: self,
            id,
            release,
        }
    }

    /// The waits of `uid` (None: everyone's), oldest first.
    pub(crate) fn waiting(&self, uid: Option<u32>) -> Vec<WaitingInfo> {
        let mut v: Vec<WaitingInfo> = self
            .lock_waiting()
            .values()
            .map(|(w, _)| w)
            .filter(|w| uid.is_none_or(|u| w.uid == u))
            .cloned()
            .collect();
        v.sort_by_key(|w| (w.since, w.pid, w.tid));
        v
    }

    /// Task `tid`'s wait ended without its volume, for `why`.
    pub(crate) fn ended(&self, tid: u32, why: &str) {
        let mut e = self.ended.lock().unwrap_or_else(|e| e.into_inner());
        e.retain(|_, (t, _)| t.elapsed() < ENDED_WINDOW);
        e.insert(tid, (Instant::now(), why.to_string()));
    }

    /// Why task `tid`'s wait ended, if that was less than
    /// [`ENDED_WINDOW`] ago.
    pub(crate) fn recently_ended(&self, tid: u32) -> Option<String> {
        let e = self.ended.lock().unwrap_or_else(|e| e.into_inner());
        e.get(&tid)
            .filter(|(t, _)| t.elapsed() < ENDED_WINDOW)
            .map(|(_, why)| why.clone())
    }

    /// Ends the waits of process `pid` (None: all of them) now; `caller`
    /// may end only their own waits, root any. Returns the pids released.
    pub(crate) fn release(&self, caller: u32, pid: Option<u32>) -> Result<Vec<u32>> {
        let w = self.lock_waiting();
        let chosen: Vec<&(WaitingInfo, Release)> = w
            .values()
            .filter(|(i, _)| pid.is_none_or(|p| i.pid == p || i.tid == p))
            .collect();
        if let Some(p) = pid {
            if chosen.is_empty() {
                return Err(Error::Invalid(format!("process {p} is not waiting")));
            }
            if caller != 0 && chosen.iter().any(|(i, _)| i.uid != caller) {
                return Err(Error::Access);
            }
        }
        let mut pids: Vec<u32> = Vec::new();
        for (i, r) in chosen {
            if caller == 0 || i.uid == caller {
                r.notify_one();
                pids.push(i.pid);
            }
        }
        pids.sort_unstable();
        pids.dedup();
        Ok(pids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(pid: u32, uid: u32) -> WaitingInfo {
        WaitingInfo {
            pid,
            tid: pid,
            uid,
            command: "cat".into(),
            path: format!("/afs/c/{pid}"),
            since: 1,
            until: 2,
        }
    }

    #[tokio::test]
    async fn users_release_their_own_waits_and_root_any() {
        let b = Book::default();
        let g1 = b.wait(info(10, 1000));
        let g2 = b.wait(info(20, 1001));
        assert_eq!(b.waiting(Some(1000)).len(), 1);
        assert_eq!(b.waiting(None).len(), 2);
        assert!(matches!(b.release(1000, Some(20)), Err(Error::Access)));
        assert!(matches!(b.release(1000, Some(30)), Err(Error::Invalid(_))));
        // Without a pid: only the caller's own.
        assert_eq!(b.release(1000, None).unwrap(), vec![10]);
        tokio::time::timeout(std::time::Duration::from_secs(1), g1.release.notified())
            .await
            .expect("released");
        assert_eq!(b.release(0, Some(20)).unwrap(), vec![20]);
        tokio::time::timeout(std::time::Duration::from_secs(1), g2.release.notified())
            .await
            .expect("released by root");
        drop(g1);
        assert_eq!(b.waiting(None).len(), 1, "a guard dropped leaves the book");
        drop(g2);
        assert!(b.waiting(None).is_empty());
    }

    #[test]
    fn misses_count_per_user_and_path_and_stay_bounded() {
        let b = Book::default();
        b.missed(1000, "/afs/c/a", "cat");
        b.missed(1000, "/afs/c/a", "less");
        b.missed(1001, "/afs/c/a", "cat");
        let mine = b.misses(Some(1000));
        assert_eq!(mine.len(), 1);
        assert_eq!(mine[0].count, 2);
        assert_eq!(mine[0].command, "less");
        assert_eq!(b.misses(None).len(), 2);
        for i in 0..(MISSES_KEPT + 10) {
            b.missed(5, &format!("/afs/c/f{i}"), "find");
        }
        assert_eq!(b.misses(None).len(), MISSES_KEPT);
    }
}
