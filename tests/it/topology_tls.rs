//! `tls = "verify-full"` for discovered instances, against real servers with certificates
//! from a test CA. Discovery connects to IP addresses, so each instance is verified as the
//! name it was discovered under: the endpoint name for `dns`, the host `instance_pattern`
//! makes for `aurora`. An instance whose certificate lacks that name gets no queries (it
//! never passes its health check), and a client whose writer fails verification gets an
//! error: never a silent unverified connection.
//!
//! PostgreSQL: a primary on 127.0.0.1 and replicas on 127.0.0.2 and 127.0.0.3, one port, as
//! Aurora instances are, shared by the tests. The primary's and replica 1's certificates carry
//! their instance and endpoint names (as RDS certificates do); replica 2's names another host.
//! MariaDB: a primary and a replica on 127.0.0.1, each behind an endpoint of its own.

use crate::support;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use tokio::sync::OnceCell;

use support::dns::DnsServer;
use support::mariadb::MariaCluster;
use support::pki::{Pki, make_pki};
use support::postgres::PgCluster;
use support::proxy::{self, Proxy};
use support::topology::{self, FOLLOW_TIMEOUT};

const PRIMARY: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const REPLICA1: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const REPLICA2: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);
/// The names in each PostgreSQL server's certificate: primary, replica 1, replica 2.
const PG_CERT_NAMES: [&[&str]; 3] = [
    &[
        "127.0.0.1",
        "writer.cluster.test",
        "reader.cluster.test",
        "primary.cluster.test",
    ],
    &["reader.cluster.test", "replica1.cluster.test"],
    &["replica2.elsewhere.test"],
];
/// Reads made to show that an instance gets none.
const READS: usize = 20;

/// The PostgreSQL servers with SSL on, and the CA that signed their certificates.
struct PgServers {
    cluster: PgCluster,
    pki: Pki,
}

async fn pg_servers() -> &'static PgServers {
    static SERVERS: OnceCell<PgServers> = OnceCell::const_new();
    SERVERS
        .get_or_init(async || {
            let hosts = [PRIMARY, REPLICA1, REPLICA2].map(|ip| ip.to_string());
            let cluster = PgCluster::start_on(&hosts.each_ref().map(String::as_str));
            let pki = make_pki("discovery");
            let servers = std::iter::once(&cluster.primary).chain(&cluster.replicas);
            for (server, names) in servers.zip(PG_CERT_NAMES) {
                let cert = pki.server_cert(&server.name, names);
                cluster.enable_ssl(server, &cert).await;
            }
            PgServers { cluster, pki }
        })
        .await
}

/// A PostgreSQL proxy config for cluster `main` with verify-full TLS, `cluster` added to
/// `[clusters.main]` and `discovery`.
fn pg_config(servers: &PgServers, cluster: &str, discovery: &str) -> String {
    let tls = format!(
        "tls = \"verify-full\"\nca_file = \"{}\"\n{cluster}",
        servers.pki.ca.display()
    );
    let writer = format!("{PRIMARY}:{}", servers.cluster.primary.port);
    topology::discovery_config(&writer, &tls, discovery)
}

/// The server that answered one read on a new connection, and whether it came over TLS.
async fn pg_read_once(proxy: &Proxy, db: &str) -> Result<(Ipv4Addr, bool), String> {
    // About the node (pg_stat_ssl, pg_backend_pid()), so the hint asks for a reader.
    let sql = "/* switchyard:reader */ SELECT host(inet_server_addr()) || ' ' || ssl::text \
               FROM pg_stat_ssl WHERE pid = pg_backend_pid()";
    let answer = topology::read_once(proxy, db, sql).await?;
    let (addr, ssl) = answer.split_once(' ').ok_or(answer.clone())?;
    let addr = addr.parse().map_err(|e| format!("{answer:?}: {e}"))?;
    Ok((addr, ssl == "true"))
}

/// Reads on new connections until one reaches `want`; every read must succeed over TLS.
async fn until_pg_reads_reach(proxy: &Proxy, db: &str, want: Ipv4Addr) {
    let read = async || {
        let (at, tls) = pg_read_once(proxy, db).await?;
        assert!(tls, "the read on {at} came over TLS");
        Ok(at)
    };
    topology::until_reads_reach(proxy, want, read).await;
}

/// Replica 2, whose certificate names another host, is in the topology under `tls_name`
/// but gets no reads.
async fn replica2_gets_no_reads(proxy: &Proxy, db: &str, addr: &str, tls_name: &str) {
    let main = topology::status(proxy, "main").await;
    let listed = main["readers"]
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["addr"] == addr).cloned())
        .unwrap_or_else(|| panic!("{addr} is among the readers: {main}"));
    assert_eq!(listed["tls_name"], tls_name, "{listed}");
    assert_eq!(
        listed["state"], "joining",
        "never passes its check: {listed}"
    );
    let mut seen = BTreeSet::new();
    for _ in 0..READS {
        seen.insert(pg_read_once(proxy, db).await.expect("reads never fail").0);
    }
    assert!(
        !seen.contains(&REPLICA2),
        "no read reaches {addr}: {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_dns_instances_are_verified_as_their_endpoint_names() {
    let servers = pg_servers().await;
    let port = servers.cluster.primary.port;
    let db = servers.cluster.create_database("tls_dns").await;
    let dns = DnsServer::start("cluster.test.").await;
    dns.set("writer.cluster.test.", &[PRIMARY]).await;
    dns.set("reader.cluster.test.", &[REPLICA1, REPLICA2]).await;
    let discovery = format!(
        "kind = \"dns\"\nwriter_endpoint = \"writer.cluster.test:{port}\"\nreader_endpoint = \"reader.cluster.test:{port}\"\nnameservers = [\"{}\"]",
        dns.addr
    );
    let proxy = Proxy::with_monitors(&pg_config(servers, "", &discovery)).await;

    until_pg_reads_reach(&proxy, &db, REPLICA1).await;
    let replica2 = format!("{REPLICA2}:{port}");
    replica2_gets_no_reads(&proxy, &db, &replica2, "reader.cluster.test").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_aurora_instances_are_verified_as_their_pattern_hosts() {
    let servers = pg_servers().await;
    let cluster = &servers.cluster;
    let port = cluster.primary.port;
    let db = cluster.create_database("tls_aurora").await;
    let primary = cluster.superuser(&cluster.primary, &db).await;
    primary
        .batch_execute(&format!(
            "{};
             INSERT INTO aurora_topology VALUES
                 ('primary', 'MASTER_SESSION_ID', now(), 0),
                 ('replica1', 'a7c1e2f0-0000-4000-8000-000000000002', now(), 0),
                 ('replica2', 'a7c1e2f0-0000-4000-8000-000000000003', now(), 0);",
            topology::PG_AURORA_TABLE
        ))
        .await
        .expect("create the topology table");
    let dns = DnsServer::start("cluster.test.").await;
    for (name, ip) in [
        ("primary", PRIMARY),
        ("replica1", REPLICA1),
        ("replica2", REPLICA2),
    ] {
        dns.set(&format!("{name}.cluster.test."), &[ip]).await;
        dns.set(&format!("{name}.wrong.cluster.test."), &[ip]).await;
    }
    let aurora = |domain: &str| {
        format!(
            "kind = \"aurora\"\nquery = \"{}\"\ninstance_pattern = \"?.{domain}:{port}\"\nnameservers = [\"{}\"]",
            topology::PG_AURORA_QUERY,
            dns.addr
        )
    };
    let monitor_database = format!("monitor_database = \"{db}\"");
    let config = pg_config(servers, &monitor_database, &aurora("cluster.test"));
    let proxy = Proxy::with_monitors(&config).await;

    until_pg_reads_reach(&proxy, &db, REPLICA1).await;
    let main = topology::status(&proxy, "main").await;
    assert_eq!(main["writer"]["tls_name"], "primary.cluster.test", "{main}");
    let replica2 = format!("replica2.cluster.test:{port}");
    replica2_gets_no_reads(&proxy, &db, &replica2, "replica2.cluster.test").await;

    // A pattern whose hosts no certificate names: once discovery makes the writer
    // primary.wrong.cluster.test, a new client waits out failover_timeout for a usable
    // writer and is then told why there is none: its certificate.
    let wrong = config
        .replace("?.cluster.test", "?.wrong.cluster.test")
        .replace(
            &monitor_database,
            &format!("{monitor_database}\nfailover_timeout = \"1s\""),
        );
    let proxy = Proxy::with_monitors(&wrong).await;
    let writer = format!("primary.wrong.cluster.test:{port}");
    let switched = support::retry(FOLLOW_TIMEOUT, async || {
        let main = topology::status(&proxy, "main").await;
        if main["writer"]["addr"] == writer {
            Ok(())
        } else {
            Err(format!("writer is {}", main["writer"]))
        }
    });
    switched
        .await
        .expect("discovery names the writer by the pattern");
    let refused = tokio_postgres::connect(
        &proxy.conninfo("app", "app-secret", &db),
        tokio_postgres::NoTls,
    )
    .await
    .err()
    .expect("a writer whose certificate lacks its name is refused");
    let message = refused
        .as_db_error()
        .map(|e| e.message().to_owned())
        .unwrap_or_else(|| panic!("an error from the proxy: {refused}"));
    assert!(
        message.contains("primary.wrong.cluster.test") && message.contains("certificate"),
        "{message}"
    );
}

/// The port of the MariaDB server that answered one read on a new connection through the
/// proxy, and the TLS cipher of its connection from the proxy (empty without TLS).
async fn mysql_read_once(proxy: &Proxy, db: &str) -> Result<(u16, String), String> {
    // SESSION_STATUS describes the node, which routes to the writer: the hint asks a reader.
    let sql = "/* switchyard:reader */ SELECT @@port, VARIABLE_VALUE \
               FROM information_schema.SESSION_STATUS WHERE VARIABLE_NAME = 'Ssl_cipher'";
    topology::mysql_read_once(proxy, db, sql).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_dns_instances_are_verified_as_their_endpoint_names() {
    let pki = make_pki("mysql-discovery");
    let cluster = MariaCluster::start_with_tls(&[
        pki.server_cert("primary", &["127.0.0.1", "writer.cluster.test"]),
        pki.server_cert("replica1", &["reader.cluster.test"]),
    ]);
    let db = cluster.create_database("tls_dns").await;
    let dns = DnsServer::start("cluster.test.").await;
    dns.set("writer.cluster.test.", &[PRIMARY]).await;
    dns.set("reader.cluster.test.", &[PRIMARY]).await;
    let (primary_port, replica_port) = (cluster.primary.port, cluster.replicas[0].port);
    let settings = format!(
        r#"tls = "verify-full"
ca_file = "{ca}"
monitor_user = "app"
monitor_password = "app-secret"
health_interval = "100ms"
fail_after = 2
recover_after = 1

[clusters.main.discovery]
kind = "dns"
writer_endpoint = "writer.cluster.test:{primary_port}"
reader_endpoint = "reader.cluster.test:{replica_port}"
interval = "100ms"
nameservers = ["{dns}"]

[routing]"#,
        ca = pki.ca.display(),
        dns = dns.addr,
    );
    let config = proxy::with_readers(&proxy::mysql_config_text(&cluster, ""), &[])
        .replace("[routing]", &settings);
    let proxy = Proxy::with_monitors(&config).await;

    // Until discovery has run there are no readers: reads go to the writer, over TLS too.
    let read = async || {
        let (port, cipher) = mysql_read_once(&proxy, &db).await?;
        assert!(!cipher.is_empty(), "the read on port {port} came over TLS");
        Ok(port)
    };
    topology::until_reads_reach(&proxy, replica_port, read).await;
    let main = topology::status(&proxy, "main").await;
    assert_eq!(
        main["readers"][0]["tls_name"], "reader.cluster.test",
        "{main}"
    );
}
