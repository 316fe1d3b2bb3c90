//! Sets of IP networks (CIDR blocks) with a lookup cost that does not grow with the number
//! of blocks: one hash probe per distinct prefix length. Used by the blocklist (phase 3) and
//! by the trusted-proxy list that decides which `X-Forwarded-For` entries name the client.
//!
//! IPv4 addresses and blocks are stored as IPv4-mapped IPv6 (`::ffff:a.b.c.d`), so one table
//! serves both families and `::ffff:192.0.2.1` matches `192.0.2.0/24`.

use std::collections::HashSet;
use std::net::IpAddr;

use ipnet::IpNet;

/// A set of networks, grouped by prefix length.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetSet {
    /// (prefix length in the 128-bit space, the masked network addresses of that length),
    /// longest prefix first.
    by_len: Vec<(u8, HashSet<u128>)>,
    len: usize,
}

/// Parses `a.b.c.d/n`, `v6::/n` or a single address (a /32 or /128).
pub fn parse_net(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    if let Ok(net) = text.parse::<IpNet>() {
        if net.network() != net.addr() {
            return Err(format!(
                "{text:?} has host bits set (the network is {})",
                net.trunc()
            ));
        }
        return Ok(net);
    }
    text.parse::<IpAddr>()
        .map(IpNet::from)
        .map_err(|_| format!("{text:?} is neither an IP address nor a CIDR block"))
}

fn to_bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn mask(bits: u128, len: u8) -> u128 {
    match len {
        0 => 0,
        l => bits & (u128::MAX << (128 - u32::from(l))),
    }
}

impl NetSet {
    pub fn new(nets: impl IntoIterator<Item = IpNet>) -> Self {
        let mut set = NetSet::default();
        for net in nets {
            set.insert(net);
        }
        set
    }

    pub fn insert(&mut self, net: IpNet) {
        let len = match net {
            IpNet::V4(n) => n.prefix_len() + 96,
            IpNet::V6(n) => n.prefix_len(),
        };
        let key = mask(to_bits(net.network()), len);
        let slot = match self.by_len.iter().position(|(l, _)| *l == len) {
            Some(i) => i,
            None => {
                self.by_len.push((len, HashSet::new()));
                self.by_len.sort_by_key(|s| std::cmp::Reverse(s.0));
                self.by_len.iter().position(|(l, _)| *l == len).unwrap()
            }
        };
        if self.by_len[slot].1.insert(key) {
            self.len += 1;
        }
    }

    /// Whether any network of the set contains `ip`.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let bits = to_bits(ip);
        self.by_len
            .iter()
            .any(|(len, nets)| nets.contains(&mask(bits, *len)))
    }

    /// Distinct networks in the set.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// `ip` with its host bits past `prefix` cleared (IPv6 only; IPv4 is kept whole): one rate
/// limit key per IPv6 /64 by default, since a single client commonly holds a whole /64.
pub fn truncate_v6(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => {
            IpAddr::V6(mask(u128::from(v6), prefix.min(128)).into())
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(nets: &[&str]) -> NetSet {
        NetSet::new(nets.iter().map(|n| parse_net(n).unwrap()))
    }

    #[test]
    fn contains_by_prefix_in_both_families() {
        let s = set(&[
            "192.0.2.0/24",
            "198.51.100.7",
            "2001:db8::/32",
            "0.0.0.0/32",
        ]);
        assert_eq!(s.len(), 4);
        assert!(s.contains("192.0.2.200".parse().unwrap()));
        assert!(!s.contains("192.0.3.1".parse().unwrap()));
        assert!(s.contains("198.51.100.7".parse().unwrap()));
        assert!(!s.contains("198.51.100.8".parse().unwrap()));
        assert!(s.contains("2001:db8:ffff::1".parse().unwrap()));
        assert!(!s.contains("2001:db9::1".parse().unwrap()));
        // An IPv4-mapped IPv6 peer is the IPv4 client it maps.
        assert!(s.contains("::ffff:192.0.2.9".parse().unwrap()));
    }

    #[test]
    fn everything_and_nothing() {
        let all = set(&["0.0.0.0/0"]);
        assert!(all.contains("203.0.113.1".parse().unwrap()));
        assert!(!all.contains("2001:db8::1".parse().unwrap()));
        assert!(!NetSet::default().contains("203.0.113.1".parse().unwrap()));
    }

    #[test]
    fn duplicates_count_once_and_bad_blocks_are_named() {
        let s = set(&["10.0.0.0/8", "10.0.0.0/8"]);
        assert_eq!(s.len(), 1);
        assert!(parse_net("10.0.0.1/8").unwrap_err().contains("host bits"));
        assert!(parse_net("evil.example").unwrap_err().contains("neither"));
        assert!(parse_net("10.0.0.0/33").is_err());
    }

    #[test]
    fn v6_keys_are_truncated_and_v4_kept() {
        assert_eq!(
            truncate_v6("2001:db8:1:2:3:4:5:6".parse().unwrap(), 64),
            "2001:db8:1:2::".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            truncate_v6("192.0.2.1".parse().unwrap(), 64),
            "192.0.2.1".parse::<IpAddr>().unwrap()
        );
    }
}
