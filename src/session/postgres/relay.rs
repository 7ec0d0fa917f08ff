//! The relay of a backend connection's answers to the client, as runs of bytes: what the
//! relay looks into on the way (the answers owed to messages the proxy injected, errors,
//! descriptions of statements, dropped statements, a notification the client raised
//! itself), and the end of a batch the client left open.

use bytes::BytesMut;

use super::SessionError;
use super::backend::{Ahead, Backend, MAX_BACKEND_MESSAGE, Owed};
use super::cache::Dropped;
use crate::net::Stream;
use crate::protocol::postgres::frame;
use crate::protocol::postgres::messages::{self, tag};

/// What one relay step saw.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Relayed {
    /// The transaction status of a ReadyForQuery, which ends the relay step.
    pub ready: Option<u8>,
    /// The unit's first answer is a "cached plan must not change result type" error while
    /// [`Backend::hold_stale_plan`] was set: it is left unrelayed in front of the buffer.
    pub stale_plan: bool,
    /// The backend entered COPY FROM STDIN mode.
    pub copy_in: bool,
    /// An ErrorResponse was relayed.
    pub error: bool,
    /// Bytes written to the client.
    pub bytes: usize,
    /// The server ended the connection: its FATAL ErrorResponse is left unrelayed in front
    /// of the buffer. [`Backend::ended`] is the error to return.
    pub ended: bool,
}

impl Backend {
    /// Relays what is buffered to `client`, up to and including a ReadyForQuery.
    /// Messages are forwarded as byte runs; a message larger than the buffer streams through.
    pub async fn relay(&mut self, client: &mut Stream) -> Result<Relayed, SessionError> {
        let mut seen = Relayed::default();
        if self.begin == Ahead::Owed && !self.swallow_begin()? {
            return Ok(seen);
        }
        // Statements whose Parse the backend skipped after an error: not prepared.
        let mut failed_parses = Vec::new();
        // An error came: the backend skipped to Sync (see `skipped_parses`).
        let mut skipped = false;
        // What SQL `DISCARD ALL` / `DEALLOCATE` told the client it dropped.
        let mut dropped = Vec::new();
        // The columns a Describe of a statement showed.
        let mut learned = std::mem::take(&mut self.q.learned);
        let buf = &self.conn.buf;
        let mut pos = self.forward_remaining.min(buf.len());
        self.forward_remaining -= pos;
        let mut run_start = 0;
        while self.forward_remaining == 0 {
            let h = match frame::header(&buf[pos..], MAX_BACKEND_MESSAGE) {
                Ok(Some(h)) => h,
                Ok(None) => break,
                Err(e) => {
                    return Err(SessionError::BackendProtocol {
                        addr: self.conn.instance.addr.clone(),
                        detail: e.to_string(),
                    });
                }
            };
            let whole = buf.len() - pos >= h.total;
            match h.tag {
                // Small messages the relay looks into: wait until each is whole.
                tag::PARSE_COMPLETE
                | tag::CLOSE_COMPLETE
                | tag::READY_FOR_QUERY
                | tag::ERROR_RESPONSE
                    if !whole =>
                {
                    break;
                }
                tag::ROW_DESCRIPTION | tag::NO_DATA if !whole && self.q.describing.tells_next() => {
                    break;
                }
                tag::COMMAND_COMPLETE if !whole && self.q.watch_drops.is_some() => break,
                tag::NOTIFICATION_RESPONSE if !whole && self.client_pid.is_some() => break,
                tag::NOTIFICATION_RESPONSE if self.raised_here(&buf[pos..pos + h.total]) => {
                    // The client's own NOTIFY, on the connection it is pinned to (LISTEN):
                    // it says so with the pid the client knows as its own.
                    seen.bytes += send(client, &buf[run_start..pos]).await?;
                    let mut message = buf[pos..pos + h.total].to_vec();
                    let pid = self.client_pid.unwrap_or_default().to_be_bytes();
                    message[frame::HEADER_LEN..frame::HEADER_LEN + 4].copy_from_slice(&pid);
                    seen.bytes += send(client, &message).await?;
                    pos += h.total;
                    run_start = pos;
                    continue;
                }
                tag::PARSE_COMPLETE | tag::CLOSE_COMPLETE => {
                    let owed = self.q.owed.pop_front();
                    if owed.as_ref().is_some_and(|o| o.swallow) {
                        seen.bytes += send(client, &buf[run_start..pos]).await?;
                        pos += h.total;
                        run_start = pos;
                        continue;
                    }
                }
                tag::READY_FOR_QUERY => {
                    seen.ready = Some(buf[pos + frame::HEADER_LEN]);
                    pos += h.total;
                    break;
                }
                tag::ERROR_RESPONSE
                    if messages::ends_connection(&buf[pos + frame::HEADER_LEN..pos + h.total]) =>
                {
                    // The server is closing the connection (it dies, shuts down, or ended this
                    // session): not an answer to relay, but a lost backend, which the session
                    // answers for. What came before is relayed; the FATAL stays in front
                    // (see `take_fatal`).
                    seen.ended = true;
                    break;
                }
                tag::ERROR_RESPONSE
                    if self.refusing()
                        && super::backend::answers_refusal(
                            &buf[pos + frame::HEADER_LEN..pos + h.total],
                        ) =>
                {
                    // A client message failed in its place: its own server's error.
                    seen.error = true;
                    self.stale_columns_sent = false;
                    skipped = true;
                    let mut error = BytesMut::new();
                    let owed = self
                        .after_errors
                        .as_mut()
                        .and_then(|a| a.refusals.pop_front());
                    if let Some(refusal) = owed {
                        refusal.error(&mut error);
                    }
                    seen.bytes += send(client, &buf[run_start..pos]).await?;
                    seen.bytes += send(client, &error).await?;
                    pos += h.total;
                    run_start = pos;
                    continue;
                }
                tag::ERROR_RESPONSE
                    if self.stale_columns_sent
                        && super::replan::failed_in_place(
                            &buf[pos + frame::HEADER_LEN..pos + h.total],
                        ) =>
                {
                    // The statement failed in its place: answered as its own server would.
                    self.stale_columns_sent = false;
                    skipped = true;
                    let mut error = BytesMut::new();
                    super::replan::stale_columns_error(&mut error);
                    seen.bytes += send(client, &buf[run_start..pos]).await?;
                    seen.bytes += send(client, &error).await?;
                    pos += h.total;
                    run_start = pos;
                    continue;
                }
                tag::ERROR_RESPONSE
                    if self.hold_stale_plan
                        && seen.bytes == 0
                        && pos == run_start
                        && super::replan::is_stale_plan(
                            &buf[pos + frame::HEADER_LEN..pos + h.total],
                        ) =>
                {
                    // Nothing of the unit reached the client yet: the exchange may prepare
                    // the statement again and run the unit once more.
                    seen.stale_plan = true;
                    break;
                }
                tag::ERROR_RESPONSE => {
                    seen.error = true;
                    // The backend skips to Sync: statements still owed were not prepared,
                    // and descriptions still owed do not come.
                    self.stale_columns_sent = false;
                    skipped = true;
                }
                tag::PARAMETER_DESCRIPTION => self.q.describing.parameters(),
                tag::ROW_DESCRIPTION | tag::NO_DATA => {
                    if let Some(p) = self.q.describing.columns() {
                        let columns = &buf[pos + frame::HEADER_LEN..pos + h.total];
                        let digest = super::replan::digest(columns);
                        p.described
                            .store(digest, std::sync::atomic::Ordering::Relaxed);
                        learned.push((p, digest));
                    }
                }
                tag::COMMAND_COMPLETE if self.q.watch_drops.is_some() => {
                    let done = &buf[pos + frame::HEADER_LEN..pos + h.total];
                    dropped.extend(Dropped::of(done));
                }
                tag::COPY_IN_RESPONSE => seen.copy_in = true,
                _ => {}
            }
            if whole {
                pos += h.total;
            } else {
                self.forward_remaining = pos + h.total - buf.len();
                pos = buf.len();
            }
        }
        // Flushed by `send` when not written at once (always over TLS, whose records a
        // full socket would leave buffered, the client waiting for the end of an answer
        // that never leaves).
        seen.bytes += send(client, &buf[run_start..pos]).await?;
        if seen.bytes > 0 {
            self.hold_stale_plan = false;
        }
        self.conn.consume(pos);
        if skipped {
            self.skipped_parses(&mut failed_parses);
        }
        self.forget_failed(failed_parses);
        for d in dropped {
            self.server_dropped(d);
        }
        for (p, digest) in learned.drain(..) {
            if let Some(held) = self.conn.prepared.peek_mut(&p.name)
                && held.parse == p.parse
            {
                held.columns = digest;
            }
        }
        self.q.learned = learned;
        Ok(seen)
    }

    /// After an error the backend skips to Sync: the Parses still owed were not run (the
    /// client's own go to `AfterErrors::failed_client_parses` too), and the descriptions still owed do
    /// not come.
    fn skipped_parses(&mut self, failed: &mut Vec<(Vec<u8>, bytes::Bytes)>) {
        let owed: Vec<Owed> = self.q.owed.drain(..).collect();
        for owed in owed {
            if let Some(parse) = owed.parse {
                if !owed.swallow {
                    self.after_errors().failed_client_parses.push(parse.clone());
                }
                failed.push(parse);
            }
        }
        self.q.describing.clear();
    }

    /// Whether the whole NotificationResponse `message` was raised by a NOTIFY on this
    /// connection, while it serves a client that has a process id of its own.
    fn raised_here(&self, message: &[u8]) -> bool {
        let own = self.conn.key.map(|k| k.pid);
        let pid = message
            .get(frame::HEADER_LEN..)
            .and_then(messages::notification_pid);
        self.client_pid.is_some() && pid.is_some() && pid == own
    }

    /// Ends a batch the client left open with Flush by sending a Sync of the proxy's own:
    /// relays the rest of the batch's answers to `client` and swallows the ReadyForQuery
    /// that answers the Sync, whose transaction status it returns. For a batch that only
    /// prepared and described statements, which leaves nothing behind on a server that a
    /// Sync would change.
    pub async fn end_open_batch(&mut self, client: &mut Stream) -> Result<u8, SessionError> {
        self.write(&[tag::SYNC, 0, 0, 0, 4]).await?;
        loop {
            if let Some((at, total, status)) = self.whole_ready_for_query() {
                let tail = self.conn.buf.split_off(at);
                let seen = self.relay(client).await;
                self.conn.buf.unsplit(tail);
                let seen = seen?;
                if seen.ended {
                    return Err(self.ended());
                }
                // Everything before the ReadyForQuery was whole, so it was all relayed.
                self.conn.consume(total);
                return Ok(status);
            }
            self.fill().await?;
        }
    }

    /// Where the first whole ReadyForQuery is buffered (offset, length, status), once every
    /// message before it is whole and none is being streamed through.
    pub(super) fn whole_ready_for_query(&self) -> Option<(usize, usize, u8)> {
        if self.forward_remaining > 0 {
            return None;
        }
        let buf = &self.conn.buf;
        let mut pos = 0;
        while let Ok(Some((h, body))) = frame::message(&buf[pos..], MAX_BACKEND_MESSAGE) {
            if h.tag == tag::READY_FOR_QUERY {
                return Some((pos, h.total, body.first().copied().unwrap_or(b'I')));
            }
            pos += h.total;
        }
        None
    }
}

/// Writes `bytes` relayed to the client (nothing when there are none), flushed when not
/// written at once; how many.
async fn send(client: &mut Stream, bytes: &[u8]) -> Result<usize, SessionError> {
    if let Some(rest) = client
        .write_or_rest(bytes)
        .map_err(SessionError::ClientIo)?
    {
        rest.await.map_err(SessionError::ClientIo)?;
    }
    Ok(bytes.len())
}
