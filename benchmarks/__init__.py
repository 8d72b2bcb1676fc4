"""Benchmark scripts (STYLE habit 15): run as ``python -m benchmarks.<name>``; see README.md."""
