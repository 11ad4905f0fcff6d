//! The `fs`-style commands: listacl, setacl, examine, listquota, whereis,
//! lsmount, checkservers. Their output has the shape of OpenAFS's `fs`
//! (src/venus/fs.c), so scripts and habits carry over.
//!
//! They work through extended attributes of the path, read and written with
//! the caller's own uid, so the daemon applies the caller's token and AFS
//! rights as for any other access: `afs.acl` (read: FetchACL, write:
//! StoreACL), `afsd.volstatus`, `afsd.whereis`, and `afsd.mountpoint.NAME`
//! on a mount point's parent directory (lookup crosses mount points).
//! `checkservers` names no path and asks over the control socket.
//!
//! Options are taken the OpenAFS way: single dash, abbreviations allowed
//! (`-dir`, `-d`, `-acl`, `-a`, `-clear`, `-negative`, `-path`, `-p`), and
//! positional arguments as `fs` takes them (`setacl DIR NAME RIGHTS...`).

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;
use client::{parse_rights, rights_string, Acl};

use crate::control;

/// Program name in messages (OpenAFS's `pn`).
const PN: &str = "afsd-rs";

#[derive(Subcommand)]
pub enum AdminCommand {
    /// List the access control list of each PATH, as `fs listacl`.
    #[command(visible_alias = "la", visible_alias = "lista")]
    Listacl {
        /// [-path] PATH...
        #[arg(allow_hyphen_values = true, num_args = 0.., trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// Change access control lists, as `fs setacl`:
    /// -dir DIR... -acl NAME RIGHTS [NAME RIGHTS...] [-clear] [-negative].
    /// RIGHTS: letters of rlidwka (and ABCDEFGH) or read, write, mail, all,
    /// none.
    #[command(visible_alias = "sa", visible_alias = "seta")]
    Setacl {
        #[arg(allow_hyphen_values = true, num_args = 0.., trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// Show the fid of each PATH and its volume's status, as `fs examine`.
    #[command(visible_alias = "exa")]
    Examine {
        #[arg(allow_hyphen_values = true, num_args = 0.., trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// Show the quota and usage of each PATH's volume, as `fs listquota`.
    #[command(visible_alias = "lq")]
    Listquota {
        #[arg(allow_hyphen_values = true, num_args = 0.., trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// Show the fileservers of each PATH's volume, as `fs whereis`.
    #[command(visible_alias = "whe")]
    Whereis {
        #[arg(allow_hyphen_values = true, num_args = 0.., trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// Tell whether each PATH is a mount point and of which volume, as
    /// `fs lsmount`.
    #[command(visible_alias = "lsm")]
    Lsmount {
        #[arg(allow_hyphen_values = true, num_args = 0.., trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// Probe the fileservers the daemon talks to, as `fs checkservers`.
    Checkservers {
        #[arg(long, env = "AFSD_CONTROL", default_value = control::DEFAULT_SOCKET)]
        socket: PathBuf,
    },
}

/// Runs one of the commands.
pub fn run(cmd: AdminCommand) -> ExitCode {
    let ok = match cmd {
        AdminCommand::Listacl { args } => paths(&args, true).map(|p| listacl(&p)),
        AdminCommand::Setacl { args } => SetAcl::parse(&args).map(|s| s.run()),
        AdminCommand::Examine { args } => paths(&args, true).map(|p| examine(&p)),
        AdminCommand::Listquota { args } => paths(&args, true).map(|p| listquota(&p)),
        AdminCommand::Whereis { args } => paths(&args, true).map(|p| whereis(&p)),
        AdminCommand::Lsmount { args } => paths(&args, false).map(|p| lsmount(&p)),
        AdminCommand::Checkservers { socket } => Ok(checkservers(&socket)),
    };
    match ok {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(msg) => {
            eprintln!("{PN}: {msg}");
            ExitCode::FAILURE
        }
    }
}

/// True when `arg` is an abbreviation (at least `min` letters) of `-name`.
fn is_switch(arg: &str, name: &str, min: usize) -> bool {
    let Some(a) = arg.strip_prefix('-') else {
        return false;
    };
    let a = a.strip_prefix('-').unwrap_or(a);
    a.len() >= min && name.starts_with(a)
}

/// The paths of a command taking `[-path] PATH...`; "." when none and
/// `dot_default` (as `fs` does).
fn paths(args: &[String], dot_default: bool) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for a in args {
        if is_switch(a, "path", 1) || is_switch(a, "dir", 1) {
            continue;
        }
        if a.starts_with('-') && a.len() > 1 {
            return Err(format!("unknown option {a}"));
        }
        out.push(a.clone());
    }
    if out.is_empty() {
        if !dot_default {
            return Err("a path is required".into());
        }
        out.push(".".into());
    }
    Ok(out)
}

fn cstr(s: &[u8]) -> Result<CString, i32> {
    CString::new(s).map_err(|_| libc::EINVAL)
}

/// getxattr(2) on `path` (following symlinks); Err(errno).
fn getxattr(path: &Path, name: &str) -> Result<Vec<u8>, i32> {
    let p = cstr(path.as_os_str().as_bytes())?;
    let n = cstr(name.as_bytes())?;
    let mut buf = vec![0u8; 64 * 1024];
    // SAFETY: valid NUL-terminated strings and a buffer of the given length.
    let r = unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if r < 0 {
        return Err(std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO));
    }
    buf.truncate(r as usize);
    Ok(buf)
}

/// setxattr(2) on `path`; Err(errno).
fn setxattr(path: &Path, name: &str, value: &[u8]) -> Result<(), i32> {
    let p = cstr(path.as_os_str().as_bytes())?;
    let n = cstr(name.as_bytes())?;
    // SAFETY: valid NUL-terminated strings and a value of the given length.
    let r = unsafe {
        libc::setxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO));
    }
    Ok(())
}

/// A path that is not on an afsd-rs mount has none of our xattrs: to the
/// user that is "not in AFS", OpenAFS's EINVAL.
fn not_afs(errno: i32) -> i32 {
    if errno == libc::ENODATA || errno == libc::ENOTSUP {
        libc::EINVAL
    } else {
        errno
    }
}

fn strerror(errno: i32) -> String {
    let s = std::io::Error::from_raw_os_error(errno).to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// OpenAFS's `Die`: the message for a failed request on `path`.
fn die(errno: i32, path: &str) {
    match errno {
        libc::EINVAL => {
            eprintln!("{PN}: Invalid argument; it is possible that {path} is not in AFS.")
        }
        libc::ENOENT => eprintln!("{PN}: File '{path}' doesn't exist"),
        libc::EROFS => eprintln!("{PN}: You can not change a backup or readonly volume"),
        libc::EACCES | libc::EPERM => {
            eprintln!("{PN}: You don't have the required access rights on '{path}'")
        }
        e => eprintln!("{PN}:'{path}': {}", strerror(e)),
    }
}

fn read_acl(path: &str) -> Result<Acl, i32> {
    let text = getxattr(Path::new(path), client::XATTR_ACL).map_err(not_afs)?;
    Acl::parse(&String::from_utf8_lossy(&text)).ok_or(libc::EIO)
}

fn print_acl(path: &str, acl: &Acl) {
    println!("Access list for {path} is");
    if !acl.plus.is_empty() {
        println!("Normal rights:");
        for (n, r) in &acl.plus {
            println!("  {n} {}", rights_string(*r));
        }
    }
    if !acl.minus.is_empty() {
        println!("Negative rights:");
        for (n, r) in &acl.minus {
            println!("  {n} {}", rights_string(*r));
        }
    }
}

fn listacl(paths: &[String]) -> bool {
    let mut ok = true;
    for (i, p) in paths.iter().enumerate() {
        match read_acl(p) {
            Ok(acl) => {
                print_acl(p, &acl);
                if i + 1 < paths.len() {
                    println!();
                }
            }
            Err(e) => {
                die(e, p);
                ok = false;
            }
        }
    }
    ok
}

/// A parsed `setacl` command line.
struct SetAcl {
    dirs: Vec<String>,
    pairs: Vec<(String, String)>,
    clear: bool,
    negative: bool,
}

impl SetAcl {
    fn parse(args: &[String]) -> Result<SetAcl, String> {
        #[derive(PartialEq)]
        enum At {
            Start,
            Dir,
            Acl,
        }
        let mut at = At::Start;
        let (mut dirs, mut acl) = (Vec::new(), Vec::new());
        let (mut clear, mut negative) = (false, false);
        for a in args {
            if is_switch(a, "dir", 1) {
                at = At::Dir;
            } else if is_switch(a, "acl", 1) {
                at = At::Acl;
            } else if is_switch(a, "clear", 1) {
                clear = true;
            } else if is_switch(a, "negative", 1) {
                negative = true;
            } else if is_switch(a, "id", 2) || is_switch(a, "if", 2) {
                // DFS switches: nothing to do in AFS.
            } else if a.starts_with('-') && a.len() > 1 {
                return Err(format!("unknown option {a}"));
            } else {
                match at {
                    // Positionally the first word is the one directory.
                    At::Start => {
                        dirs.push(a.clone());
                        at = At::Acl;
                    }
                    At::Dir => dirs.push(a.clone()),
                    At::Acl => acl.push(a.clone()),
                }
            }
        }
        if dirs.is_empty() {
            return Err("setacl: a directory (-dir) is required".into());
        }
        if acl.is_empty() {
            return Err("setacl: an access list (-acl NAME RIGHTS) is required".into());
        }
        if acl.len() % 2 != 0 {
            return Err("Missing second half of user/access pair.".into());
        }
        let pairs = acl
            .chunks(2)
            .map(|c| (c[0].clone(), c[1].clone()))
            .collect();
        Ok(SetAcl {
            dirs,
            pairs,
            clear,
            negative,
        })
    }

    fn run(&self) -> bool {
        // Check every rights string before touching anything, as fs exits
        // on the first bad one.
        let mut rights = Vec::new();
        for (name, r) in &self.pairs {
            match parse_rights(r) {
                Ok(bits) => rights.push((name.clone(), r.as_str(), bits)),
                Err(c) => {
                    eprintln!("{PN}: illegal rights character '{c}'.");
                    return false;
                }
            }
        }
        let mut ok = true;
        for dir in &self.dirs {
            let mut acl = match read_acl(dir) {
                Ok(a) => a,
                Err(e) => {
                    die(e, dir);
                    ok = false;
                    continue;
                }
            };
            if self.clear {
                acl = Acl::default();
            }
            for (name, word, bits) in &rights {
                let list = if self.negative {
                    &mut acl.minus
                } else {
                    &mut acl.plus
                };
                let found = list.iter().position(|(n, _)| n.eq_ignore_ascii_case(name));
                match found {
                    // "none" on an absent entry: nothing to remove.
                    None if *word == "none" || *bits == 0 => {}
                    None => list.push((name.clone(), *bits)),
                    Some(i) if *bits == 0 => {
                        list.remove(i);
                    }
                    Some(i) => list[i].1 = *bits,
                }
            }
            let text = acl.to_text();
            if let Err(e) = setxattr(Path::new(dir), client::XATTR_ACL, text.as_bytes()) {
                let e = not_afs(e);
                if e == libc::EINVAL {
                    eprintln!("{PN}: Invalid argument, possible reasons include:");
                    eprintln!("\t-File not in AFS");
                    eprintln!("\t-Too many users on access control list");
                    eprintln!("\t-Tried to add non-existent user to access control list");
                } else {
                    die(e, dir);
                }
                ok = false;
            }
        }
        ok
    }
}

/// What `afsd.volstatus` says.
struct VolStatus {
    fid: String,
    vid: String,
    name: String,
    max_quota: i64,
    used: i64,
    avail: i64,
    total: i64,
    offline_msg: String,
}

fn volstatus(path: &str) -> Result<VolStatus, i32> {
    let raw = getxattr(Path::new(path), client::XATTR_VOLSTATUS).map_err(not_afs)?;
    let text = String::from_utf8_lossy(&raw);
    let mut m = std::collections::HashMap::new();
    for line in text.lines() {
        let (k, v) = line.split_once(' ').unwrap_or((line, ""));
        m.insert(k.to_string(), v.to_string());
    }
    let s = |k: &str| m.get(k).cloned().unwrap_or_default();
    let n = |k: &str| s(k).trim().parse::<i64>().unwrap_or(0);
    Ok(VolStatus {
        fid: s("fid"),
        vid: s("vid"),
        name: s("name"),
        max_quota: n("max_quota"),
        used: n("blocks_in_use"),
        avail: n("part_blocks_avail"),
        total: n("part_max_blocks"),
        offline_msg: s("offline_msg"),
    })
}

fn examine(paths: &[String]) -> bool {
    let mut ok = true;
    for p in paths {
        match volstatus(p) {
            Ok(v) => {
                let volume = v.fid.split('.').next().unwrap_or("");
                println!("File {p} ({}) contained in volume {volume}", v.fid);
                println!("Volume status for vid = {} named {}", v.vid, v.name);
                if !v.offline_msg.trim().is_empty() {
                    println!("Current offline message is {}", v.offline_msg);
                }
                if v.max_quota != 0 {
                    println!("Current disk quota is {}", v.max_quota);
                } else {
                    println!("Current disk quota is unlimited");
                }
                println!("Current blocks used are {}", v.used);
                println!(
                    "The partition has {} blocks available out of {}\n",
                    v.avail, v.total
                );
            }
            Err(e) => {
                die(e, p);
                ok = false;
            }
        }
    }
    ok
}

/// One `fs listquota` line (QuickPrintStatus, without -human).
fn quota_line(v: &VolStatus) -> String {
    let mut s = format!("{:<25.25}", v.name);
    let mut quota_used = 0.0;
    let mut warn = false;
    if v.max_quota != 0 {
        s.push_str(&format!(" {:>10} {:>10}", v.max_quota, v.used));
        quota_used = v.used as f64 / v.max_quota as f64 * 100.0;
    } else {
        s.push_str(&format!("   no limit {:>10}", v.used));
    }
    if quota_used > 90.0 {
        s.push_str(&format!("{quota_used:>5.0}%<<"));
        warn = true;
    } else {
        s.push_str(&format!("{quota_used:>5.0}%  "));
    }
    let part_used = if v.total > 0 {
        100.0 - v.avail as f64 / v.total as f64 * 100.0
    } else {
        0.0
    };
    if part_used > 97.0 {
        s.push_str(&format!("{part_used:>9.0}%<<"));
        warn = true;
    } else {
        s.push_str(&format!("{part_used:>9.0}%  "));
    }
    if warn {
        s.push_str("  <<WARNING");
    }
    s
}

fn listquota(paths: &[String]) -> bool {
    println!(
        "{:<25}{:<11}{:<11}{:<7}{:<11}",
        "Volume Name", "      Quota", "       Used", " %Used", "  Partition"
    );
    let mut ok = true;
    for p in paths {
        match volstatus(p) {
            Ok(v) => println!("{}", quota_line(&v)),
            Err(e) => {
                die(e, p);
                ok = false;
            }
        }
    }
    ok
}

fn whereis(paths: &[String]) -> bool {
    let mut ok = true;
    for p in paths {
        match getxattr(Path::new(p), client::XATTR_WHEREIS).map_err(not_afs) {
            Ok(raw) => {
                let text = String::from_utf8_lossy(&raw);
                let hosts: Vec<&str> = text.split_whitespace().collect();
                // As fs prints it, a space after each host included.
                let mut line = format!(
                    "File {p} is on host{} ",
                    if hosts.len() == 1 { "" } else { "s" }
                );
                for h in hosts {
                    line.push_str(h);
                    line.push(' ');
                }
                println!("{line}");
            }
            Err(e) => {
                die(e, p);
                ok = false;
            }
        }
    }
    ok
}

/// OpenAFS's GetLastComponent: the parent directory and last name of
/// `path`, after following a symlink (flagged).
fn last_component(path: &str) -> Result<(String, String, bool), String> {
    let orig = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("./{path}")
    };
    let mut name = orig.clone();
    let mut thru_symlink = false;
    if let Ok(m) = std::fs::symlink_metadata(&orig) {
        if m.file_type().is_symlink() {
            thru_symlink = true;
            let target = std::fs::read_link(&orig)
                .map_err(|_| format!("Can't read target name for '{orig}' symbolic link!"))?;
            let target = target.to_string_lossy().into_owned();
            name = if target.starts_with('/') {
                target
            } else {
                let dir = &orig[..orig.rfind('/').unwrap_or(0)];
                format!("{dir}/{target}")
            };
        }
    }
    while name.len() > 1 && name.ends_with('/') {
        name.pop();
    }
    let (dir, base) = match name.rfind('/') {
        Some(0) => ("/".to_string(), name[1..].to_string()),
        Some(i) => (name[..i].to_string(), name[i + 1..].to_string()),
        None => (".".to_string(), name.clone()),
    };
    if base == "." || base == ".." {
        return Err(format!(
            "you may not use '.' or '..' as the last component\n{PN}: of a name in this fs command."
        ));
    }
    Ok((dir, base, thru_symlink))
}

fn lsmount(paths: &[String]) -> bool {
    let mut ok = true;
    for p in paths {
        let (dir, base, thru) = match last_component(p) {
            Ok(x) => x,
            Err(msg) => {
                eprintln!("{PN}: {msg}");
                ok = false;
                continue;
            }
        };
        let name = format!("{}{base}", client::XATTR_MOUNTPOINT_PREFIX);
        match getxattr(Path::new(&dir), &name).map_err(not_afs) {
            Ok(v) => println!(
                "'{p}' is a {}mount point for volume '{}'",
                if thru {
                    "symbolic link, leading to a "
                } else {
                    ""
                },
                String::from_utf8_lossy(&v)
            ),
            // ERANGE: the attribute name is too long for the kernel.
            Err(libc::EINVAL) | Err(libc::ERANGE) => {
                eprintln!("'{p}' is not a mount point.");
                ok = false;
            }
            Err(e) => {
                die(e, p);
                ok = false;
            }
        }
    }
    ok
}

fn checkservers(socket: &Path) -> bool {
    match control::call(socket, &control::Request::CheckServers) {
        Ok(control::Response::Servers { down }) if down.is_empty() => {
            println!("All servers are running.");
            true
        }
        Ok(control::Response::Servers { down }) => {
            let mut line =
                String::from("These servers unavailable due to network or server problems: ");
            for h in down {
                line.push(' ');
                line.push_str(&h);
            }
            println!("{line}.");
            false
        }
        Ok(control::Response::Error(e)) => {
            eprintln!("{PN}: {e}");
            false
        }
        Ok(other) => {
            eprintln!("{PN}: unexpected answer {other:?}");
            false
        }
        Err(e) => {
            eprintln!("{PN}: {e}");
            false
        }
    }
}
