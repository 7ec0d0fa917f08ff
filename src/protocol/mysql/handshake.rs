//! The connection phase before authentication: the HandshakeV10 greeting and the
//! client's HandshakeResponse41 or SSLRequest, from both sides — server side for clients
//! of the proxy, client side for the proxy's backend connections.
//!
//! The greeting and the SSLRequest are built with mysql_common; the server's greeting is
//! read with it too (after a guard, see [`parse_greeting`]). HandshakeResponse41 is read
//! and written by hand: mysql_common's type picks the collation from the server version
//! instead of the caller and decodes connect attributes into a `HashMap<String, String>`,
//! where the proxy wants them raw, in order and borrowed.

use bytes::{BufMut, BytesMut};
use mysql_common::constants::MariadbCapabilities;
use mysql_common::io::ParseBuf;
use mysql_common::packets::HandshakePacket;
use mysql_common::proto::MySerialize;
use rand::Rng;

use super::constants::{
    CapabilityFlags, PROTOCOL_VERSION, StatusFlags, auth::SCRAMBLE_LEN, header,
};
use super::messages::{lenenc_str, parse_err, put_lenenc_int, put_lenenc_str};
use super::packet::write_with;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HandshakeError {
    #[error("handshake response is truncated at {field}")]
    Truncated { field: &'static str },
    #[error("client does not speak protocol 4.1 (CLIENT_PROTOCOL_41 unset)")]
    Protocol320,
    #[error("server greeting has protocol version {0}, expected 10")]
    ProtocolVersion(u8),
    #[error("server greeting is malformed at {field}")]
    Greeting { field: &'static str },
    #[error("server refused the connection: error {code}: {message}")]
    ServerRefused { code: u16, message: String },
}

fn truncated(field: &'static str) -> HandshakeError {
    HandshakeError::Truncated { field }
}

/// A new 20-byte scramble as MySQL makes them: 7-bit, never NUL or `$` (some clients
/// read the second half of the greeting's scramble as a C string).
pub fn new_scramble(rng: &mut impl Rng) -> [u8; SCRAMBLE_LEN] {
    let mut s = [0u8; SCRAMBLE_LEN];
    rng.fill(&mut s[..]);
    for b in &mut s {
        *b &= 0x7F;
        if *b == 0 || *b == b'$' {
            *b += 1;
        }
    }
    s
}

/// What the proxy says in its greeting to a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Greeting<'a> {
    /// e.g. `8.0.36-switchyard`; clients parse the leading version number.
    pub server_version: &'a str,
    pub connection_id: u32,
    pub scramble: [u8; SCRAMBLE_LEN],
    pub capabilities: CapabilityFlags,
    pub charset: u8,
    pub status: StatusFlags,
    pub auth_plugin: &'a str,
    /// MariaDB extended capabilities (in the last 4 filler bytes; MariaDB reads them when
    /// CLIENT_LONG_PASSWORD, its "CLIENT_MYSQL", is left out): 0 for a MySQL writer.
    pub mariadb_capabilities: u32,
}

/// MariaDB's extended capability MARIADB_CLIENT_EXTENDED_METADATA: column definitions carry
/// the extended type (`json`, `uuid`, `inet6`, …) that drivers such as mysql2 and
/// Connector/J decode JSON by.
pub const MARIADB_EXTENDED_METADATA: u32 = 1 << 3;

/// MariaDB's extended capability MARIADB_CLIENT_STMT_BULK_OPERATIONS: COM_STMT_BULK_EXECUTE,
/// one prepared statement run for many rows of parameters (Connector/J's, Connector/Python's
/// and the Node.js connector's batches).
pub const MARIADB_STMT_BULK_OPERATIONS: u32 = 1 << 2;

/// The MariaDB extended capabilities the proxy offers clients (of those the writer offers)
/// and asks backends for, as the client asked: extended metadata, which changes column
/// definitions, so a pooled connection serves only clients that agreed the same (the pool
/// key's login options hold it), and bulk operations (COM_STMT_BULK_EXECUTE, run as an
/// EXECUTE is, answered with one OK or ERR). Not BULK_UNIT_RESULTS (a result per row), nor
/// CACHE_METADATA (result sets without column definitions).
pub fn offered_mariadb_capabilities() -> u32 {
    MARIADB_EXTENDED_METADATA | MARIADB_STMT_BULK_OPERATIONS
}

/// The capabilities the proxy offers clients (of those the writer offers it) and asks
/// backends for: what the relay can pass through unchanged. Left out on purpose: COMPRESS
/// (the session offers it to clients and compresses itself; backends never compress),
/// QUERY_ATTRIBUTES (changes
/// the COM_QUERY layout the classifier reads), OPTIONAL_RESULTSET_METADATA and the MariaDB
/// metadata-cache extension (change result-set shapes), PROGRESS (mid-query ERR-shaped
/// packets) and SSL, which the caller adds when it has a TLS acceptor.
pub fn offered_capabilities() -> CapabilityFlags {
    CapabilityFlags::CLIENT_LONG_PASSWORD
        | CapabilityFlags::CLIENT_FOUND_ROWS
        | CapabilityFlags::CLIENT_LONG_FLAG
        | CapabilityFlags::CLIENT_CONNECT_WITH_DB
        | CapabilityFlags::CLIENT_LOCAL_FILES
        | CapabilityFlags::CLIENT_IGNORE_SPACE
        | CapabilityFlags::CLIENT_PROTOCOL_41
        | CapabilityFlags::CLIENT_INTERACTIVE
        | CapabilityFlags::CLIENT_IGNORE_SIGPIPE
        | CapabilityFlags::CLIENT_TRANSACTIONS
        | CapabilityFlags::CLIENT_SECURE_CONNECTION
        | CapabilityFlags::CLIENT_MULTI_STATEMENTS
        | CapabilityFlags::CLIENT_MULTI_RESULTS
        | CapabilityFlags::CLIENT_PS_MULTI_RESULTS
        | CapabilityFlags::CLIENT_PLUGIN_AUTH
        | CapabilityFlags::CLIENT_CONNECT_ATTRS
        | CapabilityFlags::CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
        | CapabilityFlags::CLIENT_SESSION_TRACK
        | CapabilityFlags::CLIENT_DEPRECATE_EOF
}

/// Writes the HandshakeV10 greeting (sequence id 0); returns the next sequence id.
pub fn write_greeting(out: &mut BytesMut, greeting: &Greeting<'_>) -> u8 {
    let (part1, part2) = greeting.scramble.split_at(8);
    let mut scramble_1 = [0u8; 8];
    scramble_1.copy_from_slice(part1);
    // the second part goes out NUL-terminated, as MySQL sends it
    let mut scramble_2 = [0u8; SCRAMBLE_LEN - 8 + 1];
    scramble_2[..part2.len()].copy_from_slice(part2);
    let packet = HandshakePacket::new(
        PROTOCOL_VERSION,
        greeting.server_version.as_bytes(),
        greeting.connection_id,
        scramble_1,
        Some(&scramble_2[..]),
        greeting.capabilities
            | CapabilityFlags::CLIENT_PLUGIN_AUTH
            | CapabilityFlags::CLIENT_SECURE_CONNECTION,
        greeting.charset,
        greeting.status,
        Some(greeting.auth_plugin.as_bytes()),
    )
    .with_mariadb_ext_capabilities(MariadbCapabilities::from_bits_truncate(
        greeting.mariadb_capabilities,
    ));
    let mut payload = Vec::with_capacity(96);
    packet.serialize(&mut payload);
    write_with(out, 0, |b| b.put_slice(&payload))
}

/// Bytes of an SSLRequest: the fixed head of HandshakeResponse41 and nothing after it.
pub const SSL_REQUEST_LEN: usize = 32;

/// The fixed head shared by SSLRequest and HandshakeResponse41.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientHead {
    pub capabilities: CapabilityFlags,
    pub max_packet_size: u32,
    pub charset: u8,
    /// MariaDB extended capabilities (the last 4 filler bytes); 0 from MySQL clients.
    pub mariadb_capabilities: u32,
}

/// The client's HandshakeResponse41, borrowed from its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientHandshake<'a> {
    pub head: ClientHead,
    pub username: &'a [u8],
    pub auth_response: &'a [u8],
    /// Present when CLIENT_CONNECT_WITH_DB is set.
    pub database: Option<&'a [u8]>,
    /// Present when CLIENT_PLUGIN_AUTH is set.
    pub auth_plugin: Option<&'a [u8]>,
    /// The connect attributes block without its length prefix, raw; see [`connect_attrs`].
    pub connect_attrs: Option<&'a [u8]>,
}

/// What a client sends after the greeting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientReply<'a> {
    /// Switch to TLS now; the HandshakeResponse41 follows inside TLS.
    SslRequest(ClientHead),
    Handshake(ClientHandshake<'a>),
}

fn u32_at(buf: &[u8], at: usize) -> Option<u32> {
    let b = buf.get(at..at + 4)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// Splits a NUL-terminated string off the front of `buf`.
fn null_str(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = buf.iter().position(|&b| b == 0)?;
    Some((&buf[..end], &buf[end + 1..]))
}

fn parse_head(payload: &[u8]) -> Result<ClientHead, HandshakeError> {
    let caps = u32_at(payload, 0).ok_or(truncated("capabilities"))?;
    let capabilities = CapabilityFlags::from_bits_truncate(caps);
    if !capabilities.contains(CapabilityFlags::CLIENT_PROTOCOL_41) {
        return Err(HandshakeError::Protocol320);
    }
    if payload.len() < SSL_REQUEST_LEN {
        return Err(truncated("fixed header"));
    }
    Ok(ClientHead {
        capabilities,
        max_packet_size: u32_at(payload, 4).ok_or(truncated("max packet size"))?,
        charset: payload[8],
        mariadb_capabilities: u32_at(payload, 28).ok_or(truncated("filler"))?,
    })
}

/// Reads the client's reply to the greeting: an SSLRequest (exactly 32 bytes with
/// CLIENT_SSL) or a HandshakeResponse41.
pub fn parse_client_reply(payload: &[u8]) -> Result<ClientReply<'_>, HandshakeError> {
    let head = parse_head(payload)?;
    let caps = head.capabilities;
    if payload.len() == SSL_REQUEST_LEN && caps.contains(CapabilityFlags::CLIENT_SSL) {
        return Ok(ClientReply::SslRequest(head));
    }
    let rest = &payload[SSL_REQUEST_LEN..];
    let (username, rest) = null_str(rest).ok_or(truncated("username"))?;
    let (auth_response, rest) =
        if caps.contains(CapabilityFlags::CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA) {
            let (data, n) = lenenc_str(rest).ok_or(truncated("auth response"))?;
            (data, &rest[n..])
        } else if caps.contains(CapabilityFlags::CLIENT_SECURE_CONNECTION) {
            let (&len, tail) = rest.split_first().ok_or(truncated("auth response"))?;
            let len = usize::from(len);
            (
                tail.get(..len).ok_or(truncated("auth response"))?,
                &tail[len..],
            )
        } else {
            null_str(rest).ok_or(truncated("auth response"))?
        };
    let (database, rest) =
        if caps.contains(CapabilityFlags::CLIENT_CONNECT_WITH_DB) && !rest.is_empty() {
            let (db, rest) = null_str(rest).ok_or(truncated("database"))?;
            (Some(db), rest)
        } else {
            (None, rest)
        };
    let (auth_plugin, rest) = if caps.contains(CapabilityFlags::CLIENT_PLUGIN_AUTH) {
        // some clients leave out the NUL when the name is the last field; MySQL accepts that
        match null_str(rest) {
            Some((name, rest)) => (Some(name), rest),
            None => (Some(rest), &rest[rest.len()..]),
        }
    } else {
        (None, rest)
    };
    let connect_attrs = if caps.contains(CapabilityFlags::CLIENT_CONNECT_ATTRS) && !rest.is_empty()
    {
        let (block, _) = lenenc_str(rest).ok_or(truncated("connect attributes"))?;
        Some(block)
    } else {
        None
    };
    Ok(ClientReply::Handshake(ClientHandshake {
        head,
        username,
        auth_response,
        database,
        auth_plugin,
        connect_attrs,
    }))
}

/// Iterates the (key, value) pairs of a raw connect-attributes block, borrowed. Stops
/// at the first malformed pair.
pub fn connect_attrs(block: &[u8]) -> ConnectAttrs<'_> {
    ConnectAttrs { rest: block }
}

/// Iterator returned by [`connect_attrs`].
#[derive(Debug, Clone)]
pub struct ConnectAttrs<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for ConnectAttrs<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let (key, n) = lenenc_str(self.rest)?;
        let (value, m) = lenenc_str(&self.rest[n..])?;
        self.rest = &self.rest[n + m..];
        Some((key, value))
    }
}

/// A backend server's greeting, as the proxy's backend connection needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerGreeting {
    pub server_version: String,
    pub connection_id: u32,
    /// The 20-byte nonce for the password plugins.
    pub scramble: Vec<u8>,
    pub capabilities: CapabilityFlags,
    pub charset: u8,
    pub status: StatusFlags,
    pub auth_plugin: Option<String>,
    /// MariaDB's extended capabilities (0 from MySQL).
    pub mariadb_capabilities: u32,
}

/// Reads a backend's HandshakeV10 greeting with mysql_common. An ERR packet instead of a
/// greeting (too many connections, host blocked …) becomes `ServerRefused`.
///
/// Guard: mysql_common computes `auth_plugin_data_len as i8 - 8`, which overflows (a panic
/// in debug builds) for length bytes 0x80..=0x87, so such greetings are rejected here first.
pub fn parse_greeting(payload: &[u8]) -> Result<ServerGreeting, HandshakeError> {
    let (&version, rest) = payload.split_first().ok_or(HandshakeError::Greeting {
        field: "protocol version",
    })?;
    if version == header::ERR {
        let err = parse_err(payload).map_err(|_| HandshakeError::Greeting {
            field: "error packet",
        })?;
        return Err(HandshakeError::ServerRefused {
            code: err.code,
            message: String::from_utf8_lossy(err.message).into_owned(),
        });
    }
    if version != PROTOCOL_VERSION {
        return Err(HandshakeError::ProtocolVersion(version));
    }
    let (_, after_version) = null_str(rest).ok_or(HandshakeError::Greeting {
        field: "server version",
    })?;
    // connection id 4, scramble 8, filler 1, caps 2, charset 1, status 2, caps 2
    if after_version.get(20).is_some_and(|&len| len >= 0x80) {
        return Err(HandshakeError::Greeting {
            field: "auth plugin data length",
        });
    }
    let hs: HandshakePacket<'_> =
        ParseBuf(payload)
            .parse(())
            .map_err(|_| HandshakeError::Greeting {
                field: "fixed fields",
            })?;
    Ok(ServerGreeting {
        server_version: hs.server_version_str().into_owned(),
        connection_id: hs.connection_id(),
        scramble: hs.nonce(),
        capabilities: hs.capabilities(),
        charset: hs.default_collation(),
        status: hs.status_flags(),
        auth_plugin: hs.auth_plugin_name_str().map(|s| s.into_owned()),
        mariadb_capabilities: hs.mariadb_ext_capabilities().bits(),
    })
}

/// What the proxy says in its HandshakeResponse41 to a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientHello<'a> {
    /// Chosen by the caller, normally the client's capabilities ∩ the backend's; the
    /// flags that depend on the fields below are set or cleared here.
    pub capabilities: CapabilityFlags,
    pub max_packet_size: u32,
    pub charset: u8,
    pub username: &'a [u8],
    pub auth_response: &'a [u8],
    pub database: Option<&'a [u8]>,
    pub auth_plugin: &'a str,
    /// A raw connect-attributes block (as read from the client, or built with
    /// [`put_connect_attr`]); `None` leaves CLIENT_CONNECT_ATTRS unset.
    pub connect_attrs: Option<&'a [u8]>,
    /// MariaDB extended capabilities, in the last 4 filler bytes (0: none).
    pub mariadb_capabilities: u32,
}

impl ClientHello<'_> {
    /// The capabilities actually sent, after matching them to the fields.
    pub fn effective_capabilities(&self) -> CapabilityFlags {
        let mut caps = self.capabilities
            | CapabilityFlags::CLIENT_PROTOCOL_41
            | CapabilityFlags::CLIENT_SECURE_CONNECTION
            | CapabilityFlags::CLIENT_PLUGIN_AUTH
            | CapabilityFlags::CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA;
        caps.set(
            CapabilityFlags::CLIENT_CONNECT_WITH_DB,
            self.database.is_some(),
        );
        caps.set(
            CapabilityFlags::CLIENT_CONNECT_ATTRS,
            self.connect_attrs.is_some(),
        );
        caps
    }
}

/// Appends one key/value pair to a connect-attributes block.
pub fn put_connect_attr(block: &mut BytesMut, key: &str, value: &str) {
    put_lenenc_str(block, key.as_bytes());
    put_lenenc_str(block, value.as_bytes());
}

fn put_head(
    b: &mut BytesMut,
    caps: CapabilityFlags,
    max_packet_size: u32,
    charset: u8,
    mariadb: u32,
) {
    b.put_u32_le(caps.bits());
    b.put_u32_le(max_packet_size);
    b.put_u8(charset);
    b.put_bytes(0, 19);
    b.put_u32_le(mariadb);
}

/// Writes the HandshakeResponse41 (normally sequence id 1, or 2 after an SSLRequest);
/// returns the next sequence id.
pub fn write_handshake_response(out: &mut BytesMut, seq: u8, hello: &ClientHello<'_>) -> u8 {
    write_with(out, seq, |b| {
        put_head(
            b,
            hello.effective_capabilities(),
            hello.max_packet_size,
            hello.charset,
            hello.mariadb_capabilities,
        );
        b.put_slice(hello.username);
        b.put_u8(0);
        put_lenenc_str(b, hello.auth_response);
        if let Some(db) = hello.database {
            b.put_slice(db);
            b.put_u8(0);
        }
        b.put_slice(hello.auth_plugin.as_bytes());
        b.put_u8(0);
        if let Some(attrs) = hello.connect_attrs {
            put_lenenc_int(b, attrs.len() as u64);
            b.put_slice(attrs);
        }
    })
}

/// Writes an SSLRequest (with CLIENT_SSL added) at sequence id 1; returns the next one.
pub fn write_ssl_request(
    out: &mut BytesMut,
    capabilities: CapabilityFlags,
    max_packet_size: u32,
    charset: u8,
    mariadb_capabilities: u32,
) -> u8 {
    write_with(out, 1, |b| {
        put_head(
            b,
            capabilities | CapabilityFlags::CLIENT_SSL,
            max_packet_size,
            charset,
            mariadb_capabilities,
        );
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::mysql::constants::UTF8MB4_GENERAL_CI;
    use crate::protocol::mysql::packet::packet;
    use mysql_common::packets::{AuthPlugin, HandshakeResponse, SslRequest};
    use rand::SeedableRng;
    use std::collections::HashMap;

    fn payload(out: &BytesMut) -> Vec<u8> {
        packet(out, usize::MAX).unwrap().unwrap().1.to_vec()
    }

    fn greeting() -> Greeting<'static> {
        Greeting {
            server_version: "8.0.36-switchyard",
            connection_id: 42,
            scramble: *b"abcdefghij0123456789",
            capabilities: offered_capabilities(),
            charset: UTF8MB4_GENERAL_CI,
            status: StatusFlags::SERVER_STATUS_AUTOCOMMIT,
            auth_plugin: "caching_sha2_password",
            mariadb_capabilities: 0,
        }
    }

    #[test]
    fn greeting_round_trips_through_mysql_common_and_our_reader() {
        let mut out = BytesMut::new();
        assert_eq!(write_greeting(&mut out, &greeting()), 1);
        assert_eq!(out[3], 0, "greeting has sequence id 0");
        let p = payload(&out);
        let theirs: HandshakePacket<'_> = ParseBuf(&p).parse(()).unwrap();
        assert_eq!(theirs.nonce(), b"abcdefghij0123456789");
        assert_eq!(
            theirs.auth_plugin_name_ref(),
            Some(&b"caching_sha2_password"[..])
        );
        assert_eq!(theirs.server_version_parsed(), Some((8, 0, 36)));
        let ours = parse_greeting(&p).unwrap();
        assert_eq!(
            ours,
            ServerGreeting {
                server_version: "8.0.36-switchyard".into(),
                connection_id: 42,
                scramble: b"abcdefghij0123456789".to_vec(),
                capabilities: offered_capabilities(),
                charset: UTF8MB4_GENERAL_CI,
                status: StatusFlags::SERVER_STATUS_AUTOCOMMIT,
                auth_plugin: Some("caching_sha2_password".into()),
                mariadb_capabilities: 0,
            }
        );
        // A MariaDB greeting's extended capabilities, in the last filler bytes.
        let mut out = BytesMut::new();
        let mariadb = Greeting {
            mariadb_capabilities: MARIADB_EXTENDED_METADATA,
            ..greeting()
        };
        write_greeting(&mut out, &mariadb);
        let p = payload(&out);
        let theirs: HandshakePacket<'_> = ParseBuf(&p).parse(()).unwrap();
        assert_eq!(
            theirs.mariadb_ext_capabilities().bits(),
            MARIADB_EXTENDED_METADATA
        );
        assert_eq!(
            parse_greeting(&p).unwrap().mariadb_capabilities,
            MARIADB_EXTENDED_METADATA
        );
    }

    #[test]
    fn greeting_errors() {
        let refused = b"\xff\x10\x04#08004Too many connections";
        assert_eq!(
            parse_greeting(refused),
            Err(HandshakeError::ServerRefused {
                code: 1040,
                message: "Too many connections".into()
            })
        );
        assert_eq!(
            parse_greeting(b"\x09abc\0"),
            Err(HandshakeError::ProtocolVersion(9))
        );
        let mut out = BytesMut::new();
        write_greeting(&mut out, &greeting());
        let mut p = payload(&out);
        // the auth-plugin-data length byte that would overflow mysql_common's i8 arithmetic
        let at = 1 + "8.0.36-switchyard".len() + 1 + 20;
        for bad in 0x80..=0x87 {
            p[at] = bad;
            assert!(parse_greeting(&p).is_err());
        }
        for cut in 0..p.len() - 22 {
            assert!(parse_greeting(&p[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn scrambles_avoid_nul_and_dollar() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..200 {
            let s = new_scramble(&mut rng);
            assert!(s.iter().all(|&b| b != 0 && b != b'$' && b < 0x80));
        }
    }

    #[test]
    fn client_reply_written_by_mysql_common_is_read() {
        let caps = offered_capabilities();
        let attrs = HashMap::from([("_client_name".to_string(), "libmysql".to_string())]);
        for (db, plugin, attrs) in [
            (
                Some(&b"shop"[..]),
                Some(AuthPlugin::CachingSha2Password),
                Some(attrs.clone()),
            ),
            (None, Some(AuthPlugin::MysqlNativePassword), None),
            (Some(&b"shop"[..]), None, Some(attrs)),
        ] {
            let resp = HandshakeResponse::new(
                Some(&[7u8; 32][..]),
                (8, 0, 36),
                Some(&b"app"[..]),
                db,
                plugin.clone(),
                caps,
                Some(attrs.clone()).flatten(),
                16 << 20,
            );
            let mut p = Vec::new();
            resp.serialize(&mut p);
            let ClientReply::Handshake(h) = parse_client_reply(&p).unwrap() else {
                panic!("expected a handshake response");
            };
            assert_eq!(h.username, b"app");
            assert_eq!(h.auth_response, &[7u8; 32]);
            assert_eq!(h.database, db);
            assert_eq!(h.auth_plugin, plugin.as_ref().map(|p| p.as_bytes()));
            assert_eq!(h.head.max_packet_size, 16 << 20);
            assert_eq!(h.head.charset, resp.collation());
            let got: Vec<(&[u8], &[u8])> = h
                .connect_attrs
                .map(|a| connect_attrs(a).collect())
                .unwrap_or_default();
            let want: Vec<(&[u8], &[u8])> = attrs
                .iter()
                .flatten()
                .map(|(k, v)| (k.as_bytes(), v.as_bytes()))
                .collect();
            assert_eq!(got, want);
        }
    }

    #[test]
    fn ssl_request_is_told_apart() {
        let caps = offered_capabilities() | CapabilityFlags::CLIENT_SSL;
        let mut p = Vec::new();
        SslRequest::new(caps, 1 << 24, UTF8MB4_GENERAL_CI).serialize(&mut p);
        assert_eq!(p.len(), SSL_REQUEST_LEN);
        let ClientReply::SslRequest(head) = parse_client_reply(&p).unwrap() else {
            panic!("expected an SSLRequest");
        };
        assert_eq!(
            (head.capabilities, head.max_packet_size, head.charset),
            (caps, 1 << 24, UTF8MB4_GENERAL_CI)
        );
        // ours, at sequence id 1
        let mut out = BytesMut::new();
        assert_eq!(
            write_ssl_request(
                &mut out,
                offered_capabilities(),
                1 << 24,
                UTF8MB4_GENERAL_CI,
                0
            ),
            2
        );
        assert_eq!(out[3], 1);
        assert_eq!(payload(&out), p);
    }

    #[test]
    fn our_handshake_response_is_read_by_mysql_common_and_by_us() {
        let mut attrs = BytesMut::new();
        put_connect_attr(&mut attrs, "_client_name", "switchyard");
        put_connect_attr(&mut attrs, "program_name", "proxy");
        let hello = ClientHello {
            capabilities: offered_capabilities(),
            max_packet_size: 1 << 24,
            charset: 33,
            username: b"app",
            auth_response: &[1; 20],
            database: Some(b"shop"),
            auth_plugin: "mysql_native_password",
            connect_attrs: Some(&attrs),
            mariadb_capabilities: MARIADB_EXTENDED_METADATA,
        };
        let mut out = BytesMut::new();
        assert_eq!(write_handshake_response(&mut out, 1, &hello), 2);
        let p = payload(&out);
        let theirs: HandshakeResponse<'_> = ParseBuf(&p).parse(()).unwrap();
        assert_eq!(theirs.user(), b"app");
        assert_eq!(theirs.scramble_buf(), &[1; 20]);
        assert_eq!(theirs.db_name(), Some(&b"shop"[..]));
        assert_eq!(theirs.collation(), 33);
        assert_eq!(theirs.auth_plugin(), Some(&AuthPlugin::MysqlNativePassword));
        assert_eq!(
            theirs
                .connect_attributes()
                .unwrap()
                .get("program_name")
                .map(String::as_str),
            Some("proxy")
        );
        let ClientReply::Handshake(ours) = parse_client_reply(&p).unwrap() else {
            panic!("expected a handshake response");
        };
        assert_eq!(ours.connect_attrs, Some(&attrs[..]));
        assert_eq!(ours.head.mariadb_capabilities, MARIADB_EXTENDED_METADATA);
        assert_eq!(
            theirs.mariadb_ext_capabilities().bits(),
            MARIADB_EXTENDED_METADATA,
            "mysql_common reads the extended capabilities where MariaDB does"
        );
        // without database and attributes the flags are cleared
        let bare = ClientHello {
            database: None,
            connect_attrs: None,
            ..hello
        };
        let caps = bare.effective_capabilities();
        assert!(!caps.contains(CapabilityFlags::CLIENT_CONNECT_WITH_DB));
        assert!(!caps.contains(CapabilityFlags::CLIENT_CONNECT_ATTRS));
    }

    #[test]
    fn client_reply_errors() {
        let mut p = Vec::new();
        SslRequest::new(offered_capabilities(), 1 << 24, 45).serialize(&mut p);
        p.extend_from_slice(b"app\0\x14abc");
        assert_eq!(
            parse_client_reply(&p),
            Err(HandshakeError::Truncated {
                field: "auth response"
            })
        );
        assert_eq!(
            parse_client_reply(&p[..20]),
            Err(HandshakeError::Truncated {
                field: "fixed header"
            })
        );
        assert_eq!(
            parse_client_reply(&p[..2]),
            Err(HandshakeError::Truncated {
                field: "capabilities"
            })
        );
        assert_eq!(
            parse_client_reply(&[0; 40]),
            Err(HandshakeError::Protocol320)
        );
        // a plugin name without its NUL at the very end is accepted, as MySQL does
        let mut p = Vec::new();
        let caps = CapabilityFlags::CLIENT_PROTOCOL_41
            | CapabilityFlags::CLIENT_SECURE_CONNECTION
            | CapabilityFlags::CLIENT_PLUGIN_AUTH;
        SslRequest::new(caps, 0, 45).serialize(&mut p);
        p.extend_from_slice(b"app\0\x00mysql_native_password");
        let ClientReply::Handshake(h) = parse_client_reply(&p).unwrap() else {
            panic!()
        };
        assert_eq!(h.auth_plugin, Some(&b"mysql_native_password"[..]));
        assert_eq!(h.auth_response, b"");
    }
}
