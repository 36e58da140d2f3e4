"""nginx `auth_request` with the README recipe's keep-alive upstream pool to the daemon: the
daemon's answers must let nginx reuse one connection for every check.

nginx does not read an `auth_request` answer's body; when there is one, it closes the upstream
connection after the check, and every page load of every app costs a new TCP connection to the
daemon (measured by bench/run.sh: a third of the throughput). The daemon therefore answers
auth-request without a body, whatever the decision.
"""
import pytest

from harness import Stack, reap_proxies

APP = "app.halos.test"


@pytest.fixture
def stack(tmp_path):
    st = Stack(tmp_path, "nginx", "http", None)
    yield st
    st.stop()
    reap_proxies()


def daemon_connections(port: int) -> list[str]:
    """TCP sockets with `port` at either end, listening ones excluded (from /proc/net)."""
    out = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            local, remote, state = int(f[1].rsplit(":", 1)[1], 16), int(f[2].rsplit(":", 1)[1], 16), f[3]
            if port in (local, remote) and state != "0A":  # 0A = LISTEN
                out.append(f"{local}->{remote} state {state}")
    return out


def test_every_check_reuses_one_upstream_connection(stack):
    port = stack.daemon.port

    def checks(client, expect):
        # Sockets already on the daemon's port (start-up health check, login through /sso/,
        # which the recipe proxies without keep-alive) stay in TIME-WAIT for a minute.
        before = daemon_connections(port)
        for _ in range(15):
            r = client.browser_get(stack.url(APP, "/page"))
            assert r.status == expect, r.text
        after = daemon_connections(port)
        # At most one new pooled connection, seen from both ends. Without keep-alive each of
        # the 15 checks leaves a socket in TIME-WAIT.
        assert len(after) - len(before) <= 2, (
            f"{len(after) - len(before)} new sockets on the daemon's port after 15 checks:\n"
            + "\n".join(after) + "\n" + stack.logs())

    checks(stack.client(), 302)  # anonymous: 401 from the daemon, error_page 302
    client, _ = stack.login("alice")
    checks(client, 200)
