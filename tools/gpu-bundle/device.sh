#!/bin/sh
# .gpu/device.sh - the cross-vendor check on a GPU machine without build
# tools, from a bundle made by tools/gpu-bundle/make: run from the
# repository root as
#     OUT=/somewhere sh .gpu/device.sh
# It needs nothing outside the repository but glibc, sh and coreutils: the
# libraries come from .gpu/lib, the validation layer from .gpu/lib/layer.
# Steps, each with its own time limit, each run whatever the last one did,
# all of them within about 7.5 minutes:
#   env       machine, driver files, libraries found     -> $OUT/env.txt
#   check     tests/gpu/run.sh --prebuilt .gpu/build     -> $OUT/gpu-run.txt
#   bench     obj/tests/bench_matmul                     -> $OUT/bench.txt
#   demo      vpeft demo --quick                         -> $OUT/demo.txt,
#             $OUT/demo/results.json, $OUT/demo/chart.png
# (and $OUT/loader-debug.txt when the Vulkan loader finds no GPU).
# Everything is printed to stdout as well. Exit status: the check's.
set -u
g=$(cd "$(dirname "$0")" && pwd)
repo=$(pwd)
[ -f "$repo/tests/gpu/run.sh" ] || { echo "device.sh: run me from the repository root" >&2; exit 2; }
OUT=${OUT:-$repo/gpu-out}
mkdir -p "$OUT"
t_start=$(date +%s)
deadline=$((t_start + 450))
tmp=$(mktemp -d "${TMPDIR:-/tmp}/vpeft-device.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT

# Seconds left for a step: at most $1, never past the deadline.
budget() {
    left=$((deadline - $(date +%s)))
    [ "$left" -lt "$1" ] && echo "$left" || echo "$1"
}
# step NAME CAP COMMAND...: runs COMMAND under timeout, prints its status and time.
step() {
    name=$1 cap=$(budget "$2")
    shift 2
    s0=$(date +%s)
    if [ "$cap" -lt 10 ]; then
        echo "== $name: not run, the script's time is up"
        return 1
    fi
    echo "== $name (limit ${cap}s)"
    timeout -k 10 "$cap" "$@"
    rc=$?
    [ $rc = 124 ] || [ $rc = 137 ] && echo "== $name: TIMED OUT after ${cap}s"
    echo "== $name: exit $rc, $(( $(date +%s) - s0 ))s (total $(( $(date +%s) - t_start ))s)"
    return $rc
}

# --- environment -------------------------------------------------------------
# in case the copy lost the modes
chmod u+x "$g/build/vpeft" "$g"/build/obj/tests/check_* "$g/build/obj/tests/bench_matmul" 2>/dev/null
LD_LIBRARY_PATH="$g/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# where NVIDIA's container runtime puts the driver's libraries, for the ICD's dlopen
[ -d /usr/local/nvidia/lib64 ] && LD_LIBRARY_PATH="$LD_LIBRARY_PATH:/usr/local/nvidia/lib64"
export LD_LIBRARY_PATH
# The layer is C++: its libstdc++ only where the machine's is older.
if command -v ldd >/dev/null && ldd "$g/lib/layer/libVkLayer_khronos_validation.so" 2>&1 | grep -q -E 'not found|error'; then
    LD_LIBRARY_PATH="$g/lib/fallback:$LD_LIBRARY_PATH"
    echo "device.sh: the machine's libstdc++ is too old for the layer: using .gpu/lib/fallback"
fi
VK_LAYER_PATH="$g/lib/layer"
export VK_LAYER_PATH
vpeft="$g/build/vpeft"

has_gpu() {
    "$vpeft" devices --brief 2>/dev/null | awk -F '\t' '$3 != "CPU" && $4 == "usable" {f = 1} END {exit !f}'
}
icd_note='system default'
if ! has_gpu && [ -f "$g/lib/glvnd/libGLdispatch.so.0" ]; then
    # NVIDIA's Vulkan driver lives in libGLX_nvidia, which needs libglvnd
    LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$g/lib/glvnd"
    export LD_LIBRARY_PATH
    if has_gpu; then icd_note='with the bundled libglvnd'; fi
fi
if ! has_gpu; then
    for f in /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json /usr/local/nvidia/icd.d/nvidia_icd.json \
        /etc/vulkan/icd.d/nvidia_icd.json /usr/share/vulkan/icd.d/nvidia_icd.json \
        /usr/share/vulkan/icd.d/nvidia_icd.x86_64.json; do
        [ -f "$f" ] || continue
        VK_DRIVER_FILES=$f VK_ICD_FILENAMES=$f
        export VK_DRIVER_FILES VK_ICD_FILENAMES
        if has_gpu; then icd_note="VK_DRIVER_FILES=$f"; break; fi
        unset VK_DRIVER_FILES VK_ICD_FILENAMES
    done
    if ! has_gpu; then
        icd_note='no GPU found (loader log in loader-debug.txt)'
        VK_LOADER_DEBUG=error,warn,info,driver "$vpeft" devices >"$OUT/loader-debug.txt" 2>&1
    fi
fi

{
    echo "== env"
    echo "host: $(uname -n) $(uname -srm)"
    command -v nvidia-smi >/dev/null && nvidia-smi -L
    command -v ldd >/dev/null && ldd --version | head -n 1
    cat "$g/STAMP" 2>/dev/null
    echo "repo: $repo  commit: $(git -C "$repo" log -1 --format=%h 2>/dev/null || echo '(no git)')"
    echo "Vulkan driver: $icd_note"
    printf 'ICD manifests:'
    for f in /usr/share/vulkan/icd.d/*.json /etc/vulkan/icd.d/*.json /usr/local/share/vulkan/icd.d/*.json \
        /usr/local/nvidia/share/vulkan/icd.d/*.json; do
        [ -f "$f" ] && printf ' %s' "$f"
    done
    echo
    echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
    echo "VK_LAYER_PATH=$VK_LAYER_PATH"
    echo "libraries vpeft and the layer load:"
    command -v ldd >/dev/null &&
        ldd "$g/build/libvpeft.so" "$g/lib/layer/libVkLayer_khronos_validation.so" |
        awk '$2 == "=>" {print "  " $1, $3}' | sort -u
    echo "== env: $(( $(date +%s) - t_start ))s"
} 2>&1 | tee "$OUT/env.txt"

# --- the suites ----------------------------------------------------------------
export VPEFT_SUITE_TIMEOUT=120 # one hung suite must not take the whole check
{ step check 240 sh tests/gpu/run.sh --prebuilt "$g/build"; echo $? >"$tmp/check.rc"; } \
    2>&1 | tee "$OUT/gpu-run.txt"
status=$(cat "$tmp/check.rc" 2>/dev/null || echo 1)

# --- the matmul benchmark (numbers, never pass/fail) -------------------------------
step bench 60 "$g/build/obj/tests/bench_matmul" 2>&1 | tee "$OUT/bench.txt"

# --- the quick demo; only its table and chart come back ----------------------------
step demo 300 "$vpeft" demo --quick --out "$tmp/demo" --cache "$tmp/demo-cache" 2>&1 | tee "$OUT/demo.txt"
mkdir -p "$OUT/demo"
for f in results.json chart.png; do
    [ -f "$tmp/demo/$f" ] && cp "$tmp/demo/$f" "$OUT/demo/$f"
done
echo "== device.sh: check exit $status, $(( $(date +%s) - t_start ))s in all; in $OUT: $(cd "$OUT" && find . -type f | sort | tr '\n' ' ')"
exit "$status"
