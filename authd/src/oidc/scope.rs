//! Scopes this provider knows (`scopes_supported` in discovery) and scope sets.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A supported scope. Order here is the canonical order of [`Scopes`] when printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    Openid,
    OfflineAccess,
    Profile,
    Email,
    Groups,
}

impl Scope {
    pub const ALL: [Scope; 5] = [
        Scope::Openid,
        Scope::OfflineAccess,
        Scope::Profile,
        Scope::Email,
        Scope::Groups,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Openid => "openid",
            Self::OfflineAccess => "offline_access",
            Self::Profile => "profile",
            Self::Email => "email",
            Self::Groups => "groups",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|sc| sc.as_str() == s)
    }

    /// A set holding just this scope.
    pub fn into_scopes(self) -> Scopes {
        Scopes::empty().with(self)
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `scope-token = 1*( %x21 / %x23-5B / %x5D-7E )` (RFC 6749 §3.3).
pub fn valid_scope_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| matches!(b, 0x21 | 0x23..=0x5b | 0x5d..=0x7e))
}

/// A set of supported scopes (small and `Copy`).
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Scopes(u8);

impl Scopes {
    pub const fn empty() -> Self {
        Self(0)
    }

    pub fn contains(self, s: Scope) -> bool {
        self.0 & s.bit() != 0
    }

    pub fn insert(&mut self, s: Scope) {
        self.0 |= s.bit();
    }

    pub fn remove(&mut self, s: Scope) {
        self.0 &= !s.bit();
    }

    pub fn with(mut self, s: Scope) -> Self {
        self.insert(s);
        self
    }

    pub fn intersection(self, other: Scopes) -> Scopes {
        Scopes(self.0 & other.0)
    }

    pub fn is_subset(self, other: Scopes) -> bool {
        self.0 & !other.0 == 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = Scope> {
        Scope::ALL.into_iter().filter(move |s| self.contains(*s))
    }

    /// Parses a space-separated `scope` parameter (RFC 6749 §3.3): order does not matter
    /// and repeats are harmless. Returns the known scopes and the unknown tokens, or the
    /// first token that is not a valid scope-token.
    pub fn parse_param(s: &str) -> Result<(Scopes, Vec<String>), String> {
        let mut known = Scopes::empty();
        let mut unknown = Vec::new();
        // RFC 6749 says one space; tolerate runs of spaces, refuse other whitespace.
        for tok in s.split(' ').filter(|t| !t.is_empty()) {
            if !valid_scope_token(tok) {
                return Err(tok.to_string());
            }
            match Scope::parse(tok) {
                Some(sc) => known.insert(sc),
                None => unknown.push(tok.to_string()),
            }
        }
        Ok((known, unknown))
    }
}

impl FromIterator<Scope> for Scopes {
    fn from_iter<I: IntoIterator<Item = Scope>>(iter: I) -> Self {
        let mut s = Scopes::empty();
        for sc in iter {
            s.insert(sc);
        }
        s
    }
}

/// Space-separated, canonical order: the form of the `scope` token-response member.
impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for s in self.iter() {
            if !first {
                f.write_str(" ")?;
            }
            first = false;
            f.write_str(s.as_str())?;
        }
        Ok(())
    }
}

impl fmt::Debug for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Scopes({self})")
    }
}

/// Stored as the space-separated string; unknown scopes fail to load.
impl Serialize for Scopes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Scopes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match Scopes::parse_param(&s) {
            Ok((known, unknown)) if unknown.is_empty() => Ok(known),
            _ => Err(serde::de::Error::custom(format!("unknown scope in {s:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_is_order_insensitive_and_collects_unknown() {
        let (a, u) = Scopes::parse_param("groups  openid profile x:y").unwrap();
        let (b, _) = Scopes::parse_param("openid groups profile openid").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "openid profile groups");
        assert_eq!(u, vec!["x:y".to_string()]);
        assert!(a.contains(Scope::Openid) && !a.contains(Scope::Email));
    }

    #[test]
    fn parse_rejects_bad_scope_tokens() {
        assert_eq!(
            Scopes::parse_param("openid bad\"quote"),
            Err("bad\"quote".into())
        );
        assert!(Scopes::parse_param("openid\tprofile").is_err());
        assert!(Scopes::parse_param("openid back\\slash").is_err());
    }

    #[test]
    fn set_operations() {
        let all: Scopes = Scope::ALL.into_iter().collect();
        let some = Scopes::empty().with(Scope::Openid).with(Scope::Email);
        assert!(some.is_subset(all));
        assert!(!all.is_subset(some));
        assert_eq!(all.intersection(some), some);
        let mut s = some;
        s.remove(Scope::Email);
        assert_eq!(s.to_string(), "openid");
        assert!(Scopes::empty().is_empty());
    }
}
