//! The ways a MySQL session ends, and the ERR packet the client gets for each.

use crate::backend::mysql::ConnectError;
use crate::error::chain;
use crate::metrics::ErrorKind;
use crate::protocol::mysql::constants::{
    ER_ACCESS_DENIED_ERROR, ER_HANDSHAKE_ERROR, ER_SERVER_SHUTDOWN, ErrorCode,
};

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("client closed the connection")]
    ClientGone,
    #[error("client connection failed")]
    ClientIo(#[source] std::io::Error),
    #[error("client protocol violation: {0}")]
    ClientProtocol(String),
    #[error("client did not finish the handshake in time")]
    StartupTimeout,
    #[error("TLS handshake with client failed")]
    Tls(#[source] std::io::Error),
    /// As the server words it, for a wrong password and an unknown user alike.
    #[error("Access denied for user '{user}'@'{host}' (using password: {})", if *using_password { "YES" } else { "NO" })]
    AuthFailed {
        user: String,
        host: String,
        using_password: bool,
    },
    #[error("could not look up the user")]
    Lookup(#[source] Box<crate::session::auth_query::LookupError>),
    #[error("{message}")]
    Refused { code: ErrorCode, message: String },
    #[error("could not open the writer connection")]
    Connect(#[source] ConnectError),
    #[error("lost connection to backend {addr}")]
    BackendLost {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("backend {addr} broke the protocol: {detail}")]
    BackendProtocol { addr: String, detail: String },
    /// The server ended this session's writer connection by itself (KILL, `wait_timeout`)
    /// while the writer stayed up; the client was told what the server said, if anything.
    #[error("the server at {addr} ended this session's connection")]
    ConnectionEnded { addr: String },
    #[error("writer failover: {message}")]
    Failover { code: ErrorCode, message: String },
    #[error("switchyard is shutting down")]
    Shutdown,
    /// Another client ran `KILL` naming this session's connection id: the connection
    /// closes without a word, as the server closes a killed idle connection.
    #[error("Connection was killed")]
    Killed,
}

impl SessionError {
    /// The ERR the client should see before the connection closes, if any.
    pub(super) fn client_message(&self) -> Option<(ErrorCode, String)> {
        use SessionError::*;
        Some(match self {
            ClientGone | ClientIo(_) | Tls(_) | ConnectionEnded { .. } | Killed => return None,
            ClientProtocol(m) => (ER_HANDSHAKE_ERROR, format!("Bad packet: {m}")),
            StartupTimeout => (ER_HANDSHAKE_ERROR, "Bad handshake: timed out".into()),
            AuthFailed { .. } => (ER_ACCESS_DENIED_ERROR, self.to_string()),
            Refused { code, message } | Failover { code, message } => (*code, message.clone()),
            Connect(e) => (ER_HANDSHAKE_ERROR, format!("switchyard: {}", chain(e))),
            Lookup(e) => (ER_HANDSHAKE_ERROR, format!("switchyard: {}", chain(e))),
            BackendLost { addr, .. } => (
                ER_SERVER_SHUTDOWN,
                format!("switchyard lost its connection to the database at {addr}"),
            ),
            BackendProtocol { .. } => (ER_SERVER_SHUTDOWN, self.to_string()),
            Shutdown => (
                ER_SERVER_SHUTDOWN,
                "Server shutdown in progress (switchyard)".into(),
            ),
        })
    }

    /// The backend connection broke (not the client, not a refusal).
    pub(super) fn backend_failed(&self) -> bool {
        matches!(
            self,
            SessionError::BackendLost { .. } | SessionError::BackendProtocol { .. }
        )
    }

    pub(super) fn kind(&self) -> Option<ErrorKind> {
        use SessionError::*;
        match self {
            ClientGone | Shutdown | Killed => None,
            ClientIo(_) => Some(ErrorKind::ClientLost),
            ClientProtocol(_) | StartupTimeout | Tls(_) | Refused { .. } => {
                Some(ErrorKind::ClientProtocol)
            }
            AuthFailed { .. } => Some(ErrorKind::Auth),
            Connect(_) | Lookup(_) => Some(ErrorKind::BackendConnect),
            BackendLost { .. }
            | BackendProtocol { .. }
            | Failover { .. }
            | ConnectionEnded { .. } => Some(ErrorKind::BackendLost),
        }
    }
}
