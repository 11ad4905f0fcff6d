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

#[derive(Default)]
struct Pending {
    set: HashSet<u64>,
    order: VecDeque<u64>,
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

    /// Queues `ino` unless it is queued already.
    pub(crate) fn push(&self, ino: u64) {
        let mut p = self.lock();
        if p.set.insert(ino) {
            p.order.push_back(ino);
            drop(p);
            self.ready.notify_one();
        }
    }

    /// Whether `ino` waits to be invalidated.
    pub(crate) fn contains(&self, ino: u64) -> bool {
        self.lock().set.contains(&ino)
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
                    let batch: Vec<Invalidation> =
                        p.order.drain(..).map(|ino| Invalidation { ino }).collect();
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
        let b = rx.next_batch().await.unwrap();
        assert_eq!(b, vec![Invalidation { ino: 7 }, Invalidation { ino: 9 }]);
        q.push(7);
        assert_eq!(
            rx.next_batch().await.unwrap(),
            vec![Invalidation { ino: 7 }]
        );
        drop(Closer(q));
        assert!(rx.next_batch().await.is_none());
    }
}
