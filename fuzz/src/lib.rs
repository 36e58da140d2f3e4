//! The fuzzed properties, one function per target. `fuzz_targets/*.rs` hand them libFuzzer's
//! inputs; the tests below replay `fuzz/corpus/<target>/` on stable Rust.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use authd::authz::redirect::{RedirectDomain, SafeRedirect};
use authd::http::authz::{Flavor, ForwardHeaders, parse_target, resolve_target};
use authd::http::request::{cookies, session_key};
use http::{HeaderMap, HeaderValue, Method};

fn redirects() -> SafeRedirect {
    SafeRedirect::new(vec![
        RedirectDomain {
            domain: "halos.local".into(),
            allow_http: false,
        },
        RedirectDomain {
            domain: "lan.test".into(),
            allow_http: true,
        },
    ])
}

/// A followed target is an absolute http(s)/ws(s) URL without userinfo, on a configured
/// domain at a label boundary (plain http only where allowed), and the raw text had no
/// backslash, whitespace or control character.
pub fn redirect(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Some(url) = redirects().check(text) else {
        return;
    };
    assert!(text.len() <= authd::authz::redirect::MAX_REDIRECT_LEN);
    assert!(
        !text
            .chars()
            .any(|c| c == '\\' || c.is_whitespace() || c.is_control()),
        "{text:?}"
    );
    assert!(
        url.username().is_empty() && url.password().is_none(),
        "{text:?}"
    );
    let host = url.host_str().unwrap();
    let within = |d: &str| host == d || host.ends_with(&format!(".{d}"));
    match url.scheme() {
        "https" | "wss" => assert!(within("halos.local") || within("lan.test"), "{text:?}"),
        "http" | "ws" => assert!(within("lan.test"), "{text:?}"),
        other => panic!("scheme {other} followed: {text:?}"),
    }
    assert!(host.is_ascii() && !host.ends_with('.'), "{text:?}");
    assert!(host.bytes().all(|b| !b.is_ascii_uppercase()), "{text:?}");
}

/// Any text: an error or a database whose names are safe for headers, never a panic.
pub fn users_file(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(db) = authd::users::UsersDb::parse(text, "fuzz.yml") else {
        return;
    };
    for u in db.iter() {
        assert!(!u.name.is_empty() && !u.name.contains(','), "{:?}", u.name);
        assert!(!u.name.chars().any(char::is_control), "{:?}", u.name);
        assert!(
            !u.displayname.chars().any(char::is_control),
            "{:?}",
            u.displayname
        );
        for g in &u.groups {
            assert!(!g.is_empty() && !g.contains(','), "group {g:?}");
            assert!(!g.chars().any(char::is_control), "group {g:?}");
        }
    }
}

/// Any text: an error or a client, never a panic.
pub fn snippet(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = authd::oidc::snippets::parse_snippet(text, Path::new("fuzz.yml"));
}

const FORWARDED: [&str; 6] = [
    "x-forwarded-method",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-uri",
    "x-original-url",
    "x-original-method",
];

/// Lines of the input become the forwarded headers (a line `N:value` appends another value
/// to header N). An accepted target is an http(s) URL with a host, no userinfo, no
/// fragment, and an upper-case method.
pub fn forward_headers(data: &[u8]) {
    let mut headers = HeaderMap::new();
    for (i, line) in data.split(|b| *b == b'\n').enumerate() {
        let (name, value) = match line {
            [d @ b'0'..=b'5', b':', rest @ ..] => (FORWARDED[usize::from(d - b'0')], rest),
            _ if i < FORWARDED.len() => (FORWARDED[i], line),
            _ => break,
        };
        if let Ok(v) = HeaderValue::from_bytes(value) {
            headers.append(name, v);
        }
    }
    for flavor in [Flavor::ForwardAuth, Flavor::AuthRequest, Flavor::Legacy] {
        plain_reading_agrees(flavor, &headers);
        let Ok(t) = parse_target(flavor, &headers, &Method::GET) else {
            continue;
        };
        assert!(matches!(t.url.scheme(), "http" | "https"), "{}", t.url);
        assert!(t.url.host_str().is_some_and(|h| !h.is_empty()), "{}", t.url);
        assert!(
            t.url.username().is_empty() && t.url.password().is_none(),
            "{}",
            t.url
        );
        assert!(t.url.fragment().is_none(), "{}", t.url);
        assert!(!t.method.is_empty() && t.method.bytes().all(|b| b.is_ascii_uppercase()));
    }
}

/// Forward auth's reading of the target (plain targets without the URL parser) decides as
/// the full path does (parse, then the redirect validator): both accept or both refuse, with
/// the same host, path and query, method, cookie domain and return URL.
pub fn plain_reading_agrees(flavor: Flavor, headers: &HeaderMap) {
    let f = ForwardHeaders::read(headers);
    let r = redirects();
    let fast = resolve_target(flavor, &f, &Method::GET, &r);
    let full = parse_target(flavor, headers, &Method::GET)
        .ok()
        .and_then(|t| Some((r.check(t.url.as_str())?, t.method)));
    match (fast, full) {
        (Ok(t), Some((url, method))) => {
            assert_eq!(Some(t.host.as_ref()), url.host_str(), "{url}");
            let path = match url.query() {
                Some(q) => format!("{}?{q}", url.path()),
                None => url.path().to_string(),
            };
            assert_eq!(t.path, path, "{url}");
            assert_eq!(t.method, method, "{url}");
            assert_eq!(t.cookie_domain, r.domain_index_for(url.host_str().unwrap()));
            assert_eq!(t.url(&r).as_deref(), Some(&url));
        }
        (Err(_), None) => {}
        (fast, full) => panic!("forward auth {:?}, full path {full:?}", fast.map(|t| t.path)),
    }
}

/// Cookie headers (one per input line): only well-formed 256-bit ids become session keys.
pub fn cookie(data: &[u8]) {
    let mut headers = HeaderMap::new();
    for line in data.split(|b| *b == b'\n') {
        if let Ok(v) = HeaderValue::from_bytes(line) {
            headers.append("cookie", v);
        }
    }
    for value in cookies(&headers, "halos_session") {
        if session_key(value).is_some() {
            assert_eq!(value.len(), 43, "{value:?}");
            assert!(
                value
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "{value:?}"
            );
        }
    }
}

#[cfg(test)]
mod corpus {
    //! Every committed seed still passes (the regression half of the fuzzing).
    use std::path::PathBuf;

    fn replay(target: &str, f: fn(&[u8])) {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("corpus")
            .join(target);
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            f(&std::fs::read(&path).unwrap());
            n += 1;
        }
        assert!(n > 0, "no seeds in {}", dir.display());
    }

    #[test]
    fn redirect() {
        replay("redirect", super::redirect);
    }
    #[test]
    fn users_file() {
        replay("users_file", super::users_file);
    }
    #[test]
    fn snippet() {
        replay("snippet", super::snippet);
    }
    #[test]
    fn forward_headers() {
        replay("forward_headers", super::forward_headers);
    }
    #[test]
    fn cookie() {
        replay("cookie", super::cookie);
    }
}
