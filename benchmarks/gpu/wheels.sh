#!/usr/bin/env bash
# Downloads into .whl/ (ignored by git) the wheels of what tuner needs beyond a CUDA machine's PyTorch image:
# CPython 3.12, manylinux x86-64, each at the version this checkout's .venv runs. benchmarks/gpu/run.sh
# installs them there. Run here, in the repository root's .venv: `bash benchmarks/gpu/wheels.sh`.
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${VENV:-.venv}/bin/python
# Present on the CUDA image as it was read (numpy, scipy, scikit-learn, pandas, matplotlib, pyyaml, tqdm,
# requests, pytest); everything below is not, or not at a version tuner was tested with.
NAMES="optuna alembic sqlalchemy mako colorlog cmaes pydantic pydantic-core annotated-types
typing-inspection typing-extensions mnist1d typer annotated-doc click rich shellingham markdown-it-py mdurl pygments
prodigyopt schedulefree"
rm -rf .whl && mkdir -p .whl
for name in $NAMES; do
  version=$("$PYTHON" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name" 2>/dev/null) \
    || { echo "skipping $name: not installed in $PYTHON" >&2; continue; }
  "$PYTHON" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
    -d .whl "$name==$version" 2> >(grep -v "^WARNING: Location" >&2)
done
ls .whl
du -sh .whl
