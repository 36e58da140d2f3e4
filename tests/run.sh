#!/usr/bin/env bash
# Runs every test of halos-auth on a fresh Debian 12 machine, installing what they need.
# This is the README's test command and what CI (.ci/run) calls.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n==> %s\n' "$*"; }

# --- system packages (only installed when missing) -------------------------------
# caddy, nginx and chromium are the real proxies and browser of the end-to-end tests.
APT_PACKAGES=(python3-venv python3-pip curl openssl caddy nginx chromium redis-server dbus-daemon libglib2.0-bin)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Node drives Chromium (playwright-core); any node >= 18 does, Debian's only when there is none.
command -v node >/dev/null && command -v npm >/dev/null || missing+=(nodejs npm)
if ((${#missing[@]})); then
  say "installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  # Debian starts nginx's and caddy's system services on install, both on port 80 (the second one
  # fails, and its package with it). The tests run their own instances on free ports: keep the
  # services from starting while installing.
  policy_rc=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod 755 /usr/sbin/policy-rc.d
    policy_rc=1
  fi
  rc=0
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || rc=$?
  [ -z "$policy_rc" ] || $SUDO rm -f /usr/sbin/policy-rc.d
  [ "$rc" = 0 ] || exit "$rc"
fi

# --- Python test dependencies ------------------------------------------------------
if [ ! -x .venv/bin/pytest ] || ! cmp -s tests/requirements.txt .venv/.requirements; then
  say "creating the Python test environment"
  python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check -r tests/requirements.txt
  cp tests/requirements.txt .venv/.requirements
fi

# --- browser driver: playwright-core for Debian's /usr/bin/chromium (never downloads a browser) ---
if [ ! -d tests/browser/node_modules/playwright-core ] ||
   ! cmp -s tests/browser/package-lock.json tests/browser/node_modules/.halos-lock; then
  say "installing the browser driver (npm ci in tests/browser)"
  (cd tests/browser && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
  cp tests/browser/package-lock.json tests/browser/node_modules/.halos-lock
fi

# --- Node test dependencies: npm openid-client for the OIDC end-to-end tests -------
if [ ! -d tests/oidc-node/node_modules/openid-client ] ||
   ! cmp -s tests/oidc-node/package-lock.json tests/oidc-node/node_modules/.halos-lock; then
  say "installing the OIDC client test packages (npm ci in tests/oidc-node)"
  (cd tests/oidc-node && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error)
  cp tests/oidc-node/package-lock.json tests/oidc-node/node_modules/.halos-lock
fi

# --- Rust: format, lint, unit and integration tests --------------------------------
say "cargo fmt --check"
cargo fmt --all -- --check
say "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
say "cargo test"
# The daemon's integration tests also run halos-authctl (another package's binary): build it first.
cargo build --workspace --locked
cargo test --workspace --locked

# --- fuzz targets (fuzz/, a cargo-fuzz crate outside the workspace) ----------------
say "fuzz targets: replay the committed corpus"
# One target dir with the workspace: the replay reuses the dependencies built above.
fuzz_target_dir="${CARGO_TARGET_DIR:-$PWD/target}"
(cd fuzz && CARGO_TARGET_DIR="$fuzz_target_dir" cargo test --locked --no-default-features)
# A fuzzing campaign on top (FUZZ_SECONDS per target) when asked for: cargo-fuzz and the
# instrumented build take minutes, which CI spends on the packaging test instead.
if [ "${FUZZ_SECONDS:-0}" -gt 0 ]; then
  say "fuzzing each target for $FUZZ_SECONDS s"
  command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
  # The pinned stable toolchain has no sanitizers; RUSTC_BOOTSTRAP lets cargo-fuzz's -Z flags through.
  # New inputs go to a scratch directory: the committed corpus stays as it is.
  for target in redirect users_file snippet forward_headers cookie; do
    scratch=$(mktemp -d)
    (cd fuzz && RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR="$fuzz_target_dir" cargo fuzz run --sanitizer none --dev "$target" \
      "$scratch" "$PWD/corpus/$target" -- -max_total_time="$FUZZ_SECONDS" -artifact_prefix="$scratch/")
    rm -rf "$scratch"
  done
fi

# --- end-to-end tests against the built binaries ----------------------------------
say "end-to-end tests"
.venv/bin/pytest -q tests/e2e

# --- benchmark smoke run: every scenario once, briefly (numbers are not asserted) ---------
say "benchmark smoke run (bench/run.sh --smoke)"
./bench/run.sh --smoke
