//! What the topology tests share: one read on a fresh connection through the proxy (a fresh
//! session picks its reader from the current topology), and `/status` as JSON.

use mysql_async::prelude::Queryable;

use super::proxy::Proxy;

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
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(proxy.addr.port())
        .user(Some("app"))
        .pass(Some("app-secret"))
        .db_name(Some(db))
        .prefer_socket(false);
    let mut conn = mysql_async::Conn::new(opts)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let port: Option<u16> = conn
        .query_first("SELECT @@port")
        .await
        .map_err(|e| format!("read: {e}"))?;
    conn.disconnect()
        .await
        .map_err(|e| format!("disconnect: {e}"))?;
    port.ok_or_else(|| "no row".to_owned())
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
