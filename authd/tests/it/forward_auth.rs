//! DESIGN §6, row by row, against the real daemon; plus login, logout, regulation,
//! restarts and the access_control criteria.

use crate::common::{Daemon, HttpResponse};

const PW: &str = "correct horse";

/// Users with cheap digests (argon2 m=1024), made by the daemon's own config params.
fn users_yaml() -> String {
    let cfg = authd::config::Argon2Config {
        memory: 1024,
        iterations: 1,
        parallelism: 1,
        ..Default::default()
    };
    let h = authd::users::hash_password(PW.as_bytes(), &cfg).unwrap();
    format!(
        "users:\n  ann:\n    displayname: Ann Example\n    email: ann@halos.local\n    password: '{h}'\n    groups: [users, crew]\n  boss:\n    displayname: Jörg Boss\n    email: boss@halos.local\n    password: '{h}'\n    groups: [admins]\n  dis:\n    displayname: Dis\n    password: '{h}'\n    disabled: true\n"
    )
}

const SITE: &str = r#"
session:
  cookies:
    - domain: halos.local
      authelia_url: https://halos.local/sso
      default_redirection_url: https://halos.local/
    - domain: lan.test
      authelia_url: http://auth.lan.test/sso
access_control:
  default_policy: one_factor
  rules:
    - domain: public.halos.local
      policy: bypass
    - domain: admin.halos.local
      subject: [['group:admins']]
      policy: one_factor
    - domain: admin.halos.local
      policy: deny
    - domain: secure.halos.local
      policy: two_factor
    - domain: deny.halos.local
      policy: deny
    - domain: api.halos.local
      resources: ['^/admin([/?].*)?$']
      methods: [POST, DELETE]
      policy: deny
    - domain: net.halos.local
      networks: [192.168.50.0/24]
      policy: bypass
    - domain: '*.crew.halos.local'
      subject: ['group:crew']
      policy: one_factor
    - domain: '*.crew.halos.local'
      policy: deny
    - domain: grafana.halos.local
      policy: one_factor
      identity_headers: {user: X-WEBAUTH-USER, groups: X-WEBAUTH-GROUPS, name: X-WEBAUTH-NAME, email: X-WEBAUTH-EMAIL}
"#;

fn daemon() -> Daemon {
    Daemon::start(&users_yaml(), SITE)
}

const BROWSER: (&str, &str) = ("Accept", "text/html,application/xhtml+xml");

fn login(d: &Daemon, user: &str, pw: &str) -> HttpResponse {
    d.req(
        "POST",
        "/api/firstfactor",
        &[("Content-Type", "application/json"), ("X-Forwarded-Host", "halos.local"), ("X-Forwarded-Proto", "https")],
        &serde_json::json!({"username": user, "password": pw, "keepMeLoggedIn": false, "targetURL": "https://app.halos.local/x"}).to_string(),
    )
}

fn session_cookie(d: &Daemon, user: &str) -> String {
    let r = login(d, user, PW);
    assert_eq!(r.status, 200, "{}", r.body);
    r.cookie("halos_session").expect("session cookie")
}

fn fa(d: &Daemon, method: &str, url: &str, extra: &[(&str, &str)]) -> HttpResponse {
    let u = url::Url::parse(url).unwrap();
    let uri = match u.query() {
        Some(q) => format!("{}?{q}", u.path()),
        None => u.path().to_string(),
    };
    let host = u.host_str().unwrap().to_string();
    let mut h: Vec<(&str, &str)> = vec![
        ("X-Forwarded-Method", method),
        ("X-Forwarded-Proto", u.scheme()),
        ("X-Forwarded-Host", &host),
        ("X-Forwarded-Uri", &uri),
    ];
    h.extend_from_slice(extra);
    d.req("GET", "/api/authz/forward-auth", &h, "")
}

fn identity(r: &HttpResponse) -> [Option<&str>; 4] {
    [
        r.header("remote-user"),
        r.header("remote-groups"),
        r.header("remote-name"),
        r.header("remote-email"),
    ]
}

#[test]
fn decision_table() {
    let d = daemon();
    let portal_loc = "https://halos.local/sso/?rd=https%3A%2F%2Fapp.halos.local%2Fx%3Fa%3D1&rm=";

    // Anonymous browser: 302 for GET/HEAD/OPTIONS, 303 for others, Location to the portal.
    for m in ["GET", "HEAD", "OPTIONS"] {
        let r = fa(&d, m, "https://app.halos.local/x?a=1", &[BROWSER]);
        assert_eq!(r.status, 302, "{m}");
        assert_eq!(r.header("location").unwrap(), format!("{portal_loc}{m}"));
    }
    for m in ["POST", "PUT", "DELETE", "PATCH"] {
        let r = fa(&d, m, "https://app.halos.local/x?a=1", &[BROWSER]);
        assert_eq!(r.status, 303, "{m}");
        assert_eq!(r.header("location").unwrap(), format!("{portal_loc}{m}"));
    }
    // XHR and non-HTML clients: 401 with the same Location.
    let r = fa(
        &d,
        "GET",
        "https://app.halos.local/x?a=1",
        &[BROWSER, ("X-Requested-With", "XMLHttpRequest")],
    );
    assert_eq!(
        (r.status, r.header("location").unwrap()),
        (401, format!("{portal_loc}GET").as_str())
    );
    let r = fa(
        &d,
        "GET",
        "https://app.halos.local/x?a=1",
        &[("Accept", "application/json")],
    );
    assert_eq!(r.status, 401);
    assert!(r.header("location").is_some());
    // auth-request (nginx): always 401 + Location.
    let r = d.req(
        "GET",
        "/api/authz/auth-request",
        &[
            BROWSER,
            ("X-Original-URL", "https://app.halos.local/x?a=1"),
            ("X-Original-Method", "GET"),
        ],
        "",
    );
    assert_eq!(
        (r.status, r.header("location").unwrap()),
        (401, format!("{portal_loc}GET").as_str())
    );

    // Logged in: 200 and all four identity headers.
    let ann = session_cookie(&d, "ann");
    let c = ("Cookie", ann.as_str());
    let r = fa(&d, "GET", "https://app.halos.local/x", &[BROWSER, c]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        identity(&r),
        [
            Some("ann"),
            Some("users,crew"),
            Some("Ann Example"),
            Some("ann@halos.local")
        ]
    );
    let r = d.req(
        "GET",
        "/api/authz/auth-request",
        &[
            c,
            ("X-Original-URL", "https://app.halos.local/x"),
            ("X-Original-Method", "GET"),
        ],
        "",
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("remote-user"), Some("ann"));
    // Non-ASCII display names pass through as UTF-8.
    let boss = session_cookie(&d, "boss");
    let r = fa(
        &d,
        "GET",
        "https://app.halos.local/",
        &[("Cookie", boss.as_str())],
    );
    assert_eq!(r.header("remote-name"), Some("Jörg Boss"));

    // Policy deny: 403, for a user and for anonymous when the rule has no subject.
    assert_eq!(
        fa(&d, "GET", "https://deny.halos.local/", &[BROWSER, c]).status,
        403
    );
    assert_eq!(
        fa(&d, "GET", "https://deny.halos.local/", &[BROWSER]).status,
        403
    );
    // Group rule: ann (not admin) → falls to the deny rule → 403; boss → 200;
    // anonymous matches the subject rule → must log in first (302, not 403).
    assert_eq!(
        fa(&d, "GET", "https://admin.halos.local/", &[BROWSER, c]).status,
        403
    );
    assert_eq!(
        fa(
            &d,
            "GET",
            "https://admin.halos.local/",
            &[BROWSER, ("Cookie", boss.as_str())]
        )
        .status,
        200
    );
    assert_eq!(
        fa(&d, "GET", "https://admin.halos.local/", &[BROWSER]).status,
        302
    );
    // two_factor with a password-only session: back to the portal, never 200.
    let r = fa(&d, "GET", "https://secure.halos.local/", &[BROWSER, c]);
    assert_eq!(r.status, 302);
    assert!(
        r.header("location")
            .unwrap()
            .starts_with("https://halos.local/sso/?rd=")
    );
    // bypass: 200 without identity for anonymous, with identity for a user.
    let r = fa(&d, "GET", "https://public.halos.local/", &[BROWSER]);
    assert_eq!((r.status, r.header("remote-user")), (200, None));
    let r = fa(&d, "GET", "https://public.halos.local/", &[BROWSER, c]);
    assert_eq!((r.status, r.header("remote-user")), (200, Some("ann")));
    // Per-rule identity header names (Grafana's X-WEBAUTH-USER).
    let r = fa(&d, "GET", "https://grafana.halos.local/", &[c]);
    assert_eq!(
        (r.header("x-webauth-user"), r.header("remote-user")),
        (Some("ann"), None)
    );
    assert_eq!(r.header("x-webauth-groups"), Some("users,crew"));
}

#[test]
fn access_control_criteria() {
    let d = daemon();
    let ann = session_cookie(&d, "ann");
    let c = ("Cookie", ann.as_str());
    // resources + methods: only POST/DELETE on /admin… are denied.
    assert_eq!(
        fa(&d, "POST", "https://api.halos.local/admin/users", &[c]).status,
        403
    );
    assert_eq!(
        fa(&d, "DELETE", "https://api.halos.local/admin?x=1", &[c]).status,
        403
    );
    assert_eq!(
        fa(&d, "GET", "https://api.halos.local/admin/users", &[c]).status,
        200
    );
    assert_eq!(
        fa(&d, "POST", "https://api.halos.local/administrator", &[c]).status,
        200
    );
    // networks: the client address comes from X-Forwarded-For via the trusted proxy.
    let r = fa(
        &d,
        "GET",
        "https://net.halos.local/",
        &[BROWSER, ("X-Forwarded-For", "192.168.50.7")],
    );
    assert_eq!(r.status, 200);
    let r = fa(
        &d,
        "GET",
        "https://net.halos.local/",
        &[BROWSER, ("X-Forwarded-For", "192.168.51.7")],
    );
    assert_eq!(r.status, 302);
    // wildcard domain + group subject.
    assert_eq!(
        fa(&d, "GET", "https://chart.crew.halos.local/", &[c]).status,
        200
    );
    let boss = session_cookie(&d, "boss");
    assert_eq!(
        fa(
            &d,
            "GET",
            "https://chart.crew.halos.local/",
            &[("Cookie", boss.as_str())]
        )
        .status,
        403
    );
    // default policy one_factor.
    assert_eq!(fa(&d, "GET", "https://halos.local/", &[c]).status, 200);
}

#[test]
fn malformed_and_untrusted_requests_are_400() {
    let d = daemon();
    let base = [
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Host", "app.halos.local"),
        ("X-Forwarded-Uri", "/"),
    ];
    // Missing method, lowercase method, bad URI.
    assert_eq!(
        d.req("GET", "/api/authz/forward-auth", &base, "").status,
        400
    );
    let mut h = base.to_vec();
    h.push(("X-Forwarded-Method", "get"));
    assert_eq!(d.req("GET", "/api/authz/forward-auth", &h, "").status, 400);
    let r = d.req(
        "GET",
        "/api/authz/forward-auth",
        &[
            ("X-Forwarded-Method", "GET"),
            ("X-Forwarded-Host", "app.halos.local"),
            ("X-Forwarded-Uri", "x"),
        ],
        "",
    );
    assert_eq!(r.status, 400);
    // Hosts outside every cookie domain, look-alikes, IPs.
    for url in [
        "https://evil.example/",
        "https://halos.local.evil.example/",
        "https://evilhalos.local/",
        "https://10.0.0.1/",
    ] {
        assert_eq!(fa(&d, "GET", url, &[BROWSER]).status, 400, "{url}");
    }
    // Plain http only where the portal is http (LAN opt-in).
    assert_eq!(
        fa(&d, "GET", "http://app.halos.local/", &[BROWSER]).status,
        400
    );
    let r = fa(&d, "GET", "http://nas.lan.test/", &[BROWSER]);
    assert_eq!(r.status, 302);
    assert!(
        r.header("location")
            .unwrap()
            .starts_with("http://auth.lan.test/sso/?rd=http%3A%2F%2Fnas.lan.test%2F")
    );
    // auth-request without its headers.
    assert_eq!(
        d.req(
            "GET",
            "/api/authz/auth-request",
            &[("X-Original-URL", "https://app.halos.local/")],
            ""
        )
        .status,
        400
    );
    // Portal override: safe one used, unsafe one refused.
    let r = fa(&d, "GET", "https://app.halos.local/", &[BROWSER]);
    assert_eq!(r.status, 302);
    let over = d.req(
        "GET",
        "/api/authz/forward-auth?authelia_url=https%3A%2F%2Fauth.halos.local%2Fsso",
        &[
            BROWSER,
            ("X-Forwarded-Method", "GET"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "app.halos.local"),
            ("X-Forwarded-Uri", "/"),
        ],
        "",
    );
    assert!(
        over.header("location")
            .unwrap()
            .starts_with("https://auth.halos.local/sso/?rd="),
        "{:?}",
        over.header("location")
    );
    let evil = d.req(
        "GET",
        "/api/authz/forward-auth?authelia_url=https%3A%2F%2Fevil.example%2F",
        &[
            BROWSER,
            ("X-Forwarded-Method", "GET"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "app.halos.local"),
            ("X-Forwarded-Uri", "/"),
        ],
        "",
    );
    assert_eq!(evil.status, 400);
    // Legacy /api/verify: portal from ?rd=, 401 without one.
    let r = d.req(
        "GET",
        "/api/verify?rd=https%3A%2F%2Fhalos.local%2Fsso%2F",
        &[BROWSER, ("X-Original-URL", "https://app.halos.local/p")],
        "",
    );
    assert_eq!(r.status, 302);
    assert!(
        r.header("location")
            .unwrap()
            .starts_with("https://halos.local/sso/?rd=https%3A%2F%2Fapp.halos.local%2Fp")
    );
    let r = d.req(
        "GET",
        "/api/verify",
        &[BROWSER, ("X-Original-URL", "https://app.halos.local/p")],
        "",
    );
    assert_eq!(r.status, 401);
}

#[test]
fn headers_from_untrusted_peers_are_not_believed() {
    // A daemon that trusts only 10.0.0.0/8 does not believe our (127.0.0.1) headers.
    let d = Daemon::start_with_server(&users_yaml(), SITE, "  trusted_proxies: [10.0.0.0/8]\n");
    let r = fa(&d, "GET", "https://app.halos.local/", &[BROWSER]);
    assert_eq!(r.status, 400);
    // Portal logins from an untrusted peer use the Host header, not X-Forwarded-Host.
    let r = login(&d, "ann", PW);
    assert_eq!(
        r.status, 400,
        "X-Forwarded-Host must be ignored: {}",
        r.body
    );
}

#[test]
fn login_logout_and_identical_failures() {
    let d = daemon();
    let r = login(&d, "ann", PW);
    assert_eq!(r.status, 200);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"status": "OK", "data": {"redirect": "https://app.halos.local/x"}})
    );
    let set_cookie = r
        .headers
        .iter()
        .find(|(k, v)| k.eq_ignore_ascii_case("set-cookie") && v.starts_with("halos_session="))
        .unwrap()
        .1
        .clone();
    for attr in [
        "Domain=halos.local",
        "HttpOnly",
        "SameSite=Lax",
        "Secure",
        "Path=/",
    ] {
        assert!(set_cookie.contains(attr), "{set_cookie}");
    }
    assert!(
        !set_cookie.contains("Max-Age"),
        "no remember-me: a browser-session cookie"
    );
    let cookie = r.cookie("halos_session").unwrap();
    let st = d.req(
        "GET",
        "/api/state",
        &[("Cookie", &cookie), ("X-Forwarded-Host", "halos.local")],
        "",
    );
    let v: serde_json::Value = serde_json::from_str(&st.body).unwrap();
    assert_eq!(
        v["data"],
        serde_json::json!({"username": "ann", "authentication_level": 1})
    );

    // Unsafe targets get no redirect.
    for t in [
        "https://evil.example/",
        "//evil.example",
        "javascript:alert(1)",
    ] {
        let r = d.req(
            "POST",
            "/api/firstfactor",
            &[
                ("Content-Type", "application/json"),
                ("X-Forwarded-Host", "halos.local"),
            ],
            &serde_json::json!({"username": "ann", "password": PW, "targetURL": t}).to_string(),
        );
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v["data"]["redirect"], serde_json::Value::Null, "{t}");
    }

    // Failures look the same whatever the cause.
    let expected = serde_json::json!({"status": "KO", "message": "Authentication failed. Check your credentials."});
    for (u, p) in [("ann", "wrong"), ("nobody", PW), ("dis", PW)] {
        let r = login(&d, u, p);
        assert_eq!(r.status, 401, "{u}");
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&r.body).unwrap(),
            expected,
            "{u}"
        );
        assert!(r.cookie("halos_session").is_none());
    }

    // Logout ends the session server-side: the old cookie no longer works anywhere.
    let r = d.req(
        "POST",
        "/api/logout",
        &[
            ("Content-Type", "application/json"),
            ("Cookie", &cookie),
            ("X-Forwarded-Host", "halos.local"),
        ],
        r#"{"targetURL":"https://app.halos.local/"}"#,
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&r.body).unwrap()["data"]["safeTargetURL"],
        true
    );
    assert_eq!(
        fa(
            &d,
            "GET",
            "https://app.halos.local/",
            &[BROWSER, ("Cookie", &cookie)]
        )
        .status,
        302
    );
}

#[test]
fn new_session_id_at_login_and_browser_logout() {
    let d = daemon();
    let first = session_cookie(&d, "ann");
    // Logging in again with a session cookie gives a new id and ends the old one.
    let r = d.req(
        "POST",
        "/api/firstfactor",
        &[
            ("Content-Type", "application/json"),
            ("Cookie", &first),
            ("X-Forwarded-Host", "halos.local"),
        ],
        &serde_json::json!({"username": "ann", "password": PW}).to_string(),
    );
    let second = r.cookie("halos_session").unwrap();
    assert_ne!(first, second);
    assert_eq!(
        fa(&d, "GET", "https://app.halos.local/", &[("Cookie", &first)]).status,
        401
    );
    assert_eq!(
        fa(
            &d,
            "GET",
            "https://app.halos.local/",
            &[("Cookie", &second)]
        )
        .status,
        200
    );
    // GET /logout follows a safe rd, and refuses an unsafe one.
    let r = d.req(
        "GET",
        "/logout?rd=https%3A%2F%2Fapp.halos.local%2Fbye",
        &[("Cookie", &second), ("X-Forwarded-Host", "halos.local")],
        "",
    );
    assert_eq!(
        (r.status, r.header("location")),
        (302, Some("https://app.halos.local/bye"))
    );
    assert_eq!(
        fa(
            &d,
            "GET",
            "https://app.halos.local/",
            &[("Cookie", &second)]
        )
        .status,
        401
    );
    let r = d.req(
        "GET",
        "/logout?rd=https%3A%2F%2Fevil.example%2F",
        &[("X-Forwarded-Host", "halos.local")],
        "",
    );
    assert_eq!(r.header("location"), Some("https://halos.local/sso/"));
}

#[test]
fn disabled_or_changed_users_lose_access_and_sessions_survive_restart() {
    let d = daemon();
    let ann = session_cookie(&d, "ann");
    let boss = session_cookie(&d, "boss");
    let d = d.restart();
    assert_eq!(
        fa(&d, "GET", "https://app.halos.local/", &[("Cookie", &ann)]).status,
        200,
        "session must survive a restart"
    );
    // Disable ann and change boss's password by editing the file (as the Cockpit panel would).
    let users = d.path("users_database.yml");
    let text = std::fs::read_to_string(&users).unwrap();
    let cfg = authd::config::Argon2Config {
        memory: 1024,
        iterations: 1,
        parallelism: 1,
        ..Default::default()
    };
    let newh = authd::users::hash_password(b"new", &cfg).unwrap();
    let text = text.replace(
        "groups: [users, crew]",
        "groups: [users, crew]\n    disabled: true",
    );
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    let boss_pw = lines.iter().position(|l| l.contains("Jörg Boss")).unwrap() + 2;
    lines[boss_pw] = format!("    password: '{newh}'");
    let tmp = users.with_extension("new");
    std::fs::write(&tmp, lines.join("\n") + "\n").unwrap();
    std::fs::rename(&tmp, &users).unwrap();
    let start = std::time::Instant::now();
    loop {
        let a = fa(&d, "GET", "https://app.halos.local/", &[("Cookie", &ann)]).status;
        let b = fa(&d, "GET", "https://app.halos.local/", &[("Cookie", &boss)]).status;
        if a == 401 && b == 401 {
            break;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(2),
            "disable/password change not applied: {a} {b}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn regulation_bans_silently() {
    let d = daemon();
    for _ in 0..3 {
        assert_eq!(login(&d, "ann", "wrong").status, 401);
    }
    // Banned: the right password now fails exactly like a wrong one.
    let r = login(&d, "ann", PW);
    assert_eq!(r.status, 401);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&r.body).unwrap()["message"],
        "Authentication failed. Check your credentials."
    );
}

#[test]
fn remember_me_sets_a_persistent_cookie() {
    let d = daemon();
    let r = d.req(
        "POST",
        "/api/firstfactor",
        &[
            ("Content-Type", "application/json"),
            ("X-Forwarded-Host", "halos.local"),
        ],
        &serde_json::json!({"username": "ann", "password": PW, "keepMeLoggedIn": true}).to_string(),
    );
    let sc = r
        .headers
        .iter()
        .find(|(k, v)| k.eq_ignore_ascii_case("set-cookie") && v.starts_with("halos_session="))
        .unwrap()
        .1
        .clone();
    assert!(sc.contains(&format!("Max-Age={}", 365 * 86400)), "{sc}");
    // No target: the cookie domain's default redirection URL.
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["data"]["redirect"], "https://halos.local/");
}

fn form_encode(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

#[test]
fn html_form_login_with_csrf_and_security_headers() {
    let d = daemon();
    let host = ("X-Forwarded-Host", "halos.local");
    let page = d.req(
        "GET",
        "/?rd=https%3A%2F%2Fapp.halos.local%2Fdash&rm=GET",
        &[host],
        "",
    );
    assert_eq!(page.status, 200);
    for (h, v) in [
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
        ("x-content-type-options", "nosniff"),
        ("cache-control", "no-store"),
    ] {
        assert_eq!(page.header(h), Some(v), "{h}");
    }
    let csp = page.header("content-security-policy").unwrap();
    assert!(
        csp.contains("frame-ancestors 'none'") && csp.contains("default-src 'none'"),
        "{csp}"
    );
    for needle in [
        "name=\"username\"",
        "name=\"password\"",
        "name=\"remember_me\"",
        "id=\"sign-in\"",
        "name=\"rd\" value=\"https:&#x2f;&#x2f;app.halos.local&#x2f;dash\"",
    ] {
        assert!(page.body.contains(needle), "{needle} missing");
    }
    let csrf_cookie = page.cookie("__Host-halos_csrf").unwrap();
    let token = csrf_cookie
        .trim_start_matches("__Host-halos_csrf=")
        .to_string();
    assert!(page.body.contains(&token));

    let form = |csrf: &str, pw: &str| {
        form_encode(&[
            ("username", "ann"),
            ("password", pw),
            ("rd", "https://app.halos.local/dash"),
            ("rm", "GET"),
            ("csrf", csrf),
        ])
    };
    let ct = ("Content-Type", "application/x-www-form-urlencoded");
    // Without the CSRF cookie/field pair: refused, nothing logged in.
    let r = d.req("POST", "/login", &[host, ct], &form(&token, PW));
    assert_eq!(r.status, 403);
    assert!(r.cookie("halos_session").is_none());
    // Cross-site submission: refused even with a matching pair.
    let r = d.req(
        "POST",
        "/login",
        &[
            host,
            ct,
            ("Cookie", &csrf_cookie),
            ("Origin", "https://evil.example"),
        ],
        &form(&token, PW),
    );
    assert_eq!(r.status, 403);
    // Wrong password: the page again, with an alert that does not say which part was wrong.
    let r = d.req(
        "POST",
        "/login",
        &[host, ct, ("Cookie", &csrf_cookie)],
        &form(&token, "nope"),
    );
    assert_eq!(r.status, 401);
    assert!(
        r.body.contains("role=\"alert\"") && r.body.contains("Incorrect username or password.")
    );
    // Right password: 303 back to the app with a session cookie.
    let r = d.req(
        "POST",
        "/login",
        &[
            host,
            ct,
            ("Cookie", &csrf_cookie),
            ("Origin", "null"),
            ("Sec-Fetch-Site", "same-origin"),
        ],
        &form(&token, PW),
    );
    assert_eq!(
        (r.status, r.header("location")),
        (303, Some("https://app.halos.local/dash"))
    );
    let session = r.cookie("halos_session").unwrap();
    assert_eq!(
        fa(
            &d,
            "GET",
            "https://app.halos.local/dash",
            &[("Cookie", &session)]
        )
        .status,
        200
    );
    // Back at the portal with a session and a safe rd: straight on.
    let r = d.req(
        "GET",
        "/?rd=https%3A%2F%2Fapp.halos.local%2Fagain",
        &[host, ("Cookie", &session)],
        "",
    );
    assert_eq!(
        (r.status, r.header("location")),
        (302, Some("https://app.halos.local/again"))
    );
}

/// A flood of logins costs at most `max_concurrent` hashes at once; the rest get 503.
#[test]
fn login_flood_is_bounded_with_503_and_retry_after() {
    // Real (expensive) digest for this user so the queue fills.
    let heavy = authd::config::Argon2Config {
        memory: 32 * 1024,
        iterations: 12,
        parallelism: 1,
        ..Default::default()
    };
    let h = authd::users::hash_password(PW.as_bytes(), &heavy).unwrap();
    let users = format!("users:\n  ann:\n    displayname: Ann\n    password: '{h}'\n");
    let extra = format!("{SITE}regulation: {{max_retries: 0}}\n");
    let d = Daemon::start(&users, &extra);
    let addr = d.addr;
    let prefix = d.prefix.clone();
    // All 40 are released at once: on a loaded machine, staggered thread start-up could
    // otherwise let the verifier keep pace and no login would need turning away.
    let start = std::sync::Arc::new(std::sync::Barrier::new(40));
    let threads: Vec<_> = (0..40)
        .map(|_| {
            let prefix = prefix.clone();
            let start = start.clone();
            std::thread::spawn(move || {
                start.wait();
                crate::common::http(
                    addr,
                    "POST",
                    &format!("{prefix}/api/firstfactor"),
                    &[
                        ("Content-Type", "application/json"),
                        ("X-Forwarded-Host", "halos.local"),
                    ],
                    &serde_json::json!({"username": "ann", "password": "wrong"}).to_string(),
                )
            })
        })
        .collect();
    let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let busy: Vec<_> = results.iter().filter(|r| r.status == 503).collect();
    let failed = results.iter().filter(|r| r.status == 401).count();
    assert!(!busy.is_empty(), "some logins must be turned away");
    assert!(failed >= 2, "queued logins are still answered");
    assert_eq!(busy.len() + failed, 40);
    for r in busy {
        assert_eq!(r.header("retry-after"), Some("2"));
    }
}

/// A client that sends its body too slowly is cut off with 408 instead of holding a task.
#[test]
fn slow_clients_time_out() {
    use std::io::{Read, Write};
    let d = Daemon::start_with_server(&users_yaml(), SITE, "  request_timeout: 1s\n");
    let mut s = std::net::TcpStream::connect(d.addr).unwrap();
    s.write_all(b"POST /sso/api/firstfactor HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"user").unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let start = std::time::Instant::now();
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    assert!(start.elapsed() < std::time::Duration::from_secs(3));
    // A body over the limit is refused outright.
    let big = "x".repeat(70 * 1024);
    let r = d.req(
        "POST",
        "/api/firstfactor",
        &[
            ("Content-Type", "application/json"),
            ("X-Forwarded-Host", "halos.local"),
        ],
        &big,
    );
    assert_eq!(r.status, 413);
}

#[test]
fn metrics_count_decisions_and_logins() {
    let d = daemon();
    assert_eq!(d.get("/metrics").status, 404, "off by default");
    let d = Daemon::start(
        &users_yaml(),
        &format!("{SITE}telemetry:\n  metrics:\n    enabled: true\n"),
    );
    let _ = fa(&d, "GET", "https://app.halos.local/", &[BROWSER]);
    let _ = fa(&d, "GET", "https://deny.halos.local/", &[BROWSER]);
    let _ = login(&d, "ann", "wrong");
    let cookie = session_cookie(&d, "ann");
    let _ = fa(
        &d,
        "GET",
        "https://app.halos.local/",
        &[("Cookie", &cookie)],
    );
    let m = d.get("/metrics");
    assert_eq!(m.status, 200);
    for line in [
        "halos_authd_authz_decisions_total{result=\"redirect\"} 1",
        "halos_authd_authz_decisions_total{result=\"forbidden\"} 1",
        "halos_authd_authz_decisions_total{result=\"allowed\"} 1",
        "halos_authd_authz_duration_seconds_count 3",
        "halos_authd_logins_total{factor=\"password\",result=\"failure\"} 1",
        "halos_authd_logins_total{factor=\"password\",result=\"success\"} 1",
        "halos_authd_sessions 1",
    ] {
        assert!(m.body.contains(line), "missing {line}:\n{}", m.body);
    }
}
