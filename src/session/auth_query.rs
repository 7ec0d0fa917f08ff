//! Looks up the password verifier of a user not listed in `[[users]]` on the active
//! cluster's writer, with the `[auth]` account and query (PgBouncer's `auth_query`), and
//! caches the answer for `cache_ttl` (a miss for `negative_cache_ttl`). Also the mock
//! secrets that make an unknown user's exchange look like a known user's.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use mysql_async::prelude::Queryable;
use sha2::Sha256;

use crate::config::{AuthQuery, Protocol, Validated};
use crate::topology::Cluster;
use crate::topology::probe::{self, MonitorLogin, MonitorTls, ProbeError, Target};

/// The cache holds at most this many names; it starts over when full (a flood of made-up
/// names must not grow it without bound).
const CACHE_LIMIT: usize = 10_000;

/// At most this many lookups run at once: many clients of one user logging in together (a
/// pool starting, a restart) make one lookup, the others find its answer in the cache.
const CONCURRENT_LOOKUPS: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error("look up user {user:?} as {account:?}")]
    Probe {
        user: String,
        account: String,
        #[source]
        source: ProbeError,
    },
    #[error("the lookup query's answer has no second column (the verifier)")]
    Shape,
}

struct Entry {
    /// The verifier text, `None` when the user does not exist (or has no password).
    verifier: Option<Arc<str>>,
    until: Instant,
}

/// Answers of the lookup query by user name, each until its time runs out.
#[derive(Default)]
struct Cache {
    entries: HashMap<String, Entry>,
}

impl Cache {
    /// The answer for `user` if one is still fresh at `now`.
    fn get(&self, user: &str, now: Instant) -> Option<Option<Arc<str>>> {
        self.entries
            .get(user)
            .filter(|e| now < e.until)
            .map(|e| e.verifier.clone())
    }

    /// Keeps `verifier` for `user` for `ttl` from `now` (nothing when `ttl` is zero).
    fn put(&mut self, user: &str, verifier: Option<Arc<str>>, now: Instant, ttl: Duration) {
        if self.entries.len() >= CACHE_LIMIT {
            self.entries.clear();
        }
        if ttl.is_zero() {
            self.entries.remove(user);
        } else {
            let until = now + ttl;
            self.entries
                .insert(user.to_owned(), Entry { verifier, until });
        }
    }
}

/// The lookup account, its query and the cache of answers.
pub struct Lookup {
    config: AuthQuery,
    protocol: Protocol,
    cache: Mutex<Cache>,
    gate: tokio::sync::Semaphore,
}

impl Lookup {
    pub fn new(config: &Validated) -> Option<Lookup> {
        Some(Lookup {
            config: config.auth_query.clone()?,
            protocol: config.raw.server.protocol,
            cache: Mutex::default(),
            gate: tokio::sync::Semaphore::new(CONCURRENT_LOOKUPS),
        })
    }

    /// The stored verifier of `user` (`SCRAM-SHA-256$…`, `*HEX`, …), or `None` if there
    /// is no such user with a password; asked of `cluster`'s writer unless cached.
    pub async fn verifier(
        &self,
        user: &str,
        cluster: &Cluster,
        ca_file: Option<&std::path::Path>,
        timeout: Duration,
    ) -> Result<Option<Arc<str>>, LookupError> {
        if let Some(answer) = self.lock().get(user, Instant::now()) {
            return Ok(answer);
        }
        // Never closed, so acquiring only waits; on the way, another lookup may answer.
        let _turn = self.gate.acquire().await;
        let now = Instant::now();
        if let Some(answer) = self.lock().get(user, now) {
            return Ok(answer);
        }
        let verifier = self.query(user, cluster, ca_file, timeout).await?;
        let ttl = match verifier {
            Some(_) => self.config.cache_ttl,
            None => self.config.negative_cache_ttl,
        };
        self.lock().put(user, verifier.clone(), now, ttl);
        Ok(verifier)
    }

    async fn query(
        &self,
        user: &str,
        cluster: &Cluster,
        ca_file: Option<&std::path::Path>,
        timeout: Duration,
    ) -> Result<Option<Arc<str>>, LookupError> {
        let writer = &cluster.writer;
        let login = MonitorLogin {
            user: self.config.user.clone(),
            password: self.config.password.clone(),
            database: self.config.database.clone(),
            tls: cluster
                .tls
                .clone()
                .filter(|_| cluster.tls_mode != crate::config::BackendTlsMode::Disable)
                .map(|config| MonitorTls {
                    mode: cluster.tls_mode,
                    ca_file: ca_file.map(ToOwned::to_owned),
                    config,
                }),
        };
        let target = Target::of(writer);
        let addr = writer.addr.clone();
        let query = self.config.query.as_str();
        let probe_error = |source| LookupError::Probe {
            user: user.to_owned(),
            account: self.config.user.clone(),
            source,
        };
        let answer: Result<Option<Option<String>>, ProbeError> =
            match self.protocol {
                Protocol::Postgres => {
                    probe::bounded(&addr, timeout, async {
                        let client = probe::postgres(target, &login).await?;
                        let rows = client.query(query, &[&user]).await.map_err(|source| {
                            ProbeError::Postgres {
                                addr: addr.clone(),
                                source,
                            }
                        })?;
                        Ok(rows
                            .first()
                            .map(|r| r.try_get::<_, Option<String>>(1).ok().flatten()))
                    })
                    .await
                }
                Protocol::Mysql => probe::bounded(&addr, timeout, async {
                    let mut conn = probe::mysql(target, &login).await?;
                    let mysql = |source| ProbeError::Mysql {
                        addr: addr.clone(),
                        source,
                    };
                    let row: Option<mysql_async::Row> =
                        conn.exec_first(query, (user,)).await.map_err(mysql)?;
                    if let Err(e) = conn.disconnect().await {
                        tracing::debug!(error = %e, "auth query connection did not close cleanly");
                    }
                    Ok(row.map(|r| {
                        r.get_opt::<Option<String>, _>(1)
                            .and_then(Result::ok)
                            .flatten()
                    }))
                })
                .await,
            };
        // A row without a verifier (a role with no password) is no login, as a miss is.
        Ok(answer
            .map_err(probe_error)?
            .flatten()
            .filter(|v| !v.is_empty())
            .map(Arc::from))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A per-process secret from which a made-up verifier is derived for each unknown user
/// name, as PostgreSQL does: the same name always gets the same salt, so asking twice
/// cannot tell an unknown user from a known one.
pub struct MockSecret([u8; 32]);

impl MockSecret {
    pub fn random() -> MockSecret {
        MockSecret(rand::random())
    }

    /// `N` bytes derived from the secret, `purpose` and `user`.
    pub fn derive<const N: usize>(&self, purpose: &str, user: &str) -> [u8; N] {
        let mut out = [0u8; N];
        for (counter, chunk) in (0u32..).zip(out.chunks_mut(32)) {
            let mut mac = Hmac::<Sha256>::new_from_slice(&self.0)
                .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
            mac.update(purpose.as_bytes());
            mac.update(&counter.to_be_bytes());
            mac.update(user.as_bytes());
            let block = mac.finalize().into_bytes();
            chunk.copy_from_slice(&block[..chunk.len()]);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_kept_for_their_ttl_and_the_cache_is_bounded() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut cache = Cache::default();
        let found: Option<Arc<str>> = Some(Arc::from("SCRAM-SHA-256$x"));
        cache.put("rt", found.clone(), t0, s(60));
        cache.put("nobody", None, t0, s(5));
        assert_eq!(cache.get("rt", t0 + s(59)), Some(found.clone()));
        assert_eq!(cache.get("nobody", t0 + s(4)), Some(None));
        assert_eq!(
            cache.get("nobody", t0 + s(5)),
            None,
            "a miss is asked again"
        );
        assert_eq!(cache.get("rt", t0 + s(60)), None, "so is a hit, later");
        assert_eq!(cache.get("other", t0), None);
        // A zero TTL keeps nothing, and forgets what was kept.
        cache.put("rt", None, t0, Duration::ZERO);
        assert_eq!(cache.get("rt", t0), None);
        for i in 0..CACHE_LIMIT + 1 {
            cache.put(&format!("u{i}"), None, t0, s(5));
        }
        assert!(cache.entries.len() <= CACHE_LIMIT);
    }

    #[test]
    fn mock_secrets_are_stable_per_name_and_differ_between_names() {
        let secret = MockSecret::random();
        let a: [u8; 16] = secret.derive("salt", "nobody");
        assert_eq!(a, secret.derive::<16>("salt", "nobody"));
        assert_ne!(a, secret.derive::<16>("salt", "nobody2"));
        assert_ne!(a, secret.derive::<16>("key", "nobody"));
        let long: [u8; 40] = secret.derive("salt", "nobody");
        assert_eq!(long[..16], a);
        assert_ne!(a, MockSecret::random().derive::<16>("salt", "nobody"));
    }
}
