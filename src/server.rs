//! The client listener: accepts connections on a listener it did not bind (so tests can
//! bind port 0), enforces the connection limit (the current config's, so a reload changes
//! it) and spawns one session task each. It stops accepting, and closes the listening
//! socket, when the drain starts.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use crate::config::Protocol;
use crate::lifecycle::Lifecycle;
use crate::metrics::{self, ErrorKind};
use crate::protocol::mysql;
use crate::protocol::mysql::constants::{CapabilityFlags, ER_CON_COUNT_ERROR};
use crate::protocol::postgres::messages::{self, Severity};
use crate::protocol::postgres::sqlstate;
use crate::session::{self, Context};

/// Accepts clients until the drain starts; each session gets the drain signal, which it
/// obeys at its next transaction boundary.
pub async fn run(listener: TcpListener, ctx: Arc<Context>, life: Arc<Lifecycle>) {
    let mut shutdown = life.draining();
    life.set_listening(true);
    let mut sessions: u64 = 0;
    loop {
        let accepted = tokio::select! {
            _ = shutdown.recv() => break,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Usually out of file descriptors: give sessions a moment to close some.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
        match life.admit(ctx.config().raw.server.max_client_connections) {
            Some(slot) => {
                sessions += 1;
                // Every log line of the session carries these (as fields in JSON logs).
                let span = tracing::info_span!(
                    "session",
                    session = sessions,
                    %peer,
                    cluster = %ctx.routing.load().active
                );
                let ctx = Arc::clone(&ctx);
                let shutdown = shutdown.clone();
                // The span is entered only when the session logs (`logging::Deferred`).
                tokio::spawn(crate::logging::InSpan::new(span, async move {
                    session::run(tcp, ctx, shutdown).await;
                    drop(slot);
                }));
            }
            None => {
                metrics::error(ErrorKind::TooManyConnections);
                tokio::spawn(refuse(tcp, ctx.config().raw.server.protocol));
            }
        }
    }
    life.set_listening(false);
    // Dropping the listener closes the socket: new clients are refused at once.
    drop(listener);
}

/// Turns away a client over `max_client_connections` as its server would: PostgreSQL with
/// FATAL 53300, MySQL with ERR 1040 in place of the greeting.
async fn refuse(mut tcp: TcpStream, protocol: Protocol) {
    let mut out = BytesMut::new();
    match protocol {
        Protocol::Postgres => messages::error_response(
            &mut out,
            Severity::Fatal,
            sqlstate::TOO_MANY_CONNECTIONS,
            "sorry, too many clients already (switchyard max_client_connections)",
        ),
        Protocol::Mysql => {
            mysql::messages::err_packet(
                &mut out,
                0,
                CapabilityFlags::CLIENT_PROTOCOL_41,
                ER_CON_COUNT_ERROR,
                "Too many connections (switchyard max_client_connections)",
            );
        }
    }
    // The connection is closed either way.
    let _ = tcp.write_all(&out).await;
}
