//! `cargo xtask cell up|down|status|check|exec`: the OpenAFS test cell.
//!
//! The work is done by the shell scripts in xtask/testcell/ (ported from the
//! team's verified kit); this module computes the settings, installs
//! packages, builds afscptool, decides up/stale/down, writes the env file and
//! runs the quick status checks.

use std::collections::BTreeMap;
use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::util::{self, capture, run, secs, Res};

/// Options shared by the commands that use a cell.
#[derive(Default, Clone)]
pub struct CellOpts {
    /// --env-file (else AFSD_TESTCELL_ENV, else the default)
    pub env_file: Option<PathBuf>,
    /// --name (else AFSD_TESTCELL_NAME, else "afsd")
    pub name: Option<String>,
}

pub const DEFAULT_NAME: &str = "afsd";

/// Every override: (env var, what it sets).  Printed by `cargo xtask help`.
pub const OVERRIDES: &[(&str, &str)] = &[
    ("AFSD_TESTCELL_NAME", "instance name (default afsd): derives netns NAME-srv/NAME-cli, veth NAME-srv0/NAME-cli0, CELLDIR target/testcell/NAME, env file target/testcell/NAME.env (target/testcell/env for afsd); max 10 chars [a-z0-9-]"),
    ("AFSD_TESTCELL_ENV", "env file path (also --env-file)"),
    ("AFSD_TESTCELL_DIR", "CELLDIR (all runtime state of the cell)"),
    ("AFSD_TESTCELL_CELL", "AFS cell name (default test.lab)"),
    ("AFSD_TESTCELL_REALM", "Kerberos realm (default TEST.LAB)"),
    ("AFSD_TESTCELL_SERVER_NETNS", "server network namespace (default NAME-srv)"),
    ("AFSD_TESTCELL_CLIENT_NETNS", "client network namespace (default NAME-cli)"),
    ("AFSD_TESTCELL_SERVER_IF", "veth end in the server netns (default NAME-srv0)"),
    ("AFSD_TESTCELL_CLIENT_IF", "veth end in the client netns (default NAME-cli0)"),
    ("AFSD_TESTCELL_SERVER_IP", "server address, /24 (default 198.18.0.1)"),
    ("AFSD_TESTCELL_CLIENT_IP", "client address, same /24 (default 198.18.0.2)"),
    ("AFSD_TESTCELL_SERVER2_IP", "the second fileserver's address, same /24, in the server netns (default: the server's + 2)"),
    ("AFSD_TESTCELL_ADMIN", "admin principal + pts user (default admin)"),
    ("AFSD_TESTCELL_ADMIN_PW", "its password (default adminpw)"),
    ("AFSD_TESTCELL_USER1", "plain user (default alice)"),
    ("AFSD_TESTCELL_USER1_PW", "its password (default alicepw)"),
    ("AFSD_TESTCELL_USER2", "a second plain user (default bob)"),
    ("AFSD_TESTCELL_USER2_PW", "its password (default bobpw)"),
];

/// The settings of one cell.  `vars()` is exactly the env file's content.
#[derive(Clone, Debug, PartialEq)]
pub struct Cell {
    pub env_file: PathBuf,
    pub cell: String,
    pub realm: String,
    pub server_netns: String,
    pub client_netns: String,
    pub server_if: String,
    pub client_if: String,
    pub server_ip: String,
    pub client_ip: String,
    pub server2_ip: String,
    pub celldir: PathBuf,
    pub third_party: PathBuf,
    pub admin: String,
    pub admin_pw: String,
    pub user1: String,
    pub user1_pw: String,
    pub user2: String,
    pub user2_pw: String,
}

/// The second fileserver's default address: the server's last octet + 2
/// (198.18.0.1 gives 198.18.0.3, beside the client's .2).
fn second_server(server_ip: &str) -> String {
    match server_ip.parse::<Ipv4Addr>() {
        Ok(ip) => {
            let o = ip.octets();
            Ipv4Addr::new(o[0], o[1], o[2], o[3].wrapping_add(2)).to_string()
        }
        Err(_) => String::new(),
    }
}

pub fn kit_dir() -> PathBuf {
    util::workspace_root().join("xtask/testcell")
}

pub fn labexec_path() -> PathBuf {
    kit_dir().join("labexec")
}

fn env_or(var: &str, default: impl Into<String>) -> String {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => v,
        _ => default.into(),
    }
}

/// The env file path for these options (without reading anything).
pub fn env_file_path(opts: &CellOpts) -> Res<PathBuf> {
    if let Some(p) = &opts.env_file {
        return Ok(util::absolute(p));
    }
    if let Some(p) = std::env::var_os("AFSD_TESTCELL_ENV").filter(|v| !v.is_empty()) {
        return Ok(util::absolute(Path::new(&p)));
    }
    let name = instance_name(opts)?;
    let dir = util::target_dir().join("testcell");
    Ok(if name == DEFAULT_NAME {
        dir.join("env")
    } else {
        dir.join(format!("{name}.env"))
    })
}

fn instance_name(opts: &CellOpts) -> Res<String> {
    let name = opts
        .name
        .clone()
        .unwrap_or_else(|| env_or("AFSD_TESTCELL_NAME", DEFAULT_NAME));
    if name.is_empty()
        || name.len() > 10
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err(format!(
            "bad cell instance name {name:?}: 1 to 10 characters of [a-z0-9-] (interface names are NAME-srv0, max 15)"
        ));
    }
    Ok(name)
}

impl Cell {
    /// Settings requested by the options and the AFSD_TESTCELL_* variables.
    pub fn requested(opts: &CellOpts) -> Res<Cell> {
        let name = instance_name(opts)?;
        let target = util::target_dir();
        let v = |k: &str, d: String| env_or(&format!("AFSD_TESTCELL_{k}"), d);
        let celldir = match std::env::var_os("AFSD_TESTCELL_DIR").filter(|v| !v.is_empty()) {
            Some(d) => util::absolute(Path::new(&d)),
            None => target.join("testcell").join(&name),
        };
        let c = Cell {
            env_file: env_file_path(opts)?,
            cell: v("CELL", "test.lab".into()),
            realm: v("REALM", "TEST.LAB".into()),
            server_netns: v("SERVER_NETNS", format!("{name}-srv")),
            client_netns: v("CLIENT_NETNS", format!("{name}-cli")),
            server_if: v("SERVER_IF", format!("{name}-srv0")),
            client_if: v("CLIENT_IF", format!("{name}-cli0")),
            server_ip: v("SERVER_IP", "198.18.0.1".into()),
            client_ip: v("CLIENT_IP", "198.18.0.2".into()),
            server2_ip: String::new(),
            celldir,
            third_party: target.join("testcell/bin/afscptool"),
            admin: v("ADMIN", "admin".into()),
            admin_pw: v("ADMIN_PW", "adminpw".into()),
            user1: v("USER1", "alice".into()),
            user1_pw: v("USER1_PW", "alicepw".into()),
            user2: v("USER2", "bob".into()),
            user2_pw: v("USER2_PW", "bobpw".into()),
        };
        let mut c = c;
        c.server2_ip = v("SERVER2_IP", second_server(&c.server_ip));
        c.validate()?;
        Ok(c)
    }

    /// Settings recorded in an env file.
    pub fn from_env_file(path: &Path) -> Res<Cell> {
        let text = fs::read_to_string(path)
            .map_err(|e| format!("cannot read env file {}: {e}", path.display()))?;
        let m = parse_env(&text);
        let get = |k: &str| {
            m.get(k)
                .cloned()
                .ok_or_else(|| format!("env file {} has no {k}", path.display()))
        };
        Ok(Cell {
            env_file: path.to_path_buf(),
            cell: get("CELL")?,
            realm: get("REALM")?,
            server_netns: get("SERVER_NETNS")?,
            client_netns: get("CLIENT_NETNS")?,
            server_if: get("SERVER_IF")?,
            client_if: get("CLIENT_IF")?,
            server_ip: get("SERVER_IP")?,
            client_ip: get("CLIENT_IP")?,
            server2_ip: get("SERVER2_IP").unwrap_or_else(|_| {
                second_server(&m.get("SERVER_IP").cloned().unwrap_or_default())
            }),
            celldir: PathBuf::from(get("CELLDIR")?),
            third_party: PathBuf::from(get("THIRD_PARTY")?),
            admin: get("ADMIN")?,
            admin_pw: get("ADMIN_PW")?,
            user1: get("USER1")?,
            user1_pw: get("USER1_PW")?,
            // Env files of an older kit have no second user.
            user2: get("USER2").unwrap_or_else(|_| "bob".into()),
            user2_pw: get("USER2_PW").unwrap_or_else(|_| "bobpw".into()),
        })
    }

    fn validate(&self) -> Res<()> {
        let word = |what: &str, v: &str, extra: &str, max: usize| -> Res<()> {
            if v.is_empty()
                || v.len() > max
                || v.starts_with('-')
                || v == "."
                || v == ".."
                || !v
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || extra.contains(c))
            {
                Err(format!(
                    "bad {what} {v:?}: 1 to {max} characters of [A-Za-z0-9{extra}], not starting with '-'"
                ))
            } else {
                Ok(())
            }
        };
        word("cell name", &self.cell, ".-", 64)?;
        word("realm", &self.realm, ".-", 64)?;
        word("server netns", &self.server_netns, "._-", 64)?;
        word("client netns", &self.client_netns, "._-", 64)?;
        word("server interface", &self.server_if, "._-", 15)?;
        word("client interface", &self.client_if, "._-", 15)?;
        word("admin name", &self.admin, "_", 32)?;
        word("user1 name", &self.user1, "_", 32)?;
        word("admin password", &self.admin_pw, "._-+@", 64)?;
        word("user1 password", &self.user1_pw, "._-+@", 64)?;
        word("user2 name", &self.user2, "_", 32)?;
        word("user2 password", &self.user2_pw, "._-+@", 64)?;
        if self.server_netns == self.client_netns {
            return Err("server and client netns must differ".into());
        }
        if self.server_if == self.client_if {
            return Err("server and client interface names must differ".into());
        }
        let ip = |what: &str, v: &str| -> Res<Ipv4Addr> {
            v.parse::<Ipv4Addr>()
                .map_err(|_| format!("bad {what} {v:?}: need an IPv4 address"))
        };
        let s = ip("server IP", &self.server_ip)?;
        let c = ip("client IP", &self.client_ip)?;
        let (so, co) = (s.octets(), c.octets());
        if so[..3] != co[..3]
            || so[3] == co[3]
            || [so[3], co[3]].iter().any(|&o| o == 0 || o == 255)
        {
            return Err(format!(
                "server IP {s} and client IP {c} must be two distinct host addresses in one /24"
            ));
        }
        let s2 = ip("second server IP", &self.server2_ip)?;
        let o2 = s2.octets();
        if o2[..3] != so[..3] || o2[3] == so[3] || o2[3] == co[3] || o2[3] == 0 || o2[3] == 255 {
            return Err(format!(
                "second server IP {s2} must be a third host address in the /24 of {s} and {c}"
            ));
        }
        if s.is_loopback() || s.is_unspecified() {
            return Err(format!(
                "server IP {s} must not be loopback (ubik ignores loopback)"
            ));
        }
        for (what, p) in [("CELLDIR", &self.celldir), ("env file", &self.env_file)] {
            let ok = p.is_absolute()
                && p.to_str()
                    .map(|s| {
                        !s.chars()
                            .any(|c| c.is_whitespace() || "'\"\\$`:".contains(c))
                    })
                    .unwrap_or(false);
            if !ok {
                return Err(format!(
                    "bad {what} {}: must be an absolute path without spaces, quotes, '$', '`', ':' or '\\'",
                    p.display()
                ));
            }
        }
        Ok(())
    }

    pub fn admin_ccache(&self) -> PathBuf {
        self.celldir.join(format!("ccache.{}", self.admin))
    }
    pub fn user1_ccache(&self) -> PathBuf {
        self.celldir.join(format!("ccache.{}", self.user1))
    }
    pub fn afs_conf_dir(&self) -> PathBuf {
        self.celldir.join("client-etc")
    }
    /// LD_PRELOAD shim for stock afsio (tests/tools/nokrb5.c)
    pub fn afsio_preload(&self) -> PathBuf {
        self.third_party.with_file_name("nokrb5.so")
    }
    pub fn krb5_config(&self) -> PathBuf {
        self.celldir.join("krb5/krb5.conf")
    }

    /// The env file's variables, in order.  All paths absolute.
    pub fn vars(&self) -> Vec<(&'static str, String)> {
        let p = |p: &Path| p.display().to_string();
        vec![
            ("CELL", self.cell.clone()),
            ("REALM", self.realm.clone()),
            ("SERVER_NETNS", self.server_netns.clone()),
            ("CLIENT_NETNS", self.client_netns.clone()),
            ("SERVER_IF", self.server_if.clone()),
            ("CLIENT_IF", self.client_if.clone()),
            ("SERVER_IP", self.server_ip.clone()),
            ("CLIENT_IP", self.client_ip.clone()),
            ("SERVER2_IP", self.server2_ip.clone()),
            ("KRB5_CONFIG", p(&self.krb5_config())),
            ("AFS_CONF_DIR", p(&self.afs_conf_dir())),
            ("THIRD_PARTY", p(&self.third_party)),
            ("AFSIO_PRELOAD", p(&self.afsio_preload())),
            ("CELLDIR", p(&self.celldir)),
            ("LABEXEC", p(&labexec_path())),
            ("ADMIN", self.admin.clone()),
            ("ADMIN_PW", self.admin_pw.clone()),
            ("USER1", self.user1.clone()),
            ("USER1_PW", self.user1_pw.clone()),
            ("USER2", self.user2.clone()),
            ("USER2_PW", self.user2_pw.clone()),
            ("ADMIN_CCACHE", p(&self.admin_ccache())),
            ("USER1_CCACHE", p(&self.user1_ccache())),
        ]
    }

    fn env_text(&self) -> String {
        let mut s = String::from(
            "# afsd-rs OpenAFS test cell, written by `cargo xtask cell up`.\n\
             # Shell: `. THIS_FILE`; Rust tests: read the `export KEY=VALUE` lines\n\
             # (values are quoted only if they need it; they never do with the defaults).\n",
        );
        for (k, v) in self.vars() {
            s.push_str(&format!(
                "export {k}={}\n",
                util::shell_quote(std::ffi::OsStr::new(&v))
            ));
        }
        s
    }

    /// A command for a kit script, with the settings in its environment.
    fn script(&self, name: &str) -> Command {
        let mut c = Command::new(kit_dir().join(name));
        c.envs(self.vars());
        c
    }

    /// labexec NETNS ARGS... with the settings in the environment.
    pub fn labexec<I, S>(&self, netns: &str, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut c = Command::new(labexec_path());
        c.envs(self.vars()).arg(netns).args(args);
        c
    }

    fn netns_exist(&self) -> (bool, bool) {
        let e = |n: &str| Path::new("/run/netns").join(n).exists();
        (e(&self.server_netns), e(&self.client_netns))
    }

    /// `vos listvldb` from the client netns answers.
    fn vldb_answers(&self) -> bool {
        capture(
            &mut self.labexec(
                &self.client_netns,
                ["vos", "listvldb", "-noresolve", "-noauth"],
            ),
            Duration::from_secs(20),
        )
        .map(|c| c.ok())
        .unwrap_or(false)
    }
}

pub fn parse_env(text: &str) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        let Some(rest) = line.strip_prefix("export ") else {
            continue;
        };
        let Some((k, v)) = rest.split_once('=') else {
            continue;
        };
        let v = v.trim();
        let v = if v.len() >= 2 && v.starts_with('\'') && v.ends_with('\'') {
            v[1..v.len() - 1].replace("'\\''", "'")
        } else {
            v.to_string()
        };
        m.insert(k.trim().to_string(), v);
    }
    m
}

/// Install the Debian packages of xtask/packages.txt (+ extra) if missing.
pub fn install_deps(extra: &[&str]) -> Res<()> {
    let t = Instant::now();
    run(Command::new(kit_dir().join("install-deps.sh")).args(extra))
        .map_err(|e| format!("installing packages failed: {e}"))?;
    let d = t.elapsed();
    if d > Duration::from_secs(2) {
        println!("install-deps: {}", secs(d));
    }
    Ok(())
}

/// Build the test tools (tests/tools/: afscptool, the afsio wrapper + shim)
/// into the directory of `third_party` if an output is missing or older
/// than a source.
pub fn build_tools(third_party: &Path) -> Res<()> {
    let src = util::workspace_root().join("tests/tools");
    let bindir = third_party.parent().unwrap_or(Path::new("/"));
    let mtime = |p: &Path| fs::metadata(p).and_then(|m| m.modified()).ok();
    let mut newest = None;
    for s in [
        src.join("afscptool.c"),
        src.join("nokrb5.c"),
        kit_dir().join("build-tools.sh"),
    ] {
        let t = mtime(&s).ok_or_else(|| format!("missing tool source {}", s.display()))?;
        newest = newest.max(Some(t));
    }
    let fresh = ["afscptool", "afsio", "nokrb5.so"]
        .iter()
        .all(|o| mtime(&bindir.join(o)) >= newest);
    if fresh && third_party.exists() {
        return Ok(());
    }
    run(Command::new(kit_dir().join("build-tools.sh"))
        .arg(&src)
        .arg(bindir))
    .map_err(|e| format!("building the test tools failed: {e}"))
}

enum Found {
    /// healthy, described by this env file
    Up(Box<Cell>),
    /// something left behind: tear down with these settings
    Stale(Box<Cell>, String),
    Nothing,
}

fn probe(want: &Cell) -> Res<Found> {
    if want.env_file.exists() {
        let have = match Cell::from_env_file(&want.env_file) {
            Ok(h) => h,
            Err(e) => {
                return Ok(Found::Stale(
                    Box::new(want.clone()),
                    format!("unreadable env file ({e})"),
                ))
            }
        };
        let (s, c) = have.netns_exist();
        if !(s && c) {
            return Ok(Found::Stale(Box::new(have), "netns missing".into()));
        }
        if !have.vldb_answers() {
            return Ok(Found::Stale(
                Box::new(have),
                "vos listvldb does not answer".into(),
            ));
        }
        return Ok(Found::Up(Box::new(have)));
    }
    let (s, c) = want.netns_exist();
    let mut left = Vec::new();
    if s {
        left.push(format!("netns {}", want.server_netns));
    }
    if c {
        left.push(format!("netns {}", want.client_netns));
    }
    if want.celldir.exists() {
        left.push(format!("{}", want.celldir.display()));
    }
    if left.is_empty() {
        Ok(Found::Nothing)
    } else {
        Ok(Found::Stale(
            Box::new(want.clone()),
            format!("no env file but {} exist", left.join(", ")),
        ))
    }
}

/// `cell up`: idempotent.  Returns the settings of the running cell.
pub fn up(opts: &CellOpts) -> Res<Cell> {
    util::require_root("cell up")?;
    let want = Cell::requested(opts)?;
    let t0 = Instant::now();
    match probe(&want)? {
        Found::Up(have) => {
            if *have != want {
                return Err(format!(
                    "a different cell is up with env file {} (netns {}/{}, CELLDIR {}): \
                     run `cargo xtask cell down --env-file {}` first, or pick another env file / --name",
                    have.env_file.display(),
                    have.server_netns,
                    have.client_netns,
                    have.celldir.display(),
                    have.env_file.display()
                ));
            }
            println!(
                "cell {} is already up (env file {}); nothing to do",
                have.cell,
                have.env_file.display()
            );
            return Ok(*have);
        }
        Found::Stale(old, why) => {
            println!("stale cell state ({why}): tearing it down first");
            teardown(&old)?;
            // the env file may have described other names than requested
            if let Found::Stale(old, why) = probe(&want)? {
                println!("stale cell state ({why}): tearing it down too");
                teardown(&old)?;
            }
        }
        Found::Nothing => {}
    }
    install_deps(&[])?;
    build_tools(&want.third_party)?;
    if let Some(parent) = want.celldir.parent() {
        fs::create_dir_all(parent)
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    if let Err(e) = run(&mut want.script("cell-up.sh")) {
        print_log_tails(&want);
        return Err(format!(
            "bringing the cell up failed: {e}\n  state is left in {} for inspection; \
             `cargo xtask cell down` removes it (and `cell up` does so by itself)",
            want.celldir.display()
        ));
    }
    write_env_file(&want)?;
    println!(
        "cell {} up in {}; env file: {}",
        want.cell,
        secs(t0.elapsed()),
        want.env_file.display()
    );
    println!(
        "  try: cargo xtask cell exec -- afsio read -file /afs/{}/hello.txt",
        want.cell
    );
    Ok(want)
}

fn write_env_file(c: &Cell) -> Res<()> {
    let dir = c.env_file.parent().unwrap_or(Path::new("/"));
    fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let tmp = c
        .env_file
        .with_extension(format!("tmp.{}", std::process::id()));
    fs::write(&tmp, c.env_text())
        .and_then(|_| fs::rename(&tmp, &c.env_file))
        .map_err(|e| format!("cannot write env file {}: {e}", c.env_file.display()))
}

fn print_log_tails(c: &Cell) {
    let logs = c.celldir.join("logs");
    for f in [
        "openafs/BosLog",
        "openafs/PtLog",
        "openafs/VLLog",
        "openafs/FileLog",
        "openafs/VolserLog",
        "krb5kdc.log",
        "bosserver.stdout",
    ] {
        let t = util::tail(&logs.join(f), 15);
        if !t.trim().is_empty() {
            eprintln!("----- last lines of {}:\n{t}", logs.join(f).display());
        }
    }
}

/// Stop a cell's processes, delete its netns and CELLDIR, remove the env file.
fn teardown(c: &Cell) -> Res<()> {
    run(&mut c.script("cell-down.sh")).map_err(|e| format!("cell down failed: {e}"))?;
    match fs::remove_file(&c.env_file) {
        Ok(()) => println!("removed env file {}", c.env_file.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(format!(
                "cannot remove env file {}: {e}",
                c.env_file.display()
            ))
        }
    }
    Ok(())
}

/// `cell down`: idempotent.  Uses the env file's settings if it exists.
pub fn down(opts: &CellOpts) -> Res<()> {
    util::require_root("cell down")?;
    let path = env_file_path(opts)?;
    let c = if path.exists() {
        match Cell::from_env_file(&path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("warning: {e}; using the requested settings instead");
                Cell::requested(opts)?
            }
        }
    } else {
        Cell::requested(opts)?
    };
    let t = Instant::now();
    teardown(&c)?;
    println!("cell down in {}", secs(t.elapsed()));
    Ok(())
}

/// The cell described by the env file, or a clear error.
pub fn running(opts: &CellOpts) -> Res<Cell> {
    let path = env_file_path(opts)?;
    if !path.exists() {
        return Err(format!(
            "the cell is not up (no env file {}): run `cargo xtask cell up`",
            path.display()
        ));
    }
    Cell::from_env_file(&path)
}

/// `cell status`: Ok(true) if up and healthy.
pub fn status(opts: &CellOpts) -> Res<bool> {
    util::require_root("cell status")?;
    let path = env_file_path(opts)?;
    if !path.exists() {
        let want = Cell::requested(opts)?;
        let (s, c) = want.netns_exist();
        println!("cell is DOWN (no env file {})", path.display());
        if s || c || want.celldir.exists() {
            println!(
                "  but leftovers exist (netns {}: {}, netns {}: {}, {}: {}); `cargo xtask cell down` removes them",
                want.server_netns,
                s,
                want.client_netns,
                c,
                want.celldir.display(),
                want.celldir.exists()
            );
        }
        return Ok(false);
    }
    let c = Cell::from_env_file(&path)?;
    println!(
        "cell {} (realm {}), env file {}",
        c.cell,
        c.realm,
        path.display()
    );
    let t = Instant::now();
    let mut all = true;
    let mut check = |what: &str, r: Result<String, String>| match r {
        Ok(detail) => println!(
            "  ok    {what}{}",
            if detail.is_empty() {
                String::new()
            } else {
                format!(": {detail}")
            }
        ),
        Err(why) => {
            all = false;
            println!("  FAIL  {what}: {why}");
        }
    };
    let (s, cl) = c.netns_exist();
    check(
        "network namespaces",
        if s && cl {
            Ok(format!(
                "{} ({}), {} ({})",
                c.server_netns, c.server_ip, c.client_netns, c.client_ip
            ))
        } else {
            Err(format!(
                "{} exists: {s}, {} exists: {cl}",
                c.server_netns, c.client_netns
            ))
        },
    );
    if !(s && cl) {
        println!("cell is BROKEN (`cargo xtask cell down` then `cell up`)");
        return Ok(false);
    }
    for (pidfile, comm) in [
        ("pids/bosserver.pid", "bosserver"),
        ("pids/krb5kdc.pid", "krb5kdc"),
        ("var-lib-openafs/local/dafs.file.pid", "dafileserver"),
    ] {
        let pid = fs::read_to_string(c.celldir.join(pidfile)).unwrap_or_default();
        let pid = pid.trim();
        let alive = !pid.is_empty()
            && fs::read_to_string(format!("/proc/{pid}/comm"))
                .map(|s| s.trim() == comm)
                .unwrap_or(false);
        check(
            &format!("{comm} running"),
            if alive {
                Ok(format!("pid {pid}"))
            } else {
                Err(format!("no live {comm} (pid file {pidfile}: {pid:?})"))
            },
        );
    }
    let short = Duration::from_secs(20);
    let cli = |args: &[&str]| capture(&mut c.labexec(&c.client_netns, args), short);
    check(
        "vos listaddrs shows exactly the two server addresses",
        match cli(&["vos", "listaddrs", "-noresolve", "-noauth"]) {
            Ok(o)
                if o.ok() && {
                    let mut got: Vec<&str> = o.stdout.split_whitespace().collect();
                    got.sort();
                    let mut want = [c.server_ip.as_str(), c.server2_ip.as_str()];
                    want.sort();
                    got == want
                } =>
            {
                Ok(format!("{} {}", c.server_ip, c.server2_ip))
            }
            Ok(o) if o.ok() => Err(format!(
                "got {:?}, want only {} and {}",
                o.stdout.split_whitespace().collect::<Vec<_>>(),
                c.server_ip,
                c.server2_ip
            )),
            Ok(o) => Err(o.why()),
            Err(e) => Err(e),
        },
    );
    check(
        "vos listvldb",
        match cli(&["vos", "listvldb", "-noresolve", "-noauth"]) {
            Ok(o) if o.ok() => vldb_verdict(&c, &o.stdout),
            Ok(o) => Err(o.why()),
            Err(e) => Err(e),
        },
    );
    for ns in [&c.server_netns, &c.client_netns] {
        check(
            &format!("no default route in {ns}"),
            match capture(
                Command::new("ip").args(["-n", ns, "route", "show", "default"]),
                short,
            ) {
                Ok(o) if o.ok() && o.stdout.trim().is_empty() => Ok(String::new()),
                Ok(o) if o.ok() => Err(o.stdout.trim().to_string()),
                Ok(o) => Err(o.why()),
                Err(e) => Err(e),
            },
        );
    }
    let gw = host_gateway().unwrap_or_else(|| "203.0.113.1".into());
    check(
        &format!(
            "no route from {} to the host's network ({gw})",
            c.client_netns
        ),
        match capture(
            Command::new("ip").args(["-n", &c.client_netns, "route", "get", &gw]),
            short,
        ) {
            Ok(o) if !o.ok() => Ok(String::new()),
            Ok(o) => Err(format!("route exists: {}", o.stdout.trim())),
            Err(e) => Err(e),
        },
    );
    check(
        &format!("anonymous afsio read /afs/{}/hello.txt", c.cell),
        match cli(&[
            "afsio",
            "read",
            "-file",
            &format!("/afs/{}/hello.txt", c.cell),
        ]) {
            Ok(o) if o.ok() && o.stdout == "hello from the lab cell\n" => Ok(String::new()),
            Ok(o) => Err(format!("got {:?} ({})", o.stdout, o.why())),
            Err(e) => Err(e),
        },
    );
    check(
        &format!("{} ccache valid", c.admin),
        match capture(
            Command::new("klist")
                .arg("-s")
                .env("KRB5CCNAME", format!("FILE:{}", c.admin_ccache().display()))
                .env("KRB5_CONFIG", c.krb5_config()),
            short,
        ) {
            Ok(o) if o.ok() => Ok(c.admin_ccache().display().to_string()),
            Ok(_) => Err("klist -s: no valid ticket (expired?)".into()),
            Err(e) => Err(e),
        },
    );
    if all {
        println!("cell is UP (checks took {})", secs(t.elapsed()));
    } else {
        println!("cell is BROKEN (`cargo xtask cell down` then `cell up`)");
    }
    Ok(all)
}

/// Judge `vos listvldb -noresolve` output.
fn vldb_verdict(c: &Cell, out: &str) -> Result<String, String> {
    let names: Vec<&str> = out
        .lines()
        .filter(|l| {
            l.chars()
                .next()
                .is_some_and(|ch| ch.is_ascii_alphanumeric())
        })
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| !w.starts_with("VLDB") && !w.starts_with("Total"))
        .collect();
    for v in ["root.afs", "root.cell", "vol.test"] {
        if !names.contains(&v) {
            return Err(format!("volume {v} missing (have {names:?})"));
        }
    }
    let servers: Vec<&str> = out
        .lines()
        .filter_map(|l| l.trim().strip_prefix("server "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    if let Some(bad) = servers
        .iter()
        .find(|s| **s != c.server_ip && **s != c.server2_ip)
    {
        return Err(format!(
            "a site on {bad}, want only {} and {}",
            c.server_ip, c.server2_ip
        ));
    }
    let ro = out.lines().filter(|l| l.contains("RO Site")).count();
    if ro < 2 {
        return Err(format!("{ro} RO sites, want 2 (root.afs, root.cell)"));
    }
    if out.to_ascii_lowercase().contains("not released") {
        return Err("an RO site is not released".into());
    }
    Ok(format!("{} volumes, RO sites released", names.len()))
}

fn host_gateway() -> Option<String> {
    let o = capture(
        Command::new("ip").args(["route", "show", "default"]),
        Duration::from_secs(5),
    )
    .ok()?;
    let words: Vec<&str> = o.stdout.split_whitespace().collect();
    words
        .windows(2)
        .find(|w| w[0] == "via")
        .map(|w| w[1].to_string())
}

/// `cell check`: the kit's full cell-check.sh (writes in shared/, link cut).
pub fn check(opts: &CellOpts) -> Res<()> {
    util::require_root("cell check")?;
    let c = running(opts)?;
    run(&mut c.script("cell-check.sh")).map_err(|e| format!("cell check failed: {e}"))
}

/// `cell exec [--server] -- CMD...`: run CMD via labexec in the client (or
/// server) netns, with the env file's variables, KRB5CCNAME = admin's ccache,
/// the current directory kept and the workspace + target dir visible.
pub fn exec(opts: &CellOpts, server: bool, cmd: &[String]) -> Res<i32> {
    util::require_root("cell exec")?;
    if cmd.is_empty() {
        return Err("cell exec: no command (usage: cargo xtask cell exec -- CMD [ARGS...])".into());
    }
    let c = running(opts)?;
    let ns = if server {
        &c.server_netns
    } else {
        &c.client_netns
    };
    if !Path::new("/run/netns").join(ns).exists() {
        return Err(format!(
            "netns {ns} does not exist: the cell is broken (`cargo xtask cell down` then `cell up`)"
        ));
    }
    let bind = format!(
        "{}:{}",
        util::workspace_root().display(),
        util::target_dir().display()
    );
    let mut command = c.labexec(ns, cmd);
    command
        .env("KRB5CCNAME", format!("FILE:{}", c.admin_ccache().display()))
        .env("LABEXEC_BIND", bind);
    if let Ok(cwd) = std::env::current_dir() {
        command.env("LABEXEC_CWD", cwd);
    }
    let st = command
        .status()
        .map_err(|e| format!("cannot run {}: {e}", labexec_path().display()))?;
    use std::os::unix::process::ExitStatusExt;
    Ok(st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0)))
}
