//! XDR (RFC 4506) encoding and nom-based decoding, as used by rxgen.
//!
//! rxgen marshals every integer, `char` and `short` as a 4-byte big-endian
//! word, `afs_int64`/`afs_uint64` as an XDR hyper (high word first), and
//! variable-length `string<N>`/`opaque<N>` as a length word, the bytes and
//! zero padding to a multiple of 4. Fixed `char x[N]` arrays (volume names
//! in `vldbint.xg`, `prname` in `ptint.xg`) are `xdr_vector` of `xdr_char`,
//! i.e. one 4-byte word per character; see [`char_vector`].

use nom::bytes::complete::take;
use nom::error::{Error as NomError, ErrorKind};
use nom::number::complete::{be_i32, be_u32};
use nom::IResult;

/// Result type of every decoding helper in this crate.
pub type XResult<'a, O> = IResult<&'a [u8], O>;

/// Appends XDR-encoded values to a byte buffer.
#[derive(Debug, Default, Clone)]
pub struct XdrWriter {
    buf: Vec<u8>,
}

impl XdrWriter {
    /// An empty writer.
    pub fn new() -> Self {
        Self { buf: Vec::new() }
    }

    /// Appends an unsigned 32-bit word.
    pub fn put_u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    /// Appends a signed 32-bit word.
    pub fn put_i32(&mut self, v: i32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    /// Appends an XDR hyper (`afs_int64`/`afs_uint64`): high word, then low word.
    pub fn put_u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    /// Appends a variable-length `opaque<>`: length, bytes, zero padding to 4.
    pub fn put_opaque(&mut self, data: &[u8]) {
        self.put_u32(data.len() as u32);
        self.put_fixed_opaque(data);
    }

    /// Appends a variable-length `string<>` (same encoding as `opaque<>`).
    pub fn put_string(&mut self, s: &str) {
        self.put_opaque(s.as_bytes());
    }

    /// Appends a fixed-length `opaque[N]`: the bytes and zero padding to 4,
    /// without a length word.
    pub fn put_fixed_opaque(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
        let pad = (4 - data.len() % 4) % 4;
        self.buf.extend_from_slice(&[0u8; 3][..pad]);
    }

    /// Appends a fixed `char x[n]` vector: one 4-byte word per byte of
    /// `data`, NUL-filled up to `n` words. `data` longer than `n` is cut.
    pub fn put_char_vector(&mut self, data: &[u8], n: usize) {
        for i in 0..n {
            self.put_u32(u32::from(data.get(i).copied().unwrap_or(0)));
        }
    }

    /// Appends raw bytes without padding (for Rx split-call data).
    pub fn put_raw(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// True if nothing was written.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The encoded bytes.
    pub fn into_inner(self) -> Vec<u8> {
        self.buf
    }
}

fn fail<O>(input: &[u8], kind: ErrorKind) -> XResult<'_, O> {
    Err(nom::Err::Error(NomError::new(input, kind)))
}

/// Decodes an unsigned 32-bit word.
pub fn u32(input: &[u8]) -> XResult<'_, u32> {
    be_u32(input)
}

/// Decodes a signed 32-bit word.
pub fn i32(input: &[u8]) -> XResult<'_, i32> {
    be_i32(input)
}

/// Decodes an XDR hyper (high word first).
pub fn u64(input: &[u8]) -> XResult<'_, u64> {
    let (input, hi) = be_u32(input)?;
    let (input, lo) = be_u32(input)?;
    Ok((input, (u64::from(hi) << 32) | u64::from(lo)))
}

/// Decodes a fixed-length `opaque[n]` (n bytes plus padding to 4).
pub fn fixed_opaque(n: usize) -> impl Fn(&[u8]) -> XResult<'_, &[u8]> {
    move |input: &[u8]| {
        let (rest, data) = take(n)(input)?;
        let pad = (4 - n % 4) % 4;
        let (rest, _) = take(pad)(rest)?;
        Ok((rest, data))
    }
}

/// Decodes a variable-length `opaque<max>`, rejecting lengths above `max`.
pub fn opaque(max: usize) -> impl Fn(&[u8]) -> XResult<'_, Vec<u8>> {
    move |input: &[u8]| {
        let (rest, len) = be_u32(input)?;
        let len = len as usize;
        if len > max {
            return fail(input, ErrorKind::TooLarge);
        }
        let (rest, data) = fixed_opaque(len)(rest)?;
        Ok((rest, data.to_vec()))
    }
}

/// Decodes a variable-length `string<max>`. AFS strings are byte strings;
/// invalid UTF-8 is replaced (lossy) rather than rejected, and anything from
/// the first NUL on is dropped (servers sometimes count the terminator).
pub fn string(max: usize) -> impl Fn(&[u8]) -> XResult<'_, String> {
    move |input: &[u8]| {
        let (rest, bytes) = opaque(max)(input)?;
        Ok((rest, bytes_to_string(&bytes)))
    }
}

/// Converts a possibly NUL-terminated byte string to a `String` (lossy).
pub fn bytes_to_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// Decodes a fixed `char x[n]` vector (one word per char, low byte used)
/// into its bytes up to the first NUL.
pub fn char_vector(n: usize) -> impl Fn(&[u8]) -> XResult<'_, Vec<u8>> {
    move |input: &[u8]| {
        if input.len() / 4 < n {
            return fail(input, ErrorKind::Eof);
        }
        let mut out = Vec::with_capacity(n);
        let mut rest = input;
        let mut ended = false;
        for _ in 0..n {
            let (r, w) = be_u32(rest)?;
            rest = r;
            let b = w as u8;
            if b == 0 {
                ended = true;
            }
            if !ended {
                out.push(b);
            }
        }
        Ok((rest, out))
    }
}

/// Decodes a counted XDR array `T<max>`: a count word, then that many
/// elements. The count is checked against `max` and against the remaining
/// input (every XDR element takes at least 4 bytes), so a hostile count can
/// never cause a large allocation.
pub fn array<'a, O, F>(max: usize, mut elem: F) -> impl FnMut(&'a [u8]) -> XResult<'a, Vec<O>>
where
    F: FnMut(&'a [u8]) -> XResult<'a, O>,
{
    move |input: &'a [u8]| {
        let (mut rest, count) = be_u32(input)?;
        let count = count as usize;
        if count > max || count > rest.len() / 4 {
            return fail(input, ErrorKind::TooLarge);
        }
        let mut out = Vec::with_capacity(count);
        for _ in 0..count {
            let (r, v) = elem(rest)?;
            rest = r;
            out.push(v);
        }
        Ok((rest, out))
    }
}

/// Decodes exactly `n` consecutive elements (a fixed XDR vector `T x[n]`).
pub fn fixed_array<'a, O, F>(n: usize, mut elem: F) -> impl FnMut(&'a [u8]) -> XResult<'a, Vec<O>>
where
    F: FnMut(&'a [u8]) -> XResult<'a, O>,
{
    move |input: &'a [u8]| {
        if n > input.len() / 4 {
            return fail(input, ErrorKind::Eof);
        }
        let mut rest = input;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let (r, v) = elem(rest)?;
            rest = r;
            out.push(v);
        }
        Ok((rest, out))
    }
}

/// Decodes `n` 32-bit words into a fixed-size array.
pub fn u32_array<const N: usize>(input: &[u8]) -> XResult<'_, [u32; N]> {
    let mut out = [0u32; N];
    let mut rest = input;
    for slot in out.iter_mut() {
        let (r, v) = be_u32(rest)?;
        rest = r;
        *slot = v;
    }
    Ok((rest, out))
}

/// Runs `parser` over a complete message. Trailing bytes after a complete
/// value are ignored (lenient, as some servers pad replies), but a
/// truncated or malformed message is an [`crate::Error::Decode`].
pub fn decode_all<'a, O, F>(data: &'a [u8], mut parser: F) -> crate::Result<O>
where
    F: FnMut(&'a [u8]) -> XResult<'a, O>,
{
    let (_rest, v) = parser(data)?;
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writer_pads_opaque() {
        let mut w = XdrWriter::new();
        w.put_string("abcde");
        w.put_u64(0x0102_0304_0506_0708);
        assert_eq!(
            w.into_inner(),
            [0, 0, 0, 5, b'a', b'b', b'c', b'd', b'e', 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]
        );
    }

    #[test]
    fn array_rejects_huge_count() {
        let data = [0xff, 0xff, 0xff, 0xff, 0, 0, 0, 1];
        assert!(array(usize::MAX, u32)(&data).is_err());
        let data = [0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 2];
        assert_eq!(array(2, u32)(&data).unwrap().1, vec![1, 2]);
        assert!(array(1, u32)(&data).is_err());
    }

    #[test]
    fn opaque_rejects_over_max_and_truncation() {
        let mut w = XdrWriter::new();
        w.put_opaque(b"hello");
        let b = w.into_inner();
        assert_eq!(opaque(5)(&b).unwrap().1, b"hello");
        assert!(opaque(4)(&b).is_err());
        assert!(opaque(5)(&b[..b.len() - 1]).is_err());
    }

    #[test]
    fn char_vector_round_trip() {
        let mut w = XdrWriter::new();
        w.put_char_vector(b"root.cell", 65);
        let b = w.into_inner();
        assert_eq!(b.len(), 260);
        let (rest, v) = char_vector(65)(&b).unwrap();
        assert!(rest.is_empty());
        assert_eq!(v, b"root.cell");
    }
}
