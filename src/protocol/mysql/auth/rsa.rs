//! RSA for caching_sha2_password full authentication without TLS: the password, XORed
//! with the scramble, is encrypted with the server's public key (OAEP, SHA-1).
//!
//! The arithmetic and padding are mysql_common's pure-Rust RSA (no OpenSSL). Its
//! `PublicKey::from_pem` and `encrypt_block` panic on malformed keys or oversized input,
//! and the key comes from a peer, so the PEM/DER is read here with checked code and every
//! size is checked before mysql_common is called.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use mysql_common::crypto::rsa::{Pkcs1OaepPadding, PublicKey, Rng};
use mysql_common::num_bigint::BigUint;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RsaError {
    #[error("server's RSA public key is not a PEM public key")]
    Pem,
    #[error("server's RSA public key is malformed at {0}")]
    Der(&'static str),
    #[error("server's RSA key of {bits} bits is outside 1024..=16384 bits")]
    KeySize { bits: u64 },
    #[error("password of {len} bytes is too long for a {bits}-bit RSA key")]
    PasswordTooLong { len: usize, bits: u64 },
}

/// SHA-1 digest length; OAEP needs room for two of them and two more bytes.
const OAEP_OVERHEAD: usize = 2 * 20 + 2;

/// A public RSA key read from a server, checked to be usable.
#[derive(Debug)]
pub struct ServerKey {
    key: PublicKey,
}

impl ServerKey {
    /// Reads a `BEGIN PUBLIC KEY` (SubjectPublicKeyInfo) or `BEGIN RSA PUBLIC KEY`
    /// (PKCS#1) PEM block.
    pub fn from_pem(pem: &[u8]) -> Result<ServerKey, RsaError> {
        let text = std::str::from_utf8(pem).map_err(|_| RsaError::Pem)?;
        let (pkcs1, body) = if let Some(body) = between(
            text,
            "-----BEGIN RSA PUBLIC KEY-----",
            "-----END RSA PUBLIC KEY-----",
        ) {
            (true, body)
        } else if let Some(body) = between(
            text,
            "-----BEGIN PUBLIC KEY-----",
            "-----END PUBLIC KEY-----",
        ) {
            (false, body)
        } else {
            return Err(RsaError::Pem);
        };
        let b64: String = body.chars().filter(|c| !c.is_ascii_whitespace()).collect();
        let der = B64.decode(b64).map_err(|_| RsaError::Pem)?;
        let (n, e) = if pkcs1 {
            pkcs1_key(&der)?
        } else {
            spki_key(&der)?
        };
        let modulus = BigUint::from_bytes_be(n);
        let bits = modulus.bits();
        if !(1024..=16384).contains(&bits) {
            return Err(RsaError::KeySize { bits });
        }
        let exponent = BigUint::from_bytes_be(e);
        if exponent < BigUint::from(3u8) {
            return Err(RsaError::Der("exponent"));
        }
        Ok(ServerKey {
            key: PublicKey::new(modulus, exponent),
        })
    }

    /// Encrypts `password` for caching_sha2_password: (password ‖ NUL) XOR scramble,
    /// OAEP-padded with `seed` as the padding's random seed (20 bytes, injected so tests
    /// are deterministic; use fresh random bytes otherwise).
    pub fn encrypt_password(
        &self,
        password: &[u8],
        scramble: &[u8],
        seed: [u8; 20],
    ) -> Result<Vec<u8>, RsaError> {
        let k = self.key.num_octets();
        let len = password.len() + 1;
        if len + OAEP_OVERHEAD > k || scramble.is_empty() {
            return Err(RsaError::PasswordTooLong {
                len: password.len(),
                bits: self.key.modulus().bits(),
            });
        }
        let mut block = Vec::with_capacity(len);
        block.extend_from_slice(password);
        block.push(0);
        for (i, b) in block.iter_mut().enumerate() {
            *b ^= scramble[i % scramble.len()];
        }
        Ok(self
            .key
            .encrypt_block(&block, Pkcs1OaepPadding::new(FixedSeed(Some(seed)))))
    }
}

/// The OAEP seed, handed to mysql_common's padding (which asks for it exactly once).
struct FixedSeed(Option<[u8; 20]>);

#[derive(Debug, thiserror::Error)]
#[error("OAEP seed already used or of the wrong length")]
struct SeedUsed;

impl Rng for FixedSeed {
    type Error = SeedUsed;

    fn fill(&mut self, dest: &mut [u8]) -> Result<(), SeedUsed> {
        match self.0.take() {
            Some(seed) if dest.len() == seed.len() => {
                dest.copy_from_slice(&seed);
                Ok(())
            }
            // mysql_common would panic on this error; it asks once for 20 bytes, which
            // the size checks above guarantee, so this arm is not reached.
            _ => Err(SeedUsed),
        }
    }
}

fn between<'a>(text: &'a str, begin: &str, end: &str) -> Option<&'a str> {
    let start = text.find(begin)? + begin.len();
    let stop = text[start..].find(end)? + start;
    Some(&text[start..stop])
}

/// One DER element: (tag, contents, rest).
fn element(der: &[u8]) -> Result<(u8, &[u8], &[u8]), RsaError> {
    let (&tag, rest) = der.split_first().ok_or(RsaError::Der("tag"))?;
    let (&first, rest) = rest.split_first().ok_or(RsaError::Der("length"))?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7F);
        if n == 0 || n > 4 {
            return Err(RsaError::Der("length"));
        }
        let bytes = rest.get(..n).ok_or(RsaError::Der("length"))?;
        let len = bytes
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    let contents = rest.get(..len).ok_or(RsaError::Der("contents"))?;
    Ok((tag, contents, &rest[len..]))
}

fn expect<'a>(
    der: &'a [u8],
    tag: u8,
    what: &'static str,
) -> Result<(&'a [u8], &'a [u8]), RsaError> {
    match element(der)? {
        (t, contents, rest) if t == tag => Ok((contents, rest)),
        _ => Err(RsaError::Der(what)),
    }
}

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
const BIT_STRING: u8 = 0x03;

/// RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }
fn pkcs1_key(der: &[u8]) -> Result<(&[u8], &[u8]), RsaError> {
    let (seq, _) = expect(der, SEQUENCE, "RSAPublicKey")?;
    let (n, rest) = expect(seq, INTEGER, "modulus")?;
    let (e, _) = expect(rest, INTEGER, "exponent")?;
    Ok((n, e))
}

/// SubjectPublicKeyInfo ::= SEQUENCE { algorithm SEQUENCE, subjectPublicKey BIT STRING }
fn spki_key(der: &[u8]) -> Result<(&[u8], &[u8]), RsaError> {
    let (seq, _) = expect(der, SEQUENCE, "SubjectPublicKeyInfo")?;
    let (_algorithm, rest) = expect(seq, SEQUENCE, "algorithm")?;
    let (bits, _) = expect(rest, BIT_STRING, "subjectPublicKey")?;
    match bits.split_first() {
        Some((0, key)) => pkcs1_key(key),
        _ => Err(RsaError::Der("subjectPublicKey")),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use sha1::{Digest, Sha1};

    /// A throwaway 1024-bit test key (made with `openssl genrsa 1024`), public half.
    pub(crate) const PUBLIC_PEM: &str = "-----BEGIN PUBLIC KEY-----
MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQC7dqe0OtK3gtaVK/gOxRh8Sd9W
YSI4waXptj32gLnspK49gAR9JeGX9A1zuxqxadWrrSF/OslJyHMndRbbqJEm7Vbj
Yi6LQ7HexfIFvwL9WPpNqTlaa+2f+I8DG/Hg2XcAJZBNGxbdVdLzKQwHeoFRaEf4
mW1r0ohRBHS/rbdwHQIDAQAB
-----END PUBLIC KEY-----
";
    const PKCS1_PEM: &str = "-----BEGIN RSA PUBLIC KEY-----
MIGJAoGBALt2p7Q60reC1pUr+A7FGHxJ31ZhIjjBpem2PfaAueykrj2ABH0l4Zf0
DXO7GrFp1autIX86yUnIcyd1FtuokSbtVuNiLotDsd7F8gW/Av1Y+k2pOVpr7Z/4
jwMb8eDZdwAlkE0bFt1V0vMpDAd6gVFoR/iZbWvSiFEEdL+tt3AdAgMBAAE=
-----END RSA PUBLIC KEY-----
";
    /// Its private exponent, to decrypt in tests.
    const PRIVATE_EXPONENT_HEX: &str = "b96ebea70604c7e7d1510f84393ff75f82473c8faaa54fd04965aed736303388169ed91217a53008fa2d904c0534774717a1935fe20b984382bd06128d47aa038eb6bccf6424ef36ebb6470ad7f190a9ddc955b982b857917b3e78ebd1551cea37024bc09b9801e1e1ff6197bf007c65945f864011bdad4ae239d92e4e902a95";

    fn mgf1(seed: &[u8], len: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut counter = 0u32;
        while out.len() < len {
            let mut h = Sha1::new();
            h.update(seed);
            h.update(counter.to_be_bytes());
            out.extend_from_slice(&h.finalize());
            counter += 1;
        }
        out.truncate(len);
        out
    }

    /// Textbook RSA decryption + OAEP decoding, written independently of mysql_common.
    pub(crate) fn decrypt(key: &ServerKey, cipher: &[u8]) -> Vec<u8> {
        let d = BigUint::parse_bytes(PRIVATE_EXPONENT_HEX.as_bytes(), 16).unwrap();
        let m = BigUint::from_bytes_be(cipher).modpow(&d, key.key.modulus());
        let k = key.key.num_octets();
        let mut em = m.to_bytes_be();
        while em.len() < k {
            em.insert(0, 0);
        }
        assert_eq!(em[0], 0);
        let (masked_seed, masked_db) = em[1..].split_at(20);
        let seed: Vec<u8> = masked_seed
            .iter()
            .zip(mgf1(masked_db, 20))
            .map(|(a, b)| a ^ b)
            .collect();
        let db: Vec<u8> = masked_db
            .iter()
            .zip(mgf1(&seed, masked_db.len()))
            .map(|(a, b)| a ^ b)
            .collect();
        assert_eq!(&db[..20], &Sha1::digest([])[..]);
        let one = db[20..].iter().position(|&b| b != 0).unwrap() + 20;
        assert_eq!(db[one], 1);
        db[one + 1..].to_vec()
    }

    #[test]
    fn encrypts_so_the_private_key_recovers_the_xored_password() {
        let scramble = b"0123456789abcdefghij";
        for pem in [PUBLIC_PEM, PKCS1_PEM] {
            let key = ServerKey::from_pem(pem.as_bytes()).unwrap();
            let cipher = key
                .encrypt_password(b"app-secret", scramble, [9; 20])
                .unwrap();
            assert_eq!(cipher.len(), 128);
            let plain = decrypt(&key, &cipher);
            let unxored: Vec<u8> = plain
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ scramble[i % 20])
                .collect();
            assert_eq!(unxored, b"app-secret\0");
            // deterministic for a fixed seed, different for another
            assert_eq!(
                key.encrypt_password(b"app-secret", scramble, [9; 20])
                    .unwrap(),
                cipher
            );
            assert_ne!(
                key.encrypt_password(b"app-secret", scramble, [8; 20])
                    .unwrap(),
                cipher
            );
        }
    }

    #[test]
    fn bad_keys_and_long_passwords_are_errors_not_panics() {
        let key = ServerKey::from_pem(PUBLIC_PEM.as_bytes()).unwrap();
        assert!(matches!(
            key.encrypt_password(&[b'x'; 86], b"s", [0; 20]),
            Err(RsaError::PasswordTooLong { .. })
        ));
        assert!(key.encrypt_password(&[b'x'; 85], b"s", [0; 20]).is_ok());
        let cases: &[&str] = &[
            "",
            "-----BEGIN PUBLIC KEY-----\n-----END PUBLIC KEY-----",
            "-----BEGIN PUBLIC KEY-----\n!!!!\n-----END PUBLIC KEY-----",
            "-----BEGIN PUBLIC KEY-----\nMAA=\n-----END PUBLIC KEY-----",
            "-----BEGIN PUBLIC KEY-----\nMIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQC7dqe0\n-----END PUBLIC KEY-----",
            "-----BEGIN RSA PUBLIC KEY-----\nMAYCAQcCAQM=\n-----END RSA PUBLIC KEY-----",
            "-----BEGIN RSA PUBLIC KEY-----\nMIQAAAA=\n-----END RSA PUBLIC KEY-----",
        ];
        for pem in cases {
            assert!(ServerKey::from_pem(pem.as_bytes()).is_err(), "{pem}");
        }
        // every truncation of a good key is an error, never a panic
        let der = B64
            .decode(
                PUBLIC_PEM
                    .lines()
                    .filter(|l| !l.starts_with("-----"))
                    .collect::<String>(),
            )
            .unwrap();
        for cut in 0..der.len() {
            assert!(spki_key(&der[..cut]).is_err(), "cut at {cut}");
        }
    }
}
