//! `halos-authctl bridge`: HaLOS's cockpit-authelia-users-bridge protocol, byte for byte
//! (Python `json.dumps` output, error codes, exit codes), on real files, with the daemon
//! picking up the edits.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use authd::users::UsersDb;

use crate::common::{Daemon, authctl, authctl_path};

const D: &str = "$2b$10$Ok4cLvJFE5p3lewDJzVLleWgTNfofJB6eheGIgjj3dAA7VQvoYiPW";

fn users_file() -> String {
    format!(
        "# boat\nusers:\n  admin:\n    displayname: \"Skipper Jörg\"\n    password: '{D}'\n    email: admin@halos.local\n    groups: [admins, users]\n    phone: '+358'   # kept\n  crew:\n    displayname: Crew\n    password: '{D}'\n    email: crew@halos.local\n    groups: [deck]\n    disabled: true\n"
    )
}

struct Setup {
    dir: tempfile::TempDir,
    cfg: String,
}

impl Setup {
    fn new(users: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let users_path = dir.path().join("users_database.yml");
        std::fs::write(&users_path, users).unwrap();
        let cfg = dir.path().join("authd.yml");
        std::fs::write(
            &cfg,
            format!(
                "authentication_backend:\n  file:\n    path: {}\n    password:\n      argon2: {{memory: 1024, iterations: 1, parallelism: 1}}\n",
                users_path.display()
            ),
        )
        .unwrap();
        Setup {
            cfg: cfg.to_str().unwrap().to_string(),
            dir,
        }
    }

    fn bridge(&self, args: &[&str], stdin: &str) -> Output {
        let mut all = vec!["-c", self.cfg.as_str(), "bridge"];
        all.extend_from_slice(args);
        authctl(&all, stdin)
    }

    fn db(&self) -> UsersDb {
        UsersDb::parse(&self.text(), "users").unwrap()
    }

    fn text(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("users_database.yml")).unwrap()
    }
}

/// Exit 0, exactly `stdout` (plus the newline print adds), nothing on stderr.
fn ok(out: &Output, stdout: &str) {
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "",
        "stderr of a successful call"
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{stdout}\n"));
    assert_eq!(out.status.code(), Some(0));
}

/// Exit 1, exactly `stderr` (the error JSON plus newline), nothing on stdout.
fn err(out: &Output, stderr: &str) {
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "",
        "stdout of a failed call"
    );
    assert_eq!(String::from_utf8_lossy(&out.stderr), format!("{stderr}\n"));
    assert_eq!(out.status.code(), Some(1));
}

fn validation(field: &str, message: &str) -> String {
    format!(
        r#"{{"code": "VALIDATION_ERROR", "message": "{message}", "details": {{"field": "{field}"}}}}"#
    )
}

fn error_code(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stderr).unwrap();
    v["code"].as_str().unwrap().to_string()
}

const ADMIN: &str = r#"{"user_id": "admin", "displayname": "Skipper J\u00f6rg", "email": "admin@halos.local", "disabled": false, "groups": ["admins", "users"]}"#;
const CREW: &str = r#"{"user_id": "crew", "displayname": "Crew", "email": "crew@halos.local", "disabled": true, "groups": ["deck"]}"#;

#[test]
fn reads_list_users_get_user_list_groups() {
    let s = Setup::new(&users_file());
    ok(
        &s.bridge(&["list-users"], ""),
        &format!("[{ADMIN}, {CREW}]"),
    );
    ok(&s.bridge(&["get-user", "crew"], ""), CREW);
    err(
        &s.bridge(&["get-user", "ghost"], ""),
        r#"{"code": "USER_NOT_FOUND", "message": "User not found: ghost", "details": {"user_id": "ghost"}}"#,
    );
    ok(
        &s.bridge(&["list-groups"], ""),
        r#"["admins", "deck", "guests", "users"]"#,
    );
    // No users file yet: empty lists, the suggested groups.
    let empty = Setup::new("");
    std::fs::remove_file(empty.dir.path().join("users_database.yml")).unwrap();
    ok(&empty.bridge(&["list-users"], ""), "[]");
    ok(
        &empty.bridge(&["list-groups"], ""),
        r#"["admins", "guests", "users"]"#,
    );
}

#[test]
fn create_user_output_validation_and_conflicts() {
    let s = Setup::new(&users_file());
    let out = s.bridge(
        &["create-user"],
        r#"{"user_id": "mary", "displayname": "Mary \"Mo\" Ó", "email": "mary@halos.local", "password": "s3cret pw", "groups": ["users", "deck"]}"#,
    );
    ok(
        &out,
        r#"{"user_id": "mary", "displayname": "Mary \"Mo\" \u00d3", "email": "mary@halos.local", "disabled": false, "groups": ["users", "deck"]}"#,
    );
    let db = s.db();
    let mary = db.get("mary").unwrap();
    assert!(
        mary.password_text
            .starts_with("$argon2id$v=19$m=1024,t=1,p=1$")
    );
    assert!(mary.digest.verify(b"s3cret pw", &mut Vec::new()));
    let text = s.text();
    assert!(
        text.contains("# kept") && text.contains("phone: '+358'"),
        "{text}"
    );
    // Optional fields: groups default to [], disabled is taken when given.
    ok(
        &s.bridge(
            &["create-user"],
            r#"{"user_id": "g1", "displayname": "G", "email": "g@h.io", "password": "p", "disabled": true}"#,
        ),
        r#"{"user_id": "g1", "displayname": "G", "email": "g@h.io", "disabled": true, "groups": []}"#,
    );

    err(
        &s.bridge(
            &["create-user"],
            r#"{"user_id": "mary", "displayname": "M", "email": "m@h.io", "password": "p"}"#,
        ),
        r#"{"code": "USER_EXISTS", "message": "User already exists: mary", "details": {"user_id": "mary"}}"#,
    );

    let long_id = "a".repeat(65);
    let long_name = "n".repeat(257);
    let cases: Vec<(String, String)> = vec![
        (r#"{}"#.into(), validation("user_id", "User ID is required")),
        (
            r#"{"user_id": ""}"#.into(),
            validation("user_id", "User ID cannot be empty"),
        ),
        (
            format!(r#"{{"user_id": "{long_id}"}}"#),
            validation("user_id", "User ID cannot exceed 64 characters"),
        ),
        (
            r#"{"user_id": "a b"}"#.into(),
            validation(
                "user_id",
                "User ID must contain only alphanumeric characters, underscores, and hyphens",
            ),
        ),
        (
            r#"{"user_id": "ok"}"#.into(),
            validation("displayname", "Display name is required"),
        ),
        (
            r#"{"user_id": "ok", "displayname": "  "}"#.into(),
            validation("displayname", "Display name cannot be empty"),
        ),
        (
            format!(r#"{{"user_id": "ok", "displayname": "{long_name}"}}"#),
            validation("displayname", "Display name cannot exceed 256 characters"),
        ),
        (
            r#"{"user_id": "ok", "displayname": "OK"}"#.into(),
            validation("email", "Email is required"),
        ),
        (
            r#"{"user_id": "ok", "displayname": "OK", "email": ""}"#.into(),
            validation("email", "Email cannot be empty"),
        ),
        (
            r#"{"user_id": "ok", "displayname": "OK", "email": "a@b"}"#.into(),
            validation("email", "Invalid email format"),
        ),
        (
            r#"{"user_id": "ok", "displayname": "OK", "email": "a@b.c"}"#.into(),
            validation("password", "Password is required"),
        ),
        (
            r#"{"user_id": "ok", "displayname": "OK", "email": "a@b.c", "password": "p", "groups": "admins"}"#.into(),
            validation("groups", "Groups must be a list"),
        ),
        (
            r#"{"user_id": "ok", "displayname": "OK", "email": "a@b.c", "password": "p", "groups": [""]}"#.into(),
            validation("groups", "Group name cannot be empty"),
        ),
        (
            r#"{"user_id": "ok", "displayname": "OK", "email": "a@b.c", "password": "p", "groups": ["a,b"]}"#.into(),
            validation(
                "groups",
                "Group name 'a,b' must contain only alphanumeric characters, underscores, and hyphens",
            ),
        ),
    ];
    for (input, expected) in &cases {
        err(&s.bridge(&["create-user"], input), expected);
    }
    // Not JSON: INTERNAL_ERROR, as the original's json.loads failure.
    let out = s.bridge(&["create-user"], "{not json");
    assert_eq!(error_code(&out), "INTERNAL_ERROR");
    let v: serde_json::Value = serde_json::from_slice(&out.stderr).unwrap();
    assert!(v.get("details").is_none(), "{v}");
    assert_eq!(s.db().len(), 4, "failed calls must not change the file");
}

#[test]
fn update_user_partial_password_and_last_admin() {
    let s = Setup::new(&users_file());
    ok(
        &s.bridge(
            &["update-user", "crew"],
            r#"{"displayname": "Deck Crew", "disabled": false}"#,
        ),
        r#"{"user_id": "crew", "displayname": "Deck Crew", "email": "crew@halos.local", "disabled": false, "groups": ["deck"]}"#,
    );
    // An empty body changes nothing and answers the user; an empty password is ignored.
    ok(
        &s.bridge(&["update-user", "admin"], r#"{"password": ""}"#),
        ADMIN,
    );
    ok(
        &s.bridge(
            &["update-user", "crew"],
            r#"{"password": "new pw", "groups": ["admins"], "email": "c@halos.local"}"#,
        ),
        r#"{"user_id": "crew", "displayname": "Deck Crew", "email": "c@halos.local", "disabled": false, "groups": ["admins"]}"#,
    );
    assert!(
        s.db()
            .get("crew")
            .unwrap()
            .digest
            .verify(b"new pw", &mut Vec::new())
    );
    assert!(s.text().contains("# kept"));

    err(
        &s.bridge(&["update-user", "ghost"], r#"{"displayname": "G"}"#),
        r#"{"code": "USER_NOT_FOUND", "message": "User not found: ghost", "details": {"user_id": "ghost"}}"#,
    );
    for (input, expected) in [
        (
            r#"{"displayname": ""}"#,
            validation("displayname", "Display name cannot be empty"),
        ),
        (
            r#"{"email": "x"}"#,
            validation("email", "Invalid email format"),
        ),
        (
            r#"{"groups": [" "]}"#,
            validation(
                "groups",
                "Group name ' ' must contain only alphanumeric characters, underscores, and hyphens",
            ),
        ),
    ] {
        err(&s.bridge(&["update-user", "crew"], input), &expected);
    }

    // Two admins now: admin can be disabled; then crew is the last one and is protected.
    ok(
        &s.bridge(&["update-user", "admin"], r#"{"disabled": true}"#),
        &ADMIN.replace(r#""disabled": false"#, r#""disabled": true"#),
    );
    for (args, input) in [
        (vec!["update-user", "crew"], r#"{"disabled": true}"#),
        (vec!["update-user", "crew"], r#"{"groups": ["users"]}"#),
        (vec!["delete-user", "crew"], ""),
    ] {
        let out = s.bridge(&args, input);
        assert_eq!(error_code(&out), "VALIDATION_ERROR", "{args:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("last enabled member"));
    }
    assert!(s.db().active("crew").is_some());
}

#[test]
fn delete_user_database_errors_and_usage() {
    let s = Setup::new(&users_file());
    ok(
        &s.bridge(&["delete-user", "crew"], ""),
        r#"{"success": true}"#,
    );
    assert!(s.db().get("crew").is_none());
    err(
        &s.bridge(&["delete-user", "crew"], ""),
        r#"{"code": "USER_NOT_FOUND", "message": "User not found: crew", "details": {"user_id": "crew"}}"#,
    );

    // A broken users file: DATABASE_ERROR naming the file, and the file is left alone.
    let broken = Setup::new("users:\n  a: [\n");
    let path = broken.dir.path().join("users_database.yml");
    for args in [
        vec!["list-users"],
        vec!["get-user", "a"],
        vec!["delete-user", "a"],
        vec!["list-groups"],
    ] {
        let out = broken.bridge(&args, "");
        assert_eq!(error_code(&out), "DATABASE_ERROR", "{args:?}");
        let v: serde_json::Value = serde_json::from_slice(&out.stderr).unwrap();
        assert_eq!(v["details"]["path"], path.display().to_string());
        assert!(
            v["message"]
                .as_str()
                .unwrap()
                .starts_with("Failed to parse YAML: "),
            "{v}"
        );
    }
    assert_eq!(broken.text(), "users:\n  a: [\n");

    // Usage errors exit 2, as argparse does.
    for args in [vec![], vec!["get-user"], vec!["frobnicate"]] {
        let out = s.bridge(&args, "");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
}

#[test]
fn answers_under_the_bridge_name() {
    let s = Setup::new(&users_file());
    let link = s.dir.path().join("cockpit-authelia-users-bridge");
    std::os::unix::fs::symlink(authctl_path(), &link).unwrap();
    let out = Command::new(&link)
        .arg("get-user")
        .arg("admin")
        .env("AUTHD_CONFIG", &s.cfg)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    ok(&out, ADMIN);
}

fn login(d: &Daemon, user: &str, pw: &str) -> u16 {
    d.req(
        "POST",
        "/api/firstfactor",
        &[
            ("Content-Type", "application/json"),
            ("X-Forwarded-Host", "halos.local"),
            ("X-Forwarded-Proto", "https"),
        ],
        &serde_json::json!({"username": user, "password": pw}).to_string(),
    )
    .status
}

/// Waits for the daemon's `users file reloaded` log line number `n` (its readiness signal
/// for a reload; logging in before it would count as a failure and trip regulation).
fn wait_for_reload(d: &Daemon, n: usize) {
    let start = Instant::now();
    loop {
        let seen = d
            .log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains("users file reloaded"))
            .count();
        if seen >= n {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "the daemon did not reload the users file ({seen} reloads seen, want {n})"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_daemon_applies_bridge_edits_live() {
    let d = Daemon::start(
        &users_file(),
        "session:\n  cookies:\n    - domain: halos.local\n      authelia_url: https://halos.local/sso\n",
    );
    let cfg = d.config.to_str().unwrap().to_string();
    let bridge = |args: &[&str], stdin: &str| {
        let mut all = vec!["-c", cfg.as_str(), "bridge"];
        all.extend_from_slice(args);
        authctl(&all, stdin)
    };
    let out = bridge(
        &["create-user"],
        r#"{"user_id": "mary", "displayname": "Mary", "email": "mary@halos.local", "password": "pw 1"}"#,
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    wait_for_reload(&d, 1);
    assert_eq!(login(&d, "mary", "pw 1"), 200);
    assert_eq!(
        bridge(&["update-user", "mary"], r#"{"password": "pw 2"}"#)
            .status
            .code(),
        Some(0)
    );
    wait_for_reload(&d, 2);
    assert_eq!(login(&d, "mary", "pw 1"), 401);
    assert_eq!(login(&d, "mary", "pw 2"), 200);
    assert_eq!(bridge(&["delete-user", "mary"], "").status.code(), Some(0));
    wait_for_reload(&d, 3);
    assert_eq!(login(&d, "mary", "pw 2"), 401);
    assert!(Path::new(&d.path("users_database.yml")).exists());
}
