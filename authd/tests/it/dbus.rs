//! The D-Bus API on a private, real dbus-daemon: every method, its errors, the
//! UsersChanged signal (after a D-Bus call and after a halos-authctl edit), the committed
//! introspection, denial of non-root callers without polkit, and a daemon that keeps
//! serving HTTP when the bus is missing.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use authd::users::UsersDb;
use zbus::export::futures_core::Stream;
use zbus::zvariant::Value;
use zbus::{Connection, MatchRule, MessageStream};

use crate::common::{Daemon, authctl};

const PW: &str = "correct horse";
const USERS_IFACE: &str = "org.halos.Auth1.Users";
const CLIENTS_IFACE: &str = "org.halos.Auth1.Clients";
const DEST: &str = "org.halos.Auth1";
const PATH: &str = "/org/halos/Auth1";
const NOBODY: &str = "65534";

type UserRecord = (String, String, String, Vec<String>, bool);

/// A private dbus-daemon (Debian's) that anyone on the machine may connect to, so
/// clients can run as `nobody`. Killed on drop.
struct PrivateBus {
    child: Child,
    address: String,
    _dir: tempfile::TempDir,
}

impl Drop for PrivateBus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl PrivateBus {
    fn start() -> PrivateBus {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let conf = dir.path().join("bus.conf");
        std::fs::write(
            &conf,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={}/bus</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"#,
                dir.path().display()
            ),
        )
        .unwrap();
        let mut child = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", conf.display()))
            .args(["--nofork", "--print-address=1"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("dbus-daemon (Debian package dbus-daemon) must be installed");
        // The printed address is the readiness signal.
        let mut address = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut address)
            .unwrap();
        let address = address.trim().to_string();
        assert!(
            address.starts_with("unix:"),
            "dbus-daemon printed {address:?}"
        );
        PrivateBus {
            child,
            address,
            _dir: dir,
        }
    }

    async fn connect(&self) -> Connection {
        zbus::connection::Builder::address(self.address.as_str())
            .unwrap()
            .build()
            .await
            .unwrap()
    }
}

fn hash(pw: &str) -> String {
    let cfg = authd::config::Argon2Config {
        memory: 1024,
        iterations: 1,
        parallelism: 1,
        ..Default::default()
    };
    authd::users::hash_password(pw.as_bytes(), &cfg).unwrap()
}

fn users_yaml() -> String {
    let h = hash(PW);
    format!(
        "# boat users\nusers:\n  admin:\n    displayname: Skipper\n    email: admin@halos.local\n    password: '{h}'\n    groups: [admins, users]\n    phone: '+358 40 1'   # unknown keys stay\n  crew:\n    displayname: Crew\n    email: crew@halos.local\n    password: '{h}'\n    groups: [users, deck]\n"
    )
}

const SITE: &str = r#"
session:
  cookies:
    - domain: halos.local
      authelia_url: https://halos.local/sso
identity_providers:
  oidc:
    clients:
      - client_id: grafana
        client_name: Grafana
        public: true
        redirect_uris: [https://grafana.halos.local/login/generic_oauth]
"#;

fn start_daemon(bus: &PrivateBus) -> Daemon {
    Daemon::start_customized(&users_yaml(), SITE, "", |cmd| {
        cmd.args(["--dbus", "session"])
            .env("DBUS_SESSION_BUS_ADDRESS", &bus.address);
    })
}

async fn call<B>(
    conn: &Connection,
    iface: &str,
    method: &str,
    body: &B,
) -> zbus::Result<zbus::Message>
where
    B: serde::Serialize + zbus::zvariant::DynamicType,
{
    conn.call_method(Some(DEST), PATH, Some(iface), method, body)
        .await
}

/// The D-Bus error name of a failed call.
fn error_name<T: std::fmt::Debug>(r: zbus::Result<T>) -> String {
    match r {
        Err(zbus::Error::MethodError(name, _, _)) => name.to_string(),
        other => panic!("expected a D-Bus error, got {other:?}"),
    }
}

async fn list_users(conn: &Connection) -> Vec<UserRecord> {
    call(conn, USERS_IFACE, "ListUsers", &())
        .await
        .unwrap()
        .body()
        .deserialize()
        .unwrap()
}

async fn get_user(conn: &Connection, name: &str) -> zbus::Result<UserRecord> {
    let m = call(conn, USERS_IFACE, "GetUser", &(name,)).await?;
    m.body().deserialize::<UserRecord>()
}

/// Waits (bounded) for the next UsersChanged signal.
async fn next_signal(stream: &mut MessageStream, what: &str) {
    let next = std::future::poll_fn(|cx| Pin::new(&mut *stream).poll_next(cx));
    match tokio::time::timeout(Duration::from_secs(5), next).await {
        Ok(Some(Ok(m))) => {
            assert_eq!(
                m.header().member().map(|m| m.to_string()).as_deref(),
                Some("UsersChanged")
            );
        }
        other => panic!("no UsersChanged after {what}: {other:?}"),
    }
}

/// No signal is pending: everything the previous step caused was consumed.
async fn no_signal(stream: &mut MessageStream, what: &str) {
    let next = std::future::poll_fn(|cx| Pin::new(&mut *stream).poll_next(cx));
    if let Ok(m) = tokio::time::timeout(Duration::from_millis(300), next).await {
        panic!("unexpected signal after {what}: {m:?}");
    }
}

fn file_db(d: &Daemon) -> UsersDb {
    UsersDb::parse(
        &std::fs::read_to_string(d.path("users_database.yml")).unwrap(),
        "users",
    )
    .unwrap()
}

fn verifies(d: &Daemon, user: &str, pw: &str) -> bool {
    let db = file_db(d);
    let mut blocks = Vec::new();
    db.get(user)
        .unwrap()
        .digest
        .verify(pw.as_bytes(), &mut blocks)
}

fn login(d: &Daemon, user: &str, pw: &str) -> crate::common::HttpResponse {
    d.req(
        "POST",
        "/api/firstfactor",
        &[
            ("Content-Type", "application/json"),
            ("X-Forwarded-Host", "halos.local"),
            ("X-Forwarded-Proto", "https"),
        ],
        &serde_json::json!({"username": user, "password": pw, "keepMeLoggedIn": false}).to_string(),
    )
}

fn dict(pairs: &[(&str, Value<'static>)]) -> HashMap<String, Value<'static>> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_method_its_errors_and_users_changed() {
    let bus = PrivateBus::start();
    let d = start_daemon(&bus);
    let conn = bus.connect().await;
    let rule = MatchRule::builder()
        .msg_type(zbus::message::Type::Signal)
        .interface(USERS_IFACE)
        .unwrap()
        .member("UsersChanged")
        .unwrap()
        .build();
    let mut signals = MessageStream::for_match_rule(rule, &conn, None)
        .await
        .unwrap();

    // Reads.
    assert_eq!(
        list_users(&conn).await,
        vec![
            (
                "admin".into(),
                "Skipper".into(),
                "admin@halos.local".into(),
                vec!["admins".into(), "users".into()],
                false
            ),
            (
                "crew".into(),
                "Crew".into(),
                "crew@halos.local".into(),
                vec!["users".into(), "deck".into()],
                false
            ),
        ]
    );
    assert_eq!(get_user(&conn, "crew").await.unwrap().1, "Crew");
    assert_eq!(
        error_name(get_user(&conn, "ghost").await),
        "org.halos.Auth1.Error.NotFound"
    );
    let groups: Vec<String> = call(&conn, USERS_IFACE, "ListGroups", &())
        .await
        .unwrap()
        .body()
        .deserialize()
        .unwrap();
    assert_eq!(groups, ["admins", "deck", "guests", "users"]);

    // CreateUser: hashed on the daemon, written to the file, signalled.
    call(
        &conn,
        USERS_IFACE,
        "CreateUser",
        &(
            "mary",
            "Mary O'Hara",
            "mary@halos.local",
            vec!["users"],
            "first pw",
        ),
    )
    .await
    .unwrap();
    next_signal(&mut signals, "CreateUser").await;
    no_signal(
        &mut signals,
        "CreateUser (the watcher must not signal twice)",
    )
    .await;
    assert_eq!(
        get_user(&conn, "mary").await.unwrap(),
        (
            "mary".into(),
            "Mary O'Hara".into(),
            "mary@halos.local".into(),
            vec!["users".into()],
            false
        )
    );
    assert!(verifies(&d, "mary", "first pw"));
    let text = std::fs::read_to_string(d.path("users_database.yml")).unwrap();
    assert!(
        text.contains("# unknown keys stay") && text.contains("# boat users"),
        "{text}"
    );
    assert_eq!(login(&d, "mary", "first pw").status, 200);

    for (args, expected) in [
        (
            ("mary", "M", "m@halos.local", vec!["users"], "pw"),
            "Exists",
        ),
        (("bad name", "B", "b@halos.local", vec![], "pw"), "Invalid"),
        (("bob", "B", "not-an-email", vec![], "pw"), "Invalid"),
        (("bob", "B", "b@halos.local", vec!["a,b"], "pw"), "Invalid"),
        (("bob", "B", "b@halos.local", vec![], ""), "Invalid"),
    ] {
        assert_eq!(
            error_name(call(&conn, USERS_IFACE, "CreateUser", &args).await),
            format!("org.halos.Auth1.Error.{expected}"),
            "{args:?}"
        );
    }

    // UpdateUser.
    let changes = dict(&[
        ("displayname", Value::from("Mary")),
        ("email", Value::from("mary@boat.halos.local")),
        ("groups", Value::from(vec!["admins", "users"])),
        ("disabled", Value::from(false)),
    ]);
    call(&conn, USERS_IFACE, "UpdateUser", &("mary", changes))
        .await
        .unwrap();
    next_signal(&mut signals, "UpdateUser").await;
    assert_eq!(
        get_user(&conn, "mary").await.unwrap(),
        (
            "mary".into(),
            "Mary".into(),
            "mary@boat.halos.local".into(),
            vec!["admins".into(), "users".into()],
            false
        )
    );
    for (name, changes, expected) in [
        (
            "ghost",
            dict(&[("disabled", Value::from(true))]),
            "NotFound",
        ),
        ("mary", dict(&[("password", Value::from("x"))]), "Invalid"),
        ("mary", dict(&[("disabled", Value::from("yes"))]), "Invalid"),
        (
            "mary",
            dict(&[("groups", Value::from("admins"))]),
            "Invalid",
        ),
        ("mary", dict(&[("email", Value::from("nope"))]), "Invalid"),
    ] {
        assert_eq!(
            error_name(call(&conn, USERS_IFACE, "UpdateUser", &(name, changes)).await),
            format!("org.halos.Auth1.Error.{expected}"),
            "{name}"
        );
    }

    // SetPassword: the old password stops working at once, the new one works.
    call(&conn, USERS_IFACE, "SetPassword", &("mary", "second pw"))
        .await
        .unwrap();
    next_signal(&mut signals, "SetPassword").await;
    assert!(verifies(&d, "mary", "second pw"));
    assert_eq!(login(&d, "mary", "first pw").status, 401);
    assert_eq!(
        error_name(call(&conn, USERS_IFACE, "SetPassword", &("ghost", "x")).await),
        "org.halos.Auth1.Error.NotFound"
    );
    assert_eq!(
        error_name(call(&conn, USERS_IFACE, "SetPassword", &("mary", "")).await),
        "org.halos.Auth1.Error.Invalid"
    );

    // RevokeSessions ends real sessions.
    assert_eq!(login(&d, "crew", PW).status, 200);
    assert_eq!(login(&d, "crew", PW).status, 200);
    let n: u32 = call(&conn, USERS_IFACE, "RevokeSessions", &("crew",))
        .await
        .unwrap()
        .body()
        .deserialize()
        .unwrap();
    assert_eq!(n, 2);
    let n: u32 = call(&conn, USERS_IFACE, "RevokeSessions", &("crew",))
        .await
        .unwrap()
        .body()
        .deserialize()
        .unwrap();
    assert_eq!(n, 0);
    assert_eq!(
        error_name(call(&conn, USERS_IFACE, "RevokeSessions", &("ghost",)).await),
        "org.halos.Auth1.Error.NotFound"
    );

    // IssueLoginCode: a real single-use code for an enabled user, redeemed at the portal.
    let code: String = call(&conn, USERS_IFACE, "IssueLoginCode", &("crew",))
        .await
        .unwrap()
        .body()
        .deserialize()
        .unwrap();
    assert_eq!(code.len(), 17, "{code}");
    let redeem = |code: &str| {
        d.req(
            "POST",
            "/api/logincode",
            &[
                ("Content-Type", "application/json"),
                ("X-Forwarded-Host", "halos.local"),
                ("X-Forwarded-Proto", "https"),
            ],
            &serde_json::json!({ "code": code }).to_string(),
        )
    };
    let r = redeem(&code);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.cookie("halos_session").is_some());
    assert_eq!(redeem(&code).status, 401, "a code works once");
    assert_eq!(
        error_name(call(&conn, USERS_IFACE, "IssueLoginCode", &("ghost",)).await),
        "org.halos.Auth1.Error.NotFound"
    );

    // DeleteUser, and the last enabled admin is protected.
    call(&conn, USERS_IFACE, "DeleteUser", &("mary",))
        .await
        .unwrap();
    next_signal(&mut signals, "DeleteUser").await;
    assert!(file_db(&d).get("mary").is_none());
    assert_eq!(
        error_name(call(&conn, USERS_IFACE, "DeleteUser", &("mary",)).await),
        "org.halos.Auth1.Error.NotFound"
    );
    assert_eq!(
        error_name(call(&conn, USERS_IFACE, "DeleteUser", &("admin",)).await),
        "org.halos.Auth1.Error.Invalid"
    );
    assert_eq!(
        error_name(
            call(
                &conn,
                USERS_IFACE,
                "UpdateUser",
                &("admin", dict(&[("disabled", Value::from(true))]))
            )
            .await
        ),
        "org.halos.Auth1.Error.Invalid"
    );
    assert!(file_db(&d).active("admin").is_some());

    // A change made by another tool (halos-authctl on the same file) is signalled too.
    let cfg = d.config.to_str().unwrap().to_string();
    let out = authctl(
        &[
            "-c",
            &cfg,
            "user",
            "add",
            "deckhand",
            "--email",
            "deck@halos.local",
            "--password-stdin",
        ],
        "deck pw\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    next_signal(&mut signals, "halos-authctl user add").await;
    assert_eq!(
        get_user(&conn, "deckhand").await.unwrap().2,
        "deck@halos.local"
    );

    // Clients.
    let clients: Vec<(String, String, Vec<String>)> =
        call(&conn, CLIENTS_IFACE, "ListClients", &())
            .await
            .unwrap()
            .body()
            .deserialize()
            .unwrap();
    assert_eq!(
        clients,
        vec![(
            "grafana".into(),
            "Grafana".into(),
            vec!["https://grafana.halos.local/login/generic_oauth".into()]
        )]
    );
    std::fs::write(
        d.path("oidc-clients.d").join("homarr.yml"),
        "client_id: homarr\nclient_name: Homarr\npublic: true\nredirect_uris: [https://homarr.halos.local/api/auth/callback/oidc]\n",
    )
    .unwrap();
    call(&conn, CLIENTS_IFACE, "Reload", &()).await.unwrap();
    let clients: Vec<(String, String, Vec<String>)> =
        call(&conn, CLIENTS_IFACE, "ListClients", &())
            .await
            .unwrap()
            .body()
            .deserialize()
            .unwrap();
    let ids: Vec<&str> = clients.iter().map(|c| c.0.as_str()).collect();
    assert_eq!(ids, ["grafana", "homarr"]);
}

/// The interface elements of an introspection document, whitespace-normalized.
fn interfaces(xml: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find("<interface name=\"org.halos.Auth1.") {
        let end = rest[start..].find("</interface>").unwrap() + start + "</interface>".len();
        let block: String = rest[start..end]
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("\n");
        out.push(block);
        rest = &rest[end..];
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_introspection_matches_the_code() {
    let bus = PrivateBus::start();
    let _d = start_daemon(&bus);
    let conn = bus.connect().await;
    let live: String = conn
        .call_method(
            Some(DEST),
            PATH,
            Some("org.freedesktop.DBus.Introspectable"),
            "Introspect",
            &(),
        )
        .await
        .unwrap()
        .body()
        .deserialize()
        .unwrap();
    let committed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/dbus/org.halos.Auth1.xml"
    ))
    .unwrap();
    let live_ifaces = interfaces(&live);
    assert_eq!(live_ifaces.len(), 2, "{live}");
    assert_eq!(
        interfaces(&committed),
        live_ifaces,
        "authd/dbus/org.halos.Auth1.xml is out of date; the daemon says:\n{live}"
    );
}

fn gdbus_as(
    uid: Option<&str>,
    bus: &PrivateBus,
    method: &str,
    args: &[&str],
) -> std::process::Output {
    let mut cmd = match uid {
        Some(uid) => {
            let mut c = Command::new("setpriv");
            c.args([
                &format!("--reuid={uid}"),
                &format!("--regid={uid}"),
                "--clear-groups",
                "gdbus",
            ]);
            c
        }
        None => Command::new("gdbus"),
    };
    cmd.args([
        "call",
        "--address",
        &bus.address,
        "--dest",
        DEST,
        "--object-path",
        PATH,
        "--method",
        method,
    ])
    .args(args)
    .env("HOME", "/")
    .output()
    .expect("gdbus (Debian package libglib2.0-bin) and setpriv must be installed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_root_callers_are_denied_without_polkit() {
    let bus = PrivateBus::start();
    let d = start_daemon(&bus);
    let before = std::fs::read_to_string(d.path("users_database.yml")).unwrap();

    // Root, through the same tool, gets an answer: the bus and the tool work.
    let out = gdbus_as(None, &bus, "org.halos.Auth1.Users.ListGroups", &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("'admins'"));

    // nobody: no polkit on this bus, so every call is denied, reads included.
    for (method, args) in [
        ("org.halos.Auth1.Users.ListUsers", vec![]),
        ("org.halos.Auth1.Users.GetUser", vec!["admin"]),
        (
            "org.halos.Auth1.Users.CreateUser",
            vec!["eve", "Eve", "eve@halos.local", "['admins']", "pw"],
        ),
        ("org.halos.Auth1.Users.SetPassword", vec!["admin", "owned"]),
        ("org.halos.Auth1.Users.DeleteUser", vec!["crew"]),
        ("org.halos.Auth1.Users.RevokeSessions", vec!["admin"]),
        ("org.halos.Auth1.Users.IssueLoginCode", vec!["admin"]),
        ("org.halos.Auth1.Clients.ListClients", vec![]),
        ("org.halos.Auth1.Clients.Reload", vec![]),
    ] {
        let out = gdbus_as(Some(NOBODY), &bus, method, &args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{method} succeeded as nobody");
        assert!(
            err.contains("org.halos.Auth1.Error.Denied"),
            "{method}: {err}"
        );
    }
    assert_eq!(
        std::fs::read_to_string(d.path("users_database.yml")).unwrap(),
        before,
        "a denied call changed the users file"
    );
}

#[test]
fn http_keeps_serving_when_the_bus_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let address = format!("unix:path={}/no-bus", dir.path().display());
    let d = Daemon::start_customized(&users_yaml(), "", "", |cmd| {
        cmd.args(["--dbus", "session"])
            .env("DBUS_SESSION_BUS_ADDRESS", &address);
    });
    assert_eq!(d.get("/api/health").status, 200);
    let log = d.log.lock().unwrap().join("\n");
    assert!(log.contains("D-Bus API unavailable"), "{log}");
}
