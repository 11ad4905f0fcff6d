//! CellServDB and ThisCell, as OpenAFS's cache manager reads them.
//!
//! CellServDB lines: `>cell.name #comment` starts a cell; then one
//! `a.b.c.d #hostname` line per database server.

use std::net::Ipv4Addr;
use std::path::Path;

use crate::{Error, Result};

/// One cell: its name and VL (database) server addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cell {
    pub name: String,
    pub db_servers: Vec<Ipv4Addr>,
}

/// The configured cells, with the local cell first.
#[derive(Clone, Debug, Default)]
pub struct CellDb {
    pub this_cell: Option<String>,
    pub cells: Vec<Cell>,
}

impl CellDb {
    /// Reads `ThisCell` (optional) and `CellServDB` (required) from `dir`.
    pub fn load(dir: &Path) -> Result<CellDb> {
        let csdb = dir.join("CellServDB");
        let text = std::fs::read_to_string(&csdb)
            .map_err(|e| Error::Config(format!("cannot read {}: {e}", csdb.display())))?;
        let cells = parse_cellservdb(&text)
            .map_err(|e| Error::Config(format!("{}: {e}", csdb.display())))?;
        let this_cell = std::fs::read_to_string(dir.join("ThisCell"))
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty());
        if let Some(tc) = &this_cell {
            if !cells.iter().any(|c| c.name.eq_ignore_ascii_case(tc)) {
                return Err(Error::Config(format!(
                    "ThisCell names {tc}, which {} does not list",
                    csdb.display()
                )));
            }
        }
        Ok(CellDb { this_cell, cells })
    }

    pub fn get(&self, name: &str) -> Option<&Cell> {
        self.cells
            .iter()
            .find(|c| c.name.eq_ignore_ascii_case(name))
    }
}

/// Parses CellServDB text. Cells without servers are kept (a listing entry
/// whose volumes cannot be located yet); malformed address lines are errors
/// naming the line.
pub fn parse_cellservdb(text: &str) -> std::result::Result<Vec<Cell>, String> {
    let mut cells: Vec<Cell> = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix('>') {
            let name = rest
                .split(|c: char| c == '#' || c.is_whitespace())
                .next()
                .unwrap_or("");
            if name.is_empty() || name.contains('/') {
                return Err(format!("line {}: bad cell name in {line:?}", n + 1));
            }
            cells.push(Cell {
                name: name.to_ascii_lowercase(),
                db_servers: Vec::new(),
            });
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let addr = line
            .split(|c: char| c == '#' || c.is_whitespace())
            .next()
            .unwrap_or("");
        let ip: Ipv4Addr = addr
            .parse()
            .map_err(|_| format!("line {}: {addr:?} is not an IPv4 address", n + 1))?;
        match cells.last_mut() {
            Some(c) => c.db_servers.push(ip),
            None => return Err(format!("line {}: server before any >cell line", n + 1)),
        }
    }
    Ok(cells)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cells_and_servers() {
        let text = ">test.lab #lab cell\n198.18.0.1 #afs1.test.lab\n\n>Example.ORG # x\n10.1.2.3\n10.1.2.4 #b\n";
        let cells = parse_cellservdb(text).unwrap();
        assert_eq!(cells.len(), 2);
        assert_eq!(cells[0].name, "test.lab");
        assert_eq!(cells[0].db_servers, vec![Ipv4Addr::new(198, 18, 0, 1)]);
        assert_eq!(cells[1].name, "example.org");
        assert_eq!(cells[1].db_servers.len(), 2);
    }

    #[test]
    fn rejects_garbage_with_line_number() {
        let err = parse_cellservdb(">a.b\nnot-an-ip #x\n").unwrap_err();
        assert!(err.contains("line 2"), "{err}");
        assert!(parse_cellservdb("1.2.3.4\n")
            .unwrap_err()
            .contains("before any"));
    }

    #[test]
    fn this_cell_must_be_listed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("CellServDB"), ">a.lab\n127.0.0.1\n").unwrap();
        std::fs::write(dir.path().join("ThisCell"), "b.lab\n").unwrap();
        assert!(CellDb::load(dir.path()).is_err());
        std::fs::write(dir.path().join("ThisCell"), "a.lab\n").unwrap();
        let db = CellDb::load(dir.path()).unwrap();
        assert_eq!(db.this_cell.as_deref(), Some("a.lab"));
        assert!(CellDb::load(&dir.path().join("missing")).is_err());
    }
}
