//! The PostgreSQL wire side of a scripted server: a trust login (AuthenticationOk, the
//! ParameterStatus messages drivers read, BackendKeyData, ReadyForQuery), then simple
//! Queries answered by [`Reply`], with the transaction status in every ReadyForQuery.

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

    let mut status = b'I';
    loop {
        let kind = tcp.read_u8().await?;
        let len = tcp.read_i32().await?;
        let mut body = vec![0; usize::try_from(len - 4).unwrap_or_default()];
        tcp.read_exact(&mut body).await?;
        out.clear();
        match kind {
            tag::QUERY => {
                let sql = messages::query_text(&body).unwrap_or_default();
                let sql = String::from_utf8_lossy(sql).into_owned();
                if !answer(&sql, shared, &mut status, &mut out) {
                    tcp.write_all(&out).await?;
                    return Ok(());
                }
                messages::ready_for_query(&mut out, status);
            }
            tag::SYNC => messages::ready_for_query(&mut out, status),
            tag::TERMINATE => return Ok(()),
            _ => {}
        }
        tcp.write_all(&out).await?;
    }
}

/// Writes the answer to one Query (each of its statements) into `out`; `false` when the
/// connection must close after `out` is sent.
fn answer(sql: &str, shared: &Shared, status: &mut u8, out: &mut BytesMut) -> bool {
    match shared.received(sql) {
        Reply::Row => {
            row(shared.name, out);
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
            row(shared.name, out);
            return false;
        }
        Reply::Fault(Fault::CloseBeforeAnswer) => return false,
        Reply::Fault(Fault::CrashBeforeAnswer) => {
            shared.crash();
            return false;
        }
        Reply::Fault(Fault::AnswerError) => {
            let message = "relation \"t\" does not exist (scripted)";
            messages::error_response(out, Severity::Error, "42P01", message);
            if *status == b'T' {
                *status = b'E';
            }
        }
    }
    true
}

/// RowDescription and one DataRow: a text column `name` holding `value`.
fn row(value: &str, out: &mut BytesMut) {
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
    out.put_u8(b'D');
    out.put_i32((4 + 2 + 4 + value.len()) as i32);
    out.put_i16(1);
    out.put_i32(value.len() as i32);
    out.put_slice(value.as_bytes());
}
