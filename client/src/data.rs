//! File data as the server has it: chunks of a data version, from memory,
//! the store, or FetchData64, with read-ahead and one shared fetch per
//! chunk for concurrent readers.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use cache::{Batch, FidKey, Op, Store};
use tokio::sync::OnceCell;

use crate::identity::Identity;
use crate::inode::NodeRef;
use crate::validate::Validator;
use crate::{Error, Result, Stats};

/// How many DV-moved retries a read makes before giving up.
const MAX_RETRIES: usize = 5;
/// Chunks kept decoded in memory for sequential readers.
const MEM_CHUNKS: usize = 16;

type ChunkKey = (FidKey, u64, u64);
/// A chunk fetch shared by every reader waiting for it. `None` means the
/// file's data version moved while fetching.
type ChunkFetch = Arc<OnceCell<std::result::Result<Option<Arc<Vec<u8>>>, (i32, String)>>>;

/// Reads of server data.
pub(crate) struct FileData {
    store: Arc<dyn Store>,
    stats: Arc<Stats>,
    valid: Arc<Validator>,
    chunk_size: u64,
    readahead_chunks: u64,
    mem_chunks: Mutex<VecDeque<(ChunkKey, Arc<Vec<u8>>)>>,
    inflight: Mutex<HashMap<ChunkKey, ChunkFetch>>,
}

impl FileData {
    pub(crate) fn new(
        store: Arc<dyn Store>,
        stats: Arc<Stats>,
        valid: Arc<Validator>,
        chunk_size: u64,
        readahead_chunks: u64,
    ) -> Self {
        FileData {
            store,
            stats,
            valid,
            chunk_size,
            readahead_chunks,
            mem_chunks: Mutex::new(VecDeque::new()),
            inflight: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn chunk_size(&self) -> u64 {
        self.chunk_size
    }

    /// Drops in-memory chunks of the matching fids (flushes).
    pub(crate) fn forget(&self, matches: impl Fn(&FidKey) -> bool) {
        self.mem_chunks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(k, _)| !matches(&k.0));
    }

    /// Reads `[offset, offset+size)` of the node's current data version.
    /// The caller has checked `who`'s right to read.
    pub(crate) async fn read(
        self: &Arc<Self>,
        node: &NodeRef,
        offset: u64,
        size: u64,
        who: &Identity,
    ) -> Result<Vec<u8>> {
        let key = node.key();
        let cs = self.chunk_size;
        'attempt: for _ in 0..MAX_RETRIES {
            let st = self.valid.valid_status(node, who).await?;
            if st.file_type == afs_proto::types::FileType::Directory.as_u32() {
                return Err(Error::IsDir);
            }
            if offset >= st.length || size == 0 {
                return Ok(Vec::new());
            }
            let end = st.length.min(offset.saturating_add(size));
            let first = offset / cs;
            let last = (end - 1) / cs;
            let mut out = Vec::with_capacity((end - offset) as usize);
            for idx in first..=last {
                let Some(chunk) = self.chunk(node, st.data_version, idx, who).await? else {
                    continue 'attempt;
                };
                let cstart = idx * cs;
                let want_len = cs.min(st.length - cstart);
                if (chunk.len() as u64) < want_len {
                    // Shorter than the status says: the file changed under us.
                    self.valid.forget(&key);
                    continue 'attempt;
                }
                let from = offset.max(cstart) - cstart;
                let to = end.min(cstart + cs) - cstart;
                out.extend_from_slice(&chunk[from as usize..to as usize]);
            }
            self.readahead(node, st.data_version, st.length, last + 1, who);
            return Ok(out);
        }
        Err(Error::Protocol(format!(
            "{key:?} keeps changing while being read"
        )))
    }

    fn readahead(
        self: &Arc<Self>,
        node: &NodeRef,
        dv: u64,
        length: u64,
        from: u64,
        who: &Identity,
    ) {
        let cs = self.chunk_size;
        let chunks = length.div_ceil(cs);
        for idx in from..chunks.min(from + self.readahead_chunks) {
            let k = (node.key(), dv, idx);
            if self.mem_chunk(&k).is_some()
                || self
                    .inflight
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .contains_key(&k)
            {
                continue;
            }
            let me = self.clone();
            let node = node.clone();
            let who = who.clone();
            tokio::spawn(async move {
                if let Err(e) = me.chunk(&node, dv, idx, &who).await {
                    tracing::debug!("read-ahead of chunk {idx}: {e}");
                }
            });
        }
    }

    fn mem_chunk(&self, k: &ChunkKey) -> Option<Arc<Vec<u8>>> {
        let m = self.mem_chunks.lock().unwrap_or_else(|e| e.into_inner());
        m.iter()
            .rev()
            .find(|(kk, _)| kk == k)
            .map(|(_, v)| v.clone())
    }

    fn remember_chunk(&self, k: ChunkKey, v: Arc<Vec<u8>>) {
        let mut m = self.mem_chunks.lock().unwrap_or_else(|e| e.into_inner());
        m.retain(|(kk, _)| kk != &k);
        m.push_back((k, v));
        while m.len() > MEM_CHUNKS {
            m.pop_front();
        }
    }

    /// One chunk of data version `dv`: from memory, the store, or the
    /// fileserver. Concurrent requests for the same chunk share one fetch.
    /// `None`: the data version moved; the caller starts over.
    async fn chunk(
        &self,
        node: &NodeRef,
        dv: u64,
        idx: u64,
        who: &Identity,
    ) -> Result<Option<Arc<Vec<u8>>>> {
        let k: ChunkKey = (node.key(), dv, idx);
        if let Some(c) = self.mem_chunk(&k) {
            Stats::add(&self.stats.chunk_hits, 1);
            self.store.touch(&k.0, dv, idx);
            return Ok(Some(c));
        }
        if let Some(c) = self.store.get_chunk(&k.0, dv, idx)? {
            Stats::add(&self.stats.chunk_hits, 1);
            self.store.touch(&k.0, dv, idx);
            let c = Arc::new(c);
            self.remember_chunk(k, c.clone());
            return Ok(Some(c));
        }
        let cell = self
            .inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(k.clone())
            .or_default()
            .clone();
        let res = cell
            .get_or_init(|| async {
                Stats::add(&self.stats.chunk_misses, 1);
                self.fetch_chunk(node, dv, idx, who)
                    .await
                    .map_err(|e| (e.errno(), e.to_string()))
            })
            .await
            .clone();
        self.inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&k);
        res.map_err(|(errno, msg)| Error::Shared { errno, msg })
    }

    async fn fetch_chunk(
        &self,
        node: &NodeRef,
        dv: u64,
        idx: u64,
        who: &Identity,
    ) -> Result<Option<Arc<Vec<u8>>>> {
        let key = node.key();
        let cs = self.chunk_size;
        let (reply, start, epoch) = self.valid.fetch_data(node, who, idx * cs, cs).await?;
        let got_dv = reply.status.data_version;
        let data = Arc::new(reply.data);
        let mut batch = Batch::clean();
        batch.push(Op::PutChunk {
            fid: key.clone(),
            data_version: got_dv,
            index: idx,
            data: data.to_vec(),
        });
        self.valid.record_reply(
            &key,
            who,
            &reply.status,
            &reply.callback,
            start,
            epoch,
            batch,
        )?;
        self.remember_chunk((key, got_dv, idx), data.clone());
        Ok((got_dv == dv).then_some(data))
    }
}
