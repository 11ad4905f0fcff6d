//! afsd-rs project tooling: `cargo xtask <command>` (std only).
//! See `cargo xtask help`.

mod afsd;
mod bench;
mod bench_list;
mod bench_ops;
mod bench_peer;
mod bench_summary;
mod cell;
mod test;
mod util;

use std::path::PathBuf;
use std::process::ExitCode;

use cell::CellOpts;

const USAGE: &str = "\
usage: cargo xtask <command> [options]

  cell up        bring the OpenAFS test cell up (installs packages if missing,
                 builds afscptool); idempotent; tears down stale state first
  cell down      stop it, delete its netns, CELLDIR and env file; idempotent
  cell status    is it up? quick real checks; exit 1 if down or broken
  cell check     thorough check (the kit's cell-check.sh: writes in shared/,
                 cuts the link for 12 s)
  cell exec [--server] -- CMD [ARGS...]
                 run CMD in the client netns (--server: server netns) via
                 labexec, with the env file's variables exported,
                 KRB5CCNAME=admin's ccache, cwd kept, e.g.
                   cargo xtask cell exec -- vos listvldb -noauth
                   cargo xtask cell exec -- sh -c '$THIRD_PARTY ls /afs/.$CELL/vol'
  test [--no-cell] [--keep-cell]
                 CI: fmt, clippy, unit tests, build, cell up, integration
                 tests, cell down (always); exit 1 on any failure
  demo [--dead-time SECS] [--mountpoint DIR]
                 mount /afs (or DIR) with target/debug/afsd-rs and show a
                 tour (reads, writes, then offline: a network cut, changes
                 logged, `afsd-rs status`, the link back, replay, the
                 changes on the server; --dead-time default 10, passed to
                 the daemon); leaves it mounted and the cell up
  bench [--size-mib N] [--runs N] [--mountpoint DIR] [--keep-cell]
                 afsd-rs against peers in the same run, ending with ONE
                 table (case, afsd-rs s, peer, peer s, ratio, target, met):
                 reads cold/warm/after drop_caches vs afsio, a local file
                 and afsd.fuse (OpenAFS's FUSE client, started by the
                 bench); cold reads as user1 at rxkad clear/auth/crypt; a
                 write (dd vs afscptool put); ls -l of 10,000 entries and
                 find -ls of a 10,000-file tree, cold and warm, vs bindfs
                 of a local copy and afsd.fuse; 10,000 small operations
                 offline then replay vs online (AFSD_BENCH_OFFLINE_OPS=N)
                 (release build; default 256 MiB, best of 3, /afs);
                 only reports, never fails on a figure; also written to
                 target/bench/read.md
  help           this text

demo and bench use $AFSD_BIN instead of building afsd-rs if it is set.

options of cell/test/demo/bench:
  --env-file PATH   env file (default target/testcell/env; also AFSD_TESTCELL_ENV)
  --name NAME       cell instance name (default afsd; also AFSD_TESTCELL_NAME)

The env file (shell-sourceable `export KEY=VALUE` lines, absolute paths):
  CELL REALM SERVER_NETNS CLIENT_NETNS SERVER_IF CLIENT_IF SERVER_IP CLIENT_IP
  KRB5_CONFIG AFS_CONF_DIR THIRD_PARTY AFSIO_PRELOAD CELLDIR LABEXEC
  ADMIN ADMIN_PW USER1 USER1_PW ADMIN_CCACHE USER1_CCACHE
";

fn help() {
    print!("{USAGE}");
    println!("\nenvironment overrides (for `cell up`; two cells at once need another NAME):");
    for (k, v) in cell::OVERRIDES {
        println!("  {k:<28} {v}");
    }
}

struct Args {
    items: Vec<String>,
    pos: usize,
}

impl Args {
    fn next(&mut self) -> Option<String> {
        let a = self.items.get(self.pos).cloned();
        self.pos += 1;
        a
    }
    fn value(&mut self, opt: &str) -> Result<String, String> {
        self.next()
            .ok_or_else(|| format!("option {opt} needs a value"))
    }
}

#[derive(Default)]
struct Parsed {
    cell: CellOpts,
    flags: Vec<String>,
    values: Vec<(String, String)>,
    rest: Vec<String>,
}

/// Parse options: `bool_flags` take no value, `value_opts` take one;
/// --env-file/--name always accepted.  With `trailing`, everything after
/// `--` (or from the first non-option word) is returned in `rest`.
fn parse(
    a: &mut Args,
    bool_flags: &[&str],
    value_opts: &[&str],
    trailing: bool,
) -> Result<Parsed, String> {
    let mut p = Parsed::default();
    while let Some(x) = a.next() {
        if x == "--" && trailing {
            p.rest = a.items[a.pos..].to_vec();
            break;
        }
        let (name, inline) = match x.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => (x.clone(), None),
        };
        match name.as_str() {
            "--env-file" => {
                let v = inline.map_or_else(|| a.value(&name), Ok)?;
                p.cell.env_file = Some(PathBuf::from(v));
            }
            "--name" => p.cell.name = Some(inline.map_or_else(|| a.value(&name), Ok)?),
            n if bool_flags.contains(&n) && inline.is_none() => p.flags.push(name),
            n if value_opts.contains(&n) => {
                let v = inline.map_or_else(|| a.value(&name), Ok)?;
                p.values.push((name, v));
            }
            _ if trailing && !x.starts_with('-') => {
                p.rest = a.items[a.pos - 1..].to_vec();
                break;
            }
            _ => {
                return Err(format!(
                    "unknown option or argument: {x} (see `cargo xtask help`)"
                ))
            }
        }
    }
    Ok(p)
}

impl Parsed {
    fn flag(&self, f: &str) -> bool {
        self.flags.iter().any(|x| x == f)
    }
    fn num<T: std::str::FromStr>(&self, opt: &str, default: T) -> Result<T, String> {
        match self.values.iter().rev().find(|(k, _)| k == opt) {
            None => Ok(default),
            Some((_, v)) => v
                .parse()
                .map_err(|_| format!("{opt}: not a valid number: {v:?}")),
        }
    }
    fn string(&self, opt: &str) -> Option<String> {
        self.values
            .iter()
            .rev()
            .find(|(k, _)| k == opt)
            .map(|(_, v)| v.clone())
    }
}

fn real_main() -> Result<ExitCode, String> {
    let mut a = Args {
        items: std::env::args().skip(1).collect(),
        pos: 0,
    };
    let ok = |b: bool| {
        if b {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    };
    match a.next().as_deref() {
        None | Some("help" | "-h" | "--help") => {
            help();
            Ok(ExitCode::SUCCESS)
        }
        Some("cell") => match a.next().as_deref() {
            Some("up") => {
                let p = parse(&mut a, &[], &[], false)?;
                cell::up(&p.cell).map(|_| ExitCode::SUCCESS)
            }
            Some("down") => {
                let p = parse(&mut a, &[], &[], false)?;
                cell::down(&p.cell).map(|_| ExitCode::SUCCESS)
            }
            Some("status") => {
                let p = parse(&mut a, &[], &[], false)?;
                cell::status(&p.cell).map(ok)
            }
            Some("check") => {
                let p = parse(&mut a, &[], &[], false)?;
                cell::check(&p.cell).map(|_| ExitCode::SUCCESS)
            }
            Some("exec") => {
                let p = parse(&mut a, &["--server"], &[], true)?;
                let code = cell::exec(&p.cell, p.flag("--server"), &p.rest)?;
                Ok(ExitCode::from(code.clamp(0, 255) as u8))
            }
            Some(x) => Err(format!(
                "unknown cell command {x:?}: up, down, status, check, exec (see `cargo xtask help`)"
            )),
            None => {
                Err("cell: which? up, down, status, check, exec (see `cargo xtask help`)".into())
            }
        },
        Some("test") => {
            let p = parse(&mut a, &["--no-cell", "--keep-cell"], &[], false)?;
            test::test(&test::TestOpts {
                no_cell: p.flag("--no-cell"),
                keep_cell: p.flag("--keep-cell"),
                cell: p.cell,
            })
            .map(ok)
        }
        Some("demo") => {
            let p = parse(&mut a, &[], &["--dead-time", "--mountpoint"], false)?;
            afsd::demo(&afsd::DemoOpts {
                dead_time: p.num("--dead-time", 10)?,
                mountpoint: util::absolute(&PathBuf::from(
                    p.string("--mountpoint").unwrap_or_else(|| "/afs".into()),
                )),
                cell: p.cell,
            })
            .map(|_| ExitCode::SUCCESS)
        }
        Some("bench") => {
            let p = parse(
                &mut a,
                &["--keep-cell"],
                &["--size-mib", "--runs", "--mountpoint"],
                false,
            )?;
            bench::bench(&bench::BenchOpts {
                size_mib: p.num("--size-mib", 256)?,
                runs: p.num("--runs", 3)?,
                mountpoint: util::absolute(&PathBuf::from(
                    p.string("--mountpoint").unwrap_or_else(|| "/afs".into()),
                )),
                keep_cell: p.flag("--keep-cell"),
                cell: p.cell,
            })
            .map(|_| ExitCode::SUCCESS)
        }
        Some(x) => Err(format!("unknown command {x:?} (see `cargo xtask help`)")),
    }
}

fn main() -> ExitCode {
    match real_main() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("xtask: error: {e}");
            ExitCode::FAILURE
        }
    }
}
