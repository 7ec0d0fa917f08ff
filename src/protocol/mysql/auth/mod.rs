//! Password authentication plugins: the scramble algorithms shared by both sides, the
//! server side that verifies the proxy's clients ([`server`]) and the client side that
//! logs the proxy into its backends ([`client`], with [`rsa`] for caching_sha2_password
//! full authentication without TLS).

pub mod client;
pub mod rsa;
pub mod server;

use sha1::Sha1;
use sha2::{Digest, Sha256};

use super::constants::auth::{CACHING_SHA2_PASSWORD, MYSQL_NATIVE_PASSWORD};

/// The password plugins the proxy speaks on both sides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plugin {
    MysqlNativePassword,
    CachingSha2Password,
}

impl Plugin {
    pub fn name(self) -> &'static str {
        match self {
            Plugin::MysqlNativePassword => MYSQL_NATIVE_PASSWORD,
            Plugin::CachingSha2Password => CACHING_SHA2_PASSWORD,
        }
    }

    pub fn from_name(name: &[u8]) -> Option<Plugin> {
        match name {
            n if n == MYSQL_NATIVE_PASSWORD.as_bytes() => Some(Plugin::MysqlNativePassword),
            n if n == CACHING_SHA2_PASSWORD.as_bytes() => Some(Plugin::CachingSha2Password),
            _ => None,
        }
    }

    /// The client's first answer to `scramble` for this plugin; empty for an empty password.
    pub fn scramble(self, scramble: &[u8], password: &[u8]) -> Vec<u8> {
        if password.is_empty() {
            return Vec::new();
        }
        match self {
            Plugin::MysqlNativePassword => native_scramble(scramble, password).to_vec(),
            Plugin::CachingSha2Password => sha2_scramble(scramble, password).to_vec(),
        }
    }
}

/// The nonce part of plugin data: the first 20 bytes (servers may append a NUL).
fn nonce(scramble: &[u8]) -> &[u8] {
    &scramble[..scramble.len().min(super::constants::auth::SCRAMBLE_LEN)]
}

fn xor_into<const N: usize>(a: &mut [u8; N], b: &[u8; N]) {
    for (x, y) in a.iter_mut().zip(b) {
        *x ^= y;
    }
}

/// mysql_native_password: SHA1(password) XOR SHA1(scramble ‖ SHA1(SHA1(password))).
pub fn native_scramble(scramble: &[u8], password: &[u8]) -> [u8; 20] {
    let stage1: [u8; 20] = Sha1::digest(password).into();
    let stage2: [u8; 20] = Sha1::digest(stage1).into();
    let mut h = Sha1::new();
    h.update(nonce(scramble));
    h.update(stage2);
    let mut out: [u8; 20] = h.finalize().into();
    xor_into(&mut out, &stage1);
    out
}

/// caching_sha2_password fast path: SHA256(password) XOR SHA256(SHA256(SHA256(password)) ‖ scramble).
pub fn sha2_scramble(scramble: &[u8], password: &[u8]) -> [u8; 32] {
    let stage1: [u8; 32] = Sha256::digest(password).into();
    let stage2: [u8; 32] = Sha256::digest(stage1).into();
    let mut h = Sha256::new();
    h.update(stage2);
    h.update(nonce(scramble));
    let mut out: [u8; 32] = h.finalize().into();
    xor_into(&mut out, &stage1);
    out
}

/// Equality that takes the same time wherever the inputs differ.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// SHA1(password): what a mysql_native_password answer is made from. Who holds it can log
/// in as the user wherever the server stores [`NativeHash`] of the same password.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct NativeStage1(pub [u8; 20]);

impl std::fmt::Debug for NativeStage1 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NativeStage1(<redacted>)")
    }
}

impl NativeStage1 {
    /// The answer to `scramble`, as [`native_scramble`] gives it from the password.
    pub fn answer(&self, scramble: &[u8]) -> [u8; 20] {
        let stage2: [u8; 20] = Sha1::digest(self.0).into();
        let mut h = Sha1::new();
        h.update(nonce(scramble));
        h.update(stage2);
        let mut out: [u8; 20] = h.finalize().into();
        xor_into(&mut out, &self.0);
        out
    }
}

/// What a server stores for a mysql_native_password account: SHA1(SHA1(password)),
/// written `*` and 40 hex digits in `mysql.user`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct NativeHash(pub [u8; 20]);

impl std::fmt::Debug for NativeHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NativeHash(<redacted>)")
    }
}

impl NativeHash {
    /// Parses `*` and 40 hex digits (either case); anything else is not this plugin's.
    pub fn parse(text: &str) -> Option<NativeHash> {
        let hex = text.strip_prefix('*')?.as_bytes();
        if hex.len() != 40 {
            return None;
        }
        let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
        let mut out = [0u8; 20];
        for (o, pair) in out.iter_mut().zip(hex.chunks(2)) {
            *o = digit(pair[0])? << 4 | digit(pair[1])?;
        }
        Some(NativeHash(out))
    }

    pub fn of_password(password: &[u8]) -> NativeHash {
        NativeHash(Sha1::digest(Sha1::digest(password)).into())
    }

    /// Checks a mysql_native_password answer the way the server does: recover the
    /// candidate SHA1(password) and hash it again; the recovered value when it fits.
    pub fn verify(&self, scramble: &[u8], response: &[u8]) -> Option<NativeStage1> {
        let response = <[u8; 20]>::try_from(response).ok()?;
        let mut h = Sha1::new();
        h.update(nonce(scramble));
        h.update(self.0);
        let mut candidate: [u8; 20] = h.finalize().into();
        xor_into(&mut candidate, &response);
        constant_time_eq(&Sha1::digest(candidate), &self.0).then_some(NativeStage1(candidate))
    }
}

/// Checks a mysql_native_password answer against the plain password.
pub(crate) fn verify_native(scramble: &[u8], password: &[u8], response: &[u8]) -> bool {
    if password.is_empty() {
        return is_empty_answer(response);
    }
    NativeHash::of_password(password)
        .verify(scramble, response)
        .is_some()
}

/// Checks a caching_sha2_password fast-path answer from SHA256(SHA256(password)).
pub(crate) fn verify_sha2(scramble: &[u8], password: &[u8], response: &[u8]) -> bool {
    if password.is_empty() {
        return is_empty_answer(response);
    }
    let Ok(response) = <[u8; 32]>::try_from(response) else {
        return false;
    };
    let stage2: [u8; 32] = Sha256::digest(Sha256::digest(password)).into();
    let mut h = Sha256::new();
    h.update(stage2);
    h.update(nonce(scramble));
    let mut candidate: [u8; 32] = h.finalize().into();
    xor_into(&mut candidate, &response);
    constant_time_eq(&Sha256::digest(candidate), &stage2)
}

/// An empty password is answered with nothing (or a lone NUL, from older connectors).
fn is_empty_answer(response: &[u8]) -> bool {
    response.is_empty() || response == [0]
}

#[cfg(test)]
mod tests {
    use super::*;
    use mysql_common::scramble::{scramble_native, scramble_sha256};

    const SCRAMBLE: &[u8; 20] = b"0123456789abcdefghij";

    #[test]
    fn scrambles_match_mysql_common() {
        for pw in [
            &b"app-secret"[..],
            b"x",
            "pässwörd".as_bytes(),
            &[b'p'; 300],
        ] {
            assert_eq!(
                Some(native_scramble(SCRAMBLE, pw)),
                scramble_native(SCRAMBLE, pw)
            );
            assert_eq!(
                Some(sha2_scramble(SCRAMBLE, pw)),
                scramble_sha256(SCRAMBLE, pw)
            );
            // a trailing NUL on the plugin data does not change the answer
            let with_nul = [&SCRAMBLE[..], &[0]].concat();
            assert_eq!(
                native_scramble(&with_nul, pw),
                native_scramble(SCRAMBLE, pw)
            );
        }
    }

    #[test]
    fn verifiers_accept_the_right_answer_only() {
        let pw = b"app-secret";
        let native = scramble_native(SCRAMBLE, pw).unwrap();
        let sha2 = scramble_sha256(SCRAMBLE, pw).unwrap();
        assert!(verify_native(SCRAMBLE, pw, &native));
        assert!(verify_sha2(SCRAMBLE, pw, &sha2));
        assert!(!verify_native(SCRAMBLE, b"app-secreT", &native));
        assert!(!verify_sha2(SCRAMBLE, b"app-secreT", &sha2));
        assert!(!verify_native(b"another scramble!!!!", pw, &native));
        assert!(!verify_native(SCRAMBLE, pw, &native[..19]));
        assert!(!verify_sha2(SCRAMBLE, pw, &sha2[..31]));
        assert!(!verify_native(SCRAMBLE, pw, b""));
        // empty password: empty answer (or a lone NUL) and nothing else
        assert!(verify_native(SCRAMBLE, b"", b""));
        assert!(verify_sha2(SCRAMBLE, b"", b"\0"));
        assert!(!verify_sha2(SCRAMBLE, b"", &sha2));
    }

    #[test]
    fn a_stored_hash_verifies_and_yields_what_answers_another_scramble() {
        let pw = b"runtime-secret";
        // MariaDB's PASSWORD('runtime-secret'), as mysql.user shows it
        let text = format!(
            "*{}",
            NativeHash::of_password(pw)
                .0
                .iter()
                .map(|b| format!("{b:02X}"))
                .collect::<String>()
        );
        let hash = NativeHash::parse(&text).expect("parses");
        assert_eq!(NativeHash::parse(&text.to_lowercase()), Some(hash));
        let answer = scramble_native(SCRAMBLE, pw).unwrap();
        let stage1 = hash.verify(SCRAMBLE, &answer).expect("right password");
        let other = b"another scramble!!!!";
        assert_eq!(Some(stage1.answer(other)), scramble_native(other, pw));
        assert!(
            hash.verify(SCRAMBLE, &scramble_native(SCRAMBLE, b"wrong").unwrap())
                .is_none()
        );
        assert!(hash.verify(SCRAMBLE, b"").is_none());
        for bad in [
            "",
            "*",
            "*12",
            "SCRAM-SHA-256$x",
            &text[1..],
            &format!("{text}0"),
        ] {
            assert_eq!(NativeHash::parse(bad), None, "{bad:?}");
        }
        assert_eq!(NativeHash::parse(&format!("*G{}", &text[2..])), None);
        assert!(!format!("{hash:?}{stage1:?}").contains(&text[1..5]));
    }

    #[test]
    fn plugin_names() {
        for p in [Plugin::MysqlNativePassword, Plugin::CachingSha2Password] {
            assert_eq!(Plugin::from_name(p.name().as_bytes()), Some(p));
        }
        assert_eq!(Plugin::from_name(b"client_ed25519"), None);
        assert!(
            Plugin::CachingSha2Password
                .scramble(SCRAMBLE, b"")
                .is_empty()
        );
        assert!(!constant_time_eq(b"ab", b"abc"));
    }
}
