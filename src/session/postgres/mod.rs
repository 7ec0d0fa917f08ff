//! One PostgreSQL client connection, from startup to Terminate: authenticate, open the writer
//! connection, then route each unit of work (a query or an extended-protocol batch) to the
//! writer or a reader and relay the answer. Session mode: the session owns one writer
//! connection and, once it reads, one reader connection.

mod auth;
mod backend;
mod begin;
mod cache;
pub mod cancel;
mod exchange;
mod failover;
mod quiet;
mod relay;
mod replan;
mod scan;
mod settings;
mod side;
mod signal;
mod startup;

use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use self::cancel::{Registration, SessionCancel};
use super::flow::{Pin, Start, Why};
use super::{Context, cold};
use crate::backend::Credentials;
use crate::backend::postgres::ConnectError;
use crate::metrics;
use crate::pool::CheckoutError;
use crate::protocol::postgres::frame;
use crate::protocol::postgres::messages::{self, Severity, tag};
use crate::router::{self, ReadYourWrites, Settings, Target};
use crate::shutdown::Shutdown;
use crate::sql::hold::{self, HoldChange};
use crate::sql::{Class, Dialect};
use backend::Backend;
use scan::{Ending, Scanner, Statements};
use side::Side;
pub use side::{Postgres, SessionError};
use startup::Outcome;

/// Serves one client connection until it ends.
pub async fn run(tcp: TcpStream, ctx: Arc<Context>, shutdown: Shutdown) {
    if let Err(e) = serve(tcp, &ctx, shutdown).await {
        e.report();
    }
}

async fn serve(tcp: TcpStream, ctx: &Arc<Context>, shutdown: Shutdown) -> Result<(), SessionError> {
    let deadline = Instant::now() + ctx.config().raw.server.auth_timeout;
    let (client, params, user, pass_through) =
        match cold(startup::handshake(tcp, ctx, deadline)).await? {
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
        .ok_or_else(|| Session::refused(Why::NoActiveCluster { name: active }))?;
    let read_your_writes =
        ReadYourWrites::for_session(&ctx.config().raw.routing, &user.name, params.database());
    let creds = Credentials {
        user: user.backend_user.clone(),
        password: user.backend_password.clone(),
        salted: Arc::clone(&ctx.salted),
        pass_through,
    };
    let start = Start {
        ctx: Arc::clone(ctx),
        cluster,
        creds,
        mode: ctx.pool_mode(&user.name, params.database()),
        database: params.database().map(str::to_owned),
        // A hot standby refuses every read of a serializable-by-default session.
        pinned: router::serializable_by_default(&params.params),
        login: params.params,
        read_your_writes,
        shutdown,
    };
    let side = Side {
        client,
        statements: Statements::default(),
        scanner: Scanner::new(ctx.config().raw.server.max_message_bytes),
        cancel: Arc::new(SessionCancel::default()),
        scratch: BytesMut::new(),
        loss_untold: false,
        took_in_transaction: false,
        set_in_transaction: Some(Vec::new()),
        unreplayed: Some(Vec::new()),
        status: b'I',
        begin_deferred: false,
    };
    let mut session = Session::new(start, side);
    let _connected = metrics::client_connected();
    // Lives as long as the session: the client's cancel key. Dropped last, once the client
    // connection is closed (a `pg_terminate_backend` with a timeout waits for that).
    let (result, _registration) = match cold(session.start()).await {
        Ok(registration) => (session.serve().await, Some(registration)),
        Err(e) => (Err(e), None),
    };
    if let Err(e) = &result
        && let Some((code, message)) = e.client_message()
    {
        session
            .side
            .client
            .send_error(Severity::Fatal, code, &message)
            .await;
    }
    drop(session);
    result
}

type Session = crate::session::flow::Session<Postgres>;

impl Session {
    /// Opens the writer connection and finishes the client's startup with its parameters.
    /// BackendKeyData carries, in session mode, the writer connection's own process id, so
    /// that `pg_backend_pid()`, the pid of a notification and `pg_terminate_backend` agree
    /// with what the client was told; in transaction mode, where that connection serves
    /// other clients too, a pid of the proxy's, which the client's `pg_backend_pid()` calls
    /// and its own notifications say instead (see `scan`, `backend`). The secret key is the
    /// proxy's, so that a CancelRequest works only through the proxy, which sends it to the
    /// connection running the client's statement (see `cancel`).
    ///
    /// Why not tell a pinned (LISTEN) client its pinned connection's pid: the key is given
    /// at startup, before any pin, and a pid shared by clients would make one client take
    /// another's notifications for its own. Renaming the pid of a notification raised by the
    /// client's own connection costs one comparison per notification.
    async fn start(&mut self) -> Result<Registration, SessionError> {
        let writer = match self.first_writer().await? {
            Ok(conn) => conn,
            Err(CheckoutError::Connect(ConnectError::Server {
                raw, code, message, ..
            })) => {
                // The database refused this login (no such database, bad password …): say so verbatim.
                tracing::info!(%code, %message, "writer refused the session");
                // The session ends right after, so a failed write changes nothing.
                let _ = self.side.client.stream.write_all(&raw).await;
                return Err(SessionError::ClientGone);
            }
            Err(e) => return Err(SessionError::Connect(e)),
        };
        // In transaction mode the writer is lent to other clients from now on: the client
        // gets a process id of its own, which its `pg_backend_pid()` answers (see `scan`).
        let pid = if self.pooled() {
            Some(self.ctx.cancels.own_pid())
        } else {
            writer.key.map(|k| k.pid)
        };
        let registration =
            self.ctx
                .cancels
                .register(Arc::clone(&self.side.cancel), pid, &self.creds.user);
        let (pid, secret) = registration.key();
        if self.pooled() {
            self.side.scanner.identity = Some(pid as u32);
        }
        let mut out = BytesMut::new();
        messages::authentication(&mut out, messages::auth::OK, &[]);
        for m in writer.parameter_status.iter().chain(writer.notices.iter()) {
            out.extend_from_slice(m);
        }
        messages::backend_key_data(&mut out, pid, secret);
        messages::ready_for_query(&mut out, b'I');
        self.side
            .client
            .stream
            .write_all(&out)
            .await
            .map_err(SessionError::ClientIo)?;
        let writer = self.take(writer).await?;
        self.set_backend(Target::Writer, Some(writer));
        // In transaction mode an idle client holds no connection.
        self.release_idle();
        Ok(registration)
    }

    async fn serve(&mut self) -> Result<(), SessionError> {
        loop {
            let unit = self
                .side
                .scanner
                .next_in(&mut self.side.client.buf, 0, &mut self.side.statements)
                .map_err(|e| SessionError::ClientProtocol(e.to_string()))?;
            let Some(unit) = unit else {
                self.idle().await?;
                continue;
            };
            match unit.first_tag {
                tag::TERMINATE => {
                    self.release_backends();
                    return Ok(());
                }
                tag::COPY_DATA | tag::COPY_DONE | tag::COPY_FAIL => {
                    // Outside COPY these are ignored, as PostgreSQL does.
                    self.side.client.buf.advance(unit.end);
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
        let between_transactions = self.view.in_transaction.is_none() && !self.side.begin_deferred;
        // Only a pinned session (LISTEN, …) expects messages from an idle writer; watching
        // every idle writer would cost a read() per statement.
        let pinned = self.view.pinned_to_writer;
        let client_pid = self.side.scanner.identity.map(|pid| pid as i32);
        if let Some(writer) = self.writer.as_mut() {
            writer.client_pid = client_pid;
        }
        let watched = self.writer.as_mut().filter(|_| pinned);
        // `biased`: polled in order, with no random start drawn per wake-up (every
        // statement passes here); each branch is rarely ready but the client's read.
        let result = tokio::select! {
            biased;
            () = &mut self.drain, if between_transactions => Err(SessionError::Shutdown),
            _ = self.side.cancel.terminating() => Err(SessionError::Killed),
            read = self.side.client.fill() => match read {
                Ok(0) => Err(SessionError::ClientGone),
                Ok(_) => Ok(()),
                Err(e) => Err(SessionError::ClientIo(e)),
            },
            filled = writer_bytes(watched) => match filled {
                Ok(w) => match w.relay(&mut self.side.client.stream).await {
                    Ok(seen) if seen.ended => Err(w.ended()),
                    Ok(_) => Ok(()),
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            }
        };
        if let Err(SessionError::ClientGone | SessionError::Shutdown) = &result {
            // Between units: nothing is in flight on the backend connections.
            self.release_backends();
        }
        if let Err(SessionError::Killed) = &result {
            // Another client ran `pg_terminate_backend` naming this one.
            return Err(cold(self.end_terminated()).await);
        }
        if let Err(SessionError::BackendLost { .. }) = &result {
            // The server ended the connection of this pinned session, or the writer died.
            cold(self.end_if_alone()).await?;
        }
        result
    }

    async fn execute(&mut self, unit: scan::Unit) -> Result<(), SessionError> {
        // Transaction mode: a plain BEGIN is answered here and starts on a server with the
        // transaction's first work (see `begin`).
        // Transaction mode: a batch of only Closes needs no server (see `closes_here`).
        if unit.first_tag == tag::CLOSE
            && self.closes_here(&unit)
            && let Some(closes) = scan::only_closes(&self.side.client.buf[..unit.end])
        {
            self.side.scanner.recycle(unit.refs);
            let status = if self.side.begin_deferred { b'T' } else { b'I' };
            return self.answer_closes(unit.end, closes, status).await;
        }
        if self.side.begin_deferred && !self.begin_now(&unit).await? {
            self.side.scanner.recycle(unit.refs);
            return Ok(());
        }
        if let Some(answer) = self.deferred_begin(&unit) {
            return self.defer_begin(unit, answer).await;
        }
        // `pg_cancel_backend()` / `pg_terminate_backend()` of a pooled client's own pid,
        // which no server knows.
        if let Some((batch, status)) = self.signal_call(&unit) {
            cold(self.answer_signal(&unit, batch, status)).await?;
            self.side.scanner.recycle(unit.refs);
            return Ok(());
        }
        // Between transactions, or in one that has not failed (a failed one refuses all but
        // its end, which the server says).
        let idle = self.view.in_transaction.is_none();
        if (idle || self.side.status == b'T') && unit.first_tag == tag::QUERY {
            let bytes = &self.side.client.buf[..unit.end];
            let sql = frame::message(bytes, usize::MAX).ok().flatten();
            let target = sql
                .and_then(|(_, body)| messages::query_text(body))
                .and_then(scan::deallocate);
            // A statement named in SQL `PREPARE` pins the session: those go to the server.
            if let Some(target) = target.filter(|_| !self.view.pinned_to_writer) {
                // The client's statement may live on connections other than the one this
                // SQL would reach (in a transaction too: Rails deallocates there): forget it
                // here and answer as the server does. Not transactional, as on a server.
                let known = self.side.statements.knows(&target);
                // An unknown name in a transaction fails it: the server says so (on the
                // transaction's connection, which lacks the name unless another client
                // prepared it there).
                if idle || known {
                    self.side.scanner.recycle(unit.refs);
                    let answer = match (&target, self.side.statements.deallocate(&target)) {
                        (scan::Deallocate::All, _) => Ok("DEALLOCATE ALL"),
                        (scan::Deallocate::Name(_), true) => Ok("DEALLOCATE"),
                        (scan::Deallocate::Name(name), false) => Err(format!(
                            "prepared statement \"{}\" does not exist",
                            String::from_utf8_lossy(name)
                        )),
                    };
                    let status = if idle { b'I' } else { b'T' };
                    return cold(self.answer_command(unit.end, answer, status)).await;
                }
            }
        }
        if self.view.in_transaction.is_none() {
            // A session that cannot follow a cutover ends at its next real work, whose
            // error the driver reports: a batch that only closes statements (whose answer
            // drivers ignore) is answered here first.
            if self.moved() {
                if self.view.pinned_to_writer {
                    let closes = scan::only_closes(&self.side.client.buf[..unit.end]);
                    if let Some(closes) = closes {
                        self.side.scanner.recycle(unit.refs);
                        return cold(self.answer_closes(unit.end, closes, b'I')).await;
                    }
                }
                self.follow_active().await?;
            }
        }
        let (mut target, stmt) = self.route(&unit.stmt);
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
        // A batch that only parses and describes changes no state yet; its Bind will. One
        // left open is the exception: what follows it (its Bind, Execute) runs within this
        // exchange, so its effect counts now.
        // A SET is recorded once it ran without error; a Query of several runs them in one
        // implicit transaction, so an error in any leaves none of them.
        let mut sets = None;
        if unit.first_tag == tag::QUERY || unit.executes || open_batch {
            self.note_set_in_transaction(&unit);
            self.note_unreplayed(&unit);
            sets = self.record_effect(&unit.stmt, || unit.simple_sql.as_deref().map(str::to_owned));
        }
        let target = match self.placed(target) {
            Some(placed) => placed,
            None => self.place_reader().await?,
        };
        let open = self.view.in_transaction == Some(Target::Writer);
        let admitted = match (target, self.view.in_transaction) {
            (Target::Writer, None) => self.gate(&unit).await?,
            (Target::Writer, Some(Target::Writer)) => {
                self.writer_alive() || cold(self.writer_in_transaction(&unit)).await?
            }
            _ => true,
        };
        if !admitted {
            self.side.scanner.recycle(unit.refs);
            return Ok(());
        }
        if self.side.cancel.terminated() {
            return Err(cold(self.end_terminated()).await);
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
                let retry = cold(self.retry_target(&error)).await?;
                let answer = cold(self.exchange(retry, &unit))
                    .await
                    .map_err(|f| f.error)?;
                (answer, retry)
            }
            Err(failed) if target == Target::Writer => {
                cold(self.writer_failed(&unit, failed, open)).await?;
                self.side.scanner.recycle(unit.refs);
                return Ok(());
            }
            Err(failed) => return Err(failed.error),
        };
        self.side.status = answer.status;
        self.record_ran(sets, answer.failed);
        if let Some(query) = answer.absorbed {
            // A Query after a batch left open ran with it (the transaction state is still
            // the one it started in): the state it changes counts.
            let sets = self.record_effect(&query.stmt, || {
                query.simple_sql.as_deref().map(str::to_owned)
            });
            self.record_ran(sets, answer.failed);
            let in_transaction = answer.status != b'I';
            self.functions
                .ran(&query.stmt, in_transaction, &self.cluster.name);
        }
        self.transaction((answer.status != b'I').then_some(ran_on));
        if answer.status == b'T' && ran_on == Target::Writer && self.admitted_read_only {
            cold(self.keep_read_only(&unit)).await?;
        }
        self.ran(&unit.stmt, ran_on, open_batch || router::may_write(&stmt));
        if self.pinned_by(Pin::Statement) {
            cold(self.note_holds(&unit, answer.status)).await?;
        }
        if answer.status == b'I' && self.pinned_by(Pin::SetInTransaction) {
            cold(self.settle_settings()).await?;
        }
        if answer.status == b'I' && self.pinned_by(Pin::Unreplayable) {
            cold(self.settle_unreplayed()).await?;
        }
        self.side.scanner.recycle(unit.refs);
        self.release_idle();
        Ok(())
    }

    /// In a transaction admitted while the cluster was read-only, a `SET TRANSACTION READ
    /// WRITE` (which a server takes before the transaction's first query) is undone at
    /// once: a transaction may always become read-only.
    async fn keep_read_only(&mut self, unit: &scan::Unit) -> Result<(), SessionError> {
        let read_write = unit.stmt.class == Class::Write && says_read_write(unit);
        let Some(writer) = self.writer.as_mut().filter(|_| read_write) else {
            return Ok(());
        };
        let sql = "SET TRANSACTION READ ONLY";
        if let Some(message) = writer.run_silently(sql, &mut self.side.scratch).await? {
            tracing::warn!(%message, "could not keep a transaction read-only");
        }
        Ok(())
    }

    /// What `unit`, answered with transaction status `status`, did to the state that pins
    /// the session to its writer connection. PostgreSQL's catalogs list that state, so
    /// after a unit that may have given some back, between transactions, the connection is
    /// asked, and the pin lets go when it holds none. State they do not show (what a
    /// statement the proxy does not follow did) keeps the pin.
    async fn note_holds(&mut self, unit: &scan::Unit, status: u8) -> Result<(), SessionError> {
        let changes = hold_changes(unit);
        let takes = changes.iter().any(|c| matches!(c, HoldChange::Take(..)));
        let gives = changes.iter().any(HoldChange::releases)
            || (unit.stmt.class == Class::Pin && !takes)
            || (unit.stmt.class == Class::End && self.side.took_in_transaction);
        self.side.took_in_transaction |= takes && status != b'I';
        self.holds.apply(changes, false);
        if status != b'I' || self.holds.untracked() || !gives {
            return Ok(());
        }
        self.side.took_in_transaction = false;
        let Some(writer) = self.writer.as_mut() else {
            return Ok(());
        };
        let (scratch, client) = (&mut self.side.scratch, &mut self.side.client.stream);
        if writer.count(HELD_STATE, scratch, client).await? == Some(0) {
            self.holds.confirmed_empty();
            self.track_holds(Vec::new(), false);
        }
        Ok(())
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
        self.side.cancel.set_active(slot);
        backend.client_pid = self.side.scanner.identity.map(|pid| pid as i32);
        let (settings, message_limit, max_prepared) = {
            let config = self.ctx.config_now(&mut self.config);
            let server = &config.raw.server;
            let settings = Settings {
                read_write_split: config.raw.routing.read_write_split,
            };
            (
                settings,
                server.max_message_bytes,
                server.max_prepared_statements,
            )
        };
        let open_on_reader = (target == Target::Reader && unit.ending == Ending::Open)
            .then_some((self.view, settings));
        let mut ex = exchange::Exchange {
            client: &mut self.side.client,
            backend,
            scanner: &mut self.side.scanner,
            statements: &mut self.side.statements,
            scratch: &mut self.side.scratch,
            message_limit,
            max_prepared,
            open_on_reader,
            terminate: &self.side.cancel,
            refuse: !self.view.pinned_to_writer,
        };
        let answer = ex.run(unit).await;
        // Nothing runs on the connection now; a cancel sent for what ran lands before
        // anything else does (see `cancel::SessionCancel`).
        if unit.ending == Ending::Ready && !self.side.cancel.unit_ended() {
            cold(self.side.cancel.delivered()).await;
        }
        answer
    }
}

/// How much state a connection holds that cannot move to another: LISTEN channels, SQL
/// prepared statements, holdable cursors, session advisory locks, temporary relations.
const HELD_STATE: &str = "SELECT (SELECT count(*) FROM pg_listening_channels()) \
     + (SELECT count(*) FROM pg_prepared_statements WHERE from_sql) \
     + (SELECT count(*) FROM pg_cursors WHERE is_holdable) \
     + (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()) \
     + (SELECT count(*) FROM pg_class WHERE relnamespace = pg_my_temp_schema())";

/// What the statements of `unit` do to the state that pins a session: a simple Query's
/// text, or the texts of the statements a batch parses or binds (one statement each).
fn hold_changes(unit: &scan::Unit) -> Vec<HoldChange> {
    let pins = unit.stmt.class == Class::Pin;
    if unit.first_tag == tag::QUERY {
        return match &unit.simple_sql {
            Some(sql) => hold::changes(sql.as_bytes(), Dialect::Postgres, pins),
            None => [HoldChange::Untracked]
                .into_iter()
                .filter(|_| pins)
                .collect(),
        };
    }
    let mut changes = Vec::new();
    let mut followed = !pins;
    for p in unit.refs.iter().flatten() {
        let pinning = p.class.class == Class::Pin;
        match p.sql() {
            Some(sql) => changes.extend(hold::changes(sql.as_bytes(), Dialect::Postgres, pinning)),
            None if pinning => changes.push(HoldChange::Untracked),
            None => {}
        }
        followed |= pinning;
    }
    if !followed {
        changes.push(HoldChange::Untracked);
    }
    changes
}

/// Whether `unit`'s text (a simple Query's, or the statements its batch runs) asks for a
/// read-write transaction in so many words (`sql::says_read_write`).
fn says_read_write(unit: &scan::Unit) -> bool {
    let says = |sql: &[u8]| crate::sql::says_read_write(sql, Dialect::Postgres);
    match &unit.simple_sql {
        Some(sql) => says(sql.as_bytes()),
        None => unit
            .refs
            .iter()
            .flatten()
            .filter_map(|p| p.sql_bytes())
            .any(says),
    }
}

/// Waits for bytes from `writer`; forever when there is none to watch.
async fn writer_bytes(writer: Option<&mut Backend>) -> Result<&mut Backend, SessionError> {
    match writer {
        Some(w) => w.fill().await.map(|()| w),
        None => std::future::pending().await,
    }
}
