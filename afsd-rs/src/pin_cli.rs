//! `afsd-rs pin`, `unpin` and `pins`: the working set kept for offline use.
//! They ask the daemon over the control socket (see [`crate::pin_ctl`]); a
//! PATH names its object through the `afs.cell` and `afs.fid` xattrs.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Subcommand;
use client::{human_bytes as human, PinInfo, PinProgress, PinRequest};

use crate::control::{self, Request};
use crate::pin_ctl::{PinCtl, PinLine};

#[derive(Debug, Subcommand)]
pub enum PinCommand {
    /// Keep files and trees in the cache for offline use: their data,
    /// directories, symlink targets and mount points are fetched, held and
    /// never evicted, and fetched again when they change on the server.
    Pin {
        /// A directory: its whole tree.
        #[arg(short = 'r', long)]
        recursive: bool,
        /// Also pin what appears in the tree later.
        #[arg(long)]
        future: bool,
        /// List what offline work under PATH would miss (pins nothing).
        #[arg(long, conflicts_with_all = ["recursive", "future"])]
        check: bool,
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        #[arg(long, env = "AFSD_CONTROL", default_value = control::DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Remove your pins of these paths (-r: and of paths under them).
    Unpin {
        #[arg(short = 'r', long)]
        recursive: bool,
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        #[arg(long, env = "AFSD_CONTROL", default_value = control::DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Your pins (root: everyone's): owner, files, bytes cached and missing.
    Pins {
        /// Print the pins as a JSON array.
        #[arg(long)]
        json: bool,
        #[arg(long, env = "AFSD_CONTROL", default_value = control::DEFAULT_SOCKET)]
        socket: PathBuf,
    },
}

/// Runs one of the commands.
pub fn run(cmd: PinCommand) -> ExitCode {
    let (name, outcome) = match cmd {
        PinCommand::Pin {
            check: true,
            paths,
            socket,
            ..
        } => ("pin --check", each(&paths, |p| check(&socket, p))),
        PinCommand::Pin {
            recursive,
            future,
            paths,
            socket,
            ..
        } => ("pin", each(&paths, |p| pin(&socket, p, recursive, future))),
        PinCommand::Unpin {
            recursive,
            paths,
            socket,
        } => ("unpin", each(&paths, |p| unpin(&socket, p, recursive))),
        PinCommand::Pins { json, socket } => ("pins", pins(&socket, json)),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("afsd-rs {name}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `f` on every path; the first failure is reported after the rest.
fn each(paths: &[PathBuf], mut f: impl FnMut(&Path) -> Result<(), String>) -> Result<(), String> {
    let mut first = Ok(());
    for p in paths {
        if let Err(e) = f(p) {
            if first.is_ok() {
                first = Err(e);
            } else {
                eprintln!("{e}");
            }
        }
    }
    first
}

/// The absolute path as the user means it (symlinks in /afs resolved).
fn absolute(p: &Path) -> String {
    std::fs::canonicalize(p)
        .or_else(|_| std::path::absolute(p))
        .unwrap_or_else(|_| p.to_path_buf())
        .display()
        .to_string()
}

/// Sends a pin request and reads its answer, giving progress lines to
/// `progress`.
fn ask(
    socket: &Path,
    req: PinCtl,
    mut progress: impl FnMut(PinProgress),
) -> Result<PinLine, String> {
    let mut s = std::os::unix::net::UnixStream::connect(socket).map_err(|e| {
        format!(
            "cannot reach the afsd-rs daemon at {}: {e} (is /afs mounted? set --socket or AFSD_CONTROL)",
            socket.display()
        )
    })?;
    let mut line = serde_json::to_string(&Request::Pins(req)).map_err(|e| e.to_string())?;
    line.push('\n');
    s.write_all(line.as_bytes()).map_err(|e| e.to_string())?;
    let mut rd = BufReader::new(s);
    loop {
        let mut l = String::new();
        if rd.read_line(&mut l).map_err(|e| e.to_string())? == 0 {
            return Err("the daemon closed the connection".into());
        }
        match serde_json::from_str::<PinLine>(&l) {
            Ok(PinLine::Progress(p)) => progress(p),
            Ok(other) => return Ok(other),
            // A refusal before the request was read (busy, bad request).
            Err(_) => match serde_json::from_str::<control::Response>(&l) {
                Ok(control::Response::Error(e)) => return Err(e),
                _ => return Err(format!("bad answer from the daemon: {}", l.trim())),
            },
        }
    }
}

fn failed(path: &str, errno: i32, message: &str) -> String {
    let name = match errno {
        libc::ENOSPC => " (ENOSPC)",
        libc::EACCES => " (EACCES)",
        libc::ENETDOWN => " (ENETDOWN)",
        _ => "",
    };
    format!("{path}{name}: {message}")
}

fn pin(socket: &Path, p: &Path, recursive: bool, future: bool) -> Result<(), String> {
    let path = absolute(p);
    let (cell, fid) = crate::fid_of(p)?;
    let started = Instant::now();
    let mut bar: Option<indicatif::ProgressBar> = None;
    let answer = ask(
        socket,
        PinCtl::Pin(PinRequest {
            cell,
            fid,
            path: path.clone(),
            recursive,
            future,
        }),
        |pr| {
            // Shown only for a pin that takes longer than a moment.
            if bar.is_none() && started.elapsed() > Duration::from_millis(700) {
                let b = indicatif::ProgressBar::with_draw_target(
                    Some(pr.bytes),
                    indicatif::ProgressDrawTarget::stderr(),
                );
                b.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                );
                bar = Some(b);
            }
            if let Some(b) = &bar {
                b.set_position(pr.bytes_done);
                b.set_message(format!("{}/{} files", pr.files_done, pr.files));
            }
        },
    );
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    match answer? {
        PinLine::Pinned(info) => {
            println!(
                "pinned {}: {} files, {} directories, {} ({} bytes), {} cached",
                info.path,
                info.files,
                info.dirs,
                human(info.bytes),
                info.bytes,
                if info.missing == 0 {
                    "all".to_string()
                } else {
                    format!("{} missing", human(info.missing))
                }
            );
            for r in &info.refused {
                println!("  not readable by you, not held: {r}");
            }
            Ok(())
        }
        PinLine::Error { errno, message } => Err(failed(&path, errno, &message)),
        other => Err(format!("unexpected answer: {other:?}")),
    }
}

fn unpin(socket: &Path, p: &Path, recursive: bool) -> Result<(), String> {
    let path = absolute(p);
    // A path gone from the server is still unpinned by its name.
    let (cell, fid) = match crate::fid_of(p) {
        Ok((c, f)) => (c, Some(f)),
        Err(_) => (String::new(), None),
    };
    match ask(
        socket,
        PinCtl::Unpin {
            cell,
            fid,
            path: path.clone(),
            recursive,
        },
        |_| {},
    )? {
        PinLine::Unpinned(v) => {
            for i in v {
                println!(
                    "unpinned {} ({} files, {})",
                    i.path,
                    i.files,
                    human(i.bytes)
                );
            }
            Ok(())
        }
        PinLine::Error { errno, message } => Err(failed(&path, errno, &message)),
        other => Err(format!("unexpected answer: {other:?}")),
    }
}

fn check(socket: &Path, p: &Path) -> Result<(), String> {
    let path = absolute(p);
    let (cell, fid) = crate::fid_of(p)?;
    match ask(
        socket,
        PinCtl::Check {
            cell,
            fid,
            path: path.clone(),
        },
        |_| {},
    )? {
        PinLine::Check(v) if v.is_empty() => {
            println!("{path}: offline work would miss nothing");
            Ok(())
        }
        PinLine::Check(v) => {
            println!("{path}: offline work would miss {} objects:", v.len());
            for c in v {
                println!("  {}: {}", c.path, c.why);
            }
            Ok(())
        }
        PinLine::Error { errno, message } => Err(failed(&path, errno, &message)),
        other => Err(format!("unexpected answer: {other:?}")),
    }
}

fn pins(socket: &Path, json: bool) -> Result<(), String> {
    let v: Vec<PinInfo> = match ask(socket, PinCtl::Pins, |_| {})? {
        PinLine::Pins(v) => v,
        PinLine::Error { message, .. } => return Err(message),
        other => return Err(format!("unexpected answer: {other:?}")),
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&v).map_err(|e| e.to_string())?
        );
        return Ok(());
    }
    if v.is_empty() {
        println!("no pins");
        return Ok(());
    }
    println!(
        "{:>4} {:>6} {:>7} {:>10} {:>10} {:>10}  PATH",
        "ID", "OWNER", "FILES", "BYTES", "CACHED", "MISSING"
    );
    for p in v {
        let flags = match (p.recursive, p.future) {
            (true, true) => " (-r --future)",
            (true, false) => " (-r)",
            (false, true) => " (--future)",
            (false, false) => "",
        };
        println!(
            "{:>4} {:>6} {:>7} {:>10} {:>10} {:>10}  {}{}",
            p.id, p.uid, p.files, p.bytes, p.cached, p.missing, p.path, flags
        );
    }
    Ok(())
}
