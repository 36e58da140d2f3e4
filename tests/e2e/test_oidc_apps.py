"""The three HaLOS apps that use the provider, each checked the way it talks to it
(reference/halos.md A.3.1, A.6, C). Signal K's login is in tests/oidc-node/signalk.test.mjs
(it uses `jose.jwtVerify`); its logout is here."""
import re

import pytest

pytest.register_assert_rewrite("oidc_harness")

from oidc_harness import (CLIENTS, ISSUER, RP, USERS, callback_params, finish_logout, is_logged_in, jwt_claims,
                          login, no_redirect, portal_round_trip)

pytest_plugins = ["oidc_harness"]


@pytest.fixture
def rp_for(oidc_daemon, discovery, jwks):
    def make(client_id, **kw):
        return RP(oidc_daemon, discovery, jwks, CLIENTS[client_id], **kw)
    return make


def jmespath_contains_admins(groups) -> str | None:
    # GF_AUTH_GENERIC_OAUTH_ROLE_ATTRIBUTE_PATH="contains(groups[*], 'admins') && 'Admin'"
    return "Admin" if isinstance(groups, list) and "admins" in groups else None


@pytest.mark.parametrize("user,role", [("alice", "Admin"), ("bob", None)])
def test_oidc_grafana_generic_oauth(user, role, rp_for, oidc_daemon, discovery):
    """Grafana generic_oauth as HaLOS configures it: hard-coded Authelia URLs under /sso,
    USE_PKCE=true, client_secret_basic, LOGIN_ATTRIBUTE_PATH=sub,
    GROUPS_ATTRIBUTE_PATH=groups; Grafana reads the ID token's claims, then API_URL."""
    assert discovery["authorization_endpoint"] == ISSUER + "/api/oidc/authorization"
    assert discovery["token_endpoint"] == ISSUER + "/api/oidc/token"
    assert discovery["userinfo_endpoint"] == ISSUER + "/api/oidc/userinfo"
    rp = rp_for("grafana")
    browser = oidc_daemon.session()
    att = rp.begin(nonce=False)  # Grafana sends state + PKCE, no nonce
    resp = portal_round_trip(browser, att.url, user)
    cb = callback_params(resp, rp.redirect_uri)
    assert cb["state"] == att.state
    token = rp.exchange(resp.headers["Location"], att)
    claims = rp.validate(token, None)
    u = USERS[user]
    info = rp.userinfo(token["access_token"]).json()
    for src in (claims, info):
        assert src["email"] == u["email"], src
        assert src["groups"] == u["groups"], src
        assert src["name"] == u["name"], src
        assert jmespath_contains_admins(src["groups"]) == role
    login_attr = claims["sub"]  # LOGIN_ATTRIBUTE_PATH=sub
    assert login_attr == info["sub"] and re.fullmatch(r"[\x21-\x7e]+", login_attr)


def test_oidc_homarr_forced_userinfo(rp_for, oidc_daemon):
    """Homarr (Auth.js) as HaLOS configures it: client_secret_basic, scope override
    "openid profile email groups", AUTH_OIDC_FORCE_USERINFO=true: the profile comes from
    userinfo, which must carry groups and a verified email (accounts are linked by email)."""
    rp = rp_for("homarr", scopes=["openid", "profile", "email", "groups"])
    browser = oidc_daemon.session()
    att = rp.begin()
    resp = portal_round_trip(browser, att.url, "alice")
    token = rp.exchange(resp.headers["Location"], att)
    assert "refresh_token" not in token  # no offline_access for this client
    claims = rp.validate(token, att.nonce)
    rp.session.token = token
    r = rp.session.get(rp.discovery["userinfo_endpoint"])
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("application/json")
    info = r.json()
    assert info["sub"] == claims["sub"]
    assert info["email"] == USERS["alice"]["email"] and info["email_verified"] is True
    assert info["groups"] == ["admins", "users"]
    assert info["name"] == USERS["alice"]["name"] and info["preferred_username"] == "alice"


def test_oidc_signalk_scope_order_and_secret_file(rp_for, oidc_daemon):
    """Signal K's client as HaLOS ships it: secret read from client_secret_file (with the
    trailing newline of `openssl rand -hex 32 > file`), scope "openid email profile groups"."""
    rp = rp_for("signalk", scopes=["openid", "email", "profile", "groups"])
    browser = oidc_daemon.session()
    login(browser, "bob")
    token, claims = rp.login(browser)
    assert claims["groups"] == ["users"] and claims["email"] == USERS["bob"]["email"]
    assert set(token["scope"].split()) == {"openid", "email", "profile", "groups"}


def test_oidc_signalk_logout_ends_the_sso_session(rp_for, oidc_daemon, discovery):
    """Signal K's /signalk/v1/auth/oidc/logout sends the browser to the end_session_endpoint
    with only `post_logout_redirect_uri=<its origin>/` — no id_token_hint, no client_id.
    Nothing identifies the client, so the target must not be followed (RPL-05), but the
    user asked to log out: the SSO session must end (at once, or after a confirmation the
    user submits); otherwise Signal K's auto-login signs the user straight back in."""
    rp = rp_for("signalk", scopes=["openid", "email", "profile", "groups"])
    browser = oidc_daemon.session()
    login(browser, "alice")
    rp.login(browser)
    r = browser.get(discovery["end_session_endpoint"],
                    params={"post_logout_redirect_uri": "https://halos.test/"}, allow_redirects=False)
    no_redirect(r)
    r = finish_logout(browser, r)
    assert not is_logged_in(browser), (
        f"end-session answered {r.status_code} and left the SSO session alive: "
        f"{re.sub(r'<[^>]+>', ' ', r.text)[:200].split()}")


def test_oidc_id_token_carries_what_apps_read(rp_for, oidc_daemon):
    """Apps that read only the ID token (Grafana, Signal K) find the scope claims there."""
    rp = rp_for("grafana")
    browser = oidc_daemon.session()
    login(browser, "alice")
    token, claims = rp.login(browser)
    raw = jwt_claims(token["id_token"])
    for k in ("email", "email_verified", "groups", "name", "preferred_username", "auth_time", "amr", "azp",
              "at_hash"):
        assert k in raw, k
