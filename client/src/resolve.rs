//! Resolving a conflict: `afsd-rs resolve --keep-local | --keep-remote |
//! --stash-local | --stash-both | --merge[=text|sqlite|NAME]`.
//!
//! Every resolution is made of ordinary changes, made as the conflict's
//! owner through the same entry points as the kernel's requests: their
//! rights apply, and offline they are logged and replayed with the checks
//! of any offline change (a server that moved again makes a new conflict).
//! Connected, keep-local first asks the server for the file's version and
//! refuses when it moved since the conflict was found: never a blind
//! overwrite. The conflict record goes only once its changes are made.
//!
//! Names: a stashed copy is `STEM (conflict ID local).EXT` (and `... server)`
//! for stash-both's other side). The extension stays last, so programs
//! still know the file; the space before the parenthesis sorts the copies
//! just before the original in `ls`; the id ties the copy to `afsd-rs
//! conflicts` and makes the name unique. Dropbox's "conflicted copy" names
//! carry the same idea; git-annex's variant names put a short content hash
//! before the extension instead, which says nothing to a person.
//!
//! keep-remote keeps the discarded local version in the conflict store,
//! marked resolved (record space [`SPACE_RESOLVED`]), until the retention
//! time (`conflict-retention`, 14 days) or `afsd-rs resolve --purge`.

use afs_proto::types::Fid;
use cache::{Batch, Op};
use serde::{Deserialize, Serialize};

use crate::conflicts::{ConflictKind, ConflictRecord, ConflictSide};
use crate::inode::NodeRef;
use crate::journal::SPACE_CONFLICT;
use crate::states::SPACE_STATES;
use crate::status::now_secs;
use crate::{AfsClient, Error, Result, VolType};

/// Record space of conflicts resolved by keep-remote (their local data
/// kept until purged).
pub(crate) const SPACE_RESOLVED: u8 = b'z';

/// How long a discarded local version stays (keep-remote) by default.
pub const DEFAULT_RETENTION_SECS: u64 = 14 * 24 * 3600;

/// A resolution.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Resolution {
    /// The local version replaces the server's.
    KeepLocal,
    /// The server's version stays; the local one is kept aside until purged.
    KeepRemote,
    /// The server's version stays at the path; the local one is copied
    /// beside it.
    StashLocal,
    /// Both become copies beside the original name, which goes.
    StashBoth,
    /// A resolver merges base, local and server (`text`: three-way line
    /// merge; `sqlite`: row by row, registered by afsd-rs as a resolver
    /// command); a clean merge is kept as the local version, an overlapping
    /// or refused one is stashed with both versions (markers, if any, in
    /// the local copy).
    Merge(String),
}

impl std::fmt::Display for Resolution {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Resolution::KeepLocal => f.write_str("keep-local"),
            Resolution::KeepRemote => f.write_str("keep-remote"),
            Resolution::StashLocal => f.write_str("stash-local"),
            Resolution::StashBoth => f.write_str("stash-both"),
            Resolution::Merge(name) => write!(f, "merge={name}"),
        }
    }
}

/// What a resolution did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolved {
    pub id: u64,
    pub resolution: Resolution,
    /// What was done, for people.
    pub outcome: String,
    /// Names made beside the original.
    pub made: Vec<String>,
}

/// A keep-remote resolution, waiting for its purge.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct ResolvedMark {
    at: u64,
}

/// `report.txt` → `report (conflict 7 local).txt`.
pub(crate) fn stash_name(name: &str, id: u64, side: &str) -> String {
    match name.rfind('.') {
        Some(i) if i > 0 => format!("{} (conflict {id} {side}){}", &name[..i], &name[i..]),
        _ => format!("{name} (conflict {id} {side})"),
    }
}

/// Where a conflict's object is: its directory, its name there, its mode.
struct Place {
    dir: NodeRef,
    leaf: String,
    mode: u32,
}

impl AfsClient {
    /// Whether conflict `id` was resolved by keep-remote (kept until purged).
    pub(crate) fn is_resolved(&self, id: u64) -> bool {
        matches!(
            self.inner
                .store
                .get_record(SPACE_RESOLVED, &id.to_be_bytes()),
            Ok(Some(_))
        )
    }

    fn place(&self, c: &ConflictRecord) -> Result<Place> {
        let inner = &self.inner;
        let m = &c.records[0].m;
        let file = NodeRef {
            cell: m.cell.clone(),
            fid: c.fid,
            vol_type: VolType::Rw,
        };
        let st = match inner.valid.statuses.known(&file.key()) {
            Some(st) => st,
            None => inner.store.get_status(&file.key())?.ok_or_else(|| {
                Error::Invalid(format!(
                    "conflict {}: the file's directory is no longer known to the cache",
                    c.id
                ))
            })?,
        };
        let dir = file.with_fid(Fid::new(c.fid.volume, st.parent_vnode, st.parent_unique));
        if dir.fid == file.fid {
            return Err(Error::Invalid(format!(
                "conflict {}: the file's directory is not known",
                c.id
            )));
        }
        let leaf = c
            .path
            .rsplit('/')
            .find(|s| !s.is_empty())
            .ok_or_else(|| Error::Invalid(format!("conflict {}: no file name", c.id)))?
            .to_string();
        Ok(Place {
            dir,
            leaf,
            mode: st.mode & 0o7777,
        })
    }

    /// Writes `data` as the whole of `name` in `dir` as `uid`: created
    /// when absent, else truncated and rewritten (closed, so stored or
    /// logged like any close).
    async fn write_whole(
        &self,
        uid: u32,
        dir: &NodeRef,
        name: &str,
        mode: u32,
        data: &[u8],
    ) -> Result<()> {
        let inner = &self.inner;
        let pino = inner.nodes.intern(dir.clone());
        let (ino, fh) = match self.lookup(uid, pino, name.as_bytes()).await {
            Ok(a) => (
                a.ino,
                self.open(uid, a.ino, libc::O_WRONLY | libc::O_TRUNC)
                    .await?,
            ),
            Err(Error::NotFound) => {
                let (a, fh) = self
                    .create(uid, pino, name.as_bytes(), mode, libc::O_WRONLY)
                    .await?;
                (a.ino, fh)
            }
            Err(e) => return Err(e),
        };
        let piece = (inner.config.chunk_size as usize).max(4096);
        let mut off = 0usize;
        let mut wrote = Ok(());
        while off < data.len() {
            let end = (off + piece).min(data.len());
            match self.write(fh, off as u64, &data[off..end]).await {
                Ok(n) if n > 0 => off += n as usize,
                Ok(_) => {
                    wrote = Err(Error::Protocol("a write took no bytes".into()));
                    break;
                }
                Err(e) => {
                    wrote = Err(e);
                    break;
                }
            }
        }
        let flushed = match wrote {
            Ok(()) => self.flush(fh).await,
            Err(e) => Err(e),
        };
        let released = self.release(fh, None).await;
        self.forget(ino, 1);
        flushed?;
        released
    }

    /// The ops that drop a conflict (record, kept data, states).
    fn drop_ops(c: &ConflictRecord) -> Vec<Op> {
        vec![
            Op::DeleteChunks(c.kept_key()),
            Op::DeleteRecord {
                space: SPACE_CONFLICT,
                key: c.id.to_be_bytes().to_vec(),
            },
            Op::DeleteRecord {
                space: SPACE_STATES,
                key: c.id.to_be_bytes().to_vec(),
            },
            Op::DeleteRecord {
                space: SPACE_RESOLVED,
                key: c.id.to_be_bytes().to_vec(),
            },
        ]
    }

    fn drop_conflict(&self, c: &ConflictRecord) -> Result<()> {
        self.inner.store.apply(Batch::of(Self::drop_ops(c), true))?;
        Ok(())
    }

    /// Refuses keep-local over a server version that moved since the
    /// conflict was found (when the volume can be asked).
    async fn server_unmoved(&self, uid: u32, c: &ConflictRecord, place: &Place) -> Result<()> {
        let inner = &self.inner;
        let file = place.dir.with_fid(c.fid);
        if inner.valid.conn.blocks(&file.cell, file.fid.volume) {
            // Offline: the write is logged against the version cached,
            // and replay checks it against the server.
            return Ok(());
        }
        // A fresh answer, not a cached one.
        inner.valid.forget(&file.key());
        let who = inner.valid.who(uid, &file);
        match (inner.valid.valid_status(&file, &who).await, c.server_dv) {
            (Ok(st), Some(dv)) if st.data_version != dv => Err(Error::Busy(format!(
                "conflict {}: the server's version moved again since the conflict was found \
                 (data version {dv}, now {}); see afsd-rs conflict show; nothing was changed",
                c.id, st.data_version
            ))),
            (Ok(_), _) => Ok(()),
            (Err(e), _) if matches!(e.errno(), libc::ENOENT | libc::ESTALE) => Ok(()),
            (Err(e), _) => Err(e),
        }
    }

    /// Resolves conflict `id` of `uid` (root: anyone's) as `how`.
    pub async fn resolve(&self, uid: u32, id: u64, how: &Resolution) -> Result<Resolved> {
        let c = self.conflict_of(uid, id)?;
        if self.is_resolved(id) {
            return Err(Error::Invalid(format!(
                "conflict {id} is resolved already (keep-remote); `afsd-rs resolve --purge {id}` drops its local version"
            )));
        }
        let owner = c.records[0].m.uid;
        let cs = self.inner.config.chunk_size;
        let local = || self.inner.conflicts.data(&c, ConflictSide::Local, cs);
        let done = |outcome: String, made: Vec<String>| Resolved {
            id,
            resolution: how.clone(),
            outcome,
            made,
        };
        let resolved = match how {
            Resolution::KeepRemote => {
                let mut b = Batch::synced();
                b.push(Op::PutRecord {
                    space: SPACE_RESOLVED,
                    key: id.to_be_bytes().to_vec(),
                    value: serde_json::to_vec(&ResolvedMark { at: now_secs() }).unwrap_or_default(),
                });
                self.inner.store.apply(b)?;
                return Ok(done(
                    "the server's version stays; yours is kept until purged".into(),
                    Vec::new(),
                ));
            }
            Resolution::KeepLocal => {
                if c.kind == ConflictKind::RemoveUpdate {
                    return Err(Error::Invalid(format!(
                        "conflict {id}: keep-local of a remove would remove the server's newer file; \
                         remove it yourself if that is what you want"
                    )));
                }
                let data = local()?;
                let place = self.place(&c)?;
                self.server_unmoved(owner, &c, &place).await?;
                self.write_whole(owner, &place.dir, &place.leaf, place.mode, &data)
                    .await?;
                done(
                    format!("your version replaces the server's at {}", place.leaf),
                    Vec::new(),
                )
            }
            Resolution::StashLocal => {
                let data = local()?;
                let place = self.place(&c)?;
                let name = stash_name(&place.leaf, id, "local");
                self.write_whole(owner, &place.dir, &name, place.mode, &data)
                    .await?;
                done(
                    format!("your version is {name}, beside the server's"),
                    vec![name],
                )
            }
            Resolution::StashBoth => {
                let data = local()?;
                let place = self.place(&c)?;
                let (server, mine) = self.stash_both(owner, &c, &place, &data).await?;
                done(
                    format!(
                        "{} is now {server} (the server's) and {mine} (yours)",
                        place.leaf
                    ),
                    vec![server, mine],
                )
            }
            Resolution::Merge(name) if name == "text" => {
                let base = self
                    .inner
                    .conflicts
                    .data(&c, ConflictSide::Base, cs)
                    .map_err(|_| {
                        Error::Invalid(format!(
                            "conflict {id}: the base version was not cached, so there is nothing to merge from; \
                             use --stash-both and merge by hand"
                        ))
                    })?;
                let mine = local()?;
                let theirs = self.conflict_server_data(uid, id).await?;
                let place = self.place(&c)?;
                match diffy::merge_bytes(&base, &mine, &theirs) {
                    Ok(merged) => {
                        self.server_unmoved(owner, &c, &place).await?;
                        self.write_whole(owner, &place.dir, &place.leaf, place.mode, &merged)
                            .await?;
                        done(
                            format!(
                                "merged cleanly into {} ({} bytes)",
                                place.leaf,
                                merged.len()
                            ),
                            Vec::new(),
                        )
                    }
                    Err(marked) => {
                        let (server, mine) = self.stash_both(owner, &c, &place, &marked).await?;
                        done(
                            format!(
                                "the edits overlap: {server} is the server's, {mine} yours with conflict markers"
                            ),
                            vec![server, mine],
                        )
                    }
                }
            }
            Resolution::Merge(name) => {
                let Some(command) = self.inner.config.resolvers.get(name).cloned() else {
                    if name == "sqlite" {
                        return Err(Error::Invalid(
                            "the sqlite resolver is not set up in this daemon \
                             (resolver.sqlite in its config file)"
                                .into(),
                        ));
                    }
                    let known: Vec<&String> = self
                        .inner
                        .config
                        .resolvers
                        .keys()
                        .filter(|k| *k != "sqlite")
                        .collect();
                    return Err(Error::Invalid(format!(
                        "no resolver {name:?} (built in: text, sqlite; configured: {known:?})"
                    )));
                };
                let base = self
                    .inner
                    .conflicts
                    .data(&c, ConflictSide::Base, cs)
                    .unwrap_or_default();
                let mine = local()?;
                let theirs = self.conflict_server_data(uid, id).await?;
                let place = self.place(&c)?;
                let outcome = crate::resolver::run(
                    &command,
                    owner,
                    &base,
                    &mine,
                    &theirs,
                    &c.path,
                    c.kind.as_str(),
                )
                .await?;
                match outcome {
                    crate::resolver::Outcome::Merged(merged) => {
                        self.server_unmoved(owner, &c, &place).await?;
                        self.write_whole(owner, &place.dir, &place.leaf, place.mode, &merged)
                            .await?;
                        done(format!("{name} merged it into {}", place.leaf), Vec::new())
                    }
                    crate::resolver::Outcome::Conflicted { merged, said } => {
                        // A resolver that left %A as it was refused (the
                        // sqlite one does); one that changed it left markers.
                        let refused = merged == mine;
                        let (server, ours) = self.stash_both(owner, &c, &place, &merged).await?;
                        let why = if said.is_empty() {
                            String::new()
                        } else {
                            format!(": {said}")
                        };
                        let outcome = if refused {
                            format!("{name} refused{why}; kept both: {server} (the server's), {ours} (yours)")
                        } else {
                            format!("{name} left conflicts{why}; kept both: {server} (the server's), {ours} (yours, merged with markers)")
                        };
                        done(outcome, vec![server, ours])
                    }
                }
            }
        };
        self.drop_conflict(&c)?;
        // Names made or renamed here, not through the kernel: its cached
        // listing and names of the directory go.
        if let Ok(place) = self.place(&c) {
            self.inner.nodes.invalidate(&place.dir.key());
        }
        tracing::info!(conflict = id, uid = owner, how = ?how, "conflict resolved");
        Ok(resolved)
    }

    /// stash-both: the server's file at the name (if it is still the
    /// conflict's) moves to its stash name, and `data` is made beside it.
    async fn stash_both(
        &self,
        owner: u32,
        c: &ConflictRecord,
        place: &Place,
        data: &[u8],
    ) -> Result<(String, String)> {
        let server = stash_name(&place.leaf, c.id, "server");
        let mine = stash_name(&place.leaf, c.id, "local");
        let pino = self.inner.nodes.intern(place.dir.clone());
        match self.lookup(owner, pino, place.leaf.as_bytes()).await {
            Ok(_) => {
                self.rename(owner, pino, place.leaf.as_bytes(), pino, server.as_bytes())
                    .await?
            }
            // Gone on the server (update/remove): there is no server side.
            Err(Error::NotFound) => {}
            Err(e) => return Err(e),
        }
        self.write_whole(owner, &place.dir, &mine, place.mode, data)
            .await?;
        Ok((server, mine))
    }

    /// Drops the local versions kept by keep-remote: `id`'s, or all of
    /// `uid`'s (root: everyone's) resolved before `older_than` seconds ago.
    pub fn purge_resolved(&self, uid: u32, id: Option<u64>, older_than: u64) -> Result<usize> {
        let now = now_secs();
        let mut ops = Vec::new();
        let mut n = 0;
        for (k, v) in self.inner.store.records(SPACE_RESOLVED)? {
            let Ok(key) = <[u8; 8]>::try_from(k.as_slice()) else {
                continue;
            };
            let cid = u64::from_be_bytes(key);
            if id.is_some_and(|i| i != cid) {
                continue;
            }
            let at = serde_json::from_slice::<ResolvedMark>(&v).map_or(0, |m| m.at);
            if now.saturating_sub(at) < older_than {
                continue;
            }
            let Some(c) = self.inner.conflicts.get(cid) else {
                ops.push(Op::DeleteRecord {
                    space: SPACE_RESOLVED,
                    key: k.clone(),
                });
                continue;
            };
            if uid != 0 && c.records[0].m.uid != uid {
                continue;
            }
            ops.extend(Self::drop_ops(&c));
            n += 1;
        }
        if let Some(i) = id {
            if n == 0 {
                return Err(Error::Invalid(format!(
                    "conflict {i} is not one of yours resolved by keep-remote"
                )));
            }
        }
        if !ops.is_empty() {
            self.inner.store.apply(Batch::of(ops, true))?;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stash_names_keep_the_extension_last() {
        assert_eq!(
            stash_name("report.txt", 7, "local"),
            "report (conflict 7 local).txt"
        );
        assert_eq!(
            stash_name("a.tar.gz", 12, "server"),
            "a.tar (conflict 12 server).gz"
        );
        assert_eq!(
            stash_name("Makefile", 3, "local"),
            "Makefile (conflict 3 local)"
        );
        assert_eq!(
            stash_name(".profile", 3, "local"),
            ".profile (conflict 3 local)"
        );
        // Sorts just before the original.
        assert!(stash_name("report.txt", 7, "local").as_str() < "report.txt");
    }
}
