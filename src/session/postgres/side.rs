//! What PostgreSQL supplies to the shared session flow (`session::flow::Protocol`): its
//! connector, SET replay, read-only mode, cancel targets per connection, a FATAL relayed
//! when the server ended a connection, and the SQLSTATEs and words of the flow's errors.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

use super::backend::Backend;
use super::cancel::{CancelTarget, SessionCancel};
use super::scan::{Scanner, Statements};
use super::startup::Client;
use crate::backend::Credentials;
use crate::backend::postgres::{self as connector, BackendConn, ConnectError};
use crate::protocol::postgres::scram::ScramError;
use crate::protocol::postgres::sqlstate;
use crate::router::Target;
use crate::session::failover::MoveCause;
use crate::session::flow::{Held, Protocol, Why};
use crate::topology::{Cluster, Instance};

/// The PostgreSQL protocol, for `Session<Postgres>`.
#[derive(Debug)]
pub struct Postgres;

pub type SessionError = crate::session::error::SessionError<Postgres>;

/// PostgreSQL's half of a session.
pub struct Side {
    pub(super) client: Client,
    pub(super) statements: Statements,
    pub(super) scanner: Scanner,
    pub(super) cancel: Arc<SessionCancel>,
    pub(super) scratch: BytesMut,
}

impl Protocol for Postgres {
    type Code = &'static str;
    type ConnectError = ConnectError;
    type Conn = BackendConn;
    type Backend = Backend;
    /// A SET statement as the client sent it.
    type Replay = String;
    /// The client's startup parameters, sent to every backend connection.
    type Login = Vec<(String, String)>;
    type Side = Side;

    async fn connect(
        cluster: &Cluster,
        instance: &Arc<Instance>,
        login: &Self::Login,
        creds: &Credentials,
        timeout: Duration,
    ) -> Result<BackendConn, ConnectError> {
        connector::connect(cluster, instance, login, creds, timeout).await
    }

    async fn close(conn: BackendConn) {
        drop(conn);
    }

    async fn replay(
        backend: &mut Backend,
        sets: &[String],
    ) -> Result<Result<(), String>, SessionError> {
        if backend.applied_sets >= sets.len() {
            return Ok(Ok(()));
        }
        let sql = sets[backend.applied_sets..].join(";\n");
        match backend.run_silently(&sql, &mut BytesMut::new()).await? {
            None => {
                backend.applied_sets = sets.len();
                Ok(Ok(()))
            }
            Some(message) => Ok(Err(message)),
        }
    }

    async fn prepare_writer(_: &Side, _: &mut Backend) -> Result<Result<(), String>, SessionError> {
        Ok(Ok(()))
    }

    async fn set_read_only(
        backend: &mut Backend,
        read_only: bool,
    ) -> Result<Option<String>, SessionError> {
        let sql = if read_only {
            "SET default_transaction_read_only = on"
        } else {
            "SET default_transaction_read_only = off"
        };
        backend.run_silently(sql, &mut BytesMut::new()).await
    }

    fn backend_changed(side: &mut Side, target: Target, backend: Option<&Backend>) {
        let slot = match target {
            Target::Writer => 0,
            Target::Reader => 1,
        };
        side.cancel
            .set_target(slot, backend.and_then(|b| cancel_target(&b.conn)));
    }

    async fn last_words(side: &mut Side, mut writer: Backend) -> bool {
        match writer.take_fatal() {
            Some(fatal) => {
                // The session ends right after, so a failed write changes nothing.
                let _ = side.client.stream.write_all(&fatal).await;
                true
            }
            // Cut in the middle of a message: nothing more can be sent.
            None => writer.mid_message(),
        }
    }

    fn refusal(why: Why<'_>) -> (&'static str, String) {
        match why {
            Why::ReadOnly { cluster } => (
                sqlstate::READ_ONLY_SQL_TRANSACTION,
                format!(
                    "cannot execute a write: cluster \"{cluster}\" is read-only for a database migration (switchyard)"
                ),
            ),
            Why::CannotMove { cause, to } => (
                sqlstate::ADMIN_SHUTDOWN,
                match cause {
                    MoveCause::Cutover => format!(
                        "terminating connection: the database moved to cluster \"{to}\" (switchyard cutover) and this session holds state that cannot move with it; reconnect"
                    ),
                    MoveCause::Failover => format!(
                        "terminating connection: the writer of cluster \"{to}\" changed (switchyard writer failover) and this session holds state that cannot move to the new writer; reconnect"
                    ),
                },
            ),
            Why::NoActiveCluster { name } => (
                sqlstate::INTERNAL_ERROR,
                format!("active cluster {name:?} is not in the topology"),
            ),
            Why::NoWriter(e) => (sqlstate::CANNOT_CONNECT_NOW, e.to_string()),
        }
    }
}

impl Held for Backend {
    type Conn = BackendConn;

    fn new(conn: BackendConn) -> Backend {
        Backend::new(conn)
    }

    fn instance(&self) -> &Arc<Instance> {
        &self.conn.instance
    }

    fn closed(&mut self) -> bool {
        Backend::closed(self)
    }

    fn applied(&mut self) -> &mut usize {
        &mut self.applied_sets
    }

    fn read_only(&mut self) -> &mut bool {
        &mut self.read_only
    }
}

pub(super) fn cancel_target(conn: &BackendConn) -> Option<CancelTarget> {
    conn.key.map(|key| CancelTarget {
        host: conn.instance.host.clone(),
        port: conn.instance.port,
        key,
    })
}

/// The FATAL error the client should see before the connection closes, if any.
pub(super) fn client_message(error: &SessionError) -> Option<(&'static str, String)> {
    use crate::session::error::SessionError::*;
    Some(match error {
        ClientGone | ClientIo(_) | Tls(_) | Killed => return None,
        ClientProtocol(m) => (
            sqlstate::PROTOCOL_VIOLATION,
            format!("invalid message: {m}"),
        ),
        StartupTimeout => (
            sqlstate::PROTOCOL_VIOLATION,
            "startup and authentication timed out".into(),
        ),
        Scram(ScramError::BadProof) => (
            sqlstate::INVALID_PASSWORD,
            "password authentication failed".into(),
        ),
        Scram(e) => (sqlstate::PROTOCOL_VIOLATION, e.to_string()),
        AuthFailed { message } => (sqlstate::INVALID_PASSWORD, message.clone()),
        Refused { code, message } | Failover { code, message } => (*code, message.clone()),
        Connect(e) => (
            sqlstate::SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION,
            crate::error::chain(e),
        ),
        Lookup(e) => (
            sqlstate::SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION,
            format!("switchyard: {}", crate::error::chain(e)),
        ),
        BackendLost { addr, .. } => (
            sqlstate::CONNECTION_FAILURE,
            format!("switchyard lost its connection to the database at {addr}"),
        ),
        BackendProtocol { .. } => (sqlstate::CONNECTION_FAILURE, error.to_string()),
        ConnectionEnded { told: true, .. } => return None,
        ConnectionEnded { .. } => (sqlstate::CONNECTION_FAILURE, error.to_string()),
        Shutdown => (sqlstate::ADMIN_SHUTDOWN, error.to_string()),
    })
}
