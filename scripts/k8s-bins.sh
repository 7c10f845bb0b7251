#!/bin/sh
# Builds the Kubernetes commands the tests run, once per release, and prints the
# directory that holds them:
#   scripts/k8s-bins.sh [name...]       default: the names in K8S_BINS below
# The release is the one test/kube/k8sbuild/go.mod requires; the binaries are
# cached in ${XDG_CACHE_HOME:-$HOME/.cache}/cnisuite/k8s/<release>/ and built
# only when missing: the first build takes ~15 minutes on 2 idle cores
# (kube-apiserver ~7, kubelet ~6, the three others ~2 together; ~6 GB of Go
# build cache), later runs none. A flock makes concurrent callers (test
# packages run in parallel) wait for one build; each binary is built under a
# temporary name and renamed, so a killed build leaves nothing half-written.
set -eu
# Extend the list here; a command must also be imported by test/kube/k8sbuild/tools.go.
K8S_BINS=${K8S_BINS:-"kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl"}
GO=${GO:-go}
mod=$(cd "$(dirname "$0")/../test/kube/k8sbuild" && pwd)
version=$(awk '$1 == "require" && $2 == "k8s.io/kubernetes" {print $3}' "$mod/go.mod")
[ -n "$version" ] || { echo "k8s-bins: no k8s.io/kubernetes requirement in $mod/go.mod" >&2; exit 1; }
dir=${XDG_CACHE_HOME:-${HOME:?set HOME or XDG_CACHE_HOME: the binaries are cached there}/.cache}/cnisuite/k8s/$version
[ $# -gt 0 ] || set -- $K8S_BINS

for name in "$@"; do
	grep -q "\"k8s.io/kubernetes/cmd/$name\"" "$mod/tools.go" ||
		{ echo "k8s-bins: $name is not imported by $mod/tools.go; add it there and run go mod tidy in $mod" >&2; exit 1; }
done

mkdir -p "$dir"
exec 9>"$dir/.lock"
flock 9
missing=""
for name in "$@"; do
	[ -x "$dir/$name" ] || missing="$missing $name"
done
if [ -n "$missing" ]; then
	echo "k8s-bins: building$missing $version into $dir (the first build of all takes ~15 minutes on 2 cores)" >&2
	rm -rf "$dir"/.build-* # left by a killed build; none runs while we hold the lock
	tmp=$(mktemp -d "$dir/.build-XXXXXX")
	trap 'rm -rf "$tmp"' EXIT
	trap 'exit 1' INT TERM HUP
	minor=${version#v1.}
	minor=${minor%%.*}
	ldflags="-s -w"
	for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		ldflags="$ldflags -X $pkg.gitVersion=$version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
	done
	start=$(date +%s)
	pkgs=""
	for name in $missing; do pkgs="$pkgs k8s.io/kubernetes/cmd/$name"; done
	# shellcheck disable=SC2086
	(cd "$mod" && CGO_ENABLED=0 GOWORK=off GOFLAGS="${GOFLAGS:-} -mod=readonly" \
		$GO build -trimpath -ldflags "$ldflags" -o "$tmp/" $pkgs)
	for name in $missing; do
		case "$name" in
		kubectl) got=$("$tmp/$name" version --client 2>&1 | head -n 1 || true) ;; # no --version flag
		*) got=$("$tmp/$name" --version 2>&1 || true) ;;
		esac
		case "$got" in
		*"$version") ;;
		*) echo "k8s-bins: $name --version says \"$got\", not $version" >&2; exit 1 ;;
		esac
		mv "$tmp/$name" "$dir/$name"
	done
	echo "k8s-bins: built$missing in $(($(date +%s) - start)) s" >&2
fi
echo "$dir"
