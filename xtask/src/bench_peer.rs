//! `afsd.fuse` (OpenAFS's own userspace FUSE client, Debian's
//! `openafs-fuse`) as a peer of `cargo xtask bench`: a config dir with the
//! cell's ThisCell + CellServDB and a `cacheinfo`, an empty disk cache, and
//! `afsd.fuse -confdir D -cachedir C -mountdir M -f` (FUSE's foreground
//! flag: unknown switches go to FUSE) in the cell's client netns.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::afsd::{prepare_mountpoint, umount, wait_listable};
use crate::cell::Cell;
use crate::util::{self, capture, wait_timeout, Res};

pub const FUSE_BIN: &str = "afsd.fuse";

/// A running afsd.fuse mount.
pub struct FusePeer {
    child: Child,
    pub mountpoint: PathBuf,
    log: PathBuf,
}

/// The `cacheinfo` line: `MOUNTDIR:CACHEDIR:BLOCKS` (1 KiB blocks).
pub fn cacheinfo(mnt: &Path, cache: &Path, kib: u64) -> String {
    format!("{}:{}:{kib}\n", mnt.display(), cache.display())
}

/// Cache size for a benchmark file of `size_mib`: twice the file plus
/// 256 MiB for the directories, in 1 KiB blocks.
pub fn cache_kib(size_mib: u64) -> u64 {
    (size_mib * 2 + 256) * 1024
}

impl FusePeer {
    /// Mount the cell with afsd.fuse on `dir/afsd.fuse-mnt`, an empty cache
    /// in `dir/afsd.fuse/cache`; wait until `MNT/CELL` is listable.
    pub fn start(c: &Cell, dir: &Path, size_mib: u64) -> Res<FusePeer> {
        let base = dir.join("afsd.fuse");
        let (conf, cache) = (base.join("conf"), base.join("cache"));
        let mnt = dir.join("afsd.fuse-mnt");
        prepare_mountpoint(&mnt)?;
        let _ = fs::remove_dir_all(&cache);
        for d in [&conf, &cache] {
            fs::create_dir_all(d).map_err(|e| format!("cannot create {}: {e}", d.display()))?;
        }
        for f in ["ThisCell", "CellServDB"] {
            let (from, to) = (c.afs_conf_dir().join(f), conf.join(f));
            fs::copy(&from, &to)
                .map_err(|e| format!("cannot copy {} to {}: {e}", from.display(), to.display()))?;
        }
        let ci = conf.join("cacheinfo");
        fs::write(&ci, cacheinfo(&mnt, &cache, cache_kib(size_mib)))
            .map_err(|e| format!("cannot write {}: {e}", ci.display()))?;
        let log = base.join("afsd.fuse.log");
        let logf =
            fs::File::create(&log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        let logf2 = logf
            .try_clone()
            .map_err(|e| format!("cannot dup log file: {e}"))?;
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", c.client_netns))
            .arg(FUSE_BIN)
            .arg("-confdir")
            .arg(&conf)
            .arg("-cachedir")
            .arg(&cache)
            .arg("-mountdir")
            .arg(&mnt)
            .arg("-f")
            .current_dir(&base)
            .stdin(Stdio::null())
            .stdout(logf)
            .stderr(logf2);
        println!(
            "starting: {}  (log: {})",
            util::show_cmd(&cmd),
            log.display()
        );
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", util::show_cmd(&cmd)))?;
        let mut p = FusePeer {
            child,
            mountpoint: mnt,
            log,
        };
        if let Err(e) = p.wait_ready(&c.cell, Duration::from_secs(60)) {
            let _ = p.stop();
            return Err(e);
        }
        Ok(p)
    }

    fn wait_ready(&mut self, cell: &str, limit: Duration) -> Res<()> {
        wait_listable(
            "afsd.fuse",
            &mut self.child,
            &self.mountpoint,
            &self.log,
            cell,
            limit,
        )
    }

    /// `fusermount -u` (afsd.fuse then shuts down and exits), kill it if
    /// it has not exited after 20 s (wait_timeout), and make sure nothing stays mounted.
    pub fn stop(mut self) -> Res<()> {
        let _ = capture(
            Command::new("fusermount").arg("-u").arg(&self.mountpoint),
            Duration::from_secs(30),
        );
        if wait_timeout(&mut self.child, Duration::from_secs(20)).is_none() {
            eprintln!(
                "afsd.fuse (pid {}) did not exit after the unmount: killed",
                self.child.id()
            );
        }
        umount(&self.mountpoint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cacheinfo_line() {
        assert_eq!(
            cacheinfo(Path::new("/m"), Path::new("/c"), 1024),
            "/m:/c:1024\n"
        );
        assert_eq!(cache_kib(64), (128 + 256) * 1024);
    }
}
