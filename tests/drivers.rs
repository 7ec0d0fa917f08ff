//! The clients applications really use, run through switchyard against real servers:
//! Python drivers (psycopg, asyncpg, PyMySQL, mysql-connector-python, mysqlclient), psql
//! and the mariadb CLI. Each Python script in tests/drivers/ runs twice: straight against
//! the primary first (which proves the script right), then through the proxy, where it must
//! behave the same (its reads going to replicas). A failing script's output is shown.

mod support;

use std::path::{Path, PathBuf};
use std::process::Output;

use tokio::process::Command;

use support::mariadb::MariaCluster;
use support::pki::{Pki, make_pki};
use support::postgres::PgCluster;
use support::proxy::{Proxy, config_text, mysql_config_text};

/// The Python that scripts/install-deps.sh installs the drivers for.
const PYTHON: &str = "python3";

fn scripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/drivers")
}

/// A test config with client TLS offered (`prefer`) and read-your-writes as applications
/// get it by default (the shared test config turns it off to test routing).
fn driver_config(config: String) -> String {
    config.replace("read_your_writes = \"0s\"", "")
}

fn tls_extra(pki: &Pki) -> String {
    format!(
        "tls_cert = \"{}\"\ntls_key = \"{}\"",
        pki.cert.display(),
        pki.key.display()
    )
}

/// Where a script connects to.
struct Target<'a> {
    /// `server` (the primary itself) or `proxy`.
    kind: &'a str,
    port: u16,
    /// libpq-style sslmode for the PostgreSQL scripts, `require` for MySQL TLS; "" for none.
    ssl: &'a str,
}

fn describe(output: &Output) -> String {
    format!(
        "exit status {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Runs `script` against `target` and panics with its output unless it exits 0.
async fn run_script(script: &str, db: &str, target: Target<'_>) {
    let output = Command::new(PYTHON)
        .arg(scripts_dir().join(script))
        .current_dir(scripts_dir())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("SY_HOST", "127.0.0.1")
        .env("SY_PORT", target.port.to_string())
        .env("SY_USER", "app")
        .env("SY_PASSWORD", "app-secret")
        .env("SY_DB", db)
        .env("SY_TARGET", target.kind)
        .env("SY_SSLMODE", target.ssl)
        .kill_on_drop(true)
        .output()
        .await
        .unwrap_or_else(|e| panic!("run {PYTHON} {script}: {e}; run scripts/install-deps.sh"));
    assert!(
        output.status.success(),
        "{script} against the {} failed: {}",
        target.kind,
        describe(&output)
    );
    // Shown with --nocapture: which checks ran, and any skipped as known failures.
    println!("{}", String::from_utf8_lossy(&output.stdout));
}

/// Whether `module` imports in [`PYTHON`].
async fn has_module(module: &str) -> bool {
    Command::new(PYTHON)
        .args(["-c", &format!("import {module}")])
        .output()
        .await
        .is_ok_and(|o| o.status.success())
}

/// Runs a PostgreSQL driver script on the primary, then through a proxy (over TLS).
async fn postgres_script(script: &str) {
    let cluster = PgCluster::shared();
    let db = cluster.create_database(script).await;
    let direct = Target {
        kind: "server",
        port: cluster.primary.port,
        ssl: "",
    };
    run_script(script, &db, direct).await;
    let pki = make_pki("drivers");
    let proxy = Proxy::from_config(&driver_config(config_text(cluster, &tls_extra(&pki)))).await;
    let through = Target {
        kind: "proxy",
        port: proxy.addr.port(),
        ssl: "require",
    };
    run_script(script, &db, through).await;
}

/// Runs a MySQL driver script on the primary, then through a proxy (over TLS).
async fn mysql_script(script: &str) {
    let cluster = MariaCluster::shared();
    let db = cluster.create_database(script).await;
    let direct = Target {
        kind: "server",
        port: cluster.primary.port,
        ssl: "",
    };
    run_script(script, &db, direct).await;
    let pki = make_pki("drivers");
    let config = mysql_config_text(cluster, &tls_extra(&pki));
    let proxy = Proxy::from_config(&driver_config(config)).await;
    let through = Target {
        kind: "proxy",
        port: proxy.addr.port(),
        ssl: "require",
    };
    run_script(script, &db, through).await;
}

#[tokio::test]
async fn psycopg() {
    postgres_script("psycopg_driver.py").await;
}

#[tokio::test]
async fn asyncpg() {
    postgres_script("asyncpg_driver.py").await;
}

#[tokio::test]
async fn pymysql() {
    mysql_script("pymysql_driver.py").await;
}

#[tokio::test]
async fn mysql_connector() {
    mysql_script("mysql_connector_driver.py").await;
}

#[tokio::test]
async fn mysqlclient() {
    if !has_module("MySQLdb").await {
        eprintln!(
            "mysqlclient (MySQLdb) is not installed: scripts/install-deps.sh skips it when it \
             does not build; this test checks nothing"
        );
        return;
    }
    mysql_script("mysqlclient_driver.py").await;
}

#[tokio::test]
#[ignore]
async fn zz_hold_pg() {
    let cluster = PgCluster::shared();
    let db = cluster.create_database("hold").await;
    let pki = make_pki("drivers");
    let proxy = Proxy::from_config(&driver_config(config_text(cluster, &tls_extra(&pki)))).await;
    std::fs::write("/dev/shm/hold_pg", format!("{} {} {}", proxy.addr.port(), cluster.primary.port, db)).unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(3000)).await;
}

#[tokio::test]
#[ignore]
async fn zz_hold_my() {
    let cluster = MariaCluster::shared();
    let db = cluster.create_database("hold").await;
    let pki = make_pki("drivers");
    let proxy = Proxy::from_config(&driver_config(mysql_config_text(cluster, &tls_extra(&pki)))).await;
    std::fs::write("/dev/shm/hold_my", format!("{} {} {}", proxy.addr.port(), cluster.primary.port, db)).unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(3000)).await;
}
