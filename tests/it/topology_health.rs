//! Health checks against real servers: a replica killed with SIGKILL is marked unhealthy and
//! reads keep working with no client error. This cluster is the test's own (it kills a
//! server), and the checks are TCP-only (no `monitor_user`).

use crate::support;

use std::time::Duration;

use support::postgres::PgCluster;
use support::proxy::{self, Proxy};
use support::topology;

const HEALTH_TIMEOUT: Duration = Duration::from_secs(60);

/// The port of the server that answered one read on a new connection through the proxy.
async fn read_once(proxy: &Proxy, db: &str) -> Result<i32, String> {
    let port = topology::read_once(proxy, db, "SELECT inet_server_port()::text").await?;
    port.parse()
        .map_err(|e| format!("server port {port:?}: {e}"))
}

/// The state `/status` gives reader `addr`.
async fn reader_state(proxy: &Proxy, addr: &str) -> String {
    let readers = topology::readers(proxy, "main").await;
    readers
        .into_iter()
        .find(|(a, _)| a == addr)
        .map(|(_, state)| state)
        .unwrap_or_else(|| panic!("{addr} is not among the readers"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_reader_is_marked_unhealthy_and_reads_continue() {
    let mut cluster = PgCluster::start(2);
    let db = cluster.create_database("health").await;
    let config = proxy::config_text(&cluster, "").replace(
        "[routing]",
        "health_interval = \"100ms\"\nfail_after = 2\nrecover_after = 1\n\n[routing]",
    );
    let proxy = Proxy::with_monitors(&config).await;
    let victim = &cluster.replicas[0];
    let victim_addr = format!("{}:{}", victim.host, victim.port);
    let survivor = i32::from(cluster.replicas[1].port);
    assert_eq!(reader_state(&proxy, &victim_addr).await, "healthy");

    cluster.replicas[0].kill();
    let marked = support::retry(HEALTH_TIMEOUT, async || {
        read_once(&proxy, &db).await.expect("reads never fail");
        match reader_state(&proxy, &victim_addr).await.as_str() {
            "unhealthy" => Ok(()),
            other => Err(format!("state {other}")),
        }
    });
    if let Err(why) = marked.await {
        panic!("{victim_addr} was not marked unhealthy within {HEALTH_TIMEOUT:?}: {why}");
    }
    for _ in 0..20 {
        assert_eq!(
            read_once(&proxy, &db).await,
            Ok(survivor),
            "reads go to the healthy replica"
        );
    }
    let metrics = proxy.admin_get("/metrics").await;
    let unhealthy =
        format!("switchyard_instance_healthy{{cluster=\"main\",instance=\"{victim_addr}\"}} 0");
    assert!(metrics.contains(&unhealthy), "{unhealthy} in:\n{metrics}");
}

/// Turns SSL on in every server with `pki`'s certificate, and refuses `postgres` (the
/// monitor account here) on connections without it.
async fn require_ssl_for_postgres(cluster: &PgCluster, pki: &support::pki::Pki) {
    let cert = pki.localhost_cert();
    for server in std::iter::once(&cluster.primary).chain(&cluster.replicas) {
        cluster.enable_ssl(server, &cert).await;
        let hba = server.data_dir.join("pg_hba.conf");
        let rules = std::fs::read_to_string(&hba).expect("read pg_hba.conf");
        std::fs::write(
            &hba,
            format!("hostnossl all postgres 127.0.0.1/32 reject\n{rules}"),
        )
        .expect("write pg_hba.conf");
        let admin = cluster.superuser(server, "postgres").await;
        admin
            .batch_execute("SELECT pg_reload_conf()")
            .await
            .expect("reload pg_hba.conf");
        // The postmaster reloads asynchronously: wait until plaintext logins are refused.
        let refused = support::retry(HEALTH_TIMEOUT, async || {
            match support::postgres::connect(&server.config("postgres", "postgres")).await {
                Ok(_) => Err("plaintext login still accepted".to_owned()),
                Err(_) => Ok(()),
            }
        });
        if let Err(why) = refused.await {
            panic!("{}: {why}", server.name);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_use_the_cluster_tls() {
    let cluster = PgCluster::start(1);
    let db = cluster.create_database("monitor_tls").await;
    let pki = support::pki::make_pki("monitor");
    require_ssl_for_postgres(&cluster, &pki).await;
    let settings = format!(
        "tls = \"verify-ca\"\nca_file = \"{}\"\nmonitor_user = \"postgres\"\nhealth_interval = \"100ms\"\nfail_after = 1\nrecover_after = 1\n\n[routing]",
        pki.ca.display()
    );
    let config = proxy::config_text(&cluster, "").replace("[routing]", &settings);
    let proxy = Proxy::with_monitors(&config).await;
    let reader = &cluster.replicas[0];
    let reader_addr = format!("{}:{}", reader.host, reader.port);
    // With fail_after = 1 the first check decides: the gauge appears as 1 only if the
    // monitor logged in over TLS and found a replica.
    let gauge =
        format!("switchyard_instance_healthy{{cluster=\"main\",instance=\"{reader_addr}\"}}");
    let checked = support::retry(HEALTH_TIMEOUT, async || {
        let metrics = proxy.admin_get("/metrics").await;
        match metrics.lines().find(|l| l.starts_with(&gauge)) {
            Some(line) => Ok(line.to_owned()),
            None => Err("not checked yet".to_owned()),
        }
    });
    let line = checked.await.expect("the reader gets checked");
    assert_eq!(line, format!("{gauge} 1"));
    assert_eq!(reader_state(&proxy, &reader_addr).await, "healthy");
    assert_eq!(read_once(&proxy, &db).await, Ok(i32::from(reader.port)));
}
