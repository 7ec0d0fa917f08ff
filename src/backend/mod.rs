//! Backend connections for each protocol: connect, TLS, authenticate. The pool that
//! keeps them between clients is `crate::pool`.

mod carried;
pub mod mysql;
pub mod postgres;

pub use carried::{Carried, StatementCache};

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

/// Why a pooled connection could not be reset for its next client (it is closed then).
#[derive(Debug, thiserror::Error)]
pub enum ResetError {
    #[error("reset connection to {addr}")]
    Io {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("reset connection to {addr}: protocol violation: {detail}")]
    Protocol { addr: String, detail: String },
    #[error("reset connection to {addr}: server said {code}: {message}")]
    Refused {
        addr: String,
        code: String,
        message: String,
    },
    /// PostgreSQL: still in a transaction after the ROLLBACK.
    #[error("reset connection to {addr}: still in a transaction (status {status:?})")]
    InTransaction { addr: String, status: char },
    /// MySQL: the login named no database, and one is selected now: no command unselects it.
    #[error("reset connection to {addr}: a default database is selected and the login had none")]
    DatabaseSelected { addr: String },
}

impl ResetError {
    fn io(addr: &str, source: std::io::Error) -> ResetError {
        let addr = addr.to_owned();
        ResetError::Io { addr, source }
    }

    fn protocol(addr: &str, detail: &str) -> ResetError {
        let (addr, detail) = (addr.to_owned(), detail.to_owned());
        ResetError::Protocol { addr, detail }
    }
}

/// Reads what the server sent next into `buf` during a reset; an error once it closed.
async fn reset_read(
    stream: &mut crate::net::Stream,
    buf: &mut bytes::BytesMut,
    addr: &str,
) -> Result<(), ResetError> {
    use tokio::io::AsyncReadExt;
    match stream.read_buf(buf).await {
        Ok(0) => Err(ResetError::io(
            addr,
            std::io::ErrorKind::UnexpectedEof.into(),
        )),
        Ok(_) => Ok(()),
        Err(source) => Err(ResetError::io(addr, source)),
    }
}

/// Counts a connection in its instance's attached sessions (`attached`) or not.
fn attach(
    slot: &mut Option<crate::topology::Attachment>,
    instance: &Arc<crate::topology::Instance>,
    attached: bool,
) {
    match (attached, slot.is_some()) {
        (true, false) => *slot = Some(crate::topology::Attachment::new(instance)),
        (false, true) => *slot = None,
        _ => {}
    }
}

/// The metric handles of a new connection to `instance` (its cluster, address and role).
fn connection_metrics(instance: &crate::topology::Instance) -> crate::metrics::BackendMetrics {
    crate::metrics::BackendMetrics::new(&instance.cluster, &instance.addr, instance.role.as_str())
}
