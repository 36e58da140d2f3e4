"""Shared fixtures for the end-to-end tests: paths of the built binaries and a daemon runner."""
import os
import pathlib
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
TARGET = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "debug"
AUTHD = TARGET / "halos-authd"
AUTHCTL = TARGET / "halos-authctl"


@pytest.fixture(scope="session", autouse=True)
def binaries():
    for b in (AUTHD, AUTHCTL):
        assert b.exists(), f"{b} missing: run `cargo build --workspace` first (tests/run.sh does)"


def authctl(*args, stdin="", check=True):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHD_")}
    p = subprocess.run([str(AUTHCTL), *args], input=stdin, capture_output=True, text=True, env=env)
    if check and p.returncode != 0:
        raise AssertionError(f"halos-authctl {' '.join(args)} failed: {p.stderr}")
    return p
