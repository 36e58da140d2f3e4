//! Strict configuration: the daemon refuses to start and says where and why.

use std::process::Command;

use crate::common::DAEMON;

fn run_with(config: &str, env: &[(&str, &str)]) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("authd.yml");
    std::fs::write(&p, config).unwrap();
    let mut cmd = Command::new(DAEMON);
    cmd.arg("--config")
        .arg(&p)
        .arg("--check")
        .env_remove("AUTHD_CONFIG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).replace(&p.display().to_string(), "authd.yml"),
    )
}

#[test]
fn unknown_key_wrong_type_bad_value_stop_startup() {
    let (code, err) = run_with(
        "server:\n  address: tcp://127.0.0.1:0/sso\n  trusted_proxy: []\n",
        &[],
    );
    assert_eq!(code, 1);
    assert!(err.contains("authd.yml:3"), "{err}");
    assert!(
        err.contains("server") && err.contains("trusted_proxy"),
        "{err}"
    );

    let (code, err) = run_with("regulation:\n  max_retries: many\n", &[]);
    assert_eq!(code, 1);
    assert!(
        err.contains("authd.yml:2") && err.contains("regulation.max_retries"),
        "{err}"
    );

    let (code, err) = run_with("session:\n  inactivity: forever\n", &[]);
    assert_eq!(code, 1);
    assert!(err.contains("session.inactivity"), "{err}");

    let (code, err) = run_with(
        "session:\n  cookies:\n    - domain: halos\n      authelia_url: https://halos/sso\n",
        &[],
    );
    assert_eq!(code, 1);
    assert!(err.contains("session.cookies[0].domain"), "{err}");
}

#[test]
fn environment_overrides_are_checked_too() {
    let (code, err) = run_with(
        "",
        &[
            ("AUTHD_SESSION_NAME", "x"),
            ("AUTHD_SERVER_ADRESS", "tcp://x"),
        ],
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("AUTHD_SERVER_ADRESS") && err.contains("no such configuration key"),
        "{err}"
    );
    let (code, err) = run_with("", &[("AUTHD_SESSION_INACTIVITY", "soon")]);
    assert_eq!(code, 1);
    assert!(err.contains("AUTHD_SESSION_INACTIVITY"), "{err}");
}

#[test]
fn a_valid_config_checks_ok() {
    let dir = tempfile::tempdir().unwrap();
    let (code, err) = run_with(
        &format!(
            "authentication_backend:\n  file:\n    path: {}/users.yml\n",
            dir.path().display()
        ),
        &[("AUTHD_SESSION_INACTIVITY", "5m")],
    );
    assert_eq!(code, 0, "{err}");
}
