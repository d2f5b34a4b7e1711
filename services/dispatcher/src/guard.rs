//! The SSRF guard: a delivery never reaches a loopback, private, link-local (cloud
//! metadata), shared, multicast or otherwise non-public address, unless the address
//! is inside `HOOKLINE_ALLOWED_NETWORKS`. It applies to the addresses a host name
//! resolves to (the HTTP client's resolver is [`GuardedResolver`]), so a public-looking
//! name that points at 10.0.0.1 is refused like the literal address; a name resolving
//! to both kinds connects only to the permitted ones. A refused delivery is final
//! (`HL-DELIVERY-REFUSED`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Which addresses deliveries may reach.
#[derive(Debug, Clone, Default)]
pub struct Guard {
    allowed: Vec<IpNet>,
}

/// A host that resolves only to addresses deliveries may not reach.
#[derive(Debug, thiserror::Error)]
#[error("the host resolves only to addresses deliveries may not reach (HOOKLINE_ALLOWED_NETWORKS)")]
pub struct Refused;

impl Guard {
    /// A guard permitting public addresses and those in `list`: comma-separated
    /// networks (`127.0.0.0/8`) or addresses (`10.1.2.3`).
    pub fn parse(list: &str) -> Result<Guard, String> {
        let allowed = list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| s.parse::<IpNet>().or_else(|_| s.parse::<IpAddr>().map(IpNet::from)).map_err(|_| s.to_owned()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|bad| format!("HOOKLINE_ALLOWED_NETWORKS: {bad:?} is not a network (e.g. 127.0.0.0/8) or an address"))?;
        Ok(Guard { allowed })
    }

    /// Whether a delivery may connect to `ip`.
    pub fn permits(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        is_public(ip) || self.allowed.iter().any(|net| net.contains(&ip))
    }
}

/// An IPv4 address written as IPv6 (`::ffff:10.0.0.1`) is that IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Whether `ip` is a public unicast address.
pub fn is_public(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b))
        || (a == 192 && b == 0 && ip.octets()[2] == 0)
        || (a == 198 && (18..20).contains(&b))
        || a >= 240)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    let first = s[0];
    // Addresses that embed an IPv4 one are judged by it: NAT64 (64:ff9b::/96) and
    // 6to4 (2002::/16).
    let embedded =
        |hi: u16, lo: u16| Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
    if first == 0x0064 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
        return is_public_v4(embedded(s[6], s[7]));
    }
    if first == 0x2002 {
        return is_public_v4(embedded(s[1], s[2]));
    }
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00
        || (first & 0xffc0) == 0xfe80
        || (first & 0xffc0) == 0xfec0
        || first == 0x2001 && ip.segments()[1] == 0x0db8
        || first == 0x0064 && s[1] == 0xff9b
        || first == 0x2001 && s[1] == 0
        || first == 0x2001 && (s[1] & 0xfff0) == 0x0010
        || first == 0x0100 && s[1..4] == [0, 0, 0]
        || s[..4] == [0, 0, 0, 0] && (s[4] == 0 || s[4] == 0xffff))
}

/// The HTTP client's resolver: the system's, keeping only permitted addresses.
pub struct GuardedResolver(pub Arc<Guard>);

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let guard = self.0.clone();
        Box::pin(async move {
            let found = tokio::net::lookup_host((name.as_str(), 0)).await?;
            let permitted: Vec<SocketAddr> = found.filter(|a| guard.permits(a.ip())).collect();
            if permitted.is_empty() {
                return Err(Box::new(Refused) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(permitted.into_iter()) as Addrs)
        })
    }
}

/// Whether an HTTP error is the guard's refusal.
pub fn is_refusal(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if e.is::<Refused>() {
            return true;
        }
        cause = e.source();
    }
    false
}

/// Whether the URL names an address (not a host name) the guard refuses.
pub fn refuses_literal(guard: &Guard, url: &reqwest::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(v4)) => !guard.permits(IpAddr::V4(v4)),
        Some(url::Host::Ipv6(v6)) => !guard.permits(IpAddr::V6(v6)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_are_reachable_by_default() {
        let table = [
            ("8.8.8.8", true),
            ("1.1.1.1", true),
            ("172.32.0.1", true),
            ("2606:4700:4700::1111", true),
            ("127.0.0.1", false),
            ("127.255.0.9", false),
            ("10.1.2.3", false),
            ("172.16.0.1", false),
            ("172.31.255.255", false),
            ("192.168.1.1", false),
            ("169.254.169.254", false),
            ("100.64.0.1", false),
            ("0.0.0.0", false),
            ("255.255.255.255", false),
            ("224.0.0.1", false),
            ("192.0.0.8", false),
            ("198.18.0.1", false),
            ("::1", false),
            ("::", false),
            ("fe80::1", false),
            ("fd00:ec2::254", false),
            ("fc00::1", false),
            ("ff02::1", false),
            ("::ffff:10.0.0.1", false),
            ("::ffff:8.8.8.8", true),
            ("64:ff9b::a00:1", false),
            ("64:ff9b::808:808", true),
            ("64:ff9b:1::1", false),
            ("2002:a9fe:a9fe::1", false),
            ("2002:808:808::1", true),
            ("2001:0:4136:e378::1", false),
            ("2001:10::1", false),
            ("100::1", false),
            ("::ffff:0:a00:1", false),
        ];
        let guard = Guard::default();
        for (ip, public) in table {
            assert_eq!(guard.permits(ip.parse().expect("ip")), public, "{ip}");
        }
    }

    #[test]
    fn allowed_networks_open_exactly_what_they_list() {
        let guard = Guard::parse(" 127.0.0.0/8, 10.9.9.9 ,fd00::/8").expect("parses");
        for (ip, ok) in [
            ("127.0.0.1", true),
            ("10.9.9.9", true),
            ("10.9.9.8", false),
            ("fd00::1", true),
            ("fc00::1", false),
            ("::ffff:127.0.0.1", true),
        ] {
            assert_eq!(guard.permits(ip.parse().expect("ip")), ok, "{ip}");
        }
        assert!(Guard::parse("").expect("empty").allowed.is_empty());
        let err = Guard::parse("127.0.0.0/8,localhost").expect_err("not a network");
        assert!(
            err.contains("HOOKLINE_ALLOWED_NETWORKS") && err.contains("localhost"),
            "{err}"
        );
    }

    #[test]
    fn literal_addresses_in_urls_are_checked_before_connecting() {
        let refuses = |guard: &Guard, url: &str| {
            refuses_literal(guard, &reqwest::Url::parse(url).expect("a URL"))
        };
        let guard = Guard::default();
        assert!(refuses(&guard, "http://127.0.0.1:9000/hook"));
        assert!(refuses(&guard, "http://[::1]/hook"));
        assert!(refuses(&guard, "http://169.254.169.254/latest/meta-data"));
        assert!(!refuses(&guard, "https://example.com/hook"));
        assert!(!refuses(&guard, "https://8.8.8.8/hook"));
        let open = Guard::parse("127.0.0.0/8").expect("parses");
        assert!(!refuses(&open, "http://127.0.0.1:9000/hook"));
    }

    #[tokio::test]
    async fn names_are_refused_after_resolution() {
        let resolver = GuardedResolver(Arc::new(Guard::default()));
        let refused = resolver
            .resolve("localhost".parse().expect("name"))
            .await
            .err()
            .expect("localhost is loopback");
        assert!(is_refusal(refused.as_ref()));
        let open = GuardedResolver(Arc::new(Guard::parse("127.0.0.0/8,::1").expect("parses")));
        let addrs: Vec<SocketAddr> = open
            .resolve("localhost".parse().expect("name"))
            .await
            .expect("allowed")
            .collect();
        assert!(!addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback()));
    }
}
