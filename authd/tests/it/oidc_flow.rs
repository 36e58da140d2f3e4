//! The OIDC provider over real HTTP: discovery, code + PKCE, tokens, userinfo, refresh
//! rotation, replay and reuse detection, introspection, revocation, end-session.
//! (Independent client libraries drive the same flows in tests/e2e.)

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use crate::common::{Daemon, HttpResponse};

const PW: &str = "correct horse";
const CB: &str = "https://app.halos.local/cb";

fn setup() -> Daemon {
    let cfg = authd::config::Argon2Config {
        memory: 1024,
        iterations: 1,
        parallelism: 1,
        ..Default::default()
    };
    let h = authd::users::hash_password(PW.as_bytes(), &cfg).unwrap();
    let users = format!(
        "users:\n  ann:\n    displayname: Ann\n    email: ann@halos.local\n    password: '{h}'\n    groups: [users]\n"
    );
    let extra = format!(
        r#"
session:
  cookies:
    - domain: halos.local
      authelia_url: https://halos.local/sso
identity_providers:
  oidc:
    issuer: https://halos.local/sso
    clients:
      - client_id: app
        client_secret: s3cret
        redirect_uris: ['{CB}']
        scopes: [openid, profile, email, groups, offline_access]
        token_endpoint_auth_method: client_secret_post
      - client_id: spa
        public: true
        redirect_uris: ['{CB}']
      - client_id: explicit
        client_secret: s3cret
        consent_mode: explicit
        redirect_uris: ['{CB}']
        post_logout_redirect_uris: ['https://app.halos.local/bye']
"#
    );
    Daemon::start(&users, &extra)
}

const HOST: (&str, &str) = ("X-Forwarded-Host", "halos.local");

fn login(d: &Daemon) -> String {
    let r = d.req(
        "POST",
        "/api/firstfactor",
        &[("Content-Type", "application/json"), HOST],
        &serde_json::json!({"username": "ann", "password": PW}).to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    r.cookie("halos_session").unwrap()
}

fn query_param(location: &str, name: &str) -> Option<String> {
    url::Url::parse(location)
        .ok()?
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

fn authorize(d: &Daemon, cookie: &str, client: &str, extra: &str) -> HttpResponse {
    d.req(
        "GET",
        &format!("/api/oidc/authorization?response_type=code&client_id={client}&redirect_uri={}&scope=openid%20profile%20email%20groups%20offline_access&state=st4te&nonce=n0nce{extra}", urlenc(CB)),
        &[("Cookie", cookie), HOST],
        "",
    )
}

fn urlenc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn token(d: &Daemon, form: &[(&str, &str)]) -> (u16, serde_json::Value) {
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    let r = d.req(
        "POST",
        "/api/oidc/token",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        &body,
    );
    assert_eq!(r.header("cache-control"), Some("no-store"));
    (
        r.status,
        serde_json::from_str(&r.body).unwrap_or(serde_json::Value::Null),
    )
}

fn jwt_claims(jwt: &str) -> serde_json::Value {
    let payload = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

#[test]
fn code_flow_with_pkce_refresh_rotation_and_revocation() {
    let d = setup();
    let disc: serde_json::Value =
        serde_json::from_str(&d.get("/.well-known/openid-configuration").body).unwrap();
    assert_eq!(disc["issuer"], "https://halos.local/sso");
    assert_eq!(
        disc["token_endpoint"],
        "https://halos.local/sso/api/oidc/token"
    );
    let jwks: serde_json::Value = serde_json::from_str(&d.get("/jwks.json").body).unwrap();
    assert!(jwks["keys"].as_array().unwrap().len() >= 2);

    // Not logged in: to the portal, and back here afterwards.
    let r = authorize(&d, "x=y", "app", "");
    assert_eq!(r.status, 302);
    let loc = r.header("location").unwrap();
    assert!(loc.starts_with("https://halos.local/sso/?rd="), "{loc}");
    let back = query_param(loc, "rd").unwrap();
    assert!(
        back.starts_with("https://halos.local/sso/api/oidc/authorization?")
            && back.contains("client_id=app"),
        "{back}"
    );

    let cookie = login(&d);
    let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXkdBjftJeZ4";
    let r = authorize(
        &d,
        &cookie,
        "app",
        &format!(
            "&code_challenge={}&code_challenge_method=S256",
            challenge(verifier)
        ),
    );
    assert_eq!(r.status, 302, "{}", r.body);
    let loc = r.header("location").unwrap();
    assert!(loc.starts_with(CB));
    assert_eq!(query_param(loc, "state").as_deref(), Some("st4te"));
    assert_eq!(
        query_param(loc, "iss").as_deref(),
        Some("https://halos.local/sso")
    );
    let code = query_param(loc, "code").unwrap();

    // Wrong verifier first: refused, and the code is spent.
    let (s, body) = token(
        &d,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", CB),
            ("client_id", "app"),
            ("client_secret", "s3cret"),
            (
                "code_verifier",
                "wrongwrongwrongwrongwrongwrongwrongwrongwrong",
            ),
        ],
    );
    assert_eq!((s, body["error"].as_str()), (400, Some("invalid_grant")));

    let r = authorize(
        &d,
        &cookie,
        "app",
        &format!(
            "&code_challenge={}&code_challenge_method=S256",
            challenge(verifier)
        ),
    );
    let code = query_param(r.header("location").unwrap(), "code").unwrap();
    // Wrong secret: invalid_client.
    let (s, body) = token(
        &d,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", CB),
            ("client_id", "app"),
            ("client_secret", "nope"),
            ("code_verifier", verifier),
        ],
    );
    assert_eq!((s, body["error"].as_str()), (401, Some("invalid_client")));
    let (s, tokens) = token(
        &d,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", CB),
            ("client_id", "app"),
            ("client_secret", "s3cret"),
            ("code_verifier", verifier),
        ],
    );
    assert_eq!(s, 200, "{tokens}");
    let id = jwt_claims(tokens["id_token"].as_str().unwrap());
    assert_eq!(id["iss"], "https://halos.local/sso");
    assert_eq!(id["aud"], "app");
    assert_eq!(id["nonce"], "n0nce");
    assert_eq!(id["preferred_username"], "ann");
    assert_eq!(id["groups"], serde_json::json!(["users"]));
    assert_eq!(id["amr"], serde_json::json!(["pwd"]));
    let sub = id["sub"].as_str().unwrap().to_string();
    assert_ne!(sub, "ann", "sub is opaque");

    let access = tokens["access_token"].as_str().unwrap();
    let ui = d.req(
        "GET",
        "/api/oidc/userinfo",
        &[("Authorization", &format!("Bearer {access}"))],
        "",
    );
    let ui: serde_json::Value = serde_json::from_str(&ui.body).unwrap();
    assert_eq!(ui["sub"], sub.as_str());
    assert_eq!(ui["email"], "ann@halos.local");
    assert_eq!(ui["groups"], serde_json::json!(["users"]));

    // Replaying the code: refused, and what it issued is revoked.
    let (s, _) = token(
        &d,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", CB),
            ("client_id", "app"),
            ("client_secret", "s3cret"),
            ("code_verifier", verifier),
        ],
    );
    assert_eq!(s, 400);
    let ui = d.req(
        "GET",
        "/api/oidc/userinfo",
        &[("Authorization", &format!("Bearer {access}"))],
        "",
    );
    assert_eq!(ui.status, 401);
    assert!(
        ui.header("www-authenticate")
            .unwrap()
            .contains("invalid_token")
    );

    // A fresh flow for refresh rotation.
    let r = authorize(&d, &cookie, "app", "");
    let code = query_param(r.header("location").unwrap(), "code").unwrap();
    let (_, tokens) = token(
        &d,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", CB),
            ("client_id", "app"),
            ("client_secret", "s3cret"),
        ],
    );
    let rt1 = tokens["refresh_token"].as_str().unwrap().to_string();
    let (s, t2) = token(
        &d,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &rt1),
            ("client_id", "app"),
            ("client_secret", "s3cret"),
        ],
    );
    assert_eq!(s, 200, "{t2}");
    let rt2 = t2["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(rt1, rt2);
    // Introspection of the new access token.
    let intro = d.req(
        "POST",
        "/api/oidc/introspection",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        &format!(
            "client_id=app&client_secret=s3cret&token={}",
            t2["access_token"].as_str().unwrap()
        ),
    );
    let intro: serde_json::Value = serde_json::from_str(&intro.body).unwrap();
    assert_eq!(
        (intro["active"].as_bool(), intro["sub"].as_str()),
        (Some(true), Some(sub.as_str()))
    );
    // Reusing rt1: refused, and rt2 dies with it.
    let (s, _) = token(
        &d,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &rt1),
            ("client_id", "app"),
            ("client_secret", "s3cret"),
        ],
    );
    assert_eq!(s, 400);
    let (s, _) = token(
        &d,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &rt2),
            ("client_id", "app"),
            ("client_secret", "s3cret"),
        ],
    );
    assert_eq!(s, 400);

    // Revocation.
    let r = authorize(&d, &cookie, "app", "");
    let code = query_param(r.header("location").unwrap(), "code").unwrap();
    let (_, tokens) = token(
        &d,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", CB),
            ("client_id", "app"),
            ("client_secret", "s3cret"),
        ],
    );
    let rt = tokens["refresh_token"].as_str().unwrap();
    let r = d.req(
        "POST",
        "/api/oidc/revocation",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        &format!("client_id=app&client_secret=s3cret&token={rt}"),
    );
    assert_eq!(r.status, 200);
    let intro = d.req(
        "POST",
        "/api/oidc/introspection",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        &format!(
            "client_id=app&client_secret=s3cret&token={}",
            tokens["access_token"].as_str().unwrap()
        ),
    );
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&intro.body).unwrap()["active"],
        false
    );
}

#[test]
fn bad_requests_public_clients_consent_and_logout() {
    let d = setup();
    let cookie = login(&d);
    // Unknown client and unregistered redirect URI: an error page, never a redirect.
    for q in [
        format!(
            "response_type=code&client_id=nobody&redirect_uri={}&scope=openid",
            urlenc(CB)
        ),
        format!(
            "response_type=code&client_id=app&redirect_uri={}&scope=openid",
            urlenc("https://app.halos.local/cb/evil")
        ),
        format!(
            "response_type=code&client_id=app&redirect_uri={}&scope=openid",
            urlenc("https://evil.example/cb")
        ),
    ] {
        let r = d.req(
            "GET",
            &format!("/api/oidc/authorization?{q}"),
            &[("Cookie", &cookie), HOST],
            "",
        );
        assert_eq!(r.status, 400, "{q}");
        assert!(r.header("location").is_none());
    }
    // request objects: request_not_supported, to the validated redirect URI.
    let r = d.req("GET", &format!("/api/oidc/authorization?response_type=code&client_id=app&redirect_uri={}&scope=openid&request=eyJ&state=s", urlenc(CB)), &[("Cookie", &cookie), HOST], "");
    assert_eq!(
        query_param(r.header("location").unwrap(), "error").as_deref(),
        Some("request_not_supported")
    );
    // Public client without PKCE: refused.
    let r = authorize(&d, &cookie, "spa", "");
    assert_eq!(
        query_param(r.header("location").unwrap(), "error").as_deref(),
        Some("invalid_request")
    );
    // Public client with PKCE: a code, redeemed without a secret.
    let verifier = "a".repeat(50);
    let r = authorize(
        &d,
        &cookie,
        "spa",
        &format!(
            "&code_challenge={}&code_challenge_method=S256",
            challenge(&verifier)
        ),
    );
    let code = query_param(r.header("location").unwrap(), "code").unwrap();
    let (s, t) = token(
        &d,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", CB),
            ("client_id", "spa"),
            ("code_verifier", &verifier),
        ],
    );
    assert_eq!(s, 200, "{t}");

    // Explicit consent: a page first; approving with its CSRF token gives a code.
    let r = authorize(&d, &cookie, "explicit", "");
    assert_eq!(r.status, 200);
    assert!(r.body.contains("id=\"consent-approve\""));
    let csrf = r.cookie("__Host-halos_csrf").unwrap();
    let token_value = csrf.trim_start_matches("__Host-halos_csrf=");
    let mut form: Vec<(String, String)> = Vec::new();
    let doc = r.body.clone();
    for chunk in doc.split("<input type=\"hidden\" name=\"").skip(1) {
        let (name, rest) = chunk.split_once("\" value=\"").unwrap();
        let value = rest
            .split('"')
            .next()
            .unwrap()
            .replace("&#x2f;", "/")
            .replace("&amp;", "&");
        form.push((name.to_string(), value));
    }
    form.push(("halos_consent".into(), "approve".into()));
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form.iter().map(|(a, b)| (a.as_str(), b.as_str())))
        .finish();
    let both = format!("{cookie}; {csrf}");
    let r = d.req(
        "POST",
        "/api/oidc/authorization",
        &[
            ("Cookie", &both),
            HOST,
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        &body,
    );
    assert_eq!(r.status, 302, "{}", r.body);
    assert!(query_param(r.header("location").unwrap(), "code").is_some());
    // Without the CSRF pair, the POST is just another request: the consent page again.
    let r = d.req(
        "POST",
        "/api/oidc/authorization",
        &[
            ("Cookie", &cookie),
            HOST,
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        &body.replace(token_value, "forged"),
    );
    assert_eq!(r.status, 200);

    // End session: registered post_logout_redirect_uri followed (with state), others refused.
    let r = d.req(
        "GET",
        &format!(
            "/api/oidc/end-session?client_id=explicit&post_logout_redirect_uri={}&state=xyz",
            urlenc("https://evil.example/")
        ),
        &[("Cookie", &cookie), HOST],
        "",
    );
    // An unregistered target is never followed, but the user is signed out all the same.
    assert_eq!((r.status, r.header("location")), (400, None));
    let st = d.req("GET", "/api/state", &[("Cookie", &cookie), HOST], "");
    assert!(st.body.contains("\"username\":null"), "{}", st.body);
    let cookie = login(&d);
    let r = d.req(
        "GET",
        &format!(
            "/api/oidc/end-session?client_id=explicit&post_logout_redirect_uri={}&state=xyz",
            urlenc("https://app.halos.local/bye")
        ),
        &[("Cookie", &cookie), HOST],
        "",
    );
    assert_eq!(
        (r.status, r.header("location")),
        (302, Some("https://app.halos.local/bye?state=xyz"))
    );
    // The session is over.
    let st = d.req("GET", "/api/state", &[("Cookie", &cookie), HOST], "");
    assert!(st.body.contains("\"username\":null"), "{}", st.body);
    // Without id_token_hint or redirect: a signed-out page.
    let r = d.req("GET", "/api/oidc/end-session", &[HOST], "");
    assert_eq!(r.status, 200);
}

#[test]
fn a_password_change_revokes_tokens() {
    let d = setup();
    let cookie = login(&d);
    let r = authorize(&d, &cookie, "app", "");
    let code = query_param(r.header("location").unwrap(), "code").unwrap();
    let (_, tokens) = token(
        &d,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", CB),
            ("client_id", "app"),
            ("client_secret", "s3cret"),
        ],
    );
    let access = tokens["access_token"].as_str().unwrap().to_string();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_string();
    // halos-authctl changes the password (the daemon learns of it by watching the file).
    let cfg = d.config.to_str().unwrap().to_string();
    let out = crate::common::authctl(
        &["-c", &cfg, "user", "passwd", "ann", "--password-stdin"],
        "new password\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let start = std::time::Instant::now();
    loop {
        let ui = d.req(
            "GET",
            "/api/oidc/userinfo",
            &[("Authorization", &format!("Bearer {access}"))],
            "",
        );
        if ui.status == 401 {
            break;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(2),
            "access token still valid after the password change"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let (s, _) = token(
        &d,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh),
            ("client_id", "app"),
            ("client_secret", "s3cret"),
        ],
    );
    assert_eq!(s, 400);
    let st = d.req("GET", "/api/state", &[("Cookie", &cookie), HOST], "");
    assert!(st.body.contains("\"username\":null"));
}
