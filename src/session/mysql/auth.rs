//! Password authentication of a MySQL client (a login's or a COM_CHANGE_USER's): against
//! `[[users]]`, against the hash looked up with `[auth]` (then the proxy logs in to the
//! backends with the SHA1(password) the client's answer revealed), and — for a user that
//! does not exist — the same exchange against a made-up hash, so that the answer (and the
//! ERR: `Access denied for user 'X'@'host'`) cannot tell the two apart.

use std::time::Instant;

use bytes::BytesMut;

use super::SessionError;
use super::startup::Client;
use crate::backend::PassThrough;
use crate::config::{AuthMethod, Secret, User};
use crate::protocol::mysql::auth::server::{AuthError, Credential, ServerAuth, ServerStep};
use crate::protocol::mysql::auth::{NativeHash, Plugin};
use crate::protocol::mysql::constants::auth::SCRAMBLE_LEN;
use crate::protocol::mysql::handshake;
use crate::session::{Context, FoundUser};

/// One password check.
pub struct Attempt<'a> {
    /// The user name the client gave.
    pub name: &'a str,
    /// The scramble of the proxy's greeting.
    pub scramble: [u8; SCRAMBLE_LEN],
    /// The plugin the client answered with, if it said.
    pub plugin: Option<&'a [u8]>,
    pub response: &'a [u8],
}

/// A client whose password was checked.
pub struct Verified {
    pub user: User,
    /// How to log in to the backends as `user` without a configured password.
    pub pass_through: Option<PassThrough>,
    /// Sequence id of the OK packet that ends the login.
    pub ok_seq: u8,
}

/// Who a login names.
enum Account {
    /// In `[[users]]`.
    Configured(User),
    /// Found by the `[auth]` query, with its stored hash.
    LookedUp(User, NativeHash),
    /// Not found: checked against a made-up hash, and refused.
    Unknown,
}

impl Client {
    /// Runs the password exchange for `attempt`, starting at sequence id `next`; the
    /// verified user, or the error with the sequence id to report it under.
    pub async fn authenticate(
        &mut self,
        ctx: &Context,
        attempt: Attempt<'_>,
        next: u8,
        deadline: Instant,
    ) -> Result<Verified, (SessionError, u8)> {
        let name = attempt.name;
        let host = self.peer_host();
        let denied = |using_password: bool| SessionError::AuthFailed {
            message: format!(
                "Access denied for user '{name}'@'{host}' (using password: {})",
                if using_password { "YES" } else { "NO" }
            ),
        };
        let account = account(ctx, name).await.map_err(|e| (e, next))?;
        let credential = match &account {
            Account::Configured(user) => match (&user.auth, &user.secret) {
                (AuthMethod::Trust, _) => {
                    let user = user.clone();
                    return Ok(Verified {
                        user,
                        pass_through: None,
                        ok_seq: next,
                    });
                }
                (AuthMethod::CachingSha2Password, Secret::Plain(p)) => {
                    Credential::password(Plugin::CachingSha2Password, p.as_bytes())
                }
                (_, Secret::Plain(p)) => {
                    Credential::password(Plugin::MysqlNativePassword, p.as_bytes())
                }
                // validate() requires a plain password for the MySQL methods.
                _ => return Err((denied(!attempt.response.is_empty()), next)),
            },
            Account::LookedUp(_, hash) => Credential::native_hash(*hash),
            Account::Unknown => Credential::native_hash(NativeHash(
                ctx.mock.derive("mysql_native_password hash", name),
            )),
        };
        let (stage1, ok_seq) = match self.exchange(credential, &attempt, next, deadline).await {
            Ok(done) => done,
            Err((Exchange::Denied { using_password }, seq)) => {
                return Err((denied(using_password), seq));
            }
            Err((Exchange::Failed(e), seq)) => return Err((e, seq)),
        };
        match account {
            Account::Configured(user) => Ok(Verified {
                user,
                pass_through: None,
                ok_seq,
            }),
            Account::LookedUp(user, _) => Ok(Verified {
                user,
                pass_through: stage1.map(PassThrough::MysqlNative),
                ok_seq,
            }),
            Account::Unknown => Err((denied(!attempt.response.is_empty()), ok_seq)),
        }
    }

    /// `'X'@'host'`'s host: the client's address, as a server with skip-name-resolve says.
    fn peer_host(&self) -> String {
        self.stream
            .peer_addr()
            .map(|a| a.ip().to_string())
            .unwrap_or_else(|_| "unknown".into())
    }

    /// The exchange itself: greeting answer, AuthSwitch and more data as the plugin needs.
    async fn exchange(
        &mut self,
        credential: Credential,
        attempt: &Attempt<'_>,
        mut next: u8,
        deadline: Instant,
    ) -> Result<(Option<crate::protocol::mysql::auth::NativeStage1>, u8), (Exchange, u8)> {
        let io = |e| (Exchange::Failed(SessionError::ClientIo(e)), 0);
        let switch = handshake::new_scramble(&mut rand::rng());
        let mut auth = ServerAuth::new(credential, attempt.scramble, switch, self.stream.is_tls());
        let mut step = auth.start(attempt.plugin, attempt.response);
        let mut out = BytesMut::new();
        loop {
            match step {
                Ok(ServerStep::Accepted { before_ok }) => {
                    if let Some(request) = before_ok {
                        out.clear();
                        next = request.write(&mut out, next);
                        self.write_all(&out).await.map_err(io)?;
                    }
                    return Ok((auth.native_stage1(), next));
                }
                Ok(ServerStep::Send(request)) => {
                    out.clear();
                    request.write(&mut out, next);
                    self.write_all(&out).await.map_err(io)?;
                    let (seq, answer) = self
                        .read_packet(deadline)
                        .await
                        .map_err(|e| (Exchange::Failed(e), 0))?;
                    next = seq.wrapping_add(1);
                    step = auth.client_packet(&answer);
                }
                Err(AuthError::AccessDenied { using_password }) => {
                    return Err((Exchange::Denied { using_password }, next));
                }
                Err(e) => {
                    let error = SessionError::Refused {
                        code: e.error_code(),
                        message: format!("Access denied for user '{}' ({e})", attempt.name),
                    };
                    return Err((Exchange::Failed(error), next));
                }
            }
        }
    }
}

/// How an exchange failed.
enum Exchange {
    /// The password did not match.
    Denied {
        using_password: bool,
    },
    Failed(SessionError),
}

async fn account(ctx: &Context, name: &str) -> Result<Account, SessionError> {
    let found = ctx.find_user(name).await;
    let text = match found.map_err(|e| SessionError::Lookup(Box::new(e)))? {
        FoundUser::Configured(user) => return Ok(Account::Configured(user)),
        FoundUser::Unknown => return Ok(Account::Unknown),
        FoundUser::Stored(text) => text,
    };
    match NativeHash::parse(&text) {
        Some(hash) => Ok(Account::LookedUp(looked_up_user(name), hash)),
        None => {
            tracing::warn!(
                user = name,
                "the [auth] query found a hash that is not mysql_native_password's (*HEX); \
                 only those can pass through"
            );
            Ok(Account::Unknown)
        }
    }
}

/// A user found by the `[auth]` query: itself on the backend, logged in by pass-through.
fn looked_up_user(name: &str) -> User {
    User {
        name: name.to_owned(),
        auth: AuthMethod::MysqlNativePassword,
        secret: Secret::None,
        backend_user: name.to_owned(),
        backend_password: None,
    }
}
