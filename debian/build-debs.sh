#!/usr/bin/env bash
# Builds the halos-authd and halos-authctl Debian packages for amd64 and arm64 into dist/.
#
#   ./debian/build-debs.sh            # both architectures
#   ARCHES=arm64 ./debian/build-debs.sh
#
# On Debian 12 (bookworm), as root or with sudo. Installs its build dependencies with apt
# when they are missing (Debian's rustc-web/cargo-web 1.96 from bookworm-security, the
# arm64 std and cross gcc), fetches the crates of Cargo.lock once into a cache, then runs
# dpkg-buildpackage offline: natively for amd64, cross (-aarm64) for arm64.
#
# The source is copied (files tracked by git plus untracked, not ignored ones) to
# target/deb/src, so nothing is written next to the checkout. The crate cache
# (target/deb/cargo-home) and the cargo build caches (target/deb/cargo-target-ARCH) are kept
# between runs; delete target/deb to start from nothing. DEB_BUILD_OPTIONS defaults to
# nocheck (the tests run in tests/run.sh); set it to "" to also run them in the build.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${HALOS_AUTH_BUILD_DIR:-$ROOT/target/deb}
DIST=${DIST:-$ROOT/dist}
ARCHES=${ARCHES:-amd64 arm64}
export DEB_BUILD_OPTIONS=${DEB_BUILD_OPTIONS-nocheck}

say() { printf '\n==> %s\n' "$*" >&2; }
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo

# --- build dependencies (only what is missing) --------------------------------------
need=(build-essential debhelper dpkg-dev rustc-web cargo-web libstd-rust-web-dev)
for arch in $ARCHES; do
  case "$arch" in
    amd64) ;;
    arm64) need+=(crossbuild-essential-arm64 gcc-aarch64-linux-gnu libc6-dev-arm64-cross
                  libstd-rust-web-dev:arm64) ;;
    *) echo "build-debs.sh: unsupported architecture $arch (amd64, arm64)" >&2; exit 2 ;;
  esac
done
missing=()
for p in "${need[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  say "installing ${missing[*]}"
  if [[ " $ARCHES " == *" arm64 "* ]] && ! dpkg --print-foreign-architectures | grep -qx arm64; then
    $SUDO dpkg --add-architecture arm64
  fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi
# Debian's toolchain, never rustup's proxies (rust-toolchain.toml names another version).
export CARGO=/usr/bin/cargo RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc
"$RUSTC" --version >&2

# --- a clean copy of the source ----------------------------------------------------------
VERSION=$(dpkg-parsechangelog -l "$ROOT/debian/changelog" -S Version)
CARGO_VERSION=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' "$ROOT/Cargo.toml")
if [ "${VERSION%%-*}" != "$CARGO_VERSION" ]; then
  echo "build-debs.sh: debian/changelog says $VERSION but Cargo.toml says $CARGO_VERSION" >&2
  exit 1
fi
SRC=$WORK/src/halos-auth
say "copying the source to $SRC"
rm -rf "$WORK/src"
mkdir -p "$SRC"
if git -C "$ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  (cd "$ROOT" && git ls-files -z --cached --others --exclude-standard \
     | while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done \
     | tar --null -T - -cf -) | tar -C "$SRC" -xf -
else
  tar -C "$ROOT" --exclude=./target --exclude=./dist --exclude=./.venv --exclude=./.git \
    -cf - . | tar -C "$SRC" -xf -
fi

# --- crates, fetched once (the build itself is --offline) --------------------------------
export CARGO_HOME=$WORK/cargo-home
mkdir -p "$CARGO_HOME"
targets=()
for arch in $ARCHES; do
  case "$arch" in
    amd64) targets+=(--target x86_64-unknown-linux-gnu) ;;
    arm64) targets+=(--target aarch64-unknown-linux-gnu) ;;
  esac
done
if ! (cd "$SRC" && "$CARGO" fetch --locked --offline "${targets[@]}" >/dev/null 2>&1); then
  say "fetching crates into $CARGO_HOME"
  (cd "$SRC" && "$CARGO" fetch --locked "${targets[@]}")
fi

# --- the packages -------------------------------------------------------------------------
mkdir -p "$DIST"
for arch in $ARCHES; do
  # One build cache per architecture: the native and the cross build link their host
  # tools (build scripts, proc macros) differently, so a shared cache is rebuilt each time.
  export HALOS_AUTH_CARGO_TARGET_DIR=$WORK/cargo-target-$arch
  rm -f "$WORK"/src/*.deb "$WORK"/src/*.changes "$WORK"/src/*.buildinfo
  if [ "$arch" = "$(dpkg --print-architecture)" ]; then
    say "dpkg-buildpackage for $arch (native)"
    (cd "$SRC" && dpkg-buildpackage -us -uc -b)
  else
    say "dpkg-buildpackage for $arch (cross)"
    (cd "$SRC" && dpkg-buildpackage -us -uc -B -a"$arch" -Pcross,nocheck)
  fi
  rm -f "$DIST"/*_"$arch".deb "$DIST"/*_"$arch".changes "$DIST"/*_"$arch".buildinfo
  mv "$WORK"/src/*_"$arch".deb "$WORK"/src/*_"$arch".changes "$WORK"/src/*_"$arch".buildinfo "$DIST"/
done
say "built:"
ls -l "$DIST"/*.deb >&2
