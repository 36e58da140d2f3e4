"""API tokens through real Caddy, nginx and Traefik: `halos-authctl token create` while the daemon
runs, the token passes forward auth to the upstream as its owner, and is refused outside its
host/path scope, after it expires and after it is revoked. See harness.py for the stacks."""
import time

import pytest

from harness import DOMAIN, Stack, header_values, make_certs, reap_proxies, upstream_headers
from conftest import authctl

PROXIES = ["caddy", "nginx", "traefik"]
APP = "app.halos.test"
ADMIN = "admin.halos.test"


@pytest.fixture(scope="module", autouse=True)
def _reap_proxies():
    yield
    reap_proxies()


@pytest.fixture(scope="session")
def certs(tmp_path_factory):
    return make_certs(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def stack(request, tmp_path, certs):
    st = Stack(tmp_path / request.param, request.param, "https", certs)
    yield st
    st.stop()


def ctl(st, *args):
    return authctl("--config", str(st.daemon.config), *args)


def create(st, *args):
    p = ctl(st, "token", "create", *args)
    lines = p.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("halos_"), p.stdout
    return lines[0]


def until(what, cond, timeout=10.0):
    """The daemon notices the CLI's changes within about a second; there is no signal to wait
    for, so poll (bounded)."""
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, f"timed out waiting for: {what}"
        time.sleep(0.05)


def get(st, host, path, token, header="Authorization"):
    value = f"Bearer {token}" if header == "Authorization" else token
    return st.client().get(st.url(host, path), headers={header: value, "Accept": "application/json"})


def assert_refused(st, r):
    """Refused before the upstream. Caddy and Traefik pass the daemon's 401 and its
    WWW-Authenticate on; nginx's auth_request turns every 401 into its own answer."""
    assert r.status != 200, r.text
    if st.proxy_name != "nginx":
        assert r.status == 401, f"{r.status} {r.text}"
        assert (r.header("WWW-Authenticate") or "").startswith("Bearer realm="), r.headers


@pytest.mark.parametrize("stack", PROXIES, indirect=True)
def test_token_reaches_the_upstream_in_scope_and_is_refused_otherwise(stack):
    st = stack
    token = create(st, "--user", "alice", "--name", "e2e", "--host", APP, "--path", "/api/*")
    until("the running daemon knows the new token",
          lambda: get(st, APP, "/api/data?x=1", token).status == 200)
    for header in ("Authorization", "X-Api-Key"):
        r = get(st, APP, "/api/data?x=1", token, header)
        assert r.status == 200, f"{header}: {r.status} {r.text}\n{st.logs()}"
        seen = upstream_headers(r.body)
        assert header_values(seen, "Remote-User") == ["alice"], seen
        assert header_values(seen, "Remote-Groups") == ["users,crew"], seen
        assert header_values(seen, "Remote-Email") == ["alice@halos.test"], seen

    before = len(st.upstream.requests)
    assert_refused(st, get(st, APP, "/other", token))
    assert_refused(st, get(st, ADMIN, "/api/data", token))
    assert_refused(st, get(st, DOMAIN, "/api/data", token))
    wrong = token[:-1] + ("A" if token[-1] != "A" else "B")
    assert_refused(st, get(st, APP, "/api/data", wrong))
    assert len(st.upstream.requests) == before, "a refused token reached the upstream"

    # Revoked with the daemon running: refused within about a second.
    token_id = token.split("_")[1]
    ctl(st, "token", "revoke", token_id)
    until("the revoked token is refused", lambda: get(st, APP, "/api/data", token).status != 200)
    before = len(st.upstream.requests)
    assert_refused(st, get(st, APP, "/api/data", token))
    assert len(st.upstream.requests) == before, "a revoked token reached the upstream"


@pytest.mark.parametrize("stack", PROXIES, indirect=True)
def test_token_is_refused_after_it_expires(stack):
    st = stack
    token = create(st, "--user", "alice", "--expires", "2s")
    until("the running daemon knows the new token",
          lambda: get(st, APP, "/", token).status == 200)
    until("the token expires", lambda: get(st, APP, "/", token).status != 200)
    before = len(st.upstream.requests)
    assert_refused(st, get(st, APP, "/", token))
    assert len(st.upstream.requests) == before


@pytest.mark.parametrize("stack", PROXIES, indirect=True)
def test_one_time_login_code_signs_in_once_through_the_proxy(stack):
    """`halos-authctl user login-code` → the portal's /login-code form through the proxy → a
    session the proxy's forward auth accepts for the app; the code works only once."""
    st = stack
    code = ctl(st, "user", "login-code", "alice").stdout.strip()
    c = st.client()
    page = c.browser_get(st.url(DOMAIN, "/sso/login-code"))
    assert page.status == 200 and 'name="code"' in page.text, f"{page.status} {page.text}"
    csrf = c.cookie("halos_csrf").value
    form = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "text/html"}
    r = c.request("POST", st.url(DOMAIN, "/sso/login-code"), headers=form,
                  body=f"code={code}&csrf={csrf}")
    assert r.status == 303, f"{r.status} {r.text}\n{st.logs()}"
    assert r.header("Location") == st.portal + "/settings"
    r = c.browser_get(st.url(APP, "/deck"))
    assert r.status == 200, f"{r.status} {r.text}\n{st.logs()}"
    assert header_values(upstream_headers(r.body), "Remote-User") == ["alice"]

    again = st.client()
    again.browser_get(st.url(DOMAIN, "/sso/login-code"))
    r = again.request("POST", st.url(DOMAIN, "/sso/login-code"), headers=form,
                      body=f"code={code}&csrf={again.cookie('halos_csrf').value}")
    assert r.status == 401 and 'role="alert"' in r.text, f"{r.status} {r.text}"
    assert again.browser_get(st.url(APP, "/deck")).status == 302, "a used code made a session"
