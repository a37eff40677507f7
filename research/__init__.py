"""Research diagnostics and selection rounds: how ``experiments/beyond.yaml`` was chosen and what limits
it, measured against the synthetic recordings' planted truth. Not product figures (those are in
``benchmarks/``); the log of every round and diagnostic is ``research/README.md``.

Run each from the repository root as a module, ``.venv/bin/python -m research.<name> --help``. Modules
import each other as ``research.<name>`` and the preset-comparison machinery from ``benchmarks.beyond``.
"""
