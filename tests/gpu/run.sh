#!/bin/sh
# tests/gpu/run.sh [BUILD_DIR]              - the cross-vendor check
# tests/gpu/run.sh --prebuilt BUILD_DIR     - the same on a tree built elsewhere
#
# On any Linux machine with a Vulkan driver: prints `vpeft devices`, then runs
# every device-facing suite (all of tests/check_*.c but those that use no
# device: cli, sdk, config, abi, plugin) and `vpeft plugin-test` on the
# template plugin, under the validation layer, on every usable device in turn
# (VPEFT_DEVICE=i), and prints one summary line per device. BUILD_DIR is a configured build
# directory (default: the source tree); it is built first if needed.
#
# --prebuilt runs what BUILD_DIR already holds and never configures or makes:
# for a build copied to a machine without the build tools, where the copy's
# timestamps would make make rebuild everything. It checks first that vpeft,
# libvpeft.so, the plugins and the suites are there and names any that is
# missing. Nothing ties a build to the absolute paths it was built at: the
# plugins are found next to libvpeft.so, the test plugins next to each
# suite, the libraries through $ORIGIN rpaths, and the test data through
# VPEFT_SRCDIR, set here to the source tree this script sits in.
#
# VPEFT_SUITE_TIMEOUT=S ends (and fails) any suite still running after S
# seconds, so that one hung suite costs no more than that.
# Exit status 1 if any suite fails on any device.
set -u
src=$(cd "$(dirname "$0")/../.." && pwd)
prebuilt=0
if [ "${1:-}" = --prebuilt ]; then
    prebuilt=1
    shift
    [ $# = 1 ] || { echo "usage: tests/gpu/run.sh --prebuilt BUILD_DIR" >&2; exit 2; }
fi
build=${1:-$src}
cd "$build" || { echo "run.sh: no build directory $build" >&2; exit 1; }
suites=$(for f in "$src"/tests/check_*.c; do f=${f##*/check_}; echo "${f%.c}"; done | grep -v -E '^(cli|sdk|config|abi|plugin)$')
if [ $prebuilt = 1 ]; then
    missing=''
    plugins=$(for d in "$src"/plugins/*/; do d=${d%/}; printf 'plugins/vpeft-%s.so ' "${d##*/}"; done)
    for f in vpeft libvpeft.so $plugins plugins/vpeft-ia3.so obj/tests/plugins/m/vpeft-toybackbone.so \
        obj/tests/plugins/m/vpeft-toyhead.so obj/tests/plugins/a/vpeft-good.so \
        $(for s in $suites; do printf 'obj/tests/check_%s ' "$s"; done); do
        [ -f "$f" ] || missing="$missing $f"
    done
    if [ -n "$missing" ]; then
        echo "run.sh: $PWD is not a complete build: missing$missing (build them with" \
             "\`make all\` and \`make obj/tests/check_<suite>\` there)" >&2
        exit 1
    fi
else
    if [ ! -f Makefile ]; then
        "$src/configure" >/dev/null || exit 1
    fi
    targets=$(for s in $suites; do printf 'obj/tests/check_%s ' "$s"; done)
    # shellcheck disable=SC2086
    make -s all $targets >/dev/null || { echo "run.sh: build failed" >&2; exit 1; }
fi
build=$PWD
limit=''
if [ -n "${VPEFT_SUITE_TIMEOUT:-}" ]; then
    command -v timeout >/dev/null || { echo "run.sh: VPEFT_SUITE_TIMEOUT needs timeout(1)" >&2; exit 1; }
    limit="timeout -k 10 $VPEFT_SUITE_TIMEOUT"
fi

./vpeft devices || exit 1
echo

tmp=$(mktemp -d "${TMPDIR:-/tmp}/vpeft-gpu.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
trap 'exit 1' INT TERM
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
        # shellcheck disable=SC2086 # $limit is a command and its arguments
        VPEFT_DEVICE=$idx XDG_CACHE_HOME="$tmp/cache" TMPDIR="$tmp" VPEFT_BIN="$build/vpeft" \
            VPEFT_SRCDIR="$src" $limit "./obj/tests/check_$suite" >"$log" 2>&1
        rc=$?
        if [ $rc = 0 ]; then
            passed=$((passed + 1))
        else
            failed="$failed $suite"; status=1
            echo "--- $suite on device $idx:"; cat "$log"
            if [ -n "$limit" ] && { [ $rc = 124 ] || [ $rc = 137 ]; }; then
                echo "(ended after ${VPEFT_SUITE_TIMEOUT}s: VPEFT_SUITE_TIMEOUT)"
            fi
        fi
        c=$(sed -n 's/^[0-9]*%: Checks: \([0-9]*\), Failures: \([0-9]*\), Errors: \([0-9]*\).*/\1 \2 \3/p' "$log")
        # shellcheck disable=SC2086 # three numbers, split on purpose
        set -- ${c:-0 0 0}
        checks=$((checks + $1)); failures=$((failures + $2 + $3))
        k=$(sed -n 's/^skipped: //p' "$log")
        skips=$((skips + ${k:-0}))
    done
    log="$tmp/plugin-test-$idx.log"
    # shellcheck disable=SC2086
    if VPEFT_DEVICE=$idx VPEFT_VALIDATION=1 XDG_CACHE_HOME="$tmp/cache" \
        $limit ./vpeft plugin-test --config "$src/sdk/template/test.json" >"$log" 2>&1; then
        passed=$((passed + 1))
    else
        failed="$failed plugin-test"; status=1
        echo "--- plugin-test on device $idx:"; cat "$log"
    fi
    # The harness says so in each suite's log; once per device is enough here.
    if grep -q -h '^note: VK_LAYER_KHRONOS_validation is not installed' "$tmp"/*-"$idx".log 2>/dev/null; then
        echo "note: device $idx ran without the validation layer (VK_LAYER_KHRONOS_validation not found)"
    fi
    printf 'device %s  %-40s %-15s %d/%d suites ok, %d checks, %d failed, %d skipped, %ss%s\n' \
        "$idx" "$name" "$type" "$passed" "$(( $(echo "$suites" | wc -w) + 1 ))" "$checks" "$failures" \
        "$skips" "$(( $(date +%s) - t0 ))" "${failed:+  FAILED:$failed}"
done <"$tmp/devices"
exit $status
