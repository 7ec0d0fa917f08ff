//! The operator's side of the admin API: `switchyard status`, `pause`, `resume`,
//! `read-only` and the demo's cutover, talking HTTP to a running proxy. Part of the binary only.

use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use serde_json::Value;
use switchyard::config::Fence;
use switchyard::cutover::driver::{
    self, MemberReport, Participant, Plan, Report, StepOutcome, StepRequest,
};
use switchyard::cutover::{Settings, fleet};

/// Where the admin API is and how to authenticate.
#[derive(Debug, Clone)]
pub struct Admin {
    pub url: String,
    pub token: Option<String>,
}

/// How long an admin call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a fleet member gets to answer before a cutover leaves it out as unreachable.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

impl Admin {
    fn agent(timeout: Duration) -> ureq::Agent {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .build()
            .into()
    }

    /// Sends one request (with the token, when there is one) and returns the HTTP status and
    /// the body: parsed JSON, or the text as a JSON string.
    pub fn request(&self, method: &str, path: &str, body: Option<Value>) -> Result<(u16, Value)> {
        self.request_within(method, path, body, CALL_TIMEOUT)
    }

    fn request_within(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        timeout: Duration,
    ) -> Result<(u16, Value)> {
        let url = format!("{}{path}", self.url.trim_end_matches('/'));
        let agent = Admin::agent(timeout);
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

    /// The active cluster and the cutover settings of this proxy, answered within `timeout`.
    fn cutover_settings_within(&self, timeout: Duration) -> Result<(String, Settings)> {
        let (status, v) = self.request_within("GET", "/v1/cutover", None, timeout)?;
        if !(200..300).contains(&status) {
            bail!("GET /v1/cutover: {status}: {}", error_message(&v));
        }
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

    /// The routing state and instances, then the fleet when the proxy knows one.
    pub fn status(&self) -> Result<String> {
        let mut out = render_status(&self.call("GET", "/status", None)?);
        if let Ok(fleet) = self.fleet() {
            out.push_str(&render_fleet(&fleet));
        }
        Ok(out)
    }

    /// `GET /v1/fleet` (an empty view from a proxy without `[fleet]` or before this API).
    pub fn fleet(&self) -> Result<fleet::View> {
        let v = self.call("GET", "/v1/fleet", None)?;
        Ok(serde_json::from_value(v).unwrap_or(fleet::View {
            this: String::new(),
            poll_interval_ms: 0,
            members: Vec::new(),
        }))
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

    type Error = RemoteStepError;

    async fn step(&self, request: StepRequest) -> Result<StepOutcome, RemoteStepError> {
        let admin = std::sync::Arc::clone(&self.0);
        let call = tokio::task::spawn_blocking(move || {
            let body = serde_json::to_value(&request).map_err(RemoteStepError::Encode)?;
            let answer = admin
                .call("POST", "/v1/cutover/step", Some(body))
                .map_err(RemoteStepError::Call)?;
            serde_json::from_value(answer).map_err(RemoteStepError::Decode)
        });
        call.await.map_err(RemoteStepError::Task)?
    }
}

/// Why a step sent to a proxy's admin API failed.
#[derive(Debug, thiserror::Error)]
enum RemoteStepError {
    #[error("encode the step request: {0}")]
    Encode(#[source] serde_json::Error),
    /// The proxy refused the step, or could not be reached: its message as it gave it.
    #[error("{0:#}")]
    Call(anyhow::Error),
    #[error("decode the step's outcome: {0}")]
    Decode(#[source] serde_json::Error),
    #[error("the step's HTTP call did not finish")]
    Task(#[source] tokio::task::JoinError),
}

/// The proxies a cutover drives: the ones given, every live member of their fleet, and the
/// members left out with the reason.
struct Targets {
    reachable: Vec<(Admin, String, Settings)>,
    left_out: Vec<MemberReport>,
    /// Members that could not be reached (not counting stale ones).
    unreachable: Vec<MemberReport>,
}

/// Asks the first proxy given for its fleet and probes every member.
fn targets(admins: Vec<Admin>) -> Result<Targets> {
    let first = admins.first().context("no proxy given")?.clone();
    let mut urls: Vec<Admin> = admins;
    let mut left_out = Vec::new();
    match first.fleet() {
        Ok(view) => {
            for m in view.members {
                let url = m.admin_url.trim_end_matches('/').to_owned();
                if urls.iter().any(|a| a.url.trim_end_matches('/') == url) {
                    continue;
                }
                if !m.live {
                    left_out.push(MemberReport {
                        name: format!("{} ({url})", m.id),
                        did: format!(
                            "left out: stale, last heartbeat {:.0} s ago",
                            m.seen_ago_s.unwrap_or_default()
                        ),
                    });
                    continue;
                }
                urls.push(Admin {
                    url,
                    token: first.token.clone(),
                });
            }
        }
        Err(e) => eprintln!("switchyard: no fleet view from {}: {e:#}", first.url),
    }
    let mut reachable = Vec::new();
    let mut unreachable = Vec::new();
    for admin in urls {
        match admin.cutover_settings_within(PROBE_TIMEOUT) {
            Ok((active, settings)) => reachable.push((admin, active, settings)),
            Err(e) => unreachable.push(MemberReport {
                name: admin.url.clone(),
                did: format!("unreachable: {e:#}"),
            }),
        }
    }
    Ok(Targets {
        reachable,
        left_out,
        unreachable,
    })
}

/// Who runs this cutover, for the lock: user, host and process.
fn holder() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "someone".into());
    format!("{user}@{} pid {}", fleet::host_name(), std::process::id())
}

/// Test-only: `SWITCHYARD_CUTOVER_HOLD_AFTER=<phase>` makes the CLI stop after that phase
/// until a line arrives on its standard input, so a test can kill the coordinator (or start
/// a proxy) at that point.
const HOLD_AFTER: &str = "SWITCHYARD_CUTOVER_HOLD_AFTER";

/// `switchyard cutover`: drives a cutover over every proxy given and every live member of
/// their fleet, printing each step as it ends, then the report naming every member.
/// `Ok(false)` when it did not switch (aborted or failed).
pub fn cutover(admins: Vec<Admin>, to: &str, dry_run: bool) -> Result<bool> {
    let Targets {
        reachable,
        mut left_out,
        unreachable,
    } = targets(admins)?;
    let Some((first, from, settings)) = reachable.first().cloned() else {
        bail!(
            "no proxy answered: {}",
            unreachable
                .iter()
                .map(|m| format!("{} {}", m.name, m.did))
                .collect::<Vec<_>>()
                .join("; ")
        );
    };
    for (other, active, _) in &reachable[1..] {
        if *active != from {
            bail!(
                "{} serves cluster {active:?} but {} serves {from:?}: the proxies disagree",
                other.url,
                first.url
            );
        }
    }
    let fleet = reachable.len() + unreachable.len() > 1;
    let fence = match (settings.database_steps, settings.fence) {
        (false, _) => Fence::Proxy,
        (true, Some(f)) => f,
        (true, None) if fleet => Fence::Database,
        (true, None) => Fence::Proxy,
    };
    leave_out(unreachable, fence, &mut left_out)?;
    let plan = Plan {
        from: from.clone(),
        to: to.to_owned(),
        dry_run,
        drain_timeout: Duration::from_millis(settings.drain_timeout_ms),
        catch_up_timeout: Duration::from_millis(settings.catch_up_timeout_ms),
        max_pause: Duration::from_millis(settings.max_pause_ms),
        holder: holder(),
        fence,
    };
    println!(
        "cutover {from} -> {to} on {} prox{} (max_pause {:?}, fence {}){}",
        reachable.len(),
        if reachable.len() == 1 { "y" } else { "ies" },
        plan.max_pause,
        match fence {
            Fence::Proxy => "proxy",
            Fence::Database => "database",
        },
        if dry_run { ", dry run" } else { "" }
    );
    let proxies: Vec<Remote> = reachable
        .into_iter()
        .map(|(a, _, _)| Remote(std::sync::Arc::new(a)))
        .collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the runtime")?;
    let hold_after = std::env::var(HOLD_AFTER).ok();
    let started = std::time::Instant::now();
    let mut report = runtime.block_on(driver::run(&proxies, &plan, |step, _| {
        print_step(step, started, hold_after.as_deref())
    }));
    report.members.extend(left_out);
    print!("{}", render_report(&report));
    Ok(matches!(
        report.outcome,
        switchyard::cutover::Phase::Switched | switchyard::cutover::Phase::DryRun
    ))
}

/// Members that could not be reached: refused with the proxy fence (their writes would go
/// on to the old cluster), else left out of the cutover and listed in the report.
fn leave_out(
    unreachable: Vec<MemberReport>,
    fence: Fence,
    left_out: &mut Vec<MemberReport>,
) -> Result<()> {
    if unreachable.is_empty() {
        return Ok(());
    }
    let names: Vec<String> = unreachable
        .iter()
        .map(|m| format!("{} ({})", m.name, m.did))
        .collect();
    if fence == Fence::Proxy {
        bail!(
            "preflight: fleet member(s) unreachable with fence = \"proxy\": {}. Their writes would go on to the old cluster; bring them back, leave them out of the fleet, or fence in the database (fence = \"database\")",
            names.join("; ")
        );
    }
    eprintln!(
        "switchyard: left out (the database fence refuses their writes until they follow the record): {}",
        names.join("; ")
    );
    for m in unreachable {
        left_out.push(MemberReport {
            name: m.name,
            did: format!(
                "left out, {}; fenced by the database, follows the record within its poll_interval",
                m.did
            ),
        });
    }
    Ok(())
}

/// One finished step as a line of progress; holds there when `SWITCHYARD_CUTOVER_HOLD_AFTER`
/// names its phase (tests only).
fn print_step(step: &driver::StepRecord, started: std::time::Instant, hold_after: Option<&str>) {
    println!(
        "  {:>9.1} ms  {:<9}  {:<4} {:>8.1} ms  {}",
        started.elapsed().as_secs_f64() * 1000.0 - step.ms,
        step.phase.as_str(),
        if step.ok { "ok" } else { "FAIL" },
        step.ms,
        step.detail
    );
    if hold_after == Some(step.phase.as_str()) {
        use std::io::{BufRead as _, Write as _};
        println!(
            "holding after {} ({HOLD_AFTER}, test only)",
            step.phase.as_str()
        );
        let _ = std::io::stdout().flush();
        let mut line = String::new();
        let _ = std::io::stdin().lock().read_line(&mut line);
    }
}

pub fn render_report(r: &Report) -> String {
    let mut out = format!("{}: active cluster {}\n", r.outcome.as_str(), r.active);
    if let Some(ms) = r.pause_ms {
        out.push_str(&format!("  pause        {ms:.1} ms\n"));
    }
    out.push_str(&format!("  held         {} transactions\n", r.held));
    out.push_str(&format!("  aborted      {} transactions\n", r.aborted));
    out.push_str(&format!("  proxies      {}\n", r.proxies));
    if r.epoch > 0 {
        out.push_str(&format!("  epoch        {}\n", r.epoch));
    }
    if let Some(e) = &r.error {
        out.push_str(&format!("  error        {e}\n"));
    }
    if !r.members.is_empty() {
        out.push_str("  members\n");
        for m in &r.members {
            out.push_str(&format!("    {:<28} {}\n", m.name, m.did));
        }
    }
    out
}

/// The fleet as a table under the status (nothing without `[fleet]`).
fn render_fleet(v: &fleet::View) -> String {
    if v.this.is_empty() && v.members.is_empty() {
        return String::new();
    }
    let mut out = format!(
        "\nFLEET (this proxy: {}, poll every {} ms)\n{:<24} {:<30} {:<8} {:<8} {:>6} {:>9}  {}\n",
        v.this,
        v.poll_interval_ms,
        "MEMBER",
        "ADMIN",
        "VERSION",
        "ACTIVE",
        "EPOCH",
        "SEEN",
        "STATE"
    );
    for m in &v.members {
        let seen = m
            .seen_ago_s
            .map_or("-".to_owned(), |s| format!("{s:.1}s ago"));
        out.push_str(&format!(
            "{:<24} {:<30} {:<8} {:<8} {:>6} {:>9}  {}\n",
            m.id,
            m.admin_url,
            m.version,
            m.active,
            m.epoch,
            seen,
            if m.live { "live" } else { "stale" }
        ));
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
    fn the_fleet_and_the_report_name_every_member() {
        let view: fleet::View = serde_json::from_value(serde_json::json!({
            "self": "vm:9187", "poll_interval_ms": 2000,
            "members": [
                { "id": "vm:9187", "admin_url": "http://10.0.0.1:9187", "version": "0.1.0", "active": "old", "epoch": 0, "seen_ago_s": 0.4, "live": true, "source": "database" },
                { "id": "vm2:9187", "admin_url": "http://10.0.0.2:9187", "version": "0.1.0", "active": "old", "epoch": 0, "seen_ago_s": 42.0, "live": false, "source": "database" },
                { "id": "10.0.0.3:9187", "admin_url": "http://10.0.0.3:9187", "seen_ago_s": null, "live": true, "source": "dns" }
            ]
        }))
        .unwrap();
        let table = render_fleet(&view);
        assert!(table.contains("FLEET (this proxy: vm:9187"), "{table}");
        assert!(
            table
                .lines()
                .any(|l| l.starts_with("vm2:9187") && l.ends_with("42.0s ago  stale")),
            "{table}"
        );
        assert!(
            table
                .lines()
                .any(|l| l.starts_with("10.0.0.3:9187") && l.ends_with("-  live")),
            "{table}"
        );
        assert_eq!(
            render_fleet(&fleet::View {
                this: String::new(),
                poll_interval_ms: 0,
                members: vec![]
            }),
            ""
        );
    }

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
