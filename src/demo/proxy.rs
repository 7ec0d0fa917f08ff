//! switchyard itself, as an operator runs it: a config file, `switchyard serve -c FILE` as a
//! process of its own (this very binary), ready once its admin API answers and every
//! instance passed its health checks.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use super::Instance;
use super::process::{Account, Processes, Signals, StopSignal, log_tail};
use crate::operator::Admin;

/// How long the proxy may take to answer on its admin API.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the instances may take to pass their health checks.
const HEALTHY_TIMEOUT: Duration = Duration::from_secs(30);

/// One cluster as the config names it.
pub struct ClusterPlan {
    pub name: &'static str,
    pub writer: Instance,
    pub replica: Instance,
}

/// What the generated config says besides the ports.
pub struct Plan {
    pub protocol: &'static str,
    pub clusters: [ClusterPlan; 2],
    /// The monitor account (a superuser: the cutover's catch-up and fencing use it too).
    pub monitor_user: &'static str,
    pub monitor_database: Option<&'static str>,
    /// The `[cutover]` section's body.
    pub cutover: String,
    pub token: String,
}

/// A running proxy.
pub struct Proxy {
    pub addr: SocketAddr,
    pub admin: Admin,
    pub config: PathBuf,
    pub log: PathBuf,
    /// Whether this build's config accepted `[cutover]` (see [`start`]).
    pub cutover_configured: bool,
    /// `server.pool_mode` in the config it runs with.
    pub pool_mode: &'static str,
}

/// The config file's text; `with_cutover` false leaves `[cutover]` out.
pub fn config_text(plan: &Plan, listen: u16, admin: u16, dir: &Path, with_cutover: bool) -> String {
    let mut text = format!(
        r#"# Written by `switchyard demo`.
[server]
protocol = "{protocol}"
listen = "127.0.0.1:{listen}"
tls_mode = "disable"

[admin]
listen = "127.0.0.1:{admin}"
token = "{token}"

[[users]]
name = "{user}"
password = "{password}"
"#,
        protocol = plan.protocol,
        token = plan.token,
        user = super::APP_USER,
        password = super::APP_PASSWORD,
    );
    for cluster in &plan.clusters {
        text.push_str(&format!(
            r#"
[clusters.{name}]
writer = "{writer}"
readers = ["{replica}"]
monitor_user = "{monitor}"
health_interval = "500ms"
"#,
            name = cluster.name,
            writer = cluster.writer.addr,
            replica = cluster.replica.addr,
            monitor = plan.monitor_user,
        ));
        if let Some(database) = plan.monitor_database {
            text.push_str(&format!("monitor_database = \"{database}\"\n"));
        }
    }
    text.push_str(&format!(
        "\n[routing]\nactive = \"{}\"\nstate_dir = \"{}\"\n",
        plan.clusters[0].name,
        dir.join("state").display()
    ));
    if with_cutover {
        text.push_str(&format!("\n[cutover]\n{}", plan.cutover));
    }
    text
}

/// Whether this build of switchyard knows `[cutover]`. Until the cutover is merged, config
/// validation rejects it as an unknown key; the demo then runs without it and says so.
pub fn accepts_cutover_section(text: &str) -> Result<bool> {
    match toml::from_str::<switchyard::config::Config>(text) {
        Ok(_) => Ok(true),
        Err(e) if e.to_string().contains("unknown field `cutover`") => Ok(false),
        Err(e) => bail!("the demo wrote a config this build cannot read: {e}"),
    }
}

/// Writes the config into `dir` and starts `switchyard serve` on free ports; returns once
/// the admin API answers and every instance is healthy.
pub async fn start(plan: &Plan, dir: &Path, processes: &Processes) -> Result<Proxy> {
    let exe = std::env::current_exe().context("find the switchyard binary")?;
    let config = dir.join("switchyard.toml");
    let log = dir.join("switchyard.log");
    let owner = Account::current();
    let cutover_configured = accepts_cutover_section(&config_text(plan, 0, 0, dir, true))?;
    let spawn = |[listen, admin]: [u16; 2]| {
        let text = config_text(plan, listen, admin, dir, cutover_configured);
        std::fs::write(&config, &text).with_context(|| format!("write {}", config.display()))?;
        switchyard::config::load(&config).with_context(|| {
            format!(
                "the demo's config {} is not valid:\n{text}",
                config.display()
            )
        })?;
        let mut command = owner.command(&exe, dir);
        command.arg("serve").arg("-c").arg(&config);
        command.env("SWITCHYARD_LOG", "info").env("NO_COLOR", "1");
        let signals = Signals {
            stop: StopSignal::Term,
            on_demo_death: testkit::Signal::TERM,
        };
        processes.spawn("switchyard", command, &log, owner, signals)
    };
    let token = plan.token.clone();
    let probe = |[_, admin]: [u16; 2]| {
        let admin = admin_client(admin, &token);
        async move { blocking(move || admin.get_text("/healthz")).await.map(drop) }
    };
    let [listen, admin] = processes
        .launch("switchyard", &log, READY_TIMEOUT, spawn, probe)
        .await?;
    let pool_mode = switchyard::config::load(&config)
        .with_context(|| format!("read back {}", config.display()))?
        .raw
        .server
        .pool_mode
        .as_str();
    let proxy = Proxy {
        addr: SocketAddr::from(([127, 0, 0, 1], listen)),
        admin: admin_client(admin, &plan.token),
        config,
        log,
        cutover_configured,
        pool_mode,
    };
    proxy.wait_healthy().await?;
    Ok(proxy)
}

fn admin_client(port: u16, token: &str) -> Admin {
    Admin {
        url: format!("http://127.0.0.1:{port}"),
        token: Some(token.to_owned()),
    }
}

/// Runs a blocking admin call off the runtime's thread; its error as text.
pub async fn blocking<T: Send + 'static>(
    call: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T, String> {
    match tokio::task::spawn_blocking(call).await {
        Ok(result) => result.map_err(|e| format!("{e:#}")),
        Err(e) => Err(format!("admin call failed: {e}")),
    }
}

impl Proxy {
    pub fn admin_url(&self) -> &str {
        &self.admin.url
    }

    /// Polls `/status` until every instance of every cluster is `healthy`.
    async fn wait_healthy(&self) -> Result<()> {
        let deadline = tokio::time::Instant::now() + HEALTHY_TIMEOUT;
        loop {
            let admin = self.admin.clone();
            let status = blocking(move || admin.get_json("/status")).await;
            let waiting = match &status {
                Ok(status) => unhealthy(status),
                Err(e) => vec![e.clone()],
            };
            if waiting.is_empty() {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "switchyard's instances did not all pass their health checks within \
                     {HEALTHY_TIMEOUT:?}; still waiting for: {}\n{}",
                    waiting.join(", "),
                    log_tail(&self.log)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The instances in a `/status` answer that are not `healthy`, as `addr (state)`.
fn unhealthy(status: &Value) -> Vec<String> {
    let mut waiting = Vec::new();
    for cluster in status["clusters"]
        .as_object()
        .into_iter()
        .flat_map(|c| c.values())
    {
        let readers = cluster["readers"].as_array().into_iter().flatten();
        for instance in std::iter::once(&cluster["writer"]).chain(readers) {
            let state = instance["state"].as_str().unwrap_or("unknown");
            if state != "healthy" {
                let addr = instance["addr"].as_str().unwrap_or("an instance");
                waiting.push(format!("{addr} ({state})"));
            }
        }
    }
    if status["clusters"].as_object().is_none_or(|c| c.is_empty()) {
        waiting.push("a /status answer with clusters".into());
    }
    waiting
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unhealthy_instances_are_named() {
        let status = serde_json::json!({ "clusters": {
            "old": { "writer": { "addr": "a:1", "state": "healthy" },
                     "readers": [ { "addr": "a:2", "state": "joining" } ] } } });
        assert_eq!(unhealthy(&status), ["a:2 (joining)"]);
        assert_eq!(unhealthy(&serde_json::json!({})).len(), 1);
    }
}
