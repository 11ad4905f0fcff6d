//! The `fs`-style administration commands against the real cell: listacl,
//! setacl (refused to anonymous, done by an authenticated administrator),
//! examine, listquota, whereis, lsmount, checkservers, and the `afs.acl`
//! xattr they are built on. Each asserts the exact lines OpenAFS's `fs`
//! would print.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::{Command, Output};

use afsd_tests::{afsd_bin, getxattr, run_as, scratch, Cell, Mount};

/// A local uid for the cell's administrator (no passwd entry needed).
const ADMIN_UID: u32 = 61010;

/// `afsd-rs ARGS` as root (anonymous: root has no token).
fn afsd(m: &Mount, args: &[&str]) -> Output {
    Command::new(afsd_bin())
        .args(args)
        .env("AFSD_CONTROL", m.control_socket())
        .output()
        .expect("afsd-rs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn rw(m: &Mount, cell: &Cell, rel: &str) -> String {
    let p = m.path(&format!(".{}/{rel}", cell.cell()));
    p.to_str().unwrap().trim_end_matches('/').to_string()
}

fn setxattr(path: &Path, name: &str, value: &[u8]) -> Result<(), i32> {
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    // SAFETY: valid C strings and a value of the stated length.
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
        Err(std::io::Error::last_os_error().raw_os_error().unwrap())
    } else {
        Ok(())
    }
}

#[test]
fn listacl_and_the_acl_xattr() {
    let cell = Cell::from_env();
    let m = Mount::new(&cell, &[]);
    let root = rw(&m, &cell, "");
    // The raw xattr is the fileserver's text.
    let raw = getxattr(Path::new(&root), "afs.acl").expect("afs.acl");
    assert_eq!(
        String::from_utf8_lossy(&raw),
        "2\n0\nsystem:administrators\t127\nsystem:anyuser\t9\n"
    );
    let out = afsd(&m, &["listacl", &root]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        format!(
            "Access list for {root} is\nNormal rights:\n  system:administrators rlidwka\n  system:anyuser rl\n"
        )
    );
    // A file answers with its directory's ACL; `la` is the alias; two
    // paths are separated by an empty line.
    let hello = rw(&m, &cell, "hello.txt");
    let shared = rw(&m, &cell, "shared");
    let out = afsd(&m, &["la", &hello, &shared]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        format!(
            "Access list for {hello} is\nNormal rights:\n  system:administrators rlidwka\n  system:anyuser rl\n\n\
             Access list for {shared} is\nNormal rights:\n  system:administrators rlidwka\n  system:anyuser rlidwk\n"
        )
    );
    // listxattr names afs.acl.
    let out = Command::new("getfattr")
        .args(["-m", "-", "--absolute-names"])
        .arg(&root)
        .output()
        .expect("getfattr");
    assert!(
        stdout(&out).lines().any(|l| l == "afs.acl"),
        "{}",
        stdout(&out)
    );
    // Other names cannot be set; malformed ACL text is EINVAL.
    assert_eq!(
        setxattr(Path::new(&shared), "afs.other", b"x"),
        Err(libc::ENOTSUP)
    );
    assert_eq!(
        setxattr(Path::new(&shared), "afs.acl", b"garbage"),
        Err(libc::EINVAL)
    );
    // Not in AFS.
    let out = afsd(&m, &["listacl", "/tmp"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "afsd-rs: Invalid argument; it is possible that /tmp is not in AFS.\n"
    );
}

#[test]
fn setacl_is_refused_to_anonymous_and_done_by_an_administrator() {
    let cell = Cell::from_env();
    let m = Mount::new(&cell, &[]);
    let dir = rw(
        &m,
        &cell,
        &format!("shared/admin-acl-{}", std::process::id()),
    );
    // Root is anonymous: system:anyuser has rlidwk in shared/, enough to
    // create a directory, not to change its ACL (no `a`).
    std::fs::create_dir(&dir).expect("mkdir in shared/ as anonymous");
    std::fs::write(format!("{dir}/before"), b"x").expect("write as anonymous");
    let out = afsd(
        &m,
        &["setacl", "-dir", &dir, "-acl", "system:anyuser", "rl"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout(&out), "");
    assert_eq!(
        stderr(&out),
        format!("afsd-rs: You don't have the required access rights on '{dir}'\n")
    );
    // Bad rights are refused before anything is sent.
    let out = afsd(&m, &["sa", &dir, "alice", "rx"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out), "afsd-rs: illegal rights character 'x'.\n");

    // The cell's administrator, authenticated.
    let cc = scratch("krb5").join("admin.cc");
    cell.kinit(
        cell.var("ADMIN"),
        cell.var("ADMIN_PW"),
        &cc,
        ADMIN_UID,
        None,
    );
    cell.aklog_as(ADMIN_UID, &m, &cc);
    let out = cell.afsd_as(
        ADMIN_UID,
        &m,
        &cc,
        &[
            "setacl",
            "-dir",
            &dir,
            "-acl",
            "system:anyuser",
            "read",
            cell.var("USER1"),
            "rlidwk",
        ],
    );
    assert!(out.status.success(), "setacl as admin: {}", stderr(&out));
    let out = cell.afsd_as(
        ADMIN_UID,
        &m,
        &cc,
        &["sa", &dir, cell.var("USER1"), "w", "-negative"],
    );
    assert!(out.status.success(), "setacl -negative: {}", stderr(&out));
    let expected = format!(
        "Access list for {dir} is\nNormal rights:\n  system:administrators rlidwka\n  system:anyuser rl\n  {u} rlidwk\nNegative rights:\n  {u} w\n",
        u = cell.var("USER1")
    );
    let out = cell.afsd_as(ADMIN_UID, &m, &cc, &["listacl", &dir]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), expected);
    // Anonymous sees the same ACL, and its rights follow at once: no more
    // inserting.
    let out = afsd(&m, &["la", &dir]);
    assert_eq!(stdout(&out), expected);
    let err = std::fs::write(format!("{dir}/after"), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EACCES), "{err}");
    // -clear replaces the whole list; `none` drops an entry.
    let out = cell.afsd_as(
        ADMIN_UID,
        &m,
        &cc,
        &[
            "sa",
            "-dir",
            &dir,
            "-acl",
            "system:administrators",
            "all",
            "system:anyuser",
            "write",
            "-clear",
        ],
    );
    assert!(out.status.success(), "setacl -clear: {}", stderr(&out));
    let out = cell.afsd_as(
        ADMIN_UID,
        &m,
        &cc,
        &["sa", &dir, "system:administrators", "none"],
    );
    assert!(out.status.success(), "setacl none: {}", stderr(&out));
    let out = afsd(&m, &["la", &dir]);
    assert_eq!(
        stdout(&out),
        format!("Access list for {dir} is\nNormal rights:\n  system:anyuser rlidwk\n")
    );
    // Clean up as anonymous (rlidwk again).
    std::fs::remove_file(format!("{dir}/before")).unwrap();
    std::fs::remove_dir(&dir).unwrap();
}

#[test]
fn examine_listquota_whereis_lsmount_checkservers() {
    let cell = Cell::from_env();
    let m = Mount::new(&cell, &[]);
    let small = rw(&m, &cell, "small");
    let ip = cell.var("SERVER_IP");

    // examine
    let out = afsd(&m, &["examine", &small]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 6, "{text}");
    let vid = lines[0]
        .strip_prefix(&format!("File {small} ("))
        .and_then(|r| r.split('.').next())
        .unwrap_or_else(|| panic!("{text}"))
        .to_string();
    assert_eq!(
        lines[0],
        format!("File {small} ({vid}.1.1) contained in volume {vid}")
    );
    assert_eq!(
        lines[1],
        format!("Volume status for vid = {vid} named vol.small")
    );
    assert_eq!(lines[2], "Current disk quota is 1024");
    let used: u64 = lines[3]
        .strip_prefix("Current blocks used are ")
        .and_then(|u| u.parse().ok())
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        lines[4].starts_with("The partition has ")
            && lines[4].contains(" blocks available out of "),
        "{text}"
    );
    assert_eq!(lines[5], "");
    let root = rw(&m, &cell, "");
    let out = afsd(&m, &["examine", &root]);
    assert!(
        stdout(&out).contains("named root.cell\nCurrent disk quota is unlimited\n"),
        "{}",
        stdout(&out)
    );

    // listquota (`lq`)
    let out = afsd(&m, &["lq", &small]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "Volume Name                    Quota       Used %Used   Partition"
    );
    let pct = (used as f64 / 1024.0 * 100.0).round();
    let want = format!("vol.small                       1024 {used:>10}{pct:>5}%  ");
    assert!(lines[1].starts_with(&want), "{:?} vs {want:?}", lines[1]);
    assert!(lines[1].ends_with("%  "), "{:?}", lines[1]);

    // whereis: addresses, a space after each as fs prints them.
    let out = afsd(&m, &["whereis", &root]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), format!("File {root} is on host {ip} \n"));

    // lsmount: a mount point, a plain directory, the cell entry in /afs.
    let vol = rw(&m, &cell, "vol");
    let out = afsd(&m, &["lsmount", &vol]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        format!("'{vol}' is a mount point for volume '#vol.test.'\n")
    );
    let vol_rw = rw(&m, &cell, "vol-rw");
    let out = afsd(&m, &["lsmount", &vol_rw]);
    assert_eq!(
        stdout(&out),
        format!("'{vol_rw}' is a mount point for volume '%vol.test.'\n")
    );
    let shared = rw(&m, &cell, "shared");
    let out = afsd(&m, &["lsmount", &shared]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout(&out), "");
    assert_eq!(stderr(&out), format!("'{shared}' is not a mount point.\n"));
    let top = m.path(cell.cell());
    let top = top.to_str().unwrap();
    let out = afsd(&m, &["lsmount", top]);
    assert_eq!(
        stdout(&out),
        format!(
            "'{top}' is a mount point for volume '#{}:root.cell.'\n",
            cell.cell()
        )
    );
    let missing = rw(&m, &cell, "no-such-entry");
    let out = afsd(&m, &["lsmount", &missing]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        format!("afsd-rs: File '{missing}' doesn't exist\n")
    );

    // The answers follow the caller's rights: another uid (anonymous too)
    // reads the same volume status.
    let out = run_as(afsd_tests::BOB_UID, &[&afsd_bin(), "examine", &small]);
    assert!(
        stdout(&out).contains("named vol.small\n"),
        "{}",
        stderr(&out)
    );

    // checkservers
    let out = afsd(&m, &["checkservers"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "All servers are running.\n");
}
