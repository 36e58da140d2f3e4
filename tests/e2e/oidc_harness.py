"""A running halos-authd configured as the OpenID provider `https://halos.test/sso`, and the
HTTP plumbing the OIDC end-to-end tests share.

The daemon speaks plain HTTP on 127.0.0.1 with a random port. Clients talk to
`https://halos.test/sso/...` as they would on a device; :class:`ProxyAdapter` plays the TLS
terminating reverse proxy (Traefik on HaLOS): it sends each request to the daemon and adds
`X-Forwarded-Host` / `X-Forwarded-Proto: https`, which the daemon believes from loopback.
So the issuer, every URL in discovery and the cookies stay exactly what a browser or an
app sees.

Test modules load this file with ``pytest_plugins = ["oidc_harness"]`` so that its
session-scoped fixtures are shared by all of them (one daemon for the whole run).
"""
from __future__ import annotations

import base64
import hashlib
import html
import json
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.parse
from dataclasses import dataclass, field

import pytest
import requests
from requests.adapters import HTTPAdapter

from conftest import AUTHCTL, AUTHD

HOST = "halos.test"
ISSUER = f"https://{HOST}/sso"
DISCOVERY_URL = ISSUER + "/.well-known/openid-configuration"
READY = re.compile(r"halos-authd ready: listening on tcp://(127\.0\.0\.1:\d+)(/\S*)")

# Users (cheap argon2 in the test config, so logins cost milliseconds).
USERS = {
    "alice": {"password": "correct horse 1", "email": "alice@halos.test", "name": "Alice Skipper",
              "groups": ["admins", "users"]},
    "bob": {"password": "battery staple 2", "email": "bob@halos.test", "name": "Bob Crew",
            "groups": ["users"]},
}

# Clients. Secrets are plaintext here; `post-app` is configured with a passlib-style
# `$pbkdf2-sha512$` digest of its secret (as HaLOS's merge script writes Authelia's).
BASIC_SECRET = "basic-app-secret-" + "b" * 32
POST_SECRET = "post-app-secret-" + "p" * 32
SIGNALK_SECRET = "4f1c" * 16  # `openssl rand -hex 32`, as HaLOS apps generate it
GRAFANA_SECRET = "grafana-secret-" + "g" * 32
HOMARR_SECRET = "homarr-secret-" + "h" * 32


@dataclass
class Client:
    client_id: str
    secret: str | None
    auth_method: str  # client_secret_basic | client_secret_post | none
    redirect_uris: list[str]
    scopes: list[str]
    post_logout_redirect_uris: list[str] = field(default_factory=list)

    @property
    def redirect_uri(self) -> str:
        return self.redirect_uris[0]

    @property
    def public(self) -> bool:
        return self.auth_method == "none"


CLIENTS = {
    "basic-app": Client("basic-app", BASIC_SECRET, "client_secret_basic",
                        ["https://app.halos.test/cb", "https://app.halos.test/other-cb",
                         "https://q.halos.test/cb?tenant=a"],
                        ["openid", "profile", "email", "groups", "offline_access"],
                        ["https://app.halos.test/logged-out"]),
    "post-app": Client("post-app", POST_SECRET, "client_secret_post",
                       ["https://post.halos.test/oauth/callback"],
                       ["openid", "profile", "email", "groups", "offline_access"],
                       ["https://post.halos.test/bye"]),
    "spa": Client("spa", None, "none", ["https://spa.halos.test/cb"],
                  ["openid", "profile", "offline_access"], ["https://spa.halos.test/"]),
    # As HaLOS ships them (halos.md A.3.2, A.6, C), ${HALOS_DOMAIN} = halos.test.
    "signalk": Client("signalk", SIGNALK_SECRET, "client_secret_post",
                      ["https://halos.test/signalk-server/signalk/v1/auth/oidc/callback"],
                      ["openid", "profile", "email", "groups"]),
    "grafana": Client("grafana", GRAFANA_SECRET, "client_secret_basic",
                      ["https://halos.test/grafana/login/generic_oauth"],
                      ["openid", "profile", "email", "groups"]),
    "homarr": Client("homarr", HOMARR_SECRET, "client_secret_basic",
                     ["https://halos.test/api/auth/callback/oidc"],
                     ["openid", "profile", "email", "groups"]),
}


def pbkdf2_sha512_digest(secret: str, rounds: int = 1000) -> str:
    """`$pbkdf2-sha512$ROUNDS$SALT$HASH` in passlib's format (adapted base64, no padding),
    which is what `authelia crypto hash generate pbkdf2 --variant sha512` prints."""
    salt = secrets.token_bytes(16)
    dk = hashlib.pbkdf2_hmac("sha512", secret.encode(), salt, rounds, 64)

    def ab64(b: bytes) -> str:
        return base64.b64encode(b).decode().rstrip("=").replace("+", ".")

    return f"$pbkdf2-sha512${rounds}${ab64(salt)}${ab64(dk)}"


def yaml_str(s: str) -> str:
    return json.dumps(s)  # a JSON string is a valid YAML double-quoted scalar


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def pkce_pair() -> tuple[str, str]:
    verifier = b64url(secrets.token_bytes(32))
    challenge = b64url(hashlib.sha256(verifier.encode()).digest())
    return verifier, challenge


# --------------------------------------------------------------------------------------
# HTTP: https://halos.test/... → the daemon, as a reverse proxy would
# --------------------------------------------------------------------------------------

class ProxyAdapter(HTTPAdapter):
    """Forwards `https://*.halos.test/sso/...` to the daemon over plain HTTP with the
    headers a trusted TLS-terminating proxy adds. The response keeps the https URL, so
    cookies (Domain=halos.test; Secure) are stored and sent as a browser would."""

    def __init__(self, upstream: str):
        super().__init__()
        self.upstream = upstream  # http://127.0.0.1:PORT

    def send(self, request, **kwargs):
        original = request.url
        u = urllib.parse.urlsplit(original)
        assert u.scheme == "https" and (u.hostname == HOST or u.hostname.endswith("." + HOST)), \
            f"the test tried to reach {original} (only the SSO host is served)"
        assert u.path.startswith("/sso/") or u.path == "/sso", \
            f"the test tried to reach {original}, which is an app, not the SSO daemon"
        forwarded = request.copy()
        forwarded.url = self.upstream + u.path + (f"?{u.query}" if u.query else "")
        forwarded.headers["X-Forwarded-Host"] = u.netloc
        forwarded.headers["X-Forwarded-Proto"] = "https"
        forwarded.headers["X-Forwarded-For"] = "192.0.2.10"
        resp = super().send(forwarded, **kwargs)
        resp.url = original
        resp.request = request
        return resp


def mount(session: requests.Session, upstream: str) -> requests.Session:
    adapter = ProxyAdapter(upstream)
    session.mount(f"https://{HOST}/", adapter)
    for sub in ("app", "post", "spa", "q", "evil"):
        session.mount(f"https://{sub}.{HOST}/", adapter)  # fails loudly if ever followed
    return session


# --------------------------------------------------------------------------------------
# The daemon
# --------------------------------------------------------------------------------------

class Daemon:
    def __init__(self, workdir: str, lifespans: dict | None = None):
        self.dir = workdir
        self.lifespans = lifespans or {}
        self.proc: subprocess.Popen | None = None
        self.log: list[str] = []
        self.upstream = ""
        self.prefix = ""

    @property
    def config_path(self) -> str:
        return os.path.join(self.dir, "authd.yml")

    def write_config(self) -> None:
        d = self.dir
        os.makedirs(os.path.join(d, "oidc-clients.d"), exist_ok=True)
        with open(os.path.join(d, "hostnames.conf"), "w") as f:
            f.write(f"{HOST}\n")
        secret_file = os.path.join(d, "signalk-oidc-secret")
        with open(secret_file, "w") as f:
            f.write(SIGNALK_SECRET + "\n")  # as `openssl rand -hex 32 > file`: trailing newline
        os.chmod(secret_file, 0o600)
        lines = [
            "server:",
            "  address: tcp://127.0.0.1:0/sso",
            f"hostnames_file: {yaml_str(os.path.join(d, 'hostnames.conf'))}",
            "authentication_backend:",
            "  file:",
            f"    path: {yaml_str(os.path.join(d, 'users_database.yml'))}",
            "    password: {argon2: {memory: 1024, iterations: 1, parallelism: 1}}",
            "storage:",
            f"  local: {{path: {yaml_str(os.path.join(d, 'state.sqlite'))}}}",
            "session:",
            f"  cookies: [{{domain: {HOST}, authelia_url: 'https://{HOST}/sso', "
            f"default_redirection_url: 'https://{HOST}/'}}]",
            # Many logins from one address in a test run; keep bans out of the way.
            "regulation: {max_retries: 1000, find_time: 2m, ban_time: 1s}",
            "identity_providers:",
            "  oidc:",
            f"    issuer: {ISSUER}",
            f"    clients_dir: {yaml_str(os.path.join(d, 'oidc-clients.d'))}",
        ]
        if self.lifespans:
            lines.append("    lifespans: {" + ", ".join(f"{k}: {v}" for k, v in self.lifespans.items()) + "}")
        lines.append("    clients:")

        def client(c: Client, **extra):
            out = [f"      - client_id: {c.client_id}",
                   f"        token_endpoint_auth_method: {c.auth_method}",
                   f"        redirect_uris: {json.dumps(c.redirect_uris)}",
                   f"        scopes: [{', '.join(c.scopes)}]"]
            if c.post_logout_redirect_uris:
                out.append(f"        post_logout_redirect_uris: {json.dumps(c.post_logout_redirect_uris)}")
            for k, v in extra.items():
                out.append(f"        {k}: {v}")
            return out

        lines += client(CLIENTS["basic-app"], client_secret=yaml_str(BASIC_SECRET))
        lines += client(CLIENTS["post-app"], client_secret=yaml_str(pbkdf2_sha512_digest(POST_SECRET)))
        lines += client(CLIENTS["spa"], public="true")
        lines += client(CLIENTS["signalk"], client_name=yaml_str("Signal K Server"),
                        client_secret_file=yaml_str(secret_file), consent_mode="implicit")
        lines += client(CLIENTS["grafana"], client_name="Grafana", client_secret=yaml_str(GRAFANA_SECRET),
                        consent_mode="implicit")
        lines += client(CLIENTS["homarr"], client_name=yaml_str("Homarr Dashboard"),
                        client_secret=yaml_str(HOMARR_SECRET), consent_mode="implicit")
        # A client with explicit consent (for the consent page and denial).
        lines += client(Client("consent-app", "consent-secret-" + "c" * 32, "client_secret_basic",
                               ["https://app.halos.test/consent-cb"], ["openid", "profile", "email"]),
                        client_secret=yaml_str("consent-secret-" + "c" * 32), consent_mode="explicit")
        lines += client(Client("remember-app", "remember-secret-" + "r" * 32, "client_secret_basic",
                               ["https://app.halos.test/remember-cb"], ["openid", "profile", "email"]),
                        client_secret=yaml_str("remember-secret-" + "r" * 32), consent_mode="pre-configured",
                        pre_configured_consent_duration="1h")
        with open(self.config_path, "w") as f:
            f.write("\n".join(lines) + "\n")

    def add_users(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHD_")}
        for name, u in USERS.items():
            args = [str(AUTHCTL), "--config", self.config_path, "user", "add", name,
                    "--display-name", u["name"], "--email", u["email"]]
            for g in u["groups"]:
                args += ["--group", g]
            args.append("--password-stdin")
            p = subprocess.run(args, input=u["password"] + "\n", capture_output=True, text=True, env=env)
            assert p.returncode == 0, f"halos-authctl user add {name}: {p.stderr}"

    def start(self, timeout: float = 30.0) -> "Daemon":
        self.write_config()
        self.add_users()
        env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHD_")}
        env.pop("HALOS_DOMAIN", None)
        self.proc = subprocess.Popen([str(AUTHD), "--config", self.config_path],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True, env=env)
        ready = threading.Event()

        def pump():
            for line in self.proc.stderr:
                self.log.append(line)
                m = READY.search(line)
                if m and not ready.is_set():
                    self.upstream = "http://" + m.group(1)
                    self.prefix = m.group(2)
                    ready.set()
            ready.set()  # EOF: the daemon exited

        threading.Thread(target=pump, daemon=True).start()
        ready.wait(timeout)
        if not self.upstream:
            self.stop()
            raise AssertionError("halos-authd did not become ready:\n" + "".join(self.log))
        assert self.prefix == "/sso", self.prefix
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def session(self) -> requests.Session:
        """A cookie jar, like a browser profile, that reaches https://halos.test/sso."""
        return mount(requests.Session(), self.upstream)

    def log_text(self) -> str:
        return "".join(self.log)


def start_daemon(lifespans: dict | None = None):
    workdir = tempfile.mkdtemp(prefix="halos-oidc-e2e-")
    d = Daemon(workdir, lifespans).start()
    return d, workdir


@pytest.fixture(scope="session")
def oidc_daemon():
    d, workdir = start_daemon()
    yield d
    d.stop()
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def discovery(oidc_daemon) -> dict:
    r = oidc_daemon.session().get(DISCOVERY_URL)
    assert r.status_code == 200, r.text
    return r.json()


@pytest.fixture(scope="session")
def jwks(oidc_daemon, discovery) -> dict:
    r = oidc_daemon.session().get(discovery["jwks_uri"])
    assert r.status_code == 200, r.text
    return r.json()


# --------------------------------------------------------------------------------------
# Browser steps: portal login and the authorization endpoint
# --------------------------------------------------------------------------------------

def login(browser: requests.Session, user: str = "alice", target: str | None = None) -> requests.Response:
    body = {"username": user, "password": USERS[user]["password"], "keepMeLoggedIn": False}
    if target is not None:
        body.update(targetURL=target, requestMethod="GET")
    r = browser.post(ISSUER + "/api/firstfactor", json=body, allow_redirects=False)
    assert r.status_code == 200, (r.status_code, r.text)
    assert r.json()["status"] == "OK", r.text
    return r


def authorization_url(endpoint: str, **params) -> str:
    return endpoint + "?" + urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})


def callback_params(resp: requests.Response, redirect_uri: str) -> dict:
    """The query of a redirect to the client's `redirect_uri`; fails on anything else."""
    assert resp.status_code in (302, 303), (resp.status_code, resp.headers, resp.text[:500])
    loc = resp.headers["Location"]
    base, _, query = loc.partition("?")
    reg_base, _, reg_query = redirect_uri.partition("?")
    assert base == reg_base, f"redirected to {loc}, expected {redirect_uri}"
    pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
    for kv in urllib.parse.parse_qsl(reg_query, keep_blank_values=True):
        assert kv in pairs, f"registered query {kv} lost in {loc}"
    out: dict = {}
    for k, v in pairs:
        assert k not in out, f"repeated {k} in {loc}"
        out[k] = v
    return out


def portal_round_trip(browser: requests.Session, authz_url: str, user: str = "alice") -> requests.Response:
    """What a browser does with no session: authorization → portal → login → back to the
    authorization endpoint. Returns the final response of the authorization endpoint."""
    r = browser.get(authz_url, allow_redirects=False)
    assert r.status_code == 302, (r.status_code, r.text[:300])
    portal = urllib.parse.urlsplit(r.headers["Location"])
    assert f"{portal.scheme}://{portal.netloc}{portal.path}" == ISSUER + "/", r.headers["Location"]
    assert portal.query, r.headers["Location"]
    q = dict(urllib.parse.parse_qsl(portal.query))
    rd = q["rd"]
    assert rd.startswith(ISSUER + "/api/oidc/authorization?"), rd
    lr = login(browser, user, target=rd)
    data = lr.json().get("data") or {}
    assert data.get("redirect") == rd, f"the portal would not send the browser back: {lr.text}"
    return browser.get(rd, allow_redirects=False)


def error_page_without_redirect(resp: requests.Response) -> None:
    """An HTML error page (4xx) and no redirect anywhere (RFC 6749 §4.1.2.1, O1)."""
    assert 400 <= resp.status_code < 500, (resp.status_code, resp.headers.get("Location"))
    assert "Location" not in resp.headers, resp.headers["Location"]
    assert resp.headers.get("Content-Type", "").startswith("text/html"), resp.headers.get("Content-Type")


def no_redirect(resp: requests.Response) -> None:
    """No redirect (an error page or a confirmation page)."""
    assert resp.status_code not in (301, 302, 303, 307, 308), (resp.status_code, resp.headers.get("Location"))
    assert "Location" not in resp.headers, resp.headers["Location"]


def tags(page: str, name: str) -> list[dict]:
    """The attributes of every `<name ...>` tag of an HTML page (enough for our pages)."""
    return [{k: html.unescape(v) for k, v in re.findall(r'([\w-]+)="([^"]*)"', t)}
            for t in re.findall(rf"<{name}\b[^>]*>", page, re.I)]


def finish_logout(browser: requests.Session, resp: requests.Response) -> requests.Response:
    """If `resp` is a sign-out confirmation page (a POST form) and the user is still signed
    in, confirm as the user would. Either design (sign out at once, or confirm first) is
    conformant (RP-Initiated Logout §2; security.md C2)."""
    forms = [f for f in tags(resp.text, "form") if f.get("method", "").lower() == "post"]
    if forms and is_logged_in(browser):
        fields = {t["name"]: t.get("value", "") for t in tags(resp.text, "input") if t.get("name")}
        fields.update({t["name"]: t.get("value", "") for t in tags(resp.text, "button") if t.get("name")})
        resp = browser.post(urllib.parse.urljoin(ISSUER + "/", forms[0].get("action", "")), data=fields,
                            allow_redirects=False)
        assert resp.status_code < 400, resp.status_code
    return resp


def is_logged_in(browser: requests.Session) -> bool:
    r = browser.get(ISSUER + "/api/state")
    assert r.status_code == 200, r.text
    return bool((r.json().get("data") or {}).get("username"))


# --------------------------------------------------------------------------------------
# ID tokens
# --------------------------------------------------------------------------------------

def half_hash(value: str) -> str:
    """`at_hash` for RS256/ES256: base64url of the left half of SHA-256."""
    return b64url(hashlib.sha256(value.encode()).digest()[:16])


def validate_id_token(id_token: str, jwks: dict, client_id: str, nonce: str | None,
                      access_token: str | None) -> dict:
    """Validates an ID token the way authlib's OpenID client does (joserfc signature check
    against the JWKS with the discovered algorithms, then `authlib.oidc.core.CodeIDToken`),
    plus explicit checks of what authlib only checks when present. Returns the claims."""
    from authlib.oidc.core import CodeIDToken
    from joserfc import jwt
    from joserfc.jwk import KeySet

    key_set = KeySet.import_key_set(jwks)
    token = jwt.decode(id_token, key_set, algorithms=["RS256", "ES256"])
    header, claims = token.header, dict(token.claims)
    assert header["alg"] in ("RS256", "ES256"), header
    assert header.get("kid") in {k["kid"] for k in jwks["keys"]}, header  # B-03: kid present
    checked = CodeIDToken(claims, header,
                          {"iss": {"essential": True, "values": [ISSUER]},
                           "aud": {"essential": True, "values": [client_id]}},
                          {"nonce": nonce, "client_id": client_id, "access_token": access_token})
    checked.validate(leeway=5)
    now = time.time()
    assert claims["iss"] == ISSUER  # byte for byte (O7)
    aud = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
    assert client_id in aud, claims
    assert claims.get("azp", client_id) == client_id, claims
    assert isinstance(claims["sub"], str) and claims["sub"], claims
    assert now - 5 < claims["exp"] <= now + 86400, claims
    assert abs(claims["iat"] - now) < 300, claims
    assert claims["auth_time"] <= now + 5, claims
    if nonce is None:
        assert "nonce" not in claims, claims
    else:
        assert claims["nonce"] == nonce, claims
    if access_token is not None:
        assert claims["at_hash"] == half_hash(access_token), claims
    return claims


def forge_alg_none(claims: dict, kid: str | None = None) -> str:
    header = {"alg": "none", "typ": "JWT"}
    if kid:
        header["kid"] = kid
    return (b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode()) + ".")


def forge_hs256_with_rsa_public_key(claims: dict, jwk: dict) -> str:
    """The classic algorithm-confusion forgery: HS256 keyed with the provider's RSA public
    key (PEM bytes), which a verifier that takes `alg` from the token would accept."""
    import hmac as _hmac

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicNumbers

    def b64int(s: str) -> int:
        return int.from_bytes(base64.urlsafe_b64decode(s + "=" * (-len(s) % 4)), "big")

    pub = RSAPublicNumbers(b64int(jwk["e"]), b64int(jwk["n"])).public_key()
    pem = pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    header = {"alg": "HS256", "typ": "JWT", "kid": jwk["kid"]}
    signing_input = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())
    sig = _hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64url(sig)


def jwt_claims(token: str) -> dict:
    """The payload of a JWS, unverified (for building forgeries from a real token)."""
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


# --------------------------------------------------------------------------------------
# A relying party built on authlib
# --------------------------------------------------------------------------------------

@dataclass
class Attempt:
    url: str
    state: str
    nonce: str | None
    verifier: str | None


class RP:
    """A relying party as an app would write it with `authlib`'s requests client."""

    def __init__(self, daemon: Daemon, discovery: dict, jwks: dict, client: Client,
                 scopes: list[str] | None = None, redirect_uri: str | None = None):
        from authlib.integrations.requests_client import OAuth2Session

        self.daemon, self.discovery, self.jwks, self.client = daemon, discovery, jwks, client
        self.redirect_uri = redirect_uri or client.redirect_uri
        self.session = OAuth2Session(
            client.client_id, client.secret, token_endpoint_auth_method=client.auth_method,
            revocation_endpoint_auth_method=client.auth_method,
            scope=" ".join(scopes or client.scopes), redirect_uri=self.redirect_uri,
            code_challenge_method="S256")
        mount(self.session, daemon.upstream)

    def begin(self, pkce: bool = True, nonce: bool = True, **extra) -> Attempt:
        from authlib.common.security import generate_token

        verifier = generate_token(48) if pkce else None
        n = secrets.token_urlsafe(24) if nonce else None
        kwargs = dict(extra)
        if n:
            kwargs["nonce"] = n
        if not pkce:
            self.session.code_challenge_method = None
        try:
            url, state = self.session.create_authorization_url(
                self.discovery["authorization_endpoint"], code_verifier=verifier, **kwargs)
        finally:
            self.session.code_challenge_method = "S256"
        return Attempt(url, state, n, verifier)

    def code(self, browser: requests.Session, attempt: Attempt) -> tuple[str, dict]:
        """Sends the browser (which has a session) to the authorization endpoint; returns
        the callback URL and its parameters."""
        r = browser.get(attempt.url, allow_redirects=False)
        cb = callback_params(r, self.redirect_uri)
        assert "error" not in cb, cb
        assert cb["state"] == attempt.state, cb
        assert cb["iss"] == ISSUER, cb  # RFC 9207
        return r.headers["Location"], cb

    def exchange(self, callback_url: str, attempt: Attempt) -> dict:
        token = self.session.fetch_token(
            self.discovery["token_endpoint"], authorization_response=callback_url,
            state=attempt.state, code_verifier=attempt.verifier)
        self.check_token_response(token)
        return dict(token)

    def check_token_response(self, token: dict) -> None:
        assert token["token_type"].lower() == "bearer", token
        assert isinstance(token["expires_in"], int) and 0 < token["expires_in"] <= 31_536_000, token
        assert len(token["access_token"]) >= 22, token

    def validate(self, token: dict, nonce: str | None) -> dict:
        return validate_id_token(token["id_token"], self.jwks, self.client.client_id, nonce,
                                 token["access_token"])

    def login(self, browser: requests.Session, **extra) -> tuple[dict, dict]:
        """Code flow for a browser that already has an SSO session: tokens and ID-token claims."""
        att = self.begin(**extra)
        url, _ = self.code(browser, att)
        token = self.exchange(url, att)
        return token, self.validate(token, att.nonce)

    def token_post(self, data: dict, auth: str | None = "registered") -> requests.Response:
        """A raw token-endpoint request with this client's registered authentication."""
        return self.raw_post(self.discovery["token_endpoint"], data, auth)

    def raw_post(self, url: str, data: dict, auth: str | None = "registered") -> requests.Response:
        data = dict(data)
        kw: dict = {}
        method = self.client.auth_method if auth == "registered" else auth
        if method == "client_secret_basic":
            kw["auth"] = (urllib.parse.quote(self.client.client_id, safe=""),
                          urllib.parse.quote(self.client.secret, safe=""))
        elif method == "client_secret_post":
            data.update(client_id=self.client.client_id, client_secret=self.client.secret)
        elif method == "none":
            data["client_id"] = self.client.client_id
        s = mount(requests.Session(), self.daemon.upstream)
        return s.post(url, data=data, allow_redirects=False, **kw)

    def userinfo(self, access_token: str, method: str = "GET") -> requests.Response:
        s = mount(requests.Session(), self.daemon.upstream)
        return s.request(method, self.discovery["userinfo_endpoint"],
                         headers={"Authorization": f"Bearer {access_token}"})


def oauth_error(resp: requests.Response, status: int | tuple, error: str | tuple) -> dict:
    """A token/introspection/revocation error: status, JSON body with `error`, no-store."""
    statuses = status if isinstance(status, tuple) else (status,)
    errors = error if isinstance(error, tuple) else (error,)
    assert resp.status_code in statuses, (resp.status_code, resp.text)
    assert resp.headers.get("Content-Type", "").startswith("application/json"), resp.headers
    body = resp.json()
    assert body.get("error") in errors, body
    assert "no-store" in resp.headers.get("Cache-Control", ""), resp.headers
    return body
