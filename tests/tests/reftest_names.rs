//! Directory operations against a reference model, on the real mount and the
//! real fileserver.
//!
//! Random sequences of file writes, mkdir, unlink, rmdir and rename (within
//! and across directories) run in a fresh directory of `/afs` and on a map
//! of paths. Each operation must succeed exactly when the model says it
//! does, and fail with the errno the model predicts (ENOENT, EEXIST,
//! ENOTEMPTY, ENOTDIR, EISDIR, EINVAL); after each one the tree read
//! through the mount must equal the model: that is the client's own-change
//! coherence, where listings are edited in place from the fileserver's
//! answers. At the end a second afsd-rs client (its own cache, which listed
//! the directory before) and the third-party tool, reading the server's
//! whole tree with its bytes, must see the same tree.

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

/// The errno resolving `p`'s parent gives: ENOENT when it is missing,
/// ENOTDIR when it is a file.
fn parent_err(t: &Tree, p: &str) -> Result<(), i32> {
    match parent_of(p).map(|d| t.get(d)) {
        None | Some(Some(Node::Dir)) => Ok(()),
        Some(None) => Err(libc::ENOENT),
        Some(Some(Node::File(_))) => Err(libc::ENOTDIR),
    }
}

fn has_children(t: &Tree, p: &str) -> bool {
    let prefix = format!("{p}/");
    t.keys().any(|k| k.starts_with(&prefix))
}

/// Applies `op` to the model: Ok, or the errno Linux gives for it (the
/// order of the checks is the kernel's: parents, then the names, then the
/// directory's emptiness).
fn model_apply(t: &mut Tree, op: &NameOp) -> Result<(), i32> {
    use libc::{EEXIST, EINVAL, EISDIR, ENOENT, ENOTDIR, ENOTEMPTY};
    match op {
        NameOp::Write(p, b) => {
            parent_err(t, p)?;
            if t.get(p) == Some(&Node::Dir) {
                return Err(EISDIR);
            }
            t.insert(p.clone(), Node::File(vec![*b; 3]));
            Ok(())
        }
        NameOp::Mkdir(p) => {
            parent_err(t, p)?;
            if t.contains_key(p) {
                return Err(EEXIST);
            }
            t.insert(p.clone(), Node::Dir);
            Ok(())
        }
        NameOp::Unlink(p) => {
            parent_err(t, p)?;
            match t.get(p) {
                None => Err(ENOENT),
                Some(Node::Dir) => Err(EISDIR),
                Some(Node::File(_)) => {
                    t.remove(p);
                    Ok(())
                }
            }
        }
        NameOp::Rmdir(p) => {
            parent_err(t, p)?;
            match t.get(p) {
                None => Err(ENOENT),
                Some(Node::File(_)) => Err(ENOTDIR),
                Some(Node::Dir) if has_children(t, p) => Err(ENOTEMPTY),
                Some(Node::Dir) => {
                    t.remove(p);
                    Ok(())
                }
            }
        }
        NameOp::Rename(from, to) => {
            parent_err(t, from)?;
            parent_err(t, to)?;
            let Some(src) = t.get(from).cloned() else {
                return Err(ENOENT);
            };
            // A directory into itself; onto its own parent.
            if to.starts_with(&format!("{from}/")) {
                return Err(EINVAL);
            }
            if from.starts_with(&format!("{to}/")) {
                return Err(ENOTEMPTY);
            }
            if from == to {
                return Ok(());
            }
            match (t.get(to), &src) {
                (None, _) | (Some(Node::File(_)), Node::File(_)) => {}
                (Some(Node::Dir), Node::Dir) if !has_children(t, to) => {}
                (Some(Node::Dir), Node::Dir) => return Err(ENOTEMPTY),
                (Some(Node::Dir), Node::File(_)) => return Err(EISDIR),
                (Some(Node::File(_)), Node::Dir) => return Err(ENOTDIR),
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
            Ok(())
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

/// The tree under `dir` as the third-party tool reads it from the
/// fileserver: names with `ls`, file bytes with `cat`. AFS gives
/// directories odd vnode numbers and files even ones; a wrong guess fails
/// (`ls` of a file) or reads a directory blob that matches no model.
fn server_tree(cell: &Cell, dir: &str) -> Tree {
    fn walk(cell: &Cell, dir: &str, rel: &str, out: &mut Tree) {
        let ls = cell.third_party(&["ls", dir], None).stdout;
        for line in String::from_utf8_lossy(&ls).lines() {
            let (fid, name) = line
                .split_once('\t')
                .unwrap_or_else(|| panic!("bad ls line {line:?}"));
            if name == "." || name == ".." {
                continue;
            }
            let vnode: u32 = fid
                .split('.')
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("bad fid in {line:?}"));
            let p = if rel.is_empty() {
                name.to_string()
            } else {
                format!("{rel}/{name}")
            };
            let path = format!("{dir}/{name}");
            if vnode % 2 == 1 {
                out.insert(p.clone(), Node::Dir);
                walk(cell, &path, &p, out);
            } else {
                out.insert(
                    p,
                    Node::File(cell.third_party(&["cat", &path], None).stdout),
                );
            }
        }
    }
    let mut out = Tree::new();
    walk(cell, dir, "", &mut out);
    out
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
            let got = real_apply(&root, op).map_err(|e| e.raw_os_error().unwrap_or(-1));
            prop_assert_eq!(
                got,
                want,
                "op {} {:?}: the mount's result (left), the model's (right)",
                i,
                op
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
        let on_server = server_tree(&cell, &cell.rw(&rel));
        prop_assert_eq!(&on_server, &model, "the server's tree (third-party tool)");
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
