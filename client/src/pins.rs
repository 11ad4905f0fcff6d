//! What is pinned: the pin records users made (`afsd-rs pin`), the objects
//! each pin holds, and the queue of pinned objects to fetch again.
//!
//! A pin is hard, unlike Coda's hoard priorities: every chunk of a pinned
//! file's current data version, its directory listings, symlink targets
//! and mount point texts stay in the cache whatever else is read. The
//! cache enforces it ([`cache::Store::set_pinned`] keeps a fid's chunks
//! from eviction); this module says which fids, and persists that in two
//! record spaces, so that a pin survives restarts:
//!
//! - [`SPACE_PIN`]: one [`PinRecord`] per pin, keyed by its id;
//! - [`SPACE_PINNED`]: one [`Member`] per (pin, fid), keyed by both.
//!
//! A fid held by several pins stays pinned until the last one goes. A
//! callback break on a pinned object queues it ([`PinSet::queue`]); the
//! refresher (`pinning.rs`) fetches the new version in the background.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use afs_proto::types::Fid;
use cache::{Batch, FidKey, Op, Store};
use serde::{Deserialize, Serialize};

use crate::inode::NodeRef;
use crate::journal::fid_record_key;
use crate::{Result, VolType};

/// Record space of pin records.
pub(crate) const SPACE_PIN: u8 = b'p';
/// Record space of pin members.
pub(crate) const SPACE_PINNED: u8 = b'n';

/// One pin, as `afsd-rs pin` made it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinRecord {
    pub id: u64,
    /// Who pinned: data is fetched again with this user's token.
    pub uid: u32,
    pub cell: String,
    /// The fid of the pinned path.
    pub root: (u32, u32, u32),
    pub read_only: bool,
    /// The path as the user named it (absolute).
    pub path: String,
    /// `-r`: the whole tree under a directory, not just its entries.
    pub recursive: bool,
    /// `--future`: objects that appear in the tree later are pinned too.
    pub future: bool,
    /// Unix seconds.
    pub added: u64,
}

/// What a pinned object is, for fetching it again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum MemberKind {
    File,
    Dir,
    Symlink,
    MountPoint,
}

impl MemberKind {
    /// Objects whose data is chunks (a directory's listing is a record).
    pub(crate) fn has_data(self) -> bool {
        self != MemberKind::Dir
    }
}

/// One object a pin holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Member {
    pub kind: MemberKind,
    /// Its length when last walked or fetched: what the pin reserves.
    pub length: u64,
    pub read_only: bool,
}

impl Member {
    pub(crate) fn node(&self, key: &FidKey) -> NodeRef {
        NodeRef {
            cell: key.cell.clone(),
            fid: Fid::new(key.volume, key.vnode, key.unique),
            vol_type: if self.read_only {
                VolType::Ro
            } else {
                VolType::Rw
            },
        }
    }
}

fn member_key(id: u64, key: &FidKey) -> Vec<u8> {
    let mut k = id.to_be_bytes().to_vec();
    k.extend_from_slice(&fid_record_key(key));
    k
}

fn parse_member_key(k: &[u8]) -> Option<(u64, FidKey)> {
    let id = u64::from_be_bytes(k.get(..8)?.try_into().ok()?);
    let n = *k.get(8)? as usize;
    let cell = std::str::from_utf8(k.get(9..9 + n)?).ok()?;
    let at = 9 + n;
    let long = |i: usize| -> Option<u32> {
        Some(u32::from_be_bytes(
            k.get(at + i..at + i + 4)?.try_into().ok()?,
        ))
    };
    Some((id, FidKey::new(cell, long(0)?, long(4)?, long(8)?)))
}

#[derive(Default)]
struct State {
    pins: BTreeMap<u64, PinRecord>,
    members: BTreeMap<u64, BTreeMap<FidKey, Member>>,
    by_fid: HashMap<FidKey, BTreeSet<u64>>,
    next_id: u64,
}

/// The pins, their members, and the queue of pinned objects to refresh.
pub(crate) struct PinSet {
    store: Arc<dyn Store>,
    state: Mutex<State>,
    queue: Mutex<BTreeSet<FidKey>>,
    /// Wakes the refresher: something was queued.
    pub(crate) wake: Arc<tokio::sync::Notify>,
}

impl PinSet {
    /// Loads the pins and pins their members in the store. Called before
    /// anything can be evicted.
    pub(crate) fn load(store: Arc<dyn Store>) -> Result<PinSet> {
        let mut st = State {
            next_id: 1,
            ..State::default()
        };
        for (k, v) in store.records(SPACE_PIN)? {
            match serde_json::from_slice::<PinRecord>(&v) {
                Ok(p) => {
                    st.next_id = st.next_id.max(p.id + 1);
                    st.pins.insert(p.id, p);
                }
                Err(e) => tracing::warn!(key = ?k, "a pin record that does not parse: {e}"),
            }
        }
        for (k, v) in store.records(SPACE_PINNED)? {
            let (Some((id, key)), Ok(m)) = (parse_member_key(&k), serde_json::from_slice(&v))
            else {
                tracing::warn!(key = ?k, "a pin member record that does not parse");
                continue;
            };
            if !st.pins.contains_key(&id) {
                continue;
            }
            store.set_pinned(&key, true);
            st.by_fid.entry(key.clone()).or_default().insert(id);
            st.members.entry(id).or_default().insert(key, m);
        }
        Ok(PinSet {
            store,
            state: Mutex::new(st),
            queue: Mutex::new(BTreeSet::new()),
            wake: Arc::new(tokio::sync::Notify::new()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn contains(&self, key: &FidKey) -> bool {
        self.lock().by_fid.contains_key(key)
    }

    /// Whether any object of a volume is pinned.
    pub(crate) fn in_volume(&self, cell: &str, volume: u32) -> bool {
        self.lock()
            .by_fid
            .keys()
            .any(|k| k.volume == volume && k.cell == cell)
    }

    pub(crate) fn all(&self) -> Vec<PinRecord> {
        self.lock().pins.values().cloned().collect()
    }

    pub(crate) fn members(&self, id: u64) -> Vec<(FidKey, Member)> {
        self.lock()
            .members
            .get(&id)
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    }

    /// The pins holding a fid, with its member record in each.
    pub(crate) fn holders(&self, key: &FidKey) -> Vec<(PinRecord, Member)> {
        let st = self.lock();
        st.by_fid
            .get(key)
            .into_iter()
            .flatten()
            .filter_map(|id| {
                let p = st.pins.get(id)?;
                let m = st.members.get(id)?.get(key)?;
                Some((p.clone(), m.clone()))
            })
            .collect()
    }

    /// Bytes every pin reserves: each pinned fid's length, once.
    pub(crate) fn reserved(&self) -> u64 {
        let st = self.lock();
        st.by_fid
            .iter()
            .filter_map(|(k, ids)| {
                ids.iter()
                    .filter_map(|id| st.members.get(id)?.get(k))
                    .map(|m| m.length)
                    .max()
            })
            .sum()
    }

    /// Adds a pin and its members (or members to an existing pin), durably.
    /// The store pins the fids first, so nothing of them is evicted from
    /// the moment the records exist.
    pub(crate) fn add(&self, pin: &PinRecord, members: &[(FidKey, Member)]) -> Result<()> {
        for (k, _) in members {
            self.store.set_pinned(k, true);
        }
        let mut b = Batch::synced();
        b.push(Op::PutRecord {
            space: SPACE_PIN,
            key: pin.id.to_be_bytes().to_vec(),
            value: serde_json::to_vec(pin).unwrap_or_default(),
        });
        for (k, m) in members {
            b.push(Op::PutRecord {
                space: SPACE_PINNED,
                key: member_key(pin.id, k),
                value: serde_json::to_vec(m).unwrap_or_default(),
            });
        }
        if let Err(e) = self.store.apply(b) {
            for (k, _) in members {
                if !self.contains(k) {
                    self.store.set_pinned(k, false);
                }
            }
            return Err(e.into());
        }
        let mut st = self.lock();
        st.pins.insert(pin.id, pin.clone());
        for (k, m) in members {
            st.by_fid.entry(k.clone()).or_default().insert(pin.id);
            st.members
                .entry(pin.id)
                .or_default()
                .insert(k.clone(), m.clone());
        }
        Ok(())
    }

    /// A new pin id.
    pub(crate) fn next_id(&self) -> u64 {
        let mut st = self.lock();
        let id = st.next_id;
        st.next_id += 1;
        id
    }

    /// Updates one member's length (a refreshed version).
    pub(crate) fn set_length(&self, id: u64, key: &FidKey, length: u64) -> Result<()> {
        let m = {
            let mut st = self.lock();
            let Some(m) = st.members.get_mut(&id).and_then(|m| m.get_mut(key)) else {
                return Ok(());
            };
            if m.length == length {
                return Ok(());
            }
            m.length = length;
            m.clone()
        };
        let mut b = Batch::new();
        b.push(Op::PutRecord {
            space: SPACE_PINNED,
            key: member_key(id, key),
            value: serde_json::to_vec(&m).unwrap_or_default(),
        });
        self.store.apply(b)?;
        Ok(())
    }

    /// Removes a pin; fids no other pin holds are unpinned.
    pub(crate) fn remove(&self, id: u64) -> Result<Option<PinRecord>> {
        let (pin, members) = {
            let st = self.lock();
            let Some(pin) = st.pins.get(&id).cloned() else {
                return Ok(None);
            };
            let members: Vec<FidKey> = st
                .members
                .get(&id)
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default();
            (pin, members)
        };
        let mut b = Batch::synced();
        b.push(Op::DeleteRecord {
            space: SPACE_PIN,
            key: id.to_be_bytes().to_vec(),
        });
        for k in &members {
            b.push(Op::DeleteRecord {
                space: SPACE_PINNED,
                key: member_key(id, k),
            });
        }
        self.store.apply(b)?;
        let mut st = self.lock();
        st.pins.remove(&id);
        st.members.remove(&id);
        for k in members {
            let last = match st.by_fid.get_mut(&k) {
                Some(ids) => {
                    ids.remove(&id);
                    ids.is_empty()
                }
                None => false,
            };
            if last {
                st.by_fid.remove(&k);
                self.store.set_pinned(&k, false);
            }
        }
        Ok(Some(pin))
    }

    /// Queues a pinned object to be fetched again (its callback broke).
    pub(crate) fn queue(&self, key: &FidKey) {
        if self.contains(key) {
            self.queue
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(key.clone());
            self.wake.notify_one();
        }
    }

    /// Queues every pinned object of a volume (a volume-wide break, a
    /// reconnection).
    pub(crate) fn queue_volume(&self, cell: Option<&str>, volume: u32) {
        let keys: Vec<FidKey> = self
            .lock()
            .by_fid
            .keys()
            .filter(|k| k.volume == volume && cell.is_none_or(|c| c == k.cell))
            .cloned()
            .collect();
        if keys.is_empty() {
            return;
        }
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(keys);
        self.wake.notify_one();
    }

    /// Takes what is queued.
    pub(crate) fn take_queue(&self) -> Vec<FidKey> {
        std::mem::take(&mut *self.queue.lock().unwrap_or_else(|e| e.into_inner()))
            .into_iter()
            .collect()
    }

    /// Puts back what could not be fetched now (its volume is away).
    pub(crate) fn requeue(&self, keys: impl IntoIterator<Item = FidKey>) {
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(keys);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(kind: MemberKind, length: u64) -> Member {
        Member {
            kind,
            length,
            read_only: false,
        }
    }

    fn pin(id: u64, path: &str) -> PinRecord {
        PinRecord {
            id,
            uid: 1000,
            cell: "c".into(),
            root: (7, 1, 1),
            read_only: false,
            path: path.into(),
            recursive: true,
            future: false,
            added: 0,
        }
    }

    #[test]
    fn member_keys_round_trip() {
        let k = FidKey::new("test.lab", 536870915, 12, 34);
        assert_eq!(parse_member_key(&member_key(9, &k)), Some((9, k)));
        assert_eq!(parse_member_key(&[1, 2]), None);
    }

    #[test]
    fn pins_survive_a_reload_and_overlap() {
        let store: Arc<dyn Store> = Arc::new(cache::MemoryStore::new());
        let set = PinSet::load(store.clone()).unwrap();
        let (a, b, c) = (
            FidKey::new("c", 7, 2, 1),
            FidKey::new("c", 7, 4, 1),
            FidKey::new("c", 7, 6, 1),
        );
        let p1 = pin(set.next_id(), "/afs/c/x");
        set.add(
            &p1,
            &[
                (a.clone(), member(MemberKind::File, 100)),
                (b.clone(), member(MemberKind::File, 50)),
            ],
        )
        .unwrap();
        let p2 = pin(set.next_id(), "/afs/c/x/y");
        set.add(
            &p2,
            &[
                (b.clone(), member(MemberKind::File, 50)),
                (c.clone(), member(MemberKind::Dir, 0)),
            ],
        )
        .unwrap();
        assert_eq!(set.reserved(), 150, "b counts once");
        let again = PinSet::load(store.clone()).unwrap();
        assert_eq!(again.all(), vec![p1.clone(), p2.clone()]);
        assert_eq!(again.reserved(), 150);
        assert_eq!(again.next_id(), 3);
        again.remove(p1.id).unwrap();
        assert!(!again.contains(&a));
        assert!(again.contains(&b), "still held by the second pin");
        assert_eq!(again.reserved(), 50);
        assert!(PinSet::load(store)
            .unwrap()
            .all()
            .iter()
            .all(|p| p.id != p1.id));
    }

    #[test]
    fn a_break_queues_only_pinned_objects() {
        let store: Arc<dyn Store> = Arc::new(cache::MemoryStore::new());
        let set = PinSet::load(store).unwrap();
        let a = FidKey::new("c", 7, 2, 1);
        set.add(&pin(1, "/p"), &[(a.clone(), member(MemberKind::File, 1))])
            .unwrap();
        set.queue(&FidKey::new("c", 7, 8, 1));
        assert!(set.take_queue().is_empty());
        set.queue(&a);
        set.queue_volume(Some("c"), 7);
        assert_eq!(set.take_queue(), vec![a]);
    }
}
