#!/usr/bin/env bash
# The CUDA checks for a bare GPU machine (torch and numpy, nothing installed from this repo): the CUDA tests
# of tests/runtime/test_devices.py and the GPU rows of bench/training_speed.py on synthetic 28x28 data.
# About 2-3 minutes on one GPU. Output goes to $OUT (default bench/out) and to the terminal.
#     bash bench/gpu_checks.sh            # PYTHON=python3.12 to pick the interpreter
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/out}
PY=${PYTHON:-python3}
mkdir -p "$OUT"

# Import archetype from this checkout without installing it: a package folder of links, as pyproject maps it.
PKG=$(mktemp -d)
trap 'rm -rf "$PKG"' EXIT
mkdir "$PKG/archetype"
for f in archetype/*; do ln -s "$PWD/$f" "$PKG/archetype/"; done
for p in searchspace strategies worker runtime compress dashboard; do ln -s "$PWD/$p" "$PKG/archetype/$p"; done
export PYTHONPATH="$PKG"

{ nvidia-smi || true; "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda,
'device', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none')"; } 2>&1 | tee "$OUT/gpu_env.txt"

echo "== CUDA tests" | tee "$OUT/cuda_tests.txt"
if "$PY" -c "import pytest" 2>/dev/null; then
    # run from the folder of links, so that the checkout's own archetype/ folder does not shadow the mapped package
    cp tests/runtime/test_devices.py "$PKG/"
    (cd "$PKG" && timeout 150 "$PY" -m pytest -q -rs -p no:cacheprovider -o addopts="" --import-mode=importlib \
        --rootdir="$PKG" --noconftest test_devices.py) 2>&1 | tee -a "$OUT/cuda_tests.txt"
else  # no pytest there: run each test function of the module with a stand-in for the few pytest names it uses
    timeout 150 "$PY" - <<'PYEOF' 2>&1 | tee -a "$OUT/cuda_tests.txt"
import contextlib, importlib.util, re, sys, traceback, types

class Skip:
    def __init__(self, condition, reason): self.condition, self.reason = condition, reason
    def __call__(self, fn): fn.skip = self; return fn

@contextlib.contextmanager
def raises(kind, match=None):
    try:
        yield
    except kind as exc:
        assert match is None or re.search(match, str(exc)), f"{exc!r} does not match {match!r}"
    else:
        raise AssertionError(f"did not raise {kind}")

sys.modules["pytest"] = types.SimpleNamespace(mark=types.SimpleNamespace(skipif=Skip), raises=raises)
spec = importlib.util.spec_from_file_location("test_devices", "tests/runtime/test_devices.py")
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
failed = 0
for name, fn in vars(module).items():
    if not name.startswith("test_"):
        continue
    skip = getattr(fn, "skip", None)
    if skip is not None and skip.condition:
        print(f"SKIPPED {name}: {skip.reason}")
        continue
    try:
        fn()
        print(f"PASSED  {name}")
    except Exception:
        failed += 1
        print(f"FAILED  {name}\n{traceback.format_exc()}")
print(f"{failed} failed")
sys.exit(1 if failed else 0)
PYEOF
fi

echo "== GPU rows of bench/training_speed.py" | tee "$OUT/training_speed_gpu.txt"
timeout 180 "$PY" bench/training_speed.py --data synthetic --images 16384 --parts speed --gpu-only \
    --json "$OUT/training_speed_gpu.json" 2>&1 | tee -a "$OUT/training_speed_gpu.txt"
