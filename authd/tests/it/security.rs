//! The attack catalogue (shared/reference/security.md), entry by entry, against the real
//! daemon. Test names carry the catalogue id; tests/SECURITY-COVERAGE.md maps every entry.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::common::{Daemon, HttpResponse, http};

const PW: &str = "correct horse";
const PORTAL: &str = "https://halos.local/sso/";
const JSON: (&str, &str) = ("Content-Type", "application/json");
const HOST: (&str, &str) = ("X-Forwarded-Host", "halos.local");
const BROWSER: (&str, &str) = ("Accept", "text/html,application/xhtml+xml");

fn digest(pw: &str, memory: u32, iterations: u32) -> String {
    let cfg = authd::config::Argon2Config {
        memory,
        iterations,
        parallelism: 1,
        ..Default::default()
    };
    authd::users::hash_password(pw.as_bytes(), &cfg).unwrap()
}

/// ann (users), boss (admins), dis (disabled), noemail (no email, no display name).
fn users_yaml(h: &str) -> String {
    format!(
        "users:\n  ann:\n    displayname: Ann\n    email: ann@halos.local\n    password: '{h}'\n    groups: [users]\n  boss:\n    displayname: Boss\n    email: boss@halos.local\n    password: '{h}'\n    groups: [admins, users]\n  dis:\n    displayname: Dis\n    password: '{h}'\n    disabled: true\n  noemail:\n    password: '{h}'\n"
    )
}

const SITE: &str = r#"
session:
  cookies:
    - domain: halos.local
      authelia_url: https://halos.local/sso
access_control:
  default_policy: deny
  rules:
    - domain: app.halos.local
      resources: ['^/public/']
      policy: bypass
    - domain: app.halos.local
      policy: one_factor
    - domain: admin.halos.local
      subject: [['group:admins']]
      policy: one_factor
    - domain: admin.halos.local
      policy: deny
    - domain: ['a.b.halos.local']
      policy: one_factor
"#;

fn daemon() -> Daemon {
    Daemon::start(&users_yaml(&digest(PW, 1024, 1)), SITE)
}

fn json_login(d: &Daemon, user: &str, pw: &str, target: Option<&str>) -> HttpResponse {
    let mut body = serde_json::json!({"username": user, "password": pw});
    if let Some(t) = target {
        body["targetURL"] = t.into();
    }
    d.req("POST", "/api/firstfactor", &[JSON, HOST], &body.to_string())
}

fn session(d: &Daemon, user: &str) -> String {
    let r = json_login(d, user, PW, None);
    assert_eq!(r.status, 200, "{}", r.body);
    r.cookie("halos_session").expect("session cookie")
}

fn fa(d: &Daemon, host: &str, uri: &str, extra: &[(&str, &str)]) -> HttpResponse {
    let mut h: Vec<(&str, &str)> = vec![
        ("X-Forwarded-Method", "GET"),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Host", host),
        ("X-Forwarded-Uri", uri),
    ];
    h.extend_from_slice(extra);
    d.req("GET", "/api/authz/forward-auth", &h, "")
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Percent-decodes once (as a query string would be).
fn decode_once(s: &str) -> String {
    url::form_urlencoded::parse(format!("v={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// Sends `raw` as-is and returns what came back (status 0 when the daemon hung up).
fn raw(d: &Daemon, raw: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(d.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let _ = s.write_all(raw);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

fn healthy(d: &Daemon) {
    assert_eq!(d.get("/api/health").status, 200, "daemon must stay up");
}

/// The CSRF cookie and token of the sign-in page.
fn csrf(d: &Daemon) -> (String, String) {
    let page = d.req("GET", "/", &[HOST], "");
    let cookie = page.cookie("__Host-halos_csrf").expect("csrf cookie");
    let token = cookie.split_once('=').unwrap().1.to_string();
    (cookie, token)
}

fn form_login(d: &Daemon, user: &str, rd: &str) -> HttpResponse {
    let (cookie, token) = csrf(d);
    let body = format!(
        "username={}&password={}&rd={}&rm=GET&csrf={token}",
        enc(user),
        enc(PW),
        enc(rd)
    );
    d.req(
        "POST",
        "/login",
        &[
            HOST,
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Cookie", &cookie),
        ],
        &body,
    )
}

/// R1–R7 and R9 payloads, as the catalogue writes them.
const HOSTILE_TARGETS: &[&str] = &[
    // R1
    "https://evil.example/",
    // R2
    "//evil.example/",
    "///evil.example",
    "////evil.example/",
    "/\\evil.example",
    "\\/evil.example",
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
    "%68%74%74%70%73%3a%2f%2fevil.example",
    "/\t/evil.example",
    // R3
    "https://app.halos.local@evil.example/",
    "https://app.halos.local:443@evil.example/",
    "https://app.halos.local%40evil.example/",
    "https://x:y@evil.example#@app.halos.local/",
    "https://evil.example\\@app.halos.local/",
    "https://:@evil.example\\@app.halos.local",
    // R4
    "https://halos.local.evil.example/",
    "https://evilhalos.local/",
    "https://app.halos.localevil.example/",
    "https://app.halos.local.evil.example/",
    "https://app.halos.local%2eevil.example/",
    "https://evil.example%23.halos.local/",
    "https://evil.example?.halos.local/",
    "https://evil.example%5c.halos.local/",
    "https://app.halos.local%00.evil.example/",
    // R5
    "https://h\u{430}los.local/",
    "https://app.halos.loca\u{217C}/",
    "https://\u{FF41}\u{FF50}\u{FF50}.halos.local/",
    "https://xn--hlos-7ve.local/",
    "https://192.168.1.10/",
    "https://3232235786/",
    "https://[::1]/",
    "https://app.halos.local./",
    // R6
    "javascript:alert(1)",
    "JaVaScRiPt:alert(1)",
    "java%0ascript:alert(1)",
    "data:text/html;base64,PHNjcmlwdD4=",
    "vbscript:x",
    "file:///etc/passwd",
    "http://app.halos.local/",
    // R7
    "/x%0d%0aSet-Cookie:%20C=evil",
    "/x%0aLocation:%20https://evil.example",
    "https://app.halos.local/%0d%0aSet-Cookie:%20C=attacker",
];

fn hostile_variants() -> Vec<String> {
    let mut all = Vec::new();
    for t in HOSTILE_TARGETS {
        all.push(t.to_string());
        let once = decode_once(t);
        if once != *t {
            all.push(once);
        }
    }
    // R9: 16 KiB
    all.push(format!("https://app.halos.local/{}", "a".repeat(16 * 1024)));
    all
}

/// R1-a/b, R2, R3, R4, R5, R6, R7, R9: no hostile target is followed by the JSON login,
/// the form login, or the logout; the default is used and nothing hostile is reflected raw.
#[test]
fn sec_r1_to_r7_r9_hostile_redirect_targets_are_never_followed() {
    let d = daemon();
    let default_logout = d.req("GET", "/logout", &[HOST], "");
    assert_eq!(default_logout.header("location"), Some(PORTAL));
    for t in hostile_variants() {
        let r = json_login(&d, "ann", PW, Some(&t));
        assert_eq!(r.status, 200, "{t:?}: {}", r.body);
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v, serde_json::json!({"status": "OK"}), "{t:?} followed");

        let r = form_login(&d, "ann", &t);
        assert_eq!(r.status, 303, "{t:?}");
        assert_eq!(r.header("location"), Some(PORTAL), "{t:?}");
        assert_eq!(
            r.headers
                .iter()
                .filter(|(k, _)| k.eq_ignore_ascii_case("location"))
                .count(),
            1
        );
        assert!(
            r.headers
                .iter()
                .all(|(k, v)| !k.eq_ignore_ascii_case("set-cookie") || !v.starts_with("C=")),
            "{t:?}: injected cookie"
        );

        let r = d.req("GET", &format!("/logout?rd={}", enc(&t)), &[HOST], "");
        assert_eq!(r.status, 302, "{t:?}");
        assert_eq!(r.header("location"), Some(PORTAL), "{t:?}");

        // The sign-in page reflects rd only escaped.
        let page = d.req("GET", &format!("/?rd={}", enc(&t)), &[HOST], "");
        assert!(page.status == 200 || page.status == 414, "{t:?}");
        if t.contains(['<', '"', '\'']) {
            assert!(!page.body.contains(&t), "{t:?} reflected raw");
        }
        let lower = page.body.to_ascii_lowercase();
        for attr in ["href=\"", "action=\"", "src=\""] {
            for scheme in ["javascript:", "data:", "vbscript:"] {
                assert!(!lower.contains(&format!("{attr}{scheme}")), "{t:?}");
            }
        }
    }
    healthy(&d);
}

/// R1-d and R4 positives: safe targets are followed (host normalised to lower case).
#[test]
fn sec_r1_r4_safe_targets_are_followed() {
    let d = daemon();
    for (t, want) in [
        (
            "https://app.halos.local/x?y=1#f",
            "https://app.halos.local/x?y=1#f",
        ),
        ("https://APP.Halos.Local/", "https://app.halos.local/"),
        ("https://a.b.halos.local/", "https://a.b.halos.local/"),
    ] {
        let r = json_login(&d, "ann", PW, Some(t));
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v["data"]["redirect"], want, "{t}");
        let r = form_login(&d, "ann", t);
        assert_eq!(r.header("location"), Some(want), "{t}");
    }
}

/// R1-c: forward auth for a host outside every cookie domain is 400 without a Location.
#[test]
fn sec_r1_c_forward_auth_for_a_foreign_host_is_400() {
    let d = daemon();
    let r = fa(&d, "evil.example", "/", &[BROWSER]);
    assert_eq!(r.status, 400);
    assert!(r.header("location").is_none());
}

/// H1-a: headers from a peer outside trusted_proxies are not believed, even with a valid
/// session (DESIGN §6 answers 400 where the catalogue says 403: never 2xx).
#[test]
fn sec_h1_a_untrusted_peer_with_a_valid_cookie_is_refused() {
    let d = Daemon::start_with_server(
        &users_yaml(&digest(PW, 1024, 1)),
        SITE,
        "  trusted_proxies: [10.0.0.0/8]\n",
    );
    // The portal itself is reached directly (Host header): a real session.
    let body = serde_json::json!({"username": "ann", "password": PW}).to_string();
    let (status, text) = raw(
        &d,
        format!(
            "POST {}/api/firstfactor HTTP/1.1\r\nHost: halos.local\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            d.prefix,
            body.len()
        )
        .as_bytes(),
    );
    assert_eq!(status, 200, "{text}");
    let cookie = text
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let r = fa(&d, "app.halos.local", "/", &[("Cookie", &cookie)]);
    assert_eq!(r.status, 400);
    assert!(r.header("remote-user").is_none());
}

/// H1-b, H1-c: group rules hold; several or comma-joined forwarded values are 400.
#[test]
fn sec_h1_b_c_forwarded_header_values_are_single_and_checked() {
    let d = daemon();
    let ann = session(&d, "ann");
    let c = ("Cookie", ann.as_str());
    assert_eq!(fa(&d, "admin.halos.local", "/", &[c]).status, 403);
    assert_eq!(fa(&d, "app.halos.local", "/", &[c]).status, 200);
    for host in [
        "app.halos.local, admin.halos.local",
        "app.halos.local,admin.halos.local",
        "evil.example@app.halos.local",
        "app.halos.local/x",
        "app.halos.local#",
    ] {
        assert_eq!(fa(&d, host, "/", &[c]).status, 400, "{host}");
    }
    // A second X-Forwarded-Host (or -Uri, -Proto) header next to the proxy's.
    for extra in [
        ("X-Forwarded-Host", "admin.halos.local"),
        ("X-Forwarded-Uri", "/public/x"),
        ("X-Forwarded-Proto", "http"),
    ] {
        assert_eq!(fa(&d, "app.halos.local", "/", &[c, extra]).status, 400);
    }
    let r = d.req(
        "GET",
        "/api/authz/forward-auth",
        &[
            ("X-Forwarded-Method", "GET"),
            ("X-Forwarded-Proto", "javascript"),
            ("X-Forwarded-Host", "app.halos.local"),
            c,
        ],
        "",
    );
    assert_eq!(r.status, 400);
}

/// H1-d: the issuer and every endpoint come from the configuration, never from Host.
#[test]
fn sec_h1_d_discovery_ignores_host_headers() {
    let extra =
        format!("{SITE}identity_providers:\n  oidc:\n    issuer: https://halos.local/sso\n");
    let d = Daemon::start(&users_yaml(&digest(PW, 1024, 1)), &extra);
    let (status, text) = raw(
        &d,
        format!(
            "GET {}/.well-known/openid-configuration HTTP/1.1\r\nHost: evil.example\r\nX-Forwarded-Host: evil.example\r\nX-Forwarded-Proto: http\r\nConnection: close\r\n\r\n",
            d.prefix
        )
        .as_bytes(),
    );
    assert_eq!(status, 200, "{text}");
    let body = text.split_once("\r\n\r\n").unwrap().1;
    let doc: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(doc["issuer"], "https://halos.local/sso");
    assert!(!body.contains("evil.example"));
    for (k, v) in doc.as_object().unwrap() {
        if k.ends_with("_endpoint") || k == "jwks_uri" {
            assert!(
                v.as_str().unwrap().starts_with("https://halos.local/sso/"),
                "{k}"
            );
        }
    }
}

/// H2: the decision is made on the canonical host and the normalised path without query;
/// fragments and malformed URIs are refused; no User-Agent bypass.
#[test]
fn sec_h2_rule_matching_uses_the_canonical_target() {
    let d = daemon();
    let ann = session(&d, "ann");
    let c = ("Cookie", ann.as_str());
    assert_eq!(fa(&d, "ADMIN.halos.local", "/", &[c]).status, 403);
    assert_eq!(fa(&d, "admin.HALOS.local", "/", &[c]).status, 403);
    // Anonymous: /public/ is bypass, nothing else on app.halos.local is.
    assert_eq!(fa(&d, "app.halos.local", "/public/x", &[]).status, 200);
    for uri in [
        "/public/../admin",
        "/public/%2e%2e/admin",
        "/public/%2E%2E/admin",
        "/public/./../admin",
        "/admin?x=/public/",
        "/admin#/public/",
        "/admin\\..\\public/",
        "//public/",
        "public/",
    ] {
        let r = fa(&d, "app.halos.local", uri, &[]);
        assert!(
            r.status == 400 || r.status == 401,
            "{uri}: {} (must not be the anonymous bypass)",
            r.status
        );
        assert!(r.header("remote-user").is_none());
    }
    let probe = fa(
        &d,
        "app.halos.local",
        "/",
        &[("User-Agent", "kube-probe/1.0")],
    );
    let browser = fa(&d, "app.halos.local", "/", &[]);
    assert_eq!(probe.status, 401);
    assert_eq!(probe.status, browser.status);
}

/// H3, H4: every malformed session cookie is "no session": 302 for a browser, 401 for
/// others, never 200 or 500, never a Remote-* header.
#[test]
fn sec_h3_h4_malformed_cookies_fail_closed() {
    let d = daemon();
    let valid = session(&d, "ann");
    let value = valid.split_once('=').unwrap().1.to_string();
    let mut flipped = value.clone().into_bytes();
    flipped[10] = if flipped[10] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).unwrap();
    let long = "A".repeat(8 * 1024);
    let cookies = [
        "halos_session=".to_string(),
        "halos_session=%00".to_string(),
        format!("halos_session={long}"),
        format!("halos_session={flipped}"),
        format!("halos_session=garbage; halos_session={value}"),
        format!("halos_session={value}; halos_session=garbage"),
        "halos_session".to_string(),
        format!("halos_session=\"{value}x\""),
    ];
    for cookie in &cookies {
        let r = fa(&d, "app.halos.local", "/", &[("Cookie", cookie), BROWSER]);
        assert_eq!(r.status, 302, "{cookie}");
        assert!(r.header("location").unwrap().starts_with(PORTAL));
        assert!(r.header("remote-user").is_none());
        let r = fa(
            &d,
            "app.halos.local",
            "/",
            &[("Cookie", cookie), ("Accept", "application/json")],
        );
        assert_eq!(r.status, 401, "{cookie}");
        assert!(r.header("remote-user").is_none());
        let r = d.req(
            "GET",
            "/api/authz/auth-request",
            &[
                ("X-Original-URL", "https://app.halos.local/"),
                ("X-Original-Method", "GET"),
                ("Cookie", cookie),
                BROWSER,
            ],
            "",
        );
        assert_eq!(r.status, 401, "{cookie}");
    }
    // The valid cookie alone still works.
    assert_eq!(
        fa(&d, "app.halos.local", "/", &[("Cookie", &valid)]).status,
        200
    );
}

/// H5: an unparsable X-Forwarded-For is processed normally (no 500) and still needs the
/// password.
#[test]
fn sec_h5_nonsense_x_forwarded_for_changes_nothing() {
    let d = daemon();
    for xff in ["a", "1.2.3.4, zzz", ",,,", "::::", "999.1.1.1"] {
        let h = [JSON, HOST, ("X-Forwarded-For", xff)];
        let wrong = serde_json::json!({"username": "ann", "password": "nope"}).to_string();
        assert_eq!(d.req("POST", "/api/firstfactor", &h, &wrong).status, 401);
        let right = serde_json::json!({"username": "boss", "password": PW}).to_string();
        assert_eq!(d.req("POST", "/api/firstfactor", &h, &right).status, 200);
    }
}

/// A3: rotating X-Forwarded-For from an untrusted peer is ignored (the IP limit hits the
/// peer), and from a trusted proxy the per-account limit still holds.
#[test]
fn sec_a2_a3_regulation_survives_x_forwarded_for_rotation() {
    // Untrusted peer: the IP bucket is the peer's, so after 3 failures ann cannot log in
    // with any X-Forwarded-For (nor can another user from that peer).
    let d = Daemon::start_with_server(
        &users_yaml(&digest(PW, 1024, 1)),
        SITE,
        "  trusted_proxies: [10.0.0.0/8]\n",
    );
    let login = |user: &str, pw: &str, xff: &str| {
        let body = serde_json::json!({"username": user, "password": pw}).to_string();
        raw(
            &d,
            format!(
                "POST {}/api/firstfactor HTTP/1.1\r\nHost: halos.local\r\nX-Forwarded-For: {xff}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                d.prefix,
                body.len()
            )
            .as_bytes(),
        )
        .0
    };
    for i in 0..5 {
        assert_eq!(login("ann", "wrong", &format!("1.2.3.{i}")), 401);
    }
    assert_eq!(login("boss", PW, "9.9.9.9"), 401, "the peer's IP is banned");

    // Trusted proxy, rotating client addresses: ann's account is banned all the same,
    // and the ban answers exactly like a wrong password.
    let d = daemon();
    let mut failure = None;
    for i in 0..5 {
        let xff = format!("203.0.113.{i}");
        let r = d.req(
            "POST",
            "/api/firstfactor",
            &[JSON, HOST, ("X-Forwarded-For", &xff)],
            &serde_json::json!({"username": "ann", "password": "wrong"}).to_string(),
        );
        failure = Some((r.status, r.body));
    }
    let r = d.req(
        "POST",
        "/api/firstfactor",
        &[JSON, HOST, ("X-Forwarded-For", "198.51.100.7")],
        &serde_json::json!({"username": "ann", "password": PW}).to_string(),
    );
    assert_eq!(Some((r.status, r.body)), failure, "banned = wrong password");
    // Regulation buckets are per exact name; other spellings are not accounts at all.
    for alias in ["ANN", "Ann", " ann", "ann@halos.local"] {
        assert_eq!(json_login(&d, alias, PW, None).status, 401, "{alias}");
    }
}

/// I1, I2: header-breaking characters and group separators in the users file are load
/// errors that name the field.
#[test]
fn sec_i1_i2_hostile_names_and_groups_are_refused_at_load() {
    let h = digest(PW, 1024, 1);
    let cases = [
        (
            format!(
                "users:\n  alice:\n    displayname: \"Alice\\r\\nRemote-Groups: admins\"\n    password: '{h}'\n"
            ),
            "displayname",
        ),
        (
            format!("users:\n  alice:\n    displayname: \"A\\u0000\"\n    password: '{h}'\n"),
            "displayname",
        ),
        (
            format!(
                "users:\n  alice:\n    email: \"a@b.c\\nRemote-User: boss\"\n    password: '{h}'\n"
            ),
            "email",
        ),
        (
            format!("users:\n  \"al\\nice\":\n    password: '{h}'\n"),
            "users.al",
        ),
    ];
    for (text, field) in &cases {
        let e = authd::users::UsersDb::parse(text, "users.yml").unwrap_err();
        assert!(e.to_string().contains(field), "{e}");
    }
    for group in [
        "evil,admins",
        " admins",
        "admins\t",
        "adm|ins",
        "adm;ins",
        "adm ins",
        "adm\nins",
        "",
    ] {
        let text = format!(
            "users:\n  alice:\n    password: '{h}'\n    groups: [{}]\n",
            serde_json::to_string(group).unwrap()
        );
        let e = authd::users::UsersDb::parse(&text, "users.yml").unwrap_err();
        assert!(
            e.to_string().contains("users.alice.groups"),
            "{group:?}: {e}"
        );
    }
}

/// I2, I3: a 2xx carries every identity header, empty when the user has no value, and
/// never echoes what the client sent; groups are one comma-joined header.
#[test]
fn sec_i2_i3_identity_headers_are_complete_and_ours() {
    let d = daemon();
    let noemail = session(&d, "noemail");
    let r = fa(
        &d,
        "app.halos.local",
        "/",
        &[
            ("Cookie", &noemail),
            ("Remote-User", "boss"),
            ("Remote-Groups", "admins"),
            ("Remote-Email", "boss@halos.local"),
        ],
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("remote-user"), Some("noemail"));
    assert_eq!(r.header("remote-email"), Some(""));
    assert_eq!(r.header("remote-groups"), Some(""));
    assert!(r.header("remote-name").is_some());
    let boss = session(&d, "boss");
    let r = fa(&d, "admin.halos.local", "/", &[("Cookie", &boss)]);
    assert_eq!(r.status, 200);
    let groups: Vec<_> = r
        .headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("remote-groups"))
        .collect();
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0].1, "admins,users");
}

/// S1: the SSO cookie's attributes; nothing carries the session value but Set-Cookie.
#[test]
fn sec_s1_cookie_attributes_and_no_session_value_elsewhere() {
    let d = daemon();
    let r = json_login(&d, "ann", PW, Some("https://app.halos.local/"));
    let set = r
        .headers
        .iter()
        .find(|(k, v)| k.eq_ignore_ascii_case("set-cookie") && v.starts_with("halos_session="))
        .unwrap()
        .1
        .clone();
    let attrs: Vec<&str> = set.split("; ").skip(1).collect();
    let mut sorted = attrs.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        [
            "Domain=halos.local",
            "HttpOnly",
            "Path=/",
            "SameSite=Lax",
            "Secure"
        ]
    );
    let value = set.split(';').next().unwrap().split_once('=').unwrap().1;
    assert!(!r.body.contains(value));
    let page = d.req(
        "GET",
        "/",
        &[HOST, ("Cookie", &format!("halos_session={value}"))],
        "",
    );
    assert!(!page.body.contains(value));
    // Every other cookie is `__Host-` (host-only, Secure, Path=/): no sibling can toss it.
    let csrf = page
        .headers
        .iter()
        .chain(d.req("GET", "/", &[HOST], "").headers.iter())
        .find(|(k, v)| k.eq_ignore_ascii_case("set-cookie") && v.contains("csrf"))
        .map(|(_, v)| v.clone())
        .unwrap();
    assert!(csrf.starts_with("__Host-halos_csrf="), "{csrf}");
    let mut attrs: Vec<&str> = csrf.split("; ").skip(1).collect();
    attrs.sort_unstable();
    assert_eq!(attrs, ["HttpOnly", "Path=/", "SameSite=Strict", "Secure"]);
}

/// S2-a, S2-c: a client-chosen id is never adopted; every login gets a new id and ends
/// the previous session.
#[test]
fn sec_s2_session_fixation() {
    let d = daemon();
    let chosen = "attackerchosen123";
    let chosen43 = "A".repeat(43);
    for planted in [chosen, chosen43.as_str()] {
        let cookie = format!("halos_session={planted}");
        let page = d.req("GET", "/", &[HOST, ("Cookie", &cookie)], "");
        assert!(
            page.cookie("halos_session")
                .is_none_or(|c| !c.ends_with(planted))
        );
        let r = d.req(
            "POST",
            "/api/firstfactor",
            &[JSON, HOST, ("Cookie", &cookie)],
            &serde_json::json!({"username": "ann", "password": PW}).to_string(),
        );
        let fresh = r.cookie("halos_session").unwrap();
        assert_ne!(fresh, cookie);
        assert_eq!(
            fa(&d, "app.halos.local", "/", &[("Cookie", &cookie)]).status,
            401
        );
    }
    let v = session(&d, "ann");
    let r = d.req(
        "POST",
        "/api/firstfactor",
        &[JSON, HOST, ("Cookie", &v)],
        &serde_json::json!({"username": "boss", "password": PW}).to_string(),
    );
    let w = r.cookie("halos_session").unwrap();
    assert_ne!(v, w);
    assert_eq!(
        fa(&d, "app.halos.local", "/", &[("Cookie", &v)]).status,
        401
    );
    let r = fa(&d, "app.halos.local", "/", &[("Cookie", &w)]);
    assert_eq!(r.header("remote-user"), Some("boss"));
}

/// S3: two session cookies (say one tossed by a sibling) are no session at all, and a
/// tossed CSRF cookie does not pass the form check.
#[test]
fn sec_s3_cookie_tossing() {
    let d = daemon();
    let ann = session(&d, "ann");
    let boss = session(&d, "boss");
    for both in [format!("{ann}; {boss}"), format!("{boss}; {ann}")] {
        let r = fa(&d, "app.halos.local", "/", &[("Cookie", &both)]);
        assert_eq!(r.status, 401, "{both}");
        assert!(r.header("remote-user").is_none());
    }
    // Two headers are the same as one joined header.
    let r = fa(
        &d,
        "app.halos.local",
        "/",
        &[("Cookie", &ann), ("Cookie", &boss)],
    );
    assert_eq!(r.status, 401);
    // CSRF: a sibling (same site, so Origin and Sec-Fetch-Site pass) can set a
    // `Domain=halos.local` cookie but never a `__Host-` one: its token is not accepted.
    let tossed = "B".repeat(43);
    let body = format!("username=ann&password={}&csrf={tossed}", enc(PW));
    let r = d.req(
        "POST",
        "/login",
        &[
            HOST,
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Cookie", &format!("halos_csrf={tossed}")),
            ("Origin", "https://evil.halos.local"),
            ("Sec-Fetch-Site", "same-site"),
        ],
        &body,
    );
    assert_eq!(r.status, 403);
    assert!(r.cookie("halos_session").is_none());
}

/// S4: logout ends the session server-side and clears the cookie with the same scope.
#[test]
fn sec_s4_logout_invalidates_server_side() {
    let d = daemon();
    let v = session(&d, "ann");
    let r = d.req("POST", "/api/logout", &[JSON, HOST, ("Cookie", &v)], "{}");
    assert_eq!(r.status, 200);
    let clear = r
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("set-cookie"))
        .unwrap()
        .1
        .clone();
    for attr in [
        "halos_session=;",
        "Max-Age=0",
        "Domain=halos.local",
        "Path=/",
    ] {
        assert!(clear.contains(attr), "{clear}");
    }
    assert_eq!(
        fa(&d, "app.halos.local", "/", &[("Cookie", &v)]).status,
        401
    );
    let state = d.req("GET", "/api/state", &[HOST, ("Cookie", &v)], "");
    assert!(state.body.contains("\"username\":null"), "{}", state.body);
}

/// S7: unauthenticated forward-auth requests set no cookies at all.
#[test]
fn sec_s7_denials_set_no_cookies() {
    let d = daemon();
    for _ in 0..50 {
        let r = fa(&d, "app.halos.local", "/", &[BROWSER]);
        assert_eq!(r.status, 302);
        assert!(
            r.headers
                .iter()
                .all(|(k, _)| !k.eq_ignore_ascii_case("set-cookie"))
        );
    }
}

/// S8: parallel logins of two users never mix their sessions.
#[test]
fn sec_s8_parallel_logins_do_not_mix_users() {
    let d = daemon();
    let addr = d.addr;
    let prefix = d.prefix.clone();
    // Waves of 16: within the hashing queue (max_queued), so none is turned away.
    for wave in 0..3 {
        let threads: Vec<_> = (wave * 16..wave * 16 + 16)
            .map(|i| {
                let prefix = prefix.clone();
                std::thread::spawn(move || {
                    let user = if i % 2 == 0 { "ann" } else { "boss" };
                    let r = http(
                        addr,
                        "POST",
                        &format!("{prefix}/api/firstfactor"),
                        &[JSON, HOST],
                        &serde_json::json!({"username": user, "password": PW}).to_string(),
                    );
                    (user, r.cookie("halos_session").unwrap())
                })
            })
            .collect();
        for t in threads {
            let (user, cookie) = t.join().unwrap();
            let r = fa(&d, "app.halos.local", "/", &[("Cookie", &cookie)]);
            assert_eq!(r.header("remote-user"), Some(user));
        }
    }
}

/// C1: credentials in a GET never log in; C2: a cross-site logout POST is refused and the
/// session survives; C5: no CORS on the portal's state-changing endpoints.
#[test]
fn sec_c1_c2_c5_csrf_and_cors_on_login_and_logout() {
    let d = daemon();
    let r = d.req(
        "GET",
        &format!("/login?username=ann&password={}", enc(PW)),
        &[HOST],
        "",
    );
    assert_eq!(r.status, 405);
    assert!(r.cookie("halos_session").is_none());
    let r = d.req(
        "GET",
        &format!("/api/firstfactor?username=ann&password={}", enc(PW)),
        &[HOST],
        "",
    );
    assert_eq!(r.status, 405);

    let v = session(&d, "ann");
    for evil in [
        ("Origin", "https://evil.example"),
        ("Sec-Fetch-Site", "cross-site"),
    ] {
        let r = d.req(
            "POST",
            "/api/logout",
            &[JSON, HOST, ("Cookie", &v), evil],
            "{}",
        );
        assert_eq!(r.status, 403);
        let r = d.req(
            "POST",
            "/api/firstfactor",
            &[JSON, HOST, evil],
            &serde_json::json!({"username": "ann", "password": PW}).to_string(),
        );
        assert_eq!(r.status, 403);
        assert!(r.cookie("halos_session").is_none());
    }
    assert_eq!(
        fa(&d, "app.halos.local", "/", &[("Cookie", &v)]).status,
        200
    );
    for path in ["/api/firstfactor", "/login", "/api/logout", "/"] {
        let r = d.req(
            "OPTIONS",
            path,
            &[
                HOST,
                ("Origin", "https://evil.example"),
                ("Access-Control-Request-Method", "POST"),
            ],
            "",
        );
        assert!(
            r.header("access-control-allow-origin").is_none()
                && r.header("access-control-allow-credentials").is_none(),
            "{path}"
        );
    }
}

/// The median of `xs` (seconds).
fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// A1: unknown, disabled and known users with a wrong password get the same answer in
/// the same time: every one of them costs one argon2 verification. Samples are
/// interleaved so machine noise hits all three alike; medians are compared.
#[test]
fn sec_a1_no_user_enumeration_by_answer_or_timing() {
    // Costly enough (~10 ms+) that skipping the hash would stand out on any machine.
    let h = digest(PW, 16 * 1024, 2);
    let d = Daemon::start(
        &users_yaml(&h),
        &format!("{SITE}regulation: {{max_retries: 0}}\n"),
    );
    let attempt = |user: &str| {
        let body = serde_json::json!({"username": user, "password": "wrong password"}).to_string();
        let start = Instant::now();
        let r = d.req("POST", "/api/firstfactor", &[JSON, HOST], &body);
        (start.elapsed().as_secs_f64(), r.status, r.body)
    };
    let users = ["ann", "zed", "dis"];
    for u in users {
        attempt(u); // warm-up
    }
    let mut times = [Vec::new(), Vec::new(), Vec::new()];
    let mut answers = std::collections::BTreeSet::new();
    for _ in 0..40 {
        for (i, u) in users.iter().enumerate() {
            let (t, status, body) = attempt(u);
            times[i].push(t);
            answers.insert((status, body));
        }
    }
    assert_eq!(answers.len(), 1, "one answer for all: {answers:?}");
    let [known, unknown, disabled] = times.map(median);
    for (name, m) in [("unknown", unknown), ("disabled", disabled)] {
        let diff = (m - known).abs();
        assert!(
            diff < 0.35 * known,
            "{name} user median {:.1} ms vs known {:.1} ms",
            m * 1e3,
            known * 1e3
        );
    }
}

/// A8: long passwords are neither truncated nor case-folded.
#[test]
fn sec_a8_passwords_are_not_truncated() {
    let long: String = "Zoë-ß-".repeat(20);
    let d = Daemon::start(&users_yaml(&digest(&long, 1024, 1)), SITE);
    assert_eq!(json_login(&d, "ann", &long, None).status, 200);
    let first72: String = long.chars().take(72).collect();
    assert_eq!(json_login(&d, "ann", &first72, None).status, 401);
    assert_eq!(
        json_login(&d, "boss", &long.to_uppercase(), None).status,
        401
    );
}

/// A4: hashes whose cost would exhaust a small device are refused at load.
#[test]
fn sec_a4_oversized_hash_parameters_are_refused_at_load() {
    let salt = "c2FsdHNhbHRzYWx0c2FsdA";
    let hash = "aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g";
    for params in [
        "m=4194304,t=1,p=1",
        "m=65536,t=100000,p=1",
        "m=65536,t=1,p=255",
    ] {
        let text = format!("users:\n  a:\n    password: '$argon2id$v=19${params}${salt}${hash}'\n");
        let e = authd::users::UsersDb::parse(&text, "users.yml").unwrap_err();
        assert!(e.to_string().contains("users.a.password"), "{params}: {e}");
    }
}

/// F1, F2, F3, F4: hostile users files are refused quickly with a clear error, and at
/// start-up the daemon exits cleanly (no crash) naming the problem.
#[test]
fn sec_f1_f2_f3_f4_hostile_yaml_is_refused() {
    let h = digest(PW, 1024, 1);
    let laughs = "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\ng: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\nh: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]\ni: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]\nusers: *i\n";
    let deep = format!(
        "users:\n  a:\n    password: '{h}'\n    extra: {}{}\n",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let huge = format!(
        "users:\n  a:\n    password: '{h}'\n    x: '{}'\n",
        "x".repeat(2 << 20)
    );
    let cases: Vec<(&str, String, &str)> = vec![
        ("billion laughs", laughs.to_string(), "alias"),
        ("deep nesting", deep, "limit"),
        ("huge", huge, "limit"),
        (
            "duplicate user",
            format!("users:\n  a:\n    password: '{h}'\n  a:\n    password: '{h}'\n"),
            "duplicate",
        ),
        (
            "yaml 1.1 boolean",
            format!("users:\n  a:\n    password: '{h}'\n    disabled: no\n"),
            "disabled",
        ),
    ];
    for (what, text, needle) in &cases {
        let start = Instant::now();
        let e = authd::users::UsersDb::parse(text, "users.yml").unwrap_err();
        assert!(start.elapsed() < Duration::from_secs(1), "{what}");
        assert!(e.to_string().to_lowercase().contains(needle), "{what}: {e}");
    }
    // A snippet with one harmless alias is refused the same way.
    let e = authd::oidc::snippets::parse_snippet(
        "client_id: &x app\nclient_name: *x\nredirect_uris: [https://app.halos.local/cb]\n",
        std::path::Path::new("x.yml"),
    );
    assert!(e.is_err());
    // Invalid UTF-8 and the daemon's own start-up.
    for (what, bytes) in [
        ("laughs", laughs.as_bytes().to_vec()),
        ("binary", vec![0xff, 0xfe, b'u', 0x80, 0x00]),
        ("sparse 200 MiB", Vec::new()),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let users = dir.path().join("users.yml");
        std::fs::write(&users, &bytes).unwrap();
        if bytes.is_empty() {
            // F3: refused by its size, without reading 200 MiB.
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&users)
                .unwrap();
            f.set_len(200 << 20).unwrap();
        }
        let cfg = dir.path().join("authd.yml");
        std::fs::write(
            &cfg,
            format!(
                "server:\n  address: tcp://127.0.0.1:0/sso\nauthentication_backend:\n  file:\n    path: {}\nstorage:\n  local:\n    path: {}\n",
                users.display(),
                dir.path().join("s.sqlite").display()
            ),
        )
        .unwrap();
        let out = std::process::Command::new(crate::common::DAEMON)
            .arg("--config")
            .arg(&cfg)
            .env_remove("AUTHD_CONFIG")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{what}: clean exit, no signal");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("users.yml"),
            "{what}"
        );
    }
}

/// T1: the default listener is loopback only.
#[test]
fn sec_t1_default_bind_is_loopback() {
    let cfg = authd::config::Config::default();
    match &cfg.server.address.listen {
        authd::config::ListenAddress::Tcp(a) => assert!(a.ip().is_loopback(), "{a}"),
        authd::config::ListenAddress::Unix(_) => {}
    }
}

/// Resource limits: a huge body on every endpoint class is 413, huge headers 431 (or a
/// closed connection); the daemon stays up.
#[test]
fn sec_resource_limits_body_and_headers() {
    let extra =
        format!("{SITE}identity_providers:\n  oidc:\n    issuer: https://halos.local/sso\n");
    let d = Daemon::start(&users_yaml(&digest(PW, 1024, 1)), &extra);
    let big = "x".repeat(2 << 20);
    for (method, path, ct) in [
        ("POST", "/api/firstfactor", "application/json"),
        ("POST", "/login", "application/x-www-form-urlencoded"),
        ("POST", "/api/logout", "application/json"),
        (
            "POST",
            "/api/oidc/token",
            "application/x-www-form-urlencoded",
        ),
        (
            "POST",
            "/api/oidc/introspection",
            "application/x-www-form-urlencoded",
        ),
        (
            "POST",
            "/api/oidc/revocation",
            "application/x-www-form-urlencoded",
        ),
        (
            "POST",
            "/api/oidc/userinfo",
            "application/x-www-form-urlencoded",
        ),
        (
            "POST",
            "/api/oidc/authorization",
            "application/x-www-form-urlencoded",
        ),
        (
            "POST",
            "/api/oidc/end-session",
            "application/x-www-form-urlencoded",
        ),
        ("POST", "/api/verify", "application/octet-stream"),
    ] {
        let (status, _) = raw(
            &d,
            format!(
                "{method} {}{path} HTTP/1.1\r\nHost: halos.local\r\nContent-Type: {ct}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{big}",
                d.prefix,
                big.len()
            )
            .as_bytes(),
        );
        assert!(status == 413 || status == 0, "{path}: {status}");
    }
    let huge_header = "a".repeat(200 * 1024);
    for path in [
        "/api/authz/forward-auth",
        "/api/firstfactor",
        "/",
        "/api/oidc/token",
        "/.well-known/openid-configuration",
    ] {
        let (status, _) = raw(
            &d,
            format!(
                "GET {}{path} HTTP/1.1\r\nHost: halos.local\r\nCookie: halos_session={huge_header}\r\nConnection: close\r\n\r\n",
                d.prefix
            )
            .as_bytes(),
        );
        assert!(status == 431 || status == 0, "{path}: {status}");
        let mut many = String::new();
        for i in 0..500 {
            many.push_str(&format!("X-H{i}: v\r\n"));
        }
        let (status, _) = raw(
            &d,
            format!(
                "GET {}{path} HTTP/1.1\r\nHost: halos.local\r\n{many}Connection: close\r\n\r\n",
                d.prefix
            )
            .as_bytes(),
        );
        assert!(status == 431 || status == 0, "{path}: {status}");
    }
    healthy(&d);
}

/// Slowloris: a client that trickles its request head is cut off, and others are served
/// meanwhile.
#[test]
fn sec_resource_limits_slow_headers_time_out() {
    let d = Daemon::start_with_server(
        &users_yaml(&digest(PW, 1024, 1)),
        SITE,
        "  request_timeout: 1s\n",
    );
    let mut slow: Vec<TcpStream> = (0..20)
        .map(|_| {
            let mut s = TcpStream::connect(d.addr).unwrap();
            s.write_all(b"GET /sso/api/health HTTP/1.1\r\nHost: x\r\n")
                .unwrap();
            s
        })
        .collect();
    let start = Instant::now();
    healthy(&d);
    for s in &mut slow {
        // Keep trickling: one header line now and then never completes the head.
        let _ = s.write_all(b"X-A: b\r\n");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    }
    for mut s in slow {
        let mut buf = Vec::new();
        // The daemon answers 408 (or just closes) instead of waiting forever.
        let n = s.read_to_end(&mut buf);
        assert!(n.is_ok(), "connection still open: {n:?}");
        let text = String::from_utf8_lossy(&buf);
        assert!(
            text.is_empty() || text.starts_with("HTTP/1.1 408"),
            "{text}"
        );
    }
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    healthy(&d);
}

/// T3: no password, session id or CSRF token in the logs, even at debug level.
#[test]
fn sec_t3_no_secrets_in_logs() {
    let secret_pw = "Sup3r-Secret-Passw0rd";
    let d = Daemon::start(
        &users_yaml(&digest(secret_pw, 1024, 1)),
        &format!("{SITE}log: {{level: debug}}\n"),
    );
    let r = json_login(&d, "ann", secret_pw, Some("https://app.halos.local/"));
    let cookie = r.cookie("halos_session").unwrap();
    let id = cookie.split_once('=').unwrap().1.to_string();
    let _ = json_login(&d, "ann", "Wr0ng-Secret-Passw0rd", None);
    let _ = fa(&d, "app.halos.local", "/", &[("Cookie", &cookie)]);
    let (_, csrf_token) = csrf(&d);
    let _ = d.req(
        "POST",
        "/api/logout",
        &[JSON, HOST, ("Cookie", &cookie)],
        "{}",
    );
    healthy(&d);
    // The logout's audit line is the last thing logged: wait for it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !d.log_text().contains("event=\"logout\"") && !d.log_text().contains("logout") {
        assert!(
            Instant::now() < deadline,
            "no logout line: {}",
            d.log_text()
        );
        std::thread::yield_now();
    }
    let log = d.log_text();
    for secret in [secret_pw, "Wr0ng-Secret-Passw0rd", &id, &csrf_token] {
        assert!(!log.contains(secret), "{secret} in the log");
    }
}

/// F5 (part): a FIFO or directory where a client secret file should be is refused at once
/// (no blocking open).
#[test]
fn sec_f5_secret_file_must_be_a_regular_file() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("secret");
    let ok = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(ok.success());
    let start = Instant::now();
    assert!(authd::oidc::snippets::read_secret_file(&fifo).is_err());
    assert!(authd::oidc::snippets::read_secret_file(dir.path()).is_err());
    assert!(start.elapsed() < Duration::from_secs(1));
}

/// F6 (part): a users file or snippet anybody may write is refused (start-up error for the
/// users file; the snippet is skipped with a reason).
#[test]
fn sec_f6_world_writable_files_are_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.yml");
    std::fs::write(&users, users_yaml(&digest(PW, 1024, 1))).unwrap();
    std::fs::set_permissions(&users, std::fs::Permissions::from_mode(0o666)).unwrap();
    let cfg = dir.path().join("authd.yml");
    std::fs::write(
        &cfg,
        format!(
            "server:\n  address: tcp://127.0.0.1:0/sso\nauthentication_backend:\n  file:\n    path: {}\nstorage:\n  local:\n    path: {}\n",
            users.display(),
            dir.path().join("s.sqlite").display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(crate::common::DAEMON)
        .arg("--config")
        .arg(&cfg)
        .env_remove("AUTHD_CONFIG")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("writable by everyone"), "{err}");

    let snippets = dir.path().join("oidc-clients.d");
    std::fs::create_dir(&snippets).unwrap();
    let file = snippets.join("app.yml");
    std::fs::write(
        &file,
        "client_id: app\nclient_secret: s3cret-s3cret\nredirect_uris: [https://app.halos.local/cb]\n",
    )
    .unwrap();
    let load = || {
        authd::oidc::snippets::load_dir(
            &snippets,
            &authd::hostnames::Hostnames::default_for(&authd::hostnames::SystemNames::new(
                "halos", None,
            )),
            &Default::default(),
        )
    };
    assert_eq!(load().clients.len(), 1, "{:?}", load().problems);
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).unwrap();
    let loaded = load();
    assert!(loaded.clients.is_empty());
    assert!(loaded.problems[0].reason.contains("writable by everyone"));
}

/// The unix-socket listener (`server.address: unix://…`) serves every handler, including
/// those that need the client address (it is the local proxy: loopback), with the same
/// request-head limits.
#[test]
fn sec_unix_socket_listener_serves_with_the_same_limits() {
    use std::io::BufRead;
    use std::os::unix::net::UnixStream;
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.yml");
    std::fs::write(&users, users_yaml(&digest(PW, 1024, 1))).unwrap();
    let sock = dir.path().join("authd.sock");
    let cfg = dir.path().join("authd.yml");
    std::fs::write(
        &cfg,
        format!(
            "server:\n  address: unix://{}/sso\nauthentication_backend:\n  file:\n    path: {}\n    password:\n      argon2: {{memory: 1024, iterations: 1, parallelism: 1}}\nstorage:\n  local:\n    path: {}\n{SITE}",
            sock.display(),
            users.display(),
            dir.path().join("s.sqlite").display()
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new(crate::common::DAEMON)
        .arg("--config")
        .arg(&cfg)
        .env_remove("AUTHD_CONFIG")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    // The ready line is the readiness signal.
    loop {
        let line = lines.next().expect("daemon exited").unwrap();
        if line.starts_with("halos-authd ready: listening on unix://") {
            break;
        }
    }
    std::thread::spawn(move || lines.for_each(drop));
    let send = |req: String| {
        let mut s = UnixStream::connect(&sock).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        // The daemon may hang up before reading everything (431): not an error here.
        let _ = s.write_all(req.as_bytes());
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    };
    let body = serde_json::json!({"username": "ann", "password": PW}).to_string();
    let r = send(format!(
        "POST /sso/api/firstfactor HTTP/1.1\r\nHost: halos.local\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ));
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    let r = send(
        "GET /sso/api/authz/forward-auth HTTP/1.1\r\nHost: x\r\nX-Forwarded-Method: GET\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: app.halos.local\r\nX-Forwarded-Uri: /\r\nConnection: close\r\n\r\n".into(),
    );
    assert!(r.starts_with("HTTP/1.1 401"), "{r}");
    let r = send(format!(
        "GET /sso/api/health HTTP/1.1\r\nHost: x\r\nCookie: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(200 * 1024)
    ));
    assert!(r.is_empty() || r.starts_with("HTTP/1.1 431"), "{r}");
    let _ = child.kill();
    let _ = child.wait();
}

// ---------------------------------------------------------------------------------
// Second factors (issue 7): the TOTP step, its replay window and its regulation.

mod totp {
    use super::{enc, hostile_variants};
    use crate::common::{Daemon, HttpResponse};
    use crate::second_factor::{
        CB, FORM, HOST, JSON, PW, SITE, between, code_at, daemon, fa, firstfactor, form, now,
        oidc_daemon, settings, users_yaml,
    };

    /// Enrols a TOTP for the session's user from /settings; returns the secret.
    fn enrol(d: &Daemon, session: &str) -> String {
        let (_, cookies, token) = settings(d, session);
        let r = d.req(
            "POST",
            "/settings/totp/start",
            &[HOST, FORM, ("Cookie", &cookies)],
            &form(&[("csrf", &token)]),
        );
        let secret = between(&r.body, "id=\"totp-secret\">", "<").to_string();
        let r = d.req(
            "POST",
            "/settings/totp/confirm",
            &[HOST, FORM, ("Cookie", &cookies)],
            &form(&[("csrf", &token), ("code", &code_at(&secret, now()))]),
        );
        assert_eq!(r.status, 200, "{}", r.body);
        secret
    }

    fn totp(d: &Daemon, cookie: &str, code: &str) -> HttpResponse {
        d.req(
            "POST",
            "/api/secondfactor/totp",
            &[HOST, JSON, ("Cookie", cookie)],
            &serde_json::json!({"token": code, "targetURL": "https://secure.halos.local/"})
                .to_string(),
        )
    }

    /// A six-digit code valid at none of the steps the daemon could accept right now.
    fn wrong_code(secret: &str, seed: u32) -> String {
        let t = now();
        let valid: Vec<String> = (0..5).map(|i| code_at(secret, t + i * 30 - 60)).collect();
        (seed..)
            .map(|n| format!("{:06}", (n * 7919 + 13) % 1_000_000))
            .find(|c| !valid.contains(c))
            .unwrap()
    }

    fn level(d: &Daemon, cookie: &str) -> String {
        d.req("GET", "/api/state", &[HOST, ("Cookie", cookie)], "")
            .body
    }

    #[test]
    fn sec_r8_a5_s2_b_c1_c4_a6_the_totp_step_cannot_be_skipped_or_replayed() {
        // Regulation off: this test sends more wrong codes than a ban allows.
        let d = Daemon::start(
            &users_yaml(),
            &format!("{SITE}regulation: {{max_retries: 0}}\n"),
        );
        let s0 = firstfactor(&d, "ann", PW, "")
            .cookie("halos_session")
            .unwrap();
        let secret = enrol(&d, &s0);

        // R8: a hostile target with the right password: no redirect, no full session.
        let r = firstfactor(&d, "ann", PW, "https://evil.example/");
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(!r.body.contains("evil.example"), "{}", r.body);
        let s1 = r.cookie("halos_session").unwrap();
        assert_eq!(fa(&d, "secure.halos.local", &s1).status, 302);
        assert!(level(&d, &s1).contains("\"authentication_level\":1"));

        // A5: empty, blank, non-numeric and over-long codes never pass (JSON and form).
        for bad in ["", "      ", "abcdef", "0000000", "1234567890"] {
            assert_eq!(totp(&d, &s1, bad).status, 401, "{bad:?}");
        }
        let r = d.req(
            "POST",
            "/api/secondfactor/totp",
            &[HOST, JSON, ("Cookie", &s1)],
            r#"{"targetURL":"https://secure.halos.local/"}"#,
        );
        assert!(r.status >= 400, "{}", r.status);
        assert_eq!(fa(&d, "secure.halos.local", &s1).status, 302);

        // C1/C4 on the TOTP step: the page is not frameable; a POST without the CSRF
        // token, or from another site, changes nothing.
        let page = d.req(
            "GET",
            "/?rd=https%3A%2F%2Fsecure.halos.local%2F",
            &[HOST, ("Cookie", &s1)],
            "",
        );
        assert!(page.body.contains("id=\"verify\""), "{}", page.body);
        for p in [&page, &settings(&d, &s1).0] {
            assert!(
                p.header("content-security-policy")
                    .is_some_and(|c| c.contains("frame-ancestors 'none'")),
                "{:?}",
                p.headers
            );
            assert_eq!(p.header("x-frame-options"), Some("DENY"));
        }
        let (_, cookies, token) = settings(&d, &s1);
        let good = code_at(&secret, now() + 30);
        let step = |csrf: &str, origin: Option<&str>| {
            let mut h = vec![HOST, FORM, ("Cookie", cookies.as_str())];
            if let Some(o) = origin {
                h.push(("Origin", o));
            }
            d.req(
                "POST",
                "/login/totp",
                &h,
                &form(&[
                    ("csrf", csrf),
                    ("code", &good),
                    ("rd", "https://secure.halos.local/"),
                ]),
            )
        };
        assert_eq!(step("forged", None).status, 403);
        assert_eq!(step(&token, Some("https://evil.example")).status, 403);
        assert_eq!(fa(&d, "secure.halos.local", &s1).status, 302);
        let r = d.req(
            "POST",
            "/api/secondfactor/totp",
            &[
                HOST,
                JSON,
                ("Cookie", &s1),
                ("Origin", "https://evil.example"),
            ],
            &serde_json::json!({"token": good}).to_string(),
        );
        assert_eq!(r.status, 403, "cross-site JSON TOTP step");
        // The passkey sign-in ceremony refuses cross-site callers too.
        let assertion = r#"{"credential":{"id":"AA","rawId":"AA","type":"public-key","response":{"authenticatorData":"AA","clientDataJSON":"AA","signature":"AA","userHandle":"AA"},"extensions":{}}}"#;
        for (path, body) in [
            ("/api/webauthn/login/start", "{}"),
            ("/api/webauthn/login/finish", assertion),
        ] {
            let r = d.req(
                "POST",
                path,
                &[HOST, JSON, ("Origin", "https://evil.example")],
                body,
            );
            assert_eq!(r.status, 403, "{path}");
        }

        // S2-b: the code gives a new session id; the password-only one is gone.
        let r = totp(&d, &s1, &good);
        assert_eq!(r.status, 200, "{}", r.body);
        let s2 = r.cookie("halos_session").unwrap();
        assert_ne!(s1, s2);
        assert_eq!(fa(&d, "secure.halos.local", &s2).status, 200);
        assert_eq!(fa(&d, "app.halos.local", &s1).status, 302);

        // A6: the used code again, and codes three steps away, are refused.
        let s3 = firstfactor(&d, "ann", PW, "")
            .cookie("halos_session")
            .unwrap();
        assert_eq!(totp(&d, &s3, &good).status, 401, "replay");
        let far = [code_at(&secret, now() - 90), code_at(&secret, now() + 120)];
        for c in far.iter().filter(|c| **c != good) {
            assert_eq!(totp(&d, &s3, c).status, 401, "{c}");
        }
        assert_eq!(fa(&d, "secure.halos.local", &s3).status, 302);
    }

    #[test]
    fn sec_a2_totp_guessing_is_regulated_and_the_password_does_not_reset_it() {
        // Default regulation: 3 failures within 2 minutes ban for 5 minutes.
        let d = daemon();
        let s0 = firstfactor(&d, "ann", PW, "")
            .cookie("halos_session")
            .unwrap();
        let secret = enrol(&d, &s0);
        let s1 = firstfactor(&d, "ann", PW, "")
            .cookie("halos_session")
            .unwrap();
        assert_eq!(totp(&d, &s1, &wrong_code(&secret, 1)).status, 401);
        assert_eq!(totp(&d, &s1, &wrong_code(&secret, 2)).status, 401);
        // The right password again must not forgive the two wrong codes …
        let s2 = firstfactor(&d, "ann", PW, "")
            .cookie("halos_session")
            .unwrap();
        assert_eq!(totp(&d, &s2, &wrong_code(&secret, 3)).status, 401);
        // … so the third failure bans: even the right code is refused, like a wrong one,
        // and so is the password.
        let r = totp(&d, &s2, &code_at(&secret, now() + 30));
        assert_eq!(r.status, 401, "{}", r.body);
        assert!(r.body.contains("Authentication failed"), "{}", r.body);
        assert_eq!(fa(&d, "secure.halos.local", &s2).status, 302);
        assert_eq!(firstfactor(&d, "ann", PW, "").status, 401);
    }

    /// A5 / O16 through OIDC: a password-only session of a TOTP user gets no code from a
    /// two_factor client, `prompt=none` included.
    #[test]
    fn sec_a5_o16_password_only_session_gets_no_code_from_a_two_factor_client() {
        let d = oidc_daemon();
        let s0 = firstfactor(&d, "ann", PW, "")
            .cookie("halos_session")
            .unwrap();
        enrol(&d, &s0);
        let s1 = firstfactor(&d, "ann", PW, "")
            .cookie("halos_session")
            .unwrap();
        let authorize = |prompt: &str| {
            d.req(
                "GET",
                &format!(
                    "/api/oidc/authorization?response_type=code&client_id=strict&redirect_uri={}&scope=openid&state=st1{prompt}",
                    enc(CB)
                ),
                &[HOST, ("Cookie", &s1)],
                "",
            )
        };
        let r = authorize("");
        let loc = r.header("location").unwrap_or_default().to_string();
        assert_eq!(r.status, 302);
        assert!(loc.starts_with("https://halos.local/sso/?rd="), "{loc}");
        let r = authorize("&prompt=none");
        let loc = r.header("location").unwrap_or_default().to_string();
        assert!(loc.starts_with(&format!("{CB}?error=")), "{loc}");
        assert!(
            loc.contains("error=login_required") || loc.contains("error=interaction_required"),
            "{loc}"
        );
        assert!(!loc.contains("code="), "{loc}");
    }

    /// R1/R6 on the new pages: the TOTP step and the forced password change never follow
    /// a hostile target and reflect it only escaped.
    #[test]
    fn sec_r1_r6_totp_step_and_password_change_never_follow_hostile_targets() {
        let d = Daemon::start(
            &users_yaml(),
            &format!("{SITE}regulation: {{max_retries: 0}}\n"),
        );
        let s0 = firstfactor(&d, "ann", PW, "")
            .cookie("halos_session")
            .unwrap();
        let secret = enrol(&d, &s0);
        let pending = firstfactor(&d, "admin", "halos", "")
            .cookie("halos_session")
            .unwrap();
        for t in hostile_variants() {
            for (path, cookie) in [("/", &s0), ("/password/change", &pending)] {
                let page = d.req(
                    "GET",
                    &format!("{path}?rd={}", enc(&t)),
                    &[HOST, ("Cookie", cookie)],
                    "",
                );
                assert!(page.status == 200 || page.status == 414, "{path} {t:?}");
                if t.contains(['<', '"', '\'']) {
                    assert!(!page.body.contains(&t), "{path}: {t:?} reflected raw");
                }
                let lower = page.body.to_ascii_lowercase();
                for attr in ["href=\"", "action=\"", "src=\""] {
                    for scheme in ["javascript:", "data:", "vbscript:", "https://evil"] {
                        assert!(!lower.contains(&format!("{attr}{scheme}")), "{path} {t:?}");
                    }
                }
            }
        }
        // One real TOTP step and one real password change with a hostile target.
        let (_, cookies, token) = settings(&d, &s0);
        let r = d.req(
            "POST",
            "/login/totp",
            &[HOST, FORM, ("Cookie", &cookies)],
            &form(&[
                ("csrf", &token),
                ("code", &code_at(&secret, now() + 30)),
                ("rd", "https://evil.example/"),
            ]),
        );
        assert_eq!(r.status, 303, "{}", r.body);
        assert_eq!(r.header("location"), Some("https://halos.local/sso/"));
        let page = d.req("GET", "/password/change", &[HOST, ("Cookie", &pending)], "");
        let csrf = page.cookie("__Host-halos_csrf").unwrap();
        let token = csrf.trim_start_matches("__Host-halos_csrf=").to_string();
        let pw = "plum tractor sextant 4711 harbour";
        let r = d.req(
            "POST",
            "/password/change",
            &[HOST, FORM, ("Cookie", &format!("{pending}; {csrf}"))],
            &form(&[
                ("csrf", &token),
                ("new_password", pw),
                ("confirm_password", pw),
                ("rd", "//evil.example/"),
            ]),
        );
        assert_eq!(r.status, 303, "{}", r.body);
        assert_eq!(r.header("location"), Some("https://halos.local/sso/"));
    }

    /// T3 for the new secrets: TOTP secrets and codes, login codes and API tokens never
    /// reach the log, even at debug level (successes and failures).
    #[test]
    fn sec_t3_no_totp_codes_login_codes_or_api_tokens_in_logs() {
        use crate::api_tokens::{ctl, stdout};
        let d = Daemon::start(&users_yaml(), &format!("{SITE}log: {{level: debug}}\n"));
        let s0 = firstfactor(&d, "ann", PW, "")
            .cookie("halos_session")
            .unwrap();
        let secret = enrol(&d, &s0);
        let s1 = firstfactor(&d, "ann", PW, "")
            .cookie("halos_session")
            .unwrap();
        let good = code_at(&secret, now() + 30);
        assert_eq!(totp(&d, &s1, &good).status, 200);
        let s2 = firstfactor(&d, "ann", PW, "")
            .cookie("halos_session")
            .unwrap();
        assert_eq!(totp(&d, &s2, &good).status, 401, "replay");

        let token = stdout(&ctl(&d, &["token", "create", "--user", "ann"]))
            .trim()
            .to_string();
        let forged = format!("{}x", &token[..token.len() - 1]);
        for t in [&token, &forged] {
            let _ = d.req(
                "GET",
                "/api/authz/forward-auth",
                &[
                    ("X-Forwarded-Method", "GET"),
                    ("X-Forwarded-Proto", "https"),
                    ("X-Forwarded-Host", "app.halos.local"),
                    ("X-Forwarded-Uri", "/"),
                    ("Authorization", &format!("Bearer {t}")),
                ],
                "",
            );
        }
        let code = stdout(&ctl(&d, &["user", "login-code", "ann"]))
            .trim()
            .to_string();
        let wrong_code = "ABCDE-FGHJK-MNPQR";
        for c in [code.as_str(), wrong_code, code.as_str()] {
            let r = d.req(
                "POST",
                "/api/logincode",
                &[HOST, JSON],
                &serde_json::json!({ "code": c }).to_string(),
            );
            assert!(r.status == 200 || r.status == 401, "{}", r.status);
        }
        // The last redemption's audit line is the last thing logged: wait for it.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while d.log_text().matches("factor=\"code\"").count() < 3 {
            assert!(
                std::time::Instant::now() < deadline,
                "no login-code lines: {}",
                d.log_text()
            );
            std::thread::yield_now();
        }
        let log = d.log_text();
        let canonical = code.replace('-', "");
        // `halos_<hex key id>_<secret>`; the base64url secret may itself contain `_`.
        let secret_part = token.splitn(3, '_').nth(2).unwrap().to_string();
        for s in [
            secret.as_str(),
            good.as_str(),
            secret_part.as_str(),
            forged.as_str(),
            code.as_str(),
            canonical.as_str(),
            wrong_code,
        ] {
            assert!(!log.contains(s), "{s} in the log");
        }
    }
}
