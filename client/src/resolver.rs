//! External resolvers, shaped like git's merge drivers: a command gets
//! the base, local and server versions as files (`%O`, `%A`, `%B`), the
//! conflict's path (`%P`) and kind (`%K`); it leaves its merge in `%A` and
//! says by its exit status whether it merged (0), left conflict markers
//! (1), or failed (anything else). It runs as the conflict's owner, in a
//! directory of its own, with a time limit: its own reads of `/afs` use
//! that user's token and rights, never the daemon's.
//!
//! Configured in the daemon's config file as `resolver.NAME = COMMAND`
//! (run through `sh -c`, the `%` names replaced by quoted paths) and used
//! with `afsd-rs resolve --merge=NAME`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::{Error, Result};

/// A resolver's verdict.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// `%A` holds a clean merge.
    Merged(Vec<u8>),
    /// Not merged cleanly (exit 1): `%A` holds a merge with conflict
    /// markers, or is left as it was when the resolver refused; `said` is
    /// what it printed on stderr (trimmed and bounded), its reason, which
    /// the resolution passes on to the user.
    Conflicted { merged: Vec<u8>, said: String },
}

/// Most of a resolver's stderr passed on, in bytes: a reason, not a log.
const SAID_MAX: usize = 1024;

/// A resolver's stderr for a message: trimmed, cut at [`SAID_MAX`].
fn said(stderr: &[u8]) -> String {
    let s = String::from_utf8_lossy(stderr);
    let s = s.trim();
    if s.len() <= SAID_MAX {
        return s.to_string();
    }
    let mut end = SAID_MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// Longest a resolver may run.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(120);

fn quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', r"'\''"))
}

/// The primary group of `uid` (nogroup when it has no passwd entry).
fn gid_of(uid: u32) -> u32 {
    // SAFETY: getpwuid returns a pointer into static storage or null; it
    // is read at once, before any other call could reuse it.
    let pw = unsafe { libc::getpwuid(uid) };
    if pw.is_null() {
        65534
    } else {
        // SAFETY: non-null, as checked.
        unsafe { (*pw).pw_gid }
    }
}

/// A private directory for one run, owned by `uid`; removed when dropped.
struct Workdir(PathBuf);

impl Drop for Workdir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn chown(p: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    std::os::unix::fs::chown(p, Some(uid), Some(gid))
}

/// Runs `command` on the three versions as `uid`.
pub(crate) async fn run(
    command: &str,
    uid: u32,
    base: &[u8],
    local: &[u8],
    server: &[u8],
    path: &str,
    kind: &str,
) -> Result<Outcome> {
    use std::os::unix::fs::PermissionsExt;
    let io = |what: &str, e: std::io::Error| Error::Invalid(format!("resolver: {what}: {e}"));
    let gid = gid_of(uid);
    let dir = std::env::temp_dir().join(format!(
        "afsd-resolver-{}-{}",
        std::process::id(),
        rand::random::<u64>()
    ));
    std::fs::create_dir(&dir).map_err(|e| io("its directory", e))?;
    let dir = Workdir(dir);
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| io("its directory", e))?;
    let leaf = path.rsplit('/').next().unwrap_or("file");
    let mut files = Vec::new();
    for (side, data) in [("base", base), ("local", local), ("server", server)] {
        let p = dir.0.join(format!("{side}-{leaf}"));
        std::fs::write(&p, data).map_err(|e| io("writing a version", e))?;
        if uid != 0 {
            chown(&p, uid, gid).map_err(|e| io("giving it to the user", e))?;
        }
        files.push(p);
    }
    if uid != 0 {
        chown(&dir.0, uid, gid).map_err(|e| io("giving it to the user", e))?;
    }
    let script = command
        .replace("%O", &quote(&files[0]))
        .replace("%A", &quote(&files[1]))
        .replace("%B", &quote(&files[2]))
        .replace("%P", &quote(Path::new(path)))
        .replace("%K", &quote(Path::new(kind)));
    let mut cmd = tokio::process::Command::new("sh");
    cmd.arg("-c")
        .arg(&script)
        .current_dir(&dir.0)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    if uid != 0 {
        cmd.uid(uid).gid(gid);
    }
    let child = cmd.spawn().map_err(|e| io("starting it", e))?;
    let out = tokio::time::timeout(TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| {
            Error::Invalid(format!(
                "resolver: still running after {TIMEOUT:?}; stopped"
            ))
        })?
        .map_err(|e| io("waiting for it", e))?;
    let merged = || std::fs::read(&files[1]).map_err(|e| io("reading its merge", e));
    match out.status.code() {
        Some(0) => Ok(Outcome::Merged(merged()?)),
        Some(1) => Ok(Outcome::Conflicted {
            merged: merged()?,
            said: said(&out.stderr),
        }),
        _ => Err(Error::Invalid(format!(
            "resolver failed ({}): {}",
            out.status,
            said(&out.stderr)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn exit_status_says_merged_conflicted_or_failed() {
        rt().block_on(async {
            let me = unsafe { libc::getuid() };
            let r = run(
                "cat %B >> %A",
                me,
                b"o\n",
                b"a\n",
                b"b\n",
                "/x/f.txt",
                "update/update",
            )
            .await
            .unwrap();
            assert_eq!(r, Outcome::Merged(b"a\nb\n".to_vec()));
            let r = run(
                "echo '<<<' >> %A; echo '  row 3 changed on both sides ' >&2; exit 1",
                me,
                b"",
                b"a\n",
                b"",
                "/x/it's.txt",
                "k",
            )
            .await
            .unwrap();
            assert_eq!(
                r,
                Outcome::Conflicted {
                    merged: b"a\n<<<\n".to_vec(),
                    said: "row 3 changed on both sides".into()
                }
            );
            let e = run("echo broken >&2; exit 3", me, b"", b"", b"", "/f", "k")
                .await
                .unwrap_err();
            assert!(e.to_string().contains("broken"), "{e}");
            // It is told the path and kind.
            let r = run(
                "printf '%s %s' %P %K > %A",
                me,
                b"",
                b"",
                b"",
                "/d/f",
                "name/name",
            )
            .await
            .unwrap();
            assert_eq!(r, Outcome::Merged(b"/d/f name/name".to_vec()));
        });
    }

    #[test]
    fn what_a_resolver_says_is_trimmed_and_bounded() {
        assert_eq!(said(b"\n  why\n"), "why");
        let long = "\u{e9}".repeat(SAID_MAX);
        let s = said(long.as_bytes());
        assert!(s.len() <= SAID_MAX + 3 && s.ends_with("..."), "{}", s.len());
    }
}
