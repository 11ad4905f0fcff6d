//! Counters that prove what was and was not fetched.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use afs_proto::{fs, pt, vl, Rpc};

/// Every RPC afs-proto defines. The stats list each of them, with 0 when it
/// was never called, so that a script reading "no FetchData64" from the
/// stats reads a 0 the daemon printed, not a line that is merely missing.
pub const KNOWN_RPCS: &[&str] = &[
    vl::GetEntryByNameU::NAME,
    vl::GetAddrsU::NAME,
    vl::ProbeServer::NAME,
    fs::FetchStatus::NAME,
    fs::FetchData::NAME,
    fs::FetchData64::NAME,
    fs::InlineBulkStatus::NAME,
    fs::GetVolumeStatus::NAME,
    fs::GiveUpAllCallBacks::NAME,
    fs::GiveUpCallBacks::NAME,
    fs::GetCapabilities::NAME,
    fs::FetchAcl::NAME,
    fs::StoreAcl::NAME,
    fs::StoreStatus::NAME,
    fs::StoreData64::NAME,
    fs::CreateFile::NAME,
    fs::MakeDir::NAME,
    fs::RemoveFile::NAME,
    fs::RemoveDir::NAME,
    fs::Rename::NAME,
    fs::Symlink::NAME,
    fs::Link::NAME,
    fs::SetLock::NAME,
    fs::ExtendLock::NAME,
    fs::ReleaseLock::NAME,
    pt::NameToId::NAME,
    pt::IdToName::NAME,
];

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
    /// Statuses served from the cache with no callback (a disconnected
    /// volume, or an object with unreplayed changes).
    pub stale_served: AtomicU64,
    /// Changes written to the change log.
    pub logged: AtomicU64,
    /// Logged changes that cancelled out and will never be sent.
    pub compacted: AtomicU64,
    /// Logged changes replayed to a fileserver.
    pub replayed: AtomicU64,
    /// Logged changes that became conflicts.
    pub conflicts: AtomicU64,
    /// Reads of data not cached while its volume was disconnected (the
    /// miss policy's misses).
    pub misses: AtomicU64,
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

    /// One `name value` pair per line, stable order: easy for people and
    /// scripts. `rpc NAME N` (calls made) and `rpc_error NAME N` (calls that
    /// failed: aborts, timeouts, refused at once for a down server) come for
    /// every RPC of [`KNOWN_RPCS`], 0 included.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (tag, map) in [("rpc", &self.rpcs), ("rpc_error", &self.rpc_errors)] {
            let mut all: BTreeMap<String, u64> =
                KNOWN_RPCS.iter().map(|k| (k.to_string(), 0)).collect();
            all.extend(
                map.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .iter()
                    .map(|(k, v)| (k.clone(), *v)),
            );
            for (k, v) in all {
                out.push_str(&format!("{tag} {k} {v}\n"));
            }
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
            ("offline.stale_served", c(&self.stale_served)),
            ("offline.logged", c(&self.logged)),
            ("offline.compacted", c(&self.compacted)),
            ("offline.replayed", c(&self.replayed)),
            ("offline.conflicts", c(&self.conflicts)),
            ("offline.misses", c(&self.misses)),
        ] {
            out.push_str(&format!("{k} {v}\n"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_lists_every_known_rpc_and_error_with_zero() {
        let s = Stats::default();
        s.rpc(fs::SetLock::NAME);
        s.rpc_error(fs::SetLock::NAME);
        s.rpc(fs::SetLock::NAME);
        let text = s.render();
        assert!(text.lines().any(|l| l == "rpc RXAFS_SetLock 2"), "{text}");
        assert!(
            text.lines().any(|l| l == "rpc_error RXAFS_SetLock 1"),
            "{text}"
        );
        assert!(
            text.lines().any(|l| l == "rpc RXAFS_FetchData64 0"),
            "{text}"
        );
        assert!(
            text.lines().any(|l| l == "rpc_error VL_GetEntryByNameU 0"),
            "{text}"
        );
        for k in KNOWN_RPCS {
            assert_eq!(text.matches(&format!("rpc {k} ")).count(), 1, "{k}");
        }
    }
}
