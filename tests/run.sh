#!/bin/sh
# tests/run.sh BIN... - run the Check suites built by `make check`, one
# after another, and print one summary. Exit status 1 if any suite fails.
# Each suite runs with a private pipeline-cache directory so that tests never
# touch the user's ~/.cache.
set -u
srcdir=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/vpeft-check.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT INT TERM
fail=0 skipped=0 start=$(date +%s)
# Sanitizer builds: keep shared objects mapped until exit (tests/keep_loaded.c)
# so LeakSanitizer does not report what unloaded drivers' globals still hold.
# The preload goes before the ASan runtime, hence verify_asan_link_order=0;
# programs without ASan (sh, sed) only get a dlclose that does nothing.
if [ "${SANITIZE:-0}" = 1 ]; then
    LD_PRELOAD="$PWD/obj/tests/keep-loaded.so${LD_PRELOAD:+ $LD_PRELOAD}"
    ASAN_OPTIONS="verify_asan_link_order=0:detect_leaks=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
    UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
    # what MPI's libraries keep until exit (check_dist's ranks) is theirs
    LSAN_OPTIONS="suppressions=$srcdir/tests/lsan.supp${LSAN_OPTIONS:+:$LSAN_OPTIONS}"
    export LD_PRELOAD ASAN_OPTIONS UBSAN_OPTIONS LSAN_OPTIONS
fi
for t in "$@"; do
    name=$(basename "$t")
    s0=$(date +%s)
    if XDG_CACHE_HOME="$tmp/cache" TMPDIR="$tmp" VPEFT_BIN="$PWD/vpeft" VPEFT_SRCDIR="$srcdir" ./"$t" >"$tmp/$name.log" 2>&1; then
        status=ok
    else
        status=FAILED; fail=1
    fi
    s=$(sed -n 's/^skipped: //p' "$tmp/$name.log" | tail -n 1)
    skipped=$((skipped + ${s:-0}))
    grep -E '^(SKIP|note):' "$tmp/$name.log"
    [ $status = ok ] || cat "$tmp/$name.log"
    printf '%-24s %-7s %s (%ss)\n' "$name" "$status" "$(grep -E '^[0-9]+%: Checks' "$tmp/$name.log" | tail -n 1)" "$(( $(date +%s) - s0 ))"
done
printf 'make check: %s, %s skipped, %ss\n' "$( [ $fail = 0 ] && echo 'all suites passed' || echo 'FAILURES')" "$skipped" "$(( $(date +%s) - start ))"
exit $fail
