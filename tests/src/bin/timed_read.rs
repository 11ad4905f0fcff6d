//! `timed_read PATH`: reads a whole file, as `cat` would, and says how long
//! the failing (or last) call took. The miss-policy tests run it (and
//! copies of it under other program names) to time the one call that
//! meets a disconnected volume, not a process start.
//!
//! Success: the bytes on stdout, exit 0. Failure: `errno N elapsed_us M`
//! on stderr, exit 1.

use std::io::{Read, Write};
use std::time::Instant;

fn main() {
    let Some(path) = std::env::args_os().nth(1) else {
        eprintln!("usage: timed_read PATH");
        std::process::exit(2);
    };
    let fail = |e: std::io::Error, t: Instant| -> ! {
        eprintln!(
            "errno {} elapsed_us {}",
            e.raw_os_error().unwrap_or(0),
            t.elapsed().as_micros()
        );
        std::process::exit(1);
    };
    let t = Instant::now();
    let mut f = std::fs::File::open(&path).unwrap_or_else(|e| fail(e, t));
    let mut out = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let t = Instant::now();
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) => fail(e, t),
        }
    }
    std::io::stdout().write_all(&out).expect("stdout");
}
