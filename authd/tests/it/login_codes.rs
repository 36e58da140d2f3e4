//! One-time login codes: `halos-authctl user login-code`, redeemed at the portal's
//! `/login-code` form or `POST /api/logincode` (DESIGN §11).

use crate::api_tokens::{PW, ctl, daemon, fa, stdout, until};
use crate::common::{Daemon, HttpResponse};

fn issue(d: &Daemon, user: &str, extra: &[&str]) -> String {
    let mut args = vec!["user", "login-code", user];
    args.extend_from_slice(extra);
    let out = stdout(&ctl(d, &args));
    let code = out.trim().to_string();
    assert_eq!(out.lines().count(), 1, "only the code on stdout: {out:?}");
    assert_eq!(code.len(), 17, "{code}");
    code
}

const PORTAL: [(&str, &str); 2] = [
    ("X-Forwarded-Host", "halos.local"),
    ("X-Forwarded-Proto", "https"),
];

fn api(d: &Daemon, code: &str, client: &str) -> HttpResponse {
    let mut h = PORTAL.to_vec();
    h.push(("Content-Type", "application/json"));
    h.push(("X-Forwarded-For", client));
    d.req(
        "POST",
        "/api/logincode",
        &h,
        &serde_json::json!({ "code": code }).to_string(),
    )
}

fn session_user(d: &Daemon, r: &HttpResponse) -> Option<String> {
    let cookie = r.cookie("halos_session")?;
    let r = fa(d, "https://app.halos.local/", &[("Cookie", &cookie)]);
    r.header("remote-user").map(str::to_string)
}

#[test]
fn a_code_signs_in_once_through_the_form() {
    let d = daemon();
    let code = issue(&d, "ann", &[]);
    let page = d.req("GET", "/login-code", &PORTAL, "");
    assert_eq!(page.status, 200);
    assert!(page.body.contains("name=\"code\""), "{}", page.body);
    let csrf = page.cookie("__Host-halos_csrf").unwrap();
    let token = csrf.split_once('=').unwrap().1;
    let mut h = PORTAL.to_vec();
    h.push(("Content-Type", "application/x-www-form-urlencoded"));
    h.push(("Cookie", &csrf));
    let post = |code: &str, csrf: &str| {
        d.req(
            "POST",
            "/login-code",
            &h,
            &format!("code={code}&csrf={csrf}"),
        )
    };

    // Without the CSRF token: refused, and the code stays usable.
    assert_eq!(post(&code, "wrong").status, 403);
    let r = post(&code.to_lowercase().replace('-', "+"), token);
    assert_eq!(r.status, 303, "{r:?}");
    assert_eq!(
        r.header("location"),
        Some("https://halos.local/sso/settings")
    );
    assert_eq!(session_user(&d, &r).as_deref(), Some("ann"));

    let again = post(&code, token);
    assert_eq!(again.status, 401);
    assert!(again.body.contains("role=\"alert\""), "{}", again.body);
    assert!(again.cookie("halos_session").is_none());
}

#[test]
fn api_single_use_expiry_and_unknown_users() {
    let d = daemon();
    let code = issue(&d, "ann", &[]);
    let r = api(&d, &code, "10.0.0.1");
    assert_eq!(r.status, 200, "{}", r.body);
    let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(body["data"]["redirect"], "https://halos.local/sso/settings");
    assert_eq!(session_user(&d, &r).as_deref(), Some("ann"));
    let used = api(&d, &code, "10.0.0.1");
    assert_eq!(used.status, 401);

    // Expired: one identical answer for used, expired and unknown codes.
    let short = issue(&d, "ann", &["--expires", "1s"]);
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let expired = api(&d, &short, "10.0.0.2");
    let unknown = api(&d, "ZZZZZ-ZZZZZ-ZZZZZ", "10.0.0.3");
    assert_eq!((expired.status, &expired.body), (401, &used.body));
    assert_eq!((unknown.status, &unknown.body), (401, &used.body));

    for (user, says) in [
        ("nobody", "no user named \"nobody\""),
        ("dis", "user \"dis\" is disabled"),
    ] {
        let o = ctl(&d, &["user", "login-code", user]);
        assert_eq!(o.status.code(), Some(1), "{user}");
        assert!(o.stdout.is_empty());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(says), "{user}: {err}");
    }
    assert_eq!(
        ctl(&d, &["user", "login-code", "ann", "--expires", "30d"])
            .status
            .code(),
        Some(1),
        "too long a lifetime"
    );
}

#[test]
fn guessing_is_throttled_per_address() {
    let d = daemon();
    let code = issue(&d, "ann", &[]);
    // Default regulation: 3 failures ban the address for a while.
    for _ in 0..3 {
        assert_eq!(api(&d, "ZZZZZ-ZZZZZ-ZZZZZ", "10.9.9.9").status, 401);
    }
    let banned = api(&d, &code, "10.9.9.9");
    assert_eq!(banned.status, 401, "a banned address cannot redeem");
    // The banned attempt did not consume the code.
    let r = api(&d, &code, "10.1.1.1");
    assert_eq!(r.status, 200, "{}", r.body);
}

#[test]
fn codes_of_disabled_users_do_not_work() {
    let d = daemon();
    let code = issue(&d, "cy", &[]);
    let r = d.req(
        "POST",
        "/api/firstfactor",
        &[
            ("Content-Type", "application/json"),
            ("X-Forwarded-Host", "halos.local"),
            ("X-Forwarded-Proto", "https"),
        ],
        &serde_json::json!({"username": "cy", "password": PW}).to_string(),
    );
    let cookie = r.cookie("halos_session").unwrap();
    stdout(&ctl(&d, &["user", "update", "cy", "--disable"]));
    until("the daemon sees cy disabled", || {
        fa(&d, "https://app.halos.local/", &[("Cookie", &cookie)]).status == 401
    });
    assert_eq!(api(&d, &code, "10.0.0.5").status, 401);
}
