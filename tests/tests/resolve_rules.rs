//! Rules that live in the tree: `.afsd-resolve.toml` files decide the
//! conflicts below them, the nearest first, and `prefer = "newer-source"`
//! keeps the side of a built file whose source is the newer, against the
//! real cell with a second client changing the server.

use std::fs;
use std::path::Path;
use std::thread::sleep;
use std::time::Duration;

use afsd_tests::{Cell, Mount};

/// Mount options: not a short dead time (see tests/offline.rs).
const DEAD: &[&str] = &["--dead-time", "20"];

fn write_all(dir: &Path, names: &[&str], who: &str) {
    for n in names {
        fs::write(dir.join(n), format!("{who} {n}\n")).unwrap();
    }
}

#[test]
fn rules_from_the_tree_decide_nearest_first_and_by_the_newer_source() {
    let cell = Cell::from_env();
    let m = Mount::new(&cell, DEAD);
    let other = Mount::new(&cell, DEAD);
    let rel = format!(".{}/shared/treerules-{}", cell.cell(), std::process::id());
    let root = m.path(&rel);
    let theirs = other.path(&rel);
    fs::create_dir_all(root.join("sub")).unwrap();
    fs::write(
        root.join(".afsd-resolve.toml"),
        "[[rule]]\nglob = \"*.o\"\nprefer = \"newer-source\"\nsource = \"$stem.c\"\n\
         [[rule]]\nglob = \"*.txt\"\naction = \"keep-remote\"\n\
         [[rule]]\nglob = \"*.sh\"\nrun = \"touch ran-$stem\"\n",
    )
    .unwrap();
    fs::write(
        root.join("sub/.afsd-resolve.toml"),
        "[[rule]]\nglob = \"*.txt\"\naction = \"keep-local\"\n",
    )
    .unwrap();
    let files = ["a.c", "a.o", "c.c", "c.o", "n.txt", "sub/n.txt", "x.sh"];
    write_all(&root, &files, "base");
    for f in files {
        assert!(fs::read_to_string(root.join(f))
            .unwrap()
            .starts_with("base"));
    }
    m.offline(&[&root]);
    // a: ours first, then theirs (their a.c is newer).
    write_all(
        &root,
        &["a.c", "a.o", "n.txt", "sub/n.txt", "x.sh"],
        "local",
    );
    sleep(Duration::from_millis(1100));
    write_all(
        &theirs,
        &["a.c", "a.o", "c.c", "c.o", "n.txt", "sub/n.txt", "x.sh"],
        "server",
    );
    // c: theirs first, then ours (our c.c is newer).
    sleep(Duration::from_millis(1100));
    write_all(&root, &["c.c", "c.o"], "local");
    m.online(&[&root]);
    m.wait_replayed(Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(m.conflicts().len(), files.len(), "{:?}", m.conflicts());

    let dir = root.to_str().unwrap();
    let dry = m.afsd_ok(&["resolve", "--dry-run", dir]);
    let line = |name: &str| -> String {
        dry.lines()
            .find(|l| l.contains(&format!("/{name} -> ")))
            .unwrap_or_else(|| panic!("no decision for {name}:\n{dry}"))
            .to_string()
    };
    let top = root.join(".afsd-resolve.toml").display().to_string();
    let near = root.join("sub/.afsd-resolve.toml").display().to_string();
    let a_o = line("a.o");
    assert!(
        a_o.contains("-> keep-remote") && a_o.contains("a.c is as new or newer on the server"),
        "{a_o}"
    );
    let c_o = line("c.o");
    assert!(
        c_o.contains("-> keep-local") && c_o.contains("c.c is newer on your side"),
        "{c_o}"
    );
    let top_txt = dry
        .lines()
        .find(|l| l.contains("/n.txt -> ") && !l.contains("/sub/"))
        .unwrap();
    assert!(
        top_txt.contains("-> keep-remote") && top_txt.contains(&top),
        "{top_txt}"
    );
    let sub_txt = line("sub/n.txt");
    assert!(
        sub_txt.contains("-> keep-local") && sub_txt.contains(&near),
        "the nearest file decides: {sub_txt}"
    );
    // A command from a directory's file runs only when the file is yours.
    let sh = line("x.sh");
    let mine = {
        use std::os::unix::fs::MetadataExt;
        fs::metadata(root.join(".afsd-resolve.toml")).unwrap().uid() == 0
    };
    if mine {
        assert!(sh.contains("run `touch ran-x`"), "{sh}");
    } else {
        assert!(sh.contains("-> leave") && sh.contains("not yours"), "{sh}");
    }
    assert!(line("a.c").contains("-> leave (no rule matches)"));
    assert_eq!(
        m.conflicts().len(),
        files.len(),
        "the dry run changed nothing"
    );

    m.afsd_ok(&["resolve", "--apply", dir]);
    let left: Vec<String> = m.conflicts().into_iter().map(|c| c.path).collect();
    assert_eq!(left.len(), if mine { 2 } else { 3 }, "{left:?}");
    // Other mount: the kernel there may hold pages for its 1 s TTL.
    sleep(Duration::from_millis(1100));
    for (f, want) in [
        ("a.o", "server a.o\n"),
        ("c.o", "local c.o\n"),
        ("n.txt", "server n.txt\n"),
        ("sub/n.txt", "local sub/n.txt\n"),
    ] {
        assert_eq!(fs::read_to_string(theirs.join(f)).unwrap(), want, "{f}");
    }
    m.afsd_ok(&["resolve", "-r", "--keep-remote", dir]);
    assert!(m.conflicts().is_empty());
    m.afsd_ok(&["resolve", "--purge"]);
    other.stop();
    m.stop();
}
