//! The cache manager against a reference model, over the in-memory
//! fileserver: random sequences of writes, reads, truncations, directory
//! operations, a second client, third-party changes and injected timeouts.
//! After every step each client's view, the server's tree and the model
//! must agree, and every errno must be the one the model predicts.
//!
//! The same runner is also run with a deliberately broken model rule
//! (`Model::sabotage`) and must fail: proof that the comparison bites.

mod common;

use std::collections::BTreeMap;

use client::memserver::{Entry, Faults};
use common::{setup, Client, StoreKind};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

const NAMES: [&str; 6] = ["a", "b", "d1", "d2", "d1/x", "d2/y"];

#[derive(Clone, Debug)]
enum Step {
    Write {
        who: usize,
        path: &'static str,
        data: Vec<u8>,
    },
    Read {
        who: usize,
        path: &'static str,
    },
    Truncate {
        who: usize,
        path: &'static str,
        size: u64,
    },
    Mkdir {
        who: usize,
        path: &'static str,
    },
    Unlink {
        who: usize,
        path: &'static str,
    },
    Rmdir {
        who: usize,
        path: &'static str,
    },
    Rename {
        who: usize,
        from: &'static str,
        to: &'static str,
    },
    ThirdParty {
        path: &'static str,
        data: Vec<u8>,
    },
    /// The client's network is cut for one change, which is made offline
    /// and replayed when the network is back.
    Cut {
        who: usize,
        path: &'static str,
    },
    /// The client goes offline by hand: until `Online` only it acts (its
    /// changes are logged; what it never cached fails with ENETDOWN).
    Offline {
        who: usize,
    },
    /// Back online: the log replays, with no conflict.
    Online,
}

impl Step {
    /// The client that acts (None: the third party, or nobody).
    fn actor(&self) -> Option<usize> {
        match self {
            Step::Write { who, .. }
            | Step::Read { who, .. }
            | Step::Truncate { who, .. }
            | Step::Mkdir { who, .. }
            | Step::Unlink { who, .. }
            | Step::Rmdir { who, .. }
            | Step::Rename { who, .. }
            | Step::Cut { who, .. }
            | Step::Offline { who } => Some(*who),
            Step::ThirdParty { .. } | Step::Online => None,
        }
    }
}

fn name() -> impl Strategy<Value = &'static str> {
    prop::sample::select(NAMES.to_vec())
}

fn step() -> impl Strategy<Value = Step> {
    let who = 0..2usize;
    let data = prop::collection::vec(any::<u8>(), 0..300);
    prop_oneof![
        4 => (who.clone(), name(), data.clone()).prop_map(|(who, path, data)| Step::Write { who, path, data }),
        2 => (who.clone(), name()).prop_map(|(who, path)| Step::Read { who, path }),
        2 => (who.clone(), name(), 0..400u64).prop_map(|(who, path, size)| Step::Truncate { who, path, size }),
        3 => (who.clone(), name()).prop_map(|(who, path)| Step::Mkdir { who, path }),
        2 => (who.clone(), name()).prop_map(|(who, path)| Step::Unlink { who, path }),
        2 => (who.clone(), name()).prop_map(|(who, path)| Step::Rmdir { who, path }),
        2 => (who.clone(), name(), name()).prop_map(|(who, from, to)| Step::Rename { who, from, to }),
        2 => (name(), data).prop_map(|(path, data)| Step::ThirdParty { path, data }),
        1 => (who.clone(), name()).prop_map(|(who, path)| Step::Cut { who, path }),
        1 => who.prop_map(|who| Step::Offline { who }),
        1 => Just(Step::Online),
    ]
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Node {
    File(Vec<u8>),
    Dir,
}

/// The reference: a map from path to node, with POSIX's rules.
#[derive(Default)]
struct Model {
    map: BTreeMap<String, Node>,
    /// A broken rule, for the self-test: rmdir of a non-empty directory
    /// "succeeds" in the model.
    sabotage: bool,
}

fn parent_of(path: &str) -> Option<&str> {
    path.rsplit_once('/').map(|(p, _)| p)
}

impl Model {
    /// ENOENT/ENOTDIR when the parent is missing or not a directory.
    fn parent_ok(&self, path: &str) -> Result<(), i32> {
        match parent_of(path) {
            None => Ok(()),
            Some(p) => match self.map.get(p) {
                Some(Node::Dir) => Ok(()),
                Some(Node::File(_)) => Err(libc::ENOTDIR),
                None => Err(libc::ENOENT),
            },
        }
    }

    fn children(&self, dir: &str) -> Vec<String> {
        let prefix = format!("{dir}/");
        self.map
            .keys()
            .filter(|k| k.starts_with(&prefix))
            .cloned()
            .collect()
    }

    fn write(&mut self, path: &str, data: &[u8]) -> Result<(), i32> {
        self.parent_ok(path)?;
        match self.map.get(path) {
            Some(Node::Dir) => Err(libc::EISDIR),
            _ => {
                self.map.insert(path.into(), Node::File(data.to_vec()));
                Ok(())
            }
        }
    }

    fn read(&self, path: &str) -> Result<Vec<u8>, i32> {
        self.parent_ok(path)?;
        match self.map.get(path) {
            Some(Node::File(d)) => Ok(d.clone()),
            Some(Node::Dir) => Err(libc::EISDIR),
            None => Err(libc::ENOENT),
        }
    }

    fn truncate(&mut self, path: &str, size: u64) -> Result<(), i32> {
        self.parent_ok(path)?;
        match self.map.get_mut(path) {
            Some(Node::File(d)) => {
                d.resize(size as usize, 0);
                Ok(())
            }
            Some(Node::Dir) => Err(libc::EISDIR),
            None => Err(libc::ENOENT),
        }
    }

    fn mkdir(&mut self, path: &str) -> Result<(), i32> {
        self.parent_ok(path)?;
        if self.map.contains_key(path) {
            return Err(libc::EEXIST);
        }
        self.map.insert(path.into(), Node::Dir);
        Ok(())
    }

    fn unlink(&mut self, path: &str) -> Result<(), i32> {
        self.parent_ok(path)?;
        match self.map.get(path) {
            Some(Node::File(_)) => {
                self.map.remove(path);
                Ok(())
            }
            Some(Node::Dir) => Err(libc::EISDIR),
            None => Err(libc::ENOENT),
        }
    }

    fn rmdir(&mut self, path: &str) -> Result<(), i32> {
        self.parent_ok(path)?;
        match self.map.get(path) {
            Some(Node::Dir) if !self.children(path).is_empty() && !self.sabotage => {
                Err(libc::ENOTEMPTY)
            }
            Some(Node::Dir) => {
                for c in self.children(path) {
                    self.map.remove(&c);
                }
                self.map.remove(path);
                Ok(())
            }
            Some(Node::File(_)) => Err(libc::ENOTDIR),
            None => Err(libc::ENOENT),
        }
    }

    fn rename(&mut self, from: &str, to: &str) -> Result<(), i32> {
        // Both parents are walked first, as the kernel does.
        self.parent_ok(from)?;
        self.parent_ok(to)?;
        let moved = self.map.get(from).cloned().ok_or(libc::ENOENT)?;
        if from == to {
            return Ok(());
        }
        if moved == Node::Dir && to.starts_with(&format!("{from}/")) {
            return Err(libc::EINVAL);
        }
        match (&moved, self.map.get(to)) {
            (Node::Dir, Some(Node::File(_))) => return Err(libc::ENOTDIR),
            (Node::File(_), Some(Node::Dir)) => return Err(libc::EISDIR),
            (Node::Dir, Some(Node::Dir)) if !self.children(to).is_empty() => {
                // The fileserver says EEXIST; the client answers as Linux
                // file systems do.
                return Err(libc::ENOTEMPTY);
            }
            _ => {}
        }
        self.map.remove(to);
        let kids = self.children(from);
        let node = self.map.remove(from).expect("present");
        self.map.insert(to.into(), node);
        for k in kids {
            let n = self.map.remove(&k).expect("present");
            self.map.insert(format!("{to}{}", &k[from.len()..]), n);
        }
        Ok(())
    }

    fn tree(&self) -> Vec<(String, Option<Vec<u8>>)> {
        self.map
            .iter()
            .map(|(k, v)| match v {
                Node::File(d) => (k.clone(), Some(d.clone())),
                Node::Dir => (k.clone(), None),
            })
            .collect()
    }
}

async fn truncate(c: &Client, path: &str, size: u64) -> Result<(), i32> {
    let ino = c.resolve(0, path).await?;
    let a = common::errno(c.afs.getattr(0, ino).await)?;
    if a.kind == client::NodeKind::Dir {
        return Err(libc::EISDIR);
    }
    common::errno(
        c.afs
            .setattr(
                0,
                ino,
                client::SetAttrs {
                    size: Some(size),
                    ..Default::default()
                },
            )
            .await,
    )
    .map(|_| ())
}

fn check(what: &str, got: Result<(), i32>, want: Result<(), i32>) -> Result<(), TestCaseError> {
    prop_assert_eq!(got, want, "{}", what);
    Ok(())
}

async fn run(steps: Vec<Step>, kind: StoreKind, sabotage: bool) -> Result<(), TestCaseError> {
    let (cell, clients) = setup(2, kind, 64);
    let mut model = Model {
        sabotage,
        ..Model::default()
    };
    let mut offline: Option<usize> = None;
    let mut steps = steps;
    // Whatever is offline at the end comes back.
    steps.push(Step::Online);
    for s in steps {
        let what = format!("{s:?}");
        if let Some(o) = offline {
            // Offline, only that client acts: anyone else's change would
            // make a conflict, which this model does not predict.
            let others = match &s {
                Step::Online => false,
                Step::Cut { .. } | Step::Offline { .. } => true,
                other => other.actor() != Some(o),
            };
            if others {
                continue;
            }
        }
        // What the model was before the step: a change the offline client
        // could not make (ENETDOWN: never cached) leaves it so.
        let before = model.map.clone();
        let check = |what: &str, got: Result<(), i32>, want: Result<(), i32>, model: &mut Model| {
            if offline.is_some() && got == Err(libc::ENETDOWN) {
                model.map = before.clone();
                return Ok(());
            }
            check(what, got, want)
        };
        match s {
            Step::Write { who, path, data } => {
                let want = model.write(path, &data);
                check(
                    &what,
                    clients[who].write_file(0, path, &data).await,
                    want,
                    &mut model,
                )?;
            }
            Step::Read { who, path } => {
                let got = clients[who].read_file(0, path).await;
                if !(offline.is_some() && got == Err(libc::ENETDOWN)) {
                    prop_assert_eq!(got, model.read(path), "{}", what);
                }
            }
            Step::Truncate { who, path, size } => {
                let want = model.truncate(path, size);
                check(
                    &what,
                    truncate(&clients[who], path, size).await,
                    want,
                    &mut model,
                )?;
            }
            Step::Mkdir { who, path } => {
                let want = model.mkdir(path);
                check(&what, clients[who].mkdir(0, path).await, want, &mut model)?;
            }
            Step::Unlink { who, path } => {
                let want = model.unlink(path);
                check(&what, clients[who].unlink(0, path).await, want, &mut model)?;
            }
            Step::Rmdir { who, path } => {
                let want = model.rmdir(path);
                check(&what, clients[who].rmdir(0, path).await, want, &mut model)?;
            }
            Step::Rename { who, from, to } => {
                let want = model.rename(from, to);
                check(
                    &what,
                    clients[who].rename(0, from, to).await,
                    want,
                    &mut model,
                )?;
            }
            Step::ThirdParty { path, data } => {
                // The third party writes only where the model can: a file
                // whose directory exists.
                if model.parent_ok(path).is_ok() && model.map.get(path) != Some(&Node::Dir) {
                    model.write(path, &data).expect("checked");
                    cell.third_party(|tp| tp.write(path, &data));
                }
            }
            Step::Offline { who } => {
                // A client that used no volume yet has nothing to take
                // offline.
                if clients[who].afs.go_offline(&client::Targets::All).is_ok() {
                    offline = Some(who);
                }
            }
            Step::Online => {
                let Some(who) = offline.take() else { continue };
                clients[who]
                    .afs
                    .go_online(&client::Targets::All, false)
                    .await
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                synced(&clients[who], &what).await?;
            }
            Step::Cut { who, path } => {
                // The network goes while a directory is made: the client
                // makes it offline (when it holds the parent) and the
                // change reaches the server when the network is back.
                cell.set_faults(
                    clients[who].fs.client(),
                    Faults {
                        down: true,
                        ..Faults::default()
                    },
                );
                let fresh = format!("{path}.new");
                let r = clients[who].mkdir(0, &fresh).await;
                cell.set_faults(clients[who].fs.client(), Faults::default());
                let want = model.mkdir(&fresh);
                match (&r, &want) {
                    // What the client had not cached cannot be changed
                    // offline: ENETDOWN (ETIMEDOUT when the lookup that
                    // met the cut waited for it), and nothing happened.
                    (Err(libc::ENETDOWN | libc::ETIMEDOUT), Ok(())) => {
                        model.rmdir(&fresh).expect("just made");
                    }
                    (Err(libc::ENETDOWN | libc::ETIMEDOUT), Err(_)) => {}
                    _ => prop_assert_eq!(r, want, "{}", what),
                }
                synced(&clients[who], &what).await?;
            }
        }
        if offline.is_some() {
            // The server and the other client see the change later.
            continue;
        }
        let want = model.tree();
        let server: Vec<(String, Option<Vec<u8>>)> = cell
            .third_party(|tp| tp.tree(""))
            .into_iter()
            .map(|(p, e)| match e {
                Entry::File(d) => (p, Some(d)),
                Entry::Dir => (p, None),
                Entry::Symlink(t) => (p, Some(t)),
            })
            .collect();
        prop_assert_eq!(&server, &want, "server after {}", what);
        for (i, c) in clients.iter().enumerate() {
            let got = c.tree(0, "").await;
            prop_assert_eq!(got.as_ref(), Ok(&want), "client {} after {}", i, what);
        }
    }
    Ok(())
}

/// Replays the client's log until its volumes are connected with nothing
/// pending, with no conflict.
async fn synced(c: &Client, what: &str) -> Result<(), TestCaseError> {
    for _ in 0..50 {
        c.afs
            .sync(&client::Targets::All)
            .await
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        if c.afs
            .volume_status()
            .iter()
            .all(|v| v.pending_ops == 0 && v.mode == client::Mode::Connected)
        {
            break;
        }
    }
    prop_assert!(
        c.afs.conflicts(None).is_empty(),
        "conflicts after {}: {:?}",
        what,
        c.afs.conflicts(None)
    );
    prop_assert!(
        c.afs.volume_status().iter().all(|v| v.pending_ops == 0),
        "not replayed after {}: {:?}",
        what,
        c.afs.volume_status()
    );
    Ok(())
}

/// `MODEL_CASES` raises the number of cases for long runs by hand.
///
/// The cases come from a fixed seed, so that every run (CI's included)
/// checks the same sequences and a failure repeats; `MODEL_RANDOM=1` draws
/// new ones, for exploring by hand.
fn runner(cases: u32) -> TestRunner {
    let cases = std::env::var("MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cases);
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    if std::env::var_os("MODEL_RANDOM").is_some() {
        TestRunner::new(config)
    } else {
        let rng = proptest::test_runner::TestRng::deterministic_rng(config.rng_algorithm);
        TestRunner::new_with_rng(config, rng)
    }
}

fn run_cases(kind: StoreKind, sabotage: bool, cases: u32) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runner(cases)
        .run(&prop::collection::vec(step(), 1..40), |steps| {
            rt.block_on(run(steps, kind, sabotage))
        })
        .map_err(|e| e.to_string())
}

#[test]
fn model_memory_store() {
    run_cases(StoreKind::Memory, false, 64).unwrap();
}

#[test]
fn model_rocks_store() {
    run_cases(StoreKind::Rocks, false, 16).unwrap();
}

/// A model that lets rmdir remove a non-empty directory must be caught.
#[test]
fn a_broken_model_rule_is_caught() {
    let r = run_cases(StoreKind::Memory, true, 256);
    assert!(r.is_err(), "the sabotaged model passed 256 cases");
}
