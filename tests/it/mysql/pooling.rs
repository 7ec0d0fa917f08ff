//! Transaction mode with real MariaDB servers and mysql_async clients: many clients over a
//! pool of a few server connections, each with its own user variables, default database
//! and binary-protocol prepared statements, and a transaction holding its connection.

use mysql_async::prelude::*;

use super::{connect, opts};
use crate::support::mariadb::MariaCluster;
use crate::support::proxy::{Proxy, in_pool_mode, mysql_config_text};

/// A proxy in transaction mode with `server_extra` in `[server]`.
async fn pooled(prefix: &str, server_extra: &str) -> (&'static MariaCluster, Proxy, String) {
    let cluster = MariaCluster::shared();
    let db = cluster.create_database(prefix).await;
    let config = in_pool_mode(&mysql_config_text(cluster, server_extra), "transaction");
    (cluster, Proxy::from_config(&config).await, db)
}

/// How many connections user `app` has to database `db` on the primary now.
async fn server_connections(cluster: &MariaCluster, db: &str) -> i64 {
    let mut admin = cluster.admin(&cluster.primary).await;
    let n: Option<i64> = admin
        .exec_first(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = 'app' AND DB = ?",
            (db,),
        )
        .await
        .expect("processlist");
    n.unwrap_or_default()
}

#[tokio::test]
async fn many_clients_share_a_few_connections_with_their_own_statements_and_variables() {
    let (cluster, proxy, db) = pooled("pooled_many", "pool_size = 2").await;
    let mut setup = connect(&proxy, &db).await;
    setup
        .query_drop("CREATE TABLE t (id INT PRIMARY KEY, owner VARCHAR(20))")
        .await
        .expect("schema");
    let mut clients = Vec::new();
    for n in 0..12 {
        let mut conn = connect(&proxy, &db).await;
        clients.push(tokio::spawn(async move {
            let name = format!("client{n}");
            // As text: a prepared SET with parameters would pin the client.
            conn.query_drop(format!("SET @me = '{name}'"))
                .await
                .expect("a user variable");
            for i in 0..10 {
                let id = n * 100 + i;
                // Binary protocol: prepared once per client, executed on whichever
                // connection the pool lends.
                conn.exec_drop("INSERT INTO t VALUES (?, @me)", (id,))
                    .await
                    .expect("insert");
                let me: Option<String> = conn
                    .exec_first("SELECT /* switchyard:writer */ @me", ())
                    .await
                    .expect("read the variable");
                assert_eq!(
                    me.as_deref(),
                    Some(name.as_str()),
                    "the client's own variable"
                );
                let mut tx = conn
                    .start_transaction(mysql_async::TxOpts::default())
                    .await
                    .expect("BEGIN");
                let owner: Option<String> = tx
                    .exec_first("SELECT owner FROM t WHERE id = ?", (id,))
                    .await
                    .expect("read in the transaction");
                assert_eq!(owner.as_deref(), Some(name.as_str()));
                tx.commit().await.expect("COMMIT");
            }
            conn
        }));
    }
    let mut done = Vec::new();
    for c in clients {
        done.push(c.await.expect("client task"));
    }
    // Once the writer greeted a client, the proxy greets the next ones itself, with
    // connection ids of its own: their logins open no server connection.
    assert!(
        done.iter().all(|c| c.id() >= 1 << 30),
        "proxy greetings: {:?}",
        done.iter().map(|c| c.id()).collect::<Vec<_>>()
    );
    let rows: Option<i64> = setup
        .query_first("SELECT /* switchyard:writer */ COUNT(*) FROM t")
        .await
        .unwrap();
    assert_eq!(rows, Some(120), "every acknowledged write is on the writer");
    let seen = server_connections(cluster, &db).await;
    assert!(
        seen <= 2,
        "13 clients, still connected, over at most pool_size = 2 connections to the primary: {seen}"
    );
    let mut fresh = connect(&proxy, &db).await;
    let me: Option<Option<String>> = fresh
        .query_first("SELECT /* switchyard:writer */ @me")
        .await
        .unwrap();
    assert_eq!(
        me,
        Some(None),
        "a new client sees none of another's variables"
    );
}

#[tokio::test]
async fn a_transaction_holds_its_connection_and_a_full_pool_answers_too_many_connections() {
    let (_, proxy, db) = pooled("pooled_full", "pool_size = 1\ncheckout_timeout = \"1s\"").await;
    let mut first = connect(&proxy, &db).await;
    let mut second = connect(&proxy, &db).await;
    first.query_drop("BEGIN").await.unwrap();
    first
        .query_drop("SELECT /* switchyard:writer */ 1")
        .await
        .unwrap();
    let err = second
        .query_drop("SELECT /* switchyard:writer */ 2")
        .await
        .expect_err("the pool's one connection is in the first client's transaction");
    assert!(err.to_string().contains("1040"), "{err}");
    first.query_drop("COMMIT").await.unwrap();
    let mut third = mysql_async::Conn::new(opts(&proxy, &db)).await.unwrap();
    third
        .query_drop("SELECT /* switchyard:writer */ 3")
        .await
        .expect("the connection is free again after COMMIT");
}

#[tokio::test]
async fn last_insert_id_reads_the_clients_own_insert_on_a_shared_pool() {
    let (_, proxy, db) = pooled("pooled_insert_id", "pool_size = 2").await;
    let mut setup = connect(&proxy, &db).await;
    setup
        .query_drop("CREATE TABLE a (id INT AUTO_INCREMENT PRIMARY KEY, owner INT)")
        .await
        .expect("schema");
    let mut clients = Vec::new();
    for n in 0..6 {
        let mut conn = connect(&proxy, &db).await;
        clients.push(tokio::spawn(async move {
            for _ in 0..10 {
                // As an ORM does: an autocommitted insert, then the id it generated.
                conn.exec_drop("INSERT INTO a (owner) VALUES (?)", (n,))
                    .await
                    .expect("insert");
                let id: Option<i64> = conn
                    .query_first("SELECT LAST_INSERT_ID()")
                    .await
                    .expect("LAST_INSERT_ID()");
                let id = id.expect("an id");
                let owner: Option<i64> = conn
                    .exec_first(
                        "SELECT /* switchyard:writer */ owner FROM a WHERE id = ?",
                        (id,),
                    )
                    .await
                    .expect("read the row");
                assert_eq!(owner, Some(n), "LAST_INSERT_ID() {id} is this client's row");
            }
        }));
    }
    for c in clients {
        c.await.expect("client task");
    }
}

#[tokio::test]
async fn connection_id_is_the_clients_own_and_kill_query_of_it_reaches_that_clients_statement() {
    let (cluster, proxy, db) = pooled("pooled_identity", "pool_size = 2").await;
    let mut clients = [connect(&proxy, &db).await, connect(&proxy, &db).await];
    // Connected first: mysql_async's own statements at connect need a pooled connection.
    let mut killer = connect(&proxy, &db).await;
    let mut ids = Vec::new();
    for conn in &mut clients {
        let greeted = conn.id();
        // Text protocol, with the column name the client would see from a server.
        let mut result = conn.query_iter("SELECT CONNECTION_ID()").await.unwrap();
        let column = result.columns_ref()[0].name_str().into_owned();
        let text: Vec<u32> = result.collect().await.unwrap();
        assert_eq!(column, "CONNECTION_ID()", "the column's name");
        assert_eq!(text, [greeted], "CONNECTION_ID() is the greeting's id");
        let prepared: Option<u32> = conn
            .exec_first("SELECT CONNECTION_ID() AS id", ())
            .await
            .unwrap();
        assert_eq!(prepared, Some(greeted), "also as a prepared statement");
        ids.push(greeted);
    }
    assert_ne!(ids[0], ids[1], "each client has its own id");
    // Both clients sleep, each on one of the pool's two connections; a third client kills
    // the query of the id the first one read with SQL.
    let mut running = Vec::new();
    for (n, mut conn) in clients.into_iter().enumerate() {
        running.push(tokio::spawn(async move {
            let sql = format!("SELECT /* switchyard:writer */ SLEEP(30) AS sleeper{n}");
            let answer: Result<Option<i64>, _> = conn.query_first(sql).await;
            (conn, answer)
        }));
    }
    let mut primary = cluster.admin(&cluster.primary).await;
    for n in 0..2 {
        until_sleeping(&mut primary, &format!("sleeper{n}")).await;
    }
    killer
        .query_drop(format!("KILL QUERY {}", ids[0]))
        .await
        .expect("KILL QUERY of the first client's CONNECTION_ID()");
    let second = running.pop().unwrap();
    let (mut first, answer) = running.pop().unwrap().await.unwrap();
    assert_interrupted(answer);
    assert!(
        sleeping(&mut primary, "sleeper1").await,
        "the other client's statement runs on"
    );
    killer
        .query_drop(format!("KILL QUERY {}", ids[1]))
        .await
        .expect("KILL QUERY of the second client's CONNECTION_ID()");
    let (_, answer) = second.await.unwrap();
    assert_interrupted(answer);
    let again: Option<u32> = first.query_first("SELECT CONNECTION_ID()").await.unwrap();
    assert_eq!(again, Some(ids[0]), "the session goes on, with its id");
}

/// Whether a statement whose text holds `marker` runs on the primary now.
async fn sleeping(primary: &mut mysql_async::Conn, marker: &str) -> bool {
    let sql = format!(
        "SELECT COUNT(*) FROM information_schema.PROCESSLIST \
         WHERE ID <> CONNECTION_ID() AND INFO LIKE '%SLEEP(30) AS {marker}%'"
    );
    let n: Option<i64> = primary.query_first(&sql).await.unwrap();
    n == Some(1)
}

/// Waits until a statement whose text holds `marker` runs on the primary.
async fn until_sleeping(primary: &mut mysql_async::Conn, marker: &str) {
    for _ in 0..500 {
        if sleeping(primary, marker).await {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("{marker} never ran");
}

/// A `SLEEP()` that `KILL QUERY` interrupted: it returns 1 in MariaDB, or the server reports
/// 1317 (query execution was interrupted).
fn assert_interrupted(answer: Result<Option<i64>, mysql_async::Error>) {
    match answer {
        Ok(v) => assert_eq!(v, Some(1), "SLEEP was interrupted"),
        Err(e) => assert!(e.to_string().contains("1317"), "SLEEP was interrupted: {e}"),
    }
}
