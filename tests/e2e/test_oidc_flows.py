"""Complete OpenID Connect flows driven by Python `authlib` against the running daemon, for a
confidential `client_secret_basic` client, a confidential `client_secret_post` client (whose
secret is configured as a `$pbkdf2-sha512$` digest) and a public client (PKCE, no secret):
portal login, code + PKCE, ID token validated against the JWKS, userinfo, refresh rotation
and reuse detection, introspection, revocation, end-session (issue 4, DESIGN §9)."""
import urllib.parse

import pytest

pytest.register_assert_rewrite("oidc_harness")

from oidc_harness import (CLIENTS, ISSUER, RP, USERS, callback_params, error_page_without_redirect, finish_logout,
                          is_logged_in, jwt_claims, login, no_redirect, oauth_error, portal_round_trip)

pytest_plugins = ["oidc_harness"]

FLOW_CLIENTS = ["basic-app", "post-app", "spa"]


@pytest.fixture
def rp_for(oidc_daemon, discovery, jwks):
    def make(client_id, **kw):
        return RP(oidc_daemon, discovery, jwks, CLIENTS[client_id], **kw)
    return make


@pytest.fixture
def browser(oidc_daemon):
    return oidc_daemon.session()


@pytest.fixture
def alice(browser):
    login(browser, "alice")
    return browser


def expected_claims(client_id: str, user: str = "alice") -> dict:
    u = USERS[user]
    scopes = CLIENTS[client_id].scopes
    out = {}
    if "profile" in scopes:
        out.update(name=u["name"], preferred_username=user)
    if "email" in scopes:
        out.update(email=u["email"], email_verified=True)
    if "groups" in scopes:
        out.update(groups=u["groups"])
    return out


@pytest.mark.parametrize("client_id", FLOW_CLIENTS)
def test_oidc_code_flow_through_portal_login(client_id, rp_for, browser, discovery):
    rp = rp_for(client_id)
    att = rp.begin()
    q = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(att.url).query))
    assert q["code_challenge_method"] == "S256" and q["code_challenge"], q
    # No session yet: authorization → portal → /api/firstfactor → back → code.
    resp = portal_round_trip(browser, att.url, "alice")
    cb = callback_params(resp, rp.redirect_uri)
    assert set(cb) == {"code", "state", "iss"}, cb
    assert cb["state"] == att.state and cb["iss"] == ISSUER == discovery["issuer"]
    assert len(cb["code"]) >= 22, cb  # ≥ 128 bits (CC-09)
    token = rp.exchange(resp.headers["Location"], att)
    assert token.get("refresh_token"), "offline_access was granted: a refresh token is due"
    assert set(token["scope"].split()) == set(CLIENTS[client_id].scopes), token
    claims = rp.validate(token, att.nonce)
    for k, v in expected_claims(client_id).items():
        assert claims.get(k) == v, (k, claims)
    if "email" not in CLIENTS[client_id].scopes:
        assert "email" not in claims and "groups" not in claims, claims
    assert "pwd" in claims["amr"], claims
    assert claims["sub"] != "alice", "sub must be an opaque id, not the user name"


@pytest.mark.parametrize("client_id", FLOW_CLIENTS)
def test_oidc_sub_is_stable_and_per_user(client_id, rp_for, oidc_daemon):
    rp = rp_for(client_id)
    b1, b2, b3 = oidc_daemon.session(), oidc_daemon.session(), oidc_daemon.session()
    login(b1, "alice"), login(b2, "alice"), login(b3, "bob")
    s1 = rp.login(b1)[1]["sub"]
    s2 = rp.login(b2)[1]["sub"]
    s3 = rp.login(b3)[1]["sub"]
    assert s1 == s2 != s3


@pytest.mark.parametrize("client_id", FLOW_CLIENTS)
def test_oidc_userinfo_get_and_post(client_id, rp_for, alice):
    rp = rp_for(client_id)
    token, claims = rp.login(alice)
    # authlib's session sends the access token as a Bearer header.
    rp.session.token = token
    for method in ("GET", "POST"):
        r = rp.session.request(method, rp.discovery["userinfo_endpoint"])
        assert r.status_code == 200, (method, r.status_code, r.text)
        assert r.headers["Content-Type"].startswith("application/json"), r.headers
        assert "no-store" in r.headers.get("Cache-Control", ""), r.headers
        info = r.json()
        assert info["sub"] == claims["sub"], (info, claims)
        for k, v in expected_claims(client_id).items():
            assert info.get(k) == v, (method, k, info)
        assert "access_token" not in info and "id_token" not in info
    # The auth scheme is case-insensitive (F2-19).
    r = rp.session.get(rp.discovery["userinfo_endpoint"], withhold_token=True,
                       headers={"Authorization": "bearer " + token["access_token"]})
    assert r.status_code == 200, r.text
    # Never from the query string; an unknown token is invalid_token.
    r = rp.session.get(rp.discovery["userinfo_endpoint"], withhold_token=True,
                       params={"access_token": token["access_token"]})
    assert r.status_code == 401, r.text
    r = rp.userinfo(token["access_token"] + "x")
    assert r.status_code == 401 and 'error="invalid_token"' in r.headers.get("WWW-Authenticate", ""), r.headers


@pytest.mark.parametrize("client_id", FLOW_CLIENTS)
def test_oidc_refresh_rotation_and_reuse_detection(client_id, rp_for, alice):
    rp = rp_for(client_id)
    token, claims = rp.login(alice)
    rt1 = token["refresh_token"]
    t2 = dict(rp.session.refresh_token(rp.discovery["token_endpoint"], refresh_token=rt1))
    rp.check_token_response(t2)
    rt2 = t2["refresh_token"]
    assert rt2 and rt2 != rt1 and t2["access_token"] != token["access_token"]
    # OIDC Core §12.2: same iss, sub, aud, azp, auth_time; a fresh iat; nonce absent or same.
    refreshed_nonce = claims["nonce"] if "nonce" in jwt_claims(t2["id_token"]) else None
    c2 = rp.validate(t2, refreshed_nonce)
    for k in ("iss", "sub", "aud", "auth_time"):
        assert c2[k] == claims[k], (k, c2, claims)
    assert c2["iat"] >= claims["iat"]
    assert rp.userinfo(t2["access_token"]).status_code == 200
    # The rotated-out refresh token is dead, and presenting it again revokes the family.
    oauth_error(rp.token_post({"grant_type": "refresh_token", "refresh_token": rt1}), 400, "invalid_grant")
    oauth_error(rp.token_post({"grant_type": "refresh_token", "refresh_token": rt2}), 400, "invalid_grant")
    r = rp.userinfo(t2["access_token"])
    assert r.status_code == 401, "access tokens of a revoked family must stop working"


@pytest.mark.parametrize("client_id", ["basic-app", "post-app"])
def test_oidc_introspection(client_id, rp_for, alice):
    rp = rp_for(client_id)
    token, claims = rp.login(alice)
    url = rp.discovery["introspection_endpoint"]
    r = rp.session.introspect_token(url, token=token["access_token"])
    assert r.status_code == 200 and "no-store" in r.headers.get("Cache-Control", ""), (r.status_code, r.headers)
    info = r.json()
    assert info["active"] is True, info
    assert info["client_id"] == client_id and info["sub"] == claims["sub"] and info["iss"] == ISSUER, info
    assert info["exp"] > info["iat"], info
    assert set(info["scope"].split()) == set(CLIENTS[client_id].scopes), info
    r = rp.session.introspect_token(url, token=token["refresh_token"], token_type_hint="refresh_token")
    assert r.json()["active"] is True, r.text
    # Unknown token; another client's token (O12): inactive and nothing else.
    assert rp.session.introspect_token(url, token="not-a-token").json() == {"active": False}
    other = rp_for("post-app" if client_id == "basic-app" else "basic-app")
    r = other.session.introspect_token(url, token=token["access_token"])
    assert r.status_code == 200 and r.json() == {"active": False}, r.text
    # No client authentication: 401 (RFC 7662 §2.1).
    r = rp.raw_post(url, {"token": token["access_token"]}, auth=None)
    assert r.status_code == 401, (r.status_code, r.text)
    # Revoked: inactive.
    assert rp.session.revoke_token(rp.discovery["revocation_endpoint"], token=token["access_token"],
                                   token_type_hint="access_token").status_code == 200
    assert rp.session.introspect_token(url, token=token["access_token"]).json() == {"active": False}


@pytest.mark.parametrize("client_id", FLOW_CLIENTS)
def test_oidc_revocation(client_id, rp_for, alice):
    rp = rp_for(client_id)
    url = rp.discovery["revocation_endpoint"]
    # Revoking an access token: it stops working.
    token, _ = rp.login(alice)
    r = rp.session.revoke_token(url, token=token["access_token"], token_type_hint="access_token")
    assert r.status_code == 200, r.text
    assert rp.userinfo(token["access_token"]).status_code == 401
    # Revoking a refresh token ends the grant: refresh and its access tokens (O13).
    token, _ = rp.login(alice)
    r = rp.session.revoke_token(url, token=token["refresh_token"], token_type_hint="refresh_token")
    assert r.status_code == 200, r.text
    oauth_error(rp.token_post({"grant_type": "refresh_token", "refresh_token": token["refresh_token"]}),
                400, "invalid_grant")
    assert rp.userinfo(token["access_token"]).status_code == 401
    # Unknown tokens: 200 (RFC 7009 §2.2).
    assert rp.session.revoke_token(url, token="no-such-token").status_code == 200
    # Another client cannot revoke this client's token.
    token, _ = rp.login(alice)
    other = rp_for("basic-app" if client_id != "basic-app" else "post-app")
    r = other.session.revoke_token(url, token=token["refresh_token"], token_type_hint="refresh_token")
    assert r.status_code in (200, 400), r.text
    assert rp.userinfo(token["access_token"]).status_code == 200
    t2 = rp.session.refresh_token(rp.discovery["token_endpoint"], refresh_token=token["refresh_token"])
    assert t2["refresh_token"]


# --------------------------------------------------------------------------------------
# End-session (RP-Initiated Logout 1.0)
# --------------------------------------------------------------------------------------

def end_session(browser, discovery, **params):
    return browser.get(discovery["end_session_endpoint"], params=params, allow_redirects=False)


def assert_logged_out(browser, rp):
    assert not is_logged_in(browser), "the SSO session must be over"
    att = rp.begin()
    r = browser.get(att.url, allow_redirects=False)
    assert r.status_code == 302 and r.headers["Location"].startswith(ISSUER + "/?"), r.headers.get("Location")


@pytest.mark.parametrize("client_id", FLOW_CLIENTS)
def test_oidc_end_session_without_id_token_hint(client_id, rp_for, alice, discovery):
    rp = rp_for(client_id)
    rp.login(alice)
    assert is_logged_in(alice)
    r = end_session(alice, discovery)
    no_redirect(r)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html"), r.status_code
    finish_logout(alice, r)
    assert_logged_out(alice, rp)


@pytest.mark.parametrize("client_id", FLOW_CLIENTS)
@pytest.mark.parametrize("identify", ["id_token_hint", "client_id"])
def test_oidc_end_session_to_registered_post_logout_redirect_uri(client_id, identify, rp_for, alice, discovery):
    rp = rp_for(client_id)
    token, _ = rp.login(alice)
    target = CLIENTS[client_id].post_logout_redirect_uris[0]
    who = {"id_token_hint": token["id_token"]} if identify == "id_token_hint" else {"client_id": client_id}
    r = end_session(alice, discovery, post_logout_redirect_uri=target, state="st-8n2", **who)
    assert r.status_code in (302, 303), (r.status_code, r.text[:300])
    assert r.headers["Location"] == target + "?state=st-8n2", r.headers["Location"]
    assert_logged_out(alice, rp)


@pytest.mark.parametrize("client_id", FLOW_CLIENTS)
def test_oidc_end_session_without_state_redirects_to_the_exact_uri(client_id, rp_for, alice, discovery):
    # RPL-08: no state sent, none added; the target is the registered URI, byte for byte.
    rp = rp_for(client_id)
    token, _ = rp.login(alice)
    target = CLIENTS[client_id].post_logout_redirect_uris[0]
    r = end_session(alice, discovery, post_logout_redirect_uri=target, id_token_hint=token["id_token"])
    assert r.status_code in (302, 303), r.status_code
    assert r.headers["Location"] == target, r.headers["Location"]
    assert_logged_out(alice, rp)


@pytest.mark.parametrize("bad", [
    "https://evil.example/",
    "https://app.halos.test/logged-out?foo=bar",   # query added (RPL-10)
    "https://app.halos.test/logged-out/",
    "http://app.halos.test/logged-out",
    "https://APP.halos.test/logged-out",
    "https://app.halos.test.evil.example/logged-out",
    "https://post.halos.test/bye",                  # another client's URI
    "//evil.example/",
])
def test_oidc_end_session_refuses_unregistered_post_logout_redirect_uri(bad, rp_for, alice, discovery):
    rp = rp_for("basic-app")
    token, _ = rp.login(alice)
    r = end_session(alice, discovery, post_logout_redirect_uri=bad, state="s", id_token_hint=token["id_token"])
    error_page_without_redirect(r)
    r = end_session(alice, discovery, post_logout_redirect_uri=bad, state="s", client_id="basic-app")
    error_page_without_redirect(r)


def test_oidc_end_session_without_client_does_not_redirect(rp_for, alice, discovery):
    # RPL-05: a post_logout_redirect_uri with nothing identifying the client is never followed.
    r = end_session(alice, discovery, post_logout_redirect_uri=CLIENTS["basic-app"].post_logout_redirect_uris[0],
                    state="s")
    no_redirect(r)
