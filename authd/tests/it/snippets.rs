//! OIDC client snippets applied live: create, edit, break, delete, secret file appearing,
//! SIGHUP — with sessions and refresh tokens untouched.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::{Daemon, HttpResponse};

const PW: &str = "correct horse";
const HOST: (&str, &str) = ("X-Forwarded-Host", "halos.local");

fn daemon() -> Daemon {
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
    Daemon::start(
        &users,
        "session:\n  cookies:\n    - domain: halos.local\n      authelia_url: https://halos.local/sso\nidentity_providers:\n  oidc:\n    issuer: https://halos.local/sso\n",
    )
}

fn urlenc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn authorize(d: &Daemon, cookie: &str, client: &str, redirect: &str) -> HttpResponse {
    d.req(
        "GET",
        &format!("/api/oidc/authorization?response_type=code&client_id={client}&redirect_uri={}&scope=openid%20offline_access&state=s", urlenc(redirect)),
        &[("Cookie", cookie), HOST],
        "",
    )
}

fn code_of(r: &HttpResponse) -> Option<String> {
    let loc = r.header("location")?;
    url::Url::parse(loc)
        .ok()?
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "{what}: not live within 1 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    start.elapsed()
}

fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_file_name(format!(
        ".{}.tmp",
        path.file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[test]
fn snippets_apply_live_and_isolate_failures() {
    let d = daemon();
    let dir = d.path("oidc-clients.d");
    let secret = d.path("app-secret");
    std::fs::write(&secret, "s3cret\n").unwrap();
    let cb1 = "https://app.halos.local/cb";
    let cb2 = "https://app.halos.local/cb2";
    let snippet = |cb: &str| {
        format!(
            "client_id: app\nclient_name: App\nclient_secret_file: {}\nredirect_uris:\n  - '{cb}'\nscopes: [openid, profile, offline_access]\ntoken_endpoint_auth_method: client_secret_post\n",
            secret.display()
        )
    };
    let login = d.req(
        "POST",
        "/api/firstfactor",
        &[("Content-Type", "application/json"), HOST],
        &serde_json::json!({"username": "ann", "password": PW}).to_string(),
    );
    let cookie = login.cookie("halos_session").unwrap();

    // Unknown at first: an error page.
    assert_eq!(authorize(&d, &cookie, "app", cb1).status, 400);
    // Drop a snippet (rename into place, as packages do): usable within a second.
    write_atomically(&dir.join("app.yml"), &snippet(cb1));
    let took = wait_until("new snippet", || {
        authorize(&d, &cookie, "app", cb1).status == 302
    });
    eprintln!("snippet live after {took:?}");
    let code = code_of(&authorize(&d, &cookie, "app", cb1)).unwrap();
    let body = format!(
        "grant_type=authorization_code&code={code}&redirect_uri={}&client_id=app&client_secret=s3cret",
        urlenc(cb1)
    );
    let t = d.req(
        "POST",
        "/api/oidc/token",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        &body,
    );
    assert_eq!(t.status, 200, "{}", t.body);
    let tokens: serde_json::Value = serde_json::from_str(&t.body).unwrap();
    let mut refresh = tokens["refresh_token"].as_str().unwrap().to_string();

    // A broken snippet beside it and an edit that switches the redirect URI.
    std::fs::write(
        dir.join("broken.yml"),
        "client_id: broken\nredirect_uris: [\n",
    )
    .unwrap();
    write_atomically(&dir.join("app.yml"), &snippet(cb2));
    wait_until("edited redirect URI", || {
        authorize(&d, &cookie, "app", cb2).status == 302
    });
    assert_eq!(
        authorize(&d, &cookie, "app", cb1).status,
        400,
        "the old URI no longer matches"
    );
    // A broken new version of app.yml keeps the previous good version in force.
    write_atomically(&dir.join("app.yml"), "client_id: app\nredirect_uris: [\n");
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(authorize(&d, &cookie, "app", cb2).status, 302);

    // The session and the refresh token survived every reload.
    let st = d.req("GET", "/api/state", &[("Cookie", &cookie), HOST], "");
    assert!(st.body.contains("\"username\":\"ann\""));
    let r = d.req(
        "POST",
        "/api/oidc/token",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        &format!(
            "grant_type=refresh_token&refresh_token={refresh}&client_id=app&client_secret=s3cret"
        ),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    refresh = serde_json::from_str::<serde_json::Value>(&r.body).unwrap()["refresh_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!refresh.is_empty());

    // Delete it: the authorization request fails with an error page.
    std::fs::remove_file(dir.join("app.yml")).unwrap();
    wait_until("deleted snippet", || {
        authorize(&d, &cookie, "app", cb2).status == 400
    });
    assert!(
        authorize(&d, &cookie, "app", cb2)
            .header("location")
            .is_none()
    );
}

#[test]
fn missing_secret_file_skips_the_client_until_it_appears() {
    let d = daemon();
    let dir = d.path("oidc-clients.d");
    let secret_dir = d.path("secrets");
    std::fs::create_dir_all(&secret_dir).unwrap();
    let secret = secret_dir.join("oidc-secret");
    let login = d.req(
        "POST",
        "/api/firstfactor",
        &[("Content-Type", "application/json"), HOST],
        &serde_json::json!({"username": "ann", "password": PW}).to_string(),
    );
    let cookie = login.cookie("halos_session").unwrap();
    let cb = "https://app.halos.local/cb";
    std::fs::write(
        dir.join("late.yml"),
        format!(
            "client_id: late\nclient_secret_file: {}\nredirect_uris: ['{cb}']\n",
            secret.display()
        ),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(
        authorize(&d, &cookie, "late", cb).status,
        400,
        "no secret yet: skipped"
    );
    std::fs::write(&secret, "").unwrap();
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(
        authorize(&d, &cookie, "late", cb).status,
        400,
        "an empty secret: still skipped"
    );
    std::fs::write(&secret, "abc\n").unwrap();
    wait_until("secret appeared", || {
        authorize(&d, &cookie, "late", cb).status == 302
    });
}

#[test]
fn the_example_snippets_load() {
    // The repo's examples, exactly as HaLOS packages write them, with secrets pointed here.
    let d = daemon();
    let dir = d.path("oidc-clients.d");
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../oidc-clients.d");
    for name in ["signalk.yml", "grafana.yml", "homarr.yml"] {
        let text = std::fs::read_to_string(examples.join(name)).unwrap();
        let secret = d.path(&format!("{name}.secret"));
        std::fs::write(&secret, "0123456789abcdef\n").unwrap();
        let line = text
            .lines()
            .find(|l| l.starts_with("client_secret_file:"))
            .unwrap();
        std::fs::write(
            dir.join(name),
            text.replace(line, &format!("client_secret_file: {}", secret.display())),
        )
        .unwrap();
    }
    let login = d.req(
        "POST",
        "/api/firstfactor",
        &[("Content-Type", "application/json"), HOST],
        &serde_json::json!({"username": "ann", "password": PW}).to_string(),
    );
    let cookie = login.cookie("halos_session").unwrap();
    // hostnames.conf is absent in the test dir: ${HALOS_DOMAIN} fans out to the default
    // names (<hostname>.local, …); the redirect for one of them must be accepted.
    let host = authd::hostnames::Hostnames::load(
        &d.path("hostnames.conf"),
        &authd::hostnames::SystemNames::from_system(),
    );
    let name = host.dns_names()[0].to_string();
    wait_until("example snippets", || {
        authorize(
            &d,
            &cookie,
            "signalk",
            &format!("https://{name}/signalk-server/signalk/v1/auth/oidc/callback"),
        )
        .status
            == 302
            && authorize(
                &d,
                &cookie,
                "homarr",
                &format!("https://{name}/api/auth/callback/oidc"),
            )
            .status
                == 302
            && authorize(
                &d,
                &cookie,
                "grafana",
                &format!("https://{name}:4434/login/generic_oauth"),
            )
            .status
                == 302
    });
}

#[test]
fn sighup_reloads_authd_yml_and_a_bad_one_keeps_the_running_config() {
    let d = daemon();
    let login = d.req(
        "POST",
        "/api/firstfactor",
        &[("Content-Type", "application/json"), HOST],
        &serde_json::json!({"username": "ann", "password": PW}).to_string(),
    );
    let cookie = login.cookie("halos_session").unwrap();
    let cfg = std::fs::read_to_string(&d.config).unwrap();
    let pid = d.child.id().to_string();
    let cb = "https://static.halos.local/cb";
    // Add a static client in authd.yml, then SIGHUP.
    let with_client = cfg.replace(
        "    issuer: https://halos.local/sso\n",
        &format!("    issuer: https://halos.local/sso\n    clients:\n      - client_id: static\n        client_secret: x\n        redirect_uris: ['{cb}']\n"),
    );
    std::fs::write(&d.config, &with_client).unwrap();
    assert!(
        std::process::Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    wait_until("SIGHUP reload", || {
        authorize(&d, &cookie, "static", cb).status == 302
    });
    // A broken authd.yml: the running configuration (and the client) stay.
    std::fs::write(&d.config, format!("{with_client}\nsession:\n  bogus: 1\n")).unwrap();
    assert!(
        std::process::Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(authorize(&d, &cookie, "static", cb).status, 302);
    assert_eq!(d.get("/api/health").status, 200);
}

#[test]
fn authctl_clients_list_and_check() {
    let dir = tempfile::tempdir().unwrap();
    let clients = dir.path().join("oidc-clients.d");
    std::fs::create_dir_all(&clients).unwrap();
    std::fs::write(
        dir.path().join("hostnames.conf"),
        "halos.local\nhalos\n10.0.0.1\n",
    )
    .unwrap();
    let secret = dir.path().join("s");
    std::fs::write(&secret, "x\n").unwrap();
    std::fs::write(clients.join("app.yml"), format!("client_id: app\nclient_secret_file: {}\nredirect_uris: ['https://${{HALOS_DOMAIN}}/cb']\n", secret.display())).unwrap();
    let cfg = dir.path().join("authd.yml");
    std::fs::write(
        &cfg,
        format!(
            "hostnames_file: {}\nidentity_providers:\n  oidc:\n    clients_dir: {}\n",
            dir.path().join("hostnames.conf").display(),
            clients.display()
        ),
    )
    .unwrap();
    let c = cfg.to_str().unwrap();
    let out = crate::common::authctl(&["-c", c, "clients", "check"], "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = crate::common::authctl(&["-c", c, "clients", "list", "--json"], "");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["clients"][0]["redirect_uris"],
        serde_json::json!(["https://halos.local/cb", "https://halos/cb"])
    );
    // A broken file: exit 1 naming file and line; list shows why it was skipped.
    std::fs::write(
        clients.join("bad.yml"),
        "client_id: bad\nredirect_uris: [\n",
    )
    .unwrap();
    let out = crate::common::authctl(&["-c", c, "clients", "check"], "");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.yml:2"), "{err}");
    let out = crate::common::authctl(
        &[
            "-c",
            c,
            "clients",
            "check",
            clients.join("app.yml").to_str().unwrap(),
        ],
        "",
    );
    assert!(out.status.success());
    let out = crate::common::authctl(&["-c", c, "clients", "list", "--json"], "");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["skipped"][0].as_str().unwrap().contains("bad.yml"));
    // A client without a usable secret file is reported too.
    std::fs::remove_file(clients.join("bad.yml")).unwrap();
    std::fs::remove_file(&secret).unwrap();
    let out = crate::common::authctl(&["-c", c, "clients", "check"], "");
    assert_eq!(out.status.code(), Some(1));
}
