#!/bin/sh
# Builds the base image of the systemd VM test (tests/tests/vm_systemd.rs):
# Debian bookworm with Debian's kernel and systemd as PID 1, and one unit,
# lb-vm-stage.service, that mounts the per-run stage disk (/dev/vdb, made by
# the test) and runs its run.sh, then powers the VM off. Everything specific
# to a test run lives on the stage disk, so this image only changes when
# this file does: the test keys its cache (/var/cache/lb-vm/<hash>) by a
# hash of this file.
#
# Usage: build-image.sh OUT_DIR   (OUT_DIR must not exist; it is created
# atomically with vmlinuz, initrd.img and rootfs.ext4).
set -eu
out=$1
mirror=${LB_VM_MIRROR:-http://deb.debian.org/debian}
[ ! -e "$out" ] || { echo "$out already exists" >&2; exit 1; }
work=$(mktemp -d "$out.work.XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/root

# A minimal system: systemd as init, iproute2 for the test's veth, procps
# for its checks, nftables (lbd installs its forward-drop policy with nft).
debootstrap --variant=minbase \
    --include=initramfs-tools,systemd,systemd-sysv,udev,kmod,iproute2,procps,nftables \
    bookworm "$root" "$mirror"

# Debian 12's own kernel (bookworm's linux-image-amd64, 6.1), the oldest
# the project supports, with its initramfs (virtio_blk is a module): the
# test proves its verifier accepts lb's XDP program.
mount -t proc proc "$root/proc"
trap 'umount "$root/proc" 2>/dev/null; rm -rf "$work"' EXIT
chroot "$root" apt-get update -q
chroot "$root" env DEBIAN_FRONTEND=noninteractive apt-get install -q -y \
    --no-install-recommends linux-image-amd64
umount "$root/proc"

echo lbvm > "$root/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 lbvm\n' > "$root/etc/hosts"
printf '/dev/vda / ext4 rw,errors=remount-ro 0 1\n' > "$root/etc/fstab"
# Nothing waits on a network or a login in this VM.
ln -sf /dev/null "$root/etc/systemd/system/serial-getty@ttyS0.service"
ln -sf /dev/null "$root/etc/systemd/system/getty@tty1.service"
ln -sf /dev/null "$root/etc/systemd/system/systemd-timesyncd.service"
ln -sf /dev/null "$root/etc/systemd/system/apt-daily.timer"
ln -sf /dev/null "$root/etc/systemd/system/apt-daily-upgrade.timer"
ln -sf /dev/null "$root/etc/systemd/system/e2scrub_all.timer"
ln -sf /dev/null "$root/etc/systemd/system/fstrim.timer"

cat > "$root/etc/systemd/system/lb-vm-stage.service" <<'UNIT'
[Unit]
Description=Run the lb test stage from /dev/vdb, then power off
Requires=dev-vdb.device
After=dev-vdb.device multi-user.target
SuccessAction=poweroff-force
FailureAction=poweroff-force

[Service]
Type=oneshot
ExecStart=/bin/sh -c 'mkdir -p /mnt/stage && mount -o ro /dev/vdb /mnt/stage && exec /bin/sh /mnt/stage/run.sh'
StandardOutput=journal+console
TimeoutStartSec=infinity

[Install]
WantedBy=multi-user.target
UNIT
ln -sf /etc/systemd/system/lb-vm-stage.service \
    "$root/etc/systemd/system/multi-user.target.wants/lb-vm-stage.service"

# Kernel and initramfs are booted directly by QEMU (-kernel/-initrd).
cp "$root"/boot/vmlinuz-* "$work/vmlinuz"
cp "$root"/boot/initrd.img-* "$work/initrd.img"
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
mkfs.ext4 -q -F -L lbvm -d "$root" "$work/rootfs.ext4" 2G
rm -rf "$root"
mv "$work" "$out"
trap - EXIT
echo "VM image ready in $out"
