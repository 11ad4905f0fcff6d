//! `afsd-rs events [--follow] [--json]` and `afsd-rs agent`: what the
//! daemon tells the calling user, on the terminal or on the desktop.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use client::events::{Event, EventKind};

use crate::control;

#[derive(Subcommand)]
pub enum EventsCommand {
    /// Your recent events (volumes offline/online, conflicts, replay paused,
    /// tokens expiring, pins, waiting processes); --follow prints new ones
    /// as they happen.
    Events {
        /// Keep printing new events until interrupted.
        #[arg(long, short = 'f')]
        follow: bool,
        /// One JSON object per line, as the daemon sends them.
        #[arg(long)]
        json: bool,
        #[arg(long, env = "AFSD_CONTROL", default_value = control::DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Desktop notifications of your events (per-user; started by the
    /// systemd user unit or XDG autostart): conflicts, tokens expiring,
    /// replay paused, waiting processes, with actions.
    Agent(crate::agent::AgentArgs),
    /// Keep both versions of one of your conflicts: yours is copied beside
    /// the server's as `STEM (conflict ID local).EXT`, and the conflict is
    /// resolved (the agent's "Keep both").
    KeepBoth {
        /// The conflict's id (`afsd-rs conflicts`).
        id: u64,
        #[arg(long, env = "AFSD_CONTROL", default_value = control::DEFAULT_SOCKET)]
        socket: PathBuf,
    },
}

pub fn run(cmd: EventsCommand) -> ExitCode {
    match cmd {
        EventsCommand::Events {
            follow,
            json,
            socket,
        } => events(&socket, follow, json),
        EventsCommand::Agent(args) => crate::agent::run(args),
        EventsCommand::KeepBoth { id, socket } => {
            crate::control_ok(&socket, &control::Request::KeepBoth { id }, "keep-both")
        }
    }
}

fn print(ev: &Event, json: bool) {
    if json {
        println!("{}", serde_json::to_string(ev).unwrap_or_default());
    } else {
        println!("{}", line(ev));
    }
    use std::io::Write;
    let _ = std::io::stdout().flush();
}

fn events(socket: &std::path::Path, follow: bool, json: bool) -> ExitCode {
    if !follow {
        let req = control::Request::Events(crate::events_ctl::EventsRequest { follow: false });
        return match control::call(socket, &req) {
            Ok(control::Response::Events(evs)) => {
                for ev in &evs {
                    print(ev, json);
                }
                ExitCode::SUCCESS
            }
            Ok(control::Response::Error(e)) => {
                eprintln!("events: {e}");
                ExitCode::FAILURE
            }
            Ok(other) => {
                eprintln!("events: unexpected answer {other:?}");
                ExitCode::FAILURE
            }
            Err(e) => {
                eprintln!("events: {e}");
                ExitCode::FAILURE
            }
        };
    }
    match crate::events_ctl::follow(
        socket,
        |_, recent| {
            for ev in &recent {
                print(ev, json);
            }
        },
        |ev| {
            print(ev, json);
            true
        },
    ) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("events: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `2026-12-02 03:47:09  conflict  id=3 kind=update/update path=...`:
/// local time, the event's name, its fields (and the uid when it is not
/// the caller's own: root sees everyone's).
pub fn line(ev: &Event) -> String {
    let mut s = format!("{}  {}", local_time(ev.time), ev.kind.name());
    if let Some(uid) = ev.uid {
        s.push_str(&format!("  uid={uid}"));
    }
    s.push_str("  ");
    s.push_str(&fields(&ev.kind));
    s
}

/// The event's fields as `key=value` words, by name.
pub fn fields(kind: &EventKind) -> String {
    let v = serde_json::to_value(kind).unwrap_or_default();
    let mut out = Vec::new();
    if let Some(map) = v.as_object() {
        for (k, v) in map {
            if k == "event" {
                continue;
            }
            let val = match v {
                serde_json::Value::String(s) if s.contains(' ') || s.is_empty() => {
                    format!("{s:?}")
                }
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            out.push(format!("{k}={val}"));
        }
    }
    out.join(" ")
}

/// What an expired token means, under its line in `afsd-rs tokens`: the
/// token is never sent again, yet the rights learned for its AFS id still
/// decide what the user may do with what they cached, offline.
pub fn expired_note(when: &str, vice_id: i32) -> String {
    format!(
        "expired at {when}: anonymous to servers; cached rights of AFS ID {vice_id} kept for \
         offline use; run kinit && afsd-rs aklog"
    )
}

/// `YYYY-MM-DD HH:MM:SS`, local time.
pub fn local_time(secs: u64) -> String {
    let t = secs as libc::time_t;
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: localtime_r fills the struct we own.
    unsafe { libc::localtime_r(&t, &mut tm) };
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_names_the_event_and_its_fields() {
        let ev = Event {
            seq: 4,
            time: 1_700_000_000,
            uid: Some(1000),
            kind: EventKind::Conflict {
                id: 3,
                kind: "update/update".into(),
                path: "/afs/test.lab/a b".into(),
                reason: "changed on the server".into(),
            },
        };
        let l = line(&ev);
        assert!(l.contains("  conflict  uid=1000  "), "{l}");
        assert!(l.contains("id=3"), "{l}");
        assert!(l.contains("kind=update/update"), "{l}");
        assert!(l.contains("path=\"/afs/test.lab/a b\""), "{l}");
        assert!(l.starts_with("20") && l.as_bytes()[4] == b'-', "{l}");
    }
}
