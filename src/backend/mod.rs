//! Backend connections for each protocol: connect, TLS, authenticate. The pool that
//! keeps them between clients is `crate::pool`.

pub mod mysql;
pub mod postgres;

use std::sync::Arc;

use crate::protocol::postgres::scram::Keys;
use crate::protocol::postgres::scram_client::SaltedPasswords;

/// Who to log in as on the backend.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub user: String,
    pub password: Option<String>,
    /// PostgreSQL SCRAM: salted passwords computed by earlier logins, shared process-wide.
    pub salted: Arc<SaltedPasswords>,
    /// Without a password: what the client's own login proved, to log in as it.
    pub pass_through: Option<PassThrough>,
}

/// What the proxy learned when it verified a client against the verifier its backends
/// store (users looked up with `[auth]`), enough to log in to those backends as the client
/// without knowing its password.
#[derive(Debug, Clone, Copy)]
pub enum PassThrough {
    /// PostgreSQL SCRAM-SHA-256: ClientKey and ServerKey.
    Scram(Keys),
    /// PostgreSQL md5: the stored hash, which answers any salt.
    Md5(crate::protocol::postgres::md5::StoredMd5),
    /// mysql_native_password: SHA1(password), recovered from the client's answer.
    MysqlNative(crate::protocol::mysql::auth::NativeStage1),
}
