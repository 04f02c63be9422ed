#!/usr/bin/env bash
# The one GPU check (issue 16): run it once on a lent GPU machine, from the repository root.
#
#   bash tests/gpu_check.sh            # logs and the bench JSON go to $OUT (a temp folder if unset)
#   bash tests/gpu_check.sh bench      # rerun only some steps: env, tests, resnet, bench
#
# It needs CuPy, PyTorch with CUDA, pytest and pytest-xdist, which the device image has; wheels
# for anything it lacks travel in .whl/ (see /work/.library/device/README.md) and are installed
# first. The steps have time limits that add up to about 8 minutes. Each step's log is
# $OUT/<step>.log, $OUT/summary.txt says how each ended, and the script fails if any step did.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$(mktemp -d)}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" OPENBLAS_NUM_THREADS=4
steps="${*:-env tests resnet bench}"

if compgen -G ".whl/*.whl" > /dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi

failed=0
step() {  # step NAME SECONDS COMMAND...: run it with a time limit, its output to $OUT/NAME.log
    local name=$1 limit=$2 start=$SECONDS rc
    shift 2
    [[ " $steps " == *" $name "* ]] || return 0
    echo "== $name: $*"
    timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
    rc=$?
    echo "$name: exit $rc after $((SECONDS - start)) s (limit $limit s)" | tee -a "$OUT/summary.txt"
    tail -n 15 "$OUT/$name.log"
    [ "$rc" -eq 0 ] || failed=1
}

step env 60 bash -c "nvidia-smi; $PY -c '
import cupy, numpy, torch
p = cupy.cuda.runtime.getDeviceProperties(0)
print(\"gpu\", p[\"name\"], \"cupy\", cupy.__version__, \"cuda runtime\", cupy.cuda.runtime.runtimeGetVersion(),
      \"numpy\", numpy.__version__, \"torch\", torch.__version__, torch.version.cuda, torch.cuda.is_available())
import tinygrad_bn as tg; print(\"tinygrad_bn sees cuda:\", tg.cuda.is_available())'"
# every test with a cuda device parameter or a GPU-only case (fakegpu's are covered by CI)
step tests 270 "$PY" -m pytest -x -q -p no:cacheprovider -n 4 -k "(cuda or gpu) and not fakegpu" \
    tests/ tests/norms/test_cuda_kernels.py
step resnet 120 bash -c "$PY -m examples.resnet --device cuda --epochs 1 --no-graphs --out /tmp/gpu-resnet \
    && cp /tmp/gpu-resnet/metrics.json '$OUT/resnet-metrics.json'"
step bench 240 "$PY" -m tinygrad_bn.bench --device cuda --json "$OUT/bench-cuda.json"

echo "gpu_check: results in $OUT"
exit "$failed"
