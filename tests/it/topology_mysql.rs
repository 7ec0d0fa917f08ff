//! Discovery and health checks on the MySQL side, against MariaDB: `aurora` discovery reads a
//! table with the columns of Aurora MySQL's `information_schema.replica_host_status`
//! through mysql_async, health checks ask `@@read_only`/`@@innodb_read_only` as the monitor
//! account, and a replica killed with SIGKILL costs no client error. The cluster is the
//! test's own (it kills a server).
//!
//! MariaDB's servers share 127.0.0.1 on different ports, so `instance_pattern =
//! "127.0.0.?:PORT"` with server id `1` names replica 1; the table has no writer row, so the
//! configured writer stays.

use crate::support;

use std::time::Duration;

use mysql_async::prelude::Queryable;

use support::mariadb::MariaCluster;
use support::proxy::{Proxy, mysql_config_text};
use support::topology::{mysql_read_port as read_once, status};

const FOLLOW_TIMEOUT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aurora_discovery_and_health_checks_on_mysql() {
    let cluster = MariaCluster::start(1);
    let db = cluster.create_database("aurora").await;
    let replica = &cluster.replicas[0];
    let mut primary = cluster.admin(&cluster.primary).await;
    primary
        .query_drop(format!(
            "CREATE TABLE `{db}`.replica_host_status (
                 server_id varchar(100), session_id varchar(100),
                 last_update_timestamp datetime(6), replica_lag_in_milliseconds double);
             INSERT INTO `{db}`.replica_host_status
                 VALUES ('1', 'b1d2c3e4-0001', UTC_TIMESTAMP(6), 20)"
        ))
        .await
        .expect("create the topology table");
    cluster.wait_replicated().await;

    let topology = format!(
        r#"monitor_user = "app"
monitor_password = "app-secret"
health_interval = "100ms"
fail_after = 2
recover_after = 1

[clusters.main.discovery]
kind = "aurora"
query = "SELECT server_id, session_id, last_update_timestamp, replica_lag_in_milliseconds FROM `{db}`.replica_host_status"
instance_pattern = "127.0.0.?:{port}"
interval = "100ms"
drain_after = 2

[routing]"#,
        port = replica.port
    );
    let static_readers = format!("readers = [\"{}:{}\"]", replica.host, replica.port);
    let config = mysql_config_text(&cluster, "");
    assert!(config.contains(&static_readers), "{config}");
    let config = config
        .replace(&static_readers, "readers = []")
        .replace("[routing]", &topology);
    let proxy = Proxy::with_monitors(&config).await;

    // Discovery adds replica 1; the writer and the replica pass their role checks.
    let reached = support::retry(FOLLOW_TIMEOUT, async || {
        let port = read_once(&proxy, &db).await.expect("reads never fail");
        if port == replica.port {
            Ok(())
        } else {
            Err(format!("last read ran on port {port}"))
        }
    });
    if let Err(why) = reached.await {
        panic!(
            "reads did not reach the discovered replica: {why}\n{}",
            status(&proxy, "main").await
        );
    }
    let main = status(&proxy, "main").await;
    assert_eq!(main["writer"]["state"], "healthy", "{main}");
    assert_eq!(main["readers"][0]["state"], "healthy", "{main}");

    // Killed: marked unhealthy, and reads fall back to the writer without an error.
    support::signal(replica.pid(), libc::SIGKILL);
    let marked = support::retry(FOLLOW_TIMEOUT, async || {
        read_once(&proxy, &db).await.expect("reads never fail");
        let main = status(&proxy, "main").await;
        match main["readers"][0]["state"].as_str() {
            Some("unhealthy") => Ok(()),
            other => Err(format!("state {other:?}")),
        }
    });
    if let Err(why) = marked.await {
        panic!("the killed replica was not marked unhealthy: {why}");
    }
    for _ in 0..10 {
        assert_eq!(read_once(&proxy, &db).await, Ok(cluster.primary.port));
    }
}
