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

/// The instances one DNS round saw: the writer endpoint's first address is the writer
/// (Aurora's has one), every reader endpoint address that is not the writer is a reader.
pub fn seen_from_answers(writer: Option<(&[IpAddr], u16)>, readers: (&[IpAddr], u16)) -> Vec<Seen> {
    let seen = |ip: IpAddr, port: u16, role| Seen {
        addr: SocketAddr::new(ip, port).to_string(),
        host: ip.to_string(),
        port,
        role,
        reported_lag: None,
    };
    let mut out = Vec::new();
    if let Some((&ip, port)) = writer.and_then(|(ips, port)| ips.first().map(|ip| (ip, port))) {
        out.push(seen(ip, port, Role::Writer));
    }
    let (ips, port) = readers;
    for &ip in ips {
        let s = seen(ip, port, Role::Reader);
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
    Ok(seen_from_answers(
        Some((&writer_ips, writer.1)),
        (&reader_ips, reader.1),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn answers_become_instances() {
        let w = [ip("10.0.0.1")];
        let r = [ip("10.0.0.2"), ip("10.0.0.1"), ip("::1")];
        let seen = seen_from_answers(Some((&w, 5432)), (&r, 5433));
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
    }

    #[test]
    fn the_writer_is_not_also_a_reader_on_the_same_port() {
        let w = [ip("10.0.0.1")];
        let r = [ip("10.0.0.1"), ip("10.0.0.2")];
        let seen = seen_from_answers(Some((&w, 5432)), (&r, 5432));
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
        let seen = seen_from_answers(Some((&[], 5432)), (&r, 5432));
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].role, Role::Reader);
    }
}
