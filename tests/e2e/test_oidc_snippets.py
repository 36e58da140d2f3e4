"""Issue 5: a snippet dropped into oidc-clients.d works for a real OIDC client library
(authlib) within a second — no restart, sessions and refresh tokens untouched."""
import os
import time

import pytest

pytest.register_assert_rewrite("oidc_harness")

from oidc_harness import CLIENTS, RP, Client, error_page_without_redirect, login

pytest_plugins = ["oidc_harness"]

SECRET = "snippet-secret-" + "s" * 32


def write_atomically(path: str, text: str) -> None:
    tmp = os.path.join(os.path.dirname(path), "." + os.path.basename(path) + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, path)


def snippet(secret_file: str, redirect_uri: str) -> str:
    # As HaLOS packages write them: block list, quotes, a comment.
    return (
        "# written by a fake app package\n"
        "client_id: snip\n"
        "client_name: Snippet App\n"
        f"client_secret_file: {secret_file}\n"
        "redirect_uris:\n"
        f"  - '{redirect_uri}'\n"
        "scopes: [openid, profile, email, groups, offline_access]\n"
        "consent_mode: implicit\n"
        "token_endpoint_auth_method: client_secret_post\n"
    )


def within_a_second(what, attempt):
    start = time.monotonic()
    while True:
        try:
            return attempt(), time.monotonic() - start
        except AssertionError:
            if time.monotonic() - start > 1.0:
                raise AssertionError(f"{what}: not live within 1 s")
            time.sleep(0.02)


def test_snippet_lifecycle_with_authlib(oidc_daemon, discovery, jwks):
    clients_dir = os.path.join(oidc_daemon.dir, "oidc-clients.d")
    secret_file = os.path.join(oidc_daemon.dir, "snip-secret")
    with open(secret_file, "w") as f:
        f.write(SECRET + "\n")  # trailing newline, as `openssl rand -hex 32 > file` leaves
    os.chmod(secret_file, 0o600)
    cb1, cb2 = "https://snip.halos.test/cb", "https://snip.halos.test/cb2"
    browser = oidc_daemon.session()
    login(browser, "alice")
    existing = RP(oidc_daemon, discovery, jwks, CLIENTS["basic-app"])
    old_token, _ = existing.login(browser)

    # 1. Drop the snippet: a full code + PKCE flow succeeds within a second.
    write_atomically(os.path.join(clients_dir, "snip.yml"), snippet(secret_file, cb1))
    client = Client("snip", SECRET, "client_secret_post", [cb1], ["openid", "profile", "email", "groups", "offline_access"])
    (token, claims), took = within_a_second("new snippet", lambda: RP(oidc_daemon, discovery, jwks, client).login(browser))
    assert claims["preferred_username"] == "alice" and "refresh_token" in token
    print(f"snippet usable after {took:.3f} s")

    # 2. A broken snippet beside it leaves it working.
    with open(os.path.join(clients_dir, "broken.yml"), "w") as f:
        f.write("client_id: broken\nredirect_uris: [\n")
    # 3. Editing its redirect URI switches which URI is accepted.
    write_atomically(os.path.join(clients_dir, "snip.yml"), snippet(secret_file, cb2))
    client2 = Client("snip", SECRET, "client_secret_post", [cb2], client.scopes)
    within_a_second("edited redirect URI", lambda: RP(oidc_daemon, discovery, jwks, client2).login(browser))
    old_uri = RP(oidc_daemon, discovery, jwks, client)
    error_page_without_redirect(browser.get(old_uri.begin().url, allow_redirects=False))

    # 4. The session and refresh tokens issued before the reloads still work.
    assert existing.token_post({"grant_type": "refresh_token", "refresh_token": old_token["refresh_token"]}).status_code == 200

    # 5. Deleting it makes the authorization request fail with an error page.
    os.remove(os.path.join(clients_dir, "snip.yml"))
    os.remove(os.path.join(clients_dir, "broken.yml"))

    def gone():
        error_page_without_redirect(browser.get(RP(oidc_daemon, discovery, jwks, client2).begin().url, allow_redirects=False))
    within_a_second("deleted snippet", gone)
