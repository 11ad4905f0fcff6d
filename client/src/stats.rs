//! Counters that prove what was and was not fetched.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Counters of one cache manager: RPCs per service and opcode, cache hits and
/// misses, bytes fetched from fileservers, callback breaks received.
#[derive(Default)]
pub struct Stats {
    rpcs: Mutex<BTreeMap<String, u64>>,
    rpc_errors: Mutex<BTreeMap<String, u64>>,
    pub chunk_hits: AtomicU64,
    pub chunk_misses: AtomicU64,
    pub dir_hits: AtomicU64,
    pub dir_misses: AtomicU64,
    pub status_hits: AtomicU64,
    pub status_misses: AtomicU64,
    pub bytes_fetched: AtomicU64,
    /// File bytes sent with StoreData64.
    pub bytes_stored: AtomicU64,
    pub callback_breaks: AtomicU64,
}

impl Stats {
    pub(crate) fn rpc(&self, name: &str) {
        *self
            .rpcs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(name.to_string())
            .or_default() += 1;
    }

    pub(crate) fn rpc_error(&self, name: &str) {
        *self
            .rpc_errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(name.to_string())
            .or_default() += 1;
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Count of calls made with this name (`FS.FetchData64`, `VL.GetEntryByNameU`).
    pub fn rpc_count(&self, name: &str) -> u64 {
        self.rpcs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .copied()
            .unwrap_or(0)
    }

    /// One `name value` pair per line, stable order: easy for people and scripts.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (k, v) in self.rpcs.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            out.push_str(&format!("rpc {k} {v}\n"));
        }
        for (k, v) in self
            .rpc_errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            out.push_str(&format!("rpc_error {k} {v}\n"));
        }
        let c = |a: &AtomicU64| a.load(Ordering::Relaxed);
        for (k, v) in [
            ("cache.chunk_hits", c(&self.chunk_hits)),
            ("cache.chunk_misses", c(&self.chunk_misses)),
            ("cache.dir_hits", c(&self.dir_hits)),
            ("cache.dir_misses", c(&self.dir_misses)),
            ("cache.status_hits", c(&self.status_hits)),
            ("cache.status_misses", c(&self.status_misses)),
            ("bytes_fetched", c(&self.bytes_fetched)),
            ("bytes_stored", c(&self.bytes_stored)),
            ("callback_breaks", c(&self.callback_breaks)),
        ] {
            out.push_str(&format!("{k} {v}\n"));
        }
        out
    }
}
