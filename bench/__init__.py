"""Benchmarks: one module per figure (`python -m bench.<name>`); see BENCHMARKS.md."""
