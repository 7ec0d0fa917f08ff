//! The MySQL wire side of a scripted server: a HandshakeV10 greeting offering what the
//! proxy relays (mysql_native_password), OK to any HandshakeResponse, then COM_QUERY and
//! prepared statements (COM_STMT_PREPARE, then COM_STMT_EXECUTE, where the statement
//! counts as received) answered by [`Reply`] as text or binary result sets or OK packets,
//! with SERVER_STATUS_IN_TRANS kept in the status flags; result sets end with EOF or,
//! under CLIENT_DEPRECATE_EOF, an OK terminator, as the login negotiated.

use std::collections::HashMap;

use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::server::{Fault, Reply, Shared};
use crate::protocol::mysql::constants::{
    CapabilityFlags, StatusFlags, UTF8MB4_GENERAL_CI, auth, command,
};
use crate::protocol::mysql::handshake::{self, Greeting};
use crate::protocol::mysql::messages::{self, EofPacket, OkPacket};
use crate::protocol::mysql::packet;

/// MYSQL_TYPE_VAR_STRING.
const VAR_STRING: u8 = 0xFD;

pub(super) async fn serve(mut tcp: TcpStream, shared: &Shared) -> std::io::Result<()> {
    let mut out = BytesMut::new();
    let greeting = Greeting {
        server_version: "8.0.36-scripted",
        connection_id: 7,
        scramble: [b'a'; auth::SCRAMBLE_LEN],
        capabilities: handshake::offered_capabilities(),
        charset: UTF8MB4_GENERAL_CI,
        status: StatusFlags::SERVER_STATUS_AUTOCOMMIT,
        auth_plugin: auth::MYSQL_NATIVE_PASSWORD,
        mariadb_capabilities: 0,
    };
    handshake::write_greeting(&mut out, &greeting);
    tcp.write_all(&out).await?;
    let (_, hello) = read_packet(&mut tcp).await?;
    let bits = hello
        .get(..4)
        .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    let deprecate_eof =
        CapabilityFlags::from_bits_truncate(bits).contains(CapabilityFlags::CLIENT_DEPRECATE_EOF);
    let mut status = StatusFlags::SERVER_STATUS_AUTOCOMMIT;
    let mut prepared: HashMap<u32, String> = HashMap::new();
    let mut next_id = 0;
    out.clear();
    ok(&mut out, 2, status);
    tcp.write_all(&out).await?;

    loop {
        let (_, payload) = read_packet(&mut tcp).await?;
        out.clear();
        match payload.first().copied() {
            Some(command::COM_QUIT) | None => return Ok(()),
            Some(command::COM_QUERY) => {
                let sql = String::from_utf8_lossy(&payload[1..]).into_owned();
                let reply = shared.received(&sql);
                let rows = Rows::Text;
                let go_on = answer(reply, shared, deprecate_eof, rows, &mut status, &mut out);
                tcp.write_all(&out).await?;
                if !go_on {
                    return Ok(());
                }
            }
            Some(command::COM_STMT_PREPARE) => {
                let sql = String::from_utf8_lossy(&payload[1..]).into_owned();
                next_id += 1;
                let id = next_id;
                let columns = Reply::to(&sql) == Reply::Row;
                prepared.insert(id, sql);
                prepare_ok(id, columns, deprecate_eof, status, &mut out);
                tcp.write_all(&out).await?;
            }
            Some(command::COM_STMT_EXECUTE) => {
                let id = payload
                    .get(1..5)
                    .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
                let sql = prepared.get(&id).cloned().unwrap_or_default();
                let reply = shared.received(&sql);
                let rows = Rows::Binary;
                let go_on = answer(reply, shared, deprecate_eof, rows, &mut status, &mut out);
                tcp.write_all(&out).await?;
                if !go_on {
                    return Ok(());
                }
            }
            Some(command::COM_STMT_CLOSE) => {
                let id = payload
                    .get(1..5)
                    .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
                prepared.remove(&id);
            }
            Some(_) => {
                ok(&mut out, 1, status);
                tcp.write_all(&out).await?;
            }
        }
    }
}

/// Writes the answer to one COM_QUERY into `out`; `false` when the connection must close
/// after `out` is sent.
fn answer(
    reply: Reply,
    shared: &Shared,
    deprecate_eof: bool,
    rows: Rows,
    status: &mut StatusFlags,
    out: &mut BytesMut,
) -> bool {
    match reply {
        Reply::Row => {
            let seq = head_and_row(shared.name, deprecate_eof, rows, *status, out);
            if deprecate_eof {
                let terminator = OkPacket {
                    status: *status,
                    ..OkPacket::default()
                };
                messages::ok_packet(out, seq, &terminator, true);
            } else {
                let eof = EofPacket {
                    warnings: 0,
                    status: *status,
                };
                messages::eof_packet(out, seq, eof);
            }
        }
        Reply::Begin => {
            status.insert(StatusFlags::SERVER_STATUS_IN_TRANS);
            ok(out, 1, *status);
        }
        Reply::End => {
            status.remove(StatusFlags::SERVER_STATUS_IN_TRANS);
            ok(out, 1, *status);
        }
        Reply::Done => ok(out, 1, *status),
        Reply::Fault(Fault::CloseAfterFirstRow) => {
            head_and_row(shared.name, deprecate_eof, rows, *status, out);
            return false;
        }
        Reply::Fault(Fault::CloseBeforeAnswer) => return false,
        Reply::Fault(Fault::CrashBeforeAnswer) => {
            shared.crash();
            return false;
        }
        Reply::Fault(Fault::AnswerError) => {
            packet::write_with(out, 1, |b| {
                b.put_u8(0xFF);
                b.put_u16_le(1146);
                b.put_slice(b"#42S02");
                b.put_slice(b"Table 't' doesn't exist (scripted)");
            });
        }
    }
    true
}

fn ok(out: &mut BytesMut, seq: u8, status: StatusFlags) {
    let ok = OkPacket {
        status,
        ..OkPacket::default()
    };
    messages::ok_packet(out, seq, &ok, false);
}

/// How a result set's rows are encoded: COM_QUERY's text rows, or COM_STMT_EXECUTE's
/// binary ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rows {
    Text,
    Binary,
}

/// COM_STMT_PREPARE's answer: the statement's id, no parameters, and one column (`name`)
/// when it returns rows.
fn prepare_ok(
    id: u32,
    columns: bool,
    deprecate_eof: bool,
    status: StatusFlags,
    out: &mut BytesMut,
) {
    let mut seq = packet::write_with(out, 1, |b| {
        b.put_u8(0);
        b.put_u32_le(id);
        b.put_u16_le(u16::from(columns));
        b.put_u16_le(0);
        b.put_u8(0);
        b.put_u16_le(0);
    });
    if columns {
        seq = column(out, seq);
        if !deprecate_eof {
            let eof = EofPacket {
                warnings: 0,
                status,
            };
            messages::eof_packet(out, seq, eof);
        }
    }
}

/// The definition of the one column, `name`; returns the next sequence id.
fn column(out: &mut BytesMut, seq: u8) -> u8 {
    packet::write_with(out, seq, |b| {
        for s in ["def", "", "", "", "name", ""] {
            messages::put_lenenc_str(b, s.as_bytes());
        }
        messages::put_lenenc_int(b, 0x0c);
        b.put_u16_le(u16::from(UTF8MB4_GENERAL_CI));
        b.put_u32_le(255);
        b.put_u8(VAR_STRING);
        b.put_u16_le(0);
        b.put_u8(0);
        b.put_u16_le(0);
    })
}

/// A result set's column count, its one column (`name`) and one row holding `value`;
/// returns the next sequence id (for the terminator).
fn head_and_row(
    value: &str,
    deprecate_eof: bool,
    rows: Rows,
    status: StatusFlags,
    out: &mut BytesMut,
) -> u8 {
    let mut seq = packet::write_with(out, 1, |b| messages::put_lenenc_int(b, 1));
    seq = column(out, seq);
    if !deprecate_eof {
        let eof = EofPacket {
            warnings: 0,
            status,
        };
        seq = messages::eof_packet(out, seq, eof);
    }
    packet::write_with(out, seq, |b| {
        if rows == Rows::Binary {
            // The row's header, and its NULL bitmap (no NULLs).
            b.put_u8(0);
            b.put_u8(0);
        }
        messages::put_lenenc_str(b, value.as_bytes());
    })
}

/// Reads one packet: (sequence id, payload).
async fn read_packet(tcp: &mut TcpStream) -> std::io::Result<(u8, Vec<u8>)> {
    let mut head = [0; packet::HEADER_LEN];
    tcp.read_exact(&mut head).await?;
    let len = u32::from_le_bytes([head[0], head[1], head[2], 0]) as usize;
    let mut payload = vec![0; len];
    tcp.read_exact(&mut payload).await?;
    Ok((head[3], payload))
}
