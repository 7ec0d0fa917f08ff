//! Transaction mode with real PostgreSQL servers and tokio-postgres clients: many clients
//! over a pool of a few server connections, each with its own settings and prepared
//! statements, a transaction holding its connection, and state that pins a client.

use tokio_postgres::error::SqlState;

use super::tags;
use crate::support::load;
use crate::support::postgres::PgCluster;
use crate::support::proxy::{Proxy, RawClient, config_text, in_pool_mode, json_body, with_readers};

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

/// The value of the pool series `name` (with `state` when given) for database `db` in the
/// proxy's metrics now.
async fn pool_gauge(proxy: &Proxy, name: &str, state: Option<&str>, db: &str) -> f64 {
    let metrics = proxy.admin_get("/metrics").await;
    let database = format!("database=\"{db}\"");
    let state = state.map(|s| format!("state=\"{s}\""));
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(&database))
        .filter(|l| state.as_ref().is_none_or(|s| l.contains(s.as_str())))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The pool's connections in use, idle, and checkouts waiting, as `/metrics` shows them.
async fn pool_state(proxy: &Proxy, db: &str) -> (f64, f64, f64) {
    let connections = "switchyard_pool_connections";
    (
        pool_gauge(proxy, connections, Some("in_use"), db).await,
        pool_gauge(proxy, connections, Some("idle"), db).await,
        pool_gauge(proxy, "switchyard_pool_waiting", None, db).await,
    )
}

#[tokio::test]
async fn the_pool_gauges_show_connections_in_use_idle_and_checkouts_waiting() {
    let (_, proxy, db) = pooled("pooled_gauges", "pool_size = 1").await;
    let holder = proxy.connect(&db).await;
    // Logged in before the one connection is taken (a login needs one too).
    let waiter = proxy.connect(&db).await;
    holder.batch_execute("BEGIN").await.unwrap();
    holder
        .batch_execute("SELECT /* switchyard:writer */ 1")
        .await
        .unwrap();
    assert_eq!(pool_state(&proxy, &db).await, (1.0, 0.0, 0.0));
    // The second client's statement waits for the one connection.
    let waiting = tokio::spawn(async move {
        waiter
            .batch_execute("SELECT /* switchyard:writer */ 2")
            .await
            .expect("runs once the connection is given back");
    });
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while pool_state(&proxy, &db).await != (1.0, 0.0, 1.0) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the waiting checkout shows in switchyard_pool_waiting"
        );
        tokio::task::yield_now().await;
    }
    holder.batch_execute("COMMIT").await.unwrap();
    waiting.await.expect("the waiting client ran");
    assert_eq!(pool_state(&proxy, &db).await, (0.0, 1.0, 0.0));
    // Checkouts that took the idle connection at once count in the wait histogram, as
    // zero waits, by the time the metrics are read.
    let wait_count = "switchyard_pool_checkout_wait_seconds_count";
    let before = pool_gauge(&proxy, wait_count, None, &db).await;
    for _ in 0..3 {
        holder
            .batch_execute("SELECT /* switchyard:writer */ 3")
            .await
            .unwrap();
    }
    let after = pool_gauge(&proxy, wait_count, None, &db).await;
    assert_eq!(after, before + 3.0);
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
    use super::until_ready;
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

/// What the clients prepare in the tests below: a `SELECT *`, whose result columns DDL
/// changes, on the writer.
const SELECT_ALL: &str = "SELECT /* switchyard:writer */ * FROM t ORDER BY id";

/// Clients that name their statements as sqlx, pgx or PHP PDO do: the same names in every
/// connection (tokio-postgres numbers them across its whole process, so its clients never
/// share one), each prepared (Parse, Describe, Sync) and run (Bind, Execute, Sync) as
/// tokio-postgres does.
struct Named(RawClient);

impl Named {
    async fn connect(proxy: &Proxy, db: &str) -> Named {
        Named(RawClient::startup(proxy.addr, "trustuser", db).await)
    }

    /// Holds a connection of the pool: a transaction open on the writer.
    async fn hold_writer(&mut self) {
        self.query("BEGIN").await;
        self.query("SELECT /* switchyard:writer */ 1").await;
    }

    async fn query(&mut self, sql: &str) -> Vec<(u8, Vec<u8>)> {
        self.query_bytes(sql.as_bytes()).await
    }

    /// A simple Query of `sql` in whatever encoding it is.
    async fn query_bytes(&mut self, sql: &[u8]) -> Vec<(u8, Vec<u8>)> {
        self.0.send(b'Q', &cstr(sql)).await;
        super::until_ready(&mut self.0).await
    }

    /// Parse, Describe (when `describe`; PHP PDO describes nothing) and Sync.
    async fn prepare(&mut self, name: &str, sql: &str, describe: bool) -> Vec<(u8, Vec<u8>)> {
        self.prepare_after(&[], name, sql, describe).await
    }

    /// [`Named::prepare`] of a name the client has: Close, then Parse, in one batch (a
    /// server refuses a Parse of a name in use).
    async fn reprepare(&mut self, name: &str, sql: &str, describe: bool) -> Vec<(u8, Vec<u8>)> {
        let close = [&b"S"[..], &cstr(name.as_bytes())].concat();
        self.prepare_after(&[(b'C', close)], name, sql, describe)
            .await
    }

    async fn prepare_after(
        &mut self,
        before: &[(u8, Vec<u8>)],
        name: &str,
        sql: &str,
        describe: bool,
    ) -> Vec<(u8, Vec<u8>)> {
        for (tag, body) in before {
            self.0.send(*tag, body).await;
        }
        let mut parse = cstr(name.as_bytes());
        parse.extend(cstr(sql.as_bytes()));
        parse.extend_from_slice(&0i16.to_be_bytes());
        self.0.send(b'P', &parse).await;
        if describe {
            self.0
                .send(b'D', &[&b"S"[..], &cstr(name.as_bytes())].concat())
                .await;
        }
        self.0.send(b'S', b"").await;
        super::until_ready(&mut self.0).await
    }

    async fn execute(&mut self, name: &str) -> Vec<(u8, Vec<u8>)> {
        self.execute_batch(&[name]).await
    }

    /// Bind and Execute of each statement of `names`, then one Sync: one batch, as pgx
    /// batches and JDBC batches send.
    async fn execute_batch(&mut self, names: &[&str]) -> Vec<(u8, Vec<u8>)> {
        for name in names {
            let mut bind = cstr(b"");
            bind.extend(cstr(name.as_bytes()));
            bind.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
            self.0.send(b'B', &bind).await;
            self.0.send(b'E', &[0, 0, 0, 0, 0]).await;
        }
        self.0.send(b'S', b"").await;
        super::until_ready(&mut self.0).await
    }
}

/// The number of fields of an answer's first RowDescription (`T`) or DataRow (`D`).
fn fields(answer: &[(u8, Vec<u8>)], tag: u8) -> Option<i16> {
    let (_, body) = answer.iter().find(|(t, _)| *t == tag)?;
    Some(i16::from_be_bytes([*body.first()?, *body.get(1)?]))
}

/// The SQLSTATE of an answer's ErrorResponse, if it has one.
fn error_code(answer: &[(u8, Vec<u8>)]) -> Option<String> {
    let (_, body) = answer.iter().find(|(t, _)| *t == b'E')?;
    Some(crate::support::proxy::sqlstate(body))
}

/// `switchyard_prepared_statements_replanned_total` with `outcome`, from `/metrics` (0
/// before the first). The recorder is the test process's: other tests running at the same
/// time count in it too, so tests compare before and after.
async fn replanned(proxy: &Proxy, outcome: &str) -> u64 {
    let metrics = proxy.admin_get("/metrics").await;
    let label = format!("outcome=\"{outcome}\"");
    let cluster = "cluster=\"main\"";
    metrics
        .lines()
        .find(|l| {
            l.starts_with("switchyard_prepared_statements_replanned_total{")
                && l.contains(&label)
                && l.contains(cluster)
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// A proxy with `pool_size = 2` whose connections hold statement `stmt_1` ([`SELECT_ALL`])
/// each as prepared on one side of `ALTER TABLE t ADD COLUMN note`: the first connection
/// (the one last given back) after it, by `described` (told both columns) and `plain`
/// (told none); the other by `early`, before it, which was told one. `holder` is a fourth
/// client, idle.
struct Stale {
    proxy: Proxy,
    db: String,
    holder: Named,
    early: Named,
    described: Named,
    plain: Named,
}

async fn stale(prefix: &str) -> Stale {
    let (cluster, proxy, db) = pooled(prefix, "pool_size = 2").await;
    let setup = proxy.connect(&db).await;
    setup
        .batch_execute(
            "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1);
             GRANT SELECT ON t TO PUBLIC",
        )
        .await
        .expect("schema");
    let mut holder = Named::connect(&proxy, &db).await;
    // A transaction holds one connection while `early` prepares on the other.
    holder.hold_writer().await;
    let mut early = Named::connect(&proxy, &db).await;
    let told = early.prepare("stmt_1", SELECT_ALL, true).await;
    assert_eq!(fields(&told, b'T'), Some(1), "{told:?}");
    assert_eq!(fields(&early.execute("stmt_1").await, b'D'), Some(1));
    holder.query("COMMIT").await;
    // The DDL runs on a connection of its own, outside the pool.
    let direct = cluster.superuser(&cluster.primary, &db).await;
    direct
        .batch_execute("ALTER TABLE t ADD COLUMN note text DEFAULT 'added'")
        .await
        .expect("DDL");
    // On the connection the holder's COMMIT gave back last, which lacks `stmt_1`.
    let mut described = Named::connect(&proxy, &db).await;
    let told = described.prepare("stmt_1", SELECT_ALL, true).await;
    assert_eq!(fields(&told, b'T'), Some(2), "{told:?}");
    let mut plain = Named::connect(&proxy, &db).await;
    let answer = plain.prepare("stmt_1", SELECT_ALL, false).await;
    assert_eq!(tags(&answer), "1Z", "{answer:?}");
    Stale {
        proxy,
        db,
        holder,
        early,
        described,
        plain,
    }
}

#[tokio::test]
async fn after_ddl_a_statement_prepared_again_runs_where_another_client_prepared_it_before() {
    let Stale {
        proxy,
        db,
        mut holder,
        mut plain,
        ..
    } = stale("pooled_replan").await;
    // The holder takes the connection `plain` prepared on: `plain` runs on the other,
    // whose `stmt_1` of the same text predates the DDL. The server fails it, and the proxy
    // prepares it again there and runs the batch once more.
    holder.hold_writer().await;
    let retried = replanned(&proxy, "retried").await;
    let answer = plain.execute("stmt_1").await;
    assert_eq!(
        error_code(&answer),
        None,
        "prepared after the DDL, it runs as on a server of its own: {answer:?}"
    );
    assert_eq!(fields(&answer, b'D'), Some(2), "{answer:?}");
    assert_eq!(tags(&answer), "2DCZ", "only the retried answer: {answer:?}");
    assert!(replanned(&proxy, "retried").await > retried);
    holder.query("COMMIT").await;
    for _ in 0..2 {
        assert_eq!(fields(&plain.execute("stmt_1").await, b'D'), Some(2));
    }
    // Many tokio-postgres clients at once over both connections, after another change of
    // columns: each prepares again and runs with the new columns.
    let setup = proxy.connect(&db).await;
    setup
        .batch_execute("ALTER TABLE t ADD COLUMN more int DEFAULT 7")
        .await
        .expect("DDL");
    let mut clients = Vec::new();
    for _ in 0..8 {
        let client = proxy.connect(&db).await;
        clients.push(tokio::spawn(async move {
            let statement = client.prepare(SELECT_ALL).await.expect("prepare");
            for _ in 0..5 {
                let rows = client.query(&statement, &[]).await.expect("run");
                let more: i32 = rows[0].get(2);
                assert_eq!((rows[0].len(), more), (3, 7));
            }
        }));
    }
    for c in clients {
        c.await.expect("client task");
    }
}

#[tokio::test]
async fn a_client_told_the_new_columns_runs_where_the_statement_is_stale_even_in_a_transaction() {
    let Stale {
        mut holder,
        mut described,
        ..
    } = stale("pooled_recheck").await;
    // Its columns here are not the ones the client was told: prepared and described again
    // first, in a round trip of the proxy's own, so no error comes at all.
    holder.hold_writer().await;
    described.query("BEGIN").await;
    let answer = described.execute("stmt_1").await;
    assert_eq!(
        tags(&answer),
        "2DCZ",
        "as on a server of its own: {answer:?}"
    );
    assert_eq!(fields(&answer, b'D'), Some(2), "{answer:?}");
    described.query("COMMIT").await;
    holder.query("COMMIT").await;
    for _ in 0..2 {
        assert_eq!(fields(&described.execute("stmt_1").await, b'D'), Some(2));
    }
}

#[tokio::test]
async fn a_client_told_the_old_columns_gets_the_servers_error() {
    let Stale {
        proxy,
        mut holder,
        mut early,
        ..
    } = stale("pooled_replan_early").await;
    let errors = replanned(&proxy, "error").await;
    // `early` runs on its own connection, whose `stmt_1` is its own, from before the DDL:
    // the server fails it, and prepared again its columns are not the ones `early` knows.
    holder.hold_writer().await;
    let answer = early.execute("stmt_1").await;
    assert_eq!(
        error_code(&answer).as_deref(),
        Some("0A000"),
        "rows of two columns would not decode by the one it was told: {answer:?}"
    );
    holder.query("COMMIT").await;
    // And on the connection the holder gave back, where `described` prepared it after the
    // DDL.
    let answer = early.execute("stmt_1").await;
    assert_eq!(
        error_code(&answer).as_deref(),
        Some("0A000"),
        "the same text prepared by another client after the DDL: {answer:?}"
    );
    assert!(replanned(&proxy, "error").await >= errors + 2);
}

/// The DataRow field counts of an answer, in order.
fn row_fields(answer: &[(u8, Vec<u8>)]) -> Vec<i16> {
    answer
        .iter()
        .filter(|(t, _)| *t == b'D')
        .filter_map(|(_, body)| Some(i16::from_be_bytes([*body.first()?, *body.get(1)?])))
        .collect()
}

/// A statement of one column no DDL changes.
const SELECT_ONE: &str = "SELECT /* switchyard:writer */ 1";

#[tokio::test]
async fn later_in_a_batch_a_client_told_the_new_columns_runs_where_the_statement_is_stale() {
    // The batch as it comes, after a Close (written before the statements that follow it),
    // and after a Parse of a statement the connection holds (closed there first): the
    // client's own, which it closes first, as a server wants.
    let mut parse = cstr(b"stmt_0");
    parse.extend(cstr(SELECT_ONE.as_bytes()));
    parse.extend_from_slice(&0i16.to_be_bytes());
    // Messages sent before the batch's statements (tag, body).
    type Prelude = Vec<(u8, Vec<u8>)>;
    let preludes: [(&str, Prelude, &str); 3] = [
        ("pooled_batch_new", vec![], ""),
        (
            "pooled_batch_close",
            vec![(b'C', b"Sstmt_gone\0".to_vec())],
            "3",
        ),
        (
            "pooled_batch_parse",
            vec![(b'C', b"Sstmt_0\0".to_vec()), (b'P', parse)],
            "31",
        ),
    ];
    for (prefix, prelude, answered) in preludes {
        let Stale {
            mut holder,
            mut described,
            ..
        } = stale(prefix).await;
        // On the connection `early` prepared `stmt_1` on before the DDL, `described`
        // prepares another statement, then binds both in one batch: `stmt_1` second.
        holder.hold_writer().await;
        let told = described.prepare("stmt_0", SELECT_ONE, true).await;
        assert_eq!(fields(&told, b'T'), Some(1), "{told:?}");
        for (tag, body) in &prelude {
            described.0.send(*tag, body).await;
        }
        let answer = described.execute_batch(&["stmt_0", "stmt_1"]).await;
        assert_eq!(
            error_code(&answer),
            None,
            "{prefix}: told the new columns, as on a server of its own: {answer:?}"
        );
        assert_eq!(
            tags(&answer),
            format!("{answered}2DC2DCZ"),
            "{prefix}: {answer:?}"
        );
        assert_eq!(row_fields(&answer), [1, 2], "{prefix}: {answer:?}");
        holder.query("COMMIT").await;
    }
}

#[tokio::test]
async fn later_in_a_batch_a_client_told_the_old_columns_gets_the_servers_error() {
    let Stale {
        proxy, mut early, ..
    } = stale("pooled_batch_old").await;
    let errors = replanned(&proxy, "error").await;
    // On the connection given back last, where `described` prepared `stmt_1` after the
    // DDL: `early`, told one column, binds it second in a batch. Its own server runs the
    // first statement and fails `stmt_1`, skipping the rest of the batch.
    let told = early.prepare("stmt_0", SELECT_ONE, true).await;
    assert_eq!(fields(&told, b'T'), Some(1), "{told:?}");
    let answer = early.execute_batch(&["stmt_0", "stmt_1", "stmt_0"]).await;
    assert_eq!(
        error_code(&answer).as_deref(),
        Some("0A000"),
        "rows of two columns would not decode by the one it was told: {answer:?}"
    );
    assert_eq!(tags(&answer), "2DCEZ", "{answer:?}");
    assert_eq!(row_fields(&answer), [1], "{answer:?}");
    assert!(replanned(&proxy, "error").await > errors);
    // Prepared again, as a driver does after that error, the batch runs.
    let told = early.reprepare("stmt_1", SELECT_ALL, true).await;
    assert_eq!(fields(&told, b'T'), Some(2), "{told:?}");
    let answer = early.execute_batch(&["stmt_0", "stmt_1"]).await;
    assert_eq!(row_fields(&answer), [1, 2], "{answer:?}");
}

/// tokio-postgres ends each query of a pipeline with a Sync: each is a unit of its own,
/// checked as its first message (a batch of several statements before one Sync, as pgx and
/// JDBC send, is the `later_in_a_batch_…` tests' case).
#[tokio::test]
async fn pipelined_tokio_postgres_statements_fail_or_run_by_the_columns_their_client_was_told() {
    let (cluster, proxy, db) = pooled("pooled_pipelined", "pool_size = 2").await;
    let setup = proxy.connect(&db).await;
    setup
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)")
        .await
        .expect("schema");
    let early = proxy.connect(&db).await;
    let (one, old) = (
        early.prepare(SELECT_ONE).await.expect("prepare"),
        early.prepare(SELECT_ALL).await.expect("prepare"),
    );
    let direct = cluster.superuser(&cluster.primary, &db).await;
    direct
        .batch_execute("ALTER TABLE t ADD COLUMN note text DEFAULT 'added'")
        .await
        .expect("DDL");
    let late = proxy.connect(&db).await;
    let new = late.prepare(SELECT_ALL).await.expect("prepare");
    for _ in 0..2 {
        // tokio-postgres writes both queries at once (each Bind, Execute, Sync).
        let (first, second) =
            futures_util::future::join(early.query(&one, &[]), early.query(&old, &[])).await;
        assert_eq!(first.expect("unchanged")[0].len(), 1);
        let err = second.expect_err("told the old columns");
        assert_eq!(
            err.code(),
            Some(&SqlState::FEATURE_NOT_SUPPORTED),
            "{err:?}"
        );
        let (first, second) =
            futures_util::future::try_join(late.query(&new, &[]), late.query(&new, &[]))
                .await
                .expect("told the new columns");
        assert_eq!((first[0].len(), second[0].len()), (2, 2));
    }
}

#[tokio::test]
async fn a_statement_prepared_before_ddl_fails_as_on_its_own_server_on_any_connection() {
    let (cluster, proxy, db) = pooled("pooled_changed_columns", "pool_size = 2").await;
    let setup = proxy.connect(&db).await;
    setup
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)")
        .await
        .expect("schema");
    // A transaction holds one connection while the client prepares on the other.
    let holder = proxy.connect(&db).await;
    let hold = async || {
        holder.batch_execute("BEGIN").await.unwrap();
        holder
            .batch_execute("SELECT /* switchyard:writer */ 1")
            .await
            .unwrap();
    };
    hold().await;
    let client = proxy.connect(&db).await;
    let old = client.prepare(SELECT_ALL).await.expect("prepare");
    assert_eq!(client.query(&old, &[]).await.expect("run")[0].len(), 1);
    holder.batch_execute("COMMIT").await.unwrap();
    let direct = cluster.superuser(&cluster.primary, &db).await;
    direct
        .batch_execute("ALTER TABLE t ADD COLUMN note text DEFAULT 'added'")
        .await
        .expect("DDL");
    // On the connection the holder gave back, which never held it: prepared there now it
    // would have the new columns, which tokio-postgres cannot decode by the old ones.
    let err = client
        .query(&old, &[])
        .await
        .expect_err("prepared before the DDL");
    assert_eq!(
        err.code(),
        Some(&SqlState::FEATURE_NOT_SUPPORTED),
        "{err:?}"
    );
    // On its own connection, where it is stale.
    hold().await;
    let err = client
        .query(&old, &[])
        .await
        .expect_err("prepared before the DDL");
    assert_eq!(
        err.code(),
        Some(&SqlState::FEATURE_NOT_SUPPORTED),
        "{err:?}"
    );
    holder.batch_execute("COMMIT").await.unwrap();
    // Prepared again, as a driver does after that error, it runs on either connection.
    let new = client.prepare(SELECT_ALL).await.expect("prepare again");
    for _ in 0..2 {
        hold().await;
        assert_eq!(client.query(&new, &[]).await.expect("run")[0].len(), 2);
        holder.batch_execute("COMMIT").await.unwrap();
        assert_eq!(client.query(&new, &[]).await.expect("run")[0].len(), 2);
    }
}

#[tokio::test]
async fn in_a_transaction_a_changed_result_type_is_the_servers_error() {
    let Stale {
        mut holder,
        mut plain,
        ..
    } = stale("pooled_replan_tx").await;
    holder.hold_writer().await;
    plain.query("BEGIN").await;
    let answer = plain.execute("stmt_1").await;
    assert_eq!(
        error_code(&answer).as_deref(),
        Some("0A000"),
        "in a transaction the error is relayed, not retried: {answer:?}"
    );
    assert_eq!(answer.last().map(|(_, s)| s.as_slice()), Some(&b"E"[..]));
    holder.query("COMMIT").await;
    plain.query("ROLLBACK").await;
    // Outside the transaction, on that same connection (the last given back), it runs.
    let answer = plain.execute("stmt_1").await;
    assert_eq!(error_code(&answer), None, "{answer:?}");
    assert_eq!(fields(&answer, b'D'), Some(2), "{answer:?}");
}

#[tokio::test]
async fn discard_all_drops_the_clients_statements_as_on_a_server() {
    let (_, proxy, db) = pooled("pooled_discard", "pool_size = 2").await;
    let other = proxy.connect(&db).await;
    let client = proxy.connect(&db).await;
    let mine = client
        .prepare("SELECT /* switchyard:writer */ 1")
        .await
        .expect("prepare");
    let theirs = other
        .prepare("SELECT /* switchyard:writer */ 2")
        .await
        .expect("prepare");
    // Another client's transaction holds the connection last used; DISCARD ALL runs on
    // the other one, which pins the client to it.
    other.batch_execute("BEGIN").await.unwrap();
    other.query(&theirs, &[]).await.expect("run");
    client
        .batch_execute("DISCARD ALL")
        .await
        .expect("DISCARD ALL");
    other.batch_execute("COMMIT").await.unwrap();
    let err = client
        .query(&mine, &[])
        .await
        .expect_err("DISCARD ALL dropped the client's statements");
    assert_eq!(
        err.code(),
        Some(&SqlState::INVALID_SQL_STATEMENT_NAME),
        "{err:?}"
    );
    // What the client prepares now works, and once it leaves (its connection reset) the
    // other client's statement works on every connection.
    let again = client
        .prepare("SELECT /* switchyard:writer */ 1")
        .await
        .expect("prepare after DISCARD ALL");
    let one: i32 = client.query_one(&again, &[]).await.expect("run").get(0);
    assert_eq!(one, 1);
    drop(client);
    for _ in 0..3 {
        let two: i32 = other.query_one(&theirs, &[]).await.expect("run").get(0);
        assert_eq!(two, 2);
    }
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
    client
        .batch_execute("SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL REPEATABLE READ")
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
                         current_setting('application_name'), current_setting('work_mem'), \
                         current_setting('default_transaction_isolation') FROM t"
                    ),
                    &[],
                )
                .await
                .expect("read");
            let got: (String, String, String, String, String) =
                (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
            assert_eq!(
                got,
                (
                    "app".into(),
                    "7".into(),
                    "it's \\ mine".into(),
                    "4MB".into(),
                    "repeatable read".into()
                ),
                "on any connection ({hint})"
            );
        }
    }
}

#[tokio::test]
async fn a_set_in_a_transaction_that_cannot_be_read_back_keeps_the_pin_for_good() {
    let (_, proxy, db) = pooled("pooled_set_kept", "pool_size = 2").await;
    let client = proxy.connect(&db).await;
    let other = proxy.connect(&db).await;
    for sql in [
        // Recorded, and replayed on whichever connection the client takes.
        "SET work_mem = '7MB'",
        // RESET ALL names no setting to read back: the connection holds what no record
        // says, so the client stays on it.
        "BEGIN",
        "RESET ALL",
        "COMMIT",
        // A later transaction's SET, which can be read back, must not let that pin go.
        "BEGIN",
        "SET statement_timeout = '5s'",
        "COMMIT",
    ] {
        client.batch_execute(sql).await.unwrap();
    }
    assert_eq!(proxy.pinned("set_in_transaction").await, 1, "still pinned");
    for _ in 0..3 {
        other
            .batch_execute("SELECT /* switchyard:writer */ 1")
            .await
            .unwrap();
        let row = client
            .query_one(
                "SELECT current_setting('work_mem'), current_setting('statement_timeout')",
                &[],
            )
            .await
            .expect("read");
        let got: (String, String) = (row.get(0), row.get(1));
        assert_eq!(got, ("4MB".into(), "5s".into()), "as the server left them");
    }
}

/// A proxy with one pooled connection, two of its clients and a table `ro`: the first
/// client ran its own setting `own`, then the cluster was made read-only.
async fn read_only_with_own_setting(
    prefix: &str,
    own: &str,
) -> (Proxy, tokio_postgres::Client, tokio_postgres::Client) {
    let (_, proxy, db) = pooled(prefix, "pool_size = 1").await;
    let (client, other) = (proxy.connect(&db).await, proxy.connect(&db).await);
    client
        .batch_execute("CREATE TABLE ro (i int)")
        .await
        .expect("schema");
    client.batch_execute(own).await.expect(own);
    proxy.read_only(true).await;
    (proxy, client, other)
}

#[tokio::test]
async fn read_only_mode_holds_on_a_connection_a_clients_replayed_settings_made_read_write() {
    // The client's own default, recorded and replayed wherever it goes (JDBC's
    // setReadOnly(false) sends this).
    let own = "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE";
    let (proxy, client, other) = read_only_with_own_setting("pooled_read_only_replayed", own).await;
    // Another client's transaction takes the pool's one connection (reset: it held the
    // client's setting) and makes it read-only …
    super::run_all(&other, &["BEGIN", "SELECT 1", "COMMIT"]).await;
    // … then the client takes it, its setting replayed: its transaction is still read-only,
    // so a write inside it, which the proxy lets through, is refused by the database.
    for _ in 0..2 {
        super::refused_in_transaction(&client, "INSERT INTO ro VALUES (1)").await;
        // Its own SET again, in read-only mode: the next transaction is read-only too.
        super::run_all(&client, &["SET default_transaction_read_only = off"]).await;
    }
    // A transaction asked for read-write in so many words: refused at its start, as a
    // standby refuses it …
    super::refused_read_only(&client, "BEGIN READ WRITE").await;
    // … or made read-write inside: made read-only again at once.
    super::run_all(&client, &["BEGIN", "SET TRANSACTION READ WRITE"]).await;
    super::refused_read_only(&client, "INSERT INTO ro VALUES (1)").await;
    super::run_all(&client, &["ROLLBACK"]).await;
    proxy.read_only(false).await;
    client
        .batch_execute("BEGIN; INSERT INTO ro VALUES (2); COMMIT")
        .await
        .expect("writes again");
}

#[tokio::test]
async fn a_clients_own_read_only_default_outlives_read_only_mode() {
    let own = "SET default_transaction_read_only = on";
    let (proxy, client, other) = read_only_with_own_setting("pooled_own_read_only", own).await;
    super::run_all(&client, &["BEGIN", "SELECT 1", "COMMIT"]).await;
    proxy.read_only(false).await;
    // The client's transactions stay read-only, as it asked; the other client's are not.
    super::refused_in_transaction(&client, "INSERT INTO ro VALUES (1)").await;
    super::run_all(&other, &["BEGIN", "INSERT INTO ro VALUES (2)", "COMMIT"]).await;
}

#[tokio::test]
async fn sqlx_clients_with_the_same_statement_names_share_two_connections() {
    let (_, proxy, db) = pooled("pooled_sqlx", "pool_size = 2").await;
    let setup = proxy.connect(&db).await;
    setup
        .batch_execute("CREATE TABLE kv (k int PRIMARY KEY, v text)")
        .await
        .expect("schema");
    let url = format!(
        "postgres://app:app-secret@127.0.0.1:{}/{db}",
        proxy.addr.port()
    );
    crate::support::sqlx_clients_share_a_pool!(
        sqlx::PgConnection,
        url,
        i32,
        "INSERT INTO kv VALUES ($1, $2)",
        "SELECT /* switchyard:writer */ v FROM kv WHERE k = $1",
        "SELECT $1::int + $2::int"
    );
}

#[tokio::test]
async fn pg_cancel_backend_of_a_clients_own_pid_cancels_that_clients_statement() {
    use std::time::Duration;
    let (_, proxy, db) = pooled("pooled_cancel_pid", "pool_size = 3").await;
    let (victim, bystander, killer) = three_clients(&proxy, &db).await;
    let pid = pid_of(&victim).await;
    let sleeping = tokio::spawn(async move {
        let slept = victim
            .batch_execute("SELECT /* switchyard:writer */ pg_sleep(60)")
            .await;
        // The client lives on: its pid stays its own until the test ends.
        (victim, slept)
    });
    let calm = tokio::spawn(async move {
        bystander
            .batch_execute("SELECT /* switchyard:writer */ pg_sleep(0.5)")
            .await
    });
    // Until the victim's statement runs: before, there is nothing to cancel.
    let cancelled = crate::support::retry(Duration::from_secs(30), async || {
        // As psql sends it: a simple Query.
        let answer = killer
            .simple_query(&format!("SELECT pg_cancel_backend({pid})"))
            .await
            .expect("answered");
        let sent = answer.iter().find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        });
        assert_eq!(
            sent.as_deref(),
            Some("t"),
            "as a server says of a process it signalled"
        );
        if sleeping.is_finished() {
            Ok(())
        } else {
            Err(())
        }
    })
    .await;
    assert!(cancelled.is_ok(), "the victim's statement ended");
    let (_victim, slept) = sleeping.await.unwrap();
    let err = slept.expect_err("the victim's statement was cancelled");
    assert_eq!(err.code(), Some(&SqlState::QUERY_CANCELED), "{err:?}");
    calm.await
        .unwrap()
        .expect("no other client's statement is cancelled");
}

/// Runs `SELECT 1` on the writer as `other`: it gets the pool's one connection, so the
/// client before it let it go.
async fn writer_is_free(other: &tokio_postgres::Client, after: &str) {
    other
        .batch_execute("SELECT /* switchyard:writer */ 1")
        .await
        .unwrap_or_else(|e| panic!("the connection went back to the pool after {after}: {e:?}"));
}

#[tokio::test]
async fn a_setting_set_again_at_every_request_replaces_the_one_before() {
    // One connection per instance: a client that held its connection would starve `other`.
    let (cluster, proxy, db) = pooled("pooled_many_sets", "pool_size = 1").await;
    cluster.wait_replicated().await;
    let client = proxy.connect(&db).await;
    let other = proxy.connect(&db).await;
    client
        .batch_execute("SET search_path TO public")
        .await
        .unwrap();
    // An ORM setting the same variables at every request, far more often than the proxy
    // records settings.
    for i in 0..300 {
        client
            .batch_execute(&format!("SET myapp.request = '{i}'"))
            .await
            .unwrap();
        client
            .batch_execute(&format!("SET work_mem = '{}kB'", 64 + i))
            .await
            .unwrap();
        if i % 100 == 0 {
            writer_is_free(&other, "a SET").await;
        }
    }
    assert_eq!(proxy.pinned("too_many_settings").await, 0, "nothing pins");
    writer_is_free(&other, "300 SETs").await;
    for hint in ["", "/* switchyard:writer */"] {
        let row = client
            .query_one(
                &format!(
                    "SELECT {hint} current_setting('myapp.request'), current_setting('work_mem'), \
                     current_setting('search_path')"
                ),
                &[],
            )
            .await
            .unwrap();
        let got: (String, String, String) = (row.get(0), row.get(1), row.get(2));
        assert_eq!(
            got,
            ("299".into(), "363kB".into(), "public".into()),
            "the latest values, on any connection ({hint})"
        );
        writer_is_free(&other, "a read").await;
    }
    // Another client's connection never carries them.
    let row = other
        .query_one(
            "SELECT /* switchyard:writer */ current_setting('myapp.request', true)",
            &[],
        )
        .await
        .unwrap();
    // (A reset leaves a placeholder setting defined, empty.)
    let value = row.get::<_, Option<String>>(0).unwrap_or_default();
    assert_eq!(value, "", "not the client's");
    // More distinct settings than recorded do pin.
    for i in 0..300 {
        client
            .batch_execute(&format!("SET myapp.s{i} = '1'"))
            .await
            .unwrap();
    }
    assert_eq!(proxy.pinned("too_many_settings").await, 1);
    let row = client
        .query_one(
            "SELECT current_setting('myapp.s0'), current_setting('myapp.s299')",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, String>(1)),
        ("1".into(), "1".into())
    );
}

#[tokio::test]
async fn a_serializable_session_reads_on_the_writer_without_holding_a_connection() {
    let (cluster, proxy, db) = pooled("pooled_serializable", "pool_size = 1").await;
    cluster.wait_replicated().await;
    let conninfo = format!(
        "{} options='-c default_transaction_isolation=serializable'",
        proxy.conninfo("app", "app-secret", &db)
    );
    // Both in the pool of this login (its startup options are part of the pool's key).
    let mut clients = Vec::new();
    for _ in 0..2 {
        let (client, connection) = tokio_postgres::connect(&conninfo, tokio_postgres::NoTls)
            .await
            .expect("connect serializable");
        tokio::spawn(connection);
        clients.push(client);
    }
    let (client, other) = (&clients[0], &clients[1]);
    for _ in 0..3 {
        let row = client
            .query_one(
                "SELECT pg_is_in_recovery(), current_setting('transaction_isolation')",
                &[],
            )
            .await
            .expect("a serializable read");
        let got: (bool, String) = (row.get(0), row.get(1));
        assert_eq!(got, (false, "serializable".into()), "on the writer");
        assert_eq!(proxy.pinned("serializable").await, 2, "shown as such");
        writer_is_free(other, "a serializable read").await;
    }
    // A SET of another default ends it; a RESET goes back to the login's.
    for (set, in_recovery, pinned) in [
        (
            "SET default_transaction_isolation = 'read committed'",
            true,
            1,
        ),
        ("RESET default_transaction_isolation", false, 2),
    ] {
        client.batch_execute(set).await.expect(set);
        let row = client
            .query_one("SELECT pg_is_in_recovery()", &[])
            .await
            .unwrap();
        assert_eq!(row.get::<_, bool>(0), in_recovery, "after {set}");
        assert_eq!(proxy.pinned("serializable").await, pinned, "after {set}");
        writer_is_free(other, set).await;
    }
}

#[tokio::test]
async fn a_set_of_the_default_isolation_starts_and_ends_reads_on_the_writer() {
    let (cluster, proxy, db) = pooled("pooled_set_serializable", "pool_size = 1").await;
    cluster.wait_replicated().await;
    let client = proxy.connect(&db).await;
    let other = proxy.connect(&db).await;
    let cases = [
        ("SELECT 1", "read committed"),
        (
            "SET default_transaction_isolation = 'serializable'",
            "serializable",
        ),
        (
            "SET default_transaction_isolation = 'read committed'",
            "read committed",
        ),
        (
            "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE",
            "serializable",
        ),
        ("RESET default_transaction_isolation", "read committed"),
        (
            "SET statement_timeout = 0; SET default_transaction_isolation TO serializable",
            "serializable",
        ),
        (
            "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL REPEATABLE READ",
            "repeatable read",
        ),
    ];
    for (set, level) in cases {
        client.batch_execute(set).await.expect(set);
        let serializable = level == "serializable";
        for _ in 0..2 {
            let row = client
                .query_one(
                    "SELECT pg_is_in_recovery(), current_setting('transaction_isolation')",
                    &[],
                )
                .await
                .unwrap_or_else(|e| panic!("a read after {set}: {e:?}"));
            let got: (bool, String) = (row.get(0), row.get(1));
            assert_eq!(got, (!serializable, level.into()), "after {set}");
            let pinned = proxy.pinned("serializable").await;
            assert_eq!(pinned, i64::from(serializable), "after {set}");
            assert_eq!(proxy.pinned("statement").await, 0, "after {set}");
            writer_is_free(&other, set).await;
        }
    }
}

#[tokio::test]
async fn a_query_of_several_sets_follows_the_client_without_pinning_it() {
    let (cluster, proxy, db) = pooled("pooled_multi_set", "pool_size = 1").await;
    cluster.wait_replicated().await;
    let client = proxy.connect(&db).await;
    let other = proxy.connect(&db).await;
    client
        .batch_execute(
            "SET search_path TO app, public; SET statement_timeout = 0; SET myapp.tenant = '7'",
        )
        .await
        .expect("several SETs");
    assert_eq!(proxy.pinned("statement").await, 0, "nothing pins");
    writer_is_free(&other, "several SETs").await;
    // One fails: the text ran in one implicit transaction, so none of them took effect.
    let err = client
        .batch_execute("SET myapp.tenant = '8'; SET statement_timeout = 'soon'")
        .await
        .expect_err("an invalid value");
    assert_eq!(err.code(), Some(&SqlState::INVALID_PARAMETER_VALUE));
    writer_is_free(&other, "a failed text").await;
    // Nor does a lone SET that fails (the proxy records a SET once it succeeded).
    let err = client
        .batch_execute("SET statement_timeout = 'later'")
        .await
        .expect_err("an invalid value");
    assert_eq!(err.code(), Some(&SqlState::INVALID_PARAMETER_VALUE));
    writer_is_free(&other, "a failed SET").await;
    for hint in ["", "/* switchyard:writer */"] {
        let row = client
            .query_one(
                &format!(
                    "SELECT {hint} current_setting('search_path'), \
                     current_setting('statement_timeout'), current_setting('myapp.tenant')"
                ),
                &[],
            )
            .await
            .unwrap_or_else(|e| panic!("a read ({hint}): {e:?}"));
        let got: (String, String, String) = (row.get(0), row.get(1), row.get(2));
        assert_eq!(
            got,
            ("app, public".into(), "0".into(), "7".into()),
            "on any connection ({hint})"
        );
        writer_is_free(&other, "a read").await;
    }
    assert_eq!(proxy.pinned("settings_refused").await, 0);
}

#[tokio::test]
async fn settings_a_reader_refuses_send_reads_to_the_writer_until_they_change() {
    let (cluster, proxy, db) = pooled("pooled_refused", "pool_size = 1").await;
    cluster.wait_replicated().await;
    let client = proxy.connect(&db).await;
    let other = proxy.connect(&db).await;
    let in_recovery = async || -> bool {
        client
            .query_one("SELECT pg_is_in_recovery()", &[])
            .await
            .expect("a read")
            .get(0)
    };
    assert!(in_recovery().await, "reads go to a reader");
    // A standby refuses read-write mode.
    client
        .batch_execute("SET transaction_read_only = off")
        .await
        .unwrap();
    for _ in 0..2 {
        assert!(!in_recovery().await, "on the writer");
        assert_eq!(proxy.pinned("settings_refused").await, 1);
        writer_is_free(&other, "a read on the writer").await;
    }
    client
        .batch_execute("SET transaction_read_only = on")
        .await
        .unwrap();
    assert!(in_recovery().await, "on a reader again");
    assert_eq!(proxy.pinned("settings_refused").await, 0);
}

#[tokio::test]
async fn a_set_the_proxy_cannot_record_as_written_is_read_back_and_lets_go() {
    use super::until_ready;
    let (cluster, proxy, db) = pooled("pooled_unreplayable", "pool_size = 1").await;
    cluster.wait_replicated().await;
    let mut client = Named::connect(&proxy, &db).await;
    let mut other = Named::connect(&proxy, &db).await;
    let writer_is_free = async |other: &mut Named, after: &str| {
        let answer = other.query("SELECT /* switchyard:writer */ 1").await;
        assert_eq!(
            tags(&answer),
            "TDCZ",
            "the connection is free after {after}: {answer:?}"
        );
    };
    client.query("SET client_encoding = 'LATIN1'").await;
    // Text in LATIN1, not UTF-8: the proxy records no such text.
    let answer = client.query_bytes(b"SET myapp.y = 'caf\xe9'").await;
    assert_eq!(tags(&answer), "CZ", "{answer:?}");
    // The same in the extended protocol.
    let mut parse = cstr(b"");
    parse.extend(cstr(b"SET myapp.x = 'n\xe9'"));
    parse.extend_from_slice(&0i16.to_be_bytes());
    client.0.send(b'P', &parse).await;
    client.0.send(b'B', &[0, 0, 0, 0, 0, 0, 0, 0]).await;
    client.0.send(b'E', &[0, 0, 0, 0, 0]).await;
    client.0.send(b'S', b"").await;
    let answer = until_ready(&mut client.0).await;
    assert_eq!(tags(&answer), "12CZ", "{answer:?}");
    // The proxy reads back after the answer: done by the client's next statement.
    client.query("SELECT 1").await;
    assert_eq!(proxy.pinned("unreplayable_setting").await, 0, "read back");
    writer_is_free(&mut other, "the SETs").await;
    for hint in ["", "/* switchyard:writer */"] {
        let answer = client
            .query(&format!(
                "SELECT {hint} current_setting('myapp.y') || '/' || current_setting('myapp.x')"
            ))
            .await;
        let row = answer.iter().find(|(t, _)| *t == b'D').expect("a row");
        assert!(
            row.1.ends_with(b"caf\xe9/n\xe9"),
            "the values, in the client's encoding ({hint}): {answer:?}"
        );
        writer_is_free(&mut other, "a read").await;
    }
}

/// Waits until a statement whose text holds `marker` runs in database `db` on the primary
/// (`running`), or until none does.
async fn wait_running(cluster: &PgCluster, proxy: &Proxy, db: &str, marker: &str, running: bool) {
    use std::time::Duration;
    let admin = cluster.superuser(&cluster.primary, db).await;
    let seen = crate::support::retry(Duration::from_secs(30), async || {
        let n: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' \
                 AND datname = current_database() AND strpos(query, $1) > 0 \
                 AND pid <> pg_backend_pid()",
                &[&marker],
            )
            .await
            .expect("pg_stat_activity")
            .get(0);
        if (n > 0) == running { Ok(()) } else { Err(n) }
    })
    .await;
    if seen.is_err() {
        let rows = admin
            .simple_query(
                "SELECT state || ': ' || query FROM pg_stat_activity \
                 WHERE datname = current_database() AND pid <> pg_backend_pid()",
            )
            .await
            .expect("pg_stat_activity");
        let sessions: Vec<_> = rows
            .iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
                _ => None,
            })
            .collect();
        let status = proxy.admin_get("/status").await;
        panic!("{marker} running: {running}; the database's sessions: {sessions:?}; {status}");
    }
}

/// The first value of the first row a simple query answered.
/// The first value `sql` (a signal call) answers on `client` with, as text.
async fn signalled(client: &tokio_postgres::Client, sql: &str) -> Option<String> {
    let answer = client.simple_query(sql).await.expect(sql);
    answer.into_iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
        _ => None,
    })
}

/// Three clients of `proxy` on `db` (say, a victim, a bystander and a killer).
async fn three_clients(
    proxy: &Proxy,
    db: &str,
) -> (
    tokio_postgres::Client,
    tokio_postgres::Client,
    tokio_postgres::Client,
) {
    (
        proxy.connect(db).await,
        proxy.connect(db).await,
        proxy.connect(db).await,
    )
}

#[tokio::test]
async fn pg_terminate_backend_of_a_clients_own_pid_ends_that_client_only() {
    use std::time::Duration;
    let (cluster, proxy, db) = pooled("pooled_terminate_pid", "pool_size = 1").await;
    let setup = proxy.connect(&db).await;
    setup
        .batch_execute("CREATE TABLE t (id int)")
        .await
        .expect("schema");
    // Every client logs in first: the pool's one connection is busy later.
    let victim = proxy.connect(&db).await;
    let idle_victim = proxy.connect(&db).await;
    let bystander = proxy.connect(&db).await;
    let killer = proxy.connect(&db).await;
    let (pid, idle_pid) = (pid_of(&victim).await, pid_of(&idle_victim).await);
    let running = tokio::spawn(async move {
        // One implicit transaction, holding the pool's only connection: its insert must
        // not commit, and the connection must not serve anyone mid-statement.
        victim
            .batch_execute("INSERT INTO t VALUES (1); SELECT /* victim */ pg_sleep(60)")
            .await
    });
    wait_running(cluster, &proxy, &db, "/* victim */", true).await;
    // A client of another backend user is refused, as the server refuses it.
    let other = proxy.connect_as("md5user", "md5-secret", &db).await;
    for function in ["pg_cancel_backend", "pg_terminate_backend"] {
        let err = other
            .simple_query(&format!("SELECT {function}({pid})"))
            .await
            .expect_err("another backend user may not signal app's clients");
        assert_eq!(
            err.code(),
            Some(&SqlState::INSUFFICIENT_PRIVILEGE),
            "{function}: {err:?}"
        );
    }
    // As psql sends it: a simple Query.
    let terminate = |pid: i32| format!("SELECT pg_terminate_backend({pid})");
    assert_eq!(
        signalled(&killer, &terminate(pid)).await.as_deref(),
        Some("t"),
        "as a server says"
    );
    let err = running
        .await
        .unwrap()
        .expect_err("the victim's statement ended");
    assert_eq!(err.code(), Some(&SqlState::ADMIN_SHUTDOWN), "{err:?}");
    assert_eq!(
        err.as_db_error().map(|e| e.message()),
        Some("terminating connection due to administrator command")
    );
    // Its statement stopped on the server, and the pool's connection serves others.
    wait_running(cluster, &proxy, &db, "/* victim */", false).await;
    let rows: i64 = bystander
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .expect("a bystander is not affected")
        .get(0);
    assert_eq!(rows, 0, "the terminated transaction did not commit");
    // A client that runs nothing ends at once.
    assert_eq!(
        signalled(&killer, &terminate(idle_pid)).await.as_deref(),
        Some("t")
    );
    let closed = crate::support::retry(Duration::from_secs(30), async || {
        if idle_victim.is_closed() {
            Ok(())
        } else {
            Err(())
        }
    })
    .await;
    assert!(closed.is_ok(), "the idle victim's connection closed");
    // A pid of the proxy's range that no client has: false, as a server says of a pid
    // that is no backend's.
    assert_eq!(
        signalled(&killer, &terminate(pid)).await.as_deref(),
        Some("f")
    );
    bystander
        .simple_query("SELECT 1")
        .await
        .expect("the bystander still works");
}

#[tokio::test]
async fn prepared_pg_cancel_and_pg_terminate_backend_of_a_clients_pid() {
    use tokio_postgres::types::Type;
    let (cluster, proxy, db) = pooled("pooled_signal_prepared", "pool_size = 1").await;
    let (victim, bystander, killer) = three_clients(&proxy, &db).await;
    let pid = pid_of(&victim).await;
    // Prepared while the pool's one connection is free: the server parses them; their
    // Bind/Execute/Sync, once the victim holds that connection, are the proxy's to answer.
    let cancel = killer
        .prepare("SELECT pg_cancel_backend($1)")
        .await
        .expect("prepared");
    let cancel_literal = killer
        .prepare(&format!("SELECT pg_cancel_backend({pid})"))
        .await
        .expect("prepared");
    // Each sleep its own text, which tells it from the one before on the server.
    let sleep = |victim: tokio_postgres::Client, marker: &'static str| {
        tokio::spawn(async move {
            let sql = format!("SELECT /* switchyard:writer */ pg_sleep(60) AS {marker}");
            let slept = victim.batch_execute(&sql).await;
            (victim, slept)
        })
    };
    let mut victim = Some(victim);
    for (how, statement, marker) in [
        ("a binary int4 parameter", &cancel, "first"),
        ("a literal", &cancel_literal, "second"),
    ] {
        let sleeping = sleep(victim.take().unwrap(), marker);
        wait_running(cluster, &proxy, &db, marker, true).await;
        let params: &[&(dyn tokio_postgres::types::ToSql + Sync)] = if statement.params().is_empty()
        {
            &[]
        } else {
            &[&pid]
        };
        let sent: bool = killer
            .query_one(statement, params)
            .await
            .expect("answered")
            .get(0);
        assert!(sent, "{how}");
        let (cancelled, slept) = sleeping.await.unwrap();
        let err = slept.expect_err("the victim's statement was cancelled");
        assert_eq!(
            err.code(),
            Some(&SqlState::QUERY_CANCELED),
            "{how}: {err:?}"
        );
        cancelled
            .simple_query("SELECT 1")
            .await
            .expect("a cancelled client goes on");
        victim = Some(cancelled);
    }
    // Terminate in one batch (Parse, Bind, Describe, Execute, Sync), with a timeout: the
    // answer comes once the victim ended.
    let sleeping = sleep(victim.take().unwrap(), "third");
    wait_running(cluster, &proxy, &db, "third", true).await;
    let ended: bool = killer
        .query_typed_one(
            "SELECT pg_terminate_backend($1, $2)",
            &[(&pid, Type::INT4), (&30_000i64, Type::INT8)],
        )
        .await
        .expect("answered")
        .get(0);
    assert!(ended, "the victim ended within the timeout");
    let (_, slept) = sleeping.await.unwrap();
    let err = slept.expect_err("the victim's statement ended");
    assert_eq!(err.code(), Some(&SqlState::ADMIN_SHUTDOWN), "{err:?}");
    wait_running(cluster, &proxy, &db, "third", false).await;
    // No client has that pid now.
    let sent: bool = killer
        .query_one("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .expect("answered")
        .get(0);
    assert!(!sent);
    let one: i32 = bystander
        .query_one("SELECT 1", &[])
        .await
        .expect("the bystander works on the pool's connection")
        .get(0);
    assert_eq!(one, 1);
}

#[tokio::test]
async fn pg_cancel_backend_inside_a_transaction_leaves_that_transaction_as_it_was() {
    let (cluster, proxy, db) = pooled("pooled_signal_in_transaction", "pool_size = 2").await;
    let (victim, killer) = (proxy.connect(&db).await, proxy.connect(&db).await);
    killer
        .batch_execute("CREATE TABLE t (id int)")
        .await
        .expect("schema");
    let pid = pid_of(&victim).await;
    let sleeping = tokio::spawn(async move {
        let sql = "SELECT /* switchyard:writer */ pg_sleep(60) AS in_transaction_victim";
        let slept = victim.batch_execute(sql).await;
        (victim, slept)
    });
    wait_running(cluster, &proxy, &db, "in_transaction_victim", true).await;
    // As a driver that does not autocommit runs it: inside its own open transaction.
    killer
        .batch_execute("BEGIN; INSERT INTO t VALUES (1)")
        .await
        .expect("the killer's transaction");
    let sent: bool = killer
        .query_one("SELECT pg_cancel_backend($1)", &[&pid])
        .await
        .expect("answered")
        .get(0);
    assert!(sent);
    let (victim, slept) = sleeping.await.unwrap();
    let err = slept.expect_err("the victim's statement was cancelled");
    assert_eq!(err.code(), Some(&SqlState::QUERY_CANCELED), "{err:?}");
    // The killer's transaction is as it was, on the server too.
    killer
        .batch_execute("INSERT INTO t VALUES (2); COMMIT")
        .await
        .expect("the killer's transaction goes on and commits");
    let rows: i64 = victim
        .query_one("SELECT /* switchyard:writer */ count(*) FROM t", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(rows, 2, "both of the killer's rows committed");
    // In a failed transaction the server answers, as it answers everything there.
    killer.batch_execute("BEGIN").await.expect("BEGIN");
    killer
        .batch_execute("SELECT 1/0")
        .await
        .expect_err("division by zero");
    let err = killer
        .simple_query(&format!("SELECT pg_cancel_backend({pid})"))
        .await
        .expect_err("the transaction failed");
    assert_eq!(
        err.code(),
        Some(&SqlState::IN_FAILED_SQL_TRANSACTION),
        "{err:?}"
    );
    killer.batch_execute("ROLLBACK").await.expect("ROLLBACK");
    // Another backend user's call, which the proxy would refuse with an error, goes to
    // the server inside a transaction (its WARNING and false): the transaction stays
    // healthy.
    let other = proxy.connect_as("md5user", "md5-secret", &db).await;
    other.batch_execute("BEGIN").await.expect("BEGIN");
    assert_eq!(
        signalled(&other, &format!("SELECT pg_cancel_backend({pid})"))
            .await
            .as_deref(),
        Some("f")
    );
    other
        .batch_execute("SELECT 1; COMMIT")
        .await
        .expect("the transaction is healthy");
}

#[tokio::test]
async fn pg_terminate_backend_ends_a_client_waiting_for_a_connection_at_once() {
    let extra = "pool_size = 1\ncheckout_timeout = \"60s\"";
    let (_, proxy, db) = pooled("pooled_terminate_waiting", extra).await;
    let (holder, victim, killer) = three_clients(&proxy, &db).await;
    let pid = pid_of(&victim).await;
    // The pool's one writer connection is held by an open transaction.
    holder
        .batch_execute("BEGIN; SELECT /* switchyard:writer */ 1")
        .await
        .expect("the holder's transaction");
    let waiting = tokio::spawn(async move {
        victim
            .batch_execute("SELECT /* switchyard:writer */ 2")
            .await
    });
    proxy.until_checkouts_wait(1).await;
    assert_eq!(
        signalled(&killer, &format!("SELECT pg_terminate_backend({pid})"))
            .await
            .as_deref(),
        Some("t")
    );
    // Told as a server tells a terminated backend's client, not after checkout_timeout.
    let err = waiting
        .await
        .unwrap()
        .expect_err("the victim's statement did not run");
    assert_eq!(err.code(), Some(&SqlState::ADMIN_SHUTDOWN), "{err:?}");
    assert_eq!(
        err.as_db_error().map(|e| e.message()),
        Some("terminating connection due to administrator command")
    );
    holder
        .batch_execute("COMMIT")
        .await
        .expect("the holder goes on");
    let one: i32 = killer
        .query_one("SELECT /* switchyard:writer */ 1", &[])
        .await
        .expect("the pool's connection serves others")
        .get(0);
    assert_eq!(one, 1);
}

/// The pid `pg_backend_pid()` gives `client`: the one its own calls and other clients'
/// signals name it by.
async fn pid_of(client: &tokio_postgres::Client) -> i32 {
    client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .expect("pg_backend_pid()")
        .get(0)
}

/// The primary and the replicas of a cluster, asked through `pg_stat_activity`.
struct PgServers {
    admins: Vec<tokio_postgres::Client>,
    db: String,
}

impl PgServers {
    async fn of(cluster: &PgCluster, db: &str) -> PgServers {
        let mut admins = Vec::new();
        for server in std::iter::once(&cluster.primary).chain(&cluster.replicas) {
            admins.push(cluster.superuser(server, "postgres").await);
        }
        PgServers {
            admins,
            db: db.to_owned(),
        }
    }
}

impl load::Servers for PgServers {
    async fn connections(&mut self) -> Vec<i64> {
        let mut now = Vec::new();
        for admin in &self.admins {
            let n: i64 = admin
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND usename = 'app'",
                    &[&self.db],
                )
                .await
                .expect("pg_stat_activity")
                .get(0);
            now.push(n);
        }
        now
    }
}

/// The load test: 500 pgbench clients over `pool_size = 10` per instance,
/// select-only with named prepared statements, then TPC-B with the extended protocol. No
/// transaction fails, and [`load::Watch::check`] holds: no server over the pool's size, the
/// reads spread over both replicas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_pgbench_clients_share_ten_connections_per_instance() {
    let (cluster, proxy, db) = pooled("pooled_500", "pool_size = 10").await;
    super::pgbench(&proxy, &db, &["-i", "-s", "1", "-q"]).await;
    cluster.wait_replicated().await;
    let watch = load::watch(&proxy, &db, PgServers::of(cluster, &db).await).await;
    for (args, transactions) in [
        (
            &[
                "-n", "-S", "-M", "prepared", "-c", "500", "-j", "4", "-t", "10",
            ][..],
            5000,
        ),
        (
            &["-n", "-M", "extended", "-c", "500", "-j", "4", "-t", "2"][..],
            1000,
        ),
    ] {
        let out = super::pgbench(&proxy, &db, args).await;
        assert!(
            out.contains("number of failed transactions: 0")
                && out.contains(&format!(
                    "number of transactions actually processed: {transactions}/{transactions}"
                )),
            "pgbench {args:?} over pool_size = 10:\n{out}"
        );
    }
    watch
        .check(&proxy, &db, 10.0, &cluster.replica_addrs(), 5000.0)
        .await;
}

/// A database whose `CONNECTION LIMIT` (3) is below `pool_size` (10): the servers refuse the
/// pools' fourth logins with `53300`. The pools then serve from the connections they have:
/// no transaction fails, the refusals are counted, no pool opened more than the limit
/// allows, and reads stay on the replicas (a full replica is not taken for a failed one,
/// nor the writer for a lost one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_out_of_connection_slots_is_served_by_the_connections_it_has() {
    let (cluster, proxy, db) = pooled("pooled_slots", "pool_size = 10").await;
    super::pgbench(&proxy, &db, &["-i", "-s", "1", "-q"]).await;
    let primary = cluster.superuser(&cluster.primary, "postgres").await;
    primary
        .batch_execute(&format!("ALTER DATABASE \"{db}\" CONNECTION LIMIT 3"))
        .await
        .expect("limit the database's connections");
    cluster.wait_replicated().await;
    let since = load::Since::now(&proxy, &db).await;
    for (args, transactions) in [
        (&["-n", "-S", "-c", "20", "-j", "2", "-t", "25"][..], 500),
        (
            &["-n", "-M", "extended", "-c", "20", "-j", "2", "-t", "5"][..],
            100,
        ),
    ] {
        let out = super::pgbench(&proxy, &db, args).await;
        assert!(
            out.contains("number of failed transactions: 0")
                && out.contains(&format!(
                    "number of transactions actually processed: {transactions}/{transactions}"
                )),
            "pgbench {args:?} with 3 connection slots per server:\n{out}"
        );
    }
    let replicas = cluster.replica_addrs();
    since
        .check_out_of_slots(&proxy, &db, 3.0, &replicas, 500.0)
        .await;
}

/// Runs `change` on the primary, terminates the backends of `user` on `db` (the pool's
/// connections) and waits until none is left: by then their sockets are closed, so the pool
/// finds them closed.
async fn cut_off(cluster: &PgCluster, change: &str, db: &str, user: &str) {
    let primary = cluster.superuser(&cluster.primary, "postgres").await;
    primary
        .batch_execute(&format!(
            "{change}; SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = '{db}' AND usename = '{user}'"
        ))
        .await
        .unwrap_or_else(|e| panic!("{change}: {e}"));
    let gone = crate::support::retry(std::time::Duration::from_secs(20), async || {
        let admin = cluster.superuser(&cluster.primary, "postgres").await;
        let n: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND usename = $2",
                &[&db, &user],
            )
            .await
            .expect("pg_stat_activity")
            .get(0);
        if n == 0 { Ok(()) } else { Err(n) }
    });
    gone.await.expect("the terminated backends exited");
}

/// With no connection slot left for the database and none in the pool, a statement gets the
/// server's `53300` at once (the writer is up, only full): not a wait for a failover that
/// will not come.
#[tokio::test]
async fn a_database_with_no_connection_slot_left_answers_53300_at_once() {
    let (cluster, proxy, db) = pooled("pooled_no_slots", "pool_size = 10").await;
    let client = proxy.connect(&db).await;
    client
        .batch_execute("CREATE TABLE t (i int)")
        .await
        .expect("a write while there is room");
    // No slot left, and the pool's connections gone.
    let no_slot = format!("ALTER DATABASE \"{db}\" CONNECTION LIMIT 0");
    cut_off(cluster, &no_slot, &db, "app").await;
    let refused = client
        .batch_execute("INSERT INTO t VALUES (1)")
        .await
        .expect_err("no connection can be opened");
    assert_eq!(
        refused.code(),
        Some(&SqlState::TOO_MANY_CONNECTIONS),
        "the server's refusal: {refused:?}"
    );
}

/// A backend login the server refuses while the writer is up (here the role's password
/// rotated under a connected client, whose pooled connection then ended) is the client's
/// error at once, in the server's words: not a wait of `failover_timeout` for a writer
/// failover that will not come, answered `57P03`.
#[tokio::test]
async fn a_login_the_server_refuses_mid_session_is_the_clients_error_at_once() {
    let cluster = PgCluster::shared();
    let db = cluster.create_database("pooled_rotated").await;
    let primary = cluster.superuser(&cluster.primary, "postgres").await;
    primary
        .batch_execute(&format!(
            "CREATE ROLE rotated LOGIN PASSWORD 'before'; \
             GRANT ALL ON DATABASE \"{db}\" TO rotated"
        ))
        .await
        .expect("a role of its own");
    let users = "[[users]]\nname = \"rotated\"\npassword = \"before\"\n\n";
    let config = in_pool_mode(&config_text(cluster, "pool_size = 2"), "transaction").replacen(
        "[clusters.main]",
        &format!("{users}[clusters.main]"),
        1,
    );
    let proxy = Proxy::from_config(&config).await;
    let (client, connection) = tokio_postgres::connect(
        &proxy.conninfo("rotated", "before", &db),
        tokio_postgres::NoTls,
    )
    .await
    .expect("connect through the proxy");
    tokio::spawn(connection);
    client
        .batch_execute("SELECT /* switchyard:writer */ 1")
        .await
        .expect("a statement while the password holds");
    // The password rotated, the pool's connection gone.
    cut_off(
        cluster,
        "ALTER ROLE rotated PASSWORD 'after'",
        &db,
        "rotated",
    )
    .await;
    let refused = client
        .batch_execute("SELECT /* switchyard:writer */ 2")
        .await
        .expect_err("no new login is possible");
    assert_eq!(
        refused.code(),
        Some(&SqlState::SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION),
        "the proxy could not log in: {refused:?}"
    );
    assert!(
        refused
            .as_db_error()
            .is_some_and(|e| e.message().contains("28P01")),
        "in the server's words: {refused:?}"
    );
}

/// How many of `db`'s backends on the primary run a statement mentioning `pg_sleep` now.
async fn sleeping(cluster: &PgCluster, db: &str) -> i64 {
    let admin = cluster.superuser(&cluster.primary, "postgres").await;
    admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND state = 'active' \
             AND query LIKE '%pg_sleep%' AND pid <> pg_backend_pid()",
            &[&db],
        )
        .await
        .expect("pg_stat_activity")
        .get(0)
}

/// A client that closes its connection while its statement runs (a driver's timeout) has
/// that statement cancelled: it stops running on the server long before its end, and the
/// pooled connection it held is not left busy with it.
#[tokio::test]
async fn a_statement_whose_client_left_is_cancelled() {
    let (cluster, proxy, db) = pooled("pooled_left", "pool_size = 2").await;
    let (client, connection) = proxy.connect_driven(&db).await;
    let query = tokio::spawn(async move {
        let _ = client
            .batch_execute("SELECT /* switchyard:writer */ pg_sleep(60)")
            .await;
    });
    let running = crate::support::retry(
        std::time::Duration::from_secs(20),
        async || match sleeping(cluster, &db).await {
            1 => Ok(()),
            n => Err(n),
        },
    );
    running.await.expect("the statement runs");
    // The client's socket closes with its connection task.
    query.abort();
    connection.abort();
    let stopped = crate::support::retry(
        std::time::Duration::from_secs(20),
        async || match sleeping(cluster, &db).await {
            0 => Ok(()),
            n => Err(n),
        },
    );
    stopped
        .await
        .expect("the statement stopped within seconds, not after its 60");
}

/// A client that sends its statement, then Terminate, and closes at once (fire and forget)
/// gets what a server gives it: the statement runs to its end (only a client that vanishes
/// without a goodbye has its statement cancelled).
#[tokio::test]
async fn a_statement_whose_client_said_goodbye_runs_to_its_end() {
    let (cluster, proxy, db) = pooled("pooled_goodbye", "pool_size = 2").await;
    let primary = cluster.superuser(&cluster.primary, &db).await;
    primary
        .batch_execute("CREATE TABLE said_bye (v int); GRANT ALL ON said_bye TO PUBLIC")
        .await
        .expect("table");
    let mut raw = RawClient::startup(proxy.addr, "trustuser", &db).await;
    raw.send(
        b'Q',
        b"SELECT pg_sleep(1); INSERT INTO said_bye VALUES (1)\0",
    )
    .await;
    raw.send(b'X', b"").await;
    drop(raw);
    let ran = crate::support::retry(std::time::Duration::from_secs(20), async || {
        let n: i64 = primary
            .query_one("SELECT count(*) FROM said_bye", &[])
            .await
            .expect("count")
            .get(0);
        if n == 1 { Ok(()) } else { Err(n) }
    });
    ran.await.expect("the statement ran to its end");
}

/// How many rows table `t` has, as a client outside any transaction sees them.
async fn rows_in_t(client: &tokio_postgres::Client) -> i64 {
    client
        .query_one("SELECT /* switchyard:writer */ count(*) FROM t", &[])
        .await
        .expect("count")
        .get(0)
}

#[tokio::test]
async fn a_plain_begin_takes_no_connection_until_its_transaction_runs_something() {
    let (_, proxy, db) = pooled("pooled_begin", "pool_size = 1\ncheckout_timeout = \"2s\"").await;
    let setup = proxy.connect(&db).await;
    setup
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY)")
        .await
        .expect("schema");
    let first = proxy.connect(&db).await;
    // A simple-Query BEGIN (as tokio-postgres, sqlx, asyncpg send it), then one sent with
    // the extended protocol (prepared, then bound and executed, as pgbench -M prepared).
    for begin in ["simple", "extended"] {
        match begin {
            "simple" => first.batch_execute("BEGIN").await.unwrap(),
            _ => {
                first.execute("START TRANSACTION", &[]).await.unwrap();
            }
        }
        // The pool's one connection is not taken by the BEGIN: another client runs.
        setup
            .batch_execute("SELECT /* switchyard:writer */ 1")
            .await
            .unwrap_or_else(|e| panic!("{begin} BEGIN held the pool's connection: {e:?}"));
        // The transaction started before its first statement: a ROLLBACK undoes it.
        first
            .execute("INSERT INTO t VALUES (1)", &[])
            .await
            .unwrap();
        assert_eq!(
            first
                .query_one("SELECT count(*) FROM t", &[])
                .await
                .unwrap()
                .get::<_, i64>(0),
            1,
            "{begin}: the transaction sees its own insert"
        );
        first.batch_execute("ROLLBACK").await.unwrap();
        assert_eq!(rows_in_t(&setup).await, 0, "{begin}: rolled back");
    }
    // The first statement of a transaction sent as a simple Query runs in it too.
    first.batch_execute("BEGIN").await.unwrap();
    first
        .batch_execute("INSERT INTO t VALUES (2)")
        .await
        .unwrap();
    let err = first
        .batch_execute("SELECT 1/0")
        .await
        .expect_err("division by zero");
    assert_eq!(err.code(), Some(&SqlState::DIVISION_BY_ZERO), "{err:?}");
    let err = first
        .query("SELECT 1", &[])
        .await
        .expect_err("the failed transaction refuses work");
    assert_eq!(
        err.code(),
        Some(&SqlState::IN_FAILED_SQL_TRANSACTION),
        "{err:?}"
    );
    first.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(
        rows_in_t(&setup).await,
        0,
        "the failed transaction left nothing"
    );
    // Committed work is there; a transaction that runs nothing commits nothing.
    first.batch_execute("BEGIN").await.unwrap();
    first
        .execute("INSERT INTO t VALUES (3)", &[])
        .await
        .unwrap();
    first.batch_execute("COMMIT").await.unwrap();
    first.batch_execute("BEGIN").await.unwrap();
    first.batch_execute("COMMIT").await.unwrap();
    assert_eq!(rows_in_t(&setup).await, 1, "the committed insert");
    // The client is told it is in a transaction ('T') at once, and a second BEGIN gets the
    // server's warning once the transaction runs.
    let mut raw = RawClient::startup(proxy.addr, "trustuser", &db).await;
    raw.send(b'Q', b"BEGIN\0").await;
    let answer = super::until_ready(&mut raw).await;
    assert_eq!(tags(&answer), "CZ", "{answer:?}");
    assert_eq!(answer[1].1, b"T", "{answer:?}");
    raw.send(b'Q', b"BEGIN\0").await;
    let answer = super::until_ready(&mut raw).await;
    assert_eq!(tags(&answer), "NCZ", "{answer:?}");
    assert!(
        String::from_utf8_lossy(&answer[0].1).contains("25001"),
        "already a transaction in progress: {answer:?}"
    );
    raw.send(b'Q', b"COMMIT\0").await;
    let answer = super::until_ready(&mut raw).await;
    assert_eq!(tags(&answer), "CZ", "{answer:?}");
    assert_eq!(answer[1].1, b"I", "{answer:?}");
}

#[tokio::test]
async fn a_batch_that_only_closes_statements_takes_no_connection() {
    let cluster = PgCluster::shared();
    let db = cluster.create_database("pooled_closes").await;
    // No readers: everything would need the writer's one pooled connection.
    let text = config_text(cluster, "pool_size = 1\ncheckout_timeout = \"2s\"");
    let config = in_pool_mode(&with_readers(&text, &[]), "transaction");
    let proxy = Proxy::from_config(&config).await;
    // Both as one user: one pool.
    let mut holder = RawClient::startup(proxy.addr, "trustuser", &db).await;
    let mut c = RawClient::startup(proxy.addr, "trustuser", &db).await;
    // A statement of the client's own, prepared on the pool's one connection.
    c.send(b'P', &[cstr(b"s1"), cstr(b"SELECT 1"), vec![0, 0]].concat())
        .await;
    c.send(b'S', b"").await;
    let answer = super::until_ready(&mut c).await;
    assert_eq!(tags(&answer), "1Z", "{answer:?}");
    // Another client's transaction holds that connection now.
    for sql in ["BEGIN\0", "SELECT 1\0"] {
        holder.send(b'Q', sql.as_bytes()).await;
        let answer = super::until_ready(&mut holder).await;
        assert_eq!(
            answer.last().map(|(_, s)| &s[..]),
            Some(&b"T"[..]),
            "{answer:?}"
        );
    }
    // Closing a statement (and a portal), as tokio-postgres does after a one-off
    // statement, is answered at once, as its server answers it.
    c.send(b'C', &[vec![b'S'], cstr(b"s1")].concat()).await;
    c.send(b'C', &[vec![b'P'], cstr(b"")].concat()).await;
    c.send(b'S', b"").await;
    let answer = super::until_ready(&mut c).await;
    assert_eq!(tags(&answer), "33Z", "{answer:?}");
    assert_eq!(answer[2].1, b"I", "{answer:?}");
    holder.send(b'Q', b"COMMIT\0").await;
    super::until_ready(&mut holder).await;
    // The name is gone for the client, as on its server.
    c.send(
        b'B',
        &[cstr(b""), cstr(b"s1"), vec![0, 0, 0, 0, 0, 0]].concat(),
    )
    .await;
    c.send(b'S', b"").await;
    let answer = super::until_ready(&mut c).await;
    assert_eq!(tags(&answer), "EZ", "{answer:?}");
    assert!(
        String::from_utf8_lossy(&answer[0].1).contains("26000"),
        "{answer:?}"
    );
}
