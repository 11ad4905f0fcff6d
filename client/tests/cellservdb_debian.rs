//! Debian's public CellServDB (openafs-client 1.8.9, `/etc/openafs/CellServDB`
//! byte for byte) parses whole: every cell and every server address, with the
//! Latin-1 byte in one of its comments.

use std::net::Ipv4Addr;

use client::{parse_cellservdb, CellDb};

const DEBIAN: &[u8] = include_bytes!("data/CellServDB.debian");

/// Counted from the bytes without the parser: `>` lines are cells, lines
/// that start with a digit are server addresses, as `(cell, address)` pairs.
fn count_by_hand() -> (Vec<String>, Vec<(String, Ipv4Addr)>) {
    let mut cells = Vec::new();
    let mut servers = Vec::new();
    for line in DEBIAN.split(|&b| b == b'\n') {
        match line.first() {
            Some(b'>') => {
                let end = line
                    .iter()
                    .position(|&b| b == b' ' || b == b'\t' || b == b'#')
                    .unwrap_or(line.len());
                cells.push(String::from_utf8(line[1..end].to_vec()).unwrap());
            }
            Some(b'0'..=b'9') => {
                let end = line.iter().position(|&b| b == b' ').unwrap();
                let ip = std::str::from_utf8(&line[..end]).unwrap().parse().unwrap();
                servers.push((cells.last().unwrap().clone(), ip));
            }
            _ => {}
        }
    }
    (cells, servers)
}

#[test]
fn the_file_is_not_utf8_and_has_a_latin1_comment() {
    assert!(std::str::from_utf8(std::hint::black_box(DEBIAN)).is_err());
    assert!(DEBIAN
        .windows(b"Universit\xe4t Wuppertal".len())
        .any(|w| w == b"Universit\xe4t Wuppertal"));
}

#[test]
fn every_cell_and_every_server_of_debians_cellservdb() {
    let (cells, servers) = count_by_hand();
    assert_eq!(cells.len(), 202);
    assert_eq!(servers.len(), 463);

    let parsed = parse_cellservdb(DEBIAN);
    assert_eq!(
        parsed.skipped,
        vec![],
        "no line of Debian's file is skipped"
    );
    let names: Vec<&str> = parsed.cells.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, cells.iter().map(|c| c.as_str()).collect::<Vec<_>>());
    let got: Vec<(String, Ipv4Addr)> = parsed
        .cells
        .iter()
        .flat_map(|c| c.db_servers.iter().map(|ip| (c.name.clone(), *ip)))
        .collect();
    assert_eq!(got, servers);

    let db = CellDb {
        this_cell: None,
        cells: parsed.cells,
    };
    let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
    assert_eq!(db.cells[0].name, "grand.central.org");
    assert_eq!(
        db.get("grand.central.org").unwrap().db_servers,
        vec![ip("18.9.48.14"), ip("128.2.13.219")]
    );
    assert_eq!(
        db.get("CERN.ch").unwrap().db_servers,
        vec![
            ip("137.138.128.148"),
            ip("137.138.246.50"),
            ip("137.138.246.51")
        ]
    );
    assert_eq!(
        db.get("andrew.cmu.edu").unwrap().db_servers[..3],
        [ip("128.2.10.2"), ip("128.2.10.7"), ip("128.2.10.11")]
    );
    // The cell whose comment holds the Latin-1 byte.
    assert!(db.get("physik.uni-wuppertal.de").is_some());
    assert_eq!(
        db.cells.last().unwrap().db_servers.last(),
        Some(&ip("196.24.232.3"))
    );
}

#[test]
fn loads_from_a_directory_without_this_cell() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("CellServDB"), DEBIAN).unwrap();
    let db = CellDb::load(dir.path()).unwrap();
    assert_eq!(db.this_cell, None);
    assert_eq!(db.cells.len(), 202);
    std::fs::write(dir.path().join("ThisCell"), "grand.central.org\n").unwrap();
    let db = CellDb::load(dir.path()).unwrap();
    assert_eq!(db.this_cell.as_deref(), Some("grand.central.org"));
}
