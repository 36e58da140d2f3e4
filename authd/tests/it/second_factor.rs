//! Second factors and first login against the real daemon: TOTP enrolment from
//! /settings, TOTP login (form and JSON), replay refusal, two_factor rules, the
//! settings password change and the forced change of the default password.

use crate::common::{Daemon, HttpResponse};

pub(crate) const PW: &str = "correct horse";
pub(crate) const HOST: (&str, &str) = ("X-Forwarded-Host", "halos.local");
pub(crate) const JSON: (&str, &str) = ("Content-Type", "application/json");
pub(crate) const FORM: (&str, &str) = ("Content-Type", "application/x-www-form-urlencoded");

pub(crate) fn users_yaml() -> String {
    let cfg = authd::config::Argon2Config {
        memory: 1024,
        iterations: 1,
        parallelism: 1,
        ..Default::default()
    };
    let h = authd::users::hash_password(PW.as_bytes(), &cfg).unwrap();
    let d = authd::users::hash_password(b"halos", &cfg).unwrap();
    format!(
        "users:\n  ann:\n    displayname: Ann Example\n    email: ann@halos.local\n    password: '{h}'\n    groups: [users]\n  admin:\n    displayname: Admin\n    password: '{d}'\n    groups: [admins]\n"
    )
}

pub(crate) const SITE: &str = r#"
session:
  cookies:
    - domain: halos.local
      authelia_url: https://halos.local/sso
      default_redirection_url: https://halos.local/
access_control:
  default_policy: one_factor
  rules:
    - domain: secure.halos.local
      policy: two_factor
"#;

pub(crate) fn daemon() -> Daemon {
    Daemon::start(&users_yaml(), SITE)
}

pub(crate) fn firstfactor(d: &Daemon, user: &str, pw: &str, target: &str) -> HttpResponse {
    d.req(
        "POST",
        "/api/firstfactor",
        &[JSON, HOST],
        &serde_json::json!({"username": user, "password": pw, "targetURL": target}).to_string(),
    )
}

pub(crate) fn fa(d: &Daemon, host: &str, cookie: &str) -> HttpResponse {
    d.req(
        "GET",
        "/api/authz/forward-auth",
        &[
            ("X-Forwarded-Method", "GET"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", host),
            ("X-Forwarded-Uri", "/"),
            ("Accept", "text/html"),
            ("Cookie", cookie),
        ],
        "",
    )
}

pub(crate) fn form(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

/// The text between `start` and the next `end` in `body`.
pub(crate) fn between<'a>(body: &'a str, start: &str, end: &str) -> &'a str {
    let i = body
        .find(start)
        .unwrap_or_else(|| panic!("{start} not in {body}"))
        + start.len();
    let rest = &body[i..];
    &rest[..rest.find(end).unwrap()]
}

/// `Cookie` header for a session and the page's CSRF cookie, and the CSRF token.
pub(crate) fn settings(d: &Daemon, session: &str) -> (HttpResponse, String, String) {
    let page = d.req("GET", "/settings", &[HOST, ("Cookie", session)], "");
    assert_eq!(page.status, 200, "{}", page.body);
    let csrf = page.cookie("__Host-halos_csrf").unwrap();
    let token = csrf.trim_start_matches("__Host-halos_csrf=").to_string();
    (page, format!("{session}; {csrf}"), token)
}

pub(crate) fn code_at(secret_b32: &str, t: u64) -> String {
    let secret = totp_rs::Secret::try_from_base32(secret_b32).unwrap();
    totp_rs::Builder::new()
        .with_secret(secret)
        .build_noncompliant()
        .generate(t)
        .to_string()
}

pub(crate) fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn totp_enrolment_login_replay_and_two_factor_rule() {
    let d = daemon();
    let r = firstfactor(&d, "ann", PW, "https://secure.halos.local/");
    assert_eq!(r.status, 200, "{}", r.body);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert!(
        v.get("data").is_none(),
        "no redirect before the second factor: {v}"
    );
    let s1 = r.cookie("halos_session").unwrap();

    // A password-only session passes one_factor but never two_factor.
    assert_eq!(fa(&d, "app.halos.local", &s1).status, 200);
    assert_eq!(fa(&d, "secure.halos.local", &s1).status, 302);
    // Nothing enrolled: the portal says where to enrol instead of passing.
    let p = d.req(
        "GET",
        "/?rd=https%3A%2F%2Fsecure.halos.local%2F",
        &[HOST, ("Cookie", &s1)],
        "",
    );
    assert_eq!(p.status, 200);
    assert!(
        p.body.contains("id=\"no-second-factor\"") && p.body.contains("/settings"),
        "{}",
        p.body
    );
    assert!(!p.body.contains("id=\"verify\""));

    // Enrol from /settings (the login itself counts as the recent password entry).
    let (_, cookies, token) = settings(&d, &s1);
    let r = d.req(
        "POST",
        "/settings/totp/start",
        &[HOST, FORM, ("Cookie", &cookies)],
        &form(&[("csrf", &token)]),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let secret = between(&r.body, "id=\"totp-secret\">", "<").to_string();
    let uri = between(&r.body, "id=\"totp-uri\">", "<");
    assert!(
        uri.starts_with("otpauth:&#x2f;&#x2f;totp&#x2f;HaLOS:ann?secret="),
        "{uri}"
    );
    assert!(
        r.body
            .contains("id=\"totp-qr\" src=\"data:image&#x2f;svg+xml;base64,")
    );
    let confirm = |code: &str| {
        d.req(
            "POST",
            "/settings/totp/confirm",
            &[HOST, FORM, ("Cookie", &cookies)],
            &form(&[("csrf", &token), ("code", code)]),
        )
    };
    let wrong = if code_at(&secret, now()) == "123456" {
        "654321"
    } else {
        "123456"
    };
    let r = confirm(wrong);
    assert_eq!(r.status, 400);
    assert!(r.body.contains("role=\"alert\""));
    let r = confirm(&code_at(&secret, now()));
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("Authenticator app set up"));
    // CSRF: without the token, nothing changes.
    let r = d.req(
        "POST",
        "/settings/totp/delete",
        &[HOST, FORM, ("Cookie", &cookies)],
        &form(&[("csrf", "x")]),
    );
    assert_eq!(r.status, 403);

    // The portal now asks for the code.
    let p = d.req(
        "GET",
        "/?rd=https%3A%2F%2Fsecure.halos.local%2F",
        &[HOST, ("Cookie", &s1)],
        "",
    );
    assert!(
        p.body.contains("name=\"code\"") && p.body.contains("id=\"verify\""),
        "{}",
        p.body
    );

    let totp = |cookie: &str, code: &str| {
        d.req(
            "POST",
            "/api/secondfactor/totp",
            &[HOST, JSON, ("Cookie", cookie)],
            &serde_json::json!({"token": code, "targetURL": "https://secure.halos.local/"})
                .to_string(),
        )
    };
    let r = totp(&s1, wrong);
    assert_eq!(r.status, 401);
    assert!(r.body.contains("Authentication failed"));
    // The next step's code (within skew; the enrolment used the current one).
    let next = code_at(&secret, now() + 30);
    let r = totp(&s1, &next);
    assert_eq!(r.status, 200, "{}", r.body);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["data"]["redirect"], "https://secure.halos.local/");
    let s2 = r.cookie("halos_session").unwrap();
    assert_ne!(s1, s2, "a new session id at the second factor");
    assert_eq!(
        fa(&d, "app.halos.local", &s1).status,
        302,
        "the old id is gone"
    );
    assert_eq!(fa(&d, "secure.halos.local", &s2).status, 200);
    let st = d.req("GET", "/api/state", &[HOST, ("Cookie", &s2)], "");
    assert!(
        st.body.contains("\"authentication_level\":2"),
        "{}",
        st.body
    );

    // Replay of a used code, and of an older step, are refused.
    let other = firstfactor(&d, "ann", PW, "")
        .cookie("halos_session")
        .unwrap();
    assert_eq!(totp(&other, &next).status, 401);
    assert_eq!(totp(&other, &code_at(&secret, now())).status, 401);
    assert_eq!(fa(&d, "secure.halos.local", &other).status, 302);
}

#[test]
fn totp_form_login_without_javascript() {
    let d = daemon();
    let s1 = firstfactor(&d, "ann", PW, "")
        .cookie("halos_session")
        .unwrap();
    let (_, cookies, token) = settings(&d, &s1);
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
    assert_eq!(r.status, 200);
    let r = d.req(
        "POST",
        "/login/totp",
        &[HOST, FORM, ("Cookie", &cookies)],
        &form(&[
            ("csrf", &token),
            ("code", &code_at(&secret, now() + 30)),
            ("rd", "https://secure.halos.local/x"),
        ]),
    );
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.header("location"), Some("https://secure.halos.local/x"));
    let s2 = r.cookie("halos_session").unwrap();
    assert_eq!(fa(&d, "secure.halos.local", &s2).status, 200);
}

#[test]
fn settings_password_change_needs_recent_password_and_strength() {
    let d = daemon();
    let s1 = firstfactor(&d, "ann", PW, "")
        .cookie("halos_session")
        .unwrap();
    let other = firstfactor(&d, "ann", PW, "")
        .cookie("halos_session")
        .unwrap();
    let (page, cookies, token) = settings(&d, &s1);
    assert!(page.body.contains("id=\"change-password\""));
    let change = |pw: &str| {
        d.req(
            "POST",
            "/settings/password",
            &[HOST, FORM, ("Cookie", &cookies)],
            &form(&[
                ("csrf", &token),
                ("new_password", pw),
                ("confirm_password", pw),
            ]),
        )
    };
    let r = change("password1");
    assert_eq!(r.status, 400);
    assert!(
        r.body.contains("role=\"alert\"") && r.body.contains("too weak"),
        "{}",
        r.body
    );
    let strong = "plum tractor sextant 4711 harbour";
    let r = change(strong);
    assert_eq!(r.status, 200, "{}", r.body);
    let s2 = r.cookie("halos_session").expect("session re-issued");
    assert_eq!(
        fa(&d, "app.halos.local", &s2).status,
        200,
        "this session stays valid"
    );
    assert_eq!(
        fa(&d, "app.halos.local", &other).status,
        302,
        "other sessions end"
    );
    assert_eq!(firstfactor(&d, "ann", PW, "").status, 401);
    assert_eq!(firstfactor(&d, "ann", strong, "").status, 200);
    let body = std::fs::read_to_string(d.path("users_database.yml")).unwrap();
    assert!(
        body.contains("displayname: Ann Example"),
        "file kept: {body}"
    );
}

#[test]
fn default_password_must_be_changed_before_any_redirect() {
    let d = daemon();
    let r = firstfactor(&d, "admin", "halos", "https://app.halos.local/x");
    assert_eq!(r.status, 200, "{}", r.body);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    let redirect = v["data"]["redirect"].as_str().unwrap().to_string();
    assert!(
        redirect.starts_with("https://halos.local/sso/password/change?rd="),
        "{redirect}"
    );
    let s = r.cookie("halos_session").unwrap();
    // Not logged in anywhere until the password is changed.
    assert_eq!(fa(&d, "app.halos.local", &s).status, 302);
    let st = d.req("GET", "/api/state", &[HOST, ("Cookie", &s)], "");
    assert!(
        st.body.contains("\"authentication_level\":0"),
        "{}",
        st.body
    );
    let p = d.req(
        "GET",
        "/?rd=https%3A%2F%2Fapp.halos.local%2Fx",
        &[HOST, ("Cookie", &s)],
        "",
    );
    assert_eq!(p.status, 302);
    assert!(p.header("location").unwrap().contains("/password/change"));

    let page = d.req(
        "GET",
        "/password/change?rd=https%3A%2F%2Fapp.halos.local%2Fx",
        &[HOST, ("Cookie", &s)],
        "",
    );
    assert_eq!(page.status, 200);
    assert!(page.body.contains("id=\"must-change\""));
    let csrf = page.cookie("__Host-halos_csrf").unwrap();
    let token = csrf.trim_start_matches("__Host-halos_csrf=").to_string();
    let cookies = format!("{s}; {csrf}");
    let change = |pw: &str| {
        d.req(
            "POST",
            "/password/change",
            &[HOST, FORM, ("Cookie", &cookies)],
            &form(&[
                ("csrf", &token),
                ("new_password", pw),
                ("confirm_password", pw),
                ("rd", "https://app.halos.local/x"),
            ]),
        )
    };
    for weak in ["halos", "password1"] {
        let r = change(weak);
        assert_eq!(r.status, 400, "{weak}");
        assert!(r.body.contains("role=\"alert\""));
        assert!(r.header("location").is_none());
    }
    let r = change("plum tractor sextant 4711 harbour");
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.header("location"), Some("https://app.halos.local/x"));
    let s2 = r.cookie("halos_session").unwrap();
    assert_eq!(fa(&d, "app.halos.local", &s2).status, 200);
    assert_eq!(firstfactor(&d, "admin", "halos", "").status, 401);
}

#[test]
fn basic_auth_with_the_default_password_is_refused() {
    use base64::Engine;
    let d = daemon();
    let basic = |pw: &str| {
        let v = base64::engine::general_purpose::STANDARD.encode(format!("admin:{pw}"));
        d.req(
            "GET",
            "/api/authz/forward-auth",
            &[
                ("X-Forwarded-Method", "GET"),
                ("X-Forwarded-Proto", "https"),
                ("X-Forwarded-Host", "app.halos.local"),
                ("X-Forwarded-Uri", "/"),
                ("Authorization", &format!("Basic {v}")),
            ],
            "",
        )
    };
    let r = basic("halos");
    assert_eq!(r.status, 401);
    assert!(r.header("www-authenticate").is_some());
    assert!(r.header("remote-user").is_none());
}

pub(crate) const CB: &str = "https://app.halos.local/cb";

pub(crate) fn oidc_daemon() -> Daemon {
    let extra = format!(
        "{SITE}identity_providers:\n  oidc:\n    issuer: https://halos.local/sso\n    clients:\n      - client_id: plain\n        client_secret: s3cret\n        redirect_uris: ['{CB}']\n      - client_id: strict\n        client_secret: s3cret\n        authorization_policy: two_factor\n        redirect_uris: ['{CB}']\n"
    );
    Daemon::start(&users_yaml(), &extra)
}

fn authorize(d: &Daemon, cookie: &str, client: &str) -> HttpResponse {
    d.req(
        "GET",
        &format!("/api/oidc/authorization?response_type=code&client_id={client}&redirect_uri={}&scope=openid&state=st1", url::form_urlencoded::byte_serialize(CB.as_bytes()).collect::<String>()),
        &[HOST, ("Cookie", cookie)],
        "",
    )
}

#[test]
fn oidc_two_factor_clients_and_default_password_get_no_code_early() {
    let d = oidc_daemon();
    // The default password: no code for any client until it is changed.
    let r = firstfactor(&d, "admin", "halos", "");
    let pending = r.cookie("halos_session").unwrap();
    let a = authorize(&d, &pending, "plain");
    assert_eq!(a.status, 302);
    let loc = a.header("location").unwrap();
    assert!(loc.starts_with("https://halos.local/sso/?rd="), "{loc}");
    assert!(!loc.contains("code="));

    // One factor: the plain client gets a code, the two_factor client sends to the portal,
    // which asks for the code, and after it the client gets its code.
    let s1 = firstfactor(&d, "ann", PW, "")
        .cookie("halos_session")
        .unwrap();
    let a = authorize(&d, &s1, "plain");
    assert!(
        a.header("location")
            .unwrap()
            .starts_with(&format!("{CB}?code=")),
        "{:?}",
        a.header("location")
    );
    let a = authorize(&d, &s1, "strict");
    let loc = a.header("location").unwrap().to_string();
    assert!(loc.starts_with("https://halos.local/sso/?rd="), "{loc}");
    let rd = url::Url::parse(&loc)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "rd")
        .unwrap()
        .1
        .into_owned();

    let (_, cookies, token) = settings(&d, &s1);
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
    assert_eq!(r.status, 200);
    let page = d.req(
        "GET",
        &format!(
            "/?rd={}",
            url::form_urlencoded::byte_serialize(rd.as_bytes()).collect::<String>()
        ),
        &[HOST, ("Cookie", &s1)],
        "",
    );
    assert!(page.body.contains("id=\"verify\""), "{}", page.body);
    let r = d.req(
        "POST",
        "/login/totp",
        &[HOST, FORM, ("Cookie", &cookies)],
        &form(&[
            ("csrf", &token),
            ("code", &code_at(&secret, now() + 30)),
            ("rd", &rd),
        ]),
    );
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.header("location"), Some(rd.as_str()));
    let s2 = r.cookie("halos_session").unwrap();
    let a = authorize(&d, &s2, "strict");
    assert!(
        a.header("location")
            .unwrap()
            .starts_with(&format!("{CB}?code=")),
        "{:?}",
        a.header("location")
    );
}

#[test]
fn settings_and_passkey_endpoints_guard_their_doors() {
    let d = daemon();
    // No session: /settings sends to the portal, the passkey APIs refuse.
    let r = d.req("GET", "/settings", &[HOST], "");
    assert_eq!(r.status, 302);
    assert!(
        r.header("location")
            .unwrap()
            .starts_with("https://halos.local/sso/?rd=")
    );
    let s1 = firstfactor(&d, "ann", PW, "")
        .cookie("halos_session")
        .unwrap();
    let (page, cookies, token) = settings(&d, &s1);
    assert!(page.body.contains("id=\"passkey-register\""));
    let start = |extra: &[(&str, &str)]| {
        let mut h = vec![HOST, JSON];
        h.extend_from_slice(extra);
        d.req("POST", "/api/webauthn/register/start", &h, "{}")
    };
    // The CSRF token must come in the header, matching the cookie.
    assert_eq!(start(&[("Cookie", &cookies)]).status, 403);
    assert_eq!(
        start(&[("Cookie", &cookies), ("X-CSRF-Token", "wrong")]).status,
        403
    );
    let ok = start(&[("Cookie", &cookies), ("X-CSRF-Token", &token)]);
    assert_eq!(ok.status, 200, "{}", ok.body);
    let v: serde_json::Value = serde_json::from_str(&ok.body).unwrap();
    assert_eq!(v["publicKey"]["rp"]["id"], "halos.local");
    assert_eq!(
        v["publicKey"]["authenticatorSelection"]["residentKey"],
        "required"
    );
    assert_eq!(
        v["publicKey"]["authenticatorSelection"]["userVerification"],
        "required"
    );
    assert!(ok.cookie("halos_webauthn").is_some());
    // Cross-site: refused.
    let r = start(&[
        ("Cookie", &cookies),
        ("X-CSRF-Token", &token),
        ("Origin", "https://evil.example"),
    ]);
    assert_eq!(r.status, 403);
    // A sign-in without a started ceremony fails like any other failed login.
    let r = d.req("POST", "/api/webauthn/login/finish", &[HOST, JSON],
        r#"{"credential":{"id":"AA","rawId":"AA","type":"public-key","response":{"authenticatorData":"AA","clientDataJSON":"AA","signature":"AA","userHandle":"AA"},"extensions":{}}}"#);
    assert_eq!(r.status, 401);
    let r = d.req("POST", "/api/webauthn/login/start", &[HOST, JSON], "{}");
    assert_eq!(r.status, 200);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["publicKey"]["userVerification"], "required");
    assert!(v.get("mediation").is_none());
}

#[test]
fn a_login_code_does_not_skip_the_default_password_change() {
    let d = daemon();
    let code = crate::api_tokens::stdout(&crate::api_tokens::ctl(
        &d,
        &["user", "login-code", "admin"],
    ));
    let r = d.req(
        "POST",
        "/api/logincode",
        &[JSON, HOST, ("X-Forwarded-Proto", "https")],
        &serde_json::json!({ "code": code.trim() }).to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    let settings = "https://halos.local/sso/settings";
    let change_url = format!(
        "https://halos.local/sso/password/change?{}",
        form(&[("rd", settings)])
    );
    assert_eq!(v["data"]["redirect"], change_url.as_str());
    let s = r.cookie("halos_session").unwrap();
    // Neither the apps nor the settings take the session before the change.
    assert_eq!(fa(&d, "app.halos.local", &s).status, 302);
    let page = d.req("GET", "/settings", &[HOST, ("Cookie", &s)], "");
    assert_ne!(page.status, 200, "{}", page.body);

    let page = d.req(
        "GET",
        &change_url["https://halos.local/sso".len()..],
        &[HOST, ("Cookie", &s)],
        "",
    );
    assert_eq!(page.status, 200);
    assert!(page.body.contains("id=\"must-change\""), "{}", page.body);
    let csrf = page.cookie("__Host-halos_csrf").unwrap();
    let token = csrf.trim_start_matches("__Host-halos_csrf=").to_string();
    let new = "gunwale thwart 3141 oarlock";
    let r = d.req(
        "POST",
        "/password/change",
        &[HOST, FORM, ("Cookie", &format!("{s}; {csrf}"))],
        &form(&[
            ("csrf", &token),
            ("new_password", new),
            ("confirm_password", new),
            ("rd", settings),
        ]),
    );
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.header("location"), Some(settings));
    // Then straight on to enrolment: the code still counts as a fresh sign-in.
    let s2 = r.cookie("halos_session").unwrap();
    let page = d.req("GET", "/settings", &[HOST, ("Cookie", &s2)], "");
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body.contains("id=\"passkey-register\""),
        "{}",
        page.body
    );
    assert!(!page.body.contains("id=\"reauth-form\""), "{}", page.body);
    assert_eq!(firstfactor(&d, "admin", "halos", "").status, 401);
}
