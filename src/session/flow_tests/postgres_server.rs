//! The PostgreSQL wire side of a scripted server: a trust login (AuthenticationOk, the
//! ParameterStatus messages drivers read, BackendKeyData, ReadyForQuery), then simple
//! Queries and extended-protocol messages answered by [`Reply`], with the transaction
//! status in every ReadyForQuery. An extended-protocol statement counts as received (and
//! meets a fault) at its Execute; after an error, messages are skipped until Sync, as
//! PostgreSQL does.

use std::collections::HashMap;

use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::server::{Fault, Reply, Shared};
use crate::protocol::postgres::messages::{self, Severity, tag};
use crate::protocol::postgres::startup::SSL_REQUEST_CODE;

/// PostgreSQL's `text` type.
const TEXT_OID: i32 = 25;

pub(super) async fn serve(mut tcp: TcpStream, shared: &Shared) -> std::io::Result<()> {
    loop {
        let len = tcp.read_i32().await?;
        let mut body = vec![0; usize::try_from(len - 4).unwrap_or_default()];
        tcp.read_exact(&mut body).await?;
        if body.get(..4) == Some(&SSL_REQUEST_CODE.to_be_bytes()[..]) {
            tcp.write_all(b"N").await?;
            continue;
        }
        break;
    }
    let mut out = BytesMut::new();
    messages::authentication(&mut out, messages::auth::OK, &[]);
    for (name, value) in [
        ("server_version", "15.0 (scripted)"),
        ("server_encoding", "UTF8"),
        ("client_encoding", "UTF8"),
        ("DateStyle", "ISO, MDY"),
        ("integer_datetimes", "on"),
        ("standard_conforming_strings", "on"),
    ] {
        messages::parameter_status(&mut out, name, value);
    }
    messages::backend_key_data(&mut out, 4242, 1);
    messages::ready_for_query(&mut out, b'I');
    tcp.write_all(&out).await?;
    out.clear();

    let mut status = b'I';
    let mut extended = Extended::default();
    loop {
        let kind = tcp.read_u8().await?;
        let len = tcp.read_i32().await?;
        let mut body = vec![0; usize::try_from(len - 4).unwrap_or_default()];
        tcp.read_exact(&mut body).await?;
        // As PostgreSQL does, output waits in `out` until a Query ends, Sync or Flush.
        let next = match kind {
            tag::QUERY => {
                let sql = messages::query_text(&body).unwrap_or_default();
                let sql = String::from_utf8_lossy(sql).into_owned();
                match answer(&sql, shared, &mut status, true, &mut out) {
                    Next::Wait => {
                        messages::ready_for_query(&mut out, status);
                        Next::Send
                    }
                    close => close,
                }
            }
            tag::SYNC => {
                extended.failed = false;
                messages::ready_for_query(&mut out, status);
                Next::Send
            }
            tag::FLUSH => Next::Send,
            tag::TERMINATE => return Ok(()),
            _ if extended.failed => Next::Wait,
            _ => extended.message(kind, &body, shared, &mut status, &mut out),
        };
        match next {
            Next::Wait => continue,
            Next::Send => {}
            Next::Close { send } => {
                if send {
                    tcp.write_all(&out).await?;
                }
                return Ok(());
            }
        }
        tcp.write_all(&out).await?;
        out.clear();
    }
}

/// What the connection does after a message.
enum Next {
    /// Keeps the output for later.
    Wait,
    /// Sends the output now.
    Send,
    /// Closes the connection, with or without sending the output first (a crash loses it).
    Close { send: bool },
}

/// A connection's prepared statements and portals, by name: their SQL.
#[derive(Default)]
struct Extended {
    statements: HashMap<Vec<u8>, String>,
    portals: HashMap<Vec<u8>, String>,
    /// An error was sent: skip to Sync.
    failed: bool,
}

impl Extended {
    /// Answers one extended-protocol message into `out`.
    fn message(
        &mut self,
        kind: u8,
        body: &[u8],
        shared: &Shared,
        status: &mut u8,
        out: &mut BytesMut,
    ) -> Next {
        match kind {
            tag::PARSE => {
                if let Some((name, sql)) = messages::parse_fields(body) {
                    let sql = String::from_utf8_lossy(sql).into_owned();
                    self.statements.insert(name.to_vec(), sql);
                }
                tagged(out, b'1');
            }
            tag::BIND => {
                if let Some((portal, statement)) = messages::bind_fields(body) {
                    let sql = self.statements.get(statement).cloned().unwrap_or_default();
                    self.portals.insert(portal.to_vec(), sql);
                }
                tagged(out, b'2');
            }
            tag::DESCRIBE => {
                let Some((target, name)) = messages::target_fields(body) else {
                    return Next::Wait;
                };
                let sql = if target == b'S' {
                    out.put_u8(b't');
                    out.put_i32(6);
                    out.put_i16(0);
                    self.statements.get(name)
                } else {
                    self.portals.get(name)
                };
                match sql.map(|s| Reply::to(s)) {
                    Some(Reply::Row) => row_description(out),
                    _ => tagged(out, b'n'),
                }
            }
            tag::EXECUTE => {
                let portal = messages::execute_portal(body).unwrap_or_default();
                let sql = self.portals.get(portal).cloned().unwrap_or_default();
                let at = out.len();
                // Described already: the rows come without a RowDescription.
                let next = answer(&sql, shared, status, false, out);
                self.failed = out.get(at) == Some(&tag::ERROR_RESPONSE);
                return next;
            }
            tag::CLOSE => tagged(out, b'3'),
            _ => {}
        }
        Next::Wait
    }
}

/// A message with no body.
fn tagged(out: &mut BytesMut, kind: u8) {
    out.put_u8(kind);
    out.put_i32(4);
}

/// Writes the answer to one Query (each of its statements) or Execute into `out`, rows
/// with their RowDescription when `describe`.
fn answer(sql: &str, shared: &Shared, status: &mut u8, describe: bool, out: &mut BytesMut) -> Next {
    match shared.received(sql) {
        Reply::Row => {
            if describe {
                row_description(out);
            }
            // A setting read back in hex (`session::postgres::settings`): the name, so.
            let hex: String = shared.name.bytes().map(|b| format!("{b:02x}")).collect();
            let value = if sql.contains("'hex')") {
                &hex
            } else {
                shared.name
            };
            data_row(value, out);
            messages::command_complete(out, "SELECT 1");
        }
        Reply::Begin => {
            *status = b'T';
            messages::command_complete(out, "BEGIN");
        }
        Reply::End => {
            *status = b'I';
            messages::command_complete(out, "COMMIT");
        }
        Reply::Done => {
            for _ in sql.split(';').filter(|s| !s.trim().is_empty()) {
                messages::command_complete(out, "OK");
            }
        }
        Reply::Fault(Fault::CloseAfterFirstRow) => {
            if describe {
                row_description(out);
            }
            data_row(shared.name, out);
            return Next::Close { send: true };
        }
        Reply::Fault(Fault::CloseBeforeAnswer) => return Next::Close { send: false },
        Reply::Fault(Fault::CrashBeforeAnswer) => {
            shared.crash();
            return Next::Close { send: false };
        }
        Reply::Fault(Fault::AnswerError) => {
            let message = "relation \"t\" does not exist (scripted)";
            messages::error_response(out, Severity::Error, "42P01", message);
            if *status == b'T' {
                *status = b'E';
            }
        }
    }
    Next::Wait
}

/// RowDescription: one text column, `name`.
fn row_description(out: &mut BytesMut) {
    out.put_u8(b'T');
    let fields = 2 + "name".len() + 1 + 4 + 2 + 4 + 2 + 4 + 2;
    out.put_i32((4 + fields) as i32);
    out.put_i16(1);
    out.put_slice(b"name\0");
    out.put_i32(0);
    out.put_i16(0);
    out.put_i32(TEXT_OID);
    out.put_i16(-1);
    out.put_i32(-1);
    out.put_i16(0);
}

/// One DataRow holding `value`.
fn data_row(value: &str, out: &mut BytesMut) {
    out.put_u8(b'D');
    out.put_i32((4 + 2 + 4 + value.len()) as i32);
    out.put_i16(1);
    out.put_i32(value.len() as i32);
    out.put_slice(value.as_bytes());
}
