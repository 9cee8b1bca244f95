"""Benchmarks (not tests): ``python -m bench`` prints every table; see RESULTS.md."""
