#!/bin/bash -e
# Every device flashed from this image must have its own keys and secrets. The
# package's postinst provisioned them inside the image build; remove them so that
# halos-authd-provision.service creates fresh ones at first boot, before halos-authd
# starts. The users file stays: it holds the documented first admin (or the users the
# image builder added), which is the same on every device by design.
rm -rf "${ROOTFS_DIR}/var/lib/halos-authd/keys"

# Both units must start at boot (the package enables them; fail the build if not).
for unit in halos-authd-provision.service halos-authd.service; do
	if [ ! -L "${ROOTFS_DIR}/etc/systemd/system/multi-user.target.wants/${unit}" ]; then
		echo "stage-halos-auth: ${unit} is not enabled in the image" >&2
		exit 1
	fi
done
