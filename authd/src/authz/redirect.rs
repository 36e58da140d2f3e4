//! Redirect-target safety (`rd`, `targetURL`, logout targets, portal overrides) and the
//! choice of cookie domain for a forward-auth target.
//!
//! A target is followed only when, after one strict pass over the raw string and one parse:
//! - it is at most [`MAX_REDIRECT_LEN`] bytes and has no control character, whitespace,
//!   invisible formatting character, backslash, or percent-encoded control character or
//!   backslash anywhere (the URL parser would silently strip or reinterpret them);
//! - it is absolute, `scheme://authority…` with the scheme `https` or `wss` (`http`/`ws`
//!   only when the matching domain allows it: its portal URL is itself `http://`);
//! - the authority has no userinfo (`@`) and no percent-escape, the port (any, since HaLOS
//!   serves apps on their own ports) is decimal, the host has no trailing dot or empty label,
//!   and the host the parser produces is exactly the host that was written, lower-cased
//!   (no IDNA mapping of fullwidth or compatibility characters, no numeric IPv4 shorthand,
//!   no non-canonical IPv6);
//! - the host equals a configured domain or ends with `.` + that domain, compared on the
//!   ASCII (punycode) form; an IP literal only equals a domain that is that exact address.
//!
//! Relative targets are refused here; a caller that wants portal-relative paths handles
//! them itself.

use std::net::IpAddr;

use url::{Host, Url};

use crate::config::CookieDomainConfig;

/// Longest redirect target considered (bytes); longer ones are refused.
pub const MAX_REDIRECT_LEN: usize = 2048;

/// One domain redirects may point into (a cookie domain).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedirectDomain {
    /// Lower-case ASCII domain (IDNA-normalised, no trailing dot), or an IP address.
    pub domain: String,
    /// `http://` and `ws://` targets are allowed under this domain (its portal URL is
    /// `http://`: the explicit LAN opt-in).
    pub allow_http: bool,
}

/// The set of domains redirect targets may point into, in configuration order.
#[derive(Debug, Clone, Default)]
pub struct SafeRedirect {
    domains: Vec<(RedirectDomain, Option<IpAddr>)>,
}

impl SafeRedirect {
    /// Normalises each domain (trimmed, lower-case, IDNA to ASCII, one trailing dot removed;
    /// an IP address in standard text form, IPv6 without brackets;
    /// an IP address matches only that exact address, IPv4-mapped forms included).
    pub fn new(domains: Vec<RedirectDomain>) -> SafeRedirect {
        let domains = domains
            .into_iter()
            .map(|d| {
                let raw = d.domain.trim();
                let raw = raw.strip_suffix('.').unwrap_or(raw);
                let unbracketed = raw
                    .strip_prefix('[')
                    .and_then(|r| r.strip_suffix(']'))
                    .unwrap_or(raw);
                if let Ok(ip) = unbracketed.parse::<IpAddr>() {
                    let domain = RedirectDomain {
                        domain: ip.to_string(),
                        allow_http: d.allow_http,
                    };
                    return (domain, Some(ip));
                }
                let lower = raw.to_lowercase();
                let domain = idna::domain_to_ascii(&lower).unwrap_or(lower);
                (
                    RedirectDomain {
                        domain,
                        allow_http: d.allow_http,
                    },
                    None,
                )
            })
            .collect();
        SafeRedirect { domains }
    }

    /// From `session.cookies`: `allow_http` when the cookie's `authelia_url` is `http://`.
    pub fn from_cookie_domains(cookies: &[CookieDomainConfig]) -> SafeRedirect {
        SafeRedirect::new(
            cookies
                .iter()
                .map(|c| RedirectDomain {
                    domain: c.domain.clone(),
                    allow_http: c.authelia_url.scheme() == "http",
                })
                .collect(),
        )
    }

    /// The normalised domains, in order.
    pub fn domains(&self) -> impl Iterator<Item = &RedirectDomain> {
        self.domains.iter().map(|(d, _)| d)
    }

    /// The normalised URL when `target` is a safe redirect target (see the module docs).
    pub fn check(&self, target: &str) -> Option<Url> {
        if target.is_empty() || target.len() > MAX_REDIRECT_LEN || has_forbidden_chars(target) {
            return None;
        }
        let (scheme, rest) = target.split_once(':')?;
        let secure = if scheme.eq_ignore_ascii_case("https") || scheme.eq_ignore_ascii_case("wss") {
            true
        } else if scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("ws") {
            false
        } else {
            return None;
        };
        let rest = rest.strip_prefix("//")?;
        let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
        let host = split_authority(authority)?;
        let url = Url::parse(target).ok()?;
        if !url.username().is_empty() || url.password().is_some() {
            return None;
        }
        let ip = match url.host()? {
            Host::Domain(parsed) => {
                if parsed != expected_ascii_host(host)? {
                    return None;
                }
                None
            }
            Host::Ipv4(v4) => {
                if v4.to_string() != host {
                    return None;
                }
                Some(IpAddr::V4(v4))
            }
            Host::Ipv6(v6) => {
                let inner = host.strip_prefix('[')?.strip_suffix(']')?;
                if v6.to_string() != inner.to_ascii_lowercase() {
                    return None;
                }
                Some(IpAddr::V6(v6))
            }
        };
        let parsed_host = url.host_str()?;
        let allowed = self.domains.iter().any(|(d, dip)| {
            (secure || d.allow_http)
                && match (ip, dip) {
                    (Some(a), Some(b)) => a == *b,
                    (None, None) => within(parsed_host, &d.domain),
                    _ => false,
                }
        });
        allowed.then_some(url)
    }

    /// The domain test of [`Self::check`] for a plain lower-case host name (no IP address;
    /// see [`super::target`]): it equals or lies under a configured domain that allows the
    /// scheme (`secure`: https).
    pub fn covers(&self, host: &str, secure: bool) -> bool {
        self.plain_host_domains(host, secure).1
    }

    /// For a plain lower-case host name, in one pass: the position of its cookie domain (as
    /// [`Self::domain_index_for`] gives it) and whether it is covered ([`Self::covers`]).
    pub fn plain_host_domains(&self, host: &str, secure: bool) -> (Option<usize>, bool) {
        let mut first = None;
        let mut covered = false;
        for (i, (d, dip)) in self.domains.iter().enumerate() {
            // Both sides are lower case here: a byte comparison is enough.
            let under = dip.is_none()
                && host.ends_with(d.domain.as_str())
                && (host.len() == d.domain.len()
                    || host.as_bytes()[host.len() - d.domain.len() - 1] == b'.');
            if under {
                first = first.or(Some(i));
                covered |= secure || d.allow_http;
            }
        }
        (first, covered)
    }

    /// The first configured domain (in order) that `host` (no port) equals or lies under;
    /// `None` for anything that is not a plain host name or IP address.
    pub fn cookie_domain_for(&self, host: &str) -> Option<&RedirectDomain> {
        self.domain_index_for(host).map(|i| &self.domains[i].0)
    }

    /// Like [`Self::cookie_domain_for`], the position of the domain in configuration order.
    pub fn domain_index_for(&self, host: &str) -> Option<usize> {
        // A name (the usual case) with no `:` that ends in a letter is no IP address.
        if host.contains(':') || !host.ends_with(|c: char| c.is_ascii_alphabetic()) {
            let unbracketed = host
                .strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .unwrap_or(host);
            if let Ok(ip) = unbracketed.parse::<IpAddr>() {
                return self.domains.iter().position(|(_, dip)| *dip == Some(ip));
            }
        }
        if !is_ldh_host(host) {
            return None;
        }
        self.domains
            .iter()
            .position(|(d, dip)| dip.is_none() && within(host, &d.domain))
    }
}

/// Characters that must not appear anywhere in a target, raw or percent-encoded.
fn has_forbidden_chars(s: &str) -> bool {
    if s.chars()
        .any(|c| c.is_control() || c.is_whitespace() || c == '\\' || is_invisible(c))
    {
        return true;
    }
    let b = s.as_bytes();
    b.windows(3).any(|w| {
        w[0] == b'%'
            && match (hex(w[1]), hex(w[2])) {
                (Some(h), Some(l)) => {
                    let v = h << 4 | l;
                    v < 0x20 || v == 0x7f || v == b'\\'
                }
                _ => false,
            }
    })
}

/// Format characters that render as nothing (soft hyphen, zero-width, bidi controls, BOM).
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{ad}'
            | '\u{34f}'
            | '\u{61c}'
            | '\u{115f}'
            | '\u{1160}'
            | '\u{180e}'
            | '\u{200b}'..='\u{200f}'
            | '\u{202a}'..='\u{202e}'
            | '\u{2060}'..='\u{206f}'
            | '\u{3164}'
            | '\u{fe00}'..='\u{fe0f}'
            | '\u{feff}'
            | '\u{ffa0}'
            | '\u{fff0}'..='\u{fff8}'
    )
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Splits `host[:port]` / `[v6][:port]`, refusing userinfo, escapes and odd ports.
/// Returns the raw host (with brackets for IPv6).
fn split_authority(authority: &str) -> Option<&str> {
    if authority.is_empty() || authority.contains(['@', '%']) {
        return None;
    }
    let (host, port) = if authority.starts_with('[') {
        let end = authority.find(']')?;
        let (h, rest) = authority.split_at(end + 1);
        match rest {
            "" => (h, None),
            _ => (h, Some(rest.strip_prefix(':')?)),
        }
    } else {
        match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if let Some(p) = port
        && (p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    if host.is_empty() || host.ends_with('.') || host.starts_with('.') || host.contains("..") {
        return None;
    }
    Some(host)
}

/// The ASCII host the URL parser must have produced from the raw `host`: the raw host
/// lower-cased when it is ASCII letters/digits/hyphens/dots; for a Unicode host its
/// punycode form, but only when that form maps back to exactly what was written (so
/// fullwidth, compatibility and invisible characters that IDNA would fold are refused).
fn expected_ascii_host(host: &str) -> Option<String> {
    if host.is_ascii() {
        return is_ldh_host(host).then(|| host.to_ascii_lowercase());
    }
    if host
        .chars()
        .any(|c| c.is_ascii() && !(c.is_ascii_alphanumeric() || c == '-' || c == '.'))
    {
        return None;
    }
    let ascii = idna::domain_to_ascii_strict(host).ok()?;
    let (unicode, result) = idna::domain_to_unicode(&ascii);
    result.ok()?;
    let written: String = host
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .collect::<String>();
    (unicode == written).then_some(ascii)
}

/// Letters, digits, hyphens and dots; labels 1..=63 bytes; at most 253 bytes.
fn is_ldh_host(host: &str) -> bool {
    if host.is_empty() || host.len() > 253 {
        return false;
    }
    let mut label = 0;
    for b in host.bytes() {
        if b == b'.' {
            if label == 0 {
                return false;
            }
            label = 0;
        } else if b.is_ascii_alphanumeric() || b == b'-' {
            label += 1;
            if label > 63 {
                return false;
            }
        } else {
            return false;
        }
    }
    label > 0
}

/// `host` equals `domain` or ends with `.domain` (ASCII case-insensitive, label boundary).
fn within(host: &str, domain: &str) -> bool {
    if host.len() == domain.len() {
        return host.eq_ignore_ascii_case(domain);
    }
    host.len() > domain.len()
        && host.is_char_boundary(host.len() - domain.len())
        && host[host.len() - domain.len()..].eq_ignore_ascii_case(domain)
        && host.as_bytes()[host.len() - domain.len() - 1] == b'.'
}

#[cfg(test)]
mod tests {
    use super::*;

    fn safe() -> SafeRedirect {
        SafeRedirect::new(vec![
            RedirectDomain {
                domain: "halos.local".into(),
                allow_http: false,
            },
            RedirectDomain {
                domain: "lan.test".into(),
                allow_http: true,
            },
            RedirectDomain {
                domain: "Bücher.example".into(),
                allow_http: false,
            },
        ])
    }

    /// Every one of these must be refused.
    fn hostile() -> Vec<String> {
        let mut v: Vec<String> = [
            // empty, relative, scheme-relative, backslash and whitespace tricks (R2)
            "",
            "/settings",
            "settings",
            "//evil.example/",
            "///evil.example",
            "////evil.example/",
            "/\\evil.example",
            "\\/evil.example",
            "\\\\evil.example",
            "/%09/evil.example",
            "/%0a/evil.example",
            "/%0d/evil.example",
            "/%2f%2fevil.example",
            "/%5cevil.example",
            "/./\\evil.example",
            "/../..//evil.example",
            "https:evil.example",
            "https:/evil.example",
            "https:\\\\evil.example",
            "https:/\\halos.local/",
            "https:\\/halos.local/",
            "https:///halos.local/",
            "https ://halos.local/",
            "https//halos.local/",
            "%68%74%74%70%73%3a%2f%2fevil.example",
            "/\t/evil.example",
            "https://halos.local\\.evil.example/",
            "https://halos.local/\\evil.example",
            // foreign host (R1)
            "https://evil.example/",
            "https://evil.example/https://halos.local/",
            "https://evil.example/?.halos.local",
            "wss://evil.example/",
            // userinfo / authority confusion (R3)
            "https://halos.local@evil.example/",
            "https://app.halos.local:443@evil.example/",
            "https://app.halos.local%40evil.example/",
            "https://x:y@evil.example#@app.halos.local/",
            "https://evil.example\\@app.halos.local/",
            "https://:@evil.example\\@app.halos.local",
            "https://user:pw@halos.local/",
            "https://user@halos.local/",
            "https://@halos.local/",
            "https://halos.local%2f@evil.example",
            "http://lan.test@evil.example/",
            // domain-suffix confusion (R4)
            "https://halos.local.evil.example/",
            "https://HALOS.LOCAL.evil.example/",
            "https://evilhalos.local/",
            "https://app.halos.localevil.example/",
            "https://app.halos.local.evil.example/",
            "https://app.halos.local%2eevil.example/",
            "https://evil.example%23.halos.local/",
            "https://evil.example?.halos.local/",
            "https://evil.example#.halos.local/",
            "https://evil.example%5c.halos.local/",
            "https://app.halos.local%00.evil.example/",
            "http://lan.test.evil.example/",
            // percent-encoded host tricks
            "https://halos%2elocal/",
            "https://%68alos.local/",
            "https://halos.local%09/",
            // Unicode / IDN / numeric hosts (R5)
            "https://h\u{430}los.local/",
            "https://app.halos.loca\u{217c}/",
            "https://\u{ff41}\u{ff50}\u{ff50}.halos.local/",
            "https://app\u{3002}halos.local/",
            "https://hal\u{ad}os.local/",
            "https://\u{c0}pp.halos.local/",
            "https://xn--hlos-7ve.local/",
            "https://192.168.1.10/",
            "https://3232235786/",
            "https://0xc0.0xa8.1.10/",
            "https://[::1]/",
            "https://[::ffff:c0a8:10a]/",
            "https://app.halos.local./",
            "https://halos.local./",
            "https://app..halos.local/",
            "https://.halos.local/",
            "https://b\u{fc}cher.example.evil/",
            // dangerous schemes and downgrade (R6)
            "javascript:alert(1)",
            "JaVaScRiPt:alert(1)",
            "java%0ascript:alert(1)",
            "javascript://halos.local/%0aalert(1)",
            "data:text/html;base64,PHNjcmlwdD4=",
            "vbscript:x",
            "file:///etc/passwd",
            "ftp://halos.local/",
            "http://app.halos.local/",
            "ws://app.halos.local/",
            "http://b\u{fc}cher.example/",
            // header injection and control characters anywhere (R7)
            "https://halos.local/\r\nSet-Cookie: x=1",
            "https://halos.local/%0d%0aSet-Cookie:%20C=evil",
            "https://halos.local/x%0aLocation:%20https://evil.example",
            "https://halos.local/x%00",
            "https://halos.local/x%7f",
            "https://halos.local/x%5c",
            "https://halos.local/ a",
            " https://halos.local/",
            "https://halos.local/\t",
            "https://halos.local\u{0}/",
            "\u{feff}https://halos.local/",
            "https://halos.local/\u{202e}gpj.exe",
            "https://halos.local/\u{200b}",
            "https://halos.local/\u{85}",
            "https://halos.local/\u{a0}",
            // odd ports
            "https://halos.local:/",
            "https://halos.local:99999/",
            "https://halos.local:80a/",
            "https://halos.local:443:443/",
            "https://halos.local:-1/",
            "https://halos.local:+443/",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // overlong (R9)
        v.push(format!(
            "https://halos.local/{}",
            "a".repeat(MAX_REDIRECT_LEN)
        ));
        v.push(format!(
            "https://halos.local/?q={}",
            "%41".repeat(16 * 1024)
        ));
        v
    }

    #[test]
    fn hostile_targets_are_refused() {
        let s = safe();
        let list = hostile();
        assert!(list.len() >= 60, "{} hostile inputs", list.len());
        let accepted: Vec<_> = list
            .iter()
            .filter_map(|t| s.check(t).map(|u| format!("{t:?} -> {u}")))
            .collect();
        assert!(accepted.is_empty(), "accepted:\n{}", accepted.join("\n"));
    }

    #[test]
    fn good_targets_are_accepted_and_normalised() {
        let s = safe();
        #[rustfmt::skip]
        let cases = [
            ("https://halos.local/", "https://halos.local/"),
            ("https://halos.local", "https://halos.local/"),
            ("https://app.halos.local/x?y=1#f", "https://app.halos.local/x?y=1#f"),
            ("https://APP.Halos.Local/", "https://app.halos.local/"),
            ("HTTPS://halos.local/a", "https://halos.local/a"),
            ("https://a.b.halos.local/", "https://a.b.halos.local/"),
            ("https://halos.local:4431/", "https://halos.local:4431/"),
            ("https://halos.local:443/sso/", "https://halos.local/sso/"),
            ("wss://halos.local/ws", "wss://halos.local/ws"),
            ("https://halos.local/a%20b?q=a%2Fb&r=%E2%82%AC", "https://halos.local/a%20b?q=a%2Fb&r=%E2%82%AC"),
            ("https://halos.local/\u{e9}", "https://halos.local/%C3%A9"),
            ("https://halos.local/p?next=https://evil.example/", "https://halos.local/p?next=https://evil.example/"),
            ("https://halos.local/#@evil.example", "https://halos.local/#@evil.example"),
            ("http://lan.test/", "http://lan.test/"),
            ("http://app.lan.test:8080/x", "http://app.lan.test:8080/x"),
            ("ws://app.lan.test/", "ws://app.lan.test/"),
            ("https://lan.test/", "https://lan.test/"),
            ("https://b\u{fc}cher.example/", "https://xn--bcher-kva.example/"),
            ("https://shop.b\u{fc}cher.example/", "https://shop.xn--bcher-kva.example/"),
            ("https://xn--bcher-kva.example/", "https://xn--bcher-kva.example/"),
        ];
        for (input, want) in cases {
            let got = s.check(input).map(|u| u.to_string());
            assert_eq!(got.as_deref(), Some(want), "{input:?}");
        }
    }

    #[test]
    fn ip_literals_only_for_that_exact_configured_address() {
        let s = SafeRedirect::new(vec![
            RedirectDomain {
                domain: "192.168.1.10".into(),
                allow_http: false,
            },
            RedirectDomain {
                domain: "[FD00::1]".into(),
                allow_http: true,
            },
        ]);
        assert_eq!(
            s.check("https://192.168.1.10:8443/x")
                .map(|u| u.to_string()),
            Some("https://192.168.1.10:8443/x".into())
        );
        assert_eq!(
            s.check("http://[fd00::1]/").map(|u| u.to_string()),
            Some("http://[fd00::1]/".into())
        );
        for bad in [
            "https://192.168.1.11/",
            "https://3232235786/",
            "https://192.168.001.10/",
            "https://x.192.168.1.10/",
            "http://192.168.1.10/",
            "https://[fd00:0::1]/",
            "https://[::ffff:192.168.1.10]/",
        ] {
            assert_eq!(s.check(bad), None, "{bad}");
        }
        assert_eq!(
            s.cookie_domain_for("192.168.1.10")
                .map(|d| d.domain.as_str()),
            Some("192.168.1.10")
        );
        assert_eq!(
            s.cookie_domain_for("[fd00::1]").map(|d| d.domain.as_str()),
            Some("fd00::1")
        );
        assert_eq!(s.cookie_domain_for("10.0.0.1"), None);
        assert_eq!(s.cookie_domain_for("::ffff:192.168.1.10"), None);
    }

    #[test]
    fn domains_are_normalised() {
        let s = SafeRedirect::new(vec![
            RedirectDomain {
                domain: "  Halos.Local. ".into(),
                allow_http: false,
            },
            RedirectDomain {
                domain: "B\u{fc}cher.Example".into(),
                allow_http: true,
            },
        ]);
        let got: Vec<_> = s
            .domains()
            .map(|d| (d.domain.as_str(), d.allow_http))
            .collect();
        assert_eq!(
            got,
            [("halos.local", false), ("xn--bcher-kva.example", true)]
        );
    }

    #[test]
    fn from_cookie_domains_allows_http_only_for_http_portals() {
        let cookie = |domain: &str, portal: &str| CookieDomainConfig {
            domain: domain.into(),
            authelia_url: Url::parse(portal).expect("url"),
            default_redirection_url: None,
            name: None,
        };
        let s = SafeRedirect::from_cookie_domains(&[
            cookie("halos.local", "https://halos.local/sso"),
            cookie("boat.lan", "http://boat.lan/sso"),
        ]);
        assert!(s.check("http://halos.local/").is_none());
        assert!(s.check("https://halos.local/").is_some());
        assert!(s.check("http://boat.lan/").is_some());
    }

    #[test]
    fn cookie_domain_for_picks_the_first_suffix_match() {
        let s = SafeRedirect::new(
            ["halos.local", "lan.test", "sub.halos.local"]
                .iter()
                .map(|d| RedirectDomain {
                    domain: d.to_string(),
                    allow_http: false,
                })
                .collect(),
        );
        #[rustfmt::skip]
        let cases = [
            ("halos.local", Some("halos.local")),
            ("app.halos.local", Some("halos.local")),
            ("x.sub.halos.local", Some("halos.local")),
            ("HALOS.Local", Some("halos.local")),
            ("lan.test", Some("lan.test")),
            ("a.b.lan.test", Some("lan.test")),
            ("evilhalos.local", None),
            ("halos.local.evil.example", None),
            ("halos.local.", None),
            ("", None),
            ("local", None),
            ("evil.example/.halos.local", None),
            ("evil@x.halos.local", None),
            ("a..halos.local", None),
            ("h\u{430}los.local", None),
            ("192.168.1.1", None),
        ];
        for (host, want) in cases {
            assert_eq!(
                s.cookie_domain_for(host).map(|d| d.domain.as_str()),
                want,
                "{host:?}"
            );
        }
    }

    #[test]
    fn within_is_label_safe() {
        assert!(within("halos.local", "halos.local"));
        assert!(within("a.halos.local", "halos.local"));
        assert!(!within("ahalos.local", "halos.local"));
        assert!(!within("halos.local", "a.halos.local"));
        assert!(!within("local", "halos.local"));
    }
}
