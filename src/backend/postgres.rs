//! PostgreSQL backend connections: open TCP (and TLS), send the startup message, authenticate
//! (SCRAM-SHA-256, md5, cleartext, trust) and collect what the server announces.
//! `crate::pool` keeps them between clients; `reset` readies one for its next client.

mod reset;

use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::message::frontend;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{Carried, Credentials, PassThrough, StatementCache};
use crate::config::BackendTlsMode;
use crate::net::Stream;
use crate::protocol::postgres::frame::{self, cstr};
use crate::protocol::postgres::messages::{self, auth, tag};
use crate::protocol::postgres::scram::{self, ScramError};
use crate::protocol::postgres::scram_client::ScramClient;
use crate::protocol::postgres::startup::SSL_REQUEST_CODE;
use crate::topology::{Attachment, Cluster, Instance};

pub use super::ResetError;

/// Largest message accepted from a backend during startup.
const MAX_STARTUP_MESSAGE: usize = 1 << 20;

/// The key a backend hands out for CancelRequest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendKey {
    pub pid: i32,
    pub secret: i32,
}

/// An authenticated backend connection, ready for queries.
/// A statement prepared on a connection: the Parse message it was prepared with (empty:
/// not to be trusted, prepared again at its next use) and a digest of its result columns
/// as the server last described them (0: not seen).
#[derive(Debug, Clone, Default)]
pub struct Held {
    pub parse: Bytes,
    pub columns: u64,
}

impl Held {
    /// Prepared with `parse`; its columns not seen yet.
    pub fn new(parse: Bytes) -> Held {
        Held { parse, columns: 0 }
    }
}

pub struct BackendConn {
    pub instance: Arc<Instance>,
    /// Counts this connection in the instance's attached sessions while a session holds it
    /// (not while it is idle in the pool: see `set_attached`).
    attached: Option<Attachment>,
    pub stream: Stream,
    /// Bytes read from the backend and not yet handled.
    pub buf: BytesMut,
    pub key: Option<BackendKey>,
    /// The ParameterStatus messages of startup, whole, in order.
    pub parameter_status: Vec<Bytes>,
    /// NoticeResponse messages of startup, whole.
    pub notices: Vec<Bytes>,
    /// The named and unnamed statements prepared on it, by name.
    pub prepared: StatementCache<Held>,
    /// What it carries from the sessions that used it.
    pub carried: Carried,
    /// Its metric handles, looked up once when it opens (a pooled connection serves many
    /// sessions).
    pub metrics: crate::metrics::BackendMetrics,
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect to {addr}")]
    Io {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("connect to {addr}: no answer within {timeout:?}")]
    Timeout { addr: String, timeout: Duration },
    #[error("connect to {addr}: server refused TLS")]
    TlsRefused { addr: String },
    #[error("connect to {addr}: {name:?} is not a host name or IP address TLS can verify")]
    TlsName { addr: String, name: String },
    #[error("connect to {addr}: server requested unsupported authentication ({detail})")]
    UnsupportedAuth { addr: String, detail: String },
    #[error("connect to {addr}: server requested a password, and none is configured for this user")]
    NoPassword { addr: String },
    #[error("connect to {addr}: SCRAM exchange failed")]
    Scram {
        addr: String,
        #[source]
        source: ScramError,
    },
    #[error("connect to {addr}: protocol violation: {detail}")]
    Protocol { addr: String, detail: String },
    /// The server refused with an ErrorResponse, kept whole so it can be relayed.
    #[error("connect to {addr}: server said {code}: {message}")]
    Server {
        addr: String,
        code: String,
        message: String,
        raw: Bytes,
    },
}

impl crate::pool::LoginError for ConnectError {
    /// `53300` (too_many_connections): `max_connections` (less the reserved slots), a
    /// role's or a database's `CONNECTION LIMIT`.
    fn server_full(&self) -> bool {
        matches!(self, ConnectError::Server { code, .. } if code == "53300")
    }

    fn refused(&self) -> bool {
        !self.instance_unreachable()
    }
}

impl ConnectError {
    /// True when the instance itself is unreachable (not a refusal of this login): no
    /// connection, no answer, no TLS, a broken handshake, or a server shutting down,
    /// starting up or in recovery (`57P…`, `08…`).
    pub fn instance_unreachable(&self) -> bool {
        matches!(
            self,
            ConnectError::Io { .. }
                | ConnectError::Timeout { .. }
                | ConnectError::TlsRefused { .. }
                | ConnectError::Protocol { .. }
        ) || matches!(self, ConnectError::Server { code, .. } if code.starts_with("57P") || code.starts_with("08"))
    }
}

/// Opens and authenticates a connection to `instance`, within `timeout`.
pub async fn connect(
    cluster: &Cluster,
    instance: &Arc<Instance>,
    params: &[(String, String)],
    creds: &Credentials,
    timeout: Duration,
) -> Result<BackendConn, ConnectError> {
    let addr = instance.addr.clone();
    match tokio::time::timeout(timeout, connect_inner(cluster, instance, params, creds)).await {
        Ok(result) => result,
        Err(_) => Err(ConnectError::Timeout { addr, timeout }),
    }
}

async fn connect_inner(
    cluster: &Cluster,
    instance: &Arc<Instance>,
    params: &[(String, String)],
    creds: &Credentials,
) -> Result<BackendConn, ConnectError> {
    let addr = instance.addr.as_str();
    let io = |source| ConnectError::Io {
        addr: addr.to_owned(),
        source,
    };
    let tcp = TcpStream::connect((instance.host.as_str(), instance.port))
        .await
        .map_err(io)?;
    tcp.set_nodelay(true).map_err(io)?;
    let mut stream = match (&cluster.tls, cluster.tls_mode) {
        (Some(config), mode) if mode != BackendTlsMode::Disable => {
            start_tls(tcp, Arc::clone(config), instance).await?
        }
        _ => Stream::Plain(tcp),
    };

    let mut out = BytesMut::new();
    let startup = params
        .iter()
        .filter(|(k, _)| k != "user")
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .chain(std::iter::once(("user", creds.user.as_str())));
    frontend::startup_message(startup, &mut out).map_err(io)?;
    stream.write_all(&out).await.map_err(io)?;

    let mut conn = BackendConn {
        instance: Arc::clone(instance),
        attached: Some(Attachment::new(instance)),
        stream,
        buf: BytesMut::with_capacity(8192),
        key: None,
        parameter_status: Vec::new(),
        notices: Vec::new(),
        prepared: StatementCache::counted(crate::metrics::prepared_statements(instance)),
        carried: Carried::default(),
        metrics: super::connection_metrics(instance),
    };
    let mut scram: Option<ScramClient> = None;
    loop {
        let msg = conn.next_message().await?;
        let body = &msg[frame::HEADER_LEN..];
        match msg[0] {
            tag::AUTHENTICATION => {
                let code = read_i32(body).ok_or_else(|| conn.protocol("short Authentication"))?;
                out.clear();
                answer_auth(&conn, code, &body[4..], creds, &mut scram, &mut out)?;
                if !out.is_empty() {
                    conn.stream.write_all(&out).await.map_err(io)?;
                }
            }
            tag::PARAMETER_STATUS => conn.parameter_status.push(msg),
            tag::NOTICE_RESPONSE => conn.notices.push(msg),
            tag::BACKEND_KEY_DATA => {
                let pid = read_i32(body);
                let secret = body.get(4..).and_then(read_i32);
                if let (Some(pid), Some(secret)) = (pid, secret) {
                    conn.key = Some(BackendKey { pid, secret });
                }
            }
            tag::NEGOTIATE_PROTOCOL_VERSION => {}
            tag::READY_FOR_QUERY => return Ok(conn),
            tag::ERROR_RESPONSE => {
                let (code, message) = messages::error_fields(body);
                return Err(ConnectError::Server {
                    addr: addr.to_owned(),
                    code,
                    message,
                    raw: msg,
                });
            }
            other => {
                return Err(conn.protocol(&format!(
                    "unexpected message {:?} during startup",
                    other as char
                )));
            }
        }
    }
}

/// Answers one Authentication request of the server into `out` (left empty when there is
/// nothing to send: AuthenticationOk, SASLFinal). `scram` carries the SCRAM exchange
/// between requests.
fn answer_auth(
    conn: &BackendConn,
    code: i32,
    data: &[u8],
    creds: &Credentials,
    scram: &mut Option<ScramClient>,
    out: &mut BytesMut,
) -> Result<(), ConnectError> {
    let addr = conn.instance.addr.as_str();
    let io = |source| ConnectError::Io {
        addr: addr.to_owned(),
        source,
    };
    match code {
        auth::OK => {}
        auth::CLEARTEXT_PASSWORD => {
            let password = conn.password(creds)?;
            frontend::password_message(password.as_bytes(), out).map_err(io)?;
        }
        auth::MD5_PASSWORD => {
            let salt: [u8; 4] = data
                .get(..4)
                .and_then(|s| s.try_into().ok())
                .ok_or_else(|| conn.protocol("short md5 salt"))?;
            let hash = match (&creds.password, creds.pass_through) {
                (None, Some(PassThrough::Md5(stored))) => stored.answer(salt),
                _ => {
                    let password = conn.password(creds)?;
                    md5_hash(creds.user.as_bytes(), password.as_bytes(), salt)
                }
            };
            frontend::password_message(hash.as_bytes(), out).map_err(io)?;
        }
        auth::SASL => {
            let offers_scram = data
                .split(|&b| b == 0)
                .any(|m| m == scram::MECHANISM.as_bytes());
            if !offers_scram {
                return Err(ConnectError::UnsupportedAuth {
                    addr: addr.to_owned(),
                    detail: format!("SASL {}", String::from_utf8_lossy(data)),
                });
            }
            let nonce = scram::random_nonce();
            let (s, first) = match (&creds.password, creds.pass_through) {
                (None, Some(PassThrough::Scram(keys))) => ScramClient::with_keys(keys, &nonce),
                _ => ScramClient::new(conn.password(creds)?.as_bytes(), &nonce),
            };
            frontend::sasl_initial_response(scram::MECHANISM, first.as_bytes(), out).map_err(io)?;
            *scram = Some(s);
        }
        auth::SASL_CONTINUE => {
            let s = scram
                .as_mut()
                .ok_or_else(|| conn.protocol("unexpected SASLContinue"))?;
            let last =
                s.server_first(data, &creds.salted)
                    .map_err(|source| ConnectError::Scram {
                        addr: addr.to_owned(),
                        source,
                    })?;
            frontend::sasl_response(last.as_bytes(), out).map_err(io)?;
        }
        auth::SASL_FINAL => {
            let mut s = scram
                .take()
                .ok_or_else(|| conn.protocol("unexpected SASLFinal"))?;
            s.server_final(data).map_err(|source| ConnectError::Scram {
                addr: addr.to_owned(),
                source,
            })?;
        }
        other => {
            return Err(ConnectError::UnsupportedAuth {
                addr: addr.to_owned(),
                detail: format!("method {other}"),
            });
        }
    }
    Ok(())
}

async fn start_tls(
    mut tcp: TcpStream,
    config: Arc<rustls::ClientConfig>,
    instance: &Instance,
) -> Result<Stream, ConnectError> {
    let addr = instance.addr.as_str();
    let io = |source| ConnectError::Io {
        addr: addr.to_owned(),
        source,
    };
    let mut request = [0u8; 8];
    request[..4].copy_from_slice(&8i32.to_be_bytes());
    request[4..].copy_from_slice(&SSL_REQUEST_CODE.to_be_bytes());
    tcp.write_all(&request).await.map_err(io)?;
    let answer = tcp.read_u8().await.map_err(io)?;
    if answer != b'S' {
        return Err(ConnectError::TlsRefused {
            addr: addr.to_owned(),
        });
    }
    let name =
        ServerName::try_from(instance.tls_name.clone()).map_err(|_| ConnectError::TlsName {
            addr: addr.to_owned(),
            name: instance.tls_name.clone(),
        })?;
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(io)?;
    Ok(Stream::TlsClient(Box::new(tls)))
}

fn read_i32(b: &[u8]) -> Option<i32> {
    Some(i32::from_be_bytes(b.get(..4)?.try_into().ok()?))
}

impl BackendConn {
    fn protocol(&self, detail: &str) -> ConnectError {
        ConnectError::Protocol {
            addr: self.instance.addr.clone(),
            detail: detail.to_owned(),
        }
    }

    fn password<'a>(&self, creds: &'a Credentials) -> Result<&'a str, ConnectError> {
        creds
            .password
            .as_deref()
            .ok_or_else(|| ConnectError::NoPassword {
                addr: self.instance.addr.clone(),
            })
    }

    /// Reads one whole message (used during startup only; the data path relays).
    async fn next_message(&mut self) -> Result<Bytes, ConnectError> {
        loop {
            match frame::header(&self.buf, MAX_STARTUP_MESSAGE) {
                Ok(Some(h)) if self.buf.len() >= h.total => {
                    return Ok(self.buf.split_to(h.total).freeze());
                }
                Ok(_) => {}
                Err(e) => return Err(self.protocol(&e.to_string())),
            }
            let n = self
                .stream
                .read_buf(&mut self.buf)
                .await
                .map_err(|source| ConnectError::Io {
                    addr: self.instance.addr.clone(),
                    source,
                })?;
            if n == 0 {
                return Err(self.protocol("connection closed during startup"));
            }
        }
    }

    /// The name and value of each ParameterStatus from startup.
    pub fn parameters(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.parameter_status.iter().filter_map(|m| {
            let body = m.get(frame::HEADER_LEN..)?;
            let (name, rest) = cstr(body)?;
            let (value, _) = cstr(rest)?;
            Some((name, value))
        })
    }

    /// Drops `n` handled bytes from the read buffer.
    pub fn consume(&mut self, n: usize) {
        self.buf.advance(n);
    }
}
