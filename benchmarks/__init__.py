"""Product figures: scripts that measure what the pipeline ships (ingest, regressors, memory, training
throughput, workers, the receptive-field map's cost, the preset ablation and the preset comparison) and
print them with their command, machine and date.

Run each from the repository root as a module, ``.venv/bin/python -m benchmarks.<name> --help``;
``benchmarks/gpu_check.sh`` runs the GPU figures and tests. Research diagnostics and the selection
rounds behind ``experiments/beyond.yaml`` live in ``research/``.
"""
