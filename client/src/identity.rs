//! Who is asking: per-user tokens, the identities they give, and the access
//! rights each identity was granted on each file.
//!
//! The FUSE caller's uid selects its token for the cell of the file; no
//! token, or an expired one, means anonymous. Every identity has its own Rx
//! connections (the token is part of the connection key) and its own rights,
//! learned from the fileserver's CallerAccess and kept while the callback
//! holds. Cached data is served to an identity only when its rights allow.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use cache::{FidKey, TokenRecord};
use rx::{ClientSecurity, RxkadLevel};

use crate::status::now_secs;

/// The identity of anonymous (rxnull) calls.
pub(crate) const ANONYMOUS: u64 = 0;

/// How long a denial without a callback is remembered.
const DENIAL_SECS: u64 = 10;

/// Who a call is made for: the local uid, and what the fileserver will
/// take it to be (its token's AFS id, or anonymous).
#[derive(Clone, Debug)]
pub struct Identity {
    /// Names the token (0: anonymous); rights are learned per `id`, so a new
    /// token starts with no rights carried over.
    pub id: u64,
    pub security: ClientSecurity,
    /// Set when the caller holds a token for the cell that has expired:
    /// its principal, for the message that names the remedy.
    pub expired: Option<String>,
    pub uid: u32,
    /// The AFS (PTS) id the token speaks for; None when anonymous.
    pub vice_id: Option<i32>,
    /// The AFS id of the caller's token even when it has expired: what the
    /// rights cached for offline use hang on. Never sent anywhere.
    pub anchor: Option<i32>,
}

impl Identity {
    pub fn anonymous(uid: u32) -> Self {
        Identity {
            id: ANONYMOUS,
            security: ClientSecurity::Null,
            expired: None,
            uid,
            vice_id: None,
            anchor: None,
        }
    }
}

/// What `afsd-rs tokens` shows of one token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenInfo {
    pub cell: String,
    pub principal: String,
    pub vice_id: i32,
    pub start: u64,
    pub end: u64,
    pub expired: bool,
}

/// Tokens in memory, each with the generation that names its identity.
pub(crate) struct Tokens {
    map: Mutex<HashMap<(u32, String), (TokenRecord, u64)>>,
    next: AtomicU64,
    warned: Mutex<HashSet<u64>>,
    pub(crate) level: RxkadLevel,
}

impl Tokens {
    pub(crate) fn new(level: RxkadLevel, stored: Vec<TokenRecord>) -> Self {
        let t = Tokens {
            map: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
            warned: Mutex::new(HashSet::new()),
            level,
        };
        for rec in stored {
            t.insert(rec);
        }
        t
    }

    pub(crate) fn insert(&self, rec: TokenRecord) {
        let generation = self.next.fetch_add(1, Ordering::SeqCst);
        let key = (rec.uid, rec.cell.clone());
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, (rec, generation));
    }

    pub(crate) fn remove(&self, uid: u32, cell: Option<&str>) -> Vec<String> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let doomed: Vec<(u32, String)> = map
            .keys()
            .filter(|(u, c)| *u == uid && cell.is_none_or(|want| want.eq_ignore_ascii_case(c)))
            .cloned()
            .collect();
        for k in &doomed {
            map.remove(k);
        }
        doomed.into_iter().map(|(_, c)| c).collect()
    }

    pub(crate) fn list(&self, uid: u32) -> Vec<TokenInfo> {
        let now = now_secs();
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<TokenInfo> = map
            .values()
            .filter(|(r, _)| r.uid == uid)
            .map(|(r, _)| TokenInfo {
                cell: r.cell.clone(),
                principal: r.principal.clone(),
                vice_id: r.vice_id,
                start: r.start,
                end: r.end,
                expired: r.end <= now,
            })
            .collect();
        v.sort_by(|a, b| a.cell.cmp(&b.cell));
        v
    }

    /// Every token's owner, cell, end and generation (for the expiry
    /// warnings of `tokenwatch.rs`).
    pub(crate) fn ends(&self) -> Vec<crate::tokenwatch::TokenEnd> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<_> = map
            .values()
            .map(|(r, generation)| crate::tokenwatch::TokenEnd {
                uid: r.uid,
                cell: r.cell.clone(),
                end: r.end,
                generation: *generation,
            })
            .collect();
        v.sort_by(|a, b| (a.uid, &a.cell).cmp(&(b.uid, &b.cell)));
        v
    }

    /// The identity `uid` acts as in `cell`. An expired token is never
    /// used: the caller is anonymous, and the identity remembers why.
    pub(crate) fn identity(&self, uid: u32, cell: &str) -> Identity {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let Some((rec, generation)) = map.get(&(uid, cell.to_string())) else {
            return Identity::anonymous(uid);
        };
        if rec.end <= now_secs() {
            let mut id = Identity::anonymous(uid);
            id.expired = Some(rec.principal.clone());
            id.anchor = Some(rec.vice_id);
            return id;
        }
        Identity {
            id: generation << 1 | 1,
            security: ClientSecurity::Rxkad {
                level: self.level,
                session_key: rec.session_key,
                kvno: rec.kvno,
                ticket: rec.ticket.clone(),
            },
            expired: None,
            uid,
            vice_id: Some(rec.vice_id),
            anchor: Some(rec.vice_id),
        }
    }

    /// Logs, once per user and cell, that a denial may be an expired token.
    pub(crate) fn warn_expired(&self, who: &Identity, cell: &str) {
        let Some(principal) = &who.expired else {
            return;
        };
        let key = (who.uid as u64) << 32 ^ crate::identity::hash_str(cell);
        if self
            .warned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key)
        {
            tracing::warn!(
                uid = who.uid,
                "the AFS token of {principal} for {cell} has expired: run `kinit` and then `afsd-rs aklog`"
            );
        }
    }

    /// Forgets the warning once a fresh token is set.
    pub(crate) fn clear_warning(&self, uid: u32, cell: &str) {
        let key = (uid as u64) << 32 ^ hash_str(cell);
        self.warned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
    }
}

pub(crate) fn hash_str(s: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    s.hash(&mut h);
    h.finish()
}

/// Access rights per (identity, fid), valid until the callback expires or
/// breaks.
#[derive(Default)]
pub(crate) struct RightsTable {
    map: Mutex<HashMap<(u64, FidKey), (u32, u64)>>,
}

impl RightsTable {
    /// The rights if still valid.
    pub(crate) fn get(&self, id: u64, key: &FidKey) -> Option<u32> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let (r, until) = map.get(&(id, key.clone()))?;
        (*until > now_secs()).then_some(*r)
    }

    pub(crate) fn set(&self, id: u64, key: &FidKey, rights: u32, until: u64) {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((id, key.clone()), (rights, until));
    }

    pub(crate) fn deny(&self, id: u64, key: &FidKey) {
        self.set(id, key, 0, now_secs() + DENIAL_SECS);
    }

    pub(crate) fn break_fid(&self, key: &FidKey) {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(_, k), _| k != key);
    }

    pub(crate) fn break_volume(&self, volume: u32) {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(_, k), _| k.volume != volume);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tok(uid: u32, end: u64) -> TokenRecord {
        TokenRecord {
            uid,
            cell: "test.lab".into(),
            vice_id: 2,
            principal: "alice@TEST.LAB".into(),
            kvno: 256,
            ticket: vec![0x61],
            session_key: [3; 8],
            start: 1,
            end,
        }
    }

    #[test]
    fn tokens_select_identities_and_expired_ones_are_never_used() {
        let t = Tokens::new(
            RxkadLevel::Crypt,
            vec![tok(1000, now_secs() + 3600), tok(1001, 5)],
        );
        let alice = t.identity(1000, "test.lab");
        assert_ne!(alice.id, ANONYMOUS);
        assert!(matches!(
            alice.security,
            ClientSecurity::Rxkad {
                level: RxkadLevel::Crypt,
                kvno: 256,
                ..
            }
        ));
        let old = t.identity(1001, "test.lab");
        assert_eq!(old.id, ANONYMOUS);
        assert_eq!(old.security, ClientSecurity::Null);
        assert_eq!(old.expired.as_deref(), Some("alice@TEST.LAB"));
        // Anonymous to servers, yet still anchored to its AFS id for the
        // rights kept for offline use.
        assert_eq!(old.vice_id, None);
        assert_eq!(old.anchor, Some(2));
        assert_eq!(t.identity(1002, "test.lab").id, ANONYMOUS);
        assert_eq!(t.identity(1000, "other.cell").id, ANONYMOUS);
        let l = t.list(1001);
        assert_eq!(l.len(), 1);
        assert!(l[0].expired);
        assert!(!t.list(1000)[0].expired);
        // A new token is a new identity: no rights carry over.
        t.insert(tok(1000, now_secs() + 7200));
        assert_ne!(t.identity(1000, "test.lab").id, alice.id);
        assert_eq!(t.remove(1000, None), vec!["test.lab".to_string()]);
        assert_eq!(t.identity(1000, "test.lab").id, ANONYMOUS);
    }

    #[test]
    fn rights_expire_and_break() {
        let r = RightsTable::default();
        let k = FidKey::new("c", 1, 2, 3);
        r.set(7, &k, 1 | 8, now_secs() + 100);
        assert_eq!(r.get(7, &k), Some(9));
        assert_eq!(r.get(8, &k), None);
        r.break_fid(&k);
        assert_eq!(r.get(7, &k), None);
        r.set(7, &k, 1, now_secs() + 100);
        r.break_volume(1);
        assert_eq!(r.get(7, &k), None);
        r.deny(7, &k);
        assert_eq!(r.get(7, &k), Some(0));
        r.set(7, &k, 1, now_secs().saturating_sub(1));
        assert_eq!(r.get(7, &k), None);
    }
}
