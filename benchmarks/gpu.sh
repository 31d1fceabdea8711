#!/usr/bin/env bash
# The paper-size step benchmarks on a GPU machine, in one run of bounded time (issue 23).
#
#   bash benchmarks/gpu.sh            # on a GPU machine: install the GPU build, measure; about 8 minutes in all
#   bash benchmarks/gpu.sh --tiny     # the same path at tiny sizes, on this machine's CPU (< 2 minutes)
#   bash benchmarks/gpu.sh --list     # each configuration and the lane it runs in
#
# What it measures (benchmarks/configs.py gpu_grid): the CNN search at the paper's size (8 cells, C=16, batch 64) in
# the three modes (first order, second-order finite difference, exact), XLA off and on, fp32 and mixed precision,
# and the evaluation network (20 cells, C=36, batch 96); each configuration in a fresh process (benchmarks/run.py),
# so that its time to the first step, step time, peak host and GPU memory are its own. A first call (tracing,
# Grappler, XLA) costs the CPU minutes, so the configurations run in parallel lanes (one process each, the longest
# first); a configuration that cannot finish in what is left of the budget gets an error record ("timed out after
# N s"), one that cannot start a "skipped" record: every configuration has a schema-checked line.
#
# Options:
#   --tiny          gpu_tiny grid (tiny sizes), this Python, no install, no GPU needed; budget 100 s, 2 lanes
#   --budget S      seconds for the whole run, install included (default 480)
#   --lanes N       configurations measured at the same time (default 5)
#   --results DIR   where gpu.jsonl, gpu.md, gpu.log and gpu_env.txt go (default: $OUT if set, else
#                   benchmarks/results/gpu, or benchmarks/results/gpu_tiny with --tiny)
#   --python PY     measure with this interpreter (TensorFlow with GPU support already in it); no install
#   --venv DIR      the virtual environment to reuse or create (default ${XDG_CACHE_HOME:-~/.cache}/darts_tf/gpu-venv)
#   --wheels DIR    install from this folder of wheels, without a package index (a machine without PyPI)
#   --list          print "lane<TAB>configuration" for the grid and exit
#
# The install: tensorflow[and-cuda] at the version requirements.txt pins for tensorflow-cpu, and the pins of
# keras, numpy, absl-py and jsonschema, into the virtual environment (about 3 GB of CUDA wheels from PyPI).
#
# Exit status: 0 when every configuration has its record (ok, skipped, or error with its reason), and also when no
# GPU is visible (a message says so; nothing is installed or measured); 2 bad arguments or a configuration in no
# lane; 3 the install failed; 4 TensorFlow does not see the GPU that nvidia-smi lists; 5 a record or the summary
# failed the schema check (benchmarks/schema.json).

set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO" || exit 2

TINY=0
BUDGET=""
LANES=""
RESULTS="${OUT:-}"
PY=""
VENV="${XDG_CACHE_HOME:-$HOME/.cache}/darts_tf/gpu-venv"
WHEELS=""
LIST=0

usage() {
    sed -n '2,/^$/p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

die() {  # die RC MESSAGE
    echo "gpu.sh: $2" >&2
    exit "$1"
}

while [ $# -gt 0 ]; do
    case "$1" in
        --tiny) TINY=1 ;;
        --budget) BUDGET="${2:-}"; shift ;;
        --budget=*) BUDGET="${1#*=}" ;;
        --lanes) LANES="${2:-}"; shift ;;
        --lanes=*) LANES="${1#*=}" ;;
        --results) RESULTS="${2:-}"; shift ;;
        --results=*) RESULTS="${1#*=}" ;;
        --python) PY="${2:-}"; shift ;;
        --python=*) PY="${1#*=}" ;;
        --venv) VENV="${2:-}"; shift ;;
        --venv=*) VENV="${1#*=}" ;;
        --wheels) WHEELS="${2:-}"; shift ;;
        --wheels=*) WHEELS="${1#*=}" ;;
        --list) LIST=1 ;;
        -h|--help) usage; exit 0 ;;
        *) die 2 "unknown argument '$1' (see --help). Received: $*" ;;
    esac
    shift
done

if [ "$TINY" = 1 ]; then
    GRID=gpu_tiny; BUDGET="${BUDGET:-100}"; LANES="${LANES:-2}"; MARGIN=5; MIN_START=15
    RESULTS="${RESULTS:-$REPO/benchmarks/results/gpu_tiny}"
else
    GRID=gpu; BUDGET="${BUDGET:-480}"; LANES="${LANES:-5}"; MARGIN=15; MIN_START=60
    RESULTS="${RESULTS:-$REPO/benchmarks/results/gpu}"
fi
case "$BUDGET" in ''|*[!0-9]*) die 2 "--budget must be a whole number of seconds, e.g. --budget=480. Received: budget=$BUDGET" ;; esac
case "$LANES" in ''|0|*[!0-9]*) die 2 "--lanes must be a whole number >= 1, e.g. --lanes=5. Received: lanes=$LANES" ;; esac
if [ -n "$WHEELS" ] && [ ! -d "$WHEELS" ]; then
    die 2 "--wheels must be a folder of wheel files. Received: wheels=$WHEELS (no such folder)"
fi
START=$(date +%s)
DEADLINE=$((START + BUDGET))

# The lanes: a configuration runs in the lane whose regular expression its name matches (exactly one). Each lane's
# configurations run one after the other, in the grid's order; lane k runs in worker (k-1) % --lanes.
LANE_PATTERNS=(
    '^cnn_search/second_order_exact/[^/]*/noxla/fp32/'                                     # the longest first call
    '^cnn_search/second_order_fd/[^/]*/noxla/'
    '^cnn_search/first_order/'
    '^cnn_eval/'
    '^cnn_search/second_order_(exact/[^/]*/noxla/mp16|exact/[^/]*/xla|fd/[^/]*/xla)/'      # what rarely fits
)

# ------------------------------------------------------------------------------------------ the configurations
BOOT_PY="$PY"
if [ -z "$BOOT_PY" ]; then  # listing the grid needs only the standard library: this repository's Python, or python3
    if [ -x "$REPO/.venv/bin/python" ]; then BOOT_PY="$REPO/.venv/bin/python"; else BOOT_PY="$(command -v python3 || true)"; fi
fi
[ -n "$BOOT_PY" ] || die 2 "no Python found: give one with --python PY"

mapfile -t NAMES < <("$BOOT_PY" -c 'import sys; sys.path.insert(0, "."); from benchmarks.configs import GRIDS
print("\n".join(c.name for c in GRIDS[sys.argv[1]]()))' "$GRID")
[ "${#NAMES[@]}" -gt 0 ] || die 2 "benchmarks/configs.py's grid $GRID has no configuration (listed with $BOOT_PY)"
declare -a LANE_OF
for i in "${!NAMES[@]}"; do
    found=""
    for k in "${!LANE_PATTERNS[@]}"; do
        if [[ "${NAMES[$i]}" =~ ${LANE_PATTERNS[$k]} ]]; then
            [ -z "$found" ] || die 2 "configuration ${NAMES[$i]} matches lanes $found and $((k + 1)); make LANE_PATTERNS in benchmarks/gpu.sh disjoint"
            found=$((k + 1))
        fi
    done
    [ -n "$found" ] || die 2 "configuration ${NAMES[$i]} matches no lane; add it to LANE_PATTERNS in benchmarks/gpu.sh"
    LANE_OF[$i]=$found
done
if [ "$LIST" = 1 ]; then
    for i in "${!NAMES[@]}"; do printf '%s\t%s\n' "${LANE_OF[$i]}" "${NAMES[$i]}"; done
    exit 0
fi

# ------------------------------------------------------------------------------------------ a GPU, and the GPU build
if [ "$TINY" = 0 ]; then
    if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then
        echo "gpu.sh: no GPU is visible (nvidia-smi is missing or lists no GPU), so nothing was installed or measured." \
             "Run it on a GPU machine, or 'bash benchmarks/gpu.sh --tiny' for the same path on this CPU."
        exit 0
    fi
fi

pin() {  # the version requirements.txt pins for package $1
    sed -n "s/^$1==\([^ #]*\).*/\1/p" "$REPO/requirements.txt" | head -n 1
}

if [ -z "$PY" ] && [ "$TINY" = 1 ]; then
    PY="$BOOT_PY"
elif [ -z "$PY" ]; then
    TF_VERSION="$(pin tensorflow-cpu)"
    [ -n "$TF_VERSION" ] || die 3 "requirements.txt pins no tensorflow-cpu==VERSION to take the GPU build's version from"
    PACKAGES=("tensorflow[and-cuda]==$TF_VERSION")
    for p in keras numpy absl-py jsonschema; do
        v="$(pin "$p")"; PACKAGES+=("$p${v:+==$v}")
    done
    PY="$VENV/bin/python"
    if [ -x "$PY" ] && "$PY" -c "import tensorflow as tf, sys; sys.exit(tf.__version__ != '$TF_VERSION')" 2>/dev/null; then
        echo "gpu.sh: reusing $VENV (TensorFlow $TF_VERSION)"
    else
        BASE="$(command -v python3.11 || command -v python3 || true)"
        [ -n "$BASE" ] || die 3 "no python3 to create $VENV with; give a Python that has TensorFlow with --python PY"
        echo "gpu.sh: installing ${PACKAGES[*]} into $VENV (with $BASE) ..."
        "$BASE" -m venv "$VENV" || die 3 "could not create the virtual environment $VENV with $BASE -m venv (Debian/Ubuntu: apt-get install python3-venv), or give --python PY"
        PIP_ARGS=(--disable-pip-version-check --quiet)
        [ -z "$WHEELS" ] || PIP_ARGS+=(--no-index --find-links "$WHEELS")
        left=$((DEADLINE - $(date +%s)))
        [ "$left" -gt 0 ] || left=1
        if ! timeout "$left" "$PY" -m pip install "${PIP_ARGS[@]}" "${PACKAGES[@]}"; then
            die 3 "installing ${PACKAGES[*]} failed or took longer than the budget's $left s left (no PyPI here? give a folder of wheels with --wheels DIR, or a Python that has them with --python PY, or a larger --budget)"
        fi
    fi
fi

# XLA on a GPU needs ptxas: the pip build ships it in nvidia/cuda_nvcc
SITE="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' 2>/dev/null || true)"
if [ -n "$SITE" ] && [ -d "$SITE/nvidia/cuda_nvcc/bin" ]; then
    export PATH="$SITE/nvidia/cuda_nvcc/bin:$PATH"
    export XLA_FLAGS="${XLA_FLAGS:+$XLA_FLAGS }--xla_gpu_cuda_data_dir=$SITE/nvidia/cuda_nvcc"
fi
export TF_FORCE_GPU_ALLOW_GROWTH=true  # several measuring processes share the GPU; each one's peak is its own
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"

if [ "$TINY" = 0 ]; then
    if ! GPUS="$("$PY" -c 'import tensorflow as tf; g = tf.config.list_physical_devices("GPU"); print(len(g)); assert g' 2>&1)"; then
        die 4 "TensorFlow ($PY) sees no GPU although nvidia-smi lists one: the CUDA libraries and the driver do not match, or the CPU build is installed. Its output: $(echo "$GPUS" | tail -n 3)"
    fi
fi

# ------------------------------------------------------------------------------------------ the measurements
mkdir -p "$RESULTS" || die 2 "cannot create --results folder $RESULTS"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/darts_gpu_sh.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

{
    echo "date: $(date -u +%FT%TZ)"
    echo "command: bash benchmarks/gpu.sh $([ "$TINY" = 1 ] && echo --tiny) --budget=$BUDGET --lanes=$LANES"
    echo "python: $PY ($("$PY" -c 'import platform; print(platform.python_version())'))"
    echo "cpus: $(nproc); memory: $(free -g 2>/dev/null | awk '/^Mem:/ {print $2 " GiB"}')"
    nvidia-smi 2>/dev/null || echo "nvidia-smi: none"
    "$PY" -m pip list 2>/dev/null | grep -i -E '^(tensorflow|keras|numpy|nvidia-(cudnn|cublas|cuda-runtime))' || true
} > "$RESULTS/gpu_env.txt"

record() {  # record STATUS REASON NAME OUTPUT: a schema-checked record for a configuration that was not measured
    "$PY" - "$GRID" "$3" "$1" "$2" "$4" <<'PY'
import json, sys
sys.path.insert(0, ".")
from benchmarks.configs import GRIDS
from benchmarks.records import base_record, load_avg, validate_record
grid, name, status, reason, output = sys.argv[1:6]
cfg = next(c for c in GRIDS[grid]() if c.name == name)
with open(output, "w") as f:
    f.write(json.dumps(validate_record(base_record(cfg, status, reason, load_avg()))) + "\n")
PY
}

measure() {  # measure INDEX: one configuration in its own run.py, bounded by what is left of the budget
    local i=$1 name="${NAMES[$1]}" out="$WORK/$1.jsonl" left pattern rc
    left=$((DEADLINE - $(date +%s) - MARGIN))
    if [ "$left" -lt "$MIN_START" ]; then
        record skipped "gpu.sh's budget of $BUDGET s was spent before this configuration could start (it needs $MIN_START s and a $MARGIN s margin); give more with --budget, or more --lanes" "$name" "$out"
        return
    fi
    pattern="^$(printf '%s' "$name" | sed 's/[][().*+?^$|\\{}]/\\&/g')\$"
    echo "[$(date -u +%T)] lane ${LANE_OF[$i]}: $name (up to $left s)"
    timeout -k 10 $((left + 30)) "$PY" benchmarks/run.py --grid="$GRID" --only="$pattern" --timeout="$left" \
        --output="$out" --markdown="$WORK/$i.md" 2>&1
    rc=$?
    if [ ! -s "$out" ]; then
        record error "benchmarks/run.py exited $rc without writing a record (see gpu.log)" "$name" "$out"
    fi
}

worker() {  # worker W: every configuration of the lanes that map to worker W, one after the other
    local w=$1 i
    for i in "${!NAMES[@]}"; do
        if [ $(((LANE_OF[$i] - 1) % LANES)) -eq "$w" ]; then
            measure "$i"
        fi
    done
}

echo "gpu.sh: ${#NAMES[@]} configurations of grid $GRID in $LANES lanes, $((DEADLINE - $(date +%s))) s of the $BUDGET s budget left"
pids=()
for ((w = 0; w < LANES; w++)); do
    worker "$w" > "$WORK/worker_$w.log" 2>&1 &
    pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done

for ((w = 0; w < LANES; w++)); do echo "===== worker $w"; cat "$WORK/worker_$w.log"; done > "$RESULTS/gpu.log"
cat "$RESULTS/gpu.log"
: > "$WORK/all.jsonl"
for i in "${!NAMES[@]}"; do
    [ -s "$WORK/$i.jsonl" ] || record error "no record was written (see gpu.log)" "${NAMES[$i]}" "$WORK/$i.jsonl"
    cat "$WORK/$i.jsonl" >> "$WORK/all.jsonl"
done
cp "$WORK/all.jsonl" "$RESULTS/.gpu.jsonl.partial" && mv "$RESULTS/.gpu.jsonl.partial" "$RESULTS/gpu.jsonl"

# the summary: run.py's table (every line schema-checked) and the time to the first step per configuration
if ! TABLE="$("$PY" benchmarks/run.py --summarize "$RESULTS/gpu.jsonl" 2>"$WORK/summarize.err")"; then
    die 5 "the records in $RESULTS/gpu.jsonl fail the schema check: $(tail -n 5 "$WORK/summarize.err")"
fi
FIRST="$("$PY" - "$RESULTS/gpu.jsonl" <<'PY'
import json, sys
print("| configuration | status | build s | trace+compile s | time to first step s | step s (median) | peak GPU MiB | peak host MiB |")
print("|---|---|---|---|---|---|---|---|")
for line in open(sys.argv[1]):
    r = json.loads(line)
    f = lambda v, d=1: "-" if v is None else f"{v:.{d}f}"
    first = None if r["build_s"] is None or r["trace_compile_s"] is None else r["build_s"] + r["trace_compile_s"]
    step = r["step_s"]["median"] if r["step_s"] else None
    status = r["status"] if r["status"] == "ok" else f"{r['status']}: {r['reason']}"
    print(f"| {r['name']} | {status} | {f(r['build_s'])} | {f(r['trace_compile_s'])} | {f(first)} | {f(step, 3)} | "
          f"{f(r['peak_gpu_mem_mb'], 0)} | {f(r['peak_host_mem_mb'], 0)} |")
PY
)"
{
    echo "Command: \`bash benchmarks/gpu.sh $([ "$TINY" = 1 ] && echo --tiny) --budget=$BUDGET --lanes=$LANES\`  "
    echo "Machine: $(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null | head -n 1 || true)" \
         "$(nproc) CPUs; wall time $(($(date +%s) - START)) s of the $BUDGET s budget; environment in gpu_env.txt"
    echo
    echo "$FIRST"
    echo
    echo "$TABLE"
} > "$RESULTS/.gpu.md.partial" && mv "$RESULTS/.gpu.md.partial" "$RESULTS/gpu.md"
cat "$RESULTS/gpu.md"
echo "gpu.sh: wrote $RESULTS/gpu.jsonl, gpu.md, gpu.log and gpu_env.txt in $(($(date +%s) - START)) s"
