//! MySQL backend connections: TCP (and TLS), the backend's greeting, a HandshakeResponse41
//! carrying the client's result-shaping capabilities (so responses relay unchanged), and
//! login with mysql_native_password or caching_sha2_password. `crate::pool` keeps them
//! between clients; `reset` readies one for its next client.

mod reset;

use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{Carried, Credentials, PassThrough, StatementCache};
use crate::config::BackendTlsMode;
use crate::net::Stream;
use crate::protocol::mysql::auth::client::{
    BackendAuthError, BackendSecret, ClientAuth, ClientStep,
};
use crate::protocol::mysql::constants::{CapabilityFlags, StatusFlags, header};
use crate::protocol::mysql::handshake::{self, ClientHello, ServerGreeting};
use crate::protocol::mysql::packet::{self, write_packet};
use crate::topology::{Attachment, Cluster, Instance};

pub use super::ResetError;

/// Largest packet accepted from a backend during login.
const MAX_LOGIN_PACKET: usize = 1 << 20;

/// Capabilities that change how responses are shaped: client and backend must agree.
pub fn shaping_capabilities() -> CapabilityFlags {
    CapabilityFlags::CLIENT_DEPRECATE_EOF
        | CapabilityFlags::CLIENT_SESSION_TRACK
        | CapabilityFlags::CLIENT_MULTI_STATEMENTS
        | CapabilityFlags::CLIENT_MULTI_RESULTS
        | CapabilityFlags::CLIENT_PS_MULTI_RESULTS
        | CapabilityFlags::CLIENT_FOUND_ROWS
        | CapabilityFlags::CLIENT_LOCAL_FILES
        | CapabilityFlags::CLIENT_IGNORE_SPACE
        | CapabilityFlags::CLIENT_PROTOCOL_41
}

/// What the proxy logs in with, taken from the client's handshake.
#[derive(Debug, Clone)]
pub struct Login {
    /// The capabilities agreed with the client.
    pub capabilities: CapabilityFlags,
    pub charset: u8,
    pub max_packet_size: u32,
    pub database: Option<Vec<u8>>,
    pub connect_attrs: Option<Vec<u8>>,
    /// The MariaDB extended capabilities agreed with the client
    /// (`handshake::offered_mariadb_capabilities` at most).
    pub mariadb_capabilities: u32,
}

/// An authenticated backend connection, ready for commands.
pub struct MysqlConn {
    pub instance: Arc<Instance>,
    /// Counts this connection in the instance's attached sessions while a session holds it
    /// (not while it is idle in the pool: see `set_attached`).
    attached: Option<Attachment>,
    pub stream: Stream,
    pub buf: BytesMut,
    /// The backend's own connection id (for KILL QUERY).
    pub connection_id: u32,
    pub capabilities: CapabilityFlags,
    /// The MariaDB extended capabilities it logged in with (extended metadata changes its
    /// column definitions).
    pub mariadb_capabilities: u32,
    pub status: StatusFlags,
    /// The default database the login named, which a reset selects again.
    pub database: Option<Vec<u8>>,
    /// The statements prepared on it: SQL text → the server's statement id and parameter
    /// count.
    pub prepared: StatementCache<Prepared>,
    /// What it carries from the sessions that used it.
    pub carried: Carried,
    /// Its metric handles, looked up once when it opens (a pooled connection serves many
    /// sessions).
    pub metrics: crate::metrics::BackendMetrics,
}

/// A statement prepared on a MySQL server connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prepared {
    pub id: u32,
    pub params: u16,
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
    #[error("connect to {addr}: server does not offer TLS")]
    TlsRefused { addr: String },
    #[error("connect to {addr}: {name:?} is not a host name or IP address TLS can verify")]
    TlsName { addr: String, name: String },
    #[error("connect to {addr}: protocol violation: {detail}")]
    Protocol { addr: String, detail: String },
    #[error("connect to {addr}: backend lacks capabilities the client negotiated: {missing:?}")]
    Capabilities {
        addr: String,
        missing: CapabilityFlags,
    },
    #[error(
        "connect to {addr}: backend lacks MariaDB extended capabilities the client negotiated \
         ({missing:#x})"
    )]
    MariadbCapabilities { addr: String, missing: u32 },
    #[error("connect to {addr}: login failed")]
    Auth {
        addr: String,
        #[source]
        source: BackendAuthError,
    },
    /// The server answered with an ERR packet, kept whole (payload) so it can be relayed.
    #[error("connect to {addr}: server refused: {message}")]
    Refused {
        addr: String,
        message: String,
        payload: Bytes,
    },
}

/// The ERR codes of a login refused for want of connection slots: `max_connections`
/// (ER_CON_COUNT_ERROR), the global `max_user_connections` (ER_TOO_MANY_USER_CONNECTIONS)
/// and an account's `MAX_USER_CONNECTIONS` (ER_USER_LIMIT_REACHED).
const SERVER_FULL: [u16; 3] = [1040, 1203, 1226];

impl crate::pool::LoginError for ConnectError {
    fn server_full(&self) -> bool {
        match self {
            ConnectError::Refused { payload, .. } => {
                crate::protocol::mysql::messages::parse_err(payload)
                    .is_ok_and(|err| SERVER_FULL.contains(&err.code))
            }
            _ => false,
        }
    }

    fn refused(&self) -> bool {
        !self.instance_unreachable()
    }
}

/// ER_SERVER_SHUTDOWN: a server shutting down answers a login with it.
const SERVER_SHUTDOWN: u16 = 1053;

impl ConnectError {
    /// True when the instance itself is unreachable (not a refusal of this login): no
    /// connection, no answer, no TLS, a broken handshake, or a server shutting down.
    pub fn instance_unreachable(&self) -> bool {
        match self {
            ConnectError::Io { .. }
            | ConnectError::Timeout { .. }
            | ConnectError::TlsRefused { .. }
            | ConnectError::Protocol { .. } => true,
            ConnectError::Refused { payload, .. } => {
                crate::protocol::mysql::messages::parse_err(payload)
                    .is_ok_and(|err| err.code == SERVER_SHUTDOWN)
            }
            _ => false,
        }
    }
}

/// Opens and authenticates a connection to `instance` within `timeout`.
pub async fn connect(
    cluster: &Cluster,
    instance: &Arc<Instance>,
    login: &Login,
    creds: &Credentials,
    timeout: Duration,
) -> Result<MysqlConn, ConnectError> {
    let started = tokio::time::Instant::now();
    let greeted = open(instance, timeout).await?;
    let left = timeout.saturating_sub(started.elapsed());
    greeted.login(cluster, login, creds, left).await
}

/// Opens a connection to `instance` and reads its greeting within `timeout`, without
/// logging in yet: a MySQL session greets its client with what its writer said (version,
/// capabilities, collation, connection id), so it opens the writer connection this far
/// before it knows who the client is.
pub async fn open(instance: &Arc<Instance>, timeout: Duration) -> Result<Greeted, ConnectError> {
    let opened = async {
        let addr = instance.addr.clone();
        let tcp = TcpStream::connect((instance.host.as_str(), instance.port))
            .await
            .map_err(|source| ConnectError::Io {
                addr: addr.clone(),
                source,
            })?;
        tcp.set_nodelay(true).map_err(|source| ConnectError::Io {
            addr: addr.clone(),
            source,
        })?;
        let mut conn = MysqlConn {
            instance: Arc::clone(instance),
            attached: Some(Attachment::new(instance)),
            stream: Stream::Plain(tcp),
            buf: BytesMut::with_capacity(8192),
            connection_id: 0,
            capabilities: CapabilityFlags::empty(),
            mariadb_capabilities: 0,
            status: StatusFlags::empty(),
            database: None,
            prepared: StatementCache::counted(crate::metrics::prepared_statements(instance)),
            carried: Carried::default(),
            metrics: super::connection_metrics(instance),
        };
        let (_, payload) = conn.read_packet().await?;
        let greeting = handshake::parse_greeting(&payload).map_err(|e| match e {
            handshake::HandshakeError::ServerRefused { message, .. } => ConnectError::Refused {
                addr: addr.clone(),
                message,
                payload: payload.clone(),
            },
            other => ConnectError::Protocol {
                addr: addr.clone(),
                detail: other.to_string(),
            },
        })?;
        conn.connection_id = greeting.connection_id;
        conn.status = greeting.status;
        Ok(Greeted { conn, greeting })
    };
    match tokio::time::timeout(timeout, opened).await {
        Ok(result) => result,
        Err(_) => Err(ConnectError::Timeout {
            addr: instance.addr.clone(),
            timeout,
        }),
    }
}

/// A backend connection whose server has greeted the proxy, not logged in yet.
pub struct Greeted {
    conn: MysqlConn,
    pub greeting: ServerGreeting,
}

impl Greeted {
    /// The instance it is connected to.
    pub fn instance(&self) -> &Arc<Instance> {
        &self.conn.instance
    }

    /// Logs in (TLS first where the cluster says) within `timeout`.
    pub async fn login(
        self,
        cluster: &Cluster,
        login: &Login,
        creds: &Credentials,
        timeout: Duration,
    ) -> Result<MysqlConn, ConnectError> {
        let addr = self.conn.instance.addr.clone();
        match tokio::time::timeout(timeout, login_inner(self, cluster, login, creds)).await {
            Ok(result) => result,
            Err(_) => Err(ConnectError::Timeout { addr, timeout }),
        }
    }
}

async fn login_inner(
    greeted: Greeted,
    cluster: &Cluster,
    login: &Login,
    creds: &Credentials,
) -> Result<MysqlConn, ConnectError> {
    let Greeted { mut conn, greeting } = greeted;
    let addr = conn.instance.addr.clone();
    let io = |source| ConnectError::Io {
        addr: addr.clone(),
        source,
    };
    let shaping = shaping_capabilities() & login.capabilities;
    let missing = shaping & !greeting.capabilities;
    if !missing.is_empty() {
        return Err(ConnectError::Capabilities { addr, missing });
    }
    let missing = login.mariadb_capabilities & !greeting.mariadb_capabilities;
    if missing != 0 {
        return Err(ConnectError::MariadbCapabilities { addr, missing });
    }
    let mariadb_capabilities =
        login.mariadb_capabilities & handshake::offered_mariadb_capabilities();
    let mut capabilities =
        (login.capabilities & greeting.capabilities & handshake::offered_capabilities())
            | CapabilityFlags::CLIENT_PROTOCOL_41;
    capabilities.remove(CapabilityFlags::CLIENT_SSL);

    let mut out = BytesMut::new();
    let mut seq = 1;
    let tls = cluster.tls_mode != BackendTlsMode::Disable;
    if let (true, Some(config)) = (tls, &cluster.tls) {
        if !greeting.capabilities.contains(CapabilityFlags::CLIENT_SSL) {
            return Err(ConnectError::TlsRefused { addr });
        }
        seq = handshake::write_ssl_request(
            &mut out,
            capabilities,
            login.max_packet_size,
            login.charset,
            mariadb_capabilities,
        );
        conn.stream.write_all(&out).await.map_err(io)?;
        conn = conn.into_tls(Arc::clone(config)).await?;
        capabilities |= CapabilityFlags::CLIENT_SSL;
    }
    let secret = match (&creds.password, creds.pass_through) {
        (None, Some(PassThrough::MysqlNative(stage1))) => BackendSecret::NativeStage1(stage1),
        (password, _) => BackendSecret::Password(password.as_deref().unwrap_or("").into()),
    };
    let (mut auth, plugin, response) = ClientAuth::start_with(
        secret,
        tls,
        greeting.auth_plugin.as_deref(),
        &greeting.scramble,
        rand::random(),
    );
    out.clear();
    let hello = ClientHello {
        capabilities,
        max_packet_size: login.max_packet_size,
        charset: login.charset,
        username: creds.user.as_bytes(),
        auth_response: &response,
        database: login.database.as_deref(),
        auth_plugin: plugin.name(),
        connect_attrs: login.connect_attrs.as_deref(),
        mariadb_capabilities,
    };
    conn.capabilities = hello.effective_capabilities();
    conn.mariadb_capabilities = mariadb_capabilities;
    conn.database = login.database.clone().filter(|d| !d.is_empty());
    handshake::write_handshake_response(&mut out, seq, &hello);
    conn.stream.write_all(&out).await.map_err(io)?;
    loop {
        let (got_seq, payload) = conn.read_packet().await?;
        if payload.first() == Some(&header::ERR) {
            let message = crate::protocol::mysql::messages::parse_err(&payload)
                .map(|e| String::from_utf8_lossy(e.message).into_owned())
                .unwrap_or_default();
            return Err(ConnectError::Refused {
                addr,
                message,
                payload,
            });
        }
        if payload.first() == Some(&header::OK) && auth.is_done() {
            return Ok(conn);
        }
        match auth.server_packet(&payload) {
            Ok(ClientStep::Done) => {
                if let Ok(ok) =
                    crate::protocol::mysql::messages::parse_ok(&payload, conn.capabilities)
                {
                    conn.status = ok.status;
                }
                return Ok(conn);
            }
            Ok(ClientStep::Wait) => {}
            Ok(ClientStep::Send(data)) => {
                out.clear();
                write_packet(&mut out, got_seq.wrapping_add(1), &data);
                conn.stream.write_all(&out).await.map_err(io)?;
            }
            Err(source) => return Err(ConnectError::Auth { addr, source }),
        }
    }
}

impl MysqlConn {
    /// Ends the connection with COM_QUIT, so the server counts no aborted connection.
    pub async fn quit(mut self) {
        let quit = [
            1,
            0,
            0,
            0,
            crate::protocol::mysql::constants::command::COM_QUIT,
        ];
        // The connection closes either way.
        let _ = self.stream.write_all(&quit).await;
    }

    fn protocol(&self, detail: String) -> ConnectError {
        ConnectError::Protocol {
            addr: self.instance.addr.clone(),
            detail,
        }
    }

    /// Reads one whole packet during login: (sequence id, payload).
    async fn read_packet(&mut self) -> Result<(u8, Bytes), ConnectError> {
        loop {
            match packet::packet(&self.buf, MAX_LOGIN_PACKET) {
                Ok(Some((h, _))) => {
                    let total = h.len + packet::HEADER_LEN;
                    let mut whole = self.buf.split_to(total);
                    whole.advance(packet::HEADER_LEN);
                    return Ok((h.seq, whole.freeze()));
                }
                Ok(None) => {}
                Err(e) => return Err(self.protocol(e.to_string())),
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
                return Err(self.protocol("connection closed during login".into()));
            }
        }
    }

    async fn into_tls(self, config: Arc<rustls::ClientConfig>) -> Result<MysqlConn, ConnectError> {
        let addr = self.instance.addr.clone();
        let tls_name = &self.instance.tls_name;
        let name = ServerName::try_from(tls_name.clone()).map_err(|_| ConnectError::TlsName {
            addr: addr.clone(),
            name: tls_name.clone(),
        })?;
        let Stream::Plain(tcp) = self.stream else {
            return Err(ConnectError::Protocol {
                addr,
                detail: "TLS started twice".into(),
            });
        };
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|source| ConnectError::Io { addr, source })?;
        Ok(MysqlConn {
            stream: Stream::TlsClient(Box::new(tls)),
            ..self
        })
    }
}
