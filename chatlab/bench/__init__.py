"""Benchmarks: figures, not tests. ``python -m chatlab.bench --help`` lists the scenarios."""
