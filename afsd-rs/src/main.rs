//! `afsd-rs`: the daemon that mounts `/afs`, and the user commands that talk
//! to it.

use std::ffi::CString;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use client::{AfsClient, ClientConfig};

mod admin_cli;
mod agent;
mod agent_notice;
mod aklog;
mod conflict_cli;
mod control;
mod events_cli;
mod events_ctl;
mod keep_both;
mod merge_git;
mod merge_sqlite;
mod miss_cli;
mod miss_ctl;
mod offline_cli;
mod offline_ctl;
mod pin_cli;
mod pin_ctl;
mod rules;

#[derive(Parser)]
#[command(
    name = "afsd-rs",
    version,
    about = "A userspace AFS client with a persistent cache"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Mount /afs: the root lists every cell of CellServDB as CELL and .CELL.
    Mount {
        /// Directory holding ThisCell and CellServDB.
        #[arg(long, default_value = "/etc/openafs")]
        conf_dir: PathBuf,
        /// Directory of the persistent cache.
        #[arg(long, default_value = "/var/cache/afsd-rs")]
        cache_dir: PathBuf,
        /// Stay in the foreground and log to stderr.
        #[arg(long)]
        foreground: bool,
        /// Seconds a server may stay silent before a call fails (ETIMEDOUT).
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=3600))]
        dead_time: u64,
        /// The control socket (aklog, tokens, unlog talk to it).
        #[arg(long, default_value = control::DEFAULT_SOCKET)]
        control_socket: PathBuf,
        /// rxkad level of authenticated connections.
        #[arg(long, value_enum, default_value_t = Level::Crypt)]
        rxkad_level: Level,
        /// Most file data the cache holds (e.g. 500M, 2G; 0: unlimited).
        /// Default: `cache-size` in the config file, else 1G.
        #[arg(long, value_parser = parse_size)]
        cache_size: Option<u64>,
        /// Most data chunks the cache holds (0: unlimited).
        #[arg(long)]
        cache_entries: Option<u64>,
        /// Most file data pins may hold (e.g. 400M). Default: `pin-reserve`
        /// in the config file, else half the cache size.
        #[arg(long, value_parser = parse_size)]
        pin_reserve: Option<u64>,
        /// Config file of `key = value` lines (cache-size, cache-entries).
        #[arg(long, default_value = "/etc/afsd-rs.conf")]
        config: PathBuf,
        /// Where to mount.
        mountpoint: PathBuf,
    },
    /// Get an AFS token from your Kerberos tickets (kinit first) and give it
    /// to the daemon, as OpenAFS's aklog does.
    Aklog {
        /// The cell (default: ThisCell).
        #[arg(short = 'c', long = "cell")]
        cell: Option<String>,
        /// The Kerberos realm (default: the cell's realm).
        #[arg(short = 'k', long = "realm")]
        realm: Option<String>,
        /// Print each step.
        #[arg(short = 'd')]
        debug: bool,
        /// Do not look up the AFS id in the protection database.
        #[arg(long = "noprdb")]
        noprdb: bool,
        #[arg(long, default_value = "/etc/openafs")]
        conf_dir: PathBuf,
        #[arg(long, env = "AFSD_CONTROL", default_value = control::DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// The persistent cache: `afsd-rs cache stats`.
    Cache {
        #[command(subcommand)]
        what: CacheCommand,
        #[arg(long, env = "AFSD_CONTROL", default_value = control::DEFAULT_SOCKET, global = true)]
        socket: PathBuf,
    },
    /// Forget what the cache holds of these files, as `fs flush`.
    Flush {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        #[arg(long, env = "AFSD_CONTROL", default_value = control::DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Forget what the cache holds of the volumes of these paths.
    Flushvolume {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        #[arg(long, env = "AFSD_CONTROL", default_value = control::DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Change the cache size limit (root only), as `fs setcachesize`.
    Setcachesize {
        #[arg(value_parser = parse_size)]
        size: u64,
        #[arg(long, env = "AFSD_CONTROL", default_value = control::DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// List your tokens.
    Tokens {
        #[arg(long, env = "AFSD_CONTROL", default_value = control::DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Discard your tokens (all, or one cell's).
    Unlog {
        #[arg(short = 'c', long = "cell")]
        cell: Option<String>,
        #[arg(long, env = "AFSD_CONTROL", default_value = control::DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Print the counters of the daemon serving MOUNTPOINT: RPCs per
    /// opcode, cache hits and misses, bytes fetched.
    Stats {
        /// The mount point (or any directory in it).
        mountpoint: PathBuf,
    },
    /// The `fs`-style commands (listacl, setacl, examine, ...).
    #[command(flatten)]
    Admin(admin_cli::AdminCommand),
    /// Disconnected operation (offline, online, status, sync, conflicts).
    #[command(flatten)]
    Offline(offline_cli::OfflineCommand),
    /// Working sets (pin, unpin, pins).
    #[command(flatten)]
    Pin(pin_cli::PinCommand),
    /// The miss policy (waiting, misses).
    #[command(flatten)]
    Miss(miss_cli::MissCommand),
    /// Events and desktop notifications (events, agent).
    #[command(flatten)]
    Events(events_cli::EventsCommand),
    /// The built-in `sqlite` resolver, run by the daemon as a merge driver
    /// (`--merge=sqlite`): merges LOCAL's row changes since BASE into
    /// SERVER's database and leaves the result in LOCAL (exit 0), or
    /// refuses with the reason on stderr, LOCAL untouched (exit 1).
    #[command(hide = true)]
    MergeSqlite {
        base: PathBuf,
        local: PathBuf,
        server: PathBuf,
    },
}

#[derive(Subcommand)]
enum CacheCommand {
    /// Bytes and chunks held, dirty bytes, and the limits.
    Stats,
}

/// `500M`, `2G`, `1024K`, `123` (bytes).
fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m = match c.to_ascii_uppercase() {
                'K' => 1u64 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => return Err(format!("unknown size suffix in {s:?} (use K, M, G or T)")),
            };
            (&s[..i], m)
        }
        _ => (s, 1),
    };
    num.trim()
        .parse::<u64>()
        .map_err(|_| format!("{s:?} is not a size"))?
        .checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// `90`, `90s`, `15m`, `12h`, `14d`: seconds.
fn parse_duration(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, 's')) => (&s[..i], 1),
        Some((i, 'm')) => (&s[..i], 60),
        Some((i, 'h')) => (&s[..i], 3600),
        Some((i, 'd')) => (&s[..i], 86400),
        _ => (s, 1),
    };
    num.trim()
        .parse::<u64>()
        .map_err(|_| format!("{s:?}: expected a duration such as 90s, 15m, 12h or 14d"))?
        .checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too long"))
}

/// Reads `key = value` lines; `#` starts a comment. A missing file is empty.
fn read_config(path: &Path) -> Result<std::collections::HashMap<String, String>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Default::default()),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let mut map = std::collections::HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .ok_or_else(|| format!("{}:{}: expected key = value", path.display(), n + 1))?;
        let (k, v) = (k.trim().to_string(), v.trim().to_string());
        // Rules come one a line, in order.
        match map.get_mut(&k) {
            Some(rules) if k == "miss-rule" => *rules = format!("{rules}\n{v}"),
            _ => {
                map.insert(k, v);
            }
        }
    }
    Ok(map)
}

/// The path's fid and cell, from the xattrs afsd-rs serves.
fn fid_of(path: &Path) -> Result<(String, (u32, u32, u32)), String> {
    let cell = read_xattr(path, "afs.cell")
        .map_err(|e| format!("{}: {e} (not in /afs?)", path.display()))?;
    let fid = read_xattr(path, "afs.fid").map_err(|e| format!("{}: {e}", path.display()))?;
    let fid = String::from_utf8_lossy(&fid).to_string();
    let parts: Vec<u32> = fid
        .split(':')
        .filter_map(|p| u32::from_str_radix(p, 16).ok())
        .collect();
    match parts.as_slice() {
        [v, n, u] => Ok((String::from_utf8_lossy(&cell).into_owned(), (*v, *n, *u))),
        _ => Err(format!("{}: unexpected afs.fid {fid:?}", path.display())),
    }
}

fn control_ok(socket: &Path, req: &control::Request, what: &str) -> ExitCode {
    match control::call(socket, req) {
        Ok(control::Response::Ok(msg)) => {
            if !msg.is_empty() {
                println!("{msg}");
            }
            ExitCode::SUCCESS
        }
        Ok(control::Response::Error(e)) => {
            eprintln!("{what}: {e}");
            ExitCode::FAILURE
        }
        Ok(other) => {
            eprintln!("{what}: unexpected answer {other:?}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("{what}: {e}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Level {
    Clear,
    Auth,
    Crypt,
}

/// OpenAFS commands take single-dash long options (`-noprdb`, `-cell`).
fn openafs_style_args() -> Vec<std::ffi::OsString> {
    std::env::args_os()
        .map(|a| match a.to_str() {
            Some("-noprdb") | Some("-cell") | Some("-realm") => {
                format!("-{}", a.to_string_lossy()).into()
            }
            _ => a,
        })
        .collect()
}

fn main() -> ExitCode {
    let cli = Cli::parse_from(openafs_style_args());
    match cli.command {
        Command::Mount {
            conf_dir,
            cache_dir,
            foreground,
            dead_time,
            control_socket,
            rxkad_level,
            cache_size,
            cache_entries,
            pin_reserve,
            config: config_file,
            mountpoint,
        } => {
            let file = match read_config(&config_file) {
                Ok(f) => f,
                Err(e) => {
                    eprintln!("afsd-rs: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let mut config = ClientConfig::new(conf_dir, cache_dir);
            let from_file = |k: &str| {
                file.get(k).map(|v| {
                    parse_size(v).map_err(|e| format!("{}: {k}: {e}", config_file.display()))
                })
            };
            match (
                cache_size.map(Ok).or_else(|| from_file("cache-size")),
                cache_entries.map(Ok).or_else(|| from_file("cache-entries")),
            ) {
                (Some(Err(e)), _) | (_, Some(Err(e))) => {
                    eprintln!("afsd-rs: {e}");
                    return ExitCode::FAILURE;
                }
                (bytes, entries) => {
                    if let Some(Ok(b)) = bytes {
                        config.cache_bytes = b;
                    }
                    if let Some(Ok(n)) = entries {
                        config.cache_entries = n;
                    }
                }
            }
            match pin_reserve.map(Ok).or_else(|| from_file("pin-reserve")) {
                Some(Err(e)) => {
                    eprintln!("afsd-rs: {e}");
                    return ExitCode::FAILURE;
                }
                Some(Ok(b)) => config.pin_reserve = Some(b),
                None => {}
            }
            for (k, v) in &file {
                if let Some(name) = k.strip_prefix("resolver.") {
                    config.resolvers.insert(name.to_string(), v.clone());
                }
            }
            // The built-in sqlite resolver is this executable, unless the
            // config file names another command.
            if !config.resolvers.contains_key("sqlite") {
                match std::env::current_exe() {
                    Ok(exe) => {
                        config
                            .resolvers
                            .insert("sqlite".into(), merge_sqlite::command(&exe));
                    }
                    Err(e) => eprintln!(
                        "afsd-rs: the sqlite resolver is not available (where is this program? {e})"
                    ),
                }
            }
            if let Some(v) = file.get("conflict-retention") {
                match parse_duration(v) {
                    Ok(secs) => config.conflict_retention = secs,
                    Err(e) => {
                        eprintln!(
                            "afsd-rs: {}: conflict-retention: {e}",
                            config_file.display()
                        );
                        return ExitCode::FAILURE;
                    }
                }
            }
            config.dead_time = Duration::from_secs(dead_time);
            if let Err(e) = miss_cli::configure(&file, &config_file, &mountpoint, &mut config) {
                eprintln!("afsd-rs: {e}");
                return ExitCode::FAILURE;
            }
            config.rxkad_level = match rxkad_level {
                Level::Clear => rx::RxkadLevel::Clear,
                Level::Auth => rx::RxkadLevel::Auth,
                Level::Crypt => rx::RxkadLevel::Crypt,
            };
            mount(config, &mountpoint, foreground, &control_socket)
        }
        Command::Aklog {
            cell,
            realm,
            debug,
            noprdb,
            conf_dir,
            socket,
        } => {
            match aklog::run(aklog::Options {
                cell,
                realm,
                debug,
                noprdb,
                conf_dir: &conf_dir,
                socket: &socket,
            }) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("aklog: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Tokens { socket } => tokens(&socket),
        Command::Cache {
            what: CacheCommand::Stats,
            socket,
        } => match control::call(&socket, &control::Request::CacheStats) {
            Ok(control::Response::CacheStats {
                bytes,
                entries,
                dirty_bytes,
                max_bytes,
                max_entries,
                disk_bytes,
                pinned_bytes,
            }) => {
                let limit = |v: u64| {
                    if v == 0 {
                        "unlimited".to_string()
                    } else {
                        v.to_string()
                    }
                };
                println!("bytes {bytes}");
                println!("entries {entries}");
                println!("dirty_bytes {dirty_bytes}");
                println!("pinned_bytes {pinned_bytes}");
                println!("max_bytes {}", limit(max_bytes));
                println!("max_entries {}", limit(max_entries));
                println!("disk_bytes {disk_bytes}");
                ExitCode::SUCCESS
            }
            Ok(other) => {
                eprintln!("cache stats: unexpected answer {other:?}");
                ExitCode::FAILURE
            }
            Err(e) => {
                eprintln!("cache stats: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Setcachesize { size, socket } => control_ok(
            &socket,
            &control::Request::SetCacheSize { bytes: size },
            "setcachesize",
        ),
        Command::Flush { paths, socket } => {
            let mut code = ExitCode::SUCCESS;
            for p in paths {
                match fid_of(&p) {
                    Ok((cell, fid)) => {
                        if control_ok(&socket, &control::Request::Flush { cell, fid }, "flush")
                            != ExitCode::SUCCESS
                        {
                            code = ExitCode::FAILURE;
                        }
                    }
                    Err(e) => {
                        eprintln!("flush: {e}");
                        code = ExitCode::FAILURE;
                    }
                }
            }
            code
        }
        Command::Flushvolume { paths, socket } => {
            let mut code = ExitCode::SUCCESS;
            for p in paths {
                match fid_of(&p) {
                    Ok((cell, fid)) => {
                        let req = control::Request::FlushVolume { cell, fid };
                        if control_ok(&socket, &req, "flushvolume") != ExitCode::SUCCESS {
                            code = ExitCode::FAILURE;
                        }
                    }
                    Err(e) => {
                        eprintln!("flushvolume: {e}");
                        code = ExitCode::FAILURE;
                    }
                }
            }
            code
        }
        Command::Unlog { cell, socket } => {
            match control::call(&socket, &control::Request::Unlog { cell }) {
                Ok(control::Response::Ok(msg)) => {
                    println!("{msg}");
                    ExitCode::SUCCESS
                }
                Ok(other) => {
                    eprintln!("unlog: {other:?}");
                    ExitCode::FAILURE
                }
                Err(e) => {
                    eprintln!("unlog: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Admin(cmd) => admin_cli::run(cmd),
        Command::Offline(cmd) => offline_cli::run(cmd),
        Command::Pin(cmd) => pin_cli::run(cmd),
        Command::Miss(cmd) => miss_cli::run(cmd),
        Command::Events(cmd) => events_cli::run(cmd),
        Command::MergeSqlite {
            base,
            local,
            server,
        } => merge_sqlite::run(&base, &local, &server),
        Command::Stats { mountpoint } => match read_xattr(&mountpoint, "afsd.stats") {
            Ok(text) => {
                print!("{}", String::from_utf8_lossy(&text));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!(
                    "afsd-rs stats: cannot read counters from {}: {e} (is afsd-rs mounted there?)",
                    mountpoint.display()
                );
                ExitCode::FAILURE
            }
        },
    }
}

/// Prints the caller's tokens in the shape of OpenAFS's `tokens`.
fn tokens(socket: &Path) -> ExitCode {
    match control::call(socket, &control::Request::Tokens) {
        Ok(control::Response::Tokens { uid, tokens }) => {
            println!("\nTokens held by afsd-rs for uid {uid}:\n");
            for t in tokens {
                let user = t
                    .principal
                    .split('@')
                    .next()
                    .unwrap_or("")
                    .replace('/', ".");
                let when = if t.expired {
                    ">> Expired <<".to_string()
                } else {
                    format!("Expires {}", format_time(t.end))
                };
                println!(
                    "User's (AFS ID {}) rxkad tokens for {}@{} [{}]",
                    t.vice_id, user, t.cell, when
                );
                if t.expired {
                    println!(
                        "   {}",
                        events_cli::expired_note(&format_time(t.end), t.vice_id)
                    );
                }
            }
            println!("   --End of list--");
            ExitCode::SUCCESS
        }
        Ok(other) => {
            eprintln!("tokens: {other:?}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("tokens: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `Nov 25 19:43 2026`, local time, as OpenAFS prints expiry.
fn format_time(secs: u64) -> String {
    let t = secs as libc::time_t;
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: localtime_r fills the struct we own.
    unsafe { libc::localtime_r(&t, &mut tm) };
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{} {:2} {:02}:{:02} {}",
        MONTHS[(tm.tm_mon.clamp(0, 11)) as usize],
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_year + 1900
    )
}

fn read_xattr(path: &Path, name: &str) -> std::io::Result<Vec<u8>> {
    let p = CString::new(path.as_os_str().as_bytes())?;
    let n = CString::new(name)?;
    let mut buf = vec![0u8; 64 * 1024];
    // SAFETY: valid NUL-terminated strings and a buffer of the given length.
    let r = unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    buf.truncate(r as usize);
    Ok(buf)
}

fn mount(
    config: ClientConfig,
    mountpoint: &Path,
    foreground: bool,
    control_socket: &Path,
) -> ExitCode {
    // Tokens live in the cache's store: nothing the daemon creates is
    // readable by other users.
    // SAFETY: umask only changes this process's file-creation mask.
    unsafe { libc::umask(0o077) };
    match std::fs::metadata(mountpoint) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            eprintln!("afsd-rs: {} is not a directory", mountpoint.display());
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("afsd-rs: mount point {}: {e}", mountpoint.display());
            return ExitCode::FAILURE;
        }
    }
    if let Err(e) = std::fs::create_dir_all(&config.cache_dir) {
        eprintln!(
            "afsd-rs: cache directory {}: {e}",
            config.cache_dir.display()
        );
        return ExitCode::FAILURE;
    }
    // The daemon changes to "/": make the paths absolute first.
    let mut config = config;
    if let Ok(p) = std::path::absolute(&config.cache_dir) {
        config.cache_dir = p;
    }
    if let Ok(p) = std::path::absolute(&config.conf_dir) {
        config.conf_dir = p;
    }
    let mountpoint = &std::path::absolute(mountpoint).unwrap_or_else(|_| mountpoint.to_path_buf());
    // Without --foreground the parent waits until the child has mounted (or
    // failed), so that the exit status and error message are the mount's.
    let mut status_pipe = None;
    if !foreground {
        match daemonize(&config.cache_dir) {
            Ok(Some(code)) => return code,
            Ok(None) => {}
            Err(e) => {
                eprintln!("afsd-rs: cannot start the daemon: {e}");
                return ExitCode::FAILURE;
            }
        }
        status_pipe = DAEMON_PIPE.with(|p| p.take());
    }
    init_logging();
    let report = |msg: &str| {
        if let Some(fd) = &status_pipe {
            use std::io::Write;
            let mut f = std::fs::File::from(fd.try_clone().expect("dup of the status pipe"));
            let _ = f.write_all(msg.as_bytes());
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let msg = format!("afsd-rs: cannot start the runtime: {e}\n");
            eprint!("{msg}");
            report(&msg);
            return ExitCode::FAILURE;
        }
    };
    let control_socket =
        std::path::absolute(control_socket).unwrap_or_else(|_| control_socket.to_path_buf());
    let result = rt.block_on(run(config, mountpoint, &control_socket, &report));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("afsd-rs: {msg}");
            report(&format!("afsd-rs: {msg}\n"));
            ExitCode::FAILURE
        }
    }
}

async fn run(
    config: ClientConfig,
    mountpoint: &Path,
    control_socket: &Path,
    report: &dyn Fn(&str),
) -> Result<(), String> {
    let check_timeout = config.dead_time.min(Duration::from_secs(20)) * 2 + Duration::from_secs(2);
    let conf_dir = config.conf_dir.clone();
    let (client, invalidations) = AfsClient::start(config).await.map_err(|e| e.to_string())?;
    let cells = client.cells();
    // Only the local cell is asked anything at start: the other cells of
    // CellServDB (Debian's lists some 200 of them) are contacted when a path
    // in them is looked up, never by mounting or by listing /afs.
    let home = client.this_cell().unwrap_or_else(|| "(none)".into());
    match tokio::time::timeout(check_timeout, client.check_this_cell()).await {
        Ok(Ok(Some(_))) => {}
        Ok(Ok(None)) => tracing::info!(
            "no ThisCell in {}: no local cell, so none is checked at mount; \
             /afs lists the {} cells of CellServDB",
            conf_dir.display(),
            cells.len()
        ),
        // A cell this cache used before is served offline from it: the
        // daemon starts, and its volumes come back when they answer.
        Ok(Err(e))
            if e.errno() == libc::ETIMEDOUT
                || e.errno() == libc::EHOSTUNREACH
                || e.errno() == libc::ENETDOWN =>
        {
            offline_start(&client, &home, &e.to_string())?
        }
        Ok(Err(e)) => return Err(format!("cell {home}: {e}")),
        Err(_) => offline_start(
            &client,
            &home,
            &format!(
                "no answer from its VL server or fileserver within {}s",
                check_timeout.as_secs()
            ),
        )?,
    }
    let mounted = fuse_front::mount(
        client.clone(),
        tokio::runtime::Handle::current(),
        mountpoint,
        invalidations,
    )
    .map_err(|e| e.to_string())?;
    control::serve(control_socket, client.clone())
        .map_err(|e| format!("control socket {}: {e}", control_socket.display()))?;
    tracing::info!(mountpoint = %mountpoint.display(), cells = cells.len(), this_cell = %home, "mounted");
    report("OK\n");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| e.to_string())?;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = tick.tick() => if mounted.is_finished() {
                tracing::info!("unmounted from outside; exiting");
                break;
            },
        }
    }
    client.shutdown().await;
    let _ = std::fs::remove_file(control_socket);
    mounted.unmount();
    // fuser unmounts with a plain umount(2), which fails while a process
    // still uses the mount; detach it so /afs is not left dead (ENOTCONN).
    if let Ok(mp) = CString::new(mountpoint.as_os_str().as_bytes()) {
        // SAFETY: umount2 on a valid C string; failure (not mounted) is fine.
        unsafe { libc::umount2(mp.as_ptr(), libc::MNT_DETACH) };
    }
    tracing::info!("stopped");
    Ok(())
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("AFSD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    // Where journald runs, events also reach the journal with their fields
    // (AFSD_EVENT, AFSD_UID, AFSD_DETAIL); elsewhere the log has them.
    let journald = Path::new("/run/systemd/journal/socket")
        .exists()
        .then(|| {
            tracing_journald::layer().ok().map(|l| {
                l.with_syslog_identifier("afsd-rs".into())
                    .with_field_prefix(None)
            })
        })
        .flatten();
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(journald)
        .init();
}

thread_local! {
    static DAEMON_PIPE: std::cell::Cell<Option<OwnedFd>> = const { std::cell::Cell::new(None) };
}

/// Forks. The parent waits for the child's first report on a pipe and
/// returns the exit code to use; the child returns `None`, detached from the
/// terminal, with stderr going to `afsd-rs.log` in the cache directory.
fn daemonize(cache_dir: &Path) -> std::io::Result<Option<ExitCode>> {
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 writes two descriptors into the array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned here.
    let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(cache_dir.join("afsd-rs.log"))?;
    // SAFETY: no other threads exist yet (the runtime starts after this).
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if pid > 0 {
        drop(wr);
        // The child keeps the pipe open while it runs: read one line.
        let mut msg = String::new();
        use std::io::BufRead;
        let _ = std::io::BufReader::new(std::fs::File::from(rd)).read_line(&mut msg);
        if msg.starts_with("OK") {
            return Ok(Some(ExitCode::SUCCESS));
        }
        if msg.is_empty() {
            msg = format!(
                "afsd-rs: the daemon exited before mounting (see {})\n",
                cache_dir.join("afsd-rs.log").display()
            );
        }
        eprint!("{msg}");
        return Ok(Some(ExitCode::FAILURE));
    }
    drop(rd);
    // SAFETY: plain system calls on descriptors we own.
    unsafe {
        libc::setsid();
        // Keep no directory busy (the one we were started in may be unmounted).
        libc::chdir(c"/".as_ptr());
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null >= 0 {
            libc::dup2(null, 0);
            libc::dup2(null, 1);
            libc::close(null);
        }
        use std::os::fd::AsRawFd;
        libc::dup2(log.as_raw_fd(), 2);
    }
    DAEMON_PIPE.with(|p| p.set(Some(wr)));
    Ok(None)
}

/// The local cell did not answer at mount time: fine when this cache used
/// it before (disconnected operation serves it), an error otherwise (most
/// likely a wrong CellServDB, which must be said at once).
fn offline_start(client: &AfsClient, cell: &str, why: &str) -> Result<(), String> {
    if client.knows_cell(cell) {
        tracing::warn!(
            cell,
            "{why}: starting offline; what the cache holds is served"
        );
        Ok(())
    } else {
        Err(format!("cell {cell}: {why}"))
    }
}

#[cfg(test)]
mod tests {
    use super::parse_duration;

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(parse_duration("90"), Ok(90));
        assert_eq!(parse_duration("15m"), Ok(900));
        assert_eq!(parse_duration("14d"), Ok(14 * 86400));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("d").is_err());
    }
}
