//! The write path against a reference model, on the real mount and the real
//! fileserver (in the manner of mountpoint-s3's reftests).
//!
//! Random sequences of writes, truncations, reads and closes run on a file
//! in `/afs` and on a plain byte vector. Offsets cluster around the 1 MiB
//! chunk edges, where the dirty-chunk bookkeeping has its cases. Every read
//! must match the model; after each sequence the file read back through the
//! mount and, from the server, by the third-party tool must equal it.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;

use afsd_tests::{random_bytes, Cell, Mount};
use proptest::prelude::*;

const MIB: u64 = 1 << 20;

#[derive(Clone, Debug)]
enum FileOp {
    Write {
        offset: u64,
        len: usize,
        seed: u64,
    },
    Truncate(u64),
    Read {
        offset: u64,
        len: usize,
    },
    /// close(2), which stores, then open again.
    Reopen,
}

/// An offset near a chunk edge, or anywhere in the first 4 MiB.
fn offset() -> impl Strategy<Value = u64> {
    prop_oneof![
        (0u64..5, -300i64..300).prop_map(|(c, d)| (c * MIB).saturating_add_signed(d)),
        0u64..4 * MIB,
    ]
}

fn op() -> impl Strategy<Value = FileOp> {
    prop_oneof![
        5 => (offset(), 0usize..(300 << 10), any::<u64>())
            .prop_map(|(offset, len, seed)| FileOp::Write { offset, len, seed }),
        2 => offset().prop_map(FileOp::Truncate),
        3 => (offset(), 0usize..(2 << 20)).prop_map(|(offset, len)| FileOp::Read { offset, len }),
        2 => Just(FileOp::Reopen),
    ]
}

fn open(path: &std::path::Path) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap()
}

fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    a.iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .or((a.len() != b.len()).then(|| a.len().min(b.len())))
}

#[test]
fn random_writes_truncations_and_closes_match_a_model() {
    let cell = Cell::from_env();
    let m = Mount::new(&cell, &[]);
    let dir = format!("shared/reftest-{}", std::process::id());
    std::fs::create_dir(m.path(&format!(".{}/{dir}", cell.cell()))).unwrap();
    let mut runner = afsd_tests::reftest_runner();
    let case = std::cell::Cell::new(0u32);
    let strategy = (0usize..(3 << 20), proptest::collection::vec(op(), 1..14));
    let result = runner.run(&strategy, |(initial_len, ops)| {
        case.set(case.get() + 1);
        let rel = format!("{dir}/f{}", case.get());
        let path = m.path(&format!(".{}/{rel}", cell.cell()));
        // The old contents come from the server, written by another client.
        let mut model = random_bytes(initial_len, u64::from(case.get()));
        cell.put(&cell.rw(&rel), &model);
        let mut f = open(&path);
        for (i, op) in ops.iter().enumerate() {
            match *op {
                FileOp::Write { offset, len, seed } => {
                    let data = random_bytes(len, seed);
                    f.write_all_at(&data, offset).unwrap();
                    let end = offset as usize + len;
                    if model.len() < end {
                        model.resize(end, 0);
                    }
                    model[offset as usize..end].copy_from_slice(&data);
                }
                FileOp::Truncate(size) => {
                    f.set_len(size).unwrap();
                    model.resize(size as usize, 0);
                }
                FileOp::Read { offset, len } => {
                    let mut buf = vec![0u8; len];
                    let mut got = 0;
                    while got < len {
                        let n = f.read_at(&mut buf[got..], offset + got as u64).unwrap();
                        if n == 0 {
                            break;
                        }
                        got += n;
                    }
                    buf.truncate(got);
                    let from = (offset as usize).min(model.len());
                    let to = (offset as usize + len).min(model.len());
                    prop_assert_eq!(
                        first_difference(&buf, &model[from..to]),
                        None,
                        "read {} of {:?} (length {})",
                        i,
                        op,
                        model.len()
                    );
                }
                FileOp::Reopen => {
                    drop(f);
                    f = open(&path);
                }
            }
            prop_assert_eq!(
                f.metadata().unwrap().len(),
                model.len() as u64,
                "length after op {}: {:?}",
                i,
                op
            );
        }
        drop(f);
        let through_mount = std::fs::read(&path).unwrap();
        prop_assert_eq!(
            first_difference(&through_mount, &model),
            None,
            "read back through the mount"
        );
        let on_server = cell.third_party(&["cat", &cell.rw(&rel)], None).stdout;
        prop_assert_eq!(
            first_difference(&on_server, &model),
            None,
            "read from the server by the third-party tool (length {} vs {})",
            on_server.len(),
            model.len()
        );
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}\ndaemon log tail:\n{}", {
            let log = m.log_text();
            log.lines()
                .rev()
                .take(30)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n")
        });
    }
}
