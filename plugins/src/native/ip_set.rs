//! A set of addresses and CIDR ranges, v4 and v6, parsed at apply time: what
//! `ip-restriction` lists and `real-ip` trusts.

use std::net::IpAddr;

use ipnet::IpNet;

/// Addresses and ranges; an address is a range of one.
#[derive(Debug, Clone, Default)]
pub struct IpSet {
    nets: Vec<IpNet>,
}

impl IpSet {
    /// Parses `["10.0.0.1", "192.168.0.0/16", "::1"]`; an error names the element of
    /// `field` (`whitelist[1]: ...`).
    pub fn parse(field: &str, items: &[String]) -> Result<IpSet, String> {
        let mut nets = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let net = match item.parse::<IpNet>() {
                // APISIX accepts host bits in a range (`192.168.0.1/24`).
                Ok(net) => net.trunc(),
                Err(_) => match item.parse::<IpAddr>() {
                    Ok(ip) => IpNet::from(ip),
                    Err(_) => {
                        return Err(format!(
                            "{field}[{i}]: `{item}` is not an IP address or CIDR range"
                        ))
                    }
                },
            };
            nets.push(net);
        }
        Ok(IpSet { nets })
    }

    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    /// Whether `ip` is in the set; an IPv4-mapped v6 address counts as its v4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        self.nets.iter().any(|n| n.contains(&ip))
    }
}

/// An address as a header or variable carries it: `1.2.3.4`, `1.2.3.4:80`, `::1`,
/// `[::1]:80`, with surrounding blanks.
pub fn parse_addr(text: &str) -> Option<IpAddr> {
    let text = text.trim();
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip);
    }
    text.parse::<std::net::SocketAddr>().ok().map(|a| a.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[&str]) -> IpSet {
        let items: Vec<String> = items.iter().map(|s| s.to_string()).collect();
        IpSet::parse("whitelist", &items).unwrap()
    }

    #[test]
    fn addresses_and_ranges_of_both_families() {
        let s = set(&["127.0.0.1", "192.168.0.1/24", "2001:db8::/32"]);
        for yes in [
            "127.0.0.1",
            "192.168.0.200",
            "2001:db8::7",
            "::ffff:127.0.0.1",
        ] {
            assert!(s.contains(yes.parse().unwrap()), "{yes}");
        }
        for no in ["127.0.0.2", "192.168.1.1", "2001:db9::1", "::1"] {
            assert!(!s.contains(no.parse().unwrap()), "{no}");
        }
        let items = vec!["10.0.0.1".to_string(), "10.0.0.300".to_string()];
        let err = IpSet::parse("blacklist", &items).unwrap_err();
        assert!(err.starts_with("blacklist[1]"), "{err}");
    }

    #[test]
    fn addresses_with_ports_and_blanks() {
        assert_eq!(parse_addr(" 1.2.3.4 "), "1.2.3.4".parse().ok());
        assert_eq!(parse_addr("1.2.3.4:80"), "1.2.3.4".parse().ok());
        assert_eq!(parse_addr("[::1]:80"), "::1".parse().ok());
        assert_eq!(parse_addr("unknown"), None);
    }
}
