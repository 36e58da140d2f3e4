//! The issuer identifier: one string, used byte-for-byte in discovery, ID tokens,
//! authorization responses (RFC 9207) and introspection (conformance DISC-05, CC-07, CC-16).

use std::fmt;

use url::Url;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IssuerError {
    #[error("issuer {0:?}: not a valid absolute URL")]
    Invalid(String),
    #[error("issuer {0:?}: scheme must be https (or http for a LAN-only setup)")]
    Scheme(String),
    #[error("issuer {0:?}: must have a host")]
    NoHost(String),
    #[error("issuer {0:?}: must not contain a query, a fragment or user information")]
    Components(String),
}

/// A validated issuer. The canonical form has no trailing slash: `https://host/sso`
/// (a configured `https://host/sso/` or `https://host/` loses it), so endpoint URLs are
/// the issuer followed by a path from [`super::paths`].
#[derive(Clone, PartialEq, Eq)]
pub struct Issuer {
    text: String,
    https: bool,
}

impl Issuer {
    pub fn new(url: &Url) -> Result<Self, IssuerError> {
        let raw = url.as_str().to_string();
        let https = match url.scheme() {
            "https" => true,
            "http" => false,
            _ => return Err(IssuerError::Scheme(raw)),
        };
        if url.host_str().is_none_or(str::is_empty) {
            return Err(IssuerError::NoHost(raw));
        }
        if url.query().is_some()
            || url.fragment().is_some()
            || !url.username().is_empty()
            || url.password().is_some()
        {
            return Err(IssuerError::Components(raw));
        }
        let text = raw.trim_end_matches('/').to_string();
        Ok(Self { text, https })
    }

    /// Parses and validates `s` (convenience for tests and the CLI).
    pub fn parse(s: &str) -> Result<Self, IssuerError> {
        let url = Url::parse(s).map_err(|_| IssuerError::Invalid(s.to_string()))?;
        Self::new(&url)
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// `true` for an `https` issuer (OIDC Discovery requires it; `http` is a LAN opt-in).
    pub fn is_https(&self) -> bool {
        self.https
    }

    /// The absolute URL of an endpoint, e.g. `endpoint(paths::TOKEN)`.
    pub fn endpoint(&self, path: &str) -> String {
        format!("{}{}", self.text, path)
    }
}

impl fmt::Debug for Issuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Issuer({:?})", self.text)
    }
}

impl fmt::Display for Issuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oidc::paths;

    #[test]
    fn canonical_form_has_no_trailing_slash() {
        for s in [
            "https://halos.local/sso",
            "https://halos.local/sso/",
            "https://halos.local/sso//",
        ] {
            let i = Issuer::parse(s).unwrap();
            assert_eq!(i.as_str(), "https://halos.local/sso");
            assert_eq!(
                i.endpoint(paths::TOKEN),
                "https://halos.local/sso/api/oidc/token"
            );
        }
        assert_eq!(
            Issuer::parse("https://auth.halos.local/").unwrap().as_str(),
            "https://auth.halos.local"
        );
        assert_eq!(
            Issuer::parse("https://auth.halos.local").unwrap().as_str(),
            "https://auth.halos.local"
        );
        assert!(Issuer::parse("https://h/sso").unwrap().is_https());
        assert!(!Issuer::parse("http://h/sso").unwrap().is_https());
    }

    #[test]
    fn rejects_bad_issuers() {
        assert!(matches!(
            Issuer::parse("ftp://h/sso"),
            Err(IssuerError::Scheme(_))
        ));
        assert!(matches!(
            Issuer::parse("https://h/sso?x=1"),
            Err(IssuerError::Components(_))
        ));
        assert!(matches!(
            Issuer::parse("https://h/sso#f"),
            Err(IssuerError::Components(_))
        ));
        assert!(matches!(
            Issuer::parse("https://u:p@h/sso"),
            Err(IssuerError::Components(_))
        ));
        assert!(matches!(
            Issuer::parse("not a url"),
            Err(IssuerError::Invalid(_))
        ));
    }
}
