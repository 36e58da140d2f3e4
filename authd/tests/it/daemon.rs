//! The daemon starts, listens under the path prefix and answers health.

use std::process::Command;

use crate::common::{DAEMON, Daemon};

#[test]
fn health_answers_ok_under_the_prefix() {
    let d = Daemon::start("users: {}\n", "");
    assert_eq!(d.prefix, "/sso");
    let r = d.get("/api/health");
    assert_eq!(r.status, 200);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v, serde_json::json!({"status": "OK"}));
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    // Nothing outside the prefix.
    let r = crate::common::http(d.addr, "GET", "/api/health", &[], "");
    assert_eq!(r.status, 404);
}

#[test]
fn demo_mode_prints_credentials_and_serves() {
    let dir = tempfile::tempdir().unwrap();
    let demo_dir = dir.path().join("demo");
    let out = tempfile::NamedTempFile::new().unwrap();
    let mut cmd = Command::new(DAEMON);
    cmd.args(["--demo", "--demo-dir"])
        .arg(&demo_dir)
        .env("AUTHD_SERVER_ADDRESS", "tcp://127.0.0.1:0/sso")
        .stdout(out.reopen().unwrap());
    let d = Daemon::spawn(&mut cmd, dir);
    assert_eq!(d.get("/api/health").status, 200);
    let printed = std::fs::read_to_string(out.path()).unwrap();
    assert!(printed.contains("demo user: demo"), "{printed}");
    let pw = printed
        .lines()
        .find_map(|l| l.strip_prefix("password:"))
        .unwrap()
        .trim()
        .to_string();
    let db = authd::users::edit::UsersFile::new(demo_dir.join("users_database.yml"))
        .load()
        .unwrap();
    assert!(
        db.get("demo")
            .unwrap()
            .digest
            .verify(pw.as_bytes(), &mut Vec::new())
    );
    // The printed credentials sign in on the demo's cookie domain (halos.localhost).
    let r = d.req(
        "POST",
        "/api/firstfactor",
        &[
            ("X-Forwarded-Host", "auth.halos.localhost"),
            ("Content-Type", "application/json"),
        ],
        &serde_json::json!({"username": "demo", "password": pw}).to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.cookie("halos_session").is_some());
}

#[test]
fn a_broken_users_file_stops_startup_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.yml");
    std::fs::write(
        &users,
        "users:\n  a:\n    displayname: A\n    password: 'plain'\n",
    )
    .unwrap();
    let cfg = dir.path().join("authd.yml");
    std::fs::write(
        &cfg,
        format!(
            "authentication_backend:\n  file:\n    path: {}\n",
            users.display()
        ),
    )
    .unwrap();
    let out = Command::new(DAEMON)
        .arg("--config")
        .arg(&cfg)
        .env_remove("AUTHD_CONFIG")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{}:3", users.display())) && err.contains("users.a.password"),
        "{err}"
    );
}
