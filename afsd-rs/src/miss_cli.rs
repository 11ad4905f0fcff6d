//! The miss policy's commands and settings: `afsd-rs waiting [--json]`,
//! `afsd-rs waiting --release [PID]`, `afsd-rs misses [--json]` (they ask
//! the daemon over the control socket; [`crate::miss_ctl`] is its side),
//! and the `miss-rule` / `miss-wait-timeout` lines of the config file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;
use client::miss::rules::{parse_rules, MAX_WAIT};
use client::{ClientConfig, MissInfo, WaitingInfo};

use crate::control::{self, Request, Response};
use crate::miss_ctl::MissRequest;

#[derive(Debug, Subcommand)]
pub enum MissCommand {
    /// The processes waiting for data of a disconnected volume (yours;
    /// root: everyone's), or `--release` to fail them now.
    Waiting {
        /// Print them as a JSON array.
        #[arg(long, conflicts_with = "release")]
        json: bool,
        /// Fail the wait of process PID now (without PID: all of yours;
        /// root: everyone's). Its read fails with ETIMEDOUT, as when the
        /// wait's bound passes.
        #[arg(long, value_name = "PID", num_args = 0..=1)]
        release: Option<Option<u32>>,
        #[arg(long, env = "AFSD_CONTROL", default_value = control::DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// What was read offline and not cached (yours; root: everyone's),
    /// with the directories to pin.
    Misses {
        /// Print them as a JSON array.
        #[arg(long)]
        json: bool,
        #[arg(long, env = "AFSD_CONTROL", default_value = control::DEFAULT_SOCKET)]
        socket: PathBuf,
    },
}

/// Runs one command.
pub fn run(cmd: MissCommand) -> ExitCode {
    let (name, outcome) = match cmd {
        MissCommand::Waiting {
            release: Some(pid),
            socket,
            ..
        } => ("waiting --release", release(&socket, pid)),
        MissCommand::Waiting { json, socket, .. } => ("waiting", waiting(&socket, json)),
        MissCommand::Misses { json, socket } => ("misses", misses(&socket, json)),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("afsd-rs {name}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn ask(socket: &Path, req: MissRequest) -> Result<Response, String> {
    match control::call(socket, &Request::Miss(req))? {
        Response::Error(e) => Err(e),
        r => Ok(r),
    }
}

fn print_json<T: serde::Serialize>(v: &T) -> Result<(), String> {
    let text = serde_json::to_string_pretty(v).map_err(|e| e.to_string())?;
    println!("{text}");
    Ok(())
}

fn waiting(socket: &Path, json: bool) -> Result<(), String> {
    match ask(socket, MissRequest::Waiting)? {
        Response::Waiting(w) if json => print_json(&w),
        Response::Waiting(w) => {
            print!("{}", waiting_table(&w, now()));
            Ok(())
        }
        r => Err(format!("unexpected answer {r:?}")),
    }
}

fn release(socket: &Path, pid: Option<u32>) -> Result<(), String> {
    match ask(socket, MissRequest::Release { pid })? {
        Response::Ok(msg) => {
            println!("{msg}");
            Ok(())
        }
        r => Err(format!("unexpected answer {r:?}")),
    }
}

fn misses(socket: &Path, json: bool) -> Result<(), String> {
    match ask(socket, MissRequest::Misses)? {
        Response::Misses(m) if json => print_json(&m),
        Response::Misses(m) => {
            print!("{}", misses_text(&m, now()));
            Ok(())
        }
        r => Err(format!("unexpected answer {r:?}")),
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn ago(t: u64, now: u64) -> String {
    match now.checked_sub(t) {
        Some(s) if s < 3600 => format!("{s} s ago"),
        _ => crate::format_time(t),
    }
}

/// Columns padded to their widest cell, two spaces apart.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut width: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            width[i] = width[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let last = cells.len() - 1;
        let mut s = String::new();
        for (i, c) in cells.into_iter().enumerate() {
            if i == last {
                s.push_str(&c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = width[i]));
            }
        }
        s.push('\n');
        s
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        out.push_str(&line(r.clone()));
    }
    out
}

fn waiting_table(w: &[WaitingInfo], now: u64) -> String {
    if w.is_empty() {
        return "no process is waiting\n".into();
    }
    let rows: Vec<Vec<String>> = w
        .iter()
        .map(|w| {
            vec![
                w.pid.to_string(),
                w.uid.to_string(),
                w.command.clone(),
                ago(w.since, now),
                format!("{} s", w.until.saturating_sub(now)),
                w.path.clone(),
            ]
        })
        .collect();
    table(&["PID", "UID", "COMMAND", "SINCE", "LEFT", "PATH"], &rows)
}

/// The directories that would have held the missed paths: the parent of
/// each, without those below another one listed.
pub fn pin_suggestions(m: &[MissInfo]) -> Vec<String> {
    let mut dirs: Vec<String> = m
        .iter()
        .map(|m| match m.path.rsplit_once('/') {
            Some((d, _)) if !d.is_empty() => d.to_string(),
            _ => m.path.clone(),
        })
        .collect();
    dirs.sort();
    dirs.dedup();
    let mut out: Vec<String> = Vec::new();
    for d in dirs {
        if !out
            .iter()
            .any(|o| d.starts_with(o.as_str()) && d.as_bytes().get(o.len()) == Some(&b'/'))
        {
            out.push(d);
        }
    }
    out
}

fn misses_text(m: &[MissInfo], now: u64) -> String {
    if m.is_empty() {
        return "no miss\n".into();
    }
    let rows: Vec<Vec<String>> = m
        .iter()
        .map(|m| {
            vec![
                ago(m.last, now),
                m.count.to_string(),
                m.uid.to_string(),
                m.command.clone(),
                m.path.clone(),
            ]
        })
        .collect();
    let mut out = table(&["LAST", "COUNT", "UID", "PROGRAM", "PATH"], &rows);
    out.push_str("\nTo have these offline next time, pin them:\n");
    for d in pin_suggestions(m) {
        out.push_str(&format!("  afsd-rs pin -r {d}\n"));
    }
    out
}

/// Sets the miss policy from the config file (`miss-rule` lines, in
/// order; `miss-wait-timeout = SECONDS`) and the mount point.
pub fn configure(
    file: &HashMap<String, String>,
    config_path: &Path,
    mountpoint: &Path,
    config: &mut ClientConfig,
) -> Result<(), String> {
    let at = |e: String| format!("{}: {e}", config_path.display());
    if let Some(lines) = file.get("miss-rule") {
        config.miss.rules = parse_rules(lines.lines()).map_err(|e| match e {
            client::Error::Config(m) => at(m),
            e => at(e.to_string()),
        })?;
    }
    if let Some(t) = file.get("miss-wait-timeout") {
        let secs: u64 = t.parse().map_err(|_| {
            at(format!(
                "miss-wait-timeout: {t:?} is not a number of seconds"
            ))
        })?;
        if secs == 0 || secs > MAX_WAIT.as_secs() {
            return Err(at(format!(
                "miss-wait-timeout: {secs} s is not between 1 and {} s",
                MAX_WAIT.as_secs()
            )));
        }
        config.miss.wait_timeout = Duration::from_secs(secs);
    }
    let abs = std::path::absolute(mountpoint).unwrap_or_else(|_| mountpoint.to_path_buf());
    config.miss.mount = abs.to_string_lossy().into_owned();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use client::miss::rules::Action;

    fn miss(path: &str) -> MissInfo {
        MissInfo {
            path: path.into(),
            uid: 1000,
            command: "cat".into(),
            first: 10,
            last: 20,
            count: 2,
        }
    }

    #[test]
    fn pins_suggested_are_the_top_directories() {
        let m = [
            miss("/afs/c/proj/src/a.c"),
            miss("/afs/c/proj/src/b.c"),
            miss("/afs/c/proj/src/lib/x.c"),
            miss("/afs/c/proj-old/y"),
            miss("/afs/c/doc/z"),
        ];
        assert_eq!(
            pin_suggestions(&m),
            vec!["/afs/c/doc", "/afs/c/proj-old", "/afs/c/proj/src"]
        );
        let text = misses_text(&m, 30);
        assert!(text.contains("afsd-rs pin -r /afs/c/proj/src\n"), "{text}");
        assert!(text.contains("10 s ago  2      1000  cat"), "{text}");
        assert_eq!(misses_text(&[], 0), "no miss\n");
    }

    #[test]
    fn waiting_lists_pid_uid_command_path() {
        let w = WaitingInfo {
            pid: 4242,
            tid: 4242,
            uid: 1000,
            command: "make".into(),
            path: "/afs/c/p".into(),
            since: 95,
            until: 215,
        };
        let text = waiting_table(&[w], 100);
        let line = text.lines().nth(1).unwrap();
        assert_eq!(
            line.split_whitespace().collect::<Vec<_>>(),
            ["4242", "1000", "make", "5", "s", "ago", "115", "s", "/afs/c/p"]
        );
        assert_eq!(waiting_table(&[], 0), "no process is waiting\n");
    }

    #[test]
    fn the_config_file_sets_rules_timeout_and_mount() {
        let mut c = ClientConfig::new("/etc/openafs".into(), "/var/cache/x".into());
        let mut file = HashMap::new();
        file.insert(
            "miss-rule".to_string(),
            "wait comm=make timeout=30\nerror uid=0".to_string(),
        );
        file.insert("miss-wait-timeout".to_string(), "300".to_string());
        configure(
            &file,
            Path::new("/etc/afsd-rs.conf"),
            Path::new("/afs"),
            &mut c,
        )
        .unwrap();
        assert_eq!(c.miss.rules.len(), 2);
        assert_eq!(c.miss.rules[0].action, Action::Wait(Some(30)));
        assert_eq!(c.miss.wait_timeout, Duration::from_secs(300));
        assert_eq!(c.miss.mount, "/afs");
        file.insert("miss-rule".to_string(), "sometimes".to_string());
        let e = configure(
            &file,
            Path::new("/etc/afsd-rs.conf"),
            Path::new("/afs"),
            &mut c,
        )
        .unwrap_err();
        assert!(e.starts_with("/etc/afsd-rs.conf: miss-rule"), "{e}");
        file.remove("miss-rule");
        file.insert("miss-wait-timeout".to_string(), "soon".to_string());
        assert!(configure(&file, Path::new("/c"), Path::new("/afs"), &mut c).is_err());
    }
}
