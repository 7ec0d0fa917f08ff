//! One MySQL client connection: open the writer connection as far as its greeting, greet
//! the client with it (see `greeted.rs`), authenticate, log in on the writer, then route
//! each command — COM_QUERY by the SQL classifier, prepared statements by what they
//! prepared — to the writer or a reader, and relay the answer. Session mode, as for
//! PostgreSQL.

mod auth;
mod backend;
mod begin;
mod compressed;
mod failover;
mod greeted;
mod kill;
mod prepared;
mod read_back;
mod replay;
mod reset;
mod side;
mod startup;
mod statements;

use prepared::Run;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use tokio::net::TcpStream;

use super::flow::{Pin, Start, Why};
use super::migration::Refusal;
use super::{Context, cold};
use crate::backend::Credentials;
use crate::config::PoolMode;
use crate::metrics;
use crate::protocol::mysql::command::{self, Command};
use crate::protocol::mysql::constants::command::{COM_QUERY, COM_STMT_PREPARE};
use crate::protocol::mysql::constants::{
    ER_NET_PACKET_TOO_LARGE, ER_NET_PACKETS_OUT_OF_ORDER, ER_UNKNOWN_COM_ERROR, StatusFlags,
};
use crate::protocol::mysql::messages::{self, OkPacket};
use crate::protocol::mysql::packet::{self, HEADER_LEN};
use crate::router::{self, Target};
use crate::shutdown::Shutdown;
use crate::sql::{self, Class, Dialect, Statement};
use backend::Backend;
pub use greeted::Greetings;
pub use kill::KillRegistry;
use replay::Replay;
use side::Side;
pub use side::{Mysql, SessionError};
use statements::Statements;

/// Serves one MySQL client connection until it ends.
pub async fn run(tcp: TcpStream, ctx: Arc<Context>, shutdown: Shutdown) {
    if let Err(e) = serve(tcp, &ctx, shutdown).await {
        e.report();
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
        let error = Session::refused(Why::NoActiveCluster { name: active });
        return Err(startup::refuse(tcp, error).await);
    };
    // The client is greeted with what its writer said: by the writer connection opened for
    // it, or, in transaction mode, by the proxy (see `greeted`).
    // While the proxy knows no greeting of the writer yet, one session at a time opens a
    // writer connection for it (`fetching`, held until its client is logged in on it: the
    // sessions waiting for the greeting would otherwise log in to the server first, through
    // the pool, and may take an account's last connection slots, `MAX_USER_CONNECTIONS`,
    // before this login, which the server would then refuse).
    let (own, fetching) = match greeted::greets_itself(&ctx.config().raw) {
        true => match ctx.mysql_greetings.own_or_fetch(&cluster.writer.addr).await {
            Ok(greeting) => (Some(greeting), None),
            Err(fetching) => (None, Some(fetching)),
        },
        false => (None, None),
    };
    let (cluster, greeter) = match own {
        Some(greeting) => (cluster, Greeter::Proxy(greeting)),
        None => match greeted::open_writer(ctx, cluster, &mut shutdown).await {
            Ok((cluster, greeted)) => (cluster, Greeter::Writer(Box::new(greeted))),
            Err(error) => return Err(startup::refuse(tcp, error).await),
        },
    };
    let (greeting, greeted_by) = match &greeter {
        Greeter::Writer(greeted) => (&greeted.greeting, greeted.instance().addr.clone()),
        Greeter::Proxy(greeting) => (greeting, cluster.writer.addr.clone()),
    };
    let connection_id = greeting.connection_id;
    let deadline = Instant::now() + ctx.config().raw.server.auth_timeout;
    let auth = match startup::handshake(tcp, ctx, greeting, deadline).await {
        Ok(auth) => auth,
        Err(e) => {
            if let Greeter::Writer(greeted) = greeter {
                greeted::settle(ctx, &cluster, *greeted).await;
            }
            return Err(e);
        }
    };
    let greeted = match greeter {
        Greeter::Writer(greeted) => Some(*greeted),
        Greeter::Proxy(_) => None,
    };
    let read_your_writes = startup::read_your_writes(ctx, &auth.user, &auth.login);
    let creds = Credentials {
        user: auth.user.backend_user.clone(),
        password: auth.user.backend_password.clone(),
        salted: Arc::clone(&ctx.salted),
        pass_through: auth.pass_through,
    };
    let database = auth.login.database.as_deref().map(String::from_utf8_lossy);
    let database = database.map(|d| d.into_owned());
    let mode = ctx.pool_mode(&auth.user.name, database.as_deref());
    let kill = ctx.mysql_kills.register(
        &greeted_by,
        connection_id,
        &creds.user,
        mode == PoolMode::Transaction,
    );
    let start = Start {
        ctx: Arc::clone(ctx),
        cluster,
        creds,
        login: auth.login,
        mode,
        database,
        read_your_writes,
        pinned: false,
        shutdown,
    };
    let side = Side {
        client: auth.client,
        statements: Statements::default(),
        status: StatusFlags::SERVER_STATUS_AUTOCOMMIT,
        scramble: auth.scramble,
        scratch: BytesMut::new(),
        kill,
        greeted_writer: false,
        logged_in: false,
        unreplayed: Some(Vec::new()),
        begin_deferred: false,
    };
    let mut session = Session::new(start, side);
    let _connected = metrics::client_connected();
    let started = session.start(auth.ok_seq, greeted).await;
    drop(fetching);
    let result = match started {
        Ok(()) => {
            session.note_writer();
            session.side.logged_in = true;
            // In transaction mode an idle client holds no connection.
            session.release_idle();
            session.serve().await
        }
        Err(e) => Err(e),
    };
    if let Err(e) = &result
        && let Some((code, message)) = e.client_message()
    {
        session
            .side
            .client
            .send_error(session.next_seq(), code, &message)
            .await;
    }
    result
}

type Session = super::flow::Session<Mysql>;

/// Who greets a new client: the writer connection opened for it, or the proxy.
enum Greeter {
    Writer(Box<crate::backend::mysql::Greeted>),
    Proxy(crate::protocol::mysql::handshake::ServerGreeting),
}

/// Transaction mode: how many more commands a session keeps its writer connection after
/// one that gave an AUTO_INCREMENT value.
const KEEP_AFTER_INSERT_ID: u8 = 5;

impl Session {
    /// Sequence id for an error sent when the session ends: after what was relayed of the
    /// current command's answer, else 1 (2 during the login).
    fn next_seq(&self) -> u8 {
        match self.side.client.last_seq {
            Some(seq) => seq.wrapping_add(1),
            None if self.side.logged_in => 1,
            None => 2,
        }
    }

    /// Records the writer connection for `KILL`, as the one running the session's statement.
    fn note_writer(&mut self) {
        if let Some(writer) = &self.writer {
            let user = &self.creds.user;
            self.side
                .kill
                .running(Target::Writer, &writer.conn, &self.cluster, user);
        }
    }

    async fn serve(&mut self) -> Result<(), SessionError> {
        let max = self.ctx.config().raw.server.max_message_bytes;
        loop {
            let logical = packet::logical(&self.side.client.buf, max).map_err(|e| match e {
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
            let whole = self.side.client.buf.split_to(end).freeze();
            let joined: Vec<u8>;
            let payload: &[u8] = if logical.is_split() {
                joined = packet::payload_chunks(&whole).flatten().copied().collect();
                &joined
            } else {
                &whole[HEADER_LEN..]
            };
            if !self.command(&whole, payload).await? {
                self.release_backends();
                return Ok(());
            }
        }
    }

    /// Waits for the client's next bytes. A drain (SIGTERM) ends the session here, but only
    /// between transactions: one in progress is let finish.
    async fn idle(&mut self) -> Result<(), SessionError> {
        let between_transactions = self.view.in_transaction.is_none() && !self.side.begin_deferred;
        // `biased`: polled in order, with no random start drawn per wake-up (every
        // statement passes here); each branch is rarely ready but the client's read.
        let result = tokio::select! {
            biased;
            () = &mut self.drain, if between_transactions => Err(SessionError::Shutdown),
            _ = self.side.kill.kill.ended() => Err(SessionError::Killed),
            read = self.side.client.fill() => match read {
                Ok(0) => Err(SessionError::ClientGone),
                Ok(_) => Ok(()),
                Err(e) => Err(SessionError::ClientIo(e)),
            },
        };
        if let Err(SessionError::ClientGone | SessionError::Shutdown) = &result {
            // Between commands: nothing is in flight on the backend connections.
            self.release_backends();
        }
        result
    }

    /// Runs one client command (`packet`: its bytes as received; `payload`: the command);
    /// `false` once the client quit.
    async fn command(&mut self, packet: &[u8], payload: &[u8]) -> Result<bool, SessionError> {
        self.side.client.last_seq = None;
        let cmd = match command::parse_command(payload) {
            Ok(c) => c,
            Err(e) => return Err(SessionError::ClientProtocol(e.to_string())),
        };
        // Transaction mode: a BEGIN answered here runs before the transaction's first
        // command (see `begin`); a command without an answer, or answered here, starts
        // nothing.
        let starts = !matches!(
            cmd,
            Command::Quit | Command::Ping | Command::StmtClose { .. }
        );
        if self.side.begin_deferred && starts && !self.begin_now().await? {
            return Ok(true);
        }
        if self.between_transactions()
            && !matches!(cmd, Command::Quit | Command::Ping)
            && self.moved()
        {
            self.follow_active().await?;
        }
        if !self.nothing_before(&cmd) && !cold(self.before_command(&cmd)).await? {
            return Ok(true);
        }
        // Long data belongs to the statement's next execute, on the same connection.
        let release = !matches!(cmd, Command::StmtSendLongData { .. });
        if !self.run_command(cmd, packet, payload).await? {
            return Ok(false);
        }
        if release {
            // Pins whose state the command gave back let go, between transactions.
            self.track_holds(Vec::new(), false);
            if self.pinned_by(Pin::Unreplayable) {
                cold(self.settle_unreplayed()).await?;
            }
            self.release_idle();
        }
        Ok(true)
    }

    /// Runs one client command; `false` once the client quit.
    async fn run_command(
        &mut self,
        cmd: Command<'_>,
        packet: &[u8],
        payload: &[u8],
    ) -> Result<bool, SessionError> {
        match cmd {
            Command::Quit => return Ok(false),
            Command::Ping => cold(self.reply_ok()).await?,
            Command::Query { sql } => {
                let mut stmt = classify(sql);
                if self.defers_begin(sql, &stmt) {
                    self.defer_begin().await?;
                    return Ok(true);
                }
                // `START TRANSACTION READ WRITE` overrides read-only mode's session default:
                // the gate refuses it as a write there.
                stmt.functions.writes |= matches!(stmt.class, Class::Begin { .. })
                    && sql::says_read_write(sql, Dialect::MySql);
                let own = self.own_identity(&stmt, COM_QUERY, sql);
                let (packet, sql) = match &own {
                    Some((sql, packet)) => (&packet[..], &sql[..]),
                    None => (packet, sql),
                };
                // Only a lone statement the classifier calls a write can be a KILL.
                if stmt.class == Class::Write
                    && stmt.count == 1
                    && let Some(kill) = kill::Kill::parse(sql)
                    && cold(self.kill(kill)).await?
                {
                    return Ok(true);
                }
                let record = Replay::Query(sql.to_vec());
                let failed = self.routed(packet, stmt, Some(record)).await?;
                self.note_holds(sql, &stmt, failed);
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
                cold(self.routed(packet, read_statement(), None)).await?;
            }
            Command::Statistics => {
                cold(self.run_packet(Target::Writer, packet, None)).await?;
            }
            Command::ResetConnection => cold(self.reset_connection(packet)).await?,
            Command::StmtPrepare { sql } => {
                let own = self.own_identity(&classify(sql), COM_STMT_PREPARE, sql);
                match &own {
                    Some((sql, packet)) => self.prepare(packet, sql).await?,
                    None => self.prepare(packet, sql).await?,
                }
            }
            Command::StmtExecute { statement_id, .. } => {
                self.execute(payload, statement_id, Run::Execute).await?
            }
            Command::StmtBulkExecute { statement_id } => {
                self.execute(payload, statement_id, Run::Bulk).await?
            }
            Command::StmtSendLongData { statement_id, .. } => {
                cold(self.send_long_data(payload, statement_id)).await?
            }
            Command::StmtClose { statement_id } => self.close_statement(statement_id),
            Command::StmtReset { statement_id } | Command::StmtFetch { statement_id, .. } => {
                cold(self.statement_follow_up(payload, statement_id)).await?
            }
            Command::ChangeUser { body } => return cold(self.change_user(body)).await,
            Command::Other { .. } => {
                let name = payload.first().copied().unwrap_or(0);
                let message = format!("command {name:#04x} is not supported through switchyard");
                let client = &mut self.side.client;
                cold(client.send_error(1, ER_UNKNOWN_COM_ERROR, &message)).await;
            }
        }
        Ok(true)
    }

    /// In transaction mode, the text `sql` of a `command` (COM_QUERY, COM_STMT_PREPARE) with
    /// its `CONNECTION_ID()` calls replaced by the client's own connection id, and the
    /// command's packet with it: the server connection that runs it is not the client's
    /// (see `sql::rewrite_identity`). `None` for any other statement, which is relayed as it
    /// came.
    fn own_identity(
        &self,
        stmt: &Statement,
        command: u8,
        sql: &[u8],
    ) -> Option<(Vec<u8>, BytesMut)> {
        if !stmt.functions.identity || !self.pooled() {
            return None;
        }
        let sql = sql::rewrite_identity(sql, Dialect::MySql, self.side.kill.id())?;
        let mut packet = BytesMut::new();
        command::write_text_command(&mut packet, command, &sql);
        Some((sql, packet))
    }

    async fn reply_ok(&mut self) -> Result<(), SessionError> {
        let mut out = BytesMut::new();
        let ok = OkPacket {
            status: self.side.status,
            ..OkPacket::default()
        };
        messages::ok_packet(&mut out, 1, &ok, false);
        self.side
            .client
            .write_all(&out)
            .await
            .map_err(SessionError::ClientIo)
    }

    /// Routes a text command by its class, records session state, runs it and relays;
    /// whether it failed (an error reached the client).
    async fn routed(
        &mut self,
        payload: &[u8],
        stmt: Statement,
        record: Option<Replay>,
    ) -> Result<bool, SessionError> {
        let target = match self.chosen(&stmt) {
            Some(target) => target,
            None => self.place_reader().await?,
        };
        if target == Target::Writer && self.between_transactions() && !self.gate(&stmt).await? {
            return Ok(true);
        }
        // Recorded once it ran without error (a failed one changed nothing, unless it is
        // one of several).
        let sets = self.record_effect(&stmt, || record);
        let result = self.run_with_retry(target, payload).await;
        self.note_write(target, &stmt);
        if let (Some(Replay::Query(sql)), Ok(true), true) = (&sets, &result, stmt.count > 1) {
            // Several SETs, one of which failed: those before it took effect, the rest did
            // not. Pinned until what they left is read back (`read_back`).
            self.note_unreplayed(sql::mysql_settings(sql));
            self.pin(Pin::Unreplayable);
        }
        if let Ok(failed) = result {
            self.record_ran(sets, failed);
        }
        result
    }

    /// What the SQL `sql` (classified as `stmt`), which ran and `failed` or not, did to the
    /// state that pins the session (read only while something pins it: a statement that
    /// gives state back need not pin itself, a `DROP TABLE` of a temporary table).
    fn note_holds(&mut self, sql: &[u8], stmt: &Statement, failed: bool) {
        if self.pooled() && stmt.class == Class::Write && calculates_found_rows(sql) {
            // `FOUND_ROWS()` reads this on the same connection: keep it for one more.
            self.keep_writer = self.keep_writer.max(1);
        }
        if self.pinned_by(Pin::Statement) {
            let pins = stmt.class == Class::Pin;
            let changes = sql::hold::changes(sql, Dialect::MySql, pins);
            self.holds.apply(changes, failed);
        }
    }

    /// After `stmt` ran on `target` (see `Session::ran`).
    fn note_write(&mut self, target: Target, stmt: &Statement) {
        self.ran(stmt, target, router::may_write(stmt));
    }

    /// Runs a command on `target`. A read whose reader fails before anything reached the
    /// client runs again on the writer, so a replica that dies costs the client nothing.
    /// Whether the command failed (an ERR reached the client).
    async fn run_with_retry(
        &mut self,
        target: Target,
        packet: &[u8],
    ) -> Result<bool, SessionError> {
        let before = self.side.client.written;
        let idle = self.view.in_transaction.is_none();
        match self.run_packet(target, packet, None).await {
            Err(e)
                if target == Target::Reader
                    && e.backend_failed()
                    && self.side.kill.kill.killed() =>
            {
                Err(cold(self.reader_killed()).await)
            }
            Err(e)
                if target == Target::Reader
                    && idle
                    && e.backend_failed()
                    && self.side.client.written == before =>
            {
                let retry = cold(self.retry_target(&e)).await?;
                cold(self.run_packet(retry, packet, None))
                    .await
                    .map(|r| r.failed)
            }
            other => other.map(|r| r.failed),
        }
    }

    /// Where a statement runs now, when that is known without waiting (see
    /// `Session::placed`); `None`: a reader is to be made ready (`Session::place_reader`).
    fn chosen(&mut self, stmt: &Statement) -> Option<Target> {
        let (target, _) = self.route(stmt);
        self.placed(target)
    }

    /// The migration gate (`session::migration`) for a command that starts a transaction
    /// on the writer; `false` when it was answered here with the gate's error.
    async fn gate(&mut self, stmt: &Statement) -> Result<bool, SessionError> {
        match self.migration_gate(crate::sql::writes(stmt)).await? {
            None => Ok(true),
            refusal => Ok(cold(self.answered(refusal)).await),
        }
    }

    /// Sends the client the error of `refusal`, if any; `true` when there was none.
    async fn answered(&mut self, refusal: Option<Refusal<Mysql>>) -> bool {
        let Some(Refusal { code, message }) = refusal else {
            return true;
        };
        self.side.client.send_error(1, code, &message).await;
        false
    }

    /// No transaction is open on the writer (with autocommit off, the next statement
    /// opens one): where the migration gate applies and a session may move.
    fn between_transactions(&self) -> bool {
        !self
            .side
            .status
            .contains(StatusFlags::SERVER_STATUS_IN_TRANS)
    }

    fn held(&mut self, target: Target) -> Result<&mut Backend, SessionError> {
        let b = match target {
            Target::Writer => self.writer.as_mut(),
            Target::Reader => self.reader.as_mut(),
        };
        b.ok_or(SessionError::ClientGone)
    }

    /// Sends a whole command packet to `target` (the client's unchanged, or one the proxy
    /// made) and relays the answer to the client; `proxy_id` rewrites a prepare-OK's
    /// statement id.
    async fn run_packet(
        &mut self,
        target: Target,
        packet_bytes: &[u8],
        proxy_id: Option<u32>,
    ) -> Result<backend::Relayed, SessionError> {
        if target == Target::Writer && self.writer.is_none() {
            // Transaction mode between statements: a command that needs the writer (one
            // the gate did not see: statistics, a reset, a statement unknown to the proxy)
            // takes a connection first.
            if !cold(self.gate(&read_statement())).await? {
                return Ok(backend::Relayed {
                    failed: true,
                    ..backend::Relayed::default()
                });
            }
        }
        let command = packet_bytes.get(HEADER_LEN).copied().unwrap_or(0);
        let started = Instant::now();
        let written = self.side.client.written;
        let mut rewrite = BytesMut::new();
        let Session {
            side: Side { client, kill, .. },
            writer,
            reader,
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
                return cold(self.writer_failed(e, written)).await;
            }
            Err(SessionError::ClientGone) => return Err(cold(self.client_left(target)).await),
            other => other?,
        };
        let autocommitted = relayed.status.is_some_and(|s| {
            s.contains(StatusFlags::SERVER_STATUS_AUTOCOMMIT)
                && !s.contains(StatusFlags::SERVER_STATUS_IN_TRANS)
        });
        if relayed.insert_id && autocommitted && target == Target::Writer && !self.kept_writer {
            // `LAST_INSERT_ID()` after an autocommitted insert reads it on this connection:
            // keep it a while (transaction mode), as ProxySQL's
            // `auto_increment_delay_multiplex` does — but not again while kept, so the
            // connection goes back even to a client inserting in a loop. (In a transaction
            // the client holds its connection until COMMIT anyway.)
            self.keep_writer = KEEP_AFTER_INSERT_ID;
        }
        backend.conn.metrics.queries.increment(1);
        backend
            .conn
            .metrics
            .duration
            .record(started.elapsed().as_secs_f64());
        if let Some(status) = relayed.status {
            self.side.status = status;
            let open = status.contains(StatusFlags::SERVER_STATUS_IN_TRANS)
                || !status.contains(StatusFlags::SERVER_STATUS_AUTOCOMMIT);
            self.view.in_transaction = open.then_some(target);
            if !status.contains(StatusFlags::SERVER_STATUS_IN_TRANS) {
                self.admission = None;
            }
        }
        Ok(relayed)
    }
}

/// Whether `sql` has `SQL_CALC_FOUND_ROWS` (anywhere: a false match only keeps a connection
/// for one more command).
fn calculates_found_rows(sql: &[u8]) -> bool {
    const WORD: &[u8] = b"sql_calc_found_rows";
    sql.windows(WORD.len())
        .any(|w| w.eq_ignore_ascii_case(WORD))
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
