//! SSL on a running PostgreSQL server: its certificate and key copied into its data
//! directory (owned by the server's account, mode 0600, as PostgreSQL demands), `ssl = on`
//! by `ALTER SYSTEM`, and a reload that new connections see.

use std::path::Path;
use std::time::Duration;

use super::{PgCluster, PgServer, postgres_account};
use crate::support::Backoff;
use crate::support::pki::ServerCert;

/// How long the postmaster may take to apply a reload.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(30);

impl PgCluster {
    /// Turns SSL on in `server` with `cert`; returns once new connections see it on.
    pub async fn enable_ssl(&self, server: &PgServer, cert: &ServerCert) {
        let owner = postgres_account();
        let copy = |from: &Path, name: &str| {
            let to = server.data_dir.join(name);
            std::fs::copy(from, &to).expect("copy certificate");
            std::fs::set_permissions(&to, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .expect("chmod");
            super::super::chown(owner, &to);
        };
        copy(&cert.cert, "test-server.crt");
        copy(&cert.key, "test-server.key");
        let admin = self.superuser(server, "postgres").await;
        for sql in [
            "ALTER SYSTEM SET ssl_cert_file = 'test-server.crt'",
            "ALTER SYSTEM SET ssl_key_file = 'test-server.key'",
            "ALTER SYSTEM SET ssl = on",
            "SELECT pg_reload_conf()",
        ] {
            admin.batch_execute(sql).await.expect("enable ssl");
        }
        // The postmaster reloads asynchronously: wait until new connections see it.
        let mut backoff = Backoff::new(RELOAD_TIMEOUT);
        loop {
            let fresh = self.superuser(server, "postgres").await;
            let on: String = fresh.query_one("SHOW ssl", &[]).await.unwrap().get(0);
            if on == "on" {
                return;
            }
            assert!(
                backoff.wait().await,
                "ssl did not turn on in {}",
                server.name
            );
        }
    }
}
