//! A hostile network: spoofed Rx packets from an address in the client's
//! own test namespace (never anywhere else), bounded in count and time.
//! The daemon's memory stays bounded, the spoofer's callback calls are
//! refused, and a genuine callback break still arrives within 5 s.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::{Duration, Instant};

use afsd_tests::{rss_kib, wait_until, Cell, Mount};

/// The UDP port the daemon's Rx socket is bound to, read in its namespace.
fn rx_port(cell: &Cell, pid: u32) -> u16 {
    let out = Command::new("ip")
        .args(["netns", "exec", cell.var("CLIENT_NETNS"), "ss", "-uanpH"])
        .output()
        .expect("ss");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find(|l| l.contains(&format!("pid={pid},")))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|a| a.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no UDP socket of pid {pid} in:\n{text}"))
}

/// An Rx DATA packet opening a call to the callback service (a Probe),
/// from a made-up connection.
fn spoofed_call(epoch: u32, cid: u32) -> Vec<u8> {
    let mut p = Vec::with_capacity(32);
    p.extend_from_slice(&epoch.to_be_bytes());
    p.extend_from_slice(&cid.to_be_bytes());
    p.extend_from_slice(&1u32.to_be_bytes()); // call number
    p.extend_from_slice(&1u32.to_be_bytes()); // seq
    p.extend_from_slice(&1u32.to_be_bytes()); // serial
    p.push(1); // DATA
    p.push(1 | 4); // client-initiated, last packet
    p.push(0); // user status
    p.push(0); // security index: rxnull
    p.extend_from_slice(&0u16.to_be_bytes()); // checksum
    p.extend_from_slice(&1u16.to_be_bytes()); // service 1: the CB service
    p.extend_from_slice(&206u32.to_be_bytes()); // RXAFSCB_Probe
    p
}

#[test]
fn a_spoofed_flood_leaves_memory_bounded_and_genuine_breaks_arrive() {
    let cell = Cell::from_env();
    let m = Mount::new(&cell, &[]);
    let rel = format!("shared/flood-{}", std::process::id());
    cell.put(&cell.rw(&rel), b"before");
    let path = m.path(&format!(".{}/{rel}", cell.cell()));
    assert_eq!(std::fs::read(&path).unwrap(), b"before");
    let pid = m.pid();
    let port = rx_port(&cell, pid);
    let ns = cell.var("CLIENT_NETNS").to_string();
    let client_ip: Ipv4Addr = cell.var("CLIENT_IP").parse().unwrap();
    let o = client_ip.octets();
    let spoof = Ipv4Addr::new(o[0], o[1], o[2], o[3].wrapping_add(100));
    // An extra address for the spoofer, on the client namespace's loopback
    // (inside the project's own namespace, gone with the test).
    let add = Command::new("ip")
        .args([
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{spoof}/32"),
            "dev",
            "lo",
        ])
        .status()
        .unwrap();
    assert!(add.success());
    let before = rss_kib(pid);
    let target = SocketAddrV4::new(client_ip, port);
    let sent = std::thread::spawn(move || {
        // setns changes only this thread's network namespace.
        let f = std::fs::File::open(format!("/run/netns/{ns}")).unwrap();
        // SAFETY: a valid namespace descriptor, for this thread alone.
        assert_eq!(unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
        let s = UdpSocket::bind(SocketAddrV4::new(spoof, 0)).unwrap();
        let start = Instant::now();
        let mut n = 0u32;
        // Bounded: 100,000 packets or 10 s, whichever comes first.
        while n < 100_000 && start.elapsed() < Duration::from_secs(10) {
            let epoch = 0x8000_0000 | n.wrapping_mul(2_654_435_761);
            let _ = s.send_to(&spoofed_call(epoch, (n << 2) & !3), target);
            // Junk too.
            let _ = s.send_to(&n.to_be_bytes(), target);
            n += 1;
            if n.is_multiple_of(1000) {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        n
    });
    // A genuine change during the flood: its break must get through.
    std::thread::sleep(Duration::from_secs(2));
    cell.put(&cell.rw(&rel), b"after!");
    let t = Instant::now();
    let seen = wait_until(Duration::from_secs(5), || {
        std::fs::read(&path)
            .map(|d| d == b"after!")
            .unwrap_or(false)
    });
    assert!(
        seen,
        "the genuine change was not seen within 5 s of the put"
    );
    eprintln!("genuine change seen {:?} after the put", t.elapsed());
    let n = sent.join().unwrap();
    let after = rss_kib(pid);
    let _ = Command::new("ip")
        .args([
            "-n",
            cell.var("CLIENT_NETNS"),
            "addr",
            "del",
            &format!("{spoof}/32"),
            "dev",
            "lo",
        ])
        .status();
    eprintln!("{n} spoofed calls: RSS {before} KiB before, {after} KiB after");
    assert!(n >= 10_000, "only {n} packets sent");
    assert!(
        after < before + 64 * 1024,
        "RSS grew from {before} KiB to {after} KiB under the flood"
    );
    // The endpoint refused or evicted what it could not keep.
    let refused = m.rx_stat("server_conns_refused") + m.rx_stat("server_conns_evicted");
    assert!(refused > 0, "the flood never reached the caps");
    // The spoofer's callback calls were refused, not served.
    assert!(
        m.log_text().contains("not a fileserver we called"),
        "no refusal of the spoofed callback calls in the log"
    );
    // The daemon still works.
    assert_eq!(std::fs::read(&path).unwrap(), b"after!");
}
