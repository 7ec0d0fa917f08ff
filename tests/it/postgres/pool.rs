//! The pool with real PostgreSQL connections: a connection given back with
//! `Release::Reset` comes out again as the same server process, with none of what the
//! last session left on it.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use switchyard::backend::Credentials;
use switchyard::backend::postgres::{self, BackendConn};
use switchyard::pool::{Lease, Pools, Release, Settings};
use switchyard::protocol::postgres::frame;
use switchyard::protocol::postgres::messages::{self, tag};
use switchyard::topology::Cluster;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::postgres::{APP, PgCluster};
use crate::support::proxy::{config_text, in_pool_mode};

/// The writer of the shared cluster as the proxy sees it, with the pool settings of a
/// config whose `[server]` has `pool_size = 1`.
fn topology(cluster: &PgCluster) -> (Arc<Cluster>, Settings) {
    crate::support::proxy::pool_topology(&config_text(cluster, "pool_size = 1"))
}

async fn checkout(
    pools: &Pools<BackendConn>,
    cluster: &Arc<Cluster>,
    db: &str,
    settings: &Settings,
) -> Lease<BackendConn> {
    let key = crate::support::proxy::app_pool_key(cluster, db);
    let params = vec![
        ("database".to_owned(), db.to_owned()),
        ("application_name".to_owned(), "pool-test".to_owned()),
    ];
    let creds = Credentials {
        user: APP.user.into(),
        password: Some(APP.password.into()),
        salted: Default::default(),
        pass_through: None,
    };
    pools
        .checkout(&key, settings, || {
            postgres::connect(
                cluster,
                &cluster.writer,
                &params,
                &creds,
                Duration::from_secs(10),
            )
        })
        .await
        .expect("checkout")
}

/// Runs `sql` as a simple query: the first column of each row (NULL as `None`), or the
/// error message.
async fn query(conn: &mut BackendConn, sql: &str) -> Result<Vec<Option<String>>, String> {
    let mut out = BytesMut::new();
    messages::query(&mut out, sql);
    conn.stream.write_all(&out).await.expect("send query");
    let mut rows = Vec::new();
    let mut failed = None;
    loop {
        let Some((h, body)) = frame::message(&conn.buf, 1 << 20).expect("framing") else {
            let n = conn.stream.read_buf(&mut conn.buf).await.expect("read");
            assert!(n > 0, "the server closed the connection");
            continue;
        };
        match h.tag {
            b'D' => {
                let mut b = &body[2..];
                let len = b.get_i32();
                rows.push(
                    (len >= 0).then(|| String::from_utf8_lossy(&b[..len as usize]).into_owned()),
                );
            }
            tag::ERROR_RESPONSE => failed = Some(messages::error_fields(body).1),
            tag::READY_FOR_QUERY => {
                conn.consume(h.total);
                return failed.map_or(Ok(rows), Err);
            }
            _ => {}
        }
        conn.consume(h.total);
    }
}

async fn one(conn: &mut BackendConn, sql: &str) -> Option<String> {
    let rows = query(conn, sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    rows.into_iter().next().flatten()
}

#[tokio::test]
async fn a_reset_connection_is_the_same_process_with_none_of_the_last_session_left() {
    let cluster = PgCluster::shared();
    let db = cluster.create_database("pool_reset").await;
    let (main, settings) = topology(cluster);
    let (_stop, shutdown) = switchyard::shutdown::channel();
    let pools = Pools::new(shutdown);

    let mut lease = checkout(&pools, &main, &db, &settings).await;
    let pid = one(&mut lease, "SELECT pg_backend_pid()").await;
    let key = lease.key.expect("BackendKeyData");
    let startup_params = lease.parameter_status.clone();
    for sql in [
        "CREATE TABLE kept (x int)",
        "SET statement_timeout = '123s'",
        "SET application_name = 'dirty'",
        "CREATE TEMP TABLE scratch (x int)",
        "PREPARE stmt AS SELECT 1",
        "SELECT pg_advisory_lock(42)",
        "LISTEN news",
        "BEGIN",
        "INSERT INTO kept VALUES (1)",
    ] {
        query(&mut lease, sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    lease.release(Release::Reset);

    // pool_size = 1: this waits for the reset, then gets that same connection.
    let mut lease = checkout(&pools, &main, &db, &settings).await;
    assert_eq!(one(&mut lease, "SELECT pg_backend_pid()").await, pid);
    assert_eq!(lease.key, Some(key));
    assert_eq!(lease.parameter_status, startup_params);
    let checks = [
        ("SHOW statement_timeout", "0"),
        ("SHOW application_name", "pool-test"),
        (
            "SELECT count(*) FROM pg_tables WHERE tablename = 'scratch'",
            "0",
        ),
        ("SELECT count(*) FROM pg_prepared_statements", "0"),
        (
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'",
            "0",
        ),
        ("SELECT count(*) FROM pg_listening_channels()", "0"),
        ("SELECT count(*) FROM kept", "0"),
    ];
    for (sql, expected) in checks {
        assert_eq!(
            one(&mut lease, sql).await.as_deref(),
            Some(expected),
            "{sql}"
        );
    }
    lease.release(Release::Clean);
}

/// Through the proxy: a client that leaves gives its writer connection back to the pool,
/// reset, and the next client gets that same server process with none of the first one's
/// state. `pool_size = 1`, so the second login waits for the reset to finish rather than
/// open another connection.
#[tokio::test]
async fn sessions_take_their_connections_from_the_pool_and_give_them_back_clean() {
    let cluster = PgCluster::shared();
    let db = cluster.create_database("pool_sessions").await;
    let config = in_pool_mode(&config_text(cluster, "pool_size = 1"), "session");
    let proxy = crate::support::proxy::Proxy::from_config(&config).await;
    let pid = |client: tokio_postgres::Client| async move {
        let row = client
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .expect("pid");
        (row.get::<_, i32>(0), client)
    };
    let (first_pid, first) = pid(proxy.connect(&db).await).await;
    first
        .batch_execute("SET statement_timeout = '17s'; CREATE TEMP TABLE leftover (x int)")
        .await
        .expect("session state");
    drop(first);
    let (second_pid, second) = pid(proxy.connect(&db).await).await;
    assert_eq!(first_pid, second_pid, "the pooled connection is reused");
    let timeout: String = second
        .query_one("SHOW statement_timeout", &[])
        .await
        .expect("show")
        .get(0);
    assert_eq!(timeout, "0", "the first session's SET is gone");
    let leftover: Option<String> = second
        .query_one("SELECT to_regclass('leftover')::text", &[])
        .await
        .expect("to_regclass")
        .get(0);
    assert_eq!(
        leftover, None,
        "the first session's temporary table is gone"
    );
    let writer = format!("127.0.0.1:{}", cluster.primary.port);
    assert_eq!(
        proxy.pool_opened(&writer, &db).await,
        1.0,
        "one login for both"
    );
    let pool = proxy.pool_status(&writer, &db).await;
    assert_eq!(pool["in_use"], 1, "the second client holds it: {pool}");
    assert_eq!(pool["idle"], 0, "{pool}");
}

/// A client that finds its pool full waits `checkout_timeout`, then gets the standard
/// "too many connections" error (53300) instead of a hang; the first client is unaffected,
/// and once it leaves the next client gets the connection.
#[tokio::test]
async fn a_full_pool_answers_too_many_connections_after_checkout_timeout() {
    let cluster = PgCluster::shared();
    let db = cluster.create_database("pool_full").await;
    let extra = "pool_size = 1\ncheckout_timeout = \"2s\"";
    let config = in_pool_mode(&config_text(cluster, extra), "session");
    let proxy = crate::support::proxy::Proxy::from_config(&config).await;
    let first = proxy.connect(&db).await;
    first
        .batch_execute("SELECT 1")
        .await
        .expect("the first client");
    let refused = tokio_postgres::connect(
        &proxy.conninfo("app", "app-secret", &db),
        tokio_postgres::NoTls,
    )
    .await
    .err()
    .expect("no connection came free for the second client");
    let code = refused.code().map(|c| c.code().to_owned());
    assert_eq!(code.as_deref(), Some("53300"), "{refused}");
    first
        .batch_execute("SELECT 1")
        .await
        .expect("the first client goes on");
    drop(first);
    let third = proxy.connect(&db).await;
    third
        .batch_execute("SELECT 1")
        .await
        .expect("the freed connection serves the next client");
}

/// How many server processes of the writer serve `db` for the app user, as the server
/// itself counts them.
async fn server_connections(cluster: &PgCluster, db: &str) -> i64 {
    let admin = cluster.superuser(&cluster.primary, "postgres").await;
    admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND usename = $2",
            &[&db, &APP.user],
        )
        .await
        .expect("pg_stat_activity")
        .get(0)
}

/// `min_idle = 2`: once a client has used the writer's pool and left, the pool's sweep
/// logs in idle connections until two are open, with no client asking for them.
#[tokio::test]
async fn min_idle_keeps_idle_connections_open_without_clients() {
    let cluster = PgCluster::shared();
    let db = cluster.create_database("pool_min_idle").await;
    let config = in_pool_mode(&config_text(cluster, "min_idle = 2"), "transaction");
    let proxy = crate::support::proxy::Proxy::from_config(&config).await;
    let client = proxy.connect(&db).await;
    client
        .batch_execute("CREATE TABLE touched (x int)")
        .await
        .expect("a statement on the writer");
    drop(client);
    let writer = format!("127.0.0.1:{}", cluster.primary.port);
    let mut backoff = crate::support::Backoff::new(Duration::from_secs(30));
    while proxy.pool_opened(&writer, &db).await < 2.0 {
        assert!(
            backoff.wait().await,
            "the sweep never opened a second connection"
        );
    }
    let mut backoff = crate::support::Backoff::new(Duration::from_secs(30));
    while server_connections(cluster, &db).await < 2 {
        assert!(backoff.wait().await, "the server never saw two connections");
    }
    let pool = proxy.pool_status(&writer, &db).await;
    assert_eq!(pool["in_use"], 0, "{pool}");
    assert!(pool["idle"].as_u64() >= Some(2), "{pool}");
}

/// `max_backend_connections = 1`: while one client holds the writer's only connection in
/// a transaction, a client of another database (another pool of the same instance) waits
/// for the budget and gets 53300 after `checkout_timeout` (which ends that session, as for
/// a full pool); once the transaction ends, the idle connection of the first pool is closed
/// to make room and a new client of the second database runs its statement.
#[tokio::test]
async fn the_backend_budget_makes_another_pool_wait_then_answers_too_many_connections() {
    let cluster = PgCluster::shared();
    let first_db = cluster.create_database("pool_budget_a").await;
    let second_db = cluster.create_database("pool_budget_b").await;
    let extra = "max_backend_connections = 1\ncheckout_timeout = \"1s\"";
    let config = in_pool_mode(&config_text(cluster, extra), "transaction");
    let proxy = crate::support::proxy::Proxy::from_config(&config).await;
    let first = proxy.connect(&first_db).await;
    let second = proxy.connect(&second_db).await;
    first
        .batch_execute("BEGIN; CREATE TABLE held (x int)")
        .await
        .expect("the first client's transaction");
    let refused = second
        .batch_execute("CREATE TABLE waits (x int)")
        .await
        .expect_err("no connection within the budget");
    let code = refused.code().map(|c| c.code().to_owned());
    assert_eq!(code.as_deref(), Some("53300"), "{refused}");
    assert!(
        refused
            .as_db_error()
            .is_some_and(|e| e.message().contains("max_backend_connections 1")),
        "the message names the budget: {refused}"
    );
    first
        .batch_execute("COMMIT")
        .await
        .expect("the first client goes on");
    let third = proxy.connect(&second_db).await;
    third
        .batch_execute("CREATE TABLE waits (x int)")
        .await
        .expect("room was made for the second pool");
    // The connection closed to make room ends on the server shortly after.
    let mut backoff = crate::support::Backoff::new(Duration::from_secs(30));
    loop {
        let open = server_connections(cluster, &first_db).await
            + server_connections(cluster, &second_db).await;
        if open <= 1 {
            break;
        }
        assert!(
            backoff.wait().await,
            "{open} connections over a budget of 1"
        );
    }
}
