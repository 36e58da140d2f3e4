//! Authelia-style durations: `90`, `30s`, `5m`, `1h30m`, `7d`, `2w`, `1M`, `1y`.
//!
//! A bare number is seconds, as in Authelia. Months are 30 days and years 365 days,
//! which is what Authelia's own parser does.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// A configured duration that remembers nothing but its length.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct ConfigDuration(pub Duration);

impl ConfigDuration {
    pub const fn from_secs(secs: u64) -> Self {
        Self(Duration::from_secs(secs))
    }
    pub fn as_secs(&self) -> u64 {
        self.0.as_secs()
    }
}

impl fmt::Debug for ConfigDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}s", self.0.as_secs())
    }
}

impl fmt::Display for ConfigDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}s", self.0.as_secs())
    }
}

/// Parses `s` as a duration; the error text says what was expected.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let mut unit = c.to_string();
        // multi-letter units: "ms" is refused (sub-second makes no sense here), but accept "min"
        while let Some(&n) = chars.peek() {
            if n.is_ascii_alphabetic() {
                unit.push(n);
                chars.next();
            } else {
                break;
            }
        }
        if digits.is_empty() {
            return Err(format!(
                "invalid duration {s:?}: unit {unit:?} without a number"
            ));
        }
        let n: u64 = digits
            .parse()
            .map_err(|_| format!("invalid duration {s:?}: number too large"))?;
        digits.clear();
        let mult: u64 = match unit.as_str() {
            "s" => 1,
            "m" | "min" => 60,
            "h" => 3600,
            "d" => 86_400,
            "w" => 7 * 86_400,
            "M" => 30 * 86_400,
            "y" => 365 * 86_400,
            _ => {
                return Err(format!(
                    "invalid duration {s:?}: unknown unit {unit:?} (use s, m, h, d, w, M or y)"
                ));
            }
        };
        total = n
            .checked_mul(mult)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| format!("invalid duration {s:?}: too large"))?;
    }
    if !digits.is_empty() {
        return Err(format!(
            "invalid duration {s:?}: number without a unit at the end (use s, m, h, d, w, M or y)"
        ));
    }
    Ok(Duration::from_secs(total))
}

impl<'de> Deserialize<'de> for ConfigDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ConfigDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as 30s, 5m, 1h, 7d, 1M, 1y or a number of seconds")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(ConfigDuration(Duration::from_secs(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                u64::try_from(v)
                    .map(|v| ConfigDuration(Duration::from_secs(v)))
                    .map_err(|_| E::custom("a duration cannot be negative"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                parse_duration(v).map(ConfigDuration).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for ConfigDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}s", self.0.as_secs()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_authelia_forms() {
        let cases = [
            ("90", 90),
            ("30s", 30),
            ("5m", 300),
            ("1h30m", 5400),
            ("7d", 604_800),
            ("2w", 1_209_600),
            ("1M", 2_592_000),
            ("1y", 31_536_000),
            ("8760h", 31_536_000),
        ];
        for (s, secs) in cases {
            assert_eq!(parse_duration(s).unwrap(), Duration::from_secs(secs), "{s}");
        }
    }

    #[test]
    fn refuses_garbage() {
        for s in ["", "m", "5x", "5m3", "-5m", "1.5h"] {
            assert!(parse_duration(s).is_err(), "{s} should be refused");
        }
    }
}
