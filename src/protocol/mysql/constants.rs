//! Protocol constants named as in the MySQL source and documentation: command bytes,
//! packet headers, auth plugin names, and the server errors the proxy returns itself,
//! each with its SQLSTATE so a code is never sent with the wrong state.

use mysql_common::constants::Command;

pub use mysql_common::constants::{CapabilityFlags, StatusFlags};

/// Command bytes: the first byte of every packet a client sends after authentication.
pub mod command {
    use super::Command;

    pub const COM_QUIT: u8 = Command::COM_QUIT as u8;
    pub const COM_INIT_DB: u8 = Command::COM_INIT_DB as u8;
    pub const COM_QUERY: u8 = Command::COM_QUERY as u8;
    pub const COM_FIELD_LIST: u8 = Command::COM_FIELD_LIST as u8;
    pub const COM_REFRESH: u8 = Command::COM_REFRESH as u8;
    pub const COM_STATISTICS: u8 = Command::COM_STATISTICS as u8;
    pub const COM_PROCESS_KILL: u8 = Command::COM_PROCESS_KILL as u8;
    pub const COM_DEBUG: u8 = Command::COM_DEBUG as u8;
    pub const COM_PING: u8 = Command::COM_PING as u8;
    pub const COM_CHANGE_USER: u8 = Command::COM_CHANGE_USER as u8;
    pub const COM_BINLOG_DUMP: u8 = Command::COM_BINLOG_DUMP as u8;
    pub const COM_STMT_PREPARE: u8 = Command::COM_STMT_PREPARE as u8;
    pub const COM_STMT_EXECUTE: u8 = Command::COM_STMT_EXECUTE as u8;
    pub const COM_STMT_SEND_LONG_DATA: u8 = Command::COM_STMT_SEND_LONG_DATA as u8;
    pub const COM_STMT_CLOSE: u8 = Command::COM_STMT_CLOSE as u8;
    pub const COM_STMT_RESET: u8 = Command::COM_STMT_RESET as u8;
    pub const COM_SET_OPTION: u8 = Command::COM_SET_OPTION as u8;
    pub const COM_STMT_FETCH: u8 = Command::COM_STMT_FETCH as u8;
    pub const COM_BINLOG_DUMP_GTID: u8 = Command::COM_BINLOG_DUMP_GTID as u8;
    pub const COM_RESET_CONNECTION: u8 = Command::COM_RESET_CONNECTION as u8;
    /// MariaDB's array binding for prepared statements.
    pub const COM_STMT_BULK_EXECUTE: u8 = Command::COM_STMT_BULK_EXECUTE as u8;

    /// Whether the server answers this command at all: COM_QUIT, COM_STMT_CLOSE and
    /// COM_STMT_SEND_LONG_DATA get no response.
    pub const fn expects_response(command: u8) -> bool {
        !matches!(command, COM_QUIT | COM_STMT_CLOSE | COM_STMT_SEND_LONG_DATA)
    }
}

/// First bytes that identify a server packet.
pub mod header {
    pub const OK: u8 = 0x00;
    /// AuthMoreData during authentication.
    pub const AUTH_MORE_DATA: u8 = 0x01;
    /// LOCAL INFILE request, as the first packet of a COM_QUERY response.
    pub const LOCAL_INFILE: u8 = 0xFB;
    /// EOF, an OK used as result-set terminator under CLIENT_DEPRECATE_EOF, or an
    /// AuthSwitchRequest during authentication.
    pub const EOF: u8 = 0xFE;
    pub const AUTH_SWITCH: u8 = 0xFE;
    pub const ERR: u8 = 0xFF;
}

/// Authentication plugin names and caching_sha2_password's one-byte messages.
pub mod auth {
    pub const MYSQL_NATIVE_PASSWORD: &str = "mysql_native_password";
    pub const CACHING_SHA2_PASSWORD: &str = "caching_sha2_password";
    pub const MYSQL_CLEAR_PASSWORD: &str = "mysql_clear_password";
    /// Length of the scramble (nonce) in the greeting and in AuthSwitchRequest.
    pub const SCRAMBLE_LEN: usize = 20;
    /// caching_sha2_password, client → server: send me your RSA public key.
    pub const REQUEST_PUBLIC_KEY: u8 = 0x02;
    /// caching_sha2_password, server → client: the scramble matched; OK follows.
    pub const FAST_AUTH_SUCCESS: u8 = 0x03;
    /// caching_sha2_password, server → client: send the password (TLS or RSA).
    pub const PERFORM_FULL_AUTHENTICATION: u8 = 0x04;
}

/// `utf8mb4_general_ci`, the collation the proxy announces and asks backends for.
pub const UTF8MB4_GENERAL_CI: u8 = 45;

/// Protocol version byte of HandshakeV10.
pub const PROTOCOL_VERSION: u8 = 10;

/// A server error the proxy sends itself: the MySQL error number with its SQLSTATE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorCode {
    pub code: u16,
    pub sqlstate: [u8; 5],
    pub name: &'static str,
}

macro_rules! error_codes {
    ($($name:ident = $code:literal, $state:literal;)*) => {
        $(
            pub const $name: ErrorCode = ErrorCode {
                code: $code,
                sqlstate: *$state,
                name: stringify!($name),
            };
        )*
        /// Every error the proxy may send, for lookups and tests.
        pub const ALL_ERROR_CODES: &[ErrorCode] = &[$($name),*];
    };
}

error_codes! {
    ER_CON_COUNT_ERROR = 1040, b"08004";
    ER_HANDSHAKE_ERROR = 1043, b"08S01";
    ER_ACCESS_DENIED_ERROR = 1045, b"28000";
    ER_UNKNOWN_COM_ERROR = 1047, b"08S01";
    ER_BAD_DB_ERROR = 1049, b"42000";
    ER_SERVER_SHUTDOWN = 1053, b"08S01";
    ER_NET_PACKET_TOO_LARGE = 1153, b"08S01";
    ER_NET_PACKETS_OUT_OF_ORDER = 1156, b"08S01";
    ER_OPTION_PREVENTS_STATEMENT = 1290, b"HY000";
    ER_QUERY_INTERRUPTED = 1317, b"70100";
    ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION = 1792, b"25006";
    ER_LOCK_DEADLOCK = 1213, b"40001";
    ER_UNKNOWN_STMT_HANDLER = 1243, b"HY000";
    ER_CONNECTION_KILLED = 1927, b"70100";
}

#[cfg(test)]
mod tests {
    use super::command::*;
    use super::*;

    #[test]
    fn command_bytes_match_the_protocol() {
        let expected = [
            (COM_QUIT, 0x01),
            (COM_INIT_DB, 0x02),
            (COM_QUERY, 0x03),
            (COM_FIELD_LIST, 0x04),
            (COM_STATISTICS, 0x09),
            (COM_PING, 0x0e),
            (COM_CHANGE_USER, 0x11),
            (COM_STMT_PREPARE, 0x16),
            (COM_STMT_EXECUTE, 0x17),
            (COM_STMT_SEND_LONG_DATA, 0x18),
            (COM_STMT_CLOSE, 0x19),
            (COM_STMT_RESET, 0x1a),
            (COM_SET_OPTION, 0x1b),
            (COM_STMT_FETCH, 0x1c),
            (COM_RESET_CONNECTION, 0x1f),
            (COM_STMT_BULK_EXECUTE, 0xfa),
        ];
        for (got, want) in expected {
            assert_eq!(got, want);
        }
        assert!(!expects_response(COM_STMT_CLOSE));
        assert!(!expects_response(COM_QUIT));
        assert!(!expects_response(COM_STMT_SEND_LONG_DATA));
        assert!(expects_response(COM_QUERY));
    }

    #[test]
    fn error_codes_have_distinct_codes_and_wellformed_states() {
        for (i, e) in ALL_ERROR_CODES.iter().enumerate() {
            assert!(
                e.sqlstate.iter().all(u8::is_ascii_alphanumeric),
                "{}",
                e.name
            );
            assert!(e.name.starts_with("ER_"));
            assert!(ALL_ERROR_CODES[i + 1..].iter().all(|o| o.code != e.code));
        }
        assert_eq!(ER_ACCESS_DENIED_ERROR.code, 1045);
        assert_eq!(&ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION.sqlstate, b"25006");
    }
}
