"""Attack-catalogue entries (shared/reference/security.md) about the OpenID provider that
the other OIDC suites do not already pin down. Test names carry the catalogue id;
tests/SECURITY-COVERAGE.md maps every entry."""

import collections
import math
import urllib.parse

import pytest

from oidc_harness import CLIENTS, ISSUER, RP, callback_params, jwt_claims, login

pytest_plugins = ["oidc_harness"]


@pytest.fixture
def alice(oidc_daemon):
    b = oidc_daemon.session()
    login(b, "alice")
    return b


def shannon_bits(token: str) -> float:
    """Length × per-character Shannon entropy (the conformance suite's estimate)."""
    counts = collections.Counter(token)
    per_char = -sum(c / len(token) * math.log2(c / len(token)) for c in counts.values())
    return per_char * len(token)


def test_O7_one_issuer_string_everywhere(oidc_daemon, discovery, jwks, alice):
    rp = RP(oidc_daemon, discovery, jwks, CLIENTS["basic-app"])
    att = rp.begin()
    url, cb = rp.code(alice, att)
    token = rp.exchange(url, att)
    info = rp.session.introspect_token(discovery["introspection_endpoint"],
                                       token=token["access_token"]).json()
    issuers = {discovery["issuer"], cb["iss"], jwt_claims(token["id_token"])["iss"], info["iss"]}
    assert issuers == {ISSUER}, issuers


def test_O8_tokens_are_random_short_lived_and_not_cached(oidc_daemon, discovery, jwks, alice):
    rp = RP(oidc_daemon, discovery, jwks, CLIENTS["basic-app"])
    seen = set()
    for _ in range(20):
        att = rp.begin()
        url, cb = rp.code(alice, att)
        r = rp.token_post({"grant_type": "authorization_code", "code": cb["code"],
                           "redirect_uri": rp.redirect_uri, "code_verifier": att.verifier})
        assert r.status_code == 200, r.text
        assert "no-store" in r.headers.get("Cache-Control", ""), r.headers
        token = r.json()
        assert 0 < token["expires_in"] <= 3600, token
        for value in (cb["code"], token["access_token"], token["refresh_token"]):
            assert value not in seen
            seen.add(value)
            assert shannon_bits(value) > 96, value
        ui = rp.userinfo(token["access_token"])
        assert ui.status_code == 200 and "no-store" in ui.headers.get("Cache-Control", ""), ui.headers
        intro = rp.raw_post(discovery["introspection_endpoint"], {"token": token["access_token"]})
        assert intro.status_code == 200 and "no-store" in intro.headers.get("Cache-Control", ""), intro.headers


def test_O17_scopes_beyond_the_client_are_not_granted(oidc_daemon, discovery, jwks, alice):
    # spa may have openid, profile and offline_access: groups, email and admin are not granted.
    rp = RP(oidc_daemon, discovery, jwks, CLIENTS["spa"],
            scopes=["openid", "profile", "groups", "email", "admin"])
    att = rp.begin()
    r = alice.get(att.url, allow_redirects=False)
    cb = callback_params(r, rp.redirect_uri)
    if "error" in cb:  # refusing the request outright is allowed too
        assert cb["error"] == "invalid_scope", cb
        return
    token = rp.exchange(r.headers["Location"], att)
    granted = set(token.get("scope", "").split())
    assert granted <= {"openid", "profile", "offline_access"}, granted
    claims = jwt_claims(token["id_token"])
    info = rp.userinfo(token["access_token"]).json()
    for doc in (claims, info):
        assert "groups" not in doc and "email" not in doc, doc


def test_O19_credential_posts_answer_303(oidc_daemon, discovery):
    browser = oidc_daemon.session()
    page = browser.get(ISSUER + "/", allow_redirects=False)
    token = browser.cookies.get("__Host-halos_csrf")
    assert token and token in page.text
    r = browser.post(ISSUER + "/login", allow_redirects=False, data={
        "username": "alice", "password": "correct horse 1", "csrf": token,
        "rd": "https://app.halos.test/x", "rm": "GET"})
    assert r.status_code == 303, r.status_code
    assert urllib.parse.urlsplit(r.headers["Location"]).hostname == "app.halos.test"


def test_C3_consent_is_bound_to_the_browser(oidc_daemon, discovery):
    from test_oidc_security import authz, consent_form, valid_params

    redirect_uri = "https://app.halos.test/consent-cb"
    params = valid_params(client_id="consent-app", redirect_uri=redirect_uri)
    a = oidc_daemon.session()
    login(a, "alice")
    action, fields, buttons = consent_form(authz(a, discovery, **params))
    url = urllib.parse.urljoin(ISSUER + "/", action)
    name, value = buttons["consent-approve"]
    # Bob's browser submits alice's pending consent (with alice's CSRF field): no code.
    b = oidc_daemon.session()
    login(b, "bob")
    r = b.post(url, data={**fields, name: value}, allow_redirects=False)
    assert "code=" not in r.headers.get("Location", ""), r.headers
    # A query parameter cannot pre-approve.
    for bypass in ({"bypass_approval_prompt": "true"}, {"consent": "granted"}, {name: value}):
        consent_form(authz(a, discovery, **params, **bypass))
    # The form's one-time id is bound to the exact request: changing it gets no code.
    r = a.post(url, data={**fields, "state": "other-state", name: value}, allow_redirects=False)
    assert r.status_code == 403 and "code=" not in r.headers.get("Location", ""), r.status_code
    # Alice's own submission of a fresh form works once; replaying it gets no second code.
    action, fields, buttons = consent_form(authz(a, discovery, **params))
    r = a.post(url, data={**fields, name: value}, allow_redirects=False)
    assert callback_params(r, redirect_uri)["code"]
    for choice in ("approve", "deny"):
        replay = a.post(url, data={**fields, name: choice}, allow_redirects=False)
        assert replay.status_code == 403, replay.status_code
        assert "Location" not in replay.headers, replay.headers
