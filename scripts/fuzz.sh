#!/bin/sh
# Runs every Go fuzz target of the tree for FUZZTIME each (go test -fuzz takes one
# target at a time). `make test` runs them briefly, `make soak` long. New corpus
# entries that make a target fail are written to testdata/fuzz/ by go test itself.
set -eu
GO=${GO:-go}
FUZZTIME=${FUZZTIME:-2s}
failed=""
# Packages whose test files declare a fuzz target.
pkgs=$(grep -rl --include='*_test.go' '^func Fuzz' . | xargs -n1 dirname | sort -u)
for dir in $pkgs; do
	targets=$($GO test -list '^Fuzz' "$dir" | grep '^Fuzz' || true)
	for t in $targets; do
		echo "fuzz $dir $t ($FUZZTIME)"
		if ! $GO test -run '^$' -fuzz "^$t\$" -fuzztime "$FUZZTIME" "$dir" >/tmp/fuzz.$$.log 2>&1; then
			cat /tmp/fuzz.$$.log
			failed="$failed $dir:$t"
		fi
	done
done
rm -f /tmp/fuzz.$$.log
if [ -n "$failed" ]; then
	echo "fuzz targets that failed:$failed" >&2
	exit 1
fi
