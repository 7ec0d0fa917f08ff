//! Control-plane connections to one instance with the monitor account (tokio-postgres,
//! mysql_async), and the health check built on them: connect, then ask the server its role.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mysql_async::SslOpts;
use mysql_async::prelude::Queryable;
use tokio::net::TcpStream;

use super::Role;
use super::postgres_tls::MakeRustls;
use crate::config::{BackendTlsMode, Protocol};

/// The monitor account of a cluster.
#[derive(Debug, Clone)]
pub struct MonitorLogin {
    pub user: String,
    pub password: Option<String>,
    pub database: Option<String>,
    /// TLS as the cluster's `tls` setting says; `None` for `disable`.
    pub tls: Option<MonitorTls>,
}

/// The cluster's TLS settings, for monitor connections.
#[derive(Debug, Clone)]
pub struct MonitorTls {
    pub mode: BackendTlsMode,
    pub ca_file: Option<PathBuf>,
    /// The rustls configuration the data path uses (PostgreSQL).
    pub config: Arc<rustls::ClientConfig>,
}

impl MonitorTls {
    /// mysql_async's equivalent of the cluster's mode (it builds its own rustls config).
    fn mysql(&self) -> SslOpts {
        let roots = |opts: SslOpts| match &self.ca_file {
            Some(ca) => opts.with_root_certs(vec![ca.clone().into()]),
            None => opts,
        };
        match self.mode {
            BackendTlsMode::Disable | BackendTlsMode::Require => {
                SslOpts::default().with_danger_accept_invalid_certs(true)
            }
            BackendTlsMode::VerifyCa => {
                roots(SslOpts::default()).with_danger_skip_domain_validation(true)
            }
            BackendTlsMode::VerifyFull => roots(SslOpts::default()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("connect to {addr}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no answer from {addr} within {timeout:?}")]
    Timeout { addr: String, timeout: Duration },
    #[error("PostgreSQL at {addr}")]
    Postgres {
        addr: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("MySQL at {addr}")]
    Mysql {
        addr: String,
        #[source]
        source: mysql_async::Error,
    },
    #[error("{addr} answered the role check with no row")]
    NoRole { addr: String },
}

/// Where to reach an instance.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub host: &'a str,
    pub port: u16,
    pub addr: &'a str,
}

/// Runs `f` within `timeout`, naming `addr` when it does not finish.
pub async fn bounded<T>(
    addr: &str,
    timeout: Duration,
    f: impl Future<Output = Result<T, ProbeError>>,
) -> Result<T, ProbeError> {
    tokio::time::timeout(timeout, f).await.unwrap_or_else(|_| {
        Err(ProbeError::Timeout {
            addr: addr.to_owned(),
            timeout,
        })
    })
}

/// A PostgreSQL client as the monitor account; its connection task ends with the client.
pub async fn postgres(
    t: Target<'_>,
    login: &MonitorLogin,
) -> Result<tokio_postgres::Client, ProbeError> {
    let mut config = tokio_postgres::Config::new();
    config
        .host(t.host)
        .port(t.port)
        .user(&login.user)
        .dbname(login.database.as_deref().unwrap_or("postgres"))
        .application_name("switchyard-monitor");
    if let Some(p) = &login.password {
        config.password(p);
    }
    let err = |source| ProbeError::Postgres {
        addr: t.addr.to_owned(),
        source,
    };
    match &login.tls {
        Some(tls) => {
            config.ssl_mode(tokio_postgres::config::SslMode::Require);
            let tls = MakeRustls(Arc::clone(&tls.config));
            let (client, connection) = config.connect(tls).await.map_err(err)?;
            tokio::spawn(drive(connection));
            Ok(client)
        }
        None => {
            let (client, connection) = config.connect(tokio_postgres::NoTls).await.map_err(err)?;
            tokio::spawn(drive(connection));
            Ok(client)
        }
    }
}

/// Runs a monitor connection until its client is dropped; an error here is the server going
/// away, which the next check reports.
async fn drive(connection: impl Future<Output = Result<(), tokio_postgres::Error>>) {
    if let Err(e) = connection.await {
        tracing::debug!(error = %e, "monitor connection ended");
    }
}

/// A MySQL connection as the monitor account.
pub async fn mysql(t: Target<'_>, login: &MonitorLogin) -> Result<mysql_async::Conn, ProbeError> {
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname(t.host)
        .tcp_port(t.port)
        .user(Some(&login.user))
        .pass(login.password.as_deref())
        .db_name(login.database.as_deref())
        .prefer_socket(false)
        .ssl_opts(login.tls.as_ref().map(MonitorTls::mysql));
    mysql_async::Conn::new(opts)
        .await
        .map_err(|source| ProbeError::Mysql {
            addr: t.addr.to_owned(),
            source,
        })
}

/// One health check: the role the server says it has, or `None` when only a TCP connect
/// was possible (no monitor account).
pub async fn check(
    protocol: Protocol,
    login: Option<&MonitorLogin>,
    t: Target<'_>,
    timeout: Duration,
) -> Result<Option<Role>, ProbeError> {
    bounded(t.addr, timeout, async {
        let Some(login) = login else {
            TcpStream::connect((t.host, t.port))
                .await
                .map_err(|source| ProbeError::Connect {
                    addr: t.addr.to_owned(),
                    source,
                })?;
            return Ok(None);
        };
        let read_only = match protocol {
            Protocol::Postgres => {
                let client = postgres(t, login).await?;
                let row = client
                    .query_one("SELECT pg_is_in_recovery()", &[])
                    .await
                    .map_err(|source| ProbeError::Postgres {
                        addr: t.addr.to_owned(),
                        source,
                    })?;
                row.try_get::<_, bool>(0)
                    .map_err(|source| ProbeError::Postgres {
                        addr: t.addr.to_owned(),
                        source,
                    })?
            }
            Protocol::Mysql => {
                let mut conn = mysql(t, login).await?;
                let err = |source| ProbeError::Mysql {
                    addr: t.addr.to_owned(),
                    source,
                };
                let row: Option<(i64, i64)> = conn
                    .query_first("SELECT @@global.read_only, @@global.innodb_read_only")
                    .await
                    .map_err(err)?;
                if let Err(e) = conn.disconnect().await {
                    tracing::debug!(error = %e, "monitor disconnect");
                }
                let (read_only, innodb_read_only) = row.ok_or_else(|| ProbeError::NoRole {
                    addr: t.addr.to_owned(),
                })?;
                read_only != 0 || innodb_read_only != 0
            }
        };
        Ok(Some(if read_only {
            Role::Reader
        } else {
            Role::Writer
        }))
    })
    .await
}
