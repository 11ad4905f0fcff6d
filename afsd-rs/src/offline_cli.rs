//! The commands of disconnected operation: `offline`, `online`, `status`,
//! `sync`, `conflicts` and `conflict cat`. They ask the daemon over the
//! control socket (see [`crate::offline_ctl`] for its side); a PATH names
//! its volume through the `afs.cell` and `afs.fid` xattrs, as `flush` does.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;
#[cfg(test)]
use client::ConflictSide;
use client::{human_bytes, ConflictInfo, Targets, VolumeStatus};

use crate::control::{self, Request, Response};
use crate::offline_ctl::DisconnectedRequest;

#[derive(Debug, Subcommand)]
pub enum OfflineCommand {
    /// Put volumes offline (root only): nothing is sent to them and changes
    /// are logged until `afsd-rs online`. Default: every volume in use.
    Offline {
        /// Paths in the volumes to put offline.
        #[arg(conflicts_with = "cell")]
        paths: Vec<PathBuf>,
        /// Every volume in use of this cell.
        #[arg(long)]
        cell: Option<String>,
        #[arg(long, env = "AFSD_CONTROL", default_value = control::DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Bring volumes back online (root only) and replay their changes.
    /// Default: every volume.
    Online {
        /// Paths in the volumes to bring back.
        #[arg(conflicts_with = "cell")]
        paths: Vec<PathBuf>,
        /// Every volume of this cell.
        #[arg(long)]
        cell: Option<String>,
        /// Only list the changes that would be replayed.
        #[arg(long)]
        dry_run: bool,
        #[arg(long, env = "AFSD_CONTROL", default_value = control::DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Every volume in use: its mode, pending changes, conflicts, and the
    /// users replay waits for.
    Status {
        /// Print the volumes as a JSON array.
        #[arg(long)]
        json: bool,
        #[arg(long, env = "AFSD_CONTROL", default_value = control::DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Replay the changes made offline now (default: every volume's).
    Sync {
        /// Paths in the volumes to replay.
        paths: Vec<PathBuf>,
        #[arg(long, env = "AFSD_CONTROL", default_value = control::DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Resolve conflicts (IDs, paths, or with -r every one of yours under
    /// a directory).
    Resolve(crate::conflict_cli::ResolveArgs),
    /// Your conflicts (root: everyone's): offline changes the server's
    /// state did not allow, kept.
    Conflicts {
        /// Print the conflicts as a JSON array.
        #[arg(long)]
        json: bool,
        #[arg(long, env = "AFSD_CONTROL", default_value = control::DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// One conflict: `afsd-rs conflict cat --local ID`.
    Conflict {
        #[command(subcommand)]
        what: crate::conflict_cli::ConflictCommand,
        #[arg(long, env = "AFSD_CONTROL", default_value = control::DEFAULT_SOCKET, global = true)]
        socket: PathBuf,
    },
}

/// Runs one of the commands.
pub fn run(cmd: OfflineCommand) -> ExitCode {
    let (name, outcome) = match cmd {
        OfflineCommand::Offline {
            paths,
            cell,
            socket,
        } => ("offline", offline(&socket, &paths, cell)),
        OfflineCommand::Online {
            paths,
            cell,
            dry_run,
            socket,
        } => ("online", online(&socket, &paths, cell, dry_run)),
        OfflineCommand::Status { json, socket } => ("status", status(&socket, json)),
        OfflineCommand::Sync { paths, socket } => ("sync", sync(&socket, &paths)),
        OfflineCommand::Conflicts { json, socket } => ("conflicts", conflicts(&socket, json)),
        OfflineCommand::Resolve(args) => ("resolve", crate::conflict_cli::resolve(args)),
        OfflineCommand::Conflict { what, socket } => crate::conflict_cli::run(what, &socket),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("afsd-rs {name}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The volumes PATHs or a cell name; every volume when neither is given.
fn targets(paths: &[PathBuf], cell: Option<String>) -> Result<Targets, String> {
    if let Some(c) = cell {
        return Ok(Targets::Cell(c));
    }
    if paths.is_empty() {
        return Ok(Targets::All);
    }
    let mut vols = Vec::new();
    for p in paths {
        let (cell, fid) = crate::fid_of(p)?;
        if !vols.contains(&(cell.clone(), fid.0)) {
            vols.push((cell, fid.0));
        }
    }
    Ok(Targets::Volumes(vols))
}

pub(crate) fn ask(socket: &Path, req: DisconnectedRequest) -> Result<Response, String> {
    match control::call(socket, &Request::Disconnected(req))? {
        Response::Error(e) => Err(e),
        r => Ok(r),
    }
}

fn unexpected(r: Response) -> String {
    format!("unexpected answer from the daemon: {r:?}")
}

fn print_report(r: Response) -> Result<(), String> {
    match r {
        Response::Ok(report) => {
            print!("{report}");
            if !report.is_empty() && !report.ends_with('\n') {
                println!();
            }
            Ok(())
        }
        r => Err(unexpected(r)),
    }
}

fn offline(socket: &Path, paths: &[PathBuf], cell: Option<String>) -> Result<(), String> {
    let targets = targets(paths, cell)?;
    match ask(socket, DisconnectedRequest::Offline { targets })? {
        Response::Volumes(v) => {
            print!("{}", status_table(&v, now()));
            Ok(())
        }
        r => Err(unexpected(r)),
    }
}

fn online(
    socket: &Path,
    paths: &[PathBuf],
    cell: Option<String>,
    dry_run: bool,
) -> Result<(), String> {
    let targets = targets(paths, cell)?;
    match ask(socket, DisconnectedRequest::Online { targets, dry_run })? {
        Response::Ok(report) if report.is_empty() => {
            println!("no volume in use there");
            Ok(())
        }
        r => print_report(r),
    }
}

fn sync(socket: &Path, paths: &[PathBuf]) -> Result<(), String> {
    let targets = targets(paths, None)?;
    print_report(ask(socket, DisconnectedRequest::Sync { targets })?)
}

fn status(socket: &Path, json: bool) -> Result<(), String> {
    match ask(socket, DisconnectedRequest::Status)? {
        Response::Volumes(v) if json => print_json(&v),
        Response::Volumes(v) => {
            print!("{}", status_table(&v, now()));
            Ok(())
        }
        r => Err(unexpected(r)),
    }
}

fn conflicts(socket: &Path, json: bool) -> Result<(), String> {
    match ask(socket, DisconnectedRequest::Conflicts)? {
        Response::Conflicts(c) if json => print_json(&c),
        Response::Conflicts(c) => {
            print!("{}", conflict_lines(&c));
            Ok(())
        }
        r => Err(unexpected(r)),
    }
}

pub(crate) fn print_json<T: serde::Serialize>(v: &T) -> Result<(), String> {
    let text = serde_json::to_string_pretty(v).map_err(|e| e.to_string())?;
    println!("{text}");
    Ok(())
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `42 s ago` within the hour, else the local time; `-` when unknown.
fn since(t: u64, now: u64) -> String {
    match now.checked_sub(t) {
        _ if t == 0 => "-".into(),
        Some(ago) if ago < 3600 => format!("{ago} s ago"),
        _ => crate::format_time(t),
    }
}

/// The `status` table: a header, a line per volume, and under a volume a
/// line per user its replay waits for.
fn status_table(vols: &[VolumeStatus], now: u64) -> String {
    if vols.is_empty() {
        return "no volume in use\n".into();
    }
    let header = [
        "CELL",
        "VOLUME",
        "MODE",
        "SINCE",
        "PENDING",
        "BYTES",
        "CONFLICTS",
        "REASON",
    ]
    .map(String::from);
    let rows: Vec<[String; 8]> = vols
        .iter()
        .map(|v| {
            [
                v.cell.clone(),
                format!("{} ({})", v.name, v.volume),
                if v.manual {
                    format!("{} (by hand)", v.mode)
                } else {
                    v.mode.to_string()
                },
                since(v.since, now),
                v.pending_ops.to_string(),
                human_bytes(v.pending_bytes),
                v.conflicts.to_string(),
                v.reason.clone(),
            ]
        })
        .collect();
    let mut width = [0usize; 8];
    for r in std::iter::once(&header).chain(&rows) {
        for (w, cell) in width.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |r: &[String; 8]| {
        let mut s = String::new();
        for (i, (cell, w)) in r.iter().zip(width).enumerate() {
            if i == r.len() - 1 {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}  "));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(&header);
    for (v, r) in vols.iter().zip(&rows) {
        out.push_str(&line(r));
        for w in &v.waiting_for {
            let who = match &w.principal {
                Some(p) => format!("uid {} ({p})", w.uid),
                None => format!("uid {}", w.uid),
            };
            out.push_str(&format!("    waiting for {who}: {}\n", w.reason));
        }
    }
    out
}

/// One line per conflict: id, kind, uid, path, the three data versions,
/// the reason.
fn conflict_lines(list: &[ConflictInfo]) -> String {
    if list.is_empty() {
        return "no conflicts\n".into();
    }
    let dv = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
    list.iter()
        .map(|c| {
            format!(
                "{}  {}  uid {}  {} {}  base={} local={} server={}  {}\n",
                c.id,
                c.kind,
                c.uid,
                c.cell,
                c.path,
                dv(c.base_dv),
                dv(c.local_dv),
                dv(c.server_dv),
                c.reason
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Cli, Command};
    use clap::Parser;
    use client::{Mode, Waiting};

    fn parse(args: &[&str]) -> Result<OfflineCommand, String> {
        let cli = Cli::try_parse_from(std::iter::once("afsd-rs").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        match cli.command {
            Command::Offline(c) => Ok(c),
            _ => Err("another command".into()),
        }
    }

    #[test]
    fn commands_parse() {
        match parse(&["offline"]).unwrap() {
            OfflineCommand::Offline { paths, cell, .. } => {
                assert!(paths.is_empty() && cell.is_none())
            }
            other => panic!("{other:?}"),
        }
        match parse(&["offline", "--cell", "test.lab"]).unwrap() {
            OfflineCommand::Offline { cell, .. } => assert_eq!(cell.as_deref(), Some("test.lab")),
            other => panic!("{other:?}"),
        }
        assert!(parse(&["offline", "/afs/x", "--cell", "test.lab"]).is_err());
        match parse(&["online", "/afs/a", "/afs/b", "--dry-run"]).unwrap() {
            OfflineCommand::Online { paths, dry_run, .. } => {
                assert_eq!(paths.len(), 2);
                assert!(dry_run);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(&["status", "--json"]).unwrap(),
            OfflineCommand::Status { json: true, .. }
        ));
        assert!(matches!(
            parse(&["sync"]).unwrap(),
            OfflineCommand::Sync { paths, .. } if paths.is_empty()
        ));
        assert!(matches!(
            parse(&["conflicts"]).unwrap(),
            OfflineCommand::Conflicts { json: false, .. }
        ));
        match parse(&["conflict", "cat", "--base", "7"]).unwrap() {
            OfflineCommand::Conflict {
                what:
                    crate::conflict_cli::ConflictCommand::Cat {
                        local,
                        base,
                        server,
                        conflict,
                    },
                ..
            } => assert!(!local && base && !server && conflict == "7"),
            other => panic!("{other:?}"),
        }
        for bad in [
            &["conflict", "cat", "7"][..],
            &["conflict", "cat", "--local", "--base", "7"],
            &["conflict", "cat", "--local", "--server", "7"],
            &["conflict", "cat", "--local"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    /// The commands' own path to the daemon (the blocking `control::call`).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn answers_through_the_socket() {
        let (path, c, _cell) = crate::control::tests::daemon(crate::control::Limits::default());
        let root = c
            .lookup(0, client::ROOT_INO, b".mem.test")
            .await
            .unwrap()
            .ino;
        let fid = c.getxattr(0, root, "afs.fid").await.unwrap().unwrap();
        let vol = String::from_utf8(fid).unwrap();
        let vol = u32::from_str_radix(vol.split(':').next().unwrap(), 16).unwrap();
        c.go_offline(&Targets::Volumes(vec![("mem.test".into(), vol)]))
            .unwrap();
        let p = path.clone();
        let (vols, none, missing) = tokio::task::spawn_blocking(move || {
            (
                ask(&p, DisconnectedRequest::Status),
                ask(&p, DisconnectedRequest::Conflicts),
                ask(
                    &p,
                    DisconnectedRequest::ConflictData {
                        id: 5,
                        side: ConflictSide::Base,
                    },
                ),
            )
        })
        .await
        .unwrap();
        match vols {
            Ok(Response::Volumes(v)) => {
                assert_eq!(v, c.volume_status());
                let t = status_table(&v, now());
                assert!(t.contains("disconnected (by hand)"), "{t}");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(none, Ok(Response::Conflicts(v)) if v.is_empty()));
        let e = missing.unwrap_err();
        assert!(e.starts_with("conflict 5: "), "{e}");
    }

    #[test]
    fn targets_of_the_options() {
        assert_eq!(targets(&[], None).unwrap(), Targets::All);
        assert_eq!(
            targets(&[], Some("Test.Lab".into())).unwrap(),
            Targets::Cell("Test.Lab".into())
        );
        // Not in /afs: a clear message, nothing sent.
        let e = targets(&[PathBuf::from("/")], None).unwrap_err();
        assert!(e.contains("not in /afs"), "{e}");
    }

    #[test]
    fn sizes_and_times_for_people() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 20), "3.0 MiB");
        assert_eq!(since(0, 100), "-");
        assert_eq!(since(958, 1000), "42 s ago");
        assert!(!since(1_000, 1_000_000).contains("ago"));
    }

    #[test]
    fn the_status_table() {
        let vols = [
            VolumeStatus {
                cell: "test.lab".into(),
                volume: 536870912,
                name: "root.cell".into(),
                mode: Mode::Connected,
                manual: false,
                since: 990,
                pending_ops: 0,
                pending_bytes: 0,
                conflicts: 0,
                waiting_for: vec![],
                reason: String::new(),
            },
            VolumeStatus {
                cell: "test.lab".into(),
                volume: 536870915,
                name: "home.alice".into(),
                mode: Mode::Paused,
                manual: false,
                since: 960,
                pending_ops: 3,
                pending_bytes: 2048,
                conflicts: 1,
                waiting_for: vec![Waiting {
                    uid: 1000,
                    principal: Some("alice@TEST.LAB".into()),
                    reason: "the token has expired".into(),
                }],
                reason: "waiting for uid 1000".into(),
            },
        ];
        let t = status_table(&vols, 1000);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 4, "{t}");
        assert!(lines[0].starts_with("CELL"), "{t}");
        for (line, want) in [
            (
                lines[1],
                &["root.cell (536870912)", "connected", "10 s ago", "0 B"][..],
            ),
            (
                lines[2],
                &[
                    "home.alice (536870915)",
                    "paused",
                    "40 s ago",
                    "2.0 KiB",
                    "waiting",
                ],
            ),
            (
                lines[3],
                &["waiting for uid 1000 (alice@TEST.LAB): the token"],
            ),
        ] {
            for w in want {
                assert!(line.contains(w), "{w:?} not in {line:?}");
            }
        }
        // The columns line up.
        let col = |l: &str| l.find("connected").or_else(|| l.find("paused"));
        assert_eq!(col(lines[1]), col(lines[2]));
        let mut by_hand = vols[0].clone();
        by_hand.mode = Mode::Disconnected;
        by_hand.manual = true;
        assert!(status_table(&[by_hand], 1000).contains("disconnected (by hand)"));
        assert_eq!(status_table(&[], 0), "no volume in use\n");
    }

    #[test]
    fn the_conflict_lines() {
        let c = ConflictInfo {
            id: 4,
            kind: "update/update".into(),
            cell: "test.lab".into(),
            volume: 536870915,
            path: "home.alice:/notes.txt".into(),
            fid: (536870915, 12, 34),
            uid: 1000,
            change: "store".into(),
            base_dv: Some(5),
            local_dv: None,
            server_dv: Some(7),
            local_bytes: Some(10),
            detected: 1000,
            reason: "the file changed on the server".into(),
            changes: 1,
        };
        assert_eq!(
            conflict_lines(&[c]),
            "4  update/update  uid 1000  test.lab home.alice:/notes.txt  \
             base=5 local=- server=7  the file changed on the server\n"
        );
        assert_eq!(conflict_lines(&[]), "no conflicts\n");
    }
}
