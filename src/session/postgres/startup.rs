//! The client's side of connection startup: TLS negotiation, the startup packet and
//! CancelRequest; password authentication is [`super::auth`]'s.

use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::SessionError;
use crate::backend::PassThrough;
use crate::config::{ClientTlsMode, User};
use crate::net::{Stream, UpgradeError};
use crate::protocol::postgres::frame;
use crate::protocol::postgres::messages::{self, Severity, tag};
use crate::protocol::postgres::sqlstate;
use crate::protocol::postgres::startup::{self, MAX_STARTUP_PACKET, StartupPacket, StartupParams};
use crate::session::Context;

/// Largest password/SASL message accepted during authentication.
const MAX_AUTH_MESSAGE: usize = 10_000;

/// A client connection: its stream and the bytes read from it but not yet handled.
pub struct Client {
    pub stream: Stream,
    pub buf: BytesMut,
}

impl Client {
    /// Reads more bytes; `Ok(0)` means the client closed the connection.
    pub async fn fill(&mut self) -> std::io::Result<usize> {
        if self.buf.capacity() - self.buf.len() < 4096 {
            self.buf.reserve(16 * 1024);
        }
        self.stream.read_buf(&mut self.buf).await
    }

    /// Sends an ErrorResponse the proxy made (best effort: the client may be gone).
    pub async fn send_error(&mut self, severity: Severity, code: &str, message: &str) {
        let mut out = BytesMut::new();
        messages::error_response(&mut out, severity, code, message);
        if let Err(e) = self.stream.write_all(&out).await {
            tracing::debug!(error = %e, "could not send an error to the client");
        }
    }
}

/// A client that passed authentication.
pub struct Authenticated {
    pub client: Client,
    pub params: StartupParams,
    pub user: User,
    /// How to log in to the backends as `user` without a configured password.
    pub pass_through: Option<PassThrough>,
}

/// How startup ended.
pub enum Outcome {
    /// An authenticated client (AuthenticationOk not yet sent).
    Session(Box<Authenticated>),
    /// A CancelRequest; its connection is closed once the cancel is forwarded (over TLS
    /// with a close_notify, which libpq's TLS cancel waits for).
    Cancel {
        pid: i32,
        secret: i32,
        client: Client,
    },
}

/// Runs startup until the client is authenticated, within `deadline`.
pub async fn handshake(
    tcp: TcpStream,
    ctx: &Context,
    deadline: Instant,
) -> Result<Outcome, SessionError> {
    let mut client = Client {
        stream: Stream::Plain(tcp),
        buf: BytesMut::with_capacity(1024),
    };
    loop {
        let result = handshake_inner(&mut client, ctx, deadline).await;
        return match result {
            Ok(Some(Reply::Session { params, verified })) => {
                Ok(Outcome::Session(Box::new(Authenticated {
                    client,
                    params,
                    user: verified.user,
                    pass_through: verified.pass_through,
                })))
            }
            Ok(Some(Reply::Cancel { pid, secret })) => Ok(Outcome::Cancel {
                pid,
                secret,
                client,
            }),
            Ok(Some(Reply::UpgradeTls(config))) => {
                client = upgrade(client, config, deadline).await?;
                continue;
            }
            Ok(None) => Err(SessionError::ClientGone),
            Err(e) => {
                if let Some((code, message)) = e.client_message() {
                    client.send_error(Severity::Fatal, code, &message).await;
                }
                Err(e)
            }
        };
    }
}

enum Reply {
    Session {
        params: StartupParams,
        verified: Box<super::auth::Verified>,
    },
    Cancel {
        pid: i32,
        secret: i32,
    },
    /// The client asked for TLS and was told yes; the caller upgrades the stream.
    UpgradeTls(Arc<rustls::ServerConfig>),
}

async fn handshake_inner(
    client: &mut Client,
    ctx: &Context,
    deadline: Instant,
) -> Result<Option<Reply>, SessionError> {
    let tls_mode = ctx.config().raw.server.tls_mode;
    let params = loop {
        let Some(packet) = read_startup(client, deadline).await? else {
            return Ok(None);
        };
        match startup::decode(&packet).map_err(|e| SessionError::ClientProtocol(e.to_string()))? {
            StartupPacket::SslRequest => {
                let offer = ctx
                    .tls
                    .as_ref()
                    .filter(|_| tls_mode != ClientTlsMode::Disable);
                match offer {
                    Some(config) if !client.stream.is_tls() => {
                        if !client.buf.is_empty() {
                            // Bytes after SSLRequest were sent in the clear: refuse them.
                            return Err(SessionError::ClientProtocol(
                                "data after SSLRequest".into(),
                            ));
                        }
                        write(client, b"S").await?;
                        return Ok(Some(Reply::UpgradeTls(Arc::clone(config))));
                    }
                    _ => write(client, b"N").await?,
                }
            }
            StartupPacket::GssEncRequest => write(client, b"N").await?,
            StartupPacket::Cancel { pid, secret } => {
                return Ok(Some(Reply::Cancel { pid, secret }));
            }
            StartupPacket::Startup(params) => break params,
        }
    };
    if tls_mode == ClientTlsMode::Require && !client.stream.is_tls() {
        return Err(SessionError::Refused {
            code: sqlstate::INVALID_AUTHORIZATION_SPECIFICATION,
            message: "switchyard requires TLS (sslmode=require)".into(),
        });
    }
    if params
        .get("replication")
        .is_some_and(|v| !matches!(v, "false" | "off" | "no" | "0"))
    {
        return Err(SessionError::Refused {
            code: sqlstate::FEATURE_NOT_SUPPORTED,
            message: "replication connections are not supported through switchyard".into(),
        });
    }
    let unknown: Vec<&[u8]> = params.protocol_options().map(str::as_bytes).collect();
    if params.minor_version > 0 || !unknown.is_empty() {
        let mut out = BytesMut::new();
        messages::negotiate_protocol_version(&mut out, 0, &unknown);
        write(client, &out).await?;
    }
    let name = params
        .user()
        .ok_or_else(|| SessionError::Refused {
            code: sqlstate::INVALID_AUTHORIZATION_SPECIFICATION,
            message: "no PostgreSQL user name specified in startup packet".into(),
        })?
        .to_owned();
    let verified = Box::new(super::auth::authenticate(client, ctx, &name, deadline).await?);
    Ok(Some(Reply::Session { params, verified }))
}

pub(super) async fn write(client: &mut Client, bytes: &[u8]) -> Result<(), SessionError> {
    client
        .stream
        .write_all(bytes)
        .await
        .map_err(SessionError::ClientIo)
}

/// Reads more bytes before `deadline`; `false` when the client closed the connection.
async fn fill_before(client: &mut Client, deadline: Instant) -> Result<bool, SessionError> {
    match tokio::time::timeout_at(deadline.into(), client.fill()).await {
        Err(_) => Err(SessionError::StartupTimeout),
        Ok(Err(e)) => Err(SessionError::ClientIo(e)),
        Ok(Ok(n)) => Ok(n > 0),
    }
}

/// Reads one untagged startup packet; `None` if the client went away before sending one.
async fn read_startup(
    client: &mut Client,
    deadline: Instant,
) -> Result<Option<BytesMut>, SessionError> {
    loop {
        let len = frame::startup_len(&client.buf, MAX_STARTUP_PACKET)
            .map_err(|e| SessionError::ClientProtocol(e.to_string()))?;
        if let Some(len) = len.filter(|&l| client.buf.len() >= l) {
            return Ok(Some(client.buf.split_to(len)));
        }
        if !fill_before(client, deadline).await? {
            return Ok(None);
        }
    }
}

/// Reads a PasswordMessage / SASL response and returns its body.
pub(super) async fn read_password(
    client: &mut Client,
    deadline: Instant,
) -> Result<BytesMut, SessionError> {
    loop {
        let head = frame::header(&client.buf, MAX_AUTH_MESSAGE)
            .map_err(|e| SessionError::ClientProtocol(e.to_string()))?;
        if let Some(h) = head.filter(|h| client.buf.len() >= h.total) {
            if h.tag != tag::PASSWORD {
                return Err(SessionError::ClientProtocol(format!(
                    "expected a password message, got {:?}",
                    h.tag as char
                )));
            }
            let mut m = client.buf.split_to(h.total);
            m.advance(frame::HEADER_LEN);
            return Ok(m);
        }
        if !fill_before(client, deadline).await? {
            return Err(SessionError::ClientGone);
        }
    }
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
    })
}
