//! Kerberos 5 credentials for AFS tokens, as aklog gets them.
//!
//! [`get_token`] asks libkrb5 for a service ticket for the cell (first
//! `afs/<cell>@REALM`, then `afs@REALM`, as OpenAFS `aklog` does) and turns it
//! into an rxkad-k5 token: kvno 256, the whole DER ticket, and the 8-byte key
//! that OpenAFS `tkt_DeriveDesKey` derives from the Kerberos session key
//! ([`derive_des_key`], pure Rust).

mod derive;
mod ffi;
mod krb;

/// `RXKAD_TKT_TYPE_KERBEROS_V5`: the kvno an rxkad token carries for a raw
/// Kerberos 5 ticket.
pub const RXKAD_TKT_TYPE_KERBEROS_V5: u32 = 256;

/// An rxkad-k5 token for one cell. Printed without its ticket and key, and
/// zeroed when dropped (copy out what must outlive it).
#[derive(Clone, PartialEq, Eq, zeroize::Zeroize, zeroize::ZeroizeOnDrop)]
pub struct AfsToken {
    /// The client, e.g. `alice@TEST.LAB`.
    pub client_principal: String,
    /// The service principal that worked, e.g. `afs/test.lab@TEST.LAB`.
    pub service_principal: String,
    /// Always [`RXKAD_TKT_TYPE_KERBEROS_V5`] (256).
    pub kvno: u32,
    /// The raw DER `Ticket` (`creds.ticket`), starting with 0x61.
    pub ticket: Vec<u8>,
    /// The rxkad session key, derived as `tkt_DeriveDesKey` does.
    pub session_key: [u8; 8],
    /// Enctype of the Kerberos session key.
    pub enctype: i32,
    /// Start of validity, unix seconds (starttime, or authtime if unset).
    pub start: u64,
    /// End of validity, unix seconds.
    pub end: u64,
}

impl std::fmt::Debug for AfsToken {
    // The session key is a secret: never print it by accident.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AfsToken")
            .field("client_principal", &self.client_principal)
            .field("service_principal", &self.service_principal)
            .field("kvno", &self.kvno)
            .field(
                "ticket",
                &format_args!("<redacted, {} bytes>", self.ticket.len()),
            )
            .field("session_key", &"<redacted>")
            .field("enctype", &self.enctype)
            .field("start", &self.start)
            .field("end", &self.end)
            .finish()
    }
}

/// What to get a token for.
#[derive(Debug, Clone, Copy, Default)]
pub struct Request<'a> {
    /// The AFS cell, e.g. `test.lab`.
    pub cell: &'a str,
    /// The Kerberos realm of the cell (aklog `-k`); `None` to work it out.
    pub realm: Option<&'a str>,
    /// Credentials cache name (e.g. `FILE:/tmp/krb5cc_1000`); `None` for the
    /// default (`KRB5CCNAME`, else the krb5.conf default).
    pub ccache: Option<&'a str>,
}

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No credentials cache, no client principal in it, or no usable TGT.
    #[error("no Kerberos credentials in ccache {ccache}: {detail} (run kinit first)")]
    NoCredentials { ccache: String, detail: String },
    /// None of the AFS service principals could be had.
    #[error("could not get a ticket for any AFS service principal (tried {}): {detail}", .tried.join(", "))]
    NoServicePrincipal { tried: Vec<String>, detail: String },
    /// A libkrb5 call failed.
    #[error("{call} failed: {message} (krb5 error {code})")]
    Krb5 {
        call: &'static str,
        code: i32,
        message: String,
    },
    /// The session key's enctype has no rxkad key derivation.
    #[error("unsupported Kerberos enctype {0} for rxkad")]
    UnsupportedEnctype(i32),
    /// The session key has the wrong length for its enctype.
    #[error("session key of enctype {enctype} has unusable length {len}")]
    BadKeyLength { enctype: i32, len: usize },
    /// All 255 key-derivation rounds gave DES weak keys (practically impossible).
    #[error("rxkad key derivation for enctype {0} produced only weak DES keys")]
    KeyDerivation(i32),
    /// A string argument cannot be passed to libkrb5 (e.g. contains NUL).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

/// Gets an rxkad-k5 token for `req.cell` from the Kerberos credentials cache,
/// asking the KDC for a service ticket if the cache lacks one (like aklog).
///
/// Principals tried, in order:
/// - with `req.realm = Some(R)`: `afs/<cell>@R`, `afs@R`;
/// - otherwise: `afs/<cell>@<client realm>`, then with the cell's realm
///   (`krb5_get_host_realm(cell)`, else the upper-cased cell name)
///   `afs/<cell>@<cell realm>` (if that realm differs) and `afs@<cell realm>`.
pub fn get_token(req: &Request) -> Result<AfsToken, Error> {
    krb::get_token(req)
}

/// `tkt_DeriveDesKey` (OpenAFS ticket5.c): the rxkad DES key for a Kerberos
/// session key of the given enctype.
///
/// - DES (1, 2, 3): the 8 key bytes unchanged.
/// - 3DES (5, 7, 16): parity bits removed (8 → 7 bytes per block), then the KDF.
/// - 0, 4, 6, 8..=15 and negative: [`Error::UnsupportedEnctype`].
/// - anything else (AES, RC4, ...): the KDF on the key as is.
///
/// KDF: for i = 1..=255, HMAC-MD5(key, [i] ‖ "rxkad" ‖ 0x00 ‖ BE32(64)),
/// first 8 bytes with odd parity; the first non-weak DES key wins.
pub fn derive_des_key(enctype: i32, key: &[u8]) -> Result<[u8; 8], Error> {
    derive::derive(enctype, key)
}

/// The default realm of the local Kerberos configuration.
pub fn default_realm() -> Result<String, Error> {
    krb::default_realm()
}

#[cfg(test)]
mod tests;
