//! Directory operations against a reference model, on the real mount and the
//! real fileserver.
//!
//! Random sequences of file writes, mkdir, unlink, rmdir and rename (within
//! and across directories) run in a fresh directory of `/afs` and on a map
//! of paths. Each operation must succeed exactly when the model says it
//! does, and after each one the tree read through the mount must equal the
//! model: that is the client's own-change coherence, where listings are
//! edited in place from the fileserver's answers. At the end a second
//! afsd-rs client (its own cache, which listed the directory before) and the
//! third-party tool must see the same tree.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use afsd_tests::{wait_until, Cell, Mount};
use proptest::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Node {
    File(Vec<u8>),
    Dir,
}

type Tree = BTreeMap<String, Node>;

#[derive(Clone, Debug)]
enum NameOp {
    Write(String, u8),
    Mkdir(String),
    Unlink(String),
    Rmdir(String),
    Rename(String, String),
}

/// Paths of at most two levels over a few names, so that operations meet.
fn path() -> impl Strategy<Value = String> {
    let name = prop_oneof![Just("a"), Just("b"), Just("c")];
    let parent = prop_oneof![3 => Just(""), 1 => Just("a/"), 1 => Just("b/")];
    prop_oneof![
        2 => prop_oneof![Just("a".to_string()), Just("b".to_string())],
        3 => (parent, name).prop_map(|(p, n)| format!("{p}{n}")),
    ]
}

fn name_op() -> impl Strategy<Value = NameOp> {
    prop_oneof![
        3 => (path(), any::<u8>()).prop_map(|(p, b)| NameOp::Write(p, b)),
        3 => path().prop_map(NameOp::Mkdir),
        2 => path().prop_map(NameOp::Unlink),
        2 => path().prop_map(NameOp::Rmdir),
        3 => (path(), path()).prop_map(|(a, b)| NameOp::Rename(a, b)),
    ]
}

fn parent_of(p: &str) -> Option<&str> {
    p.rsplit_once('/').map(|(d, _)| d)
}

fn parent_is_dir(t: &Tree, p: &str) -> bool {
    parent_of(p).is_none_or(|d| t.get(d) == Some(&Node::Dir))
}

fn has_children(t: &Tree, p: &str) -> bool {
    let prefix = format!("{p}/");
    t.keys().any(|k| k.starts_with(&prefix))
}

/// Applies `op` to the model; whether POSIX says it succeeds.
fn model_apply(t: &mut Tree, op: &NameOp) -> bool {
    match op {
        NameOp::Write(p, b) => {
            if !parent_is_dir(t, p) || t.get(p) == Some(&Node::Dir) {
                return false;
            }
            t.insert(p.clone(), Node::File(vec![*b; 3]));
            true
        }
        NameOp::Mkdir(p) => {
            if !parent_is_dir(t, p) || t.contains_key(p) {
                return false;
            }
            t.insert(p.clone(), Node::Dir);
            true
        }
        NameOp::Unlink(p) => match t.get(p) {
            Some(Node::File(_)) => {
                t.remove(p);
                true
            }
            _ => false,
        },
        NameOp::Rmdir(p) => {
            if t.get(p) == Some(&Node::Dir) && !has_children(t, p) {
                t.remove(p);
                true
            } else {
                false
            }
        }
        NameOp::Rename(from, to) => {
            let Some(src) = t.get(from).cloned() else {
                return false;
            };
            if !parent_is_dir(t, to) {
                return false;
            }
            if from == to {
                return true;
            }
            if src == Node::Dir && to.starts_with(&format!("{from}/")) {
                return false; // into itself
            }
            match (t.get(to), &src) {
                (None, _) => {}
                (Some(Node::File(_)), Node::File(_)) => {}
                (Some(Node::Dir), Node::Dir) if !has_children(t, to) => {}
                _ => return false,
            }
            t.remove(to);
            // Move the node and, for a directory, everything under it.
            let prefix = format!("{from}/");
            let moved: Vec<(String, Node)> = t
                .iter()
                .filter(|(k, _)| *k == from || k.starts_with(&prefix))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            for (k, v) in moved {
                t.remove(&k);
                t.insert(format!("{to}{}", &k[from.len()..]), v);
            }
            true
        }
    }
}

fn real_apply(root: &Path, op: &NameOp) -> std::io::Result<()> {
    match op {
        NameOp::Write(p, b) => std::fs::write(root.join(p), [*b; 3]),
        NameOp::Mkdir(p) => std::fs::create_dir(root.join(p)),
        NameOp::Unlink(p) => std::fs::remove_file(root.join(p)),
        NameOp::Rmdir(p) => std::fs::remove_dir(root.join(p)),
        NameOp::Rename(a, b) => std::fs::rename(root.join(a), root.join(b)),
    }
}

/// The tree under `root` as the mount shows it.
fn read_tree(root: &Path) -> std::io::Result<Tree> {
    fn walk(root: &Path, rel: &str, out: &mut Tree) -> std::io::Result<()> {
        let dir = if rel.is_empty() {
            root.to_path_buf()
        } else {
            root.join(rel)
        };
        for e in std::fs::read_dir(&dir)? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            let p = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            if e.file_type()?.is_dir() {
                out.insert(p.clone(), Node::Dir);
                walk(root, &p, out)?;
            } else {
                out.insert(p.clone(), Node::File(std::fs::read(root.join(&p))?));
            }
        }
        Ok(())
    }
    let mut out = Tree::new();
    walk(root, "", &mut out)?;
    Ok(out)
}

#[test]
fn random_directory_operations_match_a_model() {
    let cell = Cell::from_env();
    let m = Mount::new(&cell, &[]);
    let other = Mount::new(&cell, &[]);
    let base = format!("shared/names-{}", std::process::id());
    std::fs::create_dir(m.path(&format!(".{}/{base}", cell.cell()))).unwrap();
    let mut runner = afsd_tests::reftest_runner();
    let case = std::cell::Cell::new(0u32);
    let strategy = proptest::collection::vec(name_op(), 1..30);
    let result = runner.run(&strategy, |ops| {
        case.set(case.get() + 1);
        let rel = format!("{base}/t{}", case.get());
        let root = m.path(&format!(".{}/{rel}", cell.cell()));
        std::fs::create_dir(&root).unwrap();
        // The other client lists it first, so its copy must be broken.
        let other_root = other.path(&format!(".{}/{rel}", cell.cell()));
        prop_assert_eq!(read_tree(&other_root).unwrap(), Tree::new());
        let mut model = Tree::new();
        for (i, op) in ops.iter().enumerate() {
            let want = model_apply(&mut model, op);
            let got = real_apply(&root, op);
            prop_assert_eq!(
                got.is_ok(),
                want,
                "op {} {:?}: the mount said {:?}",
                i,
                op,
                got
            );
            let tree = read_tree(&root).unwrap();
            prop_assert_eq!(&tree, &model, "tree after op {} {:?}", i, op);
        }
        let seen = wait_until(Duration::from_secs(5), || {
            read_tree(&other_root).is_ok_and(|t| t == model)
        });
        prop_assert!(
            seen,
            "the other client sees {:?}, not {:?}",
            read_tree(&other_root),
            model
        );
        let ls = cell.third_party(&["ls", &cell.rw(&rel)], None).stdout;
        let mut on_server: Vec<String> = String::from_utf8_lossy(&ls)
            .lines()
            .filter_map(|l| l.split_once('\t').map(|(_, n)| n.to_string()))
            .filter(|n| n != "." && n != "..")
            .collect();
        on_server.sort();
        let top: Vec<String> = model.keys().filter(|k| !k.contains('/')).cloned().collect();
        prop_assert_eq!(on_server, top, "top level on the server");
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
