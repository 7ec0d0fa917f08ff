//! Client side of SCRAM-SHA-256 (RFC 5802/7677) for backend logins, as a state enum with
//! pure steps and an injected nonce.
//!
//! Written here rather than taken from postgres-protocol's `ScramSha256` because that one
//! runs PBKDF2 (4096 HMAC rounds and more, about a millisecond of CPU in release builds) on
//! every login. At a cutover every session logs in to the new writer at once; with the
//! salted password kept per (password, salt, iterations) in a [`SaltedPasswords`] cache,
//! all but the first login of a user cost a few HMACs.

use std::collections::HashMap;
use std::sync::Mutex;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use super::scram::{Keys, ScramError};

type HmacSha256 = Hmac<Sha256>;

/// The cache holds at most this many salted passwords; it starts over when full (servers
/// keep one salt per role, so a handful of entries is the normal case).
const CACHE_LIMIT: usize = 256;

/// (SHA-256 of the password, salt, iterations).
type SaltKey = ([u8; 32], Vec<u8>, u32);
type SaltMap = HashMap<SaltKey, [u8; 32]>;

/// Salted passwords by (password, salt, iterations), shared by every backend login of the
/// process. The password itself is not kept, only its digest.
#[derive(Debug, Default)]
pub struct SaltedPasswords {
    map: Mutex<SaltMap>,
}

impl SaltedPasswords {
    fn get_or_compute(&self, password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
        let key = (Sha256::digest(password).into(), salt.to_vec(), iterations);
        if let Some(salted) = self.lock().get(&key) {
            return *salted;
        }
        // Computed outside the lock: two first logins at once both compute, which is fine.
        let salted = hi(password, salt, iterations);
        let mut map = self.lock();
        if map.len() >= CACHE_LIMIT {
            map.clear();
        }
        map.insert(key, salted);
        salted
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SaltMap> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What the client proves it knows.
#[derive(Debug)]
pub enum ClientSecret {
    /// The password (SASLprep applied); keys are derived with the server's salt.
    Password(Vec<u8>),
    /// The keys of a user this proxy verified (SCRAM pass-through): they fit any server
    /// that stores the verifier they came from, whatever its salt.
    Keys(Keys),
}

/// Where one client-side exchange stands.
#[derive(Debug)]
pub enum ScramClient {
    /// The client-first-message went out; the server's first message is next.
    AwaitServerFirst {
        secret: ClientSecret,
        nonce: String,
        client_first_bare: String,
    },
    /// The proof went out; the server's signature is next.
    AwaitServerFinal {
        server_signature: [u8; 32],
    },
    Done,
}

impl ScramClient {
    /// Starts an exchange without channel binding; returns the state and the
    /// client-first-message for SASLInitialResponse. `nonce` must be printable ASCII
    /// without commas.
    pub fn new(password: &[u8], nonce: &str) -> (ScramClient, String) {
        ScramClient::start(ClientSecret::Password(normalize(password)), nonce)
    }

    /// Like [`ScramClient::new`], proving knowledge of `keys` instead of a password.
    pub fn with_keys(keys: Keys, nonce: &str) -> (ScramClient, String) {
        ScramClient::start(ClientSecret::Keys(keys), nonce)
    }

    fn start(secret: ClientSecret, nonce: &str) -> (ScramClient, String) {
        let client_first_bare = format!("n=,r={nonce}");
        let message = format!("n,,{client_first_bare}");
        let state = ScramClient::AwaitServerFirst {
            secret,
            nonce: nonce.to_owned(),
            client_first_bare,
        };
        (state, message)
    }

    /// Handles AuthenticationSASLContinue data; returns the client-final-message.
    pub fn server_first(
        &mut self,
        data: &[u8],
        cache: &SaltedPasswords,
    ) -> Result<String, ScramError> {
        let ScramClient::AwaitServerFirst {
            secret,
            nonce,
            client_first_bare,
        } = std::mem::replace(self, ScramClient::Done)
        else {
            return Err(ScramError::Order);
        };
        let text = std::str::from_utf8(data).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let attr = |name: &str| text.split(',').find_map(|a| a.strip_prefix(name));
        let server_nonce = attr("r=").ok_or(ScramError::Malformed("server nonce"))?;
        if !server_nonce.starts_with(nonce.as_str()) || server_nonce.len() == nonce.len() {
            return Err(ScramError::Nonce);
        }
        let salt = attr("s=")
            .and_then(|s| B64.decode(s).ok())
            .ok_or(ScramError::Malformed("salt"))?;
        let iterations = attr("i=")
            .and_then(|i| i.parse::<u32>().ok())
            .filter(|i| *i > 0)
            .ok_or(ScramError::Malformed("iteration count"))?;
        let Keys {
            client_key,
            server_key,
        } = match secret {
            ClientSecret::Password(password) => {
                let salted = cache.get_or_compute(&password, &salt, iterations);
                Keys {
                    client_key: hmac(&salted, b"Client Key"),
                    server_key: hmac(&salted, b"Server Key"),
                }
            }
            ClientSecret::Keys(keys) => keys,
        };
        // "biws" is base64 of the gs2 header "n,,".
        let without_proof = format!("c=biws,r={server_nonce}");
        let auth_message = format!("{client_first_bare},{text},{without_proof}");
        let stored_key: [u8; 32] = Sha256::digest(client_key).into();
        let signature = hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(signature.iter())
            .map(|(k, s)| k ^ s)
            .collect();
        *self = ScramClient::AwaitServerFinal {
            server_signature: hmac(&server_key, auth_message.as_bytes()),
        };
        Ok(format!("{without_proof},p={}", B64.encode(proof)))
    }

    /// Handles AuthenticationSASLFinal data: the server proves it knew the password too.
    pub fn server_final(&mut self, data: &[u8]) -> Result<(), ScramError> {
        let ScramClient::AwaitServerFinal { server_signature } =
            std::mem::replace(self, ScramClient::Done)
        else {
            return Err(ScramError::Order);
        };
        let text = std::str::from_utf8(data).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let verifier = text
            .split(',')
            .find_map(|a| a.strip_prefix("v="))
            .and_then(|v| B64.decode(v).ok())
            .ok_or(ScramError::Malformed("server signature"))?;
        let diff = verifier
            .iter()
            .zip(server_signature.iter())
            .fold(u8::from(verifier.len() != 32), |acc, (a, b)| acc | (a ^ b));
        if diff == 0 {
            Ok(())
        } else {
            Err(ScramError::BadProof)
        }
    }
}

/// SASLprep of a UTF-8 password, as PostgreSQL and libpq do; anything else is used as is.
fn normalize(password: &[u8]) -> Vec<u8> {
    match std::str::from_utf8(password).map(stringprep::saslprep) {
        Ok(Ok(prepared)) => prepared.into_owned().into_bytes(),
        _ => password.to_vec(),
    }
}

/// PBKDF2-HMAC-SHA-256 with one block: RFC 5802's Hi().
fn hi(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let keyed = HmacSha256::new_from_slice(password)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    let mut mac = keyed.clone();
    mac.update(salt);
    mac.update(&1u32.to_be_bytes());
    let mut u: [u8; 32] = mac.finalize().into_bytes().into();
    let mut out = u;
    for _ in 1..iterations {
        let mut mac = keyed.clone();
        mac.update(&u);
        u = mac.finalize().into_bytes().into();
        out.iter_mut().zip(u.iter()).for_each(|(o, x)| *o ^= x);
    }
    out
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(data);
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::postgres::scram::{ScramServer, Verifier};

    /// One whole exchange against this crate's server side; `Ok` when both sides accept.
    fn exchange(
        server_password: &str,
        client_password: &str,
        cache: &SaltedPasswords,
    ) -> Result<(), ScramError> {
        let mut server = ScramServer::new(Verifier::from_password(server_password));
        let (mut client, first) = ScramClient::new(client_password.as_bytes(), "clientnonce");
        let server_first = server.client_first(first.as_bytes(), "servernonce")?;
        let client_final = client.server_first(server_first.as_bytes(), cache)?;
        let server_final = server.client_final(client_final.as_bytes())?;
        client.server_final(server_final.message.as_bytes())
    }

    #[test]
    fn keys_a_proxy_verified_log_in_to_a_server_with_the_same_verifier() {
        // The client logs in to the proxy with its password; the proxy keeps the keys.
        let verifier = Verifier::from_password("runtime-secret");
        let cache = SaltedPasswords::default();
        let mut proxy = ScramServer::new(verifier.clone());
        let (mut client, first) = ScramClient::new(b"runtime-secret", "c1");
        let server_first = proxy.client_first(first.as_bytes(), "p1").unwrap();
        let client_final = client
            .server_first(server_first.as_bytes(), &cache)
            .unwrap();
        let done = proxy.client_final(client_final.as_bytes()).unwrap();
        client.server_final(done.message.as_bytes()).unwrap();
        // The proxy logs in to the backend (same verifier) with the keys alone.
        let mut backend = ScramServer::new(verifier);
        let (mut proxy_client, first) = ScramClient::with_keys(done.keys, "c2");
        let server_first = backend.client_first(first.as_bytes(), "b2").unwrap();
        let client_final = proxy_client
            .server_first(server_first.as_bytes(), &SaltedPasswords::default())
            .unwrap();
        let last = backend.client_final(client_final.as_bytes()).unwrap();
        assert_eq!(last.keys, done.keys);
        assert_eq!(proxy_client.server_final(last.message.as_bytes()), Ok(()));
        // Keys of another verifier (same password, other salt) do not fit.
        let mut other = ScramServer::new(Verifier::from_password("runtime-secret"));
        let (mut proxy_client, first) = ScramClient::with_keys(done.keys, "c3");
        let server_first = other.client_first(first.as_bytes(), "b3").unwrap();
        let client_final = proxy_client
            .server_first(server_first.as_bytes(), &cache)
            .unwrap();
        assert_eq!(
            other.client_final(client_final.as_bytes()),
            Err(ScramError::BadProof)
        );
    }

    #[test]
    fn logs_in_against_a_verifier_and_checks_the_server() {
        let cache = SaltedPasswords::default();
        assert_eq!(exchange("sekrit", "sekrit", &cache), Ok(()));
        assert_eq!(
            exchange("sekrit", "wrong", &cache),
            Err(ScramError::BadProof)
        );
        // A server that does not know the password cannot fake its signature.
        let (mut client, _) = ScramClient::new(b"sekrit", "n1");
        client
            .server_first(b"r=n1srv,s=c2FsdA==,i=4096", &cache)
            .unwrap();
        let forged = format!("v={}", B64.encode([7u8; 32]));
        assert_eq!(
            client.server_final(forged.as_bytes()),
            Err(ScramError::BadProof)
        );
    }

    #[test]
    fn hi_matches_the_rfc_7677_test_vector() {
        // RFC 7677, section 3: user "user", password "pencil".
        let (mut client, first) = ScramClient::new(b"pencil", "rOprNGfwEbeRWgbNEkqO");
        assert_eq!(first, "n,,n=,r=rOprNGfwEbeRWgbNEkqO");
        let cache = SaltedPasswords::default();
        let server_first = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let final_message = client
            .server_first(server_first.as_bytes(), &cache)
            .unwrap();
        // The RFC's proof is over "n=user"; PostgreSQL sends an empty name, so check the
        // salted password through the server key instead: the RFC's ServerSignature for its
        // own AuthMessage is reproduced from Hi() below.
        assert!(
            final_message
                .starts_with("c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=")
        );
        let salted = hi(
            b"pencil",
            &B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap(),
            4096,
        );
        let auth = "n=user,r=rOprNGfwEbeRWgbNEkqO,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let server_signature = hmac(&hmac(&salted, b"Server Key"), auth.as_bytes());
        assert_eq!(
            B64.encode(server_signature),
            "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
    }

    #[test]
    fn the_salted_password_is_computed_once_per_salt() {
        let cache = SaltedPasswords::default();
        assert_eq!(exchange("p", "p", &cache), Ok(()));
        assert_eq!(cache.lock().len(), 1);
        assert_eq!(exchange("p", "p", &cache), Ok(()));
        // Each verifier has its own random salt: a second entry, both still correct.
        assert_eq!(cache.lock().len(), 2);
    }

    #[test]
    fn malformed_and_out_of_order_messages_are_errors() {
        let cache = SaltedPasswords::default();
        let (mut client, _) = ScramClient::new(b"p", "abc");
        assert_eq!(client.server_final(b"v=AAAA"), Err(ScramError::Order));
        let (mut client, _) = ScramClient::new(b"p", "abc");
        assert_eq!(
            client.server_first(b"r=xyz,s=c2FsdA==,i=4096", &cache),
            Err(ScramError::Nonce)
        );
        let (mut client, _) = ScramClient::new(b"p", "abc");
        assert_eq!(
            client.server_first(b"r=abcdef,s=c2FsdA==,i=0", &cache),
            Err(ScramError::Malformed("iteration count"))
        );
    }
}
