//! The client listener: accepts connections on a listener it did not bind (so tests can
//! bind port 0), enforces the connection limit and spawns one session task each.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::config::Protocol;
use crate::metrics::{self, ErrorKind};
use crate::protocol::mysql;
use crate::protocol::mysql::constants::{CapabilityFlags, ER_CON_COUNT_ERROR};
use crate::protocol::postgres::messages::{self, Severity};
use crate::protocol::postgres::sqlstate;
use crate::session::{self, Context};
use crate::shutdown::Shutdown;

/// Accepts clients until shutdown; each session gets its own shutdown handle.
pub async fn run(listener: TcpListener, ctx: Arc<Context>, mut shutdown: Shutdown) {
    let limit = Arc::new(Semaphore::new(ctx.config.raw.server.max_client_connections));
    loop {
        let accepted = tokio::select! {
            _ = shutdown.recv() => break,
            accepted = listener.accept() => accepted,
        };
        let tcp = match accepted {
            Ok((tcp, _peer)) => tcp,
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
        match Arc::clone(&limit).try_acquire_owned() {
            Ok(permit) => {
                let ctx = Arc::clone(&ctx);
                let shutdown = shutdown.clone();
                tokio::spawn(async move {
                    session::run(tcp, ctx, shutdown).await;
                    drop(permit);
                });
            }
            Err(_) => {
                metrics::error(ErrorKind::TooManyConnections);
                tokio::spawn(refuse(tcp, ctx.config.raw.server.protocol));
            }
        }
    }
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
