//! The host-name convention: Service names in env values and container args become the loopback
//! address the node's Service proxy listens on for that Service ([`crate::proxy`]). There is no
//! cluster DNS here, so the node rewrites the names a process would have resolved. Pure.
//!
//! Only the suffixed forms are rewritten, never a bare word:
//! `<svc>.<ns>.svc.cluster.local`, `<svc>.<ns>.svc` (each with an optional trailing dot) and
//! `<svc>.<ns>` — the last only when such a Service exists (the resolver decides), since
//! `name.word` is also what file names and domains look like.

use std::net::Ipv4Addr;

/// Which form of a Service name was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostForm {
    /// `<svc>.<ns>.svc.cluster.local` or `<svc>.<ns>.svc`: unambiguous.
    Qualified,
    /// `<svc>.<ns>`: a Service name only if that Service exists.
    Short,
}

/// A Service name found in a value: the Service, its namespace, the form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceName<'a> {
    pub service: &'a str,
    pub namespace: &'a str,
    pub form: HostForm,
}

/// `value` with every Service name that `resolve` gives an address for replaced by that address;
/// `None` when nothing was replaced. Names are found as whole runs of host-name characters
/// (`[A-Za-z0-9._-]`), so `redis://:pw@wasp-redis.clinic.svc:6379/0` and
/// `wasp-api.clinic.svc.cluster.local:8080` are found, `my-wasp-redis.clinic.svcx` is not.
pub fn rewrite_service_hosts(
    value: &str,
    resolve: impl Fn(ServiceName<'_>) -> Option<Ipv4Addr>,
) -> Option<String> {
    let mut out = String::with_capacity(value.len());
    let mut changed = false;
    let mut rest = value;
    while !rest.is_empty() {
        let start = rest.find(is_host_char).unwrap_or(rest.len());
        out.push_str(&rest[..start]);
        rest = &rest[start..];
        let end = rest.find(|c| !is_host_char(c)).unwrap_or(rest.len());
        let token = &rest[..end];
        match service_name(token).and_then(&resolve) {
            Some(ip) => {
                out.push_str(&ip.to_string());
                changed = true;
            }
            None => out.push_str(token),
        }
        rest = &rest[end..];
    }
    changed.then_some(out)
}

fn is_host_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')
}

/// The Service name `token` is, if it has one of the forms.
pub fn service_name(token: &str) -> Option<ServiceName<'_>> {
    let token = token.strip_suffix('.').unwrap_or(token);
    let (base, form) = if let Some(b) = token.strip_suffix(".svc.cluster.local") {
        (b, HostForm::Qualified)
    } else if let Some(b) = token.strip_suffix(".svc") {
        (b, HostForm::Qualified)
    } else {
        (token, HostForm::Short)
    };
    let (service, namespace) = base.split_once('.')?;
    (is_service_label(service) && is_dns_label(namespace)).then_some(ServiceName {
        service,
        namespace,
        form,
    })
}

/// An RFC 1123 label: 1–63 of `[a-z0-9-]`, alphanumeric at both ends.
fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// A Service name (RFC 1035 label): a DNS label starting with a letter.
fn is_service_label(s: &str) -> bool {
    is_dns_label(s) && s.as_bytes()[0].is_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    const IP: Ipv4Addr = Ipv4Addr::new(127, 42, 0, 7);

    /// Resolves `wasp-redis` and `wasp-api` in `clinic`; the short form only for `wasp-redis`.
    fn resolve(n: ServiceName<'_>) -> Option<Ipv4Addr> {
        let known = n.namespace == "clinic" && matches!(n.service, "wasp-redis" | "wasp-api");
        let exists = n.service == "wasp-redis";
        (known && (n.form == HostForm::Qualified || exists)).then_some(IP)
    }

    fn rw(v: &str) -> Option<String> {
        rewrite_service_hosts(v, resolve)
    }

    #[test]
    fn qualified_names_in_urls_and_addresses_are_rewritten() {
        assert_eq!(
            rw("redis://:pw@wasp-redis.clinic.svc:6379/0").as_deref(),
            Some("redis://:pw@127.42.0.7:6379/0")
        );
        assert_eq!(
            rw("wasp-api.clinic.svc.cluster.local:8080").as_deref(),
            Some("127.42.0.7:8080")
        );
        assert_eq!(
            rw("http://wasp-api.clinic.svc.cluster.local.:8080/x").as_deref(),
            Some("http://127.42.0.7:8080/x")
        );
        assert_eq!(
            rw("a=wasp-redis.clinic.svc:1,b=wasp-api.clinic.svc:2").as_deref(),
            Some("a=127.42.0.7:1,b=127.42.0.7:2")
        );
        assert_eq!(
            rw("wasp-redis.clinic:6379").as_deref(),
            Some("127.42.0.7:6379")
        );
    }

    #[test]
    fn bare_words_unknown_services_and_lookalikes_stay() {
        for v in [
            "wasp-redis",
            "wasp-redis:6379",
            "wasp-api.clinic",      // short form, but no such Service exists
            "wasp-redis.other.svc", // not resolved
            "my-wasp-redis.clinic.svcx",
            "Wasp-Redis.clinic.svc", // not a DNS name
            "wasp_redis.clinic.svc",
            "doc@clinic.com",
            "/data/redis.conf",
            "127.0.0.1:6379",
            "v1.2",
            "",
        ] {
            assert_eq!(rw(v), None, "{v}");
        }
    }

    #[test]
    fn service_names_are_parsed_by_form() {
        assert_eq!(
            service_name("a.b.svc"),
            Some(ServiceName {
                service: "a",
                namespace: "b",
                form: HostForm::Qualified
            })
        );
        assert_eq!(service_name("a.b").map(|n| n.form), Some(HostForm::Short));
        assert_eq!(
            service_name("a.b.c.svc"),
            None,
            "pod names are not Services"
        );
        assert_eq!(
            service_name("1a.b.svc"),
            None,
            "Services start with a letter"
        );
        assert_eq!(service_name("a.-b.svc"), None);
        assert_eq!(service_name(&format!("a.{}.svc", "n".repeat(64))), None);
    }
}
