//! What a request tells us, believing forwarded headers only from trusted proxies.

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;
use sha2::{Digest, Sha256};

use crate::config::Cidr;
use crate::store::SessionKey;

/// Whether `peer` may speak for the client through `X-Forwarded-*` / `X-Original-*`.
pub fn is_trusted(peer: &SocketAddr, trusted: &[Cidr]) -> bool {
    let ip = peer.ip().to_canonical();
    trusted.iter().any(|c| c.contains(&ip))
}

pub fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// The client address: walk `X-Forwarded-For` from the right, skipping trusted proxies,
/// when the peer itself is trusted; otherwise the TCP peer.
pub fn client_ip(peer: &SocketAddr, headers: &HeaderMap, trusted: &[Cidr]) -> IpAddr {
    let peer_ip = peer.ip().to_canonical();
    if !is_trusted(peer, trusted) {
        return peer_ip;
    }
    let mut last_trusted = peer_ip;
    // Several headers count as one list, in order.
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    for hop in hops.iter().rev() {
        let Ok(ip) = hop.parse::<IpAddr>() else {
            return last_trusted;
        };
        let ip = ip.to_canonical();
        if !trusted.iter().any(|c| c.contains(&ip)) {
            return ip;
        }
        last_trusted = ip;
    }
    last_trusted
}

/// The host the browser used for this request: `X-Forwarded-Host` from a trusted proxy,
/// else `Host`. Lower-case, without port.
pub fn request_host(peer: &SocketAddr, headers: &HeaderMap, trusted: &[Cidr]) -> Option<String> {
    let raw = if is_trusted(peer, trusted) {
        header(headers, "x-forwarded-host").or_else(|| header(headers, "host"))
    } else {
        header(headers, "host")
    }?;
    let raw = raw.split(',').next()?.trim();
    Some(strip_port(raw).to_ascii_lowercase())
}

/// `https` unless a trusted proxy says otherwise.
pub fn request_scheme(peer: &SocketAddr, headers: &HeaderMap, trusted: &[Cidr]) -> &'static str {
    if is_trusted(peer, trusted)
        && header(headers, "x-forwarded-proto").is_some_and(|p| p.eq_ignore_ascii_case("http"))
    {
        "http"
    } else {
        "https"
    }
}

pub fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') && p.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    }
}

/// Values of every cookie called `name` (a browser may send several).
pub fn cookies<'a>(headers: &'a HeaderMap, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    headers
        .get_all("cookie")
        .into_iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(move |pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then_some(v.trim_matches('"'))
        })
}

/// A session id is 43 base64url characters (256 bits); anything else is ignored.
pub fn session_key(cookie_value: &str) -> Option<SessionKey> {
    if cookie_value.len() != 43
        || !cookie_value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return None;
    }
    Some(Sha256::digest(cookie_value.as_bytes()).into())
}

/// A new 256-bit session id, base64url.
pub fn new_session_id() -> String {
    use base64::Engine;
    let mut b = [0u8; 32];
    crate::users::hash::random_bytes(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// Browsers get redirects; scripts and API clients get 401.
pub fn is_browser(headers: &HeaderMap) -> bool {
    if header(headers, "x-requested-with").is_some_and(|v| v.eq_ignore_ascii_case("XMLHttpRequest"))
    {
        return false;
    }
    match header(headers, "accept") {
        Some(a) => {
            a.contains("text/html")
                || a.split(',')
                    .next()
                    .is_some_and(|f| f.trim().starts_with("*/*"))
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn trusted() -> Vec<Cidr> {
        vec![
            Cidr::parse("127.0.0.0/8").unwrap(),
            Cidr::parse("172.18.0.0/16").unwrap(),
        ]
    }

    #[test]
    fn client_ip_believes_only_trusted_hops() {
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("6.6.6.6, 10.1.1.1, 172.18.0.5"),
        );
        let proxy: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        assert_eq!(
            client_ip(&proxy, &h, &trusted()),
            "10.1.1.1".parse::<IpAddr>().unwrap()
        );
        let stranger: SocketAddr = "192.168.1.50:5000".parse().unwrap();
        assert_eq!(
            client_ip(&stranger, &h, &trusted()),
            "192.168.1.50".parse::<IpAddr>().unwrap()
        );
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:1".parse().unwrap();
        assert!(is_trusted(&mapped, &trusted()));
    }

    #[test]
    fn cookie_and_session_key_parsing() {
        let mut h = HeaderMap::new();
        let id = new_session_id();
        h.insert(
            "cookie",
            HeaderValue::from_str(&format!("a=1; halos_session={id}; b=2")).unwrap(),
        );
        let got: Vec<_> = cookies(&h, "halos_session").collect();
        assert_eq!(got, vec![id.as_str()]);
        assert!(session_key(&id).is_some());
        assert!(session_key("short").is_none());
        assert!(session_key(&"a".repeat(42).add_char('!')).is_none());
    }

    trait AddChar {
        fn add_char(self, c: char) -> String;
    }
    impl AddChar for String {
        fn add_char(mut self, c: char) -> String {
            self.push(c);
            self
        }
    }

    #[test]
    fn browser_detection_follows_authelia() {
        let mut h = HeaderMap::new();
        h.insert(
            "accept",
            HeaderValue::from_static("text/html,application/xhtml+xml"),
        );
        assert!(is_browser(&h));
        h.insert(
            "x-requested-with",
            HeaderValue::from_static("XMLHttpRequest"),
        );
        assert!(!is_browser(&h));
        let mut h = HeaderMap::new();
        h.insert("accept", HeaderValue::from_static("application/json"));
        assert!(!is_browser(&h));
        h.insert("accept", HeaderValue::from_static("*/*"));
        assert!(is_browser(&h));
        assert!(!is_browser(&HeaderMap::new()));
    }

    #[test]
    fn ports_are_stripped() {
        assert_eq!(strip_port("halos.local:443"), "halos.local");
        assert_eq!(strip_port("[::1]:8080"), "::1");
        assert_eq!(strip_port("halos.local"), "halos.local");
    }
}
