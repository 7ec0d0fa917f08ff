//! Balancing against real servers, for PostgreSQL and MariaDB: reads spread over two equal
//! healthy replicas (neither gets more than 65%), and a replica whose replication lag goes
//! over `max_lag` gets no reads until it has caught up. Every read runs on a new connection
//! (a new session picks its reader from the current topology) and says which server answered
//! it; no read may fail. Connections an application keeps open spread onto a replica that
//! becomes usable after they opened. Every test has its own cluster: the lag tests hold
//! replication back, and the spread tests' `max_lag` must not see the lag that other
//! modules' writes cause on the shared clusters.

use crate::support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use mysql_async::prelude::Queryable;
use tokio::task::JoinSet;

use support::mariadb::MariaCluster;
use support::postgres::PgCluster;
use support::proxy::{self, Proxy};
use support::topology;

/// Longest wait for health checks to see a change.
const FOLLOW_TIMEOUT: Duration = Duration::from_secs(60);
/// Clients reading at once, and the reads each makes, in the spread tests.
const CLIENTS: usize = 4;
const READS_PER_CLIENT: usize = 75;
/// The largest share of the reads one of two equal replicas may get.
const MAX_SHARE: f64 = 0.65;
/// Fast checks and a small lag ceiling, added to `[clusters.main]`.
const CHECKS: &str =
    "health_interval = \"100ms\"\nfail_after = 2\nrecover_after = 1\nmax_lag = \"1s\"\n";

/// `config` with `lines` added to `[clusters.main]` (which comes right before `[routing]`).
fn with_cluster(config: &str, lines: &str) -> String {
    config.replace("\n[routing]", &format!("{lines}\n[routing]"))
}

/// The port of the PostgreSQL server that answered one read through the proxy.
async fn pg_read_port(proxy: &Proxy, db: &str) -> Result<u16, String> {
    let port = topology::read_once_as(
        proxy,
        ("trustuser", ""),
        db,
        "SELECT inet_server_port()::text",
    )
    .await?;
    port.parse()
        .map_err(|e| format!("server port {port:?}: {e}"))
}

/// Runs [`CLIENTS`] clients at once, each making [`READS_PER_CLIENT`] reads with `read`;
/// returns how many reads each server port answered.
async fn read_load<F, Fut>(read: F) -> BTreeMap<u16, usize>
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<u16, String>> + Send,
{
    let mut clients = JoinSet::new();
    for _ in 0..CLIENTS {
        let read = read.clone();
        clients.spawn(async move {
            let mut ports = Vec::with_capacity(READS_PER_CLIENT);
            for _ in 0..READS_PER_CLIENT {
                ports.push(read().await.expect("reads never fail"));
            }
            ports
        });
    }
    let mut counts = BTreeMap::new();
    for ports in clients.join_all().await {
        for port in ports {
            *counts.entry(port).or_insert(0) += 1;
        }
    }
    counts
}

/// Every read went to one of `replicas`, and none got more than [`MAX_SHARE`] of them.
fn assert_spread(counts: &BTreeMap<u16, usize>, replicas: [u16; 2]) {
    eprintln!("reads per server port: {counts:?}");
    let total: usize = counts.values().sum();
    assert_eq!(total, CLIENTS * READS_PER_CLIENT);
    for (port, count) in counts {
        assert!(
            replicas.contains(port),
            "{count} reads went to port {port}, not a replica: {counts:?}"
        );
        let share = *count as f64 / total as f64;
        assert!(
            share <= MAX_SHARE,
            "replica on port {port} got {count} of {total} reads: {counts:?}"
        );
    }
}

/// Polls, reading through the proxy all the while (no read may fail), until reader `addr`
/// is in `state` and `accept` likes its lag.
async fn until_reader<R, Fut>(
    proxy: &Proxy,
    addr: &str,
    state: &str,
    accept: impl Fn(Option<f64>) -> bool,
    read: R,
) where
    R: Fn() -> Fut,
    Fut: Future<Output = Result<u16, String>>,
{
    let seen = support::retry(FOLLOW_TIMEOUT, async || {
        read().await.expect("reads never fail");
        let (now, lag) = topology::reader(proxy, "main", addr).await;
        if now == state && accept(lag) {
            Ok(())
        } else {
            Err(format!("state {now}, lag {lag:?}"))
        }
    });
    if let Err(why) = seen.await {
        panic!("{addr} did not become {state} within {FOLLOW_TIMEOUT:?}: {why}");
    }
}

/// Polls until a read lands on `port`.
async fn until_reads_reach<R, Fut>(port: u16, read: R)
where
    R: Fn() -> Fut,
    Fut: Future<Output = Result<u16, String>>,
{
    let reached = support::retry(FOLLOW_TIMEOUT, async || {
        match read().await.expect("reads never fail") {
            p if p == port => Ok(()),
            p => Err(format!("last read ran on port {p}")),
        }
    });
    if let Err(why) = reached.await {
        panic!("reads did not reach port {port} within {FOLLOW_TIMEOUT:?}: {why}");
    }
}

/// Starts a proxy with `config`, runs the read load on database `db` with `read` (given the
/// proxy and the database, it says which port answered), and checks the spread over
/// `replicas`.
async fn reads_spread<R, Fut>(config: &str, db: &str, replicas: [u16; 2], read: R)
where
    R: Fn(Arc<Proxy>, String) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<u16, String>> + Send,
{
    let proxy = Arc::new(Proxy::with_monitors(config).await);
    let db = db.to_owned();
    let counts = read_load(move || read(Arc::clone(&proxy), db.clone())).await;
    assert_spread(&counts, replicas);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_reads_spread_over_two_equal_replicas() {
    let cluster = &PgCluster::start(2);
    let db = cluster.create_database("spread").await;
    let config = with_cluster(
        &proxy::config_text(cluster, ""),
        &format!("monitor_user = \"postgres\"\n{CHECKS}"),
    );
    let replicas = [cluster.replicas[0].port, cluster.replicas[1].port];
    reads_spread(&config, &db, replicas, async |proxy, db| {
        pg_read_port(&proxy, &db).await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_reads_spread_over_two_equal_replicas() {
    let cluster = &MariaCluster::start(2);
    let db = cluster.create_database("spread").await;
    let config = with_cluster(
        &proxy::mysql_config_text(cluster, ""),
        &format!("monitor_user = \"app\"\nmonitor_password = \"app-secret\"\n{CHECKS}"),
    );
    let replicas = [cluster.replicas[0].port, cluster.replicas[1].port];
    reads_spread(&config, &db, replicas, async |proxy, db| {
        topology::mysql_read_port(&proxy, &db).await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_replica_over_max_lag_gets_no_reads_until_it_catches_up() {
    let cluster = PgCluster::start(1);
    let db = cluster.create_database("lag").await;
    let config = with_cluster(
        &proxy::config_text(&cluster, ""),
        &format!("monitor_user = \"postgres\"\n{CHECKS}"),
    );
    let proxy = Proxy::with_monitors(&config).await;
    let replica = &cluster.replicas[0];
    let addr = format!("{}:{}", replica.host, replica.port);
    let read = || pg_read_port(&proxy, &db);
    until_reads_reach(replica.port, read).await;

    // Replay stops while the primary takes writes: the replica falls ever further behind.
    let standby = cluster.superuser(replica, "postgres").await;
    standby
        .batch_execute("SELECT pg_wal_replay_pause()")
        .await
        .expect("pause replay");
    let primary = cluster.superuser(&cluster.primary, &db).await;
    primary
        .batch_execute("CREATE TABLE writes (n int); INSERT INTO writes VALUES (1)")
        .await
        .expect("write on the primary");
    let over = |lag: Option<f64>| lag.is_some_and(|l| l > 1.0);
    until_reader(&proxy, &addr, "lagging", over, read).await;
    for _ in 0..10 {
        assert_eq!(
            read().await,
            Ok(cluster.primary.port),
            "no read goes to the lagging replica"
        );
    }
    let metrics = proxy.admin_get("/metrics").await;
    let gauge = format!("switchyard_instance_lag_seconds{{cluster=\"main\",instance=\"{addr}\"}} ");
    let value: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix(&gauge)?.parse().ok())
        .unwrap_or_else(|| panic!("{gauge} in:\n{metrics}"));
    assert!(value > 1.0, "{gauge}{value}");

    // Replay resumes: once it has caught up, the replica takes reads again.
    standby
        .batch_execute("SELECT pg_wal_replay_resume()")
        .await
        .expect("resume replay");
    until_reader(&proxy, &addr, "healthy", |lag| lag == Some(0.0), read).await;
    until_reads_reach(replica.port, read).await;
}

/// Inserts into `db`.writes on `primary` every 100 ms until `stop` is set.
async fn keep_writing(cluster: &MariaCluster, db: &str, stop: &AtomicBool) {
    let mut primary = cluster.admin(&cluster.primary).await;
    while !stop.load(Ordering::Relaxed) {
        primary
            .query_drop(format!("INSERT INTO `{db}`.writes VALUES (1)"))
            .await
            .expect("write on the primary");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    primary.disconnect().await.expect("disconnect");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mariadb_replica_over_max_lag_gets_no_reads_until_it_catches_up() {
    let cluster = Arc::new(MariaCluster::start(1));
    let db = cluster.create_database("lag").await;
    let config = with_cluster(
        &proxy::mysql_config_text(&cluster, ""),
        &format!("monitor_user = \"app\"\nmonitor_password = \"app-secret\"\n{CHECKS}"),
    );
    let proxy = Proxy::with_monitors(&config).await;
    let (replica, primary_port) = (&cluster.replicas[0], cluster.primary.port);
    let addr = format!("{}:{}", replica.host, replica.port);
    let read = || topology::mysql_read_port(&proxy, &db);
    until_reads_reach(replica.port, read).await;
    let mut standby = cluster.admin(replica).await;
    let mut primary = cluster.admin(&cluster.primary).await;
    primary
        .query_drop(format!("CREATE TABLE `{db}`.writes (n int)"))
        .await
        .expect("create a table");
    cluster.wait_replicated().await;

    // The applier stops: Seconds_Behind_Master is NULL, the lag unknown.
    standby
        .query_drop("STOP SLAVE SQL_THREAD")
        .await
        .expect("stop the SQL thread");
    primary
        .query_drop(format!("INSERT INTO `{db}`.writes VALUES (1)"))
        .await
        .expect("write on the primary");
    until_reader(&proxy, &addr, "lagging", |lag| lag.is_none(), read).await;
    for _ in 0..10 {
        assert_eq!(
            read().await,
            Ok(primary_port),
            "no read goes to the replica"
        );
    }
    standby
        .query_drop("START SLAVE SQL_THREAD")
        .await
        .expect("start the SQL thread");
    until_reader(&proxy, &addr, "healthy", |lag| lag == Some(0.0), read).await;
    until_reads_reach(replica.port, read).await;

    // Delayed replication under a stream of writes: a measured lag over max_lag.
    for statement in [
        "STOP SLAVE",
        "CHANGE MASTER TO MASTER_DELAY = 4",
        "START SLAVE",
    ] {
        standby.query_drop(statement).await.expect(statement);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn({
        let (cluster, db, stop) = (Arc::clone(&cluster), db.clone(), Arc::clone(&stop));
        async move { keep_writing(&cluster, &db, &stop).await }
    });
    let over = |lag: Option<f64>| lag.is_some_and(|l| l > 1.0);
    until_reader(&proxy, &addr, "lagging", over, read).await;
    for _ in 0..10 {
        assert_eq!(
            read().await,
            Ok(primary_port),
            "no read goes to the replica"
        );
    }
    stop.store(true, Ordering::Relaxed);
    writer.await.expect("the writer ends");
    until_reader(&proxy, &addr, "healthy", |lag| lag == Some(0.0), read).await;
    until_reads_reach(replica.port, read).await;
    for statement in [
        "STOP SLAVE",
        "CHANGE MASTER TO MASTER_DELAY = 0",
        "START SLAVE",
    ] {
        standby.query_drop(statement).await.expect(statement);
    }
    standby.disconnect().await.expect("disconnect");
    primary.disconnect().await.expect("disconnect");
}

/// A connection through the proxy that the test keeps, as an application's pool does.
async fn mysql_pooled(proxy: &Proxy, db: &str) -> mysql_async::Conn {
    mysql_async::Conn::new(topology::mysql_opts(proxy, db))
        .await
        .expect("connect through the proxy")
}

async fn port_of(conn: &mut mysql_async::Conn) -> u16 {
    let port: Option<u16> = conn
        .query_first("SELECT @@port")
        .await
        .expect("pooled reads never fail");
    port.expect("a port")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooled_mariadb_sessions_spread_onto_a_replica_that_comes_back() {
    let cluster = MariaCluster::start(2);
    let db = cluster.create_database("pooled").await;
    let config = with_cluster(
        &proxy::mysql_config_text(&cluster, ""),
        &format!(
            "monitor_user = \"app\"\nmonitor_password = \"app-secret\"\nslow_start = \"0s\"\n{CHECKS}"
        ),
    );
    let proxy = Proxy::with_monitors(&config).await;
    let (first, second) = (&cluster.replicas[0], &cluster.replicas[1]);
    let second_addr = format!("{}:{}", second.host, second.port);
    let read = || topology::mysql_read_port(&proxy, &db);

    // The second replica's applier stops: it lags, and gets no reads.
    let mut standby = cluster.admin(second).await;
    let mut primary = cluster.admin(&cluster.primary).await;
    standby
        .query_drop("STOP SLAVE SQL_THREAD")
        .await
        .expect("stop the SQL thread");
    primary
        .query_drop(format!("CREATE TABLE `{db}`.writes (n int)"))
        .await
        .expect("write on the primary");
    until_reader(&proxy, &second_addr, "lagging", |lag| lag.is_none(), read).await;

    // The application's pool opens now: every session reads from the first replica.
    let mut pooled = Vec::new();
    for _ in 0..6 {
        let mut conn = mysql_pooled(&proxy, &db).await;
        assert_eq!(port_of(&mut conn).await, first.port);
        pooled.push(conn);
    }

    // The second replica catches up; the pooled sessions spread onto it.
    standby
        .query_drop("START SLAVE SQL_THREAD")
        .await
        .expect("start the SQL thread");
    until_reader(
        &proxy,
        &second_addr,
        "healthy",
        |lag| lag == Some(0.0),
        read,
    )
    .await;
    let pooled = tokio::sync::Mutex::new(pooled);
    let spread = support::retry(FOLLOW_TIMEOUT, async || {
        let mut ports = Vec::new();
        for conn in pooled.lock().await.iter_mut() {
            ports.push(port_of(conn).await);
        }
        if ports.contains(&second.port) {
            Ok(())
        } else {
            Err(format!("pooled reads ran on {ports:?}"))
        }
    });
    if let Err(why) = spread.await {
        panic!("no pooled session reached the second replica within {FOLLOW_TIMEOUT:?}: {why}");
    }
    for conn in pooled.into_inner() {
        conn.disconnect().await.expect("disconnect");
    }
    standby.disconnect().await.expect("disconnect");
    primary.disconnect().await.expect("disconnect");
}
