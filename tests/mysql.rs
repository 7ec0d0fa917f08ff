//! The MySQL proxy against real MariaDB servers: a primary with two binlog replicas,
//! shared by every test of this binary; each test uses its own database.

mod support;

use mysql_async::prelude::*;
use mysql_async::{Conn, OptsBuilder};
use support::mariadb::MariaCluster;
use support::proxy::{Proxy, mysql_config_text};
use tokio::process::Command;

async fn setup(prefix: &str) -> (&'static MariaCluster, Proxy, String) {
    let cluster = MariaCluster::shared();
    let db = cluster.create_database(prefix).await;
    let proxy = Proxy::from_config(&mysql_config_text(cluster, "")).await;
    (cluster, proxy, db)
}

fn opts(proxy: &Proxy, db: &str) -> OptsBuilder {
    OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(proxy.addr.port())
        .user(Some("app"))
        .pass(Some("app-secret"))
        .db_name(Some(db))
        .prefer_socket(false)
}

async fn connect(proxy: &Proxy, db: &str) -> Conn {
    Conn::new(opts(proxy, db))
        .await
        .expect("connect through the proxy")
}

/// `@@read_only` of the server that ran the statement: 1 on a replica, 0 on the primary.
async fn on_replica(conn: &mut Conn) -> bool {
    let ro: Option<i64> = conn
        .query_first("SELECT @@read_only")
        .await
        .expect("read_only");
    ro == Some(1)
}

#[tokio::test]
async fn reads_go_to_replicas_and_transactions_to_the_primary() {
    let (_, proxy, db) = setup("routing").await;
    let mut conn = connect(&proxy, &db).await;
    assert!(
        on_replica(&mut conn).await,
        "a read outside a transaction runs on a replica"
    );
    conn.query_drop("START TRANSACTION").await.unwrap();
    assert!(
        !on_replica(&mut conn).await,
        "inside a transaction everything runs on the primary"
    );
    conn.query_drop("COMMIT").await.unwrap();
    assert!(on_replica(&mut conn).await);

    conn.query_drop("SET autocommit = 0").await.unwrap();
    assert!(
        !on_replica(&mut conn).await,
        "autocommit=0 sessions run on the primary"
    );
    conn.query_drop("COMMIT").await.unwrap();
    assert!(
        !on_replica(&mut conn).await,
        "…until autocommit is set back"
    );
    conn.query_drop("SET autocommit = 1").await.unwrap();
    assert!(on_replica(&mut conn).await);

    let hinted: Option<i64> = conn
        .query_first("SELECT /* switchyard:writer */ @@read_only")
        .await
        .unwrap();
    assert_eq!(hinted, Some(0), "a writer hint is obeyed");
}

#[tokio::test]
async fn writes_land_on_the_primary() {
    let (cluster, proxy, db) = setup("writes").await;
    let mut conn = connect(&proxy, &db).await;
    conn.query_drop("CREATE TABLE ledger (id INT PRIMARY KEY AUTO_INCREMENT, note TEXT)")
        .await
        .unwrap();
    for i in 0..20 {
        conn.exec_drop("INSERT INTO ledger (note) VALUES (?)", (format!("n{i}"),))
            .await
            .expect("insert through the proxy");
    }
    let id: Option<u64> = conn.query_first("SELECT LAST_INSERT_ID()").await.unwrap();
    assert_eq!(id, Some(20), "LAST_INSERT_ID runs where the insert ran");
    let mut primary = cluster.admin(&cluster.primary).await;
    let n: Option<i64> = primary
        .query_first(format!("SELECT COUNT(*) FROM `{db}`.ledger"))
        .await
        .unwrap();
    assert_eq!(n, Some(20), "every acknowledged write is on the primary");
}

#[tokio::test]
async fn prepared_statements_follow_the_session_across_backends() {
    let (_, proxy, db) = setup("prepared").await;
    let mut conn = connect(&proxy, &db).await;
    let read = "SELECT ? + 1, @@read_only";
    let row: Option<(i64, i64)> = conn.exec_first(read, (41,)).await.unwrap();
    assert_eq!(row, Some((42, 1)), "a prepared read runs on a replica");
    conn.query_drop("START TRANSACTION").await.unwrap();
    // mysql_async reuses its cached statement: the proxy prepares it on the primary.
    let row: Option<(i64, i64)> = conn.exec_first(read, (1,)).await.unwrap();
    assert_eq!(row, Some((2, 0)));
    conn.query_drop("COMMIT").await.unwrap();
    for i in 0..3 {
        let row: Option<(i64, i64)> = conn.exec_first(read, (i,)).await.unwrap();
        assert_eq!(row, Some((i + 1, 1)));
    }
    // Text protocol and binary protocol mixed, with many rows.
    conn.query_drop("CREATE TABLE p (i INT, s VARCHAR(20))")
        .await
        .unwrap();
    conn.exec_batch(
        "INSERT INTO p VALUES (?, ?)",
        (0..50).map(|i| (i, format!("row {i}"))),
    )
    .await
    .unwrap();
    conn.query_drop("START TRANSACTION").await.unwrap();
    let rows: Vec<(i32, String)> = conn
        .exec("SELECT i, s FROM p WHERE i >= ? ORDER BY i", (10,))
        .await
        .unwrap();
    assert_eq!(rows.len(), 40);
    conn.query_drop("COMMIT").await.unwrap();
}

#[tokio::test]
async fn session_variables_are_replayed_on_the_replica() {
    let (_, proxy, db) = setup("settings").await;
    let mut conn = connect(&proxy, &db).await;
    conn.query_drop("SET time_zone = '+02:00'").await.unwrap();
    conn.query_drop("SET SESSION sql_mode = 'ANSI_QUOTES'")
        .await
        .unwrap();
    let row: Option<(String, String, i64)> = conn
        .query_first("SELECT @@time_zone, @@sql_mode, @@read_only")
        .await
        .unwrap();
    assert_eq!(row, Some(("+02:00".into(), "ANSI_QUOTES".into(), 1)));
}

#[tokio::test]
async fn multi_statements_and_errors() {
    let (cluster, proxy, db) = setup("multi").await;
    let mut conn = connect(&proxy, &db).await;
    conn.query_drop("CREATE TABLE m (i INT); INSERT INTO m VALUES (1), (2), (3)")
        .await
        .unwrap();
    cluster.wait_replicated().await;
    let mut result = conn
        .query_iter("SELECT 1; SELECT i FROM m ORDER BY i")
        .await
        .unwrap();
    let first: Vec<i64> = result.collect().await.unwrap();
    let second: Vec<i64> = result.collect().await.unwrap();
    assert_eq!((first, second), (vec![1], vec![1, 2, 3]));
    drop(result);
    let err = conn
        .query_drop("SELECT * FROM no_such_table")
        .await
        .expect_err("error");
    assert!(err.to_string().contains("1146"), "{err}");
    assert!(
        on_replica(&mut conn).await,
        "the session goes on after an error"
    );
    conn.ping().await.expect("COM_PING is answered");
    conn.reset().await.expect("COM_RESET_CONNECTION");
    assert!(on_replica(&mut conn).await);
}

#[tokio::test]
async fn refusals_use_the_server_error_codes() {
    let (_, proxy, db) = setup("refuse").await;
    let wrong = Conn::new(opts(&proxy, &db).pass(Some("wrong")))
        .await
        .expect_err("wrong password");
    assert!(wrong.to_string().contains("1045"), "{wrong}");
    let unknown = Conn::new(opts(&proxy, "no_such_db"))
        .await
        .expect_err("unknown database");
    assert!(unknown.to_string().contains("1049"), "{unknown}");
    assert!(
        on_replica(&mut connect(&proxy, &db).await).await,
        "the proxy keeps serving"
    );
}

#[tokio::test]
async fn the_mariadb_client_works_unchanged() {
    let (_, proxy, db) = setup("cli").await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("rows.tsv");
    std::fs::write(&data, "1\tone\n2\ttwo\n3\tthree\n").unwrap();
    let sql = format!(
        "CREATE TABLE c (i INT, s TEXT); \
         LOAD DATA LOCAL INFILE '{}' INTO TABLE c; \
         START TRANSACTION; SELECT COUNT(*) FROM c; COMMIT;",
        data.display()
    );
    let out = Command::new("mariadb")
        .args(["-h", "127.0.0.1", "-P", &proxy.addr.port().to_string()])
        .args([
            "-u",
            "app",
            "-papp-secret",
            "--local-infile=1",
            "--batch",
            "--skip-column-names",
            &db,
        ])
        .args(["-e", &sql])
        .output()
        .await
        .expect("run mariadb");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "mariadb failed: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.trim(),
        "3",
        "LOAD DATA LOCAL INFILE loaded every row"
    );
}

async fn sysbench(proxy: &Proxy, db: &str, args: &[&str]) -> String {
    let out = Command::new("sysbench")
        .args(args)
        .args([
            "--db-driver=mysql",
            "--mysql-host=127.0.0.1",
            &format!("--mysql-port={}", proxy.addr.port()),
            "--mysql-user=app",
            "--mysql-password=app-secret",
            &format!("--mysql-db={db}"),
            "--mysql-ssl=off",
            "--tables=1",
            "--table-size=200",
        ])
        .output()
        .await
        .expect("run sysbench");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "sysbench {args:?} failed:\n{text}");
    text
}

#[tokio::test]
async fn sysbench_workloads_run_without_errors() {
    let (cluster, proxy, db) = setup("sysbench").await;
    sysbench(&proxy, &db, &["oltp_read_write", "prepare"]).await;
    cluster.wait_replicated().await;
    // oltp_read_write runs on one thread: with more, its row locks deadlock in the
    // database itself (sysbench counts those as ignored errors), proxy or not.
    for (workload, threads) in [
        ("oltp_point_select", "4"),
        ("oltp_read_only", "4"),
        ("oltp_read_write", "1"),
    ] {
        let threads = format!("--threads={threads}");
        let out = sysbench(
            &proxy,
            &db,
            &[
                workload,
                &threads,
                "--events=200",
                "--time=0",
                "--mysql-ignore-errors=none",
                "run",
            ],
        )
        .await;
        assert!(
            out.contains("ignored errors:                      0"),
            "{workload} reported errors:\n{out}"
        );
    }
}
