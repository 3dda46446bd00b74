#!/usr/bin/env bash
# jaxvg benchmarks on an accelerator, in one short call: `python -m benchmarks.run --preset accelerator`
# under a time limit, with the JSON, the log and the environment copied to $OUT.
#
# Run from the repository root, e.g. through the device tool (one call, timeout_s 600):
#     bash benchmarks/gpu.sh
# Locally: OUT=/tmp/bench bash benchmarks/gpu.sh
#
# What it needs on the machine: python3 with a CUDA (or TPU) jax, flax >= 0.12.8, optax, numpy, scipy,
# scikit-learn, tqdm (the workplace's 'cuda' image has them: jax 0.11.2 + jax-cuda13 plugin; its
# flax version is not recorded, so it is checked below). It installs NOTHING from the network (the
# device machines have no internet): jaxvg runs from the checkout (PYTHONPATH), and any missing or
# too old package travels as wheels in .whl/ (see /work/.library/device/README.md), e.g. prepared here
#     echo /.whl/ >> .git/info/exclude
#     python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl flax==0.12.8
# and the call names .whl in `carry`; this script installs .whl/*.whl into /tmp/site when present.
# (With internet, `pip install -e .[cuda12]` or `.[cuda13]` would do the same job.)
#
# Files in $OUT (8 at most come back): env.txt, log.txt, training.json, seeds.json, analysis.json, measure_cost.json, time_flow.json,
# run.json. Limits: LIMIT seconds for the benchmarks (default 420 s, under 8 minutes), then the
# run is interrupted; every suite's JSON is written as it finishes, so a cut-short run keeps those.
# Environment knobs: OUT, LIMIT, PYTHON (default python3), BENCH_ARGS (default "--preset accelerator";
# e.g. "--quick" to try the script itself on a CPU together with ALLOW_CPU=1).
set -u
OUT=${OUT:-/tmp/jaxvg_bench}
LIMIT=${LIMIT:-420}
PY=${PYTHON:-python3}
BENCH_ARGS=${BENCH_ARGS:---preset accelerator}
export ALLOW_CPU=${ALLOW_CPU:-0}
mkdir -p "$OUT"
cd "$(dirname "$0")/.." || exit 2
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

if compgen -G ".whl/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "gpu.sh: installing .whl/*.whl failed" | tee "$OUT/log.txt"; exit 2; }
  export PYTHONPATH="/tmp/site:$PYTHONPATH"
fi

{
  date -u +"%Y-%m-%dT%H:%M:%SZ"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>/dev/null || echo "(no nvidia-smi)"
  "$PY" - <<'EOF'
import sys
import jax, flax, optax
print("python", sys.version.split()[0], "| jax", jax.__version__, "| flax", flax.__version__, "| optax", optax.__version__)
print("backend", jax.default_backend(), "| devices", jax.devices())
EOF
} >"$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

# Refuse early (and say why) rather than time a CPU run or crash on an old flax.
"$PY" - <<'EOF' 2>&1 | tee -a "$OUT/env.txt"
import os, sys
import jax, flax
problems = []
if jax.default_backend() == "cpu" and os.environ["ALLOW_CPU"] != "1":
    problems.append("jax sees no accelerator (backend cpu): is a CUDA/TPU jaxlib plugin installed?")
version = tuple(int(p) for p in flax.__version__.split(".")[:3] if p.isdigit())
if version < (0, 12, 8):
    problems.append(f"flax {flax.__version__} < 0.12.8: carry a flax==0.12.8 wheel in .whl/ (see the header)")
for p in problems:
    print("gpu.sh:", p)
sys.exit(3 if problems else 0)
EOF
[ "${PIPESTATUS[0]}" -eq 0 ] || exit 3

timeout --signal=INT --kill-after=30 "$LIMIT" \
  "$PY" -m benchmarks.run $BENCH_ARGS --out-dir "$OUT" 2>&1 | tee "$OUT/log.txt"
rc=${PIPESTATUS[0]}
[ "$rc" -eq 124 ] && echo "gpu.sh: stopped after LIMIT=$LIMIT s; the suites that finished are in $OUT" | tee -a "$OUT/log.txt"
echo "gpu.sh: exit status $rc; files: $(ls "$OUT" | tr '\n' ' ')" | tee -a "$OUT/log.txt"
exit "$rc"
