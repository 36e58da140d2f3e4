#!/usr/bin/env bash
# Proves the packages and the pi-gen stage on this machine, in a fresh Debian root:
#
#   ./image/test-image.sh [DIST]        # DIST: directory with the .debs (default dist/)
#
#  1. a fresh bookworm root (debootstrap --variant=minbase, host architecture; the
#     debootstrapped root is cached as a tarball under target/image-cache);
#  2. image/stage-halos-auth run as pi-gen runs it (ROOTFS_DIR, on_chroot, files/);
#  3. checks of what postinst made: system user, modes, owners, conffile, units enabled,
#     first admin; the stage removed the per-device keys;
#  4. "first boot": the provisioning unit's ExecStart in the root, twice (idempotent);
#  5. the daemon binary started inside the root as the halos-authd user on a free port
#     answers /sso/api/health, with the users file it can read, and reloads on SIGHUP;
#  6. a fake app package dropping /etc/halos/oidc-clients.d/fakeapp.yml fires the trigger,
#     and again on its removal;
#  7. upgrade (reinstall over a changed users file) keeps user data and keys;
#  8. remove keeps the state, purge removes it.
#
# Needs root (chroot, mounts), debootstrap and curl; installs them when missing.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DIST=$(cd "${1:-$ROOT/dist}" && pwd)
SUITE=${SUITE:-bookworm}
ARCH=$(dpkg --print-architecture)
CACHE=${IMAGE_CACHE:-$ROOT/target/image-cache}
WORK=${IMAGE_WORK:-$ROOT/target/image-test}
RFS=$WORK/rootfs

passed=0
failed=0
ok() { passed=$((passed + 1)); printf '  ok   %s\n' "$*"; }
bad() { failed=$((failed + 1)); printf '  FAIL %s\n' "$*"; }
check() { # check DESCRIPTION COMMAND...
  local what=$1; shift
  if "$@"; then ok "$what"; else bad "$what"; fi
}
say() { printf '\n==> %s\n' "$*"; }
in_root() { chroot "$RFS" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "$@"; }

[ "$(id -u)" = 0 ] || { echo "test-image.sh: run as root (chroot, mounts)" >&2; exit 2; }
need=()
for p in debootstrap curl; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if ((${#need[@]})); then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

shopt -s nullglob
DEBS=("$DIST"/halos-authctl_*_"$ARCH".deb "$DIST"/halos-authd_*_"$ARCH".deb)
if [ "${#DEBS[@]}" -ne 2 ]; then
  echo "test-image.sh: need halos-authd and halos-authctl .debs for $ARCH in $DIST (./debian/build-debs.sh)" >&2
  exit 2
fi

# --- cleanup, whatever happens -------------------------------------------------------------
DAEMON_PID=""
cleanup() {
  if [ -n "$DAEMON_PID" ] && kill -0 "$DAEMON_PID" 2>/dev/null; then
    kill "$DAEMON_PID" 2>/dev/null || true
    wait "$DAEMON_PID" 2>/dev/null || true
  fi
  for m in "$RFS/proc" "$RFS/dev/pts" "$RFS/dev"; do
    mountpoint -q "$m" && umount -l "$m"
  done
  return 0
}
trap cleanup EXIT

# --- 1. a fresh root --------------------------------------------------------------------
# The host's Debian mirror (apt sources), unless DEBIAN_MIRROR says otherwise.
mirror() {
  if [ -n "${DEBIAN_MIRROR:-}" ]; then echo "$DEBIAN_MIRROR"; return; fi
  local m
  m=$(apt-get indextargets --format '$(REPO_URI) $(RELEASE)' 'Created-By: Packages' 2>/dev/null \
        | awk -v s="$SUITE" '$2 == s && $1 !~ /security/ {print $1; exit}')
  [ -n "$m" ] || { echo "test-image.sh: no $SUITE mirror in the apt sources; set DEBIAN_MIRROR" >&2; exit 2; }
  echo "${m%/}"
}
TARBALL=$CACHE/$SUITE-minbase-$ARCH.tar
say "fresh $SUITE root in $RFS"
cleanup
rm -rf "$WORK"
mkdir -p "$RFS" "$CACHE"
if [ ! -s "$TARBALL" ]; then
  t0=$(date +%s)
  debootstrap --variant=minbase "$SUITE" "$WORK/bootstrap" "$(mirror)" >"$WORK/debootstrap.log" 2>&1 \
    || { tail -20 "$WORK/debootstrap.log"; exit 1; }
  tar -C "$WORK/bootstrap" -cf "$TARBALL.tmp" . && mv "$TARBALL.tmp" "$TARBALL"
  rm -rf "$WORK/bootstrap"
  echo "debootstrap: $(( $(date +%s) - t0 )) s (cached as $TARBALL)"
fi
tar -C "$RFS" -xf "$TARBALL"
mount -t proc proc "$RFS/proc"
mount --bind /dev "$RFS/dev"
mount --bind /dev/pts "$RFS/dev/pts"
check "the root has no systemd running (like pi-gen's chroot)" test ! -e "$RFS/run/systemd/system"

# --- 2. the pi-gen stage ---------------------------------------------------------------
say "pi-gen stage image/stage-halos-auth"
STAGE=$WORK/stage-halos-auth
cp -a "$ROOT/image/stage-halos-auth" "$STAGE"
cp "${DEBS[@]}" "$STAGE/00-install-halos-auth/files/"
export ROOTFS_DIR=$RFS
# pi-gen's on_chroot: a shell in the root reading the commands from stdin.
on_chroot() { chroot "$ROOTFS_DIR" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
  LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive /bin/bash -e "$@"; }
copy_previous() { echo "copy_previous must not be needed" >&2; return 1; }
export -f on_chroot copy_previous
(cd "$STAGE" && ./prerun.sh)
for sub in "$STAGE"/[0-9][0-9]-*/; do
  echo "--- $(basename "$sub")"
  (cd "$sub" && ./00-run.sh) 2>&1 | tee "$WORK/stage-$(basename "$sub").log"
done
check "postinst provisioned inside the chroot" \
  grep -q "provision: created admin \"admin\"" "$WORK/stage-00-install-halos-auth.log"

# --- 3. what postinst left ---------------------------------------------------------------
say "installed system"
check "both packages installed" \
  bash -c "[ \"\$(chroot '$RFS' dpkg-query -W -f='\${Status}\n' halos-authd halos-authctl | grep -c 'install ok installed')\" = 2 ]"
check "system user halos-authd with nologin" \
  bash -c "chroot '$RFS' getent passwd halos-authd | grep -q ':/var/lib/halos-authd:/usr/sbin/nologin$'"
uid=$(chroot "$RFS" id -u halos-authd)
gid=$(chroot "$RFS" id -g halos-authd)
check "the system user is a system uid ($uid)" test "$uid" -lt 1000
stat_is() { [ "$(stat -c '%a %u %g' "$RFS$1")" = "$2" ]; }
check "/var/lib/halos-authd is 750 halos-authd:halos-authd" stat_is /var/lib/halos-authd "750 $uid $gid"
check "users file is 600 halos-authd:halos-authd" stat_is /var/lib/halos-authd/users_database.yml "600 $uid $gid"
check "users file lock is 600 halos-authd:halos-authd" stat_is /var/lib/halos-authd/users_database.yml.lock "600 $uid $gid"
check "the first admin is admin in group admins" \
  bash -c "chroot '$RFS' halos-authctl user show admin --json | grep -q '\"admins\"'"
check "the stage removed the per-device keys" test ! -e "$RFS/var/lib/halos-authd/keys"
check "/etc/halos/authd.yml is a conffile" \
  bash -c "chroot '$RFS' dpkg-query -W -f='\${Conffiles}' halos-authd | grep -q /etc/halos/authd.yml"
check "the shipped authd.yml is valid" in_root halos-authctl --config /etc/halos/authd.yml check
check "/etc/halos/oidc-clients.d exists" test -d "$RFS/etc/halos/oidc-clients.d"
for unit in halos-authd.service halos-authd-provision.service; do
  check "$unit enabled" test -L "$RFS/etc/systemd/system/multi-user.target.wants/$unit"
done
check "Traefik example shipped" test -s "$RFS/usr/share/doc/halos-authd/examples/traefik-halos-authd.yml"

# --- 4. first boot: the provisioning unit's command --------------------------------------
say "first boot provisioning"
UNIT_DIR=$RFS/lib/systemd/system
[ -e "$UNIT_DIR/halos-authd.service" ] || UNIT_DIR=$RFS/usr/lib/systemd/system
PROVISION=$(sed -n 's/^ExecStart=//p' "$UNIT_DIR/halos-authd-provision.service")
echo "ExecStart=$PROVISION"
# shellcheck disable=SC2086
in_root $PROVISION | tee "$WORK/provision1.log"
check "keys dir created 700 halos-authd" stat_is /var/lib/halos-authd/keys "700 $uid $gid"
for k in hmac.key storage.key; do
  check "secret $k created 600 halos-authd" stat_is "/var/lib/halos-authd/keys/$k" "600 $uid $gid"
done
sum_state() { (cd "$RFS/var/lib/halos-authd" && find . -type f -print0 | sort -z | xargs -0 sha256sum); }
before=$(sum_state)
# shellcheck disable=SC2086
check "second run does nothing" bash -c "chroot '$RFS' $PROVISION | grep -q 'nothing to do'"
check "second run changed no file" test "$before" = "$(sum_state)"

# --- 5. the daemon inside the root ----------------------------------------------------------
say "daemon inside the root, as halos-authd"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
EXEC=$(sed -n 's/^ExecStart=//p' "$UNIT_DIR/halos-authd.service")
echo "ExecStart=$EXEC (AUTHD_SERVER_ADDRESS=tcp://127.0.0.1:$PORT/sso)"
# shellcheck disable=SC2086
chroot --userspec=halos-authd:halos-authd "$RFS" /usr/bin/env -i PATH=/usr/bin:/bin \
  AUTHD_SERVER_ADDRESS="tcp://127.0.0.1:$PORT/sso" $EXEC \
  >"$WORK/daemon.log" 2>&1 &
DAEMON_PID=$!
healthy=""
for _ in $(seq 1 100); do
  if body=$(curl -fsS "http://127.0.0.1:$PORT/sso/api/health" 2>/dev/null); then healthy=$body; break; fi
  kill -0 "$DAEMON_PID" 2>/dev/null || break
  sleep 0.1
done
check "GET /sso/api/health answers {\"status\":\"OK\"}" test "$healthy" = '{"status":"OK"}'
check "the daemon runs as halos-authd" \
  bash -c "[ \"\$(stat -c %u /proc/$DAEMON_PID)\" = '$uid' ]"
check "the daemon read the provisioned users file (users=1)" grep -q 'users=1' "$WORK/daemon.log"
kill -HUP "$DAEMON_PID"
for _ in $(seq 1 50); do grep -q 'reloaded on SIGHUP' "$WORK/daemon.log" && break; sleep 0.1; done
check "SIGHUP (ExecReload) reloads" grep -q 'reloaded on SIGHUP' "$WORK/daemon.log"

# --- 6. the trigger -------------------------------------------------------------------------
say "OIDC client snippet from a fake app package"
FAKE=$WORK/fake-app
mkdir -p "$FAKE/DEBIAN" "$FAKE/etc/halos/oidc-clients.d"
cat >"$FAKE/DEBIAN/control" <<EOF
Package: halos-fake-app
Version: 1.0
Architecture: all
Maintainer: test <test@example.org>
Description: fake HaLOS app with an OpenID Connect client snippet
EOF
echo /etc/halos/oidc-clients.d/fakeapp.yml >"$FAKE/DEBIAN/conffiles"
cat >"$FAKE/etc/halos/oidc-clients.d/fakeapp.yml" <<'EOF'
client_id: fakeapp
client_name: Fake App
client_secret_file: /var/lib/fake-app/oidc-secret
redirect_uris:
  - 'https://${HALOS_DOMAIN}/fakeapp/callback'
scopes: [openid, profile, email, groups]
EOF
dpkg-deb --root-owner-group -b "$FAKE" "$WORK/halos-fake-app_1.0_all.deb" >/dev/null
cp "$WORK/halos-fake-app_1.0_all.deb" "$RFS/tmp/"
in_root dpkg -i /tmp/halos-fake-app_1.0_all.deb 2>&1 | tee "$WORK/trigger-install.log"
check "installing the app fires the trigger" \
  grep -q 'halos-authd: OIDC client snippets changed (1 in /etc/halos/oidc-clients.d)' "$WORK/trigger-install.log"
in_root dpkg --purge halos-fake-app 2>&1 | tee "$WORK/trigger-purge.log"
check "purging the app fires the trigger" \
  grep -q 'halos-authd: OIDC client snippets changed (0 in /etc/halos/oidc-clients.d)' "$WORK/trigger-purge.log"
check "the daemon is still serving" curl -fsS -o /dev/null "http://127.0.0.1:$PORT/sso/api/health"
kill "$DAEMON_PID"; wait "$DAEMON_PID" 2>/dev/null || true; DAEMON_PID=""

# --- 7. upgrade keeps user data --------------------------------------------------------------
say "upgrade (reinstall) keeps users and keys"
printf 'crew pass 1\n' | in_root halos-authctl user add crew --email crew@halos.local --group users --password-stdin
printf '# edited by hand\n' >>"$RFS/var/lib/halos-authd/users_database.yml"
chmod 0640 "$RFS/var/lib/halos-authd/users_database.yml"
before=$(sum_state)
cp "${DEBS[@]}" "$RFS/tmp/"
in_root sh -c 'dpkg -i /tmp/halos-authctl_*.deb /tmp/halos-authd_*.deb' >"$WORK/upgrade.log" 2>&1 \
  || { cat "$WORK/upgrade.log"; bad "reinstall"; }
check "users file, keys and secrets unchanged by the upgrade" test "$before" = "$(sum_state)"
check "users file mode kept (640)" stat_is /var/lib/halos-authd/users_database.yml "640 $uid $gid"
check "postinst said there was nothing to provision" grep -q 'provision: nothing to do' "$WORK/upgrade.log"

# --- 8. remove, purge ---------------------------------------------------------------------------
say "remove and purge"
in_root dpkg --remove halos-authd >/dev/null
check "remove keeps the state" test -s "$RFS/var/lib/halos-authd/users_database.yml"
check "remove keeps the conffile" test -e "$RFS/etc/halos/authd.yml"
in_root dpkg --purge halos-authd halos-authctl >/dev/null
check "purge removes /var/lib/halos-authd" test ! -e "$RFS/var/lib/halos-authd"
check "purge removes /etc/halos/authd.yml" test ! -e "$RFS/etc/halos/authd.yml"
check "purge removes the unit links" test ! -e "$RFS/etc/systemd/system/multi-user.target.wants/halos-authd.service"
check "purge removes the binaries" test ! -e "$RFS/usr/bin/halos-authd"

cleanup
trap - EXIT
[ "$failed" = 0 ] && rm -rf "$WORK"
printf '\nimage test: %d passed, %d failed\n' "$passed" "$failed"
[ "$failed" = 0 ]
