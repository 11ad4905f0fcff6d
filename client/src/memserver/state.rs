//! The in-memory cell's state: volumes, vnodes, ACLs, callbacks promised.

use std::collections::{BTreeMap, HashMap, HashSet};

use afs_proto::types::{Fid, FileType};

/// system:anyuser's PTS id.
pub const ANYUSER: i32 = -101;
/// system:authuser's PTS id.
pub const AUTHUSER: i32 = -102;

/// AFS rights bits.
pub mod rights {
    pub const READ: u32 = 1;
    pub const WRITE: u32 = 2;
    pub const INSERT: u32 = 4;
    pub const LOOKUP: u32 = 8;
    pub const DELETE: u32 = 16;
    pub const LOCK: u32 = 32;
    pub const ADMINISTER: u32 = 64;
    pub const ALL: u32 = 127;
}

/// What a path names, as a test sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    File(Vec<u8>),
    Dir,
    Symlink(Vec<u8>),
}

/// ACL entries: (PTS id, rights).
pub(crate) type AclEntries = Vec<(i32, u32)>;

pub(crate) struct Vnode {
    pub unique: u32,
    pub kind: FileType,
    pub data: Vec<u8>,
    pub entries: BTreeMap<Vec<u8>, Fid>,
    pub parent: (u32, u32),
    pub dv: u64,
    pub mode: u32,
    pub owner: u32,
    pub group: u32,
    pub links: u32,
    pub modtime: u32,
    pub author: u32,
    /// Directories: positive and negative ACL entries.
    pub acl: (AclEntries, AclEntries),
    /// Locks: readers (client ids) and the writer.
    pub readers: Vec<usize>,
    pub writer: Option<usize>,
}

pub(crate) struct Volume {
    pub name: String,
    pub quota_kb: u64,
    pub vnodes: HashMap<u32, Vnode>,
    next_dir: u32,
    next_file: u32,
    next_unique: u32,
}

/// Who calls.
pub(crate) struct Caller {
    pub client: usize,
    pub vice_id: Option<i32>,
}

pub(crate) struct State {
    pub volumes: HashMap<u32, Volume>,
    next_volume: u32,
    pub users: HashMap<String, i32>,
    /// Callbacks promised: fid → clients.
    callbacks: HashMap<Fid, HashSet<usize>>,
    pub calls: HashMap<&'static str, u64>,
    /// Fids changed by the call being served (their callbacks break).
    pub changed: Vec<Fid>,
    pub clock: u32,
}

impl Volume {
    fn new(name: &str, quota_kb: u64) -> Self {
        Volume {
            name: name.to_string(),
            quota_kb,
            vnodes: HashMap::new(),
            next_dir: 3,
            next_file: 2,
            next_unique: 2,
        }
    }

    /// Bytes in use, for the quota, in KiB (at least 1 per vnode, as
    /// OpenAFS counts).
    pub fn used_kb(&self) -> u64 {
        self.vnodes
            .values()
            .map(|v| (v.data.len() as u64).div_ceil(1024).max(1))
            .sum()
    }
}

impl State {
    pub fn new() -> Self {
        let mut st = State {
            volumes: HashMap::new(),
            next_volume: 536_870_912,
            users: HashMap::new(),
            callbacks: HashMap::new(),
            calls: HashMap::new(),
            changed: Vec::new(),
            clock: 1_700_000_000,
        };
        st.users.insert("system:anyuser".into(), ANYUSER);
        st.users.insert("system:authuser".into(), AUTHUSER);
        st.users.insert("system:administrators".into(), -204);
        st.add_volume("root.cell", 0);
        st
    }

    pub fn tick(&mut self) -> u32 {
        self.clock += 1;
        self.clock
    }

    /// A new volume with its root directory (1.1).
    pub fn add_volume(&mut self, name: &str, quota_kb: u64) -> u32 {
        let id = self.next_volume;
        self.next_volume += 3;
        let mut v = Volume::new(name, quota_kb);
        let now = self.tick();
        let mut entries = BTreeMap::new();
        entries.insert(b".".to_vec(), Fid::new(id, 1, 1));
        entries.insert(b"..".to_vec(), Fid::new(id, 1, 1));
        v.vnodes.insert(
            1,
            Vnode {
                unique: 1,
                kind: FileType::Directory,
                data: Vec::new(),
                entries,
                parent: (1, 1),
                dv: 1,
                mode: 0o755,
                owner: 0,
                group: 0,
                links: 2,
                modtime: now,
                author: 0,
                acl: (
                    vec![
                        (ANYUSER, rights::READ | rights::LOOKUP),
                        (-204, rights::ALL),
                    ],
                    vec![],
                ),
                readers: Vec::new(),
                writer: None,
            },
        );
        self.volumes.insert(id, v);
        id
    }

    pub fn volume_id(&self, name: &str) -> Option<u32> {
        self.volumes
            .iter()
            .find(|(_, v)| v.name == name)
            .map(|(id, _)| *id)
    }

    pub fn volume_name(&self, id: u32) -> Option<String> {
        self.volumes.get(&id).map(|v| v.name.clone())
    }

    pub fn vnode(&self, fid: Fid) -> Option<&Vnode> {
        self.volumes
            .get(&fid.volume)?
            .vnodes
            .get(&fid.vnode)
            .filter(|v| v.unique == fid.unique)
    }

    pub fn vnode_mut(&mut self, fid: Fid) -> Option<&mut Vnode> {
        self.volumes
            .get_mut(&fid.volume)?
            .vnodes
            .get_mut(&fid.vnode)
            .filter(|v| v.unique == fid.unique)
    }

    /// Allocates a vnode in `dir`'s volume, as the fileserver does:
    /// directories odd, everything else even.
    pub fn alloc(&mut self, dir: Fid, kind: FileType, mode: u32, owner: u32) -> Fid {
        let now = self.tick();
        let acl = self.vnode(dir).map(|d| d.acl.clone()).unwrap_or_default();
        let v = self
            .volumes
            .get_mut(&dir.volume)
            .expect("volume of a live dir");
        let vn = if kind == FileType::Directory {
            let n = v.next_dir;
            v.next_dir += 2;
            n
        } else {
            let n = v.next_file;
            v.next_file += 2;
            n
        };
        let unique = v.next_unique;
        v.next_unique += 1;
        let fid = Fid::new(dir.volume, vn, unique);
        let mut entries = BTreeMap::new();
        if kind == FileType::Directory {
            entries.insert(b".".to_vec(), fid);
            entries.insert(b"..".to_vec(), dir);
        }
        v.vnodes.insert(
            vn,
            Vnode {
                unique,
                kind,
                data: Vec::new(),
                entries,
                parent: (dir.vnode, dir.unique),
                dv: 1,
                mode,
                owner,
                group: 0,
                links: if kind == FileType::Directory { 2 } else { 1 },
                modtime: now,
                author: owner,
                // A new directory inherits its parent's ACL.
                acl: if kind == FileType::Directory {
                    acl
                } else {
                    Default::default()
                },
                readers: Vec::new(),
                writer: None,
            },
        );
        fid
    }

    /// The ACL that governs `fid`: its own for a directory, its parent's
    /// otherwise.
    fn acl_dir(&self, fid: Fid) -> Option<Fid> {
        let v = self.vnode(fid)?;
        if v.kind == FileType::Directory {
            Some(fid)
        } else {
            let (vn, un) = v.parent;
            Some(Fid::new(fid.volume, vn, un))
        }
    }

    /// The caller's rights on `fid`.
    pub fn rights_of(&self, fid: Fid, vice_id: Option<i32>) -> u32 {
        let Some(d) = self.acl_dir(fid).and_then(|d| self.vnode(d)) else {
            return 0;
        };
        let applies = |id: i32| {
            id == ANYUSER
                || (id == AUTHUSER && vice_id.is_some())
                || Some(id) == vice_id
                || (id == -204 && vice_id == Some(1))
        };
        let plus = d
            .acl
            .0
            .iter()
            .filter(|(id, _)| applies(*id))
            .fold(0, |a, (_, r)| a | r);
        let minus = d
            .acl
            .1
            .iter()
            .filter(|(id, _)| applies(*id))
            .fold(0, |a, (_, r)| a | r);
        let bits = plus & !minus;
        // On files, "owner" stands for `a` (viced's GetVolumePackage).
        match self.vnode(fid) {
            Some(v) if v.kind != FileType::Directory => {
                if vice_id.is_some() && vice_id == Some(v.owner as i32) {
                    bits | rights::ADMINISTER
                } else {
                    bits & !rights::ADMINISTER
                }
            }
            _ => bits,
        }
    }

    pub fn set_acl(&mut self, fid: Fid, plus: &[(i32, u32)], minus: &[(i32, u32)]) {
        if let Some(v) = self.vnode_mut(fid) {
            v.acl = (plus.to_vec(), minus.to_vec());
        }
    }

    /// Records a promise of a callback on `fid` to `client`.
    pub fn promise(&mut self, fid: Fid, client: usize) {
        self.callbacks.entry(fid).or_default().insert(client);
    }

    /// Breaks for every client but `except` holding a callback on one of
    /// `fids`, grouped per client. Those promises are gone.
    pub fn take_breaks(&mut self, except: usize, fids: Vec<Fid>) -> Vec<(usize, Vec<Fid>)> {
        let mut per: BTreeMap<usize, Vec<Fid>> = BTreeMap::new();
        for fid in fids {
            if let Some(clients) = self.callbacks.get_mut(&fid) {
                let holders: Vec<usize> =
                    clients.iter().copied().filter(|c| *c != except).collect();
                for c in holders {
                    clients.remove(&c);
                    per.entry(c).or_default().push(fid);
                }
            }
        }
        per.into_iter().collect()
    }

    /// GiveUpAllCallBacks.
    pub fn give_up(&mut self, client: usize) {
        for clients in self.callbacks.values_mut() {
            clients.remove(&client);
        }
    }

    /// A change of data or entries: the data version rises by one.
    pub fn bump(&mut self, fid: Fid) {
        let now = self.tick();
        if let Some(v) = self.vnode_mut(fid) {
            v.dv += 1;
            v.modtime = now;
        }
        self.changed.push(fid);
    }

    // ---- paths, for the third party ----

    fn root(&self) -> Fid {
        let id = self.volume_id("root.cell").expect("root.cell exists");
        Fid::new(id, 1, 1)
    }

    /// Follows a mount point's `#vol.` to the volume's root.
    fn follow(&self, fid: Fid) -> Fid {
        match self.vnode(fid) {
            Some(v) if v.kind == FileType::Symlink && v.mode & 0o111 == 0 => {
                let t = String::from_utf8_lossy(&v.data);
                let name = t.trim_start_matches(['#', '%']).trim_end_matches('.');
                match self.volume_id(name) {
                    Some(id) => Fid::new(id, 1, 1),
                    None => fid,
                }
            }
            _ => fid,
        }
    }

    fn components(path: &str) -> Vec<&str> {
        path.split('/').filter(|c| !c.is_empty()).collect()
    }

    /// The fid a path (from the root of root.cell) names.
    pub fn resolve(&self, path: &str) -> Option<Fid> {
        let mut cur = self.root();
        for c in Self::components(path) {
            let d = self.vnode(self.follow(cur))?;
            cur = *d.entries.get(c.as_bytes())?;
        }
        Some(self.follow(cur))
    }

    /// Makes the directories of `path`; returns (the last one, its fid).
    pub fn make_dirs(&mut self, path: &str) -> (Fid, Fid) {
        let mut cur = self.root();
        let mut parent = cur;
        for c in Self::components(path) {
            parent = cur;
            let next = self
                .vnode(cur)
                .and_then(|d| d.entries.get(c.as_bytes()).copied());
            cur = match next {
                Some(f) => self.follow(f),
                None => {
                    let f = self.alloc(cur, FileType::Directory, 0o755, 0);
                    self.link_in(cur, c.as_bytes(), f);
                    f
                }
            };
        }
        (parent, cur)
    }

    /// The parent directory of `path` (made) and the leaf name.
    pub fn make_dirs_parent<'p>(&mut self, path: &'p str) -> (Fid, &'p [u8]) {
        let comps = Self::components(path);
        let (leaf, dirs) = comps.split_last().expect("a non-empty path");
        let (_, dir) = self.make_dirs(&dirs.join("/"));
        (dir, leaf.as_bytes())
    }

    /// Adds entry `name` → `fid` to directory `dir` (a change of `dir`).
    pub fn link_in(&mut self, dir: Fid, name: &[u8], fid: Fid) {
        if let Some(d) = self.vnode_mut(dir) {
            d.entries.insert(name.to_vec(), fid);
        }
        self.bump(dir);
    }

    pub fn make_path_file(&mut self, path: &str) -> Fid {
        if let Some(f) = self.resolve(path) {
            return f;
        }
        let (dir, leaf) = self.make_dirs_parent(path);
        let f = self.alloc(dir, FileType::File, 0o644, 0);
        self.link_in(dir, leaf, f);
        f
    }

    pub fn make_symlink(&mut self, dir: Fid, name: &[u8], target: &[u8], mode: u32) -> Fid {
        let f = self.alloc(dir, FileType::Symlink, mode, 0);
        if let Some(v) = self.vnode_mut(f) {
            v.data = target.to_vec();
        }
        self.link_in(dir, name, f);
        f
    }

    pub fn set_data(&mut self, fid: Fid, data: Vec<u8>) {
        if let Some(v) = self.vnode_mut(fid) {
            v.data = data;
        }
        self.bump(fid);
    }

    pub fn data_of(&self, fid: Fid) -> Option<Vec<u8>> {
        self.vnode(fid).map(|v| v.data.clone())
    }

    pub fn dv(&self, fid: Fid) -> Option<u64> {
        self.vnode(fid).map(|v| v.dv)
    }

    /// Removes the object at `path`: (its directory, the object).
    pub fn remove_path(&mut self, path: &str) -> Option<(Fid, Fid)> {
        let comps = Self::components(path);
        let (leaf, dirs) = comps.split_last()?;
        let dir = self.resolve(&dirs.join("/"))?;
        let victim = *self.vnode(dir)?.entries.get(leaf.as_bytes())?;
        let v = self.vnode(victim)?;
        if v.kind == FileType::Directory && v.entries.len() > 2 {
            return None;
        }
        if let Some(d) = self.vnode_mut(dir) {
            d.entries.remove(leaf.as_bytes());
        }
        self.bump(dir);
        self.unlink_vnode(victim);
        Some((dir, victim))
    }

    /// One link of `fid` is gone; at none, the vnode goes.
    pub fn unlink_vnode(&mut self, fid: Fid) {
        let gone = match self.vnode_mut(fid) {
            Some(v) if v.kind == FileType::Directory => true,
            Some(v) => {
                v.links = v.links.saturating_sub(1);
                v.links == 0
            }
            None => false,
        };
        if gone {
            if let Some(vol) = self.volumes.get_mut(&fid.volume) {
                vol.vnodes.remove(&fid.vnode);
            }
        }
        self.changed.push(fid);
    }

    /// Every name under `path`, recursively, sorted.
    pub fn tree(&self, path: &str) -> Vec<(String, Entry)> {
        let mut out = Vec::new();
        if let Some(root) = self.resolve(path) {
            self.walk(root, String::new(), &mut out);
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    fn walk(&self, dir: Fid, prefix: String, out: &mut Vec<(String, Entry)>) {
        let Some(d) = self.vnode(dir) else { return };
        for (name, &fid) in &d.entries {
            if name == b"." || name == b".." {
                continue;
            }
            let p = format!("{prefix}{}", String::from_utf8_lossy(name));
            match self.vnode(fid) {
                Some(v) if v.kind == FileType::Directory => {
                    out.push((p.clone(), Entry::Dir));
                    self.walk(fid, format!("{p}/"), out);
                }
                Some(v) if v.kind == FileType::Symlink => {
                    out.push((p, Entry::Symlink(v.data.clone())))
                }
                Some(v) => out.push((p, Entry::File(v.data.clone()))),
                None => {}
            }
        }
    }
}
