//! Outbound requests to addresses clients name (input files, webhooks): never to this machine,
//! private networks, link-local (cloud metadata) or other internal ranges, unless allowed.

use std::net::IpAddr;

/// Addresses a fetch must not reach unless allowed: this machine, private networks, link-local
/// (cloud metadata at 169.254.169.254), and other non-global ranges.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.octets()[0] == 100 && (64..128).contains(&v4.octets()[1]) // CGNAT
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_internal(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local
                || (first & 0xffc0) == 0xfe80 // link-local
        }
    }
}

/// Refuses a URL whose host resolves to an internal address, with a message that says so.
/// (A host could resolve differently at connect time; the check narrows the window.)
pub async fn check_public(url: &reqwest::Url) -> Result<(), String> {
    let host = url.host_str().ok_or("the URL has no host")?;
    let port = url.port_or_known_default().unwrap_or(443);
    let addrs = tokio::net::lookup_host((host.trim_matches(|c| c == '[' || c == ']'), port))
        .await
        .map_err(|e| format!("cannot resolve {host}: {e}"))?;
    for a in addrs {
        if is_internal(a.ip()) {
            return Err(format!(
                "{host} resolves to the internal address {}; it is not allowed (see --allow-private-urls)",
                a.ip()
            ));
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
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "100.64.0.1",
        ] {
            assert!(is_internal(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "2606:4700:4700::1111"] {
            assert!(!is_internal(ip.parse().unwrap()), "{ip}");
        }
    }
}
