//! `afsd-rs agent`: the user's desktop notifications.
//!
//! The daemon runs as root and never talks to a user's session bus (which
//! normally admits only that user); this per-user process follows the
//! user's events over the control socket, whose peer credentials give it
//! only this user's events, and posts them with
//! `org.freedesktop.Notifications.Notify`. The actions come back as
//! `ActionInvoked` signals and are carried out here, as the user:
//! - "Show conflict": runs `show-command` (default: a terminal with
//!   `afsd-rs conflicts`), with `AFSD_CONFLICT_ID` set;
//! - "Keep both": asks the daemon to copy the conflict's local version
//!   beside the original;
//! - "Renew tickets": `kinit -R`, then `afsd-rs aklog`, quietly; when that
//!   fails, `reauth-command` (default: a terminal with
//!   `kinit && afsd-rs aklog`). Paused replay resumes by itself after aklog;
//! - "Fail waiting process": `afsd-rs waiting --release PID`.
//!
//! When the daemon goes away (restart, upgrade) the agent connects again
//! every few seconds; the events the new daemon has kept are then shown,
//! those it already showed are not.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use client::events::{Event, EventKind};
use futures_util::StreamExt;

use crate::agent_notice::{self, Notice};
use crate::control;

/// Notifications whose actions are remembered (the newest).
const MAX_POSTED: usize = 256;

/// How long to wait before connecting to the daemon again, at first and
/// at most.
const RECONNECT: Duration = Duration::from_secs(1);
const RECONNECT_MAX: Duration = Duration::from_secs(30);

#[derive(clap::Args)]
pub struct AgentArgs {
    #[arg(long, env = "AFSD_CONTROL", default_value = control::DEFAULT_SOCKET)]
    socket: PathBuf,
    /// `key = value` lines: reauth-command, show-command, conf-dir.
    /// Default: $XDG_CONFIG_HOME/afsd-rs/agent.conf (~/.config/...).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Shell command run when renewing quietly fails (default: a terminal
    /// with `kinit && afsd-rs aklog`).
    #[arg(long)]
    reauth_command: Option<String>,
    /// Shell command for "Show conflict" (default: a terminal with
    /// `afsd-rs conflicts`); AFSD_CONFLICT_ID names the conflict.
    #[arg(long)]
    show_command: Option<String>,
    /// Directory with ThisCell and CellServDB, for `afsd-rs aklog`.
    #[arg(long)]
    conf_dir: Option<PathBuf>,
}

/// The agent's settings, flags over the config file over defaults.
#[derive(Clone, Debug)]
struct Settings {
    socket: PathBuf,
    exe: PathBuf,
    reauth_command: String,
    show_command: String,
    conf_dir: PathBuf,
}

fn settings(args: AgentArgs) -> Result<Settings, String> {
    let path = args.config.clone().or_else(|| {
        let base = std::env::var_os("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
        Some(base.join("afsd-rs/agent.conf"))
    });
    let file = match &path {
        Some(p) => crate::read_config(p)?,
        None => Default::default(),
    };
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("afsd-rs"));
    let me = shell_quote(&exe.to_string_lossy());
    Ok(Settings {
        socket: args.socket,
        reauth_command: args
            .reauth_command
            .or_else(|| file.get("reauth-command").cloned())
            .unwrap_or_else(|| {
                format!(
                    "x-terminal-emulator -e sh -c 'kinit && {me} aklog; echo; \
                     echo Press Enter to close.; read x'"
                )
            }),
        show_command: args
            .show_command
            .or_else(|| file.get("show-command").cloned())
            .unwrap_or_else(|| {
                format!("x-terminal-emulator -e sh -c '{me} conflicts; echo; read x'")
            }),
        conf_dir: args
            .conf_dir
            .or_else(|| file.get("conf-dir").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("/etc/openafs")),
        exe,
    })
}

/// Quotes for a shell inside single quotes (the default commands).
fn shell_quote(s: &str) -> String {
    s.replace('\'', "'\\''")
}

#[zbus::proxy(
    interface = "org.freedesktop.Notifications",
    default_service = "org.freedesktop.Notifications",
    default_path = "/org/freedesktop/Notifications"
)]
trait Notifications {
    #[allow(clippy::too_many_arguments)]
    fn notify(
        &self,
        app_name: &str,
        replaces_id: u32,
        app_icon: &str,
        summary: &str,
        body: &str,
        actions: &[&str],
        hints: HashMap<&str, zbus::zvariant::Value<'_>>,
        expire_timeout: i32,
    ) -> zbus::Result<u32>;

    fn close_notification(&self, id: u32) -> zbus::Result<()>;

    #[zbus(signal)]
    fn action_invoked(&self, id: u32, action_key: String) -> zbus::Result<()>;

    #[zbus(signal)]
    fn notification_closed(&self, id: u32, reason: u32) -> zbus::Result<()>;
}

pub fn run(args: AgentArgs) -> ExitCode {
    let settings = match settings(args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("afsd-rs agent: {e}");
            return ExitCode::FAILURE;
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("afsd-rs agent: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(agent(settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("afsd-rs agent: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Most events shown at once when the agent connects again (a daemon
/// that kept many while the agent was away must not flood the desktop).
const CATCH_UP: usize = 16;

/// What the agent has shown, to tell news from old events when it
/// connects again.
#[derive(Default)]
struct Seen {
    /// The daemon run last connected to (None: never connected).
    daemon: Option<String>,
    /// The number of the newest event received from it.
    last: u64,
}

/// Follows the daemon's events on a thread of its own, connecting again
/// whenever the daemon goes away, and sends the ones to show.
fn follow_forever(socket: PathBuf, tx: tokio::sync::mpsc::UnboundedSender<Event>) {
    let mut seen = Seen::default();
    let mut wait = RECONNECT;
    let mut said = String::new();
    loop {
        let connected = std::cell::Cell::new(false);
        let seen_cell = std::cell::RefCell::new(&mut seen);
        let r = crate::events_ctl::follow(
            &socket,
            |daemon, recent| {
                connected.set(true);
                eprintln!("afsd-rs agent: connected to {}", socket.display());
                for ev in news(&mut seen_cell.borrow_mut(), daemon, recent) {
                    let _ = tx.send(ev);
                }
            },
            |ev| {
                seen_cell.borrow_mut().last = ev.seq;
                tx.send(ev.clone()).is_ok()
            },
        );
        if tx.is_closed() {
            return;
        }
        // A daemon that stays away is tried less and less often (up to
        // every 30 s), and the same failure is said once.
        wait = if connected.get() {
            said.clear();
            RECONNECT
        } else {
            (wait * 2).min(RECONNECT_MAX)
        };
        if let Err(e) = r {
            if e != said {
                eprintln!("afsd-rs agent: {e}; connecting again");
                said = e;
            }
        }
        std::thread::sleep(wait);
    }
}

/// What of the daemon's recent events is news: none on the first
/// connection (what happened before the agent started is not); from the
/// same daemon run, those after the last one received; from a new run
/// (the daemon restarted meanwhile), all it kept. At most [`CATCH_UP`].
fn news(seen: &mut Seen, daemon: &str, recent: Vec<Event>) -> Vec<Event> {
    let before = seen.daemon.replace(daemon.to_string());
    let after = match &before {
        None => u64::MAX,
        Some(d) if d == daemon => seen.last,
        Some(_) => 0,
    };
    if let Some(e) = recent.last() {
        seen.last = e.seq;
    } else if before.as_deref() != Some(daemon) {
        seen.last = 0;
    }
    let news: Vec<Event> = recent.into_iter().filter(|e| e.seq > after).collect();
    news[news.len().saturating_sub(CATCH_UP)..].to_vec()
}

/// One posted notification and what its actions need.
struct Posted {
    event: Event,
    group: Option<String>,
}

async fn agent(settings: Settings) -> Result<(), String> {
    let bus = zbus::Connection::session()
        .await
        .map_err(|e| format!("cannot reach the session bus: {e}"))?;
    let notifications = NotificationsProxy::new(&bus)
        .await
        .map_err(|e| format!("org.freedesktop.Notifications: {e}"))?;
    let mut invoked = notifications
        .receive_action_invoked()
        .await
        .map_err(|e| format!("ActionInvoked: {e}"))?;
    let mut closed = notifications
        .receive_notification_closed()
        .await
        .map_err(|e| format!("NotificationClosed: {e}"))?;
    let (tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let socket = settings.socket.clone();
    std::thread::spawn(move || follow_forever(socket, tx));
    eprintln!(
        "afsd-rs agent: following events of uid {} at {}",
        unsafe { libc::getuid() },
        settings.socket.display()
    );
    let mut posted: HashMap<u32, Posted> = HashMap::new();
    let mut groups: HashMap<String, u32> = HashMap::new();
    loop {
        tokio::select! {
            ev = events.recv() => {
                let Some(ev) = ev else { return Err("the event thread ended".into()) };
                let Some(n) = agent_notice::notice(&ev) else { continue };
                let replaces = n.group.as_ref().and_then(|g| groups.get(g)).copied().unwrap_or(0);
                match post(&notifications, &n, replaces).await {
                    Ok(id) => {
                        eprintln!("afsd-rs agent: posted {} ({}) as notification {id}", ev.kind.name(), n.summary);
                        if let Some(g) = &n.group {
                            groups.insert(g.clone(), id);
                        }
                        posted.insert(id, Posted { event: ev, group: n.group.clone() });
                        // A server that never says NotificationClosed must
                        // not grow this without end: the oldest go.
                        while posted.len() > MAX_POSTED {
                            let Some(&oldest) = posted.keys().min() else { break };
                            posted.remove(&oldest);
                        }
                    }
                    Err(e) => eprintln!("afsd-rs agent: Notify failed: {e}"),
                }
            }
            sig = invoked.next() => {
                let Some(sig) = sig else { return Err("the session bus went away".into()) };
                let Ok(a) = sig.args() else { continue };
                let (id, key) = (a.id, a.action_key.clone());
                let Some(p) = posted.get(&id) else { continue };
                eprintln!("afsd-rs agent: action {key} on notification {id} ({})", p.event.kind.name());
                let done = act(&settings, &key, &p.event).await;
                if done && key == agent_notice::RENEW {
                    // Renewed: the token story is over.
                    let _ = notifications.close_notification(id).await;
                }
            }
            sig = closed.next() => {
                let Some(sig) = sig else { return Err("the session bus went away".into()) };
                if let Ok(a) = sig.args() {
                    if let Some(p) = posted.remove(&a.id) {
                        if let Some(g) = p.group {
                            if groups.get(&g) == Some(&a.id) {
                                groups.remove(&g);
                            }
                        }
                    }
                }
            }
        }
    }
}

async fn post(n_proxy: &NotificationsProxy<'_>, n: &Notice, replaces: u32) -> zbus::Result<u32> {
    let mut actions: Vec<&str> = Vec::new();
    for (key, label) in &n.actions {
        actions.push(key);
        actions.push(label);
    }
    let mut hints = HashMap::new();
    hints.insert("urgency", zbus::zvariant::Value::U8(n.urgency));
    hints.insert(
        "desktop-entry",
        zbus::zvariant::Value::from("afsd-rs-agent"),
    );
    // Critical ones stay until dismissed (0); others as the server likes.
    let timeout = if n.urgency >= 2 { 0 } else { -1 };
    n_proxy
        .notify(
            "afsd-rs",
            replaces,
            "network-server",
            &n.summary,
            &n.body,
            &actions,
            hints,
            timeout,
        )
        .await
}

/// Carries out an action; true when it succeeded.
async fn act(s: &Settings, key: &str, ev: &Event) -> bool {
    let s = s.clone();
    let key = key.to_string();
    let ev = ev.clone();
    tokio::task::spawn_blocking(move || act_blocking(&s, &key, &ev))
        .await
        .unwrap_or(false)
}

fn act_blocking(s: &Settings, key: &str, ev: &Event) -> bool {
    match (key, &ev.kind) {
        (agent_notice::SHOW_CONFLICT, EventKind::Conflict { id, .. }) => spawn_shell(
            &s.show_command,
            &[("AFSD_CONFLICT_ID", id.to_string())],
            &s.socket,
        ),
        (agent_notice::KEEP_BOTH, EventKind::Conflict { id, .. }) => {
            crate::keep_both::ask(&s.socket, *id)
        }
        (agent_notice::RENEW, kind) => {
            let cell = match kind {
                EventKind::TokenExpiring { cell, .. }
                | EventKind::TokenExpired { cell, .. }
                | EventKind::ReplayPaused { cell, .. } => Some(cell.as_str()),
                _ => None,
            };
            renew(s, cell)
        }
        (agent_notice::RELEASE, EventKind::Waiting { pid, .. }) => {
            let ok = quiet(
                Command::new(&s.exe)
                    .args(["waiting", "--release", &pid.to_string()])
                    .env("AFSD_CONTROL", &s.socket),
            );
            eprintln!(
                "afsd-rs agent: waiting --release {pid}: {}",
                if ok { "done" } else { "failed" }
            );
            ok
        }
        (other, _) => {
            eprintln!(
                "afsd-rs agent: action {other} does not apply to {}",
                ev.kind.name()
            );
            false
        }
    }
}

/// `kinit -R` then `afsd-rs aklog`, quietly; when either fails, the
/// re-authentication command.
fn renew(s: &Settings, cell: Option<&str>) -> bool {
    let mut aklog = Command::new(&s.exe);
    aklog
        .arg("aklog")
        .arg("--conf-dir")
        .arg(&s.conf_dir)
        .env("AFSD_CONTROL", &s.socket);
    if let Some(c) = cell {
        aklog.args(["-c", c]);
    }
    if quiet(Command::new("kinit").arg("-R")) && quiet(&mut aklog) {
        eprintln!("afsd-rs agent: renewed: kinit -R and afsd-rs aklog");
        return true;
    }
    eprintln!(
        "afsd-rs agent: kinit -R or aklog failed; running: {}",
        s.reauth_command
    );
    let env: Vec<(&str, String)> = cell
        .map(|c| vec![("AFSD_CELL", c.to_string())])
        .unwrap_or_default();
    spawn_shell(&s.reauth_command, &env, &s.socket)
}

/// Runs a command to its end without a terminal; true on exit 0.
fn quiet(cmd: &mut Command) -> bool {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|st| st.success())
        .unwrap_or(false)
}

/// Starts `sh -c CMD` and leaves it running (a terminal the user closes);
/// true when it started.
fn spawn_shell(cmd: &str, env: &[(&str, String)], socket: &Path) -> bool {
    let mut c = Command::new("sh");
    c.args(["-c", cmd]).env("AFSD_CONTROL", socket);
    for (k, v) in env {
        c.env(k, v);
    }
    match c.stdin(Stdio::null()).spawn() {
        Ok(mut child) => {
            // Reap it when it ends, without waiting here.
            std::thread::spawn(move || {
                let _ = child.wait();
            });
            true
        }
        Err(e) => {
            eprintln!("afsd-rs agent: cannot run {cmd:?}: {e}");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(seq: u64) -> Event {
        Event {
            seq,
            time: 0,
            uid: Some(1),
            kind: EventKind::TokenExpired {
                cell: "c".into(),
                end: 0,
            },
        }
    }

    #[test]
    fn recent_events_are_news_only_after_a_reconnection() {
        let seqs = |v: Vec<Event>| v.into_iter().map(|e| e.seq).collect::<Vec<_>>();
        let mut seen = Seen::default();
        // First connection: old events are not shown.
        assert_eq!(
            seqs(news(&mut seen, "a", vec![ev(1), ev(2)])),
            Vec::<u64>::new()
        );
        // The same daemon again: only what came after the last one seen.
        assert_eq!(
            seqs(news(&mut seen, "a", vec![ev(1), ev(2), ev(3)])),
            vec![3]
        );
        // A new daemon run, numbering from 1 again: all it kept, even an
        // event equal to one already shown.
        assert_eq!(seqs(news(&mut seen, "b", vec![ev(1), ev(2)])), vec![1, 2]);
        // A run that kept many: the newest few.
        let many: Vec<Event> = (10..100).map(ev).collect();
        let shown = seqs(news(&mut seen, "c", many));
        assert_eq!(shown.len(), CATCH_UP);
        assert_eq!(shown.last(), Some(&99));
        // A new run that kept nothing yet: later ones count from 0.
        assert!(news(&mut seen, "d", vec![]).is_empty());
        assert_eq!(seqs(news(&mut seen, "d", vec![ev(1)])), vec![1]);
    }

    #[test]
    fn flags_beat_the_config_file() {
        let dir = std::env::temp_dir().join(format!("afsd-agent-conf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let conf = dir.join("agent.conf");
        std::fs::write(
            &conf,
            "reauth-command = from-file\nshow-command = show-file\n",
        )
        .unwrap();
        let s = settings(AgentArgs {
            socket: "/s".into(),
            config: Some(conf.clone()),
            reauth_command: Some("from-flag".into()),
            show_command: None,
            conf_dir: None,
        })
        .unwrap();
        assert_eq!(s.reauth_command, "from-flag");
        assert_eq!(s.show_command, "show-file");
        assert_eq!(s.conf_dir, PathBuf::from("/etc/openafs"));
        std::fs::write(&conf, "no equals sign\n").unwrap();
        let bad = settings(AgentArgs {
            socket: "/s".into(),
            config: Some(conf),
            reauth_command: None,
            show_command: None,
            conf_dir: None,
        });
        assert!(bad.is_err());
        let _ = std::fs::remove_dir_all(dir);
    }
}
