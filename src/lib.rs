//! switchyard: a PostgreSQL and MySQL proxy for moving a production database to a new
//! cluster with no downtime. Layers, lowest first (a lower one never imports a higher one):
//!
//! - `protocol`  — wire framing and the few messages the proxy writes or reads itself
//! - `sql`       — lexer and classifier: statement text → read / write / session state
//! - `config`    — TOML config: load, validate, resolve secrets
//! - `topology`  — clusters and instances as an immutable snapshot; per-instance load
//! - `router`    — pure decision: statement class + session state → route
//! - `pool`      — backend connections: connect, TLS, authenticate
//! - `session`   — one client connection: startup, auth, the relay loop
//! - `server`    — accept loop, connection limit, cancel requests
//! - `admin`, `metrics` — the HTTP admin listener and Prometheus metrics

pub mod config;
pub mod protocol;
pub mod shutdown;
