//! Endpoint safety: which URLs the pusher may call. An endpoint must be an `https` URL (plain
//! `http` only with `EVENTFLOW_PUSH_ALLOW_PRIVATE=true`) and must not reach loopback, private,
//! link-local, shared, multicast or unspecified addresses (IPv4 and IPv6, including IPv4
//! addresses mapped into or embedded in IPv6), unless the same flag allows them. The admin
//! service checks the URL and IP-literal hosts when a subscription is written; the pusher checks
//! every address a host name resolves to when it connects, so a name that later resolves
//! somewhere private (DNS rebinding) is still refused.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why an endpoint may not be called.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Not an absolute http(s) URL with a host.
    #[error("not an http(s) URL with a host: {0}")]
    Malformed(String),
    /// Plain http without the allow-private flag.
    #[error("https required (plain http needs EVENTFLOW_PUSH_ALLOW_PRIVATE=true)")]
    PlainHttp,
    /// The host is or resolves to a non-public address.
    #[error("{0} is a loopback, private or link-local address (allowed only with EVENTFLOW_PUSH_ALLOW_PRIVATE=true)")]
    Private(IpAddr),
}

/// A checked endpoint: its URL and where to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The URL as configured (the request target).
    pub uri: http::Uri,
    /// Host name or IP literal (without IPv6 brackets), for DNS, SNI and the `host` header.
    pub host: String,
    /// The port (from the URL, else 443 / 80).
    pub port: u16,
    /// Whether TLS is used.
    pub https: bool,
}

/// Checks an endpoint URL by its form: scheme (http only when `allow_private`), host, and an
/// IP-literal host's address class. Host names are checked when resolved ([`check_ip`]).
pub fn check_endpoint(url: &str, allow_private: bool) -> Result<Endpoint, Refused> {
    let uri: http::Uri = url.parse().map_err(|e: http::uri::InvalidUri| Refused::Malformed(e.to_string()))?;
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") if allow_private => false,
        Some("http") => return Err(Refused::PlainHttp),
        _ => return Err(Refused::Malformed("scheme must be http or https".into())),
    };
    let authority = uri.authority().ok_or_else(|| Refused::Malformed("no host".into()))?;
    if authority.as_str().contains('@') {
        return Err(Refused::Malformed("user info is not allowed".into()));
    }
    let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_string();
    if host.is_empty() {
        return Err(Refused::Malformed("no host".into()));
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        check_ip(ip, allow_private)?;
    }
    let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
    Ok(Endpoint { uri, host, port, https })
}

/// Refuses a non-public address unless `allow_private`.
pub fn check_ip(ip: IpAddr, allow_private: bool) -> Result<(), Refused> {
    if allow_private || is_public(ip) { Ok(()) } else { Err(Refused::Private(ip)) }
}

/// Whether an address is a public unicast one (what a webhook may reach by default).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
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
        || a == 0 // "this network"
        || (a == 100 && (64..128).contains(&b)) // shared address space (carrier-grade NAT)
        || (a == 192 && b == 0 && ip.octets()[2] == 0) // IETF protocol assignments
        || a >= 240) // reserved
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    let segments = ip.segments();
    // NAT64 (64:ff9b::/96) embeds an IPv4 address in the last 32 bits.
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return is_public_v4(Ipv4Addr::from(u32::from(segments[6]) << 16 | u32::from(segments[7])));
    }
    // IPv4-compatible (::a.b.c.d, deprecated) likewise.
    if segments[..6] == [0; 6] && !ip.is_unspecified() && !ip.is_loopback() {
        return is_public_v4(Ipv4Addr::from(u32::from(segments[6]) << 16 | u32::from(segments[7])));
    }
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || ip.is_unique_local()
        || ip.is_unicast_link_local()
        || (segments[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
        || (segments[0] == 0x2001 && segments[1] == 0x0db8)) // documentation
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn classifies_addresses() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "fc00::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a00:1",
            "::127.0.0.1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private} must not be public");
        }
        for public in ["8.8.8.8", "1.1.1.1", "2606:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"] {
            assert!(is_public(public.parse().unwrap()), "{public} is public");
        }
    }

    #[test]
    fn checks_urls() {
        let e = check_endpoint("https://example.com/hook", false).unwrap();
        assert_eq!((e.host.as_str(), e.port, e.https), ("example.com", 443, true));
        assert_eq!(check_endpoint("http://example.com/", false).unwrap_err(), Refused::PlainHttp);
        assert_eq!(check_endpoint("http://example.com:8080/", true).unwrap().port, 8080);
        assert!(matches!(check_endpoint("https://127.0.0.1/", false), Err(Refused::Private(_))));
        assert!(matches!(check_endpoint("https://[::1]:8443/", false), Err(Refused::Private(_))));
        assert_eq!(check_endpoint("https://[::1]:8443/", true).unwrap().host, "::1");
        assert!(matches!(check_endpoint("ftp://example.com/", true), Err(Refused::Malformed(_))));
        assert!(matches!(check_endpoint("https://u:p@example.com/", true), Err(Refused::Malformed(_))));
        assert!(matches!(check_endpoint("/relative", true), Err(Refused::Malformed(_))));
    }
}
