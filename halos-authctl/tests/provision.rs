#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `halos-authctl provision` and `halos-authctl migrate-from-authelia` against real files.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use authd::users::UsersDb;

const AUTHCTL: &str = env!("CARGO_BIN_EXE_halos-authctl");

/// A state directory with a config that keeps everything in it and hashes cheaply.
struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        fs::create_dir(&state).unwrap();
        fs::write(
            dir.path().join("authd.yml"),
            format!(
                "authentication_backend:\n  file:\n    path: {}\n    password:\n      argon2: {{memory: 1024, iterations: 1, parallelism: 1}}\nstorage:\n  local:\n    path: {}\n",
                state.join("users_database.yml").display(),
                state.join("state.sqlite").display(),
            ),
        )
        .unwrap();
        Env { dir }
    }
    fn p(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
    fn users(&self) -> PathBuf {
        self.p("state/users_database.yml")
    }
    fn keys(&self) -> PathBuf {
        self.p("state/keys")
    }
    fn run(&self, args: &[&str]) -> Output {
        let cfg = self.p("authd.yml");
        let mut child = Command::new(AUTHCTL)
            .arg("--config")
            .arg(&cfg)
            .args(args)
            .env_remove("AUTHD_CONFIG")
            .env_remove("HALOS_DOMAIN")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdin.take());
        child.wait_with_output().unwrap()
    }
    /// `provision` with branding and Authelia files inside the temp dir (absent unless written).
    fn provision(&self) -> Output {
        let b = self.p("branding.toml");
        let a = self.p("authelia_users.yml");
        self.run(&[
            "provision",
            "--branding",
            b.to_str().unwrap(),
            "--authelia-users",
            a.to_str().unwrap(),
        ])
    }
    fn db(&self) -> UsersDb {
        UsersDb::parse(&fs::read_to_string(self.users()).unwrap(), "users").unwrap()
    }
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn failed(out: &Output) -> String {
    assert_eq!(
        out.status.code(),
        Some(1),
        "expected exit 1\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

fn verifies(db: &UsersDb, user: &str, password: &str) -> bool {
    db.get(user)
        .unwrap_or_else(|| panic!("no user {user}"))
        .digest
        .verify(password.as_bytes(), &mut Vec::new())
}

/// Every file below `dir` with its bytes, to prove a re-run changes nothing.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>, u32)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.push((p.clone(), Vec::new(), mode(&p)));
                todo.push(p);
            } else {
                out.push((p.clone(), fs::read(&p).unwrap(), mode(&p)));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn provision_creates_keys_secrets_and_default_admin_and_is_idempotent() {
    let env = Env::new();
    let first = ok(&env.provision());
    assert!(first.contains("created admin \"admin\""), "{first}");

    assert_eq!(mode(&env.keys()), 0o700);
    for name in ["hmac.key", "storage.key"] {
        let p = env.keys().join(name);
        assert_eq!(mode(&p), 0o600, "{name}");
        let text = fs::read_to_string(&p).unwrap();
        let secret = text.strip_suffix('\n').unwrap();
        assert_eq!(secret.len(), 64, "{name}: {text:?}");
        assert!(secret.chars().all(|c| c.is_ascii_hexdigit()), "{text:?}");
    }
    assert_ne!(
        fs::read(env.keys().join("hmac.key")).unwrap(),
        fs::read(env.keys().join("storage.key")).unwrap()
    );
    // OIDC signing keys (RS256 and ES256) exist, 0600, and load as the daemon would load them.
    assert!(first.contains("created signing key"), "{first}");
    let keys = authd::oidc::SigningKeys::load(&env.keys()).unwrap();
    let jwks = keys.jwks_json();
    let algs: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["alg"].as_str().unwrap())
        .collect();
    assert!(
        algs.contains(&"RS256") && algs.contains(&"ES256"),
        "{algs:?}"
    );
    for entry in fs::read_dir(env.keys()).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "der") {
            assert_eq!(mode(&p), 0o600, "{}", p.display());
        }
    }

    assert_eq!(mode(&env.users()), 0o600);
    let db = env.db();
    assert_eq!(db.len(), 1);
    let admin = db.get("admin").unwrap();
    assert_eq!(admin.groups, vec!["admins"]);
    assert_eq!(admin.email, "admin@halos.local");
    assert!(!admin.disabled);
    assert!(verifies(&db, "admin", "halos"));
    assert!(!verifies(&db, "admin", "wrong"));

    // Second run: nothing to do, not one byte or mode changes.
    let before = snapshot(env.dir.path());
    let again = ok(&env.provision());
    assert!(again.contains("nothing to do"), "{again}");
    assert_eq!(before, snapshot(env.dir.path()));

    // A lost secret is recreated, the others and the users stay as they were.
    let hmac = fs::read(env.keys().join("hmac.key")).unwrap();
    fs::remove_file(env.keys().join("storage.key")).unwrap();
    let users = fs::read(env.users()).unwrap();
    let out = ok(&env.provision());
    assert!(out.contains("storage.key"), "{out}");
    assert!(env.keys().join("storage.key").exists());
    assert_eq!(fs::read(env.keys().join("hmac.key")).unwrap(), hmac);
    assert_eq!(fs::read(env.users()).unwrap(), users);
}

#[test]
fn provision_repairs_modes_of_keys() {
    let env = Env::new();
    ok(&env.provision());
    fs::set_permissions(env.keys(), fs::Permissions::from_mode(0o755)).unwrap();
    let key = env.keys().join("hmac.key");
    let secret = fs::read(&key).unwrap();
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
    ok(&env.provision());
    assert_eq!(mode(&env.keys()), 0o700);
    assert_eq!(mode(&key), 0o600);
    assert_eq!(fs::read(&key).unwrap(), secret);
}

#[test]
fn default_admin_only_when_there_are_no_users() {
    let env = Env::new();
    let users = "# the crew\nusers:\n  skipper:\n    displayname: Skipper\n    password: '$2b$10$Ok4cLvJFE5p3lewDJzVLleWgTNfofJB6eheGIgjj3dAA7VQvoYiPW'\n    email: skipper@halos.local\n    groups: [users]\n    boat: Aurora\n";
    fs::write(env.users(), users).unwrap();
    fs::set_permissions(env.users(), fs::Permissions::from_mode(0o640)).unwrap();
    // Branding credentials are present but must not matter: users exist.
    fs::write(
        env.p("branding.toml"),
        "[credentials]\nadmin_username = \"captain\"\nadmin_password = \"x\"\n",
    )
    .unwrap();
    ok(&env.provision());
    ok(&env.provision());
    assert_eq!(fs::read_to_string(env.users()).unwrap(), users);
    assert_eq!(mode(&env.users()), 0o640);
    // Keys are still provisioned.
    assert!(env.keys().join("hmac.key").exists());

    // A users file without users gets the admin, keeping its comments.
    let env = Env::new();
    fs::write(env.users(), "# managed by hand\nusers: {}\n").unwrap();
    ok(&env.provision());
    let text = fs::read_to_string(env.users()).unwrap();
    assert!(text.contains("# managed by hand"), "{text}");
    assert!(verifies(&env.db(), "admin", "halos"));
}

#[test]
fn branding_credentials_are_honoured() {
    let env = Env::new();
    fs::write(
        env.p("branding.toml"),
        r#"# HaLOS Homarr branding
[branding]
name = "HaLOS"
admin_username = "not-this-one"

[credentials] # first admin
admin_username = "captain"
admin_password = "Sea \"dog\" \u00e4 42" # comment

[other]
admin_password = 'nope'
"#,
    )
    .unwrap();
    let out = ok(&env.provision());
    assert!(out.contains("captain"), "{out}");
    assert!(out.contains("branding.toml"), "{out}");
    assert!(
        !out.contains("Sea"),
        "the password must not be printed: {out}"
    );
    let db = env.db();
    assert_eq!(db.len(), 1, "only the branding admin");
    assert_eq!(db.get("captain").unwrap().groups, vec!["admins"]);
    assert!(verifies(&db, "captain", "Sea \"dog\" ä 42"));
    assert!(db.get("admin").is_none());

    // Literal strings work too.
    let env = Env::new();
    fs::write(
        env.p("branding.toml"),
        "[credentials]\nadmin_password = 'pa\\ss'\nadmin_username = 'mate'\n",
    )
    .unwrap();
    ok(&env.provision());
    assert!(verifies(&env.db(), "mate", "pa\\ss"));
}

#[test]
fn branding_without_credentials_falls_back_to_the_default_and_bad_ones_fail() {
    let env = Env::new();
    fs::write(env.p("branding.toml"), "[branding]\nname = \"HaLOS\"\n").unwrap();
    ok(&env.provision());
    assert!(verifies(&env.db(), "admin", "halos"));

    let env = Env::new();
    fs::write(
        env.p("branding.toml"),
        "[credentials]\nadmin_username = \"bad name\"\nadmin_password = \"x\"\n",
    )
    .unwrap();
    let err = failed(&env.provision());
    assert!(err.contains("admin_username"), "{err}");
    assert!(!env.users().exists(), "nothing written on error");

    let env = Env::new();
    fs::write(
        env.p("branding.toml"),
        "[credentials]\nadmin_username = \"captain\"\n",
    )
    .unwrap();
    let err = failed(&env.provision());
    assert!(err.contains("admin_password"), "{err}");
}

#[test]
fn broken_users_file_is_left_untouched() {
    let env = Env::new();
    let broken = "users:\n  admin: [this is not a user\n";
    fs::write(env.users(), broken).unwrap();
    let err = failed(&env.provision());
    assert!(err.contains("left untouched"), "{err}");
    assert_eq!(fs::read_to_string(env.users()).unwrap(), broken);
}

#[test]
fn provision_honours_halos_domain_for_the_admin_email() {
    let env = Env::new();
    let b = env.p("branding.toml");
    let a = env.p("authelia_users.yml");
    let out = Command::new(AUTHCTL)
        .arg("--config")
        .arg(env.p("authd.yml"))
        .args(["provision", "--branding"])
        .arg(&b)
        .arg("--authelia-users")
        .arg(&a)
        .env("HALOS_DOMAIN", "Boat.Example.org")
        .output()
        .unwrap();
    ok(&out);
    assert_eq!(
        env.db().get("admin").unwrap().email,
        "admin@boat.example.org"
    );
}

/// An Authelia users file as HaLOS writes it, plus hashes of other algorithms, a disabled
/// user, comments and unknown keys.
const AUTHELIA: &str = r#"# Authelia users (HaLOS)
users:
  admin:
    displayname: "Administrator"
    email: admin@halos.local
    password: "$argon2id$v=19$m=65536,t=3,p=4$G2IXhqp5kV1+NAgVQqxfWg$aDxBAd0UqlgharXcUBVdFMfzxc4sbvjMtF+QZ2d9dLk"
    groups:
      - admins
  crew:   # added in the Cockpit panel
    displayname: Crew Member
    email: crew@halos.local
    password: $6$rounds=50000$1J.8Xzu1zdE7IyP1$mcpnbRlcPKR1z4uOdCRf9IgACEkTvkz6PCp1QEkdT.ZGfQUXGwgzJ.VWdsdjVQwS6lXFNBKSq3oPfV5d73/rY.
    groups: [users]
    disabled: true
    phone_number: "+358 40 123"
  guest:
    displayname: Guest
    email: guest@halos.local
    password: '$2b$10$Ok4cLvJFE5p3lewDJzVLleWgTNfofJB6eheGIgjj3dAA7VQvoYiPW'
"#;
const PW: &str = "correct horse battery staple";

#[test]
fn provision_imports_authelia_users_when_there_are_none() {
    let env = Env::new();
    fs::write(env.p("authelia_users.yml"), AUTHELIA).unwrap();
    fs::write(
        env.p("branding.toml"),
        "[credentials]\nadmin_username = \"captain\"\nadmin_password = \"x\"\n",
    )
    .unwrap();
    let out = ok(&env.provision());
    assert!(out.contains("imported 3 users"), "{out}");
    assert_eq!(fs::read_to_string(env.users()).unwrap(), AUTHELIA);
    assert_eq!(mode(&env.users()), 0o600);
    let db = env.db();
    assert!(db.get("captain").is_none());
    assert!(verifies(&db, "admin", PW));
    // Source untouched; a later run does nothing.
    assert_eq!(
        fs::read_to_string(env.p("authelia_users.yml")).unwrap(),
        AUTHELIA
    );
    assert!(ok(&env.provision()).contains("nothing to do"));

    // --no-import creates the admin instead.
    let env = Env::new();
    fs::write(env.p("authelia_users.yml"), AUTHELIA).unwrap();
    let out = env.run(&[
        "provision",
        "--no-import",
        "--authelia-users",
        env.p("authelia_users.yml").to_str().unwrap(),
        "--branding",
        env.p("none.toml").to_str().unwrap(),
    ]);
    ok(&out);
    assert_eq!(env.db().len(), 1);
    assert!(verifies(&env.db(), "admin", "halos"));
}

#[test]
fn migrate_keeps_every_hash_and_refuses_to_clobber() {
    let env = Env::new();
    let from = env.p("authelia_users.yml");
    fs::write(&from, AUTHELIA).unwrap();
    let out = ok(&env.run(&["migrate-from-authelia", "--from", from.to_str().unwrap()]));
    assert!(out.contains("imported 3 users"), "{out}");
    // Byte for byte: every digest, comment and unknown key.
    assert_eq!(fs::read_to_string(env.users()).unwrap(), AUTHELIA);
    assert_eq!(mode(&env.users()), 0o600);
    let db = env.db();
    for u in ["admin", "crew", "guest"] {
        assert!(verifies(&db, u, PW), "{u}");
    }
    assert!(db.get("crew").unwrap().disabled);
    // The daemon's own tools still work on the result.
    let list = ok(&env.run(&["user", "list"]));
    assert!(list.contains("crew") && list.contains("disabled"), "{list}");

    // The target now has users: a second import is refused and changes nothing.
    let newer = AUTHELIA.replace("Guest", "Visitor");
    fs::write(&from, &newer).unwrap();
    fs::set_permissions(env.users(), fs::Permissions::from_mode(0o640)).unwrap();
    let err = failed(&env.run(&["migrate-from-authelia", "--from", from.to_str().unwrap()]));
    assert!(err.contains("--force"), "{err}");
    assert_eq!(fs::read_to_string(env.users()).unwrap(), AUTHELIA);

    // --force replaces it, keeps mode and the old file beside it.
    ok(&env.run(&[
        "migrate-from-authelia",
        "--force",
        "--from",
        from.to_str().unwrap(),
    ]));
    assert_eq!(fs::read_to_string(env.users()).unwrap(), newer);
    assert_eq!(mode(&env.users()), 0o640);
    assert_eq!(
        fs::read_to_string(env.p("state/users_database.yml.before-migration")).unwrap(),
        AUTHELIA
    );
    // No temporary files left behind.
    for e in fs::read_dir(env.p("state")).unwrap() {
        let n = e.unwrap().file_name();
        assert!(!n.to_string_lossy().ends_with(".tmp"), "{n:?}");
    }
}

#[test]
fn migrate_into_an_empty_users_file_needs_no_force() {
    let env = Env::new();
    fs::write(env.users(), "users: {}\n").unwrap();
    let from = env.p("authelia_users.yml");
    fs::write(&from, AUTHELIA).unwrap();
    ok(&env.run(&["migrate-from-authelia", "--from", from.to_str().unwrap()]));
    assert_eq!(fs::read_to_string(env.users()).unwrap(), AUTHELIA);
}

#[test]
fn migrate_refuses_bad_sources_and_symlinked_targets() {
    let env = Env::new();
    let from = env.p("authelia_users.yml");
    // Missing source.
    let err = failed(&env.run(&["migrate-from-authelia", "--from", from.to_str().unwrap()]));
    assert!(err.contains("authelia_users.yml"), "{err}");
    // Unparsable source.
    fs::write(&from, "users:\n  admin:\n    displayname: x\n").unwrap();
    let err = failed(&env.run(&["migrate-from-authelia", "--from", from.to_str().unwrap()]));
    assert!(err.contains("nothing was imported"), "{err}");
    // Source without users.
    fs::write(&from, "users: {}\n").unwrap();
    let err = failed(&env.run(&["migrate-from-authelia", "--from", from.to_str().unwrap()]));
    assert!(err.contains("no users"), "{err}");
    assert!(!env.users().exists());

    // A symlinked target is never written through.
    fs::write(&from, AUTHELIA).unwrap();
    let elsewhere = env.p("elsewhere.yml");
    fs::write(&elsewhere, "").unwrap();
    std::os::unix::fs::symlink(&elsewhere, env.users()).unwrap();
    let err = failed(&env.run(&["migrate-from-authelia", "--from", from.to_str().unwrap()]));
    assert!(err.contains("symbolic link"), "{err}");
    assert_eq!(fs::read_to_string(&elsewhere).unwrap(), "");
}

/// Root-run provisioning (postinst) leaves files the daemon's user owns: everything it
/// creates takes the owner of its directory. As root the test gives the state directory
/// to `nobody`; otherwise the ids already match and it checks the same invariant.
#[test]
fn created_files_take_the_owner_of_their_directory() {
    let env = Env::new();
    let root = fs::metadata("/proc/self").unwrap().uid() == 0;
    if root {
        std::os::unix::fs::chown(env.p("state"), Some(65534), Some(65534)).unwrap();
    }
    ok(&env.provision());
    let dir = fs::metadata(env.p("state")).unwrap();
    for p in [
        env.keys(),
        env.keys().join("hmac.key"),
        env.keys().join("storage.key"),
        env.users(),
        env.p("state/users_database.yml.lock"),
    ] {
        let m = fs::metadata(&p).unwrap();
        assert_eq!(
            (m.uid(), m.gid()),
            (dir.uid(), dir.gid()),
            "{}",
            p.display()
        );
        if root {
            assert_eq!(m.uid(), 65534, "{}", p.display());
        }
    }
}

#[test]
fn provision_and_migrate_have_help_for_man_pages() {
    for sub in ["provision", "migrate-from-authelia"] {
        let out = Command::new(AUTHCTL)
            .args([sub, "--help"])
            .output()
            .unwrap();
        let text = ok(&out);
        assert!(text.contains("Usage:"), "{text}");
    }
    let mut child = Command::new(AUTHCTL)
        .arg("--help")
        .stdout(Stdio::piped())
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"").unwrap();
    let text = ok(&child.wait_with_output().unwrap());
    assert!(
        text.contains("provision") && text.contains("migrate-from-authelia"),
        "{text}"
    );
}
