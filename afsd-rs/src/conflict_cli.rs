//! `afsd-rs conflict show|cat|diff`: one conflict's three states (base,
//! local, server) and their contents. A conflict is named by its id
//! (`afsd-rs conflicts`) or by its path, whose `afsd.conflict` xattr names
//! it.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Subcommand;
use client::{ConflictInfo, ConflictSide, ConflictStates, ObjectState};

use crate::control::Response;
use crate::offline_cli::{ask, print_json};
use crate::offline_ctl::DisconnectedRequest;

#[derive(Debug, Subcommand)]
pub enum ConflictCommand {
    /// The three states side by side (data version, length, mtime, mode,
    /// owner), the reason, and a diffstat of the text versions.
    Show {
        /// Print the states as JSON.
        #[arg(long)]
        json: bool,
        /// The conflict's id, or its path.
        conflict: String,
    },
    /// Write one version to stdout: --base (before your change), --local
    /// (yours), --server (what the path shows now).
    Cat {
        #[arg(long, conflicts_with_all = ["base", "server"], required_unless_present_any = ["base", "server"])]
        local: bool,
        #[arg(long, conflicts_with = "server")]
        base: bool,
        #[arg(long)]
        server: bool,
        /// The conflict's id, or its path.
        conflict: String,
    },
    /// A unified diff of two versions: FROM..TO of base, local, server
    /// (default base..local when the base was cached, else server..local).
    Diff {
        /// The conflict's id, or its path.
        conflict: String,
        /// e.g. `base..server`.
        range: Option<String>,
    },
}

/// `afsd-rs resolve`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("how").args(
    ["keep_local", "keep_remote", "stash_local", "stash_both", "merge", "purge", "rules"]
)))]
pub struct ResolveArgs {
    /// Your version replaces the server's (refused if the server moved
    /// again since the conflict was found).
    #[arg(long)]
    pub keep_local: bool,
    /// The server's version stays; yours is kept until `--purge` or the
    /// retention time.
    #[arg(long)]
    pub keep_remote: bool,
    /// The server's version stays at the path; yours is copied beside it
    /// as `STEM (conflict ID local).EXT`.
    #[arg(long)]
    pub stash_local: bool,
    /// Both versions become copies beside the original name, which goes.
    #[arg(long)]
    pub stash_both: bool,
    /// Merge with a resolver (built in: text, git, sqlite): a clean merge
    /// is kept; an overlapping or refused one is stashed with both versions
    /// (text: markers in yours; sqlite: yours as it was, and the reason).
    /// `--merge=git REPO` decides every conflict of a git repository at
    /// once (refs, index, working tree).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "text")]
    pub merge: Option<String>,
    /// Drop the local versions kept by --keep-remote (of these IDs, or all
    /// of yours).
    #[arg(long)]
    pub purge: bool,
    /// Every one of your conflicts under each directory given.
    #[arg(short = 'r', long)]
    pub recursive: bool,
    /// Decide each of your conflicts (under the directories given, else
    /// all) by the first matching rule of FILE (TOML; see README).
    #[arg(long, value_name = "FILE")]
    pub rules: Option<PathBuf>,
    /// Print every decision of the rules (--rules FILE, else the
    /// `.afsd-resolve.toml` files of the directories given and above, then
    /// ~/.config/afsd-rs/resolve.toml) and its reason; change nothing.
    #[arg(long, conflicts_with_all = ["apply", "keep_local", "keep_remote", "stash_local", "stash_both", "merge", "purge"])]
    pub dry_run: bool,
    /// Carry the rules' decisions out (rules as for --dry-run).
    #[arg(long, conflicts_with_all = ["keep_local", "keep_remote", "stash_local", "stash_both", "merge", "purge"])]
    pub apply: bool,
    /// Conflict ids, or paths (in conflict; with -r, directories).
    pub conflicts: Vec<String>,
    #[arg(long, env = "AFSD_CONTROL", default_value = crate::control::DEFAULT_SOCKET)]
    pub socket: PathBuf,
}

/// Whether a conflict's path (as the kernel named it, `/.cell/dir/f`)
/// lies under `dir` (an absolute path in the mount, `/afs/.cell/dir`),
/// counting `cell` and `.cell` as the same.
pub(crate) fn under(path: &str, dir: &str) -> bool {
    let norm = |p: &str| -> Vec<String> {
        p.split('/')
            .filter(|c| !c.is_empty())
            .map(|c| c.trim_start_matches('.').to_string())
            .collect()
    };
    let (p, d) = (norm(path), norm(dir));
    let Some(first) = p.first() else { return false };
    // Where the conflict's first component (its cell) appears in DIR.
    let Some(at) = d.iter().position(|c| c == first) else {
        return false;
    };
    let rel = &d[at..];
    p.len() > rel.len() && p[..rel.len()] == *rel
}

/// `afsd-rs resolve ...`.
pub fn resolve(a: ResolveArgs) -> Result<(), String> {
    let socket = &a.socket;
    if let Some(file) = &a.rules {
        if !a.dry_run && !a.apply {
            return Err("with --rules, say --dry-run or --apply".into());
        }
        return by_rules(socket, Some(file), &a.conflicts, a.apply);
    }
    if a.dry_run || a.apply {
        // The rules of the directories' own files and the user's.
        let dirs = if a.conflicts.is_empty() {
            vec![".".to_string()]
        } else {
            a.conflicts.clone()
        };
        return by_rules(socket, None, &dirs, a.apply);
    }
    if !(a.keep_local || a.keep_remote || a.stash_local || a.stash_both || a.purge)
        && a.merge.is_none()
    {
        return Err(
            "say how: --keep-local, --keep-remote, --stash-local, --stash-both, --merge[=NAME], --purge or --rules FILE"
                .into(),
        );
    }
    if a.merge.as_deref() == Some("git") {
        return crate::merge_git::resolve(socket, &a.conflicts);
    }
    if a.purge {
        let ids: Vec<Option<u64>> = if a.conflicts.is_empty() {
            vec![None]
        } else {
            a.conflicts
                .iter()
                .map(|c| {
                    c.parse()
                        .map(Some)
                        .map_err(|_| format!("{c:?}: not a conflict id"))
                })
                .collect::<Result<_, _>>()?
        };
        for id in ids {
            match ask(socket, DisconnectedRequest::Purge { id })? {
                Response::Ok(m) => println!("{m}"),
                r => return Err(format!("unexpected answer: {r:?}")),
            }
        }
        return Ok(());
    }
    let how = if a.keep_local {
        client::Resolution::KeepLocal
    } else if a.keep_remote {
        client::Resolution::KeepRemote
    } else if a.stash_local {
        client::Resolution::StashLocal
    } else if a.stash_both {
        client::Resolution::StashBoth
    } else {
        client::Resolution::Merge(a.merge.clone().unwrap_or_else(|| "text".into()))
    };
    if a.conflicts.is_empty() {
        return Err("name conflicts: ids, paths, or -r DIR".into());
    }
    let mut ids = Vec::new();
    if a.recursive {
        let mine = match ask(socket, DisconnectedRequest::Conflicts)? {
            Response::Conflicts(v) => v,
            r => return Err(format!("unexpected answer: {r:?}")),
        };
        for d in &a.conflicts {
            let dir = std::fs::canonicalize(d)
                .map_err(|e| format!("{d}: {e}"))?
                .display()
                .to_string();
            ids.extend(mine.iter().filter(|c| under(&c.path, &dir)).map(|c| c.id));
        }
        if ids.is_empty() {
            println!("no conflicts of yours under {}", a.conflicts.join(", "));
            return Ok(());
        }
    } else {
        for c in &a.conflicts {
            ids.push(id_of(c)?);
        }
    }
    let mut failed = 0;
    for id in ids {
        match ask(
            socket,
            DisconnectedRequest::Resolve {
                id,
                how: how.clone(),
            },
        ) {
            Ok(Response::Ok(m)) => println!("{m}"),
            Ok(r) => return Err(format!("unexpected answer: {r:?}")),
            Err(e) => {
                eprintln!("{e}");
                failed += 1;
            }
        }
    }
    if failed > 0 {
        return Err(format!("{failed} conflicts not resolved"));
    }
    Ok(())
}

/// The absolute path of a conflict's file, from a directory the user gave
/// that holds it (`/afs/.cell/d` and `/.cell/d/f` give `/afs/.cell/d/f`).
pub(crate) fn absolute_in(path: &str, dir: &str) -> Option<PathBuf> {
    if !under(path, dir) {
        return None;
    }
    let first = path.split('/').find(|c| !c.is_empty())?;
    let bare = first.trim_start_matches('.');
    let comps: Vec<&str> = dir.split('/').collect();
    let at = comps
        .iter()
        .position(|c| c.trim_start_matches('.') == bare)?;
    let mount = comps[..at].join("/");
    Some(PathBuf::from(format!("{mount}{path}")))
}

/// The mount point of a conflict's path, from a directory the user gave
/// that holds it (`/afs/.cell/d` and `/.cell/d/f` give `/afs`).
fn mount_of(path: &str, dir: &str) -> Option<PathBuf> {
    let file = absolute_in(path, dir)?;
    let rel = path.trim_start_matches('/');
    let depth = rel.split('/').filter(|c| !c.is_empty()).count();
    let mut m = file.as_path();
    for _ in 0..depth {
        m = m.parent()?;
    }
    Some(m.to_path_buf())
}

/// `prefer = "newer-source"`: the source's own conflict when it has one,
/// else its file's time against the two sides of the conflict's file.
fn newer_source(
    socket: &Path,
    c: &ConflictInfo,
    mine: &[ConflictInfo],
    home: Option<&str>,
    source: &str,
) -> (crate::rules::Decision, String) {
    let states = |id: u64| match ask(socket, DisconnectedRequest::ConflictStates { id }) {
        Ok(Response::States(s)) => s.local.zip(s.server).map(|(l, s)| (l.mtime, s.mtime)),
        _ => None,
    };
    let dir = c.path.rsplit_once('/').map_or("", |(d, _)| d);
    let source_path = format!("{dir}/{source}");
    let sides = mine
        .iter()
        .filter(|x| x.path == source_path)
        .max_by_key(|x| x.id)
        .and_then(|x| states(x.id));
    let now = home
        .and_then(|h| absolute_in(&source_path, h))
        .and_then(|p| std::fs::metadata(p).ok())
        .and_then(|m| m.modified().ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs());
    crate::rules::by_source(source, sides, now, states(c.id))
}

fn nix_uid() -> u32 {
    // SAFETY: getuid cannot fail.
    unsafe { libc::getuid() }
}

/// `resolve [--rules FILE] [DIR...] --dry-run|--apply`.
fn by_rules(
    socket: &Path,
    file: Option<&Path>,
    dirs: &[String],
    apply: bool,
) -> Result<(), String> {
    use crate::rules::{decide_in, user_rules_path, Layer, DIR_RULES};
    let caller = nix_uid();
    let given = match file {
        Some(f) => Some(Layer {
            origin: f.to_path_buf(),
            rules: crate::rules::Rules::load(f)?,
            may_run: true,
        }),
        None => None,
    };
    let user = match (&given, user_rules_path()) {
        (None, Some(p)) => Layer::read(&p, caller)?.map(|mut l| {
            l.may_run = true;
            l
        }),
        _ => None,
    };
    // Directory files, read once each.
    let mut dir_layers: std::collections::HashMap<PathBuf, Option<Layer>> = Default::default();
    let mine = match ask(socket, DisconnectedRequest::Conflicts)? {
        Response::Conflicts(v) => v,
        r => return Err(format!("unexpected answer: {r:?}")),
    };
    let dirs: Vec<String> = dirs
        .iter()
        .map(|d| {
            std::fs::canonicalize(d)
                .map(|p| p.display().to_string())
                .map_err(|e| format!("{d}: {e}"))
        })
        .collect::<Result<_, _>>()?;
    let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
    let mut failed = 0;
    for c in &mine {
        let home = dirs.iter().find(|d| under(&c.path, d));
        if !dirs.is_empty() && home.is_none() {
            continue;
        }
        // The directories from the conflict's up to the mount's root.
        let mut chain = Vec::new();
        if given.is_none() {
            let mut at = home
                .and_then(|d| absolute_in(&c.path, d))
                .and_then(|t| t.parent().map(Path::to_path_buf));
            let top = home.and_then(|d| mount_of(&c.path, d));
            while let Some(d) = at {
                if top.as_ref().is_some_and(|t| !d.starts_with(t) || d == *t) {
                    break;
                }
                if !dir_layers.contains_key(&d) {
                    let layer = Layer::read(&d.join(DIR_RULES), caller)?;
                    dir_layers.insert(d.clone(), layer);
                }
                chain.push(d.clone());
                at = d.parent().map(Path::to_path_buf);
            }
        }
        let layers: Vec<&Layer> = given
            .iter()
            .chain(chain.iter().filter_map(|d| dir_layers[d].as_ref()))
            .chain(user.iter())
            .collect();
        let (decision, why) = decide_in(&layers, c, || {
            match ask(socket, DisconnectedRequest::ConflictStates { id: c.id })? {
                Response::States(s) => Ok(s),
                r => Err(format!("unexpected answer: {r:?}")),
            }
        });
        let (decision, why) = match decision {
            crate::rules::Decision::NewerSource { source } => {
                let (d, w) = newer_source(socket, c, &mine, home.map(String::as_str), &source);
                (d, format!("{why}: {w}"))
            }
            d => (d, why),
        };
        let label = match &decision {
            crate::rules::Decision::Resolve(r) => r.to_string(),
            crate::rules::Decision::Run { command, .. } => format!("run `{command}`"),
            crate::rules::Decision::None | crate::rules::Decision::NewerSource { .. } => {
                "leave".to_string()
            }
        };
        *counts.entry(label.clone()).or_default() += 1;
        println!("{} {} {} -> {label} ({why})", c.id, c.kind, c.path);
        if !apply {
            continue;
        }
        let outcome = match decision {
            crate::rules::Decision::None | crate::rules::Decision::NewerSource { .. } => Ok(()),
            crate::rules::Decision::Resolve(how) => resolve_one(socket, c.id, how),
            crate::rules::Decision::Run { command, fallback } => {
                let target = home.and_then(|d| absolute_in(&c.path, d));
                let ran = match target.as_ref().and_then(|t| t.parent()) {
                    Some(dir) => crate::rules::run_in(dir, &command),
                    None => Err("a rebuild needs the directory given on the command line".into()),
                };
                match (ran, fallback) {
                    // What the command made is at the path now.
                    (Ok(()), _) => resolve_one(socket, c.id, client::Resolution::KeepRemote),
                    (Err(e), Some(f)) => {
                        eprintln!("{}: {e}; falling back", c.id);
                        resolve_one(socket, c.id, f)
                    }
                    (Err(e), None) => Err(e),
                }
            }
        };
        if let Err(e) = outcome {
            eprintln!("{}: {e}", c.id);
            failed += 1;
        }
    }
    let total: usize = counts.values().sum();
    let summary: Vec<String> = counts.iter().map(|(k, n)| format!("{n} {k}")).collect();
    println!(
        "{total} conflicts: {}{}",
        summary.join(", "),
        if apply {
            ""
        } else {
            " (dry run: nothing changed)"
        }
    );
    if failed > 0 {
        return Err(format!("{failed} conflicts not resolved"));
    }
    Ok(())
}

pub(crate) fn resolve_one(socket: &Path, id: u64, how: client::Resolution) -> Result<(), String> {
    match ask(socket, DisconnectedRequest::Resolve { id, how })? {
        Response::Ok(_) => Ok(()),
        r => Err(format!("unexpected answer: {r:?}")),
    }
}

/// Runs one command; returns its name and outcome.
pub fn run(cmd: ConflictCommand, socket: &Path) -> (&'static str, Result<(), String>) {
    match cmd {
        ConflictCommand::Show { json, conflict } => {
            ("conflict show", show(socket, &conflict, json))
        }
        ConflictCommand::Cat {
            local,
            base,
            conflict,
            ..
        } => {
            let side = if local {
                ConflictSide::Local
            } else if base {
                ConflictSide::Base
            } else {
                ConflictSide::Server
            };
            ("conflict cat", cat(socket, &conflict, side))
        }
        ConflictCommand::Diff { conflict, range } => {
            ("conflict diff", diff(socket, &conflict, range.as_deref()))
        }
    }
}

/// The id a user's argument names: a number, or a path in conflict.
fn id_of(arg: &str) -> Result<u64, String> {
    if let Ok(id) = arg.parse() {
        return Ok(id);
    }
    let p = PathBuf::from(arg);
    let text = crate::read_xattr(&p, "afsd.conflict")
        .map_err(|e| format!("{arg}: not a conflict id, nor a path in conflict ({e})"))?;
    let text = String::from_utf8_lossy(&text);
    text.split_whitespace()
        .find_map(|f| f.strip_prefix("id=")?.parse().ok())
        .ok_or_else(|| {
            format!(
                "{arg}: no conflict id in its afsd.conflict ({})",
                text.trim()
            )
        })
}

fn info(socket: &Path, id: u64) -> Result<ConflictInfo, String> {
    match ask(socket, DisconnectedRequest::Conflicts)? {
        Response::Conflicts(v) => v
            .into_iter()
            .find(|c| c.id == id)
            .ok_or_else(|| format!("no conflict {id} of yours")),
        r => Err(format!("unexpected answer: {r:?}")),
    }
}

pub(crate) fn data(socket: &Path, id: u64, side: ConflictSide) -> Result<Vec<u8>, String> {
    match ask(socket, DisconnectedRequest::ConflictData { id, side })? {
        Response::Data(d) => Ok(d),
        r => Err(format!("unexpected answer: {r:?}")),
    }
}

fn cat(socket: &Path, arg: &str, side: ConflictSide) -> Result<(), String> {
    let d = data(socket, id_of(arg)?, side)?;
    let mut out = std::io::stdout().lock();
    out.write_all(&d)
        .and_then(|()| out.flush())
        .map_err(|e| format!("writing to stdout: {e}"))
}

/// Lines added and removed from `a` to `b`, when both are text.
fn diffstat(a: &[u8], b: &[u8]) -> Option<(usize, usize)> {
    let (a, b) = (std::str::from_utf8(a).ok()?, std::str::from_utf8(b).ok()?);
    let patch = diffy::create_patch(a, b);
    let (mut plus, mut minus) = (0, 0);
    for h in patch.hunks() {
        for l in h.lines() {
            match l {
                diffy::Line::Insert(_) => plus += 1,
                diffy::Line::Delete(_) => minus += 1,
                diffy::Line::Context(_) => {}
            }
        }
    }
    Some((plus, minus))
}

fn show(socket: &Path, arg: &str, json: bool) -> Result<(), String> {
    let id = id_of(arg)?;
    let c = info(socket, id)?;
    let st = match ask(socket, DisconnectedRequest::ConflictStates { id })? {
        Response::States(s) => s,
        r => return Err(format!("unexpected answer: {r:?}")),
    };
    if json {
        return print_json(&serde_json::json!({ "conflict": c, "states": st }));
    }
    print!("{}", table(&c, &st));
    // Contents, when kept and text.
    let base = data(socket, id, ConflictSide::Base).ok();
    let local = data(socket, id, ConflictSide::Local).ok();
    let server = data(socket, id, ConflictSide::Server).ok();
    if let Some(b) = &base {
        for (name, other) in [("local", &local), ("server", &server)] {
            match other.as_ref().map(|o| diffstat(b, o)) {
                Some(Some((p, m))) => println!("base..{name}: +{p} -{m} lines"),
                Some(None) => println!("base..{name}: binary"),
                None => {}
            }
        }
    } else if let (Some(s), Some(l)) = (&server, &local) {
        match diffstat(s, l) {
            Some((p, m)) => println!("server..local: +{p} -{m} lines (no base cached)"),
            None => println!("server..local: binary (no base cached)"),
        }
    }
    Ok(())
}

fn table(c: &ConflictInfo, st: &ConflictStates) -> String {
    let mut out = format!(
        "conflict {}: {} {} (uid {}, {}), {}\n",
        c.id, c.kind, c.path, c.uid, c.change, c.reason
    );
    let col = |s: &Option<ObjectState>, f: &dyn Fn(&ObjectState) -> String| {
        s.as_ref().map_or("-".to_string(), f)
    };
    out.push_str(&format!(
        "{:<8} {:>20} {:>20} {:>20}\n",
        "", "base", "local", "server"
    ));
    type Field<'a> = &'a dyn Fn(&ObjectState) -> String;
    let rows: [(&str, Field); 5] = [
        ("dv", &|s| s.data_version.to_string()),
        ("length", &|s| s.length.to_string()),
        ("mtime", &|s| s.mtime.to_string()),
        ("mode", &|s| format!("{:04o}", s.mode)),
        ("owner", &|s| s.owner.to_string()),
    ];
    for (name, f) in rows {
        out.push_str(&format!(
            "{:<8} {:>20} {:>20} {:>20}\n",
            name,
            col(&st.base, f),
            col(&st.local, f),
            col(&st.server, f)
        ));
    }
    out
}

fn diff(socket: &Path, arg: &str, range: Option<&str>) -> Result<(), String> {
    let id = id_of(arg)?;
    let side = |name: &str| match name {
        "base" => Ok(ConflictSide::Base),
        "local" => Ok(ConflictSide::Local),
        "server" => Ok(ConflictSide::Server),
        other => Err(format!("{other:?}: expected base, local or server")),
    };
    let (from, to) = match range {
        Some(r) => {
            let (a, b) = r
                .split_once("..")
                .ok_or_else(|| format!("{r:?}: expected FROM..TO, e.g. base..local"))?;
            (side(a)?, side(b)?)
        }
        None => match data(socket, id, ConflictSide::Base) {
            Ok(_) => (ConflictSide::Base, ConflictSide::Local),
            Err(_) => (ConflictSide::Server, ConflictSide::Local),
        },
    };
    let (a, b) = (data(socket, id, from)?, data(socket, id, to)?);
    let (Ok(ta), Ok(tb)) = (std::str::from_utf8(&a), std::str::from_utf8(&b)) else {
        println!("binary versions differ: {} and {} bytes", a.len(), b.len());
        return Ok(());
    };
    let name = |s: ConflictSide| format!("{s:?}").to_lowercase();
    let patch = diffy::create_patch(ta, tb);
    let text = patch.to_string();
    // diffy names the sides "original" and "modified".
    let text = text
        .replacen("--- original", &format!("--- {}", name(from)), 1)
        .replacen("+++ modified", &format!("+++ {}", name(to)), 1);
    print!("{text}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_conflicts_file_under_the_directory_given() {
        assert_eq!(
            absolute_in("/.test.lab/shared/x/f.o", "/tmp/m/afs/test.lab/shared"),
            Some(PathBuf::from("/tmp/m/afs/.test.lab/shared/x/f.o"))
        );
        assert_eq!(
            absolute_in("/.test.lab/y/f.o", "/afs/test.lab/shared"),
            None
        );
    }

    #[test]
    fn under_a_directory_whatever_the_cell_alias() {
        assert!(under("/.test.lab/shared/x/f.o", "/afs/.test.lab/shared/x"));
        assert!(under("/.test.lab/shared/x/f.o", "/afs/test.lab/shared"));
        assert!(!under(
            "/.test.lab/shared/xy/f.o",
            "/afs/.test.lab/shared/x"
        ));
        assert!(!under("/.test.lab/shared/x", "/afs/.test.lab/shared/x"));
        assert!(!under("/.other/shared/x/f", "/afs/.test.lab/shared"));
    }

    #[test]
    fn a_diffstat_counts_lines() {
        assert_eq!(diffstat(b"a\nb\nc\n", b"a\nB\nc\nd\n"), Some((2, 1)));
        assert_eq!(diffstat(b"\xff", b"x"), None);
    }

    #[test]
    fn the_table_shows_three_columns() {
        let s = |dv| ObjectState {
            data_version: dv,
            length: 3,
            mtime: 9,
            mode: 0o644,
            owner: 1000,
        };
        let c = ConflictInfo {
            id: 4,
            kind: "update/update".into(),
            cell: "c".into(),
            volume: 1,
            path: "/x".into(),
            fid: (1, 2, 3),
            uid: 1000,
            change: "store".into(),
            base_dv: Some(5),
            local_dv: None,
            server_dv: Some(7),
            local_bytes: Some(3),
            detected: 0,
            reason: "changed on both sides".into(),
            changes: 1,
        };
        let t = table(
            &c,
            &ConflictStates {
                base: Some(s(5)),
                local: None,
                server: Some(s(7)),
            },
        );
        assert!(t.contains("conflict 4: update/update /x"), "{t}");
        let dv = t.lines().find(|l| l.starts_with("dv")).unwrap();
        let cols: Vec<&str> = dv.split_whitespace().collect();
        assert_eq!(cols, vec!["dv", "5", "-", "7"]);
    }
}
