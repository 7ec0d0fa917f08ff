//! `[auth]`: authentication pass-through for users not listed in `[[users]]` — a dedicated
//! account looks up a user's password verifier on the active cluster's writer (PgBouncer's
//! `auth_query`), cached for a while.

use std::time::Duration;

use serde::Deserialize;

use super::{Config, Protocol, resolve_secret};

/// PostgreSQL's default lookup, as PgBouncer's: `pg_shadow` lists roles that can log in.
pub const DEFAULT_POSTGRES_QUERY: &str = "SELECT usename, passwd FROM pg_shadow WHERE usename=$1";
/// MySQL/MariaDB's default lookup: the account's hash (`*HEX` for mysql_native_password).
/// Several rows (one per host pattern) may match; `'%'` is preferred.
pub const DEFAULT_MYSQL_QUERY: &str = "SELECT user, authentication_string FROM mysql.user \
     WHERE user = ? ORDER BY host = '%' DESC LIMIT 1";

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// The account that runs `query` (PostgreSQL: a superuser, or a role allowed to call a
    /// SECURITY DEFINER function over `pg_shadow`; MySQL: SELECT on `mysql.user`).
    pub query_user: String,
    pub query_password: Option<String>,
    pub query_password_env: Option<String>,
    /// Database `query_user` connects to (PostgreSQL default: `postgres`; MySQL: none).
    pub query_database: Option<String>,
    /// Takes the user name as its one parameter (`$1` / `?`); its first row's second column
    /// is the verifier. Default: [`DEFAULT_POSTGRES_QUERY`] / [`DEFAULT_MYSQL_QUERY`].
    pub query: Option<String>,
    /// How long a verifier that was found is used before it is looked up again.
    #[serde(default = "defaults::cache_ttl", with = "humantime_serde")]
    pub cache_ttl: Duration,
    /// How long "no such user" is remembered.
    #[serde(default = "defaults::negative_cache_ttl", with = "humantime_serde")]
    pub negative_cache_ttl: Duration,
}

mod defaults {
    use std::time::Duration;
    pub fn cache_ttl() -> Duration {
        Duration::from_secs(60)
    }
    pub fn negative_cache_ttl() -> Duration {
        Duration::from_secs(5)
    }
}

/// `[auth]` with its secret resolved and its defaults filled in.
#[derive(Clone)]
pub struct AuthQuery {
    pub user: String,
    pub password: Option<String>,
    pub database: Option<String>,
    pub query: String,
    pub cache_ttl: Duration,
    pub negative_cache_ttl: Duration,
}

impl std::fmt::Debug for AuthQuery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthQuery")
            .field("user", &self.user)
            .field("database", &self.database)
            .field("query", &self.query)
            .field("cache_ttl", &self.cache_ttl)
            .field("negative_cache_ttl", &self.negative_cache_ttl)
            .finish_non_exhaustive()
    }
}

pub(super) fn validate_auth(
    raw: &Config,
    env: &dyn Fn(&str) -> Option<String>,
    problem: &mut dyn FnMut(String, String),
) -> Option<AuthQuery> {
    let a = raw.auth.as_ref()?;
    let at = |key: &str| format!("auth.{key}");
    if a.query_user.is_empty() {
        problem(at("query_user"), "must not be empty".into());
    }
    let password = resolve_secret(
        &a.query_password,
        &a.query_password_env,
        "query_password",
        env,
    )
    .unwrap_or_else(|(key, message)| {
        problem(at(&key), message);
        None
    });
    let protocol = raw.server.protocol;
    let query = a.query.clone().unwrap_or_else(|| {
        match protocol {
            Protocol::Postgres => DEFAULT_POSTGRES_QUERY,
            Protocol::Mysql => DEFAULT_MYSQL_QUERY,
        }
        .to_owned()
    });
    let placeholder = match protocol {
        Protocol::Postgres => "$1",
        Protocol::Mysql => "?",
    };
    if !query.contains(placeholder) {
        problem(
            at("query"),
            format!("must take the user name as its parameter {placeholder}"),
        );
    }
    if a.negative_cache_ttl > a.cache_ttl {
        problem(
            at("negative_cache_ttl"),
            "must not be longer than cache_ttl".into(),
        );
    }
    Some(AuthQuery {
        user: a.query_user.clone(),
        password,
        database: a.query_database.clone().filter(|d| !d.is_empty()),
        query,
        cache_ttl: a.cache_ttl,
        negative_cache_ttl: a.negative_cache_ttl,
    })
}

#[cfg(test)]
mod tests {
    use super::super::{Config, Problem, Validated, validate};

    const BASE: &str = r#"
        [server]
        protocol = "PROTOCOL"
        listen = "127.0.0.1:6432"

        [clusters.main]
        writer = "127.0.0.1:5432"

        [routing]
        active = "main"
    "#;

    fn check(protocol: &str, auth: &str) -> Result<Validated, Vec<Problem>> {
        let text = format!("{}\n[auth]\n{auth}", BASE.replace("PROTOCOL", protocol));
        let raw: Config = toml::from_str(&text).expect("parse");
        validate(raw, &|name| (name == "SET_VAR").then(|| "value".to_owned()))
    }

    #[test]
    fn defaults_per_protocol_and_no_users_needed() {
        let v = check("postgres", "query_user = \"pgbouncer\"").expect("valid");
        let a = v.auth_query.expect("auth query");
        assert_eq!(a.query, super::DEFAULT_POSTGRES_QUERY);
        assert_eq!(a.cache_ttl.as_secs(), 60);
        assert_eq!(a.negative_cache_ttl.as_secs(), 5);
        let v = check(
            "mysql",
            "query_user = \"q\"\nquery_password_env = \"SET_VAR\"\ncache_ttl = \"0s\"\nnegative_cache_ttl = \"0s\"",
        )
        .expect("valid");
        let a = v.auth_query.expect("auth query");
        assert_eq!(a.query, super::DEFAULT_MYSQL_QUERY);
        assert_eq!(a.password.as_deref(), Some("value"));
    }

    #[test]
    fn routes_may_name_users_that_only_the_lookup_knows() {
        let route = "\n[[routing.routes]]\nuser = \"created_later\"\nconsistency = \"eventual\"\n";
        let base = BASE.replace("PROTOCOL", "postgres");
        let without: Config = toml::from_str(&format!("{base}{route}")).expect("parse");
        let problems = validate(without, &|_| None).expect_err("an unknown user");
        assert!(problems.iter().any(|p| p.path == "routing.routes[0].user"));
        let with = format!("{base}{route}\n[auth]\nquery_user = \"q\"\n");
        let raw: Config = toml::from_str(&with).expect("parse");
        assert!(validate(raw, &|_| None).is_ok());
    }

    #[test]
    fn problems_are_reported_with_their_keys() {
        let problems = check(
            "postgres",
            "query_user = \"\"\nquery_password = \"x\"\nquery_password_env = \"SET_VAR\"\n\
             query = \"SELECT 1, 2\"\ncache_ttl = \"1s\"\nnegative_cache_ttl = \"2s\"",
        )
        .expect_err("invalid");
        let paths: Vec<_> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "auth.query_user",
                "auth.query_password",
                "auth.query",
                "auth.negative_cache_ttl"
            ]
        );
        let problems = check("mysql", "query_user = \"q\"\nquery = \"SELECT $1\"")
            .expect_err("a PostgreSQL placeholder in a MySQL query");
        assert_eq!(problems[0].path, "auth.query");
    }
}
