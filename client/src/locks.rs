//! Whole-file locks at the fileserver (flock and fcntl).
//!
//! AFS locks cover whole files and belong to the client, not to a process:
//! local owners share one fileserver lock (SetLock), renewed with
//! ExtendLock well before its 5-minute expiry and given back with
//! ReleaseLock when the last local owner lets go. Conflicts between local
//! owners are settled here; between clients, by the fileserver.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use afs_proto::fs as rpcs;
use cache::FidKey;

use crate::identity::Identity;
use crate::inode::NodeRef;
use crate::validate::Validator;
use crate::{Error, Result};

/// Fileserver locks expire after 5 minutes (afsint.xg); renew well before.
const LOCK_RENEW: Duration = Duration::from_secs(120);

/// A lock held at the fileserver for local lock owners.
struct HeldLock {
    write: bool,
    owners: HashSet<u64>,
    renewer: tokio::task::JoinHandle<()>,
}

/// The locks this client holds.
pub(crate) struct Locks {
    valid: Arc<Validator>,
    held: Mutex<HashMap<FidKey, HeldLock>>,
}

/// What the local owners decide about a request.
enum Local {
    Granted,
    Conflict,
    AskServer,
}

impl Locks {
    pub(crate) fn new(valid: Arc<Validator>) -> Self {
        Locks {
            valid,
            held: Mutex::new(HashMap::new()),
        }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<FidKey, HeldLock>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Lets `owner` go; the fileserver lock goes with the last owner.
    pub(crate) async fn unlock(&self, node: &NodeRef, who: &Identity, owner: u64) -> Result<()> {
        let key = node.key();
        let release = {
            let mut held = self.held();
            match held.get_mut(&key) {
                Some(l) => {
                    l.owners.remove(&owner);
                    if l.owners.is_empty() {
                        if let Some(l) = held.remove(&key) {
                            l.renewer.abort();
                        }
                        true
                    } else {
                        false
                    }
                }
                None => false,
            }
        };
        if release {
            self.valid
                .call(node, who, &rpcs::ReleaseLock { fid: node.fid })
                .await?;
        }
        Ok(())
    }

    /// Takes a read or write lock for `owner`. With `waiter`, a refused
    /// lock is retried until granted or until that process is interrupted
    /// (see [`interrupted`]); a waiter that gives up holds nothing.
    pub(crate) async fn lock(
        &self,
        node: &NodeRef,
        who: &Identity,
        owner: u64,
        write: bool,
        waiter: Option<u32>,
    ) -> Result<()> {
        let wait = waiter.is_some();
        let key = node.key();
        loop {
            let decision = {
                let mut held = self.held();
                match held.get_mut(&key) {
                    Some(l) => {
                        let others = l.owners.iter().any(|o| *o != owner);
                        // Readers share; a writer needs to be alone (and
                        // to hold the server's write lock already).
                        let grant = if write {
                            !others && l.write
                        } else {
                            !others || !l.write
                        };
                        if grant {
                            l.owners.insert(owner);
                            Local::Granted
                        } else if others {
                            Local::Conflict
                        } else {
                            Local::AskServer
                        }
                    }
                    None => Local::AskServer,
                }
            };
            match decision {
                Local::Granted => return Ok(()),
                Local::Conflict if !wait => return Err(Error::WouldBlock),
                Local::Conflict => {
                    pause(waiter, Duration::from_millis(200)).await?;
                    continue;
                }
                Local::AskServer => {}
            }
            // Only we hold it, read, and want write: give it back and ask
            // the server for a write lock.
            let upgrade = self.held().remove(&key);
            if let Some(l) = upgrade {
                l.renewer.abort();
                self.valid
                    .call(node, who, &rpcs::ReleaseLock { fid: node.fid })
                    .await?;
            }
            let lock_type = if write {
                afs_proto::fs::LOCK_WRITE
            } else {
                afs_proto::fs::LOCK_READ
            };
            match self
                .valid
                .call(
                    node,
                    who,
                    &rpcs::SetLock {
                        fid: node.fid,
                        lock_type,
                    },
                )
                .await
            {
                Ok(_) => {
                    let valid = self.valid.clone();
                    let (n, w) = (node.clone(), who.clone());
                    let renewer = tokio::spawn(async move {
                        loop {
                            tokio::time::sleep(LOCK_RENEW).await;
                            if let Err(e) =
                                valid.call(&n, &w, &rpcs::ExtendLock { fid: n.fid }).await
                            {
                                tracing::warn!(fid = ?n.fid, "renewing a lock: {e}");
                            }
                        }
                    });
                    let mut owners = HashSet::new();
                    owners.insert(owner);
                    self.held().insert(
                        key,
                        HeldLock {
                            write,
                            owners,
                            renewer,
                        },
                    );
                    return Ok(());
                }
                Err(e) if e.errno() == libc::EAGAIN || e.errno() == libc::EWOULDBLOCK => {
                    if !wait {
                        return Err(Error::WouldBlock);
                    }
                    pause(waiter, Duration::from_secs(1)).await?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// F_GETLK: the lock type in the way of `owner` taking a `typ` lock,
    /// as far as this client knows (the fileserver has no query without
    /// taking the lock).
    pub(crate) fn conflicting(&self, node: &NodeRef, owner: u64, typ: i32) -> i32 {
        let held = self.held();
        match held.get(&node.key()) {
            Some(l)
                if l.owners.iter().any(|o| *o != owner) && (l.write || typ == libc::F_WRLCK) =>
            {
                if l.write {
                    libc::F_WRLCK
                } else {
                    libc::F_RDLCK
                }
            }
            _ => libc::F_UNLCK,
        }
    }
}

/// Waits `d` for a blocked lock, in short steps, giving up with EINTR as
/// soon as the waiting process has a signal to take or is gone. The kernel
/// would send FUSE_INTERRUPT for that, but the FUSE library answers it with
/// ENOSYS, after which the kernel waits for the reply even for a killed
/// process: without this, `kill -9` of a waiter would leave it stuck.
async fn pause(waiter: Option<u32>, d: Duration) -> Result<()> {
    let step = Duration::from_millis(100);
    let mut waited = Duration::ZERO;
    while waited < d {
        if waiter.is_some_and(interrupted) {
            return Err(Error::Interrupted);
        }
        tokio::time::sleep(step).await;
        waited += step;
    }
    Ok(())
}

/// Whether process `pid` has a signal pending that it does not block, or
/// has exited (read from /proc/PID/status: SigPnd, ShdPnd, SigBlk).
pub(crate) fn interrupted(pid: u32) -> bool {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return true;
    };
    let field = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or(0)
    };
    if text
        .lines()
        .any(|l| l.starts_with("State:") && (l.contains('Z') || l.contains('X')))
    {
        return true;
    }
    let pending = field("SigPnd:") | field("ShdPnd:");
    pending & !field("SigBlk:") != 0
}

#[cfg(test)]
mod tests {
    use super::interrupted;

    #[test]
    fn a_live_process_without_signals_is_not_interrupted() {
        assert!(!interrupted(std::process::id()));
        assert!(interrupted(u32::MAX), "no such process");
    }
}
