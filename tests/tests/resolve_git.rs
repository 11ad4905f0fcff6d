//! A git repository in AFS, worked on offline by this client and online by
//! another (a second afsd-rs mount), ends as one repository: every commit
//! of both sides reachable, `git fsck` clean, `git status` working, from
//! either client, after one `afsd-rs resolve --merge=git`.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use afsd_tests::{Cell, Mount};

/// Mount options: not a short dead time (see tests/offline.rs).
const DEAD: &[&str] = &["--dead-time", "20"];

/// git in `repo`; panics with its output unless it succeeds.
fn git(repo: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-c")
        .arg(format!("safe.directory={}", repo.display()))
        .args(["-c", "user.name=Tester", "-c", "user.email=t@test.lab"])
        .arg("-C")
        .arg(repo)
        .args(args)
        .output()
        .expect("running git");
    assert!(
        out.status.success(),
        "git {} in {}: {}{}",
        args.join(" "),
        repo.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn commit(repo: &Path, file: &str, text: &str, msg: &str) -> String {
    fs::write(repo.join(file), text).unwrap();
    git(repo, &["add", file]);
    git(repo, &["commit", "-q", "-m", msg]);
    git(repo, &["rev-parse", "HEAD"])
}

#[test]
fn a_git_repository_changed_on_both_sides_ends_as_one() {
    let cell = Cell::from_env();
    let m = Mount::new(&cell, DEAD);
    let other = Mount::new(&cell, DEAD);
    let rel = format!(".{}/shared/git-{}", cell.cell(), std::process::id());
    let repo = m.path(&rel);
    let theirs = other.path(&rel);
    fs::create_dir(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    let base = commit(&repo, "README", "base\n", "base");
    commit(&repo, "notes.txt", "notes\n", "notes");
    // Every file of the repository cached here before the network goes.
    git(&repo, &["fsck", "--no-progress"]);
    git(&repo, &["status", "--porcelain"]);

    m.offline(&[&repo]);
    let ours1 = commit(&repo, "ours.txt", "ours one\n", "ours 1");
    let ours2 = commit(&repo, "README", "base\nours\n", "ours 2");
    fs::write(repo.join("scratch.txt"), "uncommitted\n").unwrap();
    // Meanwhile the other client commits to the same branch.
    let t1 = commit(&theirs, "theirs.txt", "theirs one\n", "theirs 1");
    let t2 = commit(&theirs, "notes.txt", "notes\ntheirs\n", "theirs 2");
    assert_eq!(git(&theirs, &["rev-list", "--count", "HEAD"]), "4");
    // A directory made on both sides (as git's object fan-out directories
    // often are) is one directory afterwards, holding what each made.
    fs::create_dir(repo.join("build")).unwrap();
    fs::write(repo.join("build/ours.o"), "ours\n").unwrap();
    fs::create_dir(theirs.join("build")).unwrap();
    fs::write(theirs.join("build/theirs.o"), "theirs\n").unwrap();

    m.online(&[&repo]);
    m.wait_replayed(Duration::from_secs(300))
        .unwrap_or_else(|e| panic!("{e}"));
    let cs = m.conflicts();
    assert!(
        cs.iter().any(|c| c.path.ends_with(".git/refs/heads/main")),
        "the branch moved on both sides: {cs:?}"
    );

    assert!(
        !cs.iter().any(|c| c.path.contains("/build")),
        "a directory made on both sides is no conflict: {cs:?}"
    );
    for f in ["ours.o", "theirs.o"] {
        assert!(repo.join("build").join(f).exists(), "build/{f}");
    }
    let out = m.afsd_ok(&["resolve", "--merge=git", repo.to_str().unwrap()]);
    assert!(out.contains("git fsck clean"), "{out}");
    assert!(m.conflicts().is_empty(), "{:?}\n{out}", m.conflicts());
    // The server's branch stays; ours is kept under refs/afsd-conflicts.
    let saved = git(
        &repo,
        &[
            "for-each-ref",
            "--format=%(refname) %(objectname)",
            "refs/afsd-conflicts",
        ],
    );
    assert!(
        saved.ends_with(&format!("/heads/main {ours2}")),
        "our branch saved: {saved:?}\n{out}"
    );
    for view in [&repo, &theirs] {
        // Other mount: its kernel may hold names for its 1 s TTL.
        std::thread::sleep(Duration::from_millis(1100));
        git(view, &["fsck", "--no-progress", "--strict"]);
        git(view, &["status", "--porcelain"]);
        assert_eq!(
            git(view, &["rev-parse", "main"]),
            t2,
            "in {}",
            view.display()
        );
        let all = git(view, &["rev-list", "--all"]);
        for c in [&base, &ours1, &ours2, &t1, &t2] {
            assert!(
                all.lines().any(|l| l == c.as_str()),
                "{c} not reachable in {}:\n{all}",
                view.display()
            );
        }
    }
    // Uncommitted work is never lost, and the two histories merge.
    assert_eq!(
        fs::read_to_string(repo.join("scratch.txt")).unwrap(),
        "uncommitted\n"
    );
    let saved_ref = saved.split_whitespace().next().unwrap().to_string();
    git(&repo, &["merge", "-q", "--no-edit", &saved_ref]);
    for (f, want) in [
        ("README", "base\nours\n"),
        ("ours.txt", "ours one\n"),
        ("theirs.txt", "theirs one\n"),
        ("notes.txt", "notes\ntheirs\n"),
    ] {
        assert_eq!(fs::read_to_string(repo.join(f)).unwrap(), want, "{f}");
    }
    git(&repo, &["fsck", "--no-progress", "--strict"]);
    m.afsd_ok(&["resolve", "--purge"]);
    other.stop();
    m.stop();
}
