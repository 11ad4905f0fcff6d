//! `cargo xtask test`: the one command CI runs.

use std::time::{Duration, Instant};

use crate::cell::{self, CellOpts};
use crate::util::{self, secs, Res};

pub struct TestOpts {
    pub no_cell: bool,
    pub keep_cell: bool,
    pub cell: CellOpts,
}

#[derive(Clone, Copy, PartialEq)]
enum Outcome {
    Pass,
    Fail,
    Skip,
}

struct Steps {
    total: usize,
    done: Vec<(String, Outcome, Duration, String)>,
}

impl Steps {
    /// Run one step: header, wall time, outcome.
    fn run(&mut self, name: &str, what: &str, f: impl FnOnce() -> Res<()>) -> bool {
        let n = self.done.len() + 1;
        println!("\n==> [{n}/{}] {name}: {what}", self.total);
        let t = Instant::now();
        let r = f();
        let d = t.elapsed();
        let (outcome, note) = match r {
            Ok(()) => (Outcome::Pass, String::new()),
            Err(e) => (Outcome::Fail, e),
        };
        match outcome {
            Outcome::Pass => println!("<== [{n}/{}] {name}: ok ({})", self.total, secs(d)),
            _ => println!(
                "<== [{n}/{}] {name}: FAILED ({}): {note}",
                self.total,
                secs(d)
            ),
        }
        self.done.push((name.to_string(), outcome, d, note));
        outcome == Outcome::Pass
    }

    fn skip(&mut self, name: &str, why: &str) {
        let n = self.done.len() + 1;
        println!("\n==> [{n}/{}] {name}: skipped ({why})", self.total);
        self.done.push((
            name.to_string(),
            Outcome::Skip,
            Duration::ZERO,
            why.to_string(),
        ));
    }
}

fn cargo_step(args: &[&str], envs: &[(&str, String)]) -> Res<()> {
    let mut c = util::cargo();
    c.args(args);
    for (k, v) in envs {
        c.env(k, v);
    }
    let st = c
        .status()
        .map_err(|e| format!("cannot run cargo {}: {e}", args.join(" ")))?;
    if st.success() {
        Ok(())
    } else {
        Err(format!(
            "cargo {} failed ({})",
            args.join(" "),
            util::describe_status(&st)
        ))
    }
}

/// Returns true if everything passed.
pub fn test(o: &TestOpts) -> Res<bool> {
    let t0 = Instant::now();
    let with_cell = !o.no_cell;
    if with_cell {
        util::require_root("test (with the cell; use --no-cell to skip integration tests)")?;
    }
    let mut st = Steps {
        total: if with_cell { 7 } else { 4 },
        done: Vec::new(),
    };
    st.run("fmt", "cargo fmt --all --check", || {
        cargo_step(&["fmt", "--all", "--check"], &[])
    });
    st.run(
        "clippy",
        "cargo clippy --workspace --all-targets -- -D warnings",
        || {
            cargo_step(
                &[
                    "clippy",
                    "--workspace",
                    "--all-targets",
                    "--",
                    "-D",
                    "warnings",
                ],
                &[],
            )
        },
    );
    st.run(
        "unit tests",
        "cargo test --workspace --exclude afsd-tests --exclude xtask",
        || {
            cargo_step(
                &[
                    "test",
                    "--workspace",
                    "--exclude",
                    "afsd-tests",
                    "--exclude",
                    "xtask",
                ],
                &[],
            )
        },
    );
    let built = st.run("build", "cargo build -p afsd-rs", || {
        cargo_step(&["build", "-p", "afsd-rs"], &[])
    });
    if with_cell {
        let mut env_file = None;
        let up = st.run("cell up", "cargo xtask cell up", || {
            let c = cell::up(&o.cell)?;
            env_file = Some(c.env_file);
            Ok(())
        });
        match (built, up, env_file) {
            (true, true, Some(env)) => {
                let bin = util::target_dir().join("debug/afsd-rs");
                let envs = [
                    ("AFSD_TESTCELL_ENV", env.display().to_string()),
                    ("AFSD_BIN", bin.display().to_string()),
                ];
                st.run(
                    "integration tests",
                    &format!(
                        "AFSD_TESTCELL_ENV={} AFSD_BIN={} cargo test -p afsd-tests -- --test-threads=1",
                        envs[0].1, envs[1].1
                    ),
                    || cargo_step(&["test", "-p", "afsd-tests", "--", "--test-threads=1"], &envs),
                );
            }
            (false, _, _) => st.skip("integration tests", "build failed"),
            _ => st.skip("integration tests", "cell up failed"),
        }
        if o.keep_cell {
            st.skip("cell down", "--keep-cell");
        } else {
            // always, also after failures
            st.run("cell down", "cargo xtask cell down", || cell::down(&o.cell));
        }
    }

    println!("\n==> summary ({} total)", secs(t0.elapsed()));
    for (name, outcome, d, note) in &st.done {
        let tag = match outcome {
            Outcome::Pass => "ok     ",
            Outcome::Fail => "FAILED ",
            Outcome::Skip => "skipped",
        };
        let note = if note.is_empty() || *outcome == Outcome::Pass {
            String::new()
        } else {
            format!("  ({})", note.lines().next().unwrap_or(""))
        };
        println!("  {tag} {name:<18} {:>8}{note}", secs(*d));
    }
    let count = |x: Outcome| st.done.iter().filter(|s| s.1 == x).count();
    let (p, f, s) = (
        count(Outcome::Pass),
        count(Outcome::Fail),
        count(Outcome::Skip),
    );
    if s > 0 {
        println!("  ({s} skipped)");
    }
    println!("{p} passed, {f} failed");
    Ok(f == 0)
}
