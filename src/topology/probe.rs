//! Control-plane connections to one instance with the monitor account (tokio-postgres,
//! mysql_async), and the health check built on them: connect, then ask the server its role
//! and, where asked, its replication lag.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mysql_async::SslOpts;
use mysql_async::prelude::Queryable;
use tokio::net::TcpStream;

use super::postgres_tls::MakeRustls;
use super::{Instance, Replication, Role};
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
    /// mysql_async's equivalent of the cluster's mode (it builds its own rustls config),
    /// verifying the certificate as `tls_name` when that is not the host connected to.
    fn mysql(&self, t: Target<'_>) -> SslOpts {
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
            BackendTlsMode::VerifyFull => roots(SslOpts::default())
                .with_danger_tls_hostname_override(
                    (t.tls_name != t.host).then(|| t.tls_name.to_owned()),
                ),
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
    /// The name its certificate is verified against ([`Instance::tls_name`]).
    pub tls_name: &'a str,
}

impl<'a> Target<'a> {
    pub fn of(i: &'a Instance) -> Target<'a> {
        Target {
            host: &i.host,
            port: i.port,
            addr: &i.addr,
            tls_name: &i.tls_name,
        }
    }
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
    match t.host.parse::<IpAddr>() {
        // tokio-postgres connects to `hostaddr` and verifies TLS as `host`.
        Ok(ip) => config.host(t.tls_name).hostaddr(ip),
        Err(_) => config.host(t.host),
    };
    config
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

/// The rows of `sql` on a new PostgreSQL connection as the monitor account.
pub async fn postgres_rows(
    t: Target<'_>,
    login: &MonitorLogin,
    sql: &str,
) -> Result<Vec<tokio_postgres::Row>, ProbeError> {
    let client = postgres(t, login).await?;
    client
        .query(sql, &[])
        .await
        .map_err(|source| ProbeError::Postgres {
            addr: t.addr.to_owned(),
            source,
        })
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
        .ssl_opts(login.tls.as_ref().map(|tls| tls.mysql(t)));
    mysql_async::Conn::new(opts)
        .await
        .map_err(|source| ProbeError::Mysql {
            addr: t.addr.to_owned(),
            source,
        })
}

/// What one health check learned from a server that answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    pub role: Role,
    /// Its own replication view; [`Replication::Current`] for a writer, or when the lag was
    /// not asked for.
    pub replication: Replication,
}

/// The role check and lag query of PostgreSQL, in one round trip. The lag is the age of
/// the last transaction replayed, but 0 when the replica has replayed all it received
/// (else a replica of an idle primary would look ever more behind); NULL when it cannot be
/// computed (no WAL received by streaming, or nothing replayed yet).
const POSTGRES_CHECK: &str = "SELECT pg_is_in_recovery(), CASE \
    WHEN NOT pg_is_in_recovery() THEN 0 \
    WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0 \
    ELSE extract(epoch FROM now() - pg_last_xact_replay_timestamp()) END::float8";

/// The statement that shows a MySQL server's replication: `SHOW REPLICA STATUS` from MySQL
/// 8.0.22 (8.4 has no other), `SHOW SLAVE STATUS` before and on MariaDB (versions 10 and up).
pub fn replica_status_query(version: (u16, u16, u16)) -> &'static str {
    let mariadb = version.0 >= 10;
    if !mariadb && version >= (8, 0, 22) {
        "SHOW REPLICA STATUS"
    } else {
        "SHOW SLAVE STATUS"
    }
}

/// One health check: the role the server says it has and, with `lag`, its replication view;
/// `None` when only a TCP connect was possible (no monitor account).
pub async fn check(
    protocol: Protocol,
    login: Option<&MonitorLogin>,
    t: Target<'_>,
    timeout: Duration,
    lag: bool,
) -> Result<Option<Answer>, ProbeError> {
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
        let answer = match protocol {
            Protocol::Postgres => postgres_check(t, login, lag).await?,
            Protocol::Mysql => mysql_check(t, login, lag).await?,
        };
        Ok(Some(answer))
    })
    .await
}

async fn postgres_check(
    t: Target<'_>,
    login: &MonitorLogin,
    lag: bool,
) -> Result<Answer, ProbeError> {
    let err = |source| ProbeError::Postgres {
        addr: t.addr.to_owned(),
        source,
    };
    let client = postgres(t, login).await?;
    let sql = if lag {
        POSTGRES_CHECK
    } else {
        "SELECT pg_is_in_recovery(), 0::float8"
    };
    let row = client.query_one(sql, &[]).await.map_err(err)?;
    let in_recovery: bool = row.try_get(0).map_err(err)?;
    let seconds: Option<f64> = row.try_get(1).map_err(err)?;
    Ok(Answer {
        role: if in_recovery {
            Role::Reader
        } else {
            Role::Writer
        },
        replication: Replication::from_postgres(seconds),
    })
}

async fn mysql_check(t: Target<'_>, login: &MonitorLogin, lag: bool) -> Result<Answer, ProbeError> {
    let mut conn = mysql(t, login).await?;
    let err = |source| ProbeError::Mysql {
        addr: t.addr.to_owned(),
        source,
    };
    let answer = async {
        let row: Option<(i64, i64)> = conn
            .query_first("SELECT @@global.read_only, @@global.innodb_read_only")
            .await
            .map_err(err)?;
        let (read_only, innodb_read_only) = row.ok_or_else(|| ProbeError::NoRole {
            addr: t.addr.to_owned(),
        })?;
        if read_only == 0 && innodb_read_only == 0 {
            return Ok(Answer {
                role: Role::Writer,
                replication: Replication::Current,
            });
        }
        let replication = if lag {
            let sql = replica_status_query(conn.server_version());
            let status: Option<mysql_async::Row> = conn.query_first(sql).await.map_err(err)?;
            Replication::from_mysql(status.map(|row| mysql_replica_row(&row)))
        } else {
            Replication::Current
        };
        Ok(Answer {
            role: Role::Reader,
            replication,
        })
    }
    .await;
    if let Err(e) = conn.disconnect().await {
        tracing::debug!(error = %e, "monitor disconnect");
    }
    answer
}

/// Whether the SQL (applier) thread runs, and the seconds behind the source (NULL:
/// unknown), from a row of `SHOW SLAVE STATUS` (MariaDB, MySQL) or `SHOW REPLICA STATUS`
/// (MySQL's newer column names).
fn mysql_replica_row(row: &mysql_async::Row) -> (bool, Option<u64>) {
    let column = |names: [&str; 2]| {
        let columns = row.columns_ref();
        names
            .iter()
            .find_map(|name| columns.iter().position(|c| c.name_str() == *name))
            .and_then(|i| row.as_ref(i))
    };
    let applying = column(["Slave_SQL_Running", "Replica_SQL_Running"]).is_some_and(
        |v| matches!(v, mysql_async::Value::Bytes(b) if b.eq_ignore_ascii_case(b"yes")),
    );
    let behind = column(["Seconds_Behind_Master", "Seconds_Behind_Source"]).and_then(|v| match v {
        mysql_async::Value::Bytes(b) => std::str::from_utf8(b).ok()?.trim().parse().ok(),
        mysql_async::Value::Int(n) => u64::try_from(*n).ok(),
        mysql_async::Value::UInt(n) => Some(*n),
        _ => None,
    });
    (applying, behind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_replica_status_statement_follows_the_server_version() {
        let table = [
            ((5, 7, 44), "SHOW SLAVE STATUS"),
            ((8, 0, 21), "SHOW SLAVE STATUS"),
            ((8, 0, 22), "SHOW REPLICA STATUS"),
            ((8, 4, 0), "SHOW REPLICA STATUS"),
            ((9, 1, 0), "SHOW REPLICA STATUS"),
            ((10, 4, 30), "SHOW SLAVE STATUS"),
            ((10, 11, 6), "SHOW SLAVE STATUS"),
            ((11, 4, 2), "SHOW SLAVE STATUS"),
        ];
        for (version, sql) in table {
            assert_eq!(replica_status_query(version), sql, "{version:?}");
        }
    }
}
