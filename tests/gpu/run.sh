#!/bin/sh
# tests/gpu/run.sh [BUILD_DIR] - the cross-vendor check.
#
# On any Linux machine with a Vulkan driver: prints `vpeft devices`, then runs
# every per-device suite (tests/check_*.c but the CLI's) on every usable
# device in turn (VPEFT_DEVICE=i) and prints one summary line per device. BUILD_DIR is a configured build
# directory (default: the source tree); it is built first if needed.
# Exit status 1 if any suite fails on any device.
set -u
src=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$src}
cd "$build" || { echo "run.sh: no build directory $build" >&2; exit 1; }
if [ ! -f Makefile ]; then
    "$src/configure" >/dev/null || exit 1
fi
suites=$(cd "$src/tests" && ls check_*.c | sed 's/^check_//; s/\.c$//' | grep -v '^cli$')
make -s all $(for s in $suites; do printf 'obj/tests/check_%s ' "$s"; done) >/dev/null ||
    { echo "run.sh: build failed" >&2; exit 1; }

./vpeft devices || exit 1
echo

tmp=$(mktemp -d "${TMPDIR:-/tmp}/vpeft-gpu.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT INT TERM
status=0
./vpeft devices --brief >"$tmp/devices" || exit 1
while IFS="$(printf '\t')" read -r idx name type usable _; do
    if [ "$usable" != usable ]; then
        printf 'device %s  %-40s %-15s skipped: unusable (see above)\n' "$idx" "$name" "$type"
        continue
    fi
    line=
    for suite in $suites; do
        t0=$(date +%s)
        if VPEFT_DEVICE=$idx XDG_CACHE_HOME="$tmp/cache" TMPDIR="$tmp" \
            ./obj/tests/check_$suite >"$tmp/$suite-$idx.log" 2>&1; then
            res=ok
        else
            res=FAILED; status=1
        fi
        checks=$(sed -n 's/^[0-9]*%: Checks: \([0-9]*\), Failures: \([0-9]*\), Errors: \([0-9]*\).*/\1 checks, \2 failures, \3 errors/p' "$tmp/$suite-$idx.log")
        skips=$(sed -n 's/^skipped: //p' "$tmp/$suite-$idx.log")
        line="$line  $suite $res (${checks:-no result}, ${skips:-0} skipped, $(( $(date +%s) - t0 ))s)"
        [ $res = ok ] || { echo "--- $suite on device $idx:"; cat "$tmp/$suite-$idx.log"; }
    done
    printf 'device %s  %-40s %-15s%s\n' "$idx" "$name" "$type" "$line"
done <"$tmp/devices"
exit $status
