//! The OpenID Connect provider core: signing keys, discovery, clients, PKCE, claims,
//! opaque tokens and the validation of authorization and token requests.
//!
//! Everything here is pure (no HTTP, no storage): time comes in as `now` (unix seconds)
//! and randomness through [`tokens::Rng`], so every rule has a deterministic unit test.
//! The HTTP layer parses a request, calls one function here and maps the result;
//! storage keeps what these functions return (grants, hashes of tokens).
//!
//! Standards: OpenID Connect Core 1.0 and Discovery 1.0, RFC 6749 (OAuth 2.0), RFC 7636
//! (PKCE), RFC 8414 (metadata), RFC 9207 (`iss` in authorization responses), RFC 9700
//! (OAuth 2.0 security BCP), RFC 8176 (`amr` values), RFC 7638 (JWK thumbprints).

pub mod authorize;
pub mod claims;
pub mod clients;
pub mod discovery;
pub mod error;
pub mod issuer;
pub mod keys;
pub mod pkce;
pub mod scope;
pub mod token_request;
pub mod tokens;

pub use authorize::{AuthorizationError, AuthorizationRequest, Decision, PageError, RedirectError};
pub use claims::{AuthMethods, IdTokenParams, id_token_claims, userinfo_claims};
pub use clients::{
    ClientConfigError, ClientRegistry, ConsentMode, OidcClient, RegistryError, TokenAuthMethod,
};
pub use discovery::discovery_document;
pub use error::OAuthError;
pub use issuer::{Issuer, IssuerError};
pub use keys::{KeyError, SigningAlg, SigningKeys, TokenVerifyError};
pub use scope::{Scope, Scopes};
pub use token_request::{ClientCredentials, CodeGrant, RefreshGrant, TokenError, TokenRequest};
pub use tokens::{OsRng, Rng, TokenKind, generate_token, token_hash};

/// Endpoint paths relative to the issuer (DESIGN §5). The router and the discovery
/// document both use these, so they cannot drift apart.
pub mod paths {
    pub const OPENID_CONFIGURATION: &str = "/.well-known/openid-configuration";
    pub const OAUTH_AUTHORIZATION_SERVER: &str = "/.well-known/oauth-authorization-server";
    pub const JWKS: &str = "/jwks.json";
    pub const AUTHORIZATION: &str = "/api/oidc/authorization";
    pub const TOKEN: &str = "/api/oidc/token";
    pub const USERINFO: &str = "/api/oidc/userinfo";
    pub const INTROSPECTION: &str = "/api/oidc/introspection";
    pub const REVOCATION: &str = "/api/oidc/revocation";
    pub const END_SESSION: &str = "/api/oidc/end-session";
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shareable<T: Send + Sync + 'static>() {}

    /// The HTTP layer keeps these in `Arc`s shared across tasks.
    #[test]
    fn core_types_are_send_and_sync() {
        shareable::<SigningKeys>();
        shareable::<ClientRegistry>();
        shareable::<OidcClient>();
        shareable::<AuthorizationRequest>();
        shareable::<Issuer>();
    }
}
