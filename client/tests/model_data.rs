//! The write path against a byte-vector model, over the in-memory
//! fileserver (the `tests/tests/reftest.rs` model, in plain `cargo test`).
//!
//! Random writes, truncations (ftruncate on the open file), reads and
//! reopens run on one file whose old contents a third party wrote. The
//! chunk size is 64 bytes so that offsets cluster around chunk edges. Every
//! read must match the model; after each sequence the server's bytes, a
//! second client's read and the writer's read after close must equal it.
//! A store that times out (injected) fails close and keeps the changes for
//! the next close.

mod common;

use client::memserver::Faults;
use common::{errno, setup, StoreKind};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

const CS: u64 = 64;

#[derive(Clone, Debug)]
enum Op {
    Write {
        offset: u64,
        data: Vec<u8>,
    },
    Truncate(u64),
    Read {
        offset: u64,
        len: u32,
    },
    /// close(2), which stores, then open again.
    Reopen,
    /// close(2) while the network is cut: the change is logged, and
    /// replayed when the network is back.
    FailedClose,
}

fn offset() -> impl Strategy<Value = u64> {
    prop_oneof![
        (0u64..5, -5i64..5).prop_map(|(c, d)| (c * CS).saturating_add_signed(d)),
        0u64..5 * CS,
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (offset(), prop::collection::vec(any::<u8>(), 0..150))
            .prop_map(|(offset, data)| Op::Write { offset, data }),
        2 => offset().prop_map(Op::Truncate),
        3 => (offset(), 0u32..200).prop_map(|(offset, len)| Op::Read { offset, len }),
        2 => Just(Op::Reopen),
        1 => Just(Op::FailedClose),
    ]
}

async fn read_all(c: &client::AfsClient, fh: u64, offset: u64, len: u32) -> Result<Vec<u8>, i32> {
    let mut out = Vec::new();
    while (out.len() as u32) < len {
        let d = errno(
            c.read(0, fh, offset + out.len() as u64, len - out.len() as u32)
                .await,
        )?;
        if d.is_empty() {
            break;
        }
        out.extend(d);
    }
    Ok(out)
}

async fn run(initial: Vec<u8>, ops: Vec<Op>, kind: StoreKind) -> Result<(), TestCaseError> {
    let (cell, clients) = setup(2, kind, CS);
    cell.third_party(|tp| tp.write("f", &initial));
    let (w, other) = (&clients[0], &clients[1]);
    let mut model = initial;
    let ino = w.resolve(0, "f").await.expect("file exists");
    let mut fh = w.afs.open(0, ino, libc::O_RDWR).await.expect("open");
    for (i, op) in ops.iter().enumerate() {
        match op {
            Op::Write { offset, data } => {
                let n = w.afs.write(fh, *offset, data).await.expect("write");
                prop_assert_eq!(n as usize, data.len());
                let end = *offset as usize + data.len();
                if model.len() < end {
                    model.resize(end, 0);
                }
                model[*offset as usize..end].copy_from_slice(data);
            }
            Op::Truncate(size) => {
                let attrs = client::SetAttrs {
                    size: Some(*size),
                    ..Default::default()
                };
                let a = w.afs.setattr(0, ino, attrs).await.expect("truncate");
                prop_assert_eq!(a.size, *size);
                model.resize(*size as usize, 0);
            }
            Op::Read { offset, len } => {
                let got = read_all(&w.afs, fh, *offset, *len).await;
                let from = (*offset as usize).min(model.len());
                let to = (*offset as usize + *len as usize).min(model.len());
                prop_assert_eq!(got, Ok(model[from..to].to_vec()), "read {} {:?}", i, op);
                let a = w.afs.getattr(0, ino).await.expect("getattr");
                prop_assert_eq!(a.size, model.len() as u64, "length after {}", i);
            }
            Op::Reopen => {
                w.afs.flush(fh).await.expect("close stores");
                w.afs.release(fh, None).await.expect("release");
                synced(&w.afs).await?;
                prop_assert_eq!(cell.third_party(|tp| tp.read("f")), Some(model.clone()));
                fh = w.afs.open(0, ino, libc::O_RDWR).await.expect("open");
            }
            Op::FailedClose => {
                let down = Faults {
                    down: true,
                    ..Faults::default()
                };
                cell.set_faults(w.fs.client(), down);
                let r = errno(w.afs.flush(fh).await);
                cell.set_faults(w.fs.client(), Faults::default());
                // A close during a cut is logged, and succeeds: the store
                // reaches the server when it answers again.
                prop_assert_eq!(r, Ok(()));
                synced(&w.afs).await?;
                prop_assert_eq!(cell.third_party(|tp| tp.read("f")), Some(model.clone()));
                // The changes are still there for the writer.
                let got = read_all(&w.afs, fh, 0, model.len() as u32 + 10).await;
                prop_assert_eq!(got, Ok(model.clone()));
            }
        }
    }
    w.afs.flush(fh).await.expect("close stores");
    w.afs.release(fh, None).await.expect("release");
    synced(&w.afs).await?;
    prop_assert_eq!(cell.third_party(|tp| tp.read("f")), Some(model.clone()));
    prop_assert_eq!(other.read_file(0, "f").await, Ok(model.clone()));
    prop_assert_eq!(w.read_file(0, "f").await, Ok(model));
    Ok(())
}

/// Replays what a cut left in the change log.
async fn synced(afs: &client::AfsClient) -> Result<(), TestCaseError> {
    for _ in 0..50 {
        afs.sync(&client::Targets::All)
            .await
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        if afs
            .volume_status()
            .iter()
            .all(|v| v.pending_ops == 0 && v.mode == client::Mode::Connected)
        {
            prop_assert!(afs.conflicts(None).is_empty(), "{:?}", afs.conflicts(None));
            return Ok(());
        }
    }
    Err(TestCaseError::fail(format!(
        "not replayed: {:?}",
        afs.volume_status()
    )))
}

fn run_cases(kind: StoreKind, cases: u32) {
    let cases = std::env::var("MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cases);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let strategy = (
        prop::collection::vec(any::<u8>(), 0..(4 * CS as usize)),
        prop::collection::vec(op(), 1..20),
    );
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
    .run(&strategy, |(initial, ops)| {
        rt.block_on(run(initial, ops, kind))
    })
    .unwrap();
}

#[test]
fn writes_truncations_reads_and_closes_match_a_model_memory() {
    run_cases(StoreKind::Memory, 128);
}

#[test]
fn writes_truncations_reads_and_closes_match_a_model_rocks() {
    run_cases(StoreKind::Rocks, 24);
}
