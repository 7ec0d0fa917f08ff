//! DNS for discovery: a hickory resolver on the configured nameservers (else the system's)
//! that sees fresh answers every round, and the `dns` source: every address of the writer
//! and reader endpoints is an instance.

use std::net::{IpAddr, SocketAddr};

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{LookupIpStrategy, NameServerConfig, ResolverConfig};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;

use super::{Role, Seen};

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("set up the DNS resolver from the system configuration")]
    System(#[source] Box<NetError>),
    #[error("build the DNS resolver")]
    Build(#[source] Box<NetError>),
    #[error("resolve {name}")]
    Lookup {
        name: String,
        #[source]
        source: Box<NetError>,
    },
}

/// A resolver on `nameservers` (`ip:port`), or the system's when empty, that keeps no
/// answers between lookups: discovery must see a change as soon as the server does.
pub fn resolver(nameservers: &[SocketAddr]) -> Result<TokioResolver, DnsError> {
    let mut builder = if nameservers.is_empty() {
        TokioResolver::builder_tokio().map_err(|e| DnsError::System(Box::new(e)))?
    } else {
        let servers = nameservers
            .iter()
            .map(|server| {
                let mut config = NameServerConfig::udp_and_tcp(server.ip());
                for connection in &mut config.connections {
                    connection.port = server.port();
                }
                config
            })
            .collect();
        TokioResolver::builder_with_config(
            ResolverConfig::from_name_servers(servers),
            TokioRuntimeProvider::default(),
        )
    };
    let options = builder.options_mut();
    options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    options.cache_size = 0;
    builder.build().map_err(|e| DnsError::Build(Box::new(e)))
}

/// Every address of `host` (an IP literal is its own answer); none when the name has no
/// A/AAAA records.
pub async fn resolve(resolver: &TokioResolver, host: &str) -> Result<Vec<IpAddr>, DnsError> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![ip]);
    }
    // Clears what a previous round left, should the cache keep anything despite size 0.
    resolver.clear_cache();
    match resolver.lookup_ip(host).await {
        Ok(answer) => {
            let mut ips: Vec<IpAddr> = answer.iter().collect();
            ips.sort();
            ips.dedup();
            Ok(ips)
        }
        Err(e) if e.is_no_records_found() || e.is_nx_domain() => Ok(Vec::new()),
        Err(source) => Err(DnsError::Lookup {
            name: host.to_owned(),
            source: Box::new(source),
        }),
    }
}

/// What one endpoint answered: the name asked, its addresses, and the endpoint's port.
#[derive(Debug, Clone, Copy)]
pub struct Answer<'a> {
    pub name: &'a str,
    pub ips: &'a [IpAddr],
    pub port: u16,
}

/// The instances one DNS round saw: the writer endpoint's first address is the writer
/// (Aurora's has one), every reader endpoint address that is not the writer is a reader.
/// Each is verified by TLS as the endpoint name it was found under, which RDS certificates
/// carry besides the instance's own name.
pub fn seen_from_answers(writer: Option<Answer<'_>>, readers: Answer<'_>) -> Vec<Seen> {
    let seen = |ip: IpAddr, answer: &Answer<'_>, role| Seen {
        addr: SocketAddr::new(ip, answer.port).to_string(),
        host: ip.to_string(),
        port: answer.port,
        tls_name: answer.name.to_owned(),
        role,
        reported_lag: None,
    };
    let mut out = Vec::new();
    if let Some(w) = writer
        && let Some(&ip) = w.ips.first()
    {
        out.push(seen(ip, &w, Role::Writer));
    }
    for &ip in readers.ips {
        let s = seen(ip, &readers, Role::Reader);
        if !out.iter().any(|o| o.addr == s.addr) {
            out.push(s);
        }
    }
    out
}

/// One round of the `dns` source.
pub async fn round(
    resolver: &TokioResolver,
    writer: (&str, u16),
    reader: (&str, u16),
) -> Result<Vec<Seen>, DnsError> {
    let writer_ips = resolve(resolver, writer.0).await?;
    let reader_ips = resolve(resolver, reader.0).await?;
    let writer = Answer {
        name: writer.0,
        ips: &writer_ips,
        port: writer.1,
    };
    let readers = Answer {
        name: reader.0,
        ips: &reader_ips,
        port: reader.1,
    };
    Ok(seen_from_answers(Some(writer), readers))
}

#[cfg(test)]
mod tests {
    use super::*;

    const WRITER: &str = "db.cluster-abc.eu-north-1.rds.amazonaws.com";
    const READER: &str = "db.cluster-ro-abc.eu-north-1.rds.amazonaws.com";

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn answer<'a>(name: &'a str, ips: &'a [IpAddr], port: u16) -> Answer<'a> {
        Answer { name, ips, port }
    }

    #[test]
    fn answers_become_instances() {
        let w = [ip("10.0.0.1")];
        let r = [ip("10.0.0.2"), ip("10.0.0.1"), ip("::1")];
        let seen = seen_from_answers(Some(answer(WRITER, &w, 5432)), answer(READER, &r, 5433));
        let got: Vec<_> = seen.iter().map(|s| (s.addr.as_str(), s.role)).collect();
        assert_eq!(
            got,
            [
                ("10.0.0.1:5432", Role::Writer),
                ("10.0.0.2:5433", Role::Reader),
                ("10.0.0.1:5433", Role::Reader),
                ("[::1]:5433", Role::Reader),
            ]
        );
        assert_eq!(seen[3].host, "::1");
        let names: Vec<_> = seen.iter().map(|s| s.tls_name.as_str()).collect();
        assert_eq!(
            names,
            [WRITER, READER, READER, READER],
            "verified as the endpoint names"
        );
    }

    #[test]
    fn the_writer_is_not_also_a_reader_on_the_same_port() {
        let w = [ip("10.0.0.1")];
        let r = [ip("10.0.0.1"), ip("10.0.0.2")];
        let seen = seen_from_answers(Some(answer(WRITER, &w, 5432)), answer(READER, &r, 5432));
        let got: Vec<_> = seen.iter().map(|s| (s.addr.as_str(), s.role)).collect();
        assert_eq!(
            got,
            [
                ("10.0.0.1:5432", Role::Writer),
                ("10.0.0.2:5432", Role::Reader)
            ]
        );
    }

    #[test]
    fn no_writer_answer_means_no_writer_seen() {
        let r = [ip("10.0.0.2")];
        let seen = seen_from_answers(Some(answer(WRITER, &[], 5432)), answer(READER, &r, 5432));
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].role, Role::Reader);
    }
}
