//! Live progress, one line a second: statements/s and errors (the application's own count),
//! p99 and slowest latency (a pause shows in the slowest), statements per instance and the
//! backend connections open in the pools (from switchyard's `/metrics`), the active cluster
//! (`/status`) and the cutover's phase (`/v1/cutover`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Instance;
use super::load::stats::Stats;
use super::proxy::blocking;
use crate::operator::Admin;

/// Statements per instance, as counted by `switchyard_queries_total`, by `host:port`.
pub type PerInstance = BTreeMap<String, f64>;

/// What one look at the proxy and the load saw.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    pub at: Duration,
    pub statements: u64,
    pub errors: u64,
    pub p99: Option<Duration>,
    pub max: Option<Duration>,
    pub per_instance: PerInstance,
    /// Backend connections open in switchyard's pools, all instances together.
    pub server_connections: Option<f64>,
    pub active: Option<String>,
    pub phase: Option<String>,
}

/// Sums `switchyard_queries_total` by its `instance` label.
pub fn queries_by_instance(metrics: &str) -> PerInstance {
    let mut sums = PerInstance::new();
    for (labels, value) in series(metrics, "switchyard_queries_total") {
        if let Some(instance) = label(labels, "instance") {
            *sums.entry(instance.to_owned()).or_default() += value;
        }
    }
    sums
}

/// One instance's backend connections, summed over its pools (users and databases).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Pooled {
    /// Open now: idle in the pool or in use by a session (`switchyard_pool_connections`).
    pub open: f64,
    /// Opened since switchyard started, that is logins (`switchyard_pool_opened_total`).
    pub opened: f64,
}

/// Backend connections per instance, by `host:port`.
pub type PoolsByInstance = BTreeMap<String, Pooled>;

/// Sums the pool series by their `instance` label; connections still opening or being reset
/// are not counted as open.
pub fn pools_by_instance(metrics: &str) -> PoolsByInstance {
    let mut pools = PoolsByInstance::new();
    for (labels, value) in series(metrics, "switchyard_pool_connections") {
        let (Some(instance), Some(state)) = (label(labels, "instance"), label(labels, "state"))
        else {
            continue;
        };
        if state == "idle" || state == "in_use" {
            pools.entry(instance.to_owned()).or_default().open += value;
        }
    }
    for (labels, value) in series(metrics, "switchyard_pool_opened_total") {
        if let Some(instance) = label(labels, "instance") {
            pools.entry(instance.to_owned()).or_default().opened += value;
        }
    }
    pools
}

/// `switchyard_client_connections_total`: the client connections switchyard accepted.
pub fn client_connections(metrics: &str) -> Option<f64> {
    series(metrics, "switchyard_client_connections_total")
        .map(|(_, value)| value)
        .reduce(|a, b| a + b)
}

/// The samples of the metric `name` in a Prometheus text: its label list (empty when it has
/// none) and value. Lines that do not parse are skipped.
fn series<'a>(metrics: &'a str, name: &'a str) -> impl Iterator<Item = (&'a str, f64)> + 'a {
    metrics.lines().filter_map(move |line| {
        let rest = line.strip_prefix(name)?;
        let (labels, value) = match rest.strip_prefix('{') {
            Some(rest) => rest.split_once('}')?,
            None if rest.starts_with(' ') => ("", rest),
            None => return None,
        };
        Some((labels, value.trim().parse::<f64>().ok()?))
    })
}

/// The value of `name="value"` in a Prometheus label list (values here hold no quotes).
fn label<'a>(labels: &'a str, name: &str) -> Option<&'a str> {
    labels.split(',').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key.trim() == name).then(|| value.trim().trim_matches('"'))
    })
}

/// Takes samples and prints them.
pub struct Watch {
    admin: Admin,
    instances: Vec<Instance>,
    stats: Arc<Stats>,
    started: Instant,
    last: Sample,
}

impl Watch {
    pub fn new(admin: Admin, instances: Vec<Instance>, stats: Arc<Stats>) -> Watch {
        Watch {
            admin,
            instances,
            stats,
            started: Instant::now(),
            last: Sample::default(),
        }
    }

    /// Looks at the proxy and the load now; the interval's latencies move to the total.
    pub async fn sample(&self) -> Sample {
        let admin = self.admin.clone();
        let metrics = blocking(move || admin.get_text("/metrics")).await;
        let admin = self.admin.clone();
        let status = blocking(move || admin.get_json("/status")).await;
        let phase = super::cutover::phase(&self.admin).await;
        let p99 = self.stats.interval.quantile(0.99);
        let max = self.stats.interval.quantile(1.0);
        self.stats.interval.drain_into(&self.stats.total);
        Sample {
            at: self.started.elapsed(),
            statements: Stats::count(&self.stats.statements),
            errors: Stats::count(&self.stats.errors),
            p99,
            max,
            per_instance: metrics
                .as_deref()
                .map(queries_by_instance)
                .unwrap_or_default(),
            server_connections: metrics
                .as_deref()
                .ok()
                .map(|m| pools_by_instance(m).values().map(|p| p.open).sum()),
            active: status
                .ok()
                .and_then(|s| s["routing"]["active"].as_str().map(str::to_owned)),
            phase,
        }
    }

    pub fn header(&self) -> String {
        let mut line = format!(
            "{:>6} {:>12} {:>7} {:>8} {:>9}  {:<7} {:<11}",
            "time", "statements/s", "errors", "p99", "slowest", "active", "cutover"
        );
        for instance in &self.instances {
            line.push_str(&format!(" {:>11}", instance.name));
        }
        line.push_str(&format!(" {:>12}", "server conns"));
        line
    }

    /// Starts the clock now, with `sample` the one the first line's rates are measured from.
    pub fn start_from(&mut self, sample: Sample) {
        self.started = Instant::now();
        self.last = Sample {
            at: Duration::ZERO,
            ..sample
        };
    }

    /// The line for `sample`, with rates since the previous one; remembers `sample`.
    pub fn line(&mut self, sample: Sample) -> String {
        let seconds = (sample.at.saturating_sub(self.last.at))
            .as_secs_f64()
            .max(0.001);
        let rate = |now: f64, before: f64| ((now - before).max(0.0) / seconds).round();
        let latency = |d: Option<Duration>| d.map(super::report::millis).unwrap_or("-".into());
        let mut line = format!(
            "{:>5.0}s {:>12} {:>7} {:>8} {:>9}  {:<7} {:<11}",
            sample.at.as_secs_f64(),
            rate(sample.statements as f64, self.last.statements as f64),
            sample.errors - self.last.errors.min(sample.errors),
            latency(sample.p99),
            latency(sample.max),
            sample.active.as_deref().unwrap_or("?"),
            sample.phase.as_deref().unwrap_or("-"),
        );
        for instance in &self.instances {
            let now = sample
                .per_instance
                .get(&instance.addr)
                .copied()
                .unwrap_or(0.0);
            let before = self
                .last
                .per_instance
                .get(&instance.addr)
                .copied()
                .unwrap_or(0.0);
            line.push_str(&format!(" {:>11}", rate(now, before)));
        }
        let conns = sample.server_connections.map(|n| n.to_string());
        line.push_str(&format!(" {:>12}", conns.as_deref().unwrap_or("-")));
        self.last = sample;
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const METRICS: &str = r#"
# TYPE switchyard_queries_total counter
switchyard_queries_total{cluster="old",instance="127.0.0.1:5001",route="writer"} 120
switchyard_queries_total{cluster="old",instance="127.0.0.1:5002",route="reader"} 300
switchyard_queries_total{cluster="old",instance="127.0.0.1:5001",route="reader"} 5
switchyard_queries_totally_different{instance="127.0.0.1:5001"} 99
switchyard_client_connections 16
switchyard_client_connections_total 18
# TYPE switchyard_pool_connections gauge
switchyard_pool_connections{cluster="old",instance="127.0.0.1:5001",user="app",database="app",state="idle"} 3
switchyard_pool_connections{cluster="old",instance="127.0.0.1:5001",user="app",database="app",state="in_use"} 2
switchyard_pool_connections{cluster="old",instance="127.0.0.1:5001",user="app",database="app",state="opening"} 1
switchyard_pool_connections{cluster="old",instance="127.0.0.1:5001",user="app",database="app",state="resetting"} 1
switchyard_pool_connections{cluster="old",instance="127.0.0.1:5001",user="report",database="app",state="idle"} 1
switchyard_pool_connections{cluster="old",instance="127.0.0.1:5002",user="app",database="app",state="idle"} 4
switchyard_pool_connections{cluster="old",instance="127.0.0.1:5002",user="app",database="app",state="in_use"} 0
switchyard_pool_connections_other{instance="127.0.0.1:5002",state="idle"} 50
# TYPE switchyard_pool_opened_total counter
switchyard_pool_opened_total{cluster="old",instance="127.0.0.1:5001",user="app",database="app"} 9
switchyard_pool_opened_total{cluster="old",instance="127.0.0.1:5001",user="report",database="app"} 1
switchyard_pool_opened_total{cluster="old",instance="127.0.0.1:5002",user="app",database="app"} 4
switchyard_pool_opened_total{cluster="old",instance="127.0.0.1:5003",user="app",database="app"} 0
switchyard_pool_waiting{cluster="old",instance="127.0.0.1:5001",user="app",database="app"} 0
"#;

    #[test]
    fn queries_are_summed_by_instance() {
        let sums = queries_by_instance(METRICS);
        assert_eq!(sums.len(), 2, "{sums:?}");
        assert_eq!(sums["127.0.0.1:5001"], 125.0);
        assert_eq!(sums["127.0.0.1:5002"], 300.0);
    }

    #[test]
    fn pools_are_summed_by_instance() {
        let pools = pools_by_instance(METRICS);
        let pooled = |open, opened| Pooled { open, opened };
        assert_eq!(
            pools,
            [
                ("127.0.0.1:5001".to_owned(), pooled(6.0, 10.0)),
                ("127.0.0.1:5002".to_owned(), pooled(4.0, 4.0)),
                ("127.0.0.1:5003".to_owned(), pooled(0.0, 0.0)),
            ]
            .into()
        );
        assert_eq!(client_connections(METRICS), Some(18.0));
        assert_eq!(
            client_connections("switchyard_client_connections 16\n"),
            None
        );
        assert!(pools_by_instance("").is_empty());
    }

    #[test]
    fn lines_show_rates_since_the_last_sample() {
        let instance = |name: &str, port: u16| Instance {
            name: name.into(),
            addr: format!("127.0.0.1:{port}"),
        };
        let admin = Admin {
            url: "http://127.0.0.1:1".into(),
            token: None,
        };
        let instances = vec![instance("old-writer", 5001), instance("old-replica", 5002)];
        let mut watch = Watch::new(admin, instances, Arc::new(Stats::new()));
        assert!(watch.header().contains("old-replica"));
        let sample = |secs, statements, per: PerInstance| Sample {
            at: Duration::from_secs(secs),
            statements,
            per_instance: per,
            active: Some("old".into()),
            server_connections: Some(9.0),
            ..Sample::default()
        };
        watch.line(sample(1, 1000, queries_by_instance(METRICS)));
        let mut later = queries_by_instance(METRICS);
        *later.get_mut("127.0.0.1:5002").unwrap() += 600.0;
        let line = watch.line(sample(3, 3000, later));
        let columns: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(
            columns,
            ["3s", "1000", "0", "-", "-", "old", "-", "0", "300", "9"]
        );
    }
}
