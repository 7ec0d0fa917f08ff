//! The untagged packets a client may open with: SSLRequest, GSSENCRequest, CancelRequest
//! and StartupMessage, decoded into one enum.

use super::frame::cstr;

pub const SSL_REQUEST_CODE: i32 = 80877103;
pub const GSSENC_REQUEST_CODE: i32 = 80877104;
pub const CANCEL_REQUEST_CODE: i32 = 80877102;
pub const PROTOCOL_MAJOR: i32 = 3;

/// Largest startup packet accepted, as in PostgreSQL (MAX_STARTUP_PACKET_LENGTH).
pub const MAX_STARTUP_PACKET: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupPacket {
    SslRequest,
    GssEncRequest,
    Cancel { pid: i32, secret: i32 },
    Startup(StartupParams),
}

/// The parameters of a StartupMessage, in the order the client sent them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StartupParams {
    pub minor_version: i32,
    pub params: Vec<(String, String)>,
}

impl StartupParams {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn user(&self) -> Option<&str> {
        self.get("user")
    }

    /// The database, which defaults to the user name as in PostgreSQL.
    pub fn database(&self) -> Option<&str> {
        self.get("database").or_else(|| self.user())
    }

    /// Protocol options (`_pq_.*`) the client asked for; the proxy supports none.
    pub fn protocol_options(&self) -> impl Iterator<Item = &str> {
        self.params
            .iter()
            .map(|(k, _)| k.as_str())
            .filter(|k| k.starts_with("_pq_."))
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StartupError {
    #[error("startup packet is too short")]
    Short,
    #[error("unsupported frontend protocol {major}.{minor}: server supports 3.0")]
    UnsupportedProtocol { major: i32, minor: i32 },
    #[error("startup packet parameters are not NUL-terminated strings")]
    BadParameters,
    #[error("startup packet parameter is not valid UTF-8")]
    NotUtf8,
}

/// Decodes a whole packet (length word included).
pub fn decode(packet: &[u8]) -> Result<StartupPacket, StartupError> {
    let word = |at: usize| -> Result<i32, StartupError> {
        let b = packet.get(at..at + 4).ok_or(StartupError::Short)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    let code = word(4)?;
    match code {
        SSL_REQUEST_CODE => return Ok(StartupPacket::SslRequest),
        GSSENC_REQUEST_CODE => return Ok(StartupPacket::GssEncRequest),
        CANCEL_REQUEST_CODE => {
            return Ok(StartupPacket::Cancel {
                pid: word(8)?,
                secret: word(12)?,
            });
        }
        _ => {}
    }
    let (major, minor) = (code >> 16, code & 0xffff);
    if major != PROTOCOL_MAJOR {
        return Err(StartupError::UnsupportedProtocol { major, minor });
    }
    let mut params = Vec::new();
    let mut rest = &packet[8..];
    loop {
        let (name, tail) = cstr(rest).ok_or(StartupError::BadParameters)?;
        if name.is_empty() {
            break;
        }
        let (value, tail) = cstr(tail).ok_or(StartupError::BadParameters)?;
        let text = |b: &[u8]| {
            std::str::from_utf8(b)
                .map(str::to_owned)
                .map_err(|_| StartupError::NotUtf8)
        };
        params.push((text(name)?, text(value)?));
        rest = tail;
    }
    Ok(StartupPacket::Startup(StartupParams {
        minor_version: minor,
        params,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(code: i32, body: &[u8]) -> Vec<u8> {
        let mut p = Vec::new();
        p.extend_from_slice(&((8 + body.len()) as i32).to_be_bytes());
        p.extend_from_slice(&code.to_be_bytes());
        p.extend_from_slice(body);
        p
    }

    #[test]
    fn decodes_each_kind() {
        assert_eq!(
            decode(&packet(SSL_REQUEST_CODE, b"")),
            Ok(StartupPacket::SslRequest)
        );
        assert_eq!(
            decode(&packet(GSSENC_REQUEST_CODE, b"")),
            Ok(StartupPacket::GssEncRequest)
        );
        let mut cancel = Vec::new();
        cancel.extend_from_slice(&7i32.to_be_bytes());
        cancel.extend_from_slice(&9i32.to_be_bytes());
        assert_eq!(
            decode(&packet(CANCEL_REQUEST_CODE, &cancel)),
            Ok(StartupPacket::Cancel { pid: 7, secret: 9 })
        );
        let StartupPacket::Startup(p) =
            decode(&packet(196608, b"user\0app\0database\0db\0\0")).unwrap()
        else {
            panic!("not a startup message")
        };
        assert_eq!(p.user(), Some("app"));
        assert_eq!(p.database(), Some("db"));
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(decode(b"\0\0\0\x08"), Err(StartupError::Short));
        assert!(matches!(
            decode(&packet(0x1234_0000, b"")),
            Err(StartupError::UnsupportedProtocol { .. })
        ));
        assert_eq!(
            decode(&packet(196608, b"user\0app")),
            Err(StartupError::BadParameters)
        );
        assert_eq!(
            decode(&packet(196608, b"user\0\xff\0\0")),
            Err(StartupError::NotUtf8)
        );
    }

    #[test]
    fn database_defaults_to_user() {
        let p = StartupParams {
            minor_version: 0,
            params: vec![("user".into(), "bob".into())],
        };
        assert_eq!(p.database(), Some("bob"));
    }
}
