//! What a pooled MySQL connection needs: a reset that leaves it as its login left it
//! (COM_RESET_CONNECTION, then the login's default database back), and a check that the
//! server has not closed it.

use crate::backend::ResetError;
use bytes::{Buf, Bytes, BytesMut};
use tokio::io::AsyncWriteExt;

use super::{MAX_LOGIN_PACKET, MysqlConn};
use crate::net::Arrived;
use crate::protocol::mysql::command;
use crate::protocol::mysql::constants::command::{COM_INIT_DB, COM_QUERY, COM_RESET_CONNECTION};
use crate::protocol::mysql::constants::{CapabilityFlags, header};
use crate::protocol::mysql::messages;
use crate::protocol::mysql::packet;
use crate::protocol::mysql::response::{Response, Step};

/// A NULL column value in a text result row.
const NULL: u8 = 0xFB;

impl MysqlConn {
    /// Makes the connection what its login left: COM_RESET_CONNECTION (rolls back, drops
    /// temporary tables, user variables, prepared statements and locks; session variables,
    /// autocommit and the character set back to the login's), then the login's default
    /// database again with COM_INIT_DB, as the reset keeps the one a `USE` chose. A login
    /// without a database cannot go back to none: if one is selected the reset fails (and
    /// the pool closes the connection).
    pub async fn reset(&mut self) -> Result<(), ResetError> {
        if !self.buf.is_empty() {
            return Err(ResetError::protocol(
                &self.instance.addr,
                "bytes left unread from an earlier command",
            ));
        }
        // Whatever happens next, the statements are gone: reset, or closed with it.
        self.prepared.clear();
        self.reset_command(COM_RESET_CONNECTION, &[]).await?;
        match self.database.clone() {
            Some(database) => self.reset_command(COM_INIT_DB, &database).await,
            None if self.database_selected().await? => Err(ResetError::DatabaseSelected {
                addr: self.instance.addr.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Counts the connection in its instance's attached sessions (`true`: a session holds
    /// it) or not (`false`: idle in the pool), so idle connections do not skew the spread of
    /// sessions over readers.
    pub fn set_attached(&mut self, attached: bool) {
        crate::backend::attach(&mut self.attached, &self.instance, attached);
    }

    /// Whether the server has closed the connection or is closing it, from what has already
    /// arrived, without waiting: between commands a server speaks only to say goodbye.
    pub fn is_closed(&mut self) -> bool {
        self.stream.read_arrived(&mut self.buf) != Arrived::Nothing
    }

    /// Runs a command answered by OK or ERR.
    async fn reset_command(&mut self, code: u8, body: &[u8]) -> Result<(), ResetError> {
        self.send_command(code, body).await?;
        let payload = self.reset_packet().await?;
        match payload.first() {
            Some(&header::OK) => {
                if let Ok(ok) = messages::parse_ok(&payload, self.capabilities) {
                    self.status = ok.status;
                }
                Ok(())
            }
            Some(&header::ERR) => Err(self.reset_refused(&payload)),
            _ => Err(ResetError::protocol(
                &self.instance.addr,
                "expected OK or ERR",
            )),
        }
    }

    /// `SELECT DATABASE()` is not NULL.
    async fn database_selected(&mut self) -> Result<bool, ResetError> {
        self.send_command(COM_QUERY, b"SELECT DATABASE()").await?;
        let deprecate_eof = self
            .capabilities
            .contains(CapabilityFlags::CLIENT_DEPRECATE_EOF);
        let mut response = Response::new(COM_QUERY, deprecate_eof);
        // The packet before the terminator is the one row.
        let mut previous = Bytes::new();
        loop {
            let payload = self.reset_packet().await?;
            let step = response
                .feed(&payload)
                .map_err(|e| ResetError::protocol(&self.instance.addr, &e.to_string()))?;
            match step {
                Step::More => previous = payload,
                Step::Done { .. } => return Ok(previous.first().is_some_and(|&b| b != NULL)),
                Step::Failed { .. } => return Err(self.reset_refused(&payload)),
                Step::LocalInfile => {
                    return Err(ResetError::protocol(
                        &self.instance.addr,
                        "unexpected LOCAL INFILE",
                    ));
                }
            }
        }
    }

    async fn send_command(&mut self, code: u8, body: &[u8]) -> Result<(), ResetError> {
        let mut out = BytesMut::new();
        command::write_text_command(&mut out, code, body);
        let sent = match self.stream.write_all(&out).await {
            Ok(()) => self.stream.flush().await,
            Err(e) => Err(e),
        };
        sent.map_err(|source| ResetError::io(&self.instance.addr, source))
    }

    /// Reads one whole packet's payload.
    async fn reset_packet(&mut self) -> Result<Bytes, ResetError> {
        loop {
            match packet::packet(&self.buf, MAX_LOGIN_PACKET) {
                Ok(Some((h, _))) => {
                    let mut whole = self.buf.split_to(packet::HEADER_LEN + h.len);
                    whole.advance(packet::HEADER_LEN);
                    return Ok(whole.freeze());
                }
                Ok(None) => {}
                Err(e) => return Err(ResetError::protocol(&self.instance.addr, &e.to_string())),
            }
            crate::backend::reset_read(&mut self.stream, &mut self.buf, &self.instance.addr)
                .await?;
        }
    }

    fn reset_refused(&self, payload: &[u8]) -> ResetError {
        let (code, message) = match messages::parse_err(payload) {
            Ok(e) => (e.code, String::from_utf8_lossy(e.message).into_owned()),
            Err(e) => (0, e.to_string()),
        };
        ResetError::Refused {
            addr: self.instance.addr.clone(),
            code: code.to_string(),
            message,
        }
    }
}
