//! The on-disk store, on RocksDB.

use std::path::Path;

use rocksdb::{Options, WriteBatch, DB};
use serde::{de::DeserializeOwned, Serialize};

use crate::key::{
    all_tokens_prefix, chunk_key, chunk_prefix, dir_key, meta_key, prefix_end, status_key,
    token_key,
};
use crate::{Batch, DirRecord, Error, FidKey, Op, Result, StatusRecord, Store, TokenRecord};

/// A RocksDB database in the cache directory. RocksDB's lock file keeps a
/// second daemon from opening the same cache.
pub struct RocksStore {
    db: DB,
}

impl RocksStore {
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|source| Error::Dir {
            path: dir.display().to_string(),
            source,
        })?;
        // The store holds tokens: only the daemon's user may enter.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(
            |source| Error::Dir {
                path: dir.display().to_string(),
                source,
            },
        )?;
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.set_max_open_files(256);
        opts.set_keep_log_file_num(3);
        let db = DB::open(&opts, dir.join("db"))?;
        Ok(RocksStore { db })
    }

    fn get_raw(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.db.get(key)?)
    }
}

pub(crate) fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    // Serialising plain structs of integers and byte vectors cannot fail.
    bincode::serialize(v).unwrap_or_default()
}

pub(crate) fn decode<T: DeserializeOwned>(key: &[u8], v: &[u8]) -> Result<T> {
    bincode::deserialize(v).map_err(|e| Error::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        msg: e.to_string(),
    })
}

impl Store for RocksStore {
    fn get_status(&self, fid: &FidKey) -> Result<Option<StatusRecord>> {
        let key = status_key(fid);
        self.get_raw(&key)?.map(|v| decode(&key, &v)).transpose()
    }
    fn get_chunk(&self, fid: &FidKey, dv: u64, index: u64) -> Result<Option<Vec<u8>>> {
        self.get_raw(&chunk_key(fid, dv, index))
    }
    fn get_dir(&self, fid: &FidKey) -> Result<Option<DirRecord>> {
        let key = dir_key(fid);
        self.get_raw(&key)?.map(|v| decode(&key, &v)).transpose()
    }
    fn get_meta(&self, name: &str) -> Result<Option<Vec<u8>>> {
        self.get_raw(&meta_key(name))
    }
    fn tokens(&self) -> Result<Vec<TokenRecord>> {
        let start = all_tokens_prefix();
        let end = prefix_end(&start);
        let mut out = Vec::new();
        for item in self.db.iterator(rocksdb::IteratorMode::From(
            &start,
            rocksdb::Direction::Forward,
        )) {
            let (k, v) = item?;
            if k.as_ref() >= end.as_slice() {
                break;
            }
            out.push(decode(&k, &v)?);
        }
        Ok(out)
    }
    fn apply(&self, batch: Batch) -> Result<()> {
        let batch_durable = batch.durable;
        let mut wb = WriteBatch::default();
        for op in batch.ops {
            match op {
                Op::PutStatus(fid, rec) => wb.put(status_key(&fid), encode(&rec)),
                Op::DeleteStatus(fid) => wb.delete(status_key(&fid)),
                Op::PutChunk {
                    fid,
                    data_version,
                    index,
                    data,
                } => wb.put(chunk_key(&fid, data_version, index), data),
                Op::DeleteChunks(fid) => {
                    let start = chunk_prefix(&fid);
                    let end = prefix_end(&start);
                    wb.delete_range(start, end)
                }
                Op::PutDir(fid, rec) => wb.put(dir_key(&fid), encode(&rec)),
                Op::DeleteDir(fid) => wb.delete(dir_key(&fid)),
                Op::PutMeta(name, v) => wb.put(meta_key(&name), v),
                Op::PutToken(t) => wb.put(token_key(t.uid, &t.cell), encode(&t)),
                Op::DeleteToken { uid, cell } => wb.delete(token_key(uid, &cell)),
            }
        }
        let mut wo = rocksdb::WriteOptions::default();
        wo.disable_wal(!batch_durable);
        self.db.write_opt(wb, &wo)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryStore;

    fn status(dv: u64) -> StatusRecord {
        StatusRecord {
            file_type: 1,
            length: 10,
            data_version: dv,
            mode: 0o644,
            owner: 1,
            group: 0,
            link_count: 1,
            author: 1,
            client_modtime: 5,
            server_modtime: 6,
            parent_vnode: 1,
            parent_unique: 1,
            anonymous_access: 0,
            callback_expires: 0,
            fetched_at: 0,
        }
    }

    fn exercise(store: &dyn Store) {
        let a = FidKey::new("test.lab", 536870915, 2, 3);
        let b = FidKey::new("test.lab", 536870915, 2, 4);
        let mut batch = Batch::new();
        batch
            .push(Op::PutStatus(a.clone(), status(7)))
            .push(Op::PutChunk {
                fid: a.clone(),
                data_version: 7,
                index: 0,
                data: b"abc".to_vec(),
            })
            .push(Op::PutChunk {
                fid: a.clone(),
                data_version: 7,
                index: 1,
                data: b"def".to_vec(),
            })
            .push(Op::PutChunk {
                fid: b.clone(),
                data_version: 1,
                index: 0,
                data: b"other".to_vec(),
            });
        store.apply(batch).unwrap();
        assert_eq!(store.get_status(&a).unwrap(), Some(status(7)));
        assert_eq!(
            store.get_chunk(&a, 7, 1).unwrap().as_deref(),
            Some(&b"def"[..])
        );
        // A chunk of another data version is a different record.
        assert_eq!(store.get_chunk(&a, 8, 1).unwrap(), None);

        let mut batch = Batch::new();
        batch.push(Op::DeleteChunks(a.clone()));
        store.apply(batch).unwrap();
        assert_eq!(store.get_chunk(&a, 7, 0).unwrap(), None);
        assert_eq!(store.get_chunk(&a, 7, 1).unwrap(), None);
        // A neighbouring fid is untouched by the range delete.
        assert_eq!(
            store.get_chunk(&b, 1, 0).unwrap().as_deref(),
            Some(&b"other"[..])
        );

        let dir = DirRecord {
            data_version: 3,
            entries: vec![crate::DirEntryRecord {
                name: b"x".to_vec(),
                vnode: 2,
                unique: 3,
            }],
        };
        let mut batch = Batch::new();
        batch.push(Op::PutDir(b.clone(), dir.clone()));
        batch.push(Op::PutMeta("uuid".into(), vec![1, 2]));
        store.apply(batch).unwrap();
        assert_eq!(store.get_dir(&b).unwrap(), Some(dir));
        assert_eq!(store.get_meta("uuid").unwrap(), Some(vec![1, 2]));

        let tok = |uid: u32, cell: &str| crate::TokenRecord {
            uid,
            cell: cell.into(),
            vice_id: 2,
            principal: "alice@TEST.LAB".into(),
            kvno: 256,
            ticket: vec![0x61, 1, 2],
            session_key: [1; 8],
            start: 10,
            end: 20,
        };
        let mut batch = Batch::new();
        batch.push(Op::PutToken(tok(1000, "a.lab")));
        batch.push(Op::PutToken(tok(1000, "b.lab")));
        batch.push(Op::PutToken(tok(1001, "a.lab")));
        store.apply(batch).unwrap();
        assert_eq!(store.tokens().unwrap().len(), 3);
        let mut batch = Batch::new();
        batch.push(Op::DeleteToken {
            uid: 1000,
            cell: "a.lab".into(),
        });
        store.apply(batch).unwrap();
        let left = store.tokens().unwrap();
        assert_eq!(left, vec![tok(1000, "b.lab"), tok(1001, "a.lab")]);
    }

    #[test]
    fn memory_store_semantics() {
        exercise(&MemoryStore::new());
    }

    #[test]
    fn rocks_store_semantics_and_persistence() {
        let tmp = tempfile::tempdir().unwrap();
        {
            let store = RocksStore::open(tmp.path()).unwrap();
            exercise(&store);
        }
        let store = RocksStore::open(tmp.path()).unwrap();
        let b = FidKey::new("test.lab", 536870915, 2, 4);
        assert_eq!(
            store.get_chunk(&b, 1, 0).unwrap().as_deref(),
            Some(&b"other"[..])
        );
        assert_eq!(store.get_meta("uuid").unwrap(), Some(vec![1, 2]));
        assert_eq!(store.tokens().unwrap().len(), 2, "tokens survive a reopen");
    }

    #[test]
    fn second_open_of_same_cache_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let _first = RocksStore::open(tmp.path()).unwrap();
        assert!(RocksStore::open(tmp.path()).is_err());
    }
}
