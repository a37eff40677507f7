#!/usr/bin/env bash
# The GPU check (run on a machine with a CUDA GPU; prints figures, changes nothing in the repository):
#   1. training throughput of the full baseline on CPU and CUDA, side by side (train_throughput.py);
#   2. the demo-size baseline and winner presets trained end to end through the pipeline on CUDA
#      (ablation.py --device cuda: test correlation next to the oracle, and epoch timings);
#   3. the training, worker and import tests with SENSORIUM_DEVICE=cuda.
# Usage: benchmarks/gpu_check.sh [OUT_DIR]     (figures also go to OUT_DIR, default ./gpu-check)
# Not yet run on a GPU by this project (no GPU was lent to the sessions that wrote it).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-gpu-check}"
mkdir -p "$out"
make install >/dev/null
py=.venv/bin/python
$py -c 'import torch; assert torch.cuda.is_available(), "no CUDA device"; print(torch.cuda.get_device_name(0))'
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.csv" || true

echo "== 1. baseline training throughput, CPU and CUDA"
$py benchmarks/train_throughput.py --all-devices --json | tee "$out/throughput.json"

echo "== 2. demo baseline and winner presets through the pipeline, on CUDA"
SENSORIUM_DEVICE=cuda $py benchmarks/ablation.py --presets demo,winner_demo --json | tee "$out/presets.json"

echo "== 3. tests on CUDA"
SENSORIUM_DEVICE=cuda timeout 900 $py -m pytest -q -p no:cacheprovider \
    tests/integration/test_training.py tests/integration/test_worker.py \
    tests/integration/test_import_checkpoint.py 2>&1 | tee "$out/tests.txt" | tail -5
