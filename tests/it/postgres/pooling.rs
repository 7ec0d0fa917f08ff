//! Transaction mode with real PostgreSQL servers and tokio-postgres clients: many clients
//! over a pool of a few server connections, each with its own settings and prepared
//! statements, a transaction holding its connection, and state that pins a client.

use tokio_postgres::error::SqlState;

use crate::support::postgres::PgCluster;
use crate::support::proxy::{Proxy, RawClient, config_text, in_pool_mode, json_body};

/// A proxy in transaction mode with `server_extra` in `[server]`.
async fn pooled(prefix: &str, server_extra: &str) -> (&'static PgCluster, Proxy, String) {
    let cluster = PgCluster::shared();
    let db = cluster.create_database(prefix).await;
    let config = in_pool_mode(&config_text(cluster, server_extra), "transaction");
    (cluster, Proxy::from_config(&config).await, db)
}

/// How many connections user `app` has to database `db` on the primary now.
async fn server_connections(cluster: &PgCluster, db: &str) -> i64 {
    let admin = cluster.superuser(&cluster.primary, db).await;
    admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND usename = 'app'",
            &[&db],
        )
        .await
        .expect("pg_stat_activity")
        .get(0)
}

#[tokio::test]
async fn many_clients_share_a_few_connections_with_their_own_statements_and_settings() {
    let (cluster, proxy, db) = pooled("pooled_many", "pool_size = 2").await;
    let setup = proxy.connect(&db).await;
    setup
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY, owner text)")
        .await
        .expect("schema");
    cluster.wait_replicated().await;
    let mut clients = Vec::new();
    for n in 0..16 {
        let mut client = proxy.connect(&db).await;
        clients.push(tokio::spawn(async move {
            // Each client's own setting, prepared statements (with the driver's names,
            // which repeat across clients) and transactions, interleaved with the others.
            let name = format!("client{n}");
            client
                .batch_execute(&format!("SET application_name = '{name}'"))
                .await
                .expect("SET");
            let insert = client
                .prepare("INSERT INTO t VALUES ($1, $2)")
                .await
                .expect("prepare insert");
            let mine = client
                .prepare("SELECT current_setting('application_name')")
                .await
                .expect("prepare read");
            for i in 0..10 {
                let id = n * 100 + i;
                client
                    .execute(&insert, &[&id, &name])
                    .await
                    .expect("insert");
                let seen: String = client.query_one(&mine, &[]).await.expect("read").get(0);
                assert_eq!(seen, name, "the client's own setting, on any connection");
                let tx = client.transaction().await.expect("BEGIN");
                let owner: String = tx
                    .query_one("SELECT owner FROM t WHERE id = $1", &[&id])
                    .await
                    .expect("read in the transaction")
                    .get(0);
                assert_eq!(owner, name);
                tx.execute("UPDATE t SET owner = owner WHERE id = $1", &[&id])
                    .await
                    .expect("write in the transaction");
                tx.commit().await.expect("COMMIT");
            }
            client
        }));
    }
    let mut done = Vec::new();
    for c in clients {
        done.push(c.await.expect("client task"));
    }
    let rows: i64 = setup
        .query_one("SELECT /* switchyard:writer */ count(*) FROM t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 160, "every acknowledged write is on the writer");
    let seen = server_connections(cluster, &db).await;
    assert!(
        seen <= 2,
        "17 clients, still connected, over at most pool_size = 2 connections to the primary: {seen}"
    );
    let metrics = proxy.admin_get("/metrics").await;
    let held: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("switchyard_prepared_statements{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(held >= 1.0, "the statements held are counted:\n{metrics}");
    let fresh = proxy.connect(&db).await;
    let name: String = fresh
        .query_one(
            "SELECT /* switchyard:writer */ current_setting('application_name')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        !name.starts_with("client"),
        "a new client sees none of another's settings: {name:?}"
    );
}

#[tokio::test]
async fn a_transaction_holds_its_connection_and_a_full_pool_answers_too_many_connections() {
    let (_, proxy, db) = pooled("pooled_full", "pool_size = 1\ncheckout_timeout = \"1s\"").await;
    let first = proxy.connect(&db).await;
    let second = proxy.connect(&db).await;
    // Idle clients hold nothing: both work one after the other.
    for client in [&first, &second] {
        client
            .batch_execute("SELECT /* switchyard:writer */ 1")
            .await
            .expect("an idle client holds no connection");
    }
    first.batch_execute("BEGIN").await.unwrap();
    first
        .batch_execute("SELECT /* switchyard:writer */ 1")
        .await
        .unwrap();
    let err = second
        .batch_execute("SELECT /* switchyard:writer */ 2")
        .await
        .expect_err("the pool's one connection is in the first client's transaction");
    assert_eq!(err.code(), Some(&SqlState::TOO_MANY_CONNECTIONS), "{err:?}");
    first.batch_execute("COMMIT").await.unwrap();
    let third = proxy.connect(&db).await;
    third
        .batch_execute("SELECT /* switchyard:writer */ 3")
        .await
        .expect("the connection is free again after COMMIT");
}

#[tokio::test]
async fn state_that_cannot_move_pins_the_client_to_its_connection() {
    let (_, proxy, db) = pooled("pooled_pins", "pool_size = 2").await;
    let pinned = proxy.connect(&db).await;
    pinned
        .batch_execute("CREATE TEMP TABLE scratch (i int)")
        .await
        .expect("temporary table");
    let other = proxy.connect(&db).await;
    for i in 0..5 {
        // Another client uses the pool meanwhile.
        other
            .batch_execute("SELECT /* switchyard:writer */ 1")
            .await
            .unwrap();
        pinned
            .execute("INSERT INTO scratch VALUES ($1)", &[&i])
            .await
            .expect("the temporary table is still there");
    }
    let n: i64 = pinned
        .query_one("SELECT count(*) FROM scratch", &[])
        .await
        .expect("read of the temporary table")
        .get(0);
    assert_eq!(n, 5, "the temporary table survives across transactions");
    let err = other
        .batch_execute("SELECT * FROM scratch")
        .await
        .expect_err("another client does not see it");
    assert_eq!(err.code(), Some(&SqlState::UNDEFINED_TABLE), "{err:?}");
    let metrics = proxy.admin_get("/metrics").await;
    assert!(
        metrics.lines().any(
            |l| l.starts_with("switchyard_pinned_sessions{reason=\"statement\"}")
                && !l.ends_with(" 0")
        ),
        "the pin is visible by reason:\n{metrics}"
    );
    let status = json_body(&proxy.admin_get("/status").await);
    assert_eq!(
        status["pinned_sessions"]["statement"], 1,
        "and in /status: {status}"
    );
    drop(pinned);
    // The pinned client's connection goes back reset: its table is gone for the next one.
    let next = proxy.connect(&db).await;
    for _ in 0..3 {
        let err = next
            .batch_execute("SELECT /* switchyard:writer */ * FROM scratch")
            .await
            .expect_err("no later client sees the temporary table");
        assert_eq!(err.code(), Some(&SqlState::UNDEFINED_TABLE), "{err:?}");
    }
}

#[tokio::test]
async fn a_sql_deallocate_of_a_protocol_statement_works_on_any_connection() {
    use super::{tags, until_ready};
    let (_, proxy, db) = pooled("pooled_deallocate", "pool_size = 2").await;
    let other = proxy.connect(&db).await;
    let mut c = RawClient::startup(proxy.addr, "trustuser", &db).await;
    let run = |sql: &str| {
        let mut parse = cstr(b"pdo_stmt_1");
        parse.extend(cstr(sql.as_bytes()));
        parse.extend_from_slice(&0i16.to_be_bytes());
        let mut bind = cstr(b"");
        bind.extend(cstr(b"pdo_stmt_1"));
        bind.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        (parse, bind)
    };
    // As PHP PDO does: Parse a named statement, use it, then DEALLOCATE it in SQL — while
    // another client's transaction holds a connection.
    let (parse, bind) = run("SELECT /* switchyard:writer */ 41 + 1");
    c.send(b'P', &parse).await;
    c.send(b'B', &bind).await;
    c.send(b'E', &[0, 0, 0, 0, 0]).await;
    c.send(b'S', b"").await;
    let answer = until_ready(&mut c).await;
    assert_eq!(tags(&answer), "12DCZ", "{answer:?}");
    other.batch_execute("BEGIN").await.unwrap();
    other
        .batch_execute("SELECT /* switchyard:writer */ 1")
        .await
        .unwrap();
    c.send(b'Q', b"DEALLOCATE pdo_stmt_1\0").await;
    let answer = until_ready(&mut c).await;
    assert_eq!(tags(&answer), "CZ", "{answer:?}");
    other.batch_execute("COMMIT").await.unwrap();
    // Gone, as on a server: a second DEALLOCATE fails with 26000.
    c.send(b'Q', b"DEALLOCATE pdo_stmt_1\0").await;
    let answer = until_ready(&mut c).await;
    assert_eq!(tags(&answer), "EZ", "{answer:?}");
    assert!(
        String::from_utf8_lossy(&answer[0].1).contains("26000"),
        "{answer:?}"
    );
    // The name is free again, with other text, on whichever connection runs it.
    let (parse, bind) = run("SELECT /* switchyard:writer */ 7");
    c.send(b'P', &parse).await;
    c.send(b'B', &bind).await;
    c.send(b'E', &[0, 0, 0, 0, 0]).await;
    c.send(b'S', b"").await;
    let answer = until_ready(&mut c).await;
    assert_eq!(tags(&answer), "12DCZ", "{answer:?}");
    assert!(answer[2].1.ends_with(b"7"), "{answer:?}");
}

/// `s` as a C string.
fn cstr(s: &[u8]) -> Vec<u8> {
    let mut v = s.to_vec();
    v.push(0);
    v
}

#[tokio::test]
async fn a_pin_lets_go_once_the_state_behind_it_is_gone() {
    // One connection: while a client is pinned, nobody else can run anything.
    let (_, proxy, db) = pooled("pooled_unpin", "pool_size = 1").await;
    let client = proxy.connect(&db).await;
    let other = proxy.connect(&db).await;
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["CREATE TEMP TABLE scratch (i int)"],
            &["DROP TABLE scratch"],
        ),
        (&["CREATE TEMP TABLE scratch (i int)"], &["DISCARD TEMP"]),
        (&["LISTEN jobs"], &["UNLISTEN jobs"]),
        (
            &["LISTEN jobs", "LISTEN mail"],
            &["UNLISTEN jobs", "UNLISTEN *"],
        ),
        (&["PREPARE q AS SELECT 1"], &["DEALLOCATE q"]),
        (
            &["SELECT pg_advisory_lock(42)"],
            &["SELECT pg_advisory_unlock(42)"],
        ),
        // Advisory locks stack: taken twice, held until released twice; a release of a
        // lock not held gives nothing back.
        (
            &["SELECT pg_advisory_lock(7)", "SELECT pg_advisory_lock(7)"],
            &[
                "SELECT pg_advisory_unlock(8)",
                "SELECT pg_advisory_unlock(7)",
                "SELECT pg_advisory_unlock(7)",
            ],
        ),
        (
            &["BEGIN", "DECLARE c CURSOR WITH HOLD FOR SELECT 1", "COMMIT"],
            &["CLOSE c"],
        ),
        // Taken and given back within one transaction.
        (
            &["BEGIN", "CREATE TEMP TABLE t (i int) ON COMMIT DROP"],
            &["COMMIT"],
        ),
    ];
    let run = async |sql: &str| client.batch_execute(sql).await.expect(sql);
    let writer = async || {
        other
            .batch_execute("SELECT /* switchyard:writer */ 1")
            .await
            .expect("the connection went back to the pool");
    };
    proxy.check_pins_let_go(cases, run, writer).await;
    // A connection that still holds what the proxy does not follow stays pinned.
    client
        .batch_execute("SELECT pg_advisory_lock(1); SELECT 1")
        .await
        .unwrap();
    client
        .batch_execute("SELECT pg_advisory_unlock_all()")
        .await
        .unwrap();
    client.batch_execute("SELECT 1").await.unwrap();
    assert_eq!(proxy.pinned("statement").await, 1, "untracked state lasts");
}

#[tokio::test]
async fn pg_backend_pid_is_the_clients_own_pid_as_its_cancel_key_and_notifications_say() {
    use tokio_postgres::SimpleQueryMessage;
    let (_, proxy, db) = pooled("pooled_identity", "pool_size = 2").await;
    let other = proxy.connect(&db).await;
    let (client, mut notifications) = proxy.connect_listening(&db).await;
    let mut pids = Vec::new();
    for c in [&client, &other] {
        // The pid of the client's cancel key (BackendKeyData).
        let (pid, _) = super::backend_key(c).await;
        let extended: i32 = c
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(extended, pid, "pg_backend_pid() is the client's pid");
        let simple = c.simple_query("SELECT pg_backend_pid()").await.unwrap();
        let row = simple
            .iter()
            .find_map(|m| match m {
                SimpleQueryMessage::Row(row) => Some(row),
                _ => None,
            })
            .expect("a row");
        assert_eq!(
            row.columns()[0].name(),
            "pg_backend_pid",
            "the column's name"
        );
        assert_eq!(
            row.get(0),
            Some(pid.to_string().as_str()),
            "simple protocol"
        );
        pids.push(pid);
    }
    assert_ne!(pids[0], pids[1], "each client has its own pid");

    // LISTEN pins the client to a connection; its own NOTIFY says it with the client's pid,
    // which is how an application skips its own notifications.
    client.batch_execute("LISTEN ch").await.unwrap();
    client.batch_execute("NOTIFY ch, 'mine'").await.unwrap();
    let n = notifications.recv().await.expect("a notification");
    assert_eq!(n.payload(), "mine");
    assert_eq!(n.process_id(), pids[0], "the client's own notification");
    other.batch_execute("NOTIFY ch, 'theirs'").await.unwrap();
    let n = notifications.recv().await.expect("a notification");
    assert_eq!(n.payload(), "theirs");
    assert!(
        !pids.contains(&n.process_id()),
        "another client's notification is not the client's own: {}",
        n.process_id()
    );
}

#[tokio::test]
async fn a_set_inside_a_transaction_follows_the_client_once_the_transaction_ends() {
    let (cluster, proxy, db) = pooled("pooled_set_in_tx", "pool_size = 2").await;
    let setup = proxy.connect(&db).await;
    setup
        .batch_execute(
            "CREATE SCHEMA app; CREATE TABLE app.t (v text); INSERT INTO app.t VALUES ('app');
             CREATE TABLE public.t (v text); INSERT INTO public.t VALUES ('public')",
        )
        .await
        .expect("schema");
    cluster.wait_replicated().await;
    let client = proxy.connect(&db).await;
    let others = [proxy.connect(&db).await, proxy.connect(&db).await];
    client.batch_execute("BEGIN").await.unwrap();
    client
        .batch_execute("SET search_path TO app, public")
        .await
        .unwrap();
    client
        .batch_execute("SET myapp.tenant = '7'")
        .await
        .unwrap();
    client
        .batch_execute("SET application_name = 'it''s \\ mine'")
        .await
        .unwrap();
    assert_eq!(
        proxy.pinned("set_in_transaction").await,
        1,
        "pinned meanwhile"
    );
    client.batch_execute("COMMIT").await.unwrap();
    // Rolled back: the setting is what it was before.
    client.batch_execute("BEGIN").await.unwrap();
    client.batch_execute("SET work_mem = '7MB'").await.unwrap();
    client.batch_execute("ROLLBACK").await.unwrap();
    client.batch_execute("SELECT 1").await.unwrap();
    assert_eq!(
        proxy.pinned("set_in_transaction").await,
        0,
        "the pin let go"
    );
    for hint in ["", "/* switchyard:writer */"] {
        for _ in 0..3 {
            for other in &others {
                // Others use the pool's connections meanwhile.
                other
                    .batch_execute("SELECT /* switchyard:writer */ 1")
                    .await
                    .unwrap();
            }
            let row = client
                .query_one(
                    &format!(
                        "SELECT {hint} v, current_setting('myapp.tenant'), \
                         current_setting('application_name'), current_setting('work_mem') FROM t"
                    ),
                    &[],
                )
                .await
                .expect("read");
            let got: (String, String, String, String) =
                (row.get(0), row.get(1), row.get(2), row.get(3));
            assert_eq!(
                got,
                (
                    "app".into(),
                    "7".into(),
                    "it's \\ mine".into(),
                    "4MB".into()
                ),
                "on any connection ({hint})"
            );
        }
    }
}
