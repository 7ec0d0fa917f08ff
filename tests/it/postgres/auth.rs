//! Authentication through the proxy: an unknown user is answered exactly as a known user
//! with a wrong password, and `[auth]` lets a role created at run time log in with its own
//! password (SCRAM pass-through to the primary and the replicas).

use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;
use tokio_postgres::error::SqlState;

use super::support::postgres::PgCluster;
use super::support::proxy::{Proxy, RawClient, config_text};
use super::{in_recovery, setup};

/// Authentication codes of AuthenticationSASL / SASLContinue.
const SASL: i32 = 10;
const SASL_CONTINUE: i32 = 11;

/// One login attempt, byte by byte: every message the proxy sent, in order, with the
/// server-first-message (random nonce) blanked; ends at the ErrorResponse or AuthenticationOk.
async fn attempt(proxy: &Proxy, user: &str, password: &str, db: &str) -> Vec<(u8, Vec<u8>)> {
    let mut c = RawClient::connect(proxy.addr).await;
    let mut body = 196608i32.to_be_bytes().to_vec();
    for s in ["user", user, "database", db, ""] {
        body.extend_from_slice(s.as_bytes());
        body.push(0);
    }
    let mut packet = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    packet.extend_from_slice(&body);
    c.tcp.write_all(&packet).await.expect("send startup");
    let mut seen = Vec::new();
    let mut scram = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
    while let Some((tag, body)) = c.read_message().await {
        let code = body
            .get(..4)
            .map(|b| i32::from_be_bytes(b.try_into().unwrap()));
        match (tag, code) {
            (b'R', Some(SASL)) => {
                let mut m = b"SCRAM-SHA-256\0".to_vec();
                m.extend_from_slice(&(scram.message().len() as i32).to_be_bytes());
                m.extend_from_slice(scram.message());
                c.send(b'p', &m).await;
                seen.push((tag, body));
            }
            (b'R', Some(SASL_CONTINUE)) => {
                scram
                    .update(&body[4..])
                    .expect("a well-formed server-first");
                c.send(b'p', scram.message()).await;
                // The nonce is random; the salt and iteration count are kept.
                let text = String::from_utf8_lossy(&body[4..]).into_owned();
                let salt: Vec<&str> = text.split(',').filter(|a| !a.starts_with("r=")).collect();
                seen.push((tag, salt.join(",").into_bytes()));
            }
            (b'E', _) => {
                seen.push((tag, body));
                break;
            }
            (b'R', Some(0)) => {
                seen.push((tag, body));
                break;
            }
            _ => seen.push((tag, body)),
        }
    }
    seen
}

/// The exchange of `attempt` with `user`'s name replaced by `X`, and the salt dropped
/// (it is the user's own, or a made-up one).
fn shape(seen: &[(u8, Vec<u8>)], user: &str) -> Vec<(u8, Vec<u8>)> {
    seen.iter()
        .map(|(tag, body)| {
            let text = String::from_utf8_lossy(body).replace(user, "X");
            let body = if *tag == b'R' && text.contains("s=") {
                b"salted".to_vec()
            } else {
                text.into_bytes()
            };
            (*tag, body)
        })
        .collect()
}

async fn psql_error(proxy: &Proxy, user: &str, password: &str, db: &str) -> String {
    let out = Command::new("psql")
        .args(["-X", "-w", "-c", "SELECT 1"])
        .arg(proxy.conninfo(user, password, db))
        .output()
        .await
        .expect("run psql");
    assert!(!out.status.success(), "psql logged in as {user}");
    String::from_utf8_lossy(&out.stderr).replace(user, "X")
}

#[tokio::test]
async fn an_unknown_user_is_answered_as_a_wrong_password() {
    let (_, proxy, db) = setup("authleak").await;
    let known = attempt(&proxy, "app", "wrong", &db).await;
    let unknown = attempt(&proxy, "nobody", "wrong", &db).await;
    assert_eq!(
        known.last().map(|(t, _)| *t),
        Some(b'E'),
        "a wrong password is refused: {known:?}"
    );
    assert_eq!(shape(&known, "app"), shape(&unknown, "nobody"));
    let error = String::from_utf8_lossy(&unknown.last().unwrap().1).into_owned();
    assert!(error.contains("C28P01\0"), "{error}");
    assert!(
        error.contains("Mpassword authentication failed for user \"nobody\"\0"),
        "as PostgreSQL says it: {error}"
    );
    // The same made-up salt each time, as a real user's salt would be.
    let again = attempt(&proxy, "nobody", "other", &db).await;
    assert_eq!(unknown[1], again[1]);
    assert_ne!(
        unknown[1],
        attempt(&proxy, "nobody2", "x", &db).await[1],
        "each name its own salt"
    );
    // What a user sees.
    assert_eq!(
        psql_error(&proxy, "app", "wrong", &db).await,
        psql_error(&proxy, "nobody", "wrong", &db).await
    );
}

/// A proxy in front of the shared cluster whose `[auth]` account is the trusted superuser,
/// with no caching (so a dropped role is gone at once).
async fn auth_query_proxy(cluster: &PgCluster) -> Proxy {
    let text = format!(
        "{}\n[auth]\nquery_user = \"postgres\"\ncache_ttl = \"0s\"\nnegative_cache_ttl = \"0s\"\n",
        config_text(cluster, "")
    );
    Proxy::from_config(&text).await
}

#[tokio::test]
async fn a_role_created_at_run_time_logs_in_through_auth_query() {
    let cluster = PgCluster::shared();
    let db = cluster.create_database("authquery").await;
    let proxy = auth_query_proxy(cluster).await;
    let role = format!("rt_{db}");
    let admin = cluster.superuser(&cluster.primary, &db).await;
    admin
        .batch_execute(&format!(
            "SET password_encryption = 'scram-sha-256';
             CREATE ROLE {role} LOGIN PASSWORD 'rt-secret';
             CREATE TABLE t (i int);
             GRANT ALL ON t TO {role};"
        ))
        .await
        .expect("create the role");
    cluster.wait_replicated().await;

    let client = proxy.connect_as(&role, "rt-secret", &db).await;
    client
        .execute("INSERT INTO t VALUES (1), (2)", &[])
        .await
        .expect("a write as the new role, on the primary");
    let user: String = client
        .query_one("SELECT current_user::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(user, role, "the backends were logged in as the role itself");
    cluster.wait_replicated().await;
    assert!(
        in_recovery(&client).await,
        "reads as the role go to a replica"
    );
    let n: i64 = client
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2);

    // A wrong password is refused as any other.
    let wrong =
        tokio_postgres::connect(&proxy.conninfo(&role, "wrong", &db), tokio_postgres::NoTls)
            .await
            .err()
            .expect("wrong password refused");
    let e = wrong.as_db_error().expect("a server error");
    assert_eq!(e.code(), &SqlState::INVALID_PASSWORD);
    assert_eq!(
        e.message(),
        format!("password authentication failed for user \"{role}\"")
    );

    // Dropped: no longer logs in (cache_ttl = 0).
    drop(client);
    admin
        .batch_execute(&format!("DROP TABLE t; DROP ROLE {role};"))
        .await
        .expect("drop the role");
    let gone = tokio_postgres::connect(
        &proxy.conninfo(&role, "rt-secret", &db),
        tokio_postgres::NoTls,
    )
    .await
    .err()
    .expect("a dropped role refused");
    assert_eq!(gone.code(), Some(&SqlState::INVALID_PASSWORD), "{gone}");
    // The configured users are unaffected.
    assert!(in_recovery(&proxy.connect(&db).await).await);
}

#[tokio::test]
async fn a_configured_scram_verifier_passes_through_without_a_backend_password() {
    let cluster = PgCluster::shared();
    let db = cluster.create_database("verifier").await;
    let admin = cluster.superuser(&cluster.primary, "postgres").await;
    let verifier: String = admin
        .query_one(
            "SELECT rolpassword FROM pg_authid WHERE rolname = 'app'",
            &[],
        )
        .await
        .expect("app's verifier")
        .get(0);
    assert!(verifier.starts_with("SCRAM-SHA-256$"), "{verifier}");
    let text = config_text(cluster, "").replacen(
        "password = \"app-secret\"",
        &format!("password = \"{verifier}\""),
        1,
    );
    assert!(text.contains(&verifier), "app's password is the verifier");
    let proxy = Proxy::from_config(&text).await;
    let client = proxy.connect(&db).await;
    client
        .batch_execute("CREATE TABLE v (i int); INSERT INTO v VALUES (1)")
        .await
        .expect("a write on the primary, logged in with the client's keys");
    cluster.wait_replicated().await;
    assert!(in_recovery(&client).await, "and a read on a replica");
}

#[tokio::test]
async fn an_md5_password_found_by_auth_query_passes_through() {
    let cluster = PgCluster::shared();
    let db = cluster.create_database("authmd5").await;
    let listed = "[[users]]\nname = \"md5user\"\npassword = \"md5-secret\"\nauth = \"md5\"\n";
    let text = format!(
        "{}\n[auth]\nquery_user = \"postgres\"\n",
        config_text(cluster, "").replace(listed, "")
    );
    assert!(!text.contains("md5-secret"), "md5user is not listed");
    let proxy = Proxy::from_config(&text).await;
    // md5user's password is stored as md5, and the servers check it with md5.
    let client = proxy.connect_as("md5user", "md5-secret", &db).await;
    assert!(in_recovery(&client).await, "a read on a replica");
    let written: i32 = client
        .query_one("SELECT count(*)::int FROM (SELECT txid_current()) t", &[])
        .await
        .expect("a statement for the primary")
        .get(0);
    assert_eq!(written, 1);
    let wrong = tokio_postgres::connect(
        &proxy.conninfo("md5user", "wrong", &db),
        tokio_postgres::NoTls,
    )
    .await
    .err()
    .expect("wrong password refused");
    assert_eq!(wrong.code(), Some(&SqlState::INVALID_PASSWORD), "{wrong}");
}
