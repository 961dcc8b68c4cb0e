//! The one rule for addresses invokd calls on a client's word (input files, webhooks): never
//! this machine, private networks, link-local (cloud metadata) or any other address that is
//! not globally reachable, unless allowed. An address is internal when it is in the IANA
//! special-purpose registries (IPv4 and IPv6, through `iprfc`'s copy of them), is multicast,
//! or (IPv6) is outside global unicast `2000::/3`; an IPv6 address that embeds an IPv4 one
//! (mapped, translated, compatible, NAT64, 6to4, Teredo) is judged by the IPv4 address.
//!
//! The rule is applied twice: to a URL when it is given (a clear 422), and to every address a
//! host resolves to when a connection is made ([`client`]'s resolver), so that a name that
//! resolves elsewhere later (DNS rebinding) reaches nothing internal either.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
};

use iprfc::RFC6890;

fn is_internal_v4(ip: Ipv4Addr) -> bool {
    RFC6890.contains(&ip) || ip.is_multicast()
}

/// The IPv4 addresses an IPv6 address carries, by the forms that embed one; empty if none.
fn embedded_v4(ip: Ipv6Addr) -> Vec<Ipv4Addr> {
    let s = ip.segments();
    let last = Ipv4Addr::from(u128::from(ip) as u32);
    match s {
        // IPv4-mapped ::ffff:0:0/96 and IPv4-translated ::ffff:0:0:0/96.
        [0, 0, 0, 0, 0, 0xffff, ..] | [0, 0, 0, 0, 0xffff, 0, ..] => vec![last],
        // IPv4-compatible ::/96 (not :: and ::1, which are themselves).
        [0, 0, 0, 0, 0, 0, ..] if s[6] != 0 => vec![last],
        // NAT64's well-known prefix 64:ff9b::/96.
        [0x64, 0xff9b, 0, 0, 0, 0, ..] => vec![last],
        // 6to4 2002::/16: the IPv4 address follows the prefix.
        [0x2002, a, b, ..] => vec![Ipv4Addr::from((u32::from(a) << 16) | u32::from(b))],
        // Teredo 2001::/32: the server's address, and the client's, stored inverted.
        [0x2001, 0, a, b, ..] => vec![
            Ipv4Addr::from((u32::from(a) << 16) | u32::from(b)),
            Ipv4Addr::from(!u32::from(last)),
        ],
        _ => Vec::new(),
    }
}

/// Whether a request to `ip` must be refused unless private addresses are allowed.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_internal_v4(v4),
        IpAddr::V6(v6) => {
            let carried = embedded_v4(v6);
            if !carried.is_empty() {
                return carried.into_iter().any(is_internal_v4);
            }
            let global_unicast = (v6.segments()[0] & 0xe000) == 0x2000;
            !global_unicast || RFC6890.contains(&v6)
        }
    }
}

fn refusal(host: &str, ip: IpAddr) -> String {
    format!(
        "{host} resolves to the internal address {ip}; it is not allowed (see --allow-private-urls)"
    )
}

/// Refuses a URL whose host is or resolves to an internal address, with a message that says so.
/// Connections made through [`client`] check every address again when they are made.
pub async fn check_public(url: &reqwest::Url) -> Result<(), String> {
    let host = url.host_str().ok_or("the URL has no host")?;
    let port = url.port_or_known_default().unwrap_or(443);
    let addrs = tokio::net::lookup_host((host.trim_matches(|c| c == '[' || c == ']'), port))
        .await
        .map_err(|e| format!("cannot resolve {host}: {e}"))?;
    for a in addrs {
        if is_internal(a.ip()) {
            return Err(refusal(host, a.ip()));
        }
    }
    Ok(())
}

/// A URL invokd may call: http(s), and public unless `allow_private`.
pub async fn check_url(value: &str, allow_private: bool) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(value).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("must be an http(s) URL, not {}", url.scheme()));
    }
    if !allow_private {
        check_public(&url).await?;
    }
    Ok(url)
}

/// Resolves names as the system does, keeping only addresses that are not internal: a name
/// with none left fails to resolve, so no connection to it is made.
struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let all: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = all
                .iter()
                .copied()
                .filter(|a| !is_internal(a.ip()))
                .collect();
            match (public.is_empty(), all.first()) {
                (true, Some(a)) => Err(refusal(&host, a.ip()).into()),
                _ => Ok(Box::new(public.into_iter()) as reqwest::dns::Addrs),
            }
        })
    }
}

/// A client builder for calls to addresses clients name: unless `allow_private`, every name is
/// resolved through the rule at connect time. (A URL naming an address itself resolves nothing:
/// callers check it with [`check_url`] or [`check_public`] before each call.)
pub fn client(allow_private: bool) -> reqwest::ClientBuilder {
    let builder = reqwest::Client::builder();
    if allow_private {
        builder
    } else {
        builder.dns_resolver(Arc::new(PublicOnly))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_recognised() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.0.1",
            "169.254.169.254",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "100.64.0.1",
            "0.1.2.3",
            "192.0.0.1",
            "198.18.0.1",
            "240.0.0.1",
            "255.255.255.255",
            "224.0.0.1",
            "192.0.2.1",
            "ff02::1",
            "ff0e::1",
            // Embedded IPv4, judged by what it embeds.
            "64:ff9b::7f00:1",
            "2002:7f00:1::",
            "2002:a9fe:a9fe::",
            "::127.0.0.1",
            "::ffff:0:7f00:1",
            "2001:0:4136:e378:8000:63bf:80ff:fffe", // Teredo, client 127.0.0.1
            // Other special or unallocated IPv6 space.
            "fec0::1",
            "64:ff9b:1::1",
            "2001:db8::1",
            "2001:2::1",
            "100::1",
            "4000::1",
        ] {
            assert!(is_internal(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "2606:4700:4700::1111",
            "64:ff9b::808:808",
            "2002:808:808::",
            "::ffff:8.8.8.8",
        ] {
            assert!(!is_internal(ip.parse().unwrap()), "{ip}");
        }
    }

    #[tokio::test]
    async fn names_that_resolve_internally_are_not_connected_to() {
        let client = client(false).build().unwrap();
        // Port 9 (discard) is never served here; the refusal comes before any connection.
        let err = client.get("http://localhost:9/x").send().await.unwrap_err();
        let chain = format!("{err:?}");
        assert!(chain.contains("internal address"), "{chain}");
        assert!(
            check_public(&"http://localhost/x".parse().unwrap())
                .await
                .is_err()
        );
    }
}
