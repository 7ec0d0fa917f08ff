//! `dns` discovery against real servers: a primary on 127.0.0.1 and replicas on 127.0.0.2 and
//! 127.0.0.3, all on one port as Aurora instances are, and an in-process DNS server whose
//! reader endpoint the test changes. Reads follow the endpoint with no client error.

use crate::support;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use support::dns::DnsServer;
use support::postgres::PgCluster;
use support::proxy::Proxy;
use support::topology::{self, FOLLOW_TIMEOUT};

const PRIMARY: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const REPLICA1: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const REPLICA2: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);

fn config(port: u16, dns: &DnsServer) -> String {
    let discovery = format!(
        "kind = \"dns\"\nwriter_endpoint = \"writer.cluster.test:{port}\"\nreader_endpoint = \"reader.cluster.test:{port}\"\nnameservers = [\"{}\"]",
        dns.addr
    );
    topology::discovery_config(&format!("{PRIMARY}:{port}"), "", &discovery)
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_follow_the_reader_endpoint() {
    let hosts = [PRIMARY, REPLICA1, REPLICA2].map(|ip| ip.to_string());
    let cluster = PgCluster::start_on(&hosts.each_ref().map(String::as_str));
    let port = cluster.primary.port;
    let db = cluster.create_database("dns").await;
    let dns = DnsServer::start("cluster.test.").await;
    dns.set("writer.cluster.test.", &[PRIMARY]).await;
    dns.set("reader.cluster.test.", &[REPLICA1]).await;
    let proxy = Proxy::with_monitors(&config(port, &dns)).await;

    // Until discovery has run there are no readers and reads go to the writer.
    until_reads_reach(&proxy, &db, REPLICA1).await;

    // Scale-out: a second replica appears on the reader endpoint.
    dns.set("reader.cluster.test.", &[REPLICA1, REPLICA2]).await;
    until_reads_reach(&proxy, &db, REPLICA2).await;

    // A session that sits on replica 1 keeps working while replica 1 is drained.
    let (held, connection) = tokio_postgres::connect(
        &proxy.conninfo("app", "app-secret", &db),
        tokio_postgres::NoTls,
    )
    .await
    .expect("connect through the proxy");
    tokio::spawn(async move {
        let _ = connection.await;
    });

    // Scale-in: replica 1 leaves the reader endpoint and, after drain_after rounds, the topology.
    dns.set("reader.cluster.test.", &[REPLICA2]).await;
    let gone = format!("{REPLICA1}:{port}");
    let drained = support::retry(FOLLOW_TIMEOUT, async || {
        held.query_one("SELECT 1", &[])
            .await
            .expect("the held session keeps working");
        let now = topology::readers(&proxy, "main").await;
        if now.iter().any(|(addr, _)| *addr == gone) {
            Err(format!("still listed: {now:?}"))
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
        "no new read reaches a drained replica: {seen:?}"
    );
    assert_eq!(
        topology::readers(&proxy, "main").await,
        [(format!("{REPLICA2}:{port}"), "healthy".to_owned())]
    );
    let metrics = proxy.admin_get("/metrics").await;
    for name in [
        "switchyard_discovery_rounds_total",
        "switchyard_discovery_changes_total",
        "switchyard_instances",
        "switchyard_instance_healthy",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
}
