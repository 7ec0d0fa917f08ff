//! Client commands: a borrowing reader for the fields routing and the session need
//! (query text, schema, statement ids) and writers for the commands the proxy sends to
//! backends itself. Command payloads are otherwise relayed as they came.

use bytes::{BufMut, BytesMut};

use super::constants::CapabilityFlags;
use super::constants::command::*;
use super::packet::write_with;

#[derive(Debug, Clone, Copy, thiserror::Error, PartialEq, Eq)]
pub enum CommandError {
    #[error("empty command packet")]
    Empty,
    #[error("command {command:#04x} is truncated")]
    Truncated { command: u8 },
}

/// One client command, borrowed from its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command<'a> {
    Quit,
    /// `USE schema`.
    InitDb {
        schema: &'a [u8],
    },
    /// SQL text in the connection's character set. (The proxy does not offer
    /// CLIENT_QUERY_ATTRIBUTES, so the text starts right after the command byte.)
    Query {
        sql: &'a [u8],
    },
    FieldList {
        table: &'a [u8],
        wildcard: &'a [u8],
    },
    Statistics,
    Ping,
    /// Re-authentication: the payload is handled by the auth layer.
    ChangeUser {
        body: &'a [u8],
    },
    StmtPrepare {
        sql: &'a [u8],
    },
    /// `flags` holds the cursor type (0 = no cursor).
    StmtExecute {
        statement_id: u32,
        flags: u8,
    },
    StmtSendLongData {
        statement_id: u32,
        param: u16,
    },
    /// MariaDB's COM_STMT_BULK_EXECUTE: one statement run for many rows of parameters.
    StmtBulkExecute {
        statement_id: u32,
    },
    StmtClose {
        statement_id: u32,
    },
    StmtReset {
        statement_id: u32,
    },
    /// 0 = multi-statements on, 1 = off.
    SetOption {
        option: u16,
    },
    StmtFetch {
        statement_id: u32,
        rows: u32,
    },
    ResetConnection,
    /// Any other command (replication, COM_PROCESS_KILL …).
    Other {
        command: u8,
        body: &'a [u8],
    },
}

impl Command<'_> {
    /// The statement a COM_STMT_* command names.
    pub fn statement_id(&self) -> Option<u32> {
        match *self {
            Command::StmtExecute { statement_id, .. }
            | Command::StmtBulkExecute { statement_id }
            | Command::StmtSendLongData { statement_id, .. }
            | Command::StmtClose { statement_id }
            | Command::StmtReset { statement_id }
            | Command::StmtFetch { statement_id, .. } => Some(statement_id),
            _ => None,
        }
    }
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at + 4)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    let s = b.get(at..at + 2)?;
    Some(u16::from_le_bytes([s[0], s[1]]))
}

/// Reads a client command packet (the whole logical payload; for COM_QUERY and
/// COM_STMT_PREPARE of 16 MiB or more, join the pieces first).
pub fn parse_command(payload: &[u8]) -> Result<Command<'_>, CommandError> {
    let (&command, body) = payload.split_first().ok_or(CommandError::Empty)?;
    let truncated = CommandError::Truncated { command };
    let id = || u32_at(body, 0).ok_or(truncated);
    Ok(match command {
        COM_QUIT => Command::Quit,
        COM_INIT_DB => Command::InitDb { schema: body },
        COM_QUERY => Command::Query { sql: body },
        COM_FIELD_LIST => {
            let end = body.iter().position(|&b| b == 0).ok_or(truncated)?;
            Command::FieldList {
                table: &body[..end],
                wildcard: &body[end + 1..],
            }
        }
        COM_STATISTICS => Command::Statistics,
        COM_PING => Command::Ping,
        COM_CHANGE_USER => Command::ChangeUser { body },
        COM_STMT_PREPARE => Command::StmtPrepare { sql: body },
        COM_STMT_EXECUTE => Command::StmtExecute {
            statement_id: id()?,
            flags: *body.get(4).ok_or(truncated)?,
        },
        COM_STMT_SEND_LONG_DATA => Command::StmtSendLongData {
            statement_id: id()?,
            param: u16_at(body, 4).ok_or(truncated)?,
        },
        COM_STMT_CLOSE => Command::StmtClose {
            statement_id: id()?,
        },
        COM_STMT_BULK_EXECUTE => Command::StmtBulkExecute {
            statement_id: id()?,
        },
        COM_STMT_RESET => Command::StmtReset {
            statement_id: id()?,
        },
        COM_SET_OPTION => Command::SetOption {
            option: u16_at(body, 0).ok_or(truncated)?,
        },
        COM_STMT_FETCH => Command::StmtFetch {
            statement_id: id()?,
            rows: u32_at(body, 4).ok_or(truncated)?,
        },
        COM_RESET_CONNECTION => Command::ResetConnection,
        _ => Command::Other { command, body },
    })
}

/// The fields of a COM_CHANGE_USER body (after the command byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangeUser<'a> {
    pub user: &'a [u8],
    pub auth_response: &'a [u8],
    pub database: &'a [u8],
    pub charset: Option<u8>,
    pub auth_plugin: Option<&'a [u8]>,
    /// The connect-attributes block without its length prefix.
    pub connect_attrs: Option<&'a [u8]>,
}

/// Reads COM_CHANGE_USER with the capabilities agreed at login.
pub fn parse_change_user(
    body: &[u8],
    capabilities: CapabilityFlags,
) -> Result<ChangeUser<'_>, CommandError> {
    let truncated = CommandError::Truncated {
        command: COM_CHANGE_USER,
    };
    let nul = |b: &'_ [u8]| b.iter().position(|&x| x == 0).ok_or(truncated);
    let end = nul(body)?;
    let (user, rest) = (&body[..end], &body[end + 1..]);
    let (auth_response, rest) = if capabilities.contains(CapabilityFlags::CLIENT_SECURE_CONNECTION)
    {
        let (&len, tail) = rest.split_first().ok_or(truncated)?;
        let len = usize::from(len);
        (tail.get(..len).ok_or(truncated)?, &tail[len..])
    } else {
        let end = nul(rest)?;
        (&rest[..end], &rest[end + 1..])
    };
    let end = nul(rest)?;
    let (database, mut rest) = (&rest[..end], &rest[end + 1..]);
    let mut change = ChangeUser {
        user,
        auth_response,
        database,
        charset: None,
        auth_plugin: None,
        connect_attrs: None,
    };
    if rest.len() >= 2 {
        change.charset = Some(rest[0]);
        rest = &rest[2..];
        if capabilities.contains(CapabilityFlags::CLIENT_PLUGIN_AUTH) && !rest.is_empty() {
            let end = nul(rest)?;
            change.auth_plugin = Some(&rest[..end]);
            rest = &rest[end + 1..];
        }
        if capabilities.contains(CapabilityFlags::CLIENT_CONNECT_ATTRS) && !rest.is_empty() {
            let (len, n) = super::messages::lenenc_int(rest).ok_or(truncated)?;
            let len = usize::try_from(len).map_err(|_| truncated)?;
            change.connect_attrs = Some(rest.get(n..n + len).ok_or(truncated)?);
        }
    }
    Ok(change)
}

/// Overwrites the statement id of a COM_STMT_* payload in place, for sessions that map
/// client-side statement ids to the backend's. Returns false if the payload has none.
pub fn rewrite_statement_id(payload: &mut [u8], statement_id: u32) -> bool {
    match payload.first() {
        Some(
            &(COM_STMT_EXECUTE
            | COM_STMT_SEND_LONG_DATA
            | COM_STMT_CLOSE
            | COM_STMT_RESET
            | COM_STMT_FETCH),
        ) if payload.len() >= 5 => {
            payload[1..5].copy_from_slice(&statement_id.to_le_bytes());
            true
        }
        _ => false,
    }
}

/// Writes a command with a byte-string body (COM_QUERY, COM_INIT_DB, COM_STMT_PREPARE);
/// commands always start at sequence id 0. Returns the next sequence id.
pub fn write_text_command(out: &mut BytesMut, command: u8, body: &[u8]) -> u8 {
    write_with(out, 0, |b| {
        b.put_u8(command);
        b.put_slice(body);
    })
}

/// Writes a command without a body (COM_PING, COM_QUIT, COM_RESET_CONNECTION, COM_STATISTICS).
pub fn write_simple_command(out: &mut BytesMut, command: u8) -> u8 {
    write_with(out, 0, |b| b.put_u8(command))
}

/// Writes COM_STMT_CLOSE (which gets no response) or COM_STMT_RESET.
pub fn write_statement_command(out: &mut BytesMut, command: u8, statement_id: u32) -> u8 {
    write_with(out, 0, |b| {
        b.put_u8(command);
        b.put_u32_le(statement_id);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn change_user_fields() {
        let caps = CapabilityFlags::CLIENT_SECURE_CONNECTION
            | CapabilityFlags::CLIENT_PLUGIN_AUTH
            | CapabilityFlags::CLIENT_PROTOCOL_41;
        let mut body = b"bob\0".to_vec();
        body.push(3);
        body.extend_from_slice(b"abc");
        body.extend_from_slice(b"shop\0");
        body.extend_from_slice(&[45, 0]);
        body.extend_from_slice(b"mysql_native_password\0");
        let c = parse_change_user(&body, caps).unwrap();
        assert_eq!(c.user, b"bob");
        assert_eq!(c.auth_response, b"abc");
        assert_eq!(c.database, b"shop");
        assert_eq!(c.charset, Some(45));
        assert_eq!(c.auth_plugin, Some(&b"mysql_native_password"[..]));
        // Everything up to the database's NUL is required; the rest is optional.
        let required = b"bob\0".len() + 1 + 3 + b"shop\0".len();
        for cut in 0..required {
            assert!(
                parse_change_user(&body[..cut], caps).is_err(),
                "prefix {cut}"
            );
        }
        assert!(parse_change_user(&body[..required], caps).is_ok());
    }
    use crate::protocol::mysql::packet::packet;

    #[test]
    fn commands_table() {
        let cases: &[(&[u8], Result<Command<'_>, CommandError>)] = &[
            (b"", Err(CommandError::Empty)),
            (b"\x01", Ok(Command::Quit)),
            (b"\x02shop", Ok(Command::InitDb { schema: b"shop" })),
            (b"\x03SELECT 1", Ok(Command::Query { sql: b"SELECT 1" })),
            (
                b"\x04t\x00%",
                Ok(Command::FieldList {
                    table: b"t",
                    wildcard: b"%",
                }),
            ),
            (b"\x04t", Err(CommandError::Truncated { command: 4 })),
            (b"\x09", Ok(Command::Statistics)),
            (b"\x0e", Ok(Command::Ping)),
            (
                b"\x16SELECT ?",
                Ok(Command::StmtPrepare { sql: b"SELECT ?" }),
            ),
            (
                b"\x17\x07\x00\x00\x00\x01\x01\x00\x00\x00",
                Ok(Command::StmtExecute {
                    statement_id: 7,
                    flags: 1,
                }),
            ),
            (
                b"\x17\x07\x00\x00",
                Err(CommandError::Truncated { command: 0x17 }),
            ),
            (
                b"\x18\x07\x00\x00\x00\x02\x00data",
                Ok(Command::StmtSendLongData {
                    statement_id: 7,
                    param: 2,
                }),
            ),
            (
                b"\x19\x07\x00\x00\x00",
                Ok(Command::StmtClose { statement_id: 7 }),
            ),
            (
                b"\x1a\x07\x00\x00\x00",
                Ok(Command::StmtReset { statement_id: 7 }),
            ),
            (b"\x1b\x01\x00", Ok(Command::SetOption { option: 1 })),
            (
                b"\x1c\x07\x00\x00\x00\x10\x00\x00\x00",
                Ok(Command::StmtFetch {
                    statement_id: 7,
                    rows: 16,
                }),
            ),
            (b"\x1f", Ok(Command::ResetConnection)),
            (
                b"\x0c\x05\x00\x00\x00",
                Ok(Command::Other {
                    command: 0x0c,
                    body: b"\x05\x00\x00\x00",
                }),
            ),
        ];
        for (payload, want) in cases {
            assert_eq!(&parse_command(payload), want, "{payload:x?}");
        }
        assert_eq!(
            parse_command(b"\x19\x07\x00\x00\x00")
                .unwrap()
                .statement_id(),
            Some(7)
        );
        assert_eq!(parse_command(b"\x0e").unwrap().statement_id(), None);
    }

    #[test]
    fn statement_ids_are_rewritten_in_place() {
        let mut p = b"\x17\x07\x00\x00\x00\x00\x01\x00\x00\x00".to_vec();
        assert!(rewrite_statement_id(&mut p, 0x0102_0304));
        assert_eq!(parse_command(&p).unwrap().statement_id(), Some(0x0102_0304));
        assert!(!rewrite_statement_id(&mut b"\x03SELECT".to_vec(), 1));
        assert!(!rewrite_statement_id(&mut b"\x19\x01".to_vec(), 1));
    }

    #[test]
    fn writers() {
        let mut out = BytesMut::new();
        assert_eq!(write_text_command(&mut out, COM_QUERY, b"SELECT 1"), 1);
        assert_eq!(packet(&out, 100).unwrap().unwrap().1, b"\x03SELECT 1");
        let mut out = BytesMut::new();
        write_statement_command(&mut out, COM_STMT_CLOSE, 9);
        assert_eq!(&out[..], b"\x05\0\0\0\x19\x09\0\0\0");
        let mut out = BytesMut::new();
        write_simple_command(&mut out, COM_PING);
        assert_eq!(&out[..], b"\x01\0\0\0\x0e");
    }
}
