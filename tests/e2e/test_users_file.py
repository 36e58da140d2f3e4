"""The users file that halos-authctl writes is read by independent tools."""
import argon2

from conftest import authctl


def test_user_add_writes_a_digest_that_argon2_cffi_verifies(tmp_path):
    users = tmp_path / "users_database.yml"
    # Default parameters on purpose: the digest must be Authelia/HaLOS's argon2id m=65536,t=3,p=4.
    authctl("--users-file", str(users), "user", "add", "skipper", "--display-name", "Skipper",
            "--email", "skipper@halos.local", "--group", "admins", "--password-stdin",
            stdin="sea breeze 42\n")
    text = users.read_text()
    digest = next(l.split(":", 1)[1].strip().strip("'\"") for l in text.splitlines() if "password:" in l)
    assert digest.startswith("$argon2id$v=19$m=65536,t=3,p=4$"), digest
    ph = argon2.PasswordHasher(time_cost=3, memory_cost=65536, parallelism=4)
    assert ph.verify(digest, "sea breeze 42")
    assert not ph.check_needs_rehash(digest)
    try:
        ph.verify(digest, "sea breeze 43")
        raise AssertionError("wrong password verified")
    except argon2.exceptions.VerifyMismatchError:
        pass


def test_cockpit_style_file_from_argon2_cffi_is_read_by_halos_authctl(tmp_path):
    # HaLOS's Cockpit bridge writes users with Python argon2-cffi; we must read them.
    ph = argon2.PasswordHasher(time_cost=3, memory_cost=65536, parallelism=4)
    users = tmp_path / "users_database.yml"
    users.write_text(
        "users:\n"
        "  admin:\n"
        "    displayname: Administrator\n"
        f"    password: {ph.hash('halos')}\n"
        "    email: admin@halos.local\n"
        "    groups:\n"
        "    - admins\n"
        "    disabled: false\n"
        "    custom_key: kept\n"
    )
    out = authctl("--users-file", str(users), "user", "show", "admin", "--json")
    import json
    u = json.loads(out.stdout)
    assert u["groups"] == ["admins"] and u["password_algorithm"] == "argon2id"
    authctl("--users-file", str(users), "user", "update", "admin", "--display-name", "Admin")
    assert "custom_key: kept" in users.read_text()
