//! What the topology tests share: one read on a fresh connection through the proxy (a fresh
//! session picks its reader from the current topology), and `/status` as JSON.

use super::proxy::Proxy;

/// Runs `sql` (one row, one text column) on a new PostgreSQL connection through the proxy
/// as `app`, and returns the value.
pub async fn read_once(proxy: &Proxy, db: &str, sql: &str) -> Result<String, String> {
    let (client, connection) = tokio_postgres::connect(
        &proxy.conninfo("app", "app-secret", db),
        tokio_postgres::NoTls,
    )
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
