//! One unit of client work on one backend, until its ReadyForQuery: send it, relay the
//! answer, and meanwhile keep reading the client — to forward the rest of an open batch
//! (after Flush) or COPY data, and to notice a client that went away.

use bytes::{Buf, BytesMut};
use tokio::io::AsyncWriteExt;

use super::SessionError;
use super::backend::Backend;
use super::cancel::{self, SessionCancel};
use super::replan::Replanned;
use super::scan::{self, Ending, Scanner, Statements, Unit};
use super::startup::Client;
use crate::protocol::postgres::frame;
use crate::protocol::postgres::messages::{self, tag};
use crate::router::{self, SessionView, Settings, Target};
use crate::session::cold;
use crate::sql::{Class, Statement};

/// Bytes of COPY data or held client messages after which the client is not read further
/// until the backend catches up (on top of one maximum-size message).
const CLIENT_AHEAD_LIMIT: usize = 2 << 20;

/// A failed exchange; `retryable` when nothing reached the client and nothing was consumed,
/// so the same unit can run on another backend.
#[derive(Debug)]
pub struct Failed {
    pub error: SessionError,
    pub retryable: bool,
    /// The backend failed where the client can take an ErrorResponse and a ReadyForQuery:
    /// its batch was complete (no COPY or open batch under way) and no message was cut.
    pub resumable: bool,
    /// Bytes at the front of the client buffer that belong to the failed unit.
    pub held: usize,
}

/// A simple Query (or FunctionCall) the client sent after a batch it left open, which ran
/// on the same backend within the exchange: its class and text, so that the session
/// records the state it changes (a SET, a LISTEN …) as for a Query of its own.
#[derive(Debug)]
pub struct Absorbed {
    pub stmt: Statement,
    pub simple_sql: Option<Box<str>>,
}

/// How an exchange ended: the transaction status of the final ReadyForQuery, and the Query
/// it absorbed, if any.
#[derive(Debug)]
pub struct Answer {
    pub status: u8,
    pub absorbed: Option<Absorbed>,
    /// The server answered an error (to some statement of the unit).
    pub failed: bool,
}

pub struct Exchange<'a> {
    pub client: &'a mut Client,
    pub backend: &'a mut Backend,
    pub scanner: &'a mut Scanner,
    pub statements: &'a mut Statements,
    pub scratch: &'a mut BytesMut,
    pub message_limit: usize,
    /// `max_prepared_statements`: most statements kept prepared on the backend connection.
    pub max_prepared: usize,
    /// Set when this exchange runs, on a reader, a batch left open that only prepares and
    /// describes statements: the client's next messages follow it there only when they
    /// would be routed to a reader (the session's view and settings); anything else ends
    /// the batch with a Sync of the proxy's own and is left for the next exchange.
    pub open_on_reader: Option<(SessionView, Settings)>,
    /// The session's cancel state, which says when another client terminated it.
    pub terminate: &'a SessionCancel,
    /// Client messages its server would refuse are failed in place (`scan::Refused`); off
    /// for a session pinned by SQL `PREPARE`, whose names the proxy does not follow.
    pub refuse: bool,
}

/// Progress of the client side of an exchange.
struct Sent {
    /// Bytes at the front of the client buffer that were sent and not yet dropped.
    held: usize,
    /// Where the backend stands in the client's messages.
    flow: Flow,
    /// Part of the client buffer was dropped: the unit can no longer be replayed.
    consumed: bool,
    absorbed: Option<Absorbed>,
    /// The proxy ended an open batch on a reader: the status of the ReadyForQuery it
    /// swallowed.
    ended_by_proxy: Option<u8>,
    /// An ErrorResponse was relayed.
    failed: bool,
}

/// Where the backend stands in the client's message stream, as far as the exchange must
/// know to end where the server's answer ends: exactly when the backend owes nothing and
/// no more client messages are bound for it. A server answers each simple Query (and
/// FunctionCall) with one ReadyForQuery, and each Sync with one unless it arrives during
/// COPY FROM STDIN (then it is ignored). A simple Query after an extended batch left open
/// by Flush runs on the same connection and ends the batch's implicit transaction: its
/// ReadyForQuery ends the exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Nothing owed: the backend is ready for the next unit.
    Idle,
    /// An extended batch was sent up to a Flush (or in part, being large): the client's next
    /// messages belong to it and go to this backend.
    Open,
    /// One ReadyForQuery is owed, for a simple Query (`simple`) or a Sync.
    Owed { simple: bool },
    /// The backend is in COPY FROM STDIN and takes the client's copy messages. `simple`: a
    /// simple Query started it, so its ReadyForQuery follows CopyDone/CopyFail; else the
    /// client sends a Sync after them. `answered`: the backend already sent that
    /// ReadyForQuery (it failed the COPY).
    CopyIn { simple: bool, answered: bool },
}

/// What moves a [`Flow`] on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// A unit went to the backend: `ready` if it asks for a ReadyForQuery (Query,
    /// FunctionCall, Sync), `simple` for a Query or FunctionCall.
    Sent { ready: bool, simple: bool },
    /// CopyDone or CopyFail went to the backend.
    CopyEnd,
    /// The backend sent CopyInResponse.
    CopyIn,
    /// The backend sent ReadyForQuery.
    Ready,
}

impl Flow {
    pub fn step(self, step: Step) -> Flow {
        use Flow::*;
        match (self, step) {
            // During COPY the backend ignores Flush and Sync; copy data changes nothing.
            (CopyIn { .. }, Step::Sent { .. }) => self,
            (
                _,
                Step::Sent {
                    ready: true,
                    simple,
                },
            ) => Owed { simple },
            (Idle | Open, Step::Sent { ready: false, .. }) => Open,
            (CopyIn { simple: false, .. }, Step::CopyEnd) => Open,
            (CopyIn { answered: true, .. }, Step::CopyEnd) => Idle,
            (CopyIn { .. }, Step::CopyEnd) => Owed { simple: true },
            // A Sync sent with the Execute that started the COPY was ignored.
            (Owed { simple }, Step::CopyIn) => CopyIn {
                simple,
                answered: false,
            },
            (Open, Step::CopyIn) => CopyIn {
                simple: false,
                answered: false,
            },
            (Owed { .. }, Step::Ready) => Idle,
            (CopyIn { simple, .. }, Step::Ready) => CopyIn {
                simple,
                answered: true,
            },
            (other, _) => other,
        }
    }

    /// Whether client messages that follow go to this backend.
    fn takes_client(self) -> bool {
        matches!(self, Flow::Open | Flow::CopyIn { .. })
    }
}

impl Exchange<'_> {
    /// Runs `unit` (the bytes `..unit.end` of the client buffer) up to the final
    /// ReadyForQuery.
    pub async fn run(&mut self, unit: &Unit) -> Result<Answer, Failed> {
        let load = &self.backend.conn.instance.load;
        load.begin();
        let started = std::time::Instant::now();
        let mut relayed = 0usize;
        let mut sent = Sent {
            held: unit.end,
            flow: Flow::Idle.step(sent_step(unit)),
            consumed: false,
            absorbed: None,
            ended_by_proxy: None,
            failed: false,
        };
        let result = self.drive(unit, &mut sent, &mut relayed).await;
        self.backend.conn.instance.load.end();
        self.backend.hold_stale_plan = false;
        self.backend.stale_columns_sent = false;
        self.backend.q.reused.clear();
        self.backend.q.watch_drops = None;
        if let Some(after) = self.backend.after_errors.as_mut() {
            after.refusals.clear();
        }
        match result {
            Ok(status) => {
                self.client.buf.advance(sent.held);
                self.backend.conn.metrics.queries.increment(1);
                self.backend
                    .conn
                    .metrics
                    .duration
                    .record(started.elapsed().as_secs_f64());
                Ok(Answer {
                    status,
                    absorbed: sent.absorbed.take(),
                    failed: sent.failed,
                })
            }
            Err(error) => {
                let backend_side = matches!(
                    error,
                    SessionError::BackendLost { .. } | SessionError::BackendProtocol { .. }
                );
                let resumable = backend_side
                    && !self.backend.mid_message()
                    && matches!(sent.flow, Flow::Owed { .. });
                Err(Failed {
                    retryable: backend_side && relayed == 0 && !sent.consumed,
                    resumable,
                    held: sent.held,
                    error,
                })
            }
        }
    }

    async fn drive(
        &mut self,
        unit: &Unit,
        sent: &mut Sent,
        relayed: &mut usize,
    ) -> Result<u8, SessionError> {
        let bytes = &self.client.buf[..unit.end];
        // SQL `DISCARD` and `DEALLOCATE` pin the session; the cache follows what they drop.
        self.backend.q.watch_drops =
            (unit.stmt.class == Class::Pin).then(|| deallocate_name(bytes));
        self.backend.q.reused.clear();
        self.backend.unit_start = true;
        let sent_unit = self
            .backend
            .forward(
                bytes,
                &unit.refs,
                refusals(self.refuse, unit),
                self.scratch,
                self.max_prepared,
            )
            .await;
        self.backend.unit_start = false;
        sent_unit?;
        // A stale statement's error may be held back for a retry (see `replan`) only in a
        // whole batch that reused one: its bytes stay in the client buffer until it ends.
        self.backend.hold_stale_plan = unit.ending == Ending::Ready
            && !matches!(unit.first_tag, tag::QUERY | tag::FUNCTION_CALL)
            && !self.backend.q.reused.is_empty();
        // Relay anything already buffered (e.g. a notification that arrived before).
        let mut ready = None;
        self.relay(unit, sent, relayed, &mut ready).await?;
        // Watched across the loop: one wait per unit, not one per read.
        let terminate: &SessionCancel = self.terminate;
        let terminating = terminate.terminating();
        tokio::pin!(terminating);
        let mut client_closed = false;
        loop {
            if sent.flow.takes_client() {
                self.forward_more(sent).await?;
            }
            if let Some(status) = sent.ended_by_proxy {
                return Ok(status);
            }
            if let Some(status) = ready.filter(|_| sent.flow == Flow::Idle) {
                return Ok(status);
            }
            // The client is watched while its statement runs, so that one that leaves (a
            // driver's timeout closing the socket) has the statement cancelled rather than
            // left running on a pooled connection. No read() per statement comes of it: the
            // read of the unit was short, which leaves the socket not ready until the
            // client sends again. What it sends meanwhile (the next statements) waits in
            // the buffer, up to the limit.
            let waiting = self.client.buf.len() - sent.held;
            let read_client = !client_closed && waiting < self.message_limit + CLIENT_AHEAD_LIMIT;
            // `biased`: polled in order, with no random start drawn per wake-up; the loop
            // comes back to whichever branch is ready after the other. The backend first: it
            // is the one nearly always ready, so the client is polled only before a wait.
            tokio::select! {
                biased;
                filled = self.backend.fill() => {
                    filled?;
                    self.relay(unit, sent, relayed, &mut ready).await?;
                }
                read = self.client.fill(), if read_client => match read {
                    // A client that said goodbye (Terminate) after its statement gets what
                    // a server gives it: the statement runs to its end.
                    Ok(0) if said_goodbye(&self.client.buf[sent.held..]) => client_closed = true,
                    Ok(0) => return Err(cold(self.client_left()).await),
                    Ok(_) => {}
                    Err(e) => return Err(SessionError::ClientIo(e)),
                },
                _ = &mut terminating => return Err(cold(self.terminated()).await),
            }
        }
    }

    /// The client closed its connection while its unit ran here, without a goodbye: the
    /// statement is cancelled on the backend, whose connection the session then closes as
    /// it ends (it is never given back mid-statement), so that a query its client gave up
    /// on (a driver's timeout) stops holding a pooled connection and the server's time.
    async fn client_left(&mut self) -> SessionError {
        let target = super::side::cancel_target(&self.backend.conn);
        match cancel::send_cancel(target).await {
            Ok(_) => tracing::info!("the client left while its statement ran; statement cancelled"),
            Err(e) => {
                tracing::info!(error = %e, "the client left while its statement ran; could not cancel it")
            }
        }
        SessionError::ClientGone
    }

    /// Another client terminated the session while its unit ran here: the statement is
    /// cancelled on the backend, whose connection the session then closes as it ends (it
    /// is never given back mid-statement), and the client gets the FATAL a server gives a
    /// terminated backend's client, unless an answer to it was cut mid-message.
    async fn terminated(&mut self) -> SessionError {
        let target = super::side::cancel_target(&self.backend.conn);
        if let Err(e) = cancel::send_cancel(target).await {
            tracing::info!(error = %e, "could not cancel a terminated session's statement");
        }
        if !self.backend.mid_message() {
            let mut out = BytesMut::new();
            super::signal::terminated_fatal(&mut out);
            // The session ends right after, so a failed write changes nothing.
            let _ = self.client.stream.write_all(&out).await;
        }
        SessionError::Killed
    }

    /// Relays what the backend sent, up to the ReadyForQuery that leaves it idle; `ready`
    /// takes the status of the last ReadyForQuery seen.
    async fn relay(
        &mut self,
        unit: &Unit,
        sent: &mut Sent,
        relayed: &mut usize,
        ready: &mut Option<u8>,
    ) -> Result<(), SessionError> {
        while !self.backend.conn.buf.is_empty() {
            let mut seen = self.backend.relay(&mut self.client.stream).await?;
            *relayed += seen.bytes;
            sent.failed |= seen.error;
            if seen.ended {
                return Err(self.backend.ended());
            }
            if let Some(dropped) = self.backend.q.deallocated.take() {
                // The server dropped the client's statements too: forget them, as it did.
                self.statements.deallocate(&dropped);
            }
            let failed = self
                .backend
                .after_errors
                .as_mut()
                .map(|a| &mut a.failed_client_parses);
            for (name, parse) in failed.into_iter().flat_map(|f| f.drain(..)) {
                // Never prepared on its server: the client does not have it.
                self.statements.forget_failed(&name, &parse);
            }
            if seen.stale_plan {
                match cold(self.backend.replan(self.scratch, self.max_prepared)).await? {
                    Replanned::Retry => {
                        // Nothing of the unit reached the client and nothing followed it:
                        // it is still whole at the front of the client buffer.
                        self.backend
                            .forward(
                                &self.client.buf[..unit.end],
                                &unit.refs,
                                refusals(self.refuse, unit),
                                self.scratch,
                                self.max_prepared,
                            )
                            .await?;
                        continue;
                    }
                    Replanned::Relay { answer, status } => {
                        self.client
                            .stream
                            .write_all(&answer)
                            .await
                            .map_err(SessionError::ClientIo)?;
                        self.client
                            .stream
                            .flush()
                            .await
                            .map_err(SessionError::ClientIo)?;
                        *relayed += answer.len();
                        seen.ready = Some(status);
                    }
                }
            }
            // A relay step ends at a ReadyForQuery, so a CopyInResponse it saw came before.
            if seen.copy_in {
                sent.flow = sent.flow.step(Step::CopyIn);
            }
            let Some(status) = seen.ready else { break };
            sent.flow = sent.flow.step(Step::Ready);
            *ready = Some(status);
            if sent.flow == Flow::Idle {
                break;
            }
        }
        Ok(())
    }

    /// Forwards whole client messages that follow: the rest of an open batch, or COPY data.
    async fn forward_more(&mut self, sent: &mut Sent) -> Result<(), SessionError> {
        loop {
            let next = self
                .scanner
                .next_in(&mut self.client.buf, sent.held, self.statements)
                .map_err(|e| SessionError::ClientProtocol(e.to_string()))?;
            let Some(mut unit) = next else { return Ok(()) };
            let copy_message = matches!(
                unit.first_tag,
                tag::COPY_DATA | tag::COPY_DONE | tag::COPY_FAIL
            );
            if unit.first_tag == tag::TERMINATE {
                return Err(SessionError::ClientGone);
            }
            if let Some((view, settings)) = self.open_on_reader
                && sent.flow == Flow::Open
                && !copy_message
                && router::route(&unit.stmt, view, settings) != Target::Reader
            {
                // It must run elsewhere: end the batch here; the session routes it anew.
                self.scanner.recycle(unit.refs);
                let status = cold(self.backend.end_open_batch(&mut self.client.stream)).await?;
                sent.flow = Flow::Idle;
                sent.ended_by_proxy = Some(status);
                return Ok(());
            }
            // During COPY the backend ignores Flush/Sync; they pass on like the data.
            self.backend
                .forward(
                    &self.client.buf[sent.held..sent.held + unit.end],
                    &unit.refs,
                    refusals(self.refuse, &unit),
                    self.scratch,
                    self.max_prepared,
                )
                .await?;
            sent.held += unit.end;
            match unit.first_tag {
                tag::COPY_DATA => {}
                tag::COPY_DONE | tag::COPY_FAIL => sent.flow = sent.flow.step(Step::CopyEnd),
                _ => {
                    if matches!(unit.first_tag, tag::QUERY | tag::FUNCTION_CALL) {
                        sent.absorbed = Some(Absorbed {
                            stmt: unit.stmt,
                            simple_sql: unit.simple_sql.take(),
                        });
                    }
                    sent.flow = sent.flow.step(sent_step(&unit));
                }
            }
            self.scanner.recycle(unit.refs);
            if sent.held > CLIENT_AHEAD_LIMIT || copy_message {
                // Don't hold COPY data or long batches: drop what was sent.
                self.client.buf.advance(sent.held);
                sent.held = 0;
                sent.consumed = true;
            }
            if !sent.flow.takes_client() {
                return Ok(());
            }
        }
    }
}

/// The statement name a unit's lone SQL `DEALLOCATE name` drops, when it is one.
fn deallocate_name(bytes: &[u8]) -> Option<Vec<u8>> {
    let (h, body) = frame::message(bytes, usize::MAX).ok().flatten()?;
    if h.tag != tag::QUERY {
        return None;
    }
    match scan::deallocate(messages::query_text(body)?)? {
        scan::Deallocate::Name(name) => Some(name),
        scan::Deallocate::All => None,
    }
}

/// The flow step of sending `unit` (not a copy message).
fn sent_step(unit: &Unit) -> Step {
    Step::Sent {
        ready: unit.ending == Ending::Ready,
        simple: matches!(unit.first_tag, tag::QUERY | tag::FUNCTION_CALL),
    }
}

/// The messages of `unit` to fail in place, when the session refuses any (`refuse`).
fn refusals(refuse: bool, unit: &Unit) -> &[scan::Refused] {
    if refuse { unit.refused() } else { &[] }
}

/// Whether the client's messages after its unit (`after`) hold a Terminate: it closed its
/// connection after saying goodbye, not while waiting for an answer it gave up on.
fn said_goodbye(after: &[u8]) -> bool {
    let mut rest = after;
    while let Ok(Some(header)) = frame::header(rest, usize::MAX) {
        if header.tag == tag::TERMINATE {
            return true;
        }
        let Some(next) = rest.get(header.total..) else {
            return false;
        };
        rest = next;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::{Flow, Step};

    const QUERY: Step = Step::Sent {
        ready: true,
        simple: true,
    };
    const SYNC: Step = Step::Sent {
        ready: true,
        simple: false,
    };
    const FLUSH: Step = Step::Sent {
        ready: false,
        simple: false,
    };

    fn run(steps: &[Step]) -> Flow {
        steps.iter().fold(Flow::Idle, |f, &s| f.step(s))
    }

    #[test]
    fn an_exchange_ends_where_the_server_answer_ends() {
        use Step::*;
        let copy_in = |simple, answered| Flow::CopyIn { simple, answered };
        let table: &[(&[Step], Flow)] = &[
            (&[QUERY], Flow::Owed { simple: true }),
            (&[QUERY, Ready], Flow::Idle),
            (&[SYNC, Ready], Flow::Idle),
            (&[FLUSH], Flow::Open),
            (&[FLUSH, FLUSH], Flow::Open),
            (&[FLUSH, SYNC, Ready], Flow::Idle),
            // Parse/Describe/Flush, then a simple Query: its ReadyForQuery ends it all.
            (&[FLUSH, QUERY, Ready], Flow::Idle),
            // … and that Query is a COPY FROM STDIN.
            (&[FLUSH, QUERY, CopyIn], copy_in(true, false)),
            (
                &[FLUSH, QUERY, CopyIn, FLUSH, CopyEnd],
                Flow::Owed { simple: true },
            ),
            (&[FLUSH, QUERY, CopyIn, CopyEnd, Ready], Flow::Idle),
            // The COPY failed before the client finished sending.
            (&[QUERY, CopyIn, Ready], copy_in(true, true)),
            (&[QUERY, CopyIn, Ready, CopyEnd], Flow::Idle),
            // Extended COPY: the Sync sent with the Execute is ignored; one follows CopyDone.
            (&[SYNC, CopyIn, SYNC], copy_in(false, false)),
            (&[SYNC, CopyIn, CopyEnd], Flow::Open),
            (&[SYNC, CopyIn, CopyEnd, SYNC, Ready], Flow::Idle),
            (&[FLUSH, CopyIn, CopyEnd, SYNC, Ready], Flow::Idle),
        ];
        for (steps, want) in table {
            assert_eq!(run(steps), *want, "{steps:?}");
        }
    }
}
