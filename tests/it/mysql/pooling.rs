//! Transaction mode with real MariaDB servers and mysql_async clients: many clients over a
//! pool of a few server connections, each with its own user variables, default database
//! and binary-protocol prepared statements, and a transaction holding its connection.

use mysql_async::prelude::*;

use super::{connect, opts, until_answers};
use crate::support::load;
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
    // The pool's one connection is in the first client's transaction.
    refused(&mut second, "SELECT /* switchyard:writer */ 2", 1040).await;
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
async fn a_pin_lets_go_once_the_state_behind_it_is_gone() {
    // One connection: while a client is pinned, nobody else can run anything.
    let (_, proxy, db) = pooled("pooled_unpin", "pool_size = 1").await;
    let mut client = connect(&proxy, &db).await;
    let mut other = connect(&proxy, &db).await;
    client
        .query_drop("CREATE TABLE x (id INT PRIMARY KEY)")
        .await
        .expect("schema");
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["CREATE TEMPORARY TABLE scratch (i INT)"],
            &["DROP TEMPORARY TABLE scratch"],
        ),
        (
            &[
                "CREATE TEMPORARY TABLE a (i INT)",
                "CREATE TEMPORARY TABLE b (i INT)",
            ],
            &["DROP TABLE a", "DROP TABLE IF EXISTS b, missing"],
        ),
        (
            &["SELECT GET_LOCK('job', 5)"],
            &["SELECT RELEASE_LOCK('job')"],
        ),
        // Named locks nest (MariaDB 10.0.2+): held until released as often as taken.
        (
            &["SELECT GET_LOCK('job', 5)", "SELECT GET_LOCK('job', 5)"],
            &["SELECT RELEASE_LOCK('job')", "SELECT RELEASE_LOCK('job')"],
        ),
        (
            &["SELECT GET_LOCK('a', 5)", "SELECT GET_LOCK('b', 5)"],
            &["SELECT RELEASE_ALL_LOCKS()"],
        ),
        (&["LOCK TABLES x READ"], &["UNLOCK TABLES"]),
        (&["PREPARE s FROM 'SELECT 1'"], &["DEALLOCATE PREPARE s"]),
        (
            &["HANDLER x OPEN AS h", "HANDLER h READ FIRST"],
            &["HANDLER h CLOSE"],
        ),
    ];
    let run = async |sql: &str| client.query_drop(sql).await.expect(sql);
    let writer = async || {
        other
            .query_drop("SELECT /* switchyard:writer */ 1")
            .await
            .expect("the connection went back to the pool");
    };
    proxy.check_pins_let_go(cases, run, writer).await;
    // A failed release gives nothing back; a lock named by an expression cannot be
    // followed, so it lasts.
    client
        .query_drop("CREATE TEMPORARY TABLE kept (i INT)")
        .await
        .unwrap();
    client
        .query_drop("DROP TABLE kept, missing")
        .await
        .expect_err("an unknown table fails the DROP");
    client
        .query_drop("SELECT GET_LOCK(CONCAT('a', 'b'), 5)")
        .await
        .unwrap();
    client
        .query_drop("SELECT RELEASE_ALL_LOCKS()")
        .await
        .unwrap();
    client.query_drop("SELECT 1").await.unwrap();
    assert_eq!(proxy.pinned("statement").await, 1, "untracked state lasts");
}

#[tokio::test]
async fn found_rows_reads_the_clients_own_query_on_a_shared_pool() {
    let (_, proxy, db) = pooled("pooled_found_rows", "pool_size = 2").await;
    let mut a = connect(&proxy, &db).await;
    let mut b = connect(&proxy, &db).await;
    a.query_drop("CREATE TABLE t (id INT PRIMARY KEY)")
        .await
        .expect("schema");
    a.query_drop("INSERT INTO t VALUES (1), (2), (3), (4), (5)")
        .await
        .expect("rows");
    for _ in 0..3 {
        a.query_drop("SELECT SQL_CALC_FOUND_ROWS id FROM t LIMIT 1")
            .await
            .unwrap();
        // Another client's query meanwhile, on the connection a just used if a let it go.
        b.query_drop("SELECT SQL_CALC_FOUND_ROWS id FROM t WHERE id < 3 LIMIT 1")
            .await
            .unwrap();
        let b_rows: Option<i64> = b.query_first("SELECT FOUND_ROWS()").await.unwrap();
        let a_rows: Option<i64> = a.query_first("SELECT FOUND_ROWS()").await.unwrap();
        assert_eq!(
            (a_rows, b_rows),
            (Some(5), Some(2)),
            "each client's own count"
        );
    }
}

#[tokio::test]
async fn a_setting_made_in_a_transaction_follows_the_client_to_other_connections() {
    let (_, proxy, db) = pooled("pooled_set_in_tx", "pool_size = 2").await;
    let mut client = connect(&proxy, &db).await;
    let mut others = Vec::new();
    for _ in 0..2 {
        others.push(connect(&proxy, &db).await);
    }
    // MySQL does not undo a SET at ROLLBACK: the setting stays, as on a server.
    client.query_drop("START TRANSACTION").await.unwrap();
    client.query_drop("SET @v = 7").await.unwrap();
    client
        .query_drop("SET SESSION sql_mode = 'ANSI_QUOTES'")
        .await
        .unwrap();
    client.query_drop("ROLLBACK").await.unwrap();
    client.query_drop("SELECT 1").await.unwrap();
    assert_eq!(proxy.pinned("set_in_transaction").await, 0, "nothing pins");
    for _ in 0..3 {
        for other in &mut others {
            // Others use the pool's connections meanwhile.
            other
                .query_drop("SELECT /* switchyard:writer */ 1")
                .await
                .unwrap();
        }
        for hint in ["", "/* switchyard:writer */"] {
            let (v, mode): (Option<i64>, String) = client
                .query_first(format!("SELECT {hint} @v, @@SESSION.sql_mode"))
                .await
                .unwrap()
                .expect("a row");
            let got = (v, mode.as_str());
            assert_eq!(got, (Some(7), "ANSI_QUOTES"), "on any connection ({hint})");
        }
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

#[tokio::test]
async fn kill_ends_a_client_waiting_for_a_connection_at_once() {
    let extra = "pool_size = 1\ncheckout_timeout = \"60s\"";
    let (_, proxy, db) = pooled("pooled_kill_waiting", extra).await;
    // Connected first: mysql_async's own statements at connect need a pooled connection.
    let mut holder = connect(&proxy, &db).await;
    let mut victim = connect(&proxy, &db).await;
    let mut killer = connect(&proxy, &db).await;
    let id = victim.id();
    // The pool's one writer connection is held by an open transaction.
    holder.query_drop("BEGIN").await.expect("BEGIN");
    holder
        .query_drop("SELECT /* switchyard:writer */ 1")
        .await
        .expect("the holder's transaction");
    let waiting =
        tokio::spawn(async move { victim.query_drop("SELECT /* switchyard:writer */ 2").await });
    proxy.until_checkouts_wait(1).await;
    killer
        .query_drop(format!("KILL {id}"))
        .await
        .expect("KILL of the waiting client");
    // Told as a server tells a client whose connection was killed mid-statement, not
    // after checkout_timeout.
    let err = waiting
        .await
        .unwrap()
        .expect_err("the victim's statement did not run");
    assert!(
        matches!(&err, mysql_async::Error::Server(e) if e.code == 1927),
        "{err:?}"
    );
    holder
        .query_drop("COMMIT")
        .await
        .expect("the holder goes on");
    let one: Option<i64> = killer
        .query_first("SELECT /* switchyard:writer */ 1")
        .await
        .expect("the pool's connection serves others");
    assert_eq!(one, Some(1));
}

#[tokio::test]
async fn read_only_mode_holds_on_a_connection_a_clients_replayed_settings_made_read_write() {
    let (_, proxy, db) = pooled("pooled_read_only_replayed", "pool_size = 1").await;
    let mut client = connect(&proxy, &db).await;
    let mut other = connect(&proxy, &db).await;
    client
        .query_drop("CREATE TABLE ro (i INT)")
        .await
        .expect("schema");
    // The client's own default, recorded and replayed wherever it goes.
    client
        .query_drop("SET SESSION TRANSACTION READ WRITE")
        .await
        .unwrap();
    proxy.read_only(true).await;
    // Another client's transaction takes the pool's one connection and makes it
    // read-only; then the client takes it, its setting replayed: its transaction is still
    // read-only, so a write inside it, which the proxy lets through, is refused by the
    // server (1792).
    for sql in ["BEGIN", "SELECT 1", "COMMIT"] {
        other.query_drop(sql).await.unwrap();
    }
    client.query_drop("BEGIN").await.unwrap();
    refused(&mut client, "INSERT INTO ro VALUES (1)", 1792).await;
    client.query_drop("ROLLBACK").await.unwrap();
    // A text that makes its own transactions read-write and then writes is refused whole.
    refused(
        &mut client,
        "SET SESSION TRANSACTION READ WRITE; INSERT INTO ro VALUES (3)",
        1290,
    )
    .await;
    // A transaction asked for read-write in so many words is refused at its start.
    refused(&mut client, "START TRANSACTION READ WRITE", 1290).await;
    proxy.read_only(false).await;
    client
        .query_drop("INSERT INTO ro VALUES (2)")
        .await
        .expect("writes again");
    let rows: Option<i64> = client
        .query_first("SELECT /* switchyard:writer */ COUNT(*) FROM ro")
        .await
        .unwrap();
    assert_eq!(rows, Some(1), "only the write made while read-write landed");
}

/// Runs `sql` on `conn` and expects the server error `code` (from the proxy or the server).
async fn refused(conn: &mut mysql_async::Conn, sql: impl AsRef<str>, code: u16) {
    let sql = sql.as_ref();
    let err = conn.query_drop(sql).await.expect_err(sql);
    assert!(
        matches!(&err, mysql_async::Error::Server(e) if e.code == code),
        "{sql}: {err:?}"
    );
}

/// How many statements whose text holds `marker` run on the primary (the asking one aside).
fn sleeping_count(marker: &str) -> String {
    format!(
        "SELECT COUNT(*) FROM information_schema.PROCESSLIST \
         WHERE ID <> CONNECTION_ID() AND INFO LIKE '%SLEEP(30) AS {marker}%'"
    )
}

/// Whether a statement whose text holds `marker` runs on the primary now.
async fn sleeping(primary: &mut mysql_async::Conn, marker: &str) -> bool {
    let n: Option<i64> = primary.query_first(sleeping_count(marker)).await.unwrap();
    n == Some(1)
}

/// Waits until a statement whose text holds `marker` runs on the primary.
async fn until_sleeping(primary: &mut mysql_async::Conn, marker: &str) {
    until_answers(
        primary,
        &sleeping_count(marker),
        1,
        &format!("{marker} runs"),
    )
    .await;
}

/// A `SLEEP()` that `KILL QUERY` interrupted: it returns 1 in MariaDB, or the server reports
/// 1317 (query execution was interrupted).
fn assert_interrupted(answer: Result<Option<i64>, mysql_async::Error>) {
    match answer {
        Ok(v) => assert_eq!(v, Some(1), "SLEEP was interrupted"),
        Err(e) => assert!(e.to_string().contains("1317"), "SLEEP was interrupted: {e}"),
    }
}

#[tokio::test]
async fn sqlx_clients_share_two_connections_with_their_prepared_statements() {
    let (_, proxy, db) = pooled("pooled_sqlx", "pool_size = 2").await;
    let mut setup = connect(&proxy, &db).await;
    setup
        .query_drop("CREATE TABLE kv (k INT PRIMARY KEY, v VARCHAR(20))")
        .await
        .expect("schema");
    let url = format!(
        "mysql://app:app-secret@127.0.0.1:{}/{db}",
        proxy.addr.port()
    );
    crate::support::sqlx_clients_share_a_pool!(
        sqlx::MySqlConnection,
        url,
        i64,
        "INSERT INTO kv VALUES (?, ?)",
        "SELECT /* switchyard:writer */ v FROM kv WHERE k = ?",
        "SELECT CAST(? AS SIGNED) + CAST(? AS SIGNED)"
    );
}

/// Runs `SELECT 1` on the writer as `other`: it gets the pool's one connection, so the
/// client before it let it go.
async fn writer_is_free(other: &mut mysql_async::Conn, after: &str) {
    other
        .query_drop("SELECT /* switchyard:writer */ 1")
        .await
        .unwrap_or_else(|e| panic!("the connection went back to the pool after {after}: {e:?}"));
}

#[tokio::test]
async fn a_variable_set_again_at_every_request_replaces_the_one_before() {
    // One connection per instance: a client that held its connection would starve `other`.
    let (cluster, proxy, db) = pooled("pooled_many_sets", "pool_size = 1").await;
    cluster.wait_replicated().await;
    let mut client = connect(&proxy, &db).await;
    let mut other = connect(&proxy, &db).await;
    for i in 0..300 {
        client
            .query_drop(format!("SET @request = {i}"))
            .await
            .unwrap();
        client
            .query_drop(format!("SET SESSION wait_timeout = {}", 1000 + i))
            .await
            .unwrap();
        if i % 100 == 0 {
            writer_is_free(&mut other, "a SET").await;
        }
    }
    assert_eq!(proxy.pinned("too_many_settings").await, 0, "nothing pins");
    writer_is_free(&mut other, "300 SETs").await;
    for hint in ["", "/* switchyard:writer */"] {
        let got: Option<(i64, i64)> = client
            .query_first(format!("SELECT {hint} @request, @@wait_timeout"))
            .await
            .unwrap();
        assert_eq!(got, Some((299, 1299)), "the latest values ({hint})");
        writer_is_free(&mut other, "a read").await;
    }
    let theirs: Option<Option<i64>> = other
        .query_first("SELECT /* switchyard:writer */ @request")
        .await
        .unwrap();
    assert_eq!(theirs, Some(None), "not another client's");
    for i in 0..300 {
        client.query_drop(format!("SET @v{i} = 1")).await.unwrap();
    }
    assert_eq!(
        proxy.pinned("too_many_settings").await,
        1,
        "more distinct ones pin"
    );
}

#[tokio::test]
async fn a_prepared_set_with_parameters_is_read_back_and_lets_go() {
    let (cluster, proxy, db) = pooled("pooled_prepared_set", "pool_size = 1").await;
    cluster.wait_replicated().await;
    let mut client = connect(&proxy, &db).await;
    let mut other = connect(&proxy, &db).await;
    // Binary protocol: the values reach only the server.
    client
        .exec_drop(
            "SET @me = ?, @n = ?, @f = ?, time_zone = ?",
            ("it's \\ me", 42, 0.5f64, "+03:00"),
        )
        .await
        .expect("a prepared SET");
    // The proxy reads back after the answer: done by the client's next statement.
    client.query_drop("SELECT 1").await.unwrap();
    assert_eq!(proxy.pinned("unreplayable_setting").await, 0, "read back");
    writer_is_free(&mut other, "a prepared SET").await;
    // In a transaction: read back once it ends.
    client.query_drop("START TRANSACTION").await.unwrap();
    client
        .exec_drop("SET @@SESSION.sql_mode = ?", ("ANSI_QUOTES",))
        .await
        .unwrap();
    assert_eq!(proxy.pinned("unreplayable_setting").await, 1, "meanwhile");
    client.query_drop("COMMIT").await.unwrap();
    client.query_drop("SELECT 1").await.unwrap();
    assert_eq!(proxy.pinned("unreplayable_setting").await, 0);
    writer_is_free(&mut other, "the transaction").await;
    for hint in ["", "/* switchyard:writer */"] {
        let row: Option<mysql_async::Row> = client
            .query_first(format!(
                "SELECT {hint} @me, @n + 1, @f * 2, @@time_zone, @@sql_mode, COLLATION(@me)"
            ))
            .await
            .unwrap();
        let row = row.expect("a row");
        let got: (String, i64, f64, String, String) = (
            row.get(0).unwrap(),
            row.get(1).unwrap(),
            row.get(2).unwrap(),
            row.get(3).unwrap(),
            row.get(4).unwrap(),
        );
        assert_eq!(
            got,
            (
                "it's \\ me".into(),
                43,
                1.0,
                "+03:00".into(),
                "ANSI_QUOTES".into()
            ),
            "on any connection ({hint})"
        );
        writer_is_free(&mut other, "a read").await;
    }
}

#[tokio::test]
async fn a_query_of_several_sets_follows_the_client_without_pinning_it() {
    let (cluster, proxy, db) = pooled("pooled_multi_set", "pool_size = 1").await;
    cluster.wait_replicated().await;
    let mut client = connect(&proxy, &db).await;
    let mut other = connect(&proxy, &db).await;
    // As connectors and ORMs send at connect: one text, several statements.
    client
        .query_drop("SET NAMES utf8mb4; SET time_zone = '+02:00'; SET @tenant = 7")
        .await
        .expect("several SETs");
    assert_eq!(proxy.pinned("statement").await, 0, "nothing pins");
    writer_is_free(&mut other, "several SETs").await;
    // One fails: those before it took effect (MySQL runs them one by one); the proxy
    // reads back what they left before the client lets its connection go.
    let failed = client
        .query_drop("SET @tenant = 8; SET time_zone = 'nowhere'; SET @late = 1")
        .await;
    assert!(failed.is_err(), "an unknown time zone fails");
    client.query_drop("SELECT 1").await.unwrap();
    assert_eq!(proxy.pinned("unreplayable_setting").await, 0, "read back");
    assert_eq!(proxy.pinned("statement").await, 0);
    writer_is_free(&mut other, "a failed text").await;
    // A lone SET that fails changed nothing, and is not recorded.
    let failed = client.query_drop("SET time_zone = 'elsewhere'").await;
    assert!(failed.is_err(), "an unknown time zone fails");
    assert_eq!(proxy.pinned("unreplayable_setting").await, 0);
    writer_is_free(&mut other, "a failed SET").await;
    for hint in ["", "/* switchyard:writer */"] {
        let row: Option<(String, String, i64, Option<i64>)> = client
            .query_first(format!(
                "SELECT {hint} @@character_set_client, @@time_zone, @tenant, @late"
            ))
            .await
            .unwrap();
        assert_eq!(
            row,
            Some(("utf8mb4".into(), "+02:00".into(), 8, None)),
            "on any connection ({hint})"
        );
        writer_is_free(&mut other, "a read").await;
    }
    let theirs: Option<Option<i64>> = other
        .query_first("SELECT /* switchyard:writer */ @tenant")
        .await
        .unwrap();
    assert_eq!(theirs, Some(None), "not another client's");
    // A failed text with a USE before the error: the default database is read back too.
    let elsewhere = cluster.create_database("pooled_multi_set_use").await;
    let failed = client
        .query_drop(format!(
            "USE {elsewhere}; SET @tenant = 9; SET time_zone = 'nowhere'"
        ))
        .await;
    assert!(failed.is_err(), "an unknown time zone fails");
    client.query_drop("SELECT 1").await.unwrap();
    assert_eq!(proxy.pinned("unreplayable_setting").await, 0, "read back");
    writer_is_free(&mut other, "a failed text with a USE").await;
    for hint in ["", "/* switchyard:writer */"] {
        let row: Option<(String, i64)> = client
            .query_first(format!("SELECT {hint} DATABASE(), @tenant"))
            .await
            .unwrap();
        assert_eq!(
            row,
            Some((elsewhere.clone(), 9)),
            "on any connection ({hint})"
        );
        writer_is_free(&mut other, "a read").await;
    }
}

/// The primary and the replicas of a cluster, asked through their processlists.
struct MariaServers {
    admins: Vec<mysql_async::Conn>,
    db: String,
}

impl MariaServers {
    async fn of(cluster: &MariaCluster, db: &str) -> MariaServers {
        let mut admins = Vec::new();
        for server in std::iter::once(&cluster.primary).chain(&cluster.replicas) {
            admins.push(cluster.admin(server).await);
        }
        MariaServers {
            admins,
            db: db.to_owned(),
        }
    }
}

impl load::Servers for MariaServers {
    async fn connections(&mut self) -> Vec<i64> {
        let mut now = Vec::new();
        for admin in &mut self.admins {
            let n: Option<i64> = admin
                .exec_first(
                    "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = 'app' AND DB = ?",
                    (&self.db,),
                )
                .await
                .expect("processlist");
            now.push(n.unwrap_or_default());
        }
        now
    }
}

/// The load test: 500 sysbench threads over `pool_size = 10` per instance, point
/// selects with server-side prepared statements, then single-row updates. No event fails,
/// and [`load::Watch::check`] holds: no server over the pool's size, the reads spread over
/// both replicas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_sysbench_threads_share_ten_connections_per_instance() {
    let (cluster, proxy, db) = pooled("pooled_500", "pool_size = 10").await;
    super::sysbench(&proxy, &db, &["oltp_point_select", "prepare"]).await;
    cluster.wait_replicated().await;
    let watch = load::watch(&proxy, &db, MariaServers::of(cluster, &db).await).await;
    for workload in ["oltp_point_select", "oltp_update_index"] {
        let out = super::sysbench(
            &proxy,
            &db,
            &[
                workload,
                "--threads=500",
                "--events=5000",
                "--time=0",
                "--mysql-ignore-errors=none",
                "run",
            ],
        )
        .await;
        let events = out
            .lines()
            .find_map(|l| l.trim().strip_prefix("total number of events:"))
            .map(str::trim);
        assert!(
            events == Some("5000") && out.contains("ignored errors:                      0"),
            "{workload} with 500 threads over pool_size = 10:\n{out}"
        );
    }
    watch
        .check(&proxy, &db, 10.0, &cluster.replica_addrs(), 5000.0)
        .await;
}

/// An account with `MAX_USER_CONNECTIONS 2` under `pool_size = 10`: the servers refuse the
/// pools' third logins (ER_USER_LIMIT_REACHED). Twelve clients log in at once on a new
/// proxy (one server connection for the greeting, not one per client) and the pools serve
/// them from the connections they have: every client's reads and writes run, the
/// refusals are counted, no pool holds more than the account may, and reads stay on the
/// replicas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_out_of_connection_slots_is_served_by_the_connections_it_has() {
    let cluster = MariaCluster::shared();
    let db = cluster.create_database("pooled_slots").await;
    let mut admin = cluster.admin(&cluster.primary).await;
    for sql in [
        "CREATE USER 'capped'@'%' IDENTIFIED BY 'capped-secret' WITH MAX_USER_CONNECTIONS 2"
            .to_owned(),
        format!("GRANT ALL ON `{db}`.* TO 'capped'@'%'"),
        format!("CREATE TABLE `{db}`.t (id INT PRIMARY KEY, n INT)"),
    ] {
        admin
            .query_drop(&sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    cluster.wait_replicated().await;
    let users = "[[users]]\nname = \"capped\"\npassword = \"capped-secret\"\n\n";
    let config = in_pool_mode(&mysql_config_text(cluster, "pool_size = 10"), "transaction")
        .replacen("[clusters.main]", &format!("{users}[clusters.main]"), 1);
    let proxy = Proxy::from_config(&config).await;
    let since = load::Since::now(&proxy, &db).await;
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(proxy.addr.port())
        .user(Some("capped"))
        .pass(Some("capped-secret"))
        .db_name(Some(db.clone()))
        .prefer_socket(false);
    // Every client logs in at once on a proxy that knows no greeting yet: one of them
    // opens the connection whose greeting the proxy then greets the others with.
    let mut clients = tokio::task::JoinSet::new();
    for n in 0..12 {
        let opts = opts.clone();
        clients.spawn(async move {
            let mut conn = mysql_async::Conn::new(opts).await.expect("login");
            for i in 0..10 {
                let id = n * 100 + i;
                conn.exec_drop("INSERT INTO t VALUES (?, ?)", (id, n))
                    .await
                    .expect("write");
                let _: Option<i64> = conn
                    .query_first("SELECT COUNT(*) FROM t")
                    .await
                    .expect("read");
            }
            conn.disconnect().await.expect("quit");
        });
    }
    clients.join_all().await;
    let rows: Option<i64> = admin
        .query_first(format!("SELECT COUNT(*) FROM `{db}`.t"))
        .await
        .expect("count on the primary");
    assert_eq!(rows, Some(120), "every write is on the primary");
    let replicas = cluster.replica_addrs();
    since
        .check_out_of_slots(&proxy, &db, 2.0, &replicas, 120.0)
        .await;
}

/// A backend login the server refuses while the writer is up (here the account's password
/// changed under a connected client, whose pooled connection then ended) is the client's
/// error at once, in the server's words: not a wait of `failover_timeout` for a writer
/// failover that will not come.
#[tokio::test]
async fn a_login_the_server_refuses_mid_session_is_the_clients_error_at_once() {
    let cluster = MariaCluster::shared();
    let db = cluster.create_database("pooled_rotated").await;
    let mut admin = cluster.admin(&cluster.primary).await;
    for sql in [
        "CREATE USER 'rotated'@'%' IDENTIFIED BY 'before'".to_owned(),
        format!("GRANT ALL ON `{db}`.* TO 'rotated'@'%'"),
    ] {
        admin
            .query_drop(&sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    let users = "[[users]]\nname = \"rotated\"\npassword = \"before\"\n\n";
    let config = in_pool_mode(&mysql_config_text(cluster, "pool_size = 2"), "transaction")
        .replacen("[clusters.main]", &format!("{users}[clusters.main]"), 1);
    let proxy = Proxy::from_config(&config).await;
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(proxy.addr.port())
        .user(Some("rotated"))
        .pass(Some("before"))
        .db_name(Some(db.clone()))
        .prefer_socket(false);
    let mut client = mysql_async::Conn::new(opts).await.expect("login");
    let one: Option<i64> = client
        .query_first("SELECT /* switchyard:writer */ 1")
        .await
        .expect("a statement while the password holds");
    assert_eq!(one, Some(1));
    admin
        .query_drop("ALTER USER 'rotated'@'%' IDENTIFIED BY 'after'")
        .await
        .expect("the password changed");
    let ids: Vec<u64> = admin
        .query("SELECT ID FROM information_schema.PROCESSLIST WHERE USER = 'rotated'")
        .await
        .expect("the pool's connections");
    for id in ids {
        admin
            .query_drop(format!("KILL {id}"))
            .await
            .expect("end the pool's connection");
    }
    // Once the server lists none, their sockets are closed: the pool finds them closed.
    let left = "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = 'rotated'";
    until_answers(&mut admin, left, 0, "the killed connections ended").await;
    let refused = client
        .query_first::<i64, _>("SELECT /* switchyard:writer */ 2")
        .await
        .expect_err("no new login is possible");
    let text = refused.to_string();
    assert!(
        text.contains("Access denied") && !text.contains("failover"),
        "the server's refusal, at once: {text}"
    );
}

/// A client that closes its connection while its statement runs (a driver's timeout) has
/// that statement killed: it stops running on the server long before its end, and the
/// pooled connection it held is not left busy with it.
#[tokio::test]
async fn a_statement_whose_client_left_is_killed() {
    let (cluster, proxy, db) = pooled("pooled_left", "pool_size = 2").await;
    let mut admin = cluster.admin(&cluster.primary).await;
    let mut client = connect(&proxy, &db).await;
    let query = tokio::spawn(async move {
        let _ = client
            .query_drop("SELECT /* switchyard:writer */ SLEEP(30) AS client_left")
            .await;
        client
    });
    until_sleeping(&mut admin, "client_left").await;
    // The client's socket closes with the task that owns it.
    query.abort();
    // Killed within seconds (the sleep would run 30).
    let running = sleeping_count("client_left");
    until_answers(
        &mut admin,
        &running,
        0,
        "the statement killed once its client left",
    )
    .await;
}

/// How many rows table `t` has, as a client outside any transaction sees them.
async fn rows_in_t(conn: &mut mysql_async::Conn) -> i64 {
    let n: Option<i64> = conn
        .query_first("SELECT /* switchyard:writer */ COUNT(*) FROM t")
        .await
        .expect("count");
    n.unwrap_or_default()
}

#[tokio::test]
async fn a_plain_begin_takes_no_connection_until_its_transaction_runs_something() {
    let extra = "pool_size = 1\ncheckout_timeout = \"2s\"";
    let (_, proxy, db) = pooled("pooled_begin", extra).await;
    let mut setup = connect(&proxy, &db).await;
    setup
        .query_drop("CREATE TABLE t (id INT PRIMARY KEY) ENGINE = InnoDB")
        .await
        .expect("schema");
    let mut first = connect(&proxy, &db).await;
    for begin in ["BEGIN", "START TRANSACTION"] {
        first.query_drop(begin).await.unwrap();
        // The pool's one connection is not taken by the BEGIN: another client runs.
        setup
            .query_drop("SELECT /* switchyard:writer */ 1")
            .await
            .unwrap_or_else(|e| panic!("{begin} held the pool's connection: {e:?}"));
        // The transaction started before its first statement, as the server says.
        let in_transaction: Option<i64> = first
            .query_first("SELECT /* switchyard:writer */ @@in_transaction")
            .await
            .unwrap();
        assert_eq!(in_transaction, Some(1), "{begin}");
        first
            .exec_drop("INSERT INTO t VALUES (?)", (1,))
            .await
            .unwrap();
        first.query_drop("ROLLBACK").await.unwrap();
        assert_eq!(rows_in_t(&mut setup).await, 0, "{begin}: rolled back");
    }
    // A statement's error leaves the transaction open, as on a server.
    first.query_drop("BEGIN").await.unwrap();
    first.query_drop("INSERT INTO t VALUES (2)").await.unwrap();
    refused(&mut first, "INSERT INTO t VALUES (2)", 1062).await;
    first.query_drop("INSERT INTO t VALUES (3)").await.unwrap();
    first.query_drop("COMMIT").await.unwrap();
    assert_eq!(rows_in_t(&mut setup).await, 2, "committed");
    // A transaction that runs nothing commits nothing.
    first.query_drop("BEGIN").await.unwrap();
    first.query_drop("COMMIT").await.unwrap();
    assert_eq!(rows_in_t(&mut setup).await, 2);
    // A BEGIN with options goes to the server at once: it holds the pool's connection.
    first
        .query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT")
        .await
        .unwrap();
    refused(&mut setup, "SELECT /* switchyard:writer */ 2", 1040).await;
    first.query_drop("COMMIT").await.unwrap();
}
