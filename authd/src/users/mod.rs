//! The Authelia-compatible users database (`users_database.yml`).
//!
//! Reading: [`UsersDb::parse`] is strict about the values we use (password digest, names
//! that end up in HTTP headers) and ignores unknown per-user keys, which rewrites keep
//! (see [`edit`]). Writing: [`edit::UsersFile`] edits the file in place, format-preserving
//! and crash-safe. Live reload: [`store::UsersStore`] swaps in a new snapshot when the
//! file changes and keeps the last good one when the new one is broken.

pub mod edit;
pub mod hash;
pub mod store;
pub mod verifier;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::http::HeaderValue;
use serde::Deserialize;
use serde_saphyr::Spanned;
use sha2::{Digest, Sha256};

pub use hash::{PasswordDigest, hash_password};

use crate::config::OneOrMany;
use crate::yaml::{YamlError, parse_yaml};

/// Users files larger than this are refused (a file with thousands of users is ~1 MiB).
pub const MAX_USERS_FILE_BYTES: usize = 1024 * 1024;

/// One user, as the daemon sees it.
#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    pub displayname: String,
    /// First address, or empty.
    pub email: String,
    pub groups: Vec<String>,
    /// The forward-auth identity header values, made once at load.
    pub identity: IdentityValues,
    pub disabled: bool,
    pub digest: Arc<PasswordDigest>,
    /// The digest text as written in the file (used to detect password changes).
    pub password_text: String,
    /// `auth::password_fingerprint(&password_text)`, computed once at load: sessions carry
    /// it, and forward auth compares it on every request.
    pub pw_fingerprint: u64,
}

/// A user's identity as forward-auth header values (`Remote-User`, `-Groups`, `-Name`,
/// `-Email`), made once when the file is loaded: forward auth clones them (a reference
/// count) for every request instead of copying and checking the strings. `None` where a
/// value cannot be sent as a header (a control character in a display name).
#[derive(Debug, Clone)]
pub struct IdentityValues {
    pub user: Option<HeaderValue>,
    pub groups: Option<HeaderValue>,
    pub name: Option<HeaderValue>,
    pub email: Option<HeaderValue>,
}

impl IdentityValues {
    pub fn new(name: &str, groups: &[String], displayname: &str, email: &str) -> IdentityValues {
        let value = |s: &str| HeaderValue::from_str(s).ok();
        IdentityValues {
            user: value(name),
            groups: value(&groups.join(",")),
            name: value(displayname),
            email: value(email),
        }
    }
}

/// A loaded, validated users file.
#[derive(Debug, Clone, Default)]
pub struct UsersDb {
    users: BTreeMap<String, Arc<User>>,
    /// SHA-256 of the file text; lets the watcher skip reloads of identical content.
    pub content_hash: [u8; 32],
    /// A real digest of the most common cost among the users: unknown and disabled users
    /// are checked against it, so they cost what a real user costs (no enumeration by time).
    decoy: Option<Arc<PasswordDigest>>,
}

#[derive(Deserialize)]
struct RawFile {
    #[serde(default)]
    users: Option<BTreeMap<String, Spanned<RawUser>>>,
}

#[derive(Deserialize)]
struct RawUser {
    displayname: Option<String>,
    password: String,
    #[serde(default)]
    email: Option<OneOrMany>,
    #[serde(default)]
    groups: Option<OneOrMany>,
    #[serde(default)]
    disabled: Option<bool>,
    // Every other key (given_name, extra, …) is accepted and left alone.
}

/// Reads a users file, refusing one over [`MAX_USERS_FILE_BYTES`] before reading it (a
/// huge or sparse file costs no memory), and one anybody may write (anybody could make
/// themselves an admin).
pub fn read_users_file(path: &std::path::Path) -> std::io::Result<String> {
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;
    let f = std::fs::File::open(path)?;
    let meta = f.metadata()?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o002 != 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!("the file is writable by everyone (mode {mode:o}); chmod o-w it"),
        ));
    }
    let len = meta.len();
    if len > MAX_USERS_FILE_BYTES as u64 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("file is {len} bytes, larger than the {MAX_USERS_FILE_BYTES}-byte limit"),
        ));
    }
    let mut text = String::new();
    f.take(MAX_USERS_FILE_BYTES as u64 + 1)
        .read_to_string(&mut text)?;
    Ok(text)
}

/// The digest of the first user whose cost is the most common one in the file.
fn decoy(users: &BTreeMap<String, Arc<User>>) -> Option<Arc<PasswordDigest>> {
    let mut counts: BTreeMap<String, (usize, &Arc<PasswordDigest>)> = BTreeMap::new();
    for u in users.values() {
        counts
            .entry(u.digest.cost_key())
            .or_insert((0, &u.digest))
            .0 += 1;
    }
    counts
        .into_values()
        .max_by_key(|(n, _)| *n)
        .map(|(_, d)| Arc::clone(d))
}

/// Validation rules from HaLOS's Cockpit bridge, used for names created by our tools.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// `^[^@\s]+@[^@\s]+\.[^@\s]+$`, as the Cockpit bridge checks.
pub fn valid_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    let ok = |p: &str| !p.is_empty() && !p.contains('@') && !p.chars().any(char::is_whitespace);
    ok(local)
        && ok(domain)
        && domain
            .split_once('.')
            .is_some_and(|(a, b)| !a.is_empty() && !b.is_empty())
        && !domain.ends_with('.')
}

/// Text that goes into HTTP headers must not carry line breaks or NULs.
fn header_safe(s: &str) -> bool {
    !s.chars().any(|c| c.is_control())
}

impl UsersDb {
    /// Parses and validates a users file. Errors name the source, line and reason.
    pub fn parse(text: &str, source: &str) -> Result<UsersDb, YamlError> {
        let content_hash: [u8; 32] = Sha256::digest(text.as_bytes()).into();
        if text.trim().is_empty() {
            return Ok(UsersDb {
                users: BTreeMap::new(),
                content_hash,
                decoy: None,
            });
        }
        let raw: RawFile = parse_yaml(text, source, MAX_USERS_FILE_BYTES)?;
        let mut users = BTreeMap::new();
        for (name, spanned) in raw.users.unwrap_or_default() {
            let line = spanned.referenced.line();
            let err = |key: &str, reason: String| YamlError {
                source: source.to_string(),
                line: (line > 0).then_some(line),
                column: None,
                key_path: if key.is_empty() {
                    format!("users.{name}")
                } else {
                    format!("users.{name}.{key}")
                },
                reason,
            };
            let u = spanned.value;
            if name.is_empty() || !header_safe(&name) || name.contains(',') || name.len() > 128 {
                return Err(err(
                    "",
                    "user name must be 1–128 printable characters without commas".into(),
                ));
            }
            let digest =
                PasswordDigest::parse(&u.password).map_err(|e| err("password", e.to_string()))?;
            let displayname = u.displayname.unwrap_or_else(|| name.clone());
            if !header_safe(&displayname) {
                return Err(err(
                    "displayname",
                    "must not contain control characters".into(),
                ));
            }
            let email = u
                .email
                .and_then(|e| e.0.into_iter().next())
                .unwrap_or_default();
            if !header_safe(&email) {
                return Err(err("email", "must not contain control characters".into()));
            }
            let groups = u.groups.map(|g| g.0).unwrap_or_default();
            for g in &groups {
                // Apps split Remote-Groups on `,` (some on `|`, `;` or whitespace too).
                let separator = |c: char| c.is_whitespace() || matches!(c, ',' | ';' | '|');
                if g.is_empty() || g.contains(separator) || !header_safe(g) {
                    return Err(err(
                        "groups",
                        format!(
                            "group name {g:?} must be non-empty, without spaces, ',', ';', '|' or control characters"
                        ),
                    ));
                }
            }
            users.insert(
                name.clone(),
                Arc::new(User {
                    identity: IdentityValues::new(&name, &groups, &displayname, &email),
                    name,
                    displayname,
                    email,
                    groups,
                    disabled: u.disabled.unwrap_or(false),
                    digest: Arc::new(digest),
                    pw_fingerprint: crate::auth::password_fingerprint(&u.password),
                    password_text: u.password,
                }),
            );
        }
        Ok(UsersDb {
            decoy: decoy(&users),
            users,
            content_hash,
        })
    }

    pub fn get(&self, name: &str) -> Option<&Arc<User>> {
        self.users.get(name)
    }

    /// The digest to verify against when the user is unknown or disabled (`None`: no users;
    /// the verifier's own dummy is used).
    pub fn decoy(&self) -> Option<&Arc<PasswordDigest>> {
        self.decoy.as_ref()
    }

    /// An enabled user, or `None` for unknown and disabled ones alike.
    pub fn active(&self, name: &str) -> Option<&Arc<User>> {
        self.users.get(name).filter(|u| !u.disabled)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<User>> {
        self.users.values()
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Every group any user belongs to, sorted.
    pub fn groups(&self) -> Vec<String> {
        let mut g: Vec<String> = self
            .users
            .values()
            .flat_map(|u| u.groups.iter().cloned())
            .collect();
        g.sort();
        g.dedup();
        g
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AUTHELIA_FILE: &str = r#"# HaLOS users
users:
  admin:
    displayname: "Administrator"
    email: admin@halos.local
    password: "$argon2id$v=19$m=65536,t=3,p=2$BpLnfgDsc2WD8F2q$o/vzA4myCqZZ36bUGsDY//8mKUYNZZaR0t4MFFSs+iM"
    groups:
      - admins
      - users
  john:
    displayname: John
    password: '$6$rounds=5000$abcdefgh$0123456789'
    disabled: true
    given_name: John          # Authelia 4.39 optional attribute
    extra:
      boat: Vega
"#;

    #[test]
    fn reads_authelia_file_and_ignores_unknown_keys() {
        let db = UsersDb::parse(AUTHELIA_FILE, "users.yml").unwrap();
        assert_eq!(db.len(), 2);
        let admin = db.get("admin").unwrap();
        assert_eq!(admin.displayname, "Administrator");
        assert_eq!(admin.email, "admin@halos.local");
        assert_eq!(admin.groups, vec!["admins", "users"]);
        assert!(!admin.disabled);
        assert!(db.active("john").is_none(), "disabled users are not active");
        assert!(db.get("john").unwrap().disabled);
        assert_eq!(db.groups(), vec!["admins", "users"]);
    }

    #[test]
    fn broken_entries_name_line_and_reason() {
        let text = "users:\n  a:\n    displayname: A\n    password: '$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA'\n  b:\n    displayname: B\n    password: plaintext\n";
        let e = UsersDb::parse(text, "u.yml").unwrap_err();
        assert_eq!(e.key_path, "users.b.password");
        assert_eq!(e.line, Some(6), "{e}");
        assert!(e.reason.contains("unsupported"), "{e}");

        let text = "users:\n  a:\n    displayname: A\n    password: '$2b$10$Ok4cLvJFE5p3lewDJzVLleWgTNfofJB6eheGIgjj3dAA7VQvoYiPW'\n    groups: ['a,b']\n";
        assert_eq!(
            UsersDb::parse(text, "u.yml").unwrap_err().key_path,
            "users.a.groups"
        );

        let e = UsersDb::parse("users:\n  a: [\n", "u.yml").unwrap_err();
        assert!(e.line.is_some(), "{e}");
    }

    #[test]
    fn email_and_name_rules_follow_the_cockpit_bridge() {
        assert!(valid_name("pi_user-1"));
        assert!(!valid_name("a b") && !valid_name("") && !valid_name(&"a".repeat(65)));
        assert!(valid_email("a@b.c"));
        for bad in ["a@b", "a b@c.d", "@b.c", "a@@b.c", "a@b.", "a@.c"] {
            assert!(!valid_email(bad), "{bad}");
        }
    }
}
