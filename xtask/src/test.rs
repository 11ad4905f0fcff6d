//! `cargo xtask test`: the one command CI runs.

use std::io::{Read, Write};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::cell::{self, CellOpts};
use crate::util::{self, secs, Res};

/// Fewest unit tests (`cargo test --workspace`, all crates but the
/// integration tests and xtask) a green run may have: a bit below today's
/// count, so that tests that silently stop running fail the step.
const MIN_UNIT_TESTS: u64 = 310;
/// Fewest real-cell integration tests (the `afsd-tests` crate) a green run
/// may have.
const MIN_INTEGRATION_TESTS: u64 = 65;

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
    /// Tests counted per test step, by step name.
    tests: Vec<(String, Counts)>,
}

/// Tests libtest reported, summed over the test binaries of one step.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
struct Counts {
    passed: u64,
    failed: u64,
}

/// `(passed, failed)` of a libtest summary line: "test result: ok. 12
/// passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in
/// 0.01s" (or "test result: FAILED. ...").
fn parse_result_line(line: &str) -> Option<(u64, u64)> {
    let rest = line.trim().strip_prefix("test result: ")?;
    let (_, rest) = rest.split_once(". ")?;
    let (mut passed, mut failed) = (None, None);
    for part in rest.split(';') {
        let mut w = part.split_whitespace();
        match (w.next(), w.next()) {
            (Some(n), Some("passed")) => passed = n.parse().ok(),
            (Some(n), Some("failed")) => failed = n.parse().ok(),
            _ => {}
        }
    }
    Some((passed?, failed?))
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

/// `cargo test ARGS`: its output passes through as it comes, and the
/// libtest summary lines are summed into `counts`. Fails when cargo fails or
/// fewer than `min` tests passed.
fn cargo_test_step(
    args: &[&str],
    envs: &[(&str, String)],
    min: u64,
    counts: &mut Counts,
) -> Res<()> {
    let mut c = util::cargo();
    c.args(args).stdout(Stdio::piped());
    for (k, v) in envs {
        c.env(k, v);
    }
    let mut child = c
        .spawn()
        .map_err(|e| format!("cannot run cargo {}: {e}", args.join(" ")))?;
    let mut out = child.stdout.take().ok_or("no stdout of cargo test")?;
    let (mut buf, mut line) = ([0u8; 8192], Vec::new());
    let mut stdout = std::io::stdout();
    loop {
        let n = match out.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("reading cargo test's output: {e}")),
        };
        // As it comes: libtest prints "test NAME ... " before the test runs.
        let _ = stdout.write_all(&buf[..n]);
        let _ = stdout.flush();
        for &b in &buf[..n] {
            if b == b'\n' {
                if let Some((p, f)) = parse_result_line(&String::from_utf8_lossy(&line)) {
                    counts.passed += p;
                    counts.failed += f;
                }
                line.clear();
            } else {
                line.push(b);
            }
        }
    }
    let st = child
        .wait()
        .map_err(|e| format!("waiting for cargo {}: {e}", args.join(" ")))?;
    let tally = format!("{} passed, {} failed", counts.passed, counts.failed);
    if !st.success() {
        return Err(format!(
            "cargo {} failed ({}); {tally}",
            args.join(" "),
            util::describe_status(&st)
        ));
    }
    if counts.passed < min {
        return Err(format!(
            "only {} tests passed, fewer than the {min} expected: tests went missing ({tally})",
            counts.passed
        ));
    }
    Ok(())
}

/// How many tests `cargo test ARGS -- --list` lists (builds them).
fn cargo_test_list(args: &[&str]) -> Res<u64> {
    let mut c = util::cargo();
    c.args(args).args(["--", "--list"]).stderr(Stdio::inherit());
    let out = c
        .output()
        .map_err(|e| format!("cannot run cargo {} -- --list: {e}", args.join(" ")))?;
    if !out.status.success() {
        return Err(format!(
            "cargo {} -- --list failed ({})",
            args.join(" "),
            util::describe_status(&out.status)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.ends_with(": test"))
        .count() as u64)
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
        total: if with_cell { 7 } else { 5 },
        done: Vec::new(),
        tests: Vec::new(),
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
    let mut unit = Counts::default();
    st.run(
        "unit tests",
        &format!(
            "cargo test --workspace --exclude afsd-tests --exclude xtask (at least {MIN_UNIT_TESTS})"
        ),
        || {
            cargo_test_step(
                &[
                    "test",
                    "--workspace",
                    "--exclude",
                    "afsd-tests",
                    "--exclude",
                    "xtask",
                ],
                &[],
                MIN_UNIT_TESTS,
                &mut unit,
            )
        },
    );
    st.tests.push(("unit tests".into(), unit));
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
                let mut integ = Counts::default();
                st.run(
                    "integration tests",
                    &format!(
                        "AFSD_TESTCELL_ENV={} AFSD_BIN={} cargo test -p afsd-tests -- --test-threads=1 (at least {MIN_INTEGRATION_TESTS})",
                        envs[0].1, envs[1].1
                    ),
                    || {
                        cargo_test_step(
                            &["test", "-p", "afsd-tests", "--", "--test-threads=1"],
                            &envs,
                            MIN_INTEGRATION_TESTS,
                            &mut integ,
                        )
                    },
                );
                st.tests.push(("integration tests".into(), integ));
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
    // Without the cell the integration tests are only listed: the summary
    // says how many did not run.
    let mut skipped_integration = None;
    if !with_cell {
        let mut n = 0;
        st.run(
            "list integration",
            "cargo test -p afsd-tests -- --list (not run: --no-cell)",
            || {
                n = cargo_test_list(&["test", "-p", "afsd-tests"])?;
                Ok(())
            },
        );
        skipped_integration = Some(n);
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
    println!("  steps: {p} passed, {f} failed, {s} skipped");
    for (name, c) in &st.tests {
        println!("  {name}: {} passed, {} failed", c.passed, c.failed);
    }
    if let Some(n) = skipped_integration {
        println!("  integration tests SKIPPED (--no-cell): {n} real-cell tests not run");
    }
    // The closing line: tests passed, and failures: failing tests plus one
    // for every step that failed otherwise (fmt, clippy, build, cell, a
    // test count below its minimum).
    let passed: u64 = st.tests.iter().map(|(_, c)| c.passed).sum();
    let mut failed: u64 = st.tests.iter().map(|(_, c)| c.failed).sum();
    for (name, outcome, _, _) in &st.done {
        let tests_failed = st
            .tests
            .iter()
            .find(|(n, _)| n == name)
            .map_or(0, |(_, c)| c.failed);
        if *outcome == Outcome::Fail && tests_failed == 0 {
            failed += 1;
        }
    }
    println!("{passed} passed, {failed} failed");
    Ok(f == 0)
}

#[cfg(test)]
mod tests {
    use super::parse_result_line;

    #[test]
    fn libtest_summary_lines() {
        assert_eq!(
            parse_result_line(
                "test result: ok. 12 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.01s"
            ),
            Some((12, 0))
        );
        assert_eq!(
            parse_result_line(
                "test result: FAILED. 3 passed; 2 failed; 1 ignored; 0 measured; 0 filtered out; finished in 9.00s"
            ),
            Some((3, 2))
        );
        assert_eq!(parse_result_line("test foo ... ok"), None);
        assert_eq!(parse_result_line("running 3 tests"), None);
    }
}
