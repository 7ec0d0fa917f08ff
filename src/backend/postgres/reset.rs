//! What a pooled PostgreSQL connection needs: a reset that leaves it as a fresh login left
//! it (no transaction, `DISCARD ALL`), a check that the server has not closed it, and a
//! polite end (Terminate).

use crate::backend::ResetError;
use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

use super::BackendConn;
use crate::net::Arrived;
use crate::protocol::postgres::frame;
use crate::protocol::postgres::messages::{self, tag};

/// Largest message read while resetting: the replies are a few small messages, unless
/// the session left a result unread (then the reset fails and the connection closes).
const MAX_RESET_MESSAGE: usize = 1 << 20;

/// The completion tag of `DISCARD ALL`.
const DISCARD_ALL: &[u8] = b"DISCARD ALL\0";

/// ReadyForQuery messages the reset waits for: one for its Sync, one per query.
const READY_COUNT: usize = 3;

impl BackendConn {
    /// Makes the connection what a fresh login with the same parameters would be. Sends at
    /// once a Sync (ends an extended-protocol batch left open), `ROLLBACK` (a transaction
    /// left open; outside one it only draws a warning) and `DISCARD ALL` (session settings
    /// back to the startup values, temporary tables, prepared statements, portals,
    /// LISTEN, advisory locks, cached plans), and reads the replies up to the ReadyForQuery
    /// after `DISCARD ALL`. ParameterStatus and notices on the way are dropped: the startup
    /// ParameterStatus kept in `parameter_status` are again what the server reports.
    pub async fn reset(&mut self) -> Result<(), ResetError> {
        // Whatever happens next, the statements are gone: discarded, or closed with it.
        self.prepared.clear();
        let mut out = BytesMut::new();
        messages::sync(&mut out);
        messages::query(&mut out, "ROLLBACK");
        messages::query(&mut out, "DISCARD ALL");
        self.stream
            .write_all(&out)
            .await
            .map_err(|source| ResetError::io(&self.instance.addr, source))?;
        self.stream
            .flush()
            .await
            .map_err(|source| ResetError::io(&self.instance.addr, source))?;
        let mut ready = 0;
        let mut discarded = false;
        let mut refused = None;
        loop {
            let (kind, body) = self.reset_message().await?;
            match kind {
                tag::COMMAND_COMPLETE if body.starts_with(DISCARD_ALL) => discarded = true,
                tag::ERROR_RESPONSE => {
                    if messages::ends_connection(&body) {
                        let (code, message) = messages::error_fields(&body);
                        return Err(self.refused(code, message));
                    }
                    refused = Some(messages::error_fields(&body));
                }
                tag::READY_FOR_QUERY => {
                    ready += 1;
                    if discarded || ready >= READY_COUNT {
                        let status = body.first().copied().unwrap_or(b'?');
                        return match (discarded, refused) {
                            (true, _) if status == b'I' => Ok(()),
                            (true, _) => Err(ResetError::InTransaction {
                                addr: self.instance.addr.clone(),
                                status: char::from(status),
                            }),
                            (false, Some((code, message))) => Err(self.refused(code, message)),
                            (false, None) => Err(ResetError::protocol(
                                &self.instance.addr,
                                "DISCARD ALL did not complete",
                            )),
                        };
                    }
                }
                _ => {}
            }
        }
    }

    /// Counts the connection in its instance's attached sessions (`true`: a session holds
    /// it) or not (`false`: idle in the pool), so idle connections do not skew the spread of
    /// sessions over readers.
    pub fn set_attached(&mut self, attached: bool) {
        crate::backend::attach(&mut self.attached, &self.instance, attached);
    }

    /// Whether the server has closed the connection or is closing it, from what has already
    /// arrived, without waiting: the end of the stream, or an ErrorResponse (between uses a
    /// server sends one only as it ends the connection).
    pub fn is_closed(&mut self) -> bool {
        if self.stream.read_arrived(&mut self.buf) == Arrived::Closed {
            return true;
        }
        let mut pos = 0;
        while let Ok(Some(h)) = frame::header(&self.buf[pos..], usize::MAX) {
            if h.tag == tag::ERROR_RESPONSE {
                return true;
            }
            pos += h.total;
            if pos >= self.buf.len() {
                break;
            }
        }
        false
    }

    /// Ends the connection with Terminate, so the server logs no lost client.
    pub async fn terminate(mut self) {
        // The connection closes either way.
        let _ = self.stream.write_all(&[tag::TERMINATE, 0, 0, 0, 4]).await;
        let _ = self.stream.shutdown().await;
    }

    /// Reads one whole message: its tag and body.
    async fn reset_message(&mut self) -> Result<(u8, bytes::Bytes), ResetError> {
        loop {
            match frame::header(&self.buf, MAX_RESET_MESSAGE) {
                Ok(Some(h)) if self.buf.len() >= h.total => {
                    let mut whole = self.buf.split_to(h.total);
                    let body = whole.split_off(frame::HEADER_LEN).freeze();
                    return Ok((h.tag, body));
                }
                Ok(_) => {}
                Err(e) => return Err(ResetError::protocol(&self.instance.addr, &e.to_string())),
            }
            crate::backend::reset_read(&mut self.stream, &mut self.buf, &self.instance.addr)
                .await?;
        }
    }

    fn refused(&self, code: String, message: String) -> ResetError {
        ResetError::Refused {
            addr: self.instance.addr.clone(),
            code,
            message,
        }
    }
}
