//! `[routing]`: the active cluster, the read/write split, pauses, and what a session's reads
//! see after its own writes (`consistency`), globally and per route (`[[routing.routes]]`,
//! matched on the client's user and database).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{Config, PoolMode};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingConfig {
    pub active: String,
    /// Send reads to readers (true) or everything to the writer (false).
    #[serde(default = "defaults::yes")]
    pub read_write_split: bool,
    /// Clusters that start read-only (a recorded state, when there is one, takes precedence).
    #[serde(default)]
    pub read_only: Vec<String>,
    /// What a session reads after its own writes, unless a route says otherwise. Default:
    /// `session`; `eventual` when `read_your_writes = "0s"` (what that meant before).
    pub consistency: Option<Consistency>,
    /// Sessions with `consistency = "session"` send their reads to the writer for at least
    /// this long after they write, longer while the replicas lag (measured lag plus margin).
    #[serde(default = "defaults::read_your_writes", with = "humantime_serde")]
    pub read_your_writes: Duration,
    /// Per-client exceptions to `consistency`; the first that matches a session decides.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// A pause longer than this ends by itself.
    #[serde(default = "defaults::max_pause", with = "humantime_serde")]
    pub max_pause: Duration,
    /// Where the routing state is recorded, so a restart keeps read-only modes and the
    /// active cluster. Without it the state lives in memory only.
    pub state_dir: Option<PathBuf>,
}

/// What a session's reads may miss of its own writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Consistency {
    /// Reads go to replicas right after a write, and may not see it yet.
    Eventual,
    /// Read-your-writes: after a write, reads go to the writer until the replicas have it.
    Session,
}

impl Consistency {
    pub fn as_str(self) -> &'static str {
        match self {
            Consistency::Eventual => "eventual",
            Consistency::Session => "session",
        }
    }
}

/// `[[routing.routes]]`: the sessions of a client user and/or database, and what they get.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// A `[[users]]` name, as the client logs in.
    pub user: Option<String>,
    /// The database the client asks for at login.
    pub database: Option<String>,
    /// Unset: `routing.consistency`.
    pub consistency: Option<Consistency>,
    /// Unset: `server.pool_mode`.
    pub pool_mode: Option<PoolMode>,
}

impl RouteConfig {
    /// Whether a session of `user` on `database` is one of this route's.
    pub fn matches(&self, user: &str, database: Option<&str>) -> bool {
        let user_fits = self.user.as_deref().is_none_or(|u| u == user);
        let database_fits = self.database.as_deref().is_none_or(|d| Some(d) == database);
        user_fits && database_fits
    }

    /// Whether every session this route matches is also matched by `earlier`.
    fn covered_by(&self, earlier: &RouteConfig) -> bool {
        let covers =
            |earlier: &Option<String>, this: &Option<String>| earlier.is_none() || earlier == this;
        covers(&earlier.user, &self.user) && covers(&earlier.database, &self.database)
    }
}

impl RoutingConfig {
    /// What sessions that no route matches get.
    pub fn default_consistency(&self) -> Consistency {
        self.consistency
            .unwrap_or(if self.read_your_writes.is_zero() {
                Consistency::Eventual
            } else {
                Consistency::Session
            })
    }

    /// What a session of `user` (the client's login name) on `database` gets: the first
    /// matching route's consistency, else the default.
    pub fn consistency_for(&self, user: &str, database: Option<&str>) -> Consistency {
        self.route_for(user, database, |r| r.consistency)
            .unwrap_or_else(|| self.default_consistency())
    }

    /// How long a session of `user` on `database` holds its backend connections: the
    /// first matching route's `pool_mode`, else `server` (`server.pool_mode`).
    pub fn pool_mode_for(&self, user: &str, database: Option<&str>, server: PoolMode) -> PoolMode {
        self.route_for(user, database, |r| r.pool_mode)
            .unwrap_or(server)
    }

    /// What the first route that matches a session and says something about `key` says.
    fn route_for<T>(
        &self,
        user: &str,
        database: Option<&str>,
        key: impl Fn(&RouteConfig) -> Option<T>,
    ) -> Option<T> {
        self.routes
            .iter()
            .filter(|r| r.matches(user, database))
            .find_map(key)
    }
}

mod defaults {
    use std::time::Duration;
    pub fn yes() -> bool {
        true
    }
    pub fn read_your_writes() -> Duration {
        Duration::from_secs(1)
    }
    pub fn max_pause() -> Duration {
        Duration::from_secs(5)
    }
}

/// Reports what in `[routing]` names something the config does not have, or cannot work.
pub(super) fn validate_routing(raw: &Config, problem: &mut dyn FnMut(String, String)) {
    let routing = &raw.routing;
    for (i, name) in routing.read_only.iter().enumerate() {
        if !raw.clusters.contains_key(name) {
            problem(
                format!("routing.read_only[{i}]"),
                format!("no cluster named {name:?}"),
            );
        }
    }
    if routing.max_pause.is_zero() {
        problem(
            "routing.max_pause".into(),
            "must be longer than zero".into(),
        );
    }
    if !raw.clusters.contains_key(&routing.active) {
        let known: Vec<_> = raw.clusters.keys().map(String::as_str).collect();
        problem(
            "routing.active".into(),
            format!(
                "names cluster {:?}, but the clusters are: {}",
                routing.active,
                known.join(", ")
            ),
        );
    }
    for (i, route) in routing.routes.iter().enumerate() {
        let at = |key: &str| format!("routing.routes[{i}]{key}");
        if route.user.is_none() && route.database.is_none() {
            problem(
                at(""),
                "needs user, database or both (routing.consistency is for every session)".into(),
            );
            continue;
        }
        match route.user.as_deref() {
            Some("") => problem(at(".user"), "must not be empty".into()),
            // With [auth], users not listed log in too.
            Some(user) if raw.auth.is_none() && !raw.users.iter().any(|u| u.name == user) => {
                problem(at(".user"), format!("no [[users]] entry is named {user:?}"))
            }
            _ => {}
        }
        if route.database.as_deref() == Some("") {
            problem(at(".database"), "must not be empty".into());
        }
        if route.consistency.is_none() && route.pool_mode.is_none() {
            problem(
                at(""),
                "says nothing: set consistency, pool_mode or both".into(),
            );
        }
        // A route without matchers is reported above; it shadows nothing more. An earlier
        // route shadows a later one only for the keys it sets too.
        let shadows = |e: &RouteConfig| {
            (e.user.is_some() || e.database.is_some())
                && route.covered_by(e)
                && (route.consistency.is_none() || e.consistency.is_some())
                && (route.pool_mode.is_none() || e.pool_mode.is_some())
        };
        if let Some(j) = routing.routes[..i].iter().position(shadows) {
            problem(
                at(""),
                format!(
                    "never matches: routing.routes[{j}] comes first and matches all its sessions"
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(user: Option<&str>, database: Option<&str>, consistency: Consistency) -> RouteConfig {
        RouteConfig {
            user: user.map(str::to_owned),
            database: database.map(str::to_owned),
            consistency: Some(consistency),
            pool_mode: None,
        }
    }

    fn routing(
        consistency: Option<Consistency>,
        read_your_writes: Duration,
        routes: Vec<RouteConfig>,
    ) -> RoutingConfig {
        RoutingConfig {
            active: "main".into(),
            read_write_split: true,
            read_only: Vec::new(),
            consistency,
            read_your_writes,
            routes,
            max_pause: defaults::max_pause(),
            state_dir: None,
        }
    }

    #[test]
    fn the_default_follows_read_your_writes_unless_set() {
        use Consistency::*;
        let secs = Duration::from_secs;
        let cases = [
            (None, secs(1), Session),
            (None, secs(0), Eventual),
            (Some(Session), secs(0), Session),
            (Some(Eventual), secs(1), Eventual),
        ];
        for (set, ryw, want) in cases {
            let r = routing(set, ryw, Vec::new());
            assert_eq!(r.default_consistency(), want, "{set:?} {ryw:?}");
            assert_eq!(r.consistency_for("app", Some("app")), want);
        }
    }

    #[test]
    fn the_first_matching_route_decides() {
        use Consistency::*;
        let r = routing(
            Some(Session),
            Duration::from_secs(1),
            vec![
                route(Some("report"), Some("app"), Session),
                route(Some("report"), None, Eventual),
                route(None, Some("analytics"), Eventual),
            ],
        );
        let cases = [
            ("report", Some("app"), Session),
            ("report", Some("other"), Eventual),
            ("report", None, Eventual),
            ("app", Some("analytics"), Eventual),
            ("app", Some("app"), Session),
            ("app", None, Session),
        ];
        for (user, database, want) in cases {
            assert_eq!(
                r.consistency_for(user, database),
                want,
                "{user} {database:?}"
            );
        }
    }

    #[test]
    fn each_key_comes_from_the_first_matching_route_that_sets_it() {
        use PoolMode::*;
        let mut pooled = route(Some("report"), None, Consistency::Eventual);
        pooled.consistency = None;
        pooled.pool_mode = Some(Session);
        let r = routing(
            None,
            Duration::from_secs(1),
            vec![pooled, route(Some("report"), None, Consistency::Eventual)],
        );
        assert_eq!(r.pool_mode_for("report", None, Transaction), Session);
        assert_eq!(r.pool_mode_for("app", None, Transaction), Transaction);
        assert_eq!(r.pool_mode_for("app", None, Session), Session);
        assert_eq!(r.consistency_for("report", None), Consistency::Eventual);
        assert_eq!(r.consistency_for("app", None), Consistency::Session);
    }

    #[test]
    fn a_route_is_covered_by_an_earlier_one_that_matches_all_it_matches() {
        use Consistency::*;
        let user_only = route(Some("a"), None, Eventual);
        let both = route(Some("a"), Some("d"), Session);
        let db_only = route(None, Some("d"), Session);
        assert!(both.covered_by(&user_only));
        assert!(both.covered_by(&db_only));
        assert!(both.covered_by(&both));
        assert!(!user_only.covered_by(&both));
        assert!(!db_only.covered_by(&user_only));
        assert!(!route(Some("b"), Some("d"), Session).covered_by(&both));
    }

    #[test]
    fn check_reports_routes_that_cannot_work() {
        let text = r#"
            [server]
            protocol = "postgres"
            listen = "127.0.0.1:6432"

            [[users]]
            name = "app"
            password = "app-secret"

            [[users]]
            name = "report"
            password = "report-secret"

            [clusters.main]
            writer = "127.0.0.1:5432"

            [routing]
            active = "main"
            consistency = "session"

            [[routing.routes]]
            user = "report"
            consistency = "eventual"

            [[routing.routes]]
            consistency = "eventual"

            [[routing.routes]]
            user = "nobody"
            database = ""
            consistency = "eventual"

            [[routing.routes]]
            user = "report"
            database = "app"
            consistency = "session"

            [[routing.routes]]
            database = "analytics"
            consistency = "eventual"

            [[routing.routes]]
            database = "quiet"

            [[routing.routes]]
            user = "report"
            database = "app"
            pool_mode = "session"
        "#;
        let raw: Config = toml::from_str(text).expect("parse");
        let problems = super::super::validate(raw, &|_| None).expect_err("invalid");
        let paths: Vec<_> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "routing.routes[1]",
                "routing.routes[2].user",
                "routing.routes[2].database",
                "routing.routes[3]",
                "routing.routes[5]",
            ],
            "{problems:?}"
        );
        assert!(
            problems[3].message.contains("routing.routes[0]"),
            "{}",
            problems[3]
        );
    }
}
