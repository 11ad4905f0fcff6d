//! fcrypt, the 64-bit block cipher of rxkad, with the PCBC mode that
//! OpenAFS calls `fc_cbc_encrypt`.
//!
//! fcrypt is a 16-round Feistel network on two big-endian 32-bit halves.
//! The key schedule drops the low (parity) bit of each key byte, giving a
//! 56-bit value; round key *i* is its low 32 bits after *i* right rotations
//! by 11 within 56 bits. The round function XORs the round key into one
//! half, looks each byte up in its own S-box and XORs the four (rotated)
//! results into the other half.
//!
//! The S-box byte values are the published tables (as in the BSD-licensed
//! KTH implementation, OpenAFS src/rxkad/bg-fcrypt.c); each box's bytes are
//! placed at a fixed bit position of the 32-bit word (box 0 `<< 3`,
//! box 1 rotated right by 5, box 2 `<< 11`, box 3 `<< 19`).

/// Block size in bytes.
pub const BLOCK: usize = 8;

const ROUNDS: usize = 16;

#[rustfmt::skip]
mod sboxes {
    include!("fcrypt_sboxes.rs");
}

const fn build_table(bytes: &[u8; 256], which: u32) -> [u32; 256] {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let x = bytes[i] as u32;
        t[i] = match which {
            0 => x << 3,
            1 => x.rotate_right(5),
            2 => x << 11,
            _ => x << 19,
        };
        i += 1;
    }
    t
}

static T0: [u32; 256] = build_table(&sboxes::S0, 0);
static T1: [u32; 256] = build_table(&sboxes::S1, 1);
static T2: [u32; 256] = build_table(&sboxes::S2, 2);
static T3: [u32; 256] = build_table(&sboxes::S3, 3);

#[inline(always)]
fn f(x: u32, k: u32) -> u32 {
    let u = x ^ k;
    T0[(u >> 24) as usize]
        ^ T1[((u >> 16) & 0xff) as usize]
        ^ T2[((u >> 8) & 0xff) as usize]
        ^ T3[(u & 0xff) as usize]
}

fn load(b: &[u8]) -> (u32, u32) {
    (
        u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
        u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
    )
}

fn store(b: &mut [u8], l: u32, r: u32) {
    b[..4].copy_from_slice(&l.to_be_bytes());
    b[4..8].copy_from_slice(&r.to_be_bytes());
}

/// An fcrypt key schedule.
#[derive(Clone, PartialEq, Eq)]
pub struct Fcrypt {
    sched: [u32; ROUNDS],
}

impl Drop for Fcrypt {
    /// The key schedule is key material: wipe it.
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.sched);
    }
}

impl std::fmt::Debug for Fcrypt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Fcrypt(..)")
    }
}

impl Fcrypt {
    /// Key schedule for an 8-byte key (the low bit of each byte is ignored).
    pub fn new(key: &[u8; 8]) -> Self {
        let mut k: u64 = 0;
        for &b in key {
            k = (k << 7) | (b >> 1) as u64;
        }
        const MASK56: u64 = (1 << 56) - 1;
        let mut sched = [0u32; ROUNDS];
        for s in sched.iter_mut() {
            *s = k as u32;
            k = ((k >> 11) | (k << (56 - 11))) & MASK56;
        }
        Fcrypt { sched }
    }

    fn enc(&self, mut l: u32, mut r: u32) -> (u32, u32) {
        for pair in self.sched.chunks_exact(2) {
            l ^= f(r, pair[0]);
            r ^= f(l, pair[1]);
        }
        (l, r)
    }

    fn dec(&self, mut l: u32, mut r: u32) -> (u32, u32) {
        for pair in self.sched.rchunks_exact(2) {
            r ^= f(l, pair[1]);
            l ^= f(r, pair[0]);
        }
        (l, r)
    }

    /// Encrypt one block in place (ECB).
    pub fn encrypt_block(&self, block: &mut [u8; 8]) {
        let (l, r) = load(block);
        let (l, r) = self.enc(l, r);
        store(block, l, r);
    }

    /// Decrypt one block in place (ECB).
    pub fn decrypt_block(&self, block: &mut [u8; 8]) {
        let (l, r) = load(block);
        let (l, r) = self.dec(l, r);
        store(block, l, r);
    }

    /// PCBC-encrypt `data` in place (OpenAFS `fc_cbc_encrypt`, Linux
    /// `pcbc(fcrypt)`): c = E(p ^ v), next v = p ^ c. A trailing partial
    /// block (length not a multiple of 8) is left untouched.
    pub fn pcbc_encrypt(&self, data: &mut [u8], iv: &[u8; 8]) {
        let (mut v0, mut v1) = load(iv);
        for blk in data.chunks_exact_mut(BLOCK) {
            let (p0, p1) = load(blk);
            let (c0, c1) = self.enc(p0 ^ v0, p1 ^ v1);
            store(blk, c0, c1);
            v0 = p0 ^ c0;
            v1 = p1 ^ c1;
        }
    }

    /// PCBC-decrypt `data` in place; the inverse of [`Fcrypt::pcbc_encrypt`].
    pub fn pcbc_decrypt(&self, data: &mut [u8], iv: &[u8; 8]) {
        let (mut v0, mut v1) = load(iv);
        for blk in data.chunks_exact_mut(BLOCK) {
            let (c0, c1) = load(blk);
            let (d0, d1) = self.dec(c0, c1);
            let (p0, p1) = (d0 ^ v0, d1 ^ v1);
            store(blk, p0, p1);
            v0 = p0 ^ c0;
            v1 = p1 ^ c1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    struct Vector {
        key: [u8; 8],
        iv: [u8; 8],
        ptext: &'static [u8],
        ctext: &'static [u8],
    }

    const QUICK: &[u8] = b"The quick brown fox jumps over the lazy dogs.\0\0\0"; // C literal incl. its terminator: 48 bytes

    /// Linux crypto/testmgr.h `fcrypt_pcbc_tv_template` (also
    /// net/rxrpc/tests); the first entry doubles as the `ecb(fcrypt)` test.
    const VECTORS: &[Vector] = &[
        Vector {
            key: [0; 8],
            iv: [0; 8],
            ptext: &[0; 8],
            ctext: &[0x0E, 0x09, 0x00, 0xC7, 0x3E, 0xF7, 0xED, 0x41],
        },
        Vector {
            key: [0x11, 0x44, 0x77, 0xAA, 0xDD, 0x00, 0x33, 0x66],
            iv: [0; 8],
            ptext: &[0x12, 0x34, 0x56, 0x78, 0x9A, 0xBC, 0xDE, 0xF0],
            ctext: &[0xD8, 0xED, 0x78, 0x74, 0x77, 0xEC, 0x06, 0x80],
        },
        Vector {
            key: [0xf0, 0xe1, 0xd2, 0xc3, 0xb4, 0xa5, 0x96, 0x87],
            iv: [0xfe, 0xdc, 0xba, 0x98, 0x76, 0x54, 0x32, 0x10],
            ptext: QUICK,
            ctext: &[
                0x00, 0xf0, 0x0e, 0x11, 0x75, 0xe6, 0x23, 0x82, 0xee, 0xac, 0x98, 0x62, 0x44, 0x51,
                0xe4, 0x84, 0xc3, 0x59, 0xd8, 0xaa, 0x64, 0x60, 0xae, 0xf7, 0xd2, 0xd9, 0x13, 0x79,
                0x72, 0xa3, 0x45, 0x03, 0x23, 0xb5, 0x62, 0xd7, 0x0c, 0xf5, 0x27, 0xd1, 0xf8, 0x91,
                0x3c, 0xac, 0x44, 0x22, 0x92, 0xef,
            ],
        },
        Vector {
            key: [0xfe, 0xdc, 0xba, 0x98, 0x76, 0x54, 0x32, 0x10],
            iv: [0xf0, 0xe1, 0xd2, 0xc3, 0xb4, 0xa5, 0x96, 0x87],
            ptext: QUICK,
            ctext: &[
                0xca, 0x90, 0xf5, 0x9d, 0xcb, 0xd4, 0xd2, 0x3c, 0x01, 0x88, 0x7f, 0x3e, 0x31, 0x6e,
                0x62, 0x9d, 0xd8, 0xe0, 0x57, 0xa3, 0x06, 0x3a, 0x42, 0x58, 0x2a, 0x28, 0xfe, 0x72,
                0x52, 0x2f, 0xdd, 0xe0, 0x19, 0x89, 0x09, 0x1c, 0x2a, 0x8e, 0x8c, 0x94, 0xfc, 0xc7,
                0x68, 0xe4, 0x88, 0xaa, 0xde, 0x0f,
            ],
        },
    ];

    #[test]
    fn ecb_vectors() {
        // Single-block vectors with a zero IV are plain ECB.
        for v in &VECTORS[..2] {
            let c = Fcrypt::new(&v.key);
            let mut b: [u8; 8] = v.ptext.try_into().unwrap();
            c.encrypt_block(&mut b);
            assert_eq!(&b[..], v.ctext);
            c.decrypt_block(&mut b);
            assert_eq!(&b[..], v.ptext);
        }
    }

    #[test]
    fn pcbc_vectors() {
        for v in VECTORS {
            let c = Fcrypt::new(&v.key);
            let mut d = v.ptext.to_vec();
            c.pcbc_encrypt(&mut d, &v.iv);
            assert_eq!(d, v.ctext);
            c.pcbc_decrypt(&mut d, &v.iv);
            assert_eq!(d, v.ptext);
        }
    }

    #[test]
    fn pcbc_is_not_cbc() {
        // Flipping a bit in ciphertext block 1 corrupts every later block
        // under PCBC (under CBC only blocks 1 and 2 would change).
        let v = &VECTORS[2];
        let c = Fcrypt::new(&v.key);
        let mut d = v.ctext.to_vec();
        d[8] ^= 1;
        c.pcbc_decrypt(&mut d, &v.iv);
        assert_eq!(&d[..8], &v.ptext[..8]);
        for i in 1..6 {
            assert_ne!(
                &d[i * 8..i * 8 + 8],
                &v.ptext[i * 8..i * 8 + 8],
                "block {i}"
            );
        }
    }

    proptest! {
        #[test]
        fn ecb_round_trip(key: [u8; 8], block: [u8; 8]) {
            let c = Fcrypt::new(&key);
            let mut b = block;
            c.encrypt_block(&mut b);
            c.decrypt_block(&mut b);
            prop_assert_eq!(b, block);
        }

        #[test]
        fn pcbc_round_trip(key: [u8; 8], iv: [u8; 8], blocks in proptest::collection::vec(any::<[u8; 8]>(), 0..20)) {
            let c = Fcrypt::new(&key);
            let plain: Vec<u8> = blocks.concat();
            let mut d = plain.clone();
            c.pcbc_encrypt(&mut d, &iv);
            if !plain.is_empty() {
                prop_assert_ne!(&d, &plain);
            }
            c.pcbc_decrypt(&mut d, &iv);
            prop_assert_eq!(d, plain);
        }
    }
}
