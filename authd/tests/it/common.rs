//! Shared helpers: start the real daemon, talk HTTP/1.1 to it, run the CLI.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub const DAEMON: &str = env!("CARGO_BIN_EXE_halos-authd");

/// `halos-authctl` lives in the sibling crate; it is built by `cargo test --workspace`.
pub fn authctl_path() -> PathBuf {
    let daemon = Path::new(DAEMON);
    daemon.with_file_name("halos-authctl")
}

/// Runs halos-authctl with `args`, feeding `stdin`.
pub fn authctl(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(authctl_path())
        .args(args)
        .env_remove("AUTHD_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("halos-authctl must be built (cargo test --workspace)");
    // A command that fails early (usage error) closes stdin: that is not a test failure.
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    child.wait_with_output().unwrap()
}

/// A running daemon, killed on drop.
pub struct Daemon {
    pub child: Child,
    pub config: PathBuf,
    pub addr: SocketAddr,
    pub prefix: String,
    /// State directory; kept alive (and removed) with the daemon.
    pub _dir: tempfile::TempDir,
    /// Every line the daemon wrote to stderr (its log).
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    /// Starts the daemon with `extra_yaml` appended to a config that listens on port 0 and
    /// keeps all state in a new temp dir. `users_yaml` becomes the users file. Hashing
    /// uses cheap argon2 parameters so tests do not spend seconds per password.
    pub fn start(users_yaml: &str, extra_yaml: &str) -> Daemon {
        Self::start_with_server(users_yaml, extra_yaml, "")
    }

    /// As [`Daemon::start`], with `server_yaml` lines added to the `server:` section.
    pub fn start_with_server(users_yaml: &str, extra_yaml: &str, server_yaml: &str) -> Daemon {
        Self::start_customized(users_yaml, extra_yaml, server_yaml, |_| {})
    }

    /// As [`Daemon::start_with_server`]; `customize` adds arguments or environment.
    pub fn start_customized(
        users_yaml: &str,
        extra_yaml: &str,
        server_yaml: &str,
        customize: impl FnOnce(&mut Command),
    ) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let users = dir.path().join("users_database.yml");
        std::fs::write(&users, users_yaml).unwrap();
        let cfg = dir.path().join("authd.yml");
        let clients_dir = dir.path().join("oidc-clients.d");
        std::fs::create_dir_all(&clients_dir).unwrap();
        // The clients dir goes into the test's own identity_providers section if it has one.
        let oidc_head = "identity_providers:\n  oidc:\n";
        let (oidc_base, extra) = if extra_yaml.contains(oidc_head) {
            (
                String::new(),
                extra_yaml.replace(
                    oidc_head,
                    &format!("{oidc_head}    clients_dir: {}\n", clients_dir.display()),
                ),
            )
        } else {
            (
                format!("{oidc_head}    clients_dir: {}\n", clients_dir.display()),
                extra_yaml.to_string(),
            )
        };
        std::fs::write(
            &cfg,
            format!(
                "server:\n  address: tcp://127.0.0.1:0/sso\n{server_yaml}authentication_backend:\n  file:\n    path: {}\n    password:\n      argon2: {{memory: 1024, iterations: 1, parallelism: 1}}\nstorage:\n  local:\n    path: {}\n{oidc_base}hostnames_file: {}\n{extra}",
                users.display(),
                dir.path().join("state.sqlite").display(),
                dir.path().join("hostnames.conf").display(),
            ),
        )
        .unwrap();
        let mut cmd = Command::new(DAEMON);
        cmd.arg("--config").arg(&cfg).stdout(Stdio::null());
        customize(&mut cmd);
        Self::spawn(&mut cmd, dir)
    }

    /// Stops the daemon and starts it again on the same configuration and state.
    pub fn restart(mut self) -> Daemon {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let cfg = self.config.clone();
        let dir = std::mem::replace(&mut self._dir, tempfile::tempdir().unwrap());
        Self::spawn(
            Command::new(DAEMON)
                .arg("--config")
                .arg(&cfg)
                .stdout(Stdio::null()),
            dir,
        )
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self._dir.path().join(name)
    }

    /// A request to `path` (under the prefix) with `headers`.
    pub fn req(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> HttpResponse {
        http(
            self.addr,
            method,
            &format!("{}{path}", self.prefix),
            headers,
            body,
        )
    }

    pub fn spawn(cmd: &mut Command, dir: tempfile::TempDir) -> Daemon {
        let config = cmd
            .get_args()
            .skip_while(|a| *a != "--config")
            .nth(1)
            .map(PathBuf::from)
            .unwrap_or_default();
        let mut child = cmd
            .env_remove("AUTHD_CONFIG")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log_writer = log.clone();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                log_writer.lock().unwrap().push(line.clone());
                if !sent && line.starts_with("halos-authd ready: listening on tcp://") {
                    let _ = tx.send(Ok(line.clone()));
                    sent = true;
                }
                if std::env::var_os("HALOS_TEST_LOG").is_some() {
                    eprintln!("[daemon] {line}");
                }
                if !sent && (line.contains("halos-authd:") || line.contains("invalid")) {
                    let _ = tx.send(Err(line.clone()));
                }
            }
        });
        // The ready line is the readiness signal; no sleeping.
        let line = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(Ok(l)) => l,
            Ok(Err(e)) => panic!("daemon failed to start: {e}"),
            Err(_) => panic!("daemon did not become ready"),
        };
        let rest = line.trim_start_matches("halos-authd ready: listening on tcp://");
        let (addr, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        Daemon {
            child,
            config,
            addr: addr.parse().unwrap(),
            prefix: prefix.to_string(),
            _dir: dir,
            log,
        }
    }

    /// How many log lines so far contain `text`.
    pub fn log_count(&self, text: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(text))
            .count()
    }

    /// The log so far, one string. (Lines arrive asynchronously; a request answered
    /// before this call has had its lines written first: the daemon logs before replying.)
    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    pub fn get(&self, path: &str) -> HttpResponse {
        http(self.addr, "GET", &format!("{}{path}", self.prefix), &[], "")
    }
}

#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    /// The `name=value` part of the first `Set-Cookie` for `name`.
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("set-cookie"))
            .map(|(_, v)| v.split(';').next().unwrap_or("").to_string())
            .find(|c| c.starts_with(&format!("{name}=")))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A minimal blocking HTTP/1.1 client (Connection: close), enough for tests.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> HttpResponse {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    HttpResponse {
        status,
        headers,
        body: body.to_string(),
    }
}

/// A real `redis-server` on a free port with its own temp dir (append-only file, so a
/// restart keeps the data). Readiness: its "Ready to accept connections" line, then PING.
pub struct TestRedis {
    child: Option<Child>,
    dir: tempfile::TempDir,
    pub port: u16,
}

impl TestRedis {
    pub fn start() -> TestRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let mut r = TestRedis {
            child: None,
            dir: tempfile::tempdir().unwrap(),
            port,
        };
        r.restart();
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Starts it (again) on the same port and data.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let mut child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "yes"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::piped())
            .spawn()
            .expect("redis-server (apt install redis-server)");
        let mut log = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        loop {
            line.clear();
            assert!(
                log.read_line(&mut line).unwrap() > 0,
                "redis-server exited before it was ready"
            );
            if line.contains("Ready to accept connections") {
                break;
            }
        }
        std::thread::spawn(move || std::io::copy(&mut log, &mut std::io::sink()));
        assert_eq!(self.command("PING"), "+PONG");
        self.child = Some(child);
    }

    /// Shuts it down cleanly (the append-only file is complete) and waits for the exit.
    pub fn stop(&mut self) {
        let mut child = self.child.take().expect("running");
        let _ = self.command("SHUTDOWN");
        child.wait().unwrap();
    }

    /// One inline command; the first line of the answer.
    pub fn command(&self, cmd: &str) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(format!("{cmd}\r\n").as_bytes()).unwrap();
        let mut line = String::new();
        let _ = BufReader::new(s).read_line(&mut line);
        line.trim_end().to_string()
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
