#!/usr/bin/env bash
# Regenerates debian/man/halos-authd.8 and halos-authctl.1 with help2man from built
# binaries: ./debian/gen-manpages.sh BINDIR [OUTDIR]. The pages are committed (a cross
# build cannot run its binaries); tests/package.sh checks that they are up to date.
set -euo pipefail
BIN=${1:?usage: gen-manpages.sh BINDIR [OUTDIR]}
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${2:-$HERE/man}
# A fixed date (the changelog's) so the pages only change when the --help text does.
SOURCE_DATE_EPOCH=$(dpkg-parsechangelog -l "$HERE/changelog" -S Timestamp)
export SOURCE_DATE_EPOCH
# clap prints the value of its env fallbacks in --help.
unset AUTHD_CONFIG
help2man --no-info --section 8 --include "$HERE/man/halos-authd.h2m" \
  --output "$OUT/halos-authd.8" "$BIN/halos-authd"
help2man --no-info --section 1 --include "$HERE/man/halos-authctl.h2m" \
  --output "$OUT/halos-authctl.1" "$BIN/halos-authctl"
