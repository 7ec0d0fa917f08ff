//! The clients applications really use, run through switchyard against real servers: Python drivers
//! (psycopg, psycopg2, asyncpg, PyMySQL, aiomysql, mysql-connector-python, mysqlclient, MariaDB
//! Connector/Python), JDBC drivers (pgjdbc, MariaDB Connector/J), Node.js's node-postgres (`pg`),
//! `mysql2` and MariaDB's own connector (`mariadb`), PHP's PDO (pdo_pgsql, pdo_mysql), Ruby's `pg`
//! and `mysql2` gems (as Rails uses them), Perl's DBI with DBD::Pg and DBD::mysql, Go's pgx and
//! go-sql-driver/mysql (through database/sql), psql and the mariadb CLI. Each driver script in
//! tests/it/drivers/ runs twice: straight against the primary first (which proves the script
//! right), then through the proxy, where it must behave the same (its reads going to replicas).
//! A failing script's output is shown.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::Output;

use tokio::process::Command;

use support::mariadb::MariaCluster;
use support::pki::{Pki, make_pki};
use support::postgres::PgCluster;
use support::proxy::{Proxy, config_text, mysql_config_text};

/// The Python that scripts/install-deps.sh installs the drivers for.
const PYTHON: &str = "python3";
/// How long one run of a driver script may take.
const SCRIPT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

fn scripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/drivers")
}

/// A test config with client TLS offered (`prefer`), and read-your-writes and the message
/// size limit as applications get them by default (the shared test config turns
/// read-your-writes off to test routing, and lowers the limit to test it).
fn driver_config(config: String) -> String {
    config
        .replace("read_your_writes = \"0s\"", "")
        .replace("max_message_bytes = 1048576", "")
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

/// The JDBC drivers' jars, as Debian installs them (scripts/install-deps.sh).
const JDBC_CLASSPATH: &str =
    "/usr/share/java/postgresql.jar:/usr/share/java/mariadb-java-client.jar";

/// The command that runs a driver script (its file name, then any arguments), by its kind:
/// Python, Java (one source file, run by `java` itself, with the JDBC drivers' jars),
/// Node.js (with the modules that scripts/install-deps.sh installs beside the scripts), PHP,
/// Ruby, Perl or Go.
fn script_command(script: &str) -> Command {
    let mut words = script.split_whitespace();
    let path = scripts_dir().join(words.next().unwrap_or_default());
    let mut command = match path.extension().and_then(|e| e.to_str()) {
        Some("java") => {
            let mut java = Command::new("java");
            java.args(["-cp", JDBC_CLASSPATH]);
            java
        }
        Some("js") => Command::new("node"),
        Some("php") => Command::new("php"),
        Some("rb") => Command::new("ruby"),
        Some("pl") => Command::new("perl"),
        // `go run` of the one file, built in GOPATH mode against the sources Debian's
        // golang-*-dev packages install under /usr/share/gocode (scripts/install-deps.sh):
        // module mode would fetch pgx and go-sql-driver/mysql from the Go module proxy, which
        // these machines cannot reach. No cgo (pure Go drivers; no C compiler needed), and
        // a build cache of its own in the temporary directory, kept between runs.
        Some("go") => {
            let mut go = Command::new("go");
            go.arg("run")
                .env("GO111MODULE", "off")
                .env("GOPATH", "/usr/share/gocode")
                .env("GOPROXY", "off")
                .env("CGO_ENABLED", "0")
                .env("GOCACHE", std::env::temp_dir().join("switchyard-go-cache"));
            go
        }
        _ => {
            let mut python = Command::new(PYTHON);
            python.env("PYTHONDONTWRITEBYTECODE", "1");
            python
        }
    };
    command.arg(path).args(words);
    command
}

/// Runs `script` against `target` and panics with its output unless it exits 0.
async fn run_script(script: &str, db: &str, target: Target<'_>) {
    let output = script_command(script)
        .current_dir(scripts_dir())
        .env("SY_HOST", "127.0.0.1")
        .env("SY_PORT", target.port.to_string())
        .env("SY_USER", "app")
        .env("SY_PASSWORD", "app-secret")
        .env("SY_DB", db)
        .env("SY_TARGET", target.kind)
        .env("SY_SSLMODE", target.ssl)
        .env(
            "SY_POOL_MODE",
            std::env::var("SWITCHYARD_TEST_POOL_MODE").unwrap_or_else(|_| "transaction".into()),
        )
        .kill_on_drop(true)
        .output();
    // Each check ends itself after a minute (printing every thread's stack); this is the
    // backstop for a script that hangs anyway.
    let output = tokio::time::timeout(SCRIPT_TIMEOUT, output)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "{script} against the {} did not end in {SCRIPT_TIMEOUT:?}",
                target.kind
            )
        })
        .unwrap_or_else(|e| panic!("run {script}: {e}; run scripts/install-deps.sh"));
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
async fn psycopg2() {
    postgres_script("psycopg2_driver.py").await;
}

#[tokio::test]
async fn pgjdbc() {
    postgres_script("JdbcDrivers.java postgres").await;
}

#[tokio::test]
async fn node_pg() {
    postgres_script("node_pg_driver.js").await;
}

#[tokio::test]
async fn php_pdo_pgsql() {
    postgres_script("php_pdo_driver.php pgsql").await;
}

#[tokio::test]
async fn php_pdo_mysql() {
    mysql_script("php_pdo_driver.php mysql").await;
}

#[tokio::test]
async fn ruby_pg() {
    postgres_script("ruby_driver.rb pg").await;
}

#[tokio::test]
async fn ruby_mysql2() {
    mysql_script("ruby_driver.rb mysql2").await;
}

#[tokio::test]
async fn mariadb_connector_j() {
    mysql_script("JdbcDrivers.java mariadb").await;
}

#[tokio::test]
async fn pymysql() {
    mysql_script("pymysql_driver.py").await;
}

#[tokio::test]
async fn aiomysql() {
    mysql_script("aiomysql_driver.py").await;
}

#[tokio::test]
async fn mysql_connector() {
    mysql_script("mysql_connector_driver.py").await;
}

#[tokio::test]
async fn node_mysql2() {
    mysql_script("node_mysql2_driver.js").await;
}

#[tokio::test]
async fn node_mariadb() {
    mysql_script("node_mariadb_driver.js").await;
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
async fn mariadb_connector_python() {
    if !has_module("mariadb").await {
        eprintln!(
            "MariaDB Connector/Python (mariadb) is not installed: scripts/install-deps.sh skips it \
             when it does not build; this test checks nothing"
        );
        return;
    }
    mysql_script("mariadb_connector_driver.py").await;
}

#[tokio::test]
async fn perl_dbd_pg() {
    postgres_script("perl_dbi_driver.pl pg").await;
}

#[tokio::test]
async fn perl_dbd_mysql() {
    mysql_script("perl_dbi_driver.pl mysql").await;
}

#[tokio::test]
async fn go_pgx() {
    postgres_script("go_driver.go pgx").await;
}

#[tokio::test]
async fn go_mysql() {
    mysql_script("go_driver.go mysql").await;
}

/// What psql prints for `file` run with ON_ERROR_STOP against `port`, in `dir`: the exit
/// status and stdout, with stderr (errors, notices) appended.
async fn psql_file(port: u16, db: &str, dir: &Path, file: &str) -> (Option<i32>, String) {
    let output = Command::new("psql")
        .current_dir(dir)
        .env("PGPASSWORD", "app-secret")
        .env("PGSSLMODE", "prefer")
        .args([
            "-X",
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            "app",
            "-d",
            db,
        ])
        .args([
            "-v",
            "ON_ERROR_STOP=1",
            "-v",
            "VERBOSITY=verbose",
            "-f",
            file,
        ])
        .output()
        .await
        .expect("run psql");
    let text = format!(
        "{}--- stderr ---\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code(), text)
}

/// A psql script of the kind operators and migration tools run: `\copy` both ways, a
/// transaction with a savepoint, PREPARE/EXECUTE, `\gset`, a DO block's notice, and an
/// error that ON_ERROR_STOP turns into exit status 3.
const PSQL_SCRIPT: &str = r#"
CREATE TABLE t (id int PRIMARY KEY, name text, data bytea);
\copy t FROM 'in.csv' WITH (FORMAT csv)
BEGIN;
INSERT INTO t VALUES (100, 'in a transaction', '\x00ff');
SAVEPOINT s;
INSERT INTO t VALUES (101, 'rolled back', NULL);
ROLLBACK TO SAVEPOINT s;
COMMIT;
\copy (SELECT * FROM t ORDER BY id) TO 'out.csv' WITH (FORMAT csv)
SELECT count(*) AS n FROM t \gset
\echo rows :n
PREPARE by_id(int) AS SELECT name, data FROM t WHERE id = $1;
EXECUTE by_id(100);
DEALLOCATE by_id;
DO $$ BEGIN RAISE NOTICE 'notice from a DO block'; END $$;
SELECT name FROM t WHERE id = 2 \g
COPY (SELECT id FROM t WHERE id < 3 ORDER BY id) TO STDOUT;
INSERT INTO t VALUES (1, 'duplicate', NULL);
SELECT 'not reached';
"#;

#[tokio::test]
async fn psql_scripts_run_as_on_the_server() {
    let cluster = PgCluster::shared();
    let proxy = Proxy::from_config(&driver_config(config_text(cluster, ""))).await;
    let mut outputs = Vec::new();
    for (kind, port) in [
        ("server", cluster.primary.port),
        ("proxy", proxy.addr.port()),
    ] {
        let db = cluster.create_database(&format!("psql_{kind}")).await;
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(
            dir.path().join("in.csv"),
            "1,one,\\x01\n2,\"two, quoted\",\n3,three,\\x\n",
        )
        .expect("write in.csv");
        std::fs::write(dir.path().join("script.sql"), PSQL_SCRIPT).expect("write script.sql");
        let (status, text) = psql_file(port, &db, dir.path(), "script.sql").await;
        assert_eq!(
            status,
            Some(3),
            "psql -f against the {kind} stops at the duplicate with status 3:\n{text}"
        );
        assert!(
            text.contains("rows 4") && text.contains("23505") && !text.contains("not reached"),
            "psql -f against the {kind}:\n{text}"
        );
        let copied = std::fs::read_to_string(dir.path().join("out.csv")).expect("out.csv");
        outputs.push((text.replace(&db, "DB"), copied));
    }
    assert_eq!(
        outputs[0], outputs[1],
        "psql prints the same through the proxy as against the server"
    );
}

/// A batch for the mariadb CLI: several statements per line (CLIENT_MULTI_STATEMENTS),
/// `source` of another file, a procedure defined with DELIMITER and called, a transaction
/// with a savepoint, and an error ending the batch.
const MARIADB_BATCH: &str = "
CREATE TABLE t (id INT PRIMARY KEY, name VARCHAR(50)); INSERT INTO t VALUES (1, 'one'), (2, 'two'); SELECT COUNT(*) FROM t;
source more.sql
DELIMITER //
CREATE PROCEDURE add_row(IN i INT, IN n VARCHAR(50)) BEGIN INSERT INTO t VALUES (i, n); SELECT i, n; END //
DELIMITER ;
CALL add_row(10, 'from a procedure');
START TRANSACTION; INSERT INTO t VALUES (100, 'tx'); SAVEPOINT s; INSERT INTO t VALUES (101, 'gone'); ROLLBACK TO SAVEPOINT s; COMMIT;
SELECT id, name FROM t ORDER BY id; SELECT @@autocommit, NULL, X'00FF', 'é';
INSERT INTO t VALUES (1, 'duplicate');
SELECT 'not reached';
";

const MARIADB_SOURCED: &str = "
INSERT INTO t VALUES (3, 'sourced'); SELECT name FROM t WHERE id = 3;
SET @v = 42; SELECT @v + 1;
";

#[tokio::test]
async fn mariadb_cli_batches_run_as_on_the_server() {
    let cluster = MariaCluster::shared();
    let proxy = Proxy::from_config(&driver_config(mysql_config_text(cluster, ""))).await;
    let mut outputs = Vec::new();
    for (kind, port) in [
        ("server", cluster.primary.port),
        ("proxy", proxy.addr.port()),
    ] {
        let db = cluster.create_database(&format!("cli_{kind}")).await;
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("more.sql"), MARIADB_SOURCED).expect("write more.sql");
        std::fs::write(dir.path().join("batch.sql"), MARIADB_BATCH).expect("write batch.sql");
        let batch = std::fs::File::open(dir.path().join("batch.sql")).expect("open batch.sql");
        let output = Command::new("mariadb")
            .current_dir(dir.path())
            .args(["-h", "127.0.0.1", "-P", &port.to_string(), "-u", "app"])
            .args(["-papp-secret", "--protocol=TCP", "--batch", &db])
            .stdin(batch)
            .output()
            .await
            .expect("run mariadb");
        let text = format!(
            "{}--- stderr ---\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(
            output.status.code(),
            Some(1),
            "mariadb against the {kind} stops at the duplicate with status 1:\n{text}"
        );
        assert!(
            text.contains("from a procedure")
                && text.contains("sourced")
                && text.contains("ERROR 1062 (23000)")
                && !text.contains("not reached")
                && !text.contains("gone"),
            "mariadb batch against the {kind}:\n{text}"
        );
        outputs.push(text);
    }
    assert_eq!(
        outputs[0], outputs[1],
        "the mariadb CLI prints the same through the proxy as against the server"
    );
}
