//! Directories: listings of the current data version, parsed once and kept
//! in memory with a name index, persisted in the store, fetched whole with
//! FetchData64 when missing or stale, and edited in place after our own
//! changes when the data version moved by exactly one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use afs_proto::types::{FetchStatus, Fid, FileType};
use cache::{Batch, DirEntryRecord, DirRecord, FidKey, Op, StatusRecord, Store};

use crate::identity::Identity;
use crate::inode::NodeRef;
use crate::validate::{Validator, PRSFS_LOOKUP};
use crate::{Error, Result, Stats};

/// How many times a listing is fetched again when it keeps changing.
const MAX_RETRIES: usize = 5;

/// The listing of a directory just made: `.` and `..` only.
pub(crate) fn empty_listing(dir: Fid, parent: Fid, data_version: u64) -> DirRecord {
    let entry = |name: &[u8], f: Fid| DirEntryRecord {
        name: name.to_vec(),
        vnode: f.vnode,
        unique: f.unique,
    };
    DirRecord {
        data_version,
        entries: vec![entry(b".", dir), entry(b"..", parent)],
    }
}

/// A parsed directory with a name index, for one data version.
pub(crate) struct ParsedDir {
    pub data_version: u64,
    pub entries: Vec<DirEntryRecord>,
    index: HashMap<Vec<u8>, usize>,
}

impl ParsedDir {
    fn new(rec: DirRecord) -> Self {
        let index = rec
            .entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.name.clone(), i))
            .collect();
        ParsedDir {
            data_version: rec.data_version,
            entries: rec.entries,
            index,
        }
    }

    /// The position of entry `name`.
    pub(crate) fn position(&self, name: &[u8]) -> Option<usize> {
        self.index.get(name).copied()
    }

    /// The entry `name`.
    pub(crate) fn get(&self, name: &[u8]) -> Option<&DirEntryRecord> {
        self.position(name).map(|i| &self.entries[i])
    }
}

/// The directory listings this client holds.
pub(crate) struct Dirs {
    store: Arc<dyn Store>,
    stats: Arc<Stats>,
    valid: Arc<Validator>,
    parsed: Mutex<HashMap<FidKey, Arc<ParsedDir>>>,
}

impl Dirs {
    pub(crate) fn new(store: Arc<dyn Store>, stats: Arc<Stats>, valid: Arc<Validator>) -> Self {
        Dirs {
            store,
            stats,
            valid,
            parsed: Mutex::new(HashMap::new()),
        }
    }

    fn cached(&self, key: &FidKey) -> Option<Arc<ParsedDir>> {
        self.parsed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
    }

    fn remember(&self, key: FidKey, d: Arc<ParsedDir>) {
        self.parsed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, d);
    }

    /// Drops in-memory listings of the matching fids (flushes).
    pub(crate) fn forget(&self, matches: impl Fn(&FidKey) -> bool) {
        self.parsed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|k, _| !matches(k));
    }

    /// The listing held of a directory, whatever its version: the local
    /// view of one changed offline.
    pub(crate) fn held(&self, node: &NodeRef) -> Result<Option<DirRecord>> {
        let key = node.key();
        if let Some(d) = self.cached(&key) {
            return Ok(Some(DirRecord {
                data_version: d.data_version,
                entries: d.entries.clone(),
            }));
        }
        Ok(self.store.get_dir(&key)?)
    }

    /// Makes `rec` the listing served for `key` (a local edit, written to
    /// the store by the caller's batch).
    pub(crate) fn set_held(&self, key: FidKey, rec: DirRecord) {
        self.remember(key, Arc::new(ParsedDir::new(rec)));
    }

    /// The entry `name` of a cached listing, whatever its version (what a
    /// change relies on, for the record's base state).
    pub(crate) fn cached_entry(&self, dir: &NodeRef, name: &[u8]) -> Option<DirEntryRecord> {
        self.cached(&dir.key()).and_then(|d| d.get(name).cloned())
    }

    /// The listing of the current data version, for a caller with the
    /// lookup right.
    pub(crate) async fn dir(&self, node: &NodeRef, who: &Identity) -> Result<Arc<ParsedDir>> {
        let key = node.key();
        for _ in 0..MAX_RETRIES {
            let st = self.valid.valid_status(node, who).await?;
            if st.file_type != FileType::Directory.as_u32() {
                return Err(Error::NotDir);
            }
            // Listing or searching needs the lookup right, cached or not.
            self.valid.require(node, who, PRSFS_LOOKUP)?;
            if let Some(d) = self.cached(&key) {
                if d.data_version == st.data_version {
                    Stats::add(&self.stats.dir_hits, 1);
                    return Ok(d);
                }
            }
            if let Some(rec) = self.store.get_dir(&key)? {
                if rec.data_version == st.data_version {
                    Stats::add(&self.stats.dir_hits, 1);
                    let d = Arc::new(ParsedDir::new(rec));
                    self.remember(key.clone(), d.clone());
                    return Ok(d);
                }
            }
            Stats::add(&self.stats.dir_misses, 1);
            let (reply, start, epoch) = self.valid.fetch_data(node, who, 0, st.length).await?;
            if reply.data.len() as u64 != reply.status.length {
                // The directory changed size between our status and the
                // fetch: the blob is cut short. Record the new status and
                // fetch again rather than cache a partial listing.
                self.valid.apply_status(
                    &key,
                    &reply.status,
                    &reply.callback,
                    start,
                    epoch,
                    Batch::clean(),
                )?;
                continue;
            }
            let entries = afs_proto::dir::parse_dir(&reply.data)
                .map_err(|e| Error::Protocol(format!("directory {key:?}: {e}")))?;
            let rec = DirRecord {
                data_version: reply.status.data_version,
                entries: entries
                    .into_iter()
                    .map(|e| DirEntryRecord {
                        name: e.name,
                        vnode: e.vnode,
                        unique: e.unique,
                    })
                    .collect(),
            };
            let mut batch = Batch::clean();
            batch.push(Op::PutDir(key.clone(), rec.clone()));
            let new = self.valid.record_reply(
                &key,
                who,
                &reply.status,
                &reply.callback,
                start,
                epoch,
                batch,
            )?;
            if new.data_version == rec.data_version {
                let d = Arc::new(ParsedDir::new(rec));
                self.remember(key.clone(), d.clone());
                return Ok(d);
            }
        }
        Err(Error::Protocol(format!("directory {key:?} keeps changing")))
    }

    /// The fid of entry `name` of directory `dir` (lookup right required).
    pub(crate) async fn entry(
        &self,
        dir: &NodeRef,
        who: &Identity,
        name: &[u8],
    ) -> Result<Option<Fid>> {
        let d = self.dir(dir, who).await?;
        Ok(d.get(name)
            .map(|e| Fid::new(dir.fid.volume, e.vnode, e.unique)))
    }

    /// Applies a directory's new status after our change. When its data
    /// version moved by exactly one (our change alone), the cached listing
    /// is edited in place with `edit`; otherwise it is dropped and fetched
    /// at next use.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn apply_change(
        &self,
        dir: &NodeRef,
        who: &Identity,
        new_status: &FetchStatus,
        old: Option<&StatusRecord>,
        start: u64,
        epoch: u64,
        edit: impl FnOnce(&mut Vec<DirEntryRecord>) -> bool,
    ) -> Result<()> {
        let key = dir.key();
        let mut batch = Batch::clean();
        let mut new_dir = None;
        if let (Some(o), Some(d)) = (old, self.cached(&key)) {
            if d.data_version == o.data_version && new_status.data_version == o.data_version + 1 {
                let mut entries = d.entries.clone();
                if edit(&mut entries) {
                    let rec = DirRecord {
                        data_version: new_status.data_version,
                        entries,
                    };
                    batch.push(Op::PutDir(key.clone(), rec.clone()));
                    new_dir = Some(rec);
                }
            }
        }
        self.valid
            .apply_own(dir, who, new_status, old, start, epoch, batch)?;
        if let Some(rec) = new_dir {
            self.remember(key, Arc::new(ParsedDir::new(rec)));
        }
        Ok(())
    }
}
