//! How webhook host names are resolved, at configuration (`PUT /webhooks`) and at every connect:
//! the system resolver, or the DNS servers of `WEBHOOK_DNS_SERVERS` (for example public
//! resolvers, which cannot resolve cluster-internal names at all). Either way every address is
//! then checked with the URL policy.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::{Resolver, TokioResolver};

#[derive(Clone, Default)]
pub enum Lookup {
    /// `getaddrinfo` (the pod's `/etc/resolv.conf`: cluster DNS).
    #[default]
    System,
    Servers(Arc<TokioResolver>),
}

impl std::fmt::Debug for Lookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Lookup::System => f.write_str("System"),
            Lookup::Servers(_) => f.write_str("Servers(..)"),
        }
    }
}

impl Lookup {
    /// The system resolver for no servers; else those servers over UDP and TCP, without a
    /// cache (each connect sees what the name resolves to now) and without `/etc/hosts`.
    pub fn new(servers: &[SocketAddr]) -> Result<Self, String> {
        if servers.is_empty() {
            return Ok(Lookup::System);
        }
        let name_servers = servers
            .iter()
            .map(|s| {
                let conn = |mut c: ConnectionConfig| {
                    c.port = s.port();
                    c
                };
                NameServerConfig::new(
                    s.ip(),
                    true,
                    vec![conn(ConnectionConfig::udp()), conn(ConnectionConfig::tcp())],
                )
            })
            .collect();
        let mut builder = Resolver::builder_with_config(
            ResolverConfig::from_name_servers(name_servers),
            TokioRuntimeProvider::default(),
        );
        let opts: &mut ResolverOpts = builder.options_mut();
        opts.cache_size = 0;
        opts.use_hosts_file = ResolveHosts::Never;
        // A name is looked up as given, never under a search domain.
        opts.ndots = 0;
        let resolver = builder.build().map_err(|e| e.to_string())?;
        Ok(Lookup::Servers(Arc::new(resolver)))
    }

    /// Every address of `host`.
    pub async fn addrs(&self, host: &str) -> std::io::Result<Vec<IpAddr>> {
        match self {
            Lookup::System => Ok(tokio::net::lookup_host((host, 0))
                .await?
                .map(|a| a.ip())
                .collect()),
            Lookup::Servers(r) => match r.lookup_ip(host).await {
                Ok(found) => Ok(found.iter().collect()),
                Err(e) => Err(std::io::Error::other(e.to_string())),
            },
        }
    }
}

/// Parses `WEBHOOK_DNS_SERVERS`: `ip` or `ip:port`, comma separated (empty: the system's).
pub fn parse_servers(input: &str) -> Result<Vec<SocketAddr>, String> {
    input
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<SocketAddr>()
                .or_else(|_| s.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
                .map_err(|_| {
                    format!("{s:?} is not a DNS server address like 1.1.1.1 or 10.0.0.10:53")
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_are_addresses_with_an_optional_port() {
        assert_eq!(parse_servers("").unwrap(), []);
        assert_eq!(
            parse_servers("1.1.1.1, 127.0.0.1:5353,[::1]:53").unwrap(),
            [
                "1.1.1.1:53".parse().unwrap(),
                "127.0.0.1:5353".parse().unwrap(),
                "[::1]:53".parse::<SocketAddr>().unwrap()
            ]
        );
        assert!(parse_servers("dns.example").is_err());
    }
}
