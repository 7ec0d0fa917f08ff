//! One unit of client work on one backend, until its ReadyForQuery: send it, relay the
//! answer, and meanwhile keep reading the client — to forward the rest of an open batch
//! (after Flush) or COPY data, and to notice a client that went away.

use bytes::{Buf, BytesMut};

use super::SessionError;
use super::backend::Backend;
use super::scan::{Ending, Scanner, Statements, Unit};
use super::startup::Client;
use crate::protocol::postgres::messages::tag;

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

pub struct Exchange<'a> {
    pub client: &'a mut Client,
    pub backend: &'a mut Backend,
    pub scanner: &'a mut Scanner,
    pub statements: &'a mut Statements,
    pub scratch: &'a mut BytesMut,
    pub message_limit: usize,
}

/// Progress of the client side of an exchange.
struct Sent {
    /// Bytes at the front of the client buffer that were sent and not yet dropped.
    held: usize,
    /// More of the batch follows on this backend (after Flush or a large batch).
    open: bool,
    /// The backend is in COPY FROM STDIN: client copy messages go straight through.
    copy_in: bool,
    /// The batch was extended-protocol, so after CopyDone a Sync still follows.
    extended: bool,
    /// Part of the client buffer was dropped: the unit can no longer be replayed.
    consumed: bool,
}

impl Exchange<'_> {
    /// Runs `unit` (the bytes `..unit.end` of the client buffer); returns the transaction
    /// status of the final ReadyForQuery.
    pub async fn run(&mut self, unit: &Unit) -> Result<u8, Failed> {
        let load = &self.backend.conn.instance.load;
        load.begin();
        let started = std::time::Instant::now();
        let mut relayed = 0usize;
        let mut sent = Sent {
            held: unit.end,
            open: unit.ending == Ending::Open,
            copy_in: false,
            extended: unit.first_tag != tag::QUERY,
            consumed: false,
        };
        let result = self.drive(unit, &mut sent, &mut relayed).await;
        self.backend.conn.instance.load.end();
        match result {
            Ok(status) => {
                self.client.buf.advance(sent.held);
                self.backend.metrics.queries.increment(1);
                self.backend
                    .metrics
                    .duration
                    .record(started.elapsed().as_secs_f64());
                Ok(status)
            }
            Err(error) => {
                let backend_side = matches!(
                    error,
                    SessionError::BackendLost { .. } | SessionError::BackendProtocol { .. }
                );
                let resumable =
                    backend_side && !self.backend.mid_message() && !sent.open && !sent.copy_in;
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
        self.backend
            .forward(&self.client.buf[..unit.end], &unit.refs, self.scratch)
            .await?;
        // Relay anything already buffered (e.g. a notification that arrived before).
        let mut ready = self.relay(sent, relayed).await?;
        loop {
            if sent.open || sent.copy_in {
                self.forward_more(sent).await?;
            }
            if let Some(status) = ready.filter(|_| !sent.open && !sent.copy_in) {
                return Ok(status);
            }
            // The client is read only when more of its messages belong to this exchange: an
            // idle poll would cost a read() per statement. A client that left is noticed when
            // the answer is written to it.
            let waiting = self.client.buf.len() - sent.held;
            let read_client =
                (sent.open || sent.copy_in) && waiting < self.message_limit + CLIENT_AHEAD_LIMIT;
            tokio::select! {
                read = self.client.fill(), if read_client => match read {
                    Ok(0) => return Err(SessionError::ClientGone),
                    Ok(_) => {}
                    Err(e) => return Err(SessionError::ClientIo(e)),
                },
                filled = self.backend.fill() => {
                    filled?;
                    if let Some(status) = self.relay(sent, relayed).await? {
                        ready = Some(status);
                    }
                }
            }
        }
    }

    async fn relay(
        &mut self,
        sent: &mut Sent,
        relayed: &mut usize,
    ) -> Result<Option<u8>, SessionError> {
        if self.backend.conn.buf.is_empty() {
            return Ok(None);
        }
        let seen = self.backend.relay(&mut self.client.stream).await?;
        *relayed += seen.bytes;
        if seen.copy_in {
            sent.copy_in = true;
        }
        Ok(seen.ready)
    }

    /// Forwards whole client messages that follow: the rest of an open batch, or COPY data.
    async fn forward_more(&mut self, sent: &mut Sent) -> Result<(), SessionError> {
        loop {
            let rest = &self.client.buf[sent.held..];
            let next = self
                .scanner
                .next(rest, self.statements)
                .map_err(|e| SessionError::ClientProtocol(e.to_string()))?;
            let Some(unit) = next else { return Ok(()) };
            let copy_message = matches!(
                unit.first_tag,
                tag::COPY_DATA | tag::COPY_DONE | tag::COPY_FAIL
            );
            if unit.first_tag == tag::TERMINATE {
                return Err(SessionError::ClientGone);
            }
            // During COPY the backend ignores Flush/Sync; they pass on like the data.
            self.backend
                .forward(
                    &self.client.buf[sent.held..sent.held + unit.end],
                    &unit.refs,
                    self.scratch,
                )
                .await?;
            sent.held += unit.end;
            if copy_message && unit.first_tag != tag::COPY_DATA {
                sent.copy_in = false;
                // After an extended-protocol COPY the client still sends the Sync.
                sent.open = sent.extended;
            } else if !copy_message {
                sent.open = unit.ending == Ending::Open;
            }
            self.scanner.recycle(unit.refs);
            if sent.held > CLIENT_AHEAD_LIMIT || copy_message {
                // Don't hold COPY data or long batches: drop what was sent.
                self.client.buf.advance(sent.held);
                sent.held = 0;
                sent.consumed = true;
            }
            if !sent.open && !sent.copy_in {
                return Ok(());
            }
        }
    }
}
