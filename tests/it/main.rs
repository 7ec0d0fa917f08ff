//! The integration tests, one binary: every module below was a test binary of its own, and
//! each compiled and linked `support` again. Its tests run in parallel with one another, so
//! they share the clusters of [`support`] (each test its own database), and a module whose
//! tests change a server's settings, stop a server or hold its replication back starts
//! servers of its own.
//!
//! Run one module's tests with `cargo test --test it postgres::` (a name filter).

mod support;

mod cluster_replication;
mod consistency;
mod cutover_mysql;
mod cutover_postgres;
mod demo;
mod drivers;
mod fleet;
mod mysql;
mod ops;
mod postgres;
mod postgres_tls;
mod topology_aurora;
mod topology_balance;
mod topology_dns;
mod topology_failover;
mod topology_health;
mod topology_mysql;
mod topology_tls;
