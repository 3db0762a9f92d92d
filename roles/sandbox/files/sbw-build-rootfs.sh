#!/bin/bash
# Build the sandbox's cached Debian root (the "AMI") once, as a zstd tarball.
#
# Usage: sbw-build-rootfs.sh TARBALL SUITE MIRROR VARIANT PACKAGES(comma separated)
# The caller (roles/sandbox/tasks/rootfs.yml) names TARBALL after a hash of this script and its
# arguments, so a changed recipe yields a new file; an existing TARBALL is kept as is.
# Concurrent callers (sandbox, molecule scenarios, tests) serialise on a lock next to TARBALL;
# the tarball appears atomically (rename), so a reader never sees half a file.
set -euo pipefail

tarball=$1 suite=$2 mirror=$3 variant=$4 packages=$5
cache_dir=$(dirname "$tarball")
mkdir -p "$cache_dir"
exec 9>"$cache_dir/.rootfs.lock"
flock 9
if [ -s "$tarball" ]; then
    echo "rootfs: cached $tarball"
    exit 0
fi

work=$(mktemp -d "$cache_dir/.build.XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/root
debootstrap --variant="$variant" --include="$packages" "$suite" "$root" "$mirror" >"$work/debootstrap.log" 2>&1 || {
    tail -n 40 "$work/debootstrap.log" >&2
    exit 1
}

# What every host shares; per-host settings (hostname, apt proxy) are written by host.yml.
echo 'LANG=C.UTF-8' >"$root/etc/default/locale"
cat >"$root/etc/apt/sources.list" <<SOURCES
deb $mirror $suite main
deb $mirror $suite-updates main
deb ${mirror%/debian*}/debian-security $suite-security main
SOURCES
# No recommends, like a lean server image; apt keeps no downloaded .debs.
printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' >"$root/etc/apt/apt.conf.d/90sbw-norecommends"
# The host's resolver is not reachable from a sandbox namespace; hosts use the apt proxy by address.
rm -f "$root/etc/resolv.conf" && : >"$root/etc/resolv.conf"
: >"$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"
# Units that make no sense in a container without consoles or a network manager.
for unit in getty@tty1.service systemd-networkd-wait-online.service apt-daily.timer apt-daily-upgrade.timer; do
    ln -sf /dev/null "$root/etc/systemd/system/$unit"
done
chroot "$root" apt-get clean
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/tmp/* "$root"/var/tmp/*
# Empty package lists must look stale (apt's cache_valid_time reads this directory's mtime), like
# on a fresh EC2 image, so the first `apt update_cache` really updates.
touch -d @0 "$root/var/lib/apt/lists"

tar --zstd -C "$root" --numeric-owner --xattrs --acls -cf "$work/rootfs.tar.zst" .
mv "$work/rootfs.tar.zst" "$tarball"
echo "rootfs: built $tarball"
