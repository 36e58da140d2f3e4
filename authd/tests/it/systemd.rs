//! The systemd notify protocol, spoken to a socket we own: READY=1 only once listening,
//! WATCHDOG=1 pings, RELOADING=1 then READY=1 on SIGHUP, STOPPING=1 on SIGTERM.

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::{DAEMON, Daemon};

fn next(sock: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).expect("a notification");
    String::from_utf8_lossy(&buf[..n]).to_string()
}

fn wait_for(sock: &UnixDatagram, what: &str) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        let m = next(sock);
        let done = m.lines().any(|l| l == what);
        seen.push(m);
        if done {
            return seen;
        }
    }
}

#[test]
fn notify_protocol() {
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let cfg = dir.path().join("authd.yml");
    std::fs::write(
        &cfg,
        format!(
            "server:\n  address: tcp://127.0.0.1:0/sso\nauthentication_backend:\n  file:\n    path: {0}/users.yml\nstorage:\n  local:\n    path: {0}/state.sqlite\nhostnames_file: {0}/hostnames.conf\nidentity_providers:\n  oidc:\n    clients_dir: {0}/clients\n",
            dir.path().display()
        ),
    )
    .unwrap();
    // systemd sets WATCHDOG_PID to the service's pid: `exec` keeps the shell's.
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("WATCHDOG_PID=$$ exec \"$0\" --config \"$1\"")
        .arg(DAEMON)
        .arg(&cfg)
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "200000")
        .stdout(Stdio::null());
    let d = Daemon::spawn(&mut cmd, tempfile::tempdir().unwrap());
    // READY=1 arrives, and by then the daemon answers.
    wait_for(&sock, "READY=1");
    assert_eq!(d.get("/api/health").status, 200);
    // Watchdog pings at half the interval.
    wait_for(&sock, "WATCHDOG=1");
    wait_for(&sock, "WATCHDOG=1");
    // SIGHUP: RELOADING=1, then READY=1 again.
    let pid = d.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    let seen = wait_for(&sock, "READY=1");
    assert!(
        seen.iter().any(|m| m.lines().any(|l| l == "RELOADING=1")),
        "{seen:?}"
    );
    // SIGTERM: STOPPING=1.
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    wait_for(&sock, "STOPPING=1");
}
