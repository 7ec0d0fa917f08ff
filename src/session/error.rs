//! The ways a session ends, once for both protocols, and what the client is told of each.
//! What differs by protocol is inside: the error code a refusal carries (`P::Code`: a
//! SQLSTATE, or a MySQL error number), the connector's error, and the codes and words of
//! each kind of end ([`Endings`]).

use crate::error::chain;
use crate::metrics::ErrorKind;
use crate::pool::CheckoutError;
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
    Connect(#[source] crate::session::flow::OpenError<P>),
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
    /// Another client ran `KILL` (MySQL) or `pg_terminate_backend` (PostgreSQL) naming this
    /// session: the connection closes as the server closes it (MySQL: without a word, as
    /// for a killed idle connection; PostgreSQL: after the FATAL `57P01` the session sent).
    #[error("Connection was killed")]
    Killed,
    /// As `Killed`, while the session waited for a connection for its client's work
    /// (none of which ran): the client, which waits for an answer, is told as the server
    /// tells the client of a connection killed mid-statement.
    #[error("Connection was killed while it waited for a backend connection")]
    KilledWaiting,
}

/// A protocol's codes and words for the ends of a session, for
/// [`SessionError::client_message`].
pub struct Endings<C: 'static> {
    /// The client broke the protocol: the code, and the words before the detail.
    pub protocol: (C, &'static str),
    /// The client did not finish its startup in time.
    pub startup_timeout: (C, &'static str),
    /// A failed login.
    pub auth: C,
    /// No backend connection could be opened, or the user not looked up.
    pub connect: C,
    /// The pool stayed full for `checkout_timeout`, or the server refused a login for want
    /// of connection slots with none in the pool to wait for (PostgreSQL 53300, MySQL 1040).
    pub pool_full: C,
    /// A backend connection was lost or broke the protocol.
    pub backend: C,
    /// The proxy shuts down.
    pub shutdown: (C, &'static str),
    /// Another client ended the session while its work waited for a connection.
    pub killed: (C, &'static str),
    /// Whether the client is told that the server ended the session's connection when
    /// the server's own words could not be relayed (PostgreSQL: yes; MySQL closes
    /// silently, as the server closes a killed connection).
    pub explain_ended: bool,
}

impl<P: Protocol> SessionError<P> {
    /// The error the client should see before the connection closes, if any, in its
    /// protocol's codes and words.
    pub fn client_message(&self) -> Option<(P::Code, String)> {
        use SessionError::*;
        let words = &P::ENDINGS;
        Some(match self {
            ClientGone | ClientIo(_) | Tls(_) | Killed => return None,
            ConnectionEnded { told, .. } if *told || !words.explain_ended => return None,
            ClientProtocol(m) => (words.protocol.0, format!("{}{m}", words.protocol.1)),
            StartupTimeout => (words.startup_timeout.0, words.startup_timeout.1.into()),
            Scram(ScramError::BadProof) => (words.auth, "password authentication failed".into()),
            Scram(e) => (words.protocol.0, e.to_string()),
            AuthFailed { message } => (words.auth, message.clone()),
            Refused { code, message } | Failover { code, message } => (*code, message.clone()),
            Connect(e @ CheckoutError::Timeout { .. }) => {
                (words.pool_full, format!("switchyard: {e}"))
            }
            Connect(CheckoutError::Connect(e)) if crate::pool::LoginError::server_full(e) => {
                (words.pool_full, format!("switchyard: {}", chain(e)))
            }
            Connect(CheckoutError::Connect(e)) => {
                (words.connect, format!("switchyard: {}", chain(e)))
            }
            Lookup(e) => (words.connect, format!("switchyard: {}", chain(e))),
            BackendLost { addr, .. } => (
                words.backend,
                format!("switchyard lost its connection to the database at {addr}"),
            ),
            BackendProtocol { .. } | ConnectionEnded { .. } => (words.backend, self.to_string()),
            Shutdown => (words.shutdown.0, words.shutdown.1.into()),
            KilledWaiting => (words.killed.0, words.killed.1.into()),
        })
    }

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
            SessionError::ClientGone
                | SessionError::Shutdown
                | SessionError::Killed
                | SessionError::KilledWaiting
        )
    }

    /// The `kind` label of `switchyard_errors_total` this end counts under, if any.
    pub fn kind(&self) -> Option<ErrorKind> {
        use SessionError::*;
        match self {
            ClientGone | Shutdown | Killed | KilledWaiting => None,
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
