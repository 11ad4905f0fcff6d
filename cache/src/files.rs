//! File data outside RocksDB: one plain file per chunk.
//!
//! Chunks used to be RocksDB values. Deleting a value frees its space only
//! when a compaction meets the tombstone, so the database's files briefly
//! held up to twice the cache limit. A chunk in its own file is freed by
//! `unlink` at once, and a dirty chunk can be written in place (`pwrite`) as
//! the user writes, without rewriting the whole chunk. RocksDB keeps the
//! small records: statuses, directories, tokens and the usage record of each
//! chunk, which says whether its file is dirty.
//!
//! Crash consistency comes from the order of the two writes. New contents
//! (puts, writes, truncations, renames) reach the files before the records
//! that describe them are written; files are unlinked only after the records
//! naming them are gone. At open, [`ChunkFiles::scan`] lists what is on disk
//! and the store drops files without a record and records without a file.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// A change to the chunk files, produced while a batch is translated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum FileAction {
    /// Replace the whole file (written aside, then renamed into place, so a
    /// concurrent reader sees the old or the new contents, never a mix).
    Put { key: Vec<u8>, data: Vec<u8> },
    /// Write in place at `offset`, creating the file when absent.
    Write {
        key: Vec<u8>,
        offset: u64,
        data: Vec<u8>,
    },
    /// Cut or extend (with zeros) the file to `len` bytes.
    Truncate { key: Vec<u8>, len: u64 },
    /// Give the file another key (a chunk stored as a new data version).
    Rename { from: Vec<u8>, to: Vec<u8> },
    /// Give the file a second key (a hard link); the old one goes with a
    /// [`FileAction::Delete`] after the records: a crash in between leaves
    /// the file under the key the records name. For data that exists
    /// nowhere else (unstored changes moving to another fid).
    Link { from: Vec<u8>, to: Vec<u8> },
    /// Remove the file; done after the records are written.
    Delete { key: Vec<u8> },
    /// Make the file's contents durable (written earlier without a sync).
    Sync { key: Vec<u8> },
}

/// What becomes of a chunk's file after a delete in the same batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Remade {
    /// Replaced whole (a put, a rename onto it).
    Whole,
    /// Changed in place (a write, a truncation), which must start from an
    /// empty file as the delete left it.
    InPlace,
}

/// For each action, when it is a delete whose key a later action of the
/// batch makes again, how. Deletes run after the records are written, so
/// one deleted and remade in a batch (a flush, then a fetch) would
/// otherwise take the new file with it, and an in-place write would land
/// on the old contents.
fn remade_after(actions: &[FileAction]) -> Vec<Option<Remade>> {
    let mut next: std::collections::HashMap<&[u8], Remade> = Default::default();
    let mut out = vec![None; actions.len()];
    for (i, a) in actions.iter().enumerate().rev() {
        match a {
            FileAction::Delete { key } => {
                out[i] = next.get(key.as_slice()).copied();
                next.remove(key.as_slice());
            }
            FileAction::Put { key, .. } => {
                next.insert(key, Remade::Whole);
            }
            FileAction::Rename { to, .. } | FileAction::Link { to, .. } => {
                next.insert(to, Remade::Whole);
            }
            FileAction::Write { key, .. } | FileAction::Truncate { key, .. } => {
                next.insert(key, Remade::InPlace);
            }
            FileAction::Sync { .. } => {}
        }
    }
    out
}

/// Where the actions of a translated batch go.
pub(crate) trait FileSink {
    fn file(&mut self, action: FileAction);
}

impl FileSink for Vec<FileAction> {
    fn file(&mut self, action: FileAction) {
        self.push(action);
    }
}

/// The directory of chunk files: `<root>/<two hex digits>/<hex of the key>`.
/// The subdirectory is the low byte of the vnode, which spreads a volume's
/// files over 256 directories.
pub(crate) struct ChunkFiles {
    root: PathBuf,
    /// Set when a shard directory was created: directories take disk room.
    new_dir: std::sync::atomic::AtomicBool,
}

fn io_err(path: &Path, source: std::io::Error) -> Error {
    Error::Dir {
        path: path.display().to_string(),
        source,
    }
}

/// Lowercase hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The low byte of the vnode in a chunk key: kind, cell length, cell,
/// volume (4), vnode (4), ... big-endian.
fn shard_of(key: &[u8]) -> u8 {
    let cell_len = key.get(1).copied().unwrap_or(0) as usize;
    key.get(2 + cell_len + 7).copied().unwrap_or(0)
}

impl ChunkFiles {
    pub fn open(root: PathBuf) -> Result<Self> {
        fs::create_dir_all(&root).map_err(|e| io_err(&root, e))?;
        Ok(ChunkFiles {
            root,
            new_dir: true.into(),
        })
    }

    #[cfg(test)]
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn path(&self, key: &[u8]) -> PathBuf {
        self.root
            .join(format!("{:02x}", shard_of(key)))
            .join(hex(&key[1..]))
    }

    fn open_existing(&self, key: &[u8]) -> Result<Option<(File, PathBuf)>> {
        let path = self.path(key);
        match File::open(&path) {
            Ok(f) => Ok(Some((f, path))),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&path, e)),
        }
    }

    /// The whole chunk; None when its file is gone (evicted meanwhile).
    pub fn read(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let Some((mut f, path)) = self.open_existing(key)? else {
            return Ok(None);
        };
        let mut out = Vec::new();
        f.read_to_end(&mut out).map_err(|e| io_err(&path, e))?;
        Ok(Some(out))
    }

    /// Up to `len` bytes from `offset`; shorter at the end of the chunk.
    pub fn read_range(&self, key: &[u8], offset: u64, len: usize) -> Result<Option<Vec<u8>>> {
        let Some((mut f, path)) = self.open_existing(key)? else {
            return Ok(None);
        };
        f.seek(SeekFrom::Start(offset))
            .map_err(|e| io_err(&path, e))?;
        let mut out = Vec::with_capacity(len);
        f.take(len as u64)
            .read_to_end(&mut out)
            .map_err(|e| io_err(&path, e))?;
        Ok(Some(out))
    }

    fn create_parent(&self, path: &Path) -> Result<()> {
        if let Some(dir) = path.parent() {
            if !dir.is_dir() {
                fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
                self.new_dir
                    .store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// Whether a directory was created since the last [`Self::take_new_dir`].
    pub fn new_dir_pending(&self) -> bool {
        self.new_dir.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether a directory was created since the last call.
    pub fn take_new_dir(&self) -> bool {
        self.new_dir
            .swap(false, std::sync::atomic::Ordering::Relaxed)
    }

    /// Bytes the directories themselves occupy (the root and its shards).
    pub fn dir_bytes(&self) -> u64 {
        use std::os::unix::fs::MetadataExt;
        let own = fs::metadata(&self.root).map_or(0, |m| m.blocks() * 512);
        let Ok(entries) = fs::read_dir(&self.root) else {
            return own;
        };
        own + entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.metadata().ok())
            .filter(|m| m.is_dir())
            .map(|m| m.blocks() * 512)
            .sum::<u64>()
    }

    /// A chunk's file opened for changes in place, made when absent.
    fn open_in_place(&self, key: &[u8]) -> Result<(File, PathBuf)> {
        let path = self.path(key);
        self.create_parent(&path)?;
        let f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| io_err(&path, e))?;
        Ok((f, path))
    }

    /// Carries out every action but the deletes, in order. With `sync`, the
    /// files written and their directories reach the disk before returning
    /// (a durable batch: its records then go through the write-ahead log).
    pub fn apply_writes(&self, actions: &[FileAction], sync: bool) -> Result<()> {
        let mut touched: Vec<PathBuf> = Vec::new();
        let remade = remade_after(actions);
        for (a, remade) in actions.iter().zip(remade) {
            match a {
                FileAction::Put { key, data } => {
                    let path = self.path(key);
                    self.create_parent(&path)?;
                    let tmp = path.with_extension("tmp");
                    let f = File::create(&tmp).map_err(|e| io_err(&tmp, e))?;
                    f.write_all_at(data, 0).map_err(|e| io_err(&tmp, e))?;
                    if sync {
                        f.sync_data().map_err(|e| io_err(&tmp, e))?;
                    }
                    fs::rename(&tmp, &path).map_err(|e| io_err(&path, e))?;
                    touched.push(path);
                }
                FileAction::Write { key, offset, data } => {
                    let (f, path) = self.open_in_place(key)?;
                    f.write_all_at(data, *offset)
                        .map_err(|e| io_err(&path, e))?;
                    if data.is_empty() {
                        // An empty write still extends the chunk to offset.
                        let len = f.metadata().map_err(|e| io_err(&path, e))?.len();
                        if len < *offset {
                            f.set_len(*offset).map_err(|e| io_err(&path, e))?;
                        }
                    }
                    if sync {
                        f.sync_data().map_err(|e| io_err(&path, e))?;
                    }
                    touched.push(path);
                }
                FileAction::Truncate { key, len } => {
                    let (f, path) = self.open_in_place(key)?;
                    f.set_len(*len).map_err(|e| io_err(&path, e))?;
                    if sync {
                        f.sync_data().map_err(|e| io_err(&path, e))?;
                    }
                    touched.push(path);
                }
                FileAction::Rename { from, to } => {
                    let (src, dst) = (self.path(from), self.path(to));
                    self.create_parent(&dst)?;
                    match fs::rename(&src, &dst) {
                        Ok(()) => touched.push(dst),
                        // Nothing to move: the record goes, and a missing
                        // file reads as a miss. A file already at the
                        // destination is not the moved chunk's: it goes too.
                        Err(e) if e.kind() == ErrorKind::NotFound => {
                            if let Err(e) = fs::remove_file(&dst) {
                                if e.kind() != ErrorKind::NotFound {
                                    return Err(io_err(&dst, e));
                                }
                            }
                        }
                        Err(e) => return Err(io_err(&src, e)),
                    }
                }
                FileAction::Link { from, to } => {
                    let (src, dst) = (self.path(from), self.path(to));
                    self.create_parent(&dst)?;
                    if let Err(e) = fs::remove_file(&dst) {
                        if e.kind() != ErrorKind::NotFound {
                            return Err(io_err(&dst, e));
                        }
                    }
                    match fs::hard_link(&src, &dst) {
                        Ok(()) => touched.push(dst),
                        Err(e) if e.kind() == ErrorKind::NotFound => {}
                        Err(e) => return Err(io_err(&src, e)),
                    }
                }
                FileAction::Sync { key } => {
                    if sync {
                        let path = self.path(key);
                        match File::open(&path) {
                            Ok(f) => f.sync_data().map_err(|e| io_err(&path, e))?,
                            Err(e) if e.kind() == ErrorKind::NotFound => {}
                            Err(e) => return Err(io_err(&path, e)),
                        }
                        touched.push(path);
                    }
                }
                FileAction::Delete { key } => {
                    if remade == Some(Remade::InPlace) {
                        let path = self.path(key);
                        match OpenOptions::new().write(true).open(&path) {
                            Ok(f) => f.set_len(0).map_err(|e| io_err(&path, e))?,
                            Err(e) if e.kind() == ErrorKind::NotFound => {}
                            Err(e) => return Err(io_err(&path, e)),
                        }
                    }
                }
            }
        }
        if sync {
            touched.sort();
            touched.dedup();
            let mut dirs: Vec<&Path> = touched.iter().filter_map(|p| p.parent()).collect();
            dirs.dedup();
            for d in dirs {
                File::open(d)
                    .and_then(|f| f.sync_all())
                    .map_err(|e| io_err(d, e))?;
            }
        }
        Ok(())
    }

    /// Carries out the deletes but those of files the batch made again.
    /// A file already gone is fine.
    pub fn apply_deletes(&self, actions: &[FileAction]) {
        for (a, remade) in actions.iter().zip(remade_after(actions)) {
            if let (FileAction::Delete { key }, None) = (a, remade) {
                let path = self.path(key);
                if let Err(e) = fs::remove_file(&path) {
                    if e.kind() != ErrorKind::NotFound {
                        tracing::warn!("cache: {} not removed: {e}", path.display());
                    }
                }
            }
        }
    }

    /// Every chunk file on disk: (chunk key, length).
    /// Leftover temporary files of an interrupted put are removed.
    pub fn scan(&self) -> Result<Vec<(Vec<u8>, u64)>> {
        let mut out = Vec::new();
        let shards = fs::read_dir(&self.root).map_err(|e| io_err(&self.root, e))?;
        for shard in shards {
            let shard = shard.map_err(|e| io_err(&self.root, e))?;
            if !shard.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let dir = shard.path();
            for ent in fs::read_dir(&dir).map_err(|e| io_err(&dir, e))? {
                let ent = ent.map_err(|e| io_err(&dir, e))?;
                let name = ent.file_name();
                let name = name.to_string_lossy();
                let key = unhex(&name).map(|mut k| {
                    k.insert(0, crate::key::KIND_CHUNK);
                    k
                });
                match (key, ent.metadata()) {
                    (Some(key), Ok(m)) if m.is_file() => out.push((key, m.len())),
                    _ => {
                        // A temporary file or a stranger: not ours to keep.
                        let _ = fs::remove_file(ent.path());
                    }
                }
            }
        }
        Ok(out)
    }

    /// Removes the file of one chunk key found by [`ChunkFiles::scan`]
    /// without a record.
    pub fn remove_orphan(&self, key: &[u8]) {
        let _ = fs::remove_file(self.path(key));
    }
}

/// Bytes the files of `dir` (not recursive) occupy on disk.
pub(crate) fn allocated_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.blocks() * 512)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::chunk_key;
    use crate::FidKey;

    #[test]
    fn names_round_trip_and_shard_by_vnode() {
        let tmp = tempfile::tempdir().unwrap();
        let files = ChunkFiles::open(tmp.path().join("chunks")).unwrap();
        let key = chunk_key(&FidKey::new("test.lab", 536870915, 0x1234, 7), 9, 3);
        let path = files.path(&key);
        assert_eq!(
            path.parent().unwrap().file_name().unwrap().to_str(),
            Some("34")
        );
        let put = FileAction::Put {
            key: key.clone(),
            data: b"hello".to_vec(),
        };
        files.apply_writes(&[put], true).unwrap();
        // A stray temporary file is cleared by the scan.
        fs::write(path.with_extension("tmp"), b"x").unwrap();
        assert_eq!(files.scan().unwrap(), vec![(key.clone(), 5)]);
        assert!(!path.with_extension("tmp").exists());
        let w = FileAction::Write {
            key: key.clone(),
            offset: 7,
            data: b"!".to_vec(),
        };
        files.apply_writes(&[w], false).unwrap();
        assert_eq!(
            files.read(&key).unwrap().unwrap(),
            b"hello\0\0!".to_vec(),
            "a write past the end leaves zeros"
        );
        assert_eq!(
            files.read_range(&key, 1, 3).unwrap().unwrap(),
            b"ell".to_vec()
        );
        files
            .apply_writes(
                &[FileAction::Truncate {
                    key: key.clone(),
                    len: 2,
                }],
                false,
            )
            .unwrap();
        assert_eq!(files.read(&key).unwrap().unwrap(), b"he".to_vec());
        files.apply_deletes(&[FileAction::Delete { key: key.clone() }]);
        assert_eq!(files.read(&key).unwrap(), None);
        assert_eq!(files.scan().unwrap(), vec![]);
    }

    /// A batch that deletes a chunk and makes it again keeps the new file.
    #[test]
    fn delete_then_remake_in_one_batch() {
        let tmp = tempfile::tempdir().unwrap();
        let files = ChunkFiles::open(tmp.path().join("chunks")).unwrap();
        let key = chunk_key(&FidKey::new("test.lab", 1, 2, 3), 1, 0);
        let run = |actions: &[FileAction]| {
            files.apply_writes(actions, false).unwrap();
            files.apply_deletes(actions);
        };
        let put = |data: &[u8]| FileAction::Put {
            key: key.clone(),
            data: data.to_vec(),
        };
        let delete = FileAction::Delete { key: key.clone() };
        run(&[put(b"old contents")]);
        run(&[delete.clone(), put(b"new")]);
        assert_eq!(files.read(&key).unwrap().unwrap(), b"new".to_vec());
        let write = FileAction::Write {
            key: key.clone(),
            offset: 1,
            data: b"w".to_vec(),
        };
        run(&[delete.clone(), write.clone()]);
        assert_eq!(
            files.read(&key).unwrap().unwrap(),
            b"\0w".to_vec(),
            "an in-place write after a delete starts from an empty file"
        );
        // Deleted again after the remake: gone.
        run(&[delete.clone(), write, delete]);
        assert_eq!(files.read(&key).unwrap(), None);
    }
}
