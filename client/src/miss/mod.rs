//! The miss policy: what a process gets when it reads (looks up, lists,
//! reads a link) something that is not cached while its volume is
//! disconnected.
//!
//! Every such request fails inside the client with ENETDOWN at once; the
//! FUSE adapter runs the kernel's requests through [`AfsClient::guarded`],
//! which then decides, from the process behind the request:
//!
//! 1. a desktop indexer ([`rules::INDEXERS`]) gets the error, always: its
//!    walks must never pile up waiting requests;
//! 2. else `AFSD_MISS=error|wait[:SECONDS]` in the process's environment;
//! 3. else the first `miss-rule` of the config file that matches;
//! 4. else the error.
//!
//! `wait` holds the request until the volume's mode changes and the request
//! succeeds or fails otherwise (it is run again at every mode change), or
//! until the bound (`miss-wait-timeout`, default 120 s; ETIMEDOUT). A wait
//! always ends: a FUSE request the daemon has taken cannot be killed in the
//! kernel, and the FUSE library answers FUSE_INTERRUPT with ENOSYS (after
//! which the kernel never sends another and waits even for a process
//! killed with -9). So the wait looks at its process every
//! [`POLL`]: a process with a signal to take, or gone, ends it with EINTR.
//! `afsd-rs waiting --release` ends it with ETIMEDOUT, as if the bound had
//! passed: EINTR would make many programs (cat's safe_read, stdio) simply
//! read again and wait again.
//!
//! Every miss counts in the stats (`offline.misses`), is kept for
//! `afsd-rs misses` and emits a `miss` event; every wait a `waiting` event.

pub mod book;
pub mod process;
pub mod rules;

use std::future::Future;
use std::sync::Weak;
use std::time::Duration;

use cache::{Batch, Op, Store};

use book::{Book, MissInfo, WaitingInfo};
use process::{ProcInfo, Processes};
use rules::{is_indexer, Action, Rule, Subject};

use crate::client::{AfsClient, Inner};
use crate::events::EventKind;
use crate::status::now_secs;
use crate::{Error, Result, Stats};

/// How often a waiting request looks at its process.
pub const POLL: Duration = Duration::from_millis(200);

/// How often changed misses are written to the store.
pub const KEEP_EVERY: Duration = Duration::from_secs(10);

/// The store's meta record holding the misses (JSON).
const META_MISSES: &str = "misses";

/// The miss policy's settings (`miss-rule` and `miss-wait-timeout` in the
/// config file).
#[derive(Clone, Debug)]
pub struct MissConfig {
    /// First match wins; none: error.
    pub rules: Vec<Rule>,
    /// The bound of a `wait` that names none.
    pub wait_timeout: Duration,
    /// Where `/afs` is mounted: paths in rules, lists and events are
    /// absolute.
    pub mount: String,
}

impl Default for MissConfig {
    fn default() -> Self {
        MissConfig {
            rules: Vec::new(),
            wait_timeout: Duration::from_secs(120),
            mount: "/afs".into(),
        }
    }
}

/// Who made a kernel request: the FUSE header's uid and pid (a thread id).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caller {
    pub uid: u32,
    pub pid: u32,
}

/// What a request names, for the path of a miss.
#[derive(Clone, Copy, Debug)]
pub enum MissAt<'a> {
    /// An inode (getattr, readdir, readlink, open).
    Node(u64),
    /// A name in a directory (lookup).
    Child(u64, &'a [u8]),
    /// An open file (read).
    Handle(u64),
}

/// The policy's state: processes read, waits, misses.
#[derive(Default)]
pub(crate) struct Miss {
    pub(crate) config: MissConfig,
    procs: Processes,
    pub(crate) book: Book,
}

impl Miss {
    /// The policy, with the misses an earlier run kept in `store`.
    pub(crate) fn new(config: MissConfig, store: &dyn Store) -> Self {
        let m = Miss {
            config,
            ..Miss::default()
        };
        match store.get_meta(META_MISSES) {
            Ok(Some(bytes)) => match serde_json::from_slice::<Vec<MissInfo>>(&bytes) {
                Ok(kept) => m.book.load(kept),
                Err(e) => tracing::warn!("the misses kept in the cache are unreadable: {e}"),
            },
            Ok(None) => {}
            Err(e) => tracing::warn!("reading the misses kept in the cache: {e}"),
        }
        m
    }

    /// Writes the misses to the store if they changed.
    pub(crate) fn keep(&self, store: &dyn Store) {
        let Some(all) = self.book.changed() else {
            return;
        };
        let mut b = Batch::new();
        b.push(Op::PutMeta(
            META_MISSES.into(),
            serde_json::to_vec(&all).unwrap_or_default(),
        ));
        if let Err(e) = store.apply(b) {
            tracing::warn!("keeping the misses in the cache: {e}");
        }
    }

    /// The action for a miss of `path` by `uid` in process `p`.
    pub(crate) fn decide(&self, uid: u32, path: &str, p: &ProcInfo) -> Action {
        let s = Subject {
            path,
            uid,
            comm: &p.comm,
            exe: p.exe.as_deref(),
        };
        if is_indexer(&s) {
            return Action::Error;
        }
        if let Some(Ok(a)) = p.env {
            return a;
        }
        self.config
            .rules
            .iter()
            .find(|r| r.matches(&s))
            .map_or(Action::Error, |r| r.action)
    }
}

/// Writes changed misses to the store every [`KEEP_EVERY`], until the
/// client is gone.
pub(crate) async fn keep_misses(weak: Weak<Inner>) {
    loop {
        tokio::time::sleep(KEEP_EVERY).await;
        let Some(inner) = weak.upgrade() else { return };
        inner.miss.keep(inner.store.as_ref());
    }
}

fn is_miss<T>(r: &Result<T>) -> bool {
    matches!(r, Err(e) if e.errno() == libc::ENETDOWN)
}

impl AfsClient {
    /// Runs `op` for `caller`, applying the miss policy when it fails for
    /// want of a cached copy in a disconnected volume (ENETDOWN). `op` is
    /// run again, as is, whenever a volume's mode changes during a wait.
    pub async fn guarded<T, F, Fut>(&self, caller: Caller, at: MissAt<'_>, mut op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let conn = &self.inner.valid.conn;
        // Subscribed before the first try, so that a volume coming back
        // between the failure and the wait is not missed.
        let mut modes = conn.changes.subscribe();
        let first = op().await;
        if !is_miss(&first) {
            return first;
        }
        let inner = &self.inner;
        let path = self.miss_path(at);
        let p = inner.miss.procs.get(caller.pid);
        let command = if p.comm.is_empty() {
            "?".to_string()
        } else {
            p.comm.clone()
        };
        Stats::add(&inner.stats.misses, 1);
        inner.miss.book.missed(caller.uid, &path, &command);
        conn.events.emit(
            Some(caller.uid),
            EventKind::Miss {
                pid: p.pid,
                command: command.clone(),
                path: path.clone(),
            },
        );
        // The same task again right after its wait ended without the
        // volume (the kernel's own read after a failed read-ahead, or the
        // program trying again): it gets that end again, at once.
        if let Some(why) = inner.miss.book.recently_ended(caller.pid) {
            if caller.pid != 0 {
                return Err(Error::MissWait(why));
            }
        }
        let action = inner.miss.decide(caller.uid, &path, &p);
        let bound = match action {
            Action::Error => return first,
            Action::Wait(secs) => secs.map_or(inner.miss.config.wait_timeout, Duration::from_secs),
        };
        tracing::info!(pid = p.pid, uid = caller.uid, command = %command, path = %path,
            seconds = bound.as_secs(), "waiting for a disconnected volume");
        let guard = inner.miss.book.wait(WaitingInfo {
            pid: p.pid,
            tid: caller.pid,
            uid: caller.uid,
            command: command.clone(),
            path: path.clone(),
            since: now_secs(),
            until: now_secs() + bound.as_secs(),
        });
        conn.events.emit(
            Some(caller.uid),
            EventKind::Waiting {
                pid: p.pid,
                command: command.clone(),
                path: path.clone(),
            },
        );
        let deadline = tokio::time::sleep(bound);
        tokio::pin!(deadline);
        // An interval, not a sleep per turn: mode changes of other volumes
        // must not keep postponing the look at the process.
        let mut poll = tokio::time::interval(POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let end = |why: &str| {
            tracing::info!(pid = p.pid, path = %path, "wait ended: {why}");
        };
        loop {
            tokio::select! {
                changed = modes.changed() => {
                    if changed.is_err() {
                        return first;
                    }
                    let again = op().await;
                    if !is_miss(&again) {
                        end("the volume answered");
                        return again;
                    }
                }
                _ = guard.release.notified() => {
                    end("released");
                    let why = format!("{path}: released by afsd-rs waiting --release");
                    inner.miss.book.ended(caller.pid, &why);
                    return Err(Error::MissWait(why));
                }
                _ = &mut deadline => {
                    end("timed out");
                    let why = format!(
                        "{path}: the volume stayed disconnected for {} s",
                        bound.as_secs()
                    );
                    inner.miss.book.ended(caller.pid, &why);
                    return Err(Error::MissWait(why));
                }
                _ = poll.tick() => {
                    if caller.pid != 0 && crate::locks::interrupted(caller.pid) {
                        end("the process has a signal or is gone");
                        return Err(Error::Interrupted);
                    }
                }
            }
        }
    }

    /// The absolute path a request names, as the kernel looked it up.
    fn miss_path(&self, at: MissAt<'_>) -> String {
        let inner = &self.inner;
        let rel = |ino: u64| -> Option<String> { inner.nodes.path_of_ino(ino) };
        let rel = match at {
            MissAt::Node(ino) => rel(ino),
            MissAt::Child(parent, name) => rel(parent).map(|p| {
                let name = String::from_utf8_lossy(name);
                if p.is_empty() {
                    name.into_owned()
                } else {
                    format!("{p}/{name}")
                }
            }),
            MissAt::Handle(fh) => inner.open.handle(fh).ok().and_then(|h| rel(h.ino)),
        };
        let mount = inner.miss.config.mount.trim_end_matches('/');
        match rel {
            Some(r) if r.is_empty() => mount.to_string(),
            Some(r) => format!("{mount}/{r}"),
            None => format!("{mount}/(unknown path)"),
        }
    }

    /// The processes waiting now: `uid`'s (None: everyone's).
    pub fn waiting(&self, uid: Option<u32>) -> Vec<WaitingInfo> {
        self.inner.miss.book.waiting(uid)
    }

    /// Ends waits now (`afsd-rs waiting --release`): process `pid`'s, or
    /// all of `caller`'s; root may end anyone's. The pids released.
    pub fn release_waiting(&self, caller: u32, pid: Option<u32>) -> Result<Vec<u32>> {
        self.inner.miss.book.release(caller, pid)
    }

    /// The misses kept: `uid`'s (None: everyone's), latest first.
    pub fn misses(&self, uid: Option<u32>) -> Vec<MissInfo> {
        self.inner.miss.book.misses(uid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proc_named(comm: &str, env: Option<Action>) -> ProcInfo {
        ProcInfo {
            pid: 1,
            comm: comm.into(),
            exe: Some(format!("/usr/bin/{comm}")),
            env: env.map(Ok),
        }
    }

    #[test]
    fn indexers_then_environment_then_rules_then_error() {
        let m = Miss::new(
            MissConfig {
                rules: rules::parse_rules([
                    "error path=/afs/c/scratch/**",
                    "wait:30 comm=make,tracker-miner-fs-3",
                    "wait uid=1000",
                ])
                .unwrap(),
                ..MissConfig::default()
            },
            &cache::MemoryStore::new(),
        );
        let d = |uid, path, p: &ProcInfo| m.decide(uid, path, p);
        assert_eq!(
            d(1, "/afs/c/x", &proc_named("make", None)),
            Action::Wait(Some(30))
        );
        assert_eq!(
            d(1000, "/afs/c/x", &proc_named("cat", None)),
            Action::Wait(None)
        );
        assert_eq!(
            d(1, "/afs/c/x", &proc_named("cat", None)),
            Action::Error,
            "default"
        );
        assert_eq!(
            d(1000, "/afs/c/scratch/x", &proc_named("make", None)),
            Action::Error,
            "first match wins"
        );
        assert_eq!(
            d(
                1,
                "/afs/c/x",
                &proc_named("cat", Some(Action::Wait(Some(5))))
            ),
            Action::Wait(Some(5)),
            "the environment overrides the rules"
        );
        assert_eq!(
            d(1000, "/afs/c/x", &proc_named("make", Some(Action::Error))),
            Action::Error
        );
        // The kernel cuts the name to 15 bytes; a wait rule and the
        // environment do not make an indexer wait.
        let mut tracker = proc_named("tracker-miner-f", Some(Action::Wait(None)));
        tracker.exe = None;
        assert_eq!(d(1000, "/afs/c/x", &tracker), Action::Error);
    }
}
