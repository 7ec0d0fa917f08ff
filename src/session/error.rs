//! The ways a session ends, once for both protocols. What differs by protocol is inside:
//! the error code a refusal carries (`P::Code`: a SQLSTATE, or a MySQL error number) and
//! the connector's error; each protocol maps an error to what its client is told
//! (`postgres::client_message`, `mysql::client_message`).

use crate::metrics::ErrorKind;
use crate::protocol::postgres::scram::ScramError;
use crate::session::flow::Protocol;

#[derive(Debug, thiserror::Error)]
pub enum SessionError<P: Protocol> {
    #[error("client closed the connection")]
    ClientGone,
    #[error("client connection failed")]
    ClientIo(#[source] std::io::Error),
    #[error("client protocol violation: {0}")]
    ClientProtocol(String),
    #[error("client did not finish startup in time")]
    StartupTimeout,
    #[error("TLS handshake with client failed")]
    Tls(#[source] std::io::Error),
    /// PostgreSQL: the client's SCRAM exchange failed.
    #[error("SCRAM authentication failed")]
    Scram(#[source] ScramError),
    /// Worded as the server words it, for a wrong password and an unknown user alike.
    #[error("{message}")]
    AuthFailed { message: String },
    #[error("could not look up the user")]
    Lookup(#[source] Box<crate::session::auth_query::LookupError>),
    #[error("{message}")]
    Refused { code: P::Code, message: String },
    #[error("could not open the writer connection")]
    Connect(#[source] P::ConnectError),
    #[error("lost connection to backend {addr}")]
    BackendLost {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("backend {addr} broke the protocol: {detail}")]
    BackendProtocol { addr: String, detail: String },
    /// The server ended this session's writer connection while the writer stays up (see
    /// `failover::judge_end`); `told`: the client got the server's last words (or nothing
    /// more can be sent).
    #[error("the server at {addr} ended this session's connection")]
    ConnectionEnded { addr: String, told: bool },
    #[error("writer failover: {message}")]
    Failover { code: P::Code, message: String },
    #[error("switchyard is shutting down")]
    Shutdown,
    /// MySQL: another client ran `KILL` naming this session's connection id; the
    /// connection closes without a word, as the server closes a killed idle connection.
    #[error("Connection was killed")]
    Killed,
}

impl<P: Protocol> SessionError<P> {
    /// The backend connection broke (not the client, not a refusal).
    pub fn backend_failed(&self) -> bool {
        matches!(
            self,
            SessionError::BackendLost { .. } | SessionError::BackendProtocol { .. }
        )
    }

    /// An end that is no error: the client left, or the proxy shut down, or a `KILL`.
    pub fn normal(&self) -> bool {
        matches!(
            self,
            SessionError::ClientGone | SessionError::Shutdown | SessionError::Killed
        )
    }

    /// The `kind` label of `switchyard_errors_total` this end counts under, if any.
    pub fn kind(&self) -> Option<ErrorKind> {
        use SessionError::*;
        match self {
            ClientGone | Shutdown | Killed => None,
            ClientIo(_) => Some(ErrorKind::ClientLost),
            ClientProtocol(_) | StartupTimeout | Tls(_) | Refused { .. } => {
                Some(ErrorKind::ClientProtocol)
            }
            Scram(_) | AuthFailed { .. } => Some(ErrorKind::Auth),
            Connect(_) | Lookup(_) => Some(ErrorKind::BackendConnect),
            BackendLost { .. }
            | BackendProtocol { .. }
            | Failover { .. }
            | ConnectionEnded { .. } => Some(ErrorKind::BackendLost),
        }
    }

    /// Records how the session ended: counts its kind of error, and logs anything but a
    /// normal end.
    pub fn report(&self) {
        if let Some(kind) = self.kind() {
            crate::metrics::error(kind);
        }
        if !self.normal() {
            tracing::info!(error = %crate::error::chain(self), "session ended");
        }
    }
}
