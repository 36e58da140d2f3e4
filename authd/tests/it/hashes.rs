//! Every digest format an Authelia users file may hold verifies, with fixtures made by
//! independent tools (Python argon2-cffi, passlib, bcrypt; Authelia's docs example).

use authd::users::PasswordDigest;

const FIXTURES: &str = include_str!("../fixtures/hashes.txt");

#[test]
fn fixtures_from_independent_tools_verify() {
    let mut blocks = Vec::new();
    let mut seen = Vec::new();
    for line in FIXTURES
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let (name, digest) = line.split_once(' ').unwrap();
        let password = if name.starts_with("authelia_docs") {
            "password"
        } else {
            "correct horse battery staple"
        };
        let d = PasswordDigest::parse(digest).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            d.verify(password.as_bytes(), &mut blocks),
            "{name} must verify"
        );
        assert!(
            !d.verify(b"correct horse battery stapl", &mut blocks),
            "{name} must refuse a wrong password"
        );
        assert!(
            !d.verify(b"", &mut blocks),
            "{name} must refuse an empty password"
        );
        seen.push(name.to_string());
    }
    for required in [
        "argon2id",
        "argon2i",
        "argon2d",
        "sha512crypt",
        "sha256crypt",
        "bcrypt2b",
        "bcrypt2a",
        "pbkdf2_sha1",
        "pbkdf2_sha256",
        "pbkdf2_sha512",
        "scrypt",
        "authelia_docs_argon2id_password",
    ] {
        assert!(
            seen.iter().any(|s| s == required),
            "fixture {required} missing"
        );
    }
}
