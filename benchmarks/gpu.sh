#!/usr/bin/env bash
# The one prepared run for the lent GPU machine (about 8 minutes): the GPU tests, then the neighbors, dklgp,
# swsgp and pde benchmarks with --device cuda in quick mode (not yet: etgp, rvgp, cox, dual_memory, scale, nor the
# papers' scale of issue 12). Results land in benchmarks/results/*-cuda.{json,md} and are copied to $OUT when set.
# Usage on the device machine:  bash benchmarks/gpu.sh
set -uo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q --no-deps -e . >/dev/null 2>&1 || true
python - <<'PY'
import torch
print("torch", torch.__version__, "cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
PY
status=0
timeout 120 python -m pytest -q -m gpu -o addopts="" tests 2>&1 | tail -n 20 || status=1
for name in neighbors dklgp swsgp pde; do
  [ -f "benchmarks/$name.py" ] || continue
  echo "=== gpkit bench $name --device cuda"
  timeout "${GPKIT_GPU_BENCH_SECONDS:-100}" python -m gpkit bench "$name" --device cuda --quick 2>&1 | tail -n 40 || status=1
done
if [ -n "${OUT:-}" ]; then
  cp benchmarks/results/*-cuda.* "$OUT"/ 2>/dev/null || true
fi
exit $status
