//! One PostgreSQL client connection, from startup to Terminate: authenticate, open the writer
//! connection, then route each unit of work (a query or an extended-protocol batch) to the
//! writer or a reader and relay the answer. Session mode: the session owns one writer
//! connection and, once it reads, one reader connection.

mod auth;
mod backend;
pub mod cancel;
mod exchange;
mod failover;
mod migration;
mod scan;
mod startup;

use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use self::cancel::{CancelTarget, Registration, SessionCancel};
use super::{Context, Leave, ReaderSpread, open_reader};
use crate::backend::Credentials;
use crate::backend::postgres::{self as connector, BackendConn, ConnectError};
use crate::catalog::SessionFunctions;
use crate::cutover::Admission;
use crate::metrics::{self, ErrorKind};
use crate::protocol::postgres::messages::{self, Severity, tag};
use crate::protocol::postgres::scram::ScramError;
use crate::protocol::postgres::sqlstate;
use crate::router::{self, Effect, ReadYourWrites, SessionView, Settings, Target};
use crate::shutdown::Shutdown;
use crate::topology::{Cluster, Instance};
use backend::Backend;
use scan::{Ending, Scanner, Statements};
use startup::{Client, Outcome};

/// A session replays at most this many SET statements on a reader, then stays on the writer.
const MAX_RECORDED_SETS: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
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
    #[error("SCRAM authentication failed")]
    Scram(#[source] ScramError),
    /// As PostgreSQL words it, for a wrong password and an unknown user alike.
    #[error("password authentication failed for user \"{user}\"")]
    AuthFailed { user: String },
    #[error("could not look up the user")]
    Lookup(#[source] Box<crate::session::auth_query::LookupError>),
    #[error("refused: {message}")]
    Refused { code: &'static str, message: String },
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
    /// The server ended this session's writer connection while the writer stays up (see
    /// `failover::judge_end`); `told`: its FATAL was relayed (or nothing more can be sent).
    #[error("the server at {addr} ended this session's connection")]
    ConnectionEnded { addr: String, told: bool },
    #[error("writer failover: {message}")]
    Failover { code: &'static str, message: String },
    #[error("switchyard is shutting down")]
    Shutdown,
}

impl SessionError {
    /// The FATAL error the client should see before the connection closes, if any.
    fn client_message(&self) -> Option<(&'static str, String)> {
        use SessionError::*;
        Some(match self {
            ClientGone | ClientIo(_) | Tls(_) => return None,
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
            AuthFailed { .. } => (sqlstate::INVALID_PASSWORD, self.to_string()),
            Refused { code, message } | Failover { code, message } => (code, message.clone()),
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
            BackendProtocol { .. } => (sqlstate::CONNECTION_FAILURE, self.to_string()),
            ConnectionEnded { told: true, .. } => return None,
            ConnectionEnded { .. } => (sqlstate::CONNECTION_FAILURE, self.to_string()),
            Shutdown => (sqlstate::ADMIN_SHUTDOWN, self.to_string()),
        })
    }

    fn kind(&self) -> Option<ErrorKind> {
        use SessionError::*;
        match self {
            ClientGone | Shutdown => None,
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
}

/// Serves one client connection until it ends.
pub async fn run(tcp: TcpStream, ctx: Arc<Context>, shutdown: Shutdown) {
    if let Err(e) = serve(tcp, &ctx, shutdown).await {
        let normal = matches!(e, SessionError::ClientGone | SessionError::Shutdown);
        super::report_end(e.kind(), normal, &e);
    }
}

async fn serve(tcp: TcpStream, ctx: &Arc<Context>, shutdown: Shutdown) -> Result<(), SessionError> {
    let deadline = Instant::now() + ctx.config().raw.server.auth_timeout;
    let (client, params, user, pass_through) = match startup::handshake(tcp, ctx, deadline).await? {
        Outcome::Cancel {
            pid,
            secret,
            mut client,
        } => {
            if let Err(e) = ctx.cancels.cancel(pid, secret).await {
                tracing::warn!(error = %e, "could not forward a cancel request");
            }
            // As the server does: close the connection properly once the cancel is sent.
            if let Err(e) = client.stream.shutdown().await {
                tracing::debug!(error = %e, "closing a cancel request's connection");
            }
            return Ok(());
        }
        Outcome::Session(session) => {
            let startup::Authenticated {
                client,
                params,
                user,
                pass_through,
            } = *session;
            (client, params, user, pass_through)
        }
    };
    let topology = ctx.topology.load();
    let routing = ctx.routing.load();
    let active = &routing.active;
    let cluster = topology
        .clusters
        .get(active)
        .cloned()
        .ok_or_else(|| SessionError::Refused {
            code: sqlstate::INTERNAL_ERROR,
            message: format!("active cluster {active:?} is not in the topology"),
        })?;
    let read_your_writes =
        ReadYourWrites::for_session(&ctx.config().raw.routing, &user.name, params.database());
    let creds = Credentials {
        user: user.backend_user.clone(),
        password: user.backend_password.clone(),
        salted: Arc::clone(&ctx.salted),
        pass_through,
    };
    let functions = ctx.functions(&creds, params.database().map(str::to_owned), &shutdown);
    // A hot standby refuses every read of a serializable-by-default session.
    let serializable = router::serializable_by_default(&params.params);
    let mut session = Session {
        ctx: Arc::clone(ctx),
        cluster,
        client,
        creds,
        functions,
        params: params.params,
        writer: None,
        reader: None,
        statements: Statements::default(),
        scanner: Scanner::new(ctx.config().raw.server.max_message_bytes),
        sets: Vec::new(),
        view: SessionView {
            in_transaction: None,
            pinned_to_writer: serializable,
            wrote_recently: false,
        },
        read_your_writes,
        writes_until: None,
        admission: None,
        spread: ReaderSpread::new(),
        cancel: Arc::new(SessionCancel::default()),
        scratch: BytesMut::new(),
        shutdown,
    };
    let _connected = metrics::client_connected();
    // Lives as long as the session: the client's cancel key.
    let registration = session.start().await;
    let result = match registration {
        Ok(_registration) => session.serve().await,
        Err(e) => Err(e),
    };
    if let Err(e) = &result
        && let Some((code, message)) = e.client_message()
    {
        session
            .client
            .send_error(Severity::Fatal, code, &message)
            .await;
    }
    result
}

struct Session {
    ctx: Arc<Context>,
    cluster: Arc<Cluster>,
    client: Client,
    creds: Credentials,
    /// Whether the unknown functions a read calls only read (the catalog cache).
    functions: SessionFunctions,
    /// The client's startup parameters, sent to every backend connection.
    params: Vec<(String, String)>,
    writer: Option<Backend>,
    reader: Option<Backend>,
    statements: Statements,
    scanner: Scanner,
    /// Session SET statements, replayed in order on a reader connection.
    sets: Vec<String>,
    view: SessionView,
    /// What this session's route says its reads see after its writes.
    read_your_writes: ReadYourWrites,
    /// Reads stay on the writer until then, after this session wrote (read-your-writes).
    writes_until: Option<Instant>,
    /// Held while this session has work on the writer (a cutover's drain waits for it).
    admission: Option<Admission>,
    /// When this session last looked at whether its reader should change.
    spread: ReaderSpread,
    cancel: Arc<SessionCancel>,
    scratch: BytesMut,
    shutdown: Shutdown,
}

impl Session {
    /// Opens the writer connection and finishes the client's startup with its parameters.
    /// BackendKeyData carries the writer connection's own process id, so that
    /// `pg_backend_pid()`, the pid of a notification and `pg_terminate_backend` agree with
    /// what the client was told, and a secret key of the proxy's, so that a CancelRequest
    /// works only through the proxy, which sends it to the connection running the client's
    /// statement (see `cancel`).
    async fn start(&mut self) -> Result<Registration, SessionError> {
        let writer = match self.first_writer().await? {
            Ok(conn) => conn,
            Err(ConnectError::Server {
                raw, code, message, ..
            }) => {
                // The database refused this login (no such database, bad password …): say so verbatim.
                tracing::info!(%code, %message, "writer refused the session");
                // The session ends right after, so a failed write changes nothing.
                let _ = self.client.stream.write_all(&raw).await;
                return Err(SessionError::ClientGone);
            }
            Err(e) => return Err(SessionError::Connect(e)),
        };
        self.cancel.set_target(0, cancel_target(&writer));
        let pid = writer.key.map(|k| k.pid);
        let registration = self.ctx.cancels.register(Arc::clone(&self.cancel), pid);
        let (pid, secret) = registration.key();
        let mut out = BytesMut::new();
        messages::authentication(&mut out, messages::auth::OK, &[]);
        for m in writer.parameter_status.iter().chain(writer.notices.iter()) {
            out.extend_from_slice(m);
        }
        messages::backend_key_data(&mut out, pid, secret);
        messages::ready_for_query(&mut out, b'I');
        self.client
            .stream
            .write_all(&out)
            .await
            .map_err(SessionError::ClientIo)?;
        self.writer = Some(Backend::new(writer));
        Ok(registration)
    }

    async fn connect(&self, instance: &Arc<Instance>) -> Result<BackendConn, ConnectError> {
        let timeout = self.ctx.config().raw.server.connect_timeout;
        connector::connect(&self.cluster, instance, &self.params, &self.creds, timeout).await
    }

    async fn serve(&mut self) -> Result<(), SessionError> {
        loop {
            let unit = self
                .scanner
                .next(&self.client.buf, &mut self.statements)
                .map_err(|e| SessionError::ClientProtocol(e.to_string()))?;
            let Some(unit) = unit else {
                self.idle().await?;
                continue;
            };
            match unit.first_tag {
                tag::TERMINATE => return Ok(()),
                tag::COPY_DATA | tag::COPY_DONE | tag::COPY_FAIL => {
                    // Outside COPY these are ignored, as PostgreSQL does.
                    self.client.buf.advance(unit.end);
                    continue;
                }
                _ => {}
            }
            self.execute(unit).await?;
        }
    }

    /// Waits for the client's next bytes, relaying anything the writer sends meanwhile
    /// (notifications, notices, a FATAL before it closes). A drain (SIGTERM) ends the
    /// session here, but only between transactions: one in progress is let finish.
    async fn idle(&mut self) -> Result<(), SessionError> {
        let between_transactions = self.view.in_transaction.is_none();
        // Only a pinned session (LISTEN, …) expects messages from an idle writer; watching
        // every idle writer would cost a read() per statement.
        let pinned = self.view.pinned_to_writer;
        let watched = self.writer.as_mut().filter(|_| pinned);
        let result = tokio::select! {
            _ = self.shutdown.recv(), if between_transactions => Err(SessionError::Shutdown),
            read = self.client.fill() => match read {
                Ok(0) => Err(SessionError::ClientGone),
                Ok(_) => Ok(()),
                Err(e) => Err(SessionError::ClientIo(e)),
            },
            filled = writer_bytes(watched) => match filled {
                Ok(w) => match w.relay(&mut self.client.stream).await {
                    Ok(seen) if seen.ended => Err(w.ended()),
                    Ok(_) => Ok(()),
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            }
        };
        if let Err(SessionError::BackendLost { .. }) = &result {
            // The server ended the connection of this pinned session, or the writer died.
            self.end_if_only_connection().await?;
        }
        result
    }

    async fn execute(&mut self, unit: scan::Unit) -> Result<(), SessionError> {
        if self.view.in_transaction.is_none() {
            self.follow_active().await?;
        }
        let settings = Settings {
            read_write_split: self.ctx.config().raw.routing.read_write_split,
        };
        self.view.wrote_recently = self.writes_until.is_some_and(|t| Instant::now() < t);
        let stmt = self.functions.resolve(&unit.stmt, &self.cluster);
        let mut target = router::route(&stmt, self.view, settings);
        // A batch left open (Flush, or one too large to hold) is followed on its connection
        // by whatever the client sends next — more of the batch, a simple Query, a COPY — as
        // on a server. Only the writer can run anything, so it goes there (in a transaction
        // it stays where the transaction runs). One that only prepares and describes a read
        // (asyncpg's Parse/Describe/Flush before every query) may go to a reader: the
        // exchange ends it there if what follows must run elsewhere.
        let open_batch = unit.ending == Ending::Open;
        let describes_read = open_batch && !unit.executes && target == Target::Reader;
        if open_batch && self.view.in_transaction.is_none() && !describes_read {
            target = Target::Writer;
        }
        self.record_effect(&unit.stmt, unit.simple_sql.as_deref());
        self.ctx.topology.refresh(&mut self.cluster);
        if target == Target::Reader && self.cluster.readers.is_empty() {
            target = Target::Writer;
        } else if target == Target::Reader && !self.prepare_reader().await? {
            metrics::reader_fallback();
            target = Target::Writer;
        }
        let open = self.view.in_transaction == Some(Target::Writer);
        let admitted = match (target, self.view.in_transaction) {
            (Target::Writer, None) => self.migration_gate(&unit).await?,
            (Target::Writer, Some(Target::Writer)) => self.writer_in_transaction(&unit).await?,
            _ => true,
        };
        if !admitted {
            self.scanner.recycle(unit.refs);
            return Ok(());
        }
        let result = self.exchange(target, &unit).await;
        let (answer, ran_on) = match result {
            Ok(answer) => (answer, target),
            Err(exchange::Failed {
                error,
                retryable: true,
                ..
            }) if target == Target::Reader && self.view.in_transaction.is_none() => {
                // Nothing reached the client, and no transaction was open on the reader: run
                // it again on another reader, else the writer.
                metrics::read_retried(&self.cluster.name);
                self.drop_reader(true);
                let retry = if self.prepare_reader().await? {
                    Target::Reader
                } else {
                    Target::Writer
                };
                tracing::warn!(error = %error, retry_on = ?retry, "reader failed before answering; retrying");
                let answer = self.exchange(retry, &unit).await.map_err(|f| f.error)?;
                (answer, retry)
            }
            Err(failed) if target == Target::Writer => {
                self.writer_failed(&unit, failed, open).await?;
                self.scanner.recycle(unit.refs);
                return Ok(());
            }
            Err(failed) => return Err(failed.error),
        };
        if let Some(query) = answer.absorbed {
            // A Query after a batch left open ran with it (the transaction state is still
            // the one it started in): the state it changes counts.
            self.record_effect(&query.stmt, query.simple_sql.as_deref());
            let in_transaction = answer.status != b'I';
            self.functions
                .ran(&query.stmt, in_transaction, &self.cluster.name);
        }
        self.view.in_transaction = (answer.status != b'I').then_some(ran_on);
        if self.view.in_transaction.is_none() {
            self.admission = None;
        }
        let in_transaction = self.view.in_transaction.is_some();
        self.functions
            .ran(&unit.stmt, in_transaction, &self.cluster.name);
        if ran_on == Target::Writer && (open_batch || router::may_write(&stmt)) {
            let cluster = &self.cluster;
            self.writes_until = self
                .read_your_writes
                .writer_until(Instant::now(), || cluster.catch_up_window());
        }
        self.scanner.recycle(unit.refs);
        Ok(())
    }

    /// Records what `stmt` (a simple Query's `sql`) does to the session's state: a SET to
    /// replay on readers, or state that keeps the session on the writer.
    fn record_effect(&mut self, stmt: &crate::sql::Statement, sql: Option<&str>) {
        match router::effect(stmt, self.view) {
            Effect::None => {}
            Effect::Record => match sql {
                Some(sql) if self.sets.len() < MAX_RECORDED_SETS => self.sets.push(sql.to_owned()),
                _ => self.pin(),
            },
            Effect::Pin => self.pin(),
        }
    }

    async fn exchange(
        &mut self,
        target: Target,
        unit: &scan::Unit,
    ) -> Result<exchange::Answer, exchange::Failed> {
        let (backend, slot) = match target {
            Target::Writer => (self.writer.as_mut(), 0),
            Target::Reader => (self.reader.as_mut(), 1),
        };
        let Some(backend) = backend else {
            return Err(exchange::Failed {
                error: SessionError::ClientGone,
                retryable: false,
                resumable: false,
                held: 0,
            });
        };
        self.cancel.set_active(slot);
        let settings = Settings {
            read_write_split: self.ctx.config().raw.routing.read_write_split,
        };
        let open_on_reader = (target == Target::Reader && unit.ending == Ending::Open)
            .then_some((self.view, settings));
        let mut ex = exchange::Exchange {
            client: &mut self.client,
            backend,
            scanner: &mut self.scanner,
            statements: &mut self.statements,
            scratch: &mut self.scratch,
            message_limit: self.ctx.config().raw.server.max_message_bytes,
            open_on_reader,
        };
        ex.run(unit).await
    }

    /// Makes sure a reader connection is open and has the session's SETs; `false` when no
    /// reader can be used now (the caller falls back to the writer).
    async fn prepare_reader(&mut self) -> Result<bool, SessionError> {
        let now = Instant::now();
        let mut next = None;
        if self.view.in_transaction.is_none()
            && let Some(reader) = &self.reader
            && let Leave::For(to) =
                self.spread
                    .leave(&reader.conn.instance, &self.cluster.readers, now)
        {
            next = to;
            self.drop_reader(false);
        }
        if self.reader.is_none() {
            let retry = self.ctx.config().raw.server.backend_retry;
            let this = &*self;
            let connect = |i: Arc<Instance>| async move { this.connect(&i).await };
            let opened = open_reader(&this.cluster.readers, next, retry, now, connect).await;
            if let Some(conn) = opened {
                self.cancel.set_target(1, cancel_target(&conn));
                self.reader = Some(Backend::new(conn));
            }
        }
        let Some(reader) = self.reader.as_mut() else {
            return Ok(false);
        };
        if reader.applied_sets < self.sets.len() {
            let sql = self.sets[reader.applied_sets..].join(";\n");
            match reader.run_silently(&sql, &mut self.scratch).await {
                Ok(None) => reader.applied_sets = self.sets.len(),
                Ok(Some(message)) => {
                    tracing::info!(%message, "session settings do not replay on the reader; staying on the writer");
                    self.pin();
                    return Ok(false);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "reader failed while replaying session settings");
                    self.drop_reader(true);
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    fn pin(&mut self) {
        self.view.pinned_to_writer = true;
        self.drop_reader(false);
    }

    fn drop_reader(&mut self, failed: bool) {
        if let Some(reader) = self.reader.take()
            && failed
        {
            let retry = self.ctx.config().raw.server.backend_retry;
            reader.conn.instance.load.mark_down(Instant::now(), retry);
        }
        self.cancel.set_target(1, None);
    }
}

/// Waits for bytes from `writer`; forever when there is none to watch.
async fn writer_bytes(writer: Option<&mut Backend>) -> Result<&mut Backend, SessionError> {
    match writer {
        Some(w) => w.fill().await.map(|()| w),
        None => std::future::pending().await,
    }
}

fn cancel_target(conn: &BackendConn) -> Option<CancelTarget> {
    conn.key.map(|key| CancelTarget {
        host: conn.instance.host.clone(),
        port: conn.instance.port,
        key,
    })
}
