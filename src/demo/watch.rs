//! Live progress, one line a second: statements/s and errors (the application's own count),
//! p99 and slowest latency (a pause shows in the slowest), statements per instance (from switchyard's `/metrics`), the active cluster
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
    pub active: Option<String>,
    pub phase: Option<String>,
}

/// Sums `switchyard_queries_total` by its `instance` label.
pub fn queries_by_instance(metrics: &str) -> PerInstance {
    let mut sums = PerInstance::new();
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix("switchyard_queries_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.split_once('}') else {
            continue;
        };
        let Some(instance) = label(labels, "instance") else {
            continue;
        };
        if let Ok(value) = value.trim().parse::<f64>() {
            *sums.entry(instance.to_owned()).or_default() += value;
        }
    }
    sums
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
            per_instance: metrics.map(|m| queries_by_instance(&m)).unwrap_or_default(),
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
"#;

    #[test]
    fn queries_are_summed_by_instance() {
        let sums = queries_by_instance(METRICS);
        assert_eq!(sums.len(), 2, "{sums:?}");
        assert_eq!(sums["127.0.0.1:5001"], 125.0);
        assert_eq!(sums["127.0.0.1:5002"], 300.0);
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
            ..Sample::default()
        };
        watch.line(sample(1, 1000, queries_by_instance(METRICS)));
        let mut later = queries_by_instance(METRICS);
        *later.get_mut("127.0.0.1:5002").unwrap() += 600.0;
        let line = watch.line(sample(3, 3000, later));
        let columns: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(
            columns,
            ["3s", "1000", "0", "-", "-", "old", "-", "0", "300"]
        );
    }
}
