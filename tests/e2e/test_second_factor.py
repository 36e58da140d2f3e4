"""Second factors and first login through a real proxy (Caddy over https) and a real browser:
TOTP codes computed independently with pyotp, passkeys with Chromium's virtual authenticator,
and the forced change of the documented default password.
"""
import html
import re
import time
import urllib.parse

import pyotp
import pytest

from conftest import AUTHCTL
from harness import (DOMAIN, USERS, Client, Stack, _clean_env, make_certs, reap_proxies,
                     run_browser)

import subprocess

SECURE = "secure.halos.test"
APP = "app.halos.test"


@pytest.fixture(scope="module", autouse=True)
def _reap_proxies():
    yield
    reap_proxies()


@pytest.fixture(scope="session")
def certs(tmp_path_factory):
    return make_certs(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def stack(tmp_path, certs):
    st = Stack(tmp_path / "caddy-https", "caddy", "https", certs)
    yield st
    st.stop()


def csrf_of(page_text: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', page_text)
    assert m, page_text
    return m.group(1)


def post_form(c: Client, url: str, fields: dict):
    return c.request("POST", url, headers={"Content-Type": "application/x-www-form-urlencoded"},
                     body=urllib.parse.urlencode(fields))


def enrol_totp(st: Stack, c: Client) -> pyotp.TOTP:
    """Enrols TOTP from /settings and returns the authenticator (built from the otpauth URI)."""
    settings = c.get(st.portal + "/settings")
    assert settings.status == 200, settings.text
    token = csrf_of(settings.text)
    start = post_form(c, st.portal + "/settings/totp/start", {"csrf": token})
    assert start.status == 200, start.text
    uri = html.unescape(re.search(r'id="totp-uri">([^<]+)<', start.text).group(1))
    totp = pyotp.parse_uri(uri)
    assert isinstance(totp, pyotp.TOTP) and totp.digits == 6 and totp.interval == 30
    done = post_form(c, st.portal + "/settings/totp/confirm", {"csrf": token, "code": totp.now()})
    assert done.status == 200 and "Authenticator app set up" in done.text, done.text
    return totp


def test_totp_two_factor_rule_enrolment_login_and_replay(stack):
    st = stack
    secure = st.url(SECURE, "/engine")
    c, r = st.login("alice", target=secure)
    assert "data" not in r.json(), "a two_factor target must not be handed out after one factor"
    # Password only: one_factor passes, two_factor does not.
    assert c.browser_get(st.url(APP, "/")).status == 200
    denied = c.browser_get(secure)
    assert denied.status == 302 and denied.header("Location").startswith(st.portal + "/")
    # Not enrolled: the portal says so instead of letting the user through.
    page = c.get(st.portal + "/?rd=" + urllib.parse.quote(secure, safe=""))
    assert 'id="no-second-factor"' in page.text and "/settings" in page.text

    totp = enrol_totp(st, c)
    page = c.get(st.portal + "/?rd=" + urllib.parse.quote(secure, safe=""))
    assert 'name="code"' in page.text and 'id="verify"' in page.text

    api = st.portal + "/api/secondfactor/totp"
    wrong = str((int(totp.now()) + 1) % 1_000_000).zfill(6)
    bad = c.post_json(api, {"token": wrong, "targetURL": secure})
    assert bad.status == 401 and bad.json()["status"] == "KO"
    old_session = c.cookie("halos_session").value
    # The enrolment used the current step; the next step's code is within the skew.
    code = totp.at(time.time() + 30)
    ok = c.post_json(api, {"token": code, "targetURL": secure})
    assert ok.status == 200, f"{ok.text}\n{st.logs()}"
    assert ok.json() == {"status": "OK", "data": {"redirect": secure}}
    assert c.cookie("halos_session").value != old_session, "no new session id after the second factor"
    landed = c.browser_get(secure)
    assert landed.status == 200, landed.text
    state = c.get(st.portal + "/api/state").json()
    assert state["data"]["authentication_level"] == 2

    # A second login cannot reuse the code, nor an older one.
    c2, _ = st.login("alice", target=secure)
    assert c2.post_json(api, {"token": code, "targetURL": secure}).status == 401
    assert c2.post_json(api, {"token": totp.now(), "targetURL": secure}).status == 401
    assert c2.browser_get(secure).status == 302


def test_totp_form_in_the_browser(stack, certs):
    st = stack
    c, _ = st.login("alice")
    totp = enrol_totp(st, c)
    secure = st.url(SECURE, "/deck")
    res, = run_browser([{"steps": [
        {"op": "goto", "url": secure},
        {"op": "fill", "selector": "input[name=username]", "value": "alice"},
        {"op": "fill", "selector": "input[name=password]", "value": USERS["alice"][3]},
        {"op": "click", "selector": "#sign-in"},
        {"op": "fill", "selector": "input[name=code]", "value": "000000" if totp.at(time.time() + 30) != "000000" else "111111"},
        {"op": "click", "selector": "#verify"},
        {"op": "fill", "selector": "input[name=code]", "value": totp.at(time.time() + 30)},
        {"op": "click", "selector": "#verify"},
    ]}])
    assert res["error"] is None, res["error"]
    steps = {s["step"]: s for s in res["steps"]}
    assert steps[3]["url"].startswith(st.portal + "/"), steps[3]
    assert "second factor" in steps[3]["body"]
    assert steps[5]["alert"] and "not valid" in steps[5]["alert"], steps[5]
    assert steps[7]["url"] == secure and steps[7]["status"] == 200, f"{steps[7]}\n{st.logs()}"


def test_default_password_is_changed_before_any_redirect_or_code(tmp_path, certs):
    # A fixed daemon port: the daemon restarts (its readiness line is the signal) to pick up the
    # user added below, and the proxy keeps pointing at it.
    st = Stack(tmp_path / "caddy-https", "caddy", "https", certs, fixed_daemon_port=True)
    try:
        _default_password_flow(st)
    finally:
        st.stop()


def _default_password_flow(st):
    d = st.daemon
    for name in ("skipper", "deckhand"):
        p = subprocess.run([str(AUTHCTL), "--config", str(d.config), "--users-file",
                            str(d.users_file), "user", "add", name, "--display-name", name,
                            "--email", f"{name}@halos.test", "--group", "admins",
                            "--password-stdin"],
                           input="halos\n", capture_output=True, text=True, env=_clean_env())
        assert p.returncode == 0, p.stderr
    d.restart()

    # In the browser, without JavaScript forms: sign-in leads to the change page, not the app.
    app = st.url(APP, "/chart")
    new_pw = "binnacle gimbal 2207 lantern"
    res, = run_browser([{"steps": [
        {"op": "goto", "url": app},
        {"op": "fill", "selector": "input[name=username]", "value": "deckhand"},
        {"op": "fill", "selector": "input[name=password]", "value": "halos"},
        {"op": "click", "selector": "#sign-in"},
        {"op": "goto", "url": app},
        {"op": "goto", "url": st.portal + "/password/change?rd=" + urllib.parse.quote(app, safe="")},
        {"op": "fill", "selector": "#new_password", "value": "halos"},
        {"op": "fill", "selector": "#confirm_password", "value": "halos"},
        {"op": "click", "selector": "#change-password"},
        {"op": "fill", "selector": "#new_password", "value": new_pw},
        {"op": "fill", "selector": "#confirm_password", "value": new_pw},
        {"op": "click", "selector": "#change-password"},
    ]}])
    assert res["error"] is None, f"{res['error']}\n{st.logs()}"
    steps = {s["step"]: s for s in res["steps"]}
    assert "/sso/password/change" in steps[3]["url"] and "default password" in steps[3]["body"], steps[3]
    assert steps[4]["url"].startswith(st.portal + "/"), "the app let a must-change session in"
    assert steps[8]["alert"] == "The new password must differ from the default password.", steps[8]
    assert steps[11]["url"] == app and steps[11]["status"] == 200, f"{steps[11]}\n{st.logs()}"
    target = st.url(APP, "/logbook")
    c = st.client()
    login_api = st.url(DOMAIN, "/sso/api/firstfactor")
    r = c.post_json(login_api, {"username": "skipper", "password": "halos", "targetURL": target})
    assert r.status == 200, r.text
    redirect = r.json()["data"]["redirect"]
    assert redirect.startswith(st.portal + "/password/change?"), redirect
    # Until the change: the app, the portal and OIDC all treat the session as logged out.
    app = c.browser_get(target)
    assert app.status == 302 and app.header("Location").startswith(st.portal + "/")
    assert c.get(st.portal + "/api/state").json()["data"]["authentication_level"] == 0
    portal = c.get(st.portal + "/?rd=" + urllib.parse.quote(target, safe=""))
    assert portal.status == 302 and "/password/change" in portal.header("Location")

    page = c.get(redirect)
    assert page.status == 200 and 'id="must-change"' in page.text
    token = csrf_of(page.text)
    for weak in ("halos", "password1"):
        r = post_form(c, st.portal + "/password/change",
                      {"csrf": token, "new_password": weak, "confirm_password": weak, "rd": target})
        assert r.status == 400 and 'role="alert"' in r.text, weak
        assert c.browser_get(target).status == 302
    new = "mizzen topsail 1893 compass"
    r = post_form(c, st.portal + "/password/change",
                  {"csrf": token, "new_password": new, "confirm_password": new, "rd": target})
    assert r.status == 303 and r.header("Location") == target, r.text
    assert c.browser_get(target).status == 200
    c3 = st.client()
    assert c3.post_json(login_api, {"username": "skipper", "password": "halos"}).status == 401
    assert c3.post_json(login_api, {"username": "skipper", "password": new}).status == 200


def test_passkey_register_sign_in_and_two_factor(stack, certs):
    st = stack
    secure = st.url(SECURE, "/bridge")
    res, = run_browser([{"steps": [
        {"op": "authenticator"},
        {"op": "goto", "url": st.portal + "/"},
        {"op": "fill", "selector": "input[name=username]", "value": "alice"},
        {"op": "fill", "selector": "input[name=password]", "value": USERS["alice"][3]},
        {"op": "click", "selector": "#sign-in"},
        {"op": "goto", "url": st.portal + "/settings"},
        {"op": "fill", "selector": "#passkey-name", "value": "Virtual key"},
        {"op": "click", "selector": "#passkey-register"},
        {"op": "credentials"},
        {"op": "goto", "url": st.portal + "/logout"},
        {"op": "goto", "url": secure},
        {"op": "click", "selector": "#passkey-sign-in"},
        {"op": "goto", "url": st.portal + "/api/state"},
        # 13-: a passkey session has no recent password: removing needs it again.
        {"op": "goto", "url": st.portal + "/settings"},
        {"op": "fill", "selector": "#password", "value": USERS["alice"][3]},
        {"op": "click", "selector": "#reauth"},
        {"op": "click", "selector": ".passkey-delete"},
        {"op": "goto", "url": st.portal + "/logout"},
        {"op": "goto", "url": secure},
        {"op": "press", "selector": "#passkey-sign-in", "wait": "#passkey-error"},
    ]}], trust=certs)
    assert res["error"] is None, f"{res['error']}\n{st.logs()}"
    steps = {s["step"]: s for s in res["steps"]}
    registered = steps[7]
    assert "Virtual key" in registered["body"], registered
    creds = steps[8]["credentials"]
    assert len(creds) == 1 and creds[0]["rpId"] == DOMAIN and creds[0]["isResidentCredential"]
    assert steps[10]["url"].startswith(st.portal + "/"), steps[10]
    landed = steps[11]
    assert landed["url"] == secure and landed["status"] == 200, f"{landed}\n{st.logs()}"
    assert '"authentication_level":2' in steps[12]["body"].replace(" ", "")
    assert "Remove" not in steps[13]["body"] and "Enter your password" in steps[13]["body"]
    removed = steps[16]
    assert "Passkey removed" in removed["body"] and "No passkeys yet" in removed["body"], removed
    refused = steps[19]
    assert refused["url"].startswith(st.portal + "/") and refused["alert"], refused
    assert "Authentication failed" in refused["alert"], refused
