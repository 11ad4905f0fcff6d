//! In-memory validity of cached statuses: which callbacks hold right now.
//!
//! The persistent cache keeps statuses across restarts, but a callback is
//! only a promise to this running client: after a restart (or a break) a
//! status is revalidated with the fileserver before its data is served.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use cache::{FidKey, StatusRecord};

/// Seconds since the epoch.
pub(crate) fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

struct Entry {
    status: StatusRecord,
    /// Unix seconds until which the callback holds; 0 when it does not.
    valid_until: u64,
}

/// Statuses with a live callback, and a break counter.
///
/// `epoch` counts breaks. A fetch notes the epoch before its RPC; if a break
/// arrived meanwhile the reply may predate it, so the result is stored but
/// not trusted (the next access revalidates).
#[derive(Default)]
pub(crate) struct StatusTable {
    map: Mutex<HashMap<FidKey, Entry>>,
    epoch: AtomicU64,
}

impl StatusTable {
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// The status if its callback holds now.
    pub(crate) fn valid(&self, key: &FidKey) -> Option<StatusRecord> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let e = map.get(key)?;
        (e.valid_until > now_secs()).then(|| e.status.clone())
    }

    /// The last known status, valid or not.
    pub(crate) fn known(&self, key: &FidKey) -> Option<StatusRecord> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.get(key).map(|e| e.status.clone())
    }

    /// Records a status fetched when the break counter read `epoch`.
    pub(crate) fn set(&self, key: FidKey, status: StatusRecord, epoch: u64) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let valid_until = if self.epoch() == epoch {
            status.callback_expires
        } else {
            0
        };
        map.insert(
            key,
            Entry {
                status,
                valid_until,
            },
        );
    }

    pub(crate) fn break_fid(&self, key: &FidKey) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        if let Some(e) = self
            .map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(key)
        {
            e.valid_until = 0;
        }
    }

    pub(crate) fn break_volume(&self, cell: Option<&str>, volume: u32) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        for (k, e) in self
            .map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter_mut()
        {
            if k.volume == volume && cell.is_none_or(|c| k.cell == c) {
                e.valid_until = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(exp: u64) -> StatusRecord {
        StatusRecord {
            file_type: 1,
            length: 0,
            data_version: 1,
            mode: 0o644,
            owner: 0,
            group: 0,
            link_count: 1,
            author: 0,
            client_modtime: 0,
            server_modtime: 0,
            parent_vnode: 0,
            parent_unique: 0,
            anonymous_access: 0,
            callback_expires: exp,
            fetched_at: 0,
        }
    }

    #[test]
    fn breaks_and_expiry_invalidate() {
        let t = StatusTable::default();
        let k = FidKey::new("c", 5, 2, 3);
        let e = t.epoch();
        t.set(k.clone(), st(now_secs() + 100), e);
        assert!(t.valid(&k).is_some());
        t.break_fid(&k);
        assert!(t.valid(&k).is_none());
        assert!(t.known(&k).is_some());
        t.set(k.clone(), st(now_secs() + 100), t.epoch());
        t.break_volume(Some("c"), 5);
        assert!(t.valid(&k).is_none());
        t.set(k.clone(), st(now_secs().saturating_sub(1)), t.epoch());
        assert!(t.valid(&k).is_none(), "expired callback");
    }

    #[test]
    fn fetch_racing_a_break_is_not_trusted() {
        let t = StatusTable::default();
        let k = FidKey::new("c", 5, 2, 3);
        let before = t.epoch();
        t.break_fid(&FidKey::new("c", 5, 4, 4));
        t.set(k.clone(), st(now_secs() + 100), before);
        assert!(t.valid(&k).is_none());
    }
}
