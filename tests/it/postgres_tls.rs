//! TLS on both sides of the proxy against real servers: clients that must use TLS, and
//! backend connections verified against a CA. Its tests share a cluster of their own,
//! because they turn on SSL in its servers.

use crate::support;

use std::path::Path;
use std::sync::OnceLock;

use support::pki::{Pki, make_pki};
use support::postgres::PgCluster;
use support::proxy::{Proxy, config_text};
use tokio::process::Command;

/// This module's cluster, started on first use: the others' must not see SSL turned on.
fn cluster() -> &'static PgCluster {
    static CLUSTER: OnceLock<PgCluster> = OnceLock::new();
    CLUSTER.get_or_init(|| PgCluster::start(2))
}

/// Turns SSL on in every server of the cluster with `pki`'s certificate.
async fn enable_server_ssl(cluster: &PgCluster, pki: &Pki) {
    let cert = pki.localhost_cert();
    for server in std::iter::once(&cluster.primary).chain(&cluster.replicas) {
        cluster.enable_ssl(server, &cert).await;
    }
}

async fn psql(conninfo: &str, sql: &str) -> (bool, String) {
    let out = Command::new("psql")
        .args(["-X", "-A", "-t", "-c", sql, conninfo])
        .output()
        .await
        .expect("run psql");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test]
async fn clients_must_use_tls_when_required() {
    let cluster = cluster();
    let db = cluster.create_database("client_tls").await;
    let pki = make_pki("client");
    let extra = format!(
        "tls_mode = \"require\"\ntls_cert = \"{}\"\ntls_key = \"{}\"",
        pki.cert.display(),
        pki.key.display()
    );
    let proxy = Proxy::from_config(&config_text(cluster, &extra)).await;
    let base = proxy.conninfo("app", "app-secret", &db);

    let verified = format!(
        "{base} sslmode=verify-full sslrootcert={}",
        pki.ca.display()
    );
    let (ok, out) = psql(&verified, "SELECT pg_is_in_recovery()").await;
    assert!(
        ok,
        "TLS client verified the proxy's certificate and ran a read: {out}"
    );
    assert_eq!(out.trim(), "t");

    let (ok, out) = psql(&format!("{base} sslmode=disable"), "SELECT 1").await;
    assert!(!ok, "a plaintext client is refused");
    assert!(out.contains("requires TLS"), "{out}");
}

#[tokio::test]
async fn backend_connections_use_verified_tls() {
    let cluster = cluster();
    let db = cluster.create_database("backend_tls").await;
    let pki = make_pki("backend");
    enable_server_ssl(cluster, &pki).await;

    let with_tls = |mode: &str, ca: Option<&Path>| {
        let ca = ca
            .map(|p| format!("ca_file = \"{}\"\n", p.display()))
            .unwrap_or_default();
        config_text(cluster, "").replace("[routing]", &format!("tls = \"{mode}\"\n{ca}\n[routing]"))
    };
    let proxy = Proxy::from_config(&with_tls("verify-full", Some(&pki.ca))).await;
    let client = proxy.connect(&db).await;
    // pg_stat_ssl and pg_backend_pid() describe the node, which routes to the writer: the
    // hint asks the reader.
    let ssl = "/* switchyard:reader */ SELECT ssl AND pg_is_in_recovery() FROM pg_stat_ssl WHERE pid = pg_backend_pid()";
    let on_reader: bool = client.query_one(ssl, &[]).await.unwrap().get(0);
    assert!(on_reader, "the reader connection is TLS");
    client.batch_execute("BEGIN").await.unwrap();
    let on_writer: bool = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(on_writer, "the writer connection is TLS");
    client.batch_execute("COMMIT").await.unwrap();

    // Encryption without verification.
    let proxy = Proxy::from_config(&with_tls("require", None)).await;
    proxy
        .connect(&db)
        .await
        .simple_query("SELECT 1")
        .await
        .unwrap();

    // A certificate from another CA is refused, and the client is told why.
    let other = make_pki("other");
    let proxy = Proxy::from_config(&with_tls("verify-full", Some(&other.ca))).await;
    let err = tokio_postgres::connect(
        &proxy.conninfo("app", "app-secret", &db),
        tokio_postgres::NoTls,
    )
    .await
    .err()
    .expect("untrusted backend certificate");
    let db_error = err.as_db_error().expect("an error from the proxy");
    assert_eq!(db_error.code().code(), "08001", "{db_error}");
}
