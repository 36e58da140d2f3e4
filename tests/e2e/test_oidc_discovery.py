"""The discovery document and JWKS, as served, against every MUST of the OpenID Foundation's
Config OP profile (`oidcc-discovery-endpoint-verification`) and the discovery parts of the
common, Basic, RP-initiated-logout and FAPI2 checks. Test names carry the entry ids of
reference/oidc-conformance.md."""
import re
import urllib.parse

import pytest

pytest.register_assert_rewrite("oidc_harness")

from oidc_harness import DISCOVERY_URL, ISSUER

pytest_plugins = ["oidc_harness"]

ENDPOINT_KEYS = ["authorization_endpoint", "token_endpoint", "userinfo_endpoint", "jwks_uri",
                 "introspection_endpoint", "revocation_endpoint", "end_session_endpoint"]
PRIVATE_JWK_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}
# RFC 8414 §2 + OIDC Discovery §3 + RFC 9207 + RP-Initiated Logout: the keys the suite's
# metadata schema knows (DISC-08).
KNOWN_METADATA = {
    "issuer", "authorization_endpoint", "token_endpoint", "userinfo_endpoint", "jwks_uri",
    "registration_endpoint", "scopes_supported", "response_types_supported",
    "response_modes_supported", "grant_types_supported", "acr_values_supported",
    "subject_types_supported", "id_token_signing_alg_values_supported",
    "id_token_encryption_alg_values_supported", "id_token_encryption_enc_values_supported",
    "userinfo_signing_alg_values_supported", "userinfo_encryption_alg_values_supported",
    "userinfo_encryption_enc_values_supported", "request_object_signing_alg_values_supported",
    "request_object_encryption_alg_values_supported", "request_object_encryption_enc_values_supported",
    "token_endpoint_auth_methods_supported", "token_endpoint_auth_signing_alg_values_supported",
    "display_values_supported", "claim_types_supported", "claims_supported", "service_documentation",
    "claims_locales_supported", "ui_locales_supported", "claims_parameter_supported",
    "request_parameter_supported", "request_uri_parameter_supported",
    "require_request_uri_registration", "op_policy_uri", "op_tos_uri", "revocation_endpoint",
    "revocation_endpoint_auth_methods_supported", "revocation_endpoint_auth_signing_alg_values_supported",
    "introspection_endpoint", "introspection_endpoint_auth_methods_supported",
    "introspection_endpoint_auth_signing_alg_values_supported", "code_challenge_methods_supported",
    "authorization_response_iss_parameter_supported", "end_session_endpoint", "check_session_iframe",
    "frontchannel_logout_supported", "frontchannel_logout_session_supported",
    "backchannel_logout_supported", "backchannel_logout_session_supported", "prompt_values_supported",
    "signed_metadata", "mtls_endpoint_aliases", "tls_client_certificate_bound_access_tokens",
    "pushed_authorization_request_endpoint", "require_pushed_authorization_requests",
    "dpop_signing_alg_values_supported", "authorization_details_types_supported",
}
ARRAY_KEYS = [k for k in KNOWN_METADATA if k.endswith("_supported") and not k.endswith("parameter_supported")
              and k not in ("frontchannel_logout_supported", "frontchannel_logout_session_supported",
                            "backchannel_logout_supported", "backchannel_logout_session_supported",
                            "authorization_response_iss_parameter_supported",
                            "tls_client_certificate_bound_access_tokens")]
BOOL_KEYS = ["claims_parameter_supported", "request_parameter_supported", "request_uri_parameter_supported",
             "require_request_uri_registration", "authorization_response_iss_parameter_supported",
             "frontchannel_logout_supported", "frontchannel_logout_session_supported",
             "backchannel_logout_supported", "backchannel_logout_session_supported",
             "require_pushed_authorization_requests", "tls_client_certificate_bound_access_tokens"]
SCOPE_TOKEN = re.compile(r"^[\x21\x23-\x5B\x5D-\x7E]+$")
BCP47 = re.compile(r"^[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8})*$")


@pytest.fixture(scope="module")
def resp(oidc_daemon):
    return oidc_daemon.session().get(DISCOVERY_URL)


@pytest.fixture(scope="module")
def doc(resp):
    return resp.json()


@pytest.fixture(scope="module")
def jwks_resp(oidc_daemon, doc):
    return oidc_daemon.session().get(doc["jwks_uri"])


def https_url(value) -> urllib.parse.SplitResult:
    assert isinstance(value, str), value
    u = urllib.parse.urlsplit(value)
    assert u.scheme == "https" and u.hostname, value
    return u


def test_CC_01_discovery_has_issuer_and_core_endpoints(doc):
    for k in ("issuer", "authorization_endpoint", "token_endpoint"):
        assert isinstance(doc.get(k), str) and doc[k], k


def test_DISC_01_status_200(resp):
    assert resp.status_code == 200


def test_DISC_02_content_type_json(resp):
    assert resp.headers["Content-Type"].split(";")[0].strip() == "application/json", resp.headers


def test_DISC_03_response_types_supported_has_code(doc):
    assert "code" in doc["response_types_supported"]


def test_DISC_04_discovery_url_is_https_well_known():
    https_url(DISCOVERY_URL)
    assert DISCOVERY_URL.endswith("/.well-known/openid-configuration")


def test_DISC_05_issuer_is_discovery_url_minus_well_known(doc):
    assert doc["issuer"] == DISCOVERY_URL[: -len("/.well-known/openid-configuration")] == ISSUER


def test_DISC_06_issuer_is_a_valid_https_url(doc):
    u = https_url(doc["issuer"])
    assert not u.query and not u.fragment and u.username is None and u.password is None
    assert u.port is None or 0 < u.port < 65536
    assert not doc["issuer"].endswith("/"), "ID tokens must carry exactly this string"


def test_DISC_07_metadata_types(doc):
    for k in ARRAY_KEYS:
        if k in doc:
            assert isinstance(doc[k], list) and doc[k] and all(isinstance(x, str) for x in doc[k]), k
    for k in BOOL_KEYS:
        if k in doc:
            assert isinstance(doc[k], bool), k
    for k in ["issuer", *ENDPOINT_KEYS]:
        if k in doc:
            assert isinstance(doc[k], str), k


def test_DISC_08_no_unexpected_metadata(doc):
    assert set(doc) <= KNOWN_METADATA, set(doc) - KNOWN_METADATA


def test_DISC_09_subject_types_supported(doc):
    assert {"public", "pairwise"} & set(doc["subject_types_supported"])


def test_DISC_10_id_token_signing_alg_values_has_RS256(doc):
    assert "RS256" in doc["id_token_signing_alg_values_supported"]


def test_DISC_11_userinfo_signing_algs_valid_if_present(doc):
    if "userinfo_signing_alg_values_supported" in doc:
        assert all(isinstance(a, str) and a for a in doc["userinfo_signing_alg_values_supported"])
    # userinfo is plain JSON (Signal K, Homarr): the key should not be advertised.
    assert "userinfo_signing_alg_values_supported" not in doc


def test_DISC_12_authorization_endpoint_https(doc):
    https_url(doc["authorization_endpoint"])


def test_DISC_13_token_endpoint_https(doc):
    https_url(doc["token_endpoint"])


def test_DISC_14_userinfo_endpoint_present_https(doc):
    https_url(doc["userinfo_endpoint"])


def test_DISC_15_no_registration_endpoint(doc):
    assert "registration_endpoint" not in doc  # no dynamic registration


def test_DISC_16_jwks_uri_https(doc):
    https_url(doc["jwks_uri"])


def test_DISC_17_jwks_fetchable_well_formed_public_only(jwks_resp):
    assert jwks_resp.status_code == 200
    assert jwks_resp.headers["Content-Type"].startswith("application/json")
    keys = jwks_resp.json()["keys"]
    assert keys
    for k in keys:
        assert not (PRIVATE_JWK_MEMBERS & set(k)), k


def test_DISC_18_19_21_request_objects_and_claims_parameter_not_supported(doc):
    assert doc.get("request_parameter_supported", False) is False
    # The default is true when absent: it must be stated (DISC-19, issue 4).
    assert doc["request_uri_parameter_supported"] is False
    assert doc.get("claims_parameter_supported", False) is False


def test_DISC_20_request_object_algs_include_RS256_if_present(doc):
    if "request_object_signing_alg_values_supported" in doc:
        assert "RS256" in doc["request_object_signing_alg_values_supported"]


def test_DISC_22_claims_supported(doc):
    assert isinstance(doc["claims_supported"], list)
    for c in ("sub", "iss", "aud", "exp", "iat", "email", "groups", "name", "preferred_username"):
        assert c in doc["claims_supported"], c


def test_DISC_23_grant_types_supported(doc):
    assert doc["grant_types_supported"], "absent would mean authorization_code + implicit"
    assert set(doc["grant_types_supported"]) == {"authorization_code", "refresh_token"}


def test_DISC_24_scopes_supported_contains_openid(doc):
    assert "openid" in doc["scopes_supported"]
    assert {"profile", "email", "groups", "offline_access"} <= set(doc["scopes_supported"])


def test_DISC_25_scope_syntax(doc):
    for s in doc["scopes_supported"]:
        assert SCOPE_TOKEN.match(s), s


def test_DISC_26_27_locales_syntax(doc):
    for k in ("ui_locales_supported", "claims_locales_supported"):
        for tag in doc.get(k, []):
            assert BCP47.match(tag), (k, tag)


def test_DISC_28_all_endpoints_https_and_under_the_issuer(doc):
    for k in ENDPOINT_KEYS:
        assert k in doc, k
        https_url(doc[k])
        assert doc[k].startswith(ISSUER + "/"), (k, doc[k])
    for k, v in doc.items():
        if k.endswith("_endpoint"):
            https_url(v)


def test_DISC_28_endpoints_are_served(oidc_daemon, doc):
    s = oidc_daemon.session()
    for k in ENDPOINT_KEYS:
        r = s.get(doc[k], allow_redirects=False)
        assert r.status_code != 404, (k, doc[k])


def test_DISC_29_code_challenge_methods_is_an_array_with_S256(doc):
    assert doc["code_challenge_methods_supported"] == ["S256"]


def test_CC_02_jwks_parses_and_has_no_private_or_symmetric_material(jwks_resp):
    from joserfc.jwk import KeySet

    jwks = jwks_resp.json()
    KeySet.import_key_set(jwks)
    for k in jwks["keys"]:
        assert k["kty"] in ("RSA", "EC"), k
        assert not (PRIVATE_JWK_MEMBERS & set(k)), k


def test_CC_03_jwks_is_a_jwk_set(jwks_resp):
    body = jwks_resp.json()
    assert isinstance(body, dict) and isinstance(body["keys"], list)


def test_CC_04_every_key_has_a_kid(jwks_resp):
    for k in jwks_resp.json()["keys"]:
        assert isinstance(k.get("kid"), str) and k["kid"], k


def test_CC_05_kids_are_unique(jwks_resp):
    kids = [k["kid"] for k in jwks_resp.json()["keys"]]
    assert len(kids) == len(set(kids)), kids


def test_O10_keys_are_signing_keys_of_sane_size(jwks_resp):
    import base64

    keys = jwks_resp.json()["keys"]
    assert any(k["kty"] == "RSA" and k.get("alg", "RS256") == "RS256" for k in keys), keys
    for k in keys:
        assert k.get("use", "sig") == "sig", k
        if k["kty"] == "RSA":
            n = base64.urlsafe_b64decode(k["n"] + "=" * (-len(k["n"]) % 4))
            assert len(n) * 8 >= 2048, len(n) * 8
            assert k.get("alg") in (None, "RS256")
        else:
            assert k["crv"] == "P-256" and k.get("alg") in (None, "ES256") and k["x"] and k["y"], k


def test_B_04_none_not_advertised(doc):
    assert "none" not in doc["id_token_signing_alg_values_supported"]


def test_B_32_both_client_secret_methods_advertised(doc):
    assert {"client_secret_basic", "client_secret_post"} <= set(doc["token_endpoint_auth_methods_supported"])


def test_RPL_01_end_session_endpoint(doc):
    https_url(doc["end_session_endpoint"])


def test_F2_21_iss_parameter_and_pkce_advertised(doc):
    assert doc["authorization_response_iss_parameter_supported"] is True
    assert "S256" in doc["code_challenge_methods_supported"]
    assert "plain" not in doc["code_challenge_methods_supported"]
    assert set(doc["response_types_supported"]) == {"code"}  # code only (RFC 9700 §2.1.2)


def test_F2_21_rfc8414_metadata_consistent(oidc_daemon, doc):
    r = oidc_daemon.session().get(ISSUER + "/.well-known/oauth-authorization-server")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("application/json")
    meta = r.json()
    assert meta["issuer"] == doc["issuer"]
    for k in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
        assert meta[k] == doc[k], k
