"""Benchmarks for issue 6: one module per figure (`python -m bench.<name>`); see BENCHMARKS.md."""
