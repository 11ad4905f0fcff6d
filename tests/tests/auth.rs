//! Authentication against the real KDC and cell: kinit, `afsd-rs aklog`,
//! per-user tokens and rights on one mount, rxkad at every level.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use afsd_tests::{read_as, scratch, Cell, Mount, ALICE_UID, BOB_UID};

fn secret(m: &Mount, cell: &Cell) -> std::path::PathBuf {
    m.path(&format!("{}/private/secret.txt", cell.cell()))
}

fn alice_ccache(cell: &Cell, lifetime: Option<&str>) -> std::path::PathBuf {
    let dir = scratch("krb5");
    let cc = dir.join("alice.cc");
    cell.kinit(
        cell.var("USER1"),
        cell.var("USER1_PW"),
        &cc,
        ALICE_UID,
        lifetime,
    );
    cc
}

/// alice: kinit, aklog, tokens, then her private directory reads; another
/// uid without a token is refused, also once alice's read cached the file.
#[test]
fn alice_reads_her_private_directory_and_others_are_refused() {
    let cell = Cell::from_env();
    let m = Mount::new(&cell, &[]);
    let cc = alice_ccache(&cell, None);
    // Before aklog alice is anonymous: refused like everyone else.
    assert!(read_as(ALICE_UID, &secret(&m, &cell))
        .unwrap_err()
        .contains("Permission denied"));
    cell.aklog_as(ALICE_UID, &m, &cc);
    let out = cell.afsd_as(ALICE_UID, &m, &cc, &["tokens"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("alice@{}", cell.cell())), "{text}");
    assert!(
        text.contains("Expires") && text.contains("AFS ID 2"),
        "{text}"
    );
    assert_eq!(
        read_as(ALICE_UID, &secret(&m, &cell)).unwrap(),
        b"alice's secret\n"
    );
    let listing = afsd_tests::run_as(
        ALICE_UID,
        &[
            "ls",
            m.path(&format!("{}/private", cell.cell()))
                .to_str()
                .unwrap(),
        ],
    );
    assert!(String::from_utf8_lossy(&listing.stdout).contains("secret.txt"));
    // The file is now cached; bob and root (no tokens) still get EACCES.
    for uid in [BOB_UID, 0] {
        let err = read_as(uid, &secret(&m, &cell)).unwrap_err();
        assert!(err.contains("Permission denied"), "uid {uid}: {err}");
        let ls = afsd_tests::run_as(
            uid,
            &[
                "ls",
                m.path(&format!("{}/private", cell.cell()))
                    .to_str()
                    .unwrap(),
            ],
        );
        assert!(!ls.status.success(), "uid {uid} listed alice's directory");
    }
    // bob's `tokens` shows none of alice's.
    let out = cell.afsd_as(BOB_UID, &m, &cc, &["tokens"]);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("alice@"));
    // unlog drops the token: alice is refused again.
    let out = cell.afsd_as(ALICE_UID, &m, &cc, &["unlog"]);
    assert!(out.status.success());
    std::thread::sleep(Duration::from_millis(1100)); // the kernel's attribute TTL
    assert!(read_as(ALICE_UID, &secret(&m, &cell)).is_err());
}

/// One rxkad level against the real fileserver: alice's private file and a
/// multi-packet file read through connections at `level`.
fn reads_at_level(level: &str) {
    let cell = Cell::from_env();
    let cc = alice_ccache(&cell, None);
    let m = Mount::new(&cell, &["--rxkad-level", level]);
    cell.aklog_as(ALICE_UID, &m, &cc);
    assert_eq!(
        read_as(ALICE_UID, &secret(&m, &cell))
            .unwrap_or_else(|e| panic!("{level}: {e}\n{}", m.log_text())),
        b"alice's secret\n",
        "level {level}"
    );
    // 200,000 bytes cross many packets at this level: the bytes the
    // third-party tool reads.
    let big = m.path(&format!(".{}/random.bin", cell.cell()));
    let got = read_as(ALICE_UID, &big).unwrap();
    let want = cell
        .third_party(&["cat", &cell.rw("random.bin")], None)
        .stdout;
    assert_eq!(want.len(), 200000);
    assert!(
        got == want,
        "level {level}: random.bin differs from the server's"
    );
    assert!(
        m.rx_stat("responses_sent") >= 1,
        "an rxkad RESPONSE was sent at {level}"
    );
    assert_eq!(
        m.rx_stat("security_drops"),
        0,
        "packets failed rxkad checks at {level}"
    );
    // The fileserver answered at this level, and at no other: 200,000
    // bytes are well over 100 packets.
    for other in ["clear", "auth", "crypt"] {
        let n = m.rx_stat(&format!("data_accepted_rxkad_{other}"));
        if other == level {
            assert!(
                n >= 100,
                "{n} packets accepted at {level}:\n{}",
                m.stats_text()
            );
        } else {
            assert_eq!(
                n,
                0,
                "packets at {other} on a {level} mount:\n{}",
                m.stats_text()
            );
        }
    }
}

#[test]
fn rxkad_clear_reads_from_the_real_fileserver() {
    reads_at_level("clear");
}

#[test]
fn rxkad_auth_reads_from_the_real_fileserver() {
    reads_at_level("auth");
}

#[test]
fn rxkad_crypt_reads_from_the_real_fileserver() {
    reads_at_level("crypt");
}

/// A token whose ticket expired is shown as expired and never used: no new
/// rxkad connection is made with it, the user is refused, and the log names
/// the remedy.
#[test]
fn expired_token_is_never_used() {
    let cell = Cell::from_env();
    let m = Mount::new(&cell, &[]);
    let cc = alice_ccache(&cell, Some("12s"));
    cell.aklog_as(ALICE_UID, &m, &cc);
    std::thread::sleep(Duration::from_secs(14));
    let out = cell.afsd_as(ALICE_UID, &m, &cc, &["tokens"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Expired"), "{text}");
    let responses = m.rx_stat("responses_sent");
    let err = read_as(ALICE_UID, &secret(&m, &cell)).unwrap_err();
    assert!(err.contains("Permission denied"), "{err}");
    assert_eq!(
        m.rx_stat("responses_sent"),
        responses,
        "the expired token was used"
    );
    assert!(
        afsd_tests::wait_until(Duration::from_secs(3), || {
            let log = m.log_text();
            log.contains("kinit") && log.contains("afsd-rs aklog")
        }),
        "no remedy in the log:\n{}",
        m.log_text()
    );
}

/// Tokens survive a daemon restart; one uid's aklog or unlog never touches
/// another uid's tokens; the store is readable by its owner only.
#[test]
fn tokens_survive_restart_are_per_uid_and_private() {
    let cell = Cell::from_env();
    let base = scratch("tokens");
    let cache = base.join("cache");
    let cc = alice_ccache(&cell, None);
    let m = Mount::with_cache(&cell, &cache, &[]);
    cell.aklog_as(ALICE_UID, &m, &cc);
    m.stop();
    let m = Mount::with_cache(&cell, &cache, &[]);
    let out = cell.afsd_as(ALICE_UID, &m, &cc, &["tokens"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("alice@{}", cell.cell())));
    assert_eq!(
        read_as(ALICE_UID, &secret(&m, &cell)).unwrap(),
        b"alice's secret\n"
    );

    // bob runs aklog with a ticket readable to him: the token becomes
    // bob's (the daemon takes the uid from the socket), alice's stays.
    let bob_cc = base.join("bob.cc");
    std::fs::copy(&cc, &bob_cc).unwrap();
    std::os::unix::fs::chown(&bob_cc, Some(BOB_UID), Some(BOB_UID)).unwrap();
    cell.aklog_as(BOB_UID, &m, &bob_cc);
    let out = cell.afsd_as(BOB_UID, &m, &bob_cc, &["unlog"]);
    assert!(out.status.success());
    let out = cell.afsd_as(ALICE_UID, &m, &cc, &["tokens"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("alice@{}", cell.cell())),
        "bob's unlog removed alice's token"
    );

    assert_private(&cache);
}

fn assert_private(dir: &Path) {
    let md = std::fs::metadata(dir).unwrap();
    assert_eq!(
        md.permissions().mode() & 0o077,
        0,
        "{} is open to others",
        dir.display()
    );
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let md = e.metadata().unwrap();
        if md.is_dir() {
            assert_private(&e.path());
        } else {
            assert_eq!(
                md.permissions().mode() & 0o077,
                0,
                "{} is open to others",
                e.path().display()
            );
        }
    }
}

/// aklog without a ticket or with the wrong realm says what it tried.
#[test]
fn aklog_errors_say_what_was_tried() {
    let cell = Cell::from_env();
    let m = Mount::new(&cell, &[]);
    let base = scratch("aklog-err");
    let none = base.join("none.cc");
    let out = cell.afsd_as(
        ALICE_UID,
        &m,
        &none,
        &["aklog", "--conf-dir", cell.var("AFS_CONF_DIR")],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("kinit"), "{err}");
    assert!(!err.contains("panicked"));

    let cc = alice_ccache(&cell, None);
    let out = cell.afsd_as(
        ALICE_UID,
        &m,
        &cc,
        &[
            "aklog",
            "-k",
            "WRONG.REALM",
            "--conf-dir",
            cell.var("AFS_CONF_DIR"),
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("afs/{}@WRONG.REALM", cell.cell()))
            && err.contains("afs@WRONG.REALM"),
        "{err}"
    );
}
