"""Hyper-parameter sweeps: sweep files, Optuna studies and the report (no DataJoint here)."""
