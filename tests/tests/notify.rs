//! Events and desktop notifications against the real cell, a real session
//! bus and a real KDC.
//!
//! Each test starts a private `dbus-daemon --session` as alice (its socket
//! in a temporary directory), serves a test notification server
//! (`org.freedesktop.Notifications`, written here with zbus: it records
//! every Notify call and emits ActionInvoked when the test clicks) on that
//! bus, and runs `afsd-rs agent` as alice in the client namespace with
//! DBUS_SESSION_BUS_ADDRESS pointing at the bus. Tokens come from the test
//! KDC with short lifetimes, so tokens really expire.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use afsd_tests::{afsd_bin, read_as, run_as, scratch, wait_until, Cell, Mount, ALICE_UID, BOB_UID};

/// Mount options: a dead time long enough for a fileserver meeting a new
/// client (see offline.rs).
const DEAD: &[&str] = &["--dead-time", "20"];

const PATH: &str = "/org/freedesktop/Notifications";

/// One Notify call the test server received.
#[derive(Clone, Debug)]
struct Notified {
    id: u32,
    replaces: u32,
    summary: String,
    body: String,
    /// Action keys (the labels dropped).
    actions: Vec<String>,
}

/// The test notification server.
struct Server {
    log: Arc<Mutex<Vec<Notified>>>,
    next: u32,
}

#[zbus::interface(name = "org.freedesktop.Notifications")]
impl Server {
    #[allow(clippy::too_many_arguments)]
    async fn notify(
        &mut self,
        _app_name: String,
        replaces_id: u32,
        _app_icon: String,
        summary: String,
        body: String,
        actions: Vec<String>,
        _hints: HashMap<String, zbus::zvariant::OwnedValue>,
        _expire_timeout: i32,
    ) -> u32 {
        let id = if replaces_id != 0 {
            replaces_id
        } else {
            self.next += 1;
            self.next
        };
        self.log.lock().unwrap().push(Notified {
            id,
            replaces: replaces_id,
            summary,
            body,
            actions: actions.iter().step_by(2).cloned().collect(),
        });
        id
    }

    async fn close_notification(
        &self,
        id: u32,
        #[zbus(signal_emitter)] emitter: zbus::object_server::SignalEmitter<'_>,
    ) {
        let _ = Self::notification_closed(&emitter, id, 3).await;
    }

    fn get_capabilities(&self) -> Vec<String> {
        vec!["actions".into(), "body".into()]
    }

    fn get_server_information(&self) -> (String, String, String, String) {
        (
            "afsd-tests".into(),
            "afsd-rs".into(),
            "0".into(),
            "1.2".into(),
        )
    }

    #[zbus(signal)]
    async fn action_invoked(
        emitter: &zbus::object_server::SignalEmitter<'_>,
        id: u32,
        action_key: &str,
    ) -> zbus::Result<()>;

    #[zbus(signal)]
    async fn notification_closed(
        emitter: &zbus::object_server::SignalEmitter<'_>,
        id: u32,
        reason: u32,
    ) -> zbus::Result<()>;
}

/// A child process killed when dropped.
struct Killed(Option<Child>);

impl Drop for Killed {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A session bus, the test notification server on it, and the agent.
struct Desktop {
    // Dropped before the runtime it runs on.
    conn: zbus::Connection,
    rt: tokio::runtime::Runtime,
    log: Arc<Mutex<Vec<Notified>>>,
    /// Held for its Drop: the bus ends with the desktop.
    _bus: Killed,
    agent: Option<Child>,
    dir: PathBuf,
}

impl Drop for Desktop {
    fn drop(&mut self) {
        if let Some(mut a) = self.agent.take() {
            let _ = a.kill();
            let _ = a.wait();
        }
    }
}

impl Desktop {
    /// Starts the bus as alice and serves the notification server on it.
    fn start() -> Desktop {
        let dir = scratch("notify");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
        let socket = dir.join("bus");
        let conf = dir.join("session.conf");
        // A session bus that also admits root (the test's server) and
        // lets anyone own and send: the bus is the test's own.
        fs::write(
            &conf,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"#,
                socket.display()
            ),
        )
        .unwrap();
        fs::set_permissions(&conf, fs::Permissions::from_mode(0o644)).unwrap();
        // dbus-daemon wants a passwd entry for its uid, which the test
        // uids do not have: it gets one in a mount namespace of its own.
        let passwd = dir.join("passwd");
        let mut users = fs::read_to_string("/etc/passwd").unwrap_or_default();
        users.push_str(&format!(
            "afsd-alice:x:{ALICE_UID}:{ALICE_UID}::{}:/bin/sh\n",
            dir.display()
        ));
        fs::write(&passwd, users).unwrap();
        fs::set_permissions(&passwd, fs::Permissions::from_mode(0o644)).unwrap();
        let bus = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(format!(
                "mount --bind {} /etc/passwd && exec setpriv --reuid={ALICE_UID} \
                 --regid={ALICE_UID} --clear-groups dbus-daemon --nofork --nopidfile \
                 --config-file={}",
                passwd.display(),
                conf.display()
            ))
            .stdout(Stdio::null())
            .stderr(fs::File::create(dir.join("dbus.log")).unwrap())
            .spawn()
            .expect("dbus-daemon (package dbus-daemon)");
        // Killed however this function ends.
        let bus = Killed(Some(bus));
        assert!(
            wait_until(Duration::from_secs(10), || socket.exists()),
            "dbus-daemon did not listen at {}: {}",
            socket.display(),
            fs::read_to_string(dir.join("dbus.log")).unwrap_or_default()
        );
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let server = Server {
            log: log.clone(),
            next: 0,
        };
        let address = format!("unix:path={}", socket.display());
        let conn = rt
            .block_on(async {
                zbus::connection::Builder::address(address.as_str())?
                    .serve_at(PATH, server)?
                    .name("org.freedesktop.Notifications")?
                    .build()
                    .await
            })
            .expect("serving org.freedesktop.Notifications on the test bus");
        Desktop {
            rt,
            conn,
            log,
            _bus: bus,
            agent: None,
            dir,
        }
    }

    fn address(&self) -> String {
        format!("unix:path={}", self.dir.join("bus").display())
    }

    /// Runs `afsd-rs agent` as alice in the client namespace, with her
    /// ccache, the mount's socket and this bus; waits until it follows
    /// the daemon's events.
    fn start_agent(&mut self, cell: &Cell, m: &Mount, ccache: &Path) {
        let shown = self.dir.join("shown");
        let conf = self.dir.join("agent.conf");
        fs::write(
            &conf,
            format!(
                "show-command = echo \"$AFSD_CONFLICT_ID\" > {}\n\
                 reauth-command = echo reauth >> {}\n",
                shown.display(),
                self.dir.join("reauth").display()
            ),
        )
        .unwrap();
        fs::set_permissions(&conf, fs::Permissions::from_mode(0o644)).unwrap();
        let log = self.dir.join("agent.log");
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", cell.var("CLIENT_NETNS")))
            .args([
                "setpriv",
                &format!("--reuid={ALICE_UID}"),
                &format!("--regid={ALICE_UID}"),
                "--clear-groups",
            ])
            .arg(afsd_bin())
            .args(["agent", "--conf-dir", cell.var("AFS_CONF_DIR"), "--config"])
            .arg(&conf)
            .env("KRB5_CONFIG", cell.var("KRB5_CONFIG"))
            .env("KRB5CCNAME", format!("FILE:{}", ccache.display()))
            .env("AFSD_CONTROL", m.control_socket())
            .env("DBUS_SESSION_BUS_ADDRESS", self.address())
            .stdin(Stdio::null())
            .stdout(fs::File::create(&log).unwrap())
            .stderr(fs::File::options().append(true).open(&log).unwrap())
            .spawn()
            .expect("afsd-rs agent");
        self.agent = Some(child);
        let ok = wait_until(Duration::from_secs(15), || {
            self.agent_log().contains("connected to")
        });
        assert!(ok, "the agent did not connect:\n{}", self.agent_log());
    }

    fn agent_log(&self) -> String {
        fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
    }

    fn notified(&self) -> Vec<Notified> {
        self.log.lock().unwrap().clone()
    }

    /// Waits for a notification whose summary contains `what`.
    fn wait_for(&self, what: &str, limit: Duration) -> Notified {
        let mut found = None;
        wait_until(limit, || {
            found = self
                .notified()
                .into_iter()
                .rev()
                .find(|n| n.summary.contains(what));
            found.is_some()
        });
        found.unwrap_or_else(|| {
            panic!(
                "no notification {what:?} within {limit:?}; got {:#?}\nagent log:\n{}",
                self.notified(),
                self.agent_log()
            )
        })
    }

    /// Clicks an action, as a notification server does.
    fn invoke(&self, id: u32, key: &str) {
        self.rt.block_on(async {
            let iface = self
                .conn
                .object_server()
                .interface::<_, Server>(PATH)
                .await
                .unwrap();
            Server::action_invoked(iface.signal_emitter(), id, key)
                .await
                .unwrap();
        });
    }
}

/// `kinit` in the client namespace with a lifetime and a renewable life.
fn kinit(cell: &Cell, ccache: &Path, life: &str, renew: Option<&str>) {
    let _ = fs::remove_file(ccache);
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net=/run/netns/{}", cell.var("CLIENT_NETNS")))
        .args(["kinit", "-l", life]);
    if let Some(r) = renew {
        cmd.args(["-r", r]);
    }
    let mut child = cmd
        .arg(cell.var("USER1"))
        .env("KRB5_CONFIG", cell.var("KRB5_CONFIG"))
        .env("KRB5CCNAME", format!("FILE:{}", ccache.display()))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kinit");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{}\n", cell.var("USER1_PW")).as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "kinit: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::os::unix::fs::chown(ccache, Some(ALICE_UID), Some(ALICE_UID)).unwrap();
}

fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn sh_as(uid: u32, script: &str) {
    ok(
        &run_as(uid, &["sh", "-c", script]),
        &format!("uid {uid}: {script}"),
    );
}

/// A directory `DIR/notify-TAG-PID` made by the third-party tool, where
/// alice may do anything and anyone else nothing.
fn alice_dir(cell: &Cell, parent: &str, tag: &str) -> String {
    let rel = format!("{parent}/notify-{tag}-{}", std::process::id());
    cell.third_party(&["mkdir", &cell.rw(&rel)], None);
    cell.third_party(
        &[
            "setacl",
            &cell.rw(&rel),
            "system:administrators",
            "all",
            cell.var("USER1"),
            "all",
        ],
        None,
    );
    rel
}

fn server_cat(cell: &Cell, rel: &str) -> Vec<u8> {
    cell.third_party(&["cat", &cell.rw(rel)], None).stdout
}

/// The events `uid` sees (`afsd-rs events --json`), as JSON objects.
fn events_as(cell: &Cell, m: &Mount, uid: u32, ccache: &Path) -> Vec<serde_json::Value> {
    let text = ok(
        &cell.afsd_as(uid, m, ccache, &["events", "--json"]),
        "events",
    );
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// (a) and (d): alice's conflict becomes a notification with its actions
/// (and so does her pin past the pin reserve);
/// "Show conflict" runs the configured command with the conflict's id;
/// alice's `afsd-rs events` lists the conflict, bob's never shows her
/// events, not even while following.
#[test]
fn conflict_notification_and_events_per_uid() {
    let cell = Cell::from_env();
    // A pin reserve of 1 KiB: alice's pin of 4 KiB goes past it.
    let m = Mount::new(&cell, &[DEAD[0], DEAD[1], "--pin-reserve", "1K"]);
    let mut desk = Desktop::start();
    let cc = desk.dir.join("alice.cc");
    kinit(&cell, &cc, "1h", None);
    cell.aklog_as(ALICE_UID, &m, &cc);
    desk.start_agent(&cell, &m, &cc);
    // bob follows the event stream from now on.
    let bob_cc = desk.dir.join("bob.cc");
    let mut bob_follow = Command::new("setpriv")
        .args([
            &format!("--reuid={BOB_UID}"),
            &format!("--regid={BOB_UID}"),
            "--clear-groups",
        ])
        .arg(afsd_bin())
        .args(["events", "--follow", "--json"])
        .env("AFSD_CONTROL", m.control_socket())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();

    let rel = alice_dir(&cell, "shared", "conflict");
    let dir = m.path(&format!(".{}/{rel}", cell.cell()));
    let d = dir.display().to_string();
    sh_as(ALICE_UID, &format!("echo base > {d}/report.txt"));
    // The volume by a directory root may look into.
    let vol = m.path(&format!(".{}/shared", cell.cell()));
    m.offline(&[&vol]);
    sh_as(ALICE_UID, &format!("echo alice offline > {d}/report.txt"));
    cell.put(&cell.rw(&format!("{rel}/report.txt")), b"server\n");
    m.online(&[&vol]);
    if let Err(e) = m.wait_replayed(Duration::from_secs(60)) {
        panic!("{e}");
    }
    let n = desk.wait_for("AFS conflict", Duration::from_secs(20));
    assert!(n.summary.ends_with("report.txt"), "{n:?}");
    assert!(n.body.contains("update/update"), "{n:?}");
    assert_eq!(n.actions, ["show-conflict", "keep-both"], "{n:?}");
    let id: String = n
        .summary
        .trim_start_matches("AFS conflict ")
        .split(':')
        .next()
        .unwrap()
        .to_string();

    // "Show conflict" runs show-command with the conflict's id.
    desk.invoke(n.id, "show-conflict");
    let shown = desk.dir.join("shown");
    assert!(
        wait_until(Duration::from_secs(10), || fs::read_to_string(&shown)
            .is_ok_and(|s| s.trim() == id)),
        "show-command did not run with AFSD_CONFLICT_ID={id}: {:?}\nagent log:\n{}",
        fs::read_to_string(&shown),
        desk.agent_log()
    );

    // "Keep both", clicked while the volume is offline: her version is
    // made beside the server's as alice through the ordinary path (so it
    // is logged), the conflict is gone at once, and the copy reaches the
    // server when the volume comes back.
    // Only the conflict's owner (or root) may resolve it.
    let out = cell.afsd_as(BOB_UID, &m, &bob_cc, &["keep-both", &id]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && said.contains(&format!("conflict {id}: keep both: permission denied")),
        "bob must not resolve alice's conflict: {}{said}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        m.conflicts().iter().any(|c| c.id == id),
        "{:?}",
        m.conflicts()
    );
    m.offline(&[&vol]);
    desk.invoke(n.id, "keep-both");
    let copy_name = format!("report (conflict {id} local).txt");
    let resolved = wait_until(Duration::from_secs(20), || {
        !m.conflicts().iter().any(|c| c.id == id)
    });
    assert!(
        resolved,
        "conflict {id} is not resolved: {:?}\nagent log:\n{}\ndaemon log:\n{}",
        m.conflicts(),
        desk.agent_log(),
        m.log_tail(30)
    );
    assert_eq!(
        read_as(ALICE_UID, &dir.join(&copy_name)).unwrap(),
        b"alice offline\n"
    );
    let logged = m.volume_status("root.cell").expect("root.cell in status");
    assert!(
        logged.pending_ops >= 1,
        "the copy is logged: {}",
        logged.raw
    );
    m.online(&[&vol]);
    if let Err(e) = m.wait_replayed(Duration::from_secs(60)) {
        panic!("{e}");
    }
    let copy = format!("{rel}/{copy_name}");
    assert_eq!(server_cat(&cell, &copy), b"alice offline\n", "{copy}");
    assert_eq!(server_cat(&cell, &format!("{rel}/report.txt")), b"server\n");
    assert_eq!(
        read_as(ALICE_UID, &dir.join("report.txt")).unwrap(),
        b"server\n"
    );

    // A pin past the reserve is refused and posted.
    sh_as(ALICE_UID, &format!("head -c 4096 /dev/zero > {d}/big.bin"));
    let big = dir.join("big.bin");
    let out = cell.afsd_as(ALICE_UID, &m, &cc, &["pin", big.to_str().unwrap()]);
    assert!(!out.status.success(), "a pin past the reserve must fail");
    let p = desk.wait_for("AFS pin does not fit", Duration::from_secs(20));
    assert!(
        p.summary.ends_with("big.bin") && p.body.contains("needs 4096 bytes"),
        "{p:?}"
    );

    // alice sees her conflict; bob does not, listing or following.
    let mine = events_as(&cell, &m, ALICE_UID, &cc);
    assert!(
        mine.iter().any(|e| e["event"] == "conflict"
            && e["uid"] == ALICE_UID
            && e["id"].as_u64().map(|n| n.to_string()) == Some(id.clone())),
        "alice's events: {mine:?}"
    );
    let theirs = events_as(&cell, &m, BOB_UID, &bob_cc);
    assert!(
        !theirs.is_empty(),
        "bob sees the public events (volume offline/online)"
    );
    for e in &theirs {
        assert!(
            e["uid"].is_null() || e["uid"] == BOB_UID,
            "bob sees another uid's event: {e}"
        );
    }
    let human = ok(&cell.afsd_as(ALICE_UID, &m, &cc, &["events"]), "events");
    assert!(
        human
            .lines()
            .any(|l| l.contains("  conflict  ") && l.contains("report.txt")),
        "{human}"
    );
    let _ = bob_follow.kill();
    let out = bob_follow.wait_with_output().unwrap();
    let followed = String::from_utf8_lossy(&out.stdout);
    assert!(
        followed.contains("volume-online"),
        "bob's --follow saw the public events: {followed}"
    );
    for l in followed.lines() {
        let e: serde_json::Value = serde_json::from_str(l).unwrap();
        assert!(
            e["uid"].is_null() || e["uid"] == BOB_UID,
            "bob followed another uid's event: {e}"
        );
    }
}

/// (b): a token from a 5-minute ticket is announced at once as expiring;
/// "Renew tickets" on a ticket that is not renewable falls back to the
/// re-authentication command; after a daemon restart the agent, connected
/// again, announces the token again.
#[test]
fn short_token_is_announced_and_again_after_a_daemon_restart() {
    let cell = Cell::from_env();
    let m = Mount::new(&cell, DEAD);
    let mut desk = Desktop::start();
    let cc = desk.dir.join("alice.cc");
    desk.start_agent(&cell, &m, &cc);
    kinit(&cell, &cc, "5m", None);
    cell.aklog_as(ALICE_UID, &m, &cc);
    let n = desk.wait_for("expires in", Duration::from_secs(20));
    assert!(n.summary.contains("test.lab") || n.summary.contains(cell.cell()));
    let minutes: u64 = n
        .summary
        .rsplit("expires in ")
        .next()
        .and_then(|s| s.split(' ').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{n:?}"));
    assert!((1..=5).contains(&minutes), "{n:?}");
    assert_eq!(n.actions, ["renew"], "{n:?}");

    // "Renew tickets" with a ticket that cannot be renewed: `kinit -R`
    // fails, so the agent runs the re-authentication command.
    desk.invoke(n.id, "renew");
    let reauth = desk.dir.join("reauth");
    assert!(
        wait_until(Duration::from_secs(20), || reauth.exists()),
        "no re-authentication command\nagent log:\n{}",
        desk.agent_log()
    );
    assert!(
        desk.agent_log().contains("kinit -R or aklog failed"),
        "{}",
        desk.agent_log()
    );

    // The daemon restarts: the agent connects again by itself and shows
    // what the new daemon says (its watch warns again of the kept token).
    let cache = m.cache_dir.clone();
    let before = desk.notified().len();
    m.stop();
    let _m = Mount::with_cache(&cell, &cache, DEAD);
    let again = wait_until(Duration::from_secs(30), || {
        desk.notified()[before..]
            .iter()
            .any(|n| n.summary.contains("expires in"))
    });
    assert!(
        again,
        "no warning after the daemon restarted: {:#?}\nagent log:\n{}",
        desk.notified(),
        desk.agent_log()
    );
    assert!(
        desk.agent_log().matches("connected to").count() >= 2,
        "{}",
        desk.agent_log()
    );
}

/// (c) and expired tokens as anchors: alice changes a file offline and her
/// token really expires (a one-minute ticket; her TGT was renewed meanwhile
/// with `kinit -R`, as a renewal daemon would, but no aklog ran). While
/// connected she is anonymous: her private file is refused, and `tokens`
/// says so; offline, her cached rights still let her read it. Replay pauses
/// on her, the agent posts it, the test clicks "Renew tickets", the agent
/// runs `kinit -R` and `afsd-rs aklog`, and replay resumes: the file
/// reaches the server as alice.
#[test]
fn renew_action_resumes_replay_paused_on_an_expired_token() {
    let cell = Cell::from_env();
    let m = Mount::new(&cell, DEAD);
    let mut desk = Desktop::start();
    let cc = desk.dir.join("alice.cc");
    kinit(&cell, &cc, "1m", Some("1h"));
    let got_token = Instant::now();
    cell.aklog_as(ALICE_UID, &m, &cc);
    desk.start_agent(&cell, &m, &cc);

    // The offline work in vol.small (its own volume); the private file in
    // root.cell, which stays connected.
    let rel = alice_dir(&cell, "small", "renew");
    let dir = m.path(&format!(".{}/{rel}", cell.cell()));
    let d = dir.display().to_string();
    let secret = m.path(&format!(".{}/private/secret.txt", cell.cell()));
    let s = secret.display().to_string();
    sh_as(
        ALICE_UID,
        &format!("ls {d} >/dev/null && cat {s} >/dev/null"),
    );
    let vol = m.path(&format!(".{}/small", cell.cell()));
    m.offline(&[&vol]);
    sh_as(
        ALICE_UID,
        &format!("echo written offline > {d}/offline.txt"),
    );
    // Shortly before the token ends, a renewal daemon renews the TGT (it
    // then outlives the token by some 50 s); nobody runs aklog.
    std::thread::sleep(Duration::from_secs(50).saturating_sub(got_token.elapsed()));
    ok(
        &Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", cell.var("CLIENT_NETNS")))
            .args([
                "setpriv",
                &format!("--reuid={ALICE_UID}"),
                &format!("--regid={ALICE_UID}"),
                "--clear-groups",
                "kinit",
                "-R",
            ])
            .env("KRB5_CONFIG", cell.var("KRB5_CONFIG"))
            .env("KRB5CCNAME", format!("FILE:{}", cc.display()))
            .output()
            .unwrap(),
        "kinit -R",
    );
    // The token ends with the first ticket.
    let left = Duration::from_secs(62).saturating_sub(got_token.elapsed());
    std::thread::sleep(left);
    let expired = wait_until(Duration::from_secs(20), || {
        let t = cell.afsd_as(ALICE_UID, &m, &cc, &["tokens"]);
        String::from_utf8_lossy(&t.stdout).contains("Expired")
    });
    assert!(expired, "alice's token did not expire");
    let tokens = ok(&cell.afsd_as(ALICE_UID, &m, &cc, &["tokens"]), "tokens");
    let alice_id = cell.pts_id(cell.var("USER1"));
    assert!(
        tokens.contains("anonymous to servers")
            && tokens.contains(&format!("cached rights of AFS ID {alice_id} kept"))
            && tokens.contains("kinit && afsd-rs aklog"),
        "{tokens}"
    );
    let expired_note = desk.wait_for("has expired", Duration::from_secs(20));

    // Connected: anonymous, refused. The refusal learns nothing that
    // replaces her rights: offline, they still open the cached file.
    let r = run_as(ALICE_UID, &["cat", &s]);
    assert!(
        !r.status.success() && String::from_utf8_lossy(&r.stderr).contains("ermission denied"),
        "an expired token must not be sent: {:?}",
        r
    );
    // root.cell by its root (root, anonymous, cannot look into private/).
    let cell_root = m.path(&format!(".{}", cell.cell()));
    m.offline(&[&cell_root]);
    let r = run_as(ALICE_UID, &["cat", &s]);
    assert_eq!(
        String::from_utf8_lossy(&r.stdout),
        "alice's secret\n",
        "offline, alice's cached rights: {}",
        String::from_utf8_lossy(&r.stderr)
    );
    m.online(&[&cell_root]);

    // Back online: replay waits for alice.
    m.online(&[&vol]);
    let n = desk.wait_for("wait for a token", Duration::from_secs(30));
    assert_eq!(n.actions, ["renew"], "{n:?}");
    // One story per cell: the paused replay replaces the expiry notice.
    assert_eq!(n.replaces, expired_note.id, "{n:?}");
    let v = m.volume_status("vol.small").expect("vol.small in status");
    assert_eq!(v.mode, "paused", "{}", v.raw);
    desk.invoke(n.id, "renew");
    let renewed = wait_until(Duration::from_secs(30), || {
        server_cat(&cell, &format!("{rel}/offline.txt")) == b"written offline\n"
    });
    assert!(
        renewed,
        "replay did not resume after the renew action\nagent log:\n{}\ndaemon log:\n{}",
        desk.agent_log(),
        m.log_tail(30)
    );
    assert!(
        desk.agent_log()
            .contains("renewed: kinit -R and afsd-rs aklog"),
        "{}",
        desk.agent_log()
    );
    assert!(
        !desk.dir.join("reauth").exists(),
        "the quiet renew worked: no re-authentication command"
    );
    if let Err(e) = m.wait_replayed(Duration::from_secs(30)) {
        panic!("{e}");
    }
}

/// Where journald runs, events reach the journal with their structured
/// fields. The machine has no journald: the daemon runs in a mount
/// namespace of its own whose /run/systemd/journal/socket is a datagram
/// socket of this test, and the journal protocol's fields are read there.
#[test]
fn journald_receives_events_with_their_fields() {
    let cell = Cell::from_env();
    let dir = scratch("journald");
    let jdir = dir.join("journal");
    fs::create_dir_all(&jdir).unwrap();
    let journal = std::os::unix::net::UnixDatagram::bind(jdir.join("socket")).unwrap();
    journal
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let mnt = dir.join("afs");
    fs::create_dir_all(&mnt).unwrap();
    let socket = dir.join("control.sock");
    let script = format!(
        "mount -t tmpfs none /run && mkdir -p /run/systemd/journal && \
         mount --bind {} /run/systemd/journal && exec {} mount --foreground \
         --conf-dir {} --cache-dir {} --control-socket {} {}",
        jdir.display(),
        afsd_bin(),
        cell.var("AFS_CONF_DIR"),
        dir.join("cache").display(),
        socket.display(),
        mnt.display()
    );
    let daemon = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", cell.var("CLIENT_NETNS")))
        .args(["unshare", "--mount", "--propagation", "private", "sh", "-c"])
        .arg(&script)
        .stdout(Stdio::null())
        .stderr(fs::File::create(dir.join("afsd.log")).unwrap())
        .spawn()
        .unwrap();
    // Killed if the test fails before the end.
    let mut daemon = Killed(Some(daemon));
    let up = wait_until(Duration::from_secs(30), || socket.exists());
    let cc = dir.join("alice.cc");
    let got = if up {
        kinit(&cell, &cc, "5m", None);
        let out = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", cell.var("CLIENT_NETNS")))
            .arg(afsd_bin())
            .args(["aklog", "--conf-dir", cell.var("AFS_CONF_DIR")])
            .env("KRB5_CONFIG", cell.var("KRB5_CONFIG"))
            .env("KRB5CCNAME", format!("FILE:{}", cc.display()))
            .env("AFSD_CONTROL", &socket)
            .output()
            .unwrap();
        ok(&out, "aklog");
        // The token watch ticks every 5 s.
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut found = None;
        let mut buf = vec![0u8; 64 * 1024];
        while found.is_none() && Instant::now() < deadline {
            if let Ok(n) = journal.recv(&mut buf) {
                let d = &buf[..n];
                let has = |s: &[u8]| d.windows(s.len()).any(|w| w == s);
                if has(b"AFSD_EVENT\n") && has(b"token-expiring") {
                    found = Some(d.to_vec());
                }
            }
        }
        found
    } else {
        None
    };
    // SIGTERM: a clean unmount inside its namespace.
    if let Some(mut c) = daemon.0.take() {
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let _ = c.wait();
    }
    let log = fs::read_to_string(dir.join("afsd.log")).unwrap_or_default();
    assert!(up, "the daemon did not start:\n{log}");
    let d = got.unwrap_or_else(|| panic!("no token-expiring entry reached the journal\n{log}"));
    let f = journal_fields(&d);
    let field = |k: &str| String::from_utf8_lossy(f.get(k).map_or(&[][..], |v| v)).into_owned();
    assert_eq!(field("AFSD_EVENT"), "token-expiring", "{f:?}");
    // aklog ran as root here.
    assert_eq!(field("AFSD_UID"), "0", "{f:?}");
    assert_eq!(field("SYSLOG_IDENTIFIER"), "afsd-rs", "{f:?}");
    let detail: serde_json::Value = serde_json::from_str(&field("AFSD_DETAIL")).unwrap();
    assert_eq!(detail["cell"], cell.cell(), "{detail}");
    assert_eq!(detail["minutes"], 5, "{detail}");
}

/// The fields of one datagram of the journal's native protocol: `KEY=value`
/// lines, or `KEY`, a newline, a 64-bit little-endian length, the value and
/// a newline.
fn journal_fields(mut d: &[u8]) -> HashMap<String, Vec<u8>> {
    let mut out = HashMap::new();
    while let Some(nl) = d.iter().position(|&b| b == b'\n') {
        let line = &d[..nl];
        if let Some(eq) = line.iter().position(|&b| b == b'=') {
            out.insert(
                String::from_utf8_lossy(&line[..eq]).into_owned(),
                line[eq + 1..].to_vec(),
            );
            d = &d[nl + 1..];
        } else {
            let rest = &d[nl + 1..];
            let Some(len) = rest.get(..8) else { break };
            let len = u64::from_le_bytes(len.try_into().unwrap()) as usize;
            let Some(value) = rest.get(8..8 + len) else {
                break;
            };
            out.insert(String::from_utf8_lossy(line).into_owned(), value.to_vec());
            d = rest.get(8 + len + 1..).unwrap_or(&[]);
        }
    }
    out
}
