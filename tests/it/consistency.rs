//! Per-route read consistency against real servers whose replica is held behind on purpose
//! (PostgreSQL: WAL replay paused; MariaDB: the SQL thread stopped), so a replica read after
//! a write cannot see it. A `session` route reads its own insert every time (its reads go to
//! the writer); an `eventual` route's read right after its insert goes to the replica and
//! misses it, which shows the route is in effect. Each test has its own cluster, since it
//! holds replication back.

use crate::support;

use mysql_async::prelude::Queryable;

use support::mariadb::MariaCluster;
use support::postgres::{self as pg, APP, PgCluster};
use support::proxy::{self, Proxy};

/// Inserts, each followed at once by a read of it, per session.
const ROUNDS: usize = 5;

/// `[routing]` for both tests: `session` by default, with a minimum window long enough that
/// the test never depends on how fast it runs; `route` makes some sessions `eventual`.
fn routing(route: &str) -> String {
    format!(
        "consistency = \"session\"\nread_your_writes = \"1h\"\n\n[[routing.routes]]\n{route}\nconsistency = \"eventual\"\n"
    )
}

/// `config` with its `read_your_writes` line replaced by `lines`.
fn with_consistency(config: &str, lines: &str) -> String {
    config.replace("read_your_writes = \"0s\"\n", lines)
}

/// Inserts `who` through `client`, then reads how many rows of `who` the server that answers
/// the read has, and whether that server is a replica.
async fn pg_insert_then_count(client: &tokio_postgres::Client, who: &str) -> (i64, bool) {
    client
        .execute("INSERT INTO seen VALUES ($1)", &[&who])
        .await
        .expect("insert through the proxy");
    let row = client
        .query_one(
            "SELECT count(*), pg_is_in_recovery() FROM seen WHERE who = $1",
            &[&who],
        )
        .await
        .expect("read through the proxy");
    (row.get(0), row.get(1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_routes_choose_session_or_eventual_consistency() {
    let cluster = PgCluster::start(1);
    let db = cluster.create_database("consistency").await;
    let owner = pg::connect(&cluster.primary.login(APP, &db))
        .await
        .expect("connect to the primary");
    owner
        .batch_execute("CREATE TABLE seen (who text)")
        .await
        .expect("create the table");
    cluster.wait_replicated().await;
    let replica = cluster.superuser(&cluster.replicas[0], "postgres").await;
    replica
        .batch_execute("SELECT pg_wal_replay_pause()")
        .await
        .expect("pause replay");

    let config = proxy::config_text(&cluster, "").replace(
        "[clusters.main]",
        "[[users]]\nname = \"report\"\npassword = \"report-secret\"\nbackend_user = \"app\"\nbackend_password = \"app-secret\"\n\n[clusters.main]",
    );
    let config = with_consistency(&config, &routing("user = \"report\""));
    let proxy = Proxy::from_config(&config).await;
    let app = proxy.connect(&db).await;
    let report = proxy.connect_as("report", "report-secret", &db).await;

    for round in 0..ROUNDS {
        let (count, on_replica) = pg_insert_then_count(&app, &format!("app{round}")).await;
        assert_eq!(
            (count, on_replica),
            (1, false),
            "session: the read after the insert runs on the primary and sees the row"
        );
        let (count, on_replica) = pg_insert_then_count(&report, &format!("report{round}")).await;
        assert_eq!(
            (count, on_replica),
            (0, true),
            "eventual: the read after the insert runs on the paused replica, without the row"
        );
    }
    replica
        .batch_execute("SELECT pg_wal_replay_resume()")
        .await
        .expect("resume replay");
}

/// Inserts `who` through `conn`, then reads how many rows of `who` the server that answers
/// the read has, and that server's port.
async fn mysql_insert_then_count(conn: &mut mysql_async::Conn, who: &str) -> (i64, u16) {
    conn.exec_drop("INSERT INTO seen VALUES (?)", (who,))
        .await
        .expect("insert through the proxy");
    let row: Option<(i64, u16)> = conn
        .exec_first("SELECT COUNT(*), @@port FROM seen WHERE who = ?", (who,))
        .await
        .expect("read through the proxy");
    row.expect("one row")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_routes_choose_session_or_eventual_consistency() {
    let cluster = MariaCluster::start(1);
    let app_db = cluster.create_database("consistency_app").await;
    let report_db = cluster.create_database("consistency_report").await;
    let mut primary = cluster.admin(&cluster.primary).await;
    for db in [&app_db, &report_db] {
        primary
            .query_drop(format!("CREATE TABLE `{db}`.seen (who VARCHAR(32))"))
            .await
            .expect("create the table");
    }
    primary.disconnect().await.expect("disconnect");
    cluster.wait_replicated().await;
    let mut replica = cluster.admin(&cluster.replicas[0]).await;
    replica
        .query_drop("STOP SLAVE SQL_THREAD")
        .await
        .expect("stop the SQL thread");

    let route = format!("database = \"{report_db}\"");
    let config = with_consistency(&proxy::mysql_config_text(&cluster, ""), &routing(&route));
    let proxy = Proxy::from_config(&config).await;
    let connect = |db: &str| {
        let opts = mysql_async::OptsBuilder::default()
            .ip_or_hostname("127.0.0.1")
            .tcp_port(proxy.addr.port())
            .user(Some("app"))
            .pass(Some("app-secret"))
            .db_name(Some(db.to_owned()))
            .prefer_socket(false);
        mysql_async::Conn::new(opts)
    };
    let mut app = connect(&app_db).await.expect("connect to the app database");
    let mut report = connect(&report_db)
        .await
        .expect("connect to the report database");
    let (primary_port, replica_port) = (cluster.primary.port, cluster.replicas[0].port);

    for round in 0..ROUNDS {
        let who = format!("row{round}");
        assert_eq!(
            mysql_insert_then_count(&mut app, &who).await,
            (1, primary_port),
            "session: the read after the insert runs on the primary and sees the row"
        );
        assert_eq!(
            mysql_insert_then_count(&mut report, &who).await,
            (0, replica_port),
            "eventual: the read after the insert runs on the stopped replica, without the row"
        );
    }
    replica
        .query_drop("START SLAVE SQL_THREAD")
        .await
        .expect("start the SQL thread");
    for conn in [app, report, replica] {
        conn.disconnect().await.expect("disconnect");
    }
}
