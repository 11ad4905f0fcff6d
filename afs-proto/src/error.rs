//! The crate's error type.

/// Errors produced while encoding or decoding AFS protocol data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The input bytes do not form a valid message (truncated, bad count...).
    #[error("decode error: {0}")]
    Decode(String),
    /// A value is longer than the protocol allows (e.g. more than 50 FIDs
    /// in a bulk call, a name longer than `AFSNAMEMAX`).
    #[error("value too long for the protocol")]
    TooLong,
    /// A value cannot be represented on the wire (e.g. a NUL inside a
    /// directory entry name).
    #[error("invalid value: {0}")]
    Invalid(String),
}

/// Result alias used throughout the crate.
pub type Result<T> = std::result::Result<T, Error>;

impl<'a> From<nom::Err<nom::error::Error<&'a [u8]>>> for Error {
    fn from(e: nom::Err<nom::error::Error<&'a [u8]>>) -> Self {
        match e {
            nom::Err::Incomplete(_) => Error::Decode("truncated input".into()),
            nom::Err::Error(e) | nom::Err::Failure(e) => {
                Error::Decode(format!("{:?} with {} bytes left", e.code, e.input.len()))
            }
        }
    }
}
