//! `[[users]]`: the accounts clients log in with, checked and resolved (secrets from the
//! config, the environment or files; the method each one fits; the backend login).

use super::{AuthMethod, Config, Secret, User, resolve_secret};

/// Each `[[users]]` entry checked, its secrets resolved; problems go to `problem`.
pub(super) fn validate_users(
    raw: &Config,
    env: &dyn Fn(&str) -> Option<String>,
    problem: &mut dyn FnMut(String, String),
) -> Vec<User> {
    let mut users = Vec::new();
    for (i, u) in raw.users.iter().enumerate() {
        let at = |key: &str| format!("users[{i}].{key}");
        if u.name.is_empty() {
            problem(at("name"), "must not be empty".into());
        }
        if raw.users[..i].iter().any(|other| other.name == u.name) {
            problem(at("name"), format!("user {:?} is listed twice", u.name));
        }
        let password = resolve_secret(&u.password, &u.password_env, "password", env)
            .unwrap_or_else(|(key, message)| {
                problem(at(&key), message);
                None
            });
        let secret = match password {
            None => Secret::None,
            Some(p) if p.starts_with("SCRAM-SHA-256$") => Secret::ScramVerifier(p),
            Some(p) => Secret::Plain(p),
        };
        let protocol = raw.server.protocol;
        let auth = u.auth.unwrap_or(AuthMethod::default_for(protocol));
        if !auth.fits(protocol) {
            problem(
                at("auth"),
                format!(
                    "\"{}\" is not a method of protocol {protocol:?}",
                    auth.as_str()
                ),
            );
        }
        match (auth, &secret) {
            (AuthMethod::Trust, _) => {}
            (_, Secret::None) => problem(
                at("password"),
                format!(
                    "auth = \"{}\" needs password or password_env",
                    auth.as_str()
                ),
            ),
            (
                AuthMethod::MysqlNativePassword | AuthMethod::CachingSha2Password,
                Secret::ScramVerifier(_),
            ) => problem(
                at("auth"),
                "MySQL authentication needs the plain password".into(),
            ),
            (AuthMethod::Md5, Secret::ScramVerifier(_)) => problem(
                at("auth"),
                "md5 needs the plain password, not a SCRAM verifier".into(),
            ),
            (AuthMethod::ScramSha256, Secret::ScramVerifier(v))
                if crate::protocol::postgres::scram::Verifier::parse(v).is_none() =>
            {
                problem(at("password"), "malformed SCRAM-SHA-256 verifier".into())
            }
            _ => {}
        }
        let backend_password = resolve_secret(
            &u.backend_password,
            &u.backend_password_env,
            "backend_password",
            env,
        )
        .unwrap_or_else(|(key, message)| {
            problem(at(&key), message);
            None
        })
        .or_else(|| match &secret {
            Secret::Plain(p) => Some(p.clone()),
            _ => None,
        });
        users.push(User {
            name: u.name.clone(),
            auth,
            secret,
            backend_user: u.backend_user.clone().unwrap_or_else(|| u.name.clone()),
            backend_password,
        });
    }
    users
}
