//! What a MySQL client learns of the server through the proxy: the greeting (the writer's
//! version, collation and connection id), compression, the connection limit, how a killed
//! server connection ends the client's, and `KILL [QUERY]` of a client through the proxy
//! (writer or reader), each with the client that showed the defect.

use std::net::SocketAddr;
use std::time::Duration;

use mysql_async::prelude::*;
use mysql_async::{Conn, OptsBuilder};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use switchyard::protocol::mysql::constants::CapabilityFlags;
use switchyard::protocol::mysql::handshake::{ServerGreeting, parse_greeting};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::support::mariadb::{MariaCluster, MariaServer};
use super::support::proxy::{Proxy, mysql_config_text};
use super::{connect, opts, setup};

/// The greeting a server (or the proxy) at `addr` sends a new connection.
async fn greeting(addr: SocketAddr) -> ServerGreeting {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut head = [0u8; 4];
    tcp.read_exact(&mut head).await.expect("greeting header");
    let len = usize::from(head[0]) | usize::from(head[1]) << 8 | usize::from(head[2]) << 16;
    let mut payload = vec![0; len];
    tcp.read_exact(&mut payload).await.expect("greeting");
    parse_greeting(&payload).expect("a greeting")
}

fn addr(server: &MariaServer) -> SocketAddr {
    format!("{}:{}", server.host, server.port)
        .parse()
        .expect("server address")
}

#[tokio::test]
async fn the_greeting_is_the_writers_version_collation_and_connection_id() {
    // Session mode: the client is greeted by its own writer connection.
    let (cluster, proxy, db) = super::setup_session_mode("greeting").await;
    let direct = greeting(addr(&cluster.primary)).await;
    let through = greeting(proxy.addr).await;
    assert_eq!(through.server_version, direct.server_version);
    assert_eq!(
        through.charset, direct.charset,
        "the writer's default collation"
    );
    let own = CapabilityFlags::CLIENT_COMPRESS | CapabilityFlags::CLIENT_SSL;
    assert!(
        (through.capabilities - own)
            .difference(direct.capabilities)
            .is_empty(),
        "no capability the writer lacks: {:?}",
        through.capabilities - own - direct.capabilities
    );
    let mut primary = cluster.admin(&cluster.primary).await;
    let version: Option<String> = primary.query_first("SELECT VERSION()").await.unwrap();
    let version = version.expect("a version");
    assert_eq!(
        through.server_version.trim_start_matches("5.5.5-"),
        version,
        "the greeting carries the writer's version (MariaDB prefixes 5.5.5- for old clients)"
    );

    let mut conn = connect(&proxy, &db).await;
    let id: Option<u32> = conn
        .query_first("SELECT /* switchyard:writer */ CONNECTION_ID()")
        .await
        .unwrap();
    assert_eq!(
        id,
        Some(conn.id()),
        "the greeting's connection id is the writer connection's"
    );
}

/// Waits until the primary runs `text` on connection `id` (a readiness check, not a delay).
async fn until_running(primary: &mut Conn, id: u32, text: &str) {
    let sql = format!(
        "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = {id} AND INFO LIKE '%{text}%'"
    );
    for _ in 0..500 {
        let n: Option<i64> = primary.query_first(&sql).await.unwrap();
        if n == Some(1) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("connection {id} never ran {text}");
}

#[tokio::test]
async fn kill_query_through_the_proxy_interrupts_that_clients_query() {
    let (cluster, proxy, db) = setup("killquery").await;
    let mut sleeper = connect(&proxy, &db).await;
    let id = sleeper.id();
    let running = tokio::spawn(async move {
        let answer: Result<Option<i64>, _> = sleeper
            .query_first("SELECT /* switchyard:writer */ SLEEP(30)")
            .await;
        (sleeper, answer)
    });
    let mut primary = cluster.admin(&cluster.primary).await;
    until_running(&mut primary, id, "SLEEP(30)").await;
    kill_query(
        &proxy,
        &db,
        id,
        "KILL QUERY of the client's own connection id",
    )
    .await;
    let (mut sleeper, answer) = running.await.unwrap();
    assert_interrupted(answer, "SLEEP was interrupted");
    let one: Option<i64> = sleeper.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1), "the client's session goes on");
}

/// What a client sees when its connection is killed: idle (`KILL` then a statement), or
/// while a statement runs. `killer` runs the KILL; `victim` is the connection killed.
async fn killed(mut victim: Conn, killer: &mut Conn, running: bool) -> String {
    let id = victim.id();
    let err = if running {
        let statement = tokio::spawn(async move {
            let err = victim
                .query_drop("SELECT /* switchyard:writer */ SLEEP(30)")
                .await
                .expect_err("the connection was killed under its statement");
            (victim, err)
        });
        let mut primary = MariaCluster::shared()
            .admin(&MariaCluster::shared().primary)
            .await;
        until_running(&mut primary, id, "SLEEP(30)").await;
        killer.query_drop(format!("KILL {id}")).await.expect("KILL");
        let (v, err) = statement.await.unwrap();
        victim = v;
        err
    } else {
        killer.query_drop(format!("KILL {id}")).await.expect("KILL");
        victim
            .query_drop("INSERT INTO k VALUES (1)")
            .await
            .expect_err("the connection was killed")
    };
    assert!(
        victim.query_drop("SELECT 1").await.is_err(),
        "the connection is closed after: {err}"
    );
    outcome(&err)
}

/// What a client can tell of a failure: the server's error code, or that the connection
/// ended (closed, or reset by the kernel when the client wrote into a socket the server had
/// closed: which of the two is a race).
fn outcome(err: &mysql_async::Error) -> String {
    match err {
        mysql_async::Error::Server(e) => format!("server error {}: {}", e.code, e.message),
        mysql_async::Error::Io(_) => "connection ended".into(),
        other => format!("other: {other}"),
    }
}

#[tokio::test]
async fn a_killed_server_connection_ends_the_client_connection_as_the_server_would() {
    // Session mode: the client holds its server connection, which the server kills.
    let (cluster, proxy, db) = super::setup_session_mode("killconn").await;
    let direct_opts = cluster
        .primary
        .opts(super::support::mariadb::APP, Some(&db));
    let mut setup_conn = connect(&proxy, &db).await;
    setup_conn
        .query_drop("CREATE TABLE k (i INT)")
        .await
        .unwrap();
    for running in [false, true] {
        let mut killer = connect(&proxy, &db).await;
        let victim = connect(&proxy, &db).await;
        let through = killed(victim, &mut killer, running).await;
        let mut killer = Conn::new(direct_opts.clone()).await.unwrap();
        let victim = Conn::new(direct_opts.clone()).await.unwrap();
        let direct = killed(victim, &mut killer, running).await;
        assert_eq!(
            through,
            direct,
            "killed {}: the proxy's client sees what the server's does",
            if running { "while running" } else { "idle" }
        );
        assert!(!through.contains("failover"), "{through}");
    }
    let mut next = connect(&proxy, &db).await;
    next.query_drop("INSERT INTO k VALUES (2)")
        .await
        .expect("other sessions go on");
}

#[tokio::test]
async fn a_connection_the_server_timed_out_ends_the_client_connection_as_the_server_would() {
    let (cluster, proxy, db) = super::setup_session_mode("waittimeout").await;
    let direct = cluster
        .primary
        .opts(super::support::mariadb::APP, Some(&db));
    let mut primary = cluster.admin(&cluster.primary).await;
    let mut seen = Vec::new();
    for mut victim in [connect(&proxy, &db).await, Conn::new(direct).await.unwrap()] {
        let id = victim.id();
        victim
            .query_drop("SET SESSION wait_timeout = 1")
            .await
            .unwrap();
        // Wait until the server has closed the connection (a readiness check).
        let sql = format!("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = {id}");
        for _ in 0..500 {
            let n: Option<i64> = primary.query_first(&sql).await.unwrap();
            if n == Some(0) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let err = victim
            .query_drop("SELECT /* switchyard:writer */ 1")
            .await
            .expect_err("the server closed the connection");
        assert!(
            victim.query_drop("SELECT 1").await.is_err(),
            "closed: {err}"
        );
        seen.push(outcome(&err));
    }
    assert_eq!(
        seen[0], seen[1],
        "the proxy's client sees what the server's does"
    );
}

#[tokio::test]
async fn a_client_over_max_client_connections_gets_1040() {
    let cluster = MariaCluster::shared();
    let db = cluster.create_database("limit").await;
    let config = mysql_config_text(cluster, "max_client_connections = 1");
    let proxy = Proxy::from_config(&config).await;
    let _first = connect(&proxy, &db).await;
    let err = Conn::new(opts(&proxy, &db))
        .await
        .expect_err("a second client is over the limit");
    assert!(err.to_string().contains("1040"), "{err}");
}

/// Rows of `width` bytes, enough of them that the result spans many packets.
const WIDE: &str = "SELECT REPEAT(CHAR(65 + seq % 26), 1000) FROM seq_1_to_3000";

/// A relay in front of the proxy that counts the bytes it passes to the client.
struct Counting {
    addr: SocketAddr,
    to_client: Arc<AtomicU64>,
}

impl Counting {
    async fn start(target: SocketAddr) -> Counting {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let to_client = Arc::new(AtomicU64::new(0));
        let count = Arc::clone(&to_client);
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let Ok(outbound) = tokio::net::TcpStream::connect(target).await else {
                    return;
                };
                let (mut client_read, mut client_write) = inbound.into_split();
                let (mut proxy_read, mut proxy_write) = outbound.into_split();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut client_read, &mut proxy_write).await;
                });
                let count = Arc::clone(&count);
                tokio::spawn(async move {
                    let mut buf = vec![0; 64 * 1024];
                    while let Ok(n @ 1..) = proxy_read.read(&mut buf).await {
                        count.fetch_add(n as u64, Ordering::Relaxed);
                        if client_write.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        Counting { addr, to_client }
    }
}

#[tokio::test]
async fn compressing_clients_are_served_compressed() {
    let (_, proxy, db) = setup("compress").await;
    let relay = Counting::start(proxy.addr).await;
    for level in [
        mysql_async::Compression::fast(),
        mysql_async::Compression::best(),
    ] {
        let opts: OptsBuilder = opts(&proxy, &db)
            .tcp_port(relay.addr.port())
            .compression(Some(level));
        let mut conn = Conn::new(opts).await.expect("a compressing client logs in");
        let before = relay.to_client.load(Ordering::Relaxed);
        let rows: Vec<String> = conn.query(WIDE).await.expect("a large result, compressed");
        assert_eq!(rows.len(), 3000);
        assert!(rows.iter().all(|r| r.len() == 1000));
        let sent = relay.to_client.load(Ordering::Relaxed) - before;
        assert!(
            sent < 300_000,
            "3 MB of rows reached the client in {sent} bytes"
        );
        let big = "x".repeat(200_000);
        let echoed: Option<String> = conn
            .exec_first("SELECT ?", (big.clone(),))
            .await
            .expect("a large parameter, compressed");
        assert_eq!(echoed.as_deref(), Some(big.as_str()));
        conn.query_drop("CREATE TABLE IF NOT EXISTS c (s LONGTEXT)")
            .await
            .unwrap();
        conn.exec_drop("INSERT INTO c VALUES (?)", (big,))
            .await
            .unwrap();
        let mut results = conn
            .query_iter(
                "SELECT /* switchyard:writer */ 1; SELECT LENGTH(s) FROM c LIMIT 1; SELECT 3",
            )
            .await
            .expect("several result sets, compressed");
        let counts: Vec<i64> = results.collect().await.unwrap();
        let lengths: Vec<i64> = results.collect().await.unwrap();
        let last: Vec<i64> = results.collect().await.unwrap();
        assert_eq!((counts, lengths, last), (vec![1], vec![200_000], vec![3]));
    }
}

#[tokio::test]
async fn a_client_asking_for_zstd_is_refused_at_once() {
    let (_, proxy, db) = setup("zstd").await;
    let mut c = super::RawMysql::connect(&proxy).await;
    // PROTOCOL_41 | SECURE_CONNECTION | PLUGIN_AUTH | CONNECT_WITH_DB | ZSTD
    let caps: u32 = 0x200 | 0x8000 | 0x80000 | 0x8 | 0x0400_0000;
    let mut p = caps.to_le_bytes().to_vec();
    p.extend_from_slice(&(16u32 << 20).to_le_bytes());
    p.push(45);
    p.extend_from_slice(&[0; 23]);
    p.extend_from_slice(b"trustuser\0\0");
    p.extend_from_slice(db.as_bytes());
    p.extend_from_slice(b"\0mysql_native_password\0");
    c.send(1, &p).await;
    let (_, err) = c.read_packet().await.expect("an answer, not a hang");
    assert_eq!(&err[..3], &[0xFF, 0x13, 0x04], "ERR 1043");
    assert!(String::from_utf8_lossy(&err).contains("zstd"));
    assert!(c.closed().await);
}

#[tokio::test]
async fn the_mariadb_client_compresses() {
    let (_, proxy, db) = setup("compresscli").await;
    let relay = Counting::start(proxy.addr).await;
    let out = tokio::process::Command::new("mariadb")
        .args(["-h", "127.0.0.1", "-P", &relay.addr.port().to_string()])
        .args(["-u", "app", "-papp-secret", "--compress", "--batch"])
        .args(["--skip-column-names", &db])
        .args(["-e", WIDE])
        .output()
        .await
        .expect("run mariadb");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "mariadb --compress failed: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3000);
    assert!(lines.iter().all(|l| l.len() == 1000));
    let sent = relay.to_client.load(Ordering::Relaxed);
    assert!(
        sent < 300_000,
        "3 MB of rows reached the client in {sent} bytes"
    );

    // LOAD DATA LOCAL INFILE: the client's file travels compressed too.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("rows.tsv");
    let rows: String = (0..5000)
        .map(|i| format!("{i}\t{}\n", "y".repeat(100)))
        .collect();
    std::fs::write(&data, rows).unwrap();
    let sql = format!(
        "CREATE TABLE f (i INT, s TEXT); LOAD DATA LOCAL INFILE '{}' INTO TABLE f; \
         SELECT /* switchyard:writer */ COUNT(*), SUM(LENGTH(s)) FROM f",
        data.display()
    );
    let out = tokio::process::Command::new("mariadb")
        .args(["-h", "127.0.0.1", "-P", &relay.addr.port().to_string()])
        .args(["-u", "app", "-papp-secret", "--compress", "--batch"])
        // --comments: the client strips the routing hint otherwise.
        .args(["--comments", "--local-infile=1", "--skip-column-names", &db])
        .args(["-e", &sql])
        .output()
        .await
        .expect("run mariadb");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "LOAD DATA LOCAL INFILE with --compress failed: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.trim(), "5000\t500000");
}

#[tokio::test]
async fn mysql_connector_python_connects_to_mariadb_through_the_proxy() {
    let (_, proxy, db) = setup("connpy").await;
    let script = r#"
import sys
import mysql.connector
port, db = int(sys.argv[1]), sys.argv[2]
conn = mysql.connector.connect(host="127.0.0.1", port=port, user="app",
                               password="app-secret", database=db)
cur = conn.cursor()
cur.execute("CREATE TABLE t (s VARCHAR(20))")
cur.execute("INSERT INTO t VALUES (%s)", ("ünïcode",))
conn.commit()
cur.execute("SELECT /* switchyard:writer */ s, @@collation_connection FROM t")
print(cur.fetchall())
conn.close()
# The compressed protocol, with a result of many packets.
conn = mysql.connector.connect(host="127.0.0.1", port=port, user="app",
                               password="app-secret", database=db, compress=True)
cur = conn.cursor()
cur.execute("SELECT REPEAT(CHAR(65 + seq % 26), 1000) FROM seq_1_to_3000")
rows = cur.fetchall()
print("compressed rows:", len(rows), sum(len(r[0]) for r in rows))
conn.close()
"#;
    let out = tokio::process::Command::new("python3")
        .args(["-c", script, &proxy.addr.port().to_string(), &db])
        .output()
        .await
        .expect("run python3 (scripts/install-deps.sh installs mysql-connector-python)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "Connector/Python failed: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("ünïcode"), "{stdout}");
    assert!(stdout.contains("compressed rows: 3000 3000000"), "{stdout}");
}

/// Waits until one of the replicas runs a statement containing `text`; returns its index.
async fn until_running_on_a_replica(cluster: &MariaCluster, text: &str) -> usize {
    let sql = format!(
        "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO LIKE '%{text}%' \
         AND INFO NOT LIKE '%PROCESSLIST%'"
    );
    let mut replicas = Vec::new();
    for replica in &cluster.replicas {
        replicas.push(cluster.admin(replica).await);
    }
    for _ in 0..500 {
        for (i, replica) in replicas.iter_mut().enumerate() {
            let n: Option<i64> = replica.query_first(&sql).await.unwrap();
            if n == Some(1) {
                return i;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no replica ever ran {text}");
}

/// Runs `sql` (a SLEEP) on `conn` in a task, handing back the connection and its answer.
fn spawn_query(
    mut conn: Conn,
    sql: &'static str,
) -> tokio::task::JoinHandle<(Conn, Result<Option<i64>, mysql_async::Error>)> {
    tokio::spawn(async move {
        let answer = conn.query_first(sql).await;
        (conn, answer)
    })
}

#[tokio::test]
async fn kill_query_reaches_a_read_running_on_a_replica() {
    let (cluster, proxy, db) = setup("killreader").await;
    let mut sleeper = connect(&proxy, &db).await;
    assert!(
        super::on_replica(&mut sleeper).await,
        "reads go to a replica"
    );
    let id = sleeper.id();
    let mut bystander = connect(&proxy, &db).await;
    assert!(super::on_replica(&mut bystander).await);
    let running = spawn_query(sleeper, "SELECT SLEEP(30) AS victim");
    let untouched = spawn_query(bystander, "SELECT SLEEP(3) AS bystander");
    until_running_on_a_replica(cluster, "SLEEP(30) AS victim").await;
    until_running_on_a_replica(cluster, "SLEEP(3) AS bystander").await;
    kill_query(
        &proxy,
        &db,
        id,
        "KILL QUERY of the client's own connection id",
    )
    .await;
    let (mut sleeper, answer) = running.await.unwrap();
    assert_interrupted(answer, "SLEEP on the replica was interrupted");
    let (_, other) = untouched.await.unwrap();
    assert_eq!(
        other.unwrap(),
        Some(0),
        "another client's sleep ran to its end"
    );
    let one: Option<i64> = sleeper.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1), "the client's session goes on");
    kill_query(
        &proxy,
        &db,
        id,
        "KILL QUERY of an idle client is a no-op, as on a server",
    )
    .await;
    let one: Option<i64> = sleeper.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1), "and its next statement runs");
}

#[tokio::test]
async fn kill_query_by_connection_id_after_change_user() {
    // Session mode: CONNECTION_ID() names the client's own writer connection.
    let (cluster, proxy, db) = super::setup_session_mode("killchange").await;
    let mut sleeper = connect(&proxy, &db).await;
    let change = mysql_async::ChangeUserOpts::default()
        .with_user(Some("app2".into()))
        .with_pass(Some("app2-secret".into()))
        .with_db_name(Some(db.clone()));
    sleeper.change_user(change).await.expect("COM_CHANGE_USER");
    // What a driver that asks the server for the id before its statement learns.
    let id: Option<u32> = sleeper.query_first("SELECT CONNECTION_ID()").await.unwrap();
    let id = id.expect("an id");
    assert_ne!(
        id,
        sleeper.id(),
        "a new writer connection after COM_CHANGE_USER"
    );
    assert!(super::on_replica(&mut sleeper).await);
    let running = spawn_query(sleeper, "SELECT SLEEP(30) AS after_change");
    until_running_on_a_replica(cluster, "SLEEP(30) AS after_change").await;
    kill_query(&proxy, &db, id, "KILL QUERY by the writer connection's id").await;
    let (_, answer) = running.await.unwrap();
    assert_interrupted(answer, "SLEEP on the replica was interrupted");
}

#[tokio::test]
async fn kill_of_a_proxy_client_ends_that_client_and_no_other() {
    let (cluster, proxy, db) = setup("killclient").await;
    let mut killer = connect(&proxy, &db).await;
    let mut bystander = connect(&proxy, &db).await;
    assert!(super::on_replica(&mut bystander).await);

    // Idle, with a reader connection: its next read must fail as against a server.
    let mut idle = connect(&proxy, &db).await;
    assert!(super::on_replica(&mut idle).await, "reads go to a replica");
    killer
        .query_drop(format!("KILL {}", idle.id()))
        .await
        .expect("KILL of a proxy client");
    let err = idle
        .query_drop("SELECT 1")
        .await
        .expect_err("a killed client's next statement fails");
    let seen = outcome(&err);
    assert!(
        seen.contains("1927") || seen == "connection ended",
        "{seen}"
    );

    // Running a read on a replica: the read ends, and so does the connection.
    let mut busy = connect(&proxy, &db).await;
    assert!(super::on_replica(&mut busy).await);
    let id = busy.id();
    let running = spawn_query(busy, "SELECT SLEEP(30) AS killed_conn");
    until_running_on_a_replica(cluster, "SLEEP(30) AS killed_conn").await;
    killer
        .query_drop(format!("KILL CONNECTION {id}"))
        .await
        .expect("KILL CONNECTION of a proxy client");
    let (mut busy, answer) = running.await.unwrap();
    let err = answer.expect_err("the read of a killed client ends with an error");
    // The same against the replica directly.
    let replica = &cluster.replicas[0];
    let direct_opts = replica.opts(super::support::mariadb::APP, Some(&db));
    let victim = Conn::new(direct_opts.clone()).await.unwrap();
    let victim_id = victim.id();
    let direct = spawn_query(victim, "SELECT SLEEP(30) AS killed_direct");
    until_running_on_a_replica(cluster, "SLEEP(30) AS killed_direct").await;
    let mut direct_killer = Conn::new(direct_opts).await.unwrap();
    direct_killer
        .query_drop(format!("KILL CONNECTION {victim_id}"))
        .await
        .unwrap();
    let (_, direct) = direct.await.unwrap();
    let direct = direct.expect_err("a killed connection's statement fails");
    assert_eq!(outcome(&err), outcome(&direct), "as against the replica");
    assert!(
        busy.query_drop("SELECT 1").await.is_err(),
        "and it is closed"
    );

    let one: Option<i64> = bystander.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1), "other clients go on");
    let one: Option<i64> = killer.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1));
}

#[tokio::test]
async fn kill_query_by_another_user_is_refused_as_the_server_would() {
    let cluster = MariaCluster::shared();
    let db = cluster.create_database("killother").await;
    let other = format!("ko_{db}");
    let mut admin = cluster.admin(&cluster.primary).await;
    for statement in [
        format!("CREATE USER '{other}'@'%' IDENTIFIED BY 'ko-secret'"),
        format!("GRANT SELECT ON `{db}`.* TO '{other}'@'%'"),
    ] {
        admin.query_drop(&statement).await.unwrap();
    }
    cluster.wait_replicated().await;
    let text = format!(
        "{}\n[[users]]\nname = \"{other}\"\npassword = \"ko-secret\"\n\
         backend_user = \"{other}\"\nbackend_password = \"ko-secret\"\n",
        mysql_config_text(cluster, "")
    );
    let proxy = Proxy::from_config(&text).await;
    let mut victim = connect(&proxy, &db).await;
    assert!(super::on_replica(&mut victim).await);
    let mut intruder = Conn::new(
        opts(&proxy, &db)
            .user(Some(other.clone()))
            .pass(Some("ko-secret")),
    )
    .await
    .expect("the other user logs in");
    for kill in ["KILL QUERY", "KILL"] {
        let err = intruder
            .query_drop(format!("{kill} {}", victim.id()))
            .await
            .expect_err("another user's session may not be killed");
        assert!(outcome(&err).contains("1095"), "{kill}: {}", outcome(&err));
    }
    let one: Option<i64> = victim.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1), "the victim goes on");
}

/// `KILL QUERY <id>` sent by another client through the proxy (`why`: what it must do).
async fn kill_query(proxy: &Proxy, db: &str, id: u32, why: &str) {
    let mut killer = connect(proxy, db).await;
    killer
        .query_drop(format!("KILL QUERY {id}"))
        .await
        .unwrap_or_else(|e| panic!("{why}: {e}"));
}

/// A `SLEEP()` that `KILL QUERY` interrupted: it returns 1 in MariaDB, or the server reports
/// 1317 (query execution was interrupted).
fn assert_interrupted(answer: Result<Option<i64>, mysql_async::Error>, what: &str) {
    match answer {
        Ok(v) => assert_eq!(v, Some(1), "{what}"),
        Err(e) => assert!(e.to_string().contains("1317"), "{what}: {e}"),
    }
}
