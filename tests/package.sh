#!/usr/bin/env bash
# Packaging test: builds the .debs for amd64 and arm64, then checks them.
#
#   ./tests/package.sh
#
#  1. ./debian/build-debs.sh            → dist/*.deb (both architectures, offline build)
#  2. contents: binaries of the right architecture, units, conffile, trigger, man pages
#  2b. the arm64 binaries run under qemu-user: provision, then the daemon answers /sso/api/health
#  3. lintian: no error and no warning (overrides carry their reason)
#  4. systemd-analyze verify on both units: no message at all
#  5. the man pages in debian/man match the --help of the built binaries
#  6. ./image/test-image.sh              → install, provision, daemon, trigger, upgrade, purge
#
# Installs what it needs with apt, only when missing. Caches the crates, the cargo build
# and the debootstrapped root under target/, so a second run is much faster; a fresh clone
# works too. HALOS_AUTH_CACHE=DIR puts these caches in DIR instead (e.g. one that outlives
# the clone, for CI on a kept machine; one run at a time per DIR).
# Prints the wall time of every step.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CACHE_ROOT=${HALOS_AUTH_CACHE:-$ROOT/target}
export HALOS_AUTH_BUILD_DIR=$CACHE_ROOT/deb IMAGE_CACHE=$CACHE_ROOT/image-cache

T0=$(date +%s)
step_start=$T0
times=()
say() { printf '\n==> %s\n' "$*"; }
step() { # step NAME: closes the previous step's timer
  local now; now=$(date +%s)
  [ -n "${STEP:-}" ] && times+=("$(printf '%-28s %4d s' "$STEP" $((now - step_start)))")
  STEP=$1; step_start=$now
  say "$1"
}
passed=0
failed=0
ok() { passed=$((passed + 1)); printf '  ok   %s\n' "$*"; }
bad() { failed=$((failed + 1)); printf '  FAIL %s\n' "$*"; }

SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
APT_PACKAGES=(lintian debootstrap curl file help2man python3 systemd qemu-user-static)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  say "installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- 1. build --------------------------------------------------------------------------
step "build amd64 + arm64 debs"
./debian/build-debs.sh

VERSION=$(dpkg-parsechangelog -S Version)
X=$ROOT/target/package-test
rm -rf "$X"; mkdir -p "$X"

# --- 2. contents ----------------------------------------------------------------------------
step "package contents"
for arch in amd64 arm64; do
  for pkg in halos-authd halos-authctl; do
    deb=dist/${pkg}_${VERSION}_${arch}.deb
    if [ ! -s "$deb" ]; then bad "$deb missing"; continue; fi
    dpkg-deb -x "$deb" "$X/$arch"
    dpkg-deb -e "$deb" "$X/$arch-$pkg.control"
  done
  case $arch in amd64) machine='x86-64' ;; arm64) machine='ARM aarch64' ;; esac
  for bin in halos-authd halos-authctl; do
    if file -b "$X/$arch/usr/bin/$bin" | grep -q "ELF 64-bit.*$machine.*stripped"; then
      ok "$arch: /usr/bin/$bin is a stripped $machine ELF"
    else
      bad "$arch: /usr/bin/$bin: $(file -b "$X/$arch/usr/bin/$bin")"
    fi
  done
  # DESIGN §14 bounds the arm64 binary (the Pi); amd64 code is larger and only reported.
  size=$(stat -c %s "$X/$arch/usr/bin/halos-authd")
  if [ "$arch" != arm64 ]; then ok "$arch: halos-authd is $((size / 1024)) KiB"
  elif [ "$size" -le $((15 * 1024 * 1024)) ]; then ok "$arch: halos-authd is $((size / 1024)) KiB (≤ 15 MiB)"
  else bad "$arch: halos-authd is $size bytes (> 15 MiB)"; fi
  for f in lib/systemd/system/halos-authd.service lib/systemd/system/halos-authd-provision.service \
           etc/halos/authd.yml usr/share/man/man8/halos-authd.8.gz usr/share/man/man1/halos-authctl.1.gz \
           usr/share/doc/halos-authd/examples/traefik-halos-authd.yml \
           usr/share/dbus-1/system.d/org.halos.Auth1.conf usr/share/polkit-1/actions/org.halos.auth1.policy \
           usr/share/dbus-1/interfaces/org.halos.Auth1.xml; do
    if [ -e "$X/$arch/$f" ]; then ok "$arch: ships /$f"; else bad "$arch: /$f missing"; fi
  done
  if [ -d "$X/$arch/etc/halos/oidc-clients.d" ]; then ok "$arch: ships /etc/halos/oidc-clients.d/"
  else bad "$arch: /etc/halos/oidc-clients.d/ missing"; fi
  if grep -qx 'interest-noawait /etc/halos/oidc-clients.d' "$X/$arch-halos-authd.control/triggers"; then
    ok "$arch: trigger interest-noawait /etc/halos/oidc-clients.d"
  else bad "$arch: trigger missing"; fi
  if grep -qx /etc/halos/authd.yml "$X/$arch-halos-authd.control/conffiles"; then
    ok "$arch: /etc/halos/authd.yml is a conffile"
  else bad "$arch: /etc/halos/authd.yml is not a conffile"; fi
done

# --- 2b. arm64 under qemu-user ------------------------------------------------------------
step "arm64 binaries under qemu"
# No -L: with libc6:arm64 installed (multiarch), qemu must use its loader, not the cross one
# (reference/build.md: the mix makes threaded programs spin).
A=$X/arm64/usr/bin
Q=$X/qemu
mkdir -p "$Q/state"
cat >"$Q/authd.yml" <<EOF
server:
  address: tcp://127.0.0.1:0/sso
authentication_backend:
  file:
    path: $Q/state/users_database.yml
storage:
  local:
    path: $Q/state/state.sqlite
identity_providers:
  oidc:
    clients_dir: $Q/oidc-clients.d
hostnames_file: $Q/hostnames.conf
EOF
if qemu-aarch64-static "$A/halos-authctl" --config "$Q/authd.yml" provision \
     --branding "$Q/none.toml" --authelia-users "$Q/none.yml" >"$Q/provision.log" 2>&1 \
   && grep -q 'created admin "admin"' "$Q/provision.log" \
   && [ -s "$Q/state/keys/hmac.key" ]; then
  ok "arm64 halos-authctl provision (argon2, keys, users file)"
else
  bad "arm64 halos-authctl provision"; cat "$Q/provision.log"
fi
qemu-aarch64-static "$A/halos-authd" --config "$Q/authd.yml" >/dev/null 2>"$Q/daemon.log" &
QPID=$!
addr=""
for _ in $(seq 1 100); do
  addr=$(sed -n 's|^halos-authd ready: listening on tcp://\([0-9.:]*\)/sso$|\1|p' "$Q/daemon.log")
  [ -n "$addr" ] && break
  kill -0 "$QPID" 2>/dev/null || break
  sleep 0.1
done
if [ -n "$addr" ] && [ "$(curl -fsS "http://$addr/sso/api/health")" = '{"status":"OK"}' ] \
   && grep -q 'users=1' "$Q/daemon.log"; then
  ok "arm64 halos-authd serves /sso/api/health with the provisioned users"
else
  bad "arm64 halos-authd"; cat "$Q/daemon.log"
fi
kill "$QPID" 2>/dev/null || true
wait "$QPID" 2>/dev/null || true

# --- 3. lintian ----------------------------------------------------------------------------
step "lintian"
if lintian --fail-on error,warning --suppress-tags initial-upload-closes-no-bugs \
     dist/halos-auth_"${VERSION}"_amd64.changes dist/halos-auth_"${VERSION}"_arm64.changes \
     >"$X/lintian.log" 2>&1; then
  ok "lintian: no error, no warning"
else
  bad "lintian"
fi
cat "$X/lintian.log"

# --- 4. systemd-analyze verify ----------------------------------------------------------
step "systemd-analyze verify"
# verify wants ExecStart= binaries to exist: check copies that point into the extracted
# amd64 package, under the same unit names. Any message at all counts as a failure
# (unknown keys are only warnings with exit code 0). Documentation=man:… pages must exist:
# MANPATH points at the package's own.
U=$X/units
mkdir -p "$U"
for unit in halos-authd.service halos-authd-provision.service; do
  sed "s|/usr/bin/halos-auth|$X/amd64/usr/bin/halos-auth|g" "$X/amd64/lib/systemd/system/$unit" >"$U/$unit"
done
if MANPATH=$X/amd64/usr/share/man systemd-analyze verify "$U/halos-authd.service" "$U/halos-authd-provision.service" >"$X/verify.log" 2>&1 \
   && ! grep -v -e '^$' "$X/verify.log" | grep -q .; then
  ok "systemd-analyze verify: both units clean"
else
  bad "systemd-analyze verify"; cat "$X/verify.log"
fi
for unit in halos-authd.service halos-authd-provision.service; do
  if systemd-analyze security --offline=yes --threshold=20 "$U/$unit" >"$X/security.log" 2>&1; then
    ok "systemd-analyze security $unit: $(grep -o 'exposure level.*' "$X/security.log" | head -1)"
  else
    bad "systemd-analyze security $unit (exposure above 2.0)"; tail -3 "$X/security.log"
  fi
done

# --- 5. man pages ------------------------------------------------------------------------
step "man pages"
mkdir -p "$X/man"
./debian/gen-manpages.sh "$X/amd64/usr/bin" "$X/man"
if diff -u debian/man/halos-authd.8 "$X/man/halos-authd.8" && diff -u debian/man/halos-authctl.1 "$X/man/halos-authctl.1"; then
  ok "debian/man matches the binaries' --help"
else
  bad "debian/man is stale: run ./debian/gen-manpages.sh on the new binaries"
fi

# --- 6. image test ------------------------------------------------------------------------
step "image test"
if ./image/test-image.sh dist; then ok "image test"; else bad "image test"; fi

step "done"
printf '\nwall time per step:\n'
printf '  %s\n' "${times[@]}"
printf '  %-28s %4d s\n' "total" $(( $(date +%s) - T0 ))
printf '\npackage test: %d passed, %d failed\n' "$passed" "$failed"
[ "$failed" = 0 ]
