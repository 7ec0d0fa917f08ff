//! One MySQL backend connection as a session uses it: send a command, relay its response
//! packet by packet (bytes unchanged, except the statement id of a prepare-OK, which is
//! the proxy's), forward LOCAL INFILE data, and run commands silently for replays.

use crate::pool::Lease;
use bytes::BytesMut;
use tokio::io::AsyncReadExt;

use super::SessionError;
use super::startup::Client;
use crate::backend::mysql::MysqlConn;
use crate::net::Arrived;
use crate::protocol::mysql::constants::command::COM_QUERY;
use crate::protocol::mysql::constants::{CapabilityFlags, StatusFlags, header};
use crate::protocol::mysql::packet::{self, HEADER_LEN, MAX_PHYSICAL_PAYLOAD};
use crate::protocol::mysql::response::{Prepared, Response, Step};
use crate::protocol::mysql::{handshake, messages};

/// One physical packet is at most 16 MiB plus its header.
const MAX_PACKET: usize = MAX_PHYSICAL_PAYLOAD;

/// How much a client may send ahead while its command runs (the next commands, waiting in
/// its buffer) before the proxy stops reading it until the answer is relayed.
const CLIENT_AHEAD_LIMIT: usize = 2 << 20;

pub struct Backend {
    pub conn: Lease<MysqlConn>,
    pub deprecate_eof: bool,
    /// How many recorded session replays this connection has run.
    pub applied: usize,
}

/// How a relayed response ended.
#[derive(Debug, Clone, Copy, Default)]
pub struct Relayed {
    pub status: Option<StatusFlags>,
    pub prepared: Option<Prepared>,
    pub failed: bool,
    /// Bytes written to the client.
    pub bytes: usize,
    /// The final OK gave an AUTO_INCREMENT value (`LAST_INSERT_ID()` on this connection).
    pub insert_id: bool,
}

impl Backend {
    pub fn new(conn: Lease<MysqlConn>) -> Backend {
        Backend {
            deprecate_eof: conn
                .capabilities
                .contains(CapabilityFlags::CLIENT_DEPRECATE_EOF),
            conn,
            applied: 0,
        }
    }

    fn lost(&self, source: std::io::Error) -> SessionError {
        SessionError::BackendLost {
            addr: self.conn.instance.addr.clone(),
            source,
        }
    }

    fn broken(&self, detail: String) -> SessionError {
        SessionError::BackendProtocol {
            addr: self.conn.instance.addr.clone(),
            detail,
        }
    }

    /// Whether the server has closed this connection or is closing it, judged from what has
    /// already arrived, without waiting. Between commands a server speaks only to say
    /// goodbye (an ERR just before it closes), so anything that arrived counts.
    pub fn closed(&mut self) -> bool {
        let conn = &mut *self.conn;
        conn.stream.read_arrived(&mut conn.buf) != Arrived::Nothing
    }

    pub async fn send(&mut self, bytes: &[u8]) -> Result<(), SessionError> {
        let result = match self.conn.stream.write_or_rest(bytes) {
            Ok(None) => return Ok(()),
            Ok(Some(rest)) => rest.await,
            Err(e) => Err(e),
        };
        result.map_err(|e| self.lost(e))
    }

    pub(super) async fn fill(&mut self) -> Result<(), SessionError> {
        if self.conn.buf.capacity() - self.conn.buf.len() < 4096 {
            self.conn.buf.reserve(64 * 1024);
        }
        let conn = &mut *self.conn;
        match conn.stream.read_buf(&mut conn.buf).await {
            Ok(0) => Err(self.lost(std::io::ErrorKind::UnexpectedEof.into())),
            Ok(_) => Ok(()),
            Err(e) => Err(self.lost(e)),
        }
    }

    /// Reads more of a response, watching the client meanwhile: a client that closes its
    /// connection while its command runs (a driver's timeout) is `ClientGone` at once, so
    /// that the session can kill the statement. No read() per command comes of it: the read
    /// of the command was short, which leaves the socket not ready until the client sends
    /// again; what it sends meanwhile waits in its buffer, up to [`CLIENT_AHEAD_LIMIT`].
    /// A client that said goodbye (COM_QUIT) before it closed gets what a server gives it:
    /// the command runs to its end (`closed` is then set, and the client no longer read).
    async fn fill_watching(
        &mut self,
        client: &mut Client,
        closed: &mut bool,
    ) -> Result<(), SessionError> {
        loop {
            let watch = !*closed && client.buf.len() < CLIENT_AHEAD_LIMIT;
            tokio::select! {
                biased;
                filled = self.fill() => return filled,
                read = client.fill(), if watch => match read {
                    Ok(0) if said_goodbye(&client.buf) => *closed = true,
                    Ok(0) => return Err(SessionError::ClientGone),
                    Ok(_) => {}
                    Err(e) => return Err(SessionError::ClientIo(e)),
                },
            }
        }
    }

    /// Relays the response to `command` to the client. A prepare-OK gets `proxy_id` as its
    /// statement id. LOCAL INFILE data from the client is forwarded when the server asks.
    pub async fn relay(
        &mut self,
        client: &mut Client,
        command: u8,
        proxy_id: Option<u32>,
        scratch: &mut BytesMut,
    ) -> Result<Relayed, SessionError> {
        let mut response = Response::new(command, self.deprecate_eof);
        let mut seen = Relayed::default();
        if response.is_done() {
            return Ok(seen);
        }
        // Set while the previous physical packet was a full 16 MiB one: this one continues it.
        let mut continuing = false;
        let mut client_closed = false;
        loop {
            let mut pos = 0;
            let mut run_start = 0;
            let mut end = None;
            loop {
                let framed = packet::packet(&self.conn.buf[pos..], MAX_PACKET)
                    .map_err(|e| self.broken(e.to_string()))?;
                let Some((h, payload)) = framed else { break };
                let total = HEADER_LEN + h.len;
                let first_piece = !continuing;
                continuing = h.len == MAX_PHYSICAL_PAYLOAD;
                if !first_piece {
                    pos += total;
                    continue;
                }
                let step = response
                    .feed(payload)
                    .map_err(|e| self.broken(e.to_string()))?;
                if let (Some(id), Some(p), None) = (proxy_id, response.prepared(), seen.prepared) {
                    // The prepare-OK: hand the client the proxy's statement id.
                    seen.prepared = Some(p);
                    scratch.clear();
                    scratch.extend_from_slice(&self.conn.buf[pos..pos + total]);
                    scratch[HEADER_LEN + 1..HEADER_LEN + 5].copy_from_slice(&id.to_le_bytes());
                    write_client(client, &self.conn.buf[run_start..pos], &mut seen).await?;
                    write_client(client, scratch, &mut seen).await?;
                    pos += total;
                    run_start = pos;
                } else {
                    pos += total;
                }
                match step {
                    Step::More => {}
                    Step::LocalInfile => {
                        end = Some(None);
                        break;
                    }
                    Step::Done { status } => {
                        seen.insert_id = gave_insert_id(payload);
                        end = Some(Some((status, false)));
                        break;
                    }
                    Step::Failed { status, .. } => {
                        end = Some(Some((status, true)));
                        break;
                    }
                }
            }
            write_client(client, &self.conn.buf[run_start..pos], &mut seen).await?;
            bytes::Buf::advance(&mut self.conn.buf, pos);
            match end {
                Some(Some((status, failed))) => {
                    seen.status = status.or(response.status());
                    seen.failed = failed;
                    if seen.prepared.is_none() {
                        seen.prepared = response.prepared();
                    }
                    if let Some(s) = seen.status {
                        self.conn.status = s;
                    }
                    return Ok(seen);
                }
                Some(None) => self.forward_local_infile(client).await?,
                None => self.fill_watching(client, &mut client_closed).await?,
            }
        }
    }

    /// Forwards the client's LOCAL INFILE packets up to and including the empty one.
    async fn forward_local_infile(&mut self, client: &mut Client) -> Result<(), SessionError> {
        loop {
            let mut pos = 0;
            let mut last = false;
            while let Some((h, _)) = packet::packet(&client.buf[pos..], MAX_PACKET)
                .map_err(|e| SessionError::ClientProtocol(e.to_string()))?
            {
                pos += HEADER_LEN + h.len;
                if h.len == 0 {
                    last = true;
                    break;
                }
            }
            let chunk = client.buf.split_to(pos);
            self.send(&chunk).await?;
            if last {
                return Ok(());
            }
            match client.fill().await {
                Ok(0) => return Err(SessionError::ClientGone),
                Ok(_) => {}
                Err(e) => return Err(SessionError::ClientIo(e)),
            }
        }
    }

    /// Sends a command the proxy built (sequence id 0) and reads its whole response
    /// without relaying it. Returns how it ended, with the ERR message if it failed.
    pub async fn run_silently(
        &mut self,
        command: &[u8],
    ) -> Result<(Relayed, Option<String>), SessionError> {
        let Some(&code) = command.get(HEADER_LEN) else {
            return Ok((Relayed::default(), None));
        };
        self.send(command).await?;
        let mut response = Response::new(code, self.deprecate_eof);
        let mut seen = Relayed::default();
        if response.is_done() {
            return Ok((seen, None));
        }
        let mut continuing = false;
        loop {
            while let Some((h, payload)) = packet::packet(&self.conn.buf, MAX_PACKET)
                .map_err(|e| self.broken(e.to_string()))?
            {
                let total = HEADER_LEN + h.len;
                let first_piece = !continuing;
                continuing = h.len == MAX_PHYSICAL_PAYLOAD;
                let step = if first_piece {
                    let step = response
                        .feed(payload)
                        .map_err(|e| self.broken(e.to_string()))?;
                    let message = match step {
                        Step::Failed { .. } => crate::protocol::mysql::messages::parse_err(payload)
                            .map(|e| String::from_utf8_lossy(e.message).into_owned())
                            .ok(),
                        _ => None,
                    };
                    Some((step, message))
                } else {
                    None
                };
                bytes::Buf::advance(&mut self.conn.buf, total);
                match step {
                    Some((Step::Done { status }, _)) => {
                        seen.status = status;
                        seen.prepared = response.prepared();
                        return Ok((seen, None));
                    }
                    Some((Step::Failed { .. }, message)) => {
                        seen.failed = true;
                        return Ok((seen, Some(message.unwrap_or_default())));
                    }
                    Some((Step::LocalInfile, _)) => {
                        return Err(self.broken("LOCAL INFILE during a replayed command".into()));
                    }
                    _ => {}
                }
            }
            self.fill().await?;
        }
    }
}

/// A column of a row the proxy read for itself: the column's type (a MySQL `MYSQL_TYPE_*`
/// code) and its value in the text protocol (`None`: NULL).
pub type Cell = (u8, Option<Vec<u8>>);

impl Backend {
    /// Sends a COM_QUERY the proxy built and reads its answer without relaying it: the
    /// first row of its result, with the column types; `None` when the server refused it
    /// or sent no row.
    pub async fn first_row(&mut self, command: &[u8]) -> Result<Option<Vec<Cell>>, SessionError> {
        self.send(command).await?;
        let mut response = Response::new(COM_QUERY, self.deprecate_eof);
        let (mut types, mut row, mut columns) = (Vec::new(), None, None);
        let extended = self.conn.mariadb_capabilities & handshake::MARIADB_EXTENDED_METADATA != 0;
        loop {
            while let Some((h, payload)) = packet::packet(&self.conn.buf, MAX_PACKET)
                .map_err(|e| self.broken(e.to_string()))?
            {
                let total = HEADER_LEN + h.len;
                let step = response
                    .feed(payload)
                    .map_err(|e| self.broken(e.to_string()))?;
                match columns {
                    None => columns = messages::lenenc_int(payload).map(|(n, _)| n as usize),
                    Some(n) if types.len() < n => types.push(column_type(payload, extended)),
                    Some(n) if row.is_none() && step == Step::More && !is_eof(payload) => {
                        row = text_row(payload, n);
                    }
                    Some(_) => {}
                }
                bytes::Buf::advance(&mut self.conn.buf, total);
                match step {
                    Step::Done { .. } => {
                        let cells = row.map(|r: Vec<_>| types.iter().flatten().copied().zip(r));
                        return Ok(cells
                            .map(Iterator::collect)
                            .filter(|c: &Vec<_>| c.len() == types.len()));
                    }
                    Step::Failed { .. } => return Ok(None),
                    Step::LocalInfile => {
                        return Err(self.broken("LOCAL INFILE answering the proxy's query".into()));
                    }
                    Step::More => {}
                }
            }
            self.fill().await?;
        }
    }
}

/// Whether `payload` is an EOF packet (after the column definitions without DEPRECATE_EOF).
fn is_eof(payload: &[u8]) -> bool {
    payload.first() == Some(&header::EOF) && payload.len() < 9
}

/// The type of a column definition (protocol 4.1): after six length-encoded strings (seven
/// with MariaDB's `extended` metadata) and the length of the fixed fields, the character set
/// (2 bytes) and length (4), the type.
fn column_type(payload: &[u8], extended: bool) -> Option<u8> {
    let mut at = 0;
    for _ in 0..6 + usize::from(extended) {
        let (len, width) = messages::lenenc_int(payload.get(at..)?)?;
        at += width + usize::try_from(len).ok()?;
    }
    let (_, width) = messages::lenenc_int(payload.get(at..)?)?;
    payload.get(at + width + 6).copied()
}

/// The values of a text-protocol row of `n` columns (`None` for NULL).
fn text_row(payload: &[u8], n: usize) -> Option<Vec<Option<Vec<u8>>>> {
    let mut at = 0;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        if payload.get(at) == Some(&0xFB) {
            out.push(None);
            at += 1;
            continue;
        }
        let (len, width) = messages::lenenc_int(payload.get(at..)?)?;
        let end = at + width + usize::try_from(len).ok()?;
        out.push(Some(payload.get(at + width..end)?.to_vec()));
        at = end;
    }
    Some(out)
}

async fn write_client(
    client: &mut Client,
    bytes: &[u8],
    seen: &mut Relayed,
) -> Result<(), SessionError> {
    if bytes.is_empty() {
        return Ok(());
    }
    // Flushed when not written at once: over TLS a write may leave records buffered when
    // the socket is full, and the client would wait for the end of an answer that never
    // leaves.
    if let Some(rest) = client
        .write_or_rest(bytes)
        .map_err(SessionError::ClientIo)?
    {
        rest.await.map_err(SessionError::ClientIo)?;
    }
    seen.bytes += bytes.len();
    client.written += bytes.len() as u64;
    client.last_seq = packet::last_seq(bytes).or(client.last_seq);
    Ok(())
}

/// Whether `payload`, the last packet of a response, is an OK with a last insert id: its
/// header, then the affected rows and the insert id as length-encoded integers.
fn gave_insert_id(payload: &[u8]) -> bool {
    let Some((&header::OK, rest)) = payload.split_first() else {
        return false;
    };
    let id = messages::lenenc_int(rest).and_then(|(_, n)| messages::lenenc_int(rest.get(n..)?));
    id.is_some_and(|(id, _)| id != 0)
}

/// Whether the client's buffered packets hold a COM_QUIT: it closed its connection after
/// saying goodbye, not while waiting for an answer it gave up on.
fn said_goodbye(buf: &[u8]) -> bool {
    let mut rest = buf;
    while let Ok(Some((header, payload))) = packet::packet(rest, MAX_PACKET) {
        if payload == [crate::protocol::mysql::constants::command::COM_QUIT] {
            return true;
        }
        let Some(next) = rest.get(HEADER_LEN + header.len..) else {
            return false;
        };
        rest = next;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A column definition named `j` of `type`, with MariaDB's extended type info `json`
    /// when `extended`.
    fn definition(ty: u8, extended: bool) -> Vec<u8> {
        let mut p = b"\x03def\x02db\x01t\x01t\x01j\x01j".to_vec();
        if extended {
            p.extend_from_slice(b"\x06\x01\x04json");
        }
        p.extend_from_slice(&[
            0x0c, 0xe0, 0x00, 0xff, 0xff, 0xff, 0xfc, ty, 0x90, 0x00, 0, 0, 0,
        ]);
        p
    }

    #[test]
    fn column_types_with_and_without_extended_metadata() {
        assert_eq!(column_type(&definition(0xfc, false), false), Some(0xfc));
        assert_eq!(column_type(&definition(0xfc, true), true), Some(0xfc));
        assert_ne!(column_type(&definition(0xfc, true), false), Some(0xfc));
    }
}
