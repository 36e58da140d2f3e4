//! Provider metadata: OpenID Connect Discovery 1.0 §3 and RFC 8414 §2, one document
//! served at both `/.well-known/openid-configuration` and
//! `/.well-known/oauth-authorization-server` (relative to the issuer, as Authelia does).
//!
//! Values are chosen so that nothing is implied by a default (oidc-conformance.md §7):
//! `request_uri_parameter_supported` defaults to `true` when absent, `grant_types_supported`
//! to `authorization_code` + `implicit`, so both are stated. Keys whose presence would
//! make the conformance suite expect a feature we lack are left out
//! (`userinfo_signing_alg_values_supported`, `request_object_signing_alg_values_supported`,
//! `registration_endpoint`, locales).

use serde_json::{Value, json};

use super::issuer::Issuer;
use super::keys::SigningAlg;
use super::paths;
use super::scope::Scope;

/// Client authentication methods at the token endpoint.
pub const TOKEN_ENDPOINT_AUTH_METHODS: [&str; 3] =
    ["client_secret_basic", "client_secret_post", "none"];

/// Claims we may put in ID tokens or userinfo responses.
pub const CLAIMS_SUPPORTED: [&str; 15] = [
    "sub",
    "iss",
    "aud",
    "exp",
    "iat",
    "auth_time",
    "nonce",
    "amr",
    "azp",
    "at_hash",
    "name",
    "preferred_username",
    "email",
    "email_verified",
    "groups",
];

/// The discovery document for `issuer`.
pub fn discovery_document(issuer: &Issuer) -> Value {
    let ep = |p: &str| Value::String(issuer.endpoint(p));
    json!({
        "issuer": issuer.as_str(),
        "authorization_endpoint": ep(paths::AUTHORIZATION),
        "token_endpoint": ep(paths::TOKEN),
        "userinfo_endpoint": ep(paths::USERINFO),
        "jwks_uri": ep(paths::JWKS),
        "introspection_endpoint": ep(paths::INTROSPECTION),
        "revocation_endpoint": ep(paths::REVOCATION),
        "end_session_endpoint": ep(paths::END_SESSION),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported":
            SigningAlg::ALL.iter().map(|a| a.as_str()).collect::<Vec<_>>(),
        "token_endpoint_auth_methods_supported": TOKEN_ENDPOINT_AUTH_METHODS,
        "revocation_endpoint_auth_methods_supported": TOKEN_ENDPOINT_AUTH_METHODS,
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "code_challenge_methods_supported": ["S256"],
        "scopes_supported": Scope::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        "claims_supported": CLAIMS_SUPPORTED,
        "claims_parameter_supported": false,
        "request_parameter_supported": false,
        "request_uri_parameter_supported": false,
        "authorization_response_iss_parameter_supported": true,
        "prompt_values_supported": ["none", "login", "consent"],
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn doc() -> (Issuer, Value) {
        let issuer = Issuer::parse("https://halos.local/sso").unwrap();
        let d = discovery_document(&issuer);
        (issuer, d)
    }

    fn str_array<'a>(d: &'a Value, key: &str) -> Vec<&'a str> {
        d[key]
            .as_array()
            .unwrap_or_else(|| panic!("{key} must be an array"))
            .iter()
            .map(|v| v.as_str().unwrap_or_else(|| panic!("{key}: strings only")))
            .collect()
    }

    fn is_https_url(s: &str) -> bool {
        url::Url::parse(s).is_ok_and(|u| u.scheme() == "https" && u.host_str().is_some())
    }

    /// Every MUST of the Config OP profile (oidc-conformance.md §2, plus the discovery
    /// parts of CC-01, B-04, B-32, RPL-01 and F2-21), checked one by one.
    #[test]
    fn satisfies_every_config_op_must() {
        let (issuer, d) = doc();
        let obj = d.as_object().unwrap();

        // CC-01: issuer, authorization_endpoint and token_endpoint present.
        for k in ["issuer", "authorization_endpoint", "token_endpoint"] {
            assert!(d[k].is_string(), "CC-01 {k}");
        }
        // DISC-01/02 (200, application/json) are HTTP-layer checks; the document is an
        // object that serialises to JSON:
        assert!(serde_json::to_string(&d).is_ok());
        // DISC-03: response_types_supported has an OIDC response type (code).
        assert!(
            str_array(&d, "response_types_supported").contains(&"code"),
            "DISC-03"
        );
        // DISC-04: discovery URL = issuer + /.well-known/openid-configuration, https.
        let discovery_url = issuer.endpoint(paths::OPENID_CONFIGURATION);
        assert!(is_https_url(&discovery_url), "DISC-04");
        assert!(
            discovery_url.ends_with("/.well-known/openid-configuration"),
            "DISC-04"
        );
        // DISC-05: issuer = discovery URL minus the well-known suffix, exactly.
        assert_eq!(
            d["issuer"].as_str().unwrap(),
            discovery_url
                .strip_suffix("/.well-known/openid-configuration")
                .unwrap(),
            "DISC-05"
        );
        // DISC-06: issuer is https, has a host, no query, fragment or userinfo.
        let iu = url::Url::parse(d["issuer"].as_str().unwrap()).unwrap();
        assert_eq!(iu.scheme(), "https", "DISC-06");
        assert!(iu.host_str().is_some(), "DISC-06");
        assert!(iu.query().is_none() && iu.fragment().is_none(), "DISC-06");
        assert!(
            iu.username().is_empty() && iu.password().is_none(),
            "DISC-06"
        );
        // DISC-07: every value has the type the specs define.
        let arrays = [
            "response_types_supported",
            "response_modes_supported",
            "grant_types_supported",
            "subject_types_supported",
            "id_token_signing_alg_values_supported",
            "token_endpoint_auth_methods_supported",
            "revocation_endpoint_auth_methods_supported",
            "introspection_endpoint_auth_methods_supported",
            "code_challenge_methods_supported",
            "scopes_supported",
            "claims_supported",
            "prompt_values_supported",
        ];
        let booleans = [
            "claims_parameter_supported",
            "request_parameter_supported",
            "request_uri_parameter_supported",
            "authorization_response_iss_parameter_supported",
        ];
        let urls = [
            "issuer",
            "authorization_endpoint",
            "token_endpoint",
            "userinfo_endpoint",
            "jwks_uri",
            "introspection_endpoint",
            "revocation_endpoint",
            "end_session_endpoint",
        ];
        for k in arrays {
            assert!(
                !str_array(&d, k).is_empty(),
                "DISC-07 {k} non-empty string array"
            );
        }
        for k in booleans {
            assert!(d[k].is_boolean(), "DISC-07 {k} boolean");
        }
        for k in urls {
            assert!(d[k].is_string(), "DISC-07 {k} string");
        }
        // DISC-08 (SHOULD): no keys outside RFC 8414 / OIDC Discovery metadata.
        let known: HashSet<&str> = arrays
            .iter()
            .chain(booleans.iter())
            .chain(urls.iter())
            .copied()
            .collect();
        for k in obj.keys() {
            assert!(known.contains(k.as_str()), "DISC-08 unexpected key {k}");
        }
        // DISC-09: subject_types_supported has public or pairwise.
        assert!(
            str_array(&d, "subject_types_supported").contains(&"public"),
            "DISC-09"
        );
        // DISC-10: id_token_signing_alg_values_supported has RS256 (and ES256 is offered).
        let algs = str_array(&d, "id_token_signing_alg_values_supported");
        assert!(algs.contains(&"RS256"), "DISC-10");
        assert!(algs.contains(&"ES256"));
        // B-04 / DYN-02: `none` is never advertised.
        assert!(!algs.contains(&"none"), "B-04");
        // DISC-11: userinfo signing algs absent (plain JSON userinfo).
        assert!(
            !obj.contains_key("userinfo_signing_alg_values_supported"),
            "DISC-11"
        );
        // DISC-12/13/14: authorization, token and userinfo endpoints present and https.
        for k in [
            "authorization_endpoint",
            "token_endpoint",
            "userinfo_endpoint",
        ] {
            assert!(is_https_url(d[k].as_str().unwrap()), "DISC-12/13/14 {k}");
        }
        // DISC-15: no registration endpoint (no dynamic registration).
        assert!(!obj.contains_key("registration_endpoint"), "DISC-15");
        // DISC-16: jwks_uri present, valid https URL.
        assert!(is_https_url(d["jwks_uri"].as_str().unwrap()), "DISC-16");
        // DISC-18/19: request and request_uri explicitly false (request_uri defaults to true).
        assert_eq!(d["request_parameter_supported"], false, "DISC-18");
        assert_eq!(d["request_uri_parameter_supported"], false, "DISC-19");
        // DISC-20: request object algs absent.
        assert!(
            !obj.contains_key("request_object_signing_alg_values_supported"),
            "DISC-20"
        );
        // DISC-21: claims parameter stated.
        assert_eq!(d["claims_parameter_supported"], false, "DISC-21");
        // DISC-22: claims_supported present, an array.
        let claims = str_array(&d, "claims_supported");
        for c in [
            "sub",
            "name",
            "preferred_username",
            "email",
            "email_verified",
            "groups",
        ] {
            assert!(claims.contains(&c), "DISC-22 {c}");
        }
        // DISC-23: grant_types_supported non-empty; exactly code + refresh (no implicit).
        assert_eq!(
            str_array(&d, "grant_types_supported"),
            ["authorization_code", "refresh_token"],
            "DISC-23"
        );
        // DISC-24: scopes_supported contains openid.
        let scopes = str_array(&d, "scopes_supported");
        assert!(scopes.contains(&"openid"), "DISC-24");
        for s in ["offline_access", "profile", "email", "groups"] {
            assert!(scopes.contains(&s), "{s}");
        }
        // B-11/B-12: address and phone are not advertised (not stored).
        assert!(!scopes.contains(&"address") && !scopes.contains(&"phone"));
        // DISC-25: each scope is a valid scope-token.
        for s in &scopes {
            assert!(crate::oidc::scope::valid_scope_token(s), "DISC-25 {s}");
        }
        // DISC-26/27: no locales advertised.
        assert!(!obj.contains_key("ui_locales_supported"), "DISC-26");
        assert!(!obj.contains_key("claims_locales_supported"), "DISC-26");
        // DISC-28: every *_endpoint is https (end_session, revocation, introspection too).
        let mut endpoints = 0;
        for (k, v) in obj {
            if k.ends_with("_endpoint") {
                endpoints += 1;
                assert!(is_https_url(v.as_str().unwrap()), "DISC-28 {k}");
            }
        }
        assert_eq!(endpoints, 6);
        // DISC-29 + F2-21: code_challenge_methods_supported is an array, S256 only.
        assert_eq!(
            str_array(&d, "code_challenge_methods_supported"),
            ["S256"],
            "DISC-29"
        );
        // F2-21: RFC 9207 iss in authorization responses.
        assert_eq!(
            d["authorization_response_iss_parameter_supported"], true,
            "F2-21"
        );
        // B-32: client_secret_post (and basic, none) listed.
        assert_eq!(
            str_array(&d, "token_endpoint_auth_methods_supported"),
            ["client_secret_basic", "client_secret_post", "none"],
            "B-32"
        );
        // RPL-01: end_session_endpoint present and https.
        assert!(
            is_https_url(d["end_session_endpoint"].as_str().unwrap()),
            "RPL-01"
        );
        // Code flow only (RFC 9700 §2.1.2), query response mode only.
        assert_eq!(str_array(&d, "response_types_supported"), ["code"]);
        assert_eq!(str_array(&d, "response_modes_supported"), ["query"]);
    }

    #[test]
    fn endpoints_are_the_designed_paths() {
        let (_, d) = doc();
        let expect = [
            ("authorization_endpoint", "/api/oidc/authorization"),
            ("token_endpoint", "/api/oidc/token"),
            ("userinfo_endpoint", "/api/oidc/userinfo"),
            ("jwks_uri", "/jwks.json"),
            ("introspection_endpoint", "/api/oidc/introspection"),
            ("revocation_endpoint", "/api/oidc/revocation"),
            ("end_session_endpoint", "/api/oidc/end-session"),
        ];
        for (k, p) in expect {
            assert_eq!(d[k], format!("https://halos.local/sso{p}"), "{k}");
        }
        assert_eq!(d["issuer"], "https://halos.local/sso");
    }

    #[test]
    fn same_document_for_both_well_known_paths_and_issuer_with_trailing_slash() {
        // The HTTP layer serves this one document at both paths; a configured issuer with
        // a trailing slash gives the same document.
        let a = discovery_document(&Issuer::parse("https://halos.local/sso").unwrap());
        let b = discovery_document(&Issuer::parse("https://halos.local/sso/").unwrap());
        assert_eq!(a, b);
        assert_eq!(
            paths::OPENID_CONFIGURATION,
            "/.well-known/openid-configuration"
        );
        assert_eq!(
            paths::OAUTH_AUTHORIZATION_SERVER,
            "/.well-known/oauth-authorization-server"
        );
    }
}
