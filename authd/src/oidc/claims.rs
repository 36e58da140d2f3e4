//! Claims per scope, for userinfo and for ID tokens.
//!
//! | scope     | claims                                                  |
//! |-----------|---------------------------------------------------------|
//! | `openid`  | `sub`                                                   |
//! | `profile` | `name` (display name, else username), `preferred_username` |
//! | `email`   | `email`, `email_verified: true` (both absent without an address) |
//! | `groups`  | `groups` (array, possibly empty)                        |
//!
//! The ID token carries the same scope claims as userinfo: Grafana and others read only
//! the ID token (Authelia 4.39 needs a `claims_policies` workaround for them). With
//! `scope=openid` alone there is no `name` (conformance CC-23/CC-24).
//! `email_verified` is `true` because an administrator set the address.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::issuer::Issuer;
use super::scope::{Scope, Scopes};
use crate::users::User;

/// How the user authenticated in this session, for `amr` (RFC 8176).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AuthMethods {
    /// Password (`pwd`).
    pub password: bool,
    /// TOTP (`otp`).
    pub totp: bool,
    /// WebAuthn / passkey (`hwk`: proof of possession of a hardware-secured key).
    pub webauthn: bool,
    /// The authenticator verified the user (PIN or biometric): `user`; with a passkey
    /// this is a second factor.
    pub webauthn_user_verified: bool,
}

impl AuthMethods {
    /// The `amr` values, e.g. `["pwd"]`, `["pwd", "otp", "mfa"]`, `["hwk", "user", "mfa"]`.
    /// `mfa` is added when two independent factors were used.
    pub fn amr(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.password {
            v.push("pwd");
        }
        if self.totp {
            v.push("otp");
        }
        let uv = self.webauthn && self.webauthn_user_verified;
        if self.webauthn {
            v.push("hwk");
            if uv {
                v.push("user");
            }
        }
        // Factors: knowledge (password), possession (totp device / security key),
        // inherence-or-knowledge verified by the authenticator.
        let factors =
            usize::from(self.password) + usize::from(self.totp || self.webauthn) + usize::from(uv);
        if factors >= 2 {
            v.push("mfa");
        }
        v
    }

    /// Authentication level as forward auth and policies use it: 1 = one factor,
    /// 2 = two factors, 0 = none.
    pub fn level(&self) -> u8 {
        match self.amr().as_slice() {
            [] => 0,
            a if a.contains(&"mfa") => 2,
            _ => 1,
        }
    }
}

fn insert_scope_claims(m: &mut Map<String, Value>, user: &User, scopes: Scopes) {
    if scopes.contains(Scope::Profile) {
        let name = if user.displayname.is_empty() {
            &user.name
        } else {
            &user.displayname
        };
        m.insert("name".into(), json!(name));
        m.insert("preferred_username".into(), json!(user.name));
    }
    if scopes.contains(Scope::Email) && !user.email.is_empty() {
        m.insert("email".into(), json!(user.email));
        m.insert("email_verified".into(), json!(true));
    }
    if scopes.contains(Scope::Groups) {
        m.insert("groups".into(), json!(user.groups));
    }
}

/// The userinfo response body for `user` with the granted `scopes`. `sub` is the
/// user's stable opaque identifier (from storage), never the username.
pub fn userinfo_claims(sub: &str, user: &User, scopes: Scopes) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("sub".into(), json!(sub));
    insert_scope_claims(&mut m, user, scopes);
    m
}

/// `at_hash`: base64url of the left half of SHA-256 of the ASCII access token (OIDC Core
/// §3.1.3.6; SHA-256 for both RS256 and ES256).
pub fn at_hash(access_token: &str) -> String {
    let d = Sha256::digest(access_token.as_bytes());
    URL_SAFE_NO_PAD.encode(d.get(..16).unwrap_or_default())
}

/// Inputs of an ID token.
#[derive(Debug, Clone, Copy)]
pub struct IdTokenParams<'a> {
    pub issuer: &'a Issuer,
    pub sub: &'a str,
    /// `aud` and `azp`.
    pub client_id: &'a str,
    /// `iat`, unix seconds.
    pub now: i64,
    /// `exp` = `now` + this.
    pub lifetime_secs: i64,
    /// When the user last actively authenticated.
    pub auth_time: i64,
    /// The authorization request's `nonce`, copied byte for byte when present.
    pub nonce: Option<&'a str>,
    pub auth_methods: AuthMethods,
    /// The access token issued alongside, for `at_hash`.
    pub access_token: Option<&'a str>,
    pub user: &'a User,
    pub scopes: Scopes,
}

/// The claims of an ID token, ready for [`super::keys::SigningKeys::sign_id_token`].
pub fn id_token_claims(p: &IdTokenParams<'_>) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("iss".into(), json!(p.issuer.as_str()));
    m.insert("sub".into(), json!(p.sub));
    m.insert("aud".into(), json!(p.client_id));
    m.insert("exp".into(), json!(p.now.saturating_add(p.lifetime_secs)));
    m.insert("iat".into(), json!(p.now));
    m.insert("auth_time".into(), json!(p.auth_time));
    if let Some(n) = p.nonce {
        m.insert("nonce".into(), json!(n));
    }
    let amr = p.auth_methods.amr();
    if !amr.is_empty() {
        m.insert("amr".into(), json!(amr));
    }
    m.insert("azp".into(), json!(p.client_id));
    if let Some(at) = p.access_token {
        m.insert("at_hash".into(), json!(at_hash(at)));
    }
    insert_scope_claims(&mut m, p.user, p.scopes);
    m
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::users::PasswordDigest;

    pub(crate) fn user(name: &str, display: &str, email: &str, groups: &[&str]) -> User {
        let digest = "$argon2id$v=19$m=64,t=1,p=1$KAlEMaoBCwJRWY5JQAQhyA$2Z0T3sW9gmKuF2I/BbR2I50DbAbogZ6d+JoJXI/kseQ";
        User {
            name: name.into(),
            displayname: display.into(),
            email: email.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            identity: crate::users::IdentityValues::new(
                name,
                &groups.iter().map(|g| g.to_string()).collect::<Vec<_>>(),
                display,
                email,
            ),
            disabled: false,
            digest: Arc::new(PasswordDigest::parse(digest).unwrap()),
            password_text: digest.into(),
            pw_fingerprint: crate::auth::password_fingerprint(digest),
        }
    }

    fn scopes(s: &str) -> Scopes {
        Scopes::parse_param(s).unwrap().0
    }

    fn keys(m: &Map<String, Value>) -> Vec<&str> {
        let mut k: Vec<&str> = m.keys().map(String::as_str).collect();
        k.sort_unstable();
        k
    }

    #[test]
    fn userinfo_claims_per_scope() {
        let alice = user(
            "alice",
            "Alice A.",
            "alice@halos.local",
            &["admins", "users"],
        );
        let m = userinfo_claims("8f1c", &alice, scopes("openid"));
        assert_eq!(Value::Object(m), json!({"sub": "8f1c"}));

        let m = userinfo_claims("8f1c", &alice, scopes("openid profile"));
        assert_eq!(
            Value::Object(m),
            json!({"sub": "8f1c", "name": "Alice A.", "preferred_username": "alice"})
        );

        let m = userinfo_claims("8f1c", &alice, scopes("openid email"));
        assert_eq!(
            Value::Object(m),
            json!({"sub": "8f1c", "email": "alice@halos.local", "email_verified": true})
        );

        let m = userinfo_claims("8f1c", &alice, scopes("openid groups"));
        assert_eq!(
            Value::Object(m),
            json!({"sub": "8f1c", "groups": ["admins", "users"]})
        );

        let m = userinfo_claims(
            "8f1c",
            &alice,
            scopes("openid profile email groups offline_access"),
        );
        assert_eq!(
            keys(&m),
            [
                "email",
                "email_verified",
                "groups",
                "name",
                "preferred_username",
                "sub"
            ]
        );
    }

    #[test]
    fn missing_attributes() {
        let bob = user("bob", "", "", &[]);
        let m = userinfo_claims("b0b", &bob, scopes("openid profile email groups"));
        assert_eq!(
            Value::Object(m),
            json!({"sub": "b0b", "name": "bob", "preferred_username": "bob", "groups": []})
        );
    }

    #[test]
    fn at_hash_is_left_half_of_sha256() {
        // Computed independently: base64url(sha256(b"jHkWEdUXMU1BwAsC4vtUsZwnNxu")[:16]).
        assert_eq!(
            at_hash("jHkWEdUXMU1BwAsC4vtUsZwnNxu"),
            "LU6VhU4cgTzTc4D0VF9Hgg"
        );
        assert_eq!(at_hash("x").len(), 22);
    }

    #[test]
    fn amr_values() {
        let pwd = AuthMethods {
            password: true,
            ..Default::default()
        };
        assert_eq!(pwd.amr(), ["pwd"]);
        assert_eq!(pwd.level(), 1);
        let totp = AuthMethods {
            password: true,
            totp: true,
            ..Default::default()
        };
        assert_eq!(totp.amr(), ["pwd", "otp", "mfa"]);
        assert_eq!(totp.level(), 2);
        let pw_key = AuthMethods {
            password: true,
            webauthn: true,
            ..Default::default()
        };
        assert_eq!(pw_key.amr(), ["pwd", "hwk", "mfa"]);
        let passkey_uv = AuthMethods {
            webauthn: true,
            webauthn_user_verified: true,
            ..Default::default()
        };
        assert_eq!(passkey_uv.amr(), ["hwk", "user", "mfa"]);
        assert_eq!(passkey_uv.level(), 2);
        let passkey_up = AuthMethods {
            webauthn: true,
            ..Default::default()
        };
        assert_eq!(passkey_up.amr(), ["hwk"]);
        assert_eq!(passkey_up.level(), 1);
        assert!(AuthMethods::default().amr().is_empty());
        assert_eq!(AuthMethods::default().level(), 0);
    }

    fn params<'a>(issuer: &'a Issuer, u: &'a User, s: &str) -> IdTokenParams<'a> {
        IdTokenParams {
            issuer,
            sub: "8f1c",
            client_id: "grafana",
            now: 1_000,
            lifetime_secs: 3_600,
            auth_time: 900,
            nonce: None,
            auth_methods: AuthMethods {
                password: true,
                ..Default::default()
            },
            access_token: None,
            user: u,
            scopes: scopes(s),
        }
    }

    #[test]
    fn id_token_claims_openid_only() {
        let iss = Issuer::parse("https://halos.local/sso").unwrap();
        let alice = user("alice", "Alice", "a@x", &["admins"]);
        let m = id_token_claims(&params(&iss, &alice, "openid"));
        assert_eq!(
            Value::Object(m),
            json!({
                "iss": "https://halos.local/sso", "sub": "8f1c", "aud": "grafana",
                "exp": 4600, "iat": 1000, "auth_time": 900, "amr": ["pwd"], "azp": "grafana"
            })
        );
    }

    #[test]
    fn id_token_claims_with_nonce_at_hash_and_scope_claims() {
        let iss = Issuer::parse("https://halos.local/sso").unwrap();
        let alice = user("alice", "Alice", "a@x", &["admins"]);
        let nonce = "n".repeat(384);
        let mut p = params(&iss, &alice, "openid profile email groups");
        p.nonce = Some(&nonce);
        p.access_token = Some("hat_token");
        p.auth_methods.totp = true;
        let m = id_token_claims(&p);
        assert_eq!(
            m["nonce"],
            json!(nonce),
            "nonce copied exactly, never truncated"
        );
        assert_eq!(m["at_hash"], json!(at_hash("hat_token")));
        assert_eq!(m["amr"], json!(["pwd", "otp", "mfa"]));
        assert_eq!(m["name"], "Alice");
        assert_eq!(m["preferred_username"], "alice");
        assert_eq!(m["email"], "a@x");
        assert_eq!(m["email_verified"], true);
        assert_eq!(m["groups"], json!(["admins"]));
        // Same scope claims as userinfo.
        let ui = userinfo_claims("8f1c", &alice, p.scopes);
        for (k, v) in &ui {
            assert_eq!(&m[k], v, "{k}");
        }
    }
}
