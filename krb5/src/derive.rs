//! `tkt_DeriveDesKey` from OpenAFS `src/rxkad/ticket5.c`: turn a Kerberos 5
//! session key into the 8-byte DES key used by rxkad.  Pure Rust, no libkrb5.

use hmac::{Hmac, Mac};
use md5::Md5;
use zeroize::{Zeroize, Zeroizing};

use crate::Error;

/// The 16 DES weak and semi-weak keys (odd parity), as `DES_is_weak_key` knows them.
const WEAK_KEYS: [[u8; 8]; 16] = [
    // weak
    [0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01],
    [0xFE, 0xFE, 0xFE, 0xFE, 0xFE, 0xFE, 0xFE, 0xFE],
    [0x1F, 0x1F, 0x1F, 0x1F, 0x0E, 0x0E, 0x0E, 0x0E],
    [0xE0, 0xE0, 0xE0, 0xE0, 0xF1, 0xF1, 0xF1, 0xF1],
    // semi-weak
    [0x01, 0xFE, 0x01, 0xFE, 0x01, 0xFE, 0x01, 0xFE],
    [0xFE, 0x01, 0xFE, 0x01, 0xFE, 0x01, 0xFE, 0x01],
    [0x1F, 0xE0, 0x1F, 0xE0, 0x0E, 0xF1, 0x0E, 0xF1],
    [0xE0, 0x1F, 0xE0, 0x1F, 0xF1, 0x0E, 0xF1, 0x0E],
    [0x01, 0xE0, 0x01, 0xE0, 0x01, 0xF1, 0x01, 0xF1],
    [0xE0, 0x01, 0xE0, 0x01, 0xF1, 0x01, 0xF1, 0x01],
    [0x1F, 0xFE, 0x1F, 0xFE, 0x0E, 0xFE, 0x0E, 0xFE],
    [0xFE, 0x1F, 0xFE, 0x1F, 0xFE, 0x0E, 0xFE, 0x0E],
    [0x01, 0x1F, 0x01, 0x1F, 0x01, 0x0E, 0x01, 0x0E],
    [0x1F, 0x01, 0x1F, 0x01, 0x0E, 0x01, 0x0E, 0x01],
    [0xE0, 0xFE, 0xE0, 0xFE, 0xF1, 0xFE, 0xF1, 0xFE],
    [0xFE, 0xE0, 0xFE, 0xE0, 0xFE, 0xF1, 0xFE, 0xF1],
];

/// Sets the low bit of every byte so each byte has an odd number of 1 bits
/// (`DES_set_odd_parity`).
pub(crate) fn set_odd_parity(key: &mut [u8; 8]) {
    for b in key.iter_mut() {
        let high = *b & 0xfe;
        *b = high | u8::from(high.count_ones() % 2 == 0);
    }
}

/// `DES_is_weak_key`: true for the 4 weak and 12 semi-weak DES keys.
pub(crate) fn is_weak_key(key: &[u8; 8]) -> bool {
    WEAK_KEYS.iter().any(|w| w == key)
}

/// RFC 3961 random-to-key inverse for 3DES (`compress_parity_bits`): every
/// 8-byte block becomes 7 bytes, the bits of the 8th byte (from bit 1 up)
/// going into the low bit of the first seven.
pub(crate) fn compress_parity_bits(key: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    if !key.len().is_multiple_of(8) {
        return None;
    }
    let mut out = Zeroizing::new(Vec::with_capacity(key.len() / 8 * 7));
    for block in key.chunks_exact(8) {
        let mut tmp = block[7] >> 1;
        for &b in &block[..7] {
            out.push((b & 0xfe) | (tmp & 1));
            tmp >>= 1;
        }
    }
    Some(out)
}

/// One output block of the KDF: HMAC-MD5(key, [i] || "rxkad" || 0 || BE32(64)),
/// first 8 bytes.
pub(crate) fn kdf_block(key: &[u8], i: u8) -> [u8; 8] {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <Hmac<Md5> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(&[i]);
    mac.update(b"rxkad\0");
    mac.update(&64u32.to_be_bytes());
    let mut digest = mac.finalize().into_bytes();
    let mut out = [0u8; 8];
    out.copy_from_slice(&digest[..8]);
    digest.as_mut_slice().zeroize();
    out
}

/// The counter loop of `rxkad_derive_des_key`: i = 1..=255, odd parity,
/// first key that is not weak wins.
pub(crate) fn select_key(mut candidate: impl FnMut(u8) -> [u8; 8]) -> Option<[u8; 8]> {
    (1..=255u8).find_map(|i| {
        let mut k = candidate(i);
        set_odd_parity(&mut k);
        (!is_weak_key(&k)).then_some(k)
    })
}

/// See [`crate::derive_des_key`].
pub(crate) fn derive(enctype: i32, key: &[u8]) -> Result<[u8; 8], Error> {
    let bad_len = || Error::BadKeyLength {
        enctype,
        len: key.len(),
    };
    match enctype {
        // des-cbc-crc, des-cbc-md4, des-cbc-md5: the session key itself.
        1..=3 => key.try_into().map_err(|_| bad_len()),
        // ENCTYPE_NULL and the other reserved/DES-signature numbers.
        i32::MIN..=0 | 4 | 6 | 8..=15 => Err(Error::UnsupportedEnctype(enctype)),
        // des3-cbc-md5, old des3-cbc-sha1, des3-cbc-sha1: strip parity, then KDF.
        5 | 7 | 16 => {
            let compressed = compress_parity_bits(key).ok_or_else(bad_len)?;
            if compressed.len() < 7 {
                return Err(bad_len());
            }
            select_key(|i| kdf_block(&compressed, i)).ok_or(Error::KeyDerivation(enctype))
        }
        // AES, RC4, Camellia, ...: KDF on the raw key.
        _ => {
            if key.len() < 7 {
                return Err(bad_len());
            }
            select_key(|i| kdf_block(key, i)).ok_or(Error::KeyDerivation(enctype))
        }
    }
}
