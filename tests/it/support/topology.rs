//! What the topology tests share: one read on a fresh connection through the proxy (a fresh
//! session picks its reader from the current topology), and `/status` as JSON.

use std::fmt::Debug;
use std::time::Duration;

use mysql_async::prelude::{FromRow, Queryable};

use super::proxy::{Proxy, config_header};

/// A PostgreSQL proxy config for a discovered cluster `main`: `writer` (`host:port`) until
/// discovery answers, the monitor account `postgres`, health checks every 100 ms that flip
/// an instance at once, `cluster` added to `[clusters.main]`, and `discovery` added to
/// `[clusters.main.discovery]` (100 ms rounds, an instance drained after 2). Routing tests
/// check where each read goes: no read-your-writes window.
pub fn discovery_config(writer: &str, cluster: &str, discovery: &str) -> String {
    let header = config_header("postgres");
    format!(
        r#"{header}
[clusters.main]
writer = "{writer}"
monitor_user = "postgres"
health_interval = "100ms"
fail_after = 2
recover_after = 1
{cluster}

[clusters.main.discovery]
interval = "100ms"
drain_after = 2
{discovery}

[routing]
active = "main"
read_your_writes = "0s"
"#
    )
}

/// Runs `sql` (one row, one text column) on a new PostgreSQL connection through the proxy
/// as `app`, and returns the value.
pub async fn read_once(proxy: &Proxy, db: &str, sql: &str) -> Result<String, String> {
    read_once_as(proxy, ("app", "app-secret"), db, sql).await
}

/// Like [`read_once`], as `login` (user, password).
pub async fn read_once_as(
    proxy: &Proxy,
    login: (&str, &str),
    db: &str,
    sql: &str,
) -> Result<String, String> {
    let (user, password) = login;
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(proxy.addr.port())
        .user(user)
        .password(password)
        .dbname(db);
    let (client, connection) = config
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    tokio::spawn(async move {
        // Ends when the client is dropped.
        let _ = connection.await;
    });
    let row = client
        .query_one(sql, &[])
        .await
        .map_err(|e| format!("read: {e}"))?;
    row.try_get(0).map_err(|e| format!("read: {e}"))
}

/// A table with the columns of Aurora PostgreSQL's `aurora_replica_status()`, which tests
/// fill as they like, and the `aurora` discovery query that reads it.
pub const PG_AURORA_TABLE: &str = "CREATE TABLE aurora_topology (
    server_id text, session_id text, last_update_timestamp timestamptz, replica_lag_in_msec float)";
pub const PG_AURORA_QUERY: &str =
    "SELECT server_id, session_id, last_update_timestamp, replica_lag_in_msec FROM aurora_topology";

/// Generous: discovery rounds and health checks are 100 ms in these tests, but CI machines
/// stall.
pub const FOLLOW_TIMEOUT: Duration = Duration::from_secs(60);

/// Reads with `read` (each on a new connection) until one is answered by `want`; every
/// read must succeed. Panics with cluster `main`'s `/status` after [`FOLLOW_TIMEOUT`].
pub async fn until_reads_reach<T, R, Fut>(proxy: &Proxy, want: T, read: R)
where
    T: PartialEq + Debug,
    R: Fn() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let reached = super::retry(FOLLOW_TIMEOUT, async || {
        let at = read().await.expect("reads never fail");
        if at == want {
            Ok(())
        } else {
            Err(format!("last read ran on {at:?}"))
        }
    });
    if let Err(why) = reached.await {
        panic!(
            "reads did not reach {want:?} within {FOLLOW_TIMEOUT:?}: {why}\n{}",
            status(proxy, "main").await
        );
    }
}

/// Cluster `name` as `GET /status` shows it.
pub async fn status(proxy: &Proxy, name: &str) -> serde_json::Value {
    let response = proxy.admin_get("/status").await;
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default();
    let status: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("/status is JSON ({e}): {response}"));
    status["clusters"][name].clone()
}

/// The readers of cluster `name` in `/status`, as (address, state).
pub async fn readers(proxy: &Proxy, name: &str) -> Vec<(String, String)> {
    let cluster = status(proxy, name).await;
    cluster["readers"]
        .as_array()
        .map(|rs| {
            rs.iter()
                .map(|r| {
                    let text = |key: &str| r[key].as_str().unwrap_or_default().to_owned();
                    (text("addr"), text("state"))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The port of the MySQL server that answered one read (`SELECT @@port`) on a new
/// connection through the proxy as `app`.
pub async fn mysql_read_port(proxy: &Proxy, db: &str) -> Result<u16, String> {
    mysql_read_once(proxy, db, "SELECT @@port").await
}

/// Connection options for `app` to database `db` through the proxy.
pub fn mysql_opts(proxy: &Proxy, db: &str) -> mysql_async::OptsBuilder {
    mysql_async::OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(proxy.addr.port())
        .user(Some("app"))
        .pass(Some("app-secret"))
        .db_name(Some(db))
        .prefer_socket(false)
}

/// Runs `sql` (one row) on a new MySQL connection through the proxy as `app`, and returns
/// the row.
pub async fn mysql_read_once<T: FromRow + Send + 'static>(
    proxy: &Proxy,
    db: &str,
    sql: &str,
) -> Result<T, String> {
    let mut conn = mysql_async::Conn::new(mysql_opts(proxy, db))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let row: Option<T> = conn
        .query_first(sql)
        .await
        .map_err(|e| format!("read: {e}"))?;
    conn.disconnect()
        .await
        .map_err(|e| format!("disconnect: {e}"))?;
    row.ok_or_else(|| "no row".to_owned())
}

/// Reader `addr` of cluster `name` in `/status`: its state and its lag in seconds (`None`:
/// replication stopped).
pub async fn reader(proxy: &Proxy, name: &str, addr: &str) -> (String, Option<f64>) {
    let cluster = status(proxy, name).await;
    let found = cluster["readers"]
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["addr"] == addr).cloned())
        .unwrap_or_else(|| panic!("{addr} is not among the readers: {cluster}"));
    (
        found["state"].as_str().unwrap_or_default().to_owned(),
        found["lag_seconds"].as_f64(),
    )
}
