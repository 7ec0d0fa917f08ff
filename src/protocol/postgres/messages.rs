//! The messages the proxy writes itself (authentication, errors, ReadyForQuery …) and
//! borrowing readers for the few fields routing needs from client messages.
//! Everything else is relayed as bytes.

use bytes::{BufMut, BytesMut};

use super::frame::cstr;

/// Message tags, named after the protocol documentation.
pub mod tag {
    // frontend
    pub const QUERY: u8 = b'Q';
    pub const PARSE: u8 = b'P';
    pub const BIND: u8 = b'B';
    pub const DESCRIBE: u8 = b'D';
    pub const EXECUTE: u8 = b'E';
    pub const CLOSE: u8 = b'C';
    pub const SYNC: u8 = b'S';
    pub const FLUSH: u8 = b'H';
    pub const FUNCTION_CALL: u8 = b'F';
    pub const TERMINATE: u8 = b'X';
    pub const COPY_DATA: u8 = b'd';
    pub const COPY_DONE: u8 = b'c';
    pub const COPY_FAIL: u8 = b'f';
    pub const PASSWORD: u8 = b'p';
    // backend
    pub const AUTHENTICATION: u8 = b'R';
    pub const PARAMETER_STATUS: u8 = b'S';
    pub const BACKEND_KEY_DATA: u8 = b'K';
    pub const READY_FOR_QUERY: u8 = b'Z';
    pub const ERROR_RESPONSE: u8 = b'E';
    pub const NOTICE_RESPONSE: u8 = b'N';
    pub const NOTIFICATION_RESPONSE: u8 = b'A';
    pub const DATA_ROW: u8 = b'D';
    pub const PARSE_COMPLETE: u8 = b'1';
    pub const CLOSE_COMPLETE: u8 = b'3';
    pub const COMMAND_COMPLETE: u8 = b'C';
    pub const PARAMETER_DESCRIPTION: u8 = b't';
    pub const ROW_DESCRIPTION: u8 = b'T';
    pub const NO_DATA: u8 = b'n';
    pub const COPY_IN_RESPONSE: u8 = b'G';
    pub const COPY_OUT_RESPONSE: u8 = b'H';
    pub const COPY_BOTH_RESPONSE: u8 = b'W';
    pub const NEGOTIATE_PROTOCOL_VERSION: u8 = b'v';
}

/// Authentication request codes in an `R` message.
pub mod auth {
    pub const OK: i32 = 0;
    pub const CLEARTEXT_PASSWORD: i32 = 3;
    pub const MD5_PASSWORD: i32 = 5;
    pub const SASL: i32 = 10;
    pub const SASL_CONTINUE: i32 = 11;
    pub const SASL_FINAL: i32 = 12;
}

/// Writes a tagged message whose body `body` fills in.
fn tagged(out: &mut BytesMut, tag: u8, body: impl FnOnce(&mut BytesMut)) {
    out.put_u8(tag);
    let at = out.len();
    out.put_i32(0);
    body(out);
    let len = (out.len() - at) as i32;
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

fn put_cstr(out: &mut BytesMut, s: &[u8]) {
    out.put_slice(s);
    out.put_u8(0);
}

pub fn authentication(out: &mut BytesMut, code: i32, data: &[u8]) {
    tagged(out, tag::AUTHENTICATION, |b| {
        b.put_i32(code);
        b.put_slice(data);
    });
}

/// AuthenticationSASL offering the mechanisms given.
pub fn authentication_sasl(out: &mut BytesMut, mechanisms: &[&str]) {
    tagged(out, tag::AUTHENTICATION, |b| {
        b.put_i32(auth::SASL);
        for m in mechanisms {
            put_cstr(b, m.as_bytes());
        }
        b.put_u8(0);
    });
}

pub fn parameter_status(out: &mut BytesMut, name: &str, value: &str) {
    tagged(out, tag::PARAMETER_STATUS, |b| {
        put_cstr(b, name.as_bytes());
        put_cstr(b, value.as_bytes());
    });
}

pub fn backend_key_data(out: &mut BytesMut, pid: i32, secret: i32) {
    tagged(out, tag::BACKEND_KEY_DATA, |b| {
        b.put_i32(pid);
        b.put_i32(secret);
    });
}

/// The type oid of `bool`.
pub const BOOL_OID: u32 = 16;

/// RowDescription of one boolean column `name` (of no table), sent in `format` (0: text,
/// 1: binary), as the server describes a function's result.
pub fn bool_column(out: &mut BytesMut, name: &str, format: i16) {
    tagged(out, tag::ROW_DESCRIPTION, |b| {
        b.put_i16(1);
        put_cstr(b, name.as_bytes());
        b.put_i32(0); // no table
        b.put_i16(0); // no column of one
        b.put_u32(BOOL_OID);
        b.put_i16(1); // its size
        b.put_i32(-1); // no type modifier
        b.put_i16(format);
    });
}

/// DataRow of one boolean `value` in `format` (text `t`/`f`, or one binary byte).
pub fn bool_value(out: &mut BytesMut, value: bool, format: i16) {
    tagged(out, tag::DATA_ROW, |b| {
        b.put_i16(1);
        b.put_i32(1);
        b.put_u8(match (format, value) {
            (1, v) => u8::from(v),
            (_, true) => b't',
            (_, false) => b'f',
        });
    });
}

/// ParameterDescription of parameters of the types `oids`.
pub fn parameter_description(out: &mut BytesMut, oids: &[u32]) {
    tagged(out, tag::PARAMETER_DESCRIPTION, |b| {
        b.put_i16(oids.len() as i16);
        oids.iter().for_each(|oid| b.put_u32(*oid));
    });
}

/// NoticeResponse of severity WARNING (a server's `ereport(WARNING, …)`: code `01000`
/// unless it names one).
pub fn warning(out: &mut BytesMut, code: &str, message: &str) {
    tagged(out, tag::NOTICE_RESPONSE, |b| {
        for (field, value) in [
            (b'S', "WARNING"),
            (b'V', "WARNING"),
            (b'C', code),
            (b'M', message),
        ] {
            b.put_u8(field);
            put_cstr(b, value.as_bytes());
        }
        b.put_u8(0);
    });
}

/// CommandComplete with `tag` (e.g. `ROLLBACK`).
pub fn command_complete(out: &mut BytesMut, tag: &str) {
    tagged(out, tag::COMMAND_COMPLETE, |b| put_cstr(b, tag.as_bytes()));
}

pub fn close_complete(out: &mut BytesMut) {
    tagged(out, tag::CLOSE_COMPLETE, |_| {});
}

pub fn parse_complete(out: &mut BytesMut) {
    tagged(out, tag::PARSE_COMPLETE, |_| {});
}

pub fn bind_complete(out: &mut BytesMut) {
    tagged(out, b'2', |_| {});
}

/// ParameterDescription of a statement without parameters.
pub fn no_parameters(out: &mut BytesMut) {
    tagged(out, b't', |b| b.put_i16(0));
}

pub fn no_data(out: &mut BytesMut) {
    tagged(out, b'n', |_| {});
}

pub fn ready_for_query(out: &mut BytesMut, status: u8) {
    tagged(out, tag::READY_FOR_QUERY, |b| b.put_u8(status));
}

/// NegotiateProtocolVersion: the newest minor version we speak and the options we ignored.
pub fn negotiate_protocol_version(out: &mut BytesMut, minor: i32, unknown: &[&[u8]]) {
    tagged(out, tag::NEGOTIATE_PROTOCOL_VERSION, |b| {
        b.put_i32(minor);
        b.put_i32(unknown.len() as i32);
        for o in unknown {
            put_cstr(b, o);
        }
    });
}

/// Severity of an error the proxy reports itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The statement failed; the session goes on.
    Error,
    /// The connection is closed after this message.
    Fatal,
}

impl Severity {
    fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "ERROR",
            Severity::Fatal => "FATAL",
        }
    }
}

/// ErrorResponse: the single place where the proxy's own PostgreSQL errors are built.
pub fn error_response(out: &mut BytesMut, severity: Severity, code: &str, message: &str) {
    error_response_with(out, severity, code, message, &[]);
}

/// ErrorResponse with more fields after the message (`F` file, `R` routine, …), for an
/// error given in a server's place that drivers tell apart by them.
pub fn error_response_with(
    out: &mut BytesMut,
    severity: Severity,
    code: &str,
    message: &str,
    more: &[(u8, &str)],
) {
    tagged(out, tag::ERROR_RESPONSE, |b| {
        let fields = [
            (b'S', severity.as_str()),
            (b'V', severity.as_str()),
            (b'C', code),
            (b'M', message),
        ];
        for &(field, value) in fields.iter().chain(more) {
            b.put_u8(field);
            put_cstr(b, value.as_bytes());
        }
        b.put_u8(0);
    });
}

/// Close of a prepared statement (`S`) or portal (`P`), as a client would send it.
pub fn close(out: &mut BytesMut, kind: u8, name: &[u8]) {
    tagged(out, tag::CLOSE, |b| {
        b.put_u8(kind);
        put_cstr(b, name);
    });
}

/// Bind of prepared statement `statement` to the unnamed portal, without parameters or
/// result formats.
pub fn bind_plain(out: &mut BytesMut, statement: &[u8]) {
    tagged(out, tag::BIND, |b| {
        put_cstr(b, b"");
        put_cstr(b, statement);
        b.put_i16(0);
        b.put_i16(0);
        b.put_i16(0);
    });
}

/// Describe of a prepared statement (`S`) or portal (`P`), as a client would send it.
pub fn describe(out: &mut BytesMut, kind: u8, name: &[u8]) {
    tagged(out, tag::DESCRIBE, |b| {
        b.put_u8(kind);
        put_cstr(b, name);
    });
}

pub fn sync(out: &mut BytesMut) {
    tagged(out, tag::SYNC, |_| {});
}

pub fn query(out: &mut BytesMut, sql: &str) {
    tagged(out, tag::QUERY, |b| put_cstr(b, sql.as_bytes()));
}

/// A Query message of SQL text in the client's encoding.
pub fn query_bytes(out: &mut BytesMut, sql: &[u8]) {
    tagged(out, tag::QUERY, |b| put_cstr(b, sql));
}

/// The Parse message whose body is `body` with its SQL text replaced by `sql` (its name and
/// parameter types kept); `None` when `body` is malformed.
pub fn parse_with_text(out: &mut BytesMut, body: &[u8], sql: &[u8]) -> Option<()> {
    let (name, rest) = cstr(body)?;
    let (_, types) = cstr(rest)?;
    tagged(out, tag::PARSE, |b| {
        put_cstr(b, name);
        put_cstr(b, sql);
        b.put_slice(types);
    });
    Some(())
}

/// The process id of the server connection that raised a NotificationResponse (its body).
pub fn notification_pid(body: &[u8]) -> Option<i32> {
    Some(i32::from_be_bytes(body.get(..4)?.try_into().ok()?))
}

/// The SQL text of a Query message body, as bytes in the client's encoding (which need not
/// be UTF-8: `client_encoding` may be LATIN1, SJIS …).
pub fn query_text(body: &[u8]) -> Option<&[u8]> {
    cstr(body).map(|(sql, _)| sql)
}

/// Name and SQL text (bytes in the client's encoding) of a Parse message body.
pub fn parse_fields(body: &[u8]) -> Option<(&[u8], &[u8])> {
    let (name, rest) = cstr(body)?;
    let (sql, _) = cstr(rest)?;
    Some((name, sql))
}

/// Portal and statement names of a Bind message body.
pub fn bind_fields(body: &[u8]) -> Option<(&[u8], &[u8])> {
    let (portal, rest) = cstr(body)?;
    let (statement, _) = cstr(rest)?;
    Some((portal, statement))
}

/// How many parameter types a Parse message body declares.
pub fn parse_type_count(body: &[u8]) -> Option<i16> {
    let (_, rest) = cstr(body)?;
    let (_, types) = cstr(rest)?;
    Some(i16::from_be_bytes(types.get(..2)?.try_into().ok()?))
}

/// Portal and statement names of a Bind message body that binds no parameter values and
/// asks for at most one result format (what a statement without parameters or columns
/// takes); `None` for any other Bind.
pub fn bind_without_values(body: &[u8]) -> Option<(&[u8], &[u8])> {
    let (portal, rest) = cstr(body)?;
    let (statement, rest) = cstr(rest)?;
    let count = |at: usize| -> Option<usize> {
        let n = i16::from_be_bytes(rest.get(at..at + 2)?.try_into().ok()?);
        usize::try_from(n).ok()
    };
    let formats = count(0)?;
    let values_at = 2 + 2 * formats;
    let results_at = values_at + 2;
    let (values, results) = (count(values_at)?, count(results_at)?);
    let whole = rest.len() == results_at + 2 + 2 * results;
    (values == 0 && results <= 1 && whole).then_some((portal, statement))
}

/// Parse of `sql` as statement `name`, with no parameter types, as a client would send it.
pub fn parse(out: &mut BytesMut, name: &[u8], sql: &[u8]) {
    tagged(out, tag::PARSE, |b| {
        put_cstr(b, name);
        put_cstr(b, sql);
        b.put_i16(0);
    });
}

/// Execute of `portal`, all its rows, as a client would send it.
pub fn execute(out: &mut BytesMut, portal: &[u8]) {
    tagged(out, tag::EXECUTE, |b| {
        put_cstr(b, portal);
        b.put_i32(0);
    });
}

/// Kind (`S` or `P`) and name of a Describe or Close message body.
pub fn target_fields(body: &[u8]) -> Option<(u8, &[u8])> {
    let (&kind, rest) = body.split_first()?;
    let (name, _) = cstr(rest)?;
    Some((kind, name))
}

/// Portal name of an Execute message body.
pub fn execute_portal(body: &[u8]) -> Option<&[u8]> {
    cstr(body).map(|(portal, _)| portal)
}

/// The first column of a DataRow body, as its bytes (`None`: NULL, or no column).
pub fn first_column(body: &[u8]) -> Option<Vec<u8>> {
    let columns = i16::from_be_bytes(body.get(..2)?.try_into().ok()?);
    let len = i32::from_be_bytes(body.get(2..6)?.try_into().ok()?);
    if columns < 1 || len < 0 {
        return None;
    }
    body.get(6..6 + len as usize).map(<[u8]>::to_vec)
}

/// Whether an ErrorResponse body says the server ends the connection (severity FATAL or
/// PANIC: shutdown, termination, a postmaster that died).
pub fn ends_connection(body: &[u8]) -> bool {
    let mut rest = body;
    while let Some((&field, tail)) = rest.split_first() {
        let Some((value, next)) = cstr(tail).filter(|_| field != 0) else {
            return false;
        };
        if field == b'V' || field == b'S' {
            return value == b"FATAL" || value == b"PANIC";
        }
        rest = next;
    }
    false
}

/// One field of an ErrorResponse or NoticeResponse body (`C` the SQLSTATE, `R` the
/// server's routine, which unlike the message is never translated).
pub fn error_field(body: &[u8], wanted: u8) -> Option<&[u8]> {
    let mut rest = body;
    while let Some((&field, tail)) = rest.split_first() {
        if field == 0 {
            return None;
        }
        let (value, next) = cstr(tail)?;
        if field == wanted {
            return Some(value);
        }
        rest = next;
    }
    None
}

/// The code and message fields of an ErrorResponse or NoticeResponse body, for logs.
pub fn error_fields(body: &[u8]) -> (String, String) {
    let (mut code, mut message) = (String::new(), String::new());
    let mut rest = body;
    while let Some((&field, tail)) = rest.split_first() {
        if field == 0 {
            break;
        }
        let Some((value, next)) = cstr(tail) else {
            break;
        };
        match field {
            b'C' => code = String::from_utf8_lossy(value).into_owned(),
            b'M' => message = String::from_utf8_lossy(value).into_owned(),
            _ => {}
        }
        rest = next;
    }
    (code, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::postgres::frame;

    #[test]
    fn error_fields_are_read_by_their_code() {
        let body =
            b"SERROR\0C0A000\0Mcached plan must not change result type\0RRevalidateCachedQuery\0\0";
        assert_eq!(error_field(body, b'C'), Some(&b"0A000"[..]));
        assert_eq!(error_field(body, b'R'), Some(&b"RevalidateCachedQuery"[..]));
        assert_eq!(error_field(body, b'D'), None);
        assert_eq!(error_field(b"C0A0", b'C'), None, "unterminated");
    }

    #[test]
    fn error_response_round_trips() {
        let mut out = BytesMut::new();
        error_response(
            &mut out,
            Severity::Fatal,
            "28P01",
            "password authentication failed",
        );
        let (h, body) = frame::message(&out, 1 << 20).unwrap().unwrap();
        assert_eq!(h.tag, b'E');
        assert_eq!(h.total, out.len());
        assert_eq!(
            error_fields(body),
            ("28P01".into(), "password authentication failed".into())
        );
    }

    #[test]
    fn fatal_and_panic_errors_end_the_connection() {
        let fatal = b"SFATAL\0VFATAL\0C57P01\0Mterminating connection\0\0";
        let error = b"SERROR\0VERROR\0C42P01\0Mno such table\0\0";
        assert!(ends_connection(fatal));
        assert!(ends_connection(b"SPANIC\0\0"));
        assert!(!ends_connection(error));
        assert!(!ends_connection(b"C57P01\0"));
        assert!(!ends_connection(b""));
    }

    #[test]
    fn client_message_fields() {
        assert_eq!(
            parse_fields(b"s1\0SELECT 1\0\0\0"),
            Some((&b"s1"[..], &b"SELECT 1"[..]))
        );
        assert_eq!(bind_fields(b"p\0s1\0\0\0"), Some((&b"p"[..], &b"s1"[..])));
        assert_eq!(target_fields(b"Ss1\0"), Some((b'S', &b"s1"[..])));
        assert_eq!(execute_portal(b"\0\0\0\0\0"), Some(&b""[..]));
        assert_eq!(query_text(b"SELECT 1\0"), Some(&b"SELECT 1"[..]));
        // Not UTF-8 (LATIN1 'é'): still a query.
        assert_eq!(query_text(b"SELECT '\xe9'\0"), Some(&b"SELECT '\xe9'"[..]));
        assert_eq!(parse_fields(b"s1"), None);
        assert_eq!(target_fields(b""), None);
    }

    #[test]
    fn ready_for_query_is_six_bytes() {
        let mut out = BytesMut::new();
        ready_for_query(&mut out, b'I');
        assert_eq!(&out[..], b"Z\0\0\0\x05I");
    }
}
