//! md5 password authentication from the stored hash rather than the password: the server
//! keeps `md5` ‖ hex(MD5(password ‖ user)), and the answer to a salt is `md5` ‖
//! hex(MD5(that hex ‖ salt)), so whoever holds the stored hash can both check a client and
//! answer a server (md5 pass-through for users looked up with `[auth]`).

use md5::{Digest, Md5};

/// The hex digits of MD5(password ‖ user), as `pg_shadow.passwd` holds them after `md5`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct StoredMd5([u8; 32]);

impl std::fmt::Debug for StoredMd5 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoredMd5(<redacted>)")
    }
}

impl StoredMd5 {
    /// Parses `md5` and 32 lower-case hex digits, as PostgreSQL stores it.
    pub fn parse(text: &str) -> Option<StoredMd5> {
        let hex: [u8; 32] = text.strip_prefix("md5")?.as_bytes().try_into().ok()?;
        hex.iter()
            .all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
            .then_some(StoredMd5(hex))
    }

    /// The answer to `salt`, with its `md5` prefix (what a PasswordMessage carries).
    pub fn answer(&self, salt: [u8; 4]) -> String {
        let mut h = Md5::new();
        h.update(self.0);
        h.update(salt);
        let digest = h.finalize();
        let mut out = String::with_capacity(35);
        out.push_str("md5");
        for b in digest {
            out.push_str(&format!("{b:02x}"));
        }
        out
    }

    /// Checks a client's answer to `salt`, in constant time.
    pub fn verify(&self, salt: [u8; 4], answer: &[u8]) -> bool {
        let expected = self.answer(salt);
        answer.len() == expected.len()
            && answer
                .iter()
                .zip(expected.as_bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use postgres_protocol::authentication::md5_hash;

    #[test]
    fn answers_as_a_client_with_the_password_does() {
        let stored = md5_hash(b"md5user", b"md5-secret", [0; 4]);
        // What pg_shadow shows: md5 ‖ hex(MD5(password ‖ user)).
        let mut h = Md5::new();
        h.update(b"md5-secretmd5user");
        let shadow: String = std::iter::once("md5".to_owned())
            .chain(h.finalize().iter().map(|b| format!("{b:02x}")))
            .collect();
        assert_ne!(stored, shadow, "the salted answer is not the stored hash");
        let hash = StoredMd5::parse(&shadow).expect("parses");
        for salt in [[0; 4], [1, 2, 3, 4], [255; 4]] {
            let client = md5_hash(b"md5user", b"md5-secret", salt);
            assert_eq!(hash.answer(salt), client);
            assert!(hash.verify(salt, client.as_bytes()));
            assert!(!hash.verify(salt, md5_hash(b"md5user", b"wrong", salt).as_bytes()));
        }
        assert!(!hash.verify([0; 4], b"md5"));
        for bad in [
            "",
            "md5",
            "SCRAM-SHA-256$1:2$3:4",
            &shadow.to_uppercase(),
            &shadow[..34],
        ] {
            assert_eq!(StoredMd5::parse(bad), None, "{bad:?}");
        }
        assert!(!format!("{hash:?}").contains(&shadow[3..8]));
    }
}
