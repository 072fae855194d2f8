#!/usr/bin/env bash
# Every GPU check of tuner in one command, for a machine with an NVIDIA GPU and PyTorch but no package index:
# the CUDA tests, then trial packs against one trial at a time and against 4 worker processes on the same GPU
# (studies end to end: sampler, SQLite storage and reports included; nvidia-smi sampled while each runs), then
# training throughput alone. Steps run in order of importance, each cut off so that the whole fits in
# $GPU_BUDGET seconds (default 420: a 15-minute device lease then has room for the machine's start and a
# second, shorter try); a step cut off keeps the runs it finished, and the others keep theirs.
#
# Here, once:   bash benchmarks/gpu/wheels.sh        (the wheels the GPU machine lacks, into .whl/)
# There:        bash benchmarks/gpu/run.sh            (with .whl carried along; results under $OUT)
# On a machine with everything installed (an ordinary CUDA box with `.ci/install --dev`), the same command
# works without .whl/: PYTHON=.venv/bin/python bash benchmarks/gpu/run.sh
# GPU_DEVICE=cpu runs the same steps on the CPU (to check the script itself; the sizes are a GPU's).
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
OUT=${OUT:-$ROOT/gpu-out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
BUDGET=${GPU_BUDGET:-420}
DEVICE=${GPU_DEVICE:-cuda}
START=$SECONDS
MARK=$(mktemp)  # results written after this are this run's
export PYTHONUNBUFFERED=1
exec > >(tee -a "$OUT/run.log") 2>&1

if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "could not install the carried wheels"; exit 1; }
  export PYTHONPATH=/tmp/site:$ROOT${PYTHONPATH:+:$PYTHONPATH}
else
  export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
fi
# The benchmarks start `tuner` from beside the interpreter, as an installed tuner would be.
LAUNCHER=$("$PY" -c "import pathlib, sys; print(pathlib.Path(sys.executable).with_name('tuner'))")
if ! [ -x "$LAUNCHER" ]; then
  # The guard matters: worker processes are spawned, and re-import the main module.
  printf '#!%s\nimport sys\nfrom tuner.cli import main\nif __name__ == "__main__":\n    sys.exit(main())\n' \
    "$("$PY" -c 'import sys; print(sys.executable)')" > "$LAUNCHER" && chmod +x "$LAUNCHER" \
    || { echo "could not write the tuner launcher at $LAUNCHER (the studies start it from there)"; exit 1; }
fi

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
DEVICE=$DEVICE "$PY" - <<'EOF' || exit 1
import os, sys, torch, optuna, tuner
print(f"python {sys.version.split()[0]}, torch {torch.__version__}, optuna {optuna.__version__}, "
      f"cuda available: {torch.cuda.is_available()}")
if os.environ["DEVICE"].startswith("cuda"):
    if not torch.cuda.is_available():
        sys.exit("no CUDA device: nothing to measure here")
    print(torch.cuda.get_device_name(0))
EOF

left() { echo $(( BUDGET - (SECONDS - START) )); }
step() {  # step NAME MAX_SECONDS COMMAND...: runs COMMAND for at most MAX_SECONDS and what the budget leaves
  local name=$1 most=$2; shift 2
  local limit; limit=$(left); [ "$limit" -gt "$most" ] && limit=$most
  if [ "$limit" -lt 20 ]; then echo "== $name: skipped, $(left)s of the budget left"; return; fi
  echo "== $name (at most ${limit}s): $*"
  local began=$SECONDS
  timeout --signal=INT --kill-after=10 "$limit" "$@"
  echo "== $name: exit $? after $(( SECONDS - began ))s"
}

# 1. Correctness on the GPU: every test with a CUDA case (packs against the Trainer, member by member).
step "CUDA tests" 90 "$PY" -m pytest -q -p no:cacheprovider -rs tests/test_train.py tests/test_pack.py -k "${DEVICE%%:*}"
# 2. One trial at a time, and in 4 worker processes: the baselines (few trials: each runs alone).
# Each study has a --timeout within its step, so a step that runs long still keeps the trials that ended.
step "baselines" 130 "$PY" -m benchmarks.packs --device $DEVICE --workloads mnist1d-mlp,mnist1d-cnn --packs 1,1x4 \
  --n-trials 32 --seeds 1 --study-timeout 20 --tag gpu-baselines
# 3. Packs, end to end, many trials.
step "packs mnist1d-mlp" 80 "$PY" -m benchmarks.packs --device $DEVICE --workloads mnist1d-mlp --packs auto,1024 \
  --n-trials 1024 --seeds 1 --study-timeout 30 --tag gpu-mlp
step "packs mnist1d-cnn" 110 "$PY" -m benchmarks.packs --device $DEVICE --workloads mnist1d-cnn --packs auto,128 \
  --n-trials 256 --seeds 1 --study-timeout 40 --tag gpu-cnn
# 4. Training alone: model-epochs/s of a pack against one model.
step "training mnist1d-mlp" 40 "$PY" -m benchmarks.packs --training --device $DEVICE --workloads mnist1d-mlp \
  --ks 1,64,256,1024,4096 --threads 1
step "training mnist1d-cnn" 40 "$PY" -m benchmarks.packs --training --device $DEVICE --workloads mnist1d-cnn \
  --ks 1,16,64,256 --threads 1

"$PY" -m benchmarks.gpu.summary benchmarks/results --newer "$MARK" | tee "$OUT/summary.md"
(cd benchmarks && find results -type f -newer "$MARK" | tar -czf "$OUT/results.tar.gz" -T -)
echo "done in $(( SECONDS - START ))s; results in $OUT"
