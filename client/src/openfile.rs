//! Files open for writing: what is changed, where it is, and how to store it.
//!
//! A written chunk is copied into the cache under
//! [`cache::LOCAL_DATA_VERSION`] (dirty: never evicted, never served as the
//! server's data) and changed there in place. The rest of the file still
//! comes from the data version it had when opened: its first `base_len`
//! bytes, with zeros after them up to the current length. Close stores the
//! dirty chunks, in runs, with StoreData64 and the new length, then moves
//! them to the data version the fileserver gave, clean. This is also the
//! shape the offline change log needs: the data of an unstored change is
//! already in the cache, and the log only names the chunks and the length.

use std::collections::BTreeSet;

/// The write state of one open file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct OpenFile {
    /// The length the user sees now.
    pub length: u64,
    /// Bytes of the old contents still in force outside dirty chunks.
    pub base_len: u64,
    /// The length of the old contents on the server.
    pub server_len: u64,
    /// The data version the old contents are (chunks of it may be reused
    /// when our store alone moved the version).
    pub base_dv: u64,
    /// Chunks copied to the cache and changed there.
    pub dirty: BTreeSet<u64>,
    /// Contents or length differ from the fileserver's.
    pub modified: bool,
    /// Open write descriptors.
    pub writers: u32,
    /// The changes as they are now are in the change log (offline): a
    /// close has nothing more to log.
    pub logged: bool,
    /// The errno of a store the fileserver refused for a lasting reason:
    /// its changes were dropped, and each later close or fsync reports it
    /// until the next change.
    pub refused: Option<i32>,
}

/// One StoreData64 call: the bytes at `pos` are the dirty chunks listed,
/// each `len` bytes (its data, zero-padded); the file is then
/// `file_length` bytes long.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StorePiece {
    pub pos: u64,
    pub chunks: Vec<(u64, u64)>,
    pub file_length: u64,
}

impl StorePiece {
    pub fn len(&self) -> u64 {
        self.chunks.iter().map(|c| c.1).sum()
    }
}

impl OpenFile {
    /// A file of `length` bytes at data version `dv`, opened for writing.
    pub fn new(length: u64, dv: u64) -> Self {
        OpenFile {
            length,
            base_len: length,
            server_len: length,
            base_dv: dv,
            dirty: BTreeSet::new(),
            modified: false,
            writers: 0,
            refused: None,
            logged: false,
        }
    }

    /// The bytes of chunk `idx` that the file has now: at most a chunk,
    /// shorter for the last one.
    pub fn chunk_len(&self, idx: u64, cs: u64) -> u64 {
        self.length.saturating_sub(idx * cs).min(cs)
    }

    /// The old contents in chunk `idx`, as an absolute byte range, when any.
    pub fn base_span(&self, idx: u64, cs: u64) -> Option<(u64, u64)> {
        let from = idx * cs;
        let to = ((idx + 1) * cs).min(self.base_len);
        (from < to).then_some((from, to))
    }

    /// Whether the write of `[offset, end)` covers every old byte of chunk
    /// `idx`, so that copying them in first is needless.
    pub fn write_covers_base(&self, idx: u64, cs: u64, offset: u64, end: u64) -> bool {
        match self.base_span(idx, cs) {
            None => true,
            Some((from, to)) => offset <= from && end >= to,
        }
    }

    /// After a truncation to `size`: dirty chunks at or past it to drop, and
    /// the one it cuts, with its new length.
    pub fn truncate(&mut self, size: u64, cs: u64) -> (Vec<u64>, Option<(u64, u64)>) {
        let drop: Vec<u64> = self.dirty.range(size.div_ceil(cs)..).copied().collect();
        for i in &drop {
            self.dirty.remove(i);
        }
        let cut = (!size.is_multiple_of(cs))
            .then(|| size / cs)
            .filter(|i| self.dirty.contains(i))
            .map(|i| (i, size - i * cs));
        self.base_len = self.base_len.min(size);
        self.length = size;
        self.modified = true;
        (drop, cut)
    }

    /// The chunk that must hold the file's last byte: when the length runs
    /// past the old contents, the fileserver learns it from data we send
    /// (it extends a file by writing, not by a length alone).
    pub fn needs_last_chunk(&self, cs: u64) -> Option<u64> {
        if self.length > self.base_len && self.length > 0 {
            let last = (self.length - 1) / cs;
            (!self.dirty.contains(&last)).then_some(last)
        } else {
            None
        }
    }

    /// The StoreData64 calls that store this file: runs of consecutive
    /// dirty chunks, cut at `piece` bytes. No dirty chunk: one call that
    /// only sets the length. A file cut below its old contents and then
    /// extended is first cut on the server too: the fileserver truncates
    /// only to a length below what it holds, and the bytes between the cut
    /// and the new data must read as zeros, not as the old data.
    pub fn store_plan(&self, cs: u64, piece: u64) -> Vec<StorePiece> {
        let mut out: Vec<StorePiece> = Vec::new();
        if self.base_len < self.server_len && self.length > self.base_len {
            out.push(StorePiece {
                pos: self.base_len,
                chunks: Vec::new(),
                file_length: self.base_len,
            });
        }
        for &idx in &self.dirty {
            let len = self.chunk_len(idx, cs);
            if len == 0 {
                continue;
            }
            match out.last_mut() {
                Some(p)
                    if p.file_length == self.length
                        && p.chunks.last().is_some_and(|&(last, _)| last + 1 == idx)
                        && p.len() + len <= piece.max(cs) =>
                {
                    p.chunks.push((idx, len))
                }
                _ => out.push(StorePiece {
                    pos: idx * cs,
                    chunks: vec![(idx, len)],
                    file_length: self.length,
                }),
            }
        }
        if out.iter().all(|p| p.chunks.is_empty()) {
            out.push(StorePiece {
                pos: self.length,
                chunks: Vec::new(),
                file_length: self.length,
            });
        }
        out
    }

    /// Old chunks that are exactly the new contents of their range: after a
    /// store that alone moved the data version, they are reused as chunks
    /// of the new version instead of being fetched again.
    pub fn reusable_base_chunks(&self, cs: u64) -> Vec<u64> {
        let chunks = self.server_len.div_ceil(cs);
        (0..chunks)
            .filter(|i| !self.dirty.contains(i))
            .filter(|&i| {
                let old = self.server_len.saturating_sub(i * cs).min(cs);
                let new = self.chunk_len(i, cs);
                old == new && i * cs + new <= self.base_len
            })
            .collect()
    }

    /// What a store of these changes sends, as a record.
    pub fn change(&self, local_dv: u64) -> crate::mutation::DataChange {
        crate::mutation::DataChange {
            length: self.length,
            base_len: self.base_len,
            server_len: self.server_len,
            base_dv: self.base_dv,
            local_dv,
            chunks: self.dirty.clone(),
        }
    }

    /// The write state a record describes (to plan its calls).
    pub fn from_change(c: &crate::mutation::DataChange) -> Self {
        OpenFile {
            length: c.length,
            base_len: c.base_len,
            server_len: c.server_len,
            base_dv: c.base_dv,
            dirty: c.chunks.clone(),
            modified: true,
            writers: 0,
            refused: None,
            logged: false,
        }
    }

    /// After a successful store: the stored state is the new base.
    pub fn stored(&mut self, dv: u64) {
        self.base_len = self.length;
        self.server_len = self.length;
        self.base_dv = dv;
        self.dirty.clear();
        self.modified = false;
        self.refused = None;
        self.logged = false;
    }
}

/// The chunks a byte range touches: (chunk index, offset in the chunk,
/// range of the input).
pub(crate) fn spans(offset: u64, len: u64, cs: u64) -> Vec<(u64, u64, std::ops::Range<usize>)> {
    let mut out = Vec::new();
    let mut pos = offset;
    let end = offset + len;
    while pos < end {
        let idx = pos / cs;
        let to = ((idx + 1) * cs).min(end);
        out.push((
            idx,
            pos - idx * cs,
            (pos - offset) as usize..(to - offset) as usize,
        ));
        pos = to;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const CS: u64 = 10;

    #[test]
    fn spans_cut_at_chunk_edges() {
        assert_eq!(spans(5, 0, CS), vec![]);
        assert_eq!(
            spans(5, 20, CS),
            vec![(0, 5, 0..5), (1, 0, 5..15), (2, 0, 15..20)]
        );
        assert_eq!(spans(20, 3, CS), vec![(2, 0, 0..3)]);
    }

    #[test]
    fn store_plan_runs_pieces_and_length_only() {
        let mut f = OpenFile::new(95, 1);
        assert_eq!(
            f.store_plan(CS, 30),
            vec![StorePiece {
                pos: 95,
                chunks: vec![],
                file_length: 95
            }]
        );
        f.dirty.extend([0, 1, 2, 3, 5, 9]);
        let plan = f.store_plan(CS, 30);
        assert_eq!(
            plan,
            vec![
                StorePiece {
                    pos: 0,
                    chunks: vec![(0, 10), (1, 10), (2, 10)],
                    file_length: 95
                },
                StorePiece {
                    pos: 30,
                    chunks: vec![(3, 10)],
                    file_length: 95
                },
                StorePiece {
                    pos: 50,
                    chunks: vec![(5, 10)],
                    file_length: 95
                },
                StorePiece {
                    pos: 90,
                    chunks: vec![(9, 5)],
                    file_length: 95
                },
            ]
        );
    }

    #[test]
    fn cut_then_extended_files_are_cut_on_the_server_first() {
        let mut f = OpenFile::new(35, 1);
        f.truncate(15, CS);
        assert_eq!(
            f.store_plan(CS, 30),
            vec![StorePiece {
                pos: 15,
                chunks: vec![],
                file_length: 15
            }]
        );
        f.length = 40;
        f.dirty.insert(3);
        assert_eq!(
            f.store_plan(CS, 30),
            vec![
                StorePiece {
                    pos: 15,
                    chunks: vec![],
                    file_length: 15
                },
                StorePiece {
                    pos: 30,
                    chunks: vec![(3, 10)],
                    file_length: 40
                },
            ]
        );
    }

    #[test]
    fn truncation_drops_cuts_and_needs_the_last_chunk() {
        let mut f = OpenFile::new(35, 1);
        f.dirty.extend([0, 2, 3]);
        assert_eq!(f.truncate(25, CS), (vec![3], Some((2, 5))));
        assert_eq!((f.length, f.base_len), (25, 25));
        assert_eq!(f.needs_last_chunk(CS), None, "old contents reach the end");
        assert_eq!(f.truncate(20, CS), (vec![2], None));
        // Extending past the old contents: the last chunk must be sent.
        f.length = 47;
        assert_eq!(f.needs_last_chunk(CS), Some(4));
        f.dirty.insert(4);
        assert_eq!(f.needs_last_chunk(CS), None);
    }

    #[test]
    fn base_reuse_only_where_contents_are_unchanged() {
        let mut f = OpenFile::new(35, 1);
        f.dirty.insert(1);
        assert_eq!(f.reusable_base_chunks(CS), vec![0, 2, 3]);
        // Cut inside chunk 2: chunk 2's old copy is longer; chunk 3 is gone.
        f.truncate(25, CS);
        assert_eq!(f.reusable_base_chunks(CS), vec![0]);
        f.stored(2);
        assert_eq!(f.reusable_base_chunks(CS), vec![0, 1, 2]);
        assert!(!f.modified && f.dirty.is_empty());
    }

    #[test]
    fn covering_writes_skip_the_copy() {
        let f = OpenFile::new(15, 1);
        assert!(f.write_covers_base(0, CS, 0, 10));
        assert!(!f.write_covers_base(0, CS, 1, 10));
        assert!(f.write_covers_base(1, CS, 10, 15));
        assert!(f.write_covers_base(2, CS, 27, 28), "past the old contents");
    }
}
