//! The operator's side of the admin API: `switchyard status`, `pause`, `resume`,
//! `read-only` and the demo's cutover, talking HTTP to a running proxy. Part of the binary only.

use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use serde_json::Value;
use switchyard::cutover::Settings;
use switchyard::cutover::driver::{self, Participant, Plan, Report, StepOutcome, StepRequest};

/// Where the admin API is and how to authenticate.
#[derive(Debug, Clone)]
pub struct Admin {
    pub url: String,
    pub token: Option<String>,
}

impl Admin {
    fn agent() -> ureq::Agent {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into()
    }

    /// Sends one request (with the token, when there is one) and returns the HTTP status and
    /// the body: parsed JSON, or the text as a JSON string.
    pub fn request(&self, method: &str, path: &str, body: Option<Value>) -> Result<(u16, Value)> {
        let url = format!("{}{path}", self.url.trim_end_matches('/'));
        let agent = Admin::agent();
        let bearer = self.token.as_ref().map(|token| format!("Bearer {token}"));
        let response = match method {
            "GET" => {
                let mut request = agent.get(&url);
                if let Some(bearer) = &bearer {
                    request = request.header("Authorization", bearer);
                }
                request.call()
            }
            _ => {
                let mut request = agent.post(&url).content_type("application/json");
                if let Some(bearer) = &bearer {
                    request = request.header("Authorization", bearer);
                }
                request.send(body.unwrap_or(Value::Null).to_string())
            }
        };
        let mut response = response.with_context(|| format!("{method} {url}"))?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .read_to_string()
            .with_context(|| format!("read the answer of {method} {url}"))?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok((status, value))
    }

    /// Like [`Admin::request`], but an answer other than 2xx is an error carrying its message.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value> {
        let (status, value) = self.request(method, path, body)?;
        if !(200..300).contains(&status) {
            bail!("{method} {path}: {status}: {}", error_message(&value));
        }
        Ok(value)
    }

    /// The active cluster and the cutover timing settings of this proxy.
    pub fn cutover_settings(&self) -> Result<(String, Settings)> {
        let v = self.call("GET", "/v1/cutover", None)?;
        let active = v
            .get("active")
            .and_then(Value::as_str)
            .context("GET /v1/cutover: no active cluster in the answer")?
            .to_owned();
        let settings = serde_json::from_value(v.get("settings").cloned().unwrap_or_default())
            .context("GET /v1/cutover: settings")?;
        Ok((active, settings))
    }

    /// `GET path` as text (e.g. `/metrics`).
    pub fn get_text(&self, path: &str) -> Result<String> {
        match self.call("GET", path, None)? {
            Value::String(text) => Ok(text),
            other => Ok(other.to_string()),
        }
    }

    /// `GET path` as JSON.
    pub fn get_json(&self, path: &str) -> Result<Value> {
        self.call("GET", path, None)
    }

    pub fn status(&self) -> Result<String> {
        Ok(render_status(&self.call("GET", "/status", None)?))
    }

    pub fn pause(&self, cluster: Option<&str>) -> Result<String> {
        let body = serde_json::json!({ "cluster": cluster });
        Ok(render_routing(&self.call(
            "POST",
            "/v1/pause",
            Some(body),
        )?))
    }

    pub fn resume(&self, cluster: Option<&str>) -> Result<String> {
        let body = serde_json::json!({ "cluster": cluster });
        Ok(render_routing(&self.call(
            "POST",
            "/v1/resume",
            Some(body),
        )?))
    }

    /// Asks the proxy to re-read its config file; the summary of what it applied.
    pub fn reload(&self) -> Result<String> {
        let v = self.call("POST", "/v1/reload", None)?;
        let r = v.get("reloaded").cloned().unwrap_or_default();
        Ok(format!(
            "reloaded {}: {} user(s), {} reader(s), log level {}\n",
            r.get("file").and_then(Value::as_str).unwrap_or("?"),
            r.get("users").and_then(Value::as_u64).unwrap_or(0),
            r.get("readers").and_then(Value::as_u64).unwrap_or(0),
            r.get("log_level").and_then(Value::as_str).unwrap_or("?"),
        ))
    }

    pub fn read_only(&self, cluster: &str, enabled: bool) -> Result<String> {
        let body = serde_json::json!({ "enabled": enabled });
        let path = format!("/v1/clusters/{cluster}/read-only");
        Ok(render_routing(&self.call("POST", &path, Some(body))?))
    }
}

/// A proxy taking part in a cutover, through its admin API.
struct Remote(std::sync::Arc<Admin>);

impl Participant for Remote {
    fn name(&self) -> String {
        self.0.url.clone()
    }

    async fn step(&self, request: StepRequest) -> Result<StepOutcome, String> {
        let admin = std::sync::Arc::clone(&self.0);
        let call = tokio::task::spawn_blocking(move || {
            let body = serde_json::to_value(&request).map_err(|e| e.to_string())?;
            let answer = admin
                .call("POST", "/v1/cutover/step", Some(body))
                .map_err(|e| format!("{e:#}"))?;
            serde_json::from_value(answer).map_err(|e| e.to_string())
        });
        call.await.map_err(|e| e.to_string())?
    }
}

/// `switchyard cutover`: drives a cutover over every proxy given, printing each step as it
/// ends, then the report. `Ok(false)` when it did not switch (aborted or failed).
pub fn cutover(admins: Vec<Admin>, to: &str, dry_run: bool) -> Result<bool> {
    let first = admins.first().context("no proxy given")?;
    let (from, settings) = first.cutover_settings()?;
    for other in &admins[1..] {
        let (active, _) = other.cutover_settings()?;
        if active != from {
            bail!(
                "{} serves cluster {active:?} but {} serves {from:?}: the proxies disagree",
                other.url,
                first.url
            );
        }
    }
    let plan = Plan {
        from: from.clone(),
        to: to.to_owned(),
        dry_run,
        drain_timeout: Duration::from_millis(settings.drain_timeout_ms),
        catch_up_timeout: Duration::from_millis(settings.catch_up_timeout_ms),
        max_pause: Duration::from_millis(settings.max_pause_ms),
    };
    println!(
        "cutover {from} -> {to} on {} prox{} (max_pause {:?}){}",
        admins.len(),
        if admins.len() == 1 { "y" } else { "ies" },
        plan.max_pause,
        if dry_run { ", dry run" } else { "" }
    );
    let proxies: Vec<Remote> = admins
        .into_iter()
        .map(|a| Remote(std::sync::Arc::new(a)))
        .collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the runtime")?;
    let started = std::time::Instant::now();
    let report = runtime.block_on(driver::run(&proxies, &plan, |step, _| {
        println!(
            "  {:>9.1} ms  {:<9}  {:<4} {:>8.1} ms  {}",
            started.elapsed().as_secs_f64() * 1000.0 - step.ms,
            step.phase.as_str(),
            if step.ok { "ok" } else { "FAIL" },
            step.ms,
            step.detail
        );
    }));
    print!("{}", render_report(&report));
    Ok(matches!(
        report.outcome,
        switchyard::cutover::Phase::Switched | switchyard::cutover::Phase::DryRun
    ))
}

pub fn render_report(r: &Report) -> String {
    let mut out = format!("{}: active cluster {}\n", r.outcome.as_str(), r.active);
    if let Some(ms) = r.pause_ms {
        out.push_str(&format!("  pause        {ms:.1} ms\n"));
    }
    out.push_str(&format!("  held         {} transactions\n", r.held));
    out.push_str(&format!("  aborted      {} transactions\n", r.aborted));
    out.push_str(&format!("  proxies      {}\n", r.proxies));
    if let Some(e) = &r.error {
        out.push_str(&format!("  error        {e}\n"));
    }
    out
}

/// The `error` field of an error answer, else the whole answer.
pub fn error_message(value: &Value) -> String {
    value
        .get("error")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| text(value))
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// The routing state as lines: `active cluster: old` and one `cluster  mode` line each.
fn render_routing(v: &Value) -> String {
    let mut out = format!("active cluster: {}\n", text(&v["active"]));
    if let Some(modes) = v["modes"].as_object() {
        for (cluster, mode) in modes {
            out.push_str(&format!("  {cluster:<16} {}\n", text(mode)));
        }
    }
    out
}

/// `/status` as a table of instances under the routing state.
fn render_status(v: &Value) -> String {
    let mut out = render_routing(&v["routing"]);
    out.push_str(&format!(
        "\n{:<12} {:<28} {:<8} {:>9} {:>8}  {}\n",
        "CLUSTER", "INSTANCE", "ROLE", "IN-FLIGHT", "LAG", "STATE"
    ));
    let Some(clusters) = v["clusters"].as_object() else {
        return out;
    };
    for (name, cluster) in clusters {
        let writer = std::iter::once(&cluster["writer"]);
        let readers = cluster["readers"].as_array().into_iter().flatten();
        for instance in writer.chain(readers) {
            let state = instance.get("state").map(text).unwrap_or_else(|| {
                if instance["down"].as_bool() == Some(true) {
                    "down".into()
                } else {
                    "up".into()
                }
            });
            // Absent from older proxies; null when replication is stopped.
            let lag = match instance.get("lag_seconds") {
                None => "-".to_owned(),
                Some(Value::Null) => "stopped".to_owned(),
                Some(v) => format!("{:.1}s", v.as_f64().unwrap_or_default()),
            };
            out.push_str(&format!(
                "{:<12} {:<28} {:<8} {:>9} {:>8}  {}\n",
                name,
                text(&instance["addr"]),
                text(&instance["role"]),
                text(&instance["in_flight"]),
                lag,
                state
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_renders_as_a_table() {
        let v = serde_json::json!({
            "routing": { "active": "old", "modes": { "old": "read_only", "new": "read_write" } },
            "clusters": { "old": {
                "writer": { "addr": "10.0.0.1:5432", "role": "writer", "in_flight": 2, "down": false },
                "readers": [
                    { "addr": "10.0.0.2:5432", "role": "reader", "in_flight": 0, "down": true, "state": "unhealthy" },
                    { "addr": "10.0.0.3:5432", "role": "reader", "in_flight": 0, "down": false, "state": "lagging", "lag_seconds": 42.25 },
                    { "addr": "10.0.0.4:5432", "role": "reader", "in_flight": 0, "down": false, "state": "lagging", "lag_seconds": null }
                ]
            } }
        });
        let table = render_status(&v);
        assert!(table.contains("active cluster: old"), "{table}");
        assert!(table.contains("read_only"), "{table}");
        assert!(table.contains("10.0.0.2:5432"), "{table}");
        assert!(
            table
                .lines()
                .any(|l| l.contains("10.0.0.2") && l.ends_with("unhealthy")),
            "{table}"
        );
        assert!(
            table
                .lines()
                .any(|l| l.contains("10.0.0.3") && l.ends_with("42.2s  lagging")),
            "{table}"
        );
        assert!(
            table
                .lines()
                .any(|l| l.contains("10.0.0.4") && l.ends_with("stopped  lagging")),
            "{table}"
        );
    }
}
