#!/usr/bin/env python3
"""halos-auth benchmark (DESIGN §14). Run through `bench/run.sh`, which builds the binaries.

Measures, in one run on this machine, against a hello-world axum baseline built from the same
workspace with the same profile:

* forward auth (valid session 200, no cookie 302) and a minimal cookie->HashMap verifier;
* nginx `auth_request` -> authd, vs the same nginx -> the minimal verifier, vs nginx alone;
* OIDC authorization+token loop and userinfo;
* Redis storage forward auth (when this build supports `storage.redis`);
* memory (VmRSS/VmHWM) idle, under load, during a flood of concurrent logins;
* exec -> ready, snippet write -> client usable, SIGHUP reload of 100 snippets under load;
* user-space instructions per request (callgrind, difference of two request counts).

Load comes from wrk in a second process; servers are pinned to one CPU, wrk to another.
Only the standard library is used (Debian's python3 is enough).
"""
from __future__ import annotations

import argparse
import base64
import datetime
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOST = "halos.test"
APP_HOST = "app.halos.test"
PREFIX = "/sso"
PASSWORD = "bench password 1"
USERS = 1000
SNIPPETS = 100
READY_RE = re.compile(r"halos-authd ready: listening on tcp://(127\.0\.0\.1:\d+)")

# Traefik sends these with every forward-auth sub-request (plus the browser's cookies).
FORWARDED = {
    "X-Forwarded-Method": "GET",
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": APP_HOST,
    "X-Forwarded-Uri": "/dashboard?x=1",
    "X-Forwarded-For": "192.0.2.10",
}
PORTAL_HEADERS = {"X-Forwarded-Host": HOST, "X-Forwarded-Proto": "https"}


T0 = time.monotonic()


def log(msg: str) -> None:
    if msg.startswith("==>"):
        msg = f"==> [{time.monotonic() - T0:6.1f} s]{msg[3:]}"
    print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------
# processes
# ------------------------------------------------------------------------------------------

def proc_status(pid: int) -> dict:
    """VmRSS / VmHWM in KiB, and VmRSS split into RssAnon (private memory) and RssFile
    (mapped files: mostly the executable's code, shared and reclaimable)."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:", "RssAnon:", "RssFile:")):
                    k, v = line.split(":", 1)
                    out[k] = int(v.split()[0])
    except OSError:
        pass
    return out


class RssSampler:
    """Peak VmRSS of a process while running (the kernel's VmHWM covers the whole life)."""

    def __init__(self, pid: int, every: float = 0.1):
        self.pid, self.every, self.peak = pid, every, 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, proc_status(self.pid).get("VmRSS", 0))
            self._stop.wait(self.every)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()


class Notify:
    """Our own NOTIFY_SOCKET: the daemon's READY=1 / RELOADING=1 datagrams."""

    def __init__(self, path: str):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)

    def wait(self, word: str, timeout: float = 30.0) -> float:
        """Blocks until a datagram containing `word` arrives; returns the monotonic time."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {word} from the daemon")
            self.sock.settimeout(left)
            data = self.sock.recv(4096).decode(errors="replace")
            if word in data.split("\n"):
                return time.monotonic()

    def close(self):
        self.sock.close()
        try:
            os.unlink(self.path)
        except OSError:
            pass


def pinned(cpu: int | None, cmd: list[str]) -> list[str]:
    return cmd if cpu is None else ["taskset", "-c", str(cpu)] + cmd


def start_server(cmd: list[str], cpu: int | None, env=None) -> tuple[subprocess.Popen, str, str]:
    """Starts a bench server; returns it, its address and its stderr's first line."""
    p = subprocess.Popen(pinned(cpu, cmd), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    line = p.stdout.readline().strip()
    if not line.startswith("ready "):
        raise RuntimeError(f"{cmd[0]} did not start: {line} {p.stderr.read() if p.poll() is not None else ''}")
    return p, line.split()[1], ""


def stop(p: subprocess.Popen | None) -> None:
    if p and p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


# ------------------------------------------------------------------------------------------
# HTTP (raw sockets, keep-alive)
# ------------------------------------------------------------------------------------------

def build_request(method: str, path: str, headers: dict, body: bytes = b"", host: str = "127.0.0.1") -> bytes:
    h = {"Host": host, **headers}
    if body or method == "POST":
        h["Content-Length"] = str(len(body))
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in h.items()) + "\r\n"
    return head.encode() + body


class Conn:
    def __init__(self, addr: str, timeout: float = 30.0):
        host, port = addr.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self.buf = b""

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed")
        self.buf += chunk

    def roundtrip(self, raw: bytes) -> tuple[int, dict, bytes]:
        self.sock.sendall(raw)
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers: dict = {}
        for line in lines[1:]:
            k, v = line.split(":", 1)
            headers.setdefault(k.strip().lower(), []).append(v.strip())
        n = int(headers.get("content-length", ["0"])[0])
        while len(self.buf) < n:
            self._fill()
        body, self.buf = self.buf[:n], self.buf[n:]
        return status, headers, body

    def close(self):
        self.sock.close()


def request(addr: str, method: str, path: str, headers: dict, body: bytes = b"") -> tuple[int, dict, bytes]:
    c = Conn(addr)
    try:
        return c.roundtrip(build_request(method, path, {**headers, "Connection": "close"}, body))
    finally:
        c.close()


# ------------------------------------------------------------------------------------------
# wrk
# ------------------------------------------------------------------------------------------

def parse_duration_us(s: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", s)
    if not m:
        raise ValueError(s)
    v, unit = float(m.group(1)), m.group(2)
    return v * {"us": 1, "ms": 1e3, "s": 1e6, "m": 60e6}[unit]


def wrk(cfg, url: str, headers: dict, conns: int, duration: float, script: str | None = None) -> dict:
    cmd = ["wrk", "-t1", f"-c{conns}", f"-d{max(1, round(duration))}s", "--latency", "--timeout", "5s"]
    for k, v in headers.items():
        cmd += ["-H", f"{k}: {v}"]
    if script:
        cmd += ["-s", script]
    cmd.append(url)
    out = subprocess.run(pinned(cfg.load_cpu, cmd), capture_output=True, text=True, timeout=duration + 60).stdout
    res = {"cmd": " ".join(cmd)}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not m:
        raise RuntimeError(f"wrk printed no rate:\n{out}")
    res["rps"] = float(m.group(1))
    m = re.search(r"(\d+) requests in", out)
    res["requests"] = int(m.group(1)) if m else 0
    for pct in ("50", "99"):
        m = re.search(rf"^\s+{pct}(?:\.000)?%\s+(\S+)", out, re.M)
        res[f"p{pct}_us"] = parse_duration_us(m.group(1)) if m else None
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errors += sum(int(x) for x in m.groups())
    res["errors"] = errors
    m = re.search(r"^OIDC (.*)$", out, re.M)
    if m:
        res["oidc"] = dict(kv.split("=") for kv in m.group(1).split())
    return res


def run_scenarios(cfg, scenarios: list[dict], results: dict, rounds: int | None = None) -> None:
    """Runs every scenario `rounds` times (default `cfg.rounds`), interleaved (so a noisy
    neighbour hits all of them alike), after a short warm-up each; records median rate and
    latencies."""
    rounds = rounds or cfg.rounds
    runs: dict = {s["name"]: [] for s in scenarios}
    for s in scenarios:
        if s.get("check"):
            s["check"]()
        wrk(cfg, s["url"], s.get("headers", {}), s.get("conns", cfg.conns), cfg.warmup, s.get("script"))
    for r in range(rounds):
        for s in scenarios:
            res = wrk(cfg, s["url"], s.get("headers", {}), s.get("conns", cfg.conns), cfg.duration, s.get("script"))
            runs[s["name"]].append(res)
            log(f"  round {r + 1}: {s['name']:<22} {res['rps']:>10,.0f} req/s  p50 {res['p50_us'] or 0:>8,.0f} µs"
                f"  p99 {res['p99_us'] or 0:>8,.0f} µs  errors {res['errors']}")
    for s in scenarios:
        rs = runs[s["name"]]
        rps = [x["rps"] for x in rs]
        entry = {
            "what": s["what"],
            "conns": s.get("conns", cfg.conns),
            "rps": statistics.median(rps),
            "rps_runs": rps,
            "p50_us": statistics.median([x["p50_us"] for x in rs]),
            "p99_us": statistics.median([x["p99_us"] for x in rs]),
            "errors": sum(x["errors"] for x in rs),
            "cmd": rs[0]["cmd"],
            # Scenarios of one call run round by round side by side: their ratios pair rounds.
            "round_group": scenarios[0]["name"],
        }
        if "oidc" in rs[0]:
            tokens = sum(int(x["oidc"]["tokens"]) for x in rs)
            entry["tokens_per_s"] = statistics.median(
                [int(x["oidc"]["tokens"]) / cfg.duration for x in rs])
            entry["bad_responses"] = sum(int(x["oidc"]["bad"]) for x in rs)
            entry["tokens_total"] = tokens
        results[s["name"]] = entry


# ------------------------------------------------------------------------------------------
# the daemon's environment: 1,000 users, 100 client snippets
# ------------------------------------------------------------------------------------------

def yq(s: str) -> str:
    return json.dumps(s)


def write_snippet(clients_dir: str, i, name_suffix: str = "") -> None:
    cid = f"app{i:03d}" if isinstance(i, int) else str(i)
    secret = os.path.join(clients_dir, "..", "secrets", f"{cid}.secret")
    os.makedirs(os.path.dirname(secret), exist_ok=True)
    if not os.path.exists(secret):
        with open(secret, "w") as f:
            f.write(f"{cid}-secret-" + "s" * 32 + "\n")
        os.chmod(secret, 0o600)
    text = (f"client_id: {cid}\n"
            f"client_name: {yq('App ' + cid + name_suffix)}\n"
            f"client_secret_file: {yq(os.path.abspath(secret))}\n"
            f"redirect_uris:\n  - 'https://{cid}.{HOST}/cb'\n"
            f"scopes: [openid, profile, email, groups]\n"
            f"consent_mode: implicit\n"
            f"token_endpoint_auth_method: client_secret_basic\n")
    tmp = os.path.join(clients_dir, f".{cid}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, os.path.join(clients_dir, f"{cid}.yml"))


def client_secret(cid: str) -> str:
    return f"{cid}-secret-" + "s" * 32


def write_config(d: str, port: int = 0, redis_url: str | None = None, name: str = "authd.yml",
                 hash_slots: int | None = None) -> str:
    storage = [f"storage:", f"  local: {{path: {yq(os.path.join(d, 'state.sqlite'))}}}"]
    if redis_url:
        storage.append(f"  redis: {{url: {yq(redis_url)}}}")
    password = "    password: {}"
    if hash_slots:
        password = f"    password: {{max_concurrent: {hash_slots}}}"
    rules = ["access_control:", "  default_policy: deny", "  rules:"]
    # Shaped like HaLOS: an admin-only host, bypass for health checks, one rule per app.
    rules += [f"    - domain: ['admin.{HOST}']", "      subject: [['group:admins']]", "      policy: one_factor",
              f"    - domain: ['*.{HOST}']", "      resources: ['^/health$']", "      policy: bypass"]
    for i in range(20):
        rules += [f"    - domain: ['svc{i}.{HOST}']", "      policy: one_factor"]
    rules += [f"    - domain: ['{APP_HOST}', '{HOST}', '*.{HOST}']", "      policy: one_factor"]
    lines = [
        "server:",
        f"  address: tcp://127.0.0.1:{port}{PREFIX}",
        f"hostnames_file: {yq(os.path.join(d, 'hostnames.conf'))}",
        "authentication_backend:",
        "  file:",
        f"    path: {yq(os.path.join(d, 'users_database.yml'))}",
        password,
        *storage,
        "session:",
        f"  cookies: [{{domain: {HOST}, authelia_url: 'https://{HOST}/sso'}}]",
        # One client address logs in a lot here; keep bans out of the measurement.
        "regulation: {max_retries: 1000000, find_time: 2m, ban_time: 1s}",
        *rules,
        "identity_providers:",
        "  oidc:",
        f"    issuer: https://{HOST}{PREFIX}",
        f"    clients_dir: {yq(os.path.join(d, 'oidc-clients.d'))}",
        "log: {level: info, format: text}",
    ]
    path = os.path.join(d, name)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def prepare(cfg, d: str) -> str:
    with open(os.path.join(d, "hostnames.conf"), "w") as f:
        f.write(f"{HOST}\n")
    clients = os.path.join(d, "oidc-clients.d")
    os.makedirs(clients, exist_ok=True)
    for i in range(SNIPPETS):
        write_snippet(clients, i)
    conf = write_config(d)
    # One real argon2id hash at the default parameters (what `halos-authctl user add` writes),
    # shared by all users: the file is parsed at start-up, hashes are only verified at login.
    p = subprocess.run([cfg.hasher], input=PASSWORD + "\n", capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"bench-hash: {p.stderr}")
    digest = p.stdout.strip()
    with open(os.path.join(d, "users_database.yml"), "w") as f:
        f.write(f"users:\n  bench:\n    displayname: \"Bench User\"\n    password: \"{digest}\"\n"
                f"    email: bench@{HOST}\n    groups: [admins, users]\n")
    os.chmod(os.path.join(d, "users_database.yml"), 0o600)
    users = os.path.join(d, "users_database.yml")
    with open(users, "a") as f:
        for i in range(1, USERS):
            f.write(f"  user{i:04d}:\n    displayname: \"User {i}\"\n    password: \"{digest}\"\n"
                    f"    email: user{i:04d}@{HOST}\n    groups: [users]\n")
    return conf


class Authd:
    """A running halos-authd with our NOTIFY_SOCKET."""

    def __init__(self, cfg, d: str, conf: str, cpu: int | None, wrapper: list[str] | None = None):
        self.cfg, self.d, self.conf = cfg, d, conf
        self.notify = Notify(os.path.join(d, f"notify-{time.monotonic_ns()}.sock"))
        env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHD_")}
        env["NOTIFY_SOCKET"] = self.notify.path
        env.pop("HALOS_DOMAIN", None)
        self.log: list[str] = []
        self.addr = ""
        got_addr = threading.Event()
        self.t_exec = time.monotonic()
        self.proc = subprocess.Popen(pinned(cpu, (wrapper or []) + [cfg.authd, "--config", conf]),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)

        def pump():
            for line in self.proc.stderr:
                self.log.append(line)
                m = READY_RE.search(line)
                if m and not got_addr.is_set():
                    self.addr = m.group(1)
                    got_addr.set()
            got_addr.set()

        threading.Thread(target=pump, daemon=True).start()
        try:
            self.t_ready = self.notify.wait("READY=1", timeout=120)
        except (TimeoutError, OSError):
            self.t_ready = None
        got_addr.wait(30)
        if not self.addr:
            self.proc.wait(10)
            raise RuntimeError("halos-authd did not start:\n" + "".join(self.log[-20:]))

    @property
    def pid(self) -> int:
        return self.proc.pid

    def health_time(self) -> float:
        """Seconds from exec to the first 200 from /api/health."""
        while True:
            try:
                status, _, _ = request(self.addr, "GET", PREFIX + "/api/health", {})
                if status == 200:
                    return time.monotonic() - self.t_exec
            except OSError:
                pass
            time.sleep(0.001)

    def stop(self):
        stop(self.proc)
        self.notify.close()


def login(addr: str) -> tuple[str, str]:
    body = json.dumps({"username": "bench", "password": PASSWORD, "keepMeLoggedIn": False}).encode()
    status, headers, resp = request(addr, "POST", PREFIX + "/api/firstfactor",
                                    {**PORTAL_HEADERS, "Content-Type": "application/json"}, body)
    if status != 200:
        raise RuntimeError(f"login failed: {status} {resp[:200]!r}")
    for c in headers.get("set-cookie", []):
        name, _, rest = c.partition("=")
        value = rest.split(";", 1)[0]
        if value:
            return name, value
    raise RuntimeError("login set no cookie")


def login_latency(cfg, addr: str) -> dict:
    """Wall time of a login (POST /api/firstfactor, one at a time) and of one hash at the
    default parameters with a reused buffer on the daemon's CPU; the difference of the
    fastest of each is what a login costs besides its hash (DESIGN §14: at most 5 ms). The
    fastest, not the median: a hash takes ~100 ms and noise only ever adds to it. Logins and
    hashes alternate (two logins, then two hashes in a fresh `bench-hash`, `cfg.logins`
    times): this VM's speed drifts by 10 % within seconds, so measuring all logins before
    all hashes compared different moments."""
    took, hashes = [], []
    for _ in range(cfg.logins):
        for _ in range(2):
            t0 = time.monotonic()
            login(addr)
            took.append((time.monotonic() - t0) * 1000)
        p = subprocess.run(pinned(cfg.server_cpu, [cfg.hasher, "--repeat", "2"]), input=PASSWORD + "\n",
                           capture_output=True, text=True)
        m = re.search(r"hash_ms ([\d.]+) min ([\d.]+)", p.stderr)
        if p.returncode != 0 or not m:
            raise RuntimeError(f"bench-hash --repeat: {p.stderr}")
        hashes.append(float(m.group(2)))
    login_ms, hash_ms = min(took), min(hashes)
    return {"login_ms": round(login_ms, 2), "login_ms_median": round(statistics.median(took), 2),
            "login_ms_runs": [round(x, 2) for x in took], "hash_ms": hash_ms,
            "hash_ms_median": statistics.median(hashes), "hash_ms_runs": hashes,
            "overhead_ms": round(login_ms - hash_ms, 2)}


def authorize_path(cid: str) -> str:
    q = urllib.parse.urlencode({"response_type": "code", "client_id": cid, "redirect_uri": f"https://{cid}.{HOST}/cb",
                                "scope": "openid profile email groups", "state": "benchstate"})
    return f"{PREFIX}/api/oidc/authorization?{q}"


def get_code(addr: str, cookie: str, cid: str) -> str | None:
    status, headers, _ = request(addr, "GET", authorize_path(cid), {**PORTAL_HEADERS, "Cookie": cookie})
    loc = (headers.get("location") or [""])[0]
    q = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(loc).query))
    return q.get("code") if status in (302, 303) else None


def basic_auth(cid: str) -> str:
    return "Basic " + base64.b64encode(f"{cid}:{client_secret(cid)}".encode()).decode()


def redeem(addr: str, cid: str, code: str) -> dict:
    body = urllib.parse.urlencode({"grant_type": "authorization_code", "code": code,
                                   "redirect_uri": f"https://{cid}.{HOST}/cb"}).encode()
    status, _, resp = request(addr, "POST", PREFIX + "/api/oidc/token",
                              {**PORTAL_HEADERS, "Authorization": basic_auth(cid),
                               "Content-Type": "application/x-www-form-urlencoded"}, body)
    if status != 200:
        raise RuntimeError(f"token endpoint: {status} {resp[:300]!r}")
    return json.loads(resp)


OIDC_LUA = r"""
-- authorize (session cookie, implicit consent) -> code -> token, in a loop: every 302's code
-- is redeemed by the next request a connection sends.
local codes = {}
tokens, authorizes, bad = 0, 0, 0
local threads = {}
function setup(t) table.insert(threads, t) end
function request()
  local c = table.remove(codes)
  if c then
    return wrk.format("POST", "%(token)s", {["Content-Type"] = "application/x-www-form-urlencoded",
      ["Authorization"] = "%(basic)s", ["X-Forwarded-Host"] = "%(host)s", ["X-Forwarded-Proto"] = "https"},
      "grant_type=authorization_code&redirect_uri=%(redirect)s&code=" .. c)
  end
  return wrk.format("GET", "%(authorize)s", {["Cookie"] = "%(cookie)s", ["X-Forwarded-Host"] = "%(host)s",
    ["X-Forwarded-Proto"] = "https"})
end
function response(status, headers, body)
  local loc = headers["location"] or headers["Location"]
  if status == 302 and loc then
    local c = loc:match("[?&]code=([^&]+)")
    if c then table.insert(codes, c); authorizes = authorizes + 1 else bad = bad + 1 end
  elseif status == 200 and body:find("access_token", 1, true) then
    tokens = tokens + 1
  else
    bad = bad + 1
  end
end
function done(summary, latency, requests)
  local t, a, b = 0, 0, 0
  for _, th in ipairs(threads) do t = t + th:get("tokens"); a = a + th:get("authorizes"); b = b + th:get("bad") end
  io.write(string.format("OIDC tokens=%%d authorizes=%%d bad=%%d\n", t, a, b))
end
"""


# ------------------------------------------------------------------------------------------
# instructions per request (callgrind)
# ------------------------------------------------------------------------------------------

def keepalive_requests(addr: str, raw: bytes, n: int, expect: int) -> None:
    c = Conn(addr, timeout=120)
    try:
        for _ in range(n):
            status, _, _ = c.roundtrip(raw)
            if status != expect:
                raise RuntimeError(f"expected {expect}, got {status}")
    finally:
        c.close()


def under_callgrind(cfg, start, tag: str, measured, warm_up=None, dump_instr: bool = False) -> str:
    """Starts a server with `start(wrapper)` under callgrind with instrumentation off, runs
    `warm_up(addr)`, then `measured(addr)` with instrumentation on, stops the server and
    returns the path of callgrind's output."""
    out = os.path.join(cfg.tmp, f"callgrind.{tag}.out")
    wrapper = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
               f"--dump-instr={'yes' if dump_instr else 'no'}", "--compress-strings=no", "--instr-atstart=no"]
    if dump_instr:
        wrapper.append("--compress-pos=no")
    p, addr = start(wrapper)
    try:
        if warm_up:
            warm_up(addr)
        for state in ("on", "off"):
            if state == "off":
                measured(addr)
            r = subprocess.run(["callgrind_control", "-i", state, str(p.pid)], capture_output=True, text=True)
            if r.returncode != 0:
                raise RuntimeError(f"callgrind_control -i {state}: {r.stdout} {r.stderr}")
    finally:
        stop(p)
    return out


def callgrind_window(cfg, start, raw: bytes, n: int, expect: int, tag: str) -> int:
    """User-space instructions a server process spent answering `n` requests on one keep-alive
    connection: started under callgrind with instrumentation off (start-up is not counted, and
    runs several times faster), warmed up with `n // 4` requests, then instrumented for exactly
    the `n` measured ones (`callgrind_control -i on/off`)."""
    out = under_callgrind(cfg, start, tag, lambda addr: keepalive_requests(addr, raw, n, expect),
                          warm_up=lambda addr: keepalive_requests(addr, raw, max(10, n // 4), expect))
    # `summary:` is written at the top (0 when instrumentation started off), `totals:` at the end.
    found = {}
    with open(out) as f:
        for line in f:
            if line.startswith(("summary:", "totals:")):
                key, value = line.split()[:2]
                found[key] = int(value)
    if not found.get("totals:", found.get("summary:")):
        raise RuntimeError(f"no instruction count in {out}")
    return found.get("totals:") or found["summary:"]


def instructions(cfg, results: dict, d: str, conf: str, cookie: str, toy_cookie: str) -> None:
    fa_headers = {**FORWARDED, "Cookie": f"theme=dark; {cookie}; _ga=GA1.2.3"}
    reqs = {
        "hello": (build_request("GET", "/", {}), 200),
        "fa-200": (build_request("GET", PREFIX + "/api/authz/forward-auth", fa_headers), 200),
        "fa-302": (build_request("GET", PREFIX + "/api/authz/forward-auth",
                                 {**FORWARDED, "Accept": "text/html"}), 302),
        "toy-verify": (build_request("GET", "/verify", {**FORWARDED, "Cookie": f"theme=dark; {toy_cookie}; _ga=GA1.2.3"}),
                       200),
    }
    # The baseline servers: one worker, like the pinned daemon.
    env = {**os.environ, "BENCH_THREADS": "1"}

    def bench_server(binary):
        def start(wrapper):
            p = subprocess.Popen(pinned(cfg.server_cpu, wrapper + [binary]), stdout=subprocess.PIPE,
                                 stderr=subprocess.DEVNULL, text=True, env=env)
            line = p.stdout.readline().split()
            return p, line[1]
        return start

    def daemon(wrapper):
        a = Authd(cfg, d, conf, cfg.server_cpu, wrapper)
        return a.proc, a.addr

    starters = {"hello": bench_server(cfg.hello), "toy-verify": bench_server(cfg.verify),
                "fa-200": daemon, "fa-302": daemon}
    out = {}
    n = cfg.callgrind_n
    for name, (raw, expect) in reqs.items():
        total = callgrind_window(cfg, starters[name], raw, n, expect, name)
        per = total / n
        out[name] = {"instructions_per_request": round(per), "requests": n, "total": total}
        log(f"  callgrind {name:<12} {per:>10,.0f} instructions/request")
    base = out["hello"]["instructions_per_request"]
    for v in out.values():
        v["ratio_to_hello"] = round(v["instructions_per_request"] / base, 3)
    results["instructions"] = out
    results["login_code"] = login_code(cfg, daemon)
    lc = results["login_code"]
    log(f"  a login runs {lc['pages'] * 4:,} KiB of halos-authd's code ({lc['pages']} pages of 4 KiB), "
        f"in {lc['windows_64k']} runs of 64 KiB ({lc['windows_64k'] * 64:,} KiB)")


def login_code(cfg, daemon) -> dict:
    """How much of the executable's code one login runs: the 4 KiB pages holding an instruction
    callgrind saw executed while instrumented over the first login after start-up, and the
    64 KiB runs around them (what the kernel maps per page fault in code; README, "Memory")."""
    out = under_callgrind(cfg, daemon, "login", login, dump_instr=True)
    pages: set = set()
    ob = None
    with open(out) as f:
        for line in f:
            if line.startswith("ob="):
                ob = line[3:].strip()
            elif line.startswith("0x") and ob and os.path.basename(ob) == "halos-authd":
                pages.add(int(line.split(maxsplit=1)[0], 16) >> 12)
    if not pages:
        raise RuntimeError(f"no halos-authd code in {out}")
    return {"pages": len(pages), "windows_64k": len({pg >> 4 for pg in pages})}


# ------------------------------------------------------------------------------------------
# nginx
# ------------------------------------------------------------------------------------------

NGINX_CONF = """
worker_processes 1;
daemon off;
user root;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {d}/nginx-tmp;
  proxy_temp_path {d}/nginx-tmp;
  upstream authd {{ server {authd}; keepalive 64; }}
  upstream toy {{ server {toy}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{port};
    root {d}/www;
    # The protected app is an empty static file; the same file without auth is nginx alone.
    location = /static {{ try_files /app =404; }}
    location = /via-authd {{ auth_request /_authd; try_files /app =404; }}
    location = /via-toy {{ auth_request /_toy; try_files /app =404; }}
    location = /_authd {{
      internal;
      proxy_pass http://authd{prefix}/api/authz/auth-request;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header X-Original-URL https://$http_host$request_uri;
      proxy_set_header X-Original-Method $request_method;
      proxy_set_header X-Forwarded-For $remote_addr;
    }}
    location = /_toy {{
      internal;
      proxy_pass http://toy/verify;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header X-Original-URL https://$http_host$request_uri;
      proxy_set_header X-Original-Method $request_method;
      proxy_set_header X-Forwarded-For $remote_addr;
    }}
  }}
}}
"""


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# ------------------------------------------------------------------------------------------
# the run
# ------------------------------------------------------------------------------------------

def machine() -> dict:
    cpu = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = 0
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = int(line.split()[1]) // 1024
    except OSError:
        pass
    load = os.getloadavg()
    return {"cpu": cpu, "cpus": os.cpu_count(), "mem_mib": mem, "kernel": platform.release(),
            "loadavg_at_start": [round(x, 2) for x in load]}


def git_commit() -> str:
    try:
        c = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
        return c + ("-dirty" if dirty else "")
    except OSError:
        return "unknown"


def login_flood(addr: str, pid: int, n: int) -> dict:
    body = json.dumps({"username": "bench", "password": PASSWORD, "keepMeLoggedIn": False}).encode()
    raw = build_request("POST", PREFIX + "/api/firstfactor", {**PORTAL_HEADERS, "Content-Type": "application/json",
                                                              "Connection": "close"}, body)
    conns = [Conn(addr, timeout=120) for _ in range(n)]
    statuses: list[int] = []
    lock = threading.Lock()
    go = threading.Barrier(n + 1)

    def one(c: Conn):
        go.wait()
        try:
            st, h, _ = c.roundtrip(raw)
        except OSError:
            st = -1
        with lock:
            statuses.append(st)
        c.close()

    before = proc_status(pid)
    threads = [threading.Thread(target=one, args=(c,)) for c in conns]
    for t in threads:
        t.start()
    with RssSampler(pid, 0.005) as s:
        t0 = time.monotonic()
        go.wait()
        for t in threads:
            t.join()
        took = time.monotonic() - t0
    after = proc_status(pid)
    # Each hash worker frees its buffer 2 s after its last job; they take turns waiting.
    time.sleep(2)
    later = proc_status(pid)
    time.sleep(4)
    quiet = proc_status(pid)
    counts: dict = {}
    for st in statuses:
        counts[str(st)] = counts.get(str(st), 0) + 1
    return {"logins": n, "statuses": counts, "seconds": round(took, 3),
            "rss_before_kib": before.get("VmRSS"), "rss_peak_kib": max(s.peak, after.get("VmRSS", 0)),
            "hwm_after_kib": after.get("VmHWM"), "rss_after_kib": after.get("VmRSS"),
            "rss_2s_after_kib": later.get("VmRSS"), "rss_6s_after_kib": quiet.get("VmRSS")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin-dir", required=True, help="directory of halos-authd, bench-hello, bench-verify, bench-hash")
    ap.add_argument("--smoke", action="store_true", help="seconds, not minutes: every scenario once, briefly")
    ap.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--conns", type=int, default=64)
    ap.add_argument("--server-cpu", type=int, default=0)
    ap.add_argument("--load-cpu", type=int, default=1)
    ap.add_argument("--flood", type=int, default=200, help="concurrent logins in the login flood")
    ap.add_argument("--no-callgrind", action="store_true")
    ap.add_argument("--out", help="JSON output (default bench/results/latest.json; for --smoke a temporary file)")
    cfg = ap.parse_args()
    cfg.warmup = 1.0
    cfg.callgrind_n = 3000
    cfg.starts = 3
    cfg.logins = 7
    if cfg.smoke:
        cfg.duration, cfg.rounds, cfg.warmup, cfg.flood, cfg.callgrind_n, cfg.starts = 1, 1, 1, 20, 100, 1
        cfg.logins = 2
    if (os.cpu_count() or 1) < 2:
        cfg.server_cpu = cfg.load_cpu = None
    cfg.authd = os.path.join(cfg.bin_dir, "halos-authd")
    cfg.hasher = os.path.join(cfg.bin_dir, "bench-hash")
    cfg.hello = os.path.join(cfg.bin_dir, "bench-hello")
    cfg.verify = os.path.join(cfg.bin_dir, "bench-verify")
    if cfg.load_cpu is not None:
        # This script (its RSS sampler, its request helpers) stays off the servers' CPU.
        os.sched_setaffinity(0, {cfg.load_cpu})
    cfg.tmp = tempfile.mkdtemp(prefix="halos-bench-")
    if not cfg.out:
        cfg.out = (os.path.join(tempfile.gettempdir(), "halos-bench-smoke.json") if cfg.smoke
                   else os.path.join(ROOT, "bench", "results", "latest.json"))
    d = os.path.join(cfg.tmp, "authd")
    os.makedirs(d)
    res: dict = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "commit": git_commit(), "machine": machine(), "smoke": cfg.smoke,
        "settings": {"duration_s": cfg.duration, "rounds": cfg.rounds, "conns": cfg.conns,
                     "server_cpu": cfg.server_cpu, "load_cpu": cfg.load_cpu, "users": USERS, "snippets": SNIPPETS},
        "scenarios": {}, "skipped": {},
        "binary_bytes": os.path.getsize(cfg.authd),
    }
    procs: list = []
    daemon = None
    try:
        log(f"==> preparing {USERS} users and {SNIPPETS} client snippets in {d}")
        conf = prepare(cfg, d)

        log("==> start-up: exec -> READY=1 (sd_notify) and -> first 200 from /api/health")
        ready, health = [], []
        for i in range(cfg.starts):
            a = Authd(cfg, d, conf, cfg.server_cpu)
            h = a.health_time()
            if a.t_ready is None:
                raise RuntimeError("the daemon sent no READY=1")
            ready.append((a.t_ready - a.t_exec) * 1000)
            health.append(h * 1000)
            if i + 1 < cfg.starts:
                a.stop()
            daemon = a
        res["startup"] = {"ready_ms": round(statistics.median(ready), 1), "ready_ms_runs": [round(x, 1) for x in ready],
                          "health_ms": round(statistics.median(health), 1)}
        log(f"  ready {res['startup']['ready_ms']} ms, first health 200 {res['startup']['health_ms']} ms")

        res["memory"] = {"started": proc_status(daemon.pid)}
        cookie_name, cookie_value = login(daemon.addr)
        cookie = f"{cookie_name}={cookie_value}"
        # Idle = a signed-in session and quiet: the hash worker frees its argon2 buffer 2 s
        # after its last job.
        time.sleep(3)
        res["memory"]["idle"] = proc_status(daemon.pid)

        hello, hello_addr, _ = start_server([cfg.hello], cfg.server_cpu)
        procs.append(hello)
        toy = subprocess.Popen(pinned(cfg.server_cpu, [cfg.verify]), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
        procs.append(toy)
        toy_addr = toy.stdout.readline().split()[1]
        toy_cookie = toy.stderr.readline().split()[1]
        res["memory"]["hello_idle"] = proc_status(hello.pid)
        res["memory"]["toy_verify_idle"] = proc_status(toy.pid)

        fa_url = f"http://{daemon.addr}{PREFIX}/api/authz/forward-auth"
        fa_headers = {**FORWARDED, "Cookie": f"theme=dark; {cookie}; _ga=GA1.2.3"}

        def expect(addr, path, headers, status):
            def check():
                got, _, body = request(addr, "GET", path, headers)
                if got != status:
                    raise RuntimeError(f"{path}: expected {status}, got {got}: {body[:200]!r}")
            return check

        log(f"==> direct: {cfg.rounds} rounds x {cfg.duration}s at c={cfg.conns}; servers on CPU {cfg.server_cpu}, "
            f"wrk on CPU {cfg.load_cpu}")
        direct = [
            {"name": "hello", "what": "baseline: minimal axum GET / -> 200", "url": f"http://{hello_addr}/",
             "check": expect(hello_addr, "/", {}, 200)},
            {"name": "toy-verify", "what": "minimal cookie->HashMap verify -> 200", "url": f"http://{toy_addr}/verify",
             "headers": {**FORWARDED, "Cookie": f"theme=dark; {toy_cookie}; _ga=GA1.2.3"},
             "check": expect(toy_addr, "/verify", {"Cookie": toy_cookie}, 200)},
            {"name": "fa-200", "what": "authd forward-auth, valid session -> 200 + identity headers", "url": fa_url,
             "headers": fa_headers,
             "check": expect(daemon.addr, PREFIX + "/api/authz/forward-auth", fa_headers, 200)},
            {"name": "fa-302", "what": "authd forward-auth, no cookie (browser) -> 302 to the portal", "url": fa_url,
             "headers": {**FORWARDED, "Accept": "text/html"},
             "check": expect(daemon.addr, PREFIX + "/api/authz/forward-auth", {**FORWARDED, "Accept": "text/html"}, 302)},
        ]
        with RssSampler(daemon.pid) as s:
            run_scenarios(cfg, direct, res["scenarios"])
        res["memory"]["loaded_peak_rss_kib"] = s.peak
        res["memory"]["after_load"] = proc_status(daemon.pid)

        log("==> nginx auth_request (nginx, authd and the verifier on the server CPU)")
        nd = os.path.join(cfg.tmp, "nginx")
        os.makedirs(os.path.join(nd, "www"))
        os.makedirs(os.path.join(nd, "nginx-tmp"))
        open(os.path.join(nd, "www", "app"), "w").close()
        nport = free_port()
        with open(os.path.join(nd, "nginx.conf"), "w") as f:
            f.write(NGINX_CONF.format(d=nd, authd=daemon.addr, toy=toy_addr, port=nport, prefix=PREFIX))
        nginx = subprocess.Popen(pinned(cfg.server_cpu, ["nginx", "-c", os.path.join(nd, "nginx.conf"), "-p", nd]),
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        procs.append(nginx)
        naddr = f"127.0.0.1:{nport}"
        deadline = time.monotonic() + 10
        while True:
            try:
                request(naddr, "GET", "/static", {})
                break
            except OSError:
                if time.monotonic() > deadline or nginx.poll() is not None:
                    raise RuntimeError("nginx did not start: " + open(os.path.join(nd, "nginx-error.log")).read())
                time.sleep(0.01)
        nh_authd = {"Host": APP_HOST, "Cookie": f"theme=dark; {cookie}; _ga=GA1.2.3"}
        nh_toy = {"Host": APP_HOST, "Cookie": f"theme=dark; {toy_cookie}; _ga=GA1.2.3"}
        nginx_sc = [
            {"name": "nginx-static", "what": "nginx alone serving the app (empty file)", "url": f"http://{naddr}/static",
             "headers": {"Host": APP_HOST}, "check": expect(naddr, "/static", {"Host": APP_HOST}, 200)},
            {"name": "nginx-toy", "what": "nginx auth_request -> minimal verify -> app", "url": f"http://{naddr}/via-toy",
             "headers": nh_toy, "check": expect(naddr, "/via-toy", nh_toy, 200)},
            {"name": "nginx-authd", "what": "nginx auth_request -> authd -> app", "url": f"http://{naddr}/via-authd",
             "headers": nh_authd, "check": expect(naddr, "/via-authd", nh_authd, 200)},
        ]
        expect(naddr, "/via-authd", {"Host": APP_HOST}, 401)()
        run_scenarios(cfg, nginx_sc, res["scenarios"])
        stop(nginx)

        log("==> OIDC: authorization+token loop, userinfo")
        code = get_code(daemon.addr, cookie, "app000")
        if not code:
            raise RuntimeError("authorization endpoint gave no code")
        tokens = redeem(daemon.addr, "app000", code)
        script = os.path.join(cfg.tmp, "oidc.lua")
        with open(script, "w") as f:
            f.write(OIDC_LUA % {"token": PREFIX + "/api/oidc/token", "basic": basic_auth("app000"), "host": HOST,
                                "redirect": urllib.parse.quote(f"https://app000.{HOST}/cb", safe=""),
                                "authorize": authorize_path("app000"), "cookie": cookie})
        ui_headers = {**PORTAL_HEADERS, "Authorization": f"Bearer {tokens['access_token']}"}
        oidc_sc = [
            {"name": "oidc-code-flow", "what": "GET authorize (302 + code) then POST token, alternating",
             "url": f"http://{daemon.addr}/", "script": script},
            {"name": "oidc-userinfo", "what": "GET userinfo with a bearer access token",
             "url": f"http://{daemon.addr}{PREFIX}/api/oidc/userinfo", "headers": ui_headers,
             "check": expect(daemon.addr, PREFIX + "/api/oidc/userinfo", ui_headers, 200)},
        ]
        # Reported, not targets: one round.
        run_scenarios(cfg, oidc_sc, res["scenarios"], rounds=1)

        log("==> a new snippet: write -> client usable (authorization gives a code)")
        clients = os.path.join(d, "oidc-clients.d")
        t0 = time.monotonic()
        write_snippet(clients, "newapp")
        while not get_code(daemon.addr, cookie, "newapp"):
            if time.monotonic() - t0 > 10:
                raise RuntimeError("the new snippet never became usable")
            time.sleep(0.002)
        res["snippet_live_ms"] = round((time.monotonic() - t0) * 1000, 1)
        log(f"  usable after {res['snippet_live_ms']} ms")

        log(f"==> reload: {SNIPPETS} snippets rewritten, then SIGHUP, while forward auth runs at c=32")
        time.sleep(1.5)  # let the watcher's reload of the new snippet finish
        load = subprocess.Popen(pinned(cfg.load_cpu, ["wrk", "-t1", "-c32", f"-d{max(3, cfg.duration)}s", "--latency"]
                                       + sum((["-H", f"{k}: {v}"] for k, v in fa_headers.items()), []) + [fa_url]),
                                stdout=subprocess.PIPE, text=True)
        time.sleep(1.0)
        for i in range(SNIPPETS):
            write_snippet(clients, i, " (renamed)")
        t0 = time.monotonic()
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.notify.wait("RELOADING=1", timeout=10)
        t1 = daemon.notify.wait("READY=1", timeout=30)
        out = load.communicate()[0]
        m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        failed = int(m.group(1)) if m else 0
        m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
        failed += sum(int(x) for x in m.groups()) if m else 0
        m = re.search(r"(\d+) requests in", out)
        res["reload"] = {"sighup_to_ready_ms": round((t1 - t0) * 1000, 1), "requests_during": int(m.group(1)) if m else 0,
                         "failed_requests": failed}
        log(f"  SIGHUP -> READY {res['reload']['sighup_to_ready_ms']} ms, {failed} failed of "
            f"{res['reload']['requests_during']} requests")

        log(f"==> login flood: {cfg.flood} concurrent logins, default argon2id parameters")
        time.sleep(0.5)
        res["login_flood"] = login_flood(daemon.addr, daemon.pid, cfg.flood)
        log(f"  {res['login_flood']}")
        log("==> login latency: sequential logins vs one argon2id hash on the same CPU")
        res["login"] = login_latency(cfg, daemon.addr)
        log(f"  {res['login']}")
        time.sleep(3)  # the hash buffer is kept 2 s after the last login
        res["memory"]["final"] = proc_status(daemon.pid)
        daemon.stop()
        daemon = None

        log("==> Redis storage")
        redis_sc(cfg, res, d, hello_addr)

        if not cfg.no_callgrind:
            log(f"==> callgrind: instructions per request, {cfg.callgrind_n} requests on one keep-alive "
                f"connection after a warm-up")
            instructions(cfg, res, d, conf, cookie, toy_cookie)
    finally:
        if daemon:
            daemon.stop()
        for p in procs:
            stop(p)

    hello = res["scenarios"]["hello"]
    for name, s in res["scenarios"].items():
        s["ratio_to_hello"] = paired_ratio(s, hello)
    res["targets"] = targets(res)
    os.makedirs(os.path.dirname(cfg.out), exist_ok=True)
    with open(cfg.out, "w") as f:
        json.dump(res, f, indent=1)
    with open(os.path.splitext(cfg.out)[0] + ".md", "w") as f:
        f.write(markdown(res))
    print_table(res)
    print(f"\nJSON: {cfg.out} (and the README's figures: {os.path.splitext(cfg.out)[0]}.md)")
    shutil.rmtree(cfg.tmp, ignore_errors=True)
    problems = check_output(cfg.out, cfg.no_callgrind)
    for p in problems:
        print(f"bench: {p}", file=sys.stderr)
    return 1 if problems else 0


SCENARIOS = ["hello", "toy-verify", "fa-200", "fa-302", "nginx-static", "nginx-toy", "nginx-authd",
             "oidc-code-flow", "oidc-userinfo", "redis-fa-200"]


def check_output(path: str, no_callgrind: bool) -> list[str]:
    """The JSON parses and every scenario produced numbers (or, for Redis, says why not).
    No throughput is asserted: that is for people reading the table, not for CI."""
    try:
        with open(path) as f:
            res = json.load(f)
    except (OSError, ValueError) as e:
        return [f"{path}: {e}"]
    out = []

    def number(v) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0

    for name in SCENARIOS:
        sc = res["scenarios"].get(name)
        if sc is None:
            if not (name == "redis-fa-200" and name in res["skipped"]):
                out.append(f"scenario {name}: no result")
            continue
        for k in ("rps", "p50_us", "p99_us", "ratio_to_hello"):
            if not number(sc.get(k)) or (k == "rps" and sc[k] <= 0):
                out.append(f"scenario {name}: {k} = {sc.get(k)!r}")
        if sc.get("errors"):
            out.append(f"scenario {name}: {sc['errors']} failed requests")
    if not res["scenarios"].get("oidc-code-flow", {}).get("tokens_total"):
        out.append("oidc-code-flow: no token was issued")
    if not no_callgrind:
        for name in ("hello", "fa-200", "fa-302", "toy-verify"):
            ipr = res.get("instructions", {}).get(name, {}).get("instructions_per_request")
            if not number(ipr) or ipr <= 0:
                out.append(f"instructions {name}: missing")
    for k in ("ready_ms", "health_ms"):
        if not number(res["startup"].get(k)):
            out.append(f"startup {k} missing")
    for k in ("sighup_to_ready_ms", "requests_during"):
        if not number(res["reload"].get(k)):
            out.append(f"reload {k} missing")
    if res["reload"].get("failed_requests"):
        out.append(f"reload: {res['reload']['failed_requests']} failed requests")
    if not number(res.get("snippet_live_ms")):
        out.append("snippet_live_ms missing")
    fl = res["login_flood"]
    for k in ("rss_before_kib", "rss_peak_kib", "rss_6s_after_kib"):
        if not number(fl.get(k)):
            out.append(f"login_flood {k} missing")
    if not fl["statuses"].get("200"):
        out.append(f"login flood: no login succeeded {fl['statuses']}")
    for k in ("login_ms", "hash_ms"):
        if not number(res["login"].get(k)) or res["login"][k] <= 0:
            out.append(f"login {k} missing")
    if not number(res["memory"].get("idle", {}).get("VmRSS")):
        out.append("idle memory missing")
    return out


def redis_sc(cfg, res: dict, d: str, hello_addr: str) -> None:
    name = "redis-fa-200"
    if not shutil.which("redis-server"):
        res["skipped"][name] = "not available: redis-server is not installed"
        log(f"  {res['skipped'][name]}")
        return
    rd = os.path.join(cfg.tmp, "redis")
    os.makedirs(rd)
    sock = os.path.join(rd, "redis.sock")
    redis = subprocess.Popen(pinned(cfg.server_cpu, ["redis-server", "--port", "0", "--unixsocket", sock, "--save", "",
                                                     "--appendonly", "no", "--dir", rd]),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    daemon = None
    try:
        for _ in range(500):
            if os.path.exists(sock):
                break
            time.sleep(0.01)
        conf = write_config(d, redis_url=f"unix://{sock}", name="authd-redis.yml")
        try:
            daemon = Authd(cfg, d, conf, cfg.server_cpu)
        except RuntimeError as e:
            lines = [x for x in str(e).splitlines() if x.strip()]
            reason = lines[-1] if lines else "it did not start"
            res["skipped"][name] = f"not available: storage.redis not supported by this build ({reason.strip()})"
            log(f"  {res['skipped'][name]}")
            return
        cookie_name, cookie_value = login(daemon.addr)
        keys = subprocess.run(["redis-cli", "-s", sock, "dbsize"], capture_output=True, text=True).stdout.strip()
        if not keys.isdigit() or int(keys) == 0:
            res["skipped"][name] = ("not available: storage.redis not supported by this build "
                                    "(the daemon accepted the configuration but wrote nothing to Redis)")
            log(f"  {res['skipped'][name]}")
            return
        headers = {**FORWARDED, "Cookie": f"theme=dark; {cookie_name}={cookie_value}; _ga=GA1.2.3"}
        url = f"http://{daemon.addr}{PREFIX}/api/authz/forward-auth"
        run_scenarios(cfg, [{"name": name, "what": "authd forward-auth, Redis storage, valid session -> 200",
                             "url": url, "headers": headers}], res["scenarios"], rounds=1)
        res["memory"]["redis_mode_after_load"] = proc_status(daemon.pid)
    finally:
        if daemon:
            daemon.stop()
        stop(redis)


MIB = 1024


def paired_ratio(a: dict, b: dict) -> float:
    """a's requests/s relative to b's: the median of the per-round ratios when both ran in the
    same rounds (a slow moment of this shared VM then slows both alike; whole rounds here
    differ by up to 30 %), else the ratio of the medians."""
    ra, rb = a["rps_runs"], b["rps_runs"]
    if a.get("round_group") == b.get("round_group") and len(ra) == len(rb):
        return round(statistics.median(x / y for x, y in zip(ra, rb)), 3)
    return round(a["rps"] / b["rps"], 3)


def targets(res: dict) -> list[dict]:
    sc, mem = res["scenarios"], res["memory"]
    t = []

    def add(what, value, limit, ok, context=None):
        t.append({"target": what, "value": value, "limit": limit, "met": bool(ok)})
        if context:
            t[-1]["context"] = context

    fa = sc["fa-200"]
    add("forward auth >= 70 % of hello req/s", fa["ratio_to_hello"], 0.70, fa["ratio_to_hello"] >= 0.70)
    if "instructions" in res:
        r = res["instructions"]["fa-200"]["ratio_to_hello"]
        add("forward auth <= 2.5x hello instructions/request", r, 2.5, r <= 2.5)
    add("forward auth p99 <= 2 ms at 64 connections (µs)", fa["p99_us"], 2000, fa["p99_us"] <= 2000,
        f"hello's p99 in the same rounds: {sc['hello']['p99_us']:.0f} µs")
    ratio = paired_ratio(sc["nginx-authd"], sc["nginx-toy"])
    add("nginx auth_request -> authd >= 90 % of -> minimal verify", ratio, 0.90, ratio >= 0.90)
    idle = mem["idle"]["VmRSS"]
    started = mem["started"]["VmRSS"]
    add("RSS idle, just started <= 10 MiB (KiB)", started, 10 * MIB, started <= 10 * MIB)
    context = f"private (RssAnon) {mem['idle'].get('RssAnon', 0):,}"
    if "login_code" in res:
        lc = res["login_code"]
        context += (f"; a login runs {lc['pages'] * 4:,} KiB of code, which the kernel maps in "
                    f"{lc['windows_64k']} runs of 64 KiB")
    add("RSS idle after a login <= 10 MiB (KiB)", idle, 10 * MIB, idle <= 10 * MIB, context)
    # Sampled during the forward-auth load (VmHWM covers the whole life, the login's hash included).
    loaded = mem["loaded_peak_rss_kib"]
    add("RSS under load <= 32 MiB (KiB)", loaded, 32 * MIB, loaded <= 32 * MIB)
    fl = res["login_flood"]
    bound = fl["rss_before_kib"] + 2 * 64 * MIB + 16 * MIB
    add("login flood peak RSS <= idle + 2 slots x 64 MiB + 16 MiB (KiB)", fl["rss_peak_kib"], bound,
        fl["rss_peak_kib"] <= bound)
    add("login flood: RSS back near idle 6 s after (<= before + 16 MiB) (KiB)", fl["rss_6s_after_kib"],
        fl["rss_before_kib"] + 16 * MIB, fl["rss_6s_after_kib"] <= fl["rss_before_kib"] + 16 * MIB)
    unexpected = {k: v for k, v in fl["statuses"].items() if k not in ("200", "503", "429")}
    add("login flood: only 200 / 503 / 429 answers", fl["statuses"], "200|503|429", not unexpected)
    lg = res["login"]
    add("login = one hash + <= 5 ms (ms besides the hash)", lg["overhead_ms"], 5, lg["overhead_ms"] <= 5,
        f"login {lg['login_ms']} ms, hash {lg['hash_ms']} ms")
    add("ready <= 100 ms after exec (ms)", res["startup"]["ready_ms"], 100, res["startup"]["ready_ms"] <= 100)
    add("snippet write -> usable <= 1 s (ms)", res["snippet_live_ms"], 1000, res["snippet_live_ms"] <= 1000)
    rl = res["reload"]
    add("reload of 100 snippets <= 100 ms (ms)", rl["sighup_to_ready_ms"], 100, rl["sighup_to_ready_ms"] <= 100)
    add("no failed request during the reload", rl["failed_requests"], 0, rl["failed_requests"] == 0)
    return t


def markdown(res: dict) -> str:
    """The figures as README shows them (bench/results/latest.md)."""
    m, st, mem, fl, lg = res["machine"], res["startup"], res["memory"], res["login_flood"], res["login"]
    s = res["settings"]
    out = [f"Measured {res['date'].replace('T', ' ').rstrip('Z')} UTC, commit {res['commit']}, on {m['cpu']} "
           f"({m['cpus']} vCPUs, {m['mem_mib'] // 1024} GiB, kernel {m['kernel']}; load average at start "
           f"{m['loadavg_at_start'][0]}); wrk `-t1 -c{s['conns']}`, {s['rounds']} rounds × {s['duration_s']} s, "
           f"median; servers on CPU {s['server_cpu']}, wrk on CPU {s['load_cpu']}.", "",
           "| scenario | req/s | vs hello | p50 µs | p99 µs | failed |", "|---|---|---|---|---|---|"]
    for name, sc in res["scenarios"].items():
        extra = f" ({sc['tokens_per_s']:,.0f} tokens/s)" if "tokens_per_s" in sc else ""
        out.append(f"| {name}{extra} | {sc['rps']:,.0f} | {sc['ratio_to_hello'] * 100:.0f} % | {sc['p50_us']:,.0f} | "
                   f"{sc['p99_us']:,.0f} | {sc['errors']} |")
    if "instructions" in res:
        out += ["", "| callgrind, user-space instructions per request | Ir | vs hello |", "|---|---|---|"]
        for name, v in res["instructions"].items():
            out.append(f"| {name} | {v['instructions_per_request']:,} | {v['ratio_to_hello']:.2f}× |")
    out += ["", f"Memory: VmRSS {mem['started'].get('VmRSS'):,} KiB just started, {mem['idle'].get('VmRSS'):,} KiB idle "
            f"after a login (RssAnon {mem['idle'].get('RssAnon'):,} + RssFile {mem['idle'].get('RssFile'):,}), peak "
            f"{mem['loaded_peak_rss_kib']:,} KiB under forward-auth load, {mem['final'].get('VmRSS'):,} KiB after every "
            f"scenario (RssAnon {mem['final'].get('RssAnon'):,} + RssFile {mem['final'].get('RssFile'):,}); hello "
            f"{mem['hello_idle'].get('VmRSS'):,}, minimal verifier {mem['toy_verify_idle'].get('VmRSS'):,} KiB idle. "
            f"Login flood ({fl['logins']} at once, 2 hash slots): answers {fl['statuses']}, VmRSS "
            f"{fl['rss_before_kib']:,} → peak {fl['rss_peak_kib']:,} → {fl['rss_6s_after_kib']:,} KiB 6 s later. "
            f"Login {lg['login_ms']} ms against one hash of {lg['hash_ms']} ms (fastest of {len(lg['login_ms_runs'])} logins and of {len(lg['hash_ms_runs'])} hash runs, alternating). "
            f"Start: exec → READY=1 {st['ready_ms']} ms, first health 200 {st['health_ms']} ms (1,000 users, 100 "
            f"snippets). Snippet write → usable {res['snippet_live_ms']} ms. Reload of 100 snippets (SIGHUP → READY=1) "
            f"{res['reload']['sighup_to_ready_ms']} ms, {res['reload']['failed_requests']} failed of "
            f"{res['reload']['requests_during']:,} requests. Binary {res['binary_bytes']:,} bytes.", "",
            "| DESIGN §14 target | measured | |", "|---|---|---|"]
    for t in res["targets"]:
        context = f" ({t['context']})" if t.get("context") else ""
        out.append(f"| {t['target']} | {t['value']}{context} | {'met' if t['met'] else '**not met**'} |")
    return "\n".join(out) + "\n"


def print_table(res: dict) -> None:
    m = res["machine"]
    print(f"\nhalos-auth benchmark {res['date']} commit {res['commit']}{' (smoke)' if res['smoke'] else ''}")
    print(f"machine: {m['cpu']}, {m['cpus']} CPUs, {m['mem_mib']} MiB, kernel {m['kernel']}, "
          f"load {m['loadavg_at_start']}")
    s = res["settings"]
    print(f"wrk -t1 -c{s['conns']}, {s['rounds']} x {s['duration_s']} s, median; servers on CPU {s['server_cpu']}, "
          f"wrk on CPU {s['load_cpu']}\n")
    print(f"| {'scenario':<16} | {'req/s':>9} | {'vs hello':>8} | {'p50 µs':>7} | {'p99 µs':>7} | {'errors':>6} | what")
    print(f"|{'-' * 18}|{'-' * 11}|{'-' * 10}|{'-' * 9}|{'-' * 9}|{'-' * 8}|------")
    for name, sc in res["scenarios"].items():
        extra = f" ({sc['tokens_per_s']:,.0f} tokens/s)" if "tokens_per_s" in sc else ""
        print(f"| {name:<16} | {sc['rps']:>9,.0f} | {sc['ratio_to_hello'] * 100:>7.0f}% | {sc['p50_us']:>7,.0f} | "
              f"{sc['p99_us']:>7,.0f} | {sc['errors']:>6} | {sc['what']}{extra}")
    for name, why in res["skipped"].items():
        print(f"| {name:<16} | {'-':>9} | {'-':>8} | {'-':>7} | {'-':>7} | {'-':>6} | {why}")
    if "instructions" in res:
        print("\ninstructions per request (callgrind, user space):")
        for name, v in res["instructions"].items():
            print(f"  {name:<12} {v['instructions_per_request']:>9,}  {v['ratio_to_hello']:.2f}x hello")
    mem = res["memory"]
    print(f"\nmemory (KiB): just started VmRSS {mem['started'].get('VmRSS')}, idle VmRSS {mem['idle'].get('VmRSS')} "
          f"(RssAnon {mem['idle'].get('RssAnon')} + RssFile {mem['idle'].get('RssFile')}), peak under load {mem['loaded_peak_rss_kib']}, "
          f"after load VmRSS/VmHWM {mem['after_load'].get('VmRSS')}/{mem['after_load'].get('VmHWM')}; "
          f"hello idle {mem['hello_idle'].get('VmRSS')}, minimal verify idle {mem['toy_verify_idle'].get('VmRSS')}")
    fl = res["login_flood"]
    print(f"login flood: {fl['logins']} logins in {fl['seconds']} s, answers {fl['statuses']}, RSS before "
          f"{fl['rss_before_kib']}, peak {fl['rss_peak_kib']}, after {fl['rss_after_kib']}, 2 s later "
          f"{fl['rss_2s_after_kib']}, 6 s later {fl['rss_6s_after_kib']} KiB")
    lg = res["login"]
    print(f"login: fastest {lg['login_ms']} ms (runs {lg['login_ms_runs']}), one argon2id hash: fastest {lg['hash_ms']} ms, "
          f"median {lg['hash_ms_median']} ms on the same "
          f"CPU; halos-authd binary {res['binary_bytes']:,} bytes ({'debug build' if res['smoke'] else 'release, stripped'}, "
          f"{platform.machine()})")
    st = res["startup"]
    print(f"start-up: exec -> READY=1 {st['ready_ms']} ms (runs {st['ready_ms_runs']}), -> first health 200 "
          f"{st['health_ms']} ms; snippet write -> usable {res['snippet_live_ms']} ms; reload of {SNIPPETS} "
          f"snippets {res['reload']['sighup_to_ready_ms']} ms, {res['reload']['failed_requests']} failed of "
          f"{res['reload']['requests_during']} requests")
    print("\ntargets (DESIGN §14):")
    for t in res["targets"]:
        context = f"; {t['context']}" if t.get("context") else ""
        print(f"  [{'met' if t['met'] else 'NOT MET'}] {t['target']}: {t['value']} (limit {t['limit']}{context})")


if __name__ == "__main__":
    sys.exit(main())
