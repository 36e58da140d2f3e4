"""Negative tests for each security point of issue 4 (reference/security.md O1–O4, O9, O15;
oidc-conformance.md B-28/B-30/B-34/B-36, F2-xx, X-xx, RPL-xx): codes single-use and bound
to client, redirect URI and PKCE; replay revokes; code lifetime; error pages for bad
redirect URIs and unknown clients; `request` → `request_not_supported`; forged
`id_token_hint`s; no open redirect at end-session."""
import base64
import concurrent.futures
import hashlib
import json
import shutil
import time
import urllib.parse

import pytest

pytest.register_assert_rewrite("oidc_harness")

from oidc_harness import (CLIENTS, ISSUER, RP, Client, b64url, callback_params, error_page_without_redirect,
                          forge_alg_none, forge_hs256_with_rsa_public_key, jwt_claims, login, no_redirect, tags,
                          oauth_error, pkce_pair, start_daemon)

pytest_plugins = ["oidc_harness"]


@pytest.fixture
def rp_for(oidc_daemon, discovery, jwks):
    def make(client_id, **kw):
        return RP(oidc_daemon, discovery, jwks, CLIENTS[client_id], **kw)
    return make


@pytest.fixture
def alice(oidc_daemon):
    b = oidc_daemon.session()
    login(b, "alice")
    return b


def code_for(rp, browser, **begin):
    att = rp.begin(**begin)
    _, cb = rp.code(browser, att)
    return att, cb["code"]


def redeem(rp, code, verifier, redirect_uri=None, auth="registered", **extra):
    data = {"grant_type": "authorization_code", "code": code,
            "redirect_uri": redirect_uri or rp.redirect_uri, **extra}
    if verifier is not None:
        data["code_verifier"] = verifier
    return rp.token_post(data, auth=auth)


def authz(browser, discovery, **params):
    return browser.get(discovery["authorization_endpoint"],
                       params={k: v for k, v in params.items() if v is not None}, allow_redirects=False)


def valid_params(client="basic-app", **over):
    c = CLIENTS[client]
    _, challenge = pkce_pair()
    p = {"client_id": c.client_id, "redirect_uri": c.redirect_uri, "response_type": "code",
         "scope": "openid profile", "state": "st-7q", "nonce": "n-1",
         "code_challenge": challenge, "code_challenge_method": "S256"}
    p.update(over)
    return p


def redirect_error(resp, redirect_uri, error, state="st-7q"):
    """An error sent to the validated redirect URI: error, state, iss; never a code (O2)."""
    cb = callback_params(resp, redirect_uri)
    assert cb.get("error") in ((error,) if isinstance(error, str) else error), cb
    assert "code" not in cb, cb
    assert cb.get("iss") == ISSUER, cb
    if state is None:
        assert "state" not in cb, cb
    else:
        assert cb.get("state") == state, cb
    assert set(cb) <= {"error", "error_description", "error_uri", "state", "iss"}, cb
    desc = cb.get("error_description", "")
    assert all(c in "\t\n\r" or 0x20 <= ord(c) <= 0x7E and c not in '"\\' for c in desc), desc
    return cb


# --------------------------------------------------------------------------------------
# O4: codes are single-use, bound, short-lived; a replay revokes what the code issued
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("client_id", ["basic-app", "post-app", "spa"])
def test_oidc_code_replay_is_refused_and_revokes_issued_tokens(client_id, rp_for, alice):
    rp = rp_for(client_id)
    att, code = code_for(rp, alice)
    first = redeem(rp, code, att.verifier)
    assert first.status_code == 200, first.text
    assert "no-store" in first.headers.get("Cache-Control", ""), first.headers
    assert first.headers["Content-Type"].startswith("application/json")
    tokens = first.json()
    assert rp.userinfo(tokens["access_token"]).status_code == 200
    oauth_error(redeem(rp, code, att.verifier), 400, "invalid_grant")  # B-28
    assert rp.userinfo(tokens["access_token"]).status_code == 401, "B-29: replay must revoke the access token"
    oauth_error(rp.token_post({"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}),
                400, "invalid_grant")


def test_oidc_code_replay_revokes_tokens_refreshed_from_it(rp_for, alice):
    rp = rp_for("basic-app")
    att, code = code_for(rp, alice)
    tokens = redeem(rp, code, att.verifier).json()
    refreshed = rp.token_post({"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}).json()
    assert rp.userinfo(refreshed["access_token"]).status_code == 200
    oauth_error(redeem(rp, code, att.verifier), 400, "invalid_grant")
    assert rp.userinfo(refreshed["access_token"]).status_code == 401
    oauth_error(rp.token_post({"grant_type": "refresh_token", "refresh_token": refreshed["refresh_token"]}),
                400, "invalid_grant")


def test_oidc_concurrent_redemptions_of_one_code_yield_one_token(rp_for, alice):
    rp = rp_for("basic-app")
    att, code = code_for(rp, alice)
    with concurrent.futures.ThreadPoolExecutor(20) as ex:
        results = list(ex.map(lambda _: redeem(rp, code, att.verifier).status_code, range(20)))
    assert results.count(200) == 1, results
    assert set(results) == {200, 400}, results


def test_oidc_code_is_bound_to_its_client(rp_for, alice):
    basic, post, spa = rp_for("basic-app"), rp_for("post-app"), rp_for("spa")
    # client1's code with client2's (valid) credentials and redirect URI (F2-07).
    att, code = code_for(basic, alice)
    oauth_error(redeem(post, code, att.verifier, redirect_uri=basic.redirect_uri), (400, 401),
                ("invalid_grant", "invalid_client"))
    # ... and the code is burnt for its own client too.
    oauth_error(redeem(basic, code, att.verifier), 400, "invalid_grant")
    # A public client's code redeemed by a confidential one, and the reverse.
    att, code = code_for(spa, alice)
    oauth_error(redeem(basic, code, att.verifier, redirect_uri=spa.redirect_uri), 400, "invalid_grant")
    att, code = code_for(basic, alice)
    oauth_error(redeem(spa, code, att.verifier, redirect_uri=basic.redirect_uri), (400, 401),
                ("invalid_grant", "invalid_client"))


def test_oidc_client_id_must_match_authenticated_client(rp_for, alice):
    # Basic credentials of basic-app with client_id=post-app in the body (F2-08, O11).
    basic = rp_for("basic-app")
    att, code = code_for(basic, alice)
    r = redeem(basic, code, att.verifier, client_id="post-app")
    oauth_error(r, 401, "invalid_client")


def test_oidc_code_is_bound_to_redirect_uri(rp_for, alice):
    rp = rp_for("basic-app")
    att, code = code_for(rp, alice)
    # Another URI registered for the same client.
    oauth_error(redeem(rp, code, att.verifier, redirect_uri="https://app.halos.test/other-cb"), 400, "invalid_grant")
    att, code = code_for(rp, alice)
    data = {"grant_type": "authorization_code", "code": code, "code_verifier": att.verifier}
    oauth_error(rp.token_post(data), 400, ("invalid_grant", "invalid_request"))


@pytest.mark.parametrize("client_id", ["basic-app", "spa"])
def test_oidc_pkce_verifier_required_and_checked(client_id, rp_for, alice):
    rp = rp_for(client_id)
    att, code = code_for(rp, alice)
    oauth_error(redeem(rp, code, None), 400, "invalid_grant")  # F2-03
    att, code = code_for(rp, alice)
    other_verifier, _ = pkce_pair()
    oauth_error(redeem(rp, code, other_verifier), 400, "invalid_grant")  # F2-04


@pytest.mark.parametrize("bad_verifier", ["a" * 42, "a" * 129, "a" * 42 + "+"])
def test_oidc_pkce_verifier_syntax(bad_verifier, rp_for, alice, discovery):
    # the challenge matches the malformed verifier, so only its syntax is at fault.
    challenge = base64.urlsafe_b64encode(hashlib.sha256(bad_verifier.encode()).digest()).rstrip(b"=").decode()
    rp = rp_for("basic-app")
    r = authz(alice, discovery, **valid_params(code_challenge=challenge))
    code = callback_params(r, rp.redirect_uri)["code"]
    oauth_error(redeem(rp, code, bad_verifier), 400, ("invalid_grant", "invalid_request"))


def test_oidc_pkce_downgrade_refused(rp_for, alice):
    # authorized without a challenge (allowed for this confidential client), then a
    # token request with a code_verifier must be refused.
    rp = rp_for("basic-app")
    att, code = code_for(rp, alice, pkce=False)
    assert "code_challenge" not in att.url
    verifier, _ = pkce_pair()
    oauth_error(redeem(rp, code, verifier), 400, "invalid_grant")
    # Without any verifier the same kind of code works (the client does not require PKCE).
    att, code = code_for(rp, alice, pkce=False)
    assert redeem(rp, code, None).status_code == 200


def test_oidc_public_client_must_use_pkce_s256(alice, discovery):
    spa = CLIENTS["spa"]
    r = authz(alice, discovery, **valid_params("spa", code_challenge=None, code_challenge_method=None))
    redirect_error(r, spa.redirect_uri, "invalid_request")  # F2-01
    verifier, _ = pkce_pair()
    r = authz(alice, discovery, **valid_params("spa", code_challenge=verifier, code_challenge_method="plain"))
    redirect_error(r, spa.redirect_uri, "invalid_request")  # F2-02
    r = authz(alice, discovery, **valid_params("basic-app", code_challenge=verifier, code_challenge_method="plain"))
    redirect_error(r, CLIENTS["basic-app"].redirect_uri, "invalid_request")


def test_oidc_code_lifetime_is_enforced():
    """A code older than `lifespans.authorize_code` is refused (F2-06; 60 s by default).
    The daemon runs with a 2 s lifetime; the wait tests the time limit, not readiness."""
    daemon, workdir = start_daemon(lifespans={"authorize_code": "2s"})
    try:
        disc = daemon.session().get(ISSUER + "/.well-known/openid-configuration").json()
        jwks = daemon.session().get(disc["jwks_uri"]).json()
        rp = RP(daemon, disc, jwks, CLIENTS["basic-app"])
        b = daemon.session()
        login(b, "alice")
        att, code = code_for(rp, b)
        assert redeem(rp, code, att.verifier).status_code == 200  # fresh: fine
        att, code = code_for(rp, b)
        time.sleep(3.5)
        oauth_error(redeem(rp, code, att.verifier), 400, "invalid_grant")
    finally:
        daemon.stop()
        shutil.rmtree(workdir, ignore_errors=True)


# --------------------------------------------------------------------------------------
# O5: refresh tokens are bound to their client and scope
# --------------------------------------------------------------------------------------

def test_oidc_refresh_token_bound_to_client_and_scope(rp_for, alice):
    basic, post, spa = rp_for("basic-app"), rp_for("post-app"), rp_for("spa")
    tokens, _ = basic.login(alice)
    rt = tokens["refresh_token"]
    # Another client's refresh token (B-37); no client authentication (F2-18).
    oauth_error(post.token_post({"grant_type": "refresh_token", "refresh_token": rt}), 400, "invalid_grant")
    oauth_error(basic.token_post({"grant_type": "refresh_token", "refresh_token": rt}, auth=None), (400, 401),
                ("invalid_client", "invalid_request"))
    oauth_error(spa.token_post({"grant_type": "refresh_token", "refresh_token": rt}), 400, "invalid_grant")
    # Scope may shrink, never grow.
    spa_tokens, _ = spa.login(alice)
    oauth_error(spa.token_post({"grant_type": "refresh_token", "refresh_token": spa_tokens["refresh_token"],
                                "scope": "openid profile email groups"}), 400, "invalid_scope")
    r = basic.token_post({"grant_type": "refresh_token", "refresh_token": rt, "scope": "openid email"})
    assert r.status_code == 200, r.text
    narrowed = r.json()
    assert set(narrowed["scope"].split()) == {"openid", "email"}, narrowed
    info = basic.userinfo(narrowed["access_token"]).json()
    assert "email" in info and "groups" not in info and "name" not in info, info


# --------------------------------------------------------------------------------------
# O1: client_id and redirect_uri validated first; errors are pages, never redirects
# --------------------------------------------------------------------------------------

BAD_REDIRECTS = [
    "https://app.halos.test/cb/",
    "https://app.halos.test/cb?x=1",
    "https://app.halos.test/cb#f",
    "https://APP.halos.test/cb",
    "https://app.halos.test:443/cb",
    "https://app.halos.test/CB",
    "https://app.halos.test/cb/../cb",
    "https://app.halos.test/cb;x=1",
    "https://app.halos.test/cb%2F",
    "https://app.halos.test@evil.example/cb",
    "http://app.halos.test/cb",
    "https://evil.example/cb",
    "https://spa.halos.test/cb",  # another client's URI
    "",
]


@pytest.mark.parametrize("bad", BAD_REDIRECTS)
def test_oidc_unregistered_redirect_uri_gets_an_error_page(bad, alice, discovery):
    error_page_without_redirect(authz(alice, discovery, **valid_params(redirect_uri=bad)))


def test_oidc_missing_redirect_uri_or_client_gets_an_error_page(alice, discovery, oidc_daemon):
    error_page_without_redirect(authz(alice, discovery, **valid_params(redirect_uri=None)))
    error_page_without_redirect(authz(alice, discovery, **valid_params(client_id="no-such-client")))
    error_page_without_redirect(authz(alice, discovery, **valid_params(client_id=None)))
    # Also without a session, and with an otherwise broken request (B-30, DYN-07).
    anon = oidc_daemon.session()
    error_page_without_redirect(authz(anon, discovery, **valid_params(client_id="no-such-client")))
    error_page_without_redirect(authz(anon, discovery, **valid_params(
        redirect_uri="https://evil.example/cb", response_type="token", request="x.y.z")))


def test_oidc_registered_redirect_uri_with_query_is_kept(alice, discovery):
    # CC-06, DYN-05/06: the registered query survives; a different or longer one is refused.
    reg = "https://q.halos.test/cb?tenant=a"
    cb = callback_params(authz(alice, discovery, **valid_params(redirect_uri=reg)), reg)
    assert cb["code"] and cb["state"] == "st-7q" and cb["tenant"] == "a"
    for bad in ("https://q.halos.test/cb?tenant=b", "https://q.halos.test/cb?tenant=a&x=1",
                "https://q.halos.test/cb"):
        error_page_without_redirect(authz(alice, discovery, **valid_params(redirect_uri=bad)))


# --------------------------------------------------------------------------------------
# O2 / B-34 / B-36: after validation, errors go back with state and iss
# --------------------------------------------------------------------------------------

def test_oidc_request_object_is_not_supported(alice, discovery):
    req_obj = forge_alg_none({"iss": "basic-app", "aud": ISSUER, "response_type": "code",
                              "client_id": "basic-app", "redirect_uri": "https://app.halos.test/cb"})
    r = authz(alice, discovery, **valid_params(request=req_obj))
    redirect_error(r, CLIENTS["basic-app"].redirect_uri, "request_not_supported")
    r = authz(alice, discovery, **valid_params(request_uri="https://evil.example/req.jwt"))
    redirect_error(r, CLIENTS["basic-app"].redirect_uri, "request_uri_not_supported")
    # The outer redirect_uri is validated first (B-36): an invalid one is an error page,
    # even when the request object names a registered one.
    r = authz(alice, discovery, **valid_params(request=req_obj, redirect_uri="https://evil.example/cb"))
    error_page_without_redirect(r)


def test_oidc_request_uri_parameter_not_supported_in_discovery(discovery):
    assert discovery["request_uri_parameter_supported"] is False


def test_oidc_only_the_code_flow_exists(alice, discovery, rp_for):
    redirect_uri = CLIENTS["basic-app"].redirect_uri
    for rt in ("token", "id_token", "code id_token"):
        redirect_error(authz(alice, discovery, **valid_params(response_type=rt)), redirect_uri,
                       ("unsupported_response_type", "invalid_request"))
    redirect_error(authz(alice, discovery, **valid_params(response_type=None)), redirect_uri,
                   ("unsupported_response_type", "invalid_request"))
    rp = rp_for("basic-app")
    oauth_error(rp.token_post({"grant_type": "password", "username": "alice", "password": "x"}),
                400, "unsupported_grant_type")
    oauth_error(rp.token_post({"grant_type": "client_credentials"}), 400,
                ("unsupported_grant_type", "unauthorized_client"))


def test_oidc_no_cors_at_the_authorization_endpoint(alice, discovery):
    # a cross-origin script must not read authorization responses.
    r = alice.get(discovery["authorization_endpoint"], params=valid_params(),
                  headers={"Origin": "https://evil.example"}, allow_redirects=False)
    assert "Access-Control-Allow-Origin" not in r.headers, r.headers
    r = alice.options(discovery["authorization_endpoint"], allow_redirects=False,
                      headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"})
    assert "Access-Control-Allow-Origin" not in r.headers, r.headers


def test_oidc_prompt_none_without_session_is_login_required(oidc_daemon, discovery):
    anon = oidc_daemon.session()
    state = "s" * 128
    r = authz(anon, discovery, **valid_params(prompt="none", state=state))
    redirect_error(r, CLIENTS["basic-app"].redirect_uri, "login_required", state=state)


def test_oidc_state_and_nonce_fidelity(alice, discovery, rp_for):
    rp = rp_for("basic-app")
    state = "S-._~" * 100  # 500 URL-safe characters
    verifier, challenge = pkce_pair()
    nonce = "N" * 384
    r = authz(alice, discovery, **valid_params(state=state, nonce=nonce, code_challenge=challenge))
    cb = callback_params(r, rp.redirect_uri)
    assert cb["state"] == state
    tokens = redeem(rp, cb["code"], verifier).json()
    assert jwt_claims(tokens["id_token"])["nonce"] == nonce
    # Without state and nonce: none comes back (F2-15, F2-16).
    verifier, challenge = pkce_pair()
    r = authz(alice, discovery, **valid_params(state=None, nonce=None, code_challenge=challenge))
    cb = callback_params(r, rp.redirect_uri)
    assert "state" not in cb
    tokens = redeem(rp, cb["code"], verifier).json()
    assert "nonce" not in jwt_claims(tokens["id_token"])


# --------------------------------------------------------------------------------------
# Client authentication (O11)
# --------------------------------------------------------------------------------------

def test_oidc_client_authentication_failures(rp_for, alice, oidc_daemon, discovery, jwks):
    basic = rp_for("basic-app")
    att, code = code_for(basic, alice)
    wrong = RP(oidc_daemon, discovery, jwks, Client("basic-app", "wrong", "client_secret_basic",
                                                    basic.client.redirect_uris, basic.client.scopes))
    r = redeem(wrong, code, att.verifier)
    oauth_error(r, 401, "invalid_client")
    assert r.headers.get("WWW-Authenticate", "").lower().startswith("basic"), r.headers
    oauth_error(redeem(basic, code, att.verifier, auth=None), (400, 401), ("invalid_client", "invalid_request"))
    post = rp_for("post-app")
    att, code = code_for(post, alice)
    wrong_post = RP(oidc_daemon, discovery, jwks, Client("post-app", "wrong", "client_secret_post",
                                                         post.client.redirect_uris, post.client.scopes))
    oauth_error(redeem(wrong_post, code, att.verifier), 401, "invalid_client")
    # Only the registered method: post-app's right secret in a Basic header is refused (O11).
    att, code = code_for(post, alice)
    oauth_error(redeem(post, code, att.verifier, auth="client_secret_basic"), 401, "invalid_client")
    assert redeem(post, code, att.verifier).status_code == 200  # the refusal did not burn the code
    oauth_error(redeem(rp_for("post-app"), "x" * 43, att.verifier, auth="none"), (400, 401),
                ("invalid_client", "invalid_request"))


# --------------------------------------------------------------------------------------
# Consent (explicit) and denial (F2-20, X-19)
# --------------------------------------------------------------------------------------

def consent_form(resp):
    assert resp.status_code == 200, (resp.status_code, resp.headers.get("Location"))
    page = resp.text
    fields = {t["name"]: t.get("value", "") for t in tags(page, "input") if t.get("type") == "hidden"}
    buttons = {t["id"]: (t["name"], t["value"]) for t in tags(page, "button") if t.get("id", "").startswith("consent-")}
    forms = [t for t in tags(page, "form") if t.get("method", "").lower() == "post"]
    assert len(forms) == 1, forms
    return forms[0]["action"], fields, buttons


@pytest.mark.parametrize("choice", ["approve", "deny"])
def test_oidc_explicit_consent(choice, alice, discovery):
    redirect_uri = "https://app.halos.test/consent-cb"
    r = authz(alice, discovery, **valid_params(client_id="consent-app", redirect_uri=redirect_uri))
    action, fields, buttons = consent_form(r)
    assert set(buttons) == {"consent-approve", "consent-deny"}, buttons
    name, value = buttons[f"consent-{choice}"]
    url = urllib.parse.urljoin(ISSUER + "/", action)
    # Without the CSRF field the decision is not taken.
    forged = {k: v for k, v in fields.items() if "csrf" not in k}
    r2 = alice.post(url, data={**forged, name: value}, allow_redirects=False)
    if r2.status_code in (302, 303):
        assert "code=" not in r2.headers["Location"] and "error=access_denied" not in r2.headers["Location"]
    r = alice.post(url, data={**fields, name: value}, allow_redirects=False)
    assert r.status_code in (302, 303), r.status_code  # never 307 after a POST
    if choice == "approve":
        cb = callback_params(r, redirect_uri)
        assert cb["code"] and cb["state"] == "st-7q" and cb["iss"] == ISSUER
    else:
        redirect_error(r, redirect_uri, "access_denied")


def test_oidc_pre_configured_consent_is_remembered(oidc_daemon, discovery):
    redirect_uri = "https://app.halos.test/remember-cb"
    browser = oidc_daemon.session()
    login(browser, "bob")
    params = valid_params(client_id="remember-app", redirect_uri=redirect_uri, scope="openid email")
    action, fields, buttons = consent_form(authz(browser, discovery, **params))
    name, value = buttons["consent-approve"]
    r = browser.post(urllib.parse.urljoin(ISSUER + "/", action), data={**fields, name: value}, allow_redirects=False)
    assert callback_params(r, redirect_uri)["code"]
    # Same scopes again: no page. More scopes: asked again.
    assert callback_params(authz(browser, discovery, **params), redirect_uri)["code"]
    consent_form(authz(browser, discovery, **{**params, "scope": "openid email profile"}))
    # Another user has not consented.
    other = oidc_daemon.session()
    login(other, "alice")
    consent_form(authz(other, discovery, **params))


# --------------------------------------------------------------------------------------
# O9 / X-17 / RPL-04 / RPL-11: forged id_token_hint
# --------------------------------------------------------------------------------------

def forged_hints(real_id_token: str, jwks: dict) -> dict:
    from cryptography.hazmat.primitives.asymmetric import rsa
    from joserfc import jwt
    from joserfc.jwk import KeySet, RSAKey

    claims = jwt_claims(real_id_token)
    kid = jwt.decode(real_id_token, KeySet.import_key_set(jwks)).header["kid"]
    head, _, sig = real_id_token.split(".")
    rsa_jwk = next(k for k in jwks["keys"] if k["kty"] == "RSA")
    foreign = RSAKey.import_key(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    return {
        "alg_none": forge_alg_none(claims, kid),
        "alg_none_no_sig_dot": forge_alg_none(claims, kid)[:-1],
        "hs256_with_rsa_public_key": forge_hs256_with_rsa_public_key(claims, rsa_jwk),
        "foreign_rs256": jwt.encode({"alg": "RS256", "kid": kid}, claims, foreign),
        "path_kid": jwt.encode({"alg": "RS256", "kid": "../../etc/passwd"}, claims, foreign),
        "tampered_payload": f"{head}.{b64url(json.dumps({**claims, 'sub': 'someone-else'}).encode())}.{sig}",
    }


FORGERIES = ["alg_none", "alg_none_no_sig_dot", "hs256_with_rsa_public_key", "foreign_rs256", "path_kid",
             "tampered_payload"]


@pytest.mark.parametrize("forgery", FORGERIES)
def test_oidc_forged_id_token_hint_at_end_session(forgery, rp_for, alice, discovery, jwks):
    rp = rp_for("basic-app")
    token, _ = rp.login(alice)
    hint = forged_hints(token["id_token"], jwks)[forgery]
    target = CLIENTS["basic-app"].post_logout_redirect_uris[0]
    r = alice.get(discovery["end_session_endpoint"], allow_redirects=False,
                  params={"id_token_hint": hint, "post_logout_redirect_uri": target, "state": "s"})
    no_redirect(r)
    assert r.status_code < 500, r.status_code
    # The genuine hint is followed (so the refusal above is about the forgery).
    r = alice.get(discovery["end_session_endpoint"], allow_redirects=False,
                  params={"id_token_hint": token["id_token"], "post_logout_redirect_uri": target, "state": "s"})
    assert r.status_code in (302, 303) and r.headers["Location"] == target + "?state=s"


@pytest.mark.parametrize("forgery", FORGERIES)
def test_oidc_forged_id_token_hint_at_authorization(forgery, rp_for, alice, discovery, jwks):
    rp = rp_for("basic-app")
    token, _ = rp.login(alice)
    hint = forged_hints(token["id_token"], jwks)[forgery]
    r = authz(alice, discovery, **valid_params(prompt="none", id_token_hint=hint))
    redirect_error(r, rp.redirect_uri, ("invalid_request", "login_required", "interaction_required"))
    r = authz(alice, discovery, **valid_params(id_token_hint=hint))
    assert "code=" not in r.headers.get("Location", ""), r.headers.get("Location")
    # Control: the genuine hint gives a code silently (B-23).
    r = authz(alice, discovery, **valid_params(prompt="none", id_token_hint=token["id_token"]))
    assert callback_params(r, rp.redirect_uri)["code"]
