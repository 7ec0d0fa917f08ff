//! `aurora` discovery against real servers: a primary on 127.0.0.1 and replicas on 127.0.0.2
//! and 127.0.0.3, all on one port, and a table with the columns of Aurora's
//! `aurora_replica_status()` that the test edits. `instance_pattern = "127.0.0.?:PORT"` turns
//! server ids `1`, `2`, `3` into those addresses (no DNS needed). Reads follow the table,
//! including the lag it reports, with no client error.

use crate::support;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use support::postgres::PgCluster;
use support::proxy::Proxy;
use support::topology::{self, FOLLOW_TIMEOUT};

const PRIMARY: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const REPLICA1: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const REPLICA2: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);

fn config(port: u16, db: &str) -> String {
    let discovery = format!(
        "kind = \"aurora\"\nquery = \"{}\"\ninstance_pattern = \"127.0.0.?:{port}\"\nstale_after = \"5min\"",
        topology::PG_AURORA_QUERY
    );
    let monitor_database = format!("monitor_database = \"{db}\"");
    topology::discovery_config(&format!("{PRIMARY}:{port}"), &monitor_database, &discovery)
}

/// The address of the server that answered one read on a new connection through the proxy.
async fn read_once(proxy: &Proxy, db: &str) -> Result<Ipv4Addr, String> {
    let addr = topology::read_once(proxy, db, "SELECT host(inet_server_addr())").await?;
    addr.parse()
        .map_err(|e| format!("server address {addr:?}: {e}"))
}

/// Reads on new connections until one reaches `want`; every read must succeed.
async fn until_reads_reach(proxy: &Proxy, db: &str, want: Ipv4Addr) {
    topology::until_reads_reach(proxy, want, || read_once(proxy, db)).await;
}

/// Reads on new connections until `/status` shows reader `addr` in `state` with `lag`
/// (seconds); every read must succeed.
async fn until_reader(proxy: &Proxy, db: &str, addr: &str, state: &str, lag: Option<f64>) {
    let seen = support::retry(FOLLOW_TIMEOUT, async || {
        read_once(proxy, db).await.expect("reads never fail");
        match topology::reader(proxy, "main", addr).await {
            (now, now_lag) if now == state && now_lag == lag => Ok(()),
            other => Err(format!("state and lag {other:?}")),
        }
    });
    if let Err(why) = seen.await {
        panic!("{addr} did not become {state} with lag {lag:?} within {FOLLOW_TIMEOUT:?}: {why}");
    }
}

/// The reader addresses of cluster `main` in `/status`.
async fn reader_addrs(proxy: &Proxy) -> Vec<String> {
    let readers = topology::readers(proxy, "main").await;
    readers.into_iter().map(|(addr, _)| addr).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_follow_the_topology_table() {
    let hosts = [PRIMARY, REPLICA1, REPLICA2].map(|ip| ip.to_string());
    let cluster = PgCluster::start_on(&hosts.each_ref().map(String::as_str));
    let port = cluster.primary.port;
    let db = cluster.create_database("aurora").await;
    let primary = cluster.superuser(&cluster.primary, &db).await;
    primary
        .batch_execute(&format!(
            "{};
             INSERT INTO aurora_topology VALUES
                 ('1', 'MASTER_SESSION_ID', now(), 0),
                 ('2', 'a7c1e2f0-0000-4000-8000-000000000002', now(), 12.5);",
            topology::PG_AURORA_TABLE
        ))
        .await
        .expect("create the topology table");
    let proxy = Proxy::with_monitors(&config(port, &db)).await;
    until_reads_reach(&proxy, &db, REPLICA1).await;
    // An application's pool: connections opened now and kept (their reads run on replica 1,
    // the only one yet).
    let mut pooled = Vec::new();
    for _ in 0..6 {
        pooled.push(proxy.connect(&db).await);
    }

    // Scale-out: a row for replica 2 appears, plus an older second writer row (a demoted
    // writer's leftover), which must lose to the current one.
    primary
        .batch_execute(
            "INSERT INTO aurora_topology VALUES
                 ('3', 'a7c1e2f0-0000-4000-8000-000000000003', now(), 3),
                 ('9', 'MASTER_SESSION_ID', now() - interval '10 seconds', 0);",
        )
        .await
        .expect("add replica 2");
    until_reads_reach(&proxy, &db, REPLICA2).await;
    // The pooled connections reach it too: sessions spread over the readers they have.
    let spread = support::retry(FOLLOW_TIMEOUT, async || {
        let mut seen = BTreeSet::new();
        for client in &pooled {
            let row = client
                .query_one("SELECT host(inet_server_addr())", &[])
                .await
                .expect("pooled reads never fail");
            seen.insert(row.get::<_, String>(0));
        }
        if seen.contains(&REPLICA2.to_string()) {
            Ok(())
        } else {
            Err(format!("pooled reads ran on {seen:?}"))
        }
    });
    if let Err(why) = spread.await {
        panic!("no pooled connection reached {REPLICA2} within {FOLLOW_TIMEOUT:?}: {why}");
    }
    let main = topology::status(&proxy, "main").await;
    assert_eq!(
        main["writer"]["addr"],
        format!("{PRIMARY}:{port}"),
        "the most recently updated writer row wins"
    );

    // Aurora reports replica 2 a minute behind, over the default max_lag of 30 s: it gets
    // no reads until the reported lag is back under the ceiling.
    let lagging = format!("{REPLICA2}:{port}");
    let report_lag = async |ms: u32| {
        primary
            .batch_execute(&format!(
                "UPDATE aurora_topology SET replica_lag_in_msec = {ms} WHERE server_id = '3'"
            ))
            .await
            .expect("report replica 2's lag");
    };
    report_lag(60_000).await;
    until_reader(&proxy, &db, &lagging, "lagging", Some(60.0)).await;
    for _ in 0..20 {
        let at = read_once(&proxy, &db).await.expect("reads never fail");
        assert_ne!(at, REPLICA2, "no read reaches a lagging replica");
    }
    report_lag(3).await;
    until_reader(&proxy, &db, &lagging, "healthy", Some(0.003)).await;
    until_reads_reach(&proxy, &db, REPLICA2).await;

    // Scale-in: replica 1's row goes stale (no longer updated), which removes it.
    primary
        .batch_execute(
            "UPDATE aurora_topology SET last_update_timestamp = now() - interval '1 hour'
             WHERE server_id = '2'",
        )
        .await
        .expect("make replica 1 stale");
    let gone = format!("{REPLICA1}:{port}");
    let drained = support::retry(FOLLOW_TIMEOUT, async || {
        read_once(&proxy, &db).await.expect("reads never fail");
        let readers = reader_addrs(&proxy).await;
        if readers.contains(&gone) {
            Err(format!("still listed: {readers:?}"))
        } else {
            Ok(())
        }
    });
    if let Err(why) = drained.await {
        panic!("{gone} was not drained within {FOLLOW_TIMEOUT:?}: {why}");
    }
    let mut seen = BTreeSet::new();
    for _ in 0..20 {
        seen.insert(read_once(&proxy, &db).await.expect("reads never fail"));
    }
    assert!(
        !seen.contains(&REPLICA1),
        "no new read reaches a removed replica: {seen:?}"
    );

    // Deleting the row removes the instance just the same; with no replica left, reads go
    // to the writer.
    primary
        .batch_execute("DELETE FROM aurora_topology WHERE server_id <> '1'")
        .await
        .expect("remove every replica");
    let emptied = support::retry(FOLLOW_TIMEOUT, async || {
        let readers = reader_addrs(&proxy).await;
        if readers.is_empty() {
            Ok(())
        } else {
            Err(format!("still listed: {readers:?}"))
        }
    });
    if let Err(why) = emptied.await {
        panic!("replicas were not removed within {FOLLOW_TIMEOUT:?}: {why}");
    }
    assert_eq!(read_once(&proxy, &db).await, Ok(PRIMARY));
}
