#!/bin/sh
# tests/gpu/run.sh [BUILD_DIR] - the cross-vendor check.
#
# On any Linux machine with a Vulkan driver: prints `vpeft devices`, then runs
# every device-facing suite (all of tests/check_*.c but those that use no
# device: cli, sdk, config, abi, plugin) and `vpeft plugin-test` on the
# template plugin, under the validation layer, on every usable device in turn
# (VPEFT_DEVICE=i), and prints one summary line per device. BUILD_DIR is a configured build
# directory (default: the source tree); it is built first if needed.
# Exit status 1 if any suite fails on any device.
set -u
src=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$src}
cd "$build" || { echo "run.sh: no build directory $build" >&2; exit 1; }
if [ ! -f Makefile ]; then
    "$src/configure" >/dev/null || exit 1
fi
suites=$(for f in "$src"/tests/check_*.c; do f=${f##*/check_}; echo "${f%.c}"; done | grep -v -E '^(cli|sdk|config|abi|plugin)$')
targets=$(for s in $suites; do printf 'obj/tests/check_%s ' "$s"; done)
# shellcheck disable=SC2086
make -s all $targets >/dev/null || { echo "run.sh: build failed" >&2; exit 1; }

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
    passed=0 failed='' checks=0 failures=0 skips=0 t0=$(date +%s)
    for suite in $suites; do
        log="$tmp/$suite-$idx.log"
        if VPEFT_DEVICE=$idx XDG_CACHE_HOME="$tmp/cache" TMPDIR="$tmp" \
            "./obj/tests/check_$suite" >"$log" 2>&1; then
            passed=$((passed + 1))
        else
            failed="$failed $suite"; status=1
            echo "--- $suite on device $idx:"; cat "$log"
        fi
        c=$(sed -n 's/^[0-9]*%: Checks: \([0-9]*\), Failures: \([0-9]*\), Errors: \([0-9]*\).*/\1 \2 \3/p' "$log")
        # shellcheck disable=SC2086 # three numbers, split on purpose
        set -- ${c:-0 0 0}
        checks=$((checks + $1)); failures=$((failures + $2 + $3))
        k=$(sed -n 's/^skipped: //p' "$log")
        skips=$((skips + ${k:-0}))
    done
    log="$tmp/plugin-test-$idx.log"
    if VPEFT_DEVICE=$idx VPEFT_VALIDATION=1 XDG_CACHE_HOME="$tmp/cache" \
        ./vpeft plugin-test --config "$src/sdk/template/test.json" >"$log" 2>&1; then
        passed=$((passed + 1))
    else
        failed="$failed plugin-test"; status=1
        echo "--- plugin-test on device $idx:"; cat "$log"
    fi
    printf 'device %s  %-40s %-15s %d/%d suites ok, %d checks, %d failed, %d skipped, %ss%s\n' \
        "$idx" "$name" "$type" "$passed" "$(( $(echo "$suites" | wc -w) + 1 ))" "$checks" "$failures" \
        "$skips" "$(( $(date +%s) - t0 ))" "${failed:+  FAILED:$failed}"
done <"$tmp/devices"
exit $status
