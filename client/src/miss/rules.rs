//! The miss policy's rules: what a process gets when it reads data that is
//! not cached while its volume is disconnected.
//!
//! One rule per `miss-rule` line of the config file, first match wins:
//!
//! ```text
//! miss-rule = wait path=/afs/example.org/proj/** comm=make,cc1,cargo uid=1000 timeout=300
//! miss-rule = wait:60 exe=/usr/bin/rsync
//! miss-rule = error path=/afs/example.org/scratch/**
//! ```
//!
//! The first word is the action: `error` (ENETDOWN at once) or
//! `wait[:SECONDS]` (block until the volume is back, at most SECONDS, then
//! ETIMEDOUT). The others are conditions, all of which must hold; a
//! condition with several comma-separated values holds when one does:
//! `path=GLOB` (the absolute path; `*` and `?` stay within one path
//! component, `**` crosses them, and a trailing `/**` also matches the
//! directory itself), `comm=NAME` (the program name, as `ps -o comm` shows
//! it, or the basename of its executable), `exe=GLOB` (the executable's
//! path), `uid=N`. `timeout=SECONDS` is the same as `wait:SECONDS`. A rule
//! with no condition matches everything.
//!
//! The lines are parsed when the daemon starts; a line that cannot be
//! understood stops it with the reason, rather than being silently ignored
//! (a rule that is dropped would change what processes get).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The longest bound a wait may have: a FUSE request that never returns
/// cannot be killed in the kernel, so every wait ends.
pub const MAX_WAIT: Duration = Duration::from_secs(24 * 3600);

/// What a process gets on a miss.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "action", content = "seconds")]
pub enum Action {
    /// ENETDOWN at once.
    Error,
    /// Wait until the volume is back, at most this long (None: the
    /// configured `miss-wait-timeout`), then ETIMEDOUT.
    Wait(Option<u64>),
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Action::Error => f.write_str("error"),
            Action::Wait(None) => f.write_str("wait"),
            Action::Wait(Some(s)) => write!(f, "wait:{s}"),
        }
    }
}

/// `error`, `wait` or `wait:SECONDS` (the rule's action, and `AFSD_MISS`).
pub fn parse_action(s: &str) -> Result<Action> {
    action(s).map_err(Error::Config)
}

fn action(s: &str) -> std::result::Result<Action, String> {
    let s = s.trim();
    match s.split_once(':') {
        None if s == "error" => Ok(Action::Error),
        None if s == "wait" => Ok(Action::Wait(None)),
        Some(("wait", secs)) => Ok(Action::Wait(Some(seconds(secs)?))),
        _ => Err(format!(
            "{s:?}: the miss action is error, wait or wait:SECONDS"
        )),
    }
}

fn seconds(s: &str) -> std::result::Result<u64, String> {
    let n: u64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if n == 0 || n > MAX_WAIT.as_secs() {
        return Err(format!(
            "a wait of {n} s: it must be between 1 and {} seconds",
            MAX_WAIT.as_secs()
        ));
    }
    Ok(n)
}

/// One `miss-rule` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub action: Action,
    /// Any of these globs (empty: any path).
    pub paths: Vec<String>,
    /// Any of these program names (empty: any program).
    pub comms: Vec<String>,
    /// Any of these executable globs (empty: any executable).
    pub exes: Vec<String>,
    /// Any of these uids (empty: any user).
    pub uids: Vec<u32>,
    /// The line as written, for messages.
    pub text: String,
}

/// Who is reading and what, as the rules see it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Subject<'a> {
    pub path: &'a str,
    pub uid: u32,
    /// `/proc/PID/comm` (at most 15 bytes: the kernel cuts longer names).
    pub comm: &'a str,
    /// `/proc/PID/exe`, when it could be read.
    pub exe: Option<&'a str>,
}

impl Rule {
    /// Parses the value of one `miss-rule` line.
    pub fn parse(line: &str) -> Result<Rule> {
        let text = line.trim().to_string();
        let mut words = text.split_whitespace();
        let first = words
            .next()
            .ok_or_else(|| Error::Config("an empty miss-rule".into()))?;
        let mut rule = Rule {
            action: action(first).map_err(|e| Error::Config(format!("miss-rule {text:?}: {e}")))?,
            paths: Vec::new(),
            comms: Vec::new(),
            exes: Vec::new(),
            uids: Vec::new(),
            text: text.clone(),
        };
        let bad = |why: String| Error::Config(format!("miss-rule {text:?}: {why}"));
        for w in words {
            let (k, v) = w
                .split_once('=')
                .ok_or_else(|| bad(format!("{w:?} is not KEY=VALUE")))?;
            let values: Vec<&str> = v.split(',').filter(|x| !x.is_empty()).collect();
            if values.is_empty() {
                return Err(bad(format!("{k}= has no value")));
            }
            match k {
                "path" => {
                    for p in values {
                        if !p.starts_with('/') {
                            return Err(bad(format!("path {p:?} must be absolute")));
                        }
                        rule.paths.push(p.to_string());
                    }
                }
                "comm" => rule.comms.extend(values.iter().map(|s| s.to_string())),
                "exe" => rule.exes.extend(values.iter().map(|s| s.to_string())),
                "uid" => {
                    for u in values {
                        rule.uids.push(
                            u.parse()
                                .map_err(|_| bad(format!("uid {u:?} is not a number")))?,
                        );
                    }
                }
                "timeout" => {
                    let [s] = values[..] else {
                        return Err(bad("one timeout only".into()));
                    };
                    if rule.action == Action::Error {
                        return Err(bad("timeout= goes with wait".into()));
                    }
                    rule.action = Action::Wait(Some(seconds(s).map_err(bad)?));
                }
                _ => {
                    return Err(bad(format!(
                        "unknown condition {k:?} (path, comm, exe, uid, timeout)"
                    )))
                }
            }
        }
        Ok(rule)
    }

    /// Whether every condition holds for `s`.
    pub fn matches(&self, s: &Subject<'_>) -> bool {
        (self.paths.is_empty() || self.paths.iter().any(|g| glob_match(g, s.path)))
            && (self.uids.is_empty() || self.uids.contains(&s.uid))
            && (self.comms.is_empty() || self.comms.iter().any(|n| names_match(n, s)))
            && (self.exes.is_empty()
                || s.exe
                    .is_some_and(|e| self.exes.iter().any(|g| glob_match(g, e))))
    }
}

/// The kernel keeps at most this many bytes of a program name in `comm`.
const COMM_LEN: usize = 15;

/// Whether `name` is the program of `s`: its `comm` (which the kernel cuts
/// to 15 bytes, so `tracker-miner-fs-3` shows as `tracker-miner-f`) or the
/// basename of its executable.
pub fn names_match(name: &str, s: &Subject<'_>) -> bool {
    let comm_matches = s.comm == name
        || (s.comm.len() == COMM_LEN && name.len() > COMM_LEN && name.starts_with(s.comm));
    comm_matches
        || s.exe
            .and_then(|e| e.rsplit('/').next())
            .is_some_and(|base| base == name)
}

/// Glob match of a whole path: `*` and `?` within one component, `**`
/// across components; a pattern ending in `/**` also matches the directory
/// itself.
pub fn glob_match(pattern: &str, path: &str) -> bool {
    if let Some(dir) = pattern.strip_suffix("/**") {
        if glob_bytes(dir.as_bytes(), path.as_bytes()) {
            return true;
        }
    }
    glob_bytes(pattern.as_bytes(), path.as_bytes())
}

fn glob_bytes(p: &[u8], s: &[u8]) -> bool {
    match p {
        [] => s.is_empty(),
        [b'*', b'*', rest @ ..] => {
            // `**/` may also stand for no directory at all.
            if let [b'/', after @ ..] = rest {
                if glob_bytes(after, s) {
                    return true;
                }
            }
            (0..=s.len()).any(|i| glob_bytes(rest, &s[i..]))
        }
        [b'*', rest @ ..] => {
            let stop = s.iter().position(|&c| c == b'/').unwrap_or(s.len());
            (0..=stop).any(|i| glob_bytes(rest, &s[i..]))
        }
        [b'?', rest @ ..] => matches!(s, [c, tail @ ..] if *c != b'/' && glob_bytes(rest, tail)),
        [c, rest @ ..] => matches!(s, [d, tail @ ..] if d == c && glob_bytes(rest, tail)),
    }
}

/// Programs that never wait, whatever the rules and their environment:
/// desktop indexers walk whole trees in the background, and a walk that
/// blocks on every uncached file would hold FUSE requests for nothing.
pub const INDEXERS: &[&str] = &[
    "tracker-miner-fs-3",
    "tracker-extract-3",
    "baloo_file",
    "baloo_file_extractor",
    "updatedb",
    "updatedb.plocate",
    "locate",
];

/// Whether `s` is a desktop indexer (see [`INDEXERS`]).
pub fn is_indexer(s: &Subject<'_>) -> bool {
    INDEXERS.iter().any(|n| names_match(n, s))
}

/// The rule lines of the config file (the values of its `miss-rule`
/// keys, in order).
pub fn parse_rules<'a>(lines: impl IntoIterator<Item = &'a str>) -> Result<Vec<Rule>> {
    lines.into_iter().map(Rule::parse).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subj<'a>(path: &'a str, uid: u32, comm: &'a str, exe: Option<&'a str>) -> Subject<'a> {
        Subject {
            path,
            uid,
            comm,
            exe,
        }
    }

    #[test]
    fn actions_parse() {
        assert_eq!(parse_action("error").unwrap(), Action::Error);
        assert_eq!(parse_action(" wait ").unwrap(), Action::Wait(None));
        assert_eq!(parse_action("wait:30").unwrap(), Action::Wait(Some(30)));
        for bad in [
            "",
            "Wait",
            "wait:",
            "wait:0",
            "wait:x",
            "error:3",
            "wait:99999999",
        ] {
            assert!(parse_action(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_rule_parses_with_every_condition() {
        let r = Rule::parse("wait path=/afs/c/proj/** comm=make,cc1,cargo uid=1000 timeout=300")
            .unwrap();
        assert_eq!(r.action, Action::Wait(Some(300)));
        assert_eq!(r.paths, vec!["/afs/c/proj/**"]);
        assert_eq!(r.comms, vec!["make", "cc1", "cargo"]);
        assert_eq!(r.uids, vec![1000]);
        let r = Rule::parse("error exe=/usr/bin/*").unwrap();
        assert_eq!(r.action, Action::Error);
        assert_eq!(r.exes, vec!["/usr/bin/*"]);
        assert!(Rule::parse("wait:5")
            .unwrap()
            .matches(&subj("/x", 1, "a", None)));
    }

    #[test]
    fn bad_rules_say_why() {
        for (line, why) in [
            ("", "empty"),
            ("block path=/a", "error, wait"),
            ("wait path=a/b", "absolute"),
            ("wait uid=alice", "not a number"),
            ("wait colour=red", "unknown condition"),
            ("wait path", "KEY=VALUE"),
            ("wait comm=", "no value"),
            ("error timeout=3", "goes with wait"),
            ("wait timeout=0", "between"),
        ] {
            let e = Rule::parse(line).unwrap_err().to_string();
            assert!(e.contains(why), "{line:?}: {e}");
        }
    }

    #[test]
    fn conditions_all_hold_and_values_any() {
        let r = Rule::parse("wait path=/afs/c/proj/**,/afs/c/src/* comm=make,cc1 uid=1000,1001")
            .unwrap();
        assert!(r.matches(&subj("/afs/c/proj/a/b.c", 1000, "make", None)));
        assert!(r.matches(&subj("/afs/c/src/x", 1001, "cc1", None)));
        assert!(
            !r.matches(&subj("/afs/c/src/x/y", 1001, "cc1", None)),
            "* stays in one component"
        );
        assert!(
            !r.matches(&subj("/afs/c/proj/a", 1002, "make", None)),
            "uid"
        );
        assert!(
            !r.matches(&subj("/afs/c/proj/a", 1000, "cat", None)),
            "comm"
        );
        assert!(
            !r.matches(&subj("/afs/c/other", 1000, "make", None)),
            "path"
        );
        let r = Rule::parse("wait exe=/usr/bin/*").unwrap();
        assert!(r.matches(&subj("/p", 0, "x", Some("/usr/bin/cat"))));
        assert!(!r.matches(&subj("/p", 0, "x", Some("/usr/local/bin/cat"))));
        assert!(!r.matches(&subj("/p", 0, "x", None)), "no exe known");
    }

    #[test]
    fn globs() {
        for (p, s, want) in [
            ("/afs/c/proj/**", "/afs/c/proj", true),
            ("/afs/c/proj/**", "/afs/c/proj/a/b/c", true),
            ("/afs/c/proj/**", "/afs/c/project", false),
            ("/**/ruled-*/**", "/tmp/x/afs/c/ruled-12/f.txt", true),
            ("/**/ruled-*/**", "/tmp/x/afs/c/plain/f.txt", false),
            ("/a/**/z", "/a/z", true),
            ("/a/**/z", "/a/b/c/z", true),
            ("/a/*.c", "/a/x.c", true),
            ("/a/*.c", "/a/b/x.c", false),
            ("/a/?", "/a/b", true),
            ("/a/?", "/a/", false),
            ("/a/?", "/a//", false),
            ("/a", "/a/", false),
        ] {
            assert_eq!(glob_match(p, s), want, "{p} vs {s}");
        }
    }

    #[test]
    fn program_names_see_through_comm_truncation() {
        // The kernel shows tracker-miner-fs-3 as tracker-miner-f.
        let s = subj("/p", 1000, "tracker-miner-f", None);
        assert!(is_indexer(&s));
        assert!(is_indexer(&subj(
            "/p",
            0,
            "x",
            Some("/usr/bin/updatedb.plocate")
        )));
        assert!(is_indexer(&subj("/p", 0, "baloo_file", None)));
        assert!(!is_indexer(&subj("/p", 0, "baloo", None)));
        assert!(!is_indexer(&subj("/p", 0, "cat", Some("/usr/bin/cat"))));
        // A 15-byte name is not a prefix match of a shorter one.
        assert!(!names_match(
            "make",
            &subj("/p", 0, "makemakemakemak", None)
        ));
    }

    #[test]
    fn rules_of_a_config_parse_in_order() {
        let rules = parse_rules(["error uid=0", "wait comm=make"]).unwrap();
        assert_eq!(rules.len(), 2);
        assert!(parse_rules(["error uid=0", "nonsense"]).is_err());
    }
}
