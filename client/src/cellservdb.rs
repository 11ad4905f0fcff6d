//! CellServDB and ThisCell, as OpenAFS's cache manager reads them.
//!
//! CellServDB lines: `>cell.name #comment` starts a cell; then one
//! `a.b.c.d #hostname` line per database server (`[a.b.c.d]` too, OpenAFS's
//! mark for a server that is not a sync site). Both files are read as bytes,
//! as OpenAFS reads them: only the cell names and addresses before a `#` must
//! be ASCII, and comments may be in any encoding (Debian's public CellServDB
//! has Latin-1 in one). A line that cannot be understood is skipped with a
//! warning naming the file and line, as are the servers of a cell whose `>`
//! line was skipped; blank lines and `#` comment lines are skipped silently.

use std::net::Ipv4Addr;
use std::path::Path;

use crate::client::AfsClient;
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

/// A CellServDB line that was skipped, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    /// 1-based line number.
    pub line: usize,
    pub reason: String,
}

/// What [`parse_cellservdb`] made of a file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ParsedCellServDb {
    pub cells: Vec<Cell>,
    pub skipped: Vec<Skipped>,
}

impl CellDb {
    /// Reads `CellServDB` (required) and `ThisCell` (optional: without it
    /// there is no local cell) from `dir`. Skipped CellServDB lines are
    /// logged as warnings naming the file and line.
    pub fn load(dir: &Path) -> Result<CellDb> {
        let csdb = dir.join("CellServDB");
        let bytes = std::fs::read(&csdb)
            .map_err(|e| Error::Config(format!("cannot read {}: {e}", csdb.display())))?;
        let parsed = parse_cellservdb(&bytes);
        for s in &parsed.skipped {
            tracing::warn!("{}:{}: {}; line skipped", csdb.display(), s.line, s.reason);
        }
        let cells = parsed.cells;
        let this_cell = read_this_cell(dir)?;
        if let Some(tc) = &this_cell {
            if !cells.iter().any(|c| c.name.eq_ignore_ascii_case(tc)) {
                return Err(Error::Config(format!(
                    "{} names {tc}, which {} does not list",
                    dir.join("ThisCell").display(),
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

/// Reads `dir/ThisCell`: its first word, lower-cased. `None` when the file
/// does not exist or holds nothing (a warning says so for an empty one).
pub fn read_this_cell(dir: &Path) -> Result<Option<String>> {
    let path = dir.join("ThisCell");
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(Error::Config(format!(
                "cannot read {}: {e}",
                path.display()
            )))
        }
    };
    let word = bytes
        .split(|b| b.is_ascii_whitespace())
        .find(|w| !w.is_empty());
    let Some(word) = word else {
        tracing::warn!("{} is empty: no local cell", path.display());
        return Ok(None);
    };
    match cell_name(word) {
        Some(name) => Ok(Some(name)),
        None => Err(Error::Config(format!(
            "{}: {:?} is not a cell name",
            path.display(),
            String::from_utf8_lossy(word)
        ))),
    }
}

/// A cell name: printable ASCII without `/` or `#`, lower-cased.
fn cell_name(word: &[u8]) -> Option<String> {
    let ok = !word.is_empty()
        && word
            .iter()
            .all(|&b| b.is_ascii_graphic() && b != b'/' && b != b'#');
    ok.then(|| String::from_utf8_lossy(word).to_ascii_lowercase())
}

/// The part of a line before its comment, without surrounding blanks.
fn before_comment(line: &[u8]) -> &[u8] {
    let end = line.iter().position(|&b| b == b'#').unwrap_or(line.len());
    line[..end].trim_ascii()
}

/// Parses CellServDB bytes. Cells without servers are kept (a listing entry
/// whose volumes cannot be located yet). Lines that cannot be understood
/// are skipped and reported in [`ParsedCellServDb::skipped`].
pub fn parse_cellservdb(bytes: &[u8]) -> ParsedCellServDb {
    let mut out = ParsedCellServDb::default();
    // The cell the address lines below belong to; None before the first
    // `>` line and after one that was skipped.
    let mut current: Option<usize> = None;
    let mut skip = |line: usize, reason: String| out.skipped.push(Skipped { line, reason });
    let mut cells: Vec<Cell> = Vec::new();
    for (n, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let lineno = n + 1;
        let line = raw.trim_ascii();
        if line.is_empty() || line.starts_with(b"#") {
            continue;
        }
        if let Some(rest) = line.strip_prefix(b">") {
            current = None;
            // `>name [linkedcell] #comment`: the first word is the cell.
            let word = before_comment(rest)
                .split(|b| b.is_ascii_whitespace())
                .next()
                .unwrap_or(b"");
            match cell_name(word) {
                Some(name) if cells.iter().any(|c| c.name == name) => {
                    skip(lineno, format!("cell {name} is listed again"));
                }
                Some(name) => {
                    cells.push(Cell {
                        name,
                        db_servers: Vec::new(),
                    });
                    current = Some(cells.len() - 1);
                }
                None => skip(
                    lineno,
                    format!(
                        "bad cell name {:?} (its servers are skipped too)",
                        String::from_utf8_lossy(word)
                    ),
                ),
            }
            continue;
        }
        let word = before_comment(line)
            .split(|b| b.is_ascii_whitespace())
            .next()
            .unwrap_or(b"");
        let addr = word
            .strip_prefix(b"[")
            .and_then(|w| w.strip_suffix(b"]"))
            .unwrap_or(word);
        let ip = std::str::from_utf8(addr)
            .ok()
            .and_then(|s| s.parse::<Ipv4Addr>().ok());
        match (ip, current) {
            (None, _) => skip(
                lineno,
                format!("{:?} is not an IPv4 address", String::from_utf8_lossy(word)),
            ),
            (Some(ip), None) if cells.is_empty() => {
                skip(lineno, format!("server {ip} before any >cell line"))
            }
            (Some(ip), None) => skip(
                lineno,
                format!("server {ip} belongs to a cell line that was skipped"),
            ),
            (Some(ip), Some(i)) => {
                if !cells[i].db_servers.contains(&ip) {
                    cells[i].db_servers.push(ip);
                }
            }
        }
    }
    out.cells = cells;
    out
}

impl AfsClient {
    /// The local cell (ThisCell), when one is configured.
    pub fn this_cell(&self) -> Option<String> {
        self.inner
            .cells
            .this_cell
            .as_ref()
            .map(|c| c.to_ascii_lowercase())
    }

    /// The check made at mount time: [`AfsClient::check_cell`] of the local
    /// cell, and of no other. Without ThisCell no cell is contacted and
    /// `Ok(None)` says so; the other cells of CellServDB are only contacted
    /// when a path in them is looked up.
    pub async fn check_this_cell(&self) -> Result<Option<String>> {
        match self.this_cell() {
            Some(cell) => self.check_cell(&cell).await.map(|()| Some(cell)),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cells_and_servers() {
        let text = ">test.lab #lab cell\n198.18.0.1 #afs1.test.lab\n\n>Example.ORG # x\n10.1.2.3\n10.1.2.4 #b\n";
        let p = parse_cellservdb(text.as_bytes());
        assert_eq!(p.skipped, vec![]);
        let cells = p.cells;
        assert_eq!(cells.len(), 2);
        assert_eq!(cells[0].name, "test.lab");
        assert_eq!(cells[0].db_servers, vec![Ipv4Addr::new(198, 18, 0, 1)]);
        assert_eq!(cells[1].name, "example.org");
        assert_eq!(cells[1].db_servers.len(), 2);
    }

    #[test]
    fn skips_garbage_naming_the_line() {
        let p = parse_cellservdb(b">a.b\nnot-an-ip #x\n1.2.3.4\n");
        assert_eq!(p.cells.len(), 1);
        assert_eq!(p.cells[0].db_servers, vec![Ipv4Addr::new(1, 2, 3, 4)]);
        assert_eq!(p.skipped.len(), 1);
        assert_eq!(p.skipped[0].line, 2);
        assert!(p.skipped[0].reason.contains("not-an-ip"), "{:?}", p.skipped);

        let p = parse_cellservdb(b"1.2.3.4\n");
        assert!(p.cells.is_empty());
        assert!(p.skipped[0].reason.contains("before any"));
    }

    #[test]
    fn a_skipped_cell_takes_its_servers_along() {
        // A bad name must not give its servers to the cell before it.
        let p = parse_cellservdb(b">good.cell\n10.0.0.1\n>bad/cell\n10.0.0.2\n>good.cell\n10.0.0.3\n>next #c\n10.0.0.4\n");
        let names: Vec<_> = p.cells.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["good.cell", "next"]);
        assert_eq!(p.cells[0].db_servers, vec![Ipv4Addr::new(10, 0, 0, 1)]);
        assert_eq!(p.cells[1].db_servers, vec![Ipv4Addr::new(10, 0, 0, 4)]);
        let lines: Vec<usize> = p.skipped.iter().map(|s| s.line).collect();
        assert_eq!(lines, [3, 4, 5, 6]);
    }

    #[test]
    fn comments_in_any_encoding_crlf_and_brackets() {
        // Latin-1 "ä" (0xe4) and invalid UTF-8 in comments; CRLF ends.
        let p = parse_cellservdb(
            b">uni.example #Universit\xe4t\r\n[10.0.0.1] #clone \xff\xfe\r\n10.0.0.2\t#x\r\n# \xe4 only a comment\n   \n",
        );
        assert_eq!(p.skipped, vec![]);
        assert_eq!(p.cells[0].name, "uni.example");
        assert_eq!(
            p.cells[0].db_servers,
            vec![Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2)]
        );
        // A non-ASCII cell name is not a name.
        let p = parse_cellservdb(b">caf\xe9.example\n10.0.0.1\n");
        assert!(p.cells.is_empty());
        assert_eq!(p.skipped.len(), 2);
    }

    #[test]
    fn this_cell_must_be_listed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("CellServDB"), ">a.lab\n127.0.0.1\n").unwrap();
        std::fs::write(dir.path().join("ThisCell"), "b.lab\n").unwrap();
        let err = CellDb::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("ThisCell names b.lab"), "{err}");
        std::fs::write(dir.path().join("ThisCell"), "A.lab\n").unwrap();
        let db = CellDb::load(dir.path()).unwrap();
        assert_eq!(db.this_cell.as_deref(), Some("a.lab"));
        let err = CellDb::load(&dir.path().join("missing"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("CellServDB"), "{err}");
    }

    #[test]
    fn this_cell_absent_empty_or_bad() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("CellServDB"), ">a.lab\n127.0.0.1\n").unwrap();
        assert_eq!(CellDb::load(dir.path()).unwrap().this_cell, None);
        std::fs::write(dir.path().join("ThisCell"), "\n \n").unwrap();
        assert_eq!(CellDb::load(dir.path()).unwrap().this_cell, None);
        std::fs::write(dir.path().join("ThisCell"), b"caf\xe9\n").unwrap();
        let err = CellDb::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("not a cell name"), "{err}");
        // No newline at the end, as `echo -n` writes it.
        std::fs::write(dir.path().join("ThisCell"), "a.lab").unwrap();
        assert_eq!(
            CellDb::load(dir.path()).unwrap().this_cell.as_deref(),
            Some("a.lab")
        );
    }
}
