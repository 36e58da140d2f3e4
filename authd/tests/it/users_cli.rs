//! halos-authctl user management against real files.

use std::process::{Command, Stdio};
use std::time::Duration;

use authd::users::UsersDb;

use crate::common::{authctl, authctl_path};

/// Fast hashing so the CLI does not spend 100 ms per password in debug builds.
fn cfg(dir: &std::path::Path) -> std::path::PathBuf {
    let p = dir.join("authd.yml");
    std::fs::write(
        &p,
        format!(
            "authentication_backend:\n  file:\n    path: {}\n    password:\n      argon2: {{memory: 1024, iterations: 1, parallelism: 1}}\n",
            dir.join("users_database.yml").display()
        ),
    )
    .unwrap();
    p
}

fn load(dir: &std::path::Path) -> UsersDb {
    UsersDb::parse(
        &std::fs::read_to_string(dir.join("users_database.yml")).unwrap(),
        "u",
    )
    .unwrap()
}

#[test]
fn add_list_show_update_passwd_delete() {
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(dir.path());
    let c = c.to_str().unwrap();
    let out = authctl(
        &[
            "-c",
            c,
            "user",
            "add",
            "skipper",
            "--display-name",
            "The Skipper",
            "--email",
            "skipper@halos.local",
            "--group",
            "admins",
            "--group",
            "users",
            "--password-stdin",
        ],
        "s3cret pass\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let db = load(dir.path());
    let u = db.get("skipper").unwrap();
    assert_eq!(u.groups, vec!["admins", "users"]);
    let mut blocks = Vec::new();
    assert!(u.digest.verify(b"s3cret pass", &mut blocks));
    assert!(
        u.password_text
            .starts_with("$argon2id$v=19$m=1024,t=1,p=1$")
    );

    let out = authctl(
        &[
            "-c",
            c,
            "user",
            "add",
            "crew",
            "--email",
            "crew@halos.local",
            "--password-stdin",
        ],
        "pw\n",
    );
    assert!(out.status.success());

    let out = authctl(&["-c", c, "user", "list", "--json"], "");
    assert!(out.status.success());
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 2);
    assert_eq!(list[1]["name"], "skipper");
    assert_eq!(list[1]["groups"], serde_json::json!(["admins", "users"]));

    let out = authctl(&["-c", c, "user", "show", "crew", "--json"], "");
    let crew: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(crew["displayname"], "crew");
    assert_eq!(crew["disabled"], false);

    let out = authctl(
        &[
            "-c",
            c,
            "user",
            "update",
            "crew",
            "--disable",
            "--group",
            "guests",
            "--display-name",
            "Deck hand",
        ],
        "",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let db = load(dir.path());
    assert!(db.get("crew").unwrap().disabled);
    assert_eq!(db.get("crew").unwrap().groups, vec!["guests"]);

    let out = authctl(
        &["-c", c, "user", "passwd", "crew", "--password-stdin"],
        "newpw\n",
    );
    assert!(out.status.success());
    assert!(
        load(dir.path())
            .get("crew")
            .unwrap()
            .digest
            .verify(b"newpw", &mut blocks)
    );

    // The last admin cannot be deleted or disabled.
    let out = authctl(&["-c", c, "user", "del", "skipper"], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("last enabled member"));
    let out = authctl(&["-c", c, "user", "del", "crew"], "");
    assert!(out.status.success());
    assert!(load(dir.path()).get("crew").is_none());
}

#[test]
fn errors_and_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(dir.path());
    let c = c.to_str().unwrap();
    // Usage errors exit 2; a password can never be passed as an argument.
    let out = authctl(
        &["-c", c, "user", "passwd", "x", "--password", "hunter2"],
        "",
    );
    assert_eq!(out.status.code(), Some(2));
    let out = authctl(&["-c", c, "user", "frobnicate"], "");
    assert_eq!(out.status.code(), Some(2));
    // Failures exit 1 with a message.
    let out = authctl(&["-c", c, "user", "show", "nobody"], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
    let out = authctl(
        &[
            "-c",
            c,
            "user",
            "add",
            "bad name",
            "--email",
            "a@b.c",
            "--password-stdin",
        ],
        "pw\n",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("^[a-zA-Z0-9_-]+$"));
    let out = authctl(
        &[
            "-c",
            c,
            "user",
            "add",
            "ok",
            "--email",
            "not-an-email",
            "--password-stdin",
        ],
        "pw\n",
    );
    assert_eq!(out.status.code(), Some(1));
    // No password on stdin and no TTY: refused, nothing written.
    let out = authctl(&["-c", c, "user", "add", "ok", "--email", "a@b.c"], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--password-stdin"));
    assert!(!dir.path().join("users_database.yml").exists());
    // A broken users file is reported with file and line and left untouched.
    let users = dir.path().join("users_database.yml");
    std::fs::write(&users, "users:\n  a:\n    password: [\n").unwrap();
    let out = authctl(
        &[
            "-c",
            c,
            "user",
            "add",
            "ok",
            "--email",
            "a@b.c",
            "--password-stdin",
        ],
        "pw\n",
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("users_database.yml:"), "{err}");
    assert_eq!(
        std::fs::read_to_string(&users).unwrap(),
        "users:\n  a:\n    password: [\n"
    );
    let out = authctl(&["-c", c, "check"], "");
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn hash_password_prints_an_argon2id_digest() {
    let out = authctl(&["hash-password", "--password-stdin"], "pw\n");
    assert!(out.status.success());
    let digest = String::from_utf8(out.stdout).unwrap();
    assert!(
        digest.starts_with("$argon2id$v=19$m=65536,t=3,p=4$"),
        "{digest}"
    );
    let d = authd::users::PasswordDigest::parse(digest.trim()).unwrap();
    assert!(d.verify(b"pw", &mut Vec::new()));
}

#[test]
fn passwd_keeps_comments_order_and_unknown_keys() {
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(dir.path());
    let users = dir.path().join("users_database.yml");
    let original = "# Managed by hand and by halos-authctl\nusers:\n  admin:   # first\n    displayname: \"Admin\"\n    password: \"$2b$10$Ok4cLvJFE5p3lewDJzVLleWgTNfofJB6eheGIgjj3dAA7VQvoYiPW\"\n    email: admin@halos.local\n    groups: [admins]\n    given_name: Ada   # Authelia attribute\n  # the crew\n  bob:\n    displayname: Bob\n    password: '$2b$10$Ok4cLvJFE5p3lewDJzVLleWgTNfofJB6eheGIgjj3dAA7VQvoYiPW'\n";
    std::fs::write(&users, original).unwrap();
    let out = authctl(
        &[
            "-c",
            c.to_str().unwrap(),
            "user",
            "passwd",
            "admin",
            "--password-stdin",
        ],
        "changed\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = std::fs::read_to_string(&users).unwrap();
    for kept in [
        "# Managed by hand and by halos-authctl",
        "# first",
        "given_name: Ada   # Authelia attribute",
        "# the crew",
        "  bob:\n    displayname: Bob\n    password: '$2b$10$Ok4cLvJFE5p3lewDJzVLleWgTNfofJB6eheGIgjj3dAA7VQvoYiPW'",
    ] {
        assert!(after.contains(kept), "lost {kept:?}:\n{after}");
    }
    assert!(!after.contains("\"$2b$10$Ok4cLvJFE5p3lewDJzVLleWgTNfofJB6eheGIgjj3dAA7VQvoYiPW\""));
}

/// SIGKILL a writer at random moments, many times: the file must always parse, and to
/// the content either before or after that writer's change.
#[test]
fn killed_writer_never_leaves_a_broken_file() {
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(dir.path());
    let out = authctl(
        &[
            "-c",
            c.to_str().unwrap(),
            "user",
            "add",
            "admin",
            "--email",
            "a@halos.local",
            "--group",
            "admins",
            "--password-stdin",
        ],
        "pw\n",
    );
    assert!(out.status.success());
    let users = dir.path().join("users_database.yml");
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut interrupted = 0;
    for i in 0..150 {
        let before = load(dir.path()).get("admin").unwrap().displayname.clone();
        let next = format!("Admin {i}");
        let mut child = Command::new(authctl_path())
            .args([
                "-c",
                c.to_str().unwrap(),
                "user",
                "update",
                "admin",
                "--display-name",
                &next,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // xorshift: spread kills over the whole run of the writer (~0–4 ms).
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_micros(seed % 4000));
        let _ = child.kill();
        let status = child.wait().unwrap();
        if !status.success() {
            interrupted += 1;
        }
        let text = std::fs::read_to_string(&users).unwrap();
        let db = UsersDb::parse(&text, "u")
            .unwrap_or_else(|e| panic!("iteration {i}: broken file: {e}\n{text}"));
        let now = &db.get("admin").unwrap().displayname;
        assert!(
            *now == before || *now == next,
            "iteration {i}: {now:?} is neither {before:?} nor {next:?}"
        );
    }
    assert!(
        interrupted > 10,
        "the kills should interrupt some writers (got {interrupted})"
    );
    // No stray temp files beyond what killed writers left; they never replace the file.
    let db = load(dir.path());
    assert_eq!(db.len(), 1);
}
