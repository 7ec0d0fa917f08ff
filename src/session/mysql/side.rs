//! What MySQL supplies to the shared session flow (`session::flow::Protocol`): its
//! connector, the replay of session-state commands (and autocommit on a new writer),
//! read-only mode, prepared statement ids per connection, the server's last ERR relayed
//! when it ended a connection, and the error numbers and words of the flow's errors.

use std::sync::Arc;

use bytes::BytesMut;

use super::backend::Backend;
use super::failover::last_error;
use super::kill;
use super::replay::Replay;
use super::startup::Client;
use super::statements::Statements;
use crate::backend::mysql::{self as connector, ConnectError, Login, MysqlConn};
use crate::pool::{self, Lease, Pools};
use crate::protocol::mysql::command;
use crate::protocol::mysql::constants::command::COM_QUERY;
use crate::protocol::mysql::constants::{
    ER_ACCESS_DENIED_ERROR, ER_CON_COUNT_ERROR, ER_CONNECTION_KILLED, ER_HANDSHAKE_ERROR,
    ER_OPTION_PREVENTS_STATEMENT, ER_SERVER_SHUTDOWN, ErrorCode, StatusFlags,
};
use crate::protocol::mysql::packet;
use crate::router::Target;
use crate::session::Context;
use crate::session::error::Endings;
use crate::session::failover::MoveCause;
use crate::session::flow::{Dial, Protocol, Why, held};
use crate::session::warm::Logins;
use crate::topology::Instance;

/// The MySQL protocol, for `Session<Mysql>`.
#[derive(Debug)]
pub struct Mysql;

pub type SessionError = crate::session::error::SessionError<Mysql>;

/// MySQL's half of a session.
pub struct Side {
    pub(super) client: Client,
    pub(super) statements: Statements,
    /// The status flags of the last response, for the proxy's own OK packets.
    pub(super) status: StatusFlags,
    /// The greeting's scramble, which COM_CHANGE_USER answers.
    pub(super) scramble: [u8; 20],
    pub(super) scratch: BytesMut,
    /// Where a `KILL` naming this session's connection id reaches its statement.
    pub(super) kill: kill::Registration,
    /// The writer connection is the one the client was greeted with.
    pub(super) greeted_writer: bool,
    /// The client's login ended (with OK): errors now answer commands.
    pub(super) logged_in: bool,
    /// The settings prepared `SET`s with parameters changed (`Pin::Unreplayable`), to read
    /// back between transactions; `None` once one could not be named.
    pub(super) unreplayed: Option<Vec<crate::sql::MysqlSetting>>,
    /// The client's transaction was begun by a `BEGIN` the proxy answered: it runs on a
    /// server before the transaction's first command (see `begin`).
    pub(super) begin_deferred: bool,
}

impl Protocol for Mysql {
    type Code = ErrorCode;
    type ConnectError = ConnectError;
    type Conn = MysqlConn;
    type Backend = Backend;
    type Replay = Replay;
    type Login = Login;
    type Side = Side;

    const TRANSACTIONAL_SETTINGS: bool = false;
    const ENDINGS: Endings<ErrorCode> = Endings {
        protocol: (ER_HANDSHAKE_ERROR, "Bad packet: "),
        startup_timeout: (ER_HANDSHAKE_ERROR, "Bad handshake: timed out"),
        auth: ER_ACCESS_DENIED_ERROR,
        connect: ER_HANDSHAKE_ERROR,
        pool_full: ER_CON_COUNT_ERROR,
        backend: ER_SERVER_SHUTDOWN,
        shutdown: (
            ER_SERVER_SHUTDOWN,
            "Server shutdown in progress (switchyard)",
        ),
        killed: (ER_CONNECTION_KILLED, "Connection was killed"),
        explain_ended: false,
    };

    async fn connect(
        d: Dial<'_, Self>,
        instance: &Arc<Instance>,
    ) -> Result<MysqlConn, ConnectError> {
        connector::connect(d.cluster, instance, d.login, d.creds, d.timeout).await
    }

    fn pools(ctx: &Context) -> &Pools<MysqlConn> {
        &ctx.mysql_pools
    }

    fn logins(ctx: &Context) -> &Logins<Self> {
        ctx.logins_mysql()
    }

    /// Besides the database, the capabilities (MariaDB's extended ones too), character set
    /// and packet size the client's login agreed: a connection only serves a client that agreed the same, since its
    /// bytes are relayed as they are.
    fn pool_login(login: &Login, _: &str) -> (String, u64) {
        let database = login.database.as_deref().unwrap_or_default();
        // Not the connection attributes: they name the client's process, and only the
        // server's performance_schema shows them.
        let options = (
            login.capabilities.bits(),
            login.charset,
            login.max_packet_size,
            &login.database,
            login.mariadb_capabilities,
        );
        let database = String::from_utf8_lossy(database).into_owned();
        (database, pool::fingerprint(&options))
    }

    async fn close(conn: MysqlConn) {
        conn.quit().await;
    }

    async fn replay(
        backend: &mut Backend,
        replays: &[Replay],
    ) -> Result<Result<(), String>, SessionError> {
        super::replay::replay(backend, replays).await
    }

    fn setting_names(replay: &Replay) -> Option<Vec<String>> {
        replay.setting_names()
    }

    fn default_isolation(_: &Replay) -> Option<crate::sql::DefaultIsolation> {
        // A MySQL replica runs serializable transactions.
        None
    }

    fn writer_needs_preparing(side: &Side) -> bool {
        !side.status.contains(StatusFlags::SERVER_STATUS_AUTOCOMMIT)
    }

    async fn prepare_writer(
        side: &Side,
        writer: &mut Backend,
    ) -> Result<Result<(), String>, SessionError> {
        if !Self::writer_needs_preparing(side) {
            return Ok(Ok(()));
        }
        let mut out = BytesMut::new();
        command::write_text_command(&mut out, COM_QUERY, b"SET autocommit = 0");
        Ok(match writer.run_silently(&out).await? {
            (_, Some(message)) => Err(message),
            (_, None) => Ok(()),
        })
    }

    async fn set_read_only(
        writer: &mut Backend,
        read_only: bool,
    ) -> Result<Option<String>, SessionError> {
        let sql: &[u8] = if read_only {
            b"SET SESSION TRANSACTION READ ONLY"
        } else {
            b"SET SESSION TRANSACTION READ WRITE"
        };
        let mut out = BytesMut::new();
        command::write_text_command(&mut out, COM_QUERY, sql);
        Ok(writer.run_silently(&out).await?.1)
    }

    fn backend_changed(side: &mut Side, target: Target, backend: Option<&Backend>) {
        side.statements.forget_backend(target);
        if backend.is_none() {
            side.kill.released(target);
        }
        if target == Target::Writer {
            side.greeted_writer = false;
        }
    }

    fn reusable_writer(side: &Side) -> bool {
        !side.greeted_writer
    }

    fn killed(side: &Side) -> impl Future<Output = ()> + Send + '_ {
        side.kill.kill.ended()
    }

    async fn last_words(side: &mut Side, writer: Backend) -> bool {
        let Some(payload) = last_error(&writer.conn.buf) else {
            return false;
        };
        let mut out = BytesMut::new();
        packet::write_packet(&mut out, 1, &payload);
        if let Err(e) = side.client.write_all(&out).await {
            tracing::debug!(error = %e, "could not relay the server's last error");
        }
        true
    }

    fn refusal(why: Why<'_>) -> (ErrorCode, String) {
        match why {
            Why::ReadOnly { cluster } => (
                ER_OPTION_PREVENTS_STATEMENT,
                format!(
                    "The MySQL server is running with the --read-only option so it cannot execute this statement: cluster '{cluster}' is read-only for a database migration (switchyard)"
                ),
            ),
            Why::CannotMove { cause, to } => (
                ER_SERVER_SHUTDOWN,
                match cause {
                    MoveCause::Cutover => format!(
                        "the database moved to cluster '{to}' (switchyard cutover) and this session holds state that cannot move with it; reconnect"
                    ),
                    MoveCause::Failover => format!(
                        "the writer of cluster '{to}' changed (switchyard writer failover) and this session holds state that cannot move to the new writer; reconnect"
                    ),
                },
            ),
            Why::NoActiveCluster { name } => (
                ER_HANDSHAKE_ERROR,
                format!("active cluster {name:?} is not in the topology"),
            ),
            Why::NoWriter(e) => (ER_CONNECTION_KILLED, e.to_string()),
        }
    }
}

held!(Backend, Lease<MysqlConn>);
