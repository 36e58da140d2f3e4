"""The first-login story end to end, through a real proxy (Caddy over https, a non-default port)
and Debian's Chromium: an admin issues a one-time login code with the real `halos-authctl`, the
user redeems it from the sign-in page's link, lands on /settings, enrols a passkey without ever
typing a password, signs out from there, and signs in again with the passkey, which passes a
two_factor rule. A user whose password is still the documented default is made to change it
first, even when signing in with a code.
"""
import subprocess
import urllib.parse

import pytest

from conftest import AUTHCTL, authctl
from harness import DOMAIN, USERS, Stack, _clean_env, make_certs, reap_proxies, run_browser

SECURE = "secure.halos.test"
INVALID = "This code is invalid, used or expired."


@pytest.fixture(scope="module", autouse=True)
def _reap_proxies():
    yield
    reap_proxies()


@pytest.fixture(scope="session")
def certs(tmp_path_factory):
    return make_certs(tmp_path_factory.mktemp("tls"))


def login_code(st: Stack, user: str) -> str:
    """What an admin runs on the appliance: the daemon's own config, code on stdout."""
    p = authctl("--config", str(st.daemon.config), "user", "login-code", user)
    code = p.stdout.strip()
    assert len(code) == 17 and "/login-code" in p.stderr, (p.stdout, p.stderr)
    return code


def test_login_code_then_passkey_without_a_password(tmp_path, certs):
    st = Stack(tmp_path / "caddy-https", "caddy", "https", certs)
    try:
        _code_then_passkey(st, certs)
    finally:
        st.stop()


def _code_then_passkey(st, certs):
    assert f":{st.port}/" in st.portal and st.port != 443, "the proxy must not be on 443"
    code = login_code(st, "alice")
    secure = st.url(SECURE, "/helm")
    res, = run_browser([{"steps": [
        {"op": "authenticator"},
        {"op": "goto", "url": st.portal + "/"},
        {"op": "click", "selector": "a:text('Sign in with a one-time code')"},
        {"op": "fill", "selector": "#code", "value": code.lower()},
        {"op": "click", "selector": "#redeem-code"},
        {"op": "fill", "selector": "#passkey-name", "value": "Chart table key"},
        {"op": "click", "selector": "#passkey-register"},
        {"op": "credentials"},
        {"op": "click", "selector": "a:text('Sign out')"},
        {"op": "goto", "url": secure},
        {"op": "click", "selector": "#passkey-sign-in"},
        {"op": "goto", "url": st.portal + "/api/state"},
        # 12-: the code is spent, even for the user who used it.
        {"op": "goto", "url": st.portal + "/login-code"},
        {"op": "fill", "selector": "#code", "value": code},
        {"op": "click", "selector": "#redeem-code"},
    ]}], trust=certs)
    assert res["error"] is None, f"{res['error']}\n{st.logs()}"
    steps = {s["step"]: s for s in res["steps"]}
    code_page = steps[2]
    assert code_page["url"] == st.portal + "/login-code" and code_page["status"] == 200, code_page
    assert "Sign in with a password" in code_page["body"], code_page
    landed = steps[4]
    assert landed["url"] == st.portal + "/settings" and landed["status"] == 200, \
        f"{landed}\n{st.logs()}"
    assert "Signed in as alice" in landed["body"], landed
    # The code counts as a fresh sign-in: no password asked before enrolling.
    assert "Enter your password" not in landed["body"] and "No passkeys yet" in landed["body"]
    registered = steps[6]
    assert registered["url"] == st.portal + "/settings", registered
    assert "Chart table key" in registered["body"] and not registered["alert"], registered
    creds = steps[7]["credentials"]
    # The relying party is the portal's host, without the proxy's port.
    assert len(creds) == 1 and creds[0]["rpId"] == DOMAIN and creds[0]["isResidentCredential"]
    signed_out = steps[8]
    assert signed_out["url"].startswith(st.portal + "/") and "Signed in as" not in signed_out["body"]
    assert steps[9]["url"].startswith(st.portal + "/"), "signed out, yet the two_factor app let me in"
    passed = steps[10]
    assert passed["url"] == secure and passed["status"] == 200, f"{passed}\n{st.logs()}"
    state = steps[11]["body"].replace(" ", "")
    assert '"username":"alice"' in state and '"authentication_level":2' in state, state
    spent = steps[14]
    assert spent["status"] == 401 and spent["alert"] == INVALID, spent

    # The code login left the password as it was.
    c = st.client()
    r = c.post_json(st.url(DOMAIN, "/sso/api/firstfactor"),
                    {"username": "alice", "password": USERS["alice"][3]})
    assert r.status == 200, r.text


def test_login_code_for_a_user_with_the_default_password(tmp_path, certs):
    # A fixed daemon port: the daemon restarts to pick up the user added below.
    st = Stack(tmp_path / "caddy-https", "caddy", "https", certs, fixed_daemon_port=True)
    try:
        _code_with_default_password(st)
    finally:
        st.stop()


def _code_with_default_password(st):
    d = st.daemon
    p = subprocess.run([str(AUTHCTL), "--config", str(d.config), "--users-file", str(d.users_file),
                        "user", "add", "bosun", "--display-name", "Bosun", "--email",
                        "bosun@halos.test", "--group", "admins", "--password-stdin"],
                       input="halos\n", capture_output=True, text=True, env=_clean_env())
    assert p.returncode == 0, p.stderr
    d.restart()
    code = login_code(st, "bosun")
    new_pw = "lanyard shackle 5150 halyard"
    res, = run_browser([{"steps": [
        {"op": "goto", "url": st.portal + "/login-code"},
        {"op": "fill", "selector": "#code", "value": code},
        {"op": "click", "selector": "#redeem-code"},
        {"op": "goto", "url": st.url("app.halos.test", "/galley")},
        {"op": "goto", "url": st.portal + "/settings"},
        {"op": "fill", "selector": "#new_password", "value": new_pw},
        {"op": "fill", "selector": "#confirm_password", "value": new_pw},
        {"op": "click", "selector": "#change-password"},
    ]}])
    assert res["error"] is None, f"{res['error']}\n{st.logs()}"
    steps = {s["step"]: s for s in res["steps"]}
    forced = steps[2]
    settings = urllib.parse.quote(st.portal + "/settings", safe="")
    assert forced["url"] == f"{st.portal}/password/change?rd={settings}", f"{forced}\n{st.logs()}"
    assert "default password" in forced["body"], forced
    # Until the change, neither an app nor the settings accept the session.
    assert steps[3]["url"].startswith(st.portal + "/password/change?"), steps[3]
    assert steps[4]["url"] == forced["url"], steps[4]
    changed = steps[7]
    assert changed["url"] == st.portal + "/settings" and changed["status"] == 200, \
        f"{changed}\n{st.logs()}"
    assert "Enter your password" not in changed["body"] and "Add a passkey" in changed["body"]

    login_api = st.url(DOMAIN, "/sso/api/firstfactor")
    c = st.client()
    assert c.post_json(login_api, {"username": "bosun", "password": "halos"}).status == 401
    assert c.post_json(login_api, {"username": "bosun", "password": new_pw}).status == 200
