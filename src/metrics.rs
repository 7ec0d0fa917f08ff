//! Metric names as constants, the Prometheus recorder, and handles cached per backend
//! connection so the data path records without a registry lookup.

use std::sync::OnceLock;

use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const CLIENT_CONNECTIONS: &str = "switchyard_client_connections";
pub const CLIENT_CONNECTIONS_TOTAL: &str = "switchyard_client_connections_total";
pub const BACKEND_CONNECTIONS: &str = "switchyard_backend_connections";
pub const QUERIES_TOTAL: &str = "switchyard_queries_total";
pub const QUERY_DURATION_SECONDS: &str = "switchyard_query_duration_seconds";
pub const ERRORS_TOTAL: &str = "switchyard_errors_total";
pub const READER_FALLBACKS_TOTAL: &str = "switchyard_reader_fallbacks_total";
pub const READER_MOVES_TOTAL: &str = "switchyard_reader_moves_total";
pub const READ_RETRIES_TOTAL: &str = "switchyard_read_retries_total";
pub const READERS_DRAINED_TOTAL: &str = "switchyard_readers_drained_total";
pub const WRITES_REFUSED_TOTAL: &str = "switchyard_writes_refused_total";
pub const HELD_TRANSACTIONS: &str = "switchyard_held_transactions";
pub const INSTANCES: &str = "switchyard_instances";
pub const DISCOVERY_ROUNDS_TOTAL: &str = "switchyard_discovery_rounds_total";
pub const DISCOVERY_CHANGES_TOTAL: &str = "switchyard_discovery_changes_total";
pub const INSTANCE_HEALTHY: &str = "switchyard_instance_healthy";
pub const CUTOVER_PHASE: &str = "switchyard_cutover_phase";
pub const CUTOVERS_TOTAL: &str = "switchyard_cutovers_total";
pub const CUTOVER_PAUSE_SECONDS: &str = "switchyard_cutover_pause_seconds";
pub const SESSIONS_MOVED_TOTAL: &str = "switchyard_sessions_moved_total";
pub const INSTANCE_LAG_SECONDS: &str = "switchyard_instance_lag_seconds";
pub const FAILOVERS_TOTAL: &str = "switchyard_failovers_total";
pub const SESSIONS_WAITING_FOR_WRITER: &str = "switchyard_sessions_waiting_for_writer";
pub const FAILOVER_ERRORS_TOTAL: &str = "switchyard_failover_errors_total";
pub const CONFIG_RELOADS_TOTAL: &str = "switchyard_config_reloads_total";
pub const DRAINING: &str = "switchyard_draining";
pub const POOL_CONNECTIONS: &str = "switchyard_pool_connections";
pub const POOL_WAITING: &str = "switchyard_pool_waiting";
pub const POOL_CHECKOUT_WAIT_SECONDS: &str = "switchyard_pool_checkout_wait_seconds";
pub const POOL_CHECKOUT_TIMEOUTS_TOTAL: &str = "switchyard_pool_checkout_timeouts_total";
pub const POOL_OPENED_TOTAL: &str = "switchyard_pool_opened_total";
pub const POOL_CLOSED_TOTAL: &str = "switchyard_pool_closed_total";
pub const POOL_REFUSED_TOTAL: &str = "switchyard_pool_refused_total";
pub const PREPARED_EVICTED_TOTAL: &str = "switchyard_prepared_statements_evicted_total";
pub const PREPARED_REPLANNED_TOTAL: &str = "switchyard_prepared_statements_replanned_total";
pub const PREPARED_STATEMENTS: &str = "switchyard_prepared_statements";
pub const PINS_TOTAL: &str = "switchyard_pins_total";
pub const PINNED_SESSIONS: &str = "switchyard_pinned_sessions";

const DURATION_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Installs the process-wide Prometheus recorder once and returns its handle.
pub fn install() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), DURATION_BUCKETS)
                .unwrap_or_else(|_| PrometheusBuilder::new())
                .build_recorder();
            let handle = recorder.handle();
            // Fails only when another recorder was installed first (e.g. by a test harness).
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics may be empty");
            }
            describe();
            handle
        })
        .clone()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(
        CUTOVER_PHASE,
        "1 for the cutover phase this proxy is in (idle when none runs), by phase."
    );
    describe_counter!(
        CUTOVERS_TOTAL,
        "Cutovers that ended, by outcome (switched, aborted, failed, dry_run)."
    );
    describe_histogram!(
        CUTOVER_PAUSE_SECONDS,
        "How long each cutover held new transactions (pause to switch or abort)."
    );
    describe_counter!(
        SESSIONS_MOVED_TOTAL,
        "Client sessions moved to another writer, by cause (cutover, failover) and result (moved, ended)."
    );
    describe_counter!(
        FAILOVERS_TOTAL,
        "Writer changes discovery saw, by cluster (a replica promoted in place of the writer)."
    );
    describe_gauge!(
        SESSIONS_WAITING_FOR_WRITER,
        "Sessions whose work waits for a usable writer now (a failover in progress), by cluster."
    );
    describe_counter!(
        FAILOVER_ERRORS_TOTAL,
        "Statements failed by a writer failover, by cluster and kind (outcome_unknown, rolled_back, timeout)."
    );
    describe_gauge!(CLIENT_CONNECTIONS, "Client connections open now.");
    describe_gauge!(
        MAX_CLIENT_CONNECTIONS,
        "The configured server.max_client_connections."
    );
    describe_gauge!(MAX_LAG_SECONDS, "The configured max_lag of each cluster.");
    describe_gauge!(
        CLUSTER_MODE,
        "1 for each cluster's routing mode (read_write, read_only, paused), else 0."
    );
    describe_gauge!(ACTIVE_CLUSTER, "1 for the active cluster, else 0.");
    describe_counter!(
        CONFIG_RELOADS_TOTAL,
        "Config reloads (SIGHUP, POST /v1/reload) by result (ok, refused)."
    );
    describe_gauge!(
        DRAINING,
        "1 while the proxy drains for shutdown (SIGTERM): no new clients, sessions close at a transaction boundary."
    );
    describe_counter!(CLIENT_CONNECTIONS_TOTAL, "Client connections accepted.");
    describe_gauge!(
        BACKEND_CONNECTIONS,
        "Backend connections open now, by instance and role."
    );
    describe_counter!(
        QUERIES_TOTAL,
        "Statements (simple queries and extended-protocol batches) by route and instance."
    );
    describe_histogram!(
        QUERY_DURATION_SECONDS,
        "Time from sending a statement to its ReadyForQuery, by route."
    );
    describe_counter!(ERRORS_TOTAL, "Errors by kind.");
    describe_counter!(
        PREPARED_REPLANNED_TOTAL,
        "PostgreSQL batches that met a statement stale after DDL on a shared connection, by outcome (retried, error)."
    );
    describe_counter!(
        PREPARED_EVICTED_TOTAL,
        "Prepared statements closed on a backend connection to stay under max_prepared_statements."
    );
    describe_gauge!(
        PREPARED_STATEMENTS,
        "Prepared statements held on the backend connections of an instance (divide by switchyard_backend_connections for a connection's)."
    );
    describe_counter!(
        PINS_TOTAL,
        "Transaction-mode sessions pinned to their backend connection, by reason."
    );
    describe_gauge!(
        PINNED_SESSIONS,
        "Transaction-mode sessions holding their backend connection because of state that cannot move, by reason."
    );
    describe_counter!(
        READ_RETRIES_TOTAL,
        "Reads run again on another backend after their reader failed before answering."
    );
    describe_counter!(
        READERS_DRAINED_TOTAL,
        "Reader connections closed between transactions because their instance left (removed, unhealthy or lagging)."
    );
    describe_counter!(
        READER_MOVES_TOTAL,
        "Sessions that moved their reader connection to even the spread over the readers."
    );
    describe_counter!(
        READER_FALLBACKS_TOTAL,
        "Reads sent to the writer because no reader could be used."
    );
    describe_gauge!(INSTANCES, "Instances by cluster, role and health state.");
    describe_counter!(
        DISCOVERY_ROUNDS_TOTAL,
        "Discovery rounds by cluster and source."
    );
    describe_counter!(
        DISCOVERY_CHANGES_TOTAL,
        "Topology snapshots published by discovery."
    );
    describe_gauge!(
        INSTANCE_HEALTHY,
        "1 when the instance passes its health checks, else 0."
    );
    describe_gauge!(
        POOL_CONNECTIONS,
        "Pooled backend connections by state (idle, in_use, opening, resetting), per cluster, instance, user and database."
    );
    describe_gauge!(
        POOL_WAITING,
        "Checkouts waiting for a pooled connection (the pool is full), per pool."
    );
    describe_histogram!(
        POOL_CHECKOUT_WAIT_SECONDS,
        "Time a checkout took to get an idle connection or a free slot (not counting the login a new connection needs), per pool."
    );
    describe_counter!(
        POOL_CHECKOUT_TIMEOUTS_TOTAL,
        "Checkouts that gave up after checkout_timeout because the pool stayed full, per pool."
    );
    describe_counter!(
        POOL_OPENED_TOTAL,
        "Backend connections the pool opened (logins), per pool."
    );
    describe_counter!(
        POOL_REFUSED_TOTAL,
        "Logins the server refused for want of connection slots (PostgreSQL 53300, MySQL 1040, 1203, 1226), per pool: the pool then opens no more for a second while it has connections, and its checkouts wait for those."
    );
    describe_counter!(
        POOL_CLOSED_TOTAL,
        "Backend connections the pool closed, per pool and reason (idle_timeout, max_lifetime, reset_failed, broken, dropped, pool_size, detached, retired)."
    );
    describe_gauge!(
        INSTANCE_LAG_SECONDS,
        "Replication lag the last check measured (0 for a writer); -1 when replication is stopped."
    );
}

/// Kinds of error counted in `switchyard_errors_total`.
#[derive(Debug, Clone, Copy)]
pub enum ErrorKind {
    ClientProtocol,
    Auth,
    BackendConnect,
    BackendLost,
    ClientLost,
    TooManyConnections,
}

impl ErrorKind {
    const ALL: [ErrorKind; 6] = [
        ErrorKind::ClientProtocol,
        ErrorKind::Auth,
        ErrorKind::BackendConnect,
        ErrorKind::BackendLost,
        ErrorKind::ClientLost,
        ErrorKind::TooManyConnections,
    ];

    fn as_str(self) -> &'static str {
        match self {
            ErrorKind::ClientProtocol => "client_protocol",
            ErrorKind::Auth => "auth",
            ErrorKind::BackendConnect => "backend_connect",
            ErrorKind::BackendLost => "backend_lost",
            ErrorKind::ClientLost => "client_lost",
            ErrorKind::TooManyConnections => "too_many_connections",
        }
    }
}

pub fn error(kind: ErrorKind) {
    counter!(ERRORS_TOTAL, "kind" => kind.as_str()).increment(1);
}

/// Counts a client connection as open for as long as the guard lives.
pub fn client_connected() -> GaugeGuard {
    counter!(CLIENT_CONNECTIONS_TOTAL).increment(1);
    GaugeGuard::new(gauge!(CLIENT_CONNECTIONS))
}

/// A config reload ended with `result` (`ok` or `refused`).
pub fn config_reload(result: &'static str) {
    counter!(CONFIG_RELOADS_TOTAL, "result" => result).increment(1);
}

/// The proxy started draining (`true`) or serves (`false`).
pub fn draining(draining: bool) {
    gauge!(DRAINING).set(if draining { 1.0 } else { 0.0 });
}

/// A write refused because its cluster is read-only.
pub fn write_refused(cluster: &str) {
    counter!(WRITES_REFUSED_TOTAL, "cluster" => cluster.to_owned()).increment(1);
}

/// Counts a transaction held by a pause for as long as the guard lives.
pub fn transaction_held() -> GaugeGuard {
    GaugeGuard::new(gauge!(HELD_TRANSACTIONS))
}

/// One more on a gauge for as long as it lives.
pub struct GaugeGuard(Gauge);

impl GaugeGuard {
    fn new(gauge: Gauge) -> GaugeGuard {
        gauge.increment(1.0);
        GaugeGuard(gauge)
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// Sets the phase gauge: 1 for `phase`, 0 for every other one of `all`.
pub fn cutover_phase(phase: &'static str, all: &[&'static str]) {
    for p in all {
        gauge!(CUTOVER_PHASE, "phase" => *p).set(if *p == phase { 1.0 } else { 0.0 });
    }
}

pub fn cutover_ended(outcome: &'static str) {
    counter!(CUTOVERS_TOTAL, "outcome" => outcome).increment(1);
}

pub fn cutover_pause(seconds: f64) {
    histogram!(CUTOVER_PAUSE_SECONDS).record(seconds);
}

/// A session moved to another writer (`moved`) or ended because its state could not move;
/// `cause` is `cutover` (a new active cluster) or `failover` (a new writer in its cluster).
pub fn session_moved(cause: &'static str, moved: bool) {
    let result = if moved { "moved" } else { "ended" };
    counter!(SESSIONS_MOVED_TOTAL, "cause" => cause, "result" => result).increment(1);
}

/// Discovery saw cluster `cluster` get a new writer.
pub fn failover(cluster: &str) {
    counter!(FAILOVERS_TOTAL, "cluster" => cluster.to_owned()).increment(1);
}

/// A statement failed by a writer failover; `kind` is `outcome_unknown`, `rolled_back` or
/// `timeout`.
pub fn failover_error(cluster: &str, kind: &'static str) {
    counter!(FAILOVER_ERRORS_TOTAL, "cluster" => cluster.to_owned(), "kind" => kind).increment(1);
}

/// Counts a session waiting for a usable writer for as long as the guard lives.
pub fn waiting_for_writer(cluster: &str) -> GaugeGuard {
    GaugeGuard::new(gauge!(SESSIONS_WAITING_FOR_WRITER, "cluster" => cluster.to_owned()))
}

/// A read failed on its reader before anything reached the client and runs again.
pub fn read_retried(cluster: &str) {
    counter!(READ_RETRIES_TOTAL, "cluster" => cluster.to_owned()).increment(1);
}

/// A prepared statement was closed on a connection to `cluster` to make room for another.
pub fn prepared_evicted(cluster: &str) {
    counter!(PREPARED_EVICTED_TOTAL, "cluster" => cluster.to_owned()).increment(1);
}

/// A PostgreSQL batch on a connection to `cluster` met a statement that DDL left stale
/// there ("cached plan must not change result type"): `outcome` says whether it was
/// prepared again and the batch retried (`retried`) or the error relayed (`error`).
pub fn prepared_replanned(cluster: &str, outcome: &'static str) {
    counter!(PREPARED_REPLANNED_TOTAL, "cluster" => cluster.to_owned(), "outcome" => outcome)
        .increment(1);
}

/// A transaction-mode session was pinned to its connection for `reason`: counted now, and
/// in the pinned gauge for as long as the guard lives.
/// The statements held prepared on `instance`'s server connections (each connection's
/// cache moves it).
pub fn prepared_statements(instance: &crate::topology::Instance) -> Gauge {
    gauge!(
        PREPARED_STATEMENTS,
        "cluster" => instance.cluster.clone(),
        "instance" => instance.addr.clone()
    )
}

pub fn pinned(reason: &'static str) -> GaugeGuard {
    counter!(PINS_TOTAL, "reason" => reason).increment(1);
    GaugeGuard::new(gauge!(PINNED_SESSIONS, "reason" => reason))
}

/// A session left a reader that is no longer usable.
pub fn reader_drained(cluster: &str) {
    counter!(READERS_DRAINED_TOTAL, "cluster" => cluster.to_owned()).increment(1);
}

/// A session moved its reader connection to even the spread over the readers.
pub fn reader_respread(cluster: &str) {
    counter!(READER_MOVES_TOTAL, "cluster" => cluster.to_owned()).increment(1);
}

pub fn reader_fallback() {
    counter!(READER_FALLBACKS_TOTAL).increment(1);
}

/// Handles for one backend connection, looked up once when it opens.
pub struct BackendMetrics {
    pub queries: Counter,
    pub duration: Histogram,
    connections: Gauge,
}

impl BackendMetrics {
    pub fn new(cluster: &str, instance: &str, role: &'static str) -> BackendMetrics {
        let labels = [
            ("cluster", cluster.to_owned()),
            ("instance", instance.to_owned()),
            ("route", role.to_owned()),
        ];
        let connections = gauge!(BACKEND_CONNECTIONS, &labels);
        connections.increment(1.0);
        BackendMetrics {
            queries: counter!(QUERIES_TOTAL, &labels),
            duration: histogram!(QUERY_DURATION_SECONDS, "route" => role),
            connections,
        }
    }
}

impl Drop for BackendMetrics {
    fn drop(&mut self) {
        self.connections.decrement(1.0);
    }
}

/// Handles for one pool (one cluster, instance, backend user and database), looked up once
/// when the pool is created.
pub struct PoolMetrics {
    pub idle: Gauge,
    pub in_use: Gauge,
    pub opening: Gauge,
    pub resetting: Gauge,
    pub waiting: Gauge,
    pub checkout_wait: Histogram,
    pub checkout_timeouts: Counter,
    pub opened: Counter,
    pub refused: Counter,
    labels: [(&'static str, String); 4],
}

impl PoolMetrics {
    /// Creates the pool's series at zero (without resetting them: pools that differ only in
    /// login options share their series), with a closed counter for each of `close_reasons`.
    pub fn new(
        cluster: &str,
        instance: &str,
        user: &str,
        database: &str,
        close_reasons: &[&'static str],
    ) -> PoolMetrics {
        let labels = [
            ("cluster", cluster.to_owned()),
            ("instance", instance.to_owned()),
            ("user", user.to_owned()),
            ("database", database.to_owned()),
        ];
        let state = |state: &'static str| {
            let mut with_state = labels.to_vec();
            with_state.push(("state", state.to_owned()));
            let gauge = gauge!(POOL_CONNECTIONS, &with_state);
            gauge.increment(0.0);
            gauge
        };
        let waiting = gauge!(POOL_WAITING, &labels);
        waiting.increment(0.0);
        for reason in close_reasons {
            let mut with_reason = labels.to_vec();
            with_reason.push(("reason", (*reason).to_owned()));
            counter!(POOL_CLOSED_TOTAL, &with_reason).increment(0);
        }
        let checkout_timeouts = counter!(POOL_CHECKOUT_TIMEOUTS_TOTAL, &labels);
        checkout_timeouts.increment(0);
        let opened = counter!(POOL_OPENED_TOTAL, &labels);
        opened.increment(0);
        let refused = counter!(POOL_REFUSED_TOTAL, &labels);
        refused.increment(0);
        PoolMetrics {
            idle: state("idle"),
            in_use: state("in_use"),
            opening: state("opening"),
            resetting: state("resetting"),
            waiting,
            checkout_wait: histogram!(POOL_CHECKOUT_WAIT_SECONDS, &labels),
            checkout_timeouts,
            opened,
            refused,
            labels,
        }
    }

    /// The pool closed a connection; `reason` is one of the pool's close reasons.
    pub fn closed(&self, reason: &'static str) {
        let mut labels = self.labels.to_vec();
        labels.push(("reason", reason.to_owned()));
        counter!(POOL_CLOSED_TOTAL, &labels).increment(1);
    }
}

pub fn instances(cluster: &str, role: &'static str, state: &'static str, count: usize) {
    gauge!(INSTANCES, "cluster" => cluster.to_owned(), "role" => role, "state" => state)
        .set(count as f64);
}

pub fn discovery_round(cluster: &str, source: &'static str) {
    counter!(DISCOVERY_ROUNDS_TOTAL, "cluster" => cluster.to_owned(), "source" => source)
        .increment(1);
}

pub fn discovery_change(cluster: &str) {
    counter!(DISCOVERY_CHANGES_TOTAL, "cluster" => cluster.to_owned()).increment(1);
}

pub fn instance_healthy(cluster: &str, instance: &str, healthy: bool) {
    let labels = [
        ("cluster", cluster.to_owned()),
        ("instance", instance.to_owned()),
    ];
    gauge!(INSTANCE_HEALTHY, &labels).set(if healthy { 1.0 } else { 0.0 });
}

/// `lag` of an instance as its health check found it; `None` (replication stopped) is -1.
pub fn instance_lag(cluster: &str, instance: &str, lag: Option<std::time::Duration>) {
    let labels = [
        ("cluster", cluster.to_owned()),
        ("instance", instance.to_owned()),
    ];
    gauge!(INSTANCE_LAG_SECONDS, &labels).set(lag.map_or(-1.0, |l| l.as_secs_f64()));
}

/// Creates every series whose labels are known at start (or after a reload), at zero, so
/// that `/metrics` lists each metric before its first event: dashboards and alerts then
/// find the name, and `increase()` sees the first event. `clusters` are the configured
/// cluster names; the limits are the current config's.
pub fn register(clusters: &[&str], settings: &Settings<'_>) {
    for kind in ErrorKind::ALL {
        counter!(ERRORS_TOTAL, "kind" => kind.as_str()).absolute(0);
    }
    counter!(CLIENT_CONNECTIONS_TOTAL).absolute(0);
    gauge!(CLIENT_CONNECTIONS).increment(0.0);
    gauge!(HELD_TRANSACTIONS).increment(0.0);
    counter!(READER_FALLBACKS_TOTAL).absolute(0);
    gauge!(DRAINING).increment(0.0);
    for result in ["ok", "refused"] {
        counter!(CONFIG_RELOADS_TOTAL, "result" => result).absolute(0);
    }
    for outcome in ["switched", "aborted", "failed", "dry_run"] {
        counter!(CUTOVERS_TOTAL, "outcome" => outcome).absolute(0);
    }
    drop(histogram!(CUTOVER_PAUSE_SECONDS));
    for route in ["writer", "reader"] {
        drop(histogram!(QUERY_DURATION_SECONDS, "route" => route));
    }
    for cause in ["cutover", "failover"] {
        for result in ["moved", "ended"] {
            counter!(SESSIONS_MOVED_TOTAL, "cause" => cause, "result" => result).absolute(0);
        }
    }
    for cluster in clusters {
        let c = || (*cluster).to_owned();
        counter!(WRITES_REFUSED_TOTAL, "cluster" => c()).absolute(0);
        counter!(READ_RETRIES_TOTAL, "cluster" => c()).absolute(0);
        counter!(READERS_DRAINED_TOTAL, "cluster" => c()).absolute(0);
        counter!(READER_MOVES_TOTAL, "cluster" => c()).absolute(0);
        counter!(FAILOVERS_TOTAL, "cluster" => c()).absolute(0);
        gauge!(SESSIONS_WAITING_FOR_WRITER, "cluster" => c()).increment(0.0);
        // Created at 0 without resetting: a second proxy in one process (the tests) keeps
        // the first one's counts.
        for outcome in ["retried", "error"] {
            counter!(PREPARED_REPLANNED_TOTAL, "cluster" => c(), "outcome" => outcome).increment(0);
        }
        for kind in ["outcome_unknown", "rolled_back", "timeout"] {
            counter!(FAILOVER_ERRORS_TOTAL, "cluster" => c(), "kind" => kind).absolute(0);
        }
    }
    publish_settings(settings);
}

pub const MAX_CLIENT_CONNECTIONS: &str = "switchyard_max_client_connections";
pub const MAX_LAG_SECONDS: &str = "switchyard_max_lag_seconds";
pub const CLUSTER_MODE: &str = "switchyard_cluster_mode";
pub const ACTIVE_CLUSTER: &str = "switchyard_active_cluster";

/// The configured limits that dashboards and alerts compare live values with.
pub struct Settings<'a> {
    pub max_client_connections: usize,
    /// `max_lag` of each cluster.
    pub max_lag: Vec<(&'a str, std::time::Duration)>,
}

/// Publishes the limits of the current config (at start and after each reload).
pub fn publish_settings(settings: &Settings<'_>) {
    gauge!(MAX_CLIENT_CONNECTIONS).set(settings.max_client_connections as f64);
    for (cluster, max_lag) in &settings.max_lag {
        gauge!(MAX_LAG_SECONDS, "cluster" => (*cluster).to_owned()).set(max_lag.as_secs_f64());
    }
}

/// Publishes the routing state: 1 for each cluster's mode (`read_write`, `read_only`,
/// `paused`) and 0 for the others; 1 for the active cluster.
pub fn routing_state<'a>(active: &str, modes: impl Iterator<Item = (&'a str, &'static str)>) {
    for (cluster, mode) in modes {
        for m in ["read_write", "read_only", "paused"] {
            gauge!(CLUSTER_MODE, "cluster" => cluster.to_owned(), "mode" => m).set(if m == mode {
                1.0
            } else {
                0.0
            });
        }
        gauge!(ACTIVE_CLUSTER, "cluster" => cluster.to_owned()).set(if cluster == active {
            1.0
        } else {
            0.0
        });
    }
}
