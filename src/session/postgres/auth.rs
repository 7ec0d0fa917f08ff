//! Password authentication of a PostgreSQL client: against `[[users]]`, against a verifier
//! looked up with `[auth]` (then the proxy logs in to the backends with the keys the
//! client's SCRAM proof revealed, or with the stored md5 hash), and — for a user that does not exist — the same SCRAM
//! exchange against a made-up verifier, so that the answer cannot tell the two apart.

use std::time::Instant;

use bytes::BytesMut;

use super::SessionError;
use super::startup::{Client, read_password, write};
use crate::backend::PassThrough;
use crate::config::{AuthMethod, Secret, User};
use crate::protocol::postgres::frame::cstr;
use crate::protocol::postgres::md5::StoredMd5;
use crate::protocol::postgres::messages::{self, auth};
use crate::protocol::postgres::scram::{self, Keys, ScramServer, Verifier};
use crate::session::{Context, FoundUser};

/// PostgreSQL's default iteration count, which a made-up verifier uses too.
const MOCK_ITERATIONS: u32 = 4096;

/// A client whose password was checked.
pub struct Verified {
    pub user: User,
    /// How to log in to the backends as this user when no password is configured for it.
    pub pass_through: Option<PassThrough>,
}

/// Who a login names.
enum Account {
    /// In `[[users]]`.
    Configured(User),
    /// Found by the `[auth]` query, with its stored verifier.
    LookedUp(User, Verifier),
    /// Found by the `[auth]` query, with an md5 password.
    LookedUpMd5(User, StoredMd5),
    /// Not found: checked against a made-up verifier, and refused.
    Unknown,
}

/// Authenticates the client as `name`, before `deadline`.
pub async fn authenticate(
    client: &mut Client,
    ctx: &Context,
    name: &str,
    deadline: Instant,
) -> Result<Verified, SessionError> {
    let failed = || SessionError::AuthFailed {
        message: format!("password authentication failed for user \"{name}\""),
    };
    let not_proven = |e: SessionError| match e {
        SessionError::Scram(scram::ScramError::BadProof) => failed(),
        other => other,
    };
    match account(ctx, name).await? {
        Account::Configured(user) => {
            let pass_through = check_configured(client, ctx, &user, deadline)
                .await
                .map_err(not_proven)?
                .filter(|_| user.backend_user == user.name)
                .map(PassThrough::Scram);
            Ok(Verified { user, pass_through })
        }
        Account::LookedUp(user, verifier) => {
            let keys = scram_exchange(client, verifier, deadline)
                .await
                .map_err(not_proven)?;
            Ok(Verified {
                user,
                pass_through: Some(PassThrough::Scram(keys)),
            })
        }
        Account::LookedUpMd5(user, stored) => {
            let salt: [u8; 4] = rand::random();
            let mut out = BytesMut::new();
            messages::authentication(&mut out, auth::MD5_PASSWORD, &salt);
            write(client, &out).await?;
            let answer = read_password(client, deadline).await?;
            let given = cstr(&answer).map(|(p, _)| p).unwrap_or(&answer);
            if !stored.verify(salt, given) {
                return Err(failed());
            }
            Ok(Verified {
                user,
                pass_through: Some(PassThrough::Md5(stored)),
            })
        }
        Account::Unknown => {
            let verifier = mock_verifier(ctx, name);
            scram_exchange(client, verifier, deadline)
                .await
                .map_err(not_proven)?;
            Err(failed())
        }
    }
}

async fn account(ctx: &Context, name: &str) -> Result<Account, SessionError> {
    let found = ctx.find_user(name).await;
    let text = match found.map_err(|e| SessionError::Lookup(Box::new(e)))? {
        FoundUser::Configured(user) => return Ok(Account::Configured(user)),
        FoundUser::Unknown => return Ok(Account::Unknown),
        FoundUser::Stored(text) => text,
    };
    if let Some(verifier) = Verifier::parse(&text) {
        return Ok(Account::LookedUp(looked_up_user(name), verifier));
    }
    if let Some(stored) = StoredMd5::parse(&text) {
        return Ok(Account::LookedUpMd5(looked_up_user(name), stored));
    }
    tracing::warn!(
        user = name,
        "the [auth] query found a password that is neither a SCRAM-SHA-256 verifier nor an \
         md5 hash; it cannot pass through"
    );
    Ok(Account::Unknown)
}

/// A user found by the `[auth]` query: itself on the backend, logged in by pass-through.
fn looked_up_user(name: &str) -> User {
    User {
        name: name.to_owned(),
        auth: AuthMethod::ScramSha256,
        secret: Secret::None,
        backend_user: name.to_owned(),
        backend_password: None,
    }
}

/// The verifier an unknown user is checked against: the same salt for the same name for
/// the life of the process (as PostgreSQL's mock salt), keys nobody can match.
fn mock_verifier(ctx: &Context, name: &str) -> Verifier {
    Verifier {
        iterations: MOCK_ITERATIONS,
        salt: ctx.mock.derive::<16>("scram salt", name).to_vec(),
        stored_key: ctx.mock.derive("scram stored key", name),
        server_key: ctx.mock.derive("scram server key", name),
    }
}

/// Checks a `[[users]]` entry's password; returns the SCRAM keys when the check was SCRAM.
async fn check_configured(
    client: &mut Client,
    ctx: &Context,
    user: &User,
    deadline: Instant,
) -> Result<Option<Keys>, SessionError> {
    let failed = || SessionError::AuthFailed {
        message: format!("password authentication failed for user \"{}\"", user.name),
    };
    match user.auth {
        AuthMethod::Trust => Ok(None),
        AuthMethod::Md5 => {
            let Secret::Plain(password) = &user.secret else {
                return Err(failed());
            };
            let salt: [u8; 4] = rand::random();
            let mut out = BytesMut::new();
            messages::authentication(&mut out, auth::MD5_PASSWORD, &salt);
            write(client, &out).await?;
            let answer = read_password(client, deadline).await?;
            let expected = postgres_protocol::authentication::md5_hash(
                user.name.as_bytes(),
                password.as_bytes(),
                salt,
            );
            let given = cstr(&answer).map(|(p, _)| p).unwrap_or(&answer);
            if given == expected.as_bytes() {
                Ok(None)
            } else {
                Err(failed())
            }
        }
        // validate() allows MySQL methods only with protocol = "mysql".
        AuthMethod::MysqlNativePassword | AuthMethod::CachingSha2Password => Err(failed()),
        AuthMethod::ScramSha256 => {
            let verifier = ctx.verifier(user).ok_or_else(failed)?;
            scram_exchange(client, verifier, deadline).await.map(Some)
        }
    }
}

/// Runs a SCRAM-SHA-256 exchange against `verifier`; returns the keys the proof revealed.
async fn scram_exchange(
    client: &mut Client,
    verifier: Verifier,
    deadline: Instant,
) -> Result<Keys, SessionError> {
    let mut out = BytesMut::new();
    messages::authentication_sasl(&mut out, &[scram::MECHANISM]);
    write(client, &out).await?;
    let initial = read_password(client, deadline).await?;
    let (mechanism, rest) = cstr(&initial)
        .ok_or_else(|| SessionError::ClientProtocol("malformed SASLInitialResponse".into()))?;
    if mechanism != scram::MECHANISM.as_bytes() {
        let m = String::from_utf8_lossy(mechanism).into_owned();
        return Err(SessionError::Scram(scram::ScramError::Mechanism(m)));
    }
    let data = rest
        .get(4..)
        .ok_or_else(|| SessionError::ClientProtocol("malformed SASLInitialResponse".into()))?;
    let mut server = ScramServer::new(verifier);
    let first = server
        .client_first(data, &scram::random_nonce())
        .map_err(SessionError::Scram)?;
    out.clear();
    messages::authentication(&mut out, auth::SASL_CONTINUE, first.as_bytes());
    write(client, &out).await?;
    let response = read_password(client, deadline).await?;
    let last = server
        .client_final(&response)
        .map_err(SessionError::Scram)?;
    out.clear();
    messages::authentication(&mut out, auth::SASL_FINAL, last.message.as_bytes());
    write(client, &out).await?;
    Ok(last.keys)
}
