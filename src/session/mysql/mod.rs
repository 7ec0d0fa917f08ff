//! One MySQL client connection: open the writer connection as far as its greeting, greet
//! the client with it (see `greeted.rs`), authenticate, log in on the writer, then route
//! each command — COM_QUERY by the SQL classifier, prepared statements by what they
//! prepared — to the writer or a reader, and relay the answer. Session mode, as for
//! PostgreSQL.

mod auth;
mod backend;
mod compressed;
mod error;
mod failover;
mod greeted;
mod kill;
mod migration;
mod prepared;
mod replay;
mod reset;
mod startup;
mod statements;

use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use tokio::net::TcpStream;

use super::{Context, Leave, ReaderSpread, open_reader};
use crate::backend::Credentials;
use crate::backend::mysql::{self as connector, ConnectError, Login};
use crate::catalog::SessionFunctions;
use crate::cutover::Admission;
use crate::metrics;
use crate::protocol::mysql::command::{self, Command};
use crate::protocol::mysql::constants::{
    ER_HANDSHAKE_ERROR, ER_NET_PACKET_TOO_LARGE, ER_NET_PACKETS_OUT_OF_ORDER, ER_UNKNOWN_COM_ERROR,
    StatusFlags,
};
use crate::protocol::mysql::messages::{self, OkPacket};
use crate::protocol::mysql::packet::{self, HEADER_LEN};
use crate::router::{self, Effect, ReadYourWrites, SessionView, Settings, Target};
use crate::shutdown::Shutdown;
use crate::sql::{self, Class, Dialect, Statement};
use crate::topology::{Cluster, Instance};
use backend::Backend;
pub use error::SessionError;
pub use kill::KillRegistry;
use replay::{Replay, replay};
use startup::Client;
use statements::Statements;

/// A session replays at most this many session-state commands on a reader.
const MAX_REPLAYS: usize = 256;

/// Serves one MySQL client connection until it ends.
pub async fn run(tcp: TcpStream, ctx: Arc<Context>, shutdown: Shutdown) {
    if let Err(e) = serve(tcp, &ctx, shutdown).await {
        let normal = matches!(
            e,
            SessionError::ClientGone | SessionError::Shutdown | SessionError::Killed
        );
        super::report_end(e.kind(), normal, &e);
    }
}

async fn serve(
    tcp: TcpStream,
    ctx: &Arc<Context>,
    mut shutdown: Shutdown,
) -> Result<(), SessionError> {
    let topology = ctx.topology.load();
    let routing = ctx.routing.load();
    let active = &routing.active;
    let Some(cluster) = topology.clusters.get(active).cloned() else {
        let error = SessionError::Refused {
            code: ER_HANDSHAKE_ERROR,
            message: format!("active cluster {active:?} is not in the topology"),
        };
        return Err(startup::refuse(tcp, error).await);
    };
    // The writer connection comes first: the client is greeted with what its writer said.
    let (cluster, greeted) = match greeted::open_writer(ctx, cluster, &mut shutdown).await {
        Ok(opened) => opened,
        Err(error) => return Err(startup::refuse(tcp, error).await),
    };
    let deadline = Instant::now() + ctx.config().raw.server.auth_timeout;
    let auth = match startup::handshake(tcp, ctx, &greeted.greeting, deadline).await {
        Ok(auth) => auth,
        Err(e) => {
            greeted::settle(ctx, &cluster, greeted).await;
            return Err(e);
        }
    };
    let read_your_writes = startup::read_your_writes(ctx, &auth.user, &auth.login);
    let creds = Credentials {
        user: auth.user.backend_user.clone(),
        password: auth.user.backend_password.clone(),
        salted: Arc::clone(&ctx.salted),
        pass_through: auth.pass_through,
    };
    let database = auth.login.database.as_deref().map(String::from_utf8_lossy);
    let functions = ctx.functions(&creds, database.map(|d| d.into_owned()), &shutdown);
    let kill = ctx
        .mysql_kills
        .register(&greeted.instance().addr, greeted.greeting.connection_id);
    let mut session = Session {
        ctx: Arc::clone(ctx),
        cluster,
        client: auth.client,
        creds,
        functions,
        login: auth.login,
        writer: None,
        reader: None,
        statements: Statements::default(),
        replays: Vec::new(),
        view: SessionView {
            in_transaction: None,
            pinned_to_writer: false,
            wrote_recently: false,
        },
        read_your_writes,
        writes_until: None,
        admission: None,
        spread: ReaderSpread::new(),
        status: StatusFlags::SERVER_STATUS_AUTOCOMMIT,
        scramble: auth.scramble,
        scratch: BytesMut::new(),
        kill,
        shutdown,
    };
    let _connected = metrics::client_connected();
    let result = match session.start(auth.ok_seq, Some(greeted)).await {
        Ok(()) => {
            session.note_writer();
            session.serve().await
        }
        Err(e) => Err(e),
    };
    if let Err(e) = &result
        && let Some((code, message)) = e.client_message()
    {
        session
            .client
            .send_error(session.next_seq(), code, &message)
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
    login: Login,
    writer: Option<Backend>,
    reader: Option<Backend>,
    statements: Statements,
    replays: Vec<Replay>,
    view: SessionView,
    /// What this session's route says its reads see after its writes.
    read_your_writes: ReadYourWrites,
    /// Reads stay on the writer until then, after this session wrote (read-your-writes).
    writes_until: Option<Instant>,
    /// Held while this session has work on the writer (a cutover's drain waits for it).
    admission: Option<Admission>,
    /// When this session last looked at whether its reader should change.
    spread: ReaderSpread,
    /// The status flags of the last response, for the proxy's own OK packets.
    status: StatusFlags,
    /// The greeting's scramble, which COM_CHANGE_USER answers.
    scramble: [u8; 20],
    scratch: BytesMut,
    /// Where a `KILL` naming this session's connection id reaches its statement.
    kill: kill::Registration,
    shutdown: Shutdown,
}

impl Session {
    /// Sequence id for an error sent when the session ends (after a command: 1).
    fn next_seq(&self) -> u8 {
        if self.writer.is_some() { 1 } else { 2 }
    }

    /// Records the writer connection for `KILL`, as the one running the session's statement.
    fn note_writer(&mut self) {
        if let Some(writer) = &self.writer {
            let user = &self.creds.user;
            self.kill
                .running(Target::Writer, &writer.conn, &self.cluster, user);
        }
    }

    async fn connect(
        &self,
        instance: &Arc<Instance>,
    ) -> Result<crate::backend::mysql::MysqlConn, ConnectError> {
        let timeout = self.ctx.config().raw.server.connect_timeout;
        connector::connect(&self.cluster, instance, &self.login, &self.creds, timeout).await
    }

    async fn serve(&mut self) -> Result<(), SessionError> {
        let max = self.ctx.config().raw.server.max_message_bytes;
        loop {
            let logical = packet::logical(&self.client.buf, max).map_err(|e| match e {
                packet::FrameError::TooLarge { .. } => SessionError::Refused {
                    code: ER_NET_PACKET_TOO_LARGE,
                    message: "Got a packet bigger than 'max_allowed_packet' bytes (switchyard max_message_bytes)".into(),
                },
                other => SessionError::ClientProtocol(other.to_string()),
            })?;
            let Some(logical) = logical else {
                self.idle().await?;
                continue;
            };
            let end = logical.total;
            if logical.first_seq != 0 {
                return Err(SessionError::Refused {
                    code: ER_NET_PACKETS_OUT_OF_ORDER,
                    message: "Got packets out of order".into(),
                });
            }
            // The command leaves the buffer without a copy; one of 16 MiB or more is joined.
            let whole = self.client.buf.split_to(end).freeze();
            let joined: Vec<u8>;
            let payload: &[u8] = if logical.is_split() {
                joined = packet::payload_chunks(&whole).flatten().copied().collect();
                &joined
            } else {
                &whole[HEADER_LEN..]
            };
            if !self.command(&whole, payload).await? {
                return Ok(());
            }
        }
    }

    /// Waits for the client's next bytes. A drain (SIGTERM) ends the session here, but only
    /// between transactions: one in progress is let finish.
    async fn idle(&mut self) -> Result<(), SessionError> {
        let between_transactions = self.view.in_transaction.is_none();
        tokio::select! {
            _ = self.shutdown.recv(), if between_transactions => Err(SessionError::Shutdown),
            _ = self.kill.kill.ended() => Err(SessionError::Killed),
            read = self.client.fill() => match read {
                Ok(0) => Err(SessionError::ClientGone),
                Ok(_) => Ok(()),
                Err(e) => Err(SessionError::ClientIo(e)),
            },
        }
    }

    /// Runs one client command (`packet`: its bytes as received; `payload`: the command);
    /// `false` once the client quit.
    async fn command(&mut self, packet: &[u8], payload: &[u8]) -> Result<bool, SessionError> {
        let cmd = match command::parse_command(payload) {
            Ok(c) => c,
            Err(e) => return Err(SessionError::ClientProtocol(e.to_string())),
        };
        if self.between_transactions() && !matches!(cmd, Command::Quit | Command::Ping) {
            self.follow_active().await?;
        }
        if !self.before_command(&cmd).await? {
            return Ok(true);
        }
        match cmd {
            Command::Quit => return Ok(false),
            Command::Ping => self.reply_ok().await?,
            Command::Query { sql } => {
                let stmt = classify(sql);
                // Only a lone statement the classifier calls a write can be a KILL.
                if stmt.class == Class::Write
                    && stmt.count == 1
                    && let Some(kill) = kill::Kill::parse(sql)
                    && self.kill(kill).await?
                {
                    return Ok(true);
                }
                let record = Replay::Query(sql.to_vec());
                self.routed(packet, stmt, Some(record)).await?;
            }
            Command::InitDb { schema } => {
                let stmt = session_set();
                let record = Replay::InitDb(schema.to_vec());
                self.routed(packet, stmt, Some(record)).await?;
            }
            Command::SetOption { option } => {
                self.routed(packet, session_set(), Some(Replay::SetOption(option)))
                    .await?;
            }
            Command::FieldList { .. } => {
                self.routed(packet, read_statement(), None).await?;
            }
            Command::Statistics => {
                self.run_on(Target::Writer, packet, None).await?;
            }
            Command::ResetConnection => self.reset_connection(packet).await?,
            Command::StmtPrepare { sql } => self.prepare(packet, sql).await?,
            Command::StmtExecute { statement_id, .. } => {
                self.execute(packet, payload, statement_id).await?
            }
            Command::StmtSendLongData { statement_id, .. } => {
                self.send_long_data(payload, statement_id).await?
            }
            Command::StmtClose { statement_id } => self.close_statement(statement_id).await?,
            Command::StmtReset { statement_id } | Command::StmtFetch { statement_id, .. } => {
                self.statement_follow_up(payload, statement_id).await?
            }
            Command::ChangeUser { body } => return self.change_user(body).await,
            Command::Other { .. } => {
                let name = payload.first().copied().unwrap_or(0);
                let message = format!("command {name:#04x} is not supported through switchyard");
                self.client
                    .send_error(1, ER_UNKNOWN_COM_ERROR, &message)
                    .await;
            }
        }
        Ok(true)
    }

    async fn reply_ok(&mut self) -> Result<(), SessionError> {
        let mut out = BytesMut::new();
        let ok = OkPacket {
            status: self.status,
            ..OkPacket::default()
        };
        messages::ok_packet(&mut out, 1, &ok, false);
        self.client
            .write_all(&out)
            .await
            .map_err(SessionError::ClientIo)
    }

    /// Routes a text command by its class, records session state, runs it and relays.
    async fn routed(
        &mut self,
        payload: &[u8],
        stmt: Statement,
        record: Option<Replay>,
    ) -> Result<(), SessionError> {
        let target = self.choose(&stmt).await?;
        if target == Target::Writer
            && self.between_transactions()
            && !self.migration_gate(&stmt).await?
        {
            return Ok(());
        }
        match router::effect(&stmt, self.view) {
            Effect::Record => match record {
                Some(r) if self.replays.len() < MAX_REPLAYS => self.replays.push(r),
                _ => self.pin(),
            },
            Effect::Pin => self.pin(),
            Effect::None => {}
        }
        let result = self.run_with_retry(target, payload).await;
        self.note_write(target, &stmt);
        result
    }

    /// Starts the read-your-writes window after a statement that may have written ran on
    /// the writer.
    fn note_write(&mut self, target: Target, stmt: &Statement) {
        let in_transaction = !self.between_transactions();
        self.functions.ran(stmt, in_transaction, &self.cluster.name);
        if target == Target::Writer && router::may_write(stmt) {
            let cluster = &self.cluster;
            self.writes_until = self
                .read_your_writes
                .writer_until(Instant::now(), || cluster.catch_up_window());
        }
    }

    /// Runs a command on `target`. A read whose reader fails before anything reached the
    /// client runs again on the writer, so a replica that dies costs the client nothing.
    async fn run_with_retry(&mut self, target: Target, packet: &[u8]) -> Result<(), SessionError> {
        let before = self.client.written;
        let idle = self.view.in_transaction.is_none();
        match self.run_on(target, packet, None).await {
            Err(e) if target == Target::Reader && e.backend_failed() && self.kill.kill.killed() => {
                Err(self.reader_killed().await)
            }
            Err(e)
                if target == Target::Reader
                    && idle
                    && e.backend_failed()
                    && self.client.written == before =>
            {
                metrics::read_retried(&self.cluster.name);
                self.drop_failed_reader();
                let retry = self.retry_target().await?;
                tracing::warn!(error = %e, retry_on = ?retry, "reader failed before answering; retrying");
                self.run_on(retry, packet, None).await.map(|_| ())
            }
            other => other.map(|_| ()),
        }
    }

    /// Where a read goes after its reader failed: another reader, else the writer.
    async fn retry_target(&mut self) -> Result<Target, SessionError> {
        Ok(if self.prepare_reader().await? {
            Target::Reader
        } else {
            Target::Writer
        })
    }

    /// Forgets a reader connection that failed and skips its instance for `backend_retry`.
    fn drop_failed_reader(&mut self) {
        if let Some(reader) = self.reader.take() {
            let retry = self.ctx.config().raw.server.backend_retry;
            reader.conn.instance.load.mark_down(Instant::now(), retry);
        }
        self.statements.forget_backend(Target::Reader);
    }

    /// Where a statement runs now, with a reader prepared when it is one.
    async fn choose(&mut self, stmt: &Statement) -> Result<Target, SessionError> {
        let settings = Settings {
            read_write_split: self.ctx.config().raw.routing.read_write_split,
        };
        self.view.wrote_recently = self.writes_until.is_some_and(|t| Instant::now() < t);
        let stmt = self.functions.resolve(stmt, &self.cluster);
        let target = router::route(&stmt, self.view, settings);
        self.ctx.topology.refresh(&mut self.cluster);
        if target == Target::Reader && self.cluster.readers.is_empty() {
            return Ok(Target::Writer);
        }
        if target == Target::Reader && !self.prepare_reader().await? {
            metrics::reader_fallback();
            return Ok(Target::Writer);
        }
        Ok(target)
    }

    fn backend(&mut self, target: Target) -> Result<&mut Backend, SessionError> {
        let b = match target {
            Target::Writer => self.writer.as_mut(),
            Target::Reader => self.reader.as_mut(),
        };
        b.ok_or(SessionError::ClientGone)
    }

    /// Sends the client's command packet to `target` unchanged and relays the answer;
    /// `proxy_id` rewrites a prepare-OK's statement id.
    async fn run_on(
        &mut self,
        target: Target,
        packet: &[u8],
        proxy_id: Option<u32>,
    ) -> Result<backend::Relayed, SessionError> {
        self.run_packet(target, packet, proxy_id).await
    }

    /// Sends a whole command packet to `target` and relays the answer to the client.
    async fn run_packet(
        &mut self,
        target: Target,
        packet_bytes: &[u8],
        proxy_id: Option<u32>,
    ) -> Result<backend::Relayed, SessionError> {
        let command = packet_bytes.get(HEADER_LEN).copied().unwrap_or(0);
        let started = Instant::now();
        let written = self.client.written;
        let mut rewrite = BytesMut::new();
        let Session {
            client,
            writer,
            reader,
            kill,
            cluster,
            creds,
            ..
        } = self;
        let backend = match target {
            Target::Writer => writer.as_mut(),
            Target::Reader => reader.as_mut(),
        }
        .ok_or(SessionError::ClientGone)?;
        kill.running(target, &backend.conn, cluster, &creds.user);
        let load = &backend.conn.instance.load;
        load.begin();
        let sent = backend.send(packet_bytes).await;
        let relayed = match sent {
            Ok(()) => backend.relay(client, command, proxy_id, &mut rewrite).await,
            Err(e) => Err(e),
        };
        backend.conn.instance.load.end();
        let relayed = match relayed {
            Err(e) if target == Target::Writer && e.backend_failed() => {
                return self.writer_failed(e, written).await;
            }
            other => other?,
        };
        backend.metrics.queries.increment(1);
        backend
            .metrics
            .duration
            .record(started.elapsed().as_secs_f64());
        if let Some(status) = relayed.status {
            self.status = status;
            let open = status.contains(StatusFlags::SERVER_STATUS_IN_TRANS)
                || !status.contains(StatusFlags::SERVER_STATUS_AUTOCOMMIT);
            self.view.in_transaction = open.then_some(target);
            if !status.contains(StatusFlags::SERVER_STATUS_IN_TRANS) {
                self.admission = None;
            }
        }
        Ok(relayed)
    }

    /// Opens a reader connection if needed and replays the session's state on it; `false`
    /// when no reader can be used now.
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
            self.reader = None;
            self.statements.forget_backend(Target::Reader);
        }
        if self.reader.is_none() {
            let retry = self.ctx.config().raw.server.backend_retry;
            let this = &*self;
            let connect = |i: Arc<Instance>| async move { this.connect(&i).await };
            let opened = open_reader(&this.cluster.readers, next, retry, now, connect).await;
            if let Some(conn) = opened {
                self.statements.forget_backend(Target::Reader);
                self.reader = Some(Backend::new(conn));
            }
        }
        let Some(reader) = self.reader.as_mut() else {
            return Ok(false);
        };
        match replay(reader, &self.replays).await {
            Ok(Ok(())) => {}
            Ok(Err(message)) => {
                tracing::info!(%message, "session settings do not replay on the reader; staying on the writer");
                self.pin();
                return Ok(false);
            }
            Err(e) => {
                tracing::warn!(error = %e, "reader failed while replaying session settings");
                let retry = self.ctx.config().raw.server.backend_retry;
                reader.conn.instance.load.mark_down(Instant::now(), retry);
                self.reader = None;
                self.statements.forget_backend(Target::Reader);
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn pin(&mut self) {
        self.view.pinned_to_writer = true;
        if self.reader.take().is_some() {
            self.statements.forget_backend(Target::Reader);
        }
    }
}

fn classify(sql: &[u8]) -> Statement {
    // Raw bytes in the connection's character set: the classifier reads only ASCII.
    sql::classify_bytes(sql, Dialect::MySql)
}

fn write_statement() -> Statement {
    Statement::of(Class::Write)
}

fn read_statement() -> Statement {
    Statement::of(Class::Read)
}

fn session_set() -> Statement {
    Statement::of(Class::SessionSet)
}
