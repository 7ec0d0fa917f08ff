//! `switchyard demo`: a live zero-downtime migration on local servers, in one command.
//!
//! It starts an old and a new cluster (writer + replica each) with replication from old to
//! new, switchyard in front of them, and an application's load through switchyard; shows
//! progress every second; asks for the cutover through the admin API midway, as an operator
//! would; and ends with a report that checks every acknowledged write on the new writer.
//! Everything lives in one scratch directory and is stopped and removed at the end or on
//! Ctrl-C, unless `--keep`.
//!
//! Layers, lowest first: `process` (child processes, scratch directory) → `postgres`,
//! `mariadb` (the clusters) → `servers` (either engine behind one face) → `proxy` (config,
//! `switchyard serve`) → `load` (the application), `cutover`, `watch` (progress) →
//! `report` → this file (the timeline).

mod cutover;
mod load;
mod mariadb;
mod postgres;
mod process;
mod proxy;
mod report;
mod servers;
mod watch;

use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};

use self::cutover::Outcome;
use self::load::Load;
use self::load::stats::Stats;
use self::process::{Processes, STOP_SCRIPT, Scratch, log_tail};
use self::report::{Summary, Verification};
use self::servers::Clusters;
use self::watch::{
    PerInstance, PoolsByInstance, Watch, client_connections, pools_by_instance, queries_by_instance,
};
use crate::operator::Admin;

/// The application's login and database, on every server and through switchyard.
pub const APP_USER: &str = "app";
pub const APP_PASSWORD: &str = "app-secret";
pub const APP_DATABASE: &str = "app";
/// PostgreSQL: the publication, subscription and logical replication slot.
pub const SLOT: &str = "switchyard";
/// The shortest run that leaves time before and after the cutover.
const MIN_DURATION: Duration = Duration::from_secs(4);

/// Which database the demo migrates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Engine {
    /// PostgreSQL, with logical replication from old to new.
    Postgres,
    /// MySQL protocol, on MariaDB with GTID binlog replication.
    Mysql,
}

/// One server, named as the demo shows it.
#[derive(Debug, Clone)]
pub struct Instance {
    /// `old-writer`, `old-replica`, `new-writer`, `new-replica`.
    pub name: String,
    /// `127.0.0.1:port`, as switchyard's config and metrics name it.
    pub addr: String,
}

pub struct Options {
    pub engine: Engine,
    /// How long the application runs; the cutover starts halfway.
    pub duration: Duration,
    /// Leave everything running at the end.
    pub keep: bool,
}

/// Runs the demo on a runtime of one thread (the main thread: the servers are tied to it,
/// see `process`). Exit status 0 only when the report passes.
pub fn run(options: Options) -> ExitCode {
    if options.duration < MIN_DURATION {
        eprintln!("switchyard demo: --duration must be at least {MIN_DURATION:?}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("switchyard demo: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(main(options))
}

/// What `--keep` prints: how to reach what stays running.
struct Kept {
    lines: Vec<String>,
}

async fn main(options: Options) -> ExitCode {
    let setup = async {
        options.engine.check_installed()?;
        let owner = options.engine.account().await?;
        let name = match options.engine {
            Engine::Postgres => "postgres",
            Engine::Mysql => "mysql",
        };
        Scratch::create(name, owner)
    };
    let scratch = match setup.await {
        Ok(scratch) => scratch,
        Err(e) => {
            eprintln!("switchyard demo: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let processes = Processes::new(!options.keep);
    let kept = Mutex::new(None);
    let (result, interrupted) = tokio::select! {
        result = demo(&options, &scratch, &processes, &kept) => (Some(result), None),
        signal = interrupted() => (None, Some(signal)),
    };
    let code = match &result {
        Some(Ok(summary)) if summary.passed() => ExitCode::SUCCESS,
        Some(Ok(_)) => ExitCode::FAILURE,
        Some(Err(e)) => {
            eprintln!("\nswitchyard demo: {e:#}");
            ExitCode::FAILURE
        }
        None => ExitCode::from(130),
    };
    if let Some(signal) = interrupted {
        eprintln!("\nswitchyard demo: {signal}");
    }
    let failed = !matches!(&result, Some(Ok(s)) if s.passed());
    let switchyard_log = scratch.path().join("switchyard.log");
    if failed && result.is_some() && switchyard_log.exists() {
        eprintln!("{}", log_tail(&switchyard_log));
    }
    let kept = kept.into_inner().unwrap_or_else(PoisonError::into_inner);
    match kept {
        Some(kept) if options.keep => leave_running(&scratch, &processes, kept),
        _ => clean_up(&scratch, &processes).await,
    }
    code
}

/// Completes on Ctrl-C, SIGTERM or SIGHUP (a closed terminal), naming it.
async fn interrupted() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut hangup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) else {
        // Without the handlers, only Ctrl-C is caught.
        return match tokio::signal::ctrl_c().await {
            Ok(()) => "interrupted",
            Err(_) => std::future::pending().await,
        };
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "interrupted",
        _ = term.recv() => "terminated",
        _ = hangup.recv() => "hung up",
    }
}

async fn clean_up(scratch: &Scratch, processes: &Processes) {
    println!("\nStopping the servers and switchyard …");
    processes.stop_all().await;
    match scratch.remove() {
        Ok(()) => println!("Stopped, and {} removed.", scratch.path().display()),
        Err(e) => eprintln!("switchyard demo: {e:#}"),
    }
}

fn leave_running(scratch: &Scratch, processes: &Processes, kept: Kept) {
    let script = scratch.path().join(STOP_SCRIPT);
    let written = std::fs::write(&script, processes.leave_running(scratch.path()));
    println!("\nStill running (--keep):");
    for line in kept.lines {
        println!("  {line}");
    }
    match written {
        Ok(()) => println!("  {:<20}sh {}", "stop everything", script.display()),
        Err(e) => eprintln!(
            "switchyard demo: could not write {}: {e}; stop the processes by hand",
            script.display()
        ),
    }
}

/// The whole timeline; returns the report once it is printed.
async fn demo(
    options: &Options,
    scratch: &Scratch,
    processes: &Processes,
    kept: &Mutex<Option<Kept>>,
) -> Result<Summary> {
    let dir = scratch.path();
    println!(
        "switchyard demo: moving an application from an old to a new {} cluster under load, \
         with no downtime\n",
        match options.engine {
            Engine::Postgres => "PostgreSQL",
            Engine::Mysql => "MySQL-protocol (MariaDB)",
        }
    );
    let started = Instant::now();
    println!("Starting 4 servers in {} …", dir.display());
    let clusters = Clusters::start(options.engine, dir, processes, load::SESSIONS).await?;
    let instances = clusters.instances();
    println!(
        "  {} ready in {:.1} s",
        clusters.version(),
        started.elapsed().as_secs_f64()
    );
    for pair in instances.chunks(2) {
        println!(
            "  {:<12} {:<17} {:<12} {}",
            pair[0].name, pair[0].addr, pair[1].name, pair[1].addr
        );
    }
    println!("  {}", clusters.replication());

    let token = format!("{:016x}", rand::random::<u64>());
    let proxy = proxy::start(&clusters.plan(token.clone()), dir, processes).await?;
    println!(
        "\nswitchyard is serving on {} (admin API {}, pool_mode {}); active cluster: old",
        proxy.addr,
        proxy.admin_url(),
        proxy.pool_mode
    );
    if !proxy.cutover_configured {
        println!(
            "  note: this build's config has no [cutover] section yet; the demo runs without it"
        );
    }
    *kept.lock().unwrap_or_else(PoisonError::into_inner) =
        Some(keep_lines(&clusters, &proxy, &token));

    let stats = Arc::new(Stats::new());
    let mut watch = Watch::new(proxy.admin.clone(), instances.to_vec(), Arc::clone(&stats));
    let baseline = watch.sample().await;
    println!(
        "\n{} application sessions ({} reading, {} writing) for {:?}; the cutover to new \
         starts at {:?}\n",
        load::SESSIONS,
        load::READ_SESSIONS,
        load::WRITE_SESSIONS,
        options.duration,
        options.duration / 2
    );
    println!("{}", watch.header());
    watch.start_from(baseline.clone());
    let run = run_application(options, &proxy, &stats, &mut watch).await;

    println!("\nChecking every acknowledged write on new-writer …");
    let switched = matches!(run.cutover, Outcome::Switched(_));
    let writes = verify(&clusters, &run.ledger, switched).await;
    let summary = Summary {
        server_version: clusters.version().to_owned(),
        sessions: load::SESSIONS,
        ran: run.ran,
        statements: Stats::count(&stats.statements),
        p99: {
            stats.interval.drain_into(&stats.total);
            stats.total.quantile(0.99)
        },
        errors: Stats::count(&stats.errors),
        error_texts: stats.error_texts(),
        write_transactions: Stats::count(&stats.write_transactions),
        read_your_writes_checks: Stats::count(&stats.read_your_writes_checks),
        read_your_writes_misses: Stats::count(&stats.read_your_writes_misses),
        writes,
        cutover: run.cutover,
        cutover_at: Some(run.cutover_at),
        slowest_during_cutover: stats.slowest_during_cutover(),
        instances: instances.to_vec(),
        before: difference(&run.before, &baseline.per_instance),
        after: difference(&run.end, &run.after),
        pool_mode: proxy.pool_mode.to_owned(),
        client_connections: run.client_connections.map(|n| n as u64),
        pools: run.pools,
        metrics_url: format!("{}/metrics", proxy.admin_url()),
    };
    print!("{}", summary.render());
    Ok(summary)
}

/// What happened while the application ran.
struct Run {
    ledger: load::Ledger,
    ran: Duration,
    cutover: Outcome,
    /// When the cutover was requested, since the load started.
    cutover_at: Duration,
    /// Statements per instance when the cutover was requested, when it ended, and at the end.
    before: PerInstance,
    after: PerInstance,
    end: PerInstance,
    /// Backend connections per instance at the end, once the application disconnected.
    pools: PoolsByInstance,
    /// Client connections switchyard accepted in all.
    client_connections: Option<f64>,
}

/// Runs the application for the whole duration, printing progress every second, and asks
/// for the cutover halfway.
async fn run_application(
    options: &Options,
    proxy: &proxy::Proxy,
    stats: &Arc<Stats>,
    watch: &mut Watch,
) -> Run {
    let (stop_load, stop) = switchyard::shutdown::channel();
    let load = Load::start(options.engine, proxy.addr, stats, &stop);
    let started = Instant::now();
    let deadline = started + options.duration;
    let cutover = async {
        tokio::time::sleep_until((started + options.duration / 2).into()).await;
        let before = metrics(&proxy.admin).await;
        let at = started.elapsed();
        stats.cutover_started(Instant::now());
        println!(
            "{:>5.0}s   cutover requested: POST /v1/cutover {{\"to\": \"new\"}} (a dry run first)",
            at.as_secs_f64()
        );
        let outcome = cutover::run(&proxy.admin, "new").await;
        stats.cutover_ended(Instant::now());
        let after = metrics(&proxy.admin).await;
        println!(
            "{:>5.0}s   cutover: {}",
            started.elapsed().as_secs_f64(),
            short(&outcome)
        );
        (outcome, at, before, after)
    };
    let progress = async {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await; // the first tick is immediate
        while Instant::now() + Duration::from_millis(500) < deadline {
            tick.tick().await;
            let sample = watch.sample().await;
            println!("{}", watch.line(sample));
        }
        tokio::time::sleep_until(deadline.into()).await;
    };
    let ((cutover, cutover_at, before, after), ()) = tokio::join!(cutover, progress);
    stop_load.trigger();
    let ledger = load.finish().await;
    let ran = started.elapsed();
    let end = metrics_text(&proxy.admin).await;
    Run {
        ledger,
        ran,
        cutover,
        cutover_at,
        before,
        after,
        end: end.as_deref().map(queries_by_instance).unwrap_or_default(),
        pools: end.as_deref().map(pools_by_instance).unwrap_or_default(),
        client_connections: end.as_deref().and_then(client_connections),
    }
}

/// The cutover's outcome in a few words, for the progress lines.
fn short(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Switched(r) => format!(
            "switched {} -> {}, new transactions held {}",
            r.from,
            r.to,
            r.pause_ms
                .map(|ms| format!("{ms:.1} ms"))
                .unwrap_or_else(|| "? ms".into())
        ),
        Outcome::Aborted(r) => format!(
            "{}: {}",
            if r.dry_run {
                "dry run refused"
            } else {
                "ABORTED"
            },
            r.error.as_deref().unwrap_or("no reason given")
        ),
        Outcome::Passed(_) => "only the dry run ran".into(),
        Outcome::Unavailable(why) | Outcome::Failed(why) => format!("did not run: {why}"),
    }
}

/// Statements per instance so far (empty when `/metrics` does not answer).
async fn metrics(admin: &Admin) -> PerInstance {
    metrics_text(admin)
        .await
        .as_deref()
        .map(queries_by_instance)
        .unwrap_or_default()
}

/// switchyard's `/metrics` now, `None` when it does not answer.
async fn metrics_text(admin: &Admin) -> Option<String> {
    let admin = admin.clone();
    proxy::blocking(move || admin.get_text("/metrics"))
        .await
        .ok()
}

fn difference(now: &PerInstance, then: &PerInstance) -> PerInstance {
    now.iter()
        .map(|(k, v)| (k.clone(), v - then.get(k).copied().unwrap_or(0.0)))
        .collect()
}

/// Looks for every acknowledged write on the new writer. Without a cutover the new writer
/// only has what replication brought, so the check first waits for it to catch up.
async fn verify(clusters: &Clusters, ledger: &load::Ledger, switched: bool) -> Verification {
    let writer = clusters.new_writer();
    let mut v = Verification {
        on: format!("{} {}", writer.name, writer.addr),
        acknowledged: ledger.ids.len(),
        ..Verification::default()
    };
    let read = async {
        if !switched {
            clusters
                .wait_caught_up()
                .await
                .context("wait for replication to catch up")?;
        }
        clusters.ledger().await
    };
    let (ids, counters) = match read.await {
        Ok(found) => found,
        Err(e) => {
            v.error = Some(format!("{e:#}"));
            return v;
        }
    };
    let missing: Vec<i64> = ledger
        .ids
        .iter()
        .copied()
        .filter(|id| !ids.contains(id))
        .collect();
    v.found = v.acknowledged - missing.len();
    v.missing = missing.into_iter().take(5).collect();
    for &(session, acknowledged) in &ledger.transactions {
        if acknowledged == 0 {
            continue;
        }
        v.counters_checked += 1;
        let found = counters.get(&session).copied().unwrap_or(0);
        if found < acknowledged {
            v.short_counters.push((session, acknowledged, found));
        }
    }
    v
}

/// How to reach everything, for `--keep`.
fn keep_lines(clusters: &Clusters, proxy: &proxy::Proxy, token: &str) -> Kept {
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "switchyard".into());
    let addr = proxy.addr.to_string();
    let admin = proxy.admin_url();
    let mut lines = vec![
        format!(
            "{:<20}{}",
            "through switchyard",
            clusters.client_command(&addr, true)
        ),
        format!("{:<20}{admin}  (token {token})", "admin API"),
        format!("{:<20}{exe} status --admin {admin}", ""),
        format!(
            "{:<20}{exe} pause | resume | read-only on --cluster old --admin {admin} --token {token}",
            ""
        ),
        format!("{:<20}curl -s {admin}/metrics | grep switchyard_", ""),
    ];
    for instance in clusters.instances() {
        lines.push(format!(
            "{:<20}{}",
            instance.name,
            clusters.client_command(&instance.addr, false)
        ));
    }
    lines.push(format!(
        "{:<20}{} (its log: switchyard.log beside it; one log per server)",
        "switchyard config",
        proxy.config.display()
    ));
    Kept { lines }
}
