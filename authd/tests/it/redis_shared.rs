//! Two `halos-authd` instances sharing one real `redis-server` (and one configuration and
//! keys directory) act as one: sessions, logouts, bans, OIDC codes and refresh tokens.
//! Redis going away makes forward auth fail closed; its return heals both instances.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::common::{DAEMON, Daemon, HttpResponse, TestRedis};

const PW: &str = "correct horse";
const CB: &str = "https://app.halos.local/cb";
const HOST: (&str, &str) = ("X-Forwarded-Host", "halos.local");

/// Writes one configuration (Redis storage, keys beside `state.sqlite` in `dir`).
fn write_config(dir: &Path, redis_url: &str) -> std::path::PathBuf {
    let cfg = authd::config::Argon2Config {
        memory: 1024,
        iterations: 1,
        parallelism: 1,
        ..Default::default()
    };
    let h = authd::users::hash_password(PW.as_bytes(), &cfg).unwrap();
    let users = dir.join("users_database.yml");
    std::fs::write(
        &users,
        format!("users:\n  ann:\n    displayname: Ann\n    email: ann@halos.local\n    password: '{h}'\n    groups: [users]\n"),
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("oidc-clients.d")).unwrap();
    let path = dir.join("authd.yml");
    std::fs::write(
        &path,
        format!(
            r#"server:
  address: tcp://127.0.0.1:0/sso
authentication_backend:
  file:
    path: {users}
    password:
      argon2: {{memory: 1024, iterations: 1, parallelism: 1}}
storage:
  local:
    path: {state}
  redis:
    url: {redis_url}
hostnames_file: {hostnames}
session:
  cookies:
    - domain: halos.local
      authelia_url: https://halos.local/sso
regulation: {{max_retries: 3, find_time: 2m, ban_time: 5m}}
access_control:
  default_policy: one_factor
  rules:
    - domain: secure.halos.local
      policy: two_factor
identity_providers:
  oidc:
    issuer: https://halos.local/sso
    clients_dir: {clients}
    clients:
      - client_id: app
        client_secret: s3cret
        redirect_uris: ['{CB}']
        scopes: [openid, profile, email, groups, offline_access]
        token_endpoint_auth_method: client_secret_post
"#,
            users = users.display(),
            state = dir.join("state.sqlite").display(),
            hostnames = dir.join("hostnames.conf").display(),
            clients = dir.join("oidc-clients.d").display(),
        ),
    )
    .unwrap();
    path
}

fn start(config: &Path, dir: tempfile::TempDir) -> Daemon {
    Daemon::spawn(
        Command::new(DAEMON)
            .arg("--config")
            .arg(config)
            .stdout(Stdio::null()),
        dir,
    )
}

/// Instances A and B on one config: A first (it makes the signing keys), then B.
fn pair(redis: &TestRedis) -> (Daemon, Daemon) {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &redis.url());
    let a = start(&config, dir);
    let b = start(&config, tempfile::tempdir().unwrap());
    (a, b)
}

fn login(d: &Daemon, pw: &str) -> HttpResponse {
    d.req(
        "POST",
        "/api/firstfactor",
        &[("Content-Type", "application/json"), HOST],
        &serde_json::json!({"username": "ann", "password": pw}).to_string(),
    )
}

fn session_cookie(d: &Daemon) -> String {
    let r = login(d, PW);
    assert_eq!(r.status, 200, "{}", r.body);
    r.cookie("halos_session").unwrap()
}

fn forward_auth(d: &Daemon, cookie: Option<&str>) -> HttpResponse {
    forward_auth_to(d, "app.halos.local", cookie)
}

fn forward_auth_to(d: &Daemon, host: &str, cookie: Option<&str>) -> HttpResponse {
    let mut h = vec![
        ("X-Forwarded-Method", "GET"),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Host", host),
        ("X-Forwarded-Uri", "/"),
    ];
    if let Some(c) = cookie {
        h.push(("Cookie", c));
    }
    d.req("GET", "/api/authz/forward-auth", &h, "")
}

fn health(d: &Daemon) -> u16 {
    d.get("/api/health").status
}

#[test]
fn a_login_on_one_instance_is_valid_on_the_other_and_a_logout_ends_it_everywhere() {
    let redis = TestRedis::start();
    let (a, b) = pair(&redis);
    assert_eq!((health(&a), health(&b)), (200, 200));
    assert_eq!(forward_auth(&b, None).status, 401);

    let cookie = session_cookie(&a);
    let r = forward_auth(&b, Some(&cookie));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("remote-user"), Some("ann"));
    assert_eq!(forward_auth(&a, Some(&cookie)).status, 200);

    // Logout on A; B refuses the very next request (well within a second).
    let out = a.req(
        "POST",
        "/api/logout",
        &[
            ("Cookie", &cookie),
            HOST,
            ("Content-Type", "application/json"),
        ],
        "{}",
    );
    assert_eq!(out.status, 200, "{}", out.body);
    let logged_out = Instant::now();
    let r = forward_auth(&b, Some(&cookie));
    assert_eq!(r.status, 401, "the session ended on B too");
    assert!(logged_out.elapsed() < Duration::from_secs(1));
    assert_eq!(forward_auth(&a, Some(&cookie)).status, 401);
}

#[test]
fn a_ban_on_one_instance_applies_on_the_other() {
    let redis = TestRedis::start();
    let (a, b) = pair(&redis);
    for _ in 0..3 {
        assert_eq!(login(&a, "wrong").status, 401);
    }
    // Banned on B as well: the right password fails like a wrong one.
    let r = login(&b, PW);
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(r.cookie("halos_session").is_none());
}

fn authorize(d: &Daemon, cookie: &str) -> String {
    let r = d.req(
        "GET",
        &format!(
            "/api/oidc/authorization?response_type=code&client_id=app&redirect_uri={}&scope=openid%20profile%20offline_access&state=st4te&nonce=n0nce",
            url::form_urlencoded::byte_serialize(CB.as_bytes()).collect::<String>()
        ),
        &[("Cookie", cookie), HOST],
        "",
    );
    assert_eq!(r.status, 302, "{}", r.body);
    let loc = url::Url::parse(r.header("location").unwrap()).unwrap();
    loc.query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .expect("code")
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
    (
        r.status,
        serde_json::from_str(&r.body).unwrap_or(serde_json::Value::Null),
    )
}

fn redeem(d: &Daemon, code: &str) -> (u16, serde_json::Value) {
    token(
        d,
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", CB),
            ("client_id", "app"),
            ("client_secret", "s3cret"),
        ],
    )
}

fn refresh(d: &Daemon, rt: &str) -> (u16, serde_json::Value) {
    token(
        d,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", rt),
            ("client_id", "app"),
            ("client_secret", "s3cret"),
        ],
    )
}

fn sub_of(id_token: &serde_json::Value) -> String {
    let payload = id_token.as_str().unwrap().split('.').nth(1).unwrap();
    let claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    claims["sub"].as_str().unwrap().to_string()
}

#[test]
fn oidc_codes_and_refresh_tokens_work_across_instances_exactly_once() {
    let redis = TestRedis::start();
    let (a, b) = pair(&redis);
    // Same signing keys (shared keys directory): tokens from one verify with the other's JWKS.
    assert_eq!(a.get("/jwks.json").body, b.get("/jwks.json").body);

    let cookie = session_cookie(&a);
    // A code issued by A, redeemed on A and B at the same moment: exactly one 200.
    for _ in 0..5 {
        let code = authorize(&a, &cookie);
        let barrier = Barrier::new(2);
        let (x, y) = std::thread::scope(|s| {
            let x = s.spawn(|| {
                barrier.wait();
                redeem(&a, &code).0
            });
            let y = s.spawn(|| {
                barrier.wait();
                redeem(&b, &code).0
            });
            (x.join().unwrap(), y.join().unwrap())
        });
        let mut statuses = [x, y];
        statuses.sort();
        assert_eq!(statuses, [200, 400], "exactly one redemption wins");
    }

    // Issued by A, redeemed on B; replaying it on A fails and revokes what B issued for it.
    let code = authorize(&a, &cookie);
    let (s, tokens) = redeem(&b, &code);
    assert_eq!(s, 200, "{tokens}");
    let (s, again) = redeem(&a, &code);
    assert_eq!((s, again["error"].as_str()), (400, Some("invalid_grant")));
    let (s, _) = refresh(&b, tokens["refresh_token"].as_str().unwrap());
    assert_eq!(s, 400, "the replayed code's tokens are revoked");
    // The same `sub` whichever instance signs.
    let sub = sub_of(&tokens["id_token"]);
    let (s, from_a) = redeem(&a, &authorize(&b, &cookie));
    assert_eq!(s, 200);
    assert_eq!(sub_of(&from_a["id_token"]), sub);

    // Refresh on B rotates a token A issued; reusing the old one on A revokes the family.
    let rt1 = from_a["refresh_token"].as_str().unwrap().to_string();
    let (s, t2) = refresh(&b, &rt1);
    assert_eq!(s, 200, "{t2}");
    let rt2 = t2["refresh_token"].as_str().unwrap().to_string();
    let (s, _) = refresh(&a, &rt1);
    assert_eq!(s, 400, "reuse");
    let (s, _) = refresh(&b, &rt2);
    assert_eq!(s, 400, "the family is revoked");

    // Two instances rotating one token at once: one gets new tokens, the other is reuse.
    let (s, fresh) = redeem(&a, &authorize(&a, &cookie));
    assert_eq!(s, 200);
    let rt = fresh["refresh_token"].as_str().unwrap().to_string();
    let barrier = Barrier::new(2);
    let (x, y) = std::thread::scope(|s| {
        let x = s.spawn(|| {
            barrier.wait();
            refresh(&a, &rt).0
        });
        let y = s.spawn(|| {
            barrier.wait();
            refresh(&b, &rt).0
        });
        (x.join().unwrap(), y.join().unwrap())
    });
    let mut statuses = [x, y];
    statuses.sort();
    assert_eq!(statuses, [200, 400]);
}

/// Polls `/api/health` (the readiness signal) until it answers `status`.
fn wait_health(d: &Daemon, status: u16) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while health(d) != status {
        assert!(Instant::now() < deadline, "health never became {status}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn without_redis_forward_auth_fails_closed_and_both_instances_recover_by_themselves() {
    let mut redis = TestRedis::start();
    let (a, b) = pair(&redis);
    let cookie = session_cookie(&a);
    assert_eq!(forward_auth(&b, Some(&cookie)).status, 200);
    let token = crate::api_tokens::stdout(&crate::api_tokens::ctl(
        &a,
        &["token", "create", "--user", "ann"],
    ))
    .trim()
    .to_string();
    assert_eq!(with_token(&b, &token).status, 200);

    redis.stop();
    for d in [&a, &b] {
        for _ in 0..10 {
            let started = Instant::now();
            let r = forward_auth(d, Some(&cookie));
            assert_eq!(r.status, 503, "fails closed");
            assert!(started.elapsed() < Duration::from_secs(5), "does not hang");
        }
        // Nor with an API token; without credentials nobody is let in either.
        assert_eq!(with_token(d, &token).status, 503);
        assert_ne!(forward_auth(d, None).status, 200);
        assert_eq!(health(d), 503);
        let r = login(d, PW);
        assert_eq!(r.status, 503, "{}", r.body);
        // A logout that cannot reach the store says so (the session would live on).
        let out = d.req(
            "POST",
            "/api/logout",
            &[
                ("Cookie", &cookie),
                HOST,
                ("Content-Type", "application/json"),
            ],
            "{}",
        );
        assert_eq!(out.status, 503);
        // The OIDC endpoints answer 503 too (a client may retry), not an internal error.
        assert_eq!(refresh(d, "some-refresh-token").0, 503);
    }
    // One clear line per outage period, not one per request.
    let n = a.log_count("Redis unreachable");
    assert!(
        (1..=2).contains(&n),
        "{n} lines: {:?}",
        a.log.lock().unwrap()
    );

    redis.restart();
    for d in [&a, &b] {
        wait_health(d, 200);
        // The session and token from before the outage are back (Redis kept them on disk).
        assert_eq!(forward_auth(d, Some(&cookie)).status, 200);
        assert_eq!(with_token(d, &token).status, 200);
    }
    let fresh = session_cookie(&b);
    assert_eq!(forward_auth(&a, Some(&fresh)).status, 200);
    assert!(a.log_count("Redis is reachable again") >= 1);
}

fn with_token(d: &Daemon, token: &str) -> HttpResponse {
    let b = format!("Bearer {token}");
    crate::api_tokens::fa(d, "https://app.halos.local/x", &[("Authorization", &b)])
}

fn redeem_login_code(d: &Daemon, code: &str) -> HttpResponse {
    d.req(
        "POST",
        "/api/logincode",
        &[
            HOST,
            ("X-Forwarded-Proto", "https"),
            ("Content-Type", "application/json"),
        ],
        &serde_json::json!({ "code": code }).to_string(),
    )
}

#[test]
fn cli_tokens_login_codes_and_session_revocation_apply_to_every_instance_at_once() {
    use crate::api_tokens::{ctl, stdout};
    let redis = TestRedis::start();
    let (a, b) = pair(&redis);

    // A token made by the CLI (which writes Redis) works on both instances at once.
    let token = stdout(&ctl(
        &a,
        &["token", "create", "--user", "ann", "--name", "ci"],
    ))
    .trim()
    .to_string();
    for d in [&a, &b] {
        let r = with_token(d, &token);
        assert_eq!((r.status, r.header("remote-user")), (200, Some("ann")));
    }
    let id = token.split('_').nth(1).unwrap().to_string();
    let list: Vec<serde_json::Value> =
        serde_json::from_str(&stdout(&ctl(&b, &["token", "list", "--json"]))).unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["id"], id.as_str());
    stdout(&ctl(&b, &["token", "revoke", &id]));
    for d in [&a, &b] {
        assert_eq!(with_token(d, &token).status, 401, "revoked everywhere");
    }

    // A one-time login code redeemed on A and B at the same moment: exactly one session.
    for _ in 0..3 {
        let code = stdout(&ctl(&a, &["user", "login-code", "ann"]))
            .trim()
            .to_string();
        let barrier = Barrier::new(2);
        let (x, y) = std::thread::scope(|s| {
            let x = s.spawn(|| {
                barrier.wait();
                redeem_login_code(&a, &code).status
            });
            let y = s.spawn(|| {
                barrier.wait();
                redeem_login_code(&b, &code).status
            });
            (x.join().unwrap(), y.join().unwrap())
        });
        let mut statuses = [x, y];
        statuses.sort();
        assert_eq!(statuses, [200, 401], "exactly one redemption wins");
    }

    // `sessions revoke` ends sessions made on either instance, on both.
    let (on_a, on_b) = (session_cookie(&a), session_cookie(&b));
    assert_eq!(forward_auth(&b, Some(&on_a)).status, 200);
    let n: u32 = stdout(&ctl(&a, &["sessions", "revoke", "ann"]))
        .trim()
        .parse()
        .unwrap();
    assert!(n >= 2, "{n}");
    for d in [&a, &b] {
        for c in [&on_a, &on_b] {
            assert_eq!(forward_auth(d, Some(c)).status, 401);
        }
    }
}

fn form(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

fn totp_code(secret_b32: &str, t: u64) -> String {
    let secret = totp_rs::Secret::try_from_base32(secret_b32).unwrap();
    totp_rs::Builder::new()
        .with_secret(secret)
        .build_noncompliant()
        .generate(t)
        .to_string()
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn second_factor(d: &Daemon, cookie: &str, code: &str) -> HttpResponse {
    d.req(
        "POST",
        "/api/secondfactor/totp",
        &[
            HOST,
            ("Content-Type", "application/json"),
            ("Cookie", cookie),
        ],
        &serde_json::json!({"token": code, "targetURL": "https://secure.halos.local/"}).to_string(),
    )
}

#[test]
fn a_totp_enrolled_on_one_instance_works_on_the_other_and_each_code_counts_once() {
    let redis = TestRedis::start();
    let (a, b) = pair(&redis);
    let s1 = session_cookie(&a);
    assert_eq!(
        forward_auth_to(&b, "secure.halos.local", Some(&s1)).status,
        401
    );

    // Enrolment starts on A (/settings) and is confirmed on B: the pending secret is shared.
    let page = a.req("GET", "/settings", &[HOST, ("Cookie", &s1)], "");
    assert_eq!(page.status, 200, "{}", page.body);
    let csrf = page.cookie("__Host-halos_csrf").unwrap();
    let token = csrf.trim_start_matches("__Host-halos_csrf=").to_string();
    let cookies = format!("{s1}; {csrf}");
    let form_headers = [
        HOST,
        ("Content-Type", "application/x-www-form-urlencoded"),
        ("Cookie", cookies.as_str()),
    ];
    let r = a.req(
        "POST",
        "/settings/totp/start",
        &form_headers,
        &form(&[("csrf", &token)]),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let start = r.body.find("id=\"totp-secret\">").unwrap() + "id=\"totp-secret\">".len();
    let secret = r.body[start..start + r.body[start..].find('<').unwrap()].to_string();
    let r = b.req(
        "POST",
        "/settings/totp/confirm",
        &form_headers,
        &form(&[("csrf", &token), ("code", &totp_code(&secret, unix_now()))]),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("Authenticator app set up"));

    // The second factor on B for the session made on A; the result counts on A.
    let next = totp_code(&secret, unix_now() + 30);
    let r = second_factor(&b, &s1, &next);
    assert_eq!(r.status, 200, "{}", r.body);
    let s2 = r.cookie("halos_session").unwrap();
    assert_eq!(
        forward_auth_to(&a, "secure.halos.local", Some(&s2)).status,
        200
    );
    assert_eq!(
        forward_auth_to(&b, "secure.halos.local", Some(&s2)).status,
        200
    );

    // The same code again, on the other instance: a replay.
    let other = session_cookie(&b);
    assert_eq!(second_factor(&a, &other, &next).status, 401);
    assert_eq!(
        forward_auth_to(&a, "secure.halos.local", Some(&other)).status,
        401
    );
}

/// A test CA and a certificate for `localhost`/127.0.0.1 signed by it (openssl CLI).
fn make_certs(dir: &Path) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=halos test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "redis.key",
        "-out",
        "redis.csr",
    ]);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "redis.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
        "-out",
        "redis.pem",
    ]);
}

/// `redis-server` speaking TLS only, on a free port; killed on drop.
struct TlsRedis(std::process::Child, u16);

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_tls_redis(dir: &Path) -> TlsRedis {
    use std::io::BufRead;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let mut child = Command::new("redis-server")
        .args(["--port", "0", "--bind", "127.0.0.1", "--save", ""])
        .args(["--tls-port", &port.to_string(), "--tls-auth-clients", "no"])
        .arg("--tls-cert-file")
        .arg(dir.join("redis.pem"))
        .arg("--tls-key-file")
        .arg(dir.join("redis.key"))
        .arg("--tls-ca-cert-file")
        .arg(dir.join("ca.pem"))
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::piped())
        .spawn()
        .expect("redis-server");
    let mut log = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        assert!(log.read_line(&mut line).unwrap() > 0, "redis-server exited");
        if line.contains("Ready to accept connections") {
            break;
        }
    }
    std::thread::spawn(move || std::io::copy(&mut log, &mut std::io::sink()));
    TlsRedis(child, port)
}

#[test]
fn rediss_urls_use_tls_and_verify_the_server_certificate() {
    let certs = tempfile::tempdir().unwrap();
    make_certs(certs.path());
    let redis = start_tls_redis(certs.path());
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &format!("rediss://localhost:{}/0", redis.1));
    let start_with = |ca: Option<&Path>, dir: tempfile::TempDir| {
        let mut cmd = Command::new(DAEMON);
        cmd.arg("--config").arg(&config).stdout(Stdio::null());
        // The trusted roots come from SSL_CERT_FILE when set (rustls-native-certs).
        match ca {
            Some(ca) => cmd.env("SSL_CERT_FILE", ca),
            // A file without the test CA: nothing vouches for the server.
            None => cmd.env("SSL_CERT_FILE", certs.path().join("redis.csr")),
        };
        Daemon::spawn(&mut cmd, dir)
    };
    let trusting = start_with(Some(&certs.path().join("ca.pem")), dir);
    wait_health(&trusting, 200);
    let cookie = session_cookie(&trusting);
    assert_eq!(forward_auth(&trusting, Some(&cookie)).status, 200);

    // A daemon that does not trust the CA refuses the connection: not ready, fails closed.
    let untrusting = start_with(None, tempfile::tempdir().unwrap());
    assert_eq!(health(&untrusting), 503);
    assert_eq!(forward_auth(&untrusting, Some(&cookie)).status, 503);
}
