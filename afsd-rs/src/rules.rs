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
//! glob = "*.o"
//! prefer = "newer-source"       # the side whose source (below) is newer
//! source = "$stem.c"            # in the same directory
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

use std::path::{Path, PathBuf};
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
    /// With `prefer = "newer-source"`: the file the matched one is built
    /// from, in the same directory (`$stem`, `$name` replaced).
    pub source: Option<String>,
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
    /// Keep the side whose source file (`source`, beside the conflict's
    /// file) is the newer: decided by the caller, which can see the
    /// source's own conflict or its file.
    NewerSource {
        source: String,
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
                match (p.as_str(), &r.source) {
                    ("newer-mtime", None) | ("newer-source", Some(_)) => {}
                    ("newer-source", None) => {
                        return Err(format!(
                            "{}: rule {n}: prefer newer-source needs source = \"$stem.c\" (say)",
                            path.display()
                        ))
                    }
                    ("newer-mtime", Some(_)) => {
                        return Err(format!(
                            "{}: rule {n}: source goes with prefer = \"newer-source\"",
                            path.display()
                        ))
                    }
                    _ => {
                        return Err(format!(
                            "{}: rule {n}: prefer {p:?}: expected newer-mtime or newer-source",
                            path.display()
                        ))
                    }
                }
            } else if r.source.is_some() {
                return Err(format!(
                    "{}: rule {n}: source goes with prefer = \"newer-source\"",
                    path.display()
                ));
            }
        }
        Ok(rules)
    }

    /// The first rule matching a conflict, and its number (from 0).
    fn matching(&self, c: &ConflictInfo) -> Option<(usize, &Rule)> {
        let name = c.path.rsplit('/').next().unwrap_or(&c.path);
        self.rule.iter().enumerate().find(|(_, r)| {
            let subject = if r.glob.contains('/') {
                c.path.as_str()
            } else {
                name
            };
            glob::Pattern::new(&r.glob).is_ok_and(|g| g.matches(subject))
                && r.kind.as_ref().is_none_or(|k| *k == c.kind)
        })
    }

    /// Whether a rule matches the conflict.
    pub fn matches(&self, c: &ConflictInfo) -> bool {
        self.matching(c).is_some()
    }

    /// The decision for one conflict and why. `states` is asked for only
    /// when a rule compares versions.
    pub fn decide(
        &self,
        c: &ConflictInfo,
        states: impl FnOnce() -> Result<ConflictStates, String>,
    ) -> (Decision, String) {
        let name = c.path.rsplit('/').next().unwrap_or(&c.path);
        let Some((i, r)) = self.matching(c) else {
            return (Decision::None, "no rule matches".into());
        };
        let why = format!("rule {} (glob {:?})", i + 1, r.glob);
        if let Some(a) = &r.action {
            return match parse_action(a) {
                Ok(res) => (Decision::Resolve(res), why),
                Err(e) => (Decision::None, e),
            };
        }
        let stem = match name.rfind('.') {
            Some(i) if i > 0 => &name[..i],
            _ => name,
        };
        if let Some(src) = &r.source {
            let source = src.replace("$stem", stem).replace("$name", name);
            return (Decision::NewerSource { source }, why);
        }
        if let Some(cmd) = &r.run {
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

/// The name of a per-directory rules file: its rules apply to conflicts
/// in its directory and below, before those of directories above.
pub const DIR_RULES: &str = ".afsd-resolve.toml";

/// One rules file in the order rules are tried.
pub struct Layer {
    /// Where it was read, for the reasons printed.
    pub origin: PathBuf,
    pub rules: Rules,
    /// Whether its `run` rules may run: a directory's file is shared with
    /// whoever can write the directory, so its commands run only when the
    /// file is the caller's own.
    pub may_run: bool,
}

impl Layer {
    /// Reads `path` if it exists (Ok(None) when it does not).
    pub fn read(path: &Path, caller: u32) -> Result<Option<Layer>, String> {
        use std::os::unix::fs::MetadataExt;
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        Ok(Some(Layer {
            origin: path.to_path_buf(),
            rules: Rules::load(path)?,
            may_run: meta.uid() == caller,
        }))
    }
}

/// The decision for a conflict by the first layer with a matching rule
/// (nearest directory first, the user's own file last).
pub fn decide_in(
    layers: &[&Layer],
    c: &ConflictInfo,
    mut states: impl FnMut() -> Result<ConflictStates, String>,
) -> (Decision, String) {
    for l in layers {
        if !l.rules.matches(c) {
            continue;
        }
        let (d, why) = l.rules.decide(c, &mut states);
        let why = format!("{} of {}", why, l.origin.display());
        if matches!(d, Decision::Run { .. }) && !l.may_run {
            return (
                Decision::None,
                format!("{why}: its command is not run, the file is not yours"),
            );
        }
        return (d, why);
    }
    (Decision::None, "no rule matches".into())
}

/// The user's own rules file: `$XDG_CONFIG_HOME/afsd-rs/resolve.toml`, or
/// `~/.config/afsd-rs/resolve.toml`.
pub fn user_rules_path() -> Option<PathBuf> {
    let base = match std::env::var_os("XDG_CONFIG_HOME") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from(std::env::var_os("HOME")?).join(".config"),
    };
    Some(base.join("afsd-rs").join("resolve.toml"))
}

/// `prefer = "newer-source"`: which side of a built file to keep, from
/// its source's modification times. `source_sides` is the source's own
/// (local, server) when it is in conflict too; else `source_now` is its
/// time at the path, and each side of the built file counts as built from
/// it when it is at least as new.
pub fn by_source(
    source: &str,
    source_sides: Option<(u64, u64)>,
    source_now: Option<u64>,
    built: Option<(u64, u64)>,
) -> (Decision, String) {
    if let Some((l, s)) = source_sides {
        return if l > s {
            (
                Decision::Resolve(Resolution::KeepLocal),
                format!("{source} is newer on your side ({l} > {s})"),
            )
        } else {
            (
                Decision::Resolve(Resolution::KeepRemote),
                format!("{source} is as new or newer on the server ({s} >= {l})"),
            )
        };
    }
    let (Some(src), Some((l, s))) = (source_now, built) else {
        return (
            Decision::None,
            format!("{source}: its time or this file's two times are unknown"),
        );
    };
    match (l >= src, s >= src) {
        (true, false) => (
            Decision::Resolve(Resolution::KeepLocal),
            format!("yours was built after {source} ({l} >= {src}), the server's before"),
        ),
        (false, true) => (
            Decision::Resolve(Resolution::KeepRemote),
            format!("the server's was built after {source} ({s} >= {src}), yours before"),
        ),
        (true, true) if l > s => (
            Decision::Resolve(Resolution::KeepLocal),
            format!("both were built after {source}; yours is newer"),
        ),
        (true, true) => (
            Decision::Resolve(Resolution::KeepRemote),
            format!("both were built after {source}; the server's is as new or newer"),
        ),
        (false, false) => (
            Decision::None,
            format!("neither side was built after {source}: rebuild it"),
        ),
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
    fn the_side_whose_source_is_newer_is_kept() {
        let r =
            rules("[[rule]]\nglob = \"*.o\"\nprefer = \"newer-source\"\nsource = \"$stem.c\"\n");
        let none = || Err("not asked".to_string());
        assert_eq!(
            r.decide(&info("/.c/x/main.o", "update/update"), none).0,
            Decision::NewerSource {
                source: "main.c".into()
            }
        );
        let keep = |d: (Decision, String)| d.0;
        // The source in conflict too: its newer side decides.
        assert_eq!(
            keep(by_source("main.c", Some((9, 5)), None, None)),
            Decision::Resolve(Resolution::KeepLocal)
        );
        assert_eq!(
            keep(by_source("main.c", Some((5, 9)), None, None)),
            Decision::Resolve(Resolution::KeepRemote)
        );
        // One source: the side built after it.
        assert_eq!(
            keep(by_source("main.c", None, Some(100), Some((150, 90)))),
            Decision::Resolve(Resolution::KeepLocal)
        );
        assert_eq!(
            keep(by_source("main.c", None, Some(100), Some((90, 150)))),
            Decision::Resolve(Resolution::KeepRemote)
        );
        assert_eq!(
            keep(by_source("main.c", None, Some(100), Some((90, 95)))),
            Decision::None
        );
        assert_eq!(
            keep(by_source("main.c", None, None, Some((1, 2)))),
            Decision::None
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
                "[[rule]]\nglob = \"*.o\"\nprefer = \"newer-source\"\n",
                "needs source",
            ),
            (
                "[[rule]]\nglob = \"*.o\"\naction = \"keep-local\"\nsource = \"$stem.c\"\n",
                "source goes with",
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
