//! `afsd-rs resolve --merge=git REPO`: a git repository (working tree and
//! `.git`) changed on both sides brought back to one consistent repository.
//!
//! Replay already gives the union of objects: loose objects and packs are
//! files named by their content, so what each side made lands beside the
//! other's, and a fan-out directory (`.git/objects/ab/`) made on both sides
//! is one directory (replay adopts the server's). What is left in conflict
//! is a handful of files that name things: refs, the index, reflogs, and
//! the working tree. They are decided here, repository-wide, as the user,
//! with git itself run in the repository through the mount:
//! - **objects** in conflict are the same object on both sides: the
//!   server's stays (ours is written only where the server has none);
//! - **refs** (`HEAD`, `refs/...`, `packed-refs`): where ours fast-forwards
//!   the server's, the ref advances (`git update-ref REF OURS THEIRS`, which
//!   refuses if the server moved meanwhile); where the server's already
//!   holds ours, it stays; where the two diverged, the server's stays and
//!   ours is saved as `refs/afsd-conflicts/ID/...`, so no commit is lost;
//! - **reflogs** are joined (the server's lines, then ours that it lacks);
//! - **the index and working tree** follow the checked-out branch: ours
//!   when it advanced to our commit, else the server's, with any of our
//!   files that no commit of ours holds stashed beside the original;
//! - **config** is merged as text; other `.git` files keep the server's.
//!
//! The result is checked with `git fsck` and `git status`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use client::{ConflictInfo, ConflictSide, Resolution};

use crate::conflict_cli::{absolute_in, data, resolve_one, under};
use crate::control::Response;
use crate::offline_cli::ask;
use crate::offline_ctl::DisconnectedRequest;

/// The ref namespace where diverged refs of ours are kept.
pub const SAVED_REFS: &str = "refs/afsd-conflicts";

/// What a file in the repository is to git.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    Object,
    Ref,
    PackedRefs,
    Index,
    Reflog,
    Config,
    OtherGit,
    WorkTree,
}

fn part_of(rel: &str) -> Part {
    match rel {
        ".git/HEAD" => Part::Ref,
        ".git/packed-refs" => Part::PackedRefs,
        ".git/index" => Part::Index,
        ".git/config" => Part::Config,
        _ if rel.starts_with(".git/objects/") => Part::Object,
        _ if rel.starts_with(".git/refs/") => Part::Ref,
        _ if rel.starts_with(".git/logs/") => Part::Reflog,
        _ if rel.starts_with(".git/") => Part::OtherGit,
        _ => Part::WorkTree,
    }
}

/// The repository holding `path`: the nearest directory with a `.git`
/// directory.
fn repo_root(path: &Path) -> Result<PathBuf, String> {
    let start = std::fs::canonicalize(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut at = Some(start.as_path());
    while let Some(d) = at {
        if d.join(".git").is_dir() {
            return Ok(d.to_path_buf());
        }
        at = d.parent();
    }
    Err(format!(
        "{}: not in a git repository (no .git directory above it)",
        path.display()
    ))
}

/// git, in the repository, as the caller. The repository's files belong
/// to AFS owners, so git's ownership check is waived for this one.
fn git(root: &Path, args: &[&str], input: Option<&[u8]>) -> Result<(bool, String), String> {
    use std::io::Write;
    let mut cmd = Command::new("git");
    cmd.arg("-c")
        .arg(format!("safe.directory={}", root.display()))
        .arg("-C")
        .arg(root)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("git {}: {e} (is git installed?)", args.join(" ")))?;
    if let (Some(data), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin
            .write_all(data)
            .map_err(|e| format!("git {}: {e}", args.join(" ")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("git {}: {e}", args.join(" ")))?;
    let text = if out.status.success() {
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    } else {
        String::from_utf8_lossy(&out.stderr).trim().to_string()
    };
    Ok((out.status.success(), text))
}

fn rev(root: &Path, name: &str) -> Result<Option<String>, String> {
    let (ok, out) = git(root, &["rev-parse", "--verify", "--quiet", name], None)?;
    Ok(ok.then_some(out))
}

fn is_ancestor(root: &Path, a: &str, b: &str) -> Result<bool, String> {
    Ok(git(root, &["merge-base", "--is-ancestor", a, b], None)?.0)
}

fn is_sha(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Our refs from a conflicted ref file: a loose ref's value, or every
/// line of `packed-refs`.
fn our_refs(rel: &str, local: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(local);
    if rel == ".git/packed-refs" {
        return text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.starts_with('^'))
            .filter_map(|l| {
                let (sha, name) = l.split_once(' ')?;
                is_sha(sha).then(|| (name.trim().to_string(), sha.to_string()))
            })
            .collect();
    }
    let name = rel.trim_start_matches(".git/").to_string();
    vec![(name, text.trim().to_string())]
}

/// Reflogs joined: the server's lines, then ours it lacks, in time order.
fn join_reflogs(server: &[u8], local: &[u8]) -> Vec<u8> {
    let when = |l: &str| -> i64 {
        l.split('\t')
            .next()
            .and_then(|head| head.split_whitespace().rev().nth(1))
            .and_then(|t| t.parse().ok())
            .unwrap_or(0)
    };
    let server = String::from_utf8_lossy(server);
    let local = String::from_utf8_lossy(local);
    let mut lines: Vec<&str> = server.lines().collect();
    for l in local.lines() {
        if !lines.contains(&l) {
            lines.push(l);
        }
    }
    lines.sort_by_key(|l| when(l));
    let mut out = lines.join("\n").into_bytes();
    if !out.is_empty() {
        out.push(b'\n');
    }
    out
}

/// One conflict in the repository.
struct Item {
    c: ConflictInfo,
    rel: String,
    abs: PathBuf,
}

/// The report of a merge, printed line by line.
#[derive(Default)]
struct Report {
    lines: Vec<String>,
    failed: usize,
}

impl Report {
    fn say(&mut self, s: String) {
        println!("{s}");
        self.lines.push(s);
    }
    fn done(&mut self, socket: &Path, it: &Item, how: Resolution, what: &str) {
        match resolve_one(socket, it.c.id, how.clone()) {
            Ok(()) => self.say(format!("{} {}: {what} ({how})", it.c.id, it.rel)),
            Err(e) => {
                self.failed += 1;
                eprintln!("{} {}: {e}", it.c.id, it.rel);
            }
        }
    }
}

/// `afsd-rs resolve --merge=git PATH...`.
pub fn resolve(socket: &Path, paths: &[String]) -> Result<(), String> {
    if paths.is_empty() {
        return Err("--merge=git takes the repository's directory (or a path in it)".into());
    }
    let mine = match ask(socket, DisconnectedRequest::Conflicts)? {
        Response::Conflicts(v) => v,
        r => return Err(format!("unexpected answer: {r:?}")),
    };
    let mut roots: Vec<PathBuf> = Vec::new();
    for p in paths {
        let r = repo_root(Path::new(p))?;
        if !roots.contains(&r) {
            roots.push(r);
        }
    }
    for root in roots {
        merge_repo(socket, &root, &mine)?;
    }
    Ok(())
}

fn merge_repo(socket: &Path, root: &Path, mine: &[ConflictInfo]) -> Result<(), String> {
    let root_s = root.display().to_string();
    let items: Vec<Item> = mine
        .iter()
        .filter(|c| under(&c.path, &root_s))
        .filter_map(|c| {
            let abs = absolute_in(&c.path, &root_s)?;
            let rel = abs.strip_prefix(root).ok()?.display().to_string();
            Some(Item {
                c: c.clone(),
                rel,
                abs,
            })
        })
        .collect();
    if items.is_empty() {
        println!("no conflicts of yours in the repository at {root_s}");
        return Ok(());
    }
    println!("{}: {} conflicts", root_s, items.len());
    let mut report = Report::default();
    let by = |p: Part| items.iter().filter(move |i| part_of(&i.rel) == p);

    // Objects: one object, two copies.
    for it in by(Part::Object) {
        if it.abs.exists() {
            report.done(socket, it, Resolution::KeepRemote, "the same object");
        } else {
            report.done(socket, it, Resolution::KeepLocal, "only ours has it");
        }
    }

    // Reflogs, before refs move (update-ref appends to them).
    for it in by(Part::Reflog) {
        let local = data(socket, it.c.id, ConflictSide::Local)?;
        let server = std::fs::read(&it.abs).unwrap_or_default();
        let joined = join_reflogs(&server, &local);
        match std::fs::write(&it.abs, &joined) {
            Ok(()) => report.done(socket, it, Resolution::KeepRemote, "reflogs joined"),
            Err(e) => {
                report.failed += 1;
                eprintln!("{} {}: writing the joined reflog: {e}", it.c.id, it.rel);
            }
        }
    }

    // Refs.
    let head_before = std::fs::read_to_string(root.join(".git/HEAD")).unwrap_or_default();
    let mut ours_won: BTreeMap<String, bool> = BTreeMap::new();
    let mut our_values: BTreeMap<String, String> = BTreeMap::new();
    // Each ref's values of ours, newest first (a file saved twice offline
    // is two conflicts; the later holds the later value).
    let mut values: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut ref_items: Vec<&Item> = by(Part::Ref).chain(by(Part::PackedRefs)).collect();
    ref_items.sort_by_key(|it| std::cmp::Reverse(it.c.id));
    let mut ref_ids: BTreeMap<String, u64> = BTreeMap::new();
    for it in &ref_items {
        let local = data(socket, it.c.id, ConflictSide::Local)?;
        for (name, v) in our_refs(&it.rel, &local) {
            ref_ids.entry(name.clone()).or_insert(it.c.id);
            let vs = values.entry(name).or_default();
            if !vs.contains(&v) {
                vs.push(v);
            }
        }
    }
    let mut failed_refs = 0;
    for (name, vs) in &values {
        let newest = &vs[0];
        let id = ref_ids[name];
        for (i, ours) in vs.iter().enumerate() {
            // An older value the newest holds needs nothing.
            if i > 0 && is_sha(ours) && is_ancestor(root, ours, newest)? {
                continue;
            }
            let tag = if i == 0 {
                id.to_string()
            } else {
                format!("{id}-{i}")
            };
            match merge_ref(root, &tag, name, ours, &head_before)? {
                Ok((won, line)) => {
                    report.say(format!("{id} {name}: {line}"));
                    if i == 0 {
                        if is_sha(ours) {
                            our_values.insert(name.clone(), ours.clone());
                        }
                        ours_won.insert(name.clone(), won);
                    }
                }
                Err(e) => {
                    failed_refs += 1;
                    report.failed += 1;
                    eprintln!("{id} {name}: {e}");
                }
            }
        }
    }
    if failed_refs == 0 {
        for it in ref_items {
            report.done(socket, it, Resolution::KeepRemote, "refs merged");
        }
    }

    // The index and working tree follow the branch checked out.
    let head = std::fs::read_to_string(root.join(".git/HEAD")).unwrap_or_default();
    let branch = head.trim().strip_prefix("ref: ").map(str::to_string);
    let our_head = branch.as_ref().and_then(|b| our_values.get(b)).cloned();
    let ours = branch
        .as_ref()
        .and_then(|b| ours_won.get(b).copied())
        .unwrap_or(false);
    for it in by(Part::Index) {
        if ours {
            report.done(socket, it, Resolution::KeepLocal, "the branch is ours");
        } else {
            report.done(socket, it, Resolution::KeepRemote, "the branch is theirs");
        }
    }
    for it in by(Part::WorkTree) {
        if ours {
            report.done(socket, it, Resolution::KeepLocal, "the branch is ours");
            continue;
        }
        // Kept by a commit of ours? Then the server's file can stay.
        let local = data(socket, it.c.id, ConflictSide::Local).unwrap_or_default();
        let committed = match &our_head {
            Some(c) => {
                let blob = rev(root, &format!("{c}:{}", it.rel))?;
                let (_, hashed) = git(root, &["hash-object", "--stdin"], Some(&local))?;
                blob.is_some_and(|b| b == hashed)
            }
            None => false,
        };
        if committed {
            report.done(
                socket,
                it,
                Resolution::KeepRemote,
                "the branch is theirs; yours is in your commit",
            );
        } else {
            report.done(
                socket,
                it,
                Resolution::StashLocal,
                "the branch is theirs; yours was not committed",
            );
        }
    }
    if !ours {
        if let Some(c) = &our_head {
            tidy_work_tree(root, c, &mut report)?;
        }
    }
    for it in by(Part::Config) {
        report.done(socket, it, Resolution::Merge("text".into()), "merged");
    }
    for it in by(Part::OtherGit) {
        report.done(socket, it, Resolution::KeepRemote, "the server's");
    }

    // The result must be one sound repository.
    let (fsck_ok, fsck) = git(root, &["fsck", "--no-progress"], None)?;
    let (status_ok, status) = git(root, &["status", "--porcelain"], None)?;
    if !fsck_ok {
        return Err(format!("{root_s}: git fsck fails after the merge: {fsck}"));
    }
    if !status_ok {
        return Err(format!(
            "{root_s}: git status fails after the merge: {status}"
        ));
    }
    println!("{root_s}: git fsck clean, git status works");
    if report.failed > 0 {
        return Err(format!("{} conflicts not resolved", report.failed));
    }
    Ok(())
}

/// The blob `commit:path`, if the commit has that file.
fn blob_in(root: &Path, commit: &str, path: &str) -> Result<Option<String>, String> {
    rev(root, &format!("{commit}:{path}"))
}

/// The blob id of a working-tree file's content (None: absent).
fn hashed(root: &Path, path: &str) -> Result<Option<String>, String> {
    match std::fs::read(root.join(path)) {
        Ok(d) => Ok(Some(git(root, &["hash-object", "--stdin"], Some(&d))?.1)),
        Err(_) => Ok(None),
    }
}

/// With the server's branch checked out, the working tree still holds what
/// replay wrote of our commits. Each file whose content is exactly what our
/// commit `ours` has (present or absent) is put back as the branch has it
/// (it is safe in that commit), so `git status` shows only work no commit
/// holds and `git merge` of the saved ref applies. Anything else stays.
fn tidy_work_tree(root: &Path, ours: &str, report: &mut Report) -> Result<(), String> {
    let (_, changed) = git(root, &["diff", "--name-only", "-z"], None)?;
    let mut restored = Vec::new();
    for f in changed.split('\0').filter(|f| !f.is_empty()) {
        if hashed(root, f)? == blob_in(root, ours, f)? {
            restored.push(f.to_string());
        }
    }
    if !restored.is_empty() {
        let mut args = vec!["checkout", "--"];
        args.extend(restored.iter().map(String::as_str));
        let (ok, e) = git(root, &args, None)?;
        if !ok {
            return Err(format!("git checkout of the branch's files: {e}"));
        }
    }
    let (_, untracked) = git(
        root,
        &["ls-files", "--others", "--exclude-standard", "-z"],
        None,
    )?;
    let mut removed = Vec::new();
    for f in untracked.split('\0').filter(|f| !f.is_empty()) {
        let ours_has = blob_in(root, ours, f)?;
        if ours_has.is_some() && hashed(root, f)? == ours_has {
            std::fs::remove_file(root.join(f)).map_err(|e| format!("{f}: {e}"))?;
            removed.push(f.to_string());
        }
    }
    if !restored.is_empty() || !removed.is_empty() {
        report.say(format!(
            "working tree: {} files back to the branch's, {} files only your commit has removed \
             (all are in {ours})",
            restored.len(),
            removed.len()
        ));
    }
    Ok(())
}

/// Merges one ref: Ok((ours won, what was done)), or why it was left.
fn merge_ref(
    root: &Path,
    id: &str,
    name: &str,
    ours: &str,
    head_before: &str,
) -> Result<Result<(bool, String), String>, String> {
    if name == "HEAD" && !is_sha(ours) {
        // A symbolic HEAD: which branch is checked out.
        let theirs = head_before.trim();
        return Ok(Ok(if theirs == ours {
            (true, "the same branch checked out".into())
        } else {
            (
                false,
                format!("the server's checkout ({theirs}) stays; yours was {ours}"),
            )
        }));
    }
    if !is_sha(ours) {
        return Ok(Err(format!("our value {ours:?} is not a commit id")));
    }
    if rev(root, &format!("{ours}^{{object}}"))?.is_none() {
        return Ok(Err(format!(
            "our {ours} is not in the repository (its objects are missing); left in conflict"
        )));
    }
    let theirs = rev(root, name)?;
    let saved = format!(
        "{SAVED_REFS}/{id}/{}",
        name.strip_prefix("refs/").unwrap_or(name)
    );
    let Some(theirs) = theirs else {
        let (ok, e) = git(root, &["update-ref", name, ours, ""], None)?;
        return Ok(if ok {
            Ok((true, format!("made again at {ours}")))
        } else {
            Err(format!("git update-ref: {e}"))
        });
    };
    if theirs == ours {
        return Ok(Ok((true, format!("the same on both sides ({ours})"))));
    }
    if is_ancestor(root, &theirs, ours)? {
        let (ok, e) = git(root, &["update-ref", name, ours, &theirs], None)?;
        return Ok(if ok {
            Ok((true, format!("fast-forwarded {theirs}..{ours}")))
        } else {
            Err(format!("git update-ref: {e}"))
        });
    }
    if is_ancestor(root, ours, &theirs)? {
        return Ok(Ok((
            false,
            format!("the server's {theirs} already holds ours ({ours})"),
        )));
    }
    let (ok, e) = git(root, &["update-ref", &saved, ours], None)?;
    Ok(if ok {
        Ok((
            false,
            format!("diverged: the server's {theirs} stays, ours ({ours}) saved as {saved}"),
        ))
    } else {
        Err(format!("git update-ref {saved}: {e}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_told_apart_by_what_they_are_to_git() {
        assert_eq!(part_of(".git/objects/ab/cdef"), Part::Object);
        assert_eq!(part_of(".git/objects/pack/pack-1.idx"), Part::Object);
        assert_eq!(part_of(".git/HEAD"), Part::Ref);
        assert_eq!(part_of(".git/refs/heads/main"), Part::Ref);
        assert_eq!(part_of(".git/packed-refs"), Part::PackedRefs);
        assert_eq!(part_of(".git/index"), Part::Index);
        assert_eq!(part_of(".git/logs/HEAD"), Part::Reflog);
        assert_eq!(part_of(".git/config"), Part::Config);
        assert_eq!(part_of(".git/COMMIT_EDITMSG"), Part::OtherGit);
        assert_eq!(part_of("src/main.c"), Part::WorkTree);
        assert_eq!(part_of(".gitignore"), Part::WorkTree);
    }

    #[test]
    fn refs_are_read_from_loose_files_and_packed_refs() {
        let a = "a".repeat(40);
        let b = "b".repeat(40);
        assert_eq!(
            our_refs(".git/refs/heads/main", format!("{a}\n").as_bytes()),
            vec![("refs/heads/main".to_string(), a.clone())]
        );
        let packed = format!(
            "# pack-refs with: peeled fully-peeled sorted\n{a} refs/heads/main\n{b} refs/tags/v1\n^{a}\n"
        );
        assert_eq!(
            our_refs(".git/packed-refs", packed.as_bytes()),
            vec![
                ("refs/heads/main".to_string(), a.clone()),
                ("refs/tags/v1".to_string(), b)
            ]
        );
        assert_eq!(
            our_refs(".git/HEAD", b"ref: refs/heads/main\n"),
            vec![("HEAD".to_string(), "ref: refs/heads/main".to_string())]
        );
    }

    #[test]
    fn reflogs_join_in_time_order_without_repeats() {
        let l = |old: char, new: char, t: u64, m: &str| {
            format!(
                "{} {} A <a@x> {t} +0000\t{m}",
                old.to_string().repeat(40),
                new.to_string().repeat(40)
            )
        };
        let base = l('0', '1', 100, "commit (initial): one");
        let theirs = format!("{base}\n{}\n", l('1', '2', 300, "commit: theirs"));
        let ours = format!("{base}\n{}\n", l('1', '3', 200, "commit: ours"));
        let joined = String::from_utf8(join_reflogs(theirs.as_bytes(), ours.as_bytes())).unwrap();
        let msgs: Vec<&str> = joined
            .lines()
            .map(|x| x.split('\t').nth(1).unwrap())
            .collect();
        assert_eq!(
            msgs,
            vec!["commit (initial): one", "commit: ours", "commit: theirs"]
        );
    }

    /// A real repository on local disk: fast-forward, already-held and
    /// diverged refs, decided by git itself.
    #[test]
    fn refs_fast_forward_or_are_saved_when_they_diverge() {
        if Command::new("git").arg("--version").output().is_err() {
            eprintln!("git not installed; skipped");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let g = |args: &[&str]| {
            let (ok, out) = git(root, args, None).unwrap();
            assert!(ok, "git {args:?}: {out}");
            out
        };
        g(&["init", "-q", "-b", "main"]);
        g(&["config", "user.email", "t@x"]);
        g(&["config", "user.name", "t"]);
        let commit = |f: &str| {
            std::fs::write(root.join(f), f).unwrap();
            g(&["add", f]);
            g(&["commit", "-q", "-m", f]);
            g(&["rev-parse", "HEAD"])
        };
        let one = commit("one");
        let two = commit("two");
        // Ours ahead of theirs: fast-forward.
        g(&["update-ref", "refs/heads/main", &one]);
        let (won, _) = merge_ref(root, "5", "refs/heads/main", &two, "")
            .unwrap()
            .unwrap();
        assert!(won);
        assert_eq!(g(&["rev-parse", "refs/heads/main"]), two);
        // Theirs already holds ours.
        let (won, _) = merge_ref(root, "5", "refs/heads/main", &one, "")
            .unwrap()
            .unwrap();
        assert!(!won);
        assert_eq!(g(&["rev-parse", "refs/heads/main"]), two);
        // Diverged: theirs stays, ours saved.
        g(&["checkout", "-q", "-b", "side", &one]);
        let three = commit("three");
        g(&["checkout", "-q", "main"]);
        let (won, line) = merge_ref(root, "5", "refs/heads/main", &three, "")
            .unwrap()
            .unwrap();
        assert!(!won && line.contains("diverged"), "{line}");
        assert_eq!(g(&["rev-parse", "refs/heads/main"]), two);
        assert_eq!(
            g(&["rev-parse", &format!("{SAVED_REFS}/5/heads/main")]),
            three
        );
        // A value that names no object is left alone.
        let e = merge_ref(root, "5", "refs/heads/main", &"c".repeat(40), "")
            .unwrap()
            .unwrap_err();
        assert!(e.contains("missing"), "{e}");
    }
}
