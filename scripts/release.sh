#!/bin/sh
# Builds the release archives into OUT, in the reference plugins' names and
# layout, reproducibly: the same commit and toolchain give the same bytes.
#   cni-plugins-linux-ARCH-VERSION.tgz      ./bridge ./host-local ... ./README.md
#   cnisuite-subnetd-linux-ARCH-VERSION.tgz ./subnetd ./subnetd-kube ./subnetd-etcd ./cnictl ./kube-flannel.yml ...
#   cnisuite-image-linux-ARCH-VERSION.tar   the DaemonSet's image (scripts/mkimage), which the manifests name
# each with .sha256 and .sha512 files as sha256sum/sha512sum write them.
# Usage: release.sh OUT VERSION LDFLAGS (the Makefile passes its own).
set -eu
umask 022
out=$1 version=$2 ldflags=$3
arch=$(go env GOARCH)
# Every file's time is the commit's, so that the archives do not depend on
# when they were built (SOURCE_DATE_EPOCH overrides, as reproducible builds do).
epoch=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/plugins" "$stage/subnetd" "$out"

build() { CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" "$@"; }
build -o "$stage/plugins/" ./plugins/...
build -tags grpcnotrace,nokube -o "$stage/subnetd/" ./cmd/subnetd ./cmd/subnetd-etcd
build -tags grpcnotrace -o "$stage/subnetd/subnetd-kube" ./cmd/subnetd
build -o "$stage/subnetd/" ./cmd/cnictl
image=localhost/cnisuite/subnetd:$version
imagetar=cnisuite-image-linux-$arch-$version.tar
go run ./scripts/mkimage -plugins "$stage/plugins" -daemons "$stage/subnetd" -name "$image" \
	-out "$out/$imagetar" -epoch "$epoch" >/dev/null
cp README.md "$stage/plugins/"
cp README.md "$stage/subnetd/"
for f in kube-flannel.yml subnetd-daemonset.yaml; do
	sed "s|image: IMAGE\$|image: $image|" "conf/$f" >"$stage/subnetd/$f"
done
chmod 0644 "$stage"/*/README.md "$stage"/subnetd/*.y*ml

sums() { (cd "$out" && sha256sum "$1" >"$1.sha256" && sha512sum "$1" >"$1.sha512"); }

# archive NAME DIR: a tar of DIR's files as ./NAME, owned by root, sorted,
# stamped with the commit's time, gzipped without a name or time.
archive() {
	tgz="$out/$1"
	tar -C "$2" --sort=name --mtime="@$epoch" --owner=0 --group=0 --numeric-owner \
		--format=gnu -cf - . | gzip -n -9 >"$tgz"
	sums "$1"
	echo "$tgz"
}
archive "cni-plugins-linux-$arch-$version.tgz" "$stage/plugins"
archive "cnisuite-subnetd-linux-$arch-$version.tgz" "$stage/subnetd"
sums "$imagetar"
echo "$out/$imagetar ($image)"
