//! The PostgreSQL proxy against real servers: a primary with two streaming replicas,
//! shared with the other modules of the test binary; each test uses its own database.

mod auth;
mod pool;
mod pooling;

use crate::support;

use std::os::unix::ffi::OsStrExt;

use tokio::process::Command;

use support::postgres::PgCluster;
use support::proxy::{Proxy, RawClient, config_text, in_pool_mode, with_readers, with_routing};
use tokio_postgres::SimpleQueryMessage;
use tokio_postgres::error::SqlState;

async fn setup(prefix: &str) -> (&'static PgCluster, Proxy, String) {
    let cluster = PgCluster::shared();
    let db = cluster.create_database(prefix).await;
    let proxy = Proxy::start(cluster).await;
    (cluster, proxy, db)
}

/// [`setup`] with sessions in session mode: for what a session holding its connections does.
async fn setup_session_mode(prefix: &str) -> (&'static PgCluster, Proxy, String) {
    let cluster = PgCluster::shared();
    let db = cluster.create_database(prefix).await;
    let config = in_pool_mode(&config_text(cluster, ""), "session");
    (cluster, Proxy::from_config(&config).await, db)
}

async fn in_recovery(client: &tokio_postgres::Client) -> bool {
    client
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await
        .expect("pg_is_in_recovery")
        .get(0)
}

/// How many rows `table` has on the primary, asked directly (not through the proxy).
async fn rows_on_primary(cluster: &PgCluster, db: &str, table: &str) -> i64 {
    let primary = cluster.superuser(&cluster.primary, db).await;
    let sql = format!("SELECT count(*) FROM {table}");
    primary
        .query_one(sql.as_str(), &[])
        .await
        .expect("count on the primary")
        .get(0)
}

/// Values of the first column of every row of a simple query.
fn column(messages: &[SimpleQueryMessage]) -> Vec<String> {
    messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn reads_go_to_replicas_and_transactions_to_the_primary() {
    let (_, proxy, db) = setup("routing").await;
    let client = proxy.connect(&db).await;
    assert!(
        in_recovery(&client).await,
        "a read outside a transaction runs on a replica"
    );
    client.batch_execute("BEGIN").await.unwrap();
    assert!(
        !in_recovery(&client).await,
        "inside a transaction everything runs on the primary"
    );
    client.batch_execute("COMMIT").await.unwrap();
    assert!(in_recovery(&client).await);

    client.batch_execute("BEGIN READ ONLY").await.unwrap();
    assert!(
        in_recovery(&client).await,
        "BEGIN READ ONLY may run on a replica"
    );
    client.batch_execute("COMMIT").await.unwrap();

    let hinted = client
        .simple_query("/* switchyard:writer */ SELECT pg_is_in_recovery()::text")
        .await
        .unwrap();
    assert_eq!(column(&hinted), ["false"], "a writer hint is obeyed");
}

#[tokio::test]
async fn writes_land_on_the_primary() {
    let (cluster, proxy, db) = setup("writes").await;
    let client = proxy.connect(&db).await;
    client
        .batch_execute("CREATE TABLE ledger (id int primary key, note text)")
        .await
        .unwrap();
    for i in 0..20 {
        client
            .execute("INSERT INTO ledger VALUES ($1, 'x')", &[&i])
            .await
            .expect("insert through the proxy");
    }
    let written: i64 = client
        .query_one("WITH w AS (INSERT INTO ledger VALUES (100, 'cte') RETURNING id) SELECT count(*) FROM w", &[])
        .await
        .expect("data-modifying CTE goes to the primary")
        .get(0);
    assert_eq!(written, 1);
    let n = rows_on_primary(cluster, &db, "ledger").await;
    assert_eq!(n, 21, "every acknowledged write is on the primary");
    // A sequence call is a write even though it is a SELECT.
    client.batch_execute("CREATE SEQUENCE s").await.unwrap();
    let v: i64 = client
        .query_one("SELECT nextval('s')", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(v, 1);
}

#[tokio::test]
async fn prepared_statements_follow_the_session_across_backends() {
    let (_, proxy, db) = setup("prepared").await;
    let client = proxy.connect(&db).await;
    // Prepared outside a transaction: parsed on a replica.
    let read = client.prepare("SELECT pg_is_in_recovery()").await.unwrap();
    let on_replica: bool = client.query_one(&read, &[]).await.unwrap().get(0);
    assert!(on_replica, "a prepared read runs on a replica");
    // The same statement inside a transaction runs on the primary, prepared there lazily.
    client.batch_execute("BEGIN").await.unwrap();
    let on_primary: bool = client.query_one(&read, &[]).await.unwrap().get(0);
    assert!(!on_primary);
    // And vice versa: prepared on the primary inside a transaction …
    let add = client
        .prepare("SELECT $1::int + 1, pg_is_in_recovery()")
        .await
        .unwrap();
    let row = client.query_one(&add, &[&41i32]).await.unwrap();
    assert_eq!((row.get::<_, i32>(0), row.get::<_, bool>(1)), (42, false));
    client.batch_execute("COMMIT").await.unwrap();
    // … then used on a replica.
    for _ in 0..3 {
        let row = client.query_one(&add, &[&1i32]).await.unwrap();
        assert_eq!((row.get::<_, i32>(0), row.get::<_, bool>(1)), (2, true));
    }
    // A statement the client closed is gone on every backend.
    drop(add);
    let again = client.prepare("SELECT 7").await.unwrap();
    let seven: i32 = client.query_one(&again, &[]).await.unwrap().get(0);
    assert_eq!(seven, 7);
}

#[tokio::test]
async fn session_settings_are_replayed_on_the_replica() {
    let (_, proxy, db) = setup("settings").await;
    let client = proxy.connect(&db).await;
    client
        .batch_execute("SET application_name = 'ledger-app'")
        .await
        .unwrap();
    client
        .batch_execute("SET search_path = pg_catalog, public")
        .await
        .unwrap();
    let rows = client
        .simple_query("SELECT current_setting('application_name') || ',' || current_setting('search_path') || ',' || pg_is_in_recovery()")
        .await
        .unwrap();
    assert_eq!(column(&rows), ["ledger-app,pg_catalog, public,true"]);
    // State that cannot be replayed pins the session to the primary.
    client
        .batch_execute("CREATE TEMP TABLE scratch (x int)")
        .await
        .unwrap();
    client
        .batch_execute("INSERT INTO scratch VALUES (1)")
        .await
        .unwrap();
    let n: i64 = client
        .query_one("SELECT count(*) FROM scratch", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    assert!(
        !in_recovery(&client).await,
        "pinned to the primary after a temp table"
    );
}

#[tokio::test]
async fn simple_protocol_details_are_relayed() {
    let (cluster, proxy, db) = setup("simple").await;
    let client = proxy.connect(&db).await;
    // Multi-statement strings, empty queries and an error in the middle of a result.
    let rows = client.simple_query("SELECT 1; SELECT 2").await.unwrap();
    assert_eq!(column(&rows), ["1", "2"]);
    client
        .batch_execute("")
        .await
        .expect("an empty query is answered");
    client
        .batch_execute("CREATE TABLE t (i int)")
        .await
        .unwrap();
    client
        .batch_execute("INSERT INTO t SELECT generate_series(1, 10)")
        .await
        .unwrap();
    cluster.wait_replicated().await;
    let err = client
        .simple_query("SELECT 10 / (i - 5) FROM t ORDER BY i")
        .await
        .expect_err("division by zero mid-result");
    assert_eq!(err.code(), Some(&SqlState::DIVISION_BY_ZERO));
    // The session goes on after an error.
    let rows = client.simple_query("SELECT count(*) FROM t").await.unwrap();
    assert_eq!(column(&rows), ["10"]);
    // A failed transaction stays on its backend until it ends.
    client.batch_execute("BEGIN").await.unwrap();
    assert!(client.batch_execute("SELECT 1/0").await.is_err());
    let err = client
        .batch_execute("SELECT 1")
        .await
        .expect_err("aborted transaction");
    assert_eq!(err.code(), Some(&SqlState::IN_FAILED_SQL_TRANSACTION));
    client.batch_execute("ROLLBACK").await.unwrap();
    assert!(in_recovery(&client).await);
}

#[tokio::test]
async fn copy_in_and_out() {
    use futures_util::{SinkExt, StreamExt};
    let (_, proxy, db) = setup("copy").await;
    let client = proxy.connect(&db).await;
    client
        .batch_execute("CREATE TABLE c (i int, s text)")
        .await
        .unwrap();
    let sink = client.copy_in("COPY c FROM STDIN").await.unwrap();
    futures_util::pin_mut!(sink);
    for i in 0..1000 {
        sink.send(bytes::Bytes::from(format!("{i}\trow {i}\n")))
            .await
            .unwrap();
    }
    let n = sink.finish().await.unwrap();
    assert_eq!(n, 1000);
    client.batch_execute("BEGIN").await.unwrap();
    let stream = client.copy_out("COPY c TO STDOUT").await.unwrap();
    let chunks: Vec<_> = stream.collect().await;
    let lines: usize = chunks
        .iter()
        .map(|c| c.as_ref().unwrap().iter().filter(|&&b| b == b'\n').count())
        .sum();
    assert_eq!(lines, 1000);
    client.batch_execute("COMMIT").await.unwrap();
}

#[tokio::test]
async fn cancel_reaches_the_backend_running_the_query() {
    let (_, proxy, db) = setup("cancel").await;
    let client = proxy.connect(&db).await;
    let token = client.cancel_token();
    let sleeper = tokio::spawn(async move {
        let r = client.simple_query("SELECT pg_sleep(60)").await;
        (r, client)
    });
    // Cancel until the query reports it was canceled (it may not have started yet).
    let (result, client) = loop {
        token
            .cancel_query(tokio_postgres::NoTls)
            .await
            .expect("send cancel");
        tokio::task::yield_now().await;
        if sleeper.is_finished() {
            break sleeper.await.unwrap();
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let err = result.expect_err("canceled");
    assert_eq!(err.code(), Some(&SqlState::QUERY_CANCELED));
    assert!(
        in_recovery(&client).await,
        "the session is usable after a cancel"
    );
}

#[tokio::test]
async fn authentication_methods_and_refusals() {
    let (_, proxy, db) = setup("auth").await;
    // md5 to the client, md5 to the backend.
    let c = proxy.connect_as("md5user", "md5-secret", &db).await;
    c.simple_query("SELECT 1").await.unwrap();
    // SCRAM to the client, cleartext password to the backend.
    let c = proxy.connect_as("plainuser", "plain-secret", &db).await;
    c.simple_query("SELECT 1").await.unwrap();

    let refused = |user: &'static str, password: &'static str, dbname: String| {
        let info = proxy.conninfo(user, password, &dbname);
        async move {
            tokio_postgres::connect(&info, tokio_postgres::NoTls)
                .await
                .err()
                .and_then(|e| e.code().cloned())
        }
    };
    assert_eq!(
        refused("app", "wrong", db.clone()).await,
        Some(SqlState::INVALID_PASSWORD)
    );
    assert_eq!(
        refused("nobody", "x", db.clone()).await,
        Some(SqlState::INVALID_PASSWORD)
    );
    assert_eq!(
        refused("app", "app-secret", "no_such_db".into()).await,
        Some(SqlState::INVALID_CATALOG_NAME)
    );
    // The proxy is still serving.
    assert!(in_recovery(&proxy.connect(&db).await).await);
}

#[tokio::test]
async fn bad_clients_get_errors_and_others_are_unaffected() {
    let (_, proxy, db) = setup("bad").await;
    let healthy = proxy.connect(&db).await;

    // Garbage instead of a startup packet.
    let mut c = RawClient::connect(proxy.addr).await;
    tokio::io::AsyncWriteExt::write_all(&mut c.tcp, b"GET / HTTP/1.1\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(c.expect_error().await.as_deref(), Some("08P01"));
    assert!(c.closed().await);

    // A message longer than max_message_bytes (1 MiB in the test config).
    let mut c = RawClient::startup(proxy.addr, "trustuser", &db).await;
    let mut header = vec![b'Q'];
    header.extend_from_slice(&(64i32 << 20).to_be_bytes());
    tokio::io::AsyncWriteExt::write_all(&mut c.tcp, &header)
        .await
        .unwrap();
    assert_eq!(c.expect_error().await.as_deref(), Some("08P01"));
    assert!(c.closed().await);

    // A client that connects and says nothing is told so when auth_timeout (2 s) passes.
    let mut c = RawClient::connect(proxy.addr).await;
    assert_eq!(c.expect_error().await.as_deref(), Some("08P01"));
    assert!(c.closed().await);

    // A client that disappears in the middle of a large result.
    let mut c = RawClient::startup(proxy.addr, "trustuser", &db).await;
    c.send(
        b'Q',
        b"SELECT repeat('x', 100) FROM generate_series(1, 2000000)\0",
    )
    .await;
    let (tag, _) = c.read_message().await.expect("first result message");
    assert_eq!(tag, b'T');
    drop(c);

    // An unknown message type.
    let mut c = RawClient::startup(proxy.addr, "trustuser", &db).await;
    c.send(b'!', b"").await;
    assert_eq!(c.expect_error().await.as_deref(), Some("08P01"));

    // The proxy and the other session keep working.
    assert!(in_recovery(&healthy).await);
    assert!(in_recovery(&proxy.connect(&db).await).await);
}

#[tokio::test]
async fn function_call_and_terminate() {
    let (_, proxy, db) = setup("fcall").await;
    let mut c = RawClient::startup(proxy.addr, "trustuser", &db).await;
    // FunctionCall of pg_backend_pid() (OID 2026), no arguments, text result.
    let mut body = Vec::new();
    body.extend_from_slice(&2026i32.to_be_bytes());
    body.extend_from_slice(&0i16.to_be_bytes());
    body.extend_from_slice(&0i16.to_be_bytes());
    body.extend_from_slice(&0i16.to_be_bytes());
    c.send(b'F', &body).await;
    let (tag, _) = c.read_message().await.expect("FunctionCallResponse");
    assert_eq!(tag, b'V');
    let (tag, status) = c.read_message().await.expect("ReadyForQuery");
    assert_eq!((tag, status), (b'Z', b"I".to_vec()));
    c.send(b'X', b"").await;
    assert!(c.closed().await);
}

#[tokio::test]
async fn psql_works_unchanged() {
    let (cluster, proxy, db) = setup("psql").await;
    let psql = async |commands: &[&str]| {
        let mut cmd = Command::new("psql");
        cmd.args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .arg(proxy.conninfo("app", "app-secret", &db));
        for c in commands {
            cmd.args(["-c", c]);
        }
        let out = cmd.output().await.expect("run psql");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "psql failed: {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };
    let stdout = psql(&[
        "CREATE TABLE p (i int); INSERT INTO p VALUES (1), (2);",
        "BEGIN; SELECT count(*) FROM p; COMMIT;",
        "\\copy p FROM program 'seq 3 5'",
    ])
    .await;
    assert!(stdout.contains('2'), "{stdout}");
    // A read on a replica, once the replica has the rows.
    cluster.wait_replicated().await;
    let stdout =
        psql(&["SELECT string_agg(i::text, ',' ORDER BY i) FROM p WHERE pg_is_in_recovery()"])
            .await;
    assert_eq!(stdout.trim(), "1,2,3,4,5", "{stdout}");
}

async fn pgbench(proxy: &Proxy, db: &str, args: &[&str]) -> String {
    let out = Command::new("pgbench")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &proxy.addr.port().to_string(),
            "-U",
            "app",
        ])
        .args(args)
        .arg(db)
        .env("PGPASSWORD", "app-secret")
        .output()
        .await
        .expect("run pgbench");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "pgbench {args:?} failed:\n{text}");
    text
}

#[tokio::test]
async fn pgbench_in_every_query_mode() {
    let (cluster, proxy, db) = setup("pgbench").await;
    pgbench(&proxy, &db, &["-i", "-s", "1", "-q"]).await;
    cluster.wait_replicated().await;
    for mode in ["simple", "extended", "prepared"] {
        for script in [&[][..], &["-S"][..]] {
            let mut args = vec!["-n", "-M", mode, "-c", "4", "-j", "2", "-t", "50"];
            args.extend_from_slice(script);
            let out = pgbench(&proxy, &db, &args).await;
            assert!(
                out.contains("number of failed transactions: 0"),
                "pgbench {args:?}:\n{out}"
            );
            cluster.wait_replicated().await;
        }
    }
    let metrics = proxy.admin_get("/metrics").await;
    assert!(metrics.contains("switchyard_queries_total"), "{metrics}");
    assert!(
        metrics.contains("route=\"reader\""),
        "reads were counted on readers: {metrics}"
    );
    assert!(
        metrics.contains("switchyard_query_duration_seconds_bucket"),
        "histogram buckets: {metrics}"
    );
}

#[tokio::test]
async fn sqlx_prepares_and_reads_from_replicas() {
    use sqlx::Row;
    use sqlx::postgres::PgPoolOptions;
    let (_, proxy, db) = setup("sqlx").await;
    let url = format!(
        "postgres://app:app-secret@127.0.0.1:{}/{db}",
        proxy.addr.port()
    );
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect(&url)
        .await
        .expect("sqlx connects");
    let row = sqlx::query("SELECT $1::int + 1 AS n, pg_is_in_recovery() AS r")
        .bind(41i32)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(row.get::<i32, _>("n"), 42);
    assert!(row.get::<bool, _>("r"));
    sqlx::query("CREATE TABLE sx (i int)")
        .execute(&pool)
        .await
        .unwrap();
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("INSERT INTO sx VALUES ($1)")
        .bind(1i32)
        .execute(&mut *tx)
        .await
        .unwrap();
    let r: bool = sqlx::query_scalar("SELECT pg_is_in_recovery()")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert!(!r, "sqlx transaction on the primary");
    tx.commit().await.unwrap();
    for _ in 0..5 {
        let r: bool = sqlx::query_scalar("SELECT pg_is_in_recovery()")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert!(r);
    }
}

#[tokio::test]
async fn pipelined_queries_on_one_connection() {
    let (cluster, proxy, db) = setup("pipeline").await;
    let client = proxy.connect(&db).await;
    client
        .batch_execute("CREATE TABLE q (i int)")
        .await
        .unwrap();
    client
        .batch_execute("INSERT INTO q SELECT generate_series(1, 100)")
        .await
        .unwrap();
    cluster.wait_replicated().await;
    let statement = client
        .prepare("SELECT sum(i) FROM q WHERE i <= $1")
        .await
        .unwrap();
    // tokio-postgres sends all of these before reading any answer.
    let queries = (1..=50i32).map(|n| {
        let client = &client;
        let statement = &statement;
        async move {
            client
                .query_one(statement, &[&n])
                .await
                .map(|r| (n, r.get::<_, i64>(0)))
        }
    });
    for result in futures_util::future::join_all(queries).await {
        let (n, sum) = result.expect("pipelined query");
        assert_eq!(sum, i64::from(n * (n + 1) / 2));
    }
}

#[tokio::test]
async fn an_unreachable_reader_is_skipped() {
    let cluster = PgCluster::shared();
    let db = cluster.create_database("deadreader").await;
    let dead = support::free_port();
    let config = config_text(cluster, "")
        .replace("readers = [", &format!("readers = [\"127.0.0.1:{dead}\", "));
    let proxy = Proxy::from_config(&config).await;
    for _ in 0..10 {
        let client = proxy.connect(&db).await;
        assert!(
            in_recovery(&client).await,
            "reads still reach a live replica"
        );
    }
    let status = proxy.admin_get("/status").await;
    assert!(status.contains(&format!("127.0.0.1:{dead}")), "{status}");
}

#[tokio::test]
async fn notices_and_gssenc_requests() {
    let (_, proxy, db) = setup("notice").await;
    let mut c = RawClient::startup(proxy.addr, "trustuser", &db).await;
    c.send(
        b'Q',
        b"DO $$ BEGIN RAISE NOTICE 'hello from the database'; END $$\0",
    )
    .await;
    let (tag, body) = c.read_message().await.expect("notice");
    assert_eq!(tag, b'N');
    assert!(String::from_utf8_lossy(&body).contains("hello from the database"));

    // GSSAPI encryption is declined with 'N', after which a normal startup follows.
    let mut g = RawClient::connect(proxy.addr).await;
    let mut request = 8i32.to_be_bytes().to_vec();
    request.extend_from_slice(&80877104i32.to_be_bytes());
    tokio::io::AsyncWriteExt::write_all(&mut g.tcp, &request)
        .await
        .unwrap();
    let answer = tokio::io::AsyncReadExt::read_u8(&mut g.tcp).await.unwrap();
    assert_eq!(answer, b'N');
}

/// Runs `sql` on `client` and expects the read-only error (`25006`), whichever of the proxy
/// and the server raised it; the error.
async fn refused_read_only(client: &tokio_postgres::Client, sql: &str) -> tokio_postgres::Error {
    let err = client.batch_execute(sql).await.expect_err(sql);
    assert_eq!(
        err.code(),
        Some(&SqlState::READ_ONLY_SQL_TRANSACTION),
        "{sql}: {err:?}"
    );
    err
}

/// Runs each of `sqls` on `client` in turn, each expected to succeed.
async fn run_all(client: &tokio_postgres::Client, sqls: &[&str]) {
    for sql in sqls {
        client.batch_execute(sql).await.expect(sql);
    }
}

/// In a transaction of its own on `client`: `sql` refused with the read-only error, then
/// ROLLBACK.
async fn refused_in_transaction(client: &tokio_postgres::Client, sql: &str) {
    client.batch_execute("BEGIN").await.expect("BEGIN");
    refused_read_only(client, sql).await;
    client.batch_execute("ROLLBACK").await.expect("ROLLBACK");
}

#[tokio::test]
async fn read_only_mode_refuses_writes_and_keeps_reads() {
    let (cluster, proxy, db) = setup("readonly").await;
    let client = proxy.connect(&db).await;
    client
        .batch_execute("CREATE TABLE ro (i int)")
        .await
        .unwrap();
    let (status, _) = proxy
        .admin_post_as("/v1/clusters/main/read-only", r#"{"enabled":true}"#, None)
        .await;
    assert_eq!(status, 401, "state changes need the token");
    proxy.read_only(true).await;

    let err = refused_read_only(&client, "INSERT INTO ro VALUES (1)").await;
    let message = err
        .as_db_error()
        .map(|e| e.message().to_owned())
        .unwrap_or_default();
    assert!(
        message.contains("read-only for a database migration"),
        "{message}"
    );
    let err = client
        .execute("INSERT INTO ro VALUES ($1)", &[&1i32])
        .await
        .expect_err("refused");
    assert_eq!(
        err.code(),
        Some(&SqlState::READ_ONLY_SQL_TRANSACTION),
        "prepared writes too"
    );
    // Reads keep working, on replicas and inside transactions on the primary …
    assert!(in_recovery(&client).await);
    client.batch_execute("BEGIN").await.unwrap();
    let n: i64 = client
        .query_one("SELECT count(*) FROM ro", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    // … where the database itself refuses what the proxy let through.
    refused_read_only(&client, "INSERT INTO ro VALUES (2)").await;
    client.batch_execute("ROLLBACK").await.unwrap();

    proxy.read_only(false).await;
    client
        .batch_execute("INSERT INTO ro VALUES (3)")
        .await
        .expect("writes again");
    let n = rows_on_primary(cluster, &db, "ro").await;
    assert_eq!(n, 1, "only the write made while read-write landed");
    let metrics = proxy.admin_get("/metrics").await;
    assert!(
        metrics.contains("switchyard_writes_refused_total"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_pause_holds_new_transactions_without_errors() {
    let cluster = PgCluster::shared();
    let db = cluster.create_database("pause").await;
    let config = with_routing(&config_text(cluster, ""), "max_pause = \"60s\"");
    let proxy = Proxy::from_config(&config).await;
    let early = proxy.connect(&db).await;
    early
        .batch_execute("CREATE TABLE held (i int)")
        .await
        .unwrap();
    early
        .batch_execute("BEGIN; INSERT INTO held VALUES (1)")
        .await
        .unwrap();

    let (status, body) = proxy.admin_post("/v1/pause", "{}").await;
    assert_eq!(status, 200, "{body}");
    // A transaction in flight finishes.
    early
        .batch_execute("COMMIT")
        .await
        .expect("in-flight transaction commits");
    // Reads on replicas go on.
    let late = proxy.connect(&db).await;
    assert!(in_recovery(&late).await);
    // A new write waits …
    let writer =
        tokio::spawn(async move { late.batch_execute("INSERT INTO held VALUES (2)").await });
    proxy
        .wait_for_gauge("switchyard_held_transactions", 1.0)
        .await;
    assert!(!writer.is_finished(), "held while paused");
    // … and runs, without an error, once resumed.
    let (status, _) = proxy.admin_post("/v1/resume", "{}").await;
    assert_eq!(status, 200);
    writer.await.unwrap().expect("released without an error");

    // A pause nobody lifts ends by itself after max_pause.
    let short = with_routing(&config_text(cluster, ""), "max_pause = \"1s\"");
    let proxy = Proxy::from_config(&short).await;
    let client = proxy.connect(&db).await;
    proxy.admin_post("/v1/pause", "{}").await;
    client
        .batch_execute("INSERT INTO held VALUES (3)")
        .await
        .expect("released by max_pause");
    let n = rows_on_primary(cluster, &db, "held").await;
    assert_eq!(n, 3);
}

async fn cli(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .env_remove("SWITCHYARD_ADMIN_TOKEN")
        .env_remove("SWITCHYARD_CONFIG")
        .output()
        .await
        .expect("run switchyard");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test]
async fn the_cli_drives_read_only_mode_and_the_state_survives_a_restart() {
    let cluster = PgCluster::shared();
    let db = cluster.create_database("cli").await;
    let state_dir = tempfile::tempdir().unwrap();
    let state = format!("state_dir = \"{}\"", state_dir.path().display());
    let config = with_routing(&config_text(cluster, ""), &state);
    let proxy = Proxy::from_config(&config).await;
    let url = format!("http://{}", proxy.admin);

    let (ok, out) = cli(&["read-only", "on", "--cluster", "main", "--admin", &url]).await;
    assert!(!ok, "without the token the change is refused: {out}");
    assert!(out.contains("401"), "{out}");
    let token = support::proxy::ADMIN_TOKEN;
    let (ok, out) = cli(&[
        "read-only",
        "on",
        "--cluster",
        "main",
        "--admin",
        &url,
        "--token",
        token,
    ])
    .await;
    assert!(ok, "{out}");
    assert!(out.contains("read_only"), "{out}");
    let (ok, out) = cli(&["status", "--admin", &url]).await;
    assert!(ok, "{out}");
    assert!(
        out.contains("active cluster: main") && out.contains("reader"),
        "{out}"
    );

    // A restarted proxy comes back read-only.
    drop(proxy);
    let proxy = Proxy::from_config(&config).await;
    let client = proxy.connect(&db).await;
    refused_read_only(&client, "CREATE TABLE t (i int)").await;
    let url = format!("http://{}", proxy.admin);
    let (ok, out) = cli(&[
        "read-only",
        "off",
        "--cluster",
        "main",
        "--admin",
        &url,
        "--token",
        token,
    ])
    .await;
    assert!(ok, "{out}");
    client
        .batch_execute("CREATE TABLE t (i int)")
        .await
        .expect("writable again");
}

#[tokio::test]
async fn a_reader_that_dies_costs_the_client_nothing() {
    let cluster = PgCluster::shared();
    let db = cluster.create_database("deadreplica").await;
    let replica = &cluster.replicas[0];
    let relay = support::fault::Relay::start(
        format!("{}:{}", replica.host, replica.port)
            .parse()
            .unwrap(),
    )
    .await;
    // A session holding a reader connection that dies.
    let base = in_pool_mode(&config_text(cluster, ""), "session");
    let config = with_readers(&base, &[relay.addr.to_string()]);
    let proxy = Proxy::from_config(&config).await;
    let client = proxy.connect(&db).await;
    assert!(
        in_recovery(&client).await,
        "reads go through the relay to the replica"
    );
    let prepared = client.prepare("SELECT 40 + 2").await.unwrap();
    relay.cut();
    // The reader connection is gone: the next reads are retried on the primary.
    let answer: i32 = client
        .query_one(&prepared, &[])
        .await
        .expect("a prepared read after the cut")
        .get(0);
    assert_eq!(answer, 42);
    for _ in 0..3 {
        client
            .simple_query("SELECT 1")
            .await
            .expect("a read after the cut");
    }
    let metrics = proxy.admin_get("/metrics").await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("switchyard_read_retries_total{") && !l.ends_with(" 0")),
        "the retry is counted:\n{metrics}"
    );

    // Inside a read-only transaction on the reader, a statement cannot run elsewhere
    // without leaving the transaction: the client gets an error instead of a silent retry.
    let relay = support::fault::Relay::start(
        format!("{}:{}", replica.host, replica.port)
            .parse()
            .unwrap(),
    )
    .await;
    let proxy = Proxy::from_config(&with_readers(&base, &[relay.addr.to_string()])).await;
    let client = proxy.connect(&db).await;
    client
        .batch_execute("BEGIN READ ONLY")
        .await
        .expect("begin a read-only transaction");
    assert!(
        in_recovery(&client).await,
        "the read-only transaction runs on the replica"
    );
    relay.cut();
    assert!(
        client.simple_query("SELECT 1").await.is_err(),
        "a statement of a transaction whose reader died fails"
    );

    // With another replica configured, the retry stays on replicas.
    let other = &cluster.replicas[1];
    let relay = support::fault::Relay::start(
        format!("{}:{}", replica.host, replica.port)
            .parse()
            .unwrap(),
    )
    .await;
    let config = with_readers(
        &base,
        &[
            relay.addr.to_string(),
            format!("{}:{}", other.host, other.port),
        ],
    );
    let proxy = Proxy::from_config(&config).await;
    let where_ = "SELECT inet_server_port(), pg_is_in_recovery()";
    let mut behind_relay = None;
    for _ in 0..30 {
        let client = proxy.connect(&db).await;
        let row = client.query_one(where_, &[]).await.unwrap();
        if row.get::<_, i32>(0) == i32::from(replica.port) {
            behind_relay = Some(client);
            break;
        }
    }
    let client = behind_relay.expect("a session whose reader is behind the relay");
    relay.cut();
    let row = client
        .query_one(where_, &[])
        .await
        .expect("a read after the cut");
    assert_eq!(
        (row.get::<_, i32>(0), row.get::<_, bool>(1)),
        (i32::from(other.port), true),
        "retried on the other replica, not the primary"
    );
}

#[tokio::test]
async fn a_session_reads_its_own_writes_from_the_primary() {
    let cluster = PgCluster::shared();
    let db = cluster.create_database("ryw").await;
    let config =
        config_text(cluster, "").replace("read_your_writes = \"0s\"", "read_your_writes = \"1h\"");
    let proxy = Proxy::from_config(&config).await;
    let writer_session = proxy.connect(&db).await;
    let other_session = proxy.connect(&db).await;
    writer_session
        .batch_execute("SET application_name = 'ryw'")
        .await
        .unwrap();
    assert!(
        in_recovery(&writer_session).await,
        "settings are not writes: reads stay on replicas"
    );
    writer_session
        .batch_execute("CREATE TABLE ryw (i int)")
        .await
        .unwrap();
    writer_session
        .batch_execute("INSERT INTO ryw VALUES (1)")
        .await
        .unwrap();
    // Right after its write the session reads from the primary, so it sees the row …
    assert!(
        !in_recovery(&writer_session).await,
        "reads follow the session's own write"
    );
    let n: i64 = writer_session
        .query_one("SELECT count(*) FROM ryw", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    // … while other sessions keep reading from replicas.
    assert!(in_recovery(&other_session).await);
}

/// Reads messages up to and including ReadyForQuery; returns their tags and bodies. A
/// proxy that never answers fails the test instead of hanging it.
async fn until_ready(c: &mut RawClient) -> Vec<(u8, Vec<u8>)> {
    let read = async {
        let mut seen = Vec::new();
        loop {
            let m = c
                .read_message()
                .await
                .expect("a message before ReadyForQuery");
            let ready = m.0 == b'Z';
            seen.push(m);
            if ready {
                return seen;
            }
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(60), read)
        .await
        .expect("an answer (the proxy hung)")
}

fn tags(messages: &[(u8, Vec<u8>)]) -> String {
    messages.iter().map(|(t, _)| *t as char).collect()
}

fn cstrs(parts: &[&[u8]]) -> Vec<u8> {
    parts
        .iter()
        .flat_map(|p| p.iter().copied().chain([0]))
        .collect()
}

/// Parse of an unnamed statement without parameter types.
fn parse_body(sql: &str) -> Vec<u8> {
    parse_body_bytes(sql.as_bytes())
}

#[tokio::test]
async fn flush_terminated_batches_mix_with_simple_queries_and_copy() {
    let (cluster, proxy, db) = setup("flush").await;
    let client = proxy.connect(&db).await;
    client
        .batch_execute("CREATE TABLE f (i int); GRANT ALL ON f TO PUBLIC")
        .await
        .unwrap();
    cluster.wait_replicated().await;
    let mut c = RawClient::startup(proxy.addr, "trustuser", &db).await;
    // As asyncpg's copy_records_to_table: describe a statement, Flush, no Sync …
    c.send(b'P', &parse_body("SELECT i FROM f")).await;
    c.send(b'D', b"S\0").await;
    c.send(b'H', b"").await;
    for want in [b'1', b't', b'T'] {
        let (tag, _) = c
            .read_message()
            .await
            .expect("answer to the described batch");
        assert_eq!(tag as char, want as char);
    }
    // … then a simple-query binary COPY, which must run where a write can.
    c.send(b'Q', b"COPY f FROM STDIN (FORMAT binary)\0").await;
    let (tag, body) = c.read_message().await.expect("CopyInResponse");
    assert_eq!(tag, b'G', "{}", String::from_utf8_lossy(&body));
    let mut data = b"PGCOPY\n\xff\r\n\0".to_vec();
    data.extend_from_slice(&[0; 8]);
    for i in [7i32, 8] {
        data.extend_from_slice(&1i16.to_be_bytes());
        data.extend_from_slice(&4i32.to_be_bytes());
        data.extend_from_slice(&i.to_be_bytes());
    }
    data.extend_from_slice(&(-1i16).to_be_bytes());
    c.send(b'd', &data).await;
    c.send(b'c', b"").await;
    let answer = until_ready(&mut c).await;
    assert_eq!(tags(&answer), "CZ", "{answer:?}");
    // The next query gets its own answer (from a replica, once it has the rows).
    cluster.wait_replicated().await;
    c.send(b'Q', b"SELECT count(*) FROM f\0").await;
    let answer = until_ready(&mut c).await;
    assert_eq!(tags(&answer), "TDCZ");
    assert!(answer[1].1.ends_with(b"2"), "{answer:?}");
    // A read batch up to Flush, a simple query, then Sync: each answered as a server does.
    c.send(b'P', &parse_body("SELECT 1")).await;
    c.send(b'B', &[0, 0, 0, 0, 0, 0, 0, 0]).await;
    c.send(b'E', &[0, 0, 0, 0, 0]).await;
    c.send(b'H', b"").await;
    for want in [b'1', b'2', b'D', b'C'] {
        let (tag, _) = c.read_message().await.expect("answer to the flushed batch");
        assert_eq!(tag as char, want as char);
    }
    c.send(b'Q', b"INSERT INTO f VALUES (9)\0").await;
    assert_eq!(tags(&until_ready(&mut c).await), "CZ");
    c.send(b'S', b"").await;
    assert_eq!(tags(&until_ready(&mut c).await), "Z");
    c.send(b'Q', b"SELECT 1\0").await;
    assert_eq!(tags(&until_ready(&mut c).await), "TDCZ");
    assert_eq!(rows_on_primary(cluster, &db, "f").await, 3);
    // A SET sent after an open batch is session state like any other: replayed on readers.
    c.send(b'P', &parse_body("SELECT 1")).await;
    c.send(b'D', b"S\0").await;
    c.send(b'H', b"").await;
    for want in [b'1', b't', b'T'] {
        let (tag, _) = c
            .read_message()
            .await
            .expect("answer to the described batch");
        assert_eq!(tag as char, want as char);
    }
    c.send(b'Q', b"SET application_name = 'flushed'\0").await;
    assert_eq!(tags(&until_ready(&mut c).await), "CSZ");
    c.send(
        b'Q',
        b"SELECT current_setting('application_name') || pg_is_in_recovery()\0",
    )
    .await;
    let answer = until_ready(&mut c).await;
    assert!(answer[1].1.ends_with(b"flushedtrue"), "{answer:?}");
    // As asyncpg runs every query: Parse/Describe/Flush, then Bind/Execute/Sync. A read
    // runs on a replica, like any other read.
    c.send(b'P', &parse_body("SELECT pg_is_in_recovery()"))
        .await;
    c.send(b'D', b"S\0").await;
    c.send(b'H', b"").await;
    for want in [b'1', b't', b'T'] {
        let (tag, _) = c
            .read_message()
            .await
            .expect("answer to the described read");
        assert_eq!(tag as char, want as char);
    }
    c.send(b'B', &[0, 0, 0, 0, 0, 0, 0, 0]).await;
    c.send(b'E', &[0, 0, 0, 0, 0]).await;
    c.send(b'S', b"").await;
    let answer = until_ready(&mut c).await;
    assert_eq!(tags(&answer), "2DCZ", "{answer:?}");
    assert!(
        answer[1].1.ends_with(b"t"),
        "the read ran on a replica: {answer:?}"
    );
}

/// The (pid, secret) of BackendKeyData, as tokio-postgres holds it: its cancel token writes
/// them into a CancelRequest.
async fn backend_key(client: &tokio_postgres::Client) -> (i32, i32) {
    use tokio::io::AsyncReadExt;
    let (mut ours, theirs) = tokio::io::duplex(64);
    client
        .cancel_token()
        .cancel_query_raw(theirs, tokio_postgres::NoTls)
        .await
        .expect("write a CancelRequest");
    let mut packet = [0u8; 16];
    ours.read_exact(&mut packet).await.expect("CancelRequest");
    let word = |at: usize| i32::from_be_bytes(packet[at..at + 4].try_into().unwrap());
    (word(8), word(12))
}

#[tokio::test]
async fn the_client_is_told_its_writer_connections_pid() {
    // Session mode: the client owns its writer connection (for transaction mode, see
    // `pooling::pg_backend_pid_is_the_clients_own_...`).
    let (cluster, proxy, db) = setup_session_mode("pid").await;
    let (mut client, mut notifications) = proxy.connect_listening(&db).await;
    let (pid, secret) = backend_key(&client).await;

    let tx = client.transaction().await.unwrap();
    let in_transaction: i32 = tx
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    tx.commit().await.unwrap();
    assert_eq!(in_transaction, pid, "pg_backend_pid() in a transaction");
    let hinted: i32 = client
        .query_one("/* switchyard:writer */ SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(hinted, pid, "pg_backend_pid() with a writer hint");
    let primary = cluster.superuser(&cluster.primary, &db).await;
    let seen: i64 = primary
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND usename = 'app'",
            &[&pid],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(seen, 1, "the primary has a connection of app with that pid");

    client
        .batch_execute("LISTEN ch; NOTIFY ch, 'hello'")
        .await
        .unwrap();
    let n = notifications.recv().await.expect("a notification");
    assert_eq!((n.channel(), n.payload()), ("ch", "hello"));
    assert_eq!(
        n.process_id(),
        pid,
        "the pid of a notification this session sent"
    );

    // The secret is the proxy's: the key works through the proxy, for the statement's
    // connection, here the writer in a transaction.
    assert_ne!(secret, 0);
    let token = client.cancel_token();
    let tx = client.transaction().await.unwrap();
    let sleep = tx.simple_query("SELECT pg_sleep(60)");
    let cancel = async {
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            token
                .cancel_query(tokio_postgres::NoTls)
                .await
                .expect("cancel");
        }
    };
    let result = tokio::select! {
        r = sleep => r,
        _ = cancel => unreachable!(),
    };
    assert_eq!(
        result.expect_err("canceled").code(),
        Some(&SqlState::QUERY_CANCELED)
    );
    tx.rollback().await.unwrap();
}

#[tokio::test]
async fn a_backend_connection_the_server_ended_ends_the_session() {
    let (cluster, proxy, db) = setup_session_mode("terminated").await;
    let primary = cluster.superuser(&cluster.primary, &db).await;
    let terminate = async |pid: i32| {
        let done: bool = primary
            .query_one("SELECT pg_terminate_backend($1, 30000)", &[&pid])
            .await
            .expect("pg_terminate_backend")
            .get(0);
        assert!(done, "backend {pid} terminated");
    };
    let expect_ended = |result: Result<Vec<SimpleQueryMessage>, tokio_postgres::Error>| {
        let err = result.expect_err("the session was ended");
        assert_eq!(err.code(), Some(&SqlState::ADMIN_SHUTDOWN), "{err:?}");
    };

    // Between transactions.
    let client = proxy.connect(&db).await;
    let (pid, _) = backend_key(&client).await;
    terminate(pid).await;
    expect_ended(client.simple_query("CREATE TABLE t1 (i int)").await);
    let after = client.simple_query("SELECT 1").await.expect_err("closed");
    assert!(after.is_closed(), "{after:?}");

    // In a transaction.
    let client = proxy.connect(&db).await;
    let (pid, _) = backend_key(&client).await;
    client.batch_execute("BEGIN").await.unwrap();
    client.simple_query("SELECT 1").await.unwrap();
    terminate(pid).await;
    expect_ended(client.simple_query("SELECT 1").await);

    // While a statement runs.
    let client = proxy.connect(&db).await;
    let (pid, _) = backend_key(&client).await;
    let sleeper = tokio::spawn(async move {
        client
            .simple_query("/* switchyard:writer */ SELECT pg_sleep(60)")
            .await
    });
    let running = "SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND query LIKE '%pg_sleep%' AND state = 'active'";
    while primary
        .query_one(running, &[&pid])
        .await
        .unwrap()
        .get::<_, i64>(0)
        == 0
    {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    terminate(pid).await;
    expect_ended(sleeper.await.unwrap());

    // A session kept on its writer (LISTEN) hears it at once, while idle.
    let (client, connection) = proxy.connect_driven(&db).await;
    client.batch_execute("LISTEN ch").await.unwrap();
    let (pid, _) = backend_key(&client).await;
    terminate(pid).await;
    let ended = connection
        .await
        .unwrap()
        .expect_err("the server ended the session");
    assert_eq!(ended.code(), Some(&SqlState::ADMIN_SHUTDOWN), "{ended:?}");

    // Other sessions go on.
    let client = proxy.connect(&db).await;
    client
        .batch_execute("CREATE TABLE t2 (i int)")
        .await
        .unwrap();
}

#[tokio::test]
async fn queries_in_any_client_encoding() {
    let (cluster, proxy, db) = setup("encoding").await;
    let client = proxy.connect(&db).await;
    client
        .batch_execute("CREATE TABLE e (s text)")
        .await
        .unwrap();
    // psql with a LATIN1 client: 'é' is the single byte 0xE9.
    let latin1_psql = async |sql: &[u8]| {
        let out = Command::new("psql")
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .arg(proxy.conninfo("app", "app-secret", &db))
            .env("PGCLIENTENCODING", "LATIN1")
            .arg("-c")
            .arg(std::ffi::OsStr::from_bytes(sql))
            .output()
            .await
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    let inserted = latin1_psql(b"INSERT INTO e VALUES ('caf\xe9')").await;
    assert_eq!(inserted, b"INSERT 0 1\n");
    // The read goes to a replica: once it has the row.
    cluster.wait_replicated().await;
    let read =
        latin1_psql(b"SELECT s FROM e WHERE s = 'caf\xe9' AND pg_is_in_recovery() IS NOT NULL")
            .await;
    assert_eq!(read, b"caf\xe9\n");
    let stored: String = client
        .query_one("/* switchyard:writer */ SELECT s FROM e", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, "café");
    assert_eq!(rows_on_primary(cluster, &db, "e").await, 1);
    // Bytes that are not UTF-8 in a UTF-8 session: the server's error, and the session goes on.
    let mut c = RawClient::startup(proxy.addr, "trustuser", &db).await;
    c.send(b'P', &parse_body_bytes(b"SELECT 'caf\xe9'")).await;
    c.send(b'S', b"").await;
    let answer = until_ready(&mut c).await;
    assert_eq!(tags(&answer), "EZ");
    assert_eq!(support::proxy::sqlstate(&answer[0].1), "22021");
    c.send(b'Q', b"SELECT 'caf\xe9'\0").await;
    let answer = until_ready(&mut c).await;
    assert_eq!(tags(&answer), "EZ");
    c.send(b'Q', b"SELECT 1\0").await;
    assert_eq!(tags(&until_ready(&mut c).await), "TDCZ");
}

fn parse_body_bytes(sql: &[u8]) -> Vec<u8> {
    let mut body = cstrs(&[b"", sql]);
    body.extend_from_slice(&0i16.to_be_bytes());
    body
}

/// Statements about the server itself (its activity, locks, prepared transactions,
/// replication, transaction ids, this backend) run on the session's own writer connection:
/// two-phase-commit clean-up sees the transactions it prepared, `pg_backend_pid()` is the
/// backend its transactions run on.
#[tokio::test]
async fn statements_about_the_node_run_on_the_session_writer() {
    let (_, proxy, db) = setup("node_state").await;
    let client = proxy.connect(&db).await;
    client
        .batch_execute("CREATE TABLE t (i int)")
        .await
        .unwrap();
    client
        .batch_execute("BEGIN; INSERT INTO t VALUES (1); PREPARE TRANSACTION 'switchyard_gid'")
        .await
        .unwrap();
    let pending = "SELECT count(*) FROM pg_prepared_xacts WHERE gid = 'switchyard_gid'";
    let seen: i64 = client.query_one(pending, &[]).await.unwrap().get(0);
    assert_eq!(
        seen, 1,
        "the prepared transaction is seen through the proxy"
    );
    // A replica does not list it: the rule is what makes the clean-up work.
    let hinted = format!("/* switchyard:reader */ {pending}");
    let on_replica: i64 = client.query_one(&hinted, &[]).await.unwrap().get(0);
    assert_eq!(on_replica, 0, "a replica lists no prepared transaction");
    client
        .batch_execute("ROLLBACK PREPARED 'switchyard_gid'")
        .await
        .unwrap();

    let pid: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    client.batch_execute("BEGIN").await.unwrap();
    let in_transaction: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    client.batch_execute("COMMIT").await.unwrap();
    assert_eq!(
        pid, in_transaction,
        "pg_backend_pid() is the writer's backend"
    );

    // The class, not single statements: each of these ran on a replica before.
    for sql in [
        "SELECT pg_is_in_recovery() FROM pg_stat_activity WHERE pid = pg_backend_pid()",
        "SELECT pg_is_in_recovery() FROM pg_locks LIMIT 1",
        "SELECT pg_is_in_recovery(), count(*) FROM pg_stat_replication",
        "SELECT pg_is_in_recovery(), count(*) FROM pg_catalog.pg_stat_user_tables",
        "SELECT pg_is_in_recovery(), txid_current_if_assigned()",
        "SELECT pg_is_in_recovery(), pg_postmaster_start_time()",
        "SELECT pg_is_in_recovery(), count(*) FROM pg_replication_slots",
        "SELECT pg_is_in_recovery(), pg_current_wal_lsn()",
    ] {
        let row = client
            .query_one(sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        assert!(!row.get::<_, bool>(0), "{sql} runs on the primary");
        let simple = client.simple_query(sql).await.unwrap();
        assert_eq!(column(&simple), ["f"], "{sql} (simple query)");
    }
    assert!(
        in_recovery(&client).await,
        "other reads still go to replicas"
    );
}

/// `SELECT f()` of a user-defined function: a VOLATILE one (which may write) runs on the
/// primary, from the first call (the catalog is not loaded yet) and after (it says
/// volatile); a STABLE one runs on a replica once the catalog is loaded, and on the primary
/// again once DDL passing through the proxy made it volatile.
#[tokio::test]
async fn functions_that_may_write_run_on_the_primary() {
    let (cluster, proxy, db) = setup("functions").await;
    let client = proxy.connect(&db).await;
    client
        .batch_execute(
            "CREATE TABLE calls (n int);
             CREATE FUNCTION record_call() RETURNS bigint LANGUAGE plpgsql VOLATILE AS $$
               BEGIN INSERT INTO calls VALUES (1); RETURN (SELECT count(*) FROM calls); END $$;
             CREATE FUNCTION where_am_i() RETURNS bool LANGUAGE sql STABLE
               AS 'SELECT pg_is_in_recovery()'",
        )
        .await
        .unwrap();
    cluster.wait_replicated().await;
    let first: i64 = client
        .query_one("SELECT record_call()", &[])
        .await
        .expect("a writing function's first call")
        .get(0);
    assert_eq!(first, 1);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let on_replica: bool = client
            .query_one("SELECT where_am_i()", &[])
            .await
            .unwrap()
            .get(0);
        if on_replica {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "a STABLE function never reached a replica"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // The catalog is loaded now: the volatile function keeps going to the primary.
    for expected in 2..5i64 {
        let n: i64 = client
            .query_one("SELECT record_call()", &[])
            .await
            .expect("a writing function after the catalog loaded")
            .get(0);
        assert_eq!(n, expected);
    }
    let simple = client.simple_query("SELECT public.record_call()").await;
    assert_eq!(column(&simple.expect("simple query")), ["5"]);
    assert_eq!(rows_on_primary(cluster, &db, "calls").await, 5);

    // DDL through the proxy drops the cached answer: volatile now, so the primary.
    client
        .batch_execute("ALTER FUNCTION where_am_i() VOLATILE")
        .await
        .unwrap();
    for _ in 0..5 {
        let on_replica: bool = client
            .query_one("SELECT where_am_i()", &[])
            .await
            .unwrap()
            .get(0);
        assert!(!on_replica, "a function made volatile runs on the primary");
    }
}

/// A hot standby refuses serializable transactions: `BEGIN ISOLATION LEVEL SERIALIZABLE,
/// READ ONLY` and a serializable session default keep the work on the primary.
#[tokio::test]
async fn serializable_transactions_stay_on_the_primary() {
    let (_, proxy, db) = setup("serializable").await;
    let client = proxy.connect(&db).await;
    client
        .batch_execute("BEGIN ISOLATION LEVEL SERIALIZABLE, READ ONLY")
        .await
        .expect("a serializable read-only transaction starts");
    assert!(!in_recovery(&client).await);
    client.batch_execute("COMMIT").await.unwrap();
    let one = client
        .simple_query("START TRANSACTION ISOLATION LEVEL SERIALIZABLE READ ONLY; SELECT 1; COMMIT")
        .await
        .expect("in one query string");
    assert_eq!(column(&one), ["1"]);
    assert!(
        in_recovery(&client).await,
        "other read-only work still goes to replicas"
    );

    for default in [
        "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE",
        "SET default_transaction_isolation = 'serializable'",
    ] {
        let client = proxy.connect(&db).await;
        client.batch_execute(default).await.unwrap();
        assert!(!in_recovery(&client).await, "after {default}");
        client.batch_execute("BEGIN READ ONLY").await.unwrap();
        let level: String = client
            .query_one("SHOW transaction_isolation", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(level, "serializable");
        client.batch_execute("COMMIT").await.unwrap();
    }

    // The same default given at startup.
    let conninfo = proxy.conninfo("app", "app-secret", &db)
        + " options='-c default_transaction_isolation=serializable'";
    let (client, connection) = tokio_postgres::connect(&conninfo, tokio_postgres::NoTls)
        .await
        .expect("connect with a serializable default");
    tokio::spawn(connection);
    assert!(
        !in_recovery(&client).await,
        "a serializable session stays on the primary"
    );
}
