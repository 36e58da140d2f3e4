#!/usr/bin/env bash
# The halos-auth benchmark (DESIGN §14): builds release binaries and measures forward auth,
# nginx auth_request, OIDC, memory, start-up and reload against a hello-world baseline, on this
# machine, in one run. Prints a table and writes bench/results/latest.json.
#
#   ./bench/run.sh            full run (~5 min here): 3 rounds x 5 s per scenario, 64 connections
#   ./bench/run.sh --smoke    seconds: every scenario once, briefly, with the debug build
#                             (tests/run.sh calls it; checks the JSON, asserts no throughput)
# Other options go to bench/bench.py (--help): e.g. --rounds 5 --duration 10 --server-cpu 0 --load-cpu 1.
set -euo pipefail
cd "$(dirname "$0")/.."

# --- tools: wrk (load), nginx (auth_request), redis-server, valgrind (callgrind) ------------------
APT_PACKAGES=(wrk nginx redis-server redis-tools valgrind python3 util-linux)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "==> installing ${missing[*]}" >&2
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  # Keep Debian's nginx/redis services from starting on install: the benchmark runs its own.
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

target="${CARGO_TARGET_DIR:-target}"
if [[ " $* " == *" --smoke "* ]]; then
  profile=debug
  echo "==> cargo build (debug, for the smoke run)" >&2
  cargo build --locked -p authd -p halos-bench >&2
else
  profile=release
  echo "==> cargo build --release" >&2
  cargo build --release --locked -p authd -p halos-bench >&2
fi
exec /usr/bin/python3 bench/bench.py --bin-dir "$target/$profile" "$@"
