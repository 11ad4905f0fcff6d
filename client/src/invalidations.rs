//! Kernel invalidations waiting to be sent: a set, not a channel.
//!
//! A callback break, our own change or a flush names inodes whose kernel
//! pages and attributes must go. Only inodes the client knows are queued,
//! each at most once however often it is named, so a flood of breaks (from
//! a fileserver or a spoofer) cannot grow the queue past the inode table,
//! nor push genuine invalidations out.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::attr::Invalidation;

/// What the kernel must drop: an inode's pages and attributes, or one
/// name it cached in a directory.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Key {
    Inode(u64),
    Entry(u64, Vec<u8>),
}

#[derive(Default)]
struct Pending {
    set: HashSet<Key>,
    order: VecDeque<Key>,
    closed: bool,
}

/// The queue, shared by the client (producer) and the FUSE side.
#[derive(Default)]
pub(crate) struct Queue {
    pending: Mutex<Pending>,
    ready: Notify,
}

impl Queue {
    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn queue(&self, k: Key) {
        let mut p = self.lock();
        if p.set.insert(k.clone()) {
            p.order.push_back(k);
            drop(p);
            self.ready.notify_one();
        }
    }

    /// Queues `ino` unless it is queued already.
    pub(crate) fn push(&self, ino: u64) {
        self.queue(Key::Inode(ino));
    }

    /// Queues the name `name` in directory `parent` (a dentry the kernel
    /// was allowed to keep long), unless it is queued already.
    pub(crate) fn push_entry(&self, parent: u64, name: Vec<u8>) {
        self.queue(Key::Entry(parent, name));
    }

    /// Whether `ino` waits to be invalidated.
    pub(crate) fn contains(&self, ino: u64) -> bool {
        self.lock().set.contains(&Key::Inode(ino))
    }

    /// How many are waiting.
    pub(crate) fn len(&self) -> usize {
        self.lock().order.len()
    }

    fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_one();
    }
}

/// The FUSE side's end: batches of distinct inodes to invalidate.
pub struct InvalidationReceiver {
    queue: Arc<Queue>,
}

impl InvalidationReceiver {
    pub(crate) fn new(queue: Arc<Queue>) -> Self {
        InvalidationReceiver { queue }
    }

    /// Waits for invalidations and takes every one waiting; None once the
    /// client is gone and nothing is left.
    pub async fn next_batch(&mut self) -> Option<Vec<Invalidation>> {
        loop {
            let notified = self.queue.ready.notified();
            {
                let mut p = self.queue.lock();
                if !p.order.is_empty() {
                    let batch: Vec<Invalidation> = p
                        .order
                        .drain(..)
                        .map(|k| match k {
                            Key::Inode(ino) => Invalidation { ino, name: None },
                            Key::Entry(ino, name) => Invalidation {
                                ino,
                                name: Some(name),
                            },
                        })
                        .collect();
                    p.set.clear();
                    return Some(batch);
                }
                if p.closed {
                    return None;
                }
            }
            notified.await;
        }
    }
}

/// Closes the queue when the client's last handle goes.
pub(crate) struct Closer(pub(crate) Arc<Queue>);

impl Drop for Closer {
    fn drop(&mut self) {
        self.0.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn repeated_invalidations_are_sent_once() {
        let q = Arc::new(Queue::default());
        let mut rx = InvalidationReceiver::new(q.clone());
        for _ in 0..100_000 {
            q.push(7);
        }
        q.push(9);
        assert_eq!(q.len(), 2);
        let ino = |ino| Invalidation { ino, name: None };
        let b = rx.next_batch().await.unwrap();
        assert_eq!(b, vec![ino(7), ino(9)]);
        q.push(7);
        q.push_entry(7, b"a".to_vec());
        q.push_entry(7, b"a".to_vec());
        assert_eq!(
            rx.next_batch().await.unwrap(),
            vec![
                ino(7),
                Invalidation {
                    ino: 7,
                    name: Some(b"a".to_vec())
                }
            ]
        );
        drop(Closer(q));
        assert!(rx.next_batch().await.is_none());
    }
}
