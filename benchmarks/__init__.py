"""Benchmarks: `make bench-*` targets; results go to reports/bench/*.json."""
