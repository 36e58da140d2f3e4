#!/bin/bash -e
# Installs halos-authd and halos-authctl into the image.
#
# With halos-authd_*_ARCH.deb and halos-authctl_*_ARCH.deb in files/ (copy them from
# dist/ of ./debian/build-debs.sh), those are installed; otherwise the packages come
# from the image's apt sources (apt.halos.fi, added by HaLOS's stage-halos-base).
# Maintainer scripts run in the chroot: no service is started there (no systemd),
# the units are enabled for the first boot.
shopt -s nullglob

ARCH_IN_IMAGE=$(on_chroot <<< "dpkg --print-architecture")
debs=(files/halos-authctl_*_"${ARCH_IN_IMAGE}".deb files/halos-authd_*_"${ARCH_IN_IMAGE}".deb)

if [ "${#debs[@]}" -eq 2 ]; then
	install -d "${ROOTFS_DIR}/tmp/halos-auth-debs"
	install -m 0644 "${debs[@]}" "${ROOTFS_DIR}/tmp/halos-auth-debs/"
	on_chroot <<- 'EOF2'
		apt-get install -y --no-install-recommends /tmp/halos-auth-debs/halos-authctl_*.deb /tmp/halos-auth-debs/halos-authd_*.deb
		rm -rf /tmp/halos-auth-debs
	EOF2
elif [ "${#debs[@]}" -eq 0 ]; then
	on_chroot <<- 'EOF2'
		apt-get install -y --no-install-recommends halos-authd halos-authctl
	EOF2
else
	echo "stage-halos-auth: files/ must hold both halos-authd and halos-authctl .debs for ${ARCH_IN_IMAGE}" >&2
	exit 1
fi
