//! The forward-auth target in its plain form, read without the URL parser.
//!
//! Forward auth runs on every sub-request of every page, and almost every target it sees is
//! plain: a lower-case host name, maybe a port, and a path and query of ordinary URL
//! characters. For such a target the URL parser and the redirect validator
//! ([`super::redirect::SafeRedirect::check`]) would hand back exactly the host and path that
//! were written, so this module reads them directly and borrows them from the headers.
//!
//! Anything outside that grammar — upper case, IP literals, IDN or punycode, percent-escapes
//! in the path, dot segments, characters the URL parser would encode, userinfo, fragments,
//! odd ports — is *not* judged here: [`plain_forwarded`] and [`plain_url`] return `None` and
//! the caller takes the full path (parse, then validate), which decides as before. The fuzz
//! target `forward_headers` checks that both paths agree wherever this one answers.

/// A plain target: the pieces of an `http(s)` URL as the URL parser would produce them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlainTarget<'a> {
    /// `https` (else `http`).
    pub secure: bool,
    /// Lower-case host name (letters, digits, hyphens, dots), without port.
    pub host: &'a str,
    /// The port as written (decimal, at most 65535), if any.
    pub port: Option<&'a str>,
    /// Path and query (`/a/b?c=d`): starts with `/`.
    pub path: &'a str,
}

/// Longest plain target (scheme, host, port, path and query together); the redirect
/// validator refuses longer ones.
const MAX_PLAIN_LEN: usize = super::redirect::MAX_REDIRECT_LEN;

/// The target from Traefik/Caddy's `X-Forwarded-Proto`, `-Host` and `-Uri`.
pub fn plain_forwarded<'a>(proto: &str, host: &'a str, uri: &'a str) -> Option<PlainTarget<'a>> {
    let secure = scheme(proto)?;
    if proto.len() + 3 + host.len() + uri.len() > MAX_PLAIN_LEN {
        return None;
    }
    let (host, port) = plain_authority(host)?;
    plain_path(uri)?;
    Some(PlainTarget {
        secure,
        host,
        port,
        path: uri,
    })
}

/// The target from nginx's `X-Original-URL` (`scheme://host[:port]/path?query`).
pub fn plain_url(url: &str) -> Option<PlainTarget<'_>> {
    if url.len() > MAX_PLAIN_LEN {
        return None;
    }
    let colon = position(url, b':')?;
    let (proto, rest) = (&url[..colon], url[colon + 1..].strip_prefix("//")?);
    let secure = scheme(proto)?;
    let slash = position(rest, b'/')?;
    let (authority, path) = rest.split_at(slash);
    let (host, port) = plain_authority(authority)?;
    plain_path(path)?;
    Some(PlainTarget {
        secure,
        host,
        port,
        path,
    })
}

/// The first `byte` in `s` (a plain loop: these strings are short, and this runs per request).
fn position(s: &str, byte: u8) -> Option<usize> {
    s.bytes().position(|b| b == byte)
}

fn scheme(proto: &str) -> Option<bool> {
    match proto {
        "https" => Some(true),
        "http" => Some(false),
        _ => None,
    }
}

/// `host[:port]` with a plain host name and a decimal port of at most 65535.
fn plain_authority(authority: &str) -> Option<(&str, Option<&str>)> {
    let (host, port) = match position(authority, b':') {
        Some(i) => {
            let p = &authority[i + 1..];
            if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            p.parse::<u16>().ok()?;
            (&authority[..i], Some(p))
        }
        None => (authority, None),
    };
    plain_host(host).then_some((host, port))
}

/// A lower-case DNS name the URL parser keeps as written: labels of 1..=63 letters, digits
/// and inner hyphens (no `xn--`, no `--` in the third and fourth place), at most 253 bytes,
/// and a last label that starts with a letter (so it can never be read as an IPv4 address).
fn plain_host(host: &str) -> bool {
    if host.is_empty() || host.len() > 253 {
        return false;
    }
    let mut last = "";
    for label in host.split('.') {
        let b = label.as_bytes();
        if b.is_empty()
            || b.len() > 63
            || !b
                .iter()
                .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
            || b[0] == b'-'
            || b[b.len() - 1] == b'-'
            || (b.len() >= 4 && &b[2..4] == b"--")
        {
            return false;
        }
        last = label;
    }
    last.as_bytes()[0].is_ascii_lowercase()
}

/// Byte classes: RFC 3986 `pchar` without `%` (what a path segment may hold and the URL
/// parser keeps), and what a query may hold besides escapes (`'` excluded: the URL parser
/// encodes it in the queries of special schemes).
const PATH: u8 = 1;
const QUERY: u8 = 2;
const CLASSES: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'.' | b'_' | b'~' | b'!' | b'$' | b'&')
            || matches!(
                b,
                b'(' | b')' | b'*' | b'+' | b',' | b';' | b'=' | b':' | b'@' | b'\''
            )
        {
            t[c] = PATH;
            if b != b'\'' {
                t[c] |= QUERY;
            }
        }
        if b == b'/' || b == b'?' {
            t[c] |= QUERY;
        }
        c += 1;
    }
    t
};

/// A path of plain segments (no `.` or `..` segment), then an optional query of plain
/// characters, `/`, `?` and percent-escapes that decode to nothing the validator refuses.
fn plain_path(path_and_query: &str) -> Option<()> {
    let b = path_and_query.as_bytes();
    // `//` after the authority would be read as another authority by some parsers.
    if b.first() != Some(&b'/') || b.get(1) == Some(&b'/') {
        return None;
    }
    let mut segment_start = 1;
    let mut i = 1;
    while i <= b.len() {
        let c = b.get(i).copied();
        if matches!(c, None | Some(b'/' | b'?')) {
            if matches!(&b[segment_start..i], b"." | b"..") {
                return None;
            }
            if c != Some(b'/') {
                break;
            }
            segment_start = i + 1;
        } else if c.is_some_and(|c| CLASSES[usize::from(c)] & PATH == 0) {
            return None;
        }
        i += 1;
    }
    // The query, after the first `?`.
    let q = b.get(i + 1..).unwrap_or_default();
    let mut j = 0;
    while j < q.len() {
        let c = q[j];
        if c == b'%' {
            let hex = |k: usize| q.get(k).and_then(|c| (*c as char).to_digit(16));
            match (hex(j + 1), hex(j + 2)) {
                (Some(h), Some(l))
                    if (h << 4 | l) >= 0x20
                        && (h << 4 | l) != 0x7f
                        && (h << 4 | l) != u32::from(b'\\') => {}
                _ => return None,
            }
        } else if CLASSES[usize::from(c)] & QUERY == 0 {
            return None;
        }
        j += 1;
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_targets_are_read_as_written() {
        assert_eq!(
            plain_forwarded("https", "app.halos.local", "/dashboard?x=1"),
            Some(PlainTarget {
                secure: true,
                host: "app.halos.local",
                port: None,
                path: "/dashboard?x=1"
            })
        );
        assert_eq!(
            plain_url("http://app.halos.local:8080/a/b.txt?q=%20x&y=/z?"),
            Some(PlainTarget {
                secure: false,
                host: "app.halos.local",
                port: Some("8080"),
                path: "/a/b.txt?q=%20x&y=/z?"
            })
        );
        assert!(plain_url("https://signalk.halos.local/").is_some());
        assert!(plain_forwarded("https", "a-b.c9.local", "/.well-known/x").is_some());
    }

    #[test]
    fn anything_unusual_is_left_to_the_url_parser() {
        for (proto, host, uri) in [
            ("HTTPS", "app.halos.local", "/"),
            ("ftp", "app.halos.local", "/"),
            ("https", "App.halos.local", "/"),
            ("https", "192.168.1.10", "/"),
            ("https", "3232235786", "/"),
            ("https", "app.0xc0", "/"),
            ("https", "app.halos.123", "/"),
            ("https", "xn--hlos-7ve.local", "/"),
            ("https", "ab--c.local", "/"),
            ("https", "-app.local", "/"),
            ("https", "app-.local", "/"),
            ("https", "app..local", "/"),
            ("https", "app.local.", "/"),
            ("https", ".app.local", "/"),
            ("https", "[::1]", "/"),
            ("https", "app.local:", "/"),
            ("https", "app.local:65536", "/"),
            ("https", "app.local:123456", "/"),
            ("https", "app.local:8a", "/"),
            ("https", "user@app.local", "/"),
            ("https", "h\u{e9}.local", "/"),
            ("https", "app.local", ""),
            ("https", "app.local", "x"),
            ("https", "app.local", "//evil.example/"),
            ("https", "app.local", "/a/../b"),
            ("https", "app.local", "/a/./b"),
            ("https", "app.local", "/.."),
            ("https", "app.local", "/a%2e%2e/b"),
            ("https", "app.local", "/a%2fb"),
            ("https", "app.local", "/a b"),
            ("https", "app.local", "/a\\b"),
            ("https", "app.local", "/a#b"),
            ("https", "app.local", "/a\"b"),
            ("https", "app.local", "/a<b>"),
            ("https", "app.local", "/a{b}"),
            ("https", "app.local", "/a`b"),
            ("https", "app.local", "/a|b"),
            ("https", "app.local", "/caf\u{e9}"),
            ("https", "app.local", "/a?b#c"),
            ("https", "app.local", "/a?b c"),
            ("https", "app.local", "/a?it's"),
            ("https", "app.local", "/a?x=%0a"),
            ("https", "app.local", "/a?x=%7F"),
            ("https", "app.local", "/a?x=%5c"),
            ("https", "app.local", "/a?x=%"),
            ("https", "app.local", "/a?x=%4"),
            ("https", "app.local", "/a?x=%zz"),
        ] {
            assert_eq!(
                plain_forwarded(proto, host, uri),
                None,
                "{proto}://{host}{uri}"
            );
            assert_eq!(
                plain_url(&format!("{proto}://{host}{uri}")),
                None,
                "{proto}://{host}{uri}"
            );
        }
        let long = format!("/{}", "a".repeat(MAX_PLAIN_LEN));
        assert_eq!(plain_forwarded("https", "app.local", &long), None);
        assert_eq!(plain_url("https://app.local?x"), None);
        assert_eq!(plain_url("https://app.local"), None);
        assert_eq!(plain_url("https:/app.local/"), None);
    }
}
