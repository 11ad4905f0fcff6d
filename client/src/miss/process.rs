//! What the miss policy knows of the process behind a FUSE request, read
//! from `/proc/PID/` (the daemon runs as root): its program name, its
//! executable, its process id (the request names the thread), and its own
//! choice `AFSD_MISS=error|wait[:SECONDS]` in its environment.
//!
//! Read at the process's first miss and kept by (pid, start time, comm,
//! exe): a pid used again by a new process, and a process that ran
//! `execve` since (same pid and start time, a new program and
//! environment), are read again. An empty environment is not kept: it is
//! what `/proc` shows of a task still inside `execve` (the FUSE requests of
//! an exec of a program in `/afs` come from there). Only misses read here;
//! requests that hit the cache never touch `/proc`.

use std::collections::HashMap;
use std::sync::Mutex;

use super::rules::{parse_action, Action};

/// Processes remembered at most; the table is emptied when full (a
/// process read again costs four small reads).
const KEEP: usize = 4096;

/// A process, as read from `/proc`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcInfo {
    /// The process (thread group) id; the request's pid when unknown.
    pub pid: u32,
    /// `/proc/PID/comm`.
    pub comm: String,
    /// `/proc/PID/exe`, when readable.
    pub exe: Option<String>,
    /// `AFSD_MISS` from its environment: None when unset; Err(text) when
    /// set to something that is not an action (ignored, logged once).
    pub env: Option<Result<Action, String>>,
}

/// The start time of a task (field 22 of `/proc/PID/stat`, clock ticks
/// since boot). The name (field 2) may hold spaces and parentheses, so the
/// fields are counted after its last `)`.
pub fn parse_start_time(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // After the name come state (field 3) ... starttime (field 22).
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// The name in `/proc/PID/stat` (field 2, between the first `(` and the
/// last `)`).
pub fn parse_stat_comm(stat: &str) -> Option<&str> {
    stat.get(stat.find('(')? + 1..stat.rfind(')')?)
}

/// `AFSD_MISS` from a NUL-separated environment block.
pub fn parse_environ(env: &[u8]) -> Option<Result<Action, String>> {
    env.split(|&b| b == 0)
        .filter_map(|kv| kv.strip_prefix(b"AFSD_MISS="))
        .next_back()
        .map(|v| {
            let v = String::from_utf8_lossy(v);
            parse_action(&v).map_err(|_| v.into_owned())
        })
}

/// The thread group id from `/proc/PID/status` (`Tgid:`).
pub fn parse_tgid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Reads what there is to read of task `tid` now; true when its
/// environment read empty (inside `execve`, or gone).
fn read(tid: u32) -> (ProcInfo, bool) {
    let dir = format!("/proc/{tid}");
    let comm = std::fs::read_to_string(format!("{dir}/comm"))
        .map(|c| c.trim_end_matches('\n').to_string())
        .unwrap_or_default();
    let exe = std::fs::read_link(format!("{dir}/exe"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned());
    let pid = std::fs::read_to_string(format!("{dir}/status"))
        .ok()
        .and_then(|s| parse_tgid(&s))
        .unwrap_or(tid);
    let environ = std::fs::read(format!("{dir}/environ")).unwrap_or_default();
    let env = parse_environ(&environ);
    (
        ProcInfo {
            pid,
            comm,
            exe,
            env,
        },
        environ.is_empty(),
    )
}

/// Which process a task is now: id, start time, program name, executable.
type Key = (u32, u64, String, Option<String>);

/// Processes read so far.
#[derive(Default)]
pub struct Processes {
    known: Mutex<HashMap<Key, ProcInfo>>,
}

impl Processes {
    /// The process of task `tid` (0: the kernel, no process).
    pub fn get(&self, tid: u32) -> ProcInfo {
        if tid == 0 {
            return ProcInfo::default();
        }
        let stat = std::fs::read_to_string(format!("/proc/{tid}/stat")).unwrap_or_default();
        let (Some(start), Some(comm)) = (parse_start_time(&stat), parse_stat_comm(&stat)) else {
            // Gone already: nothing to keep.
            return ProcInfo {
                pid: tid,
                ..ProcInfo::default()
            };
        };
        let exe = std::fs::read_link(format!("/proc/{tid}/exe"))
            .ok()
            .map(|p| p.to_string_lossy().into_owned());
        let key = (tid, start, comm.to_string(), exe);
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = known.get(&key) {
            return p.clone();
        }
        let (p, env_empty) = read(tid);
        if env_empty {
            return p;
        }
        if let Some(Err(v)) = &p.env {
            tracing::warn!(pid = p.pid, comm = %p.comm, value = %v,
                "AFSD_MISS is not error, wait or wait:SECONDS; ignored");
        }
        if known.len() >= KEEP {
            known.clear();
        }
        known.insert(key, p.clone());
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_is_counted_after_the_name() {
        let stat = "4242 (my (odd) prog) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 200";
        assert_eq!(parse_start_time(stat), Some(987654));
        assert_eq!(parse_start_time("4242 (x) S 1"), None);
        assert_eq!(parse_start_time("garbage"), None);
    }

    #[test]
    fn our_own_start_time_reads() {
        let s = std::fs::read_to_string("/proc/self/stat").unwrap();
        assert!(parse_start_time(&s).is_some(), "{s}");
    }

    #[test]
    fn afsd_miss_from_the_environment() {
        assert_eq!(parse_environ(b"A=1\0PATH=/bin\0"), None);
        assert_eq!(
            parse_environ(b"A=1\0AFSD_MISS=wait:30\0B=2\0"),
            Some(Ok(Action::Wait(Some(30))))
        );
        assert_eq!(parse_environ(b"AFSD_MISS=error"), Some(Ok(Action::Error)));
        assert_eq!(
            parse_environ(b"AFSD_MISS=sometimes\0"),
            Some(Err("sometimes".into()))
        );
        // Not a prefix of another variable.
        assert_eq!(parse_environ(b"XAFSD_MISS=wait\0"), None);
    }

    #[test]
    fn the_name_in_stat() {
        assert_eq!(parse_stat_comm("1 (a (b) c) S 0"), Some("a (b) c"));
        assert_eq!(parse_stat_comm("1 () S"), Some(""));
        assert_eq!(parse_stat_comm("garbage"), None);
    }

    #[test]
    fn tgid_parses() {
        assert_eq!(parse_tgid("Name:\tcat\nTgid:\t77\nPid:\t78\n"), Some(77));
        assert_eq!(parse_tgid("Name:\tcat\n"), None);
    }

    #[test]
    fn this_process_reads() {
        let p = Processes::default();
        let me = std::process::id();
        let info = p.get(me);
        assert_eq!(info.pid, me);
        assert!(!info.comm.is_empty());
        assert!(info.exe.is_some());
        assert_eq!(p.get(me), info, "kept");
        assert_eq!(p.get(0), ProcInfo::default());
        assert_eq!(p.get(u32::MAX).comm, "");
    }
}
