//! Server side of SCRAM-SHA-256 (RFC 5802/7677) as PostgreSQL speaks it, for
//! authenticating clients against a stored verifier. A state enum with pure steps;
//! the nonce is injected so tests can replay an exchange.
//!
//! Written here because pgwire's SCRAM server is bound to its own startup-handler
//! framework, which would own the socket that this proxy relays by hand.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

pub const MECHANISM: &str = "SCRAM-SHA-256";

type HmacSha256 = Hmac<Sha256>;

/// A stored verifier: `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verifier {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub stored_key: [u8; 32],
    pub server_key: [u8; 32],
}

impl Verifier {
    pub fn parse(s: &str) -> Option<Verifier> {
        let rest = s.strip_prefix("SCRAM-SHA-256$")?;
        let (iter_salt, keys) = rest.split_once('$')?;
        let (iterations, salt) = iter_salt.split_once(':')?;
        let (stored, server) = keys.split_once(':')?;
        Some(Verifier {
            iterations: iterations.parse().ok()?,
            salt: B64.decode(salt).ok()?,
            stored_key: B64.decode(stored).ok()?.try_into().ok()?,
            server_key: B64.decode(server).ok()?.try_into().ok()?,
        })
    }

    /// Makes a verifier from a plain password, with a random salt (SASLprep applied).
    pub fn from_password(password: &str) -> Verifier {
        let text = postgres_protocol::password::scram_sha_256(password.as_bytes());
        // postgres-protocol always produces the format parsed above.
        Verifier::parse(&text).unwrap_or_else(|| unreachable!("postgres-protocol verifier format"))
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScramError {
    #[error("SASL mechanism {0:?} is not supported, only SCRAM-SHA-256")]
    Mechanism(String),
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    #[error("channel binding is not supported")]
    ChannelBinding,
    #[error("SCRAM nonce mismatch")]
    Nonce,
    #[error("password authentication failed")]
    BadProof,
    #[error("SCRAM message out of order")]
    Order,
}

/// Where one server-side exchange stands.
#[derive(Debug)]
pub enum ScramServer {
    AwaitClientFirst {
        verifier: Verifier,
    },
    AwaitClientFinal {
        verifier: Verifier,
        gs2_header: String,
        client_first_bare: String,
        server_first: String,
        nonce: String,
    },
    Done,
}

impl ScramServer {
    pub fn new(verifier: Verifier) -> ScramServer {
        ScramServer::AwaitClientFirst { verifier }
    }

    /// Handles SASLInitialResponse data; returns the server-first-message.
    pub fn client_first(&mut self, data: &[u8], server_nonce: &str) -> Result<String, ScramError> {
        let ScramServer::AwaitClientFirst { verifier } = std::mem::replace(self, ScramServer::Done)
        else {
            return Err(ScramError::Order);
        };
        let text = std::str::from_utf8(data).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        // gs2-header: cbind-flag "," [authzid] ","
        let (flag, rest) = text
            .split_once(',')
            .ok_or(ScramError::Malformed("gs2 header"))?;
        let (_authzid, bare) = rest
            .split_once(',')
            .ok_or(ScramError::Malformed("gs2 header"))?;
        match flag {
            "n" | "y" => {}
            f if f.starts_with("p=") => return Err(ScramError::ChannelBinding),
            _ => return Err(ScramError::Malformed("channel binding flag")),
        }
        let client_nonce = bare
            .split(',')
            .find_map(|a| a.strip_prefix("r="))
            .filter(|n| !n.is_empty())
            .ok_or(ScramError::Malformed("client nonce"))?;
        let nonce = format!("{client_nonce}{server_nonce}");
        let server_first = format!(
            "r={nonce},s={},i={}",
            B64.encode(&verifier.salt),
            verifier.iterations
        );
        *self = ScramServer::AwaitClientFinal {
            verifier,
            gs2_header: text[..text.len() - bare.len()].to_owned(),
            client_first_bare: bare.to_owned(),
            server_first: server_first.clone(),
            nonce,
        };
        Ok(server_first)
    }

    /// Handles SASLResponse data; checks the proof and returns the server-final-message
    /// with the ClientKey the proof revealed.
    pub fn client_final(&mut self, data: &[u8]) -> Result<ServerFinal, ScramError> {
        let ScramServer::AwaitClientFinal {
            verifier,
            gs2_header,
            client_first_bare,
            server_first,
            nonce,
        } = std::mem::replace(self, ScramServer::Done)
        else {
            return Err(ScramError::Order);
        };
        let text = std::str::from_utf8(data).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let (without_proof, proof) = text
            .rsplit_once(",p=")
            .ok_or(ScramError::Malformed("client proof"))?;
        let mut attrs = without_proof.split(',');
        let binding = attrs
            .next()
            .and_then(|a| a.strip_prefix("c="))
            .ok_or(ScramError::Malformed("channel binding attribute"))?;
        if binding != B64.encode(gs2_header.as_bytes()) {
            return Err(ScramError::ChannelBinding);
        }
        let client_nonce = attrs
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or(ScramError::Malformed("nonce attribute"))?;
        if client_nonce != nonce {
            return Err(ScramError::Nonce);
        }
        let proof = B64
            .decode(proof)
            .map_err(|_| ScramError::Malformed("proof is not base64"))?;
        if proof.len() != 32 {
            return Err(ScramError::BadProof);
        }
        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let client_signature = hmac(&verifier.stored_key, auth_message.as_bytes());
        let mut client_key = [0u8; 32];
        for (k, (p, s)) in client_key
            .iter_mut()
            .zip(proof.iter().zip(client_signature.iter()))
        {
            *k = p ^ s;
        }
        let computed: [u8; 32] = Sha256::digest(client_key).into();
        let diff = computed
            .iter()
            .zip(verifier.stored_key.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if diff != 0 {
            return Err(ScramError::BadProof);
        }
        let server_signature = hmac(&verifier.server_key, auth_message.as_bytes());
        Ok(ServerFinal {
            message: format!("v={}", B64.encode(server_signature)),
            keys: Keys {
                client_key,
                server_key: verifier.server_key,
            },
        })
    }
}

/// A verified client's last step: the server-final-message to send, and the keys that
/// let the proxy log in to a backend as this user without its password (SCRAM
/// pass-through: the backend stores the same StoredKey = H(ClientKey) and ServerKey).
#[derive(Debug, PartialEq, Eq)]
pub struct ServerFinal {
    pub message: String,
    pub keys: Keys,
}

/// ClientKey and ServerKey of one user: what a SCRAM client needs besides the salted
/// password, and all it needs when the server's verifier is the one they came from.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Keys {
    pub client_key: [u8; 32],
    pub server_key: [u8; 32],
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(<redacted>)")
    }
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// A random nonce of printable characters, as SCRAM requires.
pub fn random_nonce() -> String {
    use rand::Rng;
    let bytes: [u8; 18] = rand::rng().random();
    B64.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

    fn exchange(server_password: &str, client_password: &str) -> Result<(), ScramError> {
        let mut server = ScramServer::new(Verifier::from_password(server_password));
        let mut client =
            ScramSha256::new(client_password.as_bytes(), ChannelBinding::unsupported());
        let first = server.client_first(client.message(), "fixedservernonce")?;
        client
            .update(first.as_bytes())
            .expect("client accepts server-first");
        let last = server.client_final(client.message())?;
        client
            .finish(last.message.as_bytes())
            .expect("client verifies the server signature");
        Ok(())
    }

    #[test]
    fn a_real_client_authenticates() {
        assert_eq!(exchange("app-secret", "app-secret"), Ok(()));
    }

    #[test]
    fn a_wrong_password_fails() {
        assert_eq!(exchange("app-secret", "nope"), Err(ScramError::BadProof));
    }

    #[test]
    fn verifier_round_trip() {
        let v = Verifier::from_password("x");
        assert_eq!(v.iterations, 4096);
        assert_eq!(v.salt.len(), 16);
        assert!(Verifier::parse("SCRAM-SHA-256$4096:abc").is_none());
        assert!(Verifier::parse("md5abc").is_none());
    }

    #[test]
    fn malformed_and_out_of_order_messages_are_errors() {
        let mut s = ScramServer::new(Verifier::from_password("x"));
        assert_eq!(s.client_final(b"c=biws,r=x,p=AA=="), Err(ScramError::Order));
        let mut s = ScramServer::new(Verifier::from_password("x"));
        assert!(s.client_first(b"garbage", "n").is_err());
        let mut s = ScramServer::new(Verifier::from_password("x"));
        assert_eq!(
            s.client_first(b"p=tls-server-end-point,,n=,r=abc", "n"),
            Err(ScramError::ChannelBinding)
        );
        let mut s = ScramServer::new(Verifier::from_password("x"));
        s.client_first(b"n,,n=,r=abc", "def").unwrap();
        assert_eq!(
            s.client_final(b"c=biws,r=wrong,p=AA=="),
            Err(ScramError::Nonce)
        );
    }
}
