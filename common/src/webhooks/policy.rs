//! Which webhook URLs and addresses wasp may call. Webhook URLs are user input, and the API runs
//! inside the cluster: without this, `http://169.254.169.254/` or `http://10.0.0.1:6379/` would
//! be a request forgery into the cloud metadata service or the cluster. Pure: the same checks
//! run when a URL is configured and on every connect (after each DNS resolution, so a name that
//! later resolves to an internal address is refused then too).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use url::{Host, Url};

/// The operator's settings (chart values `api.webhooks.*`; the API and the operator get the same).
#[derive(Debug, Clone, Default)]
pub struct UrlPolicy {
    /// Plain `http://` URLs are accepted (only for receivers on a trusted network).
    pub allow_http: bool,
    /// Networks that may be called although they are private (an in-cluster receiver).
    pub allow_nets: Vec<IpNet>,
    /// Host names that may be called whatever they resolve to (`crm.crm.svc.cluster.local`).
    pub allow_hosts: Vec<String>,
}

/// Why a URL or an address is refused; the message is safe to show the user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the webhook URL is not a valid absolute URL")]
    Invalid,
    #[error("the webhook URL must be https (this server does not allow http)")]
    Scheme,
    #[error("the webhook URL may not carry a user name or password")]
    Credentials,
    #[error("the webhook URL is longer than 2048 characters")]
    TooLong,
    #[error("the webhook host {0} is internal to this network and not allowed")]
    InternalName(String),
    #[error("the webhook address {0} is loopback, private, link-local or reserved")]
    InternalAddress(IpAddr),
}

const MAX_URL: usize = 2048;

/// Names that always mean "this machine" or "this cluster".
const INTERNAL_SUFFIXES: [&str; 5] = ["localhost", ".localhost", ".local", ".internal", ".svc"];

/// The policy's flags, the same for wasp-api and the operator (chart values `api.webhooks.*`).
#[derive(Debug, Clone, clap::Args)]
pub struct UrlPolicyFlags {
    /// Accept plain `http://` webhook URLs (receivers on a trusted network only).
    #[arg(long, env = "WEBHOOK_ALLOW_HTTP", default_value_t = false, action = clap::ArgAction::Set)]
    pub webhook_allow_http: bool,
    /// Private networks webhooks may call (CIDRs, comma separated), e.g. an in-cluster CRM.
    #[arg(long, env = "WEBHOOK_ALLOW_NETS", default_value = "", value_parser = parse_nets)]
    pub webhook_allow_nets: Nets,
    /// Host names webhooks may call whatever they resolve to (comma separated).
    #[arg(long, env = "WEBHOOK_ALLOW_HOSTS", value_delimiter = ',')]
    pub webhook_allow_hosts: Vec<String>,
}

impl UrlPolicyFlags {
    pub fn policy(&self) -> UrlPolicy {
        UrlPolicy {
            allow_http: self.webhook_allow_http,
            allow_nets: self.webhook_allow_nets.0.clone(),
            allow_hosts: self
                .webhook_allow_hosts
                .iter()
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
                .collect(),
        }
    }
}

/// A comma-separated list of CIDRs (empty: none).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Nets(pub Vec<IpNet>);

pub fn parse_nets(input: &str) -> Result<Nets, String> {
    input
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(|n| {
            n.parse()
                .map_err(|_| format!("{n:?} is not a CIDR like 10.0.0.0/8"))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Nets)
}

impl UrlPolicy {
    /// Parses and checks a URL's form (scheme, credentials, literal addresses, internal names).
    /// Names are checked again after resolution ([`Self::check_addr`]).
    pub fn check_url(&self, text: &str) -> Result<Url, Refused> {
        if text.len() > MAX_URL {
            return Err(Refused::TooLong);
        }
        let url = Url::parse(text.trim()).map_err(|_| Refused::Invalid)?;
        match url.scheme() {
            "https" => {}
            "http" if self.allow_http => {}
            "http" => return Err(Refused::Scheme),
            _ => return Err(Refused::Invalid),
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(Refused::Credentials);
        }
        match url.host() {
            None => return Err(Refused::Invalid),
            Some(Host::Ipv4(ip)) => self.check_addr(None, IpAddr::V4(ip))?,
            Some(Host::Ipv6(ip)) => self.check_addr(None, IpAddr::V6(ip))?,
            Some(Host::Domain(name)) => {
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                if !self.host_allowed(&name)
                    && (!name.contains('.')
                        || INTERNAL_SUFFIXES
                            .iter()
                            .any(|s| name == s.trim_start_matches('.') || name.ends_with(s))
                        || name.ends_with(".cluster.local"))
                {
                    return Err(Refused::InternalName(name));
                }
            }
        }
        Ok(url)
    }

    /// Whether the operator allowed this host name whatever it resolves to.
    pub fn host_allowed(&self, name: &str) -> bool {
        let name = name.trim_end_matches('.');
        self.allow_hosts
            .iter()
            .any(|h| h.trim_end_matches('.').eq_ignore_ascii_case(name))
    }

    /// Checks one address a URL's host has (or resolved to). `host` is the name it came from.
    pub fn check_addr(&self, host: Option<&str>, ip: IpAddr) -> Result<(), Refused> {
        if host.is_some_and(|h| self.host_allowed(h)) {
            return Ok(());
        }
        let ip = canonical(ip);
        if self.allow_nets.iter().any(|n| n.contains(&ip)) || is_public(ip) {
            Ok(())
        } else {
            Err(Refused::InternalAddress(ip))
        }
    }
}

/// An IPv6 address that embeds an IPv4 one (`::ffff:10.0.0.1`, NAT64 `64:ff9b::10.0.0.1`) is
/// judged as that IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return IpAddr::V4(v4);
            }
            let s = v6.segments();
            if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
                let o = v6.octets();
                return IpAddr::V4(Ipv4Addr::new(o[12], o[13], o[14], o[15]));
            }
            IpAddr::V6(v6)
        }
        v4 => v4,
    }
}

/// Whether an address is reachable on the public internet (not loopback, private, shared,
/// link-local, multicast, documentation or otherwise reserved).
pub fn is_public(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space (carrier NAT)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240) // reserved
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let s0 = ip.segments()[0];
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (s0 & 0xfe00) == 0xfc00 // unique local
        || (s0 & 0xffc0) == 0xfe80 // link-local
        || (s0 & 0xffc0) == 0xfec0 // site-local (deprecated)
        || s0 == 0x2001 && ip.segments()[1] == 0x0db8 // documentation
        || s0 == 0x0100 && ip.segments()[1..4] == [0, 0, 0]) // discard-only
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn internal_addresses_are_refused_and_public_ones_pass() {
        for bad in [
            "127.0.0.1",
            "127.9.9.9",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "240.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "ff02::1",
            "::ffff:10.0.0.1",
            "::ffff:127.0.0.1",
            "64:ff9b::a9fe:a9fe",
        ] {
            assert!(!is_public(ip(bad)), "{bad} must be refused");
        }
        for good in [
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(is_public(ip(good)), "{good} is public");
        }
    }

    #[test]
    fn urls_must_be_https_without_credentials_or_internal_hosts() {
        let p = UrlPolicy::default();
        assert!(p.check_url("https://crm.example.com/hooks/wasp").is_ok());
        assert_eq!(
            p.check_url("http://crm.example.com/").unwrap_err(),
            Refused::Scheme
        );
        assert_eq!(
            p.check_url("ftp://x.example/").unwrap_err(),
            Refused::Invalid
        );
        assert_eq!(p.check_url("not a url").unwrap_err(), Refused::Invalid);
        assert_eq!(
            p.check_url("https://u:p@crm.example.com/").unwrap_err(),
            Refused::Credentials
        );
        assert_eq!(
            p.check_url(&format!("https://a.example/{}", "x".repeat(2100)))
                .unwrap_err(),
            Refused::TooLong
        );
        for internal in [
            "https://127.0.0.1/",
            "https://10.0.0.5:8443/",
            "https://169.254.169.254/latest/meta-data",
            "https://[::1]/",
            "https://[::ffff:192.168.0.1]/",
            "https://localhost/",
            "https://api.localhost/",
            "https://redis.wasp.svc/",
            "https://redis.wasp.svc.cluster.local/",
            "https://metadata.google.internal/",
            "https://printer.local/",
            "https://intranet/",
        ] {
            assert!(p.check_url(internal).is_err(), "{internal} must be refused");
        }
    }

    #[test]
    fn the_operator_can_allow_http_networks_and_hosts() {
        let p = UrlPolicy {
            allow_http: true,
            allow_nets: vec!["127.0.0.2/32".parse().unwrap()],
            allow_hosts: vec!["crm.crm.svc.cluster.local".into()],
        };
        assert!(p.check_url("http://127.0.0.2:8080/hook").is_ok());
        assert!(p.check_url("http://127.0.0.1:8080/hook").is_err());
        assert!(p.check_url("https://crm.crm.svc.cluster.local/").is_ok());
        assert!(
            p.check_addr(Some("crm.crm.svc.cluster.local."), ip("10.96.0.7"))
                .is_ok()
        );
        assert_eq!(
            p.check_addr(Some("evil.example"), ip("10.96.0.7")),
            Err(Refused::InternalAddress(ip("10.96.0.7")))
        );
        assert!(
            p.check_addr(None, ip("::ffff:127.0.0.2")).is_ok(),
            "mapped form too"
        );
    }
}
