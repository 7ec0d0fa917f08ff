//! Queries the proxy runs itself on a session's server connection, between the client's
//! units: replayed settings, and the few questions it asks the server (what state pins the
//! session, what a setting is now). Their answers are read here, not relayed; only
//! notifications and notices on the way go on to the client.

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

use super::SessionError;
use super::backend::{Backend, MAX_BACKEND_MESSAGE};
use crate::net::Stream;
use crate::protocol::postgres::frame;
use crate::protocol::postgres::messages::{self, tag};

impl Backend {
    /// Runs `sql` (session SETs) and drains its responses without relaying them.
    /// Returns the error message if the backend refused it.
    pub async fn run_silently(
        &mut self,
        sql: &str,
        scratch: &mut BytesMut,
    ) -> Result<Option<String>, SessionError> {
        scratch.clear();
        messages::query(scratch, sql);
        let out = std::mem::take(scratch);
        let sent = self.write(&out).await;
        *scratch = out;
        sent?;
        let mut failure = None;
        loop {
            while let Ok(Some((h, body))) = frame::message(&self.conn.buf, MAX_BACKEND_MESSAGE) {
                let total = h.total;
                match h.tag {
                    tag::ERROR_RESPONSE => failure = Some(messages::error_fields(body).1),
                    tag::READY_FOR_QUERY => {
                        self.conn.consume(total);
                        return Ok(failure);
                    }
                    _ => {}
                }
                self.conn.consume(total);
            }
            self.fill().await?;
        }
    }

    /// Runs `sql`, a query of one number, and returns it (`None`: the server refused it or
    /// sent no number). Notifications and notices that arrive meanwhile (a LISTENing
    /// session's) go on to `client`, as between statements.
    pub async fn count(
        &mut self,
        sql: &str,
        scratch: &mut BytesMut,
        client: &mut Stream,
    ) -> Result<Option<i64>, SessionError> {
        let value = self.value(sql, scratch, client).await?;
        Ok(value.and_then(|v| std::str::from_utf8(&v).ok()?.parse().ok()))
    }

    /// Runs `sql`, a query of one value, and returns it as text (`None`: the server refused
    /// it, or it is NULL). Notifications and notices on the way go on to `client`.
    pub async fn value(
        &mut self,
        sql: &str,
        scratch: &mut BytesMut,
        client: &mut Stream,
    ) -> Result<Option<Vec<u8>>, SessionError> {
        scratch.clear();
        messages::query(scratch, sql);
        let out = std::mem::take(scratch);
        let sent = self.write(&out).await;
        *scratch = out;
        sent?;
        let mut value = None;
        let mut refused = false;
        loop {
            while let Ok(Some((h, body))) = frame::message(&self.conn.buf, MAX_BACKEND_MESSAGE) {
                let total = h.total;
                match h.tag {
                    tag::DATA_ROW => value = messages::first_column(body),
                    tag::ERROR_RESPONSE => refused = true,
                    tag::NOTIFICATION_RESPONSE | tag::NOTICE_RESPONSE => {
                        let message = &self.conn.buf[..total];
                        client
                            .write_all(message)
                            .await
                            .map_err(SessionError::ClientIo)?;
                    }
                    tag::READY_FOR_QUERY => {
                        self.conn.consume(total);
                        client.flush().await.map_err(SessionError::ClientIo)?;
                        return Ok(value.filter(|_| !refused));
                    }
                    _ => {}
                }
                self.conn.consume(total);
            }
            self.fill().await?;
        }
    }
}
