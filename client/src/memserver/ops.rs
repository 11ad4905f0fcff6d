//! The FS RPCs of the in-memory fileserver, with viced's checks and
//! error codes.

use afs_proto::dir::{build_dir, DirEntry};
use afs_proto::errors::errno as E;
use afs_proto::fs::{self as rpcs, BulkEntry};
use afs_proto::types::{store_mask, CallBack, FetchStatus, Fid, FileType, StoreStatus, VolSync};

use super::state::{rights, Caller, State};
use crate::fileserver::{FsCall, FsReply};
use crate::{Error, Result};

/// Largest file the in-memory fileserver keeps; no test needs more.
const MAX_FILE: u64 = 1 << 30;

/// How long a promised callback lasts, relative to the call (seconds).
const CALLBACK_SECS: u32 = 7200;

/// An abort from the fileserver, as the Rx client reports one.
pub(crate) fn abort(what: &str, code: i32) -> Error {
    Error::Server {
        what: format!("{what} to {}", super::SERVER_ADDR),
        code,
        name: afs_proto::errors::abort_name(code).unwrap_or("unknown error"),
    }
}

fn callback() -> CallBack {
    CallBack {
        version: 1,
        expiration_time: CALLBACK_SECS,
        callback_type: 2,
    }
}

type R<T> = std::result::Result<T, i32>;

/// The status of `fid` as `caller` sees it.
fn status(st: &State, fid: Fid, caller: &Caller) -> R<FetchStatus> {
    let v = st.vnode(fid).ok_or(E::ENOENT)?;
    let length = match v.kind {
        FileType::Directory => dir_blob(st, fid)?.len() as u64,
        _ => v.data.len() as u64,
    };
    Ok(FetchStatus {
        interface_version: 1,
        file_type: v.kind,
        link_count: v.links,
        length,
        data_version: v.dv,
        author: v.author,
        owner: v.owner,
        caller_access: st.rights_of(fid, caller.vice_id),
        anonymous_access: st.rights_of(fid, None),
        unix_mode_bits: v.mode,
        parent_vnode: v.parent.0,
        parent_unique: v.parent.1,
        residency_mask: 0,
        client_modtime: v.modtime,
        server_modtime: v.modtime,
        group: v.group,
        sync_counter: 0,
        lock_count: 0,
        error_code: 0,
    })
}

fn dir_blob(st: &State, fid: Fid) -> R<Vec<u8>> {
    let v = st.vnode(fid).ok_or(E::ENOENT)?;
    let entries: Vec<DirEntry> = v
        .entries
        .iter()
        .map(|(n, f)| DirEntry {
            name: n.clone(),
            vnode: f.vnode,
            unique: f.unique,
        })
        .collect();
    build_dir(&entries).map_err(|_| E::EFBIG)
}

/// Requires `needed` rights on `fid`; the owner of a file may also write
/// it with the insert right (viced's rule for files made in drop boxes).
fn require(st: &State, fid: Fid, caller: &Caller, needed: u32) -> R<()> {
    let have = st.rights_of(fid, caller.vice_id);
    if have & needed == needed {
        return Ok(());
    }
    let owner = st.vnode(fid).map(|v| v.owner as i32);
    if needed == rights::WRITE && owner == caller.vice_id && have & rights::INSERT != 0 {
        return Ok(());
    }
    Err(E::EACCES)
}

fn dir_of(st: &State, fid: Fid) -> R<()> {
    match st.vnode(fid) {
        Some(v) if v.kind == FileType::Directory => Ok(()),
        Some(_) => Err(E::ENOTDIR),
        None => Err(E::ENOENT),
    }
}

fn name_ok(name: &str) -> R<Vec<u8>> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') {
        return Err(E::EINVAL);
    }
    if name.len() > 255 {
        return Err(E::ENAMETOOLONG);
    }
    Ok(name.as_bytes().to_vec())
}

fn entry(st: &State, dir: Fid, name: &[u8]) -> Option<Fid> {
    st.vnode(dir)?.entries.get(name).copied()
}

fn quota_room(st: &State, volume: u32, more_bytes: u64) -> R<()> {
    let v = st.volumes.get(&volume).ok_or(afs_proto::errors::VNOVOL)?;
    if v.quota_kb > 0 && v.used_kb() + more_bytes.div_ceil(1024) > v.quota_kb {
        return Err(afs_proto::errors::VOVERQUOTA);
    }
    Ok(())
}

fn apply_store_status(st: &mut State, fid: Fid, s: &StoreStatus) {
    if let Some(v) = st.vnode_mut(fid) {
        if s.mask & store_mask::SET_MODE != 0 {
            v.mode = s.unix_mode_bits & 0o7777;
        }
        if s.mask & store_mask::SET_MODTIME != 0 {
            v.modtime = s.client_modtime;
        }
        if s.mask & store_mask::SET_OWNER != 0 {
            v.owner = s.owner;
        }
        if s.mask & store_mask::SET_GROUP != 0 {
            v.group = s.group;
        }
    }
}

/// Serves one call.
pub(crate) fn serve(st: &mut State, caller: &Caller, call: FsCall) -> Result<FsReply> {
    let name = call.name();
    serve_inner(st, caller, call).map_err(|code| abort(name, code))
}

fn make(
    st: &mut State,
    caller: &Caller,
    dir: Fid,
    name: &str,
    kind: FileType,
    s: &StoreStatus,
) -> R<Fid> {
    dir_of(st, dir)?;
    require(st, dir, caller, rights::INSERT)?;
    let n = name_ok(name)?;
    if entry(st, dir, &n).is_some() {
        return Err(E::EEXIST);
    }
    quota_room(st, dir.volume, 1)?;
    let owner = caller.vice_id.unwrap_or(32766) as u32;
    let fid = st.alloc(dir, kind, s.unix_mode_bits & 0o7777, owner);
    apply_store_status(st, fid, s);
    if kind == FileType::Directory {
        if let Some(d) = st.vnode_mut(dir) {
            d.links += 1;
        }
    }
    st.link_in(dir, &n, fid);
    st.promise(fid, caller.client);
    st.promise(dir, caller.client);
    Ok(fid)
}

fn serve_inner(st: &mut State, caller: &Caller, call: FsCall) -> R<FsReply> {
    let vs = VolSync::default();
    Ok(match call {
        FsCall::FetchStatus(r) => {
            let s = status(st, r.fid, caller)?;
            if !may_fetch_status(&s) {
                return Err(E::EACCES);
            }
            st.promise(r.fid, caller.client);
            FsReply::FetchStatus(rpcs::FetchStatusReply {
                status: s,
                callback: callback(),
                volsync: vs,
            })
        }
        FsCall::FetchData64(r) => {
            let v = st.vnode(r.fid).ok_or(E::ENOENT)?;
            let (data, need) = if v.kind == FileType::Directory {
                (dir_blob(st, r.fid)?, rights::LOOKUP)
            } else {
                (v.data.clone(), rights::READ)
            };
            require(st, r.fid, caller, need)?;
            let from = (r.pos as usize).min(data.len());
            let to = (r.pos.saturating_add(r.length) as usize).min(data.len());
            st.promise(r.fid, caller.client);
            FsReply::FetchData64(rpcs::FetchDataReply {
                data: data[from..to].to_vec(),
                status: status(st, r.fid, caller)?,
                callback: callback(),
                volsync: vs,
            })
        }
        FsCall::InlineBulkStatus(r) => {
            let mut entries = Vec::new();
            for fid in r.fids {
                match status(st, fid, caller) {
                    Ok(s) if may_fetch_status(&s) => {
                        st.promise(fid, caller.client);
                        entries.push(BulkEntry {
                            status: s,
                            callback: callback(),
                        })
                    }
                    other => {
                        let mut s = status(st, fid, caller).unwrap_or_else(|_| empty_status());
                        s.error_code = match other {
                            Err(code) => code as u32,
                            Ok(_) => E::EACCES as u32,
                        };
                        entries.push(BulkEntry {
                            status: s,
                            callback: CallBack::default(),
                        })
                    }
                }
            }
            FsReply::InlineBulkStatus(rpcs::BulkStatusReply {
                entries,
                volsync: vs,
            })
        }
        FsCall::GetVolumeStatus(r) => {
            let v = st.volumes.get(&r.volume).ok_or(afs_proto::errors::VNOVOL)?;
            FsReply::GetVolumeStatus(rpcs::VolumeStatus {
                vid: r.volume as i32,
                parent_id: r.volume as i32,
                online: true,
                in_service: true,
                blessed: true,
                needs_salvage: false,
                vol_type: 0,
                min_quota: 0,
                max_quota: v.quota_kb as i32,
                blocks_in_use: v.used_kb() as i32,
                part_blocks_avail: 1 << 30,
                part_max_blocks: 1 << 30,
                name: v.name.clone(),
                offline_msg: String::new(),
                motd: String::new(),
            })
        }
        FsCall::FetchAcl(r) => {
            require(st, r.fid, caller, rights::LOOKUP)?;
            let d = st.vnode(r.fid).ok_or(E::ENOENT)?;
            let name_of = |id: i32| {
                st.users
                    .iter()
                    .find(|(_, v)| **v == id)
                    .map(|(n, _)| n.clone())
                    .unwrap_or_else(|| id.to_string())
            };
            let mut text = format!("{}\n{}\n", d.acl.0.len(), d.acl.1.len());
            for (id, r) in d.acl.0.iter().chain(d.acl.1.iter()) {
                text.push_str(&format!("{}\t{}\n", name_of(*id), r));
            }
            FsReply::FetchAcl(rpcs::FetchAclReply {
                acl: text,
                status: status(st, r.fid, caller)?,
                volsync: vs,
            })
        }
        FsCall::StoreAcl(r) => {
            dir_of(st, r.fid)?;
            require(st, r.fid, caller, rights::ADMINISTER)?;
            let acl = crate::Acl::parse(&r.acl).ok_or(E::EINVAL)?;
            let id_of = |n: &str| st.users.get(n).copied().or_else(|| n.parse().ok());
            let conv = |v: &[(String, u32)]| -> R<Vec<(i32, u32)>> {
                v.iter()
                    .map(|(n, r)| id_of(n).map(|id| (id, *r)).ok_or(E::EINVAL))
                    .collect()
            };
            let (plus, minus) = (conv(&acl.plus)?, conv(&acl.minus)?);
            st.set_acl(r.fid, &plus, &minus);
            st.changed.push(r.fid);
            FsReply::StoreAcl(rpcs::StatusReply {
                status: status(st, r.fid, caller)?,
                volsync: vs,
            })
        }
        FsCall::StoreStatus(r) => {
            let owner = st.vnode(r.fid).ok_or(E::ENOENT)?.owner as i32;
            if Some(owner) != caller.vice_id {
                require(st, r.fid, caller, rights::WRITE)?;
            }
            if r.status.mask & (store_mask::SET_OWNER | store_mask::SET_GROUP) != 0 {
                require(st, r.fid, caller, rights::ADMINISTER)?;
            }
            apply_store_status(st, r.fid, &r.status);
            st.changed.push(r.fid);
            FsReply::StoreStatus(rpcs::StatusReply {
                status: status(st, r.fid, caller)?,
                volsync: vs,
            })
        }
        FsCall::StoreData64(r, data) => {
            let v = st.vnode(r.fid).ok_or(E::ENOENT)?;
            if v.kind != FileType::File {
                return Err(E::EISDIR);
            }
            require(st, r.fid, caller, rights::WRITE)?;
            let old = v.data.len() as u64;
            let end = r.pos.saturating_add(r.length);
            let new_len = r.file_length.max(end);
            if new_len > MAX_FILE || (data.len() as u64) < r.length {
                // No test makes files this large: a client that asks for
                // one has computed a length wrong. Refused loudly, never
                // allocated (it once took a test process to 24 GB).
                tracing::error!(
                    pos = r.pos,
                    length = r.length,
                    file_length = r.file_length,
                    sent = data.len(),
                    "memserver: StoreData64 past {MAX_FILE} bytes or short of its data: a client bug"
                );
                return Err(E::EFBIG);
            }
            if new_len > old {
                quota_room(st, r.fid.volume, new_len - old)?;
            }
            let v = st.vnode_mut(r.fid).ok_or(E::ENOENT)?;
            // As viced: the file is cut to file_length when that is shorter,
            // then the bytes are written (extending it as they must).
            if r.file_length < v.data.len() as u64 {
                v.data.truncate(r.file_length as usize);
            }
            if end as usize > v.data.len() {
                v.data.resize(end as usize, 0);
            }
            v.data[r.pos as usize..end as usize].copy_from_slice(&data[..r.length as usize]);
            if (v.data.len() as u64) < r.file_length {
                v.data.resize(r.file_length as usize, 0);
            }
            apply_store_status(st, r.fid, &r.status);
            st.bump(r.fid);
            FsReply::StoreData64(rpcs::StatusReply {
                status: status(st, r.fid, caller)?,
                volsync: vs,
            })
        }
        FsCall::CreateFile(r) => {
            let fid = make(st, caller, r.dir, &r.name, FileType::File, &r.status)?;
            FsReply::CreateFile(rpcs::CreateReply {
                fid,
                status: status(st, fid, caller)?,
                dir_status: status(st, r.dir, caller)?,
                callback: callback(),
                volsync: vs,
            })
        }
        FsCall::MakeDir(r) => {
            let fid = make(st, caller, r.dir, &r.name, FileType::Directory, &r.status)?;
            FsReply::MakeDir(rpcs::CreateReply {
                fid,
                status: status(st, fid, caller)?,
                dir_status: status(st, r.dir, caller)?,
                callback: callback(),
                volsync: vs,
            })
        }
        FsCall::Symlink(r) => {
            let fid = make(st, caller, r.dir, &r.name, FileType::Symlink, &r.status)?;
            if let Some(v) = st.vnode_mut(fid) {
                v.data = r.target.into_bytes();
            }
            FsReply::Symlink(rpcs::SymlinkReply {
                fid,
                status: status(st, fid, caller)?,
                dir_status: status(st, r.dir, caller)?,
                volsync: vs,
            })
        }
        FsCall::Link(r) => {
            dir_of(st, r.dir)?;
            require(st, r.dir, caller, rights::INSERT)?;
            if r.existing.volume != r.dir.volume {
                return Err(E::EXDEV);
            }
            let n = name_ok(&r.name)?;
            let target = st.vnode(r.existing).ok_or(E::ENOENT)?;
            if target.kind == FileType::Directory {
                return Err(E::EISDIR);
            }
            if entry(st, r.dir, &n).is_some() {
                return Err(E::EEXIST);
            }
            if let Some(v) = st.vnode_mut(r.existing) {
                v.links += 1;
            }
            st.changed.push(r.existing);
            st.link_in(r.dir, &n, r.existing);
            FsReply::Link(rpcs::LinkReply {
                status: status(st, r.existing, caller)?,
                dir_status: status(st, r.dir, caller)?,
                volsync: vs,
            })
        }
        FsCall::RemoveFile(r) => {
            remove(st, caller, r.dir, &r.name, false)?;
            FsReply::RemoveFile(rpcs::StatusReply {
                status: status(st, r.dir, caller)?,
                volsync: vs,
            })
        }
        FsCall::RemoveDir(r) => {
            remove(st, caller, r.dir, &r.name, true)?;
            FsReply::RemoveDir(rpcs::StatusReply {
                status: status(st, r.dir, caller)?,
                volsync: vs,
            })
        }
        FsCall::Rename(r) => {
            rename(st, caller, &r)?;
            FsReply::Rename(rpcs::RenameReply {
                old_dir_status: status(st, r.old_dir, caller)?,
                new_dir_status: status(st, r.new_dir, caller)?,
                volsync: vs,
            })
        }
        FsCall::SetLock(r) => {
            let write = r.lock_type == afs_proto::fs::LOCK_WRITE;
            require(
                st,
                r.fid,
                caller,
                if write { rights::WRITE } else { rights::LOCK },
            )
            .or_else(|_| require(st, r.fid, caller, rights::WRITE))?;
            let v = st.vnode_mut(r.fid).ok_or(E::ENOENT)?;
            let others_read = v.readers.iter().any(|c| *c != caller.client);
            let other_writer = v.writer.is_some_and(|c| c != caller.client);
            if other_writer || (write && others_read) {
                return Err(E::EAGAIN);
            }
            if write {
                v.writer = Some(caller.client);
            } else if !v.readers.contains(&caller.client) {
                v.readers.push(caller.client);
            }
            FsReply::SetLock(vs)
        }
        FsCall::ExtendLock(r) => {
            let v = st.vnode(r.fid).ok_or(E::ENOENT)?;
            if v.writer != Some(caller.client) && !v.readers.contains(&caller.client) {
                return Err(E::EINVAL);
            }
            FsReply::ExtendLock(vs)
        }
        FsCall::ReleaseLock(r) => {
            let v = st.vnode_mut(r.fid).ok_or(E::ENOENT)?;
            if v.writer == Some(caller.client) {
                v.writer = None;
            }
            v.readers.retain(|c| *c != caller.client);
            FsReply::ReleaseLock(vs)
        }
    })
}

/// viced's CHK_FETCHSTATUS: `l` on directories and symlinks; `r`, or
/// owner (`a`) with `i`, on files.
fn may_fetch_status(s: &FetchStatus) -> bool {
    let a = s.caller_access;
    if s.file_type == FileType::File {
        a & rights::READ != 0
            || a & (rights::ADMINISTER | rights::INSERT) == rights::ADMINISTER | rights::INSERT
    } else {
        a & rights::LOOKUP != 0
    }
}

fn empty_status() -> FetchStatus {
    FetchStatus {
        interface_version: 1,
        file_type: FileType::Unknown(0),
        link_count: 0,
        length: 0,
        data_version: 0,
        author: 0,
        owner: 0,
        caller_access: 0,
        anonymous_access: 0,
        unix_mode_bits: 0,
        parent_vnode: 0,
        parent_unique: 0,
        residency_mask: 0,
        client_modtime: 0,
        server_modtime: 0,
        group: 0,
        sync_counter: 0,
        lock_count: 0,
        error_code: 0,
    }
}

fn remove(st: &mut State, caller: &Caller, dir: Fid, name: &str, want_dir: bool) -> R<()> {
    dir_of(st, dir)?;
    require(st, dir, caller, rights::DELETE)?;
    let n = name_ok(name)?;
    let victim = entry(st, dir, &n).ok_or(E::ENOENT)?;
    let v = st.vnode(victim).ok_or(E::ENOENT)?;
    let is_dir = v.kind == FileType::Directory;
    if want_dir && !is_dir {
        return Err(E::ENOTDIR);
    }
    if !want_dir && is_dir {
        return Err(E::EISDIR);
    }
    if is_dir && v.entries.len() > 2 {
        // viced answers EEXIST for a directory that is not empty.
        return Err(E::EEXIST);
    }
    if let Some(d) = st.vnode_mut(dir) {
        d.entries.remove(&n);
        if is_dir {
            d.links = d.links.saturating_sub(1);
        }
    }
    st.bump(dir);
    st.unlink_vnode(victim);
    Ok(())
}

/// True when `dir` is `anc` or below it.
fn is_below(st: &State, mut dir: Fid, anc: Fid) -> bool {
    for _ in 0..4096 {
        if dir == anc {
            return true;
        }
        let Some(v) = st.vnode(dir) else { return false };
        let parent = Fid::new(dir.volume, v.parent.0, v.parent.1);
        if parent == dir {
            return false;
        }
        dir = parent;
    }
    false
}

fn rename(st: &mut State, caller: &Caller, r: &rpcs::Rename) -> R<()> {
    dir_of(st, r.old_dir)?;
    dir_of(st, r.new_dir)?;
    if r.old_dir.volume != r.new_dir.volume {
        return Err(E::EXDEV);
    }
    require(st, r.old_dir, caller, rights::DELETE)?;
    require(st, r.new_dir, caller, rights::INSERT)?;
    let from = name_ok(&r.old_name)?;
    let to = name_ok(&r.new_name)?;
    let moved = entry(st, r.old_dir, &from).ok_or(E::ENOENT)?;
    let moved_dir = st.vnode(moved).map(|v| v.kind) == Some(FileType::Directory);
    if moved_dir && is_below(st, r.new_dir, moved) {
        return Err(E::EINVAL);
    }
    if let Some(existing) = entry(st, r.new_dir, &to) {
        if existing == moved {
            return Ok(());
        }
        let ev = st.vnode(existing).ok_or(E::ENOENT)?;
        let existing_dir = ev.kind == FileType::Directory;
        match (moved_dir, existing_dir) {
            (true, false) => return Err(E::ENOTDIR),
            (false, true) => return Err(E::EISDIR),
            (true, true) if ev.entries.len() > 2 => return Err(E::EEXIST),
            _ => {}
        }
        require(st, r.new_dir, caller, rights::DELETE)?;
        if let Some(d) = st.vnode_mut(r.new_dir) {
            d.entries.remove(&to);
            if existing_dir {
                d.links = d.links.saturating_sub(1);
            }
        }
        st.unlink_vnode(existing);
    }
    if let Some(d) = st.vnode_mut(r.old_dir) {
        d.entries.remove(&from);
        if moved_dir {
            d.links = d.links.saturating_sub(1);
        }
    }
    if let Some(d) = st.vnode_mut(r.new_dir) {
        d.entries.insert(to, moved);
        if moved_dir {
            d.links += 1;
        }
    }
    if let Some(v) = st.vnode_mut(moved) {
        v.parent = (r.new_dir.vnode, r.new_dir.unique);
        if moved_dir {
            v.entries.insert(b"..".to_vec(), r.new_dir);
        }
    }
    if moved_dir && r.old_dir != r.new_dir {
        st.bump(moved);
    } else {
        st.changed.push(moved);
    }
    st.bump(r.old_dir);
    if r.new_dir != r.old_dir {
        st.bump(r.new_dir);
    }
    Ok(())
}
