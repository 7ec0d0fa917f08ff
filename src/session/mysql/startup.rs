//! The client's side of a MySQL connection's start: the proxy's greeting (the writer's, see
//! `greeted.rs`), the TLS upgrade and the HandshakeResponse41 (compression negotiated
//! there); password authentication is [`super::auth`]'s. Also the client connection's reads
//! and writes, compressed when the client asked for that.

use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::SessionError;
use super::auth::Attempt;
use super::compressed::Compressed;
use crate::backend::PassThrough;
use crate::backend::mysql::{ConnectError, Login};
use crate::config::{ClientTlsMode, User};
use crate::net::{Stream, UpgradeError};
use crate::pool::CheckoutError;
use crate::protocol::mysql::auth::Plugin;
use crate::protocol::mysql::constants::auth::SCRAMBLE_LEN;
use crate::protocol::mysql::constants::{
    CapabilityFlags, ER_ACCESS_DENIED_ERROR, ER_HANDSHAKE_ERROR, ErrorCode,
};
use crate::protocol::mysql::handshake::{self, ClientReply, Greeting, ServerGreeting};
use crate::protocol::mysql::messages;
use crate::protocol::mysql::packet;
use crate::router::ReadYourWrites;
use crate::session::Context;

/// Largest packet accepted before the client is authenticated.
const MAX_LOGIN_PACKET: usize = 64 * 1024;

/// A client connection: its stream, unread bytes and the capabilities agreed with it.
pub struct Client {
    pub stream: Stream,
    pub buf: BytesMut,
    pub capabilities: CapabilityFlags,
    /// Bytes relayed to the client so far: a failed read is retried only while unchanged.
    pub written: u64,
    /// The sequence id of the last packet relayed in answer to the current command: an
    /// error that ends the session halfway through an answer follows it.
    pub last_seq: Option<u8>,
    /// Set once the client's login ends, when it asked for the compressed protocol.
    pub compressed: Option<Compressed>,
}

impl Client {
    /// Reads more bytes; `Ok(0)` means the client closed the connection. With compression,
    /// `buf` gets the packets one compressed packet carried.
    pub async fn fill(&mut self) -> std::io::Result<usize> {
        let Some(c) = self.compressed.as_mut() else {
            if self.buf.capacity() - self.buf.len() < 4096 {
                self.buf.reserve(16 * 1024);
            }
            return self.stream.read_buf(&mut self.buf).await;
        };
        c.fill(&mut self.stream, &mut self.buf).await
    }

    /// Writes `bytes` (whole packets) at once when the client connection takes all of
    /// them (see `Stream::write_or_rest`); otherwise gives the write of the rest, flushed,
    /// to await. With compression everything is written by the future.
    pub fn write_or_rest<'a>(
        &'a mut self,
        bytes: &'a [u8],
    ) -> std::io::Result<Option<impl Future<Output = std::io::Result<()>> + 'a>> {
        let written = match self.compressed {
            None => self.stream.write_now(bytes)?,
            Some(_) => 0,
        };
        if written == bytes.len() {
            return Ok(None);
        }
        Ok(Some(async move {
            self.write_all(&bytes[written..]).await?;
            self.stream.flush().await
        }))
    }

    /// Writes bytes of whole packets to the client, compressed when it asked for that.
    pub async fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self.compressed.as_mut() {
            None => self.stream.write_all(bytes).await,
            Some(c) => c.write_all(&mut self.stream, bytes).await,
        }
    }

    /// Sends an ERR packet the proxy made (best effort: the client may be gone).
    pub async fn send_error(&mut self, seq: u8, error: ErrorCode, message: &str) {
        let mut out = BytesMut::new();
        let caps = self.capabilities | CapabilityFlags::CLIENT_PROTOCOL_41;
        messages::err_packet(&mut out, seq, caps, error, message);
        if let Err(e) = self.write_all(&out).await {
            tracing::debug!(error = %e, "could not send an error to the client");
        }
    }

    /// Reads the client's first packet byte-exactly: a client asking for TLS sends its TLS
    /// ClientHello right behind the SSLRequest, and those bytes must stay in the socket for
    /// the TLS acceptor.
    async fn read_first_packet(&mut self, deadline: Instant) -> Result<(u8, Bytes), SessionError> {
        let mut head = [0u8; packet::HEADER_LEN];
        self.read_exact_before(&mut head, deadline).await?;
        let len = usize::from(head[0]) | usize::from(head[1]) << 8 | usize::from(head[2]) << 16;
        if len > MAX_LOGIN_PACKET {
            return Err(SessionError::ClientProtocol(format!(
                "handshake packet of {len} bytes exceeds {MAX_LOGIN_PACKET}"
            )));
        }
        let mut payload = vec![0; len];
        self.read_exact_before(&mut payload, deadline).await?;
        Ok((head[3], Bytes::from(payload)))
    }

    async fn read_exact_before(
        &mut self,
        into: &mut [u8],
        deadline: Instant,
    ) -> Result<(), SessionError> {
        match tokio::time::timeout_at(deadline.into(), self.stream.read_exact(into)).await {
            Err(_) => Err(SessionError::StartupTimeout),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                Err(SessionError::ClientGone)
            }
            Ok(Err(e)) => Err(SessionError::ClientIo(e)),
            Ok(Ok(_)) => Ok(()),
        }
    }

    /// Reads one physical packet before `deadline`: (sequence id, payload).
    pub(super) async fn read_packet(
        &mut self,
        deadline: Instant,
    ) -> Result<(u8, Bytes), SessionError> {
        loop {
            let found = packet::packet(&self.buf, MAX_LOGIN_PACKET)
                .map_err(|e| SessionError::ClientProtocol(e.to_string()))?
                .map(|(h, _)| h);
            if let Some(h) = found {
                let mut whole = self.buf.split_to(packet::HEADER_LEN + h.len);
                whole.advance(packet::HEADER_LEN);
                return Ok((h.seq, whole.freeze()));
            }
            match tokio::time::timeout_at(deadline.into(), self.fill()).await {
                Err(_) => return Err(SessionError::StartupTimeout),
                Ok(Err(e)) => return Err(SessionError::ClientIo(e)),
                Ok(Ok(0)) => return Err(SessionError::ClientGone),
                Ok(Ok(_)) => {}
            }
        }
    }
}

/// An authenticated client, before the OK packet.
pub struct Authenticated {
    pub client: Client,
    pub user: User,
    /// How to log in to the backends as `user` without a configured password.
    pub pass_through: Option<PassThrough>,
    pub login: Login,
    /// Sequence id of the OK packet that ends the login.
    pub ok_seq: u8,
    /// The scramble of the greeting, which COM_CHANGE_USER answers too.
    pub scramble: [u8; SCRAMBLE_LEN],
}

/// What the route of `user`'s login to `login.database` says its reads see after its writes.
pub fn read_your_writes(ctx: &Context, user: &User, login: &Login) -> ReadYourWrites {
    let database = login.database.as_deref().map(String::from_utf8_lossy);
    ReadYourWrites::for_session(&ctx.config().raw.routing, &user.name, database.as_deref())
}

/// Answers a client that cannot be served with an ERR in place of the greeting, as a server
/// does (or with the writer's own ERR, when the writer refused the proxy's connection), and
/// returns the error.
pub async fn refuse(mut tcp: TcpStream, error: SessionError) -> SessionError {
    let mut out = BytesMut::new();
    match &error {
        SessionError::Connect(CheckoutError::Connect(ConnectError::Refused {
            payload, ..
        })) if !payload.is_empty() => {
            packet::write_packet(&mut out, 0, payload);
        }
        _ => {
            let Some((code, message)) = error.client_message() else {
                return error;
            };
            let caps = CapabilityFlags::CLIENT_PROTOCOL_41;
            messages::err_packet(&mut out, 0, caps, code, &message);
        }
    }
    // The connection closes either way.
    let _ = tcp.write_all(&out).await;
    error
}

/// Greets the client as its writer greeted the proxy (`writer`: the version, the collation,
/// the connection id, and of the capabilities those the relay passes through) and
/// authenticates it within `deadline`.
pub async fn handshake(
    tcp: TcpStream,
    ctx: &Context,
    writer: &ServerGreeting,
    deadline: Instant,
) -> Result<Authenticated, SessionError> {
    let client = Client {
        stream: Stream::Plain(tcp),
        buf: BytesMut::with_capacity(1024),
        capabilities: CapabilityFlags::CLIENT_PROTOCOL_41,
        written: 0,
        last_seq: None,
        compressed: None,
    };
    match authenticate(client, ctx, writer, deadline).await {
        Ok(done) => Ok(done),
        Err(Failure {
            error,
            seq,
            client: Some(mut c),
        }) => {
            if let Some((code, message)) = error.client_message() {
                c.send_error(seq, code, &message).await;
            }
            Err(error)
        }
        Err(Failure { error, .. }) => Err(error),
    }
}

struct Failure {
    error: SessionError,
    seq: u8,
    /// The client to tell, when the connection is still usable.
    client: Option<Client>,
}

async fn authenticate(
    mut c: Client,
    ctx: &Context,
    writer: &ServerGreeting,
    deadline: Instant,
) -> Result<Authenticated, Failure> {
    let fail = |error, seq, client: Option<Client>| Failure { error, seq, client };
    let config = ctx.config_arc();
    let server = &config.raw.server;
    let tls = ctx
        .tls
        .clone()
        .filter(|_| server.tls_mode != ClientTlsMode::Disable);
    // Compression is the proxy's own, on the client side only (zlib; no zstd).
    let mut offered = (handshake::offered_capabilities() & writer.capabilities)
        | CapabilityFlags::CLIENT_COMPRESS;
    if tls.is_some() {
        offered |= CapabilityFlags::CLIENT_SSL;
    }
    // MariaDB reads extended capabilities only from a greeting without CLIENT_LONG_PASSWORD
    // (its "CLIENT_MYSQL"), as a MariaDB writer's is.
    let offered_mariadb = if offered.contains(CapabilityFlags::CLIENT_LONG_PASSWORD) {
        0
    } else {
        writer.mariadb_capabilities & handshake::offered_mariadb_capabilities()
    };
    let scramble = handshake::new_scramble(&mut rand::rng());
    let mut out = BytesMut::new();
    handshake::write_greeting(
        &mut out,
        &Greeting {
            server_version: &writer.server_version,
            connection_id: writer.connection_id,
            scramble,
            capabilities: offered,
            charset: writer.charset,
            status: writer.status,
            auth_plugin: Plugin::MysqlNativePassword.name(),
            mariadb_capabilities: offered_mariadb,
        },
    );
    if let Err(e) = c.stream.write_all(&out).await {
        return Err(fail(SessionError::ClientIo(e), 0, None));
    }
    let (mut seq, mut payload) = match c.read_first_packet(deadline).await {
        Ok(p) => p,
        Err(e) => return Err(fail(e, 0, Some(c))),
    };
    let mut reply = match handshake::parse_client_reply(&payload) {
        Ok(r) => r,
        Err(e) => {
            return Err(fail(
                SessionError::ClientProtocol(e.to_string()),
                seq.wrapping_add(1),
                Some(c),
            ));
        }
    };
    if let (ClientReply::SslRequest(_), Some(config)) = (&reply, &tls) {
        c = match upgrade(c, Arc::clone(config), deadline).await {
            Ok(c) => c,
            Err(e) => return Err(fail(e, 0, None)),
        };
        (seq, payload) = match c.read_packet(deadline).await {
            Ok(p) => p,
            Err(e) => return Err(fail(e, 0, Some(c))),
        };
        reply = match handshake::parse_client_reply(&payload) {
            Ok(r) => r,
            Err(e) => {
                return Err(fail(
                    SessionError::ClientProtocol(e.to_string()),
                    seq.wrapping_add(1),
                    Some(c),
                ));
            }
        };
    }
    let ClientReply::Handshake(hello) = reply else {
        return Err(fail(
            SessionError::ClientProtocol("TLS requested but not offered".into()),
            seq.wrapping_add(1),
            Some(c),
        ));
    };
    if let Some(error) = unoffered_compression(hello.head.capabilities) {
        return Err(fail(error, seq.wrapping_add(1), Some(c)));
    }
    c.capabilities = hello.head.capabilities & offered;
    let is_tls = c.stream.is_tls();
    let next = seq.wrapping_add(1);
    if server.tls_mode == ClientTlsMode::Require && !is_tls {
        let e = SessionError::Refused {
            code: ER_ACCESS_DENIED_ERROR,
            message: "switchyard requires TLS (--ssl-mode=REQUIRED)".into(),
        };
        return Err(fail(e, next, Some(c)));
    }
    let name = String::from_utf8_lossy(hello.username).into_owned();
    let attempt = Attempt {
        name: &name,
        scramble,
        plugin: hello.auth_plugin,
        response: hello.auth_response,
    };
    let verified = match c.authenticate(ctx, attempt, next, deadline).await {
        Ok(verified) => verified,
        Err((error, seq)) => {
            let client = (!matches!(error, SessionError::ClientIo(_))).then_some(c);
            return Err(fail(error, seq, client));
        }
    };
    let login = Login {
        capabilities: c.capabilities
            - CapabilityFlags::CLIENT_SSL
            - CapabilityFlags::CLIENT_COMPRESS,
        charset: hello.head.charset,
        max_packet_size: hello.head.max_packet_size,
        database: hello.database.filter(|d| !d.is_empty()).map(<[u8]>::to_vec),
        connect_attrs: hello.connect_attrs.map(<[u8]>::to_vec),
        mariadb_capabilities: hello.head.mariadb_capabilities & offered_mariadb,
    };
    Ok(Authenticated {
        client: c,
        user: verified.user,
        pass_through: verified.pass_through,
        login,
        ok_seq: verified.ok_seq,
        scramble,
    })
}

/// A client asking for a compression the proxy did not offer (zstd) is refused at once,
/// with the reason, rather than left to hang on a stream it cannot read.
fn unoffered_compression(asked: CapabilityFlags) -> Option<SessionError> {
    asked
        .contains(CapabilityFlags::CLIENT_ZSTD_COMPRESSION_ALGORITHM)
        .then(|| SessionError::Refused {
            code: ER_HANDSHAKE_ERROR,
            message: "switchyard offers zlib compression only (CLIENT_COMPRESS), not zstd; connect with compression-algorithms=zlib or without compression".into(),
        })
}

async fn upgrade(
    client: Client,
    config: Arc<rustls::ServerConfig>,
    deadline: Instant,
) -> Result<Client, SessionError> {
    let stream = client
        .stream
        .accept_tls(config, deadline)
        .await
        .map_err(|e| match e {
            UpgradeError::AlreadyTls => SessionError::ClientProtocol(e.to_string()),
            UpgradeError::Timeout => SessionError::StartupTimeout,
            UpgradeError::Handshake(io) => SessionError::Tls(io),
        })?;
    Ok(Client {
        stream,
        buf: client.buf,
        capabilities: client.capabilities,
        written: client.written,
        last_seq: None,
        compressed: None,
    })
}
