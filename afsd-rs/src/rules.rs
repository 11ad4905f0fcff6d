//! Bulk resolution rules: `afsd-rs resolve --rules FILE [DIR...] --dry-run
//! | --apply`. A rules file (TOML) maps conflicts, by glob and kind, to
//! what to do with them, so that a thousand build products are cleared by
//! one line, as Coda's ASR rules did:
//!
//! ```toml
//! [[rule]]
//! glob = "*.o"                  # the file name; a glob with `/` matches the path
//! kind = "update/update"        # optional
//! action = "keep-remote"        # keep-local | keep-remote | stash-local | stash-both | merge[=NAME]
//!
//! [[rule]]
//! glob = "*.sqlite"
//! action = "merge=sqlite"       # row by row; refused: both kept
//!
//! [[rule]]
//! glob = "*.txt"
//! prefer = "newer-mtime"        # keep whichever side was modified last
//!
//! [[rule]]
//! glob = "*.out"
//! run = "make $stem.out"        # rebuild in the file's directory, then keep what it made
//! fallback = "stash-both"       # when the command fails
//! ```
//!
//! The first matching rule decides. `--dry-run` prints every decision with
//! its reason and changes nothing; `--apply` carries them out through the
//! same resolutions as `afsd-rs resolve`.

use std::path::Path;
use std::process::Command;

use client::{ConflictInfo, ConflictStates, Resolution};
use serde::Deserialize;

/// A rules file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rules {
    #[serde(default)]
    pub rule: Vec<Rule>,
}

/// One rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub glob: String,
    pub kind: Option<String>,
    pub action: Option<String>,
    pub prefer: Option<String>,
    pub run: Option<String>,
    pub fallback: Option<String>,
}

/// What a rule decided for one conflict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Resolve(Resolution),
    /// Run a command (rebuild) in the file's directory, then keep what it
    /// made at the path (the server's side, rewritten).
    Run {
        command: String,
        fallback: Option<Resolution>,
    },
    /// No rule matches: left alone.
    None,
}

pub fn parse_action(s: &str) -> Result<Resolution, String> {
    Ok(match s {
        "keep-local" => Resolution::KeepLocal,
        "keep-remote" => Resolution::KeepRemote,
        "stash-local" => Resolution::StashLocal,
        "stash-both" => Resolution::StashBoth,
        "merge" => Resolution::Merge("text".into()),
        other => match other.strip_prefix("merge=") {
            Some(name) => Resolution::Merge(name.to_string()),
            None => {
                return Err(format!(
                    "{other:?}: expected keep-local, keep-remote, stash-local, stash-both or merge[=NAME]"
                ))
            }
        },
    })
}

impl Rules {
    /// Reads and checks a rules file: every rule has a valid glob and
    /// exactly one of action, prefer, run.
    pub fn load(path: &Path) -> Result<Rules, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let rules: Rules = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        for (i, r) in rules.rule.iter().enumerate() {
            let n = i + 1;
            glob::Pattern::new(&r.glob)
                .map_err(|e| format!("{}: rule {n}: glob {:?}: {e}", path.display(), r.glob))?;
            let set = [r.action.is_some(), r.prefer.is_some(), r.run.is_some()]
                .iter()
                .filter(|x| **x)
                .count();
            if set != 1 {
                return Err(format!(
                    "{}: rule {n}: give exactly one of action, prefer, run",
                    path.display()
                ));
            }
            if let Some(a) = &r.action {
                parse_action(a).map_err(|e| format!("{}: rule {n}: {e}", path.display()))?;
            }
            if let Some(f) = &r.fallback {
                parse_action(f)
                    .map_err(|e| format!("{}: rule {n}: fallback: {e}", path.display()))?;
            }
            if let Some(p) = &r.prefer {
                if p != "newer-mtime" {
                    return Err(format!(
                        "{}: rule {n}: prefer {p:?}: expected newer-mtime",
                        path.display()
                    ));
                }
            }
        }
        Ok(rules)
    }

    /// The decision for one conflict and why. `states` is asked for only
    /// when a rule compares versions.
    pub fn decide(
        &self,
        c: &ConflictInfo,
        states: impl FnOnce() -> Result<ConflictStates, String>,
    ) -> (Decision, String) {
        let name = c.path.rsplit('/').next().unwrap_or(&c.path);
        let Some((i, r)) = self.rule.iter().enumerate().find(|(_, r)| {
            let subject = if r.glob.contains('/') {
                c.path.as_str()
            } else {
                name
            };
            glob::Pattern::new(&r.glob).is_ok_and(|g| g.matches(subject))
                && r.kind.as_ref().is_none_or(|k| *k == c.kind)
        }) else {
            return (Decision::None, "no rule matches".into());
        };
        let why = format!("rule {} (glob {:?})", i + 1, r.glob);
        if let Some(a) = &r.action {
            return match parse_action(a) {
                Ok(res) => (Decision::Resolve(res), why),
                Err(e) => (Decision::None, e),
            };
        }
        if let Some(cmd) = &r.run {
            let stem = match name.rfind('.') {
                Some(i) if i > 0 => &name[..i],
                _ => name,
            };
            let command = cmd.replace("$stem", stem).replace("$name", name);
            let fallback = r.fallback.as_deref().and_then(|f| parse_action(f).ok());
            return (Decision::Run { command, fallback }, why);
        }
        // prefer = "newer-mtime"
        match states() {
            Ok(ConflictStates {
                local: Some(l),
                server: Some(s),
                ..
            }) => {
                if l.mtime > s.mtime {
                    (
                        Decision::Resolve(Resolution::KeepLocal),
                        format!("{why}: yours is newer ({} > {})", l.mtime, s.mtime),
                    )
                } else {
                    (
                        Decision::Resolve(Resolution::KeepRemote),
                        format!(
                            "{why}: the server's is as new or newer ({} >= {})",
                            s.mtime, l.mtime
                        ),
                    )
                }
            }
            Ok(_) => (
                Decision::None,
                format!("{why}: a side's modification time is unknown"),
            ),
            Err(e) => (Decision::None, format!("{why}: {e}")),
        }
    }
}

/// Runs a rebuild command in `dir` (through `sh -c`, as the caller).
pub fn run_in(dir: &Path, command: &str) -> Result<(), String> {
    let st = Command::new("sh")
        .arg("-c")
        .arg(command)
        .current_dir(dir)
        .status()
        .map_err(|e| format!("{command}: {e}"))?;
    if st.success() {
        Ok(())
    } else {
        Err(format!("{command}: {st}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(path: &str, kind: &str) -> ConflictInfo {
        ConflictInfo {
            id: 1,
            kind: kind.into(),
            cell: "c".into(),
            volume: 1,
            path: path.into(),
            fid: (1, 2, 3),
            uid: 0,
            change: "store".into(),
            base_dv: None,
            local_dv: None,
            server_dv: None,
            local_bytes: None,
            detected: 0,
            reason: String::new(),
            changes: 1,
        }
    }

    fn rules(text: &str) -> Rules {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.toml");
        std::fs::write(&p, text).unwrap();
        Rules::load(&p).unwrap()
    }

    #[test]
    fn a_rule_may_name_the_sqlite_resolver() {
        assert_eq!(
            parse_action("merge=sqlite"),
            Ok(Resolution::Merge("sqlite".into()))
        );
        let r = rules("[[rule]]\nglob = \"*.db\"\naction = \"merge=sqlite\"\n");
        assert_eq!(r.rule[0].action.as_deref(), Some("merge=sqlite"));
    }

    #[test]
    fn the_first_matching_rule_decides() {
        let r = rules(
            r#"
            [[rule]]
            glob = "*.o"
            kind = "update/update"
            action = "keep-remote"
            [[rule]]
            glob = "*.o"
            action = "stash-both"
            [[rule]]
            glob = "*/gen/*.c"
            run = "make $stem.c"
            fallback = "stash-local"
            "#,
        );
        let none = || Err("not asked".to_string());
        assert_eq!(
            r.decide(&info("/.c/x/a.o", "update/update"), none).0,
            Decision::Resolve(Resolution::KeepRemote)
        );
        assert_eq!(
            r.decide(&info("/.c/x/a.o", "name/name"), none).0,
            Decision::Resolve(Resolution::StashBoth)
        );
        assert_eq!(
            r.decide(&info("/.c/x/gen/p.c", "update/update"), none).0,
            Decision::Run {
                command: "make p.c".into(),
                fallback: Some(Resolution::StashLocal)
            }
        );
        assert_eq!(
            r.decide(&info("/.c/x/a.txt", "update/update"), none).0,
            Decision::None
        );
    }

    #[test]
    fn newer_mtime_compares_the_sides() {
        let r = rules("[[rule]]\nglob = \"*\"\nprefer = \"newer-mtime\"\n");
        let st = |l: u64, s: u64| {
            let o = |m| client::ObjectState {
                data_version: 1,
                length: 1,
                mtime: m,
                mode: 0o644,
                owner: 0,
            };
            ConflictStates {
                base: None,
                local: Some(o(l)),
                server: Some(o(s)),
            }
        };
        let c = info("/.c/f", "update/update");
        assert_eq!(
            r.decide(&c, || Ok(st(5, 3))).0,
            Decision::Resolve(Resolution::KeepLocal)
        );
        assert_eq!(
            r.decide(&c, || Ok(st(3, 5))).0,
            Decision::Resolve(Resolution::KeepRemote)
        );
    }

    #[test]
    fn bad_rules_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.toml");
        for (text, want) in [
            ("[[rule]]\nglob = \"*.o\"\n", "exactly one"),
            (
                "[[rule]]\nglob = \"*.o\"\naction = \"burn\"\n",
                "expected keep-local",
            ),
            ("[[rule]]\nglob = \"[\"\naction = \"keep-local\"\n", "glob"),
            (
                "[[rule]]\nglob = \"*\"\nprefer = \"older\"\n",
                "newer-mtime",
            ),
            (
                "[[rule]]\nglob = \"*\"\nactoin = \"keep-local\"\n",
                "unknown field",
            ),
        ] {
            std::fs::write(&p, text).unwrap();
            let e = Rules::load(&p).unwrap_err();
            assert!(e.contains(want), "{text}: {e}");
        }
    }
}
