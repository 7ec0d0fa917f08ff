//! Client side of password authentication, for the proxy's backend connections:
//! answers mysql_native_password and caching_sha2_password (fast path, and full
//! authentication with the cleartext password over TLS or RSA-encrypted without it),
//! AuthSwitchRequest, and mysql_clear_password over TLS (Aurora IAM tokens). A state
//! enum with pure steps; the RSA padding seed is injected so tests are deterministic.

use super::super::constants::auth::{
    FAST_AUTH_SUCCESS, MYSQL_CLEAR_PASSWORD, PERFORM_FULL_AUTHENTICATION, REQUEST_PUBLIC_KEY,
};
use super::super::constants::header;
use super::super::messages::{parse_auth_switch_request, parse_err};
use super::rsa::{RsaError, ServerKey};
use super::{NativeStage1, Plugin};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BackendAuthError {
    #[error("backend refused the login: error {code} ({sqlstate}): {message}")]
    Refused {
        code: u16,
        sqlstate: String,
        message: String,
    },
    #[error("backend asked for auth plugin {name:?}, which the proxy does not speak")]
    UnsupportedPlugin { name: String },
    #[error("backend asked for {plugin}, which sends the password in clear: refused without TLS")]
    CleartextNeedsTls { plugin: &'static str },
    #[error("caching_sha2_password RSA exchange with the backend failed")]
    Rsa(#[from] RsaError),
    #[error("unexpected packet with header {header:#04x} while {state}")]
    Unexpected { header: u8, state: &'static str },
    #[error("malformed {what} from the backend")]
    Malformed { what: &'static str },
    #[error(
        "backend asked for {plugin}; a pass-through login (a user looked up with [auth]) \
         can only answer mysql_native_password"
    )]
    NeedsPassword { plugin: String },
}

/// What the proxy logs in to a backend with.
#[derive(Clone, PartialEq, Eq)]
pub enum BackendSecret {
    Password(Vec<u8>),
    /// SHA1(password) of a client the proxy verified: answers mysql_native_password only.
    NativeStage1(NativeStage1),
}

impl BackendSecret {
    /// The answer to `scramble` in `plugin`.
    fn answer(&self, plugin: Plugin, scramble: &[u8]) -> Result<Vec<u8>, BackendAuthError> {
        match (self, plugin) {
            (BackendSecret::Password(p), _) => Ok(plugin.scramble(scramble, p)),
            (BackendSecret::NativeStage1(s), Plugin::MysqlNativePassword) => {
                Ok(s.answer(scramble).to_vec())
            }
            (BackendSecret::NativeStage1(_), Plugin::CachingSha2Password) => {
                Err(BackendAuthError::NeedsPassword {
                    plugin: plugin.name().to_owned(),
                })
            }
        }
    }

    /// The password itself, for plugins that send it (over TLS or RSA-encrypted).
    fn password(&self, plugin: &str) -> Result<&[u8], BackendAuthError> {
        match self {
            BackendSecret::Password(p) => Ok(p),
            BackendSecret::NativeStage1(_) => Err(BackendAuthError::NeedsPassword {
                plugin: plugin.to_owned(),
            }),
        }
    }
}

/// Where the login stands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Auth data for `plugin` was sent; waiting for OK, ERR, a switch or more data.
    Await {
        plugin: Plugin,
        scramble: Vec<u8>,
    },
    /// The RSA public key was requested (caching_sha2_password without TLS).
    AwaitPublicKey {
        scramble: Vec<u8>,
    },
    /// The password was sent or fast auth succeeded; only OK or ERR may follow.
    AwaitResult,
    Done,
}

impl State {
    fn name(&self) -> &'static str {
        match self {
            State::Await { .. } => "awaiting the auth result",
            State::AwaitPublicKey { .. } => "awaiting the RSA public key",
            State::AwaitResult => "awaiting OK",
            State::Done => "done",
        }
    }
}

/// What the caller does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientStep {
    /// Send this payload (next sequence id) and feed the server's answer.
    Send(Vec<u8>),
    /// Nothing to send; feed the server's next packet.
    Wait,
    /// Logged in (the server sent OK).
    Done,
}

/// One backend login.
pub struct ClientAuth {
    secret: BackendSecret,
    tls: bool,
    oaep_seed: [u8; 20],
    state: State,
}

impl std::fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientAuth")
            .field("tls", &self.tls)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl ClientAuth {
    /// Starts a login answering the greeting's `greeting_plugin` (mysql_native_password
    /// when the greeting names none or one the proxy does not speak: the server then
    /// switches to the user's plugin). `tls` is whether the backend connection is
    /// encrypted; `oaep_seed` must be fresh random bytes (used only for RSA).
    /// Returns the login and the plugin and auth response for HandshakeResponse41.
    pub fn start(
        password: &[u8],
        tls: bool,
        greeting_plugin: Option<&str>,
        scramble: &[u8],
        oaep_seed: [u8; 20],
    ) -> (ClientAuth, Plugin, Vec<u8>) {
        let secret = BackendSecret::Password(password.to_vec());
        ClientAuth::start_with(secret, tls, greeting_plugin, scramble, oaep_seed)
    }

    /// Like [`ClientAuth::start`] with either kind of secret; a [`BackendSecret::NativeStage1`]
    /// answers in mysql_native_password whatever the greeting names.
    pub fn start_with(
        secret: BackendSecret,
        tls: bool,
        greeting_plugin: Option<&str>,
        scramble: &[u8],
        oaep_seed: [u8; 20],
    ) -> (ClientAuth, Plugin, Vec<u8>) {
        let plugin = match &secret {
            BackendSecret::Password(_) => greeting_plugin
                .and_then(|name| Plugin::from_name(name.as_bytes()))
                .unwrap_or(Plugin::MysqlNativePassword),
            BackendSecret::NativeStage1(_) => Plugin::MysqlNativePassword,
        };
        let response = secret
            .answer(plugin, scramble)
            .unwrap_or_else(|_| unreachable!("either secret answers its own plugin"));
        let auth = ClientAuth {
            secret,
            tls,
            oaep_seed,
            state: State::Await {
                plugin,
                scramble: scramble.to_vec(),
            },
        };
        (auth, plugin, response)
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    fn password_nul(&self, plugin: &str) -> Result<Vec<u8>, BackendAuthError> {
        let password = self.secret.password(plugin)?;
        let mut out = Vec::with_capacity(password.len() + 1);
        out.extend_from_slice(password);
        out.push(0);
        Ok(out)
    }

    /// Handles one packet from the server during login.
    pub fn server_packet(&mut self, payload: &[u8]) -> Result<ClientStep, BackendAuthError> {
        let state = std::mem::replace(&mut self.state, State::Done);
        let unexpected = |s: &State| BackendAuthError::Unexpected {
            header: payload.first().copied().unwrap_or(0),
            state: s.name(),
        };
        let first = *payload.first().ok_or(BackendAuthError::Malformed {
            what: "empty packet",
        })?;
        if state == State::Done {
            return Err(unexpected(&state));
        }
        match first {
            header::OK if !matches!(state, State::AwaitPublicKey { .. }) => Ok(ClientStep::Done),
            header::ERR => {
                let err = parse_err(payload)
                    .map_err(|_| BackendAuthError::Malformed { what: "ERR packet" })?;
                Err(BackendAuthError::Refused {
                    code: err.code,
                    sqlstate: err
                        .sqlstate
                        .map(|s| String::from_utf8_lossy(&s).into_owned())
                        .unwrap_or_default(),
                    message: String::from_utf8_lossy(err.message).into_owned(),
                })
            }
            header::AUTH_SWITCH if matches!(state, State::Await { .. }) => self.switch(payload),
            header::AUTH_MORE_DATA => self.more_data(state, &payload[1..]),
            _ => Err(unexpected(&state)),
        }
    }

    fn switch(&mut self, payload: &[u8]) -> Result<ClientStep, BackendAuthError> {
        let (name, data) =
            parse_auth_switch_request(payload).map_err(|_| BackendAuthError::Malformed {
                what: "AuthSwitchRequest",
            })?;
        if name == MYSQL_CLEAR_PASSWORD.as_bytes() {
            if !self.tls {
                return Err(BackendAuthError::CleartextNeedsTls {
                    plugin: MYSQL_CLEAR_PASSWORD,
                });
            }
            let password = self.password_nul(MYSQL_CLEAR_PASSWORD)?;
            self.state = State::AwaitResult;
            return Ok(ClientStep::Send(password));
        }
        let plugin =
            Plugin::from_name(name).ok_or_else(|| BackendAuthError::UnsupportedPlugin {
                name: String::from_utf8_lossy(name).into_owned(),
            })?;
        let response = self.secret.answer(plugin, data)?;
        self.state = State::Await {
            plugin,
            scramble: data.to_vec(),
        };
        Ok(ClientStep::Send(response))
    }

    fn more_data(&mut self, state: State, data: &[u8]) -> Result<ClientStep, BackendAuthError> {
        match (state, data) {
            (
                State::Await {
                    plugin: Plugin::CachingSha2Password,
                    ..
                },
                [FAST_AUTH_SUCCESS],
            ) => {
                self.state = State::AwaitResult;
                Ok(ClientStep::Wait)
            }
            (
                State::Await {
                    plugin: Plugin::CachingSha2Password,
                    scramble,
                },
                [PERFORM_FULL_AUTHENTICATION],
            ) => {
                if self.tls {
                    let password = self.password_nul(Plugin::CachingSha2Password.name())?;
                    self.state = State::AwaitResult;
                    Ok(ClientStep::Send(password))
                } else {
                    self.state = State::AwaitPublicKey { scramble };
                    Ok(ClientStep::Send(vec![REQUEST_PUBLIC_KEY]))
                }
            }
            (State::AwaitPublicKey { scramble }, pem) => {
                let key = ServerKey::from_pem(pem)?;
                let password = self.secret.password(Plugin::CachingSha2Password.name())?;
                let cipher = key.encrypt_password(password, &scramble, self.oaep_seed)?;
                self.state = State::AwaitResult;
                Ok(ClientStep::Send(cipher))
            }
            (state, _) => {
                let name = state.name();
                self.state = state;
                Err(BackendAuthError::Unexpected {
                    header: header::AUTH_MORE_DATA,
                    state: name,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::mysql::auth::NativeHash;
    use crate::protocol::mysql::auth::rsa::tests::{PUBLIC_PEM, decrypt};
    use crate::protocol::mysql::auth::server::{AuthRequest, Credential, ServerAuth, ServerStep};
    use crate::protocol::mysql::constants::{CapabilityFlags, ER_ACCESS_DENIED_ERROR};
    use crate::protocol::mysql::messages::{auth_switch_request, err_packet};
    use crate::protocol::mysql::packet::packet;
    use bytes::BytesMut;
    use mysql_common::scramble::{scramble_native, scramble_sha256};

    const S1: [u8; 20] = *b"abcdefghij0123456789";
    const S2: [u8; 20] = *b"ZYXWVUTSRQ9876543210";
    const SEED: [u8; 20] = [5; 20];

    fn payload(out: &BytesMut) -> Vec<u8> {
        packet(out, usize::MAX).unwrap().unwrap().1.to_vec()
    }

    fn switch_packet(plugin: &str, data: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        auth_switch_request(&mut out, 2, plugin, data);
        payload(&out)
    }

    #[test]
    fn first_answer_matches_mysql_common() {
        let (_, plugin, resp) =
            ClientAuth::start(b"pw", false, Some("mysql_native_password"), &S1, SEED);
        assert_eq!(
            (plugin, resp),
            (
                Plugin::MysqlNativePassword,
                scramble_native(&S1, b"pw").unwrap().to_vec()
            )
        );
        let (_, plugin, resp) =
            ClientAuth::start(b"pw", false, Some("caching_sha2_password"), &S1, SEED);
        assert_eq!(
            (plugin, resp),
            (
                Plugin::CachingSha2Password,
                scramble_sha256(&S1, b"pw").unwrap().to_vec()
            )
        );
        let (_, plugin, _) = ClientAuth::start(b"pw", false, Some("client_ed25519"), &S1, SEED);
        assert_eq!(plugin, Plugin::MysqlNativePassword);
    }

    #[test]
    fn server_answers_table() {
        let mut err = BytesMut::new();
        err_packet(
            &mut err,
            2,
            CapabilityFlags::CLIENT_PROTOCOL_41,
            ER_ACCESS_DENIED_ERROR,
            "denied",
        );
        let err = payload(&err);
        let sha2 = Some("caching_sha2_password");
        let native = Some("mysql_native_password");
        #[allow(clippy::type_complexity)]
        let cases: Vec<(
            Option<&str>,
            bool,
            Vec<u8>,
            Result<ClientStep, BackendAuthError>,
        )> = vec![
            (
                native,
                false,
                b"\x00\x00\x00\x02\x00\x00\x00".to_vec(),
                Ok(ClientStep::Done),
            ),
            (
                sha2,
                false,
                vec![0x01, FAST_AUTH_SUCCESS],
                Ok(ClientStep::Wait),
            ),
            (
                sha2,
                true,
                vec![0x01, PERFORM_FULL_AUTHENTICATION],
                Ok(ClientStep::Send(b"pw\0".to_vec())),
            ),
            (
                sha2,
                false,
                vec![0x01, PERFORM_FULL_AUTHENTICATION],
                Ok(ClientStep::Send(vec![REQUEST_PUBLIC_KEY])),
            ),
            (
                native,
                false,
                vec![0x01, FAST_AUTH_SUCCESS],
                Err(BackendAuthError::Unexpected {
                    header: 1,
                    state: "awaiting the auth result",
                }),
            ),
            (
                native,
                false,
                switch_packet("mysql_clear_password", b""),
                Err(BackendAuthError::CleartextNeedsTls {
                    plugin: MYSQL_CLEAR_PASSWORD,
                }),
            ),
            (
                native,
                true,
                switch_packet("mysql_clear_password", b""),
                Ok(ClientStep::Send(b"pw\0".to_vec())),
            ),
            (
                native,
                false,
                switch_packet("client_ed25519", &S2),
                Err(BackendAuthError::UnsupportedPlugin {
                    name: "client_ed25519".into(),
                }),
            ),
            (
                native,
                false,
                switch_packet("caching_sha2_password", &S2),
                Ok(ClientStep::Send(
                    scramble_sha256(&S2, b"pw").unwrap().to_vec(),
                )),
            ),
            (
                native,
                false,
                vec![0xFE],
                Err(BackendAuthError::Malformed {
                    what: "AuthSwitchRequest",
                }),
            ),
            (
                native,
                false,
                vec![0x07],
                Err(BackendAuthError::Unexpected {
                    header: 7,
                    state: "awaiting the auth result",
                }),
            ),
            (
                native,
                false,
                vec![],
                Err(BackendAuthError::Malformed {
                    what: "empty packet",
                }),
            ),
            (
                native,
                false,
                err,
                Err(BackendAuthError::Refused {
                    code: 1045,
                    sqlstate: "28000".into(),
                    message: "denied".into(),
                }),
            ),
        ];
        for (i, (plugin, tls, packet, want)) in cases.into_iter().enumerate() {
            let (mut auth, _, _) = ClientAuth::start(b"pw", tls, plugin, &S1, SEED);
            assert_eq!(auth.server_packet(&packet), want, "case {i}");
        }
    }

    #[test]
    fn full_authentication_with_rsa() {
        let (mut auth, _, _) =
            ClientAuth::start(b"pw", false, Some("caching_sha2_password"), &S1, SEED);
        auth.server_packet(&[0x01, PERFORM_FULL_AUTHENTICATION])
            .unwrap();
        let key_packet = [&[0x01][..], PUBLIC_PEM.as_bytes()].concat();
        let ClientStep::Send(cipher) = auth.server_packet(&key_packet).unwrap() else {
            panic!("expected the encrypted password");
        };
        let key = ServerKey::from_pem(PUBLIC_PEM.as_bytes()).unwrap();
        let plain: Vec<u8> = decrypt(&key, &cipher)
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ S1[i % 20])
            .collect();
        assert_eq!(plain, b"pw\0");
        assert_eq!(
            auth.server_packet(b"\x00\x00\x00\x02\x00\x00\x00"),
            Ok(ClientStep::Done)
        );
        assert!(auth.is_done());
        // a garbage key is an error, not a panic
        let (mut auth, _, _) =
            ClientAuth::start(b"pw", false, Some("caching_sha2_password"), &S1, SEED);
        auth.server_packet(&[0x01, PERFORM_FULL_AUTHENTICATION])
            .unwrap();
        assert!(matches!(
            auth.server_packet(b"\x01garbage"),
            Err(BackendAuthError::Rsa(_))
        ));
    }

    /// Both sides of this module against each other: the proxy's backend login talking to
    /// the proxy's own client verification, through a plugin switch and the fast path.
    #[test]
    fn client_and_server_sides_agree() {
        for (configured, greeting_plugin, pw) in [
            (
                Plugin::CachingSha2Password,
                "mysql_native_password",
                "app-secret",
            ),
            (
                Plugin::MysqlNativePassword,
                "caching_sha2_password",
                "app-secret",
            ),
            (Plugin::CachingSha2Password, "caching_sha2_password", ""),
            (Plugin::MysqlNativePassword, "mysql_native_password", ""),
        ] {
            let credential = Credential::password(configured, pw.as_bytes());
            let mut server = ServerAuth::new(credential, S1, S2, false);
            let (mut client, plugin, resp) =
                ClientAuth::start(pw.as_bytes(), false, Some(greeting_plugin), &S1, SEED);
            let mut step = server.start(Some(plugin.name().as_bytes()), &resp).unwrap();
            loop {
                let mut out = BytesMut::new();
                match step {
                    ServerStep::Send(req) => {
                        req.write(&mut out, 2);
                        let ClientStep::Send(answer) =
                            client.server_packet(&payload(&out)).unwrap()
                        else {
                            panic!("client had nothing to say");
                        };
                        step = server.client_packet(&answer).unwrap();
                    }
                    ServerStep::Accepted { before_ok } => {
                        if let Some(req @ AuthRequest::MoreData(_)) = before_ok {
                            req.write(&mut out, 2);
                            assert_eq!(client.server_packet(&payload(&out)), Ok(ClientStep::Wait));
                        }
                        assert_eq!(
                            client.server_packet(b"\x00\x00\x00\x02\x00\x00\x00"),
                            Ok(ClientStep::Done)
                        );
                        break;
                    }
                }
            }
        }
    }

    /// A client verified against the stored hash (as `[auth]` finds it) yields what logs the
    /// proxy in to a backend storing the same hash, whatever the backend's scramble.
    #[test]
    fn pass_through_from_a_verified_client_to_a_backend() {
        let hash = NativeHash::of_password(b"runtime-secret");
        let mut proxy = ServerAuth::new(Credential::native_hash(hash), S1, S2, false);
        let answer = scramble_native(&S1, b"runtime-secret").unwrap();
        let step = proxy.start(Some(b"mysql_native_password"), &answer);
        assert_eq!(step, Ok(ServerStep::Accepted { before_ok: None }));
        let stage1 = proxy.native_stage1().expect("recovered");
        // The backend greets with caching_sha2_password; the proxy answers natively.
        let mut backend = ServerAuth::new(
            Credential::password(Plugin::MysqlNativePassword, b"runtime-secret"),
            S2,
            S1,
            false,
        );
        let secret = BackendSecret::NativeStage1(stage1);
        let (_, plugin, resp) = ClientAuth::start_with(
            secret.clone(),
            false,
            Some("caching_sha2_password"),
            &S2,
            SEED,
        );
        assert_eq!(plugin, Plugin::MysqlNativePassword);
        assert_eq!(
            backend.start(Some(plugin.name().as_bytes()), &resp),
            Ok(ServerStep::Accepted { before_ok: None })
        );
        // A backend that switches to caching_sha2_password needs the password itself.
        let (mut client, _, _) =
            ClientAuth::start_with(secret, false, Some("mysql_native_password"), &S2, SEED);
        let mut out = BytesMut::new();
        auth_switch_request(&mut out, 2, "caching_sha2_password", &S1);
        assert!(matches!(
            client.server_packet(&payload(&out)),
            Err(BackendAuthError::NeedsPassword { .. })
        ));
        // A wrong password recovers nothing.
        let mut proxy = ServerAuth::new(Credential::native_hash(hash), S1, S2, false);
        let wrong = scramble_native(&S1, b"wrong").unwrap();
        assert!(proxy.start(Some(b"mysql_native_password"), &wrong).is_err());
        assert_eq!(proxy.native_stage1(), None);
    }
}
