//! Who the client is behind a reverse proxy. `X-Forwarded-For` and
//! `Forwarded` are believed only when the TCP peer is one of
//! `server.trusted_proxies`; otherwise anyone could claim any address.

use std::net::{IpAddr, SocketAddr};

use actix_web::http::header::HeaderMap;
use ipnet::IpNet;

use crate::settings::SettingsError;

/// The trusted proxy networks.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Parses IPs and CIDRs; a bad entry names its key.
    pub fn parse(entries: &[String]) -> Result<Self, SettingsError> {
        let mut nets = Vec::with_capacity(entries.len());
        for (i, entry) in entries.iter().enumerate() {
            let net = entry
                .parse::<IpNet>()
                .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    SettingsError::new(
                        format!("server.trusted_proxies[{i}]"),
                        format!("{entry:?} is not an IP address or CIDR"),
                    )
                })?;
            nets.push(net);
        }
        Ok(TrustedProxies(nets))
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6)),
            v4 => v4,
        };
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client's address: the peer itself, or, when the peer is a trusted
    /// proxy, the nearest untrusted hop of the forwarding headers.
    pub fn client_addr(&self, peer: Option<SocketAddr>, headers: &HeaderMap) -> Option<String> {
        let peer = peer?;
        if !self.trusts(peer.ip()) {
            return Some(peer.to_string());
        }
        let hops = forwarded_for(headers);
        // Walk from the nearest hop back; the first one we do not trust is
        // the client (a proxy chain of trusted hops is skipped).
        for hop in hops.iter().rev() {
            match hop.parse::<IpAddr>() {
                Ok(ip) if self.trusts(ip) => continue,
                Ok(ip) => return Some(ip.to_string()),
                Err(_) => return Some(peer.to_string()),
            }
        }
        hops.first().map(|h| h.to_string()).or_else(|| Some(peer.to_string()))
    }
}

/// The `for=` hops of `Forwarded`, else the entries of `X-Forwarded-For`,
/// oldest first.
fn forwarded_for(headers: &HeaderMap) -> Vec<String> {
    let mut hops = Vec::new();
    for value in headers.get_all("forwarded").filter_map(|v| v.to_str().ok()) {
        for element in value.split(',') {
            for pair in element.split(';') {
                let Some((key, val)) = pair.trim().split_once('=') else {
                    continue;
                };
                if key.trim().eq_ignore_ascii_case("for") {
                    hops.push(strip_forwarded_node(val.trim()));
                }
            }
        }
    }
    if !hops.is_empty() {
        return hops;
    }
    for value in headers.get_all("x-forwarded-for").filter_map(|v| v.to_str().ok()) {
        hops.extend(value.split(',').map(|h| h.trim().to_owned()).filter(|h| !h.is_empty()));
    }
    hops
}

/// `"[2001:db8::1]:4711"` -> `2001:db8::1`, `192.0.2.1:80` -> `192.0.2.1`.
fn strip_forwarded_node(node: &str) -> String {
    let node = node.trim_matches('"');
    if let Some(rest) = node.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest).to_owned();
    }
    match node.split_once(':') {
        Some((ip, _port)) if !ip.contains(':') => ip.to_owned(),
        _ => node.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderName, HeaderValue};

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        map
    }

    fn peer(s: &str) -> Option<SocketAddr> {
        Some(s.parse().expect("socket addr"))
    }

    #[test]
    fn headers_from_an_untrusted_peer_are_ignored() {
        let t = TrustedProxies::parse(&[]).expect("empty");
        let h = headers(&[("x-forwarded-for", "1.2.3.4")]);
        assert_eq!(
            t.client_addr(peer("10.0.0.9:5000"), &h).as_deref(),
            Some("10.0.0.9:5000")
        );
    }

    #[test]
    fn a_trusted_proxy_names_the_client() {
        let t = TrustedProxies::parse(&["127.0.0.1".into(), "10.0.0.0/8".into()]).expect("valid");
        let h = headers(&[("x-forwarded-for", "203.0.113.7, 10.1.1.1")]);
        assert_eq!(
            t.client_addr(peer("127.0.0.1:40000"), &h).as_deref(),
            Some("203.0.113.7")
        );
        let h = headers(&[("forwarded", "for=\"[2001:db8::1]:4711\";proto=http, for=10.2.2.2")]);
        assert_eq!(
            t.client_addr(peer("127.0.0.1:40000"), &h).as_deref(),
            Some("2001:db8::1")
        );
        let none = headers(&[]);
        assert_eq!(
            t.client_addr(peer("127.0.0.1:40000"), &none).as_deref(),
            Some("127.0.0.1:40000")
        );
    }

    #[test]
    fn a_bad_entry_names_its_key() {
        let e = TrustedProxies::parse(&["127.0.0.1".into(), "nope".into()]).expect_err("invalid");
        assert_eq!(e.key, "server.trusted_proxies[1]");
    }
}
