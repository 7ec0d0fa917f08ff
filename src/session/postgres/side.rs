//! What PostgreSQL supplies to the shared session flow (`session::flow::Protocol`): its
//! connector, SET replay, read-only mode, cancel targets per connection, a FATAL relayed
//! when the server ended a connection, and the SQLSTATEs and words of the flow's errors.

use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

use super::backend::Backend;
use super::cancel::{CancelTarget, SessionCancel};
use super::scan::{Scanner, Statements};
use super::startup::Client;
use crate::backend::postgres::{self as connector, BackendConn, ConnectError};
use crate::pool::{self, Lease, Pools};
use crate::protocol::postgres::sqlstate;
use crate::router::Target;
use crate::session::Context;
use crate::session::error::Endings;
use crate::session::failover::MoveCause;
use crate::session::flow::{Dial, Protocol, Why, held};
use crate::session::warm::Logins;
use crate::topology::Instance;

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
    /// The client's transaction was lost with its writer and it has not been told yet (the
    /// units since only closed statements, whose errors drivers ignore).
    pub(super) loss_untold: bool,
    /// A transaction took state that pins the session (a temporary table `ON COMMIT DROP`,
    /// a LISTEN that a ROLLBACK undoes): its end may have given it back.
    pub(super) took_in_transaction: bool,
    /// The settings a `SET` changed in the transaction open now (`Pin::SetInTransaction`),
    /// to read back when it ends; `None` once one could not be named.
    pub(super) set_in_transaction: Option<Vec<String>>,
    /// The settings `SET`s the proxy could not record as written changed (text not in
    /// UTF-8: `Pin::Unreplayable`), to read back between transactions; `None` once one
    /// could not be named.
    pub(super) unreplayed: Option<Vec<String>>,
    /// The transaction status of the last ReadyForQuery a unit run on a server ended with
    /// (`I`, `T` or `E`), or `T` after a `BEGIN` the proxy answered (see `begin`).
    pub(super) status: u8,
    /// The client's transaction was begun by a `BEGIN` the proxy answered: it starts on a
    /// server with its first work (see `begin`).
    pub(super) begin_deferred: bool,
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

    const TRANSACTIONAL_SETTINGS: bool = true;
    const ENDINGS: Endings<&'static str> = Endings {
        protocol: (sqlstate::PROTOCOL_VIOLATION, "invalid message: "),
        startup_timeout: (
            sqlstate::PROTOCOL_VIOLATION,
            "startup and authentication timed out",
        ),
        auth: sqlstate::INVALID_PASSWORD,
        connect: sqlstate::SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION,
        pool_full: sqlstate::TOO_MANY_CONNECTIONS,
        backend: sqlstate::CONNECTION_FAILURE,
        shutdown: (sqlstate::ADMIN_SHUTDOWN, "switchyard is shutting down"),
        killed: (sqlstate::ADMIN_SHUTDOWN, super::signal::TERMINATED),
        explain_ended: true,
    };

    async fn connect(
        d: Dial<'_, Self>,
        instance: &Arc<Instance>,
    ) -> Result<BackendConn, ConnectError> {
        connector::connect(d.cluster, instance, d.login, d.creds, d.timeout).await
    }

    fn pools(ctx: &Context) -> &Pools<BackendConn> {
        &ctx.postgres_pools
    }

    fn logins(ctx: &Context) -> &Logins<Self> {
        ctx.logins_postgres()
    }

    /// The startup parameters name the database (by default the user's name) and every
    /// setting a fresh connection starts with.
    fn pool_login(params: &Self::Login, user: &str) -> (String, u64) {
        let database = params.iter().find(|(k, _)| k == "database");
        let database = database.map_or(user, |(_, v)| v).to_owned();
        (database, pool::fingerprint(params))
    }

    async fn close(conn: BackendConn) {
        drop(conn);
    }

    async fn replay(
        backend: &mut Backend,
        sets: &[String],
    ) -> Result<Result<(), String>, SessionError> {
        if backend.applied >= sets.len() {
            return Ok(Ok(()));
        }
        let sql = sets[backend.applied..].join(";\n");
        match backend.run_silently(&sql, &mut BytesMut::new()).await? {
            None => {
                backend.applied = sets.len();
                Ok(Ok(()))
            }
            Some(message) => Ok(Err(message)),
        }
    }

    fn setting_names(sql: &String) -> Option<Vec<String>> {
        crate::sql::postgres_literal_settings(sql)
    }

    fn default_isolation(sql: &String) -> Option<crate::sql::DefaultIsolation> {
        crate::sql::postgres_default_isolation(sql.as_bytes())
    }

    fn writer_needs_preparing(_: &Side) -> bool {
        false
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
            // The login's own default (its role's, its startup options', a fence's).
            "RESET default_transaction_read_only"
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

    fn reusable_writer(_: &Side) -> bool {
        true
    }

    fn killed(side: &Side) -> impl Future<Output = ()> + Send + '_ {
        side.cancel.terminating()
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

held!(Backend, Lease<BackendConn>, super::backend::Spare);

pub(super) fn cancel_target(conn: &BackendConn) -> Option<CancelTarget> {
    conn.key.map(|key| CancelTarget {
        instance: Arc::clone(&conn.instance),
        key,
    })
}
