//! The pool with real MariaDB connections: a connection given back with `Release::Reset`
//! comes out again as the same server connection, with none of what the last session
//! left on it, and a login without a database is not reused once one was selected.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use switchyard::backend::Credentials;
use switchyard::backend::mysql::{self, Login, MysqlConn, ResetError};
use switchyard::pool::{Lease, Pools, Release, Settings};
use switchyard::protocol::mysql::command::write_text_command;
use switchyard::protocol::mysql::constants::command::COM_QUERY;
use switchyard::protocol::mysql::constants::{CapabilityFlags, UTF8MB4_GENERAL_CI};
use switchyard::protocol::mysql::handshake::offered_capabilities;
use switchyard::protocol::mysql::messages::{lenenc_str, parse_err};
use switchyard::protocol::mysql::packet;
use switchyard::protocol::mysql::response::{Response, Step};
use switchyard::topology::Cluster;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::mariadb::{APP, MariaCluster};
use crate::support::proxy::mysql_config_text;

/// The writer of the shared cluster as the proxy sees it, with the pool settings of a
/// config whose `[server]` has `pool_size = 1`.
fn topology(cluster: &MariaCluster) -> (Arc<Cluster>, Settings) {
    crate::support::proxy::pool_topology(&mysql_config_text(cluster, "pool_size = 1"))
}

fn login(db: Option<&str>) -> Login {
    Login {
        capabilities: offered_capabilities(),
        charset: UTF8MB4_GENERAL_CI,
        max_packet_size: 1 << 24,
        database: db.map(|d| d.as_bytes().to_vec()),
        connect_attrs: None,
        mariadb_capabilities: 0,
    }
}

fn creds() -> Credentials {
    Credentials {
        user: APP.user.into(),
        password: Some(APP.password.into()),
        salted: Default::default(),
        pass_through: None,
    }
}

async fn connect(cluster: &Cluster, db: Option<&str>) -> MysqlConn {
    mysql::connect(
        cluster,
        &cluster.writer,
        &login(db),
        &creds(),
        Duration::from_secs(10),
    )
    .await
    .expect("connect")
}

async fn checkout(
    pools: &Pools<MysqlConn>,
    cluster: &Arc<Cluster>,
    db: &str,
    settings: &Settings,
) -> Lease<MysqlConn> {
    let key = crate::support::proxy::app_pool_key(cluster, db);
    pools
        .checkout(&key, settings, || async {
            Ok::<_, std::convert::Infallible>(connect(cluster, Some(db)).await)
        })
        .await
        .expect("checkout")
}

/// Runs `sql` with COM_QUERY: the first column of the first row (NULL as `None`; `None`
/// too for a statement without rows), or the error message.
async fn query(conn: &mut MysqlConn, sql: &str) -> Result<Option<String>, String> {
    let mut out = BytesMut::new();
    write_text_command(&mut out, COM_QUERY, sql.as_bytes());
    conn.stream.write_all(&out).await.expect("send query");
    let deprecate_eof = conn
        .capabilities
        .contains(CapabilityFlags::CLIENT_DEPRECATE_EOF);
    let mut response = Response::new(COM_QUERY, deprecate_eof);
    let mut packets = Vec::new();
    loop {
        let Some((h, payload)) = packet::packet(&conn.buf, 1 << 20).expect("framing") else {
            let n = conn.stream.read_buf(&mut conn.buf).await.expect("read");
            assert!(n > 0, "the server closed the connection");
            continue;
        };
        let payload = payload.to_vec();
        conn.buf.advance(packet::HEADER_LEN + h.len);
        match response.feed(&payload).expect("response") {
            Step::More => packets.push(payload),
            Step::Done { .. } => {
                // A result set: count, one column, (EOF,) rows; the first row follows the
                // column definitions.
                let first_row = if deprecate_eof { 2 } else { 3 };
                let Some(row) = packets.get(first_row) else {
                    return Ok(None);
                };
                if row.first() == Some(&0xFB) {
                    return Ok(None);
                }
                let (value, _) = lenenc_str(row).expect("a text value");
                return Ok(Some(String::from_utf8_lossy(value).into_owned()));
            }
            Step::Failed { .. } => {
                let err = parse_err(&payload).expect("ERR");
                return Err(String::from_utf8_lossy(err.message).into_owned());
            }
            Step::LocalInfile => panic!("unexpected LOCAL INFILE"),
        }
    }
}

async fn one(conn: &mut MysqlConn, sql: &str) -> Option<String> {
    query(conn, sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

#[tokio::test]
async fn a_reset_connection_is_the_same_connection_with_none_of_the_last_session_left() {
    let cluster = MariaCluster::shared();
    let db = cluster.create_database("pool_reset").await;
    let other = cluster.create_database("pool_other").await;
    let (main, settings) = topology(cluster);
    let (_stop, shutdown) = switchyard::shutdown::channel();
    let pools = Pools::new(shutdown);

    let mut lease = checkout(&pools, &main, &db, &settings).await;
    let id = one(&mut lease, "SELECT CONNECTION_ID()").await;
    assert_eq!(id, Some(lease.connection_id.to_string()));
    for sql in [
        "CREATE TABLE kept (x int) ENGINE=InnoDB",
        "SET @v = 5",
        "SET SESSION sql_mode = 'ANSI_QUOTES'",
        "CREATE TEMPORARY TABLE scratch (x int)",
        "PREPARE stmt FROM 'SELECT 1'",
        "SELECT GET_LOCK('pool_test', 0)",
        "SET autocommit = 0",
        "INSERT INTO kept VALUES (1)",
        &format!("USE `{other}`"),
    ] {
        one(&mut lease, sql).await;
    }
    lease.release(Release::Reset);

    // pool_size = 1: this waits for the reset, then gets that same connection.
    let mut lease = checkout(&pools, &main, &db, &settings).await;
    assert_eq!(one(&mut lease, "SELECT CONNECTION_ID()").await, id);
    assert_eq!(one(&mut lease, "SELECT DATABASE()").await, Some(db.clone()));
    assert_eq!(one(&mut lease, "SELECT @v").await, None);
    assert_eq!(
        one(&mut lease, "SELECT @@autocommit").await.as_deref(),
        Some("1")
    );
    assert_ne!(
        one(&mut lease, "SELECT @@sql_mode").await.as_deref(),
        Some("ANSI_QUOTES")
    );
    assert_eq!(
        one(&mut lease, "SELECT IS_USED_LOCK('pool_test')").await,
        None
    );
    assert_eq!(
        one(&mut lease, "SELECT count(*) FROM kept")
            .await
            .as_deref(),
        Some("0")
    );
    let gone = query(&mut lease, "SELECT * FROM scratch").await;
    assert!(gone.is_err(), "the temporary table is gone: {gone:?}");
    let gone = query(&mut lease, "EXECUTE stmt").await;
    assert!(gone.is_err(), "the prepared statement is gone: {gone:?}");
    lease.release(Release::Clean);
}

#[tokio::test]
async fn a_login_without_a_database_resets_only_while_none_is_selected() {
    let cluster = MariaCluster::shared();
    let db = cluster.create_database("pool_nodb").await;
    let (main, _) = topology(cluster);
    let mut conn = connect(&main, None).await;
    one(&mut conn, "SET @v = 1").await;
    conn.reset().await.expect("nothing selected: reset");
    assert_eq!(one(&mut conn, "SELECT @v").await, None);
    one(&mut conn, &format!("USE `{db}`")).await;
    match conn.reset().await {
        Err(ResetError::DatabaseSelected { .. }) => {}
        other => panic!("expected DatabaseSelected, got {other:?}"),
    }
}

/// Through the proxy, with one reader: a client that leaves gives its reader connection
/// back to the pool, reset, and the next client's reads use it without the first one's
/// user variable. (Each client's writer connection is the one it was greeted with, opened
/// for it and closed after it.)
#[tokio::test]
async fn sessions_give_their_reader_back_to_the_pool_clean() {
    use mysql_async::prelude::*;
    let cluster = MariaCluster::shared();
    let db = cluster.create_database("pool_sessions").await;
    let reader = format!("127.0.0.1:{}", cluster.replicas[0].port);
    let config = crate::support::proxy::with_readers(
        &mysql_config_text(cluster, "pool_size = 1"),
        std::slice::from_ref(&reader),
    );
    let proxy = crate::support::proxy::Proxy::from_config(&config).await;
    let opts = |db: &str| {
        mysql_async::OptsBuilder::default()
            .ip_or_hostname("127.0.0.1")
            .tcp_port(proxy.addr.port())
            .user(Some(APP.user))
            .pass(Some(APP.password))
            .db_name(Some(db))
            .prefer_socket(false)
    };
    let mut first = mysql_async::Conn::new(opts(&db))
        .await
        .expect("first client");
    first.query_drop("SET @leftover = 5").await.expect("set");
    let seen: Option<i64> = first.query_first("SELECT @leftover").await.expect("read");
    assert_eq!(seen, Some(5), "the SET is replayed on the reader");
    first.disconnect().await.expect("disconnect");
    let mut second = mysql_async::Conn::new(opts(&db))
        .await
        .expect("second client");
    let seen: Option<Option<i64>> = second.query_first("SELECT @leftover").await.expect("read");
    assert_eq!(seen, Some(None), "the first client's variable is gone");
    second.disconnect().await.expect("disconnect");
    let opened = proxy.pool_opened(&reader, &db).await;
    assert_eq!(opened, 1.0, "one reader login for both clients");
}
