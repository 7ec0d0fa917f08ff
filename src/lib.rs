//! switchyard: a PostgreSQL and MySQL proxy for moving a production database to a new
//! cluster with no downtime. Layers, lowest first (a lower one never imports a higher one):
//!
//! - `error`     — error helpers every layer may use (`chain`)
//! - `protocol`  — wire framing and the few messages the proxy writes or reads itself
//! - `sql`       — lexer and classifier: statement text → read / write / session state
//! - `config`    — TOML config: load, validate, resolve secrets
//! - `net`, `tls` — one stream type for TCP and TLS; rustls configurations
//! - `topology`  — clusters and instances as an immutable snapshot; discovery (static,
//!   DNS, Aurora), health checks and lag, weighted reader balancing with slow start
//! - `router`    — pure decision: statement class + session state → route
//! - `catalog`   — the function catalog cache: do the unknown functions a read calls only
//!   read? Loaded in the background from the writer; sessions consult it per statement
//! - `cutover`   — the routing state (active cluster, read-only and paused modes), its
//!   state file and database record, and the cutover: phases, driver, database steps,
//!   the cutover lock, and the fleet (members, heartbeat, following a newer record)
//! - `backend`   — backend connections: connect, TLS, authenticate, reset
//! - `pool`      — the backend connection pool: leases per (instance, user, database), sizes,
//!   idle timeout, max lifetime, checkout wait
//! - `session`   — one client connection: startup, auth, the relay loop (and, for
//!   PostgreSQL, `session::postgres::cancel`: cancel keys and CancelRequest forwarding)
//! - `server`    — accept loop and connection limit
//! - `lifecycle` — serving or draining, open sessions, readiness
//! - `admin`, `metrics` — the HTTP admin listener and Prometheus metrics
//! - `reload`    — SIGHUP and `POST /v1/reload`: re-read the config, apply what can change live
//! - `app`       — wires all of the above into one running proxy

pub mod admin;
pub mod app;
pub mod backend;
pub mod catalog;
pub mod config;
pub mod cutover;
pub mod error;
pub mod lifecycle;
pub mod logging;
pub mod metrics;
pub mod net;
pub mod pool;
pub mod protocol;
pub mod reload;
pub mod router;
pub mod server;
pub mod session;
pub mod shutdown;
pub mod sql;
pub mod tls;
pub mod topology;
