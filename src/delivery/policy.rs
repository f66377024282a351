//! The endpoint policy: which addresses webhookd may connect to.
//!
//! Checked on the *resolved* address, at connect time, so a hostname that resolves into a
//! denied network is refused as surely as a literal address.
//!
//! The unspecified addresses ("this host": `0.0.0.0/8` and `::/128`) are refused whatever
//! the lists say: Linux connects them to the local host, so a deny list that covers the
//! loopback networks would otherwise be bypassed by `http://0.0.0.0/`, `http://0/` or
//! `http://[::]/`.

use std::net::{IpAddr, Ipv6Addr};

use ipnet::IpNet;

/// Allow and deny lists of networks.
#[derive(Debug, Clone, Default)]
pub struct EndpointPolicy {
    deny: Vec<IpNet>,
    allow: Vec<IpNet>,
}

impl EndpointPolicy {
    /// A policy refusing `deny`, and (when `allow` is not empty) anything outside `allow`.
    pub fn new(deny: Vec<IpNet>, allow: Vec<IpNet>) -> Self {
        Self { deny, allow }
    }

    /// True when a connection to `ip` is permitted.
    pub fn allows(&self, ip: IpAddr) -> bool {
        // An IPv4-mapped IPv6 address is judged as the IPv4 address it carries.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        if is_unspecified(ip) || self.deny.iter().any(|n| n.contains(&ip)) {
            return false;
        }
        self.allow.is_empty() || self.allow.iter().any(|n| n.contains(&ip))
    }
}

/// True for `0.0.0.0/8` and `::`, which are never a valid endpoint address.
fn is_unspecified(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.octets()[0] == 0,
        IpAddr::V6(v6) => v6 == Ipv6Addr::UNSPECIFIED,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn deny_wins_and_allow_restricts() {
        let p = EndpointPolicy::new(nets(&["169.254.0.0/16", "fe80::/10"]), vec![]);
        assert!(!p.allows("169.254.169.254".parse().unwrap()));
        assert!(!p.allows("::ffff:169.254.1.1".parse().unwrap()));
        assert!(!p.allows("fe80::1".parse().unwrap()));
        assert!(p.allows("127.0.0.1".parse().unwrap()));
        let p = EndpointPolicy::new(nets(&["127.0.0.2/32"]), nets(&["127.0.0.0/8"]));
        assert!(p.allows("127.0.0.1".parse().unwrap()));
        assert!(!p.allows("127.0.0.2".parse().unwrap()));
        assert!(!p.allows("10.0.0.1".parse().unwrap()));
    }

    #[test]
    fn this_host_is_refused_whatever_the_lists() {
        let open = EndpointPolicy::default();
        let allow_all = EndpointPolicy::new(vec![], nets(&["0.0.0.0/0", "::/0"]));
        for p in [&open, &allow_all] {
            for ip in [
                "0.0.0.0",
                "0.1.2.3",
                "0.255.255.255",
                "::",
                "::ffff:0.0.0.0",
            ] {
                assert!(!p.allows(ip.parse().unwrap()), "{ip}");
            }
            for ip in ["1.0.0.0", "127.0.0.1", "::1", "::2", "10.0.0.1"] {
                assert!(p.allows(ip.parse().unwrap()), "{ip}");
            }
        }
    }
}
