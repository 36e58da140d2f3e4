"""Runs the npm `openid-client` (v6) and Signal K–shaped `jose` tests in tests/oidc-node with
Node's built-in test runner against the daemon of this pytest session, so one pytest run
covers them. `npm ci` in tests/oidc-node must have been run (tests/run.sh does)."""
import dataclasses
import json
import os
import pathlib
import shutil
import subprocess

import pytest

pytest.register_assert_rewrite("oidc_harness")

from oidc_harness import CLIENTS, HOST, ISSUER, USERS

pytest_plugins = ["oidc_harness"]

NODE_DIR = pathlib.Path(__file__).resolve().parents[1] / "oidc-node"


@pytest.mark.parametrize("script", ["openid-client.test.mjs", "signalk.test.mjs"])
def test_oidc_node(script, oidc_daemon):
    node = shutil.which("node")
    assert node, "node is not installed (tests/run.sh installs nodejs)"
    assert (NODE_DIR / "node_modules" / "openid-client").is_dir(), \
        f"run `npm ci` in {NODE_DIR} first (tests/run.sh does)"
    config = {
        "issuer": ISSUER, "upstream": oidc_daemon.upstream, "host": HOST,
        "clients": {k: dataclasses.asdict(c) for k, c in CLIENTS.items()},
        "users": USERS,
    }
    env = {**os.environ, "OIDC_E2E_CONFIG": json.dumps(config)}
    p = subprocess.run([node, "--test", "--test-reporter=tap", script], cwd=NODE_DIR, env=env,
                       capture_output=True, text=True, timeout=120)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out
    summary = {k: int(v) for k, v in (line[2:].split(" ", 1) for line in p.stdout.splitlines()
                                      if line.startswith("# ") and line[2:].split(" ", 1)[0] in
                                      ("tests", "pass", "fail", "skipped", "todo", "cancelled")
                                      and line[2:].split(" ", 1)[-1].isdigit())}
    assert summary.get("fail") == 0 and summary.get("cancelled", 0) == 0, out
    assert summary.get("skipped", 0) == 0 and summary.get("todo", 0) == 0, out
    assert summary.get("pass", 0) >= 3 and summary["pass"] == summary["tests"], out
