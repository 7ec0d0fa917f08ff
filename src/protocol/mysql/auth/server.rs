//! Server side of password authentication: verifies a client of the proxy against the
//! plain password configured for its user, or against the hash its server stores (a user
//! looked up with `[auth]`, or a made-up one for a user that does not exist). A state enum
//! with pure steps; the scrambles are injected so tests can replay an exchange.
//!
//! mysql_native_password and caching_sha2_password are verified from the password the
//! way the server verifies from its stored hash. caching_sha2_password's full
//! authentication (the cleartext password) is accepted only over TLS: without TLS it
//! needs the server's RSA private key, which the proxy does not hold, so it is refused.

use bytes::BytesMut;

use super::super::constants::auth::{FAST_AUTH_SUCCESS, PERFORM_FULL_AUTHENTICATION, SCRAMBLE_LEN};
use super::super::constants::{ER_ACCESS_DENIED_ERROR, ER_HANDSHAKE_ERROR, ErrorCode};
use super::super::messages::{auth_more_data, auth_switch_request};
use super::{NativeHash, NativeStage1, Plugin, constant_time_eq, verify_native, verify_sha2};

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("password check failed (using password: {})", if *using_password { "YES" } else { "NO" })]
    AccessDenied { using_password: bool },
    #[error("caching_sha2_password full authentication requires TLS (the proxy holds no RSA key)")]
    FullAuthRequiresTls,
    #[error("authentication packet arrived in state {state}")]
    OutOfOrder { state: &'static str },
}

impl AuthError {
    /// The MySQL error to answer the client with before closing.
    pub fn error_code(&self) -> ErrorCode {
        match self {
            AuthError::AccessDenied { .. } | AuthError::FullAuthRequiresTls => {
                ER_ACCESS_DENIED_ERROR
            }
            AuthError::OutOfOrder { .. } => ER_HANDSHAKE_ERROR,
        }
    }
}

/// The user's password as the proxy knows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    pub plugin: Plugin,
    pub secret: Known,
}

/// What the proxy holds of a password.
#[derive(Clone, PartialEq, Eq)]
pub enum Known {
    /// The password itself (`[[users]]`).
    Password(Vec<u8>),
    /// Its mysql_native_password hash (as `mysql.user` stores it); `plugin` must be
    /// mysql_native_password.
    NativeHash(NativeHash),
}

impl Credential {
    pub fn password(plugin: Plugin, password: &[u8]) -> Credential {
        Credential {
            plugin,
            secret: Known::Password(password.to_vec()),
        }
    }

    pub fn native_hash(hash: NativeHash) -> Credential {
        Credential {
            plugin: Plugin::MysqlNativePassword,
            secret: Known::NativeHash(hash),
        }
    }

    /// Whether this is the empty password.
    fn is_empty(&self) -> bool {
        matches!(&self.secret, Known::Password(p) if p.is_empty())
    }

    /// Checks a mysql_native_password answer; SHA1(password) when it fits.
    fn verify_native(&self, scramble: &[u8], response: &[u8]) -> Option<NativeStage1> {
        match &self.secret {
            Known::Password(p) if p.is_empty() => {
                verify_native(scramble, p, response).then_some(NativeStage1([0; 20]))
            }
            Known::Password(p) => NativeHash::of_password(p).verify(scramble, response),
            Known::NativeHash(h) => h.verify(scramble, response),
        }
    }

    fn verify_sha2(&self, scramble: &[u8], response: &[u8]) -> bool {
        match &self.secret {
            Known::Password(p) => verify_sha2(scramble, p, response),
            Known::NativeHash(_) => false,
        }
    }

    fn verify_cleartext(&self, password: &[u8]) -> bool {
        match &self.secret {
            Known::Password(p) => constant_time_eq(password, p),
            Known::NativeHash(h) => constant_time_eq(&NativeHash::of_password(password).0, &h.0),
        }
    }
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("plugin", &self.plugin)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// A packet the proxy sends during authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthRequest {
    /// AuthSwitchRequest: answer `plugin` with this new scramble.
    Switch {
        plugin: Plugin,
        scramble: [u8; SCRAMBLE_LEN],
    },
    /// AuthMoreData with one caching_sha2_password status byte.
    MoreData(u8),
}

impl AuthRequest {
    /// Writes the packet; returns the next sequence id.
    pub fn write(&self, out: &mut BytesMut, seq: u8) -> u8 {
        match self {
            AuthRequest::Switch { plugin, scramble } => {
                auth_switch_request(out, seq, plugin.name(), scramble)
            }
            AuthRequest::MoreData(byte) => auth_more_data(out, seq, &[*byte]),
        }
    }
}

/// What the caller does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerStep {
    /// Send this, then feed the client's next packet to [`ServerAuth::client_packet`].
    Send(AuthRequest),
    /// Authenticated: send `before_ok` if there is one, then an OK packet.
    Accepted { before_ok: Option<AuthRequest> },
}

/// Where one client's authentication stands.
#[derive(Debug)]
pub enum ServerAuth {
    /// Waiting for the auth response carried by HandshakeResponse41.
    Start {
        credential: Credential,
        scramble: [u8; SCRAMBLE_LEN],
        switch_scramble: [u8; SCRAMBLE_LEN],
        tls: bool,
    },
    /// An AuthSwitchRequest was sent; waiting for the client's answer to it.
    AwaitSwitchResponse {
        credential: Credential,
        scramble: [u8; SCRAMBLE_LEN],
        tls: bool,
    },
    /// "Perform full authentication" was sent over TLS; waiting for the cleartext password.
    AwaitCleartext { credential: Credential },
    /// Finished; after a mysql_native_password check that passed, SHA1(password).
    Done { stage1: Option<NativeStage1> },
}

impl ServerAuth {
    /// `scramble` is the one sent in the greeting; `switch_scramble` is used if the
    /// client must be switched to the user's plugin; `tls` is whether the client
    /// connection is encrypted.
    pub fn new(
        credential: Credential,
        scramble: [u8; SCRAMBLE_LEN],
        switch_scramble: [u8; SCRAMBLE_LEN],
        tls: bool,
    ) -> ServerAuth {
        ServerAuth::Start {
            credential,
            scramble,
            switch_scramble,
            tls,
        }
    }

    fn state_name(&self) -> &'static str {
        match self {
            ServerAuth::Start { .. } => "Start",
            ServerAuth::AwaitSwitchResponse { .. } => "AwaitSwitchResponse",
            ServerAuth::AwaitCleartext { .. } => "AwaitCleartext",
            ServerAuth::Done { .. } => "Done",
        }
    }

    /// SHA1(password), once a mysql_native_password answer was accepted: what logs in to
    /// a backend that stores the same hash (pass-through).
    pub fn native_stage1(&self) -> Option<NativeStage1> {
        match self {
            ServerAuth::Done { stage1 } => *stage1,
            _ => None,
        }
    }

    /// Handles the auth response and plugin name of the client's HandshakeResponse41
    /// (`client_plugin` is `None` when the client did not set CLIENT_PLUGIN_AUTH: such a
    /// client answers in mysql_native_password and cannot be switched, so it is checked
    /// as that).
    pub fn start(
        &mut self,
        client_plugin: Option<&[u8]>,
        auth_response: &[u8],
    ) -> Result<ServerStep, AuthError> {
        let state = self.state_name();
        let ServerAuth::Start {
            credential,
            scramble,
            switch_scramble,
            tls,
        } = std::mem::replace(self, ServerAuth::Done { stage1: None })
        else {
            return Err(AuthError::OutOfOrder { state });
        };
        let answered_with = match client_plugin {
            None => Plugin::MysqlNativePassword,
            Some(name) => match Plugin::from_name(name) {
                Some(p) if p == credential.plugin => p,
                _ => {
                    *self = ServerAuth::AwaitSwitchResponse {
                        credential: credential.clone(),
                        scramble: switch_scramble,
                        tls,
                    };
                    return Ok(ServerStep::Send(AuthRequest::Switch {
                        plugin: credential.plugin,
                        scramble: switch_scramble,
                    }));
                }
            },
        };
        self.check(credential, answered_with, scramble, tls, auth_response)
    }

    /// Handles the client's next packet during authentication (an answer to
    /// AuthSwitchRequest, or the cleartext password after "perform full authentication").
    pub fn client_packet(&mut self, payload: &[u8]) -> Result<ServerStep, AuthError> {
        let state = self.state_name();
        match std::mem::replace(self, ServerAuth::Done { stage1: None }) {
            ServerAuth::AwaitSwitchResponse {
                credential,
                scramble,
                tls,
            } => {
                let plugin = credential.plugin;
                self.check(credential, plugin, scramble, tls, payload)
            }
            ServerAuth::AwaitCleartext { credential } => {
                // the password comes NUL-terminated
                let password = payload.strip_suffix(&[0]).unwrap_or(payload);
                if credential.verify_cleartext(password) {
                    Ok(ServerStep::Accepted { before_ok: None })
                } else {
                    Err(AuthError::AccessDenied {
                        using_password: !password.is_empty(),
                    })
                }
            }
            other => {
                *self = other;
                Err(AuthError::OutOfOrder { state })
            }
        }
    }

    /// Verifies an answer given in `plugin`; moves to Done or to AwaitCleartext.
    fn check(
        &mut self,
        credential: Credential,
        plugin: Plugin,
        scramble: [u8; SCRAMBLE_LEN],
        tls: bool,
        response: &[u8],
    ) -> Result<ServerStep, AuthError> {
        let using_password = !(response.is_empty() || response == [0]);
        match plugin {
            Plugin::MysqlNativePassword => match credential.verify_native(&scramble, response) {
                Some(stage1) => {
                    *self = ServerAuth::Done {
                        stage1: Some(stage1).filter(|_| !credential.is_empty()),
                    };
                    Ok(ServerStep::Accepted { before_ok: None })
                }
                None => Err(AuthError::AccessDenied { using_password }),
            },
            Plugin::CachingSha2Password => {
                if credential.is_empty() && !using_password {
                    Ok(ServerStep::Accepted { before_ok: None })
                } else if credential.verify_sha2(&scramble, response) {
                    Ok(ServerStep::Accepted {
                        before_ok: Some(AuthRequest::MoreData(FAST_AUTH_SUCCESS)),
                    })
                } else if tls {
                    *self = ServerAuth::AwaitCleartext { credential };
                    Ok(ServerStep::Send(AuthRequest::MoreData(
                        PERFORM_FULL_AUTHENTICATION,
                    )))
                } else if using_password {
                    Err(AuthError::FullAuthRequiresTls)
                } else {
                    Err(AuthError::AccessDenied { using_password })
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::mysql::constants::auth::CACHING_SHA2_PASSWORD;
    use crate::protocol::mysql::messages::parse_auth_switch_request;
    use crate::protocol::mysql::packet::packet;
    use mysql_common::scramble::{scramble_native, scramble_sha256};

    const S1: [u8; 20] = *b"abcdefghij0123456789";
    const S2: [u8; 20] = *b"ZYXWVUTSRQ9876543210";
    const NATIVE: &[u8] = b"mysql_native_password";
    const SHA2: &[u8] = b"caching_sha2_password";

    fn cred(plugin: Plugin, pw: &str) -> Credential {
        Credential::password(plugin, pw.as_bytes())
    }

    /// The client side, computed with mysql_common (an independent implementation).
    fn answer(plugin: &[u8], scramble: &[u8], pw: &str) -> Vec<u8> {
        let pw = pw.as_bytes();
        let out = if plugin == NATIVE {
            scramble_native(scramble, pw).map(|a| a.to_vec())
        } else {
            scramble_sha256(scramble, pw).map(|a| a.to_vec())
        };
        out.unwrap_or_default()
    }

    #[test]
    fn first_response_table() {
        let fast_ok = ServerStep::Accepted {
            before_ok: Some(AuthRequest::MoreData(FAST_AUTH_SUCCESS)),
        };
        let accepted = ServerStep::Accepted { before_ok: None };
        let denied = Err(AuthError::AccessDenied {
            using_password: true,
        });
        #[allow(clippy::type_complexity)]
        let cases: &[(
            Plugin,
            &str,
            &[u8],
            &str,
            bool,
            Result<ServerStep, AuthError>,
        )] = &[
            // configured plugin, configured password, client plugin, client password, tls, outcome
            (
                Plugin::MysqlNativePassword,
                "app-secret",
                NATIVE,
                "app-secret",
                false,
                Ok(accepted),
            ),
            (
                Plugin::MysqlNativePassword,
                "app-secret",
                NATIVE,
                "wrong",
                false,
                denied.clone(),
            ),
            (
                Plugin::MysqlNativePassword,
                "",
                NATIVE,
                "",
                false,
                Ok(accepted),
            ),
            (
                Plugin::MysqlNativePassword,
                "app-secret",
                NATIVE,
                "",
                false,
                Err(AuthError::AccessDenied {
                    using_password: false,
                }),
            ),
            (
                Plugin::CachingSha2Password,
                "app-secret",
                SHA2,
                "app-secret",
                false,
                Ok(fast_ok),
            ),
            (
                Plugin::CachingSha2Password,
                "app-secret",
                SHA2,
                "app-secret",
                true,
                Ok(fast_ok),
            ),
            (
                Plugin::CachingSha2Password,
                "",
                SHA2,
                "",
                false,
                Ok(accepted),
            ),
            (
                Plugin::CachingSha2Password,
                "app-secret",
                SHA2,
                "wrong",
                false,
                Err(AuthError::FullAuthRequiresTls),
            ),
            (
                Plugin::CachingSha2Password,
                "app-secret",
                SHA2,
                "wrong",
                true,
                Ok(ServerStep::Send(AuthRequest::MoreData(
                    PERFORM_FULL_AUTHENTICATION,
                ))),
            ),
        ];
        for (i, (plugin, pw, client_plugin, client_pw, tls, want)) in cases.iter().enumerate() {
            let mut auth = ServerAuth::new(cred(*plugin, pw), S1, S2, *tls);
            let got = auth.start(Some(client_plugin), &answer(client_plugin, &S1, client_pw));
            assert_eq!(&got, want, "case {i}");
        }
    }

    #[test]
    fn switch_to_the_configured_plugin_then_verify() {
        for (configured, client) in [
            (Plugin::CachingSha2Password, NATIVE),
            (Plugin::MysqlNativePassword, SHA2),
            (Plugin::MysqlNativePassword, &b"client_ed25519"[..]),
        ] {
            let mut auth = ServerAuth::new(cred(configured, "app-secret"), S1, S2, false);
            let step = auth.start(Some(client), b"whatever").unwrap();
            let ServerStep::Send(req @ AuthRequest::Switch { plugin, scramble }) = step else {
                panic!("expected a switch, got {step:?}");
            };
            assert_eq!((plugin, scramble), (configured, S2));
            // the packet on the wire, read back the way a client reads it
            let mut out = BytesMut::new();
            assert_eq!(req.write(&mut out, 2), 3);
            let (name, data) =
                parse_auth_switch_request(packet(&out, 100).unwrap().unwrap().1).unwrap();
            assert_eq!(name, configured.name().as_bytes());
            let reply = answer(name, data, "app-secret");
            let done = auth.client_packet(&reply).unwrap();
            assert!(matches!(done, ServerStep::Accepted { .. }), "{done:?}");
        }
        // a wrong answer to the switch
        let mut auth = ServerAuth::new(
            cred(Plugin::MysqlNativePassword, "app-secret"),
            S1,
            S2,
            false,
        );
        auth.start(Some(SHA2), b"").unwrap();
        assert_eq!(
            auth.client_packet(&answer(NATIVE, &S1, "app-secret")), // old scramble
            Err(AuthError::AccessDenied {
                using_password: true
            })
        );
    }

    #[test]
    fn full_authentication_over_tls() {
        for (sent, ok) in [
            (&b"app-secret\0"[..], true),
            (b"app-secret", true),
            (b"app-secreT\0", false),
        ] {
            let mut auth = ServerAuth::new(
                cred(Plugin::CachingSha2Password, "app-secret"),
                S1,
                S2,
                true,
            );
            let step = auth.start(Some(SHA2), &[7; 32]).unwrap();
            assert_eq!(
                step,
                ServerStep::Send(AuthRequest::MoreData(PERFORM_FULL_AUTHENTICATION))
            );
            assert_eq!(auth.client_packet(sent).is_ok(), ok);
        }
    }

    #[test]
    fn client_without_plugin_auth_is_checked_as_native() {
        let mut auth = ServerAuth::new(cred(Plugin::CachingSha2Password, "pw"), S1, S2, false);
        let step = auth.start(None, &answer(NATIVE, &S1, "pw"));
        assert_eq!(step, Ok(ServerStep::Accepted { before_ok: None }));
    }

    #[test]
    fn packets_out_of_order_are_errors() {
        let mut auth = ServerAuth::new(cred(Plugin::MysqlNativePassword, "pw"), S1, S2, false);
        assert_eq!(
            auth.client_packet(b"x"),
            Err(AuthError::OutOfOrder { state: "Start" })
        );
        auth.start(Some(NATIVE), &answer(NATIVE, &S1, "pw"))
            .unwrap();
        assert!(matches!(
            auth.start(Some(NATIVE), b""),
            Err(AuthError::OutOfOrder { .. })
        ));
        assert_eq!(AuthError::FullAuthRequiresTls.error_code().code, 1045);
        assert!(!format!("{:?}", cred(Plugin::MysqlNativePassword, "hunter2")).contains("hunter2"));
    }

    /// A recorded caching_sha2_password exchange (fixed scramble, password "app-secret"),
    /// byte for byte as a MySQL 8 client sends it.
    #[test]
    fn recorded_caching_sha2_exchange() {
        let scramble =
            *b"\x1b\x3f\x2a\x51\x04\x7e\x62\x0d\x33\x48\x6c\x11\x25\x79\x40\x0e\x5d\x21\x6a\x13";
        let client_answer = scramble_sha256(&scramble, b"app-secret").unwrap();
        // pinned so that a change in either implementation shows up
        assert_eq!(
            client_answer
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>(),
            recorded_answer_hex()
        );
        let mut auth = ServerAuth::new(
            cred(Plugin::CachingSha2Password, "app-secret"),
            scramble,
            S2,
            false,
        );
        let step = auth
            .start(Some(CACHING_SHA2_PASSWORD.as_bytes()), &client_answer)
            .unwrap();
        let ServerStep::Accepted {
            before_ok: Some(req),
        } = step
        else {
            panic!("{step:?}");
        };
        let mut out = BytesMut::new();
        req.write(&mut out, 2);
        assert_eq!(&out[..], b"\x02\0\0\x02\x01\x03");
    }

    /// Computed independently (Python's hashlib) for the scramble above.
    fn recorded_answer_hex() -> &'static str {
        "1c22ab6c83bf1ac151cccd7fd06669dec9a39c7b053ab908148e463f189e1fc6"
    }

    #[test]
    fn recorded_native_exchange() {
        let scramble =
            *b"\x1b\x3f\x2a\x51\x04\x7e\x62\x0d\x33\x48\x6c\x11\x25\x79\x40\x0e\x5d\x21\x6a\x13";
        // SHA1 answer for "app-secret", computed independently (Python's hashlib)
        let recorded: [u8; 20] =
            *b"\x8e\xc1\x9a\x62\x55\x49\x3d\x53\x32\xa6\xa3\xba\x1a\xa3\x09\x4e\xa6\x54\x56\xc4";
        assert_eq!(scramble_native(&scramble, b"app-secret"), Some(recorded));
        let mut auth = ServerAuth::new(
            cred(Plugin::MysqlNativePassword, "app-secret"),
            scramble,
            S2,
            false,
        );
        assert_eq!(
            auth.start(Some(NATIVE), &recorded),
            Ok(ServerStep::Accepted { before_ok: None })
        );
    }
}
