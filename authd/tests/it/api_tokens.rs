//! API tokens (`halos-authctl token …`) and `sessions revoke`, with the real daemon and
//! the real CLI writing the same state database while the daemon runs (DESIGN §6, §11).

use std::process::Output;
use std::time::{Duration, Instant};

use crate::common::{Daemon, HttpResponse, authctl};

pub const PW: &str = "correct horse";

pub fn users_yaml() -> String {
    let cfg = authd::config::Argon2Config {
        memory: 1024,
        iterations: 1,
        parallelism: 1,
        ..Default::default()
    };
    let h = authd::users::hash_password(PW.as_bytes(), &cfg).unwrap();
    format!(
        "users:\n  ann:\n    displayname: Ann Example\n    email: ann@halos.local\n    password: '{h}'\n    groups: [users, crew]\n  boss:\n    displayname: Boss\n    email: boss@halos.local\n    password: '{h}'\n    groups: [admins]\n  cy:\n    displayname: Cy\n    email: cy@halos.local\n    password: '{h}'\n    groups: [users]\n  dis:\n    displayname: Dis\n    password: '{h}'\n    disabled: true\n"
    )
}

pub const SITE: &str = r#"
session:
  cookies:
    - domain: halos.local
      authelia_url: https://halos.local/sso
access_control:
  default_policy: one_factor
  rules:
    - domain: deny.halos.local
      policy: deny
    - domain: secure.halos.local
      policy: two_factor
    - domain: admin.halos.local
      subject: ['group:admins']
      policy: one_factor
    - domain: admin.halos.local
      policy: deny
"#;

pub fn daemon() -> Daemon {
    Daemon::start(&users_yaml(), SITE)
}

/// Runs halos-authctl against the daemon's configuration.
pub fn ctl(d: &Daemon, args: &[&str]) -> Output {
    let cfg = d.config.to_str().unwrap().to_string();
    let mut all = vec!["-c", cfg.as_str()];
    all.extend_from_slice(args);
    authctl(&all, "")
}

pub fn stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "halos-authctl failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

/// Waits (bounded) for the daemon to reflect a change made by another process: there
/// is no signal to wait for, so poll.
pub fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out waiting for: {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn fa(d: &Daemon, url: &str, extra: &[(&str, &str)]) -> HttpResponse {
    let u = url::Url::parse(url).unwrap();
    let host = u.host_str().unwrap().to_string();
    let uri = match u.query() {
        Some(q) => format!("{}?{q}", u.path()),
        None => u.path().to_string(),
    };
    let mut h: Vec<(&str, &str)> = vec![
        ("X-Forwarded-Method", "GET"),
        ("X-Forwarded-Proto", u.scheme()),
        ("X-Forwarded-Host", &host),
        ("X-Forwarded-Uri", &uri),
        ("Accept", "application/json"),
    ];
    h.extend_from_slice(extra);
    d.req("GET", "/api/authz/forward-auth", &h, "")
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn with_token(d: &Daemon, url: &str, token: &str) -> HttpResponse {
    let b = bearer(token);
    fa(d, url, &[("Authorization", &b)])
}

fn create(d: &Daemon, args: &[&str]) -> String {
    let mut all = vec!["token", "create"];
    all.extend_from_slice(args);
    let out = stdout(&ctl(d, &all));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "only the token on stdout: {out:?}");
    assert!(lines[0].starts_with("halos_"), "{out}");
    lines[0].to_string()
}

fn token_id(token: &str) -> String {
    token.split('_').nth(1).unwrap().to_string()
}

fn assert_refused(r: &HttpResponse) {
    assert_eq!(r.status, 401, "{r:?}");
    assert!(
        r.header("www-authenticate")
            .is_some_and(|v| v.starts_with("Bearer realm=")),
        "{r:?}"
    );
    assert!(r.header("location").is_none(), "never a redirect: {r:?}");
}

fn list_json(d: &Daemon, extra: &[&str]) -> Vec<serde_json::Value> {
    let mut args = vec!["token", "list", "--json"];
    args.extend_from_slice(extra);
    serde_json::from_str(&stdout(&ctl(d, &args))).unwrap()
}

#[test]
fn tokens_created_listed_used_and_revoked_while_the_daemon_runs() {
    let d = daemon();
    let token = create(&d, &["--user", "ann", "--name", "backup script"]);
    let id = token_id(&token);
    let app = "https://app.halos.local/x?y=1";
    // The daemon picks the CLI's token up without a restart.
    until("the daemon knows the new token", || {
        with_token(&d, app, &token).status == 200
    });
    let r = with_token(&d, app, &token);
    assert_eq!(r.header("remote-user"), Some("ann"));
    assert_eq!(r.header("remote-groups"), Some("users,crew"));
    assert_eq!(r.header("remote-name"), Some("Ann Example"));
    assert_eq!(r.header("remote-email"), Some("ann@halos.local"));
    let r = fa(&d, app, &[("X-Api-Key", &token)]);
    assert_eq!(
        (r.status, r.header("remote-user")),
        (200, Some("ann")),
        "X-Api-Key"
    );

    // The other two forward-auth endpoints take it too.
    let b = bearer(&token);
    let r = d.req(
        "GET",
        "/api/authz/auth-request",
        &[
            ("X-Original-URL", app),
            ("X-Original-Method", "GET"),
            ("Authorization", &b),
        ],
        "",
    );
    assert_eq!((r.status, r.header("remote-user")), (200, Some("ann")));
    let r = d.req(
        "GET",
        "/api/verify",
        &[("X-Original-URL", app), ("X-Api-Key", &token)],
        "",
    );
    assert_eq!((r.status, r.header("remote-user")), (200, Some("ann")));

    // Access rules still apply to the owner; a token is one factor.
    assert_eq!(
        with_token(&d, "https://deny.halos.local/", &token).status,
        403
    );
    assert_eq!(
        with_token(&d, "https://secure.halos.local/", &token).status,
        403
    );
    assert_eq!(
        with_token(&d, "https://admin.halos.local/", &token).status,
        403
    );

    // Wrong secret, unknown id, malformed: one answer, 401 + WWW-Authenticate.
    let mut wrong = token.clone();
    let last = wrong.pop().unwrap();
    wrong.push(if last == 'A' { 'B' } else { 'A' });
    let unknown = format!("halos_0000000000000000_{}", &token[23..]);
    let answers: Vec<HttpResponse> = [wrong.as_str(), unknown.as_str(), "halos_nonsense"]
        .iter()
        .map(|t| with_token(&d, app, t))
        .collect();
    for r in &answers {
        assert_refused(r);
        assert_eq!(
            (r.body.as_str(), r.header("www-authenticate")),
            (
                answers[0].body.as_str(),
                answers[0].header("www-authenticate")
            )
        );
    }
    assert_refused(&fa(&d, app, &[("X-Api-Key", &wrong)]));

    // Listing never shows the secret; it shows the last use (persisted lazily).
    let secret = token.rsplit_once('_').unwrap().1.to_string();
    let text = stdout(&ctl(&d, &["token", "list"]));
    assert!(
        text.contains(&id) && text.contains("backup script"),
        "{text}"
    );
    assert!(!text.contains(&secret));
    until("last use recorded", || {
        let l = list_json(&d, &[]);
        l.len() == 1 && l[0]["last_used"].is_i64()
    });
    let l = list_json(&d, &["--user", "ann"]);
    assert_eq!(l[0]["id"], id.as_str());
    assert_eq!(l[0]["expired"], false);
    assert_eq!(l[0]["user"], "ann");
    assert!(!serde_json::to_string(&l).unwrap().contains(&secret));
    assert!(list_json(&d, &["--user", "boss"]).is_empty());

    // Unknown or disabled owners get no token.
    for user in ["nobody", "dis"] {
        let o = ctl(&d, &["token", "create", "--user", user]);
        assert_eq!(o.status.code(), Some(1), "{user}");
        assert!(o.stdout.is_empty());
    }

    // Revoked by the CLI: the running daemon refuses it within a second or so.
    stdout(&ctl(&d, &["token", "revoke", &id]));
    until("the daemon drops the revoked token", || {
        with_token(&d, app, &token).status == 401
    });
    assert_refused(&with_token(&d, app, &token));
    assert_eq!(
        ctl(&d, &["token", "revoke", &id]).status.code(),
        Some(1),
        "already revoked"
    );
}

#[test]
fn token_scope_and_expiry() {
    let d = daemon();
    let token = create(
        &d,
        &[
            "--user",
            "ann",
            "--host",
            "*.halos.local",
            "--path",
            "/api/*",
            "--expires",
            "2s",
        ],
    );
    let inside = "https://app.halos.local/api/v1/x?q=1";
    until("the daemon knows the new token", || {
        with_token(&d, inside, &token).status == 200
    });
    assert_refused(&with_token(&d, "https://app.halos.local/other", &token));
    assert_refused(&with_token(&d, "https://halos.local/api/x", &token));
    until("the token expires", || {
        with_token(&d, inside, &token).status == 401
    });
    assert_refused(&with_token(&d, inside, &token));
    assert_eq!(list_json(&d, &[])[0]["expired"], true);

    for bad in [
        vec!["--expires", "0s"],
        vec!["--expires", "soon"],
        vec!["--path", "api"],
    ] {
        let mut args = vec!["token", "create", "--user", "ann"];
        args.extend_from_slice(&bad);
        let o = ctl(&d, &args);
        assert_ne!(o.status.code(), Some(0), "{bad:?}");
        assert!(o.stdout.is_empty(), "{bad:?}");
    }
}

#[test]
fn tokens_end_when_the_user_is_disabled_or_deleted_not_on_a_password_change() {
    let d = daemon();
    let ann = create(&d, &["--user", "ann"]);
    let cy = create(&d, &["--user", "cy"]);
    let boss = create(&d, &["--user", "boss"]);
    let app = "https://app.halos.local/";
    until("the daemon knows the tokens", || {
        [&ann, &cy, &boss]
            .iter()
            .all(|t| with_token(&d, app, t).status == 200)
    });

    let pw = authctl(
        &[
            "-c",
            d.config.to_str().unwrap(),
            "user",
            "passwd",
            "boss",
            "--password-stdin",
        ],
        "a new password\n",
    );
    stdout(&pw);
    stdout(&ctl(&d, &["user", "update", "ann", "--disable"]));
    until("ann's token refused", || {
        with_token(&d, app, &ann).status == 401
    });
    // Revoked, not hidden: enabling ann again does not bring the token back.
    until("ann's token removed from the database", || {
        list_json(&d, &["--user", "ann"]).is_empty()
    });
    stdout(&ctl(&d, &["user", "update", "ann", "--enable"]));
    stdout(&ctl(&d, &["user", "del", "cy"]));
    until("cy's token refused", || {
        with_token(&d, app, &cy).status == 401
    });
    assert_refused(&with_token(&d, app, &ann));
    // The password change (seen before the later changes) left boss's token alone.
    let r = with_token(&d, app, &boss);
    assert_eq!((r.status, r.header("remote-user")), (200, Some("boss")));

    // A user disabled while the daemon is stopped, by hand in the users file: the token
    // is revoked when the daemon starts.
    let ann2 = create(&d, &["--user", "ann"]);
    until("the daemon knows the new token", || {
        with_token(&d, app, &ann2).status == 200
    });
    let mut d = d;
    let _ = d.child.kill();
    let _ = d.child.wait();
    let users = d.path("users_database.yml");
    let text = std::fs::read_to_string(&users).unwrap();
    // ann was disabled and enabled again above: the editor left `disabled: false`.
    let edited = text.replacen("disabled: false", "disabled: true", 1);
    assert_ne!(text, edited);
    std::fs::write(&users, edited).unwrap();
    // The CLI alone does not know about the hand edit.
    assert_eq!(list_json(&d, &["--user", "ann"]).len(), 1);
    let d = d.restart();
    until(
        "the daemon revokes the disabled user's token at start",
        || list_json(&d, &["--user", "ann"]).is_empty(),
    );
    // Deleted, not just refused: the record is gone from the database.
    assert_refused(&with_token(&d, app, &ann2));
}

fn login(d: &Daemon, user: &str) -> String {
    let r = d.req(
        "POST",
        "/api/firstfactor",
        &[
            ("Content-Type", "application/json"),
            ("X-Forwarded-Host", "halos.local"),
            ("X-Forwarded-Proto", "https"),
        ],
        &serde_json::json!({"username": user, "password": PW}).to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    r.cookie("halos_session").expect("session cookie")
}

fn with_cookie(d: &Daemon, cookie: &str) -> u16 {
    fa(d, "https://app.halos.local/", &[("Cookie", cookie)]).status
}

#[test]
fn sessions_revoke_with_the_daemon_running_and_stopped() {
    let d = daemon();
    let ann1 = login(&d, "ann");
    let ann2 = login(&d, "ann");
    let boss = login(&d, "boss");
    for c in [&ann1, &ann2, &boss] {
        assert_eq!(with_cookie(&d, c), 200);
    }
    assert_eq!(stdout(&ctl(&d, &["sessions", "revoke", "ann"])).trim(), "2");
    until("ann's sessions end in the running daemon", || {
        with_cookie(&d, &ann1) == 401 && with_cookie(&d, &ann2) == 401
    });
    assert_eq!(with_cookie(&d, &boss), 200, "other users keep theirs");
    // A new login after the revocation is not affected.
    let ann3 = login(&d, "ann");
    assert_eq!(with_cookie(&d, &ann3), 200);
    assert_eq!(
        stdout(&ctl(&d, &["sessions", "revoke", "nobody"])).trim(),
        "0"
    );

    let mut d = d;
    let _ = d.child.kill();
    let _ = d.child.wait();
    assert_eq!(
        stdout(&ctl(&d, &["sessions", "revoke", "boss"])).trim(),
        "1"
    );
    let d = d.restart();
    assert_eq!(with_cookie(&d, &boss), 401);
    assert_eq!(with_cookie(&d, &ann3), 200);
}
