//! Client sessions: one task per client connection, for each wire protocol, and the
//! context they all share.

mod failover;
pub mod mysql;
pub mod postgres;

use std::collections::HashMap;
use std::sync::Arc;

use tokio::net::TcpStream;

use crate::cancel::CancelRegistry;
use crate::config::{Protocol, Secret, User, Validated};
use crate::cutover::Routing;
use crate::protocol::postgres::scram::Verifier;
use crate::shutdown::Shutdown;
use crate::topology::TopologyHandle;

/// What every session shares.
pub struct Context {
    pub config: Arc<Validated>,
    pub topology: Arc<TopologyHandle>,
    /// The active cluster and each cluster's mode (read-write, read-only, paused).
    pub routing: Arc<Routing>,
    pub cancels: Arc<CancelRegistry>,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// SCRAM verifiers computed once from plain passwords (4096 PBKDF2 rounds each).
    verifiers: HashMap<String, Verifier>,
}

impl Context {
    pub fn new(
        config: Arc<Validated>,
        topology: Arc<TopologyHandle>,
        routing: Arc<Routing>,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Context {
        let verifiers = config
            .users
            .iter()
            .filter_map(|u| match &u.secret {
                Secret::Plain(p) => Some((u.name.clone(), Verifier::from_password(p))),
                Secret::ScramVerifier(v) => Verifier::parse(v).map(|v| (u.name.clone(), v)),
                Secret::None => None,
            })
            .collect();
        Context {
            config,
            topology,
            routing,
            cancels: Arc::new(CancelRegistry::default()),
            tls,
            verifiers,
        }
    }

    pub(crate) fn verifier(&self, user: &User) -> Option<Verifier> {
        self.verifiers.get(&user.name).cloned()
    }
}

/// Serves one client connection with the configured protocol until it ends.
pub async fn run(tcp: TcpStream, ctx: Arc<Context>, shutdown: Shutdown) {
    match ctx.config.raw.server.protocol {
        Protocol::Postgres => postgres::run(tcp, ctx, shutdown).await,
        Protocol::Mysql => mysql::run(tcp, ctx, shutdown).await,
    }
}

/// An error and its causes on one line (`connect to db:5432: tls: invalid certificate`),
/// for the messages clients see.
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// Records how a session ended: counts its kind of error, and logs anything but a normal
/// end (the client left, or the proxy shut down).
pub(crate) fn report_end(
    kind: Option<crate::metrics::ErrorKind>,
    normal: bool,
    error: &dyn std::error::Error,
) {
    if let Some(kind) = kind {
        crate::metrics::error(kind);
    }
    if !normal {
        tracing::info!(error = %chain(error), "session ended");
    }
}
