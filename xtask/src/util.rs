//! Small std-only helpers: running commands (with timeouts), timing, paths,
//! mount table, root check.

use std::ffi::OsStr;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// Errors are plain messages: printed as `xtask: error: ...`, exit 1.
pub type Res<T> = Result<T, String>;

/// The workspace root (parent of the xtask crate).
pub fn workspace_root() -> PathBuf {
    let xtask = Path::new(env!("CARGO_MANIFEST_DIR"));
    xtask.parent().unwrap_or(xtask).to_path_buf()
}

/// Cargo's target directory: `CARGO_TARGET_DIR` / `CARGO_BUILD_TARGET_DIR`
/// (relative to the current directory, like cargo) or `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    for var in ["CARGO_TARGET_DIR", "CARGO_BUILD_TARGET_DIR"] {
        if let Some(v) = std::env::var_os(var) {
            if !v.is_empty() {
                return absolute(Path::new(&v));
            }
        }
    }
    workspace_root().join("target")
}

/// Make `p` absolute (relative to the current directory), without
/// resolving symlinks; also drops `.` components.
pub fn absolute(p: &Path) -> PathBuf {
    let joined = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .unwrap_or_else(|_| PathBuf::from("/"))
            .join(p)
    };
    joined
        .components()
        .filter(|c| !matches!(c, std::path::Component::CurDir))
        .collect()
}

/// The cargo that runs us (`$CARGO`), else `cargo` from PATH.
pub fn cargo() -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut c = Command::new(cargo);
    c.current_dir(workspace_root());
    c
}

pub fn is_root() -> bool {
    // effective uid = second field of "Uid:" in /proc/self/status
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

pub fn require_root(what: &str) -> Res<()> {
    if is_root() {
        Ok(())
    } else {
        Err(format!(
            "`{what}` needs root (network namespaces, veth, mounts, chroot): run it as root, e.g. `sudo -E cargo xtask ...`"
        ))
    }
}

/// Render a command line for messages.
pub fn show_cmd(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&shell_quote(a));
    }
    s
}

pub fn shell_quote(a: &OsStr) -> String {
    let a = a.to_string_lossy();
    if !a.is_empty()
        && a.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+=:,@%".contains(c))
    {
        a.into_owned()
    } else {
        format!("'{}'", a.replace('\'', "'\\''"))
    }
}

pub fn describe_status(st: &ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (st.code(), st.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        _ => "unknown status".into(),
    }
}

/// Run with inherited stdio; Ok(()) only on exit status 0.
pub fn run(cmd: &mut Command) -> Res<()> {
    let st = cmd
        .status()
        .map_err(|e| format!("cannot run {}: {e}", show_cmd(cmd)))?;
    if st.success() {
        Ok(())
    } else {
        Err(format!(
            "{} failed ({})",
            show_cmd(cmd),
            describe_status(&st)
        ))
    }
}

pub struct Captured {
    /// None if it timed out (and was killed)
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
}

impl Captured {
    pub fn ok(&self) -> bool {
        self.status.map(|s| s.success()).unwrap_or(false)
    }
    /// One-line summary of what went wrong, for messages.
    pub fn why(&self) -> String {
        let st = match self.status {
            None => "timed out".to_string(),
            Some(s) => describe_status(&s),
        };
        let err = self.stderr.trim();
        let err = if err.is_empty() {
            self.stdout.trim()
        } else {
            err
        };
        let last: Vec<&str> = err.lines().rev().take(3).collect();
        if last.is_empty() {
            st
        } else {
            let mut l = last;
            l.reverse();
            format!("{st}: {}", l.join(" | "))
        }
    }
}

/// Run with stdin from /dev/null and stdout/stderr captured; kill after
/// `timeout`.
pub fn capture(cmd: &mut Command, timeout: Duration) -> Res<Captured> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", show_cmd(cmd)))?;
    let out = reader(child.stdout.take());
    let err = reader(child.stderr.take());
    let status = wait_timeout(&mut child, timeout);
    // a grandchild could keep the pipes open: do not wait for ever
    let grace = Duration::from_secs(2);
    Ok(Captured {
        status,
        stdout: out.recv_timeout(grace).unwrap_or_default(),
        stderr: err.recv_timeout(grace).unwrap_or_default(),
    })
}

fn reader<R: Read + Send + 'static>(r: Option<R>) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    if let Some(mut r) = r {
        thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            let _ = tx.send(String::from_utf8_lossy(&v).into_owned());
        });
    }
    rx
}

/// Wait for `child` up to `timeout`; on timeout kill it (by its own PID)
/// and return None.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(st)) => return Some(st),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

pub fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// Mount points of this mount namespace (from /proc/self/mountinfo).
pub fn mount_points() -> Vec<PathBuf> {
    let Ok(s) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    s.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(unescape_mountinfo(m)))
        .collect()
}

fn unescape_mountinfo(s: &str) -> String {
    // octal escapes: \040 (space), \011 (tab), \012 (newline), \134 (backslash)
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 4 <= b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = b[i + 1..i + 4]
                .iter()
                .fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
            out.push(v as u8);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn is_mount_point(p: &Path) -> bool {
    let p = absolute(p);
    mount_points().contains(&p)
}

/// Last `n` lines of a text file ("" if unreadable).
pub fn tail(path: &Path, n: usize) -> String {
    let Ok(bytes) = fs::read(path) else {
        return String::new();
    };
    let s = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
