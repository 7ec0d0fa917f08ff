//! The MySQL proxy against real MariaDB servers: a primary with two binlog replicas,
//! shared with the other modules of the test binary; each test uses its own database.

mod auth;
mod pool;
mod pooling;
mod wire;

use crate::support;

use mysql_async::prelude::*;
use mysql_async::{Conn, OptsBuilder};
use support::mariadb::MariaCluster;
use support::proxy::{Proxy, in_pool_mode, mysql_config_text, with_readers};
use tokio::process::Command;

async fn setup(prefix: &str) -> (&'static MariaCluster, Proxy, String) {
    let cluster = MariaCluster::shared();
    let db = cluster.create_database(prefix).await;
    let proxy = Proxy::from_config(&mysql_config_text(cluster, "")).await;
    (cluster, proxy, db)
}

/// [`setup`] with sessions in session mode: for what a session holding its connections does.
async fn setup_session_mode(prefix: &str) -> (&'static MariaCluster, Proxy, String) {
    let cluster = MariaCluster::shared();
    let db = cluster.create_database(prefix).await;
    let config = in_pool_mode(&mysql_config_text(cluster, ""), "session");
    (cluster, Proxy::from_config(&config).await, db)
}

/// A client's options through `proxy` as `app`, over TCP only (mysql_async would otherwise
/// move to the Unix socket of the server that answers `@@socket`).
pub(crate) fn opts(proxy: &Proxy, db: &str) -> OptsBuilder {
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
/// Waits until `sql` (a count) answers `want` on `admin`: something the server reaches by
/// itself, such as connections ending or a statement done; fails with `what` after 20 s.
async fn until_answers(admin: &mut Conn, sql: &str, want: i64, what: &str) {
    let mut backoff = support::Backoff::new(std::time::Duration::from_secs(20));
    loop {
        let got: Option<i64> = admin.query_first(sql).await.expect(sql);
        if got == Some(want) {
            return;
        }
        assert!(backoff.wait().await, "{what}: {sql} answers {got:?}");
    }
}

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

/// A MySQL client that sends exactly the bytes a test chooses.
struct RawMysql {
    tcp: tokio::net::TcpStream,
}

impl RawMysql {
    async fn connect(proxy: &Proxy) -> RawMysql {
        let mut c = RawMysql {
            tcp: tokio::net::TcpStream::connect(proxy.addr)
                .await
                .expect("connect raw"),
        };
        let (_, greeting) = c.read_packet().await.expect("greeting");
        assert_eq!(greeting[0], 10, "protocol version 10");
        c
    }

    /// Logs in as `trustuser` (no password) to `db`.
    async fn login(proxy: &Proxy, db: &str) -> RawMysql {
        let mut c = RawMysql::connect(proxy).await;
        // PROTOCOL_41 | SECURE_CONNECTION | PLUGIN_AUTH | CONNECT_WITH_DB
        let caps: u32 = 0x200 | 0x8000 | 0x80000 | 0x8;
        let mut p = caps.to_le_bytes().to_vec();
        p.extend_from_slice(&(16u32 << 20).to_le_bytes());
        p.push(45);
        p.extend_from_slice(&[0; 23]);
        p.extend_from_slice(b"trustuser\0");
        p.push(0);
        p.extend_from_slice(db.as_bytes());
        p.push(0);
        p.extend_from_slice(b"mysql_native_password\0");
        c.send(1, &p).await;
        let (_, ok) = c.read_packet().await.expect("login answer");
        assert_eq!(ok[0], 0, "login OK");
        c
    }

    async fn read_packet(&mut self) -> Option<(u8, Vec<u8>)> {
        use tokio::io::AsyncReadExt;
        let mut head = [0u8; 4];
        self.tcp.read_exact(&mut head).await.ok()?;
        let len = usize::from(head[0]) | usize::from(head[1]) << 8 | usize::from(head[2]) << 16;
        let mut payload = vec![0; len];
        self.tcp.read_exact(&mut payload).await.ok()?;
        Some((head[3], payload))
    }

    async fn send(&mut self, seq: u8, payload: &[u8]) {
        use tokio::io::AsyncWriteExt;
        let len = payload.len() as u32;
        let mut p = vec![len as u8, (len >> 8) as u8, (len >> 16) as u8, seq];
        p.extend_from_slice(payload);
        self.tcp.write_all(&p).await.expect("send packet");
    }

    /// Reads until an ERR packet and returns its error code; `None` if the stream ends first.
    async fn expect_error(&mut self) -> Option<u16> {
        loop {
            let (_, p) = self.read_packet().await?;
            if let [0xFF, lo, hi, ..] = p.as_slice() {
                return Some(u16::from_le_bytes([*lo, *hi]));
            }
        }
    }

    /// True once the proxy has closed the connection. Closing with the client's unread
    /// bytes still queued makes the kernel reset it: that is closed as well.
    async fn closed(&mut self) -> bool {
        use tokio::io::AsyncReadExt;
        let mut rest = Vec::new();
        match self.tcp.read_to_end(&mut rest).await {
            Ok(_) => true,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }
}

#[tokio::test]
async fn bad_clients_get_errors_and_others_are_unaffected() {
    let (_, proxy, db) = setup("bad").await;
    let mut healthy = connect(&proxy, &db).await;

    // Garbage instead of a handshake response.
    let mut c = RawMysql::connect(&proxy).await;
    tokio::io::AsyncWriteExt::write_all(&mut c.tcp, b"GET / HTTP/1.1\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(c.expect_error().await, Some(1043));
    assert!(c.closed().await);

    // A client that says nothing after the greeting is told so when auth_timeout passes.
    let mut c = RawMysql::connect(&proxy).await;
    assert_eq!(c.expect_error().await, Some(1043));
    assert!(c.closed().await);

    // A command with the wrong sequence id.
    let mut c = RawMysql::login(&proxy, &db).await;
    c.send(3, b"\x03SELECT 1").await;
    assert_eq!(c.expect_error().await, Some(1156));
    assert!(c.closed().await);

    // A packet longer than max_message_bytes (1 MiB in the test config).
    let mut c = RawMysql::login(&proxy, &db).await;
    let mut header = vec![0xff, 0xff, 0x3f, 0];
    header.push(3);
    tokio::io::AsyncWriteExt::write_all(&mut c.tcp, &header)
        .await
        .unwrap();
    assert_eq!(c.expect_error().await, Some(1153));
    assert!(c.closed().await);

    // A client that disappears in the middle of a large result.
    let mut c = RawMysql::login(&proxy, &db).await;
    c.send(0, b"\x03SELECT REPEAT('x', 100) FROM seq_1_to_2000000")
        .await;
    c.read_packet().await.expect("first result packet");
    drop(c);

    // An unknown command gets an error and the session goes on.
    let mut c = RawMysql::login(&proxy, &db).await;
    c.send(0, b"\x7f").await;
    assert_eq!(c.expect_error().await, Some(1047));
    c.send(0, b"\x0e").await;
    let (_, ok) = c.read_packet().await.expect("ping answer");
    assert_eq!(ok[0], 0, "COM_PING answered after an error");

    assert!(on_replica(&mut healthy).await);
    assert!(on_replica(&mut connect(&proxy, &db).await).await);
}

#[tokio::test]
async fn tls_and_caching_sha2_on_both_sides() {
    let cluster = MariaCluster::shared();
    let db = cluster.create_database("tls").await;
    let pki = support::pki::make_pki("mysql");
    let tls = format!(
        "tls_cert = \"{}\"\ntls_key = \"{}\"",
        pki.cert.display(),
        pki.key.display()
    );
    // Proxy B in front of MariaDB: offers TLS, `app` logs in with caching_sha2_password.
    let b_config = mysql_config_text(cluster, &tls).replacen(
        "password = \"app-secret\"\n",
        "password = \"app-secret\"\nauth = \"caching_sha2_password\"\n",
        1,
    );
    let b = Proxy::from_config(&b_config).await;
    let mut direct = connect(&b, &db).await;
    assert!(
        on_replica(&mut direct).await,
        "caching_sha2_password client login"
    );

    // Proxy A in front of B: its backend connections use verified TLS and caching_sha2.
    let a_config = format!(
        r#"
[server]
protocol = "mysql"
listen = "127.0.0.1:0"

[[users]]
name = "app"
password = "app-secret"

[clusters.main]
writer = "127.0.0.1:{}"
tls = "verify-full"
ca_file = "{}"

[routing]
active = "main"
# Routing tests check where each read goes: no read-your-writes window.
read_your_writes = "0s"
"#,
        b.addr.port(),
        pki.ca.display()
    );
    let a = Proxy::from_config(&a_config).await;
    let mut chained = connect(&a, &db).await;
    let row: Option<(i64, i64)> = chained
        .query_first("SELECT 1 + 1, @@read_only")
        .await
        .unwrap();
    assert_eq!(
        row,
        Some((2, 1)),
        "through A, TLS to B, and on to a replica"
    );

    // Clients that must use TLS.
    let required = mysql_config_text(cluster, &format!("{tls}\ntls_mode = \"require\""));
    let r = Proxy::from_config(&required).await;
    let mariadb = |ssl: Vec<String>| {
        let port = r.addr.port().to_string();
        let db = db.clone();
        async move {
            Command::new("mariadb")
                .args([
                    "-h",
                    "127.0.0.1",
                    "-P",
                    &port,
                    "-u",
                    "app",
                    "-papp-secret",
                    "--batch",
                    "--skip-column-names",
                ])
                .args(ssl)
                .args([&db, "-e", "SELECT @@read_only"])
                .output()
                .await
                .expect("run mariadb")
        }
    };
    let out = mariadb(vec![
        "--ssl".into(),
        format!("--ssl-ca={}", pki.ca.display()),
        "--ssl-verify-server-cert".into(),
    ])
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1");
    let out = mariadb(vec!["--skip-ssl".into()]).await;
    assert!(!out.status.success(), "a plaintext client is refused");
    assert!(String::from_utf8_lossy(&out.stderr).contains("requires TLS"));
}

#[tokio::test]
async fn packets_of_16_mib_and_more() {
    let cluster = MariaCluster::shared();
    for server in std::iter::once(&cluster.primary).chain(&cluster.replicas) {
        let mut admin = cluster.admin(server).await;
        admin
            .query_drop("SET GLOBAL max_allowed_packet = 67108864")
            .await
            .unwrap();
    }
    let db = cluster.create_database("big").await;
    let config = mysql_config_text(cluster, "").replace(
        "max_message_bytes = 1048576",
        "max_message_bytes = 67108864",
    );
    let proxy = Proxy::from_config(&config).await;
    let mut conn = connect(&proxy, &db).await;
    conn.query_drop("CREATE TABLE big (v LONGTEXT)")
        .await
        .unwrap();
    let value = "0123456789abcdef".repeat((17 << 20) / 16);
    conn.query_drop(format!("INSERT INTO big VALUES ('{value}')"))
        .await
        .expect("a 17 MiB query");
    conn.query_drop("START TRANSACTION").await.unwrap();
    let back: Option<String> = conn
        .query_first("SELECT v FROM big")
        .await
        .expect("a 17 MiB row");
    conn.query_drop("COMMIT").await.unwrap();
    assert_eq!(back.map(|v| v == value), Some(true));
}

#[tokio::test]
async fn sqlx_mysql_prepares_and_reads_from_replicas() {
    use sqlx::Row;
    use sqlx::mysql::MySqlPoolOptions;
    let (_, proxy, db) = setup("sqlx").await;
    let url = format!(
        "mysql://app:app-secret@127.0.0.1:{}/{db}",
        proxy.addr.port()
    );
    let pool = MySqlPoolOptions::new()
        .max_connections(2)
        .connect(&url)
        .await
        .expect("sqlx connects");
    let row = sqlx::query("SELECT CAST(? AS SIGNED) + 1 AS n, @@read_only AS r")
        .bind(41i64)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(row.get::<i64, _>("n"), 42);
    assert_eq!(row.get::<i64, _>("r"), 1);
    sqlx::query("CREATE TABLE sx (i INT)")
        .execute(&pool)
        .await
        .unwrap();
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("INSERT INTO sx VALUES (?)")
        .bind(1i32)
        .execute(&mut *tx)
        .await
        .unwrap();
    let r: i64 = sqlx::query_scalar("SELECT @@read_only")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(r, 0, "sqlx transaction on the primary");
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn change_user_reauthenticates_and_resets_the_session() {
    use mysql_async::ChangeUserOpts;
    let (cluster, proxy, db) = setup("changeuser").await;
    let other = cluster.create_database("changeuser_other").await;
    let mut conn = connect(&proxy, &db).await;
    conn.query_drop("SET @marker = 42").await.unwrap();
    let opts = ChangeUserOpts::default()
        .with_user(Some("app2".into()))
        .with_pass(Some("app2-secret".into()))
        .with_db_name(Some(other.clone()));
    conn.change_user(opts)
        .await
        .expect("COM_CHANGE_USER to app2");
    let row: Option<(Option<i64>, String, i64)> = conn
        .query_first("SELECT @marker, DATABASE(), @@read_only")
        .await
        .unwrap();
    assert_eq!(
        row,
        Some((None, other, 1)),
        "state reset, new schema, reads on a replica"
    );

    let wrong = ChangeUserOpts::default()
        .with_user(Some("app2".into()))
        .with_pass(Some("nope".into()));
    let err = conn.change_user(wrong).await.expect_err("wrong password");
    assert!(err.to_string().contains("1045"), "{err}");
}

impl RawMysql {
    /// Reads one response to the end: OK, ERR, or a result set up to its closing EOF (this
    /// client does not ask for CLIENT_DEPRECATE_EOF). Returns every packet.
    async fn read_response(&mut self) -> Vec<Vec<u8>> {
        let mut packets = Vec::new();
        let mut eofs = 0;
        loop {
            let (_, p) = self.read_packet().await.expect("response packet");
            let first = p.as_slice().first().copied();
            packets.push(p);
            match first {
                Some(0x00 | 0xFF) if packets.len() == 1 => return packets,
                Some(0xFE) if packets.last().is_some_and(|p| p.len() < 9) => {
                    eofs += 1;
                    // After the column definitions, then after the rows; a cursor sends
                    // only the first one (with SERVER_STATUS_CURSOR_EXISTS, 0x40).
                    let status = packets
                        .last()
                        .map_or(0, |p| u16::from_le_bytes([p[3], p[4]]));
                    if eofs == 2 || status & 0x40 != 0 {
                        return packets;
                    }
                }
                _ => {}
            }
        }
    }
}

fn stmt_packet(command: u8, id: u32, tail: &[u8]) -> Vec<u8> {
    let mut p = vec![command];
    p.extend_from_slice(&id.to_le_bytes());
    p.extend_from_slice(tail);
    p
}

#[tokio::test]
async fn long_data_reset_and_cursor_fetch() {
    let (_, proxy, db) = setup("cursor").await;
    let mut c = RawMysql::login(&proxy, &db).await;

    // PREPARE → prepare-OK (id, 0 columns, 1 param), the param definition and its EOF.
    c.send(0, b"\x16SELECT CONCAT(?, '!')").await;
    let (_, ok) = c.read_packet().await.expect("prepare OK");
    assert_eq!(ok[0], 0);
    let id = u32::from_le_bytes([ok[1], ok[2], ok[3], ok[4]]);
    let params = u16::from_le_bytes([ok[7], ok[8]]);
    assert_eq!(params, 1);
    let columns = u16::from_le_bytes([ok[5], ok[6]]);
    for _ in 0..(params + 1 + if columns > 0 { columns + 1 } else { 0 }) {
        c.read_packet().await.expect("definitions");
    }

    // SEND_LONG_DATA has no answer; the EXECUTE that follows uses the data.
    c.send(0, &stmt_packet(0x18, id, b"\x00\x00long value"))
        .await;
    // flags 0, iterations 1, null bitmap 0, new-params-bound 1, type VAR_STRING
    c.send(0, &stmt_packet(0x17, id, &[0, 1, 0, 0, 0, 0, 1, 0xfd, 0]))
        .await;
    let result = c.read_response().await;
    let row = result
        .iter()
        .find(|p| p.as_slice().first() == Some(&0x00) && p.len() > 2)
        .expect("a row");
    assert!(
        String::from_utf8_lossy(row).contains("long value!"),
        "{row:?}"
    );

    // RESET answers OK; CLOSE has no answer.
    c.send(0, &stmt_packet(0x1a, id, b"")).await;
    assert_eq!(c.read_response().await[0][0], 0x00);
    c.send(0, &stmt_packet(0x19, id, b"")).await;

    // A read-only cursor: EXECUTE opens it, FETCH reads rows in batches.
    c.send(0, b"\x16SELECT seq FROM seq_1_to_10").await;
    let (_, ok) = c.read_packet().await.expect("prepare OK");
    let id = u32::from_le_bytes([ok[1], ok[2], ok[3], ok[4]]);
    let columns = u16::from_le_bytes([ok[5], ok[6]]);
    for _ in 0..columns + 1 {
        c.read_packet().await.expect("definitions");
    }
    c.send(0, &stmt_packet(0x17, id, &[1, 1, 0, 0, 0])).await;
    let opened = c.read_response().await;
    let eof = opened.last().expect("EOF");
    assert_ne!(
        u16::from_le_bytes([eof[3], eof[4]]) & 0x40,
        0,
        "cursor exists"
    );
    c.send(0, &stmt_packet(0x1c, id, &4u32.to_le_bytes())).await;
    let mut fetched = 0;
    loop {
        let (_, p) = c.read_packet().await.expect("fetched row");
        if p[0] == 0xFE && p.len() < 9 {
            break;
        }
        fetched += 1;
    }
    assert_eq!(
        fetched, 4,
        "FETCH returned the rows asked for, from the backend that holds the cursor"
    );
    c.send(0, b"\x0e").await;
    assert_eq!(c.read_packet().await.expect("ping").1[0], 0x00);
}

#[tokio::test]
async fn field_list_statistics_and_set_option() {
    let (cluster, proxy, db) = setup("commands").await;
    let mut conn = connect(&proxy, &db).await;
    conn.query_drop("CREATE TABLE f (a INT, b TEXT)")
        .await
        .unwrap();
    cluster.wait_replicated().await;
    let mut c = RawMysql::login(&proxy, &db).await;

    // COM_FIELD_LIST: one definition per column, then EOF.
    c.send(0, b"\x04f\0").await;
    let mut columns = 0;
    loop {
        let (_, p) = c.read_packet().await.expect("field list");
        if p[0] == 0xFE && p.len() < 9 {
            break;
        }
        columns += 1;
    }
    assert_eq!(columns, 2);

    // COM_STATISTICS: one human-readable string.
    c.send(0, b"\x09").await;
    let (_, stats) = c.read_packet().await.expect("statistics");
    assert!(
        String::from_utf8_lossy(&stats).contains("Uptime"),
        "{stats:?}"
    );

    // COM_SET_OPTION: multi-statements on, then a multi-statement query works.
    c.send(0, b"\x1b\x00\x00").await;
    let (_, answer) = c.read_packet().await.expect("set option");
    assert!(matches!(answer[0], 0x00 | 0xFE), "{answer:?}");
    c.send(0, b"\x03SELECT 1; SELECT 2").await;
    let first = c.read_response().await;
    let eof = first.last().expect("EOF");
    assert_ne!(
        u16::from_le_bytes([eof[3], eof[4]]) & 0x08,
        0,
        "more results follow"
    );
    let second = c.read_response().await;
    assert!(second.len() >= 3, "second result set");
}

#[tokio::test]
async fn read_only_mode_refuses_writes_with_1290_and_1792() {
    let (_, proxy, db) = setup("readonly").await;
    let mut conn = connect(&proxy, &db).await;
    conn.query_drop("CREATE TABLE ro (i INT)").await.unwrap();
    proxy.read_only(true).await;
    let err = conn
        .query_drop("INSERT INTO ro VALUES (1)")
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("1290"), "{err}");
    assert!(
        err.to_string()
            .contains("read-only for a database migration"),
        "{err}"
    );
    let err = conn
        .exec_drop("INSERT INTO ro VALUES (?)", (1,))
        .await
        .expect_err("refused");
    assert!(
        err.to_string().contains("1290"),
        "prepared writes too: {err}"
    );
    assert!(on_replica(&mut conn).await, "reads keep working");
    conn.query_drop("START TRANSACTION").await.unwrap();
    let err = conn
        .query_drop("INSERT INTO ro VALUES (2)")
        .await
        .expect_err("read-only transaction");
    assert!(err.to_string().contains("1792"), "{err}");
    conn.query_drop("ROLLBACK").await.unwrap();
    proxy.read_only(false).await;
    conn.query_drop("INSERT INTO ro VALUES (3)")
        .await
        .expect("writes again");
}

#[tokio::test]
async fn a_reader_that_dies_costs_the_client_nothing() {
    let cluster = MariaCluster::shared();
    let db = cluster.create_database("deadreplica").await;
    let replica = &cluster.replicas[0];
    let relay = support::fault::Relay::start(
        format!("{}:{}", replica.host, replica.port)
            .parse()
            .unwrap(),
    )
    .await;
    // Sessions holding a reader connection that dies.
    let base = in_pool_mode(&mysql_config_text(cluster, ""), "session");
    let config = with_readers(&base, &[relay.addr.to_string()]);
    let proxy = Proxy::from_config(&config).await;
    let mut conn = connect(&proxy, &db).await;
    assert!(
        on_replica(&mut conn).await,
        "reads go through the relay to the replica"
    );
    let warm: Option<i64> = conn.exec_first("SELECT ? + 1", (1,)).await.unwrap();
    assert_eq!(warm, Some(2));
    relay.cut();
    // The reader connection is gone: the next reads are retried on the primary.
    let answer: Option<i64> = conn
        .exec_first("SELECT ? + 1", (41,))
        .await
        .expect("a prepared read after the cut");
    assert_eq!(answer, Some(42));
    for _ in 0..3 {
        let one: Option<i64> = conn
            .query_first("SELECT 1")
            .await
            .expect("a read after the cut");
        assert_eq!(one, Some(1));
    }

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
    let mut behind_relay = None;
    for _ in 0..30 {
        let mut conn = connect(&proxy, &db).await;
        let port: Option<i64> = conn.query_first("SELECT @@port").await.unwrap();
        if port == Some(i64::from(replica.port)) {
            behind_relay = Some(conn);
            break;
        }
    }
    let mut conn = behind_relay.expect("a session whose reader is behind the relay");
    relay.cut();
    let row: Option<(i64, i64)> = conn
        .query_first("SELECT @@port, @@read_only")
        .await
        .expect("a read after the cut");
    assert_eq!(
        row,
        Some((i64::from(other.port), 1)),
        "retried on the other replica, not the primary"
    );
}

#[tokio::test]
async fn a_session_reads_its_own_writes_from_the_primary() {
    let cluster = MariaCluster::shared();
    let db = cluster.create_database("ryw").await;
    let config = mysql_config_text(cluster, "")
        .replace("read_your_writes = \"0s\"", "read_your_writes = \"1h\"");
    let proxy = Proxy::from_config(&config).await;
    let mut writer_session = connect(&proxy, &db).await;
    let mut other_session = connect(&proxy, &db).await;
    assert!(on_replica(&mut writer_session).await);
    writer_session
        .query_drop("CREATE TABLE ryw (i INT)")
        .await
        .unwrap();
    writer_session
        .exec_drop("INSERT INTO ryw VALUES (?)", (1,))
        .await
        .unwrap();
    assert!(
        !on_replica(&mut writer_session).await,
        "reads follow the session's own write"
    );
    let n: Option<i64> = writer_session
        .query_first("SELECT COUNT(*) FROM ryw")
        .await
        .unwrap();
    assert_eq!(n, Some(1));
    assert!(
        on_replica(&mut other_session).await,
        "other sessions keep reading from replicas"
    );
}

/// Statements about the server itself (its threads, status, `CONNECTION_ID()`) run on the
/// session's own writer connection.
#[tokio::test]
async fn statements_about_the_node_run_on_the_session_writer() {
    let (_, proxy, db) = setup("node_state").await;
    let mut conn = connect(&proxy, &db).await;
    let id: Option<u64> = conn.query_first("SELECT CONNECTION_ID()").await.unwrap();
    conn.query_drop("START TRANSACTION").await.unwrap();
    let in_transaction: Option<u64> = conn.query_first("SELECT CONNECTION_ID()").await.unwrap();
    conn.query_drop("COMMIT").await.unwrap();
    assert_eq!(
        id, in_transaction,
        "CONNECTION_ID() is the writer connection's"
    );
    // The class, not single statements: each of these ran on a replica before.
    for sql in [
        "SELECT @@read_only FROM information_schema.PROCESSLIST WHERE ID = CONNECTION_ID()",
        "SELECT @@read_only + 0 * COUNT(*) FROM information_schema.INNODB_TRX",
        "SELECT @@read_only + 0 * COUNT(*) FROM performance_schema.setup_instruments",
    ] {
        let ro: Option<i64> = conn
            .query_first(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        assert_eq!(ro, Some(0), "{sql} runs on the primary");
    }
    let processes: Vec<mysql_async::Row> = conn.query("SHOW PROCESSLIST").await.unwrap();
    let mine = processes
        .iter()
        .any(|row| row.get::<Option<u64>, _>("Id").flatten() == id);
    assert!(
        mine,
        "SHOW PROCESSLIST lists this session's writer connection"
    );
    assert!(
        on_replica(&mut conn).await,
        "other reads still go to replicas"
    );
}

/// `SELECT f()` of a stored function: one that modifies data (`MODIFIES SQL DATA`, even
/// declared `DETERMINISTIC`) runs on the primary, from the first call and once the catalog
/// is loaded; a `READS SQL DATA` one runs on a replica once the catalog is loaded.
#[tokio::test]
async fn stored_functions_that_modify_data_run_on_the_primary() {
    let (cluster, proxy, db) = setup("functions").await;
    let mut conn = connect(&proxy, &db).await;
    for ddl in [
        "CREATE TABLE calls (n INT)",
        "CREATE FUNCTION record_call() RETURNS INT DETERMINISTIC MODIFIES SQL DATA \
         BEGIN INSERT INTO calls VALUES (1); RETURN (SELECT COUNT(*) FROM calls); END",
        "CREATE FUNCTION where_am_i() RETURNS INT READS SQL DATA RETURN @@read_only",
    ] {
        conn.query_drop(ddl)
            .await
            .unwrap_or_else(|e| panic!("{ddl}: {e}"));
    }
    cluster.wait_replicated().await;
    let first: Option<i64> = conn
        .query_first("SELECT record_call()")
        .await
        .expect("a writing function's first call");
    assert_eq!(first, Some(1));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let ro: Option<i64> = conn.query_first("SELECT where_am_i()").await.unwrap();
        if ro == Some(1) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "a READS SQL DATA function never reached a replica"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    for expected in 2..5i64 {
        let n: Option<i64> = conn
            .query_first("SELECT record_call()")
            .await
            .expect("a writing function after the catalog loaded");
        assert_eq!(n, Some(expected));
    }
    let n: Option<i64> = conn
        .exec_first(format!("SELECT `{db}`.record_call() + ?"), (0,))
        .await
        .expect("a prepared call");
    assert_eq!(n, Some(5));
}

/// A client that sends its statement, then COM_QUIT, and closes at once (fire and forget)
/// gets what a server gives it: the statement runs to its end (only a client that vanishes
/// without a goodbye has its statement killed).
#[tokio::test]
async fn a_statement_whose_client_said_goodbye_runs_to_its_end() {
    let (cluster, proxy, db) = setup("goodbye").await;
    let mut admin = cluster.admin(&cluster.primary).await;
    admin
        .query_drop(format!("CREATE TABLE `{db}`.said_bye (v INT)"))
        .await
        .expect("table");
    let mut raw = RawMysql::login(&proxy, &db).await;
    raw.send(0, b"\x03INSERT INTO said_bye SELECT SLEEP(1)")
        .await;
    raw.send(0, b"\x01").await;
    drop(raw);
    let count = format!("SELECT COUNT(*) FROM `{db}`.said_bye");
    until_answers(&mut admin, &count, 1, "the statement ran to its end").await;
}
