#!/usr/bin/env bash
# The GPU check: every GPU measurement and the GPU tests, in one run of at most ~8 minutes on an
# H100/H200-class machine (prints figures, changes nothing in the repository):
#   1. the six full-size synthetic recordings (sensorium synth --scale full, mice in parallel), reused
#      from $SENSORIUM_BENCH_DATA when already there;
#   2. training throughput of the baseline and winner presets on them, on CUDA, without and with each
#      throughput option (bf16 autocast, channels_last, fused Adam, torch.compile of the core), and the
#      validation correlation after 3 epochs without and with autocast (train_throughput.py);
#   3. the demo-scale presets on CUDA and CPU for the same table at demo size;
#   4. tests/gpu (training, prediction, resume and a worker process on CUDA);
#   5. last, on the CPU: the FLOPs of a training step, epoch and ensemble of winner.yaml and
#      beyond_full.yaml (benchmarks/flops.py), to set the measured seconds per epoch against.
# Usage: benchmarks/gpu_check.sh [OUT_DIR]     (figures also go to OUT_DIR, default ./gpu-check)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-gpu-check}"
mkdir -p "$out"
make install >/dev/null
py=.venv/bin/python
$py -c 'import torch; assert torch.cuda.is_available(), "no CUDA device"; print(torch.cuda.get_device_name(0))'
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.csv" || true
start=$(date +%s)
step() { echo "== $1  [$(($(date +%s) - start)) s]"; }

step "1-2. full scale: throughput of baseline and winner on CUDA, each option, autocast agreement"
timeout 330 $py -m benchmarks.train_throughput --scale full --device cuda --compare-options \
    --agree-epochs 3 --json > "$out/throughput_full.json" || echo "full-scale throughput: exit $?"
$py -c 'import json,sys; from benchmarks import train_throughput as t
print(t.render(json.load(open(sys.argv[1]))))' "$out/throughput_full.json" || true

step "3. demo scale on CUDA"
timeout 60 $py -m benchmarks.train_throughput --scale demo --device cuda --options none,all \
    | tee "$out/throughput_demo.txt" || echo "demo throughput: exit $?"

step "4. tests/gpu"
timeout 150 $py -m pytest -q -p no:cacheprovider tests/gpu 2>&1 | tee "$out/tests.txt" | tail -5

step "5. FLOPs of winner and beyond_full (counted on the CPU)"
timeout 60 $py -m benchmarks.flops | tee "$out/flops.txt" || echo "flops: exit $?"
step "done"
