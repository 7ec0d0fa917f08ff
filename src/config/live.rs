//! What a reload (SIGHUP, `POST /v1/reload`) may change in a running proxy, and the keys it
//! must refuse because only a restart can apply them: a reload that touches one changes
//! nothing at all.
//!
//! Live: users and passwords, readers and their weights, limits and timeouts (the pool's
//! too, from its next checkout), routes and consistency, the log level, discovery and
//! health-check settings. Fixed: the listen addresses, the protocol, client TLS, the admin
//! section, the log format, the set of clusters and each one's writer and TLS, the routing
//! state (`active`, `read_only`, `max_pause`, `state_dir`, which the cutover controller
//! owns), `[cutover]` and `[fleet]`.

use super::{Config, Problem};

/// Every key whose value differs between `old` and `new` but cannot change while the
/// proxy runs; empty when `new` can be applied live.
pub fn fixed_changes(old: &Config, new: &Config) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut fixed = |path: &str, changed: bool| {
        if changed {
            problems.push(Problem {
                path: path.to_owned(),
                message: "cannot change while the proxy runs (restart it to apply this); \
                          the running config is kept"
                    .to_owned(),
            });
        }
    };
    let (o, n) = (&old.server, &new.server);
    fixed("server.protocol", o.protocol != n.protocol);
    fixed("server.listen", o.listen != n.listen);
    fixed("server.tls_mode", o.tls_mode != n.tls_mode);
    fixed("server.tls_cert", o.tls_cert != n.tls_cert);
    fixed("server.tls_key", o.tls_key != n.tls_key);
    fixed("server.log_format", o.log_format != n.log_format);
    fixed(
        "server.worker_threads",
        o.worker_threads != n.worker_threads,
    );
    fixed("admin", old.admin != new.admin);

    let names = |c: &Config| c.clusters.keys().cloned().collect::<Vec<_>>();
    fixed("clusters", names(old) != names(new));
    for (name, o) in &old.clusters {
        let Some(n) = new.clusters.get(name) else {
            continue;
        };
        let at = |key: &str| format!("clusters.{name}.{key}");
        fixed(&at("writer"), o.writer != n.writer);
        fixed(&at("tls"), o.tls != n.tls);
        fixed(&at("ca_file"), o.ca_file != n.ca_file);
    }

    let (o, n) = (&old.routing, &new.routing);
    fixed("routing.active", o.active != n.active);
    fixed("routing.read_only", o.read_only != n.read_only);
    fixed("routing.max_pause", o.max_pause != n.max_pause);
    fixed("routing.state_dir", o.state_dir != n.state_dir);
    fixed("cutover", old.cutover != new.cutover);
    fixed("fleet", old.fleet != new.fleet);
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
        [server]
        protocol = "postgres"
        listen = "127.0.0.1:6432"
        [admin]
        listen = "127.0.0.1:9187"
        token = "t"
        [[users]]
        name = "app"
        password = "one"
        [clusters.main]
        writer = "127.0.0.1:5432"
        readers = ["127.0.0.1:5433"]
        [routing]
        active = "main"
    "#;

    fn changes(edit: impl Fn(&str) -> String) -> Vec<String> {
        let old: Config = toml::from_str(BASE).expect("base parses");
        let new: Config = toml::from_str(&edit(BASE)).expect("edit parses");
        fixed_changes(&old, &new)
            .into_iter()
            .map(|p| p.path)
            .collect()
    }

    #[test]
    fn live_keys_change_without_a_restart() {
        let edits: [&dyn Fn(&str) -> String; 5] = [
            &|t| t.replace("password = \"one\"", "password = \"two\""),
            &|t| {
                t.replace(
                    "[\"127.0.0.1:5433\"]",
                    "[\"127.0.0.1:5433\", \"127.0.0.1:5434\"]",
                )
            },
            &|t| {
                t.replace("listen = \"127.0.0.1:6432\"", "listen = \"127.0.0.1:6432\"\nmax_client_connections = 5\nlog_level = \"debug\"\npool_size = 3\nidle_timeout = \"1m\"\nmax_lifetime = \"2h\"\ncheckout_timeout = \"1s\"\nmin_idle = 2\nmax_backend_connections = 40")
            },
            &|t| t.replace("[routing]", "[routing]\nread_write_split = false"),
            &|t| {
                t.replace(
                    "readers = [",
                    "reader_weights = { \"127.0.0.1:5433\" = 3 }\nreaders = [",
                )
            },
        ];
        for edit in edits {
            assert_eq!(changes(edit), Vec::<String>::new());
        }
    }

    #[test]
    fn fixed_keys_are_named() {
        assert_eq!(
            changes(|t| t
                .replace("6432", "6433")
                .replace("\"postgres\"", "\"mysql\"")),
            ["server.protocol", "server.listen"]
        );
        assert_eq!(
            changes(|t| t.replace("5432\"", "5440\"")),
            ["clusters.main.writer"]
        );
        assert_eq!(
            changes(|t| t.replace("token = \"t\"", "token = \"u\"")),
            ["admin"]
        );
        assert_eq!(
            changes(|t| t.replace("[routing]", "[clusters.other]\nwriter = \"h:1\"\n[routing]")),
            ["clusters"]
        );
    }
}
