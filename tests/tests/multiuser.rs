//! Several users on one mount: root and `nobody` without tokens, alice and
//! bob with one each. The client judges rights itself, before anything changes locally:
//! every refused change is EACCES at once, and afterwards root, alice and
//! the third-party tool all see the original bytes and listing. A store the
//! server refuses fails close and its data vanishes for everyone.

use std::path::{Path, PathBuf};
use std::process::Output;

use afsd_tests::{getxattr, read_as, run_as, scratch, Cell, Mount, ALICE_UID, BOB_UID};

const NOBODY: u32 = 65534;

fn alice_token(cell: &Cell, m: &Mount) {
    let cc = scratch("krb5-mu").join("alice.cc");
    cell.kinit(
        cell.var("USER1"),
        cell.var("USER1_PW"),
        &cc,
        ALICE_UID,
        None,
    );
    cell.aklog_as(ALICE_UID, m, &cc);
}

/// bob: a second token holder, on no ACL of these tests.
fn bob_token(cell: &Cell, m: &Mount) {
    let cc = scratch("krb5-mu").join("bob.cc");
    cell.kinit(cell.var("USER2"), cell.var("USER2_PW"), &cc, BOB_UID, None);
    cell.aklog_as(BOB_UID, m, &cc);
    let out = cell.afsd_as(BOB_UID, m, &cc, &["tokens"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("bob@{}", cell.cell())), "{text}");
}

fn sh_as(uid: u32, script: &str) -> Output {
    run_as(uid, &["sh", "-c", script])
}

/// Sets the ACL of `rel`: administrators everything, system:anyuser `rl`,
/// alice `rights`.
fn set_alice_rights(cell: &Cell, rel: &str, rights: &str) {
    let dir = cell.rw(rel);
    let acl = [
        "system:administrators",
        "all",
        "system:anyuser",
        "rl",
        cell.var("USER1"),
        rights,
    ];
    let mut args = vec!["setacl", dir.as_str()];
    args.extend(acl);
    cell.third_party(&args, None);
}

/// A fresh directory in `shared/` whose ACL grants system:anyuser `rl` and
/// alice everything, with `hello.txt` and `sub/` made by the administrator.
fn workspace(cell: &Cell, m: &Mount, tag: &str) -> (String, PathBuf) {
    let rel = format!("shared/mu-{tag}-{}", std::process::id());
    cell.third_party(&["mkdir", &cell.rw(&rel)], None);
    set_alice_rights(cell, &rel, "all");
    cell.put(&cell.rw(&format!("{rel}/hello.txt")), b"hello\n");
    cell.third_party(&["mkdir", &cell.rw(&format!("{rel}/sub"))], None);
    let dir = m.path(&format!(".{}/{rel}", cell.cell()));
    (rel, dir)
}

fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn every_refused_change_is_eacces_and_leaves_everything_as_it_was() {
    let cell = Cell::from_env();
    let m = Mount::new(&cell, &[]);
    alice_token(&cell, &m);
    bob_token(&cell, &m);
    let (rel, dir) = workspace(&cell, &m, "refusals");
    let d = dir.to_str().unwrap();
    // alice reads first: what she cached must not help anyone else.
    assert_eq!(
        read_as(ALICE_UID, &dir.join("hello.txt")).unwrap(),
        b"hello\n"
    );
    let attempts = [
        format!("echo evil > {d}/hello.txt"),
        format!("echo evil >> {d}/hello.txt"),
        format!("truncate -s 0 {d}/hello.txt"),
        format!("touch {d}/hello.txt"),
        format!("chmod 777 {d}/hello.txt"),
        format!("touch {d}/new.txt"),
        format!("mkdir {d}/newdir"),
        format!("ln -s x {d}/sym"),
        format!("ln {d}/hello.txt {d}/hard"),
        format!("rm -f {d}/hello.txt"),
        format!("rmdir {d}/sub"),
        format!("mv {d}/hello.txt {d}/moved.txt"),
        format!("setfattr -n afs.acl -v \"$(printf '1\\n0\\nsystem:anyuser 127')\" {d}"),
        format!("flock -n {d}/hello.txt true"),
    ];
    for uid in [NOBODY, 0, BOB_UID] {
        for a in &attempts {
            let out = sh_as(uid, a);
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "uid {uid} succeeded: {a}");
            assert!(
                err.contains("Permission denied") || a.starts_with("flock"),
                "uid {uid}: {a}: {err}"
            );
        }
        // access(2) answers the same.
        let w = sh_as(uid, &format!("test -w {d}/hello.txt"));
        assert!(!w.status.success(), "uid {uid}: test -w succeeded");
        let r = sh_as(uid, &format!("test -r {d}/hello.txt"));
        assert!(r.status.success(), "uid {uid}: test -r failed");
    }
    // Everyone still sees the original bytes and listing.
    for uid in [0, NOBODY, ALICE_UID, BOB_UID] {
        assert_eq!(read_as(uid, &dir.join("hello.txt")).unwrap(), b"hello\n");
    }
    assert_eq!(listing(&dir), vec!["hello.txt", "sub"]);
    let server = cell
        .third_party(&["cat", &cell.rw(&format!("{rel}/hello.txt"))], None)
        .stdout;
    assert_eq!(server, b"hello\n");
    let ls = cell.third_party(&["ls", &cell.rw(&rel)], None).stdout;
    let ls = String::from_utf8_lossy(&ls);
    assert!(ls.contains("hello.txt") && ls.contains("sub"), "{ls}");
    for gone in ["new.txt", "newdir", "sym", "hard", "moved.txt"] {
        assert!(!ls.contains(gone), "{gone} reached the server: {ls}");
    }
    // alice, who may, does.
    let out = sh_as(ALICE_UID, &format!("echo mine > {d}/alice.txt"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn owner_mode_bits_bind_everyone() {
    let cell = Cell::from_env();
    let m = Mount::new(&cell, &[]);
    alice_token(&cell, &m);
    let (_rel, dir) = workspace(&cell, &m, "mode");
    let f = dir.join("locked.txt");
    let fs = f.to_str().unwrap();
    let out = sh_as(ALICE_UID, &format!("echo data > {fs} && chmod 077 {fs}"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for uid in [NOBODY, ALICE_UID, 0] {
        let err = read_as(uid, &f).unwrap_err();
        assert!(err.contains("Permission denied"), "uid {uid}: {err}");
        let out = sh_as(uid, &format!("echo x >> {fs}"));
        assert!(!out.status.success(), "uid {uid} wrote a --- file");
    }
}

#[test]
fn a_refused_store_fails_close_and_its_data_vanishes_for_everyone() {
    let cell = Cell::from_env();
    let m = Mount::new(&cell, &[]);
    alice_token(&cell, &m);
    let (rel, dir) = workspace(&cell, &m, "refused");
    // alice opens and writes, in a process of her own (every close of a
    // descriptor stores, and a descriptor of this process would be
    // duplicated into every tool it runs); the administrator then takes
    // her write right away; her close must fail with EACCES.
    let script = "use Fcntl; sysopen(my $f, $ARGV[0], O_WRONLY) or die \"open: $!\"; \
                  syswrite($f, 'CHANGED!!') == 9 or die 'write'; $| = 1; print \"written\\n\"; \
                  my $go = <STDIN>; if (close($f)) { print \"closed 0\\n\" } \
                  else { print 'closed ', $! + 0, \"\\n\" }";
    let mut child = std::process::Command::new("setpriv")
        .args([
            &format!("--reuid={ALICE_UID}"),
            &format!("--regid={ALICE_UID}"),
            "--clear-groups",
            "perl",
            "-e",
            script,
            dir.join("hello.txt").to_str().unwrap(),
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("perl as alice");
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert_eq!(line, "written\n");
    set_alice_rights(&cell, &rel, "rl");
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), b"go\n").unwrap();
    line.clear();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    child.wait().unwrap();
    assert_eq!(
        line,
        format!("closed {}\n", libc::EACCES),
        "close after the ACL change"
    );
    // Gone for everyone: the cache, root, alice, the server.
    for uid in [0, NOBODY, ALICE_UID] {
        assert_eq!(read_as(uid, &dir.join("hello.txt")).unwrap(), b"hello\n");
    }
    let server = cell
        .third_party(&["cat", &cell.rw(&format!("{rel}/hello.txt"))], None)
        .stdout;
    assert_eq!(server, b"hello\n");
    assert!(
        m.log_text().contains("the fileserver refused the store"),
        "no log line naming the refusal"
    );
}

#[test]
fn a_uid_without_rights_sees_nothing_of_alices_private_files() {
    let cell = Cell::from_env();
    let m = Mount::new(&cell, &[]);
    alice_token(&cell, &m);
    bob_token(&cell, &m);
    let private = m.path(&format!("{}/private", cell.cell()));
    let secret = private.join("secret.txt");
    let link_name = format!("link-{}", std::process::id());
    cell.third_party(
        &[
            "symlink",
            &cell.rw(&format!("private/{link_name}")),
            "secret.txt",
        ],
        None,
    );
    let link = m.path(&format!(".{}/private/{link_name}", cell.cell()));
    let out = run_as(ALICE_UID, &["readlink", link.to_str().unwrap()]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "secret.txt");
    assert_eq!(read_as(ALICE_UID, &secret).unwrap(), b"alice's secret\n");
    let ls = run_as(ALICE_UID, &["ls", "-l", private.to_str().unwrap()]);
    assert!(ls.status.success());
    // At once: the kernel keeps no name nor attribute of a directory
    // system:anyuser may not look up in, so every look by another uid
    // comes to the client, which refuses it.
    let s = secret.to_str().unwrap();
    for uid in [NOBODY, 0, BOB_UID] {
        for cmd in [
            format!("stat {s}"),
            format!("ls {}", private.to_str().unwrap()),
            format!("getfattr -n afs.fid {s}"),
            format!("test -e {s}"),
            format!("cat {s}"),
            format!("readlink {}", link.to_str().unwrap()),
        ] {
            let out = sh_as(uid, &cmd);
            assert!(!out.status.success(), "uid {uid}: {cmd} succeeded");
        }
    }
    // root's own xattr call through this process (uid 0, no token).
    assert!(getxattr(&secret, "afs.fid").is_err());
}

#[test]
fn a_file_unlinked_while_open_stays_usable_until_its_last_close() {
    use std::os::unix::fs::{FileExt, MetadataExt};
    let cell = Cell::from_env();
    let m = Mount::new(&cell, &[]);
    let name = format!("unlinked-{}", std::process::id());
    let f = m.path(&format!(".{}/shared/{name}", cell.cell()));
    std::fs::write(&f, b"0123456789").unwrap();
    // Its hidden name, as OpenAFS makes it: from the fid.
    let fid = String::from_utf8(getxattr(&f, "afs.fid").unwrap()).unwrap();
    let parts: Vec<u32> = fid
        .trim()
        .split(':')
        .map(|p| u32::from_str_radix(p, 16).unwrap())
        .collect();
    let hidden = format!(".__afs{:04X}{:04X}", parts[1] & 0xffff, parts[2] & 0xffff);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&f)
        .unwrap();
    std::fs::remove_file(&f).unwrap();
    assert!(!f.exists(), "the name is still there");
    assert_eq!(file.metadata().unwrap().nlink(), 0);
    let mut buf = [0u8; 3];
    file.read_exact_at(&mut buf, 2).unwrap();
    assert_eq!(&buf, b"234");
    file.write_all_at(b"ab", 10).unwrap();
    file.sync_all().unwrap();
    let mut buf = [0u8; 4];
    file.read_exact_at(&mut buf, 8).unwrap();
    assert_eq!(&buf, b"89ab");
    let ls = |cell: &Cell| {
        String::from_utf8_lossy(&cell.third_party(&["ls", &cell.rw("shared")], None).stdout)
            .into_owned()
    };
    assert!(ls(&cell).contains(&hidden), "not hidden on the server");
    drop(file);
    // The release reaches the daemon after close returns: wait for it.
    assert!(
        afsd_tests::wait_until(std::time::Duration::from_secs(5), || {
            let l = ls(&cell);
            !l.contains(&hidden) && !l.contains(&name)
        }),
        "left on the server: {}",
        ls(&cell)
    );
}

fn flock_nb(f: &std::fs::File, op: i32) -> i32 {
    // SAFETY: flock on an open descriptor.
    unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(f), op | libc::LOCK_NB) }
}

#[test]
fn an_interrupted_lock_waiter_leaves_nothing_locked() {
    use std::time::{Duration, Instant};
    let cell = Cell::from_env();
    let a = Mount::new(&cell, &[]);
    let b = Mount::new(&cell, &[]);
    let name = format!("shared/lockwait-{}", std::process::id());
    let pa = a.path(&format!(".{}/{name}", cell.cell()));
    let pb = b.path(&format!(".{}/{name}", cell.cell()));
    std::fs::write(&pa, b"x").unwrap();
    let fa = std::fs::File::open(&pa).unwrap();
    assert_eq!(flock_nb(&fa, libc::LOCK_EX), 0, "a takes the lock");
    let pbs = pb.to_str().unwrap().to_string();
    // A waiter on b killed with SIGKILL, and one interrupted by SIGINT:
    // each ends promptly instead of waiting for the lock.
    for (how, cmd) in [
        ("kill -9", vec!["flock", pbs.as_str(), "true"]),
        (
            "SIGINT",
            vec!["timeout", "-s", "INT", "1", "flock", pbs.as_str(), "true"],
        ),
    ] {
        let mut w = std::process::Command::new(cmd[0])
            .args(&cmd[1..])
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(1500));
        if how == "kill -9" {
            assert!(w.try_wait().unwrap().is_none(), "the waiter did not wait");
            w.kill().unwrap();
        }
        let t = Instant::now();
        let st = loop {
            if let Some(st) = w.try_wait().unwrap() {
                break st;
            }
            assert!(t.elapsed() < Duration::from_secs(5), "{how}: waiter stuck");
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(!st.success(), "{how}: the waiter got the lock");
    }
    // Nothing is left locked for b at the fileserver: once a lets go, b
    // locks at once, and after b, a again.
    assert_eq!(flock_nb(&fa, libc::LOCK_UN), 0);
    let fb = std::fs::File::open(&pb).unwrap();
    assert_eq!(
        flock_nb(&fb, libc::LOCK_EX),
        0,
        "b cannot lock after a let go"
    );
    drop(fb);
    let t = Instant::now();
    while flock_nb(&fa, libc::LOCK_EX) != 0 {
        assert!(t.elapsed() < Duration::from_secs(5), "b kept the lock");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `stat` run `n` times as `uid`; whether every one succeeded.
fn stat_n(uid: u32, path: &Path, n: usize) -> bool {
    let script = format!(
        "for i in $(seq {n}); do stat -c %s {} >/dev/null || exit 1; done",
        path.display()
    );
    sh_as(uid, &script).status.success()
}

#[test]
fn the_kernel_keeps_what_anyone_may_see_and_drops_it_when_it_changes() {
    let cell = Cell::from_env();
    let m = Mount::new(&cell, &[]);
    alice_token(&cell, &m);
    let (rel, dir) = workspace(&cell, &m, "kcache");
    let hello = dir.join("hello.txt");
    // system:anyuser may look up here: after the first stat the kernel
    // answers the next ones itself.
    assert!(stat_n(ALICE_UID, &hello, 1));
    let before = m.stat("cache.status_hits") + m.stat("cache.status_misses");
    assert!(stat_n(ALICE_UID, &hello, 50));
    assert!(stat_n(NOBODY, &hello, 50));
    let asked = m.stat("cache.status_hits") + m.stat("cache.status_misses") - before;
    assert!(
        asked < 10,
        "100 stats of a public file reached the daemon {asked} times"
    );
    // Another client changes it, then removes it: the callback breaks, and
    // the kernel drops the attributes, then the name.
    cell.put(&cell.rw(&format!("{rel}/hello.txt")), b"hello, changed\n");
    assert!(
        afsd_tests::wait_until(std::time::Duration::from_secs(10), || {
            std::fs::metadata(&hello).map(|md| md.len()).ok() == Some(15)
        }),
        "the new length never showed"
    );
    cell.third_party(&["rm", &cell.rw(&format!("{rel}/hello.txt"))], None);
    assert!(
        afsd_tests::wait_until(std::time::Duration::from_secs(10), || !hello.exists()),
        "the removed name stayed in the kernel"
    );
    // The listing too: kept by the kernel across opens, for every user...
    let list = |uid: u32, d: &Path, n: usize| {
        let script = format!(
            "for i in $(seq {n}); do ls {} >/dev/null || exit 1; done",
            d.display()
        );
        sh_as(uid, &script).status.success()
    };
    assert!(list(ALICE_UID, &dir, 1));
    let dirs = || m.stat("cache.dir_hits") + m.stat("cache.dir_misses");
    let before = dirs();
    assert!(list(ALICE_UID, &dir, 20) && list(NOBODY, &dir, 20));
    let asked = dirs() - before;
    assert!(
        asked < 5,
        "40 listings of a public directory reached the daemon {asked} times"
    );
    // ...until another client adds a name: the callback break drops it.
    cell.put(&cell.rw(&format!("{rel}/new.txt")), b"new\n");
    assert!(
        afsd_tests::wait_until(std::time::Duration::from_secs(10), || listing(&dir)
            .contains(&"new.txt".to_string())),
        "the kernel kept the old listing"
    );
    // Alice's private directory: every stat comes to the daemon.
    let secret = m.path(&format!("{}/private/secret.txt", cell.cell()));
    assert!(stat_n(ALICE_UID, &secret, 1));
    let before = m.stat("cache.status_hits") + m.stat("cache.status_misses");
    assert!(stat_n(ALICE_UID, &secret, 20));
    let asked = m.stat("cache.status_hits") + m.stat("cache.status_misses") - before;
    assert!(
        asked >= 20,
        "private stats answered by the kernel: only {asked} reached the daemon"
    );
    let private = secret.parent().unwrap().to_path_buf();
    assert!(list(ALICE_UID, &private, 1));
    let before = dirs();
    assert!(list(ALICE_UID, &private, 10));
    assert!(
        dirs() - before >= 10,
        "a private listing was kept by the kernel"
    );
    assert!(!stat_n(BOB_UID, &secret, 1) && !stat_n(NOBODY, &secret, 1));
    m.stop();
}
